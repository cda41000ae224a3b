//! Durable Raft state for the node: the [`LogStore`] trait the driver persists a `Ready`
//! through, and [`WalLogStore`], its implementation over the `wal` crate.
//!
//! Layout in the WAL: each Raft entry is one WAL record (the record's index and term are the
//! entry's; the payload is the postcard encoding of its [`EntryPayload`]). The WAL's hard-state
//! slot holds a [`DurableState`]: the Raft hard state together with the metadata of the latest
//! snapshot, so that the two can never disagree after a crash. Snapshot *data* lives with the
//! state machine's snapshot files, reached through [`SnapshotFiles`].
//!
//! Invariants: `first_index() == snapshot.index + 1`; every entry in `[first_index,
//! last_index]` is readable; the hard state's commit index never exceeds the last index (it is
//! saved only after the entries it covers are synced).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wal::{Entry as WalEntry, FileSystem, Wal};

use crate::core::{
    Entry, EntryPayload, HardState, InitialState, LogIndex, Snapshot, SnapshotMetadata, Storage,
    StorageError, Term,
};

/// What the node could not persist or read. Any of these stops the node: the disk is not to be
/// trusted any more (an fsync failure is never retried).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write-ahead log failed.
    #[error("write-ahead log: {0}")]
    Wal(#[from] wal::WalError),
    /// Bytes read back from the log do not decode.
    #[error("undecodable {what} at index {index}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Where.
        index: u64,
        /// The decoder's complaint.
        reason: String,
    },
    /// The snapshot files failed.
    #[error("snapshot store: {0}")]
    Snapshot(String),
}

/// Where snapshots are kept durably (the state machine's snapshot files). The log store asks it
/// for the latest snapshot to send to a follower, and hands it a snapshot received from the
/// leader to keep before the log is reset.
pub trait SnapshotFiles: Send + Sync + 'static {
    /// Writes `snapshot` durably (temporary file, fsync, rename, directory fsync).
    fn save(&self, snapshot: &Snapshot) -> Result<(), String>;
    /// The snapshot with this metadata's index, as saved.
    fn load(&self, metadata: &SnapshotMetadata) -> Result<Snapshot, String>;
}

/// The durable Raft state the driver writes, in the order the `Ready` contract requires.
pub trait LogStore: Storage + Send + 'static {
    /// Persists one `Ready`'s durable part: first the snapshot (replacing the whole log), then
    /// the entries (discarding any held entry at or after the first one's index), then the hard
    /// state. Everything is durable when this returns.
    fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StoreError>;

    /// Records that `snapshot` (already saved by the state machine) covers the log up to its
    /// index, and drops what the log no longer needs.
    fn compact(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StoreError>;

    /// The metadata of the latest snapshot.
    fn snapshot_metadata(&self) -> &SnapshotMetadata;
}

/// The hard-state slot's content: the Raft hard state and the latest snapshot's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState {
    /// Term, vote and commit.
    pub hard_state: HardState,
    /// What the latest snapshot covers, including the membership as of its index.
    pub snapshot: SnapshotMetadata,
}

/// [`LogStore`] over a [`Wal`].
pub struct WalLogStore<F: FileSystem> {
    wal: Wal<F>,
    state: DurableState,
    snapshots: Arc<dyn SnapshotFiles>,
}

fn decode_error(what: &'static str, index: u64, e: postcard::Error) -> StoreError {
    StoreError::Decode {
        what,
        index,
        reason: e.to_string(),
    }
}

fn other(e: impl std::fmt::Display) -> StorageError {
    StorageError::Other(e.to_string())
}

impl<F: FileSystem> WalLogStore<F> {
    /// Opens the store over an opened WAL. A fresh WAL holds no state: `initial` (the
    /// bootstrap membership, or an empty one for a node that will join) is written durably
    /// first.
    pub fn open(
        wal: Wal<F>,
        snapshots: Arc<dyn SnapshotFiles>,
        initial: DurableState,
    ) -> Result<Self, StoreError> {
        let mut wal = wal;
        let state = match wal.hard_state() {
            Some(bytes) => postcard::from_bytes::<DurableState>(bytes)
                .map_err(|e| decode_error("hard state", 0, e))?,
            None => {
                let bytes = postcard::to_stdvec(&initial).expect("a DurableState always encodes");
                wal.save_hard_state(&bytes)?;
                initial
            }
        };
        // A crash while installing a snapshot can leave the new metadata saved but the log not
        // yet restarted after it: finish the restart (the snapshot's data was saved first).
        if wal.last_index() < state.snapshot.index.0 {
            wal.reset(state.snapshot.index.0 + 1)?;
        }
        let store = WalLogStore {
            wal,
            state,
            snapshots,
        };
        store.check()?;
        Ok(store)
    }

    /// Whether the store was created fresh (no entries, no snapshot, term zero).
    pub fn is_fresh(&self) -> bool {
        self.state.hard_state.term == Term::ZERO
            && self.state.snapshot.index == LogIndex::ZERO
            && self.wal.last_index() == 0
    }

    /// The WAL's counters, for metrics.
    pub fn wal_metrics(&self) -> Arc<wal::WalMetrics> {
        self.wal.metrics()
    }

    fn check(&self) -> Result<(), StoreError> {
        let snap = self.state.snapshot.index.0;
        if self.wal.last_index() < snap || self.wal.first_index() > snap + 1 {
            return Err(StoreError::Snapshot(format!(
                "the log [{}, {}] does not continue the snapshot at {snap}",
                self.wal.first_index(),
                self.wal.last_index()
            )));
        }
        Ok(())
    }

    fn save_state(&mut self) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(&self.state).expect("a DurableState always encodes");
        self.wal.save_hard_state(&bytes)?;
        Ok(())
    }

    fn decode_entry(e: WalEntry) -> Result<Entry, StoreError> {
        let payload: EntryPayload =
            postcard::from_bytes(&e.payload).map_err(|err| decode_error("entry", e.index, err))?;
        Ok(Entry {
            term: Term(e.term),
            index: LogIndex(e.index),
            payload,
        })
    }
}

impl<F: FileSystem> Storage for WalLogStore<F> {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        Ok(InitialState {
            hard_state: self.state.hard_state.clone(),
            snapshot_metadata: self.state.snapshot.clone(),
        })
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let first = self.first_index()?;
        if low < first {
            return Err(StorageError::Compacted {
                requested: low,
                first,
            });
        }
        let last = self.last_index()?;
        if high > last.next() {
            return Err(StorageError::Unavailable {
                requested: high.prev(),
                last,
            });
        }
        if low >= high {
            return Ok(Vec::new());
        }
        self.wal
            .read_limited(low.0, high.0, max_bytes)
            .map_err(other)?
            .into_iter()
            .map(|e| Self::decode_entry(e).map_err(other))
            .collect()
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let snap = &self.state.snapshot;
        if index == snap.index {
            return Ok(snap.term);
        }
        if index < snap.index {
            return Err(StorageError::Compacted {
                requested: index,
                first: snap.index.next(),
            });
        }
        self.wal
            .term(index.0)
            .map(Term)
            .ok_or(StorageError::Unavailable {
                requested: index,
                last: LogIndex(self.wal.last_index()),
            })
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.state.snapshot.index.next())
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        Ok(LogIndex(self.wal.last_index()).max(self.state.snapshot.index))
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.snapshots
            .load(&self.state.snapshot)
            .map_err(StorageError::Other)
    }
}

impl<F: FileSystem> LogStore for WalLogStore<F> {
    fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StoreError> {
        let mut state_changed = false;
        if let Some(snapshot) = snapshot {
            // The snapshot's data is durable before the log forgets what it replaces, and the
            // new metadata is durable before the log restarts after it.
            self.snapshots
                .save(snapshot)
                .map_err(StoreError::Snapshot)?;
            self.state.snapshot = snapshot.metadata.clone();
            self.state.hard_state.commit =
                self.state.hard_state.commit.max(snapshot.metadata.index);
            self.save_state()?;
            self.wal.reset(snapshot.metadata.index.0 + 1)?;
        }
        if let Some(first) = entries.first() {
            if first.index.0 <= self.wal.last_index() {
                self.wal.truncate_suffix(first.index.0)?;
            }
            let records: Vec<WalEntry> = entries
                .iter()
                .map(|e| WalEntry {
                    index: e.index.0,
                    term: e.term.0,
                    payload: postcard::to_stdvec(&e.payload)
                        .expect("an entry payload always encodes"),
                })
                .collect();
            self.wal.append(&records)?;
            self.wal.sync()?;
        }
        if let Some(hs) = hard_state {
            // Term and vote must be durable before any message that depends on them leaves;
            // the commit index alone need not be (it is relearned from the leader), so a
            // change of commit alone costs no fsync.
            let must_save =
                hs.term != self.state.hard_state.term || hs.vote != self.state.hard_state.vote;
            self.state.hard_state = hs.clone();
            state_changed |= must_save;
        }
        if state_changed {
            self.save_state()?;
        }
        debug_assert!(self.check().is_ok(), "{:?}", self.check());
        Ok(())
    }

    fn compact(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StoreError> {
        if snapshot.index <= self.state.snapshot.index {
            return Ok(());
        }
        self.state.snapshot = snapshot.clone();
        self.save_state()?;
        self.wal.compact_prefix(snapshot.index.0)?;
        Ok(())
    }

    fn snapshot_metadata(&self) -> &SnapshotMetadata {
        &self.state.snapshot
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;
    use wal::{SimFs, WalConfig};

    use super::*;
    use crate::core::{Configuration, NodeId};

    /// Snapshot files kept in memory.
    #[derive(Default)]
    struct MemFiles(Mutex<Vec<Snapshot>>);

    impl SnapshotFiles for MemFiles {
        fn save(&self, snapshot: &Snapshot) -> Result<(), String> {
            self.0.lock().unwrap().push(snapshot.clone());
            Ok(())
        }
        fn load(&self, metadata: &SnapshotMetadata) -> Result<Snapshot, String> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.metadata.index == metadata.index)
                .cloned()
                .ok_or_else(|| "missing".to_string())
        }
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Normal(Bytes::from(format!("e{index}"))),
        }
    }

    fn open(fs: &SimFs, files: &Arc<MemFiles>) -> WalLogStore<SimFs> {
        let wal = Wal::open(fs.clone(), "/n/wal", WalConfig::default()).unwrap();
        let files: Arc<dyn SnapshotFiles> = files.clone();
        WalLogStore::open(wal, files, DurableState::default()).unwrap()
    }

    #[test]
    fn entries_and_term_and_vote_survive_a_crash_but_a_commit_alone_costs_no_save() {
        let fs = SimFs::new(1);
        let files = Arc::new(MemFiles::default());
        let mut store = open(&fs, &files);
        assert!(store.is_fresh());
        let hs = HardState {
            term: Term(2),
            vote: Some(NodeId(7)),
            commit: LogIndex(1),
        };
        let entries: Vec<Entry> = (1..=5).map(|i| entry(i, 2)).collect();
        store.persist(None, &entries, Some(&hs)).unwrap();
        // A commit-only change is not saved (it is relearned from the leader).
        let later = HardState {
            commit: LogIndex(5),
            ..hs.clone()
        };
        store.persist(None, &[], Some(&later)).unwrap();
        // A conflicting suffix replaces what it overlaps.
        store.persist(None, &[entry(4, 3)], None).unwrap();
        drop(store);
        fs.crash();
        let store = open(&fs, &files);
        let init = store.initial_state().unwrap();
        assert_eq!(
            init.hard_state, hs,
            "term and vote durable; commit as last saved"
        );
        assert_eq!(store.last_index().unwrap(), LogIndex(4));
        assert_eq!(store.term(LogIndex(4)).unwrap(), Term(3));
        assert_eq!(
            store.entries(LogIndex(1), LogIndex(5), u64::MAX).unwrap()[2],
            entry(3, 2)
        );
        assert!(!store.is_fresh());
    }

    #[test]
    fn a_crash_between_saving_snapshot_metadata_and_restarting_the_log_is_finished_on_open() {
        let fs = SimFs::new(2);
        let files = Arc::new(MemFiles::default());
        let mut store = open(&fs, &files);
        store
            .persist(
                None,
                &(1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>(),
                None,
            )
            .unwrap();
        drop(store);
        // Given the metadata of a snapshot at 20 saved, but the log still ending at 5,
        let mut wal = Wal::open(fs.clone(), "/n/wal", WalConfig::default()).unwrap();
        let meta = SnapshotMetadata {
            index: LogIndex(20),
            term: Term(4),
            configuration: Configuration::default(),
        };
        files
            .save(&Snapshot {
                metadata: meta.clone(),
                data: Bytes::from_static(b"state"),
            })
            .unwrap();
        let state = DurableState {
            hard_state: HardState::default(),
            snapshot: meta.clone(),
        };
        wal.save_hard_state(&postcard::to_stdvec(&state).unwrap())
            .unwrap();
        drop(wal);
        // when the store opens, then the log restarts after the snapshot.
        let store = open(&fs, &files);
        assert_eq!(store.first_index().unwrap(), LogIndex(21));
        assert_eq!(store.last_index().unwrap(), LogIndex(20));
        assert_eq!(store.term(LogIndex(20)).unwrap(), Term(4));
        assert_eq!(store.snapshot().unwrap().data, Bytes::from_static(b"state"));
    }

    #[test]
    fn compaction_moves_the_first_index_and_keeps_the_term_at_the_snapshot() {
        let fs = SimFs::new(3);
        let files = Arc::new(MemFiles::default());
        let mut store = open(&fs, &files);
        store
            .persist(
                None,
                &(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>(),
                None,
            )
            .unwrap();
        let meta = SnapshotMetadata {
            index: LogIndex(6),
            term: Term(1),
            configuration: Configuration::default(),
        };
        store.compact(&meta).unwrap();
        assert_eq!(store.first_index().unwrap(), LogIndex(7));
        assert_eq!(store.term(LogIndex(6)).unwrap(), Term(1));
        assert!(matches!(
            store.entries(LogIndex(5), LogIndex(8), u64::MAX),
            Err(StorageError::Compacted { .. })
        ));
        assert_eq!(
            store
                .entries(LogIndex(7), LogIndex(11), u64::MAX)
                .unwrap()
                .len(),
            4
        );
    }
}
