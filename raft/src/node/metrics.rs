//! What the node counts for its operators: leader changes, elections, ReadIndex requests,
//! snapshots taken and received, and each peer's heartbeat round trip (snapshots sent are
//! counted by the transport, which knows when one was streamed whole). The server exports them as Prometheus series (api's `metrics` module).
//!
//! Plain atomics and the WAL's lock-free [`Histogram`], written by the node's loop and its
//! applier and read at scrape time, so that counting costs the loop a few nanoseconds and no
//! lock. Counters only grow while the process lives; a restart starts them at zero.
//! Invariant: the per-peer table holds at most [`PEERS_MEASURED_MAX`] peers, as peer ids in
//! heartbeat responses are whatever the configuration names.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use wal::metrics::{Histogram, HistogramSnapshot};

use crate::core::NodeId;

/// The most peers whose round trips are kept (a cluster has at most a handful; the bound only
/// keeps a configuration with many learners from growing the table without end).
pub const PEERS_MEASURED_MAX: usize = 64;

const PEERS_LOCK: &str = "the round-trip table lock is never held across a panic";

/// The node's live counters. Shared (`Arc`) between the node and whoever exports them.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    pub(crate) leader_changes_seen: AtomicU64,
    pub(crate) elections_started: AtomicU64,
    pub(crate) read_index_requests: AtomicU64,
    pub(crate) snapshots_taken: AtomicU64,
    pub(crate) snapshot_write_us: Histogram,
    pub(crate) snapshot_bytes: AtomicU64,
    pub(crate) snapshots_received: AtomicU64,
    round_trips_us: Mutex<BTreeMap<NodeId, Histogram>>,
}

/// A point-in-time copy of [`NodeMetrics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMetricsSnapshot {
    /// Times this node saw a new leader (its first one included), as etcd counts
    /// `leader_changes_seen`.
    pub leader_changes_seen: u64,
    /// Elections this node started as a candidate (pre-vote probes that went no further are
    /// not counted).
    pub elections_started: u64,
    /// Linearizable reads that asked this node for a read index.
    pub read_index_requests: u64,
    /// Snapshots this node wrote of its own state.
    pub snapshots_taken: u64,
    /// How long writing each of them took, in microseconds.
    pub snapshot_write_us: HistogramSnapshot,
    /// The size of the snapshot this node wrote last, in bytes.
    pub snapshot_bytes: u64,
    /// Snapshots this node received from a leader and installed.
    pub snapshots_received: u64,
    /// Per peer, the time from a heartbeat to its answer as the node's loop sees them, in
    /// microseconds.
    pub round_trips_us: Vec<(NodeId, HistogramSnapshot)>,
}

impl NodeMetrics {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one heartbeat's round trip to `peer`.
    pub(crate) fn round_trip(&self, peer: NodeId, micros: u64) {
        let mut table = self.round_trips_us.lock().expect(PEERS_LOCK);
        if !table.contains_key(&peer) && table.len() >= PEERS_MEASURED_MAX {
            return;
        }
        table.entry(peer).or_default().record(micros);
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> NodeMetricsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NodeMetricsSnapshot {
            leader_changes_seen: load(&self.leader_changes_seen),
            elections_started: load(&self.elections_started),
            read_index_requests: load(&self.read_index_requests),
            snapshots_taken: load(&self.snapshots_taken),
            snapshot_write_us: self.snapshot_write_us.snapshot(),
            snapshot_bytes: load(&self.snapshot_bytes),
            snapshots_received: load(&self.snapshots_received),
            round_trips_us: self
                .round_trips_us
                .lock()
                .expect(PEERS_LOCK)
                .iter()
                .map(|(peer, h)| (*peer, h.snapshot()))
                .collect(),
        }
    }
}
