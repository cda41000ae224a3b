//! Scenarios for the whole transport: a sender and a receiver over in-memory streams (and, for
//! the connection cap, real TCP), checked through what crosses the wire and what the node
//! hears.
//!
//! Shared here: the in-memory network and the fixtures of node 1's sender; each file holds
//! the scenarios of one module: `sending`, `ack`, `receiving` (with admission) and
//! `log_limit`.

mod ack;
mod log_limit;
mod receiving;
mod sending;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;
use wal::{SimFs, Wal, WalConfig};

use super::ack::{AckState, Counted, Watched};
use super::frame::{Frame, SNAPSHOT_CHUNK_BYTES};
use super::log_limit::RefusalLog;
use super::*;
use crate::core::{self, Configuration, LogIndex, Message, MessageBody, NodeId, Term};
use crate::node::testing::{NoFiles, Nothing};
use crate::node::{ClusterId, Node, NodeConfig, SnapshotFiles, Transport};

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
