//! One simulated node's disk: the WAL's crashable [`SimFs`] and the snapshot files.
//!
//! The disk outlives the host's software: a crash kills the node's tasks and then crashes the
//! `SimFs` (unsynced writes are lost, the last may be torn); a restart opens the same disk.
//! Snapshot files are kept in memory beside it and survive every crash, because the real
//! snapshot store returns only after fsync, rename and directory fsync, so a saved snapshot is
//! durable by contract.

use api::server::machine::check_snapshot_data;
use raft::node::MemSnapshotFiles;
use wal::SimFs;

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
            snapshots: std::sync::Arc::new(mem_snapshots()),
        }
    }
}

/// Snapshot files in memory, checked like the real ones before they are kept: the data must be
/// a whole snapshot of the state machine, at the index its metadata says.
pub type MemSnapshots = MemSnapshotFiles;

/// Snapshot files for a simulated disk.
fn mem_snapshots() -> MemSnapshots {
    MemSnapshotFiles::new(|metadata, data| {
        let (index, _cluster) = check_snapshot_data(&mut &data[..])?;
        if index != metadata.index.0 {
            return Err(format!(
                "snapshot data at index {index} does not match its metadata ({})",
                metadata.index.0
            ));
        }
        Ok(())
    })
}
