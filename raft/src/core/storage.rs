//! The read side of durable state, as the core sees it, and `MemStorage`, an in-memory
//! implementation for tests and for drivers that keep everything in memory.
//!
//! The core only reads storage; the driver writes it, following the `Ready` contract. The
//! storage holds a snapshot (maybe the empty bootstrap one) and the entries from
//! `first_index()` on. Contract:
//! - `first_index() <= snapshot_index() + 1 <= last_index() + 1`: the entries at or below the
//!   snapshot's index that a storage still holds are its *catch-up tail* (etcd's catch-up
//!   entries). They are committed, applied and covered by the snapshot; they are kept only so
//!   that a follower lagging a little behind the snapshot catches up from the log instead of
//!   receiving the whole snapshot. A storage without a tail has `first_index() ==
//!   snapshot_index() + 1`.
//! - `term(first_index() - 1)` and `term(snapshot_index())` are answered (the consistency check
//!   matches against the entry before the first one sent).
//! - The snapshot's index, never `first_index() - 1`, is where the state machine starts and
//!   where the configuration history begins: the core never applies a tail entry again, nor
//!   replays a configuration entry of the tail.

use super::errors::StorageError;
use super::membership::Configuration;
use super::message::{Entry, EntryPayload, HardState, Snapshot, SnapshotMetadata};
use super::types::{LogIndex, Term};

/// What a core needs at start-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    /// The persisted term, vote and commit index.
    pub hard_state: HardState,
    /// The metadata of the persisted snapshot: the log starts after it, and its configuration
    /// is the membership before any configuration entry in the log.
    pub snapshot_metadata: SnapshotMetadata,
}

/// Durable Raft state, read by the core. If a method returns `StorageError::Other`, the core
/// cannot continue and panics: what to do about a broken disk is the driver's decision.
pub trait Storage {
    /// The hard state and snapshot metadata to start from.
    fn initial_state(&self) -> Result<InitialState, StorageError>;

    /// Entries in `[low, high)`, stopping early once more than `max_bytes` would be returned
    /// (but always at least one entry when the range is non-empty).
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError>;

    /// The term of the entry at `index`; also answers for the snapshot's own index.
    fn term(&self, index: LogIndex) -> Result<Term, StorageError>;

    /// The index of the first entry held: the snapshot index plus one, or lower when a
    /// catch-up tail is kept (see the module docs).
    fn first_index(&self) -> Result<LogIndex, StorageError>;

    /// The index of the last entry held (the snapshot index when there are no entries).
    fn last_index(&self) -> Result<LogIndex, StorageError>;

    /// The latest snapshot, to send to a follower behind the compacted log.
    fn snapshot(&self) -> Result<Snapshot, StorageError>;

    /// The index of the latest snapshot's last entry, without reading its data: what the log
    /// was compacted to (entries from `first_index()` up to it are the catch-up tail).
    fn snapshot_index(&self) -> Result<LogIndex, StorageError>;

    /// The configuration-change entries in `[low, high)`, in order: what a starting node reads
    /// of its whole tail to rebuild its membership history. The default filters
    /// [`Storage::entries`]; a store that can tell an entry's kind without decoding the
    /// command it carries (the WAL store) skips the commands, which are nearly all of it.
    fn conf_change_entries(
        &self,
        low: LogIndex,
        high: LogIndex,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut entries = self.entries(low, high, u64::MAX)?;
        entries.retain(|entry| matches!(entry.payload, EntryPayload::ConfChange(_)));
        Ok(entries)
    }
}

/// An in-memory [`Storage`] that the driver writes through its own methods.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    /// The index and term of the entry just before the first one held: the snapshot's last
    /// entry, or, when a catch-up tail is kept, the entry just before the tail.
    before_first: (LogIndex, Term),
    /// `entries[k].index == before_first.0 + 1 + k`; those at or below the snapshot's index
    /// are the catch-up tail.
    entries: Vec<Entry>,
}

impl MemStorage {
    /// Empty storage: a node that will learn everything, membership included, from a leader.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Storage for a node of a new cluster with the given membership. The membership lives in
    /// a bootstrap snapshot at index 1, term 1, so that a node added later (which starts empty)
    /// learns it through InstallSnapshot rather than missing it.
    pub fn new_with_configuration(configuration: Configuration) -> MemStorage {
        let metadata = SnapshotMetadata {
            index: LogIndex(1),
            term: Term(1),
            configuration,
        };
        MemStorage {
            hard_state: HardState {
                term: Term(1),
                vote: None,
                commit: LogIndex(1),
            },
            before_first: (metadata.index, metadata.term),
            snapshot: Snapshot {
                metadata,
                data: bytes::Bytes::new(),
            },
            entries: Vec::new(),
        }
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Persists a hard state.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Appends entries, first discarding every held entry at or after the first one's index
    /// (Ready's contract: writing index i discards the persisted suffix from i).
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let snapshot_index = self.snapshot.metadata.index;
        // The tail is covered by the snapshot, hence committed: nothing overwrites it.
        assert!(
            first.index > snapshot_index,
            "appending at {} at or below the snapshot at {snapshot_index}",
            first.index
        );
        let last = self.last();
        assert!(
            first.index <= last.next(),
            "appending at {} leaves a gap after {last}",
            first.index
        );
        for pair in entries.windows(2) {
            assert_eq!(
                pair[1].index,
                pair[0].index.next(),
                "entries to append must be contiguous"
            );
        }
        let keep = first.index.count_since(self.first()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    /// Installs a snapshot received from a leader: the log is replaced by it (no tail: the
    /// entries held do not continue it).
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        assert!(
            snapshot.metadata.index >= self.snapshot.metadata.index,
            "snapshots never go back"
        );
        self.entries.clear();
        if self.hard_state.commit < snapshot.metadata.index {
            self.hard_state.commit = snapshot.metadata.index;
        }
        self.before_first = (snapshot.metadata.index, snapshot.metadata.term);
        self.snapshot = snapshot;
    }

    /// Compacts the log up to the snapshot's index, which the local state machine produced,
    /// keeping no tail.
    pub fn compact(&mut self, snapshot: Snapshot) {
        self.compact_keeping(snapshot, 0);
    }

    /// Compacts the log up to the snapshot's index, which the local state machine produced,
    /// but keeps the last `tail` entries it covers (fewer if they are no longer held), so that
    /// a follower at most `tail` entries behind the snapshot still catches up from the log.
    pub fn compact_keeping(&mut self, snapshot: Snapshot, tail: u64) {
        let index = snapshot.metadata.index;
        let current = self.snapshot.metadata.index;
        assert!(
            index > current,
            "compacting to {index} but already compacted to {current}"
        );
        assert!(
            index <= self.last(),
            "compacting to {index} beyond the last index {}",
            self.last()
        );
        let kept_first = LogIndex(index.0.saturating_sub(tail))
            .next()
            .max(self.first());
        let before = kept_first.prev();
        let before_term = self
            .term(before)
            .expect("invariant: the entry before a held one has a known term");
        let drop = kept_first.count_since(self.first()) as usize;
        self.entries.drain(..drop);
        self.before_first = (before, before_term);
        self.snapshot = snapshot;
    }

    fn first(&self) -> LogIndex {
        self.before_first.0.next()
    }

    fn last(&self) -> LogIndex {
        self.before_first.0.plus(self.entries.len() as u64)
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        Ok(InitialState {
            hard_state: self.hard_state.clone(),
            snapshot_metadata: self.snapshot.metadata.clone(),
        })
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let first = self.first();
        if low < first {
            return Err(StorageError::Compacted {
                requested: low,
                first,
            });
        }
        if high > self.last().next() {
            return Err(StorageError::Unavailable {
                requested: high.prev(),
                last: self.last(),
            });
        }
        let start = low.count_since(first) as usize;
        let end = high.count_since(first) as usize;
        let mut out = Vec::new();
        let mut size_bytes = 0u64;
        for entry in self.entries[start..end.max(start)].iter() {
            size_bytes += entry.size_bytes();
            if !out.is_empty() && size_bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let (before, before_term) = self.before_first;
        if index == before {
            return Ok(before_term);
        }
        if index < before {
            return Err(StorageError::Compacted {
                requested: index,
                first: self.first(),
            });
        }
        if index > self.last() {
            return Err(StorageError::Unavailable {
                requested: index,
                last: self.last(),
            });
        }
        Ok(self.entries[index.count_since(self.first()) as usize].term)
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.first())
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.last())
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.clone())
    }

    fn snapshot_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.snapshot.metadata.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message::EntryPayload;
    use crate::core::types::NodeId;

    fn snapshot(index: u64, term: u64) -> Snapshot {
        Snapshot {
            metadata: SnapshotMetadata {
                index: LogIndex(index),
                term: Term(term),
                configuration: Configuration::with_voters([NodeId(1)]),
            },
            data: bytes::Bytes::new(),
        }
    }

    /// Storage of a one-node cluster: the bootstrap snapshot at 1, then entries 2..=10 of
    /// term 2.
    fn storage() -> MemStorage {
        let mut s = MemStorage::new_with_configuration(Configuration::with_voters([NodeId(1)]));
        let entries: Vec<Entry> = (2..=10)
            .map(|i| Entry {
                term: Term(2),
                index: LogIndex(i),
                payload: EntryPayload::Noop,
            })
            .collect();
        s.append(&entries);
        s
    }

    /// `MemStorage` writes through its own methods, as a driver keeping everything in memory.
    impl crate::core::storage_conformance::Harness for MemStorage {
        type Storage = MemStorage;

        fn founded(configuration: Configuration) -> MemStorage {
            MemStorage::new_with_configuration(configuration)
        }

        fn storage(&self) -> &MemStorage {
            self
        }

        fn append(&mut self, entries: &[Entry]) {
            MemStorage::append(self, entries);
        }

        fn set_hard_state(&mut self, hard_state: &HardState) {
            MemStorage::set_hard_state(self, hard_state.clone());
        }

        fn install_snapshot(&mut self, snapshot: &Snapshot) {
            self.apply_snapshot(snapshot.clone());
        }

        fn compact(&mut self, metadata: &SnapshotMetadata, tail: u64) {
            let snapshot = Snapshot {
                metadata: metadata.clone(),
                data: bytes::Bytes::new(),
            };
            self.compact_keeping(snapshot, tail);
        }
    }

    mod conformance {
        crate::core::storage_conformance::storage_conformance_tests!(super::MemStorage);
    }

    fn is_compacted<T>(result: Result<T, StorageError>) -> bool {
        matches!(result, Err(StorageError::Compacted { .. }))
    }

    #[test]
    fn compacting_with_a_tail_keeps_the_last_entries_the_snapshot_covers() {
        // Given entries 2..=10, when compacted to 8 keeping a tail of three,
        let mut s = storage();
        s.compact_keeping(snapshot(8, 2), 3);
        // then 6..=8 stay behind the snapshot, with the term of 5 for the consistency check.
        assert_eq!(s.snapshot_index(), Ok(LogIndex(8)));
        assert_eq!(s.first_index(), Ok(LogIndex(6)));
        assert_eq!(s.term(LogIndex(5)), Ok(Term(2)));
        assert_eq!(
            s.entries(LogIndex(6), LogIndex(11), u64::MAX)
                .unwrap()
                .len(),
            5
        );
        assert!(is_compacted(s.term(LogIndex(4))));
        assert!(is_compacted(s.entries(LogIndex(5), LogIndex(11), u64::MAX)));
    }

    #[test]
    fn a_tail_never_brings_back_what_an_earlier_compaction_dropped() {
        // Given entries 2..=10, when compacted to 8 with a tail longer than the log,
        let mut s = storage();
        s.compact_keeping(snapshot(8, 2), 100);
        // then everything held stays, down to the bootstrap snapshot's term;
        assert_eq!(s.first_index(), Ok(LogIndex(2)));
        assert_eq!(s.term(LogIndex(1)), Ok(Term(1)));
        // and a later compaction with a short tail drops all but it.
        s.compact_keeping(snapshot(10, 2), 1);
        assert_eq!(s.first_index(), Ok(LogIndex(10)));
        assert_eq!(s.term(LogIndex(9)), Ok(Term(2)));
        assert_eq!(s.last_index(), Ok(LogIndex(10)));
    }

    #[test]
    fn a_leaders_snapshot_replaces_the_log_tail_and_all() {
        // Given a storage compacted to 8 with a tail,
        let mut s = storage();
        s.compact_keeping(snapshot(8, 2), 3);
        // when a leader's snapshot at 20 of term 3 is installed,
        s.apply_snapshot(snapshot(20, 3));
        // then the log starts right after it, and appends continue it.
        assert_eq!(s.first_index(), Ok(LogIndex(21)));
        assert_eq!(s.last_index(), Ok(LogIndex(20)));
        assert_eq!(s.term(LogIndex(20)), Ok(Term(3)));
        assert!(is_compacted(s.term(LogIndex(19))));
        let next = Entry {
            term: Term(3),
            index: LogIndex(21),
            payload: EntryPayload::Noop,
        };
        s.append(std::slice::from_ref(&next));
        assert_eq!(
            s.entries(LogIndex(21), LogIndex(22), u64::MAX),
            Ok(vec![next])
        );
    }
}
