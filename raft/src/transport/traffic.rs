//! Bytes moved to and from each peer, for the operator's metrics: the sender counts what its
//! socket accepted, the receiver what it read once the caller's Hello was served.
//!
//! Invariant: at most [`PEERS_COUNTED_MAX`] peers are counted; a peer beyond is served all
//! the same, uncounted (ids come from callers, so the table must be bounded).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::core::NodeId;

/// The most peers whose traffic is counted.
pub const PEERS_COUNTED_MAX: usize = 128;

const TRAFFIC_LOCK: &str = "the traffic table lock is never held across a panic";

/// One peer's byte counters since this process started.
#[derive(Debug, Default)]
pub struct PeerTraffic {
    sent: AtomicU64,
    received: AtomicU64,
}

impl PeerTraffic {
    pub(super) fn sent(&self, bytes: usize) {
        self.sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(super) fn received(&self, bytes: u64) {
        self.received.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// One peer's counters, copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerTrafficSnapshot {
    /// The peer.
    pub peer: NodeId,
    /// Bytes this node's connections to it had accepted by its socket.
    pub sent_bytes: u64,
    /// Bytes this node read from its connections (after their Hello was served).
    pub received_bytes: u64,
}

/// Every counted peer's counters.
#[derive(Debug, Default)]
pub(super) struct TrafficTable(Mutex<BTreeMap<NodeId, Arc<PeerTraffic>>>);

impl TrafficTable {
    /// The counters of `peer`, made on first use; `None` once the table is full.
    pub(super) fn of(&self, peer: NodeId) -> Option<Arc<PeerTraffic>> {
        let mut table = self.0.lock().expect(TRAFFIC_LOCK);
        if let Some(counters) = table.get(&peer) {
            return Some(Arc::clone(counters));
        }
        if table.len() >= PEERS_COUNTED_MAX {
            return None;
        }
        Some(Arc::clone(table.entry(peer).or_default()))
    }

    pub(super) fn snapshot(&self) -> Vec<PeerTrafficSnapshot> {
        self.0
            .lock()
            .expect(TRAFFIC_LOCK)
            .iter()
            .map(|(peer, t)| PeerTrafficSnapshot {
                peer: *peer,
                sent_bytes: t.sent.load(Ordering::Relaxed),
                received_bytes: t.received.load(Ordering::Relaxed),
            })
            .collect()
    }
}
