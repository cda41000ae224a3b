//! The peer registry: [`PeerTransport`], the node's [`Transport`], which knows every peer's
//! address and owns one sender task per peer ([`super::sender`]), and what the transport
//! reports to its server ([`TransportReport`]). Invariants: at most one sender runs per peer
//! (replacing or removing a peer's entry drops its queue, which stops its sender); `send`
//! never waits, and a snapshot it drops is reported undelivered; the addresses learned from
//! callers never grow the table beyond [`LEARNED_PEERS_MAX`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::core::{LogIndex, Message, NodeId};
use crate::node::{ClusterId, SnapshotFiles, Transport, names};

use super::log_limit::RefusalLog;
use super::network::Network;
use super::sender::{Sender, fail_snapshot};
use super::{
    EXPECTED_PEERS_MAX, LEARNED_PEERS_MAX, PEER_CONNECTIONS_MAX, PEER_QUEUE_MAX, PEERS_LOCK,
    Refusal,
};

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

pub(super) struct Peer {
    addr: String,
    queue: mpsc::Sender<Message>,
}

/// The outgoing side: a [`Transport`] for the node.
pub struct PeerTransport<N: Network> {
    pub(super) id: NodeId,
    /// This node's own Raft address, announced in every Hello.
    pub(super) addr: String,
    /// This node's cluster, announced in every Hello and required of every caller.
    pub(super) cluster: ClusterId,
    pub(super) network: Arc<N>,
    /// Where snapshots are streamed from and received into.
    pub(super) snapshots: Arc<dyn SnapshotFiles>,
    pub(super) peers: Mutex<HashMap<NodeId, Peer>>,
    pub(super) reports: mpsc::UnboundedSender<TransportReport>,
    /// Per peer: the generation of its newest inbound connection.
    pub(super) inbound: Mutex<HashMap<NodeId, u64>>,
    /// The peers a committed membership change removed, and that change's index.
    pub(super) removed: Mutex<HashMap<NodeId, LogIndex>>,
    /// Peers served although the configuration does not have them (yet): the members a
    /// joiner was told of. See [`PeerTransport::expect_peers`].
    pub(super) expected: Mutex<std::collections::BTreeSet<NodeId>>,
    /// The last time a connection closed on a bad frame was logged, and how many were not
    /// logged since.
    pub(super) bad_frames_logged: Mutex<(Option<tokio::time::Instant>, u64)>,
    /// Slots for inbound connections: [`PEER_CONNECTIONS_MAX`] of them.
    pub(super) inbound_slots: Arc<tokio::sync::Semaphore>,
    /// The last time a connection closed over the cap was logged, and how many were not
    /// logged since.
    pub(super) over_cap_logged: Mutex<(Option<tokio::time::Instant>, u64)>,
    /// Bytes of snapshot data reserved by the streams being reassembled now (at most
    /// [`SNAPSHOT_BYTES_IN_FLIGHT_MAX`](super::SNAPSHOT_BYTES_IN_FLIGHT_MAX)).
    pub(super) snapshot_bytes: Arc<Mutex<u64>>,
    /// The last time a snapshot stream refused for the budget was logged, and how many were
    /// not logged since.
    pub(super) snapshot_refusals_logged: Mutex<(Option<tokio::time::Instant>, u64)>,
    /// The acceptor's refusal log lines, rate-limited.
    pub(super) refusals_logged: RefusalLog,
    /// Bytes sent to and received from each peer.
    pub(super) traffic: super::traffic::TrafficTable,
}

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
            traffic: Default::default(),
        });
        (transport, rx)
    }

    /// Bytes sent to and received from each peer since this process started.
    pub fn traffic(&self) -> Vec<super::PeerTrafficSnapshot> {
        self.traffic.snapshot()
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
        let sender = Sender {
            me: self.id,
            my_addr: self.addr.clone(),
            cluster: self.cluster,
            to: id,
            addr: addr.clone(),
            network: Arc::clone(&self.network),
            snapshots: Arc::clone(&self.snapshots),
            reports: self.reports.clone(),
            traffic: self.traffic.of(id),
        };
        tokio::spawn(sender.run(rx));
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
    pub(super) fn inbound_opened(&self, peer: NodeId) -> u64 {
        let mut inbound = self.inbound.lock().expect(PEERS_LOCK);
        let generation = inbound.get(&peer).map_or(1, |g| g + 1);
        inbound.insert(peer, generation);
        generation
    }

    /// An inbound connection from `peer` ended; true when it was the newest one.
    pub(super) fn inbound_closed(&self, peer: NodeId, generation: u64) -> bool {
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
