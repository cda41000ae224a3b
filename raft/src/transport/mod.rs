//! Peer transport: one outgoing connection per peer, carrying [`frame`]s.
//!
//! Each peer has a sender task with a bounded queue. `send` never waits: when a peer's queue is
//! full (the peer is slow or gone) the message is dropped, and Raft's retries cover it. The
//! sender connects on demand, reconnects with exponential backoff, and streams snapshots in
//! chunks, reporting to the node whether each one arrived. The receiving side accepts
//! connections, checks every frame, reassembles snapshots, and steps the node with each message.
//! A peer that sends garbage loses its connection and nothing else. The receiver acknowledges
//! the frames it has read every [`ACK_INTERVAL`] on the same connection, and a sender whose
//! frames go unacknowledged for [`ACK_TIMEOUT`] drops the connection and opens a new one: a
//! stream that silently stopped moving (a half-open connection, a lost segment in simulation)
//! would otherwise swallow every later message to that peer.
//!
//! Sockets are behind the [`Network`] trait, so the same code runs over tokio's TCP in
//! production and over turmoil's simulated TCP in the simulations.

pub mod frame;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::core::{Message, MessageBody, NodeId};
use crate::node::{Node, Transport};
use frame::{Frame, SNAPSHOT_BYTES_MAX, SNAPSHOT_CHUNK_BYTES};

/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE_MAX: usize = 4096;
/// The first reconnect delay; it doubles up to [`RECONNECT_BACKOFF_MAX`].
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
/// The longest reconnect delay.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one write to a peer may make no progress before the connection is presumed dead
/// and replaced. The sender never reads, so a connection whose peer stopped reading (a
/// half-open connection after a partition or a host that vanished without a reset) would
/// otherwise hold the peer's messages forever once the socket's buffer fills.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the receiving side of a connection tells the sender how many frames it has read
/// (only when that number changed).
pub const ACK_INTERVAL: Duration = Duration::from_millis(100);
/// How long a sender waits for frames it wrote to be acknowledged before it presumes the
/// connection dead and opens a new one. TCP itself may take many minutes to notice a peer that
/// vanished without a reset, or a stream that stopped moving; Raft cannot wait that long.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// The sender's view of a connection's acknowledgements: whether frames it wrote have gone
/// unacknowledged for longer than [`ACK_TIMEOUT`].
struct AckTracker {
    /// The latest count the receiver acknowledged, stored by the ack reader task.
    acked: Arc<AtomicU64>,
    /// Frames written.
    sent: u64,
    /// The acknowledged count last looked at.
    seen: u64,
    /// Since when frames have been waiting for an acknowledgement that advances.
    waiting_since: Option<tokio::time::Instant>,
}

impl AckTracker {
    fn new(acked: Arc<AtomicU64>) -> AckTracker {
        AckTracker {
            acked,
            sent: 0,
            seen: 0,
            waiting_since: None,
        }
    }

    /// Fails when written frames have waited too long for the receiver to read them.
    fn check(&mut self) -> io::Result<()> {
        let now = tokio::time::Instant::now();
        let acked = self.acked.load(Ordering::Acquire);
        if acked != self.seen {
            self.seen = acked;
            self.waiting_since = (self.sent > acked).then_some(now);
        }
        match self.waiting_since {
            Some(since) if self.sent > acked && now.duration_since(since) > ACK_TIMEOUT => {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer stopped acknowledging frames",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Notes `frames` more frames written.
    fn wrote(&mut self, frames: u64) {
        if self.sent == self.seen {
            self.waiting_since = Some(tokio::time::Instant::now());
        }
        self.sent += frames;
    }
}

/// Stops a helper task when the connection it serves ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sender side: reads the receiver's acknowledgements into `acked` until the connection ends.
async fn read_acks<R: AsyncRead + Unpin>(reader: R, acked: Arc<AtomicU64>) {
    let mut r = BufReader::new(reader);
    while let Ok(Some(Frame::Ack { frames })) = frame::read(&mut r).await {
        acked.store(frames, Ordering::Release);
    }
}

/// Receiver side: every [`ACK_INTERVAL`], tells the sender how many frames were read, until
/// the connection ends.
async fn write_acks<W: AsyncWrite + Unpin>(writer: W, read: Arc<AtomicU64>) {
    let mut w = writer;
    let mut last = 0;
    loop {
        tokio::time::sleep(ACK_INTERVAL).await;
        let frames = read.load(Ordering::Acquire);
        if frames == last {
            continue;
        }
        if frame::write(&mut w, &Frame::Ack { frames }).await.is_err() || w.flush().await.is_err() {
            return;
        }
        last = frames;
    }
}

/// Runs one write, failing it with `TimedOut` after [`WRITE_STALL_TIMEOUT`].
async fn timed<T>(write: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(WRITE_STALL_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "a write to the peer made no progress",
            ))
        })
}

/// The sockets the transport uses: tokio's TCP, or a simulated network.
pub trait Network: Send + Sync + 'static {
    /// A connected byte stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Opens a connection to `addr` (`host:port`).
    fn connect(&self, addr: String) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// [`Network`] over tokio's TCP, with `TCP_NODELAY` (Raft messages are small and latency-bound).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpNetwork;

impl Network for TcpNetwork {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self, addr: String) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// The outcome of streaming a snapshot to a peer, to hand to `Node::report_snapshot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The peer.
    pub to: NodeId,
    /// Whether the whole snapshot was written to the connection.
    pub delivered: bool,
}

struct Peer {
    addr: String,
    queue: mpsc::Sender<Message>,
}

/// The outgoing side: a [`Transport`] for the node.
pub struct PeerTransport<N: Network> {
    id: NodeId,
    /// This node's own Raft address, announced in every Hello.
    addr: String,
    network: Arc<N>,
    peers: Mutex<HashMap<NodeId, Peer>>,
    reports: mpsc::UnboundedSender<SnapshotReport>,
}

const PEERS_LOCK: &str = "the peer table lock is never held across a panic";

impl<N: Network> PeerTransport<N> {
    /// A transport for node `id`; the receiver gets the outcome of every snapshot sent.
    pub fn new(
        id: NodeId,
        addr: String,
        network: N,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<SnapshotReport>) {
        let (reports, rx) = mpsc::unbounded_channel();
        let transport = Arc::new(PeerTransport {
            id,
            addr,
            network: Arc::new(network),
            peers: Mutex::new(HashMap::new()),
            reports,
        });
        (transport, rx)
    }

    /// Sets (or changes) the address of peer `id`. Must be called inside a tokio runtime.
    pub fn set_peer(&self, id: NodeId, addr: String) {
        if id == self.id {
            return;
        }
        let mut peers = self.peers.lock().expect(PEERS_LOCK);
        if peers.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
        tokio::spawn(run_sender(
            self.id,
            self.addr.clone(),
            id,
            addr.clone(),
            Arc::clone(&self.network),
            rx,
            self.reports.clone(),
        ));
        // Replacing the entry drops the old queue, which stops the old sender.
        peers.insert(id, Peer { addr, queue: tx });
    }

    /// Records the address a caller announced, unless the peer's address is already known
    /// (the replicated address book stays authoritative).
    pub fn learn_peer(&self, id: NodeId, addr: String) {
        let known = self.peers.lock().expect(PEERS_LOCK).contains_key(&id);
        if !known {
            self.set_peer(id, addr);
        }
    }

    /// Forgets peer `id` (removed from the cluster); its sender stops.
    pub fn remove_peer(&self, id: NodeId) {
        self.peers.lock().expect(PEERS_LOCK).remove(&id);
    }

    /// The known peers and their addresses.
    pub fn peers(&self) -> Vec<(NodeId, String)> {
        self.peers
            .lock()
            .expect(PEERS_LOCK)
            .iter()
            .map(|(id, p)| (*id, p.addr.clone()))
            .collect()
    }
}

impl<N: Network> Transport for PeerTransport<N> {
    fn send(&self, message: Message) {
        let peers = self.peers.lock().expect(PEERS_LOCK);
        let Some(peer) = peers.get(&message.to) else {
            debug!(to = message.to.0, "no address for peer: message dropped");
            return;
        };
        if let Err(e) = peer.queue.try_send(message) {
            let message = match e {
                mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
            };
            if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
                let _ = self.reports.send(SnapshotReport {
                    to: message.to,
                    delivered: false,
                });
            }
            debug!(to = message.to.0, "peer queue full: message dropped");
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_sender<N: Network>(
    me: NodeId,
    my_addr: String,
    to: NodeId,
    addr: String,
    network: Arc<N>,
    mut queue: mpsc::Receiver<Message>,
    reports: mpsc::UnboundedSender<SnapshotReport>,
) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut pending: Option<Message> = None;
    loop {
        // Connect only when there is something to send.
        let first = match pending.take() {
            Some(m) => m,
            None => match queue.recv().await {
                Some(m) => m,
                None => return,
            },
        };
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, network.connect(addr.clone())).await;
        let stream = match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                debug!(to = to.0, %addr, error = %e, "connect failed; retrying");
                fail_snapshot(&first, &reports);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
            Err(_) => {
                debug!(to = to.0, %addr, "connect timed out; retrying");
                fail_snapshot(&first, &reports);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        backoff = RECONNECT_BACKOFF_MIN;
        info!(from = me.0, to = to.0, %addr, "connected to peer");
        let (reader, writer) = tokio::io::split(stream);
        let acked = Arc::new(AtomicU64::new(0));
        let _ack_reader =
            AbortOnDrop(tokio::spawn(read_acks(reader, Arc::clone(&acked))).abort_handle());
        let mut acks = AckTracker::new(acked);
        let mut w = BufWriter::new(writer);
        let mut next = Some(first);
        let result: io::Result<()> = async {
            let hello = Frame::Hello {
                from: me,
                addr: my_addr.clone(),
            };
            timed(frame::write(&mut w, &hello)).await?;
            acks.wrote(1);
            loop {
                let message = match next.take() {
                    Some(m) => m,
                    None => {
                        // Flush only when the queue is drained: a burst goes out in few writes.
                        timed(w.flush()).await?;
                        match queue.recv().await {
                            Some(m) => m,
                            None => return Ok(()),
                        }
                    }
                };
                acks.check()?;
                let frames = send_one(&mut w, message, &reports).await?;
                acks.wrote(frames);
                if let Ok(m) = queue.try_recv() {
                    next = Some(m);
                }
            }
        }
        .await;
        match result {
            Ok(()) => return,
            Err(e) => {
                warn!(to = to.0, %addr, error = %e, "peer connection lost; reconnecting");
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

fn fail_snapshot(message: &Message, reports: &mpsc::UnboundedSender<SnapshotReport>) {
    if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
        let _ = reports.send(SnapshotReport {
            to: message.to,
            delivered: false,
        });
    }
}

/// Writes one message; returns how many frames that took.
async fn send_one<W: AsyncWrite + Unpin>(
    w: &mut W,
    message: Message,
    reports: &mpsc::UnboundedSender<SnapshotReport>,
) -> io::Result<u64> {
    let MessageBody::InstallSnapshot { snapshot } = &message.body else {
        timed(frame::write(w, &Frame::Message(message))).await?;
        return Ok(1);
    };
    let to = message.to;
    let data = snapshot.data.clone();
    let mut header = message.clone();
    if let MessageBody::InstallSnapshot { snapshot } = &mut header.body {
        snapshot.data = Bytes::new();
    }
    let streamed: io::Result<()> = async {
        timed(frame::write(
            w,
            &Frame::SnapshotBegin {
                message: header,
                data_bytes: data.len() as u64,
            },
        ))
        .await?;
        for chunk in data.chunks(SNAPSHOT_CHUNK_BYTES) {
            timed(frame::write(
                w,
                &Frame::SnapshotChunk(data.slice_ref(chunk)),
            ))
            .await?;
        }
        timed(frame::write(w, &Frame::SnapshotEnd)).await?;
        timed(w.flush()).await
    }
    .await;
    let _ = reports.send(SnapshotReport {
        to,
        delivered: streamed.is_ok(),
    });
    streamed.map(|()| 2 + data.chunks(SNAPSHOT_CHUNK_BYTES).len() as u64)
}

/// Serves one incoming peer connection: reads frames and steps `node` with each message until
/// the peer disconnects or misbehaves. Returns why the connection ended.
pub async fn serve_connection<S, O, N>(
    stream: S,
    node: Node<O>,
    transport: Arc<PeerTransport<N>>,
) -> Result<(), frame::FrameError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    O: Send + 'static,
    N: Network,
{
    let (reader, writer) = tokio::io::split(stream);
    let read = Arc::new(AtomicU64::new(0));
    let _ack_writer =
        AbortOnDrop(tokio::spawn(write_acks(writer, Arc::clone(&read))).abort_handle());
    let mut r = CountingReader {
        inner: BufReader::new(reader),
        read,
    };
    let from = match r.next().await? {
        Some(Frame::Hello { from, addr }) => {
            transport.learn_peer(from, addr);
            from
        }
        Some(_) => return Err(protocol("the first frame must be Hello")),
        None => return Ok(()),
    };
    // Whatever ends the connection, the node hears of it when this guard drops: if `from`
    // led, its silence from now on is likely for good (a killed process closes its sockets
    // at once).
    let _lost = PeerLostGuard {
        node: node.clone(),
        peer: from,
    };
    let mut snapshot: Option<(Message, u64, Vec<u8>)> = None;
    while let Some(f) = r.next().await? {
        match (f, snapshot.take()) {
            (Frame::Message(m), None) => {
                if m.from != from {
                    return Err(protocol("a message from another node than the caller"));
                }
                if node.step(m).await.is_err() {
                    return Ok(()); // The node stopped.
                }
            }
            (
                Frame::SnapshotBegin {
                    message,
                    data_bytes,
                },
                None,
            ) => {
                if data_bytes > SNAPSHOT_BYTES_MAX || message.from != from {
                    return Err(protocol("snapshot too large or from another node"));
                }
                let capacity = data_bytes.min(SNAPSHOT_CHUNK_BYTES as u64 * 64) as usize;
                snapshot = Some((message, data_bytes, Vec::with_capacity(capacity)));
            }
            (Frame::SnapshotChunk(chunk), Some((message, total, mut data))) => {
                if data.len() as u64 + chunk.len() as u64 > total {
                    return Err(protocol("snapshot chunks longer than announced"));
                }
                data.extend_from_slice(&chunk);
                snapshot = Some((message, total, data));
            }
            (Frame::SnapshotEnd, Some((mut message, total, data))) => {
                if data.len() as u64 != total {
                    return Err(protocol("snapshot shorter than announced"));
                }
                if let MessageBody::InstallSnapshot { snapshot } = &mut message.body {
                    snapshot.data = Bytes::from(data);
                } else {
                    return Err(protocol("SnapshotBegin without an InstallSnapshot message"));
                }
                if node.step(message).await.is_err() {
                    return Ok(());
                }
            }
            _ => return Err(protocol("frame out of order")),
        }
    }
    Ok(())
}

/// Tells the node that the connection from `peer` ended, however it ended.
struct PeerLostGuard<O: Send + 'static> {
    node: Node<O>,
    peer: NodeId,
}

impl<O: Send + 'static> Drop for PeerLostGuard<O> {
    fn drop(&mut self) {
        self.node.peer_lost(self.peer);
    }
}

/// Reads frames and counts them for the acknowledgements.
struct CountingReader<R> {
    inner: BufReader<R>,
    read: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> CountingReader<R> {
    async fn next(&mut self) -> Result<Option<Frame>, frame::FrameError> {
        let f = frame::read(&mut self.inner).await?;
        if f.is_some() {
            self.read.fetch_add(1, Ordering::AcqRel);
        }
        Ok(f)
    }
}

fn protocol(what: &str) -> frame::FrameError {
    frame::FrameError::Io(io::Error::new(io::ErrorKind::InvalidData, what.to_string()))
}

/// Accepts peer connections on `listener` until the node stops, serving each on its own task.
pub async fn serve_tcp<O: Send + 'static, N: Network>(
    listener: tokio::net::TcpListener,
    node: Node<O>,
    transport: Arc<PeerTransport<N>>,
) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accepting a peer connection failed");
                tokio::time::sleep(RECONNECT_BACKOFF_MIN).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let node = node.clone();
        let transport = Arc::clone(&transport);
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, node, transport).await {
                warn!(peer = %addr, error = %e, "peer connection closed on a bad frame");
            }
        });
    }
}
