//! One simulated node's disk: the WAL's crashable [`SimFs`] and the snapshot files.
//!
//! The disk outlives the host's software: a crash kills the node's tasks and then crashes the
//! `SimFs` (unsynced writes are lost, the last may be torn); a restart opens the same disk.
//! Snapshot files are kept in memory beside it and survive every crash, because the real
//! snapshot store returns only after fsync, rename and directory fsync, so a saved snapshot is
//! durable by contract.

use std::collections::BTreeMap;
use std::sync::Mutex;

use raft::core::{Snapshot, SnapshotMetadata};
use raft::node::SnapshotFiles;
use wal::SimFs;

/// Snapshots a node keeps, like the real store (the newest [`SNAPSHOTS_KEPT`]).
pub const SNAPSHOTS_KEPT: usize = 3;

/// The WAL directory on every simulated disk.
pub const WAL_DIR: &str = "/data/wal";

/// A simulated node's durable storage.
pub struct Disk {
    /// The WAL's file system.
    pub fs: SimFs,
    /// The snapshot files.
    pub snapshots: std::sync::Arc<MemSnapshots>,
}

impl Disk {
    /// An empty disk whose crashes are decided by `seed`.
    pub fn new(seed: u64) -> Disk {
        Disk {
            fs: SimFs::new(seed),
            snapshots: std::sync::Arc::new(MemSnapshots::default()),
        }
    }
}

/// Snapshot files in memory, checked like the real ones before they are kept.
#[derive(Default)]
pub struct MemSnapshots {
    by_index: Mutex<BTreeMap<u64, Snapshot>>,
}

const SNAPSHOTS_LOCK: &str = "the snapshot map lock is never held across a panic";

impl SnapshotFiles for MemSnapshots {
    fn save(&self, snapshot: &Snapshot) -> Result<(), String> {
        let (index, _cluster) = api::server::machine::verify_snapshot_data(&snapshot.data)?;
        if index != snapshot.metadata.index.0 {
            return Err(format!(
                "snapshot data at index {index} does not match its metadata ({})",
                snapshot.metadata.index.0
            ));
        }
        let mut map = self.by_index.lock().expect(SNAPSHOTS_LOCK);
        map.insert(index, snapshot.clone());
        while map.len() > SNAPSHOTS_KEPT {
            map.pop_first();
        }
        Ok(())
    }

    fn load(&self, metadata: &SnapshotMetadata) -> Result<Snapshot, String> {
        let map = self.by_index.lock().expect(SNAPSHOTS_LOCK);
        let mut snapshot = map
            .get(&metadata.index.0)
            .cloned()
            .ok_or_else(|| format!("no snapshot for index {}", metadata.index.0))?;
        snapshot.metadata = metadata.clone();
        Ok(snapshot)
    }
}
