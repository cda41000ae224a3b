//! Snapshot files for the node, over the `kv` crate's [`kv::SnapshotStore`] (checksummed
//! files written to a temporary name, fsynced, renamed, the newest three kept).
//!
//! A Raft snapshot's data is a whole `kv` snapshot file's bytes, so what the leader streams is
//! exactly what the follower keeps, and it is verified before it is kept. The Raft metadata
//! (term and membership) is kept by the log store; here a snapshot is found by its index.

use std::sync::Mutex;

use bytes::Bytes;
use raft::core::{Snapshot, SnapshotMetadata};
use raft::node::{ClusterId, SnapshotFiles};

use super::machine::verify_snapshot_data;

/// The node's snapshot directory, holding snapshots of one cluster only.
pub struct KvSnapshotFiles {
    store: Mutex<kv::SnapshotStore>,
    cluster_id: ClusterId,
}

const STORE_LOCK: &str = "the snapshot store lock is never held across a panic";

impl KvSnapshotFiles {
    /// Opens (creating) the directory for the snapshots of cluster `cluster_id`.
    pub fn open(dir: std::path::PathBuf, cluster_id: ClusterId) -> Result<Self, String> {
        let store = kv::SnapshotStore::open(dir).map_err(|e| e.to_string())?;
        Ok(KvSnapshotFiles {
            store: Mutex::new(store),
            cluster_id,
        })
    }

    /// Checks that `data` is a whole snapshot of this node's cluster; returns its index.
    fn verify(&self, data: &[u8]) -> Result<u64, String> {
        let (index, cluster) = verify_snapshot_data(data)?;
        if cluster != self.cluster_id {
            return Err(format!(
                "the snapshot at index {index} belongs to cluster {cluster}, this node to cluster {}",
                self.cluster_id
            ));
        }
        Ok(index)
    }
}

impl SnapshotFiles for KvSnapshotFiles {
    fn save(&self, snapshot: &Snapshot) -> Result<(), String> {
        self.verify_received(snapshot)?;
        let store = self.store.lock().expect(STORE_LOCK);
        store
            .save_received(&snapshot.data)
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn verify_received(&self, snapshot: &Snapshot) -> Result<(), String> {
        let index = self.verify(&snapshot.data)?;
        if index != snapshot.metadata.index.0 {
            return Err(format!(
                "snapshot data at index {index} does not match its metadata ({})",
                snapshot.metadata.index.0
            ));
        }
        Ok(())
    }

    fn load(&self, metadata: &SnapshotMetadata) -> Result<Snapshot, String> {
        let store = self.store.lock().expect(STORE_LOCK);
        let files = store.list().map_err(|e| e.to_string())?;
        let file = files
            .into_iter()
            .find(|f| f.index == metadata.index.0)
            .ok_or_else(|| format!("no snapshot file for index {}", metadata.index.0))?;
        let bytes = std::fs::read(&file.path)
            .map_err(|e| format!("reading {}: {e}", file.path.display()))?;
        self.verify(&bytes)
            .map_err(|e| format!("{}: {e}", file.path.display()))?;
        Ok(Snapshot {
            metadata: metadata.clone(),
            data: Bytes::from(bytes),
        })
    }
}
