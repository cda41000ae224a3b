//! The receiving side: accepts peer connections ([`serve_peers`]) and serves each
//! ([`serve_connection`]): reads the caller's Hello, refuses it or serves it (see
//! [`super::admission`]), acknowledges what it reads, steps the node with each message, and
//! streams a snapshot's chunks into the snapshot files, which check it whole before the node
//! hears of it. Invariants: no message of a refused caller, and no message naming another
//! sender than the Hello did, reaches the node; a bad frame closes its connection and nothing
//! else; the node hears that a peer's connection ended only for the newest one, and not when
//! this side closed it on purpose.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tracing::warn;

use crate::core::{Message, MessageBody, NodeId};
use crate::node::snapshot_files::offload;
use crate::node::{Node, SnapshotSink, names};

use super::ack::{AbortOnDrop, Counted, write_acks};
use super::admission::SnapshotReservation;
use super::frame::{self, Frame, SNAPSHOT_BYTES_MAX};
use super::network::{Listener, Network};
use super::registry::PeerTransport;
use super::{
    HELLO_TIMEOUT, RECONNECT_BACKOFF_MIN, REFUSAL_LINGER, REFUSAL_LOG_INTERVAL, Refusal,
    SNAPSHOT_CHUNK_TIMEOUT,
};

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
        traffic: None,
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
    // Counted from here on, the Hello included: what a refused caller sent is nobody's traffic.
    if let Some(traffic) = transport.traffic.of(from) {
        traffic.received(read.load(Ordering::Acquire));
        r.get_mut().traffic = Some(traffic);
    }
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
    /// Its share of [`SNAPSHOT_BYTES_IN_FLIGHT_MAX`](super::SNAPSHOT_BYTES_IN_FLIGHT_MAX), given
    /// back however the stream ends.
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
/// at most [`PEER_CONNECTIONS_MAX`](super::PEER_CONNECTIONS_MAX) at once: one over the cap is
/// closed at once. The server runs it over TCP, the simulation over its simulated network.
pub async fn serve_peers<L: Listener, O: Send + 'static, N: Network>(
    listener: L,
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
