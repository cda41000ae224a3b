//! [`SnapshotFiles`] held in memory, for the simulation and for tests: the same contract as
//! files on disk (a received snapshot is checked before it can be kept, the newest
//! [`MEM_SNAPSHOTS_KEPT`] are kept), with every operation done in place
//! ([`Offload::Inline`]) so that a simulation's schedule depends on its seed alone.
//!
//! What is kept survives a simulated crash: the disk's store returns only once a snapshot is
//! durable, so a kept snapshot is durable by contract.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::snapshot_files::{
    Offload, SnapshotFiles, SnapshotFilesError, SnapshotSink, SnapshotView,
};
use crate::core::{LogIndex, SnapshotMetadata, Term};

/// How many snapshots [`MemSnapshotFiles`] keeps (the newest), as the disk's store does.
pub const MEM_SNAPSHOTS_KEPT: usize = 3;

/// Checks a snapshot's data before it is kept: what the state machine will be able to read.
pub type CheckData =
    dyn Fn(&SnapshotMetadata, &[u8]) -> Result<(), SnapshotFilesError> + Send + Sync;

const LOCK: &str = "the in-memory snapshot lock is never held across a panic";

/// Snapshot files in memory.
pub struct MemSnapshotFiles {
    /// Kept snapshots by index: the term they were kept with, and their data.
    kept: Mutex<BTreeMap<LogIndex, (Term, Bytes)>>,
    /// The latest snapshot received and checked, waiting to be kept.
    received: Arc<Mutex<Option<(LogIndex, Term, Bytes)>>>,
    check: Arc<CheckData>,
}

impl MemSnapshotFiles {
    /// Files whose received snapshots must pass `check`.
    pub fn new(
        check: impl Fn(&SnapshotMetadata, &[u8]) -> Result<(), SnapshotFilesError>
        + Send
        + Sync
        + 'static,
    ) -> MemSnapshotFiles {
        MemSnapshotFiles {
            kept: Mutex::new(BTreeMap::new()),
            received: Arc::new(Mutex::new(None)),
            check: Arc::new(check),
        }
    }

    /// Files that take any data.
    pub fn accepting_all() -> MemSnapshotFiles {
        MemSnapshotFiles::new(|_, _| Ok(()))
    }

    /// The data kept for the snapshot at `index`, if any.
    pub fn data(&self, index: LogIndex) -> Option<Bytes> {
        self.kept
            .lock()
            .expect(LOCK)
            .get(&index)
            .map(|(_, data)| data.clone())
    }

    /// Keeps `data` as the snapshot at `metadata`, as if this node had written it.
    pub fn insert(&self, metadata: &SnapshotMetadata, data: Bytes) {
        let mut kept = self.kept.lock().expect(LOCK);
        kept.insert(metadata.index, (metadata.term, data));
        while kept.len() > MEM_SNAPSHOTS_KEPT {
            kept.pop_first();
        }
    }

    /// Receives `data` whole as the snapshot at `metadata`, as the transport would.
    pub fn receive_whole(
        &self,
        metadata: &SnapshotMetadata,
        data: &[u8],
    ) -> Result<(), SnapshotFilesError> {
        let mut sink = self.receive(metadata, data.len() as u64)?;
        sink.write(data)?;
        sink.finish()
    }
}

struct MemSink {
    index: LogIndex,
    term: Term,
    metadata: SnapshotMetadata,
    announced: u64,
    data: Vec<u8>,
    received: Arc<Mutex<Option<(LogIndex, Term, Bytes)>>>,
    check: Arc<CheckData>,
}

impl SnapshotSink for MemSink {
    fn write(&mut self, chunk: &[u8]) -> Result<(), SnapshotFilesError> {
        if self.data.len() as u64 + chunk.len() as u64 > self.announced {
            return Err(SnapshotFilesError::damaged(
                self.index,
                format!("more than the {} bytes announced", self.announced),
            ));
        }
        self.data.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), SnapshotFilesError> {
        if self.data.len() as u64 != self.announced {
            return Err(SnapshotFilesError::damaged(
                self.index,
                format!(
                    "{} bytes of the {} announced",
                    self.data.len(),
                    self.announced
                ),
            ));
        }
        (self.check)(&self.metadata, &self.data)?;
        *self.received.lock().expect(LOCK) = Some((self.index, self.term, Bytes::from(self.data)));
        Ok(())
    }
}

impl SnapshotFiles for MemSnapshotFiles {
    fn write(
        &self,
        metadata: &SnapshotMetadata,
        view: &dyn SnapshotView,
    ) -> Result<u64, SnapshotFilesError> {
        let mut data = Vec::new();
        view.write_to(&mut data).map_err(|e| {
            SnapshotFilesError::io(format!("writing the snapshot at {}", metadata.index), e)
        })?;
        let bytes = data.len() as u64;
        self.insert(metadata, Bytes::from(data));
        Ok(bytes)
    }

    fn open(
        &self,
        metadata: &SnapshotMetadata,
    ) -> Result<(Box<dyn Read + Send>, u64), SnapshotFilesError> {
        let data = self
            .data(metadata.index)
            .ok_or(SnapshotFilesError::Missing {
                state: "kept",
                index: metadata.index,
                term: metadata.term,
            })?;
        let bytes = data.len() as u64;
        Ok((Box::new(Cursor::new(data)), bytes))
    }

    fn receive(
        &self,
        metadata: &SnapshotMetadata,
        bytes: u64,
    ) -> Result<Box<dyn SnapshotSink>, SnapshotFilesError> {
        Ok(Box::new(MemSink {
            index: metadata.index,
            term: metadata.term,
            metadata: metadata.clone(),
            announced: bytes,
            // Bounded by what the transport accepts; the simulation's snapshots are small.
            data: Vec::new(),
            received: Arc::clone(&self.received),
            check: Arc::clone(&self.check),
        }))
    }

    fn has_received(&self, metadata: &SnapshotMetadata) -> bool {
        matches!(
            &*self.received.lock().expect(LOCK),
            Some((index, term, _)) if *index == metadata.index && *term == metadata.term
        )
    }

    fn keep_received(&self, metadata: &SnapshotMetadata) -> Result<(), SnapshotFilesError> {
        let kept = self
            .kept
            .lock()
            .expect(LOCK)
            .get(&metadata.index)
            .map(|(term, _)| *term);
        if kept == Some(metadata.term) {
            return Ok(()); // Kept by an earlier try whose persist failed after it.
        }
        let mut received = self.received.lock().expect(LOCK);
        match received.take() {
            Some((index, term, data)) if index == metadata.index && term == metadata.term => {
                drop(received);
                self.insert(metadata, data);
                Ok(())
            }
            other => {
                *received = other;
                Err(SnapshotFilesError::Missing {
                    state: "received",
                    index: metadata.index,
                    term: metadata.term,
                })
            }
        }
    }

    fn offload(&self) -> Offload {
        Offload::Inline
    }
}
