//! The [`Storage`] conformance suite: one set of scenarios that every implementation must
//! pass, written once against the trait's contract (see `storage`'s module docs) and run
//! against each implementation by [`storage_conformance_tests!`] (`MemStorage` in
//! `core::storage`, the node's `WalLogStore` in `node::store`).
//!
//! The scenarios check what the core relies on and nothing an implementation may choose: a
//! store may keep a longer catch-up tail than asked (the WAL drops whole segments only), so
//! compaction is checked against the contract's bounds, not against one first index.
//!
//! Each implementation writes through its own interface (the core only reads storage), so a
//! [`Harness`] adapts it: it founds a storage, appends, sets the hard state, installs a
//! leader's snapshot and compacts, each as a driver following the `Ready` contract would.

use bytes::Bytes;

use super::errors::StorageError;
use super::membership::{ConfChange, ConfChangeKind, Configuration};
use super::message::{Entry, EntryPayload, HardState, Snapshot, SnapshotMetadata};
use super::storage::Storage;
use super::types::{LogIndex, NodeId, Term};

/// An implementation under test, with its write side.
pub(crate) trait Harness {
    /// The storage the core reads.
    type Storage: Storage;

    /// A storage of a new cluster with `configuration`: the bootstrap snapshot at index 1,
    /// term 1, and the hard state term 1, no vote, commit 1 (as `MemStorage::new_with_configuration`).
    fn founded(configuration: Configuration) -> Self;

    /// What the core reads.
    fn storage(&self) -> &Self::Storage;

    /// Appends contiguous entries, discarding every held entry at or after the first one's
    /// index.
    fn append(&mut self, entries: &[Entry]);

    /// Persists a hard state.
    fn set_hard_state(&mut self, hard_state: &HardState);

    /// Installs a snapshot received from a leader: the log restarts after it.
    fn install_snapshot(&mut self, snapshot: &Snapshot);

    /// Compacts the log to a snapshot the local state machine took, keeping a catch-up tail
    /// of at least `tail` entries it covers (where still held).
    fn compact(&mut self, metadata: &SnapshotMetadata, tail: u64);
}

/// Generates one `#[test]` per scenario of this module for the [`Harness`] given.
macro_rules! storage_conformance_tests {
    ($harness:ty) => {
        $crate::core::storage_conformance::storage_conformance_tests!(@each $harness;
            a_founded_storage_starts_after_its_bootstrap_snapshot,
            appended_entries_read_back_with_their_terms,
            an_append_replaces_the_suffix_from_its_first_index,
            reads_outside_the_log_are_refused_naming_its_bounds,
            the_byte_budget_stops_a_read_early_but_never_before_the_first_entry,
            configuration_entries_are_those_a_full_read_holds,
            the_hard_state_reads_back_as_persisted,
            compaction_keeps_the_snapshot_term_and_at_least_the_tail_asked_for,
            a_compaction_never_brings_back_what_an_earlier_one_dropped,
            a_leaders_snapshot_replaces_the_log_and_appends_continue_it
        );
    };
    (@each $harness:ty; $($scenario:ident),+) => {
        $(
            #[test]
            fn $scenario() {
                $crate::core::storage_conformance::$scenario::<$harness>();
            }
        )+
    };
}
pub(crate) use storage_conformance_tests;

/// The membership every scenario founds its storage with.
fn members() -> Configuration {
    Configuration::with_voters([NodeId(1), NodeId(2), NodeId(3)])
}

/// An entry whose payload depends on its index: a command of `index % 50` bytes, a no-op
/// every 7th, a configuration change every 11th, so that reads cover every kind and size.
fn entry(index: u64, term: u64) -> Entry {
    let payload = if index.is_multiple_of(11) {
        EntryPayload::ConfChange(ConfChange::single(
            ConfChangeKind::AddLearner,
            NodeId(index),
        ))
    } else if index.is_multiple_of(7) {
        EntryPayload::Noop
    } else {
        EntryPayload::Normal(Bytes::from(vec![index as u8; (index % 50) as usize]))
    };
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload,
    }
}

fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indexes.map(|index| entry(index, term)).collect()
}

fn metadata(index: u64, term: u64) -> SnapshotMetadata {
    SnapshotMetadata {
        index: LogIndex(index),
        term: Term(term),
        configuration: members(),
    }
}

/// A founded storage holding entries 2..=`last` of term 2, committed up to `last`.
fn with_entries<H: Harness>(last: u64) -> H {
    let mut h = H::founded(members());
    h.append(&entries(2..=last, 2));
    h.set_hard_state(&HardState {
        term: Term(2),
        vote: Some(NodeId(1)),
        commit: LogIndex(last),
    });
    h
}

/// Everything from `first_index()` on, read in one call.
fn all<S: Storage>(s: &S) -> Vec<Entry> {
    let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
    s.entries(first, last.next(), u64::MAX).unwrap()
}

/// The contract's bounds on the log as held after a compaction to `snapshot` that was asked
/// to keep `tail` entries: returns the first index.
fn check_compacted<S: Storage>(s: &S, snapshot: &SnapshotMetadata, tail: u64) -> LogIndex {
    let first = s.first_index().unwrap();
    assert_eq!(s.snapshot_index(), Ok(snapshot.index));
    assert!(
        first <= snapshot.index.next(),
        "first index {first} past the snapshot"
    );
    assert!(
        first.0 <= (snapshot.index.0 + 1).saturating_sub(tail).max(2),
        "first index {first}: fewer than {tail} entries kept behind the snapshot at {}",
        snapshot.index
    );
    assert_eq!(s.term(snapshot.index), Ok(snapshot.term));
    assert!(
        s.term(first.prev()).is_ok(),
        "the term before {first} is answered"
    );
    assert_eq!(
        s.entries(first.prev(), s.last_index().unwrap().next(), u64::MAX),
        Err(StorageError::Compacted {
            requested: first.prev(),
            first
        })
    );
    if first.0 >= 2 && first.prev().prev() != snapshot.index {
        assert_eq!(
            s.term(first.prev().prev()),
            Err(StorageError::Compacted {
                requested: first.prev().prev(),
                first
            })
        );
    }
    first
}

pub(crate) fn a_founded_storage_starts_after_its_bootstrap_snapshot<H: Harness>() {
    // Given a storage founded with a membership,
    let h = H::founded(members());
    let s = h.storage();
    // then it starts after the bootstrap snapshot, whose term answers for index 1,
    let initial = s.initial_state().unwrap();
    assert_eq!(initial.snapshot_metadata, metadata(1, 1));
    assert_eq!(
        initial.hard_state,
        HardState {
            term: Term(1),
            vote: None,
            commit: LogIndex(1)
        }
    );
    assert_eq!(s.snapshot().unwrap().metadata, metadata(1, 1));
    assert_eq!(s.snapshot_index(), Ok(LogIndex(1)));
    assert_eq!(s.first_index(), Ok(LogIndex(2)));
    assert_eq!(s.last_index(), Ok(LogIndex(1)));
    assert_eq!(s.term(LogIndex(1)), Ok(Term(1)));
    // and it holds no entry: an empty range reads empty, anything else is out of the log.
    assert_eq!(s.entries(LogIndex(2), LogIndex(2), u64::MAX), Ok(vec![]));
    assert_eq!(
        s.entries(LogIndex(2), LogIndex(3), u64::MAX),
        Err(StorageError::Unavailable {
            requested: LogIndex(2),
            last: LogIndex(1)
        })
    );
    assert_eq!(
        s.term(LogIndex(2)),
        Err(StorageError::Unavailable {
            requested: LogIndex(2),
            last: LogIndex(1)
        })
    );
    assert_eq!(
        s.term(LogIndex(0)),
        Err(StorageError::Compacted {
            requested: LogIndex(0),
            first: LogIndex(2)
        })
    );
}

pub(crate) fn appended_entries_read_back_with_their_terms<H: Harness>() {
    // Given entries 2..=30 appended in three batches of different terms,
    let mut h = H::founded(members());
    let mut written = entries(2..=10, 1);
    written.extend(entries(11..=20, 2));
    written.extend(entries(21..=30, 4));
    for batch in written.chunks(10) {
        h.append(batch);
    }
    let s = h.storage();
    // then every entry reads back as written, whole or in any sub-range, with its term.
    assert_eq!(s.first_index(), Ok(LogIndex(2)));
    assert_eq!(s.last_index(), Ok(LogIndex(30)));
    assert_eq!(all(s), written);
    assert_eq!(
        s.entries(LogIndex(9), LogIndex(23), u64::MAX),
        Ok(written[7..21].to_vec())
    );
    for e in &written {
        assert_eq!(s.term(e.index), Ok(e.term), "term of {}", e.index);
    }
}

pub(crate) fn an_append_replaces_the_suffix_from_its_first_index<H: Harness>() {
    // Given entries 2..=10 of term 2, not all committed,
    let mut h = H::founded(members());
    h.append(&entries(2..=10, 2));
    // when a new leader's entries 8..=9 of term 3 are appended,
    h.append(&entries(8..=9, 3));
    let s = h.storage();
    // then they replace 8..=10, and 10 is gone.
    assert_eq!(s.last_index(), Ok(LogIndex(9)));
    assert_eq!(
        s.entries(LogIndex(7), LogIndex(10), u64::MAX),
        Ok(vec![entry(7, 2), entry(8, 3), entry(9, 3)])
    );
    assert_eq!(
        s.term(LogIndex(10)),
        Err(StorageError::Unavailable {
            requested: LogIndex(10),
            last: LogIndex(9)
        })
    );
}

pub(crate) fn reads_outside_the_log_are_refused_naming_its_bounds<H: Harness>() {
    // Given entries 2..=20 compacted to 10 with no tail asked for,
    let mut h = with_entries::<H>(20);
    h.compact(&metadata(10, 2), 0);
    let s = h.storage();
    let first = s.first_index().unwrap();
    // when reads reach below the first index or past the last,
    // then they are refused with the bound they crossed.
    assert_eq!(
        s.entries(first.prev(), LogIndex(15), u64::MAX),
        Err(StorageError::Compacted {
            requested: first.prev(),
            first
        })
    );
    assert_eq!(
        s.entries(LogIndex(15), LogIndex(22), u64::MAX),
        Err(StorageError::Unavailable {
            requested: LogIndex(21),
            last: LogIndex(20)
        })
    );
    assert_eq!(
        s.term(LogIndex(21)),
        Err(StorageError::Unavailable {
            requested: LogIndex(21),
            last: LogIndex(20)
        })
    );
    // A range ending right after the last entry, or empty, is inside.
    assert_eq!(
        s.entries(LogIndex(15), LogIndex(21), u64::MAX)
            .map(|e| e.len()),
        Ok(6)
    );
    assert_eq!(s.entries(LogIndex(21), LogIndex(21), u64::MAX), Ok(vec![]));
}

pub(crate) fn the_byte_budget_stops_a_read_early_but_never_before_the_first_entry<H: Harness>() {
    // Given entries 2..=20 of sizes that differ (the budget counts `Entry::size_bytes`, the
    // measure of the core's byte limits),
    let h = with_entries::<H>(20);
    let s = h.storage();
    let expected = entries(2..=20, 2);
    let sizes: Vec<u64> = expected.iter().map(Entry::size_bytes).collect();
    let read = |budget: u64| s.entries(LogIndex(2), LogIndex(21), budget).unwrap();
    // then a budget too small for anything still returns the first entry,
    assert_eq!(read(0), expected[..1]);
    assert_eq!(read(1), expected[..1]);
    // a budget of exactly k entries' bytes returns those k, one byte less returns k - 1,
    for k in 2..=6 {
        let budget: u64 = sizes[..k].iter().sum();
        assert_eq!(read(budget), expected[..k], "budget of {k} entries");
        assert_eq!(
            read(budget - 1),
            expected[..k - 1],
            "budget short of {k} entries"
        );
    }
    // and an ample budget returns the whole range.
    assert_eq!(read(sizes.iter().sum()), expected);
    assert_eq!(read(u64::MAX), expected);
}

pub(crate) fn configuration_entries_are_those_a_full_read_holds<H: Harness>() {
    // Given entries 2..=40, some of them configuration changes,
    let h = with_entries::<H>(40);
    let s = h.storage();
    // then the configuration entries of a range are exactly those of a full read of it,
    let changes: Vec<Entry> = entries(5..=35, 2)
        .into_iter()
        .filter(|e| matches!(e.payload, EntryPayload::ConfChange(_)))
        .collect();
    assert_eq!(changes.len(), 3);
    assert_eq!(
        s.conf_change_entries(LogIndex(5), LogIndex(36)),
        Ok(changes)
    );
    // and a range outside the log is refused as a full read refuses it.
    assert_eq!(
        s.conf_change_entries(LogIndex(5), LogIndex(42)),
        s.entries(LogIndex(5), LogIndex(42), u64::MAX)
    );
}

pub(crate) fn the_hard_state_reads_back_as_persisted<H: Harness>() {
    // Given a storage with entries, when a new term, a vote and a commit are persisted,
    let mut h = with_entries::<H>(10);
    let hard_state = HardState {
        term: Term(5),
        vote: Some(NodeId(3)),
        commit: LogIndex(8),
    };
    h.set_hard_state(&hard_state);
    // then the initial state is that hard state with the bootstrap snapshot's metadata.
    let initial = h.storage().initial_state().unwrap();
    assert_eq!(initial.hard_state, hard_state);
    assert_eq!(initial.snapshot_metadata, metadata(1, 1));
}

pub(crate) fn compaction_keeps_the_snapshot_term_and_at_least_the_tail_asked_for<H: Harness>() {
    // Given entries 2..=300 of term 2, committed,
    let mut h = with_entries::<H>(300);
    // when compacted to a snapshot at 200 keeping a tail of 30,
    let snapshot = metadata(200, 2);
    h.compact(&snapshot, 30);
    let s = h.storage();
    // then the snapshot is recorded, at least 30 entries it covers are still served and the
    // one before them answers its term, and everything after it is untouched.
    let first = check_compacted(s, &snapshot, 30);
    assert_eq!(s.initial_state().unwrap().snapshot_metadata, snapshot);
    assert_eq!(s.snapshot().unwrap().metadata, snapshot);
    assert_eq!(s.last_index(), Ok(LogIndex(300)));
    assert_eq!(all(s), entries(first.0..=300, 2));
}

pub(crate) fn a_compaction_never_brings_back_what_an_earlier_one_dropped<H: Harness>() {
    // Given entries 2..=300 compacted to 200 with a short tail,
    let mut h = with_entries::<H>(300);
    h.compact(&metadata(200, 2), 2);
    let before = check_compacted(h.storage(), &metadata(200, 2), 2);
    // when compacted again to 250 asking for a tail longer than what is held,
    h.compact(&metadata(250, 2), 1_000);
    // then the log starts no earlier than before, and still serves from there.
    let after = check_compacted(h.storage(), &metadata(250, 2), 0);
    assert!(after >= before, "{after} < {before}");
    assert_eq!(all(h.storage()), entries(after.0..=300, 2));
}

pub(crate) fn a_leaders_snapshot_replaces_the_log_and_appends_continue_it<H: Harness>() {
    // Given entries 2..=100 compacted to 60 with a tail,
    let mut h = with_entries::<H>(100);
    h.compact(&metadata(60, 2), 10);
    // when a leader's snapshot at 150 of term 3 is installed,
    let snapshot = Snapshot {
        metadata: metadata(150, 3),
        data: Bytes::from_static(b"state"),
    };
    h.install_snapshot(&snapshot);
    {
        let s = h.storage();
        // then the log restarts right after it, with no tail, and the commit reaches it.
        assert_eq!(s.first_index(), Ok(LogIndex(151)));
        assert_eq!(s.last_index(), Ok(LogIndex(150)));
        assert_eq!(s.snapshot_index(), Ok(LogIndex(150)));
        assert_eq!(s.term(LogIndex(150)), Ok(Term(3)));
        assert_eq!(
            s.term(LogIndex(149)),
            Err(StorageError::Compacted {
                requested: LogIndex(149),
                first: LogIndex(151)
            })
        );
        let initial = s.initial_state().unwrap();
        assert_eq!(initial.snapshot_metadata, snapshot.metadata);
        assert_eq!(initial.hard_state.commit, LogIndex(150));
        assert_eq!(s.snapshot().unwrap().metadata, snapshot.metadata);
    }
    // and entries appended after it continue it.
    h.append(&entries(151..=153, 3));
    assert_eq!(all(h.storage()), entries(151..=153, 3));
    assert_eq!(h.storage().term(LogIndex(150)), Ok(Term(3)));
}
