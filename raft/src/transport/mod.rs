//! Peer transport: one outgoing connection per peer, carrying [`frame`]s.
//!
//! Each peer has a sender task with a bounded queue. `send` never waits: when a peer's queue is
//! full (the peer is slow or gone) the message is dropped, and Raft's retries cover it. The
//! sender connects on demand, retries failed connects with exponential backoff (a connection
//! that had been up a while is replaced at once), and streams snapshots in chunks read from the
//! snapshot files ([`SnapshotFiles::open`]), reporting to the node whether each one arrived;
//! messages queued meanwhile go out between the chunks, so that a follower receiving a large
//! snapshot goes on hearing its leader's heartbeats. The receiving side accepts connections,
//! checks every frame, streams a snapshot's chunks into the snapshot files
//! ([`SnapshotFiles::receive`]), which check it whole before the node hears of it, and steps
//! the node with each message.
//! A peer that sends garbage loses its connection and nothing else. The receiver acknowledges
//! the bytes it has read every [`ACK_INTERVAL`] on the same connection (or says it is busy
//! while its node's queue is full), and a sender whose bytes go unacknowledged for
//! [`ACK_TIMEOUT`] drops the connection and opens a new one: a stream that silently stopped
//! moving (a half-open connection, a lost segment in simulation) would otherwise swallow every
//! later message to that peer.
//!
//! Every connection opens with a Hello that names the caller, its address and its cluster. The
//! acceptor refuses a caller of another cluster, one that a committed membership change
//! removed and that is not a member again ([`PeerTransport::set_removed`]), and, while its node
//! follows a leader, any other caller that is neither a member of its latest configuration nor
//! a joiner it expects ([`PeerTransport::expect_peers`]): it writes one `Refused` frame,
//! closes, and steps its node with nothing from that connection. A caller served only because
//! its node knows no leader is a stranger: its messages may raise the node's term only a
//! little, and only while the node follows no leader ([`Node::step_from_stranger`]). Every
//! message on a served
//! connection must name the Hello's caller as its sender; one that names another closes the
//! connection. The opener
//! hands each refusal to its server ([`TransportReport::Refused`]), which can tell the operator
//! or stop the node, and tries again only after [`RECONNECT_BACKOFF_MAX`] (the peer may be
//! fixed). Both sides log a refusal at most once per [`REFUSAL_LOG_INTERVAL`] per peer and kind.
//!
//! What a caller can hold is bounded before anyone knows who it is: at most
//! [`PEER_CONNECTIONS_MAX`] inbound connections are served at once (one more is closed
//! unread), and one that sends no Hello within [`HELLO_TIMEOUT`] is closed. Snapshot streams
//! being received hold at most [`SNAPSHOT_BYTES_IN_FLIGHT_MAX`] of disk between them (a stream that
//! would pass it is refused by closing its connection), and one that stops moving for
//! [`SNAPSHOT_CHUNK_TIMEOUT`] is dropped with what it held.
//!
//! Sockets are behind the [`Network`] trait, so the same code runs over tokio's TCP in
//! production and over turmoil's simulated TCP in the simulations.

pub mod frame;

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Read as _};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::core::{LogIndex, Message, MessageBody, NodeId};
use crate::node::snapshot_files::offload;
use crate::node::{ClusterId, Node, SnapshotFiles, SnapshotSink, Transport, names};
/// Why a peer refused a connection: [`TransportReport::Refused`] carries it to the server.
pub use frame::Refusal;
use frame::{Frame, SNAPSHOT_BYTES_MAX, SNAPSHOT_CHUNK_BYTES};

/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE_MAX: usize = 4096;
/// The first reconnect delay; it doubles up to [`RECONNECT_BACKOFF_MAX`].
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
/// The longest reconnect delay.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a connection must have lived for its loss to be answered with an immediate
/// reconnect rather than a backoff delay.
pub const STABLE_CONNECTION: Duration = Duration::from_secs(1);
/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the receiving side of a connection tells the sender how many bytes it has read
/// (when that changed, or while it waits on a busy node).
pub const ACK_INTERVAL: Duration = Duration::from_millis(100);
/// How long a sender lets bytes it wrote go unacknowledged before it presumes the connection
/// dead and opens a new one. TCP itself may take many minutes to notice a peer that vanished
/// without a reset, or a stream that stopped moving; Raft cannot wait that long. Progress is
/// counted in bytes, so a large snapshot chunk on a slow link is not mistaken for a stall.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// The shortest time between two log lines about refusals of the same kind from or to the
/// same peer: a refused peer tries again every [`RECONNECT_BACKOFF_MAX`], and one line a minute
/// tells the operator as much as sixty.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// The most (peer, kind of refusal) pairs whose last log line is remembered. Peer ids come from
/// untrusted Hellos, so the table is bounded; while it is full of lines younger than
/// [`REFUSAL_LOG_INTERVAL`], refusals of further peers are not logged.
pub const REFUSAL_LOG_PEERS_MAX: usize = 1024;
/// How long an acceptor that refused a connection goes on reading, and discarding, what the
/// opener sends before it closes. The opener writes its first message right behind its Hello,
/// and closing a TCP socket with unread bytes resets the connection, which can destroy the
/// Refused frame before the opener has read it.
pub const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// How long an acceptor waits for its own configuration to name a caller it does not know
/// before refusing it as [`Refusal::NotMember`]. A leader appends a learner's configuration
/// entry and sends it entries in the same step, but publishes its new configuration only
/// after its own fsync; a fast learner's answering connection can arrive in between, and
/// should be served, not refused and retried a second later. Shorter than [`ACK_TIMEOUT`],
/// so that the caller does not give up on the connection meanwhile.
pub const MEMBERSHIP_GRACE: Duration = Duration::from_millis(500);
/// The most node ids a node expects to hear from without having them in its configuration
/// ([`PeerTransport::expect_peers`]): a joiner's list of the members it was told of. More
/// are ignored, so a hostile join answer cannot grow the table without bound.
pub const EXPECTED_PEERS_MAX: usize = 1024;
/// The most peers whose address a node learns from callers' Hellos (rather than from the
/// replicated address book). A node that knows no leader serves callers it has never heard
/// of (see `refusal_for`), and each one learned costs a sender task, and with it a socket
/// while it is connected: beyond this many known peers, a new caller's address is not learned
/// (the address book still brings every real member's). With [`PEER_CONNECTIONS_MAX`] it
/// bounds the file descriptors the peer port can take: 128, half of the server's reserve
/// beside its clients (`FD_RESERVE` in the api crate), which is checked at compile time there.
pub const LEARNED_PEERS_MAX: usize = 64;
/// The most inbound peer connections served at once, those still waiting for their Hello
/// included. A real cluster needs one per peer (two for a moment while a peer replaces its
/// connection); anything beyond is someone holding sockets open, and each would take a file
/// descriptor the WAL may need. A connection over the cap is closed at once, unread.
pub const PEER_CONNECTIONS_MAX: usize = 64;
/// How long an inbound connection may take to send its Hello. A real peer writes it the
/// moment it connects; a caller that sends nothing must not hold one of the
/// [`PEER_CONNECTIONS_MAX`] slots for ever.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of snapshot data this node receives at once, over all its inbound
/// connections (they go to temporary files): each stream reserves the length its
/// `SnapshotBegin` announces, and one that would pass the budget is refused (its connection
/// closed, so that its sender reports it undelivered and the leader sends it again later). As
/// large as the largest snapshot accepted ([`SNAPSHOT_BYTES_MAX`]), so that any one snapshot
/// can be received: a leader sends a node one at a time. Without it, every connection could
/// fill the disk with that much.
pub const SNAPSHOT_BYTES_IN_FLIGHT_MAX: u64 = SNAPSHOT_BYTES_MAX;
/// How long a snapshot stream may go without its next frame before its connection is closed
/// and its reservation of [`SNAPSHOT_BYTES_IN_FLIGHT_MAX`] given back: a sender writes the
/// chunks back to back, and a stream that stopped moving must not hold the budget for ever.
pub const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest time between two log lines about inbound peer connections closed because
/// [`PEER_CONNECTIONS_MAX`] were open; each line says how many were left out before it.
pub const OVER_CAP_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The shortest time between two log lines about peer connections closed on a bad frame
/// (undecodable, out of order, or a message naming another sender than the Hello did). The
/// caller of such a connection is not known to be anyone, so these lines are limited
/// together, each saying how many were left out before it.
pub const BAD_FRAME_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the receiver last acknowledged, stored by the sender's ack reader task.
#[derive(Default)]
struct AckState {
    /// Bytes the receiver has read from this connection.
    bytes: AtomicU64,
    /// How many "still busy" acknowledgements arrived: the receiver is alive but waits on its
    /// node, so it reads nothing new.
    busy: AtomicU64,
    /// The receiver's side of the connection ended (the peer closed it, crashed, or
    /// restarted): nothing more sent on it can arrive.
    closed: AtomicBool,
    /// The receiver refused the connection (set before `closed`).
    refused: AtomicBool,
}

/// When each (peer, kind of refusal) was last logged, so that a refused peer that reconnects
/// every second is logged once per [`REFUSAL_LOG_INTERVAL`], not every time.
/// The node's loop uses it too, for the messages its core refuses (see `node::driver`).
#[derive(Default)]
pub(crate) struct RefusalLog(Mutex<HashMap<(NodeId, &'static str), tokio::time::Instant>>);

impl RefusalLog {
    /// Whether a refusal of `kind` to or from `peer` is to be logged now; if so, notes that it
    /// was.
    pub(crate) fn should_log(&self, peer: NodeId, kind: &'static str) -> bool {
        let now = tokio::time::Instant::now();
        let mut last = self.0.lock().expect(PEERS_LOCK);
        let recent = |at: &tokio::time::Instant| now.duration_since(*at) < REFUSAL_LOG_INTERVAL;
        match last.get(&(peer, kind)) {
            Some(at) if recent(at) => return false,
            Some(_) => {}
            None if last.len() >= REFUSAL_LOG_PEERS_MAX => {
                last.retain(|_, at| recent(at));
                if last.len() >= REFUSAL_LOG_PEERS_MAX {
                    return false;
                }
            }
            None => {}
        }
        last.insert((peer, kind), now);
        true
    }
}

/// The opener's side of refusals: what a sender needs to report and log one from its peer.
/// Cloned into every connection's acknowledgement reader; the log state is shared between
/// them, so reconnecting does not reset the rate limit.
#[derive(Clone)]
struct RefusalReporter {
    /// The peer this sender talks to.
    to: NodeId,
    /// The peer's address.
    addr: String,
    reports: mpsc::UnboundedSender<TransportReport>,
    logged: Arc<RefusalLog>,
}

impl RefusalReporter {
    /// Logs (rate-limited) and reports that the peer refused this node.
    fn refused(&self, refusal: Refusal) {
        let (to, addr) = (self.to, &self.addr);
        if self.logged.should_log(to, refusal.kind()) {
            let to = names::of(to);
            match &refusal {
                Refusal::WrongCluster { expected, got } => warn!(
                    peer = %to,
                    %addr,
                    peer_cluster = %expected,
                    cluster = %got,
                    "peer {to} at {addr} refused this node because it belongs to cluster \
                     {expected} while this node is in cluster {got}; if {to} was meant to be a \
                     member it holds another cluster's data"
                ),
                Refusal::Removed { at } => warn!(
                    peer = %to,
                    %addr,
                    removed_at = at.0,
                    "peer {to} says this node was removed from the cluster (at index {})",
                    at.0
                ),
                Refusal::NotMember => warn!(
                    peer = %to,
                    %addr,
                    "peer {to} at {addr} refused this node: its configuration does not have \
                     this node as a member (its log may be behind the change that added this \
                     node; it catches up from the leader it follows)"
                ),
            }
        }
        let _ = self
            .reports
            .send(TransportReport::Refused { by: to, refusal });
    }
}

/// The sender's socket: counts the bytes the socket accepts and fails a write or flush once
/// written bytes have gone unacknowledged for longer than [`ACK_TIMEOUT`].
struct Watched<W> {
    inner: W,
    written: u64,
    acks: Arc<AckState>,
    /// The acknowledgement state last looked at: (bytes, busy count).
    seen: (u64, u64),
    /// Since when written bytes have waited for an acknowledgement that moves.
    waiting_since: Option<tokio::time::Instant>,
    /// Wakes a blocked write or flush to look at the acknowledgements again.
    tick: Pin<Box<tokio::time::Sleep>>,
}

impl<W> Watched<W> {
    fn new(inner: W, acks: Arc<AckState>) -> Watched<W> {
        Watched {
            inner,
            written: 0,
            acks,
            seen: (0, 0),
            waiting_since: None,
            tick: Box::pin(tokio::time::sleep(ACK_INTERVAL)),
        }
    }

    /// Fails when the receiver closed the connection, or when written bytes have waited too
    /// long for it to read them.
    fn check(&mut self) -> io::Result<()> {
        if self.acks.closed.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the peer closed the connection",
            ));
        }
        let now = tokio::time::Instant::now();
        let seen = (
            self.acks.bytes.load(Ordering::Acquire),
            self.acks.busy.load(Ordering::Acquire),
        );
        if seen != self.seen {
            self.seen = seen;
            self.waiting_since = None;
        }
        if self.written <= seen.0 {
            self.waiting_since = None;
            return Ok(());
        }
        let since = *self.waiting_since.get_or_insert(now);
        if now.duration_since(since) > ACK_TIMEOUT {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer stopped acknowledging what was sent",
            ));
        }
        Ok(())
    }

    /// While the socket is blocked: checks the acknowledgements every [`ACK_INTERVAL`].
    fn poll_stalled(&mut self, cx: &mut std::task::Context<'_>) -> io::Result<()> {
        while self.tick.as_mut().poll(cx).is_ready() {
            self.check()?;
            let next = tokio::time::Instant::now() + ACK_INTERVAL;
            self.tick.as_mut().reset(next);
        }
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Watched<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            std::task::Poll::Ready(Ok(n)) => {
                this.written += n as u64;
                std::task::Poll::Ready(Ok(n))
            }
            std::task::Poll::Pending => {
                this.poll_stalled(cx)?;
                std::task::Poll::Pending
            }
            other => other,
        }
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            std::task::Poll::Pending => {
                this.poll_stalled(cx)?;
                std::task::Poll::Pending
            }
            other => other,
        }
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The receiver's socket: counts the bytes read, for the acknowledgements.
struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.read.fetch_add(read as u64, Ordering::AcqRel);
        }
        polled
    }
}

/// Stops a helper task when the connection it serves ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sender side: reads the receiver's acknowledgements until the connection ends, and then
/// says so, so that the sender replaces the connection before it writes the next message into
/// a socket nobody reads (the message would be lost; for a vote request, an election's worth).
/// A refusal is reported, and marks the connection refused as well as closed.
async fn read_acks<R: AsyncRead + Unpin>(
    reader: R,
    acks: Arc<AckState>,
    refusals: RefusalReporter,
) {
    let mut r = BufReader::new(reader);
    loop {
        match frame::read(&mut r).await {
            Ok(Some(Frame::Ack { bytes, busy })) => {
                acks.bytes.store(bytes, Ordering::Release);
                if busy {
                    acks.busy.fetch_add(1, Ordering::AcqRel);
                }
            }
            Ok(Some(Frame::Refused(refusal))) => {
                acks.refused.store(true, Ordering::Release);
                refusals.refused(refusal);
                break;
            }
            _ => break,
        }
    }
    acks.closed.store(true, Ordering::Release);
}

/// Receiver side: every [`ACK_INTERVAL`], tells the sender how many bytes were read (when
/// that changed, or while the receiver waits on its node), until the connection ends.
async fn write_acks<W: AsyncWrite + Unpin>(writer: W, read: Arc<AtomicU64>, busy: Arc<AtomicBool>) {
    let mut w = writer;
    let mut last = 0;
    loop {
        tokio::time::sleep(ACK_INTERVAL).await;
        let bytes = read.load(Ordering::Acquire);
        let busy = busy.load(Ordering::Acquire);
        if bytes == last && !busy {
            continue;
        }
        let ack = Frame::Ack { bytes, busy };
        if frame::write(&mut w, &ack).await.is_err() || w.flush().await.is_err() {
            return;
        }
        last = bytes;
    }
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

/// What the transport tells its server, on the channel [`PeerTransport::new`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportReport {
    /// A snapshot was streamed to a peer, or failed to be.
    Snapshot(SnapshotReport),
    /// A peer refused this node's connection: this node belongs to another cluster, or the
    /// peer knows it was removed from the cluster.
    Refused {
        /// The peer that refused.
        by: NodeId,
        /// Why.
        refusal: Refusal,
    },
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
    /// This node's cluster, announced in every Hello and required of every caller.
    cluster: ClusterId,
    network: Arc<N>,
    /// Where snapshots are streamed from and received into.
    snapshots: Arc<dyn SnapshotFiles>,
    peers: Mutex<HashMap<NodeId, Peer>>,
    reports: mpsc::UnboundedSender<TransportReport>,
    /// Per peer: the generation of its newest inbound connection.
    inbound: Mutex<HashMap<NodeId, u64>>,
    /// The peers a committed membership change removed, and that change's index.
    removed: Mutex<HashMap<NodeId, LogIndex>>,
    /// Peers served although the configuration does not have them (yet): the members a
    /// joiner was told of. See [`PeerTransport::expect_peers`].
    expected: Mutex<std::collections::BTreeSet<NodeId>>,
    /// The last time a connection closed on a bad frame was logged, and how many were not
    /// logged since.
    bad_frames_logged: Mutex<(Option<tokio::time::Instant>, u64)>,
    /// Slots for inbound connections: [`PEER_CONNECTIONS_MAX`] of them.
    inbound_slots: Arc<tokio::sync::Semaphore>,
    /// The last time a connection closed over the cap was logged, and how many were not
    /// logged since.
    over_cap_logged: Mutex<(Option<tokio::time::Instant>, u64)>,
    /// Bytes of snapshot data reserved by the streams being reassembled now (at most
    /// [`SNAPSHOT_BYTES_IN_FLIGHT_MAX`]).
    snapshot_bytes: Arc<Mutex<u64>>,
    /// The last time a snapshot stream refused for the budget was logged, and how many were
    /// not logged since.
    snapshot_refusals_logged: Mutex<(Option<tokio::time::Instant>, u64)>,
    /// The acceptor's refusal log lines, rate-limited.
    refusals_logged: RefusalLog,
}

const PEERS_LOCK: &str = "the peer table lock is never held across a panic";

/// Whether a line of a kind limited to one per `interval` may be logged now: if so, returns
/// how many were left out since the last one and notes the time; if not, counts one more left
/// out. `state` is (when last logged, how many left out since).
fn rate_limited(
    state: &Mutex<(Option<tokio::time::Instant>, u64)>,
    interval: Duration,
) -> Option<u64> {
    let now = tokio::time::Instant::now();
    let mut state = state.lock().expect(PEERS_LOCK);
    let (last, skipped) = &mut *state;
    if last.is_some_and(|at| now.duration_since(at) < interval) {
        *skipped += 1;
        return None;
    }
    *last = Some(now);
    Some(std::mem::take(skipped))
}

/// Bytes of [`SNAPSHOT_BYTES_IN_FLIGHT_MAX`] held by one snapshot stream being reassembled;
/// given back when dropped, however the stream ends.
struct SnapshotReservation {
    bytes: u64,
    used: Arc<Mutex<u64>>,
}

impl Drop for SnapshotReservation {
    fn drop(&mut self) {
        let mut used = self.used.lock().expect(PEERS_LOCK);
        *used = used
            .checked_sub(self.bytes)
            .expect("a reservation gives back only what it took");
    }
}

/// One of the [`PEER_CONNECTIONS_MAX`] inbound connection slots; given back when dropped, so
/// a connection that ends however it ends frees its slot.
pub struct InboundSlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl<N: Network> PeerTransport<N> {
    /// A transport for node `id` of `cluster`, listening at `addr`, that streams snapshots
    /// from and into `snapshots`. The receiver gets the outcome of every snapshot sent and
    /// every refusal by a peer.
    pub fn new(
        id: NodeId,
        addr: String,
        cluster: ClusterId,
        network: N,
        snapshots: Arc<dyn SnapshotFiles>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<TransportReport>) {
        let (reports, rx) = mpsc::unbounded_channel();
        let transport = Arc::new(PeerTransport {
            id,
            addr,
            cluster,
            network: Arc::new(network),
            snapshots,
            peers: Mutex::new(HashMap::new()),
            reports,
            inbound: Mutex::new(HashMap::new()),
            removed: Mutex::new(HashMap::new()),
            expected: Mutex::new(std::collections::BTreeSet::new()),
            bad_frames_logged: Mutex::new((None, 0)),
            inbound_slots: Arc::new(tokio::sync::Semaphore::new(PEER_CONNECTIONS_MAX)),
            over_cap_logged: Mutex::new((None, 0)),
            snapshot_bytes: Arc::new(Mutex::new(0)),
            snapshot_refusals_logged: Mutex::new((None, 0)),
            refusals_logged: RefusalLog::default(),
        });
        (transport, rx)
    }

    /// The cluster this node belongs to.
    pub fn cluster_id(&self) -> ClusterId {
        self.cluster
    }

    /// Replaces the peers this node knows a committed membership change removed, each with
    /// the index of that change (the server feeds it from its applied state). Such a peer's
    /// connections are refused unless the node's latest configuration has it as a member
    /// again.
    pub fn set_removed(&self, removed: HashMap<NodeId, LogIndex>) {
        *self.removed.lock().expect(PEERS_LOCK) = removed;
    }

    /// The removed peers, as last set by [`PeerTransport::set_removed`].
    pub fn removed(&self) -> HashMap<NodeId, LogIndex> {
        self.removed.lock().expect(PEERS_LOCK).clone()
    }

    /// Adds node ids to serve although this node's configuration does not have them: a
    /// joiner, before its log arrives, knows the members only from the answer to its join, and
    /// must accept the leader that is about to send it that log. At most
    /// [`EXPECTED_PEERS_MAX`] are kept; the rest are ignored.
    pub fn expect_peers(&self, ids: impl IntoIterator<Item = NodeId>) {
        let mut expected = self.expected.lock().expect(PEERS_LOCK);
        for id in ids {
            if expected.len() >= EXPECTED_PEERS_MAX {
                warn!(
                    "more than {EXPECTED_PEERS_MAX} peers to expect: the rest are not served \
                     until the log names them"
                );
                return;
            }
            expected.insert(id);
        }
    }

    /// Why a caller that announced itself as `from` of `cluster` is refused, if it is:
    /// - of another cluster: always;
    /// - a member of this node's latest configuration (committed or not): never;
    /// - removed by a committed change ([`PeerTransport::set_removed`]): as removed;
    /// - expected ([`PeerTransport::expect_peers`]): never;
    /// - while this node knows no leader: never. This node may be the one that is behind: a
    ///   member added while it was away (or partitioned) is unknown to it, and if that member
    ///   now leads, only it can bring this node's log, and with it the configuration, up to
    ///   date (a blank joiner, or a joiner restarted before its log arrived, is the extreme
    ///   case). Refusing it would leave this node out of the cluster for good. Its messages
    ///   are stepped as a stranger's, which may raise the term only a little, and only while
    ///   the node follows no leader ([`Node::step_from_stranger`]): a forger in this window
    ///   cannot take the node to a far term, nor climb once the node follows someone;
    /// - anyone else, while this node follows a leader: as not a member, once the
    ///   configuration has not come to include it within [`MEMBERSHIP_GRACE`].
    async fn refusal_for<O: Send + 'static>(
        &self,
        from: NodeId,
        cluster: ClusterId,
        node: &Node<O>,
    ) -> Option<Refusal> {
        if cluster != self.cluster {
            return Some(Refusal::WrongCluster {
                expected: self.cluster,
                got: cluster,
            });
        }
        let (member, leaderless, unconfigured) = node.with_status(|s| {
            (
                s.configuration.contains(from),
                s.leader.is_none(),
                s.configuration.members().is_empty(),
            )
        });
        if member {
            return None;
        }
        // A node removed and later added back is a member again (above): the latest
        // configuration, not the old removal, decides.
        let removed_at = self.removed.lock().expect(PEERS_LOCK).get(&from).copied();
        if let Some(at) = removed_at {
            return Some(Refusal::Removed { at });
        }
        let expected = self.expected.lock().expect(PEERS_LOCK).contains(&from);
        // A node with no configuration yet (a joiner whose log has not arrived) has no member
        // to prefer and no state to protect: whoever leads now must be able to bring it in,
        // even while it still follows an earlier leader that lost office before it could.
        if expected || leaderless || unconfigured {
            return None;
        }
        let mut status = node.watch_status();
        let deadline = tokio::time::Instant::now() + MEMBERSHIP_GRACE;
        loop {
            if status.borrow_and_update().configuration.contains(from) {
                return None;
            }
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => continue,
                // Out of time, or the node stopped.
                _ => return Some(Refusal::NotMember),
            }
        }
    }

    /// A slot for one more inbound connection, held for as long as it is served; `None` when
    /// [`PEER_CONNECTIONS_MAX`] are open (the caller closes the connection, and the refusal is
    /// logged, rate-limited).
    pub fn inbound_slot(&self, addr: &str) -> Option<InboundSlot> {
        match Arc::clone(&self.inbound_slots).try_acquire_owned() {
            Ok(permit) => Some(InboundSlot(permit)),
            Err(_) => {
                if let Some(skipped) = rate_limited(&self.over_cap_logged, OVER_CAP_LOG_INTERVAL) {
                    warn!(
                        peer = %addr,
                        cap = PEER_CONNECTIONS_MAX,
                        not_logged = skipped,
                        "closed a peer connection from {addr} at once: {PEER_CONNECTIONS_MAX} \
                         peer connections are open, the most this node serves ({skipped} more \
                         such connections since the last line were not logged); a real \
                         cluster needs one per peer, so someone else is holding them open"
                    );
                }
                None
            }
        }
    }

    /// Reserves `bytes` of [`SNAPSHOT_BYTES_IN_FLIGHT_MAX`] for a snapshot stream from
    /// `from`, or, when they would pass it, logs (rate-limited) that the stream is refused and
    /// returns `None`.
    fn reserve_snapshot(&self, from: NodeId, bytes: u64) -> Option<SnapshotReservation> {
        let mut used = self.snapshot_bytes.lock().expect(PEERS_LOCK);
        if used.saturating_add(bytes) > SNAPSHOT_BYTES_IN_FLIGHT_MAX {
            let busy = *used;
            drop(used);
            if let Some(skipped) =
                rate_limited(&self.snapshot_refusals_logged, BAD_FRAME_LOG_INTERVAL)
            {
                let from = names::of(from);
                warn!(
                    peer = %from,
                    snapshot_bytes = bytes,
                    reassembling_bytes = busy,
                    not_logged = skipped,
                    "refused a snapshot stream of {bytes} bytes from {from}: {busy} bytes of \
                     other snapshots are being received, and at most \
                     {SNAPSHOT_BYTES_IN_FLIGHT_MAX} are held at once; the leader sends it \
                     again later ({skipped} more such refusals since the last line were not \
                     logged)"
                );
            }
            return None;
        }
        *used += bytes;
        Some(SnapshotReservation {
            bytes,
            used: Arc::clone(&self.snapshot_bytes),
        })
    }

    /// Whether `from` is a stranger to `node`: neither a member of its latest configuration
    /// nor a joiner it expects. Such a caller is served only while the node knows no leader
    /// (see `refusal_for`), and its messages are stepped with [`Node::step_from_stranger`].
    /// A node whose configuration is empty (a joiner restarted before its log arrived, which
    /// no longer knows whom it expected) has no stranger: it knows no member to learn the
    /// term from, and no state to protect, so only a leader can bring it in, whatever its term.
    fn is_stranger<O: Send + 'static>(&self, from: NodeId, node: &Node<O>) -> bool {
        let unknown = node.with_status(|s| {
            !s.configuration.contains(from) && !s.configuration.members().is_empty()
        });
        unknown && !self.expected.lock().expect(PEERS_LOCK).contains(&from)
    }

    /// Logs, at most once per [`BAD_FRAME_LOG_INTERVAL`], that a peer connection from `addr`
    /// was closed on a bad frame.
    fn log_bad_frame(&self, addr: &str, error: &frame::FrameError) {
        if let Some(skipped) = rate_limited(&self.bad_frames_logged, BAD_FRAME_LOG_INTERVAL) {
            warn!(
                peer = %addr,
                error = %error,
                not_logged = skipped,
                "peer connection from {addr} closed on a bad frame: {error} ({skipped} more \
                 since the last such line were not logged)"
            );
        }
    }

    /// Logs (rate-limited) that this node refused the caller `from` at `addr`.
    fn log_refusal(&self, from: NodeId, addr: &str, refusal: &Refusal) {
        if !self.refusals_logged.should_log(from, refusal.kind()) {
            return;
        }
        let from = names::of(from);
        match refusal {
            Refusal::WrongCluster { expected, got } => warn!(
                peer = %from,
                addr,
                peer_cluster = %got,
                cluster = %expected,
                "refused a peer: node {from} at {addr} belongs to cluster {got}, this node to \
                 cluster {expected}; if it was meant to join this cluster it holds another \
                 cluster's data: remove it from this cluster or restart it with an empty data \
                 directory and --join-addr"
            ),
            Refusal::Removed { at } => warn!(
                peer = %from,
                addr,
                removed_at = at.0,
                "refused a peer: node {from} at {addr} was removed from this cluster (at index \
                 {}) and still runs; stop it, or to bring it back restart it with an empty data \
                 directory and --join-addr",
                at.0
            ),
            Refusal::NotMember => warn!(
                peer = %from,
                addr,
                "refused a peer: node {from} at {addr} is not a member of this node's \
                 configuration and was not expected to join; if it is a real member that \
                 joined while this node was away, this node catches up from the leader it \
                 follows (if it stays behind, re-add it with an empty data directory and \
                 --join-addr)"
            ),
        }
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
            self.cluster,
            id,
            addr.clone(),
            Arc::clone(&self.network),
            Arc::clone(&self.snapshots),
            rx,
            self.reports.clone(),
        ));
        // Replacing the entry drops the old queue, which stops the old sender.
        peers.insert(id, Peer { addr, queue: tx });
    }

    /// Records the address a caller announced, unless the peer's address is already known
    /// (the replicated address book stays authoritative), or [`LEARNED_PEERS_MAX`] peers are
    /// known already.
    pub fn learn_peer(&self, id: NodeId, addr: String) {
        let (known, full) = {
            let peers = self.peers.lock().expect(PEERS_LOCK);
            (peers.contains_key(&id), peers.len() >= LEARNED_PEERS_MAX)
        };
        if known {
            return;
        }
        if full {
            debug!(peer = %names::of(id), %addr, "peer table full: the caller's address is not learned");
            return;
        }
        self.set_peer(id, addr);
    }

    /// Forgets peer `id` (removed from the cluster); its sender stops.
    pub fn remove_peer(&self, id: NodeId) {
        self.peers.lock().expect(PEERS_LOCK).remove(&id);
    }

    /// Records a new inbound connection from `peer`; returns its generation.
    fn inbound_opened(&self, peer: NodeId) -> u64 {
        let mut inbound = self.inbound.lock().expect(PEERS_LOCK);
        let generation = inbound.get(&peer).map_or(1, |g| g + 1);
        inbound.insert(peer, generation);
        generation
    }

    /// An inbound connection from `peer` ended; true when it was the newest one.
    fn inbound_closed(&self, peer: NodeId, generation: u64) -> bool {
        self.inbound.lock().expect(PEERS_LOCK).get(&peer) == Some(&generation)
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
            debug!(to = %names::of(message.to), "no address for peer: message dropped");
            return;
        };
        if let Err(e) = peer.queue.try_send(message) {
            let message = match e {
                mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
            };
            fail_snapshot(&message, &self.reports);
            debug!(to = %names::of(message.to), "peer queue full: message dropped");
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_sender<N: Network>(
    me: NodeId,
    my_addr: String,
    cluster: ClusterId,
    to: NodeId,
    addr: String,
    network: Arc<N>,
    snapshots: Arc<dyn SnapshotFiles>,
    mut queue: mpsc::Receiver<Message>,
    reports: mpsc::UnboundedSender<TransportReport>,
) {
    let refusals = RefusalReporter {
        to,
        addr: addr.clone(),
        reports: reports.clone(),
        logged: Arc::new(RefusalLog::default()),
    };
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
                debug!(to = %names::of(to), %addr, error = %e, "connect failed; retrying");
                fail_snapshot(&first, &reports);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
            Err(_) => {
                debug!(to = %names::of(to), %addr, "connect timed out; retrying");
                fail_snapshot(&first, &reports);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        let connected_at = tokio::time::Instant::now();
        info!(from = %names::of(me), to = %names::of(to), %addr, "connected to peer");
        let (reader, writer) = tokio::io::split(stream);
        let acks = Arc::new(AckState::default());
        let ack_reader = AbortOnDrop(
            tokio::spawn(read_acks(reader, Arc::clone(&acks), refusals.clone())).abort_handle(),
        );
        let mut w = BufWriter::new(Watched::new(writer, Arc::clone(&acks)));
        let mut next = Some(first);
        let result: io::Result<()> = async {
            let hello = Frame::Hello {
                from: me,
                addr: my_addr.clone(),
                cluster,
            };
            frame::write(&mut w, &hello).await?;
            loop {
                let message = match next.take() {
                    Some(m) => m,
                    None => {
                        // Flush only when the queue is drained: a burst goes out in few writes.
                        w.flush().await?;
                        match queue.recv().await {
                            Some(m) => m,
                            None => return Ok(()),
                        }
                    }
                };
                // A connection found dead before this message went out keeps the message for
                // the next connection.
                if let Err(e) = w.get_mut().check() {
                    pending = Some(message);
                    return Err(e);
                }
                next = send_one(&mut w, message, &snapshots, &mut queue, &reports).await?;
                if next.is_none()
                    && let Ok(m) = queue.try_recv()
                {
                    next = Some(m);
                }
            }
        }
        .await;
        drop((w, ack_reader));
        match result {
            Ok(()) => return,
            // Refused (already logged and reported): the peer will refuse again until someone
            // fixes it or this node, so ask at the slowest pace, however long the connection
            // lived.
            Err(e) if acks.refused.load(Ordering::Acquire) => {
                debug!(to = %names::of(to), %addr, error = %e, "peer refused the connection; retrying later");
                tokio::time::sleep(RECONNECT_BACKOFF_MAX).await;
            }
            Err(e) => {
                warn!(to = %names::of(to), %addr, error = %e, "peer connection lost; reconnecting");
                // A connection that had lived a while is replaced at once: it is most often
                // found dead only when a message is due (peers that rarely talk, such as two
                // followers, learn of a restarted peer at the first vote request), and that
                // message may be a pre-vote the election waits on. A connection that dies
                // soon after it opened (a flapping peer) waits out the backoff, which grows
                // across such connections as across failed connects.
                if connected_at.elapsed() < STABLE_CONNECTION {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                } else {
                    backoff = RECONNECT_BACKOFF_MIN;
                }
            }
        }
    }
}

/// Reports a snapshot that was not sent as not delivered (other messages need no report).
fn fail_snapshot(message: &Message, reports: &mpsc::UnboundedSender<TransportReport>) {
    if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
        let _ = reports.send(TransportReport::Snapshot(SnapshotReport {
            to: message.to,
            delivered: false,
        }));
    }
}

/// Writes one message; a snapshot as a stream of chunks read from the snapshot files, with the
/// messages queued meanwhile written between them (heartbeats must reach a follower that
/// receives a long snapshot, or it would campaign). Returns a snapshot message taken from the
/// queue meanwhile, to send next.
async fn send_one<W: AsyncWrite + Unpin>(
    w: &mut W,
    message: Message,
    snapshots: &Arc<dyn SnapshotFiles>,
    queue: &mut mpsc::Receiver<Message>,
    reports: &mpsc::UnboundedSender<TransportReport>,
) -> io::Result<Option<Message>> {
    let MessageBody::InstallSnapshot { snapshot } = &message.body else {
        frame::write(w, &Frame::Message(message)).await?;
        return Ok(None);
    };
    let to = message.to;
    let metadata = snapshot.metadata.clone();
    let (mut data, data_bytes) = match snapshots.open(&metadata) {
        Ok(opened) => opened,
        Err(e) => {
            // Pruned since the core chose it, or unreadable: the leader tries again later, with
            // whichever snapshot is its latest then.
            warn!(to = %names::of(to), index = metadata.index.0, error = %e, "cannot open the snapshot to send");
            let _ = reports.send(TransportReport::Snapshot(SnapshotReport {
                to,
                delivered: false,
            }));
            return Ok(None);
        }
    };
    let how = snapshots.offload();
    let mut deferred: Option<Message> = None;
    let streamed: io::Result<()> = async {
        frame::write(
            w,
            &Frame::SnapshotBegin {
                message,
                data_bytes,
            },
        )
        .await?;
        let mut sent = 0u64;
        while sent < data_bytes {
            let want = (data_bytes - sent).min(SNAPSHOT_CHUNK_BYTES as u64) as usize;
            let (back, chunk) = offload(how, move || {
                let mut chunk = vec![0u8; want];
                let read = data.read_exact(&mut chunk).map(|()| chunk);
                (data, read)
            })
            .await;
            data = back;
            let chunk = chunk.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("reading the snapshot at {} to send: {e}", metadata.index),
                )
            })?;
            sent += chunk.len() as u64;
            frame::write(w, &Frame::SnapshotChunk(Bytes::from(chunk))).await?;
            // What queued up while the chunk went out follows it, before the next chunk.
            while let Ok(queued) = queue.try_recv() {
                if matches!(queued.body, MessageBody::InstallSnapshot { .. }) {
                    // One snapshot at a time: a newer one replaces any deferred before it.
                    if let Some(older) = deferred.replace(queued) {
                        fail_snapshot(&older, reports);
                    }
                } else {
                    frame::write(w, &Frame::Message(queued)).await?;
                }
            }
            w.flush().await?;
        }
        frame::write(w, &Frame::SnapshotEnd).await?;
        w.flush().await
    }
    .await;
    let _ = reports.send(TransportReport::Snapshot(SnapshotReport {
        to,
        delivered: streamed.is_ok(),
    }));
    if let Err(e) = streamed {
        if let Some(deferred) = deferred {
            fail_snapshot(&deferred, reports);
        }
        return Err(e);
    }
    // The leader asks again for a snapshot that takes long to stream (its retry timer runs
    // from when it asked): the same one, just delivered, is not sent twice.
    if let Some(again) = &deferred
        && let MessageBody::InstallSnapshot { snapshot } = &again.body
        && snapshot.metadata.index == metadata.index
    {
        let _ = reports.send(TransportReport::Snapshot(SnapshotReport {
            to,
            delivered: true,
        }));
        return Ok(None);
    }
    Ok(deferred)
}

/// Serves one incoming peer connection: reads the caller's Hello, refuses a caller of another
/// cluster or one removed from this cluster (see [`PeerTransport::set_removed`]), and
/// otherwise steps `node` with each message until the peer disconnects or misbehaves. Returns
/// why the connection ended (a refusal is a normal end).
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
    let busy = Arc::new(AtomicBool::new(false));
    let mut r = BufReader::new(Counted {
        inner: reader,
        read: Arc::clone(&read),
    });
    let hello = tokio::time::timeout(HELLO_TIMEOUT, frame::read_hello(&mut r))
        .await
        .map_err(|_| {
            frame::FrameError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no Hello within {HELLO_TIMEOUT:?} of connecting"),
            ))
        })?;
    let (from, addr, cluster) = match hello? {
        Some(Frame::Hello {
            from,
            addr,
            cluster,
        }) => (from, addr, cluster),
        Some(_) => return Err(protocol("the first frame must be Hello")),
        None => return Ok(()),
    };
    // Decided before anything else happens on this connection: a refused caller is neither
    // learned as a peer nor acknowledged, and no message of its reaches the node.
    if let Some(refusal) = transport.refusal_for(from, cluster, &node).await {
        transport.log_refusal(from, &addr, &refusal);
        refuse(r, writer, refusal).await;
        return Ok(());
    }
    transport.learn_peer(from, addr);
    let _ack_writer =
        AbortOnDrop(tokio::spawn(write_acks(writer, read, Arc::clone(&busy))).abort_handle());
    // When this connection ends, the node hears of it if it was the newest one from `from`:
    // if `from` led, its silence from now on is likely for good (a killed process closes its
    // sockets at once). An older connection that the sender already replaced says nothing.
    let mut lost = PeerLostGuard {
        node: node.clone(),
        peer: from,
        generation: transport.inbound_opened(from),
        transport: Arc::clone(&transport),
        closed_here: false,
    };
    // Stepping waits while the node's queue is full; meanwhile the acknowledgements say
    // "busy", so the sender does not take the pause for a dead connection.
    // A caller served only because the node knew no leader stays a stranger until the
    // configuration names it, and the node takes its messages with a tighter term check:
    // asked again at each message, as the configuration may have come to include it.
    let step = |m: Message| {
        let node = node.clone();
        let busy = Arc::clone(&busy);
        let stranger = transport.is_stranger(from, &node);
        async move {
            busy.store(true, Ordering::Release);
            let stepped = if stranger {
                node.step_from_stranger(m).await
            } else {
                node.step(m).await
            };
            busy.store(false, Ordering::Release);
            stepped
        }
    };
    // A snapshot being received: its header, where its data goes, and its share of the
    // node-wide budget.
    let mut snapshot: Option<Receiving> = None;
    let files = Arc::clone(&transport.snapshots);
    let how = files.offload();
    loop {
        // A stream must keep its chunks coming: the heartbeats between them do not count.
        let next = if let Some(receiving) = &snapshot {
            tokio::time::timeout_at(receiving.next_chunk_due, frame::read(&mut r))
                .await
                .map_err(|_| {
                    frame::FrameError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("a snapshot stream stopped for {SNAPSHOT_CHUNK_TIMEOUT:?}"),
                    ))
                })??
        } else {
            frame::read(&mut r).await?
        };
        let Some(f) = next else { break };
        match (f, snapshot.take()) {
            // Messages may come between a snapshot's chunks (its sender's heartbeats).
            (Frame::Message(m), receiving) => {
                if m.from != from {
                    return Err(protocol("a message from another node than the caller"));
                }
                if step(m).await.is_err() {
                    return Ok(()); // The node stopped.
                }
                snapshot = receiving;
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
                let MessageBody::InstallSnapshot {
                    snapshot: announced,
                } = &message.body
                else {
                    return Err(protocol("SnapshotBegin without an InstallSnapshot message"));
                };
                let Some(reservation) = transport.reserve_snapshot(from, data_bytes) else {
                    // Refused (and logged): closing the connection makes the sender report
                    // the snapshot undelivered, and the leader retries it later. The leader
                    // is alive: its reconnection must not look like its loss.
                    lost.closed_here = true;
                    return Ok(());
                };
                let sink = match files.receive(&announced.metadata, data_bytes) {
                    Ok(sink) => sink,
                    Err(e) => {
                        warn!(from = %names::of(from), index = announced.metadata.index.0, error = %e, "cannot receive a snapshot");
                        lost.closed_here = true;
                        return Ok(());
                    }
                };
                snapshot = Some(Receiving {
                    message,
                    total: data_bytes,
                    received: 0,
                    sink,
                    next_chunk_due: tokio::time::Instant::now() + SNAPSHOT_CHUNK_TIMEOUT,
                    _reservation: reservation,
                });
            }
            (Frame::SnapshotChunk(chunk), Some(mut receiving)) => {
                if receiving.received + chunk.len() as u64 > receiving.total {
                    return Err(protocol("snapshot chunks longer than announced"));
                }
                receiving.received += chunk.len() as u64;
                receiving.next_chunk_due = tokio::time::Instant::now() + SNAPSHOT_CHUNK_TIMEOUT;
                let sink = receiving.sink;
                let (sink, written) = offload(how, move || {
                    let mut sink = sink;
                    let written = sink.write(&chunk);
                    (sink, written)
                })
                .await;
                receiving.sink = sink;
                if let Err(e) = written {
                    warn!(from = %names::of(from), error = %e, "cannot write a received snapshot");
                    return Ok(());
                }
                snapshot = Some(receiving);
            }
            (Frame::SnapshotEnd, Some(receiving)) => {
                if receiving.received != receiving.total {
                    return Err(protocol("snapshot shorter than announced"));
                }
                let Receiving { message, sink, .. } = receiving;
                // Made durable and checked whole, off this task: it may take seconds.
                if let Err(e) = offload(how, move || sink.finish()).await {
                    if transport.refusals_logged.should_log(from, "bad_snapshot") {
                        warn!(
                            from = %names::of(from),
                            kind = "bad_snapshot",
                            error = %e,
                            "refused a snapshot from peer {} (further such refusals of it are \
                             not logged for {}s): {e}",
                            names::of(from),
                            REFUSAL_LOG_INTERVAL.as_secs()
                        );
                    }
                    return Ok(());
                }
                if step(message).await.is_err() {
                    return Ok(());
                }
            }
            _ => return Err(protocol("frame out of order")),
        }
    }
    Ok(())
}

/// A snapshot stream being received on a connection.
struct Receiving {
    /// The InstallSnapshot message it carries (metadata only).
    message: Message,
    /// The bytes its `SnapshotBegin` announced.
    total: u64,
    /// The bytes received so far.
    received: u64,
    /// Where its data goes.
    sink: Box<dyn SnapshotSink>,
    /// When the connection is closed unless the next chunk has come
    /// ([`SNAPSHOT_CHUNK_TIMEOUT`] after the last one).
    next_chunk_due: tokio::time::Instant,
    /// Its share of [`SNAPSHOT_BYTES_IN_FLIGHT_MAX`], given back however the stream ends.
    _reservation: SnapshotReservation,
}

/// Answers a refused caller with its one frame, then closes the connection, after reading and
/// discarding what the caller sends for up to [`REFUSAL_LINGER`] (see there why). A caller that
/// is gone already changes nothing, so errors are ignored.
async fn refuse<R, W>(mut r: R, mut w: W, refusal: Refusal)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let answered = async {
        frame::write(&mut w, &Frame::Refused(refusal)).await?;
        w.flush().await?;
        w.shutdown().await
    };
    if answered.await.is_err() {
        return;
    }
    let mut discard = [0u8; 4096];
    let drain = async { while matches!(r.read(&mut discard).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
}

/// Tells the node that the newest connection from `peer` ended, unless this side closed it
/// on purpose (a snapshot it refused): the node campaigns early when its leader's connection
/// ends, and a leader this node hung up on is not gone.
struct PeerLostGuard<O: Send + 'static, N: Network> {
    node: Node<O>,
    peer: NodeId,
    generation: u64,
    transport: Arc<PeerTransport<N>>,
    /// This side ended the connection while the peer was well.
    closed_here: bool,
}

impl<O: Send + 'static, N: Network> Drop for PeerLostGuard<O, N> {
    fn drop(&mut self) {
        if self.transport.inbound_closed(self.peer, self.generation) && !self.closed_here {
            self.node.peer_lost(self.peer);
        }
    }
}

fn protocol(what: &str) -> frame::FrameError {
    frame::FrameError::Io(io::Error::new(io::ErrorKind::InvalidData, what.to_string()))
}

/// Accepts peer connections on `listener` until the node stops, serving each on its own task,
/// at most [`PEER_CONNECTIONS_MAX`] at once: one over the cap is closed at once.
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
        let Some(slot) = transport.inbound_slot(&addr.to_string()) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let node = node.clone();
        let transport = Arc::clone(&transport);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = serve_connection(stream, node, Arc::clone(&transport)).await {
                transport.log_bad_frame(&addr.to_string(), &e);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::core::{self, Configuration, Term};
    use crate::node::{NodeConfig, SnapshotFiles};
    use tokio::io::DuplexStream;
    use wal::{SimFs, Wal, WalConfig};

    /// The cluster of the nodes in these tests.
    const CLUSTER_A: ClusterId = ClusterId(0xaaaa);
    /// Another cluster.
    const CLUSTER_B: ClusterId = ClusterId(0xbbbb);

    /// A network of in-memory streams: every connect hands the far end, with the (virtual)
    /// time of the connect, to the test.
    struct Duplexes(mpsc::UnboundedSender<(tokio::time::Instant, DuplexStream)>);

    impl Network for Duplexes {
        type Stream = DuplexStream;

        async fn connect(&self, _addr: String) -> io::Result<DuplexStream> {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            let _ = self.0.send((tokio::time::Instant::now(), theirs));
            Ok(ours)
        }
    }

    fn heartbeat(read_round: u64) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::Heartbeat {
                leader_commit: LogIndex::ZERO,
                read_round,
            },
        }
    }

    /// The first message on the far end of a new connection, after its Hello; fails the test
    /// if none comes within a (virtual) 10 s, e.g. because it was lost.
    async fn first_message(far: &mut BufReader<DuplexStream>) -> Message {
        let read = async {
            let hello = frame::read(far)
                .await
                .expect("a frame")
                .expect("not the end");
            assert!(matches!(
                hello,
                Frame::Hello {
                    from: NodeId(1),
                    cluster: CLUSTER_A,
                    ..
                }
            ));
            match frame::read(far)
                .await
                .expect("a frame")
                .expect("not the end")
            {
                Frame::Message(m) => m,
                other => panic!("expected a message, got {other:?}"),
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the message arrives")
    }

    type Connects = mpsc::UnboundedReceiver<(tokio::time::Instant, DuplexStream)>;

    /// The next connect; fails the test if none comes within a (virtual) 10 s.
    async fn next_connect(connects: &mut Connects) -> (tokio::time::Instant, DuplexStream) {
        tokio::time::timeout(Duration::from_secs(10), connects.recv())
            .await
            .expect("the sender connects")
            .expect("the network lives as long as the transport")
    }

    /// Node 1's transport with peer 2 on the in-memory network, and the stream of connects.
    fn node1_to_2() -> (Arc<PeerTransport<Duplexes>>, Connects) {
        let (transport, connects, _reports) = node1_of_cluster_to_2(CLUSTER_A);
        (transport, connects)
    }

    /// Node 1's transport, of `cluster`, with peer 2 on the in-memory network, the stream of
    /// connects, and the transport's reports.
    fn node1_of_cluster_to_2(
        cluster: ClusterId,
    ) -> (
        Arc<PeerTransport<Duplexes>>,
        Connects,
        mpsc::UnboundedReceiver<TransportReport>,
    ) {
        node1_with_files_to_2(cluster, Arc::new(NoFiles))
    }

    /// [`node1_of_cluster_to_2`] whose snapshots are kept in `files`.
    fn node1_with_files_to_2(
        cluster: ClusterId,
        files: Arc<dyn SnapshotFiles>,
    ) -> (
        Arc<PeerTransport<Duplexes>>,
        Connects,
        mpsc::UnboundedReceiver<TransportReport>,
    ) {
        let (tx, connects) = mpsc::unbounded_channel();
        let (transport, reports) =
            PeerTransport::new(NodeId(1), "n1".into(), cluster, Duplexes(tx), files);
        transport.set_peer(NodeId(2), "n2".into());
        (transport, connects, reports)
    }

    /// Opens a connection from node 1 to peer 2 with a first message, lets it live `lived`,
    /// has the peer close it, and sends a second message. Returns how long after the second
    /// message was due the sender connected again, and what arrived on the new connection.
    async fn reconnect_after_peer_closed(lived: Duration) -> (Duration, Message) {
        let (transport, mut connects) = node1_to_2();
        transport.send(heartbeat(1));
        let (_, far) = next_connect(&mut connects).await;
        let mut far = BufReader::new(far);
        assert_eq!(first_message(&mut far).await, heartbeat(1));
        tokio::time::sleep(lived).await;
        drop(far);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let due = tokio::time::Instant::now();
        transport.send(heartbeat(2));
        let (at, far) = next_connect(&mut connects).await;
        let mut far = BufReader::new(far);
        (at - due, first_message(&mut far).await)
    }

    /// An InstallSnapshot from node 1 to node 2 for the snapshot at `index`, term 1 (the
    /// message carries only metadata: the data is in the snapshot files).
    fn install_snapshot(index: u64) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::InstallSnapshot {
                snapshot: core::Snapshot {
                    metadata: core::SnapshotMetadata {
                        index: LogIndex(index),
                        term: Term(1),
                        configuration: Configuration::default(),
                    },
                    data: Bytes::new(),
                },
            },
        }
    }

    /// Snapshot data of `bytes` bytes that tells its offsets apart.
    fn snapshot_data(bytes: usize) -> Bytes {
        (0..bytes).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_streams_from_its_file_with_heartbeats_between_its_chunks() {
        // Given node 1, whose snapshot files keep a snapshot of two and a half chunks at
        // index 7,
        let files = Arc::new(crate::node::MemSnapshotFiles::accepting_all());
        let data = snapshot_data(SNAPSHOT_CHUNK_BYTES * 5 / 2);
        let MessageBody::InstallSnapshot { snapshot } = install_snapshot(7).body else {
            unreachable!("built as an InstallSnapshot")
        };
        files.insert(&snapshot.metadata, data.clone());
        let (transport, mut connects, mut reports) = node1_with_files_to_2(CLUSTER_A, files);
        // when the node sends peer 2 that snapshot and then a heartbeat,
        transport.send(install_snapshot(7));
        transport.send(heartbeat(1));
        let (_, far) = next_connect(&mut connects).await;
        let mut far = BufReader::new(far);
        // then the peer reads the snapshot's announced length, its chunks with the heartbeat
        // between the first two (not after the whole snapshot), and its end,
        let mut frames = Vec::new();
        loop {
            let f = frame::read(&mut far).await.expect("a frame").expect("open");
            let end = matches!(f, Frame::SnapshotEnd);
            frames.push(f);
            if end {
                break;
            }
        }
        assert!(matches!(frames[0], Frame::Hello { .. }));
        assert!(
            matches!(&frames[1], Frame::SnapshotBegin { data_bytes, .. } if *data_bytes == data.len() as u64)
        );
        assert!(matches!(frames[2], Frame::SnapshotChunk(_)));
        assert_eq!(frames[3], Frame::Message(heartbeat(1)));
        let received: Vec<u8> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::SnapshotChunk(chunk) => Some(chunk.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        // the data is the file's, byte for byte,
        assert_eq!(received, data.to_vec());
        // and the node hears that the snapshot was delivered.
        let report = tokio::time::timeout(Duration::from_secs(1), reports.recv())
            .await
            .expect("reported")
            .expect("open");
        assert_eq!(
            report,
            TransportReport::Snapshot(SnapshotReport {
                to: NodeId(2),
                delivered: true
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_whose_file_is_gone_is_reported_undelivered_and_the_connection_lives() {
        // Given node 1, whose snapshot files hold nothing at index 9,
        let files = Arc::new(crate::node::MemSnapshotFiles::accepting_all());
        let (transport, mut connects, mut reports) = node1_with_files_to_2(CLUSTER_A, files);
        // when the node sends peer 2 the snapshot at 9, then a heartbeat,
        transport.send(install_snapshot(9));
        transport.send(heartbeat(1));
        // then the snapshot is reported undelivered (the leader will try again),
        let report = tokio::time::timeout(Duration::from_secs(10), reports.recv())
            .await
            .expect("reported")
            .expect("open");
        assert_eq!(
            report,
            TransportReport::Snapshot(SnapshotReport {
                to: NodeId(2),
                delivered: false
            })
        );
        // and the heartbeat still goes out on the connection, nothing announced before it.
        let (_, far) = next_connect(&mut connects).await;
        let mut far = BufReader::new(far);
        assert_eq!(first_message(&mut far).await, heartbeat(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_lived_connection_the_peer_closed_is_replaced_at_once_and_loses_nothing() {
        // Given a connection to peer 2 that has lived two seconds, when the peer closes it (it
        // restarted) and a message is due, then a new connection opens without a backoff
        // delay, and the message arrives on it (it was not written into the dead one).
        let (delay, arrived) = reconnect_after_peer_closed(2 * STABLE_CONNECTION).await;
        assert!(delay < RECONNECT_BACKOFF_MIN, "reconnected after {delay:?}");
        assert_eq!(arrived, heartbeat(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_keeps_closing_new_connections_is_retried_ever_more_slowly() {
        // Given a peer that closes every connection soon after it opens, when a message is
        // due after each close, then the sender waits the backoff before each reconnect, and
        // the wait doubles (a flapping peer is not hammered), and every message still arrives.
        let (transport, mut connects) = node1_to_2();
        transport.send(heartbeat(0));
        let (_, far) = next_connect(&mut connects).await;
        let mut far = BufReader::new(far);
        assert_eq!(first_message(&mut far).await, heartbeat(0));
        let mut delays = Vec::new();
        for round in 1..=3 {
            drop(far);
            tokio::time::sleep(Duration::from_millis(1)).await;
            let due = tokio::time::Instant::now();
            transport.send(heartbeat(round));
            let (at, next) = next_connect(&mut connects).await;
            far = BufReader::new(next);
            assert_eq!(first_message(&mut far).await, heartbeat(round));
            delays.push(at - due);
        }
        let floors = [1, 2, 4].map(|k| RECONNECT_BACKOFF_MIN * k);
        assert!(
            delays.iter().zip(floors).all(|(d, floor)| *d >= floor),
            "delays {delays:?}, expected at least {floors:?}"
        );
    }

    #[tokio::test]
    async fn a_stream_whose_reader_stopped_fails_the_writer_after_the_ack_timeout() {
        // Given a connection whose other end never reads (so never acknowledges), when the
        // sender keeps writing, then a write fails with TimedOut once the socket is full and
        // ACK_TIMEOUT has passed, instead of blocking forever.
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut w = Watched::new(ours, Arc::new(AckState::default()));
        let started = tokio::time::Instant::now();
        let chunk = [7u8; 256];
        let error = loop {
            if let Err(e) = w.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= ACK_TIMEOUT);
    }

    #[tokio::test]
    async fn acknowledged_bytes_keep_a_slow_stream_alive() {
        // Given a reader that drains slowly but acknowledges what it read, when the sender
        // writes far more than the socket holds, then every write eventually succeeds.
        let (ours, theirs) = tokio::io::duplex(1024);
        let acks = Arc::new(AckState::default());
        let read = Arc::new(AtomicU64::new(0));
        let reader_acks = Arc::clone(&acks);
        let reader_read = Arc::clone(&read);
        let reader = tokio::spawn(async move {
            let mut r = Counted {
                inner: theirs,
                read: reader_read,
            };
            let mut buf = [0u8; 512];
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => reader_acks
                        .bytes
                        .store(r.read.load(Ordering::Acquire), Ordering::Release),
                }
            }
        });
        let mut w = Watched::new(ours, acks);
        w.write_all(&[1u8; 16 * 1024])
            .await
            .expect("acknowledged progress");
        drop(w);
        reader.await.expect("the reader ends with the stream");
        assert_eq!(read.load(Ordering::Acquire), 16 * 1024);
    }

    use crate::node::testing::{NoFiles, Nothing};

    /// Drops what the node sends: these tests watch what reaches the node, not its answers.
    struct Nowhere;

    impl Transport for Nowhere {
        fn send(&self, _: Message) {}
    }

    /// A running node 2 in term 1 with the voters {1, 3}, whose latest configuration has
    /// `also_learners` too. Node 2 is a learner itself, so it never campaigns: its term moves
    /// only when a message moves it. The one place these tests build a node (the store's API
    /// is the part most likely to change under them).
    fn node2(also_learners: &[NodeId]) -> Node<()> {
        let mut learners: BTreeSet<NodeId> = also_learners.iter().copied().collect();
        learners.insert(NodeId(2));
        node2_of(Configuration {
            voters: [NodeId(1), NodeId(3)].into(),
            learners,
            ..Configuration::default()
        })
    }

    /// A running node 2 in term 1 whose configuration is `configuration`.
    fn node2_of(configuration: Configuration) -> Node<()> {
        node2_with_files(configuration, Arc::new(NoFiles))
    }

    /// [`node2_of`] keeping its snapshots in `files`.
    fn node2_with_files(configuration: Configuration, files: Arc<dyn SnapshotFiles>) -> Node<()> {
        let wal = Wal::open(SimFs::new(2), "/n2/wal", WalConfig::default()).expect("a fresh WAL");
        let store = crate::node::testing::store_in_term_1_with(wal, configuration, files.clone());
        let config = NodeConfig {
            raft: core::Config::new(NodeId(2)),
            tick: Duration::from_millis(10),
            snapshot_every: 0,
            snapshot_log_share: 0.25,
            events_per_ready_max: 16,
            batch_wait: Duration::ZERO,
        };
        crate::node::spawn(
            config,
            store,
            Arc::new(Nowhere),
            files,
            Arc::new(Mutex::new(Nothing)),
        )
        .expect("the node starts")
    }

    /// Node 2's transport, of `cluster`; it is only served, never sends.
    fn node2_transport(cluster: ClusterId) -> Arc<PeerTransport<Duplexes>> {
        node2_transport_with(
            cluster,
            Arc::new(crate::node::MemSnapshotFiles::accepting_all()),
        )
    }

    /// [`node2_transport`] receiving snapshots into `files`.
    fn node2_transport_with(
        cluster: ClusterId,
        files: Arc<dyn SnapshotFiles>,
    ) -> Arc<PeerTransport<Duplexes>> {
        let (unused, _) = mpsc::unbounded_channel();
        PeerTransport::new(NodeId(2), "n2".into(), cluster, Duplexes(unused), files).0
    }

    /// A message from `from` to node 2 in `term` (a leader's heartbeat).
    fn heartbeat_from(from: NodeId, term: Term) -> Message {
        Message {
            from,
            to: NodeId(2),
            term,
            body: MessageBody::Heartbeat {
                leader_commit: LogIndex::ZERO,
                read_round: 0,
            },
        }
    }

    /// Calls node 2 as `from` of `cluster` and sends a heartbeat of term 5 behind the Hello.
    /// Returns the caller's end of the connection and the task that serves the other end.
    async fn call_node2(
        node: &Node<()>,
        transport: &Arc<PeerTransport<Duplexes>>,
        from: NodeId,
        cluster: ClusterId,
    ) -> (
        BufReader<DuplexStream>,
        tokio::task::JoinHandle<Result<(), frame::FrameError>>,
    ) {
        call_node2_at(node, transport, from, cluster, Term(5)).await
    }

    /// [`call_node2`] with a heartbeat of `term`.
    async fn call_node2_at(
        node: &Node<()>,
        transport: &Arc<PeerTransport<Duplexes>>,
        from: NodeId,
        cluster: ClusterId,
        term: Term,
    ) -> (
        BufReader<DuplexStream>,
        tokio::task::JoinHandle<Result<(), frame::FrameError>>,
    ) {
        let message = Frame::Message(heartbeat_from(from, term));
        call_node2_with(node, transport, from, cluster, [message]).await
    }

    /// Calls node 2 as `from` of `cluster`: its Hello, then `frames`.
    async fn call_node2_with(
        node: &Node<()>,
        transport: &Arc<PeerTransport<Duplexes>>,
        from: NodeId,
        cluster: ClusterId,
        frames: impl IntoIterator<Item = Frame>,
    ) -> (
        BufReader<DuplexStream>,
        tokio::task::JoinHandle<Result<(), frame::FrameError>>,
    ) {
        let (mut caller, theirs) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(serve_connection(
            theirs,
            node.clone(),
            Arc::clone(transport),
        ));
        let hello = Frame::Hello {
            from,
            addr: format!("{from}"),
            cluster,
        };
        for f in std::iter::once(hello).chain(frames) {
            frame::write(&mut caller, &f).await.expect("written");
        }
        caller.flush().await.expect("flushed");
        (BufReader::new(caller), served)
    }

    /// The next frame the caller reads (`None`: the connection closed); fails the test if
    /// nothing comes within a (virtual) 10 s.
    async fn answer(caller: &mut BufReader<DuplexStream>) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(10), frame::read(caller))
            .await
            .expect("an answer in time")
            .expect("a well-formed frame")
    }

    /// Node 2's term once it has had (a virtual) second to take in anything it was handed.
    async fn settled_term(node: &Node<()>) -> Term {
        tokio::time::sleep(Duration::from_secs(1)).await;
        node.status().term
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_of_another_cluster_is_refused_and_none_of_its_messages_reach_the_node() {
        // Given node 2 of cluster A in term 1,
        let node = node2(&[]);
        let transport = node2_transport(CLUSTER_A);
        // when node 1 calls announcing cluster B, with a heartbeat of term 5 behind its Hello,
        let (mut caller, served) = call_node2(&node, &transport, NodeId(1), CLUSTER_B).await;
        // then its one answer is a refusal naming both clusters, and the connection closes,
        assert_eq!(
            answer(&mut caller).await,
            Some(Frame::Refused(Refusal::WrongCluster {
                expected: CLUSTER_A,
                got: CLUSTER_B,
            }))
        );
        assert_eq!(answer(&mut caller).await, None);
        let ended = served.await.expect("the server task ends");
        assert!(ended.is_ok(), "a refusal is a normal end: {ended:?}");
        // and the node never took the heartbeat (its term is still 1), nor learned the
        // caller's address.
        assert_eq!(settled_term(&node).await, Term(1));
        assert!(transport.peers().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_peer_is_refused_until_the_configuration_has_it_again() {
        // Given node 2 that knows node 4 was removed by the change at index 7, and whose
        // configuration does not have node 4,
        let removed = HashMap::from([(NodeId(4), LogIndex(7))]);
        let node = node2(&[]);
        let transport = node2_transport(CLUSTER_A);
        transport.set_removed(removed.clone());
        assert_eq!(transport.removed(), removed);
        // when node 4 calls (of the same cluster), then it is refused with the index of its
        // removal, and its heartbeat does not reach the node.
        let (mut caller, _served) = call_node2(&node, &transport, NodeId(4), CLUSTER_A).await;
        assert_eq!(
            answer(&mut caller).await,
            Some(Frame::Refused(Refusal::Removed { at: LogIndex(7) }))
        );
        assert_eq!(answer(&mut caller).await, None);
        assert_eq!(settled_term(&node).await, Term(1));

        // Given the same knowledge on a node whose latest configuration has node 4 again (it
        // was added back after its removal),
        let node = node2(&[NodeId(4)]);
        let transport = node2_transport(CLUSTER_A);
        transport.set_removed(removed);
        // when node 4 calls, then it is served: its bytes are acknowledged, and its heartbeat
        // moves the node to term 5.
        let (mut caller, _served) = call_node2(&node, &transport, NodeId(4), CLUSTER_A).await;
        assert!(
            matches!(answer(&mut caller).await, Some(Frame::Ack { .. })),
            "acknowledged, not refused"
        );
        assert_eq!(settled_term(&node).await, Term(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stranger_of_the_right_cluster_is_refused_as_not_a_member() {
        // Given node 2 (voters {1, 3}, learner 2) of cluster A, following leader 1 in term 5,
        let node = node2(&[]);
        let transport = node2_transport(CLUSTER_A);
        let (_leader, _served) = call_node2(&node, &transport, NodeId(1), CLUSTER_A).await;
        assert_eq!(settled_term(&node).await, Term(5));
        assert_eq!(node.status().leader, Some(NodeId(1)));
        // when node 12345, which no configuration names, calls with the right cluster id and
        // a heartbeat of term 5 behind its Hello,
        let (mut caller, served) = call_node2(&node, &transport, NodeId(12345), CLUSTER_A).await;
        // then it is refused as not a member, once the grace period has passed,
        let asked = tokio::time::Instant::now();
        assert_eq!(
            answer(&mut caller).await,
            Some(Frame::Refused(Refusal::NotMember))
        );
        assert!(asked.elapsed() >= MEMBERSHIP_GRACE);
        assert_eq!(answer(&mut caller).await, None);
        assert!(served.await.expect("the server task ends").is_ok());
        // and its heartbeat never reached the node (it still follows 1), nor was its address
        // learned.
        assert_eq!(settled_term(&node).await, Term(5));
        assert_eq!(node.status().leader, Some(NodeId(1)));
        assert!(!transport.peers().iter().any(|(id, _)| *id == NodeId(12345)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_knows_no_leader_serves_a_caller_its_configuration_lacks() {
        // Given node 2 that follows no leader, and whose configuration does not have node 5
        // (node 5 joined and came to lead while node 2 was away: node 2's log is behind),
        let node = node2(&[]);
        let transport = node2_transport(CLUSTER_A);
        assert_eq!(node.status().leader, None);
        // when node 5 calls with its heartbeat, then it is served: only it can bring node 2's
        // log, and with it the configuration, up to date.
        let (mut caller, _served) = call_node2(&node, &transport, NodeId(5), CLUSTER_A).await;
        assert!(
            matches!(answer(&mut caller).await, Some(Frame::Ack { .. })),
            "acknowledged, not refused"
        );
        assert_eq!(settled_term(&node).await, Term(5));
        assert_eq!(node.status().leader, Some(NodeId(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fake_leader_far_ahead_is_not_followed_by_a_node_that_knows_no_leader() {
        // Given node 2 in term 1 that follows no leader (it just started),
        let node = node2(&[]);
        let transport = node2_transport(CLUSTER_A);
        assert_eq!((node.status().term, node.status().leader), (Term(1), None));
        // when node 12345, which no configuration names, calls with the right cluster id and
        // a heartbeat 5,000 terms ahead (within the bound for members),
        let forged = Term(1 + 5_000);
        let (mut stranger, _served) =
            call_node2_at(&node, &transport, NodeId(12345), CLUSTER_A, forged).await;
        // then it is served (it might have been a real leader this node does not know yet),
        assert!(
            matches!(answer(&mut stranger).await, Some(Frame::Ack { .. })),
            "acknowledged, not refused"
        );
        // but its heartbeat is refused: the node keeps its term and follows no one.
        assert_eq!(settled_term(&node).await, Term(1));
        assert_eq!(node.status().leader, None);

        // Given then that node 2 follows member 1 in term 5,
        let (_leader, _served) = call_node2(&node, &transport, NodeId(1), CLUSTER_A).await;
        assert_eq!(settled_term(&node).await, Term(5));
        // when the stranger, still connected, sends a heartbeat one term ahead,
        let next = Frame::Message(heartbeat_from(NodeId(12345), Term(6)));
        frame::write(stranger.get_mut(), &next)
            .await
            .expect("written");
        stranger.get_mut().flush().await.expect("flushed");
        // then that too is refused: a node that follows a leader is moved on only by members.
        assert_eq!(settled_term(&node).await, Term(5));
        assert_eq!(node.status().leader, Some(NodeId(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_with_no_configuration_follows_a_leader_far_ahead() {
        // Given node 2 in term 1 whose configuration is empty: a joiner restarted before its
        // log arrived, which no longer knows whom it expected,
        let node = node2_of(Configuration::default());
        let transport = node2_transport(CLUSTER_A);
        // when the leader of a long-lived cluster calls, 5,000 terms ahead,
        let far = Term(1 + 5_000);
        let (mut leader, _served) =
            call_node2_at(&node, &transport, NodeId(5), CLUSTER_A, far).await;
        // then it is followed: only that leader can bring the node in.
        assert!(matches!(answer(&mut leader).await, Some(Frame::Ack { .. })));
        assert_eq!(settled_term(&node).await, far);
        assert_eq!(node.status().leader, Some(NodeId(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_with_no_configuration_that_follows_an_old_leader_still_serves_the_new_one() {
        // Given node 2 whose configuration is empty (a learner whose log has not arrived), that
        // follows node 5, the leader that added it before losing office,
        let node = node2_of(Configuration::default());
        let transport = node2_transport(CLUSTER_A);
        let (_old, _served) = call_node2_at(&node, &transport, NodeId(5), CLUSTER_A, Term(7)).await;
        assert_eq!(settled_term(&node).await, Term(7));
        assert_eq!(node.status().leader, Some(NodeId(5)));
        // when node 6, which leads now, calls in a later term,
        let asked = tokio::time::Instant::now();
        let (mut new, _served) =
            call_node2_at(&node, &transport, NodeId(6), CLUSTER_A, Term(9)).await;
        // then it is served at once and followed: only it can bring the node's log.
        assert!(matches!(answer(&mut new).await, Some(Frame::Ack { .. })));
        assert!(asked.elapsed() < MEMBERSHIP_GRACE, "no grace period waited");
        assert_eq!(settled_term(&node).await, Term(9));
        assert_eq!(node.status().leader, Some(NodeId(6)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_expected_joiner_is_served_before_the_configuration_names_it() {
        // Given node 2 following leader 1, that expects node 7 (it was told of it, as a
        // joiner is told of the members), though its configuration does not have it,
        let node = node2(&[]);
        let transport = node2_transport(CLUSTER_A);
        let (_leader, _served) = call_node2(&node, &transport, NodeId(1), CLUSTER_A).await;
        assert_eq!(settled_term(&node).await, Term(5));
        transport.expect_peers([NodeId(7)]);
        // when node 7 calls, then it is served at once: its bytes are acknowledged.
        let asked = tokio::time::Instant::now();
        let (mut caller, _served) = call_node2(&node, &transport, NodeId(7), CLUSTER_A).await;
        assert!(
            matches!(answer(&mut caller).await, Some(Frame::Ack { .. })),
            "acknowledged, not refused"
        );
        assert!(asked.elapsed() < MEMBERSHIP_GRACE, "no grace period waited");
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_naming_another_sender_than_the_hello_closes_the_connection() {
        // Given node 2, and member 1 connected to it,
        let node = node2(&[]);
        let transport = node2_transport(CLUSTER_A);
        let (mut caller, served) = call_node2(&node, &transport, NodeId(1), CLUSTER_A).await;
        assert_eq!(settled_term(&node).await, Term(5));
        // when a message on that connection claims to come from member 3 at a higher term,
        let spoofed = Frame::Message(heartbeat_from(NodeId(3), Term(9)));
        frame::write(caller.get_mut(), &spoofed)
            .await
            .expect("written");
        caller.get_mut().flush().await.expect("flushed");
        // then the connection is closed as a protocol error, and the message is not taken.
        let ended = tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("the connection ends")
            .expect("the server task ends");
        assert!(ended.is_err(), "{ended:?}");
        assert_eq!(settled_term(&node).await, Term(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_opener_reports_it_and_asks_again_only_after_the_longest_backoff() {
        // Given node 1 of cluster B, whose peer 2 is a node of cluster A,
        let (opener, mut connects, mut reports) = node1_of_cluster_to_2(CLUSTER_B);
        let node = node2(&[]);
        let acceptor = node2_transport(CLUSTER_A);
        // when node 1 sends a message,
        opener.send(heartbeat(1));
        let (_, far) = next_connect(&mut connects).await;
        tokio::spawn(serve_connection(far, node.clone(), Arc::clone(&acceptor)));
        // then its server hears that peer 2 refused it, and why,
        let report = tokio::time::timeout(Duration::from_secs(10), reports.recv())
            .await
            .expect("a report in time");
        assert_eq!(
            report,
            Some(TransportReport::Refused {
                by: NodeId(2),
                refusal: Refusal::WrongCluster {
                    expected: CLUSTER_A,
                    got: CLUSTER_B,
                },
            })
        );
        // and when the next message is due, it connects again (the peer may have been
        // fixed), but only after the longest backoff: a refusal is no passing failure.
        let due = tokio::time::Instant::now();
        opener.send(heartbeat(2));
        let (at, _far) = next_connect(&mut connects).await;
        assert!(
            at - due >= RECONNECT_BACKOFF_MAX,
            "reconnected after {:?}",
            at - due
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_sends_no_hello_is_closed_after_the_hello_timeout() {
        // Given node 2, when a caller connects and sends nothing,
        let node = node2(&[]);
        let transport = node2_transport(CLUSTER_A);
        let (mut caller, theirs) = tokio::io::duplex(64 * 1024);
        let connected = tokio::time::Instant::now();
        let served = tokio::spawn(serve_connection(theirs, node.clone(), transport));
        // then the connection is closed once the Hello timeout has passed, as a timeout.
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(HELLO_TIMEOUT * 2, caller.read(&mut byte))
            .await
            .expect("closed in time");
        assert_eq!(read.expect("a clean close"), 0);
        assert!(connected.elapsed() >= HELLO_TIMEOUT);
        let ended = served.await.expect("the server task ends");
        assert!(
            matches!(&ended, Err(frame::FrameError::Io(e)) if e.kind() == io::ErrorKind::TimedOut),
            "{ended:?}"
        );
    }

    /// Calls node 2 as `from` (of its cluster) and announces a snapshot of `data_bytes`
    /// bytes, of which it sends one chunk. Returns the caller's end and the serving task.
    async fn begin_snapshot(
        node: &Node<()>,
        transport: &Arc<PeerTransport<Duplexes>>,
        from: NodeId,
        data_bytes: u64,
    ) -> (
        BufReader<DuplexStream>,
        tokio::task::JoinHandle<Result<(), frame::FrameError>>,
    ) {
        let begin = Frame::SnapshotBegin {
            message: Message {
                from,
                to: NodeId(2),
                term: Term(5),
                body: MessageBody::InstallSnapshot {
                    snapshot: core::Snapshot::default(),
                },
            },
            data_bytes,
        };
        let chunk = Frame::SnapshotChunk(Bytes::from_static(b"the first bytes"));
        call_node2_with(node, transport, from, CLUSTER_A, [begin, chunk]).await
    }

    /// Bytes of snapshot data node 2's transport holds reserved now.
    fn reserved(transport: &PeerTransport<Duplexes>) -> u64 {
        *transport.snapshot_bytes.lock().expect(PEERS_LOCK)
    }

    /// Node 2 (a learner of voters 1 and 3), its snapshot files, which refuse data of four
    /// bytes or fewer, and its transport over them.
    fn node2_with_picky_files() -> (
        Node<()>,
        Arc<crate::node::MemSnapshotFiles>,
        Arc<PeerTransport<Duplexes>>,
    ) {
        let files = Arc::new(crate::node::MemSnapshotFiles::new(|metadata, data| {
            if data.len() > 4 {
                Ok(())
            } else {
                Err(crate::node::SnapshotFilesError::damaged(
                    metadata.index,
                    "too short to be a snapshot",
                ))
            }
        }));
        let configuration = Configuration {
            voters: [NodeId(1), NodeId(3)].into(),
            learners: [NodeId(2)].into(),
            ..Configuration::default()
        };
        let node = node2_with_files(configuration, files.clone());
        let transport = node2_transport_with(CLUSTER_A, files.clone());
        (node, files, transport)
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_received_with_a_heartbeat_between_its_chunks_is_checked_then_installed() {
        // Given node 2 (a learner of voters 1 and 3) receiving into files that check data,
        let (node, files, transport) = node2_with_picky_files();
        // when member 1 streams the snapshot at 7 in two chunks with a heartbeat between them,
        let data = snapshot_data(64);
        let frames = [
            Frame::SnapshotBegin {
                message: install_snapshot(7),
                data_bytes: data.len() as u64,
            },
            Frame::SnapshotChunk(data.slice(..20)),
            Frame::Message(heartbeat(1)),
            Frame::SnapshotChunk(data.slice(20..)),
            Frame::SnapshotEnd,
        ];
        let (_caller, _served) =
            call_node2_with(&node, &transport, NodeId(1), CLUSTER_A, frames).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // then the heartbeat reached the node during the stream (it follows member 1), and
        // the snapshot, checked whole, was installed and kept byte for byte.
        let status = node.status();
        assert_eq!(status.leader, Some(NodeId(1)));
        assert_eq!(status.snapshot.index, LogIndex(7));
        assert_eq!(files.data(LogIndex(7)), Some(data));
    }

    #[tokio::test(start_paused = true)]
    async fn a_received_snapshot_that_fails_its_check_never_reaches_the_node() {
        // Given node 2 receiving into files that refuse short data,
        let (node, files, transport) = node2_with_picky_files();
        // when member 1 streams a snapshot at 7 whose data fails the check,
        let frames = [
            Frame::SnapshotBegin {
                message: install_snapshot(7),
                data_bytes: 3,
            },
            Frame::SnapshotChunk(Bytes::from_static(b"bad")),
            Frame::SnapshotEnd,
        ];
        let (mut caller, served) =
            call_node2_with(&node, &transport, NodeId(1), CLUSTER_A, frames).await;
        // then the connection is closed, the node never took the snapshot, and nothing is kept.
        while answer(&mut caller).await.is_some() {}
        assert!(served.await.expect("ends").is_ok());
        assert_eq!(node.status().snapshot.index, LogIndex::ZERO);
        assert_eq!(files.data(LogIndex(7)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_this_node_refuses_does_not_count_as_losing_its_leader() {
        // Given node 2 following member 1 (a heartbeat of term 5 on member 1's connection),
        let node = node2(&[]);
        let transport = node2_transport_with(CLUSTER_A, Arc::new(crate::node::testing::NoFiles));
        // when member 1 then starts a snapshot that node 2 cannot take (its files refuse
        // every snapshot), so that node 2 hangs up,
        let frames = [
            Frame::Message(heartbeat_from(NodeId(1), Term(5))),
            Frame::SnapshotBegin {
                message: install_snapshot(7),
                data_bytes: 3,
            },
        ];
        let (mut caller, served) =
            call_node2_with(&node, &transport, NodeId(1), CLUSTER_A, frames).await;
        while answer(&mut caller).await.is_some() {}
        assert!(served.await.expect("ends").is_ok());
        tokio::time::sleep(Duration::from_millis(20)).await;
        // then node 2 still follows member 1: a leader it hung up on is not a lost leader,
        // and it does not campaign early.
        let status = node.status();
        assert_eq!((status.term, status.leader), (Term(5), Some(NodeId(1))));
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_streams_share_one_budget_and_a_stalled_one_gives_its_share_back() {
        // Given node 2, receiving from member 1 a snapshot stream that claims the whole
        // budget and has sent its first chunk,
        let node = node2(&[]);
        let transport = node2_transport(CLUSTER_A);
        let (_first, first_served) =
            begin_snapshot(&node, &transport, NodeId(1), SNAPSHOT_BYTES_IN_FLIGHT_MAX).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(reserved(&transport), SNAPSHOT_BYTES_IN_FLIGHT_MAX);
        // when member 3 starts a small snapshot stream on another connection,
        let (_second, second_served) = begin_snapshot(&node, &transport, NodeId(3), 1024).await;
        // then that stream is refused: its connection ends at once, holding nothing,
        let ended = tokio::time::timeout(Duration::from_secs(1), second_served)
            .await
            .expect("refused at once")
            .expect("the server task ends");
        assert!(ended.is_ok(), "a refusal is a normal end: {ended:?}");
        assert_eq!(reserved(&transport), SNAPSHOT_BYTES_IN_FLIGHT_MAX);
        // and when the first stream sends nothing more, its connection is closed once the
        // chunk timeout has passed, and its share of the budget is given back,
        let ended = tokio::time::timeout(SNAPSHOT_CHUNK_TIMEOUT * 2, first_served)
            .await
            .expect("closed in time")
            .expect("the server task ends");
        assert!(
            matches!(&ended, Err(frame::FrameError::Io(e)) if e.kind() == io::ErrorKind::TimedOut),
            "{ended:?}"
        );
        assert_eq!(reserved(&transport), 0);
        // so that member 3's stream, tried again, is taken.
        let (_again, again_served) = begin_snapshot(&node, &transport, NodeId(3), 1024).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(reserved(&transport), 1024);
        assert!(!again_served.is_finished());
    }

    /// Opens a TCP connection to `addr` as member 1 and sends its Hello and a heartbeat.
    async fn tcp_call(addr: std::net::SocketAddr) -> BufReader<tokio::net::TcpStream> {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connected");
        let hello = Frame::Hello {
            from: NodeId(1),
            addr: "n1".into(),
            cluster: CLUSTER_A,
        };
        frame::write(&mut stream, &hello).await.expect("written");
        let message = Frame::Message(heartbeat_from(NodeId(1), Term(5)));
        frame::write(&mut stream, &message).await.expect("written");
        BufReader::new(stream)
    }

    /// The next frame on a TCP connection; `None` when it closed (cleanly or by a reset).
    async fn tcp_answer(caller: &mut BufReader<tokio::net::TcpStream>) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(20), frame::read(caller))
            .await
            .expect("an answer in time")
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn inbound_connections_over_the_cap_are_closed_at_once_until_a_slot_frees() {
        // Given node 2 serving its peer port, with as many connections open and served as it
        // serves at once,
        let node = node2(&[]);
        let transport = node2_transport(CLUSTER_A);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bound");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(serve_tcp(listener, node.clone(), transport));
        let mut served = Vec::new();
        for _ in 0..PEER_CONNECTIONS_MAX {
            served.push(tcp_call(addr).await);
        }
        for caller in &mut served {
            assert!(matches!(tcp_answer(caller).await, Some(Frame::Ack { .. })));
        }
        // when one more connects, then it is closed without an answer (long before any
        // timeout could have closed it: the others are all still served),
        let mut over = tcp_call(addr).await;
        assert_eq!(tcp_answer(&mut over).await, None);
        // and once one of the served connections ends, a new one is served again.
        drop(served.pop());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut again = tcp_call(addr).await;
            if matches!(tcp_answer(&mut again).await, Some(Frame::Ack { .. })) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no slot freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_logged_once_per_interval_per_peer_and_kind() {
        // Given a refusal of node 4 just logged,
        let log = RefusalLog::default();
        assert!(log.should_log(NodeId(4), "removed"));
        // when node 4 is refused again within the interval, then it is not logged again,
        tokio::time::advance(REFUSAL_LOG_INTERVAL - Duration::from_secs(1)).await;
        assert!(!log.should_log(NodeId(4), "removed"));
        // while another peer, or another kind of refusal, is;
        assert!(log.should_log(NodeId(5), "removed"));
        assert!(log.should_log(NodeId(4), "wrong_cluster"));
        // and once the interval has passed, node 4's refusal is logged again.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(log.should_log(NodeId(4), "removed"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_refusal_log_remembers_a_bounded_number_of_peers() {
        // Given refusals of as many distinct peers as the log remembers, just logged,
        let log = RefusalLog::default();
        for id in 0..REFUSAL_LOG_PEERS_MAX as u64 {
            assert!(log.should_log(NodeId(id), "wrong_cluster"));
        }
        // when yet another peer is refused, then it is neither logged nor remembered,
        let stranger = NodeId(u64::MAX);
        assert!(!log.should_log(stranger, "wrong_cluster"));
        assert_eq!(log.0.lock().unwrap().len(), REFUSAL_LOG_PEERS_MAX);
        // and once the others' lines are older than the interval, they make room for it.
        tokio::time::advance(REFUSAL_LOG_INTERVAL).await;
        assert!(log.should_log(stranger, "wrong_cluster"));
        assert_eq!(log.0.lock().unwrap().len(), 1);
    }
}
