//! Snapshot files for the node, over the `kv` crate's [`kv::SnapshotStore`]: checksummed files
//! written in one streamed pass to a temporary name, fsynced, renamed, the newest three kept.
//!
//! A snapshot's data is a whole `kv` snapshot file, so what the leader streams is exactly what
//! the follower keeps. A follower streams it into a `.recv` file, which is checked whole (the
//! `kv` format's checksum and every invariant, and that it belongs to this node's cluster) when
//! it ends; only then does the node hear of it, and the log store keeps it when it persists the
//! snapshot. The Raft metadata (term and membership) is kept by the log store; here a snapshot
//! is found by its index.
//!
//! Nothing here holds the state in memory: snapshots are written from a view, sent from the
//! file and received into one.

use std::io::Read;
use std::sync::{Arc, Mutex};

use raft::core::SnapshotMetadata;
use raft::node::{ClusterId, SnapshotFiles, SnapshotSink, SnapshotView};

use super::machine::records_cluster;

/// The snapshot received and checked last, waiting to be kept: its index and term.
type Received = Arc<Mutex<Option<(u64, u64)>>>;

/// The buffer between a snapshot file and its reader (the transport's chunks, or a restore):
/// few syscalls for a multi-GiB file, small beside the state.
const READ_BUFFER_BYTES: usize = 256 * 1024;

const RECEIVED_LOCK: &str = "the received-snapshot lock is never held across a panic";

/// The node's snapshot directory, holding snapshots of one cluster only.
pub struct KvSnapshotFiles {
    store: kv::SnapshotStore,
    cluster_id: ClusterId,
    received: Received,
}

impl KvSnapshotFiles {
    /// Opens (creating) the directory for the snapshots of cluster `cluster_id`.
    pub fn open(dir: std::path::PathBuf, cluster_id: ClusterId) -> Result<Self, String> {
        let store = kv::SnapshotStore::open(dir).map_err(|e| e.to_string())?;
        Ok(KvSnapshotFiles {
            store,
            cluster_id,
            received: Arc::default(),
        })
    }

    /// The kept file of the snapshot at `index` (named by its index and term; a file an older
    /// version named with term 0 is found by its index too).
    fn file(&self, index: u64) -> Result<kv::SnapshotFile, String> {
        self.store
            .list()
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|f| f.index == index)
            .ok_or_else(|| format!("no snapshot file for index {index}"))
    }
}

/// A snapshot being received from a peer into the snapshot directory.
struct Receiving {
    file: kv::Receiving,
    cluster_id: ClusterId,
    received: Received,
}

impl SnapshotSink for Receiving {
    fn write(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.file.write(chunk).map_err(|e| e.to_string())
    }

    fn finish(self: Box<Self>) -> Result<(), String> {
        let Receiving {
            file,
            cluster_id,
            received,
        } = *self;
        // Checked whole here: checksum, structure and every invariant of the `kv` state.
        let meta = file.finish().map_err(|e| e.to_string())?;
        let cluster = records_cluster(&meta.config)
            .map_err(|e| format!("the received snapshot at index {}: {e}", meta.index))?;
        if cluster != cluster_id {
            return Err(format!(
                "the snapshot at index {} belongs to cluster {cluster}, this node to cluster \
                 {cluster_id}",
                meta.index
            ));
        }
        *received.lock().expect(RECEIVED_LOCK) = Some((meta.index, meta.term));
        Ok(())
    }
}

impl SnapshotFiles for KvSnapshotFiles {
    fn write(&self, metadata: &SnapshotMetadata, view: &dyn SnapshotView) -> Result<u64, String> {
        self.store
            .write(metadata.index.0, metadata.term.0, |out| view.write_to(out))
            .map(|file| file.bytes)
            .map_err(|e| e.to_string())
    }

    fn open(&self, metadata: &SnapshotMetadata) -> Result<(Box<dyn Read + Send>, u64), String> {
        let file = self.file(metadata.index.0)?;
        let (handle, bytes) = self.store.open_snapshot(&file).map_err(|e| e.to_string())?;
        Ok((
            Box::new(std::io::BufReader::with_capacity(READ_BUFFER_BYTES, handle)),
            bytes,
        ))
    }

    fn receive(
        &self,
        metadata: &SnapshotMetadata,
        _bytes: u64,
    ) -> Result<Box<dyn SnapshotSink>, String> {
        let file = self
            .store
            .receive(metadata.index.0, metadata.term.0)
            .map_err(|e| e.to_string())?;
        *self.received.lock().expect(RECEIVED_LOCK) = None;
        Ok(Box::new(Receiving {
            file,
            cluster_id: self.cluster_id,
            received: Arc::clone(&self.received),
        }))
    }

    fn has_received(&self, metadata: &SnapshotMetadata) -> bool {
        *self.received.lock().expect(RECEIVED_LOCK) == Some((metadata.index.0, metadata.term.0))
    }

    fn keep_received(&self, metadata: &SnapshotMetadata) -> Result<(), String> {
        let (index, term) = (metadata.index.0, metadata.term.0);
        let kept = self
            .store
            .list()
            .map_err(|e| e.to_string())?
            .into_iter()
            .any(|f| (f.index, f.term) == (index, term));
        if kept {
            return Ok(()); // Kept by an earlier try whose persist failed after it.
        }
        self.store
            .keep_received(index, term)
            .map_err(|e| e.to_string())?;
        let mut received = self.received.lock().expect(RECEIVED_LOCK);
        if *received == Some((index, term)) {
            *received = None;
        }
        Ok(())
    }
}
