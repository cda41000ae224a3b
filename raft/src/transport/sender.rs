//! The sending side: one task per peer, which connects on demand, opens every connection with
//! a Hello, writes the peer's queue to it, and streams snapshots in chunks read from the
//! snapshot files with the messages queued meanwhile between them. Invariants: a message
//! taken from the queue is written, kept for the next connection, or (a snapshot) reported
//! undelivered, never silently lost to a connection found dead before it went out; every
//! snapshot taken from the queue is reported, delivered or not; a refused connection is
//! retried only after [`RECONNECT_BACKOFF_MAX`].

use std::io::{self, Read as _};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::core::{Message, MessageBody, NodeId};
use crate::node::snapshot_files::offload;
use crate::node::{ClusterId, SnapshotFiles, names};

use super::ack::{AbortOnDrop, AckState, Watched, read_acks};
use super::frame::{self, Frame, SNAPSHOT_CHUNK_BYTES};
use super::log_limit::RefusalLog;
use super::network::Network;
use super::registry::{SnapshotReport, TransportReport};
use super::{
    CONNECT_TIMEOUT, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN, Refusal, STABLE_CONNECTION,
};

/// The opener's side of refusals: what a sender needs to report and log one from its peer.
/// Cloned into every connection's acknowledgement reader; the log state is shared between
/// them, so reconnecting does not reset the rate limit.
#[derive(Clone)]
pub(super) struct RefusalReporter {
    /// The peer this sender talks to.
    to: NodeId,
    /// The peer's address.
    addr: String,
    reports: mpsc::UnboundedSender<TransportReport>,
    logged: Arc<RefusalLog>,
}

impl RefusalReporter {
    /// Logs (rate-limited) and reports that the peer refused this node.
    pub(super) fn refused(&self, refusal: Refusal) {
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

/// A sender task's set-up: who this node is, which peer it talks to, and where it reports.
/// [`PeerTransport::set_peer`](super::PeerTransport::set_peer) builds one per peer and runs it
/// on its own task with that peer's queue.
pub(super) struct Sender<N: Network> {
    /// This node, announced in every Hello.
    pub(super) me: NodeId,
    /// This node's own Raft address, announced in every Hello.
    pub(super) my_addr: String,
    /// This node's cluster, announced in every Hello.
    pub(super) cluster: ClusterId,
    /// The peer this sender talks to.
    pub(super) to: NodeId,
    /// The peer's address, where every connection goes.
    pub(super) addr: String,
    /// The sockets.
    pub(super) network: Arc<N>,
    /// Where snapshots are streamed from.
    pub(super) snapshots: Arc<dyn SnapshotFiles>,
    /// Where each snapshot's outcome and each refusal by the peer go (the channel
    /// [`PeerTransport::new`](super::PeerTransport::new) returned).
    pub(super) reports: mpsc::UnboundedSender<TransportReport>,
    /// Where the bytes sent to the peer are counted (`None`: not counted, the table is full).
    pub(super) traffic: Option<Arc<super::traffic::PeerTraffic>>,
}

impl<N: Network> Sender<N> {
    /// Sends what `queue` brings, connecting when there is something to send and reconnecting
    /// (with backoff) when a connection fails, until the queue closes: its peer was replaced
    /// or removed.
    pub(super) async fn run(self, mut queue: mpsc::Receiver<Message>) {
        let Sender {
            me,
            my_addr,
            cluster,
            to,
            addr,
            network,
            snapshots,
            reports,
            traffic,
        } = self;
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
            let connected =
                tokio::time::timeout(CONNECT_TIMEOUT, network.connect(addr.clone())).await;
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
            let mut w = BufWriter::new(Watched::new(writer, Arc::clone(&acks), traffic.clone()));
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
                    next = send_one(
                        &mut w,
                        message,
                        &snapshots,
                        &mut queue,
                        &reports,
                        traffic.as_deref(),
                    )
                    .await?;
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
}

/// Reports a snapshot that was not sent as not delivered (other messages need no report).
pub(super) fn fail_snapshot(message: &Message, reports: &mpsc::UnboundedSender<TransportReport>) {
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
    traffic: Option<&super::traffic::PeerTraffic>,
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
    if streamed.is_ok()
        && let Some(traffic) = traffic
    {
        traffic.snapshot_sent();
    }
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
