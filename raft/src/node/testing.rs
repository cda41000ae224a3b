//! Stand-ins for the node's seams in unit tests: a state machine and snapshot files that hold
//! nothing, for tests about the driver or the transport rather than the application.

use std::sync::Arc;

use bytes::Bytes;
use wal::{SimFs, Wal};

use super::{ClusterId, DurableState, SnapshotFiles, StateMachine, WalLogStore};
use crate::core::{Configuration, HardState, LogIndex, Snapshot, SnapshotMetadata, Term};

/// A state machine with nothing in it.
pub(crate) struct Nothing;

impl StateMachine for Nothing {
    type Output = ();
    fn apply(&mut self, _: LogIndex, _: &[u8]) {}
    fn apply_empty(&mut self, _: LogIndex) {}
    fn snapshot_data(&self, _: Term) -> Bytes {
        Bytes::new()
    }
    fn restore(&mut self, _: &Snapshot) -> Result<(), String> {
        Ok(())
    }
}

/// Snapshot files for tests in which no snapshot is ever taken.
pub(crate) struct NoFiles;

impl SnapshotFiles for NoFiles {
    fn save(&self, _: &Snapshot) -> Result<(), String> {
        Ok(())
    }
    fn load(&self, _: &SnapshotMetadata) -> Result<Snapshot, String> {
        Err("no snapshots here".into())
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
