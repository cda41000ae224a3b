//! Bytes moved to and from each peer, and snapshots streamed to it, for the operator's
//! metrics: the sender counts what its socket accepted and each snapshot it streamed whole,
//! the receiver what it read once the caller's Hello was served.
//!
//! Invariant: at most [`PEERS_COUNTED_MAX`] peers are counted (ids come from callers, so the
//! table must be bounded). A full table first forgets the peers no sender or connection uses
//! any more (a former member, a stranger that went away); a peer beyond that is served all
//! the same, uncounted.

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
    snapshots_sent: AtomicU64,
}

impl PeerTraffic {
    pub(super) fn sent(&self, bytes: usize) {
        self.sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(super) fn received(&self, bytes: u64) {
        self.received.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn snapshot_sent(&self) {
        self.snapshots_sent.fetch_add(1, Ordering::Relaxed);
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
    /// Snapshots streamed to it whole (written to its connection up to their last chunk).
    pub snapshots_sent: u64,
}

/// Every counted peer's counters.
#[derive(Debug, Default)]
pub(super) struct TrafficTable(Mutex<BTreeMap<NodeId, Arc<PeerTraffic>>>);

impl TrafficTable {
    /// The counters of `peer`, made on first use; `None` while the table is full of peers in
    /// use.
    pub(super) fn of(&self, peer: NodeId) -> Option<Arc<PeerTraffic>> {
        let mut table = self.0.lock().expect(TRAFFIC_LOCK);
        if let Some(counters) = table.get(&peer) {
            return Some(Arc::clone(counters));
        }
        if table.len() >= PEERS_COUNTED_MAX {
            // The table's own reference is the only one left of a peer nobody talks to.
            table.retain(|_, counters| Arc::strong_count(counters) > 1);
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
                snapshots_sent: t.snapshots_sent.load(Ordering::Relaxed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_makes_room_by_forgetting_peers_nobody_uses() {
        let table = TrafficTable::default();
        let held: Vec<_> = (0..PEERS_COUNTED_MAX as u64 - 1)
            .map(|id| table.of(NodeId(id)).expect("room"))
            .collect();
        let gone = table.of(NodeId(1_000)).expect("the last place");
        gone.sent(10);
        drop(gone);
        // Full: the one nobody holds gives its place; then the table is full of peers in use.
        assert!(table.of(NodeId(2_000)).is_some());
        let _newcomer = table.of(NodeId(2_000));
        assert!(table.of(NodeId(3_000)).is_none());
        assert!(table.snapshot().iter().all(|t| t.peer != NodeId(1_000)));
        drop(held);
    }
}
