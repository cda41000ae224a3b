//! Stand-ins for the node's seams in unit tests: a state machine and snapshot files that hold
//! nothing, for tests about the driver or the transport rather than the application.

use std::sync::Arc;

use wal::{SimFs, Wal};

use super::{
    ClusterId, DurableState, Restorer, SnapshotFiles, SnapshotFilesError, SnapshotSink,
    SnapshotView, StateMachine, WalLogStore,
};
use crate::core::{Configuration, HardState, LogIndex, SnapshotMetadata, Term};

/// A state machine with nothing in it.
pub(crate) struct Nothing;

/// The view of [`Nothing`]: an empty snapshot.
pub(crate) struct NothingView;

impl SnapshotView for NothingView {
    fn write_to(&self, _: &mut dyn std::io::Write) -> std::io::Result<()> {
        Ok(())
    }
}

impl StateMachine for Nothing {
    type Output = ();
    type View = NothingView;
    type Restored = ();
    fn apply(&mut self, _: LogIndex, _: &[u8]) {}
    fn apply_empty(&mut self, _: LogIndex) {}
    fn view(&self, _: &SnapshotMetadata) -> NothingView {
        NothingView
    }
    fn restorer(&self) -> Restorer<()> {
        Box::new(|_, _| Ok(()))
    }
    fn install(&mut self, _: &SnapshotMetadata, _: ()) {}
}

/// Snapshot files for tests in which no snapshot is ever taken or received.
pub(crate) struct NoFiles;

/// What [`NoFiles`] answers: no snapshot is ever kept or received.
fn missing(state: &'static str, metadata: &SnapshotMetadata) -> SnapshotFilesError {
    SnapshotFilesError::Missing {
        state,
        index: metadata.index,
        term: metadata.term,
    }
}

impl SnapshotFiles for NoFiles {
    fn write(&self, _: &SnapshotMetadata, _: &dyn SnapshotView) -> Result<u64, SnapshotFilesError> {
        Ok(0)
    }
    fn open(
        &self,
        metadata: &SnapshotMetadata,
    ) -> Result<(Box<dyn std::io::Read + Send>, u64), SnapshotFilesError> {
        Err(missing("kept", metadata))
    }
    fn receive(
        &self,
        metadata: &SnapshotMetadata,
        _: u64,
    ) -> Result<Box<dyn SnapshotSink>, SnapshotFilesError> {
        Err(SnapshotFilesError::io(
            format!("receiving the snapshot at {}", metadata.index),
            std::io::Error::other("this test node takes no snapshots"),
        ))
    }
    fn has_received(&self, _: &SnapshotMetadata) -> bool {
        false
    }
    fn keep_received(&self, metadata: &SnapshotMetadata) -> Result<(), SnapshotFilesError> {
        Err(missing("received", metadata))
    }
}

/// A store on `wal` (blank) that starts in term 1 with `configuration` as its membership, in
/// cluster 1, with no snapshot files.
pub(crate) fn store_in_term_1(wal: Wal<SimFs>, configuration: Configuration) -> WalLogStore<SimFs> {
    store_in_term_1_with(wal, configuration, Arc::new(NoFiles))
}

/// As [`store_in_term_1`], keeping snapshots in `files`.
pub(crate) fn store_in_term_1_with(
    wal: Wal<SimFs>,
    configuration: Configuration,
    files: Arc<dyn SnapshotFiles>,
) -> WalLogStore<SimFs> {
    let initial = DurableState {
        hard_state: HardState {
            term: Term(1),
            vote: None,
            commit: LogIndex::ZERO,
        },
        snapshot: SnapshotMetadata {
            index: LogIndex::ZERO,
            term: Term::ZERO,
            configuration,
        },
        cluster_id: ClusterId(1),
    };
    WalLogStore::create(wal, files, initial).expect("a blank WAL")
}
