//! The replicated log as one node sees it: the durable part read through [`Storage`], plus the
//! unstable tail (entries and maybe a snapshot) the core has accepted but the driver has not yet
//! persisted, plus the commit and apply cursors.
//!
//! The snapshot's index, not `first_index() - 1`, is where the log's content starts for the
//! application: the storage may keep a catch-up tail of entries at and below its snapshot's
//! index (see [`Storage`]'s contract), served to lagging followers like any other entry but
//! never handed to the application again. [`RaftLog::snapshot_index`] is that index: the
//! unstable snapshot's while a leader's snapshot awaits persistence, else the storage's
//! (which moves when the driver compacts).
//!
//! Invariants (checked by [`RaftLog::check_invariants`]):
//! - `applied <= applying <= committed <= last_index()`;
//! - `first_index() <= snapshot_index() + 1` and `snapshot_index() <= committed`: whatever a
//!   snapshot covers is committed, and the log (tail included) continues it;
//! - `persisted <= last_index()`: entries up to `persisted` are durable *and* belong to this
//!   log (an entry overwritten after a conflict is no longer counted as persisted);
//! - the unstable entries are contiguous and start at `unstable_offset`;
//! - an unstable snapshot, if any, ends right before `unstable_offset`;
//! - entries up to `committed` are never truncated (paper §5.3, Log Matching plus §5.4).

use super::errors::StorageError;
use super::invariant::InvariantError;
use super::message::{Entry, Snapshot};
use super::storage::{InitialState, Storage};
use super::types::{LogIndex, Term};

/// The log of one node: durable prefix, unstable tail, commit and apply cursors.
pub struct RaftLog<S: Storage> {
    /// The durable log, written by the driver.
    storage: S,
    /// A snapshot received from a leader that the driver has not persisted yet.
    unstable_snapshot: Option<Snapshot>,
    /// Entries accepted but not yet persisted; `unstable[k].index == unstable_offset + k`.
    unstable: Vec<Entry>,
    /// The index of the first unstable entry. Entries below it are read from storage.
    unstable_offset: LogIndex,
    /// Unstable entries up to here were handed to the driver in the outstanding Ready. Lowered
    /// when a conflict truncates them, so `advance` never marks an overwritten entry durable.
    handed_to: LogIndex,
    /// Whether the unstable snapshot was handed to the driver in the outstanding Ready.
    snapshot_handed: bool,
    /// The highest index known committed (paper Figure 2, `commitIndex`).
    pub(crate) committed: LogIndex,
    /// The highest index handed to the application in a Ready (maybe not applied yet).
    pub(crate) applying: LogIndex,
    /// The highest index the application confirmed applied (through `advance`).
    pub(crate) applied: LogIndex,
    /// Entries up to here are durable on this node and part of its current log.
    pub(crate) persisted: LogIndex,
}

impl<S: Storage> RaftLog<S> {
    /// A log over `storage`, starting from its initial state `init` (the commit index of its
    /// hard state, the index of its snapshot) with `applied` entries known applied. Whatever
    /// the snapshot covers counts as committed and applied, tail included.
    pub fn new(storage: S, init: &InitialState, applied: LogIndex) -> RaftLog<S> {
        let first = storage
            .first_index()
            .expect("invariant: storage answers first_index");
        let last = storage
            .last_index()
            .expect("invariant: storage answers last_index");
        let committed = init.hard_state.commit;
        let snapshot_index = init.snapshot_metadata.index;
        assert!(
            first <= snapshot_index.next() && snapshot_index <= last,
            "storage holds [{first}, {last}], which does not continue its snapshot at \
             {snapshot_index}"
        );
        assert!(
            committed <= last,
            "persisted commit {committed} is beyond the last index {last}"
        );
        let committed = committed.max(snapshot_index);
        let applied = applied.max(snapshot_index);
        assert!(
            applied <= committed,
            "applied {applied} is beyond committed {committed}"
        );
        RaftLog {
            storage,
            unstable_snapshot: None,
            unstable: Vec::new(),
            unstable_offset: last.next(),
            handed_to: last,
            snapshot_handed: false,
            committed,
            applying: applied,
            applied,
            persisted: last,
        }
    }

    /// The durable storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The durable storage, for the driver to write what a Ready asked it to.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    /// The index of the first entry still held: right after the latest snapshot, or lower
    /// when the storage keeps a catch-up tail.
    pub fn first_index(&self) -> LogIndex {
        match &self.unstable_snapshot {
            Some(snapshot) => snapshot.metadata.index.next(),
            None => self
                .storage
                .first_index()
                .expect("invariant: storage answers first_index"),
        }
    }

    /// The index of the latest snapshot: the one a leader sent, until it is persisted, else
    /// the storage's. Everything up to it is committed and covered by the snapshot.
    pub fn snapshot_index(&self) -> LogIndex {
        match &self.unstable_snapshot {
            Some(snapshot) => snapshot.metadata.index,
            None => self
                .storage
                .snapshot_index()
                .expect("invariant: storage answers snapshot_index"),
        }
    }

    /// The index of the last entry (the snapshot's index when the log is empty).
    pub fn last_index(&self) -> LogIndex {
        if let Some(last) = self.unstable.last() {
            return last.index;
        }
        match &self.unstable_snapshot {
            Some(snapshot) => snapshot.metadata.index,
            None => self.unstable_offset.prev(),
        }
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> Term {
        self.term(self.last_index())
            .expect("invariant: the last index always has a term")
    }

    /// The term of the entry at `index`, also answering for the snapshot's last index.
    pub fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let first = self.first_index();
        if index < first.prev() {
            return Err(StorageError::Compacted {
                requested: index,
                first,
            });
        }
        let last = self.last_index();
        if index > last {
            return Err(StorageError::Unavailable {
                requested: index,
                last,
            });
        }
        if let Some(snapshot) = &self.unstable_snapshot
            && index == snapshot.metadata.index
        {
            return Ok(snapshot.metadata.term);
        }
        if index >= self.unstable_offset {
            let k = index.count_since(self.unstable_offset) as usize;
            return Ok(self.unstable[k].term);
        }
        self.storage.term(index)
    }

    /// Whether the entry at `index` has `term` (false if it is missing or compacted).
    pub fn matches(&self, index: LogIndex, term: Term) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up to date as this
    /// one: the election restriction of paper §5.4.1.
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// Entries in `[low, high)`, at least one if the range is non-empty, then stopping before
    /// the total would exceed `max_bytes`.
    pub fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if low >= high {
            return Ok(Vec::new());
        }
        let first = self.first_index();
        if low < first {
            return Err(StorageError::Compacted {
                requested: low,
                first,
            });
        }
        let last = self.last_index();
        if high > last.next() {
            return Err(StorageError::Unavailable {
                requested: high.prev(),
                last,
            });
        }
        let mut out = Vec::new();
        let mut size_bytes = 0u64;
        if low < self.unstable_offset {
            let stored_high = high.min(self.unstable_offset);
            out = self.storage.entries(low, stored_high, max_bytes)?;
            size_bytes = out.iter().map(Entry::size_bytes).sum();
            if out.len() as u64 != stored_high.count_since(low) {
                return Ok(out); // The byte limit stopped the storage read.
            }
        }
        let from = low.max(self.unstable_offset);
        for index in from.0..high.0 {
            let entry = &self.unstable[LogIndex(index).count_since(self.unstable_offset) as usize];
            size_bytes += entry.size_bytes();
            if !out.is_empty() && size_bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    /// The consistency check and append of AppendEntries (paper §5.3): if the entry at
    /// `prev_index` has `prev_term`, appends `entries`, overwriting from the first conflicting
    /// one, and returns the index of the last new entry. Returns `None` on a mismatch.
    pub fn maybe_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        entries: &[Entry],
    ) -> Option<(LogIndex, Option<LogIndex>)> {
        if !self.matches(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index.plus(entries.len() as u64);
        // Skip entries already present with the same term: a duplicate or reordered message
        // must never truncate entries that a later message appended (Log Matching).
        let conflict = entries.iter().position(|e| !self.matches(e.index, e.term));
        let truncated_at = conflict.map(|k| {
            let at = entries[k].index;
            assert!(
                at > self.committed,
                "conflict at {at} at or below commit {}",
                self.committed
            );
            self.truncate_and_append(&entries[k..]);
            at
        });
        Some((last_new, truncated_at))
    }

    /// Appends entries the leader created; returns the new last index.
    pub fn append(&mut self, entries: &[Entry]) -> LogIndex {
        if let Some(first) = entries.first() {
            assert_eq!(
                first.index,
                self.last_index().next(),
                "leader appends at the end"
            );
            self.truncate_and_append(entries);
        }
        self.last_index()
    }

    /// Writes `entries` into the unstable tail, dropping every entry at or after the first one.
    fn truncate_and_append(&mut self, entries: &[Entry]) {
        let first = entries[0].index;
        debug_assert!(entries.windows(2).all(|w| w[1].index == w[0].index.next()));
        assert!(
            first <= self.last_index().next(),
            "appending at {first} would leave a gap"
        );
        // The snapshot, catch-up tail included, is committed: nothing overwrites it.
        assert!(
            first > self.snapshot_index(),
            "appending at {first} at or below the snapshot at {}",
            self.snapshot_index()
        );
        if first < self.unstable_offset {
            // The conflicting suffix is in storage; the driver overwrites it when persisting.
            self.unstable_offset = first;
            self.unstable.clear();
        } else {
            self.unstable
                .truncate(first.count_since(self.unstable_offset) as usize);
        }
        self.unstable.extend_from_slice(entries);
        self.persisted = self.persisted.min(first.prev());
        self.handed_to = self.handed_to.min(first.prev());
    }

    /// Raises the commit index; it never goes back (paper Figure 2).
    pub fn commit_to(&mut self, index: LogIndex) -> bool {
        if index <= self.committed {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "commit {index} beyond last {}",
            self.last_index()
        );
        self.committed = index;
        true
    }

    /// Replaces the whole log by a snapshot from the leader (paper §7).
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        assert!(
            index > self.committed,
            "restoring {index} at or below commit {}",
            self.committed
        );
        self.unstable.clear();
        self.unstable_offset = index.next();
        self.unstable_snapshot = Some(snapshot);
        self.snapshot_handed = false;
        self.committed = index;
        // Nothing of the old log can be relied on until the snapshot itself is durable.
        self.persisted = LogIndex::ZERO;
        self.handed_to = index;
    }

    /// The unstable snapshot, if it was not handed to the driver yet; marks it handed.
    pub fn take_unstable_snapshot(&mut self) -> Option<Snapshot> {
        if self.snapshot_handed {
            return None;
        }
        let snapshot = self.unstable_snapshot.clone()?;
        self.snapshot_handed = true;
        Some(snapshot)
    }

    /// Whether there is a snapshot the driver has not been given.
    pub fn has_unhanded_snapshot(&self) -> bool {
        self.unstable_snapshot.is_some() && !self.snapshot_handed
    }

    /// The unstable entries not yet handed to the driver; marks them handed.
    pub fn take_unstable_entries(&mut self) -> Vec<Entry> {
        let from = self.handed_to.next().max(self.unstable_offset);
        let k = from.count_since(self.unstable_offset) as usize;
        let out = self.unstable[k.min(self.unstable.len())..].to_vec();
        self.handed_to = self.last_index();
        out
    }

    /// Whether there are entries the driver has not been given.
    pub fn has_unhanded_entries(&self) -> bool {
        self.unstable
            .last()
            .is_some_and(|e| e.index > self.handed_to)
    }

    /// The driver persisted what it was handed: `snapshot_index` is the snapshot it persisted,
    /// if any. Entries still untouched since they were handed are now durable.
    pub fn persisted_handed(&mut self, snapshot_index: Option<LogIndex>) {
        if let (Some(index), Some(snapshot)) = (snapshot_index, &self.unstable_snapshot)
            && snapshot.metadata.index == index
            && self.snapshot_handed
        {
            self.unstable_snapshot = None;
            self.snapshot_handed = false;
            self.persisted = self.persisted.max(index);
        }
        if self.unstable_snapshot.is_some() {
            return; // A newer snapshot replaced what was handed; nothing else is durable.
        }
        let stable_to = self.handed_to.min(self.last_index());
        if stable_to >= self.unstable_offset {
            let drop = stable_to.count_since(self.unstable_offset.prev()) as usize;
            self.unstable.drain(..drop);
            self.unstable_offset = stable_to.next();
        }
        // Entries at or below `handed_to` were not truncated since they were handed.
        self.persisted = self
            .persisted
            .max(stable_to.min(self.unstable_offset.prev()));
    }

    /// Committed entries not yet handed to the application, up to `max_bytes`, never beyond
    /// what is durable locally once the current Ready is persisted (`durable_after`).
    pub fn next_committed_entries(&self, durable_after: LogIndex, max_bytes: u64) -> Vec<Entry> {
        let high = self.committed.min(durable_after);
        if high <= self.applying {
            return Vec::new();
        }
        self.entries(self.applying.next(), high.next(), max_bytes)
            .expect("invariant: committed entries above applying are held")
    }

    /// The latest snapshot: the unstable one if a leader just sent it, else the stored one.
    pub fn snapshot(&self) -> Snapshot {
        match &self.unstable_snapshot {
            Some(snapshot) => snapshot.clone(),
            None => self
                .storage
                .snapshot()
                .expect("invariant: storage answers snapshot"),
        }
    }

    /// The largest index at or below `index` whose term is at most `term` (or the first index
    /// whose term is unknown): the fast back-off search of dissertation §5.3, used on both
    /// sides, so that one round trip skips a whole term of conflicting entries.
    pub fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> LogIndex {
        let mut at = index.min(self.last_index());
        // Bounded by the log length: each step moves one entry back.
        loop {
            match self.term(at) {
                Ok(t) if t > term && at > LogIndex::ZERO => at = at.prev(),
                _ => return at,
            }
        }
    }

    /// Checks the invariants listed in the module documentation.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        let last = self.last_index();
        if !(self.applied <= self.applying
            && self.applying <= self.committed
            && self.committed <= last)
        {
            return Err(InvariantError::CursorsOutOfOrder {
                applied: self.applied,
                applying: self.applying,
                committed: self.committed,
                last,
            });
        }
        if self.persisted > last {
            return Err(InvariantError::PersistedBeyondLast {
                persisted: self.persisted,
                last,
            });
        }
        let (first, snapshot) = (self.first_index(), self.snapshot_index());
        if first > snapshot.next() {
            return Err(InvariantError::LogStartsAfterSnapshot { first, snapshot });
        }
        if snapshot > self.committed {
            return Err(InvariantError::SnapshotBeyondCommit {
                snapshot,
                committed: self.committed,
            });
        }
        for (position, e) in self.unstable.iter().enumerate() {
            if e.index != self.unstable_offset.plus(position as u64) {
                return Err(InvariantError::UnstableEntryMisplaced {
                    position,
                    index: e.index,
                });
            }
        }
        if let Some(snapshot) = &self.unstable_snapshot
            && snapshot.metadata.index.next() != self.unstable_offset
        {
            return Err(InvariantError::UnstableSnapshotNotAdjacent);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::membership::Configuration;
    use crate::core::message::{EntryPayload, SnapshotMetadata};
    use crate::core::storage::MemStorage;
    use crate::core::types::NodeId;

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Noop,
        }
    }

    /// A log over bootstrap storage (snapshot at 1/t1) holding entries 2..=4 of term 2.
    fn log() -> RaftLog<MemStorage> {
        let config = Configuration::with_voters([NodeId(1)]);
        let mut storage = MemStorage::new_with_configuration(config);
        storage.append(&[e(2, 2), e(3, 2), e(4, 2)]);
        let mut init = storage.initial_state().unwrap();
        init.hard_state.commit = LogIndex(2);
        RaftLog::new(storage, &init, LogIndex(1))
    }

    #[test]
    fn a_duplicate_append_never_truncates_what_a_later_one_added() {
        let mut l = log();
        assert_eq!(
            l.maybe_append(LogIndex(1), Term(1), &[e(2, 2)]),
            Some((LogIndex(2), None))
        );
        assert_eq!(l.last_index(), LogIndex(4), "entries 3 and 4 are kept");
        l.check_invariants().unwrap();
    }

    #[test]
    fn a_conflict_truncates_from_the_first_differing_entry() {
        let mut l = log();
        let got = l.maybe_append(LogIndex(2), Term(2), &[e(3, 3)]);
        assert_eq!(got, Some((LogIndex(3), Some(LogIndex(3)))));
        assert_eq!(l.last_index(), LogIndex(3));
        assert_eq!(l.term(LogIndex(3)), Ok(Term(3)));
        assert_eq!(
            l.persisted,
            LogIndex(2),
            "the overwritten entry is no longer durable"
        );
        assert_eq!(l.take_unstable_entries(), vec![e(3, 3)]);
        l.check_invariants().unwrap();
    }

    #[test]
    fn the_consistency_check_refuses_a_mismatched_previous_entry() {
        let mut l = log();
        assert_eq!(l.maybe_append(LogIndex(4), Term(3), &[e(5, 3)]), None);
        assert_eq!(l.maybe_append(LogIndex(6), Term(2), &[e(7, 2)]), None);
    }

    #[test]
    fn entries_truncated_after_being_handed_out_are_not_marked_durable() {
        let mut l = log();
        l.append(&[e(5, 2), e(6, 2)]);
        assert_eq!(l.take_unstable_entries().len(), 2);
        // While the driver persists 5 and 6, a new leader overwrites 6.
        l.maybe_append(LogIndex(5), Term(2), &[e(6, 3)]);
        l.persisted_handed(None);
        assert_eq!(l.persisted, LogIndex(5));
        assert_eq!(
            l.take_unstable_entries(),
            vec![e(6, 3)],
            "6 is written again"
        );
    }

    #[test]
    fn a_log_over_a_catch_up_tail_starts_its_cursors_at_the_snapshot() {
        // Given storage holding entries 2..=8, compacted to a snapshot at 6 keeping a tail of
        // four entries, whose saved commit index (1) trails the snapshot,
        let config = Configuration::with_voters([NodeId(1)]);
        let mut storage = MemStorage::new_with_configuration(config.clone());
        storage.append(&(2..=8).map(|i| e(i, 2)).collect::<Vec<_>>());
        let metadata = SnapshotMetadata {
            index: LogIndex(6),
            term: Term(2),
            configuration: config,
        };
        storage.compact_keeping(
            Snapshot {
                metadata,
                data: bytes::Bytes::new(),
            },
            4,
        );
        let init = storage.initial_state().unwrap();
        assert_eq!(init.hard_state.commit, LogIndex(1));
        // when a log starts over it with nothing known applied,
        let l = RaftLog::new(storage, &init, LogIndex::ZERO);
        // then the tail is held, but commit and applied start at the snapshot, not before the
        // tail: no entry the snapshot covers is handed to the application again.
        assert_eq!(l.first_index(), LogIndex(3));
        assert_eq!(l.term(LogIndex(2)), Ok(Term(2)));
        assert_eq!(l.snapshot_index(), LogIndex(6));
        assert_eq!((l.committed, l.applied), (LogIndex(6), LogIndex(6)));
        assert!(
            l.next_committed_entries(l.last_index(), u64::MAX)
                .is_empty()
        );
        l.check_invariants().unwrap();
    }

    #[test]
    fn fast_back_off_finds_the_last_entry_of_an_older_term() {
        let mut l = log();
        l.append(&[e(5, 4), e(6, 4)]);
        assert_eq!(l.find_conflict_by_term(LogIndex(6), Term(3)), LogIndex(4));
        assert_eq!(l.find_conflict_by_term(LogIndex(6), Term(4)), LogIndex(6));
        assert_eq!(l.find_conflict_by_term(LogIndex(9), Term(1)), LogIndex(1));
    }
}
