//! Durable Raft state for the node: the [`LogStore`] trait the driver persists a `Ready`
//! through, and [`WalLogStore`], its implementation over the `wal` crate.
//!
//! Layout in the WAL's directory:
//! - each Raft entry is one WAL record in the segment files (the record's index and term are
//!   the entry's; the payload is the postcard encoding of its [`EntryPayload`]);
//! - the WAL's two-slot hard-state file (`hardstate`) holds a [`DurableState`]: the Raft hard
//!   state, the metadata of the latest snapshot and the cluster id, saved together so that they
//!   can never disagree after a crash;
//! - snapshot *data* lives with the state machine's snapshot files, reached through
//!   [`SnapshotFiles`].
//!
//! Format of the hard-state slot: the 4 bytes [`DURABLE_STATE_MAGIC`], one byte
//! [`DURABLE_STATE_FORMAT_VERSION`], then the postcard encoding of [`DurableState`] and nothing
//! after it. Anything else (an older RaftKV's bare postcard without a cluster id, another
//! version, bytes that do not decode) is refused with [`StoreError::HardStateFormat`], naming
//! the file: a node must not guess at its term, vote or cluster.
//!
//! Opening is split from creating. [`WalLogStore::create`] writes the first durable state into
//! a blank WAL ([`WalLogStore::is_blank`]); [`WalLogStore::open`] requires one and never starts
//! afresh, because a node that forgot its term and vote could vote twice in a term, and one
//! that forgot its log would silently lose acknowledged writes.
//!
//! Compaction keeps a catch-up tail (etcd's catch-up entries): [`LogStore::compact`] records
//! the snapshot but drops only the WAL segments wholly below the last
//! [`WalLogStore::set_catchup_entries`] entries it covers, and the store serves whatever the
//! WAL still holds at or below the snapshot's index, so that a follower a little behind the
//! snapshot is sent entries, not the snapshot. The tail is not part of the durable state: the
//! snapshot metadata stays the truth, and the tail is whatever the WAL holds. `first_index()`
//! is the WAL's first index + 1 (the WAL's first entry answers `term(first_index() - 1)`), never
//! above `snapshot.index + 1`. A tail is served only if the WAL's entry at the snapshot's index
//! has the snapshot's term (the entries below it are then the ones the snapshot covers). A
//! snapshot received from a leader resets the log after it: no tail then.
//!
//! Invariants, checked at open (each breach a typed error naming the file or directory):
//! - the log continues the snapshot: the WAL's first index is at most `snapshot.index + 1`,
//!   its last index at least `snapshot.index`, and every entry in `[first_index, last_index]`
//!   is readable (entries at or below the snapshot's index are the catch-up tail);
//! - the log reaches the saved commit index: `max(wal last index, snapshot.index) >=
//!   saved commit`. A commit index is saved only after the entries it covers are synced (and
//!   is clamped to the last index), so a log shorter than it lost a segment or a tail that was
//!   acknowledged to clients.
//!
//! The saved commit index trails the in-memory one: saving it costs two fsyncs, so
//! [`LogStore::persist`] never saves for a change of commit alone (it is relearned from the
//! leader); [`LogStore::persist_commit`] saves it when the driver asks, and every save made
//! for another reason carries the current commit along.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wal::{Entry as WalEntry, FileSystem, HARD_STATE_FILE_NAME, Wal};

use crate::core::{
    Entry, EntryPayload, HardState, InitialState, LogIndex, Snapshot, SnapshotMetadata, Storage,
    StorageError, Term,
};
use crate::node::{ClusterId, SnapshotFiles};

/// The first byte of an [`EntryPayload`] as this store encodes it: postcard writes an enum's
/// variant index as a varint, one byte for the payload's three variants. Passes over the whole
/// log read it to skip the commands without decoding them
/// (`payload_tags_are_the_first_byte_of_the_encoding` keeps these in step with the enum).
const PAYLOAD_TAG_NORMAL: u8 = 1;
/// See [`PAYLOAD_TAG_NORMAL`].
const PAYLOAD_TAG_CONF_CHANGE: u8 = 2;
/// Room, beyond a payload's [`Entry::size_bytes`], for its postcard tag and length varint:
/// the capacity an entry's encoding starts with (a hint; more only costs a reallocation).
const PAYLOAD_OVERHEAD_BYTES: usize = 16;

/// The first byte of the command an encoded `Normal` payload carries, read without decoding
/// it (the tag, the command's length as a varint, then its bytes); `None` for other payloads
/// and for an empty command.
fn command_first_byte(raw: &[u8]) -> Option<u8> {
    let (&tag, rest) = raw.split_first()?;
    if tag != PAYLOAD_TAG_NORMAL {
        return None;
    }
    let length_bytes = rest.iter().position(|byte| byte & 0x80 == 0)? + 1;
    if rest[..length_bytes] == [0] {
        return None;
    }
    rest.get(length_bytes).copied()
}

/// The first bytes of every durable state in the hard-state slot ("RaftKV durable state"):
/// what tells this format from anything else a slot may hold. An older RaftKV's bare postcard
/// can never begin with them (its second byte is the vote's option tag, 0 or 1, not `K`).
pub const DURABLE_STATE_MAGIC: [u8; 4] = *b"RKDS";

/// The durable-state format this build writes, and the only one it reads. Version 1: the
/// magic, this byte, then the postcard encoding of [`DurableState`] (hard state, snapshot
/// metadata, cluster id).
pub const DURABLE_STATE_FORMAT_VERSION: u8 = 1;

/// How many entries at or below a snapshot's index [`LogStore::compact`] keeps by default (at
/// least; whole WAL segments go, so it may keep more), so that a follower lagging at most this
/// far behind the snapshot catches up from the log instead of receiving the whole snapshot.
/// Named after etcd's `SnapshotCatchUpEntries`, whose default is the same.
pub const SNAPSHOT_CATCHUP_ENTRIES_DEFAULT: u64 = 5_000;

/// How many leading bytes of an unrecognised hard state an error shows: enough to tell an
/// older format or zeros from garbage, short enough for one log line.
const FOUND_BYTES_SHOWN: usize = 8;

/// Why the bytes in the hard-state slot are not a durable state this build reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HardStateFormatError {
    /// The slot does not begin with [`DURABLE_STATE_MAGIC`].
    #[error(
        "it does not begin with the durable-state magic \"RKDS\" (it begins {}, {} bytes in all): \
         it was written by a RaftKV older than format version 1 (bare postcard, no cluster id) \
         or is not a RaftKV hard state",
        hex(.first_bytes), .len
    )]
    NoMagic {
        /// The slot's first bytes (at most a few).
        first_bytes: Vec<u8>,
        /// The slot's length in bytes.
        len: usize,
    },
    /// The magic is there but the format version is not one this build reads.
    #[error(
        "it is durable-state format version {version}, and this build reads only version \
         {DURABLE_STATE_FORMAT_VERSION} (was it written by a newer RaftKV?)"
    )]
    UnknownVersion {
        /// The version byte found.
        version: u8,
    },
    /// Magic and version are right but what follows is not a [`DurableState`].
    #[error(
        "it is a durable state of format version {DURABLE_STATE_FORMAT_VERSION} that does not decode: {reason}"
    )]
    Undecodable {
        /// What is wrong.
        reason: String,
    },
}

/// Lowercase hex bytes separated by spaces, for error messages.
fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "with nothing".to_string();
    }
    let digits: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    digits.join(" ")
}

/// What an error says the log holds: its first and last indexes, or that it is empty.
fn describe_log(first: LogIndex, last: LogIndex) -> String {
    if last >= first {
        format!("holds entries {} to {}", first.0, last.0)
    } else if first == LogIndex(1) {
        "holds no entries".to_string()
    } else {
        format!(
            "holds no entries but starts at index {} (it held entries once)",
            first.0
        )
    }
}

/// The advice that closes every error about a damaged data directory.
const RESTORE_ADVICE: &str = "Restore the data directory from a backup, or remove this node \
     from its cluster and add it back with an empty data directory.";

/// The message of [`StoreError::HardStateMissing`]: a blank directory is a caller's mistake
/// (open instead of create), anything else is a lost hard state.
fn describe_missing(path: &Path, dir: &Path, first: LogIndex, last: LogIndex) -> String {
    let log = describe_log(first, last);
    if last < first && first == LogIndex(1) {
        format!(
            "the hard-state file {} is missing or blank and the write-ahead log in {} {log}: \
             this data directory was never initialised. Create the store (a new node) instead \
             of opening it; if this node did hold data here, its hard state was lost. \
             {RESTORE_ADVICE}",
            path.display(),
            dir.display()
        )
    } else {
        format!(
            "the hard-state file {} is missing or blank while the write-ahead log in {} {log}: \
             the node's term, vote, commit index and cluster id are lost, and starting afresh \
             could vote twice in one term or forget acknowledged writes. {RESTORE_ADVICE}",
            path.display(),
            dir.display()
        )
    }
}

/// What the node could not persist or read. Any of these stops the node: the disk is not to be
/// trusted any more (an fsync failure is never retried), or the data directory is not what the
/// node left there.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write-ahead log failed.
    #[error("write-ahead log: {0}")]
    Wal(#[from] wal::WalError),
    /// An entry read back from the log does not decode.
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
    Snapshot(#[from] crate::node::SnapshotFilesError),
    /// The hard-state slot holds something other than a durable state this build reads.
    #[error("the hard-state file {} cannot be read: {found}. {RESTORE_ADVICE}", .path.display())]
    HardStateFormat {
        /// The hard-state file.
        path: PathBuf,
        /// What was found instead.
        found: HardStateFormatError,
    },
    /// [`WalLogStore::open`] found no hard state: never created, or lost.
    #[error("{}", describe_missing(.path, .dir, *.first_index, *.last_index))]
    HardStateMissing {
        /// The hard-state file.
        path: PathBuf,
        /// The WAL's directory.
        dir: PathBuf,
        /// The WAL's first index.
        first_index: LogIndex,
        /// The WAL's last index (`first_index - 1` when it holds no entries).
        last_index: LogIndex,
    },
    /// [`WalLogStore::create`] was given a WAL that already holds state.
    #[error(
        "cannot create a new store in {}: it {} a hard state and {}. Open it instead; to start \
         this node afresh, remove it from its cluster, empty the directory and add it back",
        .dir.display(), if *.has_hard_state { "has" } else { "has no" },
        describe_log(*.first_index, *.last_index)
    )]
    NotBlank {
        /// The WAL's directory.
        dir: PathBuf,
        /// Whether the WAL holds a hard state.
        has_hard_state: bool,
        /// The WAL's first index.
        first_index: LogIndex,
        /// The WAL's last index (`first_index - 1` when it holds no entries).
        last_index: LogIndex,
    },
    /// The log does not start right after the snapshot: entries the snapshot does not cover
    /// are missing.
    #[error(
        "the write-ahead log in {} {} but the snapshot recorded in {} ends at index {}: the \
         entries that continue it are missing (a segment was deleted?). {RESTORE_ADVICE}",
        .dir.display(), describe_log(*.first_index, *.last_index), .path.display(), .snapshot.0
    )]
    LogDoesNotContinueSnapshot {
        /// The WAL's directory.
        dir: PathBuf,
        /// The hard-state file, which records the snapshot.
        path: PathBuf,
        /// The WAL's first index.
        first_index: LogIndex,
        /// The WAL's last index.
        last_index: LogIndex,
        /// The last index the snapshot covers.
        snapshot: LogIndex,
    },
    /// Asked to replace entries at or below the saved commit index: a leader broke Raft's
    /// rules (committed entries are never overwritten). The node stops rather than obey.
    #[error(
        "refusing to overwrite the committed log in {dir} from index {from} (index {commit} is committed): the leader that sent it broke Raft's rules; this node stops"
    )]
    OverwriteCommitted {
        /// The WAL directory.
        dir: PathBuf,
        /// The first index that would be overwritten.
        from: LogIndex,
        /// The saved commit index.
        commit: LogIndex,
    },
    /// The log ends before the saved commit index: committed (acknowledged) entries are gone.
    #[error(
        "the write-ahead log in {} ends at index {} but index {} was committed (recorded in \
         {}): a segment is missing or was truncated. {RESTORE_ADVICE}",
        .dir.display(), .last_index.0, .commit.0, .path.display()
    )]
    LogTooShort {
        /// The WAL's directory.
        dir: PathBuf,
        /// The hard-state file, which records the commit index.
        path: PathBuf,
        /// How far the log reaches (its last entry, or the snapshot's index if later).
        last_index: LogIndex,
        /// The saved commit index.
        commit: LogIndex,
    },
}

impl StoreError {
    /// Whether this failure is a full disk: a write that may be retried once space is freed
    /// (see [`wal::WalError::is_no_space`]), unlike every other failure here, which stops
    /// the node. The store is then as before the call (see [`WalLogStore`]'s `save`): a
    /// poisoned log is never reported as this, whatever the disk said.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::Wal(e) if e.is_no_space())
    }
}

/// The disk that holds the log has less free space than the store keeps in reserve (or none
/// at all): new entries are refused before they enter the log, until space is freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSpace {
    /// Bytes free on the disk when last looked.
    pub available: u64,
    /// The reserve the store keeps ([`WalLogStore::set_free_space_reserve`]); 0 when an
    /// append found the disk full with no reserve set.
    pub reserve: u64,
}

impl std::fmt::Display for NoSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        if self.reserve == 0 {
            write!(
                f,
                "the disk of the data directory is full ({:.1} MiB free)",
                mib(self.available)
            )
        } else {
            write!(
                f,
                "the disk of the data directory has {:.1} MiB free, under the reserve of {:.1} MiB (storage.free_space_reserve)",
                mib(self.available),
                mib(self.reserve)
            )
        }
    }
}

impl std::error::Error for NoSpace {}

/// The fsync that ends a [`LogStore::persist_deferring_sync`], taken out of the store so that
/// it can block a thread other than the node loop's. It needs no access to the store; its
/// outcome goes back through [`LogStore::finish_sync`].
#[must_use = "the entries are durable only once the sync has run and finish_sync has its outcome"]
pub struct DeferredSync {
    fsync: Box<dyn FnOnce() -> wal::Result<()> + Send>,
    upto: LogIndex,
}

impl DeferredSync {
    /// Runs the fsync (blocking until the disk has the entries) and returns its outcome.
    pub fn run(self) -> SyncDone {
        SyncDone {
            upto: self.upto,
            outcome: (self.fsync)(),
        }
    }
}

impl std::fmt::Debug for DeferredSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredSync")
            .field("upto", &self.upto)
            .finish_non_exhaustive()
    }
}

/// The outcome of a [`DeferredSync`], for [`LogStore::finish_sync`].
#[derive(Debug)]
#[must_use = "hand it to LogStore::finish_sync"]
pub struct SyncDone {
    upto: LogIndex,
    outcome: wal::Result<()>,
}

/// The durable Raft state the driver writes, in the order the `Ready` contract requires.
pub trait LogStore: Storage + Send + 'static {
    /// Persists one `Ready`'s durable part: first the snapshot (replacing the whole log), then
    /// the entries (discarding any held entry at or after the first one's index), then the hard
    /// state. Everything is durable when this returns, except a change of the commit index
    /// alone, which is kept in memory until [`LogStore::persist_commit`] or the next save.
    fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StoreError> {
        if let Some(sync) = self.persist_deferring_sync(snapshot, entries, hard_state)? {
            self.finish_sync(sync.run())?;
        }
        Ok(())
    }

    /// [`LogStore::persist`], except that it may stop short of the last fsync, that of the
    /// appended entries, and return it instead: the caller runs it (on any thread) and hands
    /// its outcome to [`LogStore::finish_sync`], and only then is the `Ready` durable. Nothing
    /// else may touch the store in between. `None`: everything is durable already.
    fn persist_deferring_sync(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<Option<DeferredSync>, StoreError>;

    /// Records the outcome of a [`DeferredSync`]: its entries are durable, or, if the fsync
    /// failed, the store is poisoned and the error stops the node (an fsync is never retried).
    fn finish_sync(&mut self, done: SyncDone) -> Result<(), StoreError>;

    /// Saves the hard state with this commit index if it is higher than the one last saved
    /// (one hard-state save: two slot writes and two fsyncs), so that a restart knows how far
    /// its log must reach and refuses a log that lost committed entries. The driver calls it
    /// periodically and at shutdown, never on the hot path. `commit` must not exceed the last
    /// index (entries are synced before they count as committed here); a higher one is
    /// clamped to it.
    fn persist_commit(&mut self, commit: LogIndex) -> Result<(), StoreError>;

    /// Records that `snapshot` (already saved by the state machine) covers the log up to its
    /// index, and drops what the log no longer needs.
    fn compact(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StoreError>;

    /// The metadata of the latest snapshot.
    fn snapshot_metadata(&self) -> &SnapshotMetadata;

    /// Whether the disk has room for new entries: `Err` when its free space is under the
    /// store's reserve. The driver asks before a leader takes a proposal into its log, so
    /// that a filling disk refuses writes up front instead of failing appends. The default,
    /// for a store that cannot tell, always has room.
    fn check_free_space(&self) -> Result<(), NoSpace> {
        Ok(())
    }

    /// Bytes free on the log's disk, if the store can tell (for what the node reports while a
    /// write is held for lack of space). The default cannot tell.
    fn free_space(&self) -> Option<u64> {
        None
    }
}

/// The hard-state slot's content: the Raft hard state, the latest snapshot's metadata and the
/// cluster this node belongs to. There is no default: a durable state always names its cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState {
    /// Term, vote and commit.
    pub hard_state: HardState,
    /// What the latest snapshot covers, including the membership as of its index.
    pub snapshot: SnapshotMetadata,
    /// The cluster this node's state belongs to, fixed when the store is created.
    pub cluster_id: ClusterId,
}

impl DurableState {
    /// The state of a node that has seen nothing yet in `cluster_id`: term zero, no vote,
    /// nothing committed, an empty snapshot (index zero, no members). A founding node sets the
    /// snapshot's configuration to the bootstrap membership before creating its store.
    pub fn new(cluster_id: ClusterId) -> DurableState {
        DurableState {
            hard_state: HardState::default(),
            snapshot: SnapshotMetadata::default(),
            cluster_id,
        }
    }

    /// The slot's bytes: magic, version, postcard (see the module docs).
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&DURABLE_STATE_MAGIC);
        bytes.push(DURABLE_STATE_FORMAT_VERSION);
        postcard::to_io(self, &mut bytes).expect("a DurableState always encodes into a Vec");
        bytes
    }

    /// Parses the slot's bytes, which must be exactly what [`DurableState::encode`] writes.
    fn decode(bytes: &[u8]) -> Result<DurableState, HardStateFormatError> {
        let Some(rest) = bytes.strip_prefix(&DURABLE_STATE_MAGIC) else {
            return Err(HardStateFormatError::NoMagic {
                first_bytes: bytes[..bytes.len().min(FOUND_BYTES_SHOWN)].to_vec(),
                len: bytes.len(),
            });
        };
        let Some((&version, body)) = rest.split_first() else {
            return Err(HardStateFormatError::Undecodable {
                reason: "it ends after the magic, before the version byte".to_string(),
            });
        };
        if version != DURABLE_STATE_FORMAT_VERSION {
            return Err(HardStateFormatError::UnknownVersion { version });
        }
        let (state, trailing) = postcard::take_from_bytes::<DurableState>(body).map_err(|e| {
            HardStateFormatError::Undecodable {
                reason: e.to_string(),
            }
        })?;
        if !trailing.is_empty() {
            return Err(HardStateFormatError::Undecodable {
                reason: format!("{} bytes follow the durable state", trailing.len()),
            });
        }
        Ok(state)
    }
}

/// [`LogStore`] over a [`Wal`].
pub struct WalLogStore<F: FileSystem> {
    wal: Wal<F>,
    /// The state as the node knows it; its commit index may be ahead of the saved one.
    state: DurableState,
    /// The commit index in the hard-state file: what a restart requires the log to reach.
    saved_commit: LogIndex,
    snapshots: Arc<dyn SnapshotFiles>,
    /// Free bytes to keep on the disk (0: no check); see [`LogStore::check_free_space`].
    free_space_reserve: u64,
    /// Entries at or below the snapshot's index that compaction keeps; see
    /// [`WalLogStore::set_catchup_entries`].
    catchup_entries: u64,
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

/// The path of `wal`'s hard-state file, for errors.
fn hard_state_path<F: FileSystem>(wal: &Wal<F>) -> PathBuf {
    wal.dir().join(HARD_STATE_FILE_NAME)
}

impl<F: FileSystem> WalLogStore<F> {
    /// Whether `wal` has never been used: no hard state, no entries, and a log that starts at
    /// index 1 (an empty log starting later was reset after a snapshot, so it held state once).
    /// A blank WAL is [`WalLogStore::create`]d; any other is [`WalLogStore::open`]ed.
    pub fn is_blank(wal: &Wal<F>) -> bool {
        wal.hard_state().is_none() && wal.is_empty() && wal.first_index() == 1
    }

    /// Creates the store in a blank WAL ([`WalLogStore::is_blank`]), writing `initial` (the
    /// bootstrap membership and the new cluster's id, or an empty membership and the id of the
    /// cluster this node will join) durably before anything else. Refuses any other WAL with
    /// [`StoreError::NotBlank`]: its state must be opened, never overwritten.
    pub fn create(
        wal: Wal<F>,
        snapshots: Arc<dyn SnapshotFiles>,
        initial: DurableState,
    ) -> Result<Self, StoreError> {
        debug_assert_ne!(initial.cluster_id.0, 0, "a cluster id is never zero");
        if !Self::is_blank(&wal) {
            return Err(StoreError::NotBlank {
                dir: wal.dir().to_path_buf(),
                has_hard_state: wal.hard_state().is_some(),
                first_index: LogIndex(wal.first_index()),
                last_index: LogIndex(wal.last_index()),
            });
        }
        let mut store = WalLogStore {
            wal,
            state: initial,
            saved_commit: LogIndex::ZERO,
            snapshots,
            free_space_reserve: 0,
            catchup_entries: SNAPSHOT_CATCHUP_ENTRIES_DEFAULT,
        };
        store.save_state()?;
        store.finish_snapshot_install()?;
        store.check()?;
        Ok(store)
    }

    /// Opens the store over a WAL that holds its durable state, and checks that the log is
    /// whole: it continues the snapshot and reaches the saved commit index. A WAL without a
    /// hard state is refused ([`StoreError::HardStateMissing`]) whether or not it holds
    /// entries: starting afresh over a lost hard state could vote twice in one term or forget
    /// acknowledged writes, so that is an operator's decision, never the store's.
    pub fn open(wal: Wal<F>, snapshots: Arc<dyn SnapshotFiles>) -> Result<Self, StoreError> {
        let Some(bytes) = wal.hard_state() else {
            return Err(StoreError::HardStateMissing {
                path: hard_state_path(&wal),
                dir: wal.dir().to_path_buf(),
                first_index: LogIndex(wal.first_index()),
                last_index: LogIndex(wal.last_index()),
            });
        };
        let state = DurableState::decode(bytes).map_err(|found| StoreError::HardStateFormat {
            path: hard_state_path(&wal),
            found,
        })?;
        let mut store = WalLogStore {
            wal,
            saved_commit: state.hard_state.commit,
            state,
            snapshots,
            free_space_reserve: 0,
            catchup_entries: SNAPSHOT_CATCHUP_ENTRIES_DEFAULT,
        };
        // Before any repair touches the log: a log that lost committed entries is evidence,
        // and the repair below could remove more of it.
        store.check_reaches_saved_commit()?;
        store.finish_snapshot_install()?;
        store.check()?;
        Ok(store)
    }

    /// A crash while installing a snapshot can leave the new metadata saved but the log not
    /// yet restarted after it: finish the restart (the snapshot's data was saved first).
    ///
    /// The old log may also reach past the snapshot with another entry at its index (a
    /// follower whose divergent log the leader's snapshot replaced): that log is another
    /// history, and is reset too rather than served after the snapshot.
    fn finish_snapshot_install(&mut self) -> Result<(), StoreError> {
        let snap = &self.state.snapshot;
        let diverges = self
            .wal
            .term(snap.index.0)
            .is_some_and(|term| term != snap.term.0);
        if self.wal.last_index() < snap.index.0 || diverges {
            self.wal.reset(snap.index.0 + 1)?;
        }
        Ok(())
    }

    /// The cluster whose state `wal` holds, read from its hard state without opening the
    /// store (a caller that must set up the snapshot files of that cluster before the store
    /// can be opened). Fails as [`WalLogStore::open`] would on a missing or unreadable state.
    pub fn cluster_id_in(wal: &Wal<F>) -> Result<ClusterId, StoreError> {
        let Some(bytes) = wal.hard_state() else {
            return Err(StoreError::HardStateMissing {
                path: hard_state_path(wal),
                dir: wal.dir().to_path_buf(),
                first_index: LogIndex(wal.first_index()),
                last_index: LogIndex(wal.last_index()),
            });
        };
        DurableState::decode(bytes)
            .map(|state| state.cluster_id)
            .map_err(|found| StoreError::HardStateFormat {
                path: hard_state_path(wal),
                found,
            })
    }

    /// The cluster this store's state belongs to.
    pub fn cluster_id(&self) -> ClusterId {
        self.state.cluster_id
    }

    /// Whether the store was created fresh (no entries, no snapshot, term zero).
    pub fn is_fresh(&self) -> bool {
        self.state.hard_state.term == Term::ZERO
            && self.state.snapshot.index == LogIndex::ZERO
            && self.wal.last_index() == 0
    }

    /// Keeps `bytes` free on the log's disk: below that, [`LogStore::check_free_space`]
    /// refuses new entries (0, the default, never refuses).
    pub fn set_free_space_reserve(&mut self, bytes: u64) {
        self.free_space_reserve = bytes;
    }

    /// Keeps at least the last `entries` entries a snapshot covers when compacting (the
    /// catch-up tail; 0 keeps none). Default [`SNAPSHOT_CATCHUP_ENTRIES_DEFAULT`]. Takes effect
    /// at the next compaction; what the WAL already dropped is not brought back.
    pub fn set_catchup_entries(&mut self, entries: u64) {
        self.catchup_entries = entries;
    }

    /// Where the catch-up tail starts: the WAL's first index, if the WAL still holds entries
    /// at or below the snapshot's index that lead up to it. Its entry at the snapshot's index
    /// must carry the snapshot's term: a crash while installing a leader's snapshot can leave
    /// an old log there (see `finish_snapshot_install`), which is not the one the snapshot
    /// covers and must not be served as if it were.
    fn tail_start(&self) -> Option<LogIndex> {
        let snapshot = &self.state.snapshot;
        let first = self.wal.first_index();
        let continues = self.wal.term(snapshot.index.0) == Some(snapshot.term.0);
        (first <= snapshot.index.0 && continues).then_some(LogIndex(first))
    }

    /// The WAL's counters, for metrics.
    pub fn wal_metrics(&self) -> Arc<wal::WalMetrics> {
        self.wal.metrics()
    }

    /// How far the log reaches: its last entry, or the snapshot's index if that is later.
    fn reach(&self) -> LogIndex {
        LogIndex(self.wal.last_index()).max(self.state.snapshot.index)
    }

    /// The log reaches the saved commit index (see the module docs).
    fn check_reaches_saved_commit(&self) -> Result<(), StoreError> {
        if self.reach() < self.saved_commit {
            return Err(StoreError::LogTooShort {
                dir: self.wal.dir().to_path_buf(),
                path: hard_state_path(&self.wal),
                last_index: self.reach(),
                commit: self.saved_commit,
            });
        }
        Ok(())
    }

    /// Both invariants of the module docs.
    fn check(&self) -> Result<(), StoreError> {
        let snap = self.state.snapshot.index.0;
        if self.wal.last_index() < snap || self.wal.first_index() > snap + 1 {
            return Err(StoreError::LogDoesNotContinueSnapshot {
                dir: self.wal.dir().to_path_buf(),
                path: hard_state_path(&self.wal),
                first_index: LogIndex(self.wal.first_index()),
                last_index: LogIndex(self.wal.last_index()),
                snapshot: self.state.snapshot.index,
            });
        }
        self.check_reaches_saved_commit()
    }

    /// Saves the state with the current commit index (clamped to the log's reach, which it
    /// only passes if the core is wrong).
    fn save_state(&mut self) -> Result<(), StoreError> {
        self.save(self.state.clone())
    }

    /// Saves `next` as the durable state, its commit index clamped to how far the log reaches
    /// under `next`'s snapshot, and makes it the store's state only once that is durable. A
    /// failed save (a full disk above all, which the driver retries) leaves `self.state` as
    /// last saved, so that the retry compares against what is on disk and saves again: a term
    /// or vote is never taken as durable, nor a message sent on it, before it is.
    fn save(&mut self, next: DurableState) -> Result<(), StoreError> {
        let reach = LogIndex(self.wal.last_index()).max(next.snapshot.index);
        let commit = next.hard_state.commit.min(reach);
        self.save_with_commit(next, commit)
    }

    /// [`WalLogStore::save`] with `commit` (at most the log's reach under `next`) saved as the
    /// commit index, whatever `next` holds in memory.
    fn save_with_commit(&mut self, next: DurableState, commit: LogIndex) -> Result<(), StoreError> {
        debug_assert!(
            commit <= LogIndex(self.wal.last_index()).max(next.snapshot.index),
            "saving commit {commit} past the log's reach"
        );
        let mut durable = next.clone();
        durable.hard_state.commit = commit;
        let bytes = durable.encode();
        // The other side of the disk: what is written must read back as what was meant.
        debug_assert_eq!(DurableState::decode(&bytes).as_ref(), Ok(&durable));
        self.wal.save_hard_state(&bytes)?;
        self.state = next;
        self.saved_commit = commit;
        Ok(())
    }

    fn decode_entry(index: u64, term: u64, raw: &[u8]) -> Result<Entry, StoreError> {
        let payload: EntryPayload =
            postcard::from_bytes(raw).map_err(|err| decode_error("entry", index, err))?;
        Ok(Entry {
            term: Term(term),
            index: LogIndex(index),
            payload,
        })
    }

    /// Whether `[low, high)` is a readable range of the log, and not empty.
    fn check_range(&self, low: LogIndex, high: LogIndex) -> Result<bool, StorageError> {
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
        Ok(low < high)
    }

    /// The entries in `[low, high)` whose encoded payload `keep` takes, in order, stopping
    /// once they would pass `max_bytes` as the core counts them ([`Entry::size_bytes`]; at
    /// least one entry is taken). Only the entries taken are decoded, so a pass that keeps a
    /// few entries of a long tail costs a read of the tail and not a copy of every command in
    /// it.
    fn entries_where(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        if !self.check_range(low, high)? {
            return Ok(out);
        }
        let mut size_bytes = 0u64;
        let mut failed = None;
        self.wal
            .scan(low.0, high.0, |index, term, raw| {
                if !keep(raw) {
                    return ControlFlow::Continue(());
                }
                match Self::decode_entry(index, term, raw) {
                    Ok(entry) => {
                        size_bytes = size_bytes.saturating_add(entry.size_bytes());
                        if !out.is_empty() && size_bytes > max_bytes {
                            return ControlFlow::Break(());
                        }
                        out.push(entry);
                        ControlFlow::Continue(())
                    }
                    Err(e) => {
                        failed = Some(e);
                        ControlFlow::Break(())
                    }
                }
            })
            .map_err(other)?;
        match failed {
            Some(e) => Err(other(e)),
            None => Ok(out),
        }
    }

    /// The entries in `[low, high)` that carry an application command whose first byte is
    /// `tag`, in order. A restarting server finds its peers' address records this way before
    /// it applies anything, without decoding the commands around them.
    pub fn commands_tagged(
        &self,
        low: LogIndex,
        high: LogIndex,
        tag: u8,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries_where(low, high, u64::MAX, |raw| {
            command_first_byte(raw) == Some(tag)
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
        self.entries_where(low, high, max_bytes, |_| true)
    }

    fn conf_change_entries(
        &self,
        low: LogIndex,
        high: LogIndex,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries_where(low, high, u64::MAX, |raw| {
            raw.first() == Some(&PAYLOAD_TAG_CONF_CHANGE)
        })
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let snap = &self.state.snapshot;
        if index == snap.index {
            return Ok(snap.term);
        }
        let first = self.first_index()?;
        if index < first.prev() {
            return Err(StorageError::Compacted {
                requested: index,
                first,
            });
        }
        // After the snapshot, or in the catch-up tail (down to the WAL's first entry).
        self.wal
            .term(index.0)
            .map(Term)
            .ok_or(StorageError::Unavailable {
                requested: index,
                last: LogIndex(self.wal.last_index()),
            })
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        // The WAL's first entry is not served: it answers the term of the one before the first.
        Ok(match self.tail_start() {
            Some(wal_first) => wal_first.next(),
            None => self.state.snapshot.index.next(),
        })
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        Ok(LogIndex(self.wal.last_index()).max(self.state.snapshot.index))
    }

    /// The latest snapshot's metadata only: its data stays in the snapshot files, from which
    /// the transport streams it (see [`SnapshotFiles::open`]).
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(Snapshot {
            metadata: self.state.snapshot.clone(),
            data: bytes::Bytes::new(),
        })
    }

    fn snapshot_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.state.snapshot.index)
    }
}

impl<F: FileSystem> LogStore for WalLogStore<F> {
    fn persist_deferring_sync(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<Option<DeferredSync>, StoreError> {
        // Term and vote must be durable before any message that depends on them leaves;
        // the commit index alone need not be (it is relearned from the leader), so a
        // change of commit alone costs no fsync: `persist_commit` saves it off the hot
        // path, and a save made here for term or vote carries it along.
        //
        // `self.state` holds the term and vote last saved (a failed save changes nothing),
        // so a retry after a full disk saves them again instead of passing them as durable.
        let must_save = hard_state.is_some_and(|hs| {
            hs.term != self.state.hard_state.term || hs.vote != self.state.hard_state.vote
        });
        let mut deferred = None;
        if let Some(snapshot) = snapshot {
            // The snapshot's data is durable before the log forgets what it replaces, and the
            // new metadata is durable before the log restarts after it. The data was received
            // and checked by the transport; here it is kept.
            self.snapshots.keep_received(&snapshot.metadata)?;
            let mut next = self.state.clone();
            next.snapshot = snapshot.metadata.clone();
            next.hard_state.commit = next.hard_state.commit.max(snapshot.metadata.index);
            self.save(next)?;
            self.wal.reset(snapshot.metadata.index.0 + 1)?;
        }
        if let Some(first) = entries.first() {
            // Raft never overwrites a committed entry; a leader that asks for it broke Raft's
            // rules, and obeying would also leave, after a crash before the sync below, a log
            // shorter than the saved commit index. Refused, which stops the node (fail-stop,
            // as etcd panics on a conflict below its commit index).
            if first.index <= self.saved_commit {
                return Err(StoreError::OverwriteCommitted {
                    dir: self.wal.dir().to_path_buf(),
                    from: first.index,
                    commit: self.saved_commit,
                });
            }
            if first.index.0 <= self.wal.last_index() {
                self.wal.truncate_suffix(first.index.0)?;
            }
            let records: Vec<WalEntry> = entries
                .iter()
                .map(|e| WalEntry {
                    index: e.index.0,
                    term: e.term.0,
                    // Sized up front (a payload's bytes plus its tag and length): grown
                    // from empty, each entry's encoding reallocated as it went.
                    payload: postcard::to_extend(
                        &e.payload,
                        Vec::with_capacity(
                            usize::try_from(e.size_bytes()).unwrap_or(0) + PAYLOAD_OVERHEAD_BYTES,
                        ),
                    )
                    .expect("an entry payload always encodes"),
                })
                .collect();
            self.wal.append(&records)?;
            if must_save {
                // The hard state below is saved with a commit index the log must reach once
                // durable: the entries first, here. Rare (a new term or vote), so kept simple.
                self.wal.sync()?;
            } else {
                deferred = self.wal.begin_sync()?.map(|pending| DeferredSync {
                    upto: LogIndex(pending.upto()),
                    fsync: Box::new(move || pending.run()),
                });
            }
        }
        if let Some(hs) = hard_state {
            if must_save {
                let mut next = self.state.clone();
                next.hard_state = hs.clone();
                self.save(next)?;
            } else {
                self.state.hard_state.commit = hs.commit;
            }
        }
        debug_assert!(self.check().is_ok(), "{:?}", self.check());
        Ok(deferred)
    }

    fn finish_sync(&mut self, done: SyncDone) -> Result<(), StoreError> {
        self.wal.finish_sync(done.upto.0, done.outcome)?;
        Ok(())
    }

    fn persist_commit(&mut self, commit: LogIndex) -> Result<(), StoreError> {
        debug_assert!(
            commit <= self.reach(),
            "commit {commit} past the log's reach {}",
            self.reach()
        );
        // A commit index past the log would make the next open refuse a whole log.
        let commit = commit.min(self.reach());
        if commit <= self.saved_commit {
            return Ok(());
        }
        let mut next = self.state.clone();
        next.hard_state.commit = next.hard_state.commit.max(commit);
        self.save_with_commit(next, commit)
    }

    fn compact(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StoreError> {
        if snapshot.index <= self.state.snapshot.index {
            return Ok(());
        }
        let mut next = self.state.clone();
        next.snapshot = snapshot.clone();
        self.save(next)?;
        // The tail is the last `catchup_entries` entries the snapshot covers, plus the one
        // before them, whose term the consistency check of the first one sent needs. Only
        // segments wholly below that go.
        let upto = match self.catchup_entries {
            0 => snapshot.index.0,
            n => snapshot.index.0.saturating_sub(n.saturating_add(1)),
        };
        self.wal.compact_prefix(upto)?;
        Ok(())
    }

    fn snapshot_metadata(&self) -> &SnapshotMetadata {
        &self.state.snapshot
    }

    fn check_free_space(&self) -> Result<(), NoSpace> {
        let reserve = self.free_space_reserve;
        if reserve == 0 {
            return Ok(());
        }
        match self.wal.available_space() {
            Ok(available) if available < reserve => Err(NoSpace { available, reserve }),
            // A disk that cannot say how full it is refuses nothing here: a real lack of
            // space still shows in the append, which the driver waits out.
            Ok(_) | Err(_) => Ok(()),
        }
    }

    fn free_space(&self) -> Option<u64> {
        self.wal.available_space().ok()
    }
}

#[cfg(test)]
mod tests {

    use bytes::Bytes;
    use wal::segment::{SEGMENT_HEADER_BYTES, parse_segment_file_name, segment_file_name};
    use wal::{FileHandle, HARD_STATE_SLOT_BYTES, SEGMENT_BYTES_MIN, SimFs, WalConfig};

    use super::*;
    use crate::core::{Configuration, NodeId};

    /// Where every test keeps its WAL.
    const WAL_DIR: &str = "/n/wal";
    /// The cluster every test's store belongs to.
    const CLUSTER: ClusterId = ClusterId(0x5eed);
    /// Bytes of each entry's payload in the damage tests: with the smallest segments, about
    /// fifteen entries fill one, so a few hundred entries span many segments.
    const PAYLOAD_BYTES: usize = 200;

    /// Snapshot files kept in memory.
    type MemFiles = crate::node::MemSnapshotFiles;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Normal(Bytes::from(format!("e{index}"))),
        }
    }

    /// An entry as big as [`PAYLOAD_BYTES`].
    fn big_entry(index: u64) -> Entry {
        Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Normal(Bytes::from(vec![index as u8; PAYLOAD_BYTES])),
        }
    }

    fn open_wal(fs: &SimFs) -> Wal<SimFs> {
        let config = WalConfig {
            segment_bytes: SEGMENT_BYTES_MIN,
        };
        Wal::open(fs.clone(), WAL_DIR, config).unwrap()
    }

    fn dyn_files(files: &Arc<MemFiles>) -> Arc<dyn SnapshotFiles> {
        files.clone()
    }

    fn create(fs: &SimFs, files: &Arc<MemFiles>) -> WalLogStore<SimFs> {
        WalLogStore::create(open_wal(fs), dyn_files(files), DurableState::new(CLUSTER)).unwrap()
    }

    fn try_open(fs: &SimFs, files: &Arc<MemFiles>) -> Result<WalLogStore<SimFs>, StoreError> {
        WalLogStore::open(open_wal(fs), dyn_files(files))
    }

    fn open(fs: &SimFs, files: &Arc<MemFiles>) -> WalLogStore<SimFs> {
        try_open(fs, files).unwrap()
    }

    /// Why opening failed; panics if it did not.
    fn open_refused(fs: &SimFs, files: &Arc<MemFiles>) -> StoreError {
        try_open(fs, files).err().expect("open must refuse")
    }

    fn hard_state_file() -> PathBuf {
        Path::new(WAL_DIR).join(HARD_STATE_FILE_NAME)
    }

    /// The first index of the newest segment file.
    fn last_segment_first_index(fs: &SimFs) -> u64 {
        fs.list_files(Path::new(WAL_DIR))
            .unwrap()
            .iter()
            .filter_map(|name| parse_segment_file_name(name))
            .max()
            .expect("a WAL has a segment")
    }

    /// A store holding entries `1..=last` in many small segments, with `commit` saved;
    /// closed cleanly. Returns the first index of its newest segment.
    fn store_with_committed_entries(
        fs: &SimFs,
        files: &Arc<MemFiles>,
        last: u64,
        commit: u64,
    ) -> u64 {
        let mut store = create(fs, files);
        for chunk in (1..=last).collect::<Vec<_>>().chunks(10) {
            let entries: Vec<Entry> = chunk.iter().map(|&i| big_entry(i)).collect();
            store.persist(None, &entries, None).unwrap();
        }
        store.persist_commit(LogIndex(commit)).unwrap();
        drop(store);
        last_segment_first_index(fs)
    }

    /// A `WalLogStore` on a simulated disk with the smallest segments (so that compaction
    /// drops some), written as the driver writes it: through `LogStore`.
    struct WalHarness {
        store: WalLogStore<SimFs>,
        files: Arc<MemFiles>,
    }

    impl crate::core::storage_conformance::Harness for WalHarness {
        type Storage = WalLogStore<SimFs>;

        fn founded(configuration: Configuration) -> WalHarness {
            let files = Arc::new(MemFiles::accepting_all());
            let initial = DurableState {
                hard_state: HardState {
                    term: Term(1),
                    vote: None,
                    commit: LogIndex(1),
                },
                snapshot: SnapshotMetadata {
                    index: LogIndex(1),
                    term: Term(1),
                    configuration,
                },
                cluster_id: CLUSTER,
            };
            let wal = open_wal(&SimFs::new(1));
            let store = WalLogStore::create(wal, dyn_files(&files), initial).unwrap();
            WalHarness { store, files }
        }

        fn storage(&self) -> &WalLogStore<SimFs> {
            &self.store
        }

        fn append(&mut self, entries: &[Entry]) {
            self.store.persist(None, entries, None).unwrap();
        }

        fn set_hard_state(&mut self, hard_state: &HardState) {
            self.store.persist(None, &[], Some(hard_state)).unwrap();
        }

        fn install_snapshot(&mut self, snapshot: &Snapshot) {
            self.files
                .receive_whole(&snapshot.metadata, &snapshot.data)
                .expect("the files accept any data");
            self.store.persist(Some(snapshot), &[], None).unwrap();
        }

        fn compact(&mut self, metadata: &SnapshotMetadata, tail: u64) {
            self.store.set_catchup_entries(tail);
            LogStore::compact(&mut self.store, metadata).unwrap();
        }
    }

    mod conformance {
        crate::core::storage_conformance::storage_conformance_tests!(super::WalHarness);
    }

    #[test]
    fn payload_tags_are_the_first_byte_of_the_encoding() {
        // Given one payload of each kind, encoded as `persist` writes them,
        let encode = |payload: &EntryPayload| postcard::to_stdvec(payload).unwrap();
        let change = EntryPayload::ConfChange(crate::core::ConfChange::single(
            crate::core::ConfChangeKind::AddVoter,
            NodeId(2),
        ));
        // then the first byte tells the kind, and a command's first byte is found undecoded,
        // whatever the length of its length (a 300-byte command takes two varint bytes).
        assert_eq!(encode(&change)[0], PAYLOAD_TAG_CONF_CHANGE);
        assert_ne!(encode(&EntryPayload::Noop)[0], PAYLOAD_TAG_CONF_CHANGE);
        for command in [vec![7u8], vec![9u8; 300]] {
            let raw = encode(&EntryPayload::Normal(Bytes::from(command.clone())));
            assert_eq!(raw[0], PAYLOAD_TAG_NORMAL);
            assert_eq!(command_first_byte(&raw), Some(command[0]));
        }
        assert_eq!(
            command_first_byte(&encode(&EntryPayload::Normal(Bytes::new()))),
            None
        );
        assert_eq!(command_first_byte(&encode(&EntryPayload::Noop)), None);
        assert_eq!(command_first_byte(&encode(&change)), None);
    }

    #[test]
    fn filtered_reads_of_the_log_keep_exactly_what_a_full_read_would() {
        // Given a log mixing commands with two tags, no-ops and a configuration change,
        let fs = SimFs::new(1);
        let files = Arc::new(MemFiles::accepting_all());
        let mut store = create(&fs, &files);
        let payloads = [
            EntryPayload::Noop,
            EntryPayload::Normal(Bytes::from_static(b"\x01kv")),
            EntryPayload::Normal(Bytes::from_static(b"\x02member")),
            EntryPayload::ConfChange(crate::core::ConfChange::single(
                crate::core::ConfChangeKind::AddLearner,
                NodeId(3),
            )),
            EntryPayload::Normal(Bytes::new()),
            EntryPayload::Normal(Bytes::from(vec![2u8; 200])),
        ];
        let entries: Vec<Entry> = payloads
            .iter()
            .enumerate()
            .map(|(i, payload)| Entry {
                term: Term(1),
                index: LogIndex(i as u64 + 1),
                payload: payload.clone(),
            })
            .collect();
        store.persist(None, &entries, None).unwrap();
        let (low, high) = (LogIndex(1), LogIndex(entries.len() as u64 + 1));
        // when the tail is read filtered, then it equals the full read filtered.
        let all = store.entries(low, high, u64::MAX).unwrap();
        assert_eq!(all, entries);
        let changes: Vec<Entry> = all
            .iter()
            .filter(|e| matches!(e.payload, EntryPayload::ConfChange(_)))
            .cloned()
            .collect();
        assert_eq!(store.conf_change_entries(low, high).unwrap(), changes);
        let tagged: Vec<Entry> = all
            .iter()
            .filter(|e| matches!(&e.payload, EntryPayload::Normal(c) if c.first() == Some(&2)))
            .cloned()
            .collect();
        assert_eq!(tagged.len(), 2);
        assert_eq!(store.commands_tagged(low, high, 2).unwrap(), tagged);
        // and a range outside the log is refused as a full read refuses it.
        assert!(store.commands_tagged(low, high.next(), 2).is_err());
    }

    #[test]
    fn entries_and_term_and_vote_survive_a_crash_but_a_commit_alone_costs_no_save() {
        let fs = SimFs::new(1);
        let files = Arc::new(MemFiles::accepting_all());
        let mut store = create(&fs, &files);
        assert!(store.is_fresh());
        let hs = HardState {
            term: Term(2),
            vote: Some(NodeId(7)),
            commit: LogIndex(1),
        };
        let entries: Vec<Entry> = (1..=5).map(|i| entry(i, 2)).collect();
        store.persist(None, &entries, Some(&hs)).unwrap();
        // A commit-only change is not saved (it is relearned from the leader): no fsync.
        let later = HardState {
            commit: LogIndex(5),
            ..hs.clone()
        };
        let syncs = fs.sync_count();
        store.persist(None, &[], Some(&later)).unwrap();
        assert_eq!(fs.sync_count(), syncs, "a commit alone costs no fsync");
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
    fn a_store_created_with_a_cluster_id_reopens_with_it() {
        // Given a blank WAL,
        let fs = SimFs::new(4);
        let files = Arc::new(MemFiles::accepting_all());
        assert!(WalLogStore::is_blank(&open_wal(&fs)));
        // when a store is created in it for a cluster and the disk crashes,
        let store = create(&fs, &files);
        assert_eq!(store.cluster_id(), CLUSTER);
        drop(store);
        fs.crash();
        // then it is no longer blank and reopens with that cluster id.
        assert!(!WalLogStore::is_blank(&open_wal(&fs)));
        let store = open(&fs, &files);
        assert_eq!(store.cluster_id(), CLUSTER);
        assert_eq!(
            store.initial_state().unwrap().hard_state,
            HardState::default()
        );
    }

    #[test]
    fn create_refuses_a_wal_that_already_holds_a_hard_state_or_entries() {
        let fs = SimFs::new(5);
        let files = Arc::new(MemFiles::accepting_all());
        drop(create(&fs, &files));
        let refused = |fs: &SimFs| {
            let other = DurableState::new(ClusterId(0xbad));
            WalLogStore::create(open_wal(fs), dyn_files(&files), other)
                .err()
                .expect("create must refuse")
        };
        // Given a WAL with a hard state and no entries, when a store is created in it, then
        // creation is refused naming the directory, and the hard state is untouched.
        let err = refused(&fs);
        assert!(
            matches!(
                &err,
                StoreError::NotBlank {
                    has_hard_state: true,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(WAL_DIR), "{err}");
        assert_eq!(open(&fs, &files).cluster_id(), CLUSTER);
        // Given a WAL with entries whose hard state was lost, then creation is refused too.
        let mut store = open(&fs, &files);
        store.persist(None, &[entry(1, 1)], None).unwrap();
        drop(store);
        fs.remove_file(&hard_state_file()).unwrap();
        fs.sync_dir(Path::new(WAL_DIR)).unwrap();
        let err = refused(&fs);
        assert!(
            matches!(
                &err,
                StoreError::NotBlank {
                    has_hard_state: false,
                    last_index: LogIndex(1),
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(WAL_DIR), "{err}");
    }

    #[test]
    fn open_refuses_a_log_whose_last_segment_was_truncated_to_its_header() {
        // Given a store with entries 1..=300 in many segments and commit 298 saved,
        let fs = SimFs::new(6);
        let files = Arc::new(MemFiles::accepting_all());
        let newest = store_with_committed_entries(&fs, &files, 300, 298);
        assert!(
            newest > 1 && newest < 298,
            "the newest segment starts at {newest}"
        );
        // when the newest segment is cut back to its header (as by a bad restore),
        let path = Path::new(WAL_DIR).join(segment_file_name(newest));
        let file = fs.open(&path).unwrap();
        file.set_len(SEGMENT_HEADER_BYTES).unwrap();
        file.sync_data().unwrap();
        // then open refuses, naming the directory, where the log ends and the commit index.
        let err = open_refused(&fs, &files);
        assert!(
            matches!(
                &err,
                StoreError::LogTooShort { last_index, commit: LogIndex(298), .. }
                    if *last_index == LogIndex(newest - 1)
            ),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.contains(WAL_DIR), "{message}");
        assert!(message.contains("hardstate"), "{message}");
    }

    #[test]
    fn open_refuses_a_log_whose_last_segment_was_deleted() {
        // Given a store with entries 1..=300 in many segments and commit 298 saved,
        let fs = SimFs::new(7);
        let files = Arc::new(MemFiles::accepting_all());
        let newest = store_with_committed_entries(&fs, &files, 300, 298);
        // when the newest segment is deleted,
        fs.remove_file(&Path::new(WAL_DIR).join(segment_file_name(newest)))
            .unwrap();
        fs.sync_dir(Path::new(WAL_DIR)).unwrap();
        // then open refuses with the log-too-short error naming the directory.
        let err = open_refused(&fs, &files);
        assert!(
            matches!(
                &err,
                StoreError::LogTooShort { last_index, commit: LogIndex(298), .. }
                    if *last_index == LogIndex(newest - 1)
            ),
            "{err}"
        );
        assert!(err.to_string().contains(WAL_DIR), "{err}");
    }

    #[test]
    fn open_refuses_a_lost_hard_state_and_never_starts_afresh() {
        let fs = SimFs::new(8);
        let files = Arc::new(MemFiles::accepting_all());
        store_with_committed_entries(&fs, &files, 40, 40);
        let dir = Path::new(WAL_DIR);
        for damage in ["deleted", "zeroed"] {
            // Given a store with entries, when its hard-state file is deleted or both its
            // slots are zeroed,
            let path = hard_state_file();
            if damage == "deleted" {
                fs.remove_file(&path).unwrap();
                fs.sync_dir(dir).unwrap();
            } else {
                let file = fs.open(&path).unwrap();
                file.write_all_at(&vec![0; 2 * HARD_STATE_SLOT_BYTES as usize], 0)
                    .unwrap();
                file.sync_data().unwrap();
            }
            // then open refuses, naming the hard-state file and how far the log reaches,
            let err = open_refused(&fs, &files);
            assert!(
                matches!(
                    &err,
                    StoreError::HardStateMissing {
                        last_index: LogIndex(40),
                        ..
                    }
                ),
                "{damage}: {err}"
            );
            let message = err.to_string();
            assert!(message.contains("/n/wal/hardstate"), "{damage}: {message}");
            assert!(message.contains("1 to 40"), "{damage}: {message}");
            // and refuses again: it wrote nothing that would let a second try start afresh.
            assert!(matches!(
                open_refused(&fs, &files),
                StoreError::HardStateMissing { .. }
            ));
            assert_eq!(
                open_wal(&fs).last_index(),
                40,
                "{damage}: the log is untouched"
            );
        }
    }

    #[test]
    fn open_refuses_a_blank_wal_instead_of_creating_a_store() {
        let fs = SimFs::new(9);
        let files = Arc::new(MemFiles::accepting_all());
        let err = open_refused(&fs, &files);
        assert!(matches!(&err, StoreError::HardStateMissing { .. }), "{err}");
        assert!(err.to_string().contains("never initialised"), "{err}");
        assert!(WalLogStore::is_blank(&open_wal(&fs)), "open wrote nothing");
    }

    #[test]
    fn a_hard_state_in_another_format_is_refused_naming_the_file() {
        /// The hard state an older RaftKV wrote: bare postcard, no cluster id.
        #[derive(Serialize)]
        struct OldDurableState {
            hard_state: HardState,
            snapshot: SnapshotMetadata,
        }
        let old = OldDurableState {
            hard_state: HardState {
                term: Term(3),
                vote: Some(NodeId(2)),
                commit: LogIndex::ZERO,
            },
            snapshot: SnapshotMetadata::default(),
        };
        let mut newer = DURABLE_STATE_MAGIC.to_vec();
        newer.push(DURABLE_STATE_FORMAT_VERSION + 1);
        let mut garbled = DurableState::new(CLUSTER).encode();
        garbled.truncate(garbled.len() - 1);
        let mut trailing = DurableState::new(CLUSTER).encode();
        trailing.push(0);
        let cases: [(&str, Vec<u8>); 4] = [
            ("older", postcard::to_stdvec(&old).unwrap()),
            ("newer", newer),
            ("cut short", garbled),
            ("trailing bytes", trailing),
        ];
        for (seed, (what, bytes)) in cases.into_iter().enumerate() {
            // Given a WAL whose hard-state slot holds a state in another format,
            let fs = SimFs::new(10 + seed as u64);
            let files = Arc::new(MemFiles::accepting_all());
            let mut wal = open_wal(&fs);
            wal.save_hard_state(&bytes).unwrap();
            drop(wal);
            // when the store opens, then it refuses, naming the file and what it found.
            let err = open_refused(&fs, &files);
            let StoreError::HardStateFormat { path, found } = &err else {
                panic!("{what}: {err}");
            };
            assert_eq!(*path, hard_state_file(), "{what}");
            match what {
                "older" => assert!(
                    matches!(found, HardStateFormatError::NoMagic { .. }),
                    "{found}"
                ),
                "newer" => assert_eq!(
                    *found,
                    HardStateFormatError::UnknownVersion {
                        version: DURABLE_STATE_FORMAT_VERSION + 1
                    }
                ),
                _ => assert!(
                    matches!(found, HardStateFormatError::Undecodable { .. }),
                    "{what}: {found}"
                ),
            }
            assert!(err.to_string().contains("/n/wal/hardstate"), "{err}");
        }
    }

    #[test]
    fn a_persisted_commit_survives_a_crash_and_is_saved_only_when_it_rises() {
        let fs = SimFs::new(20);
        let files = Arc::new(MemFiles::accepting_all());
        let mut store = create(&fs, &files);
        let hs = HardState {
            term: Term(1),
            vote: None,
            commit: LogIndex(8),
        };
        let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1)).collect();
        store.persist(None, &entries, Some(&hs)).unwrap();
        // Given commit 8 persisted, a lower or equal one costs nothing,
        store.persist_commit(LogIndex(8)).unwrap();
        let syncs = fs.sync_count();
        store.persist_commit(LogIndex(8)).unwrap();
        store.persist_commit(LogIndex(3)).unwrap();
        assert_eq!(fs.sync_count(), syncs, "no save for a commit already saved");
        // and when the commit moves on in memory and a new term is saved, it goes along:
        let later = HardState {
            term: Term(2),
            commit: LogIndex(10),
            ..hs.clone()
        };
        store.persist(None, &[], Some(&later)).unwrap();
        let syncs = fs.sync_count();
        store.persist_commit(LogIndex(10)).unwrap();
        assert_eq!(fs.sync_count(), syncs, "the term's save carried commit 10");
        drop(store);
        // when the disk crashes, then the saved commit and everything it covers are there.
        fs.crash();
        let store = open(&fs, &files);
        assert_eq!(store.initial_state().unwrap().hard_state, later);
        assert_eq!(store.last_index().unwrap(), LogIndex(10));
    }

    #[test]
    fn a_persisted_commit_alone_survives_a_crash() {
        let fs = SimFs::new(21);
        let files = Arc::new(MemFiles::accepting_all());
        let mut store = create(&fs, &files);
        let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1)).collect();
        store.persist(None, &entries, None).unwrap();
        // Given commit 7 known only in memory, when it is persisted and the disk crashes,
        let hs = HardState {
            commit: LogIndex(7),
            ..HardState::default()
        };
        store.persist(None, &[], Some(&hs)).unwrap();
        store.persist_commit(LogIndex(7)).unwrap();
        drop(store);
        fs.crash();
        // then it is there after the restart.
        let store = open(&fs, &files);
        assert_eq!(
            store.initial_state().unwrap().hard_state.commit,
            LogIndex(7)
        );
    }

    /// A store holding entries 1..=3 of term 1 with term 1, no vote and commit 2 saved: the
    /// state a vote is then asked of.
    fn store_in_term_1(fs: &SimFs, files: &Arc<MemFiles>) -> (WalLogStore<SimFs>, HardState) {
        let mut store = create(fs, files);
        let hs = HardState {
            term: Term(1),
            vote: None,
            commit: LogIndex(2),
        };
        let entries: Vec<Entry> = (1..=3).map(|i| entry(i, 1)).collect();
        store.persist(None, &entries, Some(&hs)).unwrap();
        (store, hs)
    }

    /// The hard state a vote for node 2 in term 2 saves.
    fn vote_in_term_2(before: &HardState) -> HardState {
        HardState {
            term: Term(2),
            vote: Some(NodeId(2)),
            ..before.clone()
        }
    }

    #[test]
    fn a_vote_whose_save_finds_no_space_is_not_taken_as_saved_and_is_saved_on_the_retry() {
        // The first slot's write failing, or the second's after the first was synced.
        for (seed, slot_writes_before) in [(30, 0), (31, 1)] {
            // Given a store in term 1 with no vote,
            let fs = SimFs::new(seed);
            let files = Arc::new(MemFiles::accepting_all());
            let (mut store, before) = store_in_term_1(&fs, &files);
            let vote = vote_in_term_2(&before);
            // when saving a vote finds the disk full (a short write into a slot),
            fs.fail_writes_for_space(slot_writes_before, 1);
            let err = store.persist(None, &[], Some(&vote)).unwrap_err();
            // then the failure is "no space", the log is not poisoned, and the store still
            // holds the state last saved, so that the driver's retry saves it again (before
            // the fix, the retry found nothing to save and returned Ok: the vote went out
            // unsaved);
            assert!(err.is_no_space(), "{err}");
            assert!(!store.wal.is_poisoned());
            assert_eq!(store.initial_state().unwrap().hard_state, before);
            // when the same persist is retried once space is back, it saves,
            let syncs = fs.sync_count();
            store.persist(None, &[], Some(&vote)).unwrap();
            assert!(
                fs.sync_count() > syncs,
                "the retry saved (slot {slot_writes_before})"
            );
            assert_eq!(store.initial_state().unwrap().hard_state, vote);
            // and after a crash the vote is there.
            drop(store);
            fs.crash();
            let store = open(&fs, &files);
            assert_eq!(store.initial_state().unwrap().hard_state, vote);
        }
    }

    #[test]
    fn a_crash_after_a_save_that_found_no_space_recovers_a_whole_state() {
        for (seed, slot_writes_before) in [(32, 0), (33, 1)] {
            // Given a store in term 1 whose vote's save failed with a short slot write,
            let fs = SimFs::new(seed);
            let files = Arc::new(MemFiles::accepting_all());
            let (mut store, before) = store_in_term_1(&fs, &files);
            let vote = vote_in_term_2(&before);
            fs.fail_writes_for_space(slot_writes_before, 1);
            assert!(store.persist(None, &[], Some(&vote)).is_err());
            // when a retry also fails, on the slot the first try tore (written first now),
            fs.fail_writes_for_space(0, 1);
            assert!(store.persist(None, &[], Some(&vote)).is_err());
            drop(store);
            // and the disk crashes, then the store opens (one slot was always whole) with
            // the state saved before or the vote, never anything else.
            fs.crash();
            let found = open(&fs, &files).initial_state().unwrap().hard_state;
            assert!(
                found == before || found == vote,
                "slot {slot_writes_before}: {found:?}"
            );
        }
    }

    #[test]
    fn a_commit_compaction_or_snapshot_whose_save_finds_no_space_changes_nothing() {
        let fs = SimFs::new(34);
        let files = Arc::new(MemFiles::accepting_all());
        let (mut store, before) = store_in_term_1(&fs, &files);
        let meta = |index: u64| SnapshotMetadata {
            index: LogIndex(index),
            term: Term(1),
            configuration: Configuration::default(),
        };
        // Given a disk on which every write fails for lack of space,
        fs.fail_writes_for_space(0, u32::MAX);
        // when a commit index, a compaction and a received snapshot are saved, each fails as
        // "no space" and leaves the store's state and the log as they were.
        let err = store.persist_commit(LogIndex(3)).unwrap_err();
        assert!(err.is_no_space(), "{err}");
        let err = store.compact(&meta(2)).unwrap_err();
        assert!(err.is_no_space(), "{err}");
        let snapshot = Snapshot {
            metadata: meta(10),
            data: Bytes::new(),
        };
        files
            .receive_whole(&snapshot.metadata, b"state")
            .expect("any data is taken");
        let err = store.persist(Some(&snapshot), &[], None).unwrap_err();
        assert!(err.is_no_space(), "{err}");
        assert_eq!(store.initial_state().unwrap().hard_state, before);
        assert_eq!(*store.snapshot_metadata(), SnapshotMetadata::default());
        assert_eq!(store.last_index().unwrap(), LogIndex(3));
        assert!(!store.wal.is_poisoned());
        // Once space is back, each goes through.
        fs.fail_writes_for_space(0, 0);
        store.persist_commit(LogIndex(3)).unwrap();
        store.compact(&meta(2)).unwrap();
        store.persist(Some(&snapshot), &[], None).unwrap();
        assert_eq!(store.snapshot_metadata().index, LogIndex(10));
    }

    #[test]
    fn a_failed_fsync_of_the_hard_state_poisons_the_log_and_is_never_no_space() {
        // Given a store in term 1, when the fsync of a vote's save fails,
        let fs = SimFs::new(35);
        let files = Arc::new(MemFiles::accepting_all());
        let (mut store, before) = store_in_term_1(&fs, &files);
        fs.fail_next_syncs(1);
        let err = store
            .persist(None, &[], Some(&vote_in_term_2(&before)))
            .unwrap_err();
        // then it is not a retryable failure, the log is poisoned, and a retry fails too.
        assert!(!err.is_no_space(), "{err}");
        assert!(store.wal.is_poisoned());
        assert!(
            store
                .persist(None, &[], Some(&vote_in_term_2(&before)))
                .is_err()
        );
    }

    /// Saves `state` into the WAL's hard-state slot behind the store's back.
    /// A created store holding entries 1..=`last` of term 1.
    fn store_with_entries(fs: &SimFs, files: &Arc<MemFiles>, last: u64) -> WalLogStore<SimFs> {
        let mut store = create(fs, files);
        let entries: Vec<Entry> = (1..=last).map(|i| entry(i, 1)).collect();
        store.persist(None, &entries, None).unwrap();
        store
    }

    fn save_behind_the_store(fs: &SimFs, state: &DurableState) {
        let mut wal = open_wal(fs);
        wal.save_hard_state(&state.encode()).unwrap();
    }

    #[test]
    fn a_crash_between_saving_snapshot_metadata_and_restarting_the_log_is_finished_on_open() {
        let fs = SimFs::new(2);
        let files = Arc::new(MemFiles::accepting_all());
        drop(store_with_entries(&fs, &files, 5));
        // Given the metadata of a snapshot at 20 saved, but the log still ending at 5,
        let meta = SnapshotMetadata {
            index: LogIndex(20),
            term: Term(4),
            configuration: Configuration::default(),
        };
        files.insert(&meta, Bytes::from_static(b"state"));
        let state = DurableState {
            hard_state: HardState {
                commit: LogIndex(20),
                ..HardState::default()
            },
            snapshot: meta.clone(),
            cluster_id: CLUSTER,
        };
        save_behind_the_store(&fs, &state);
        // when the store opens, then the log restarts after the snapshot.
        let store = open(&fs, &files);
        assert_eq!(store.first_index().unwrap(), LogIndex(21));
        assert_eq!(store.last_index().unwrap(), LogIndex(20));
        assert_eq!(store.term(LogIndex(20)).unwrap(), Term(4));
        assert_eq!(store.snapshot().unwrap().metadata, meta);
        assert_eq!(files.data(LogIndex(20)), Some(Bytes::from_static(b"state")));
    }

    #[test]
    fn a_log_short_of_the_commit_is_refused_before_the_snapshot_repair_touches_it() {
        let fs = SimFs::new(22);
        let files = Arc::new(MemFiles::accepting_all());
        drop(store_with_entries(&fs, &files, 5));
        // Given a snapshot at 20 and commit 30 saved, but the log ending at 5,
        let state = DurableState {
            hard_state: HardState {
                commit: LogIndex(30),
                ..HardState::default()
            },
            snapshot: SnapshotMetadata {
                index: LogIndex(20),
                term: Term(1),
                configuration: Configuration::default(),
            },
            cluster_id: CLUSTER,
        };
        save_behind_the_store(&fs, &state);
        // when the store opens, then it refuses, and the log is as it found it.
        let err = open_refused(&fs, &files);
        assert!(
            matches!(
                err,
                StoreError::LogTooShort {
                    last_index: LogIndex(20),
                    commit: LogIndex(30),
                    ..
                }
            ),
            "{err}"
        );
        let wal = open_wal(&fs);
        assert_eq!((wal.first_index(), wal.last_index()), (1, 5));
    }

    #[test]
    fn open_refuses_a_log_that_does_not_continue_the_snapshot() {
        // Given a store compacted to a snapshot at 40 whose oldest remaining segment is then
        // deleted,
        let fs = SimFs::new(23);
        let files = Arc::new(MemFiles::accepting_all());
        store_with_committed_entries(&fs, &files, 100, 100);
        let mut store = open(&fs, &files);
        store.set_catchup_entries(0);
        let meta = SnapshotMetadata {
            index: LogIndex(40),
            term: Term(1),
            configuration: Configuration::default(),
        };
        store.compact(&meta).unwrap();
        let oldest = store.wal.first_index();
        assert!(oldest > 1 && oldest <= 41, "the log starts at {oldest}");
        drop(store);
        fs.remove_file(&Path::new(WAL_DIR).join(segment_file_name(oldest)))
            .unwrap();
        fs.sync_dir(Path::new(WAL_DIR)).unwrap();
        // when the store opens, then it refuses, naming the directory and the snapshot.
        let err = open_refused(&fs, &files);
        assert!(
            matches!(
                &err,
                StoreError::LogDoesNotContinueSnapshot {
                    snapshot: LogIndex(40),
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(WAL_DIR), "{err}");
    }

    #[test]
    fn compaction_keeps_the_term_at_the_snapshot_and_serves_what_the_wal_still_holds() {
        // Given a store of 10 entries, all in one WAL segment, that keeps no catch-up tail,
        let fs = SimFs::new(3);
        let files = Arc::new(MemFiles::accepting_all());
        let mut store = store_with_entries(&fs, &files, 10);
        store.set_catchup_entries(0);
        // when it is compacted to a snapshot at 6,
        store.compact(&snapshot_meta(6, 1)).unwrap();
        // then the segment stays (it holds entries after the snapshot), so its entries at or
        // below 6 are still served, all but the first, whose term answers for the one before.
        assert_eq!(store.snapshot_index().unwrap(), LogIndex(6));
        assert_eq!(store.first_index().unwrap(), LogIndex(2));
        assert_eq!(store.term(LogIndex(1)).unwrap(), Term(1));
        assert_eq!(store.term(LogIndex(6)).unwrap(), Term(1));
        assert!(matches!(
            store.entries(LogIndex(1), LogIndex(8), u64::MAX),
            Err(StorageError::Compacted { .. })
        ));
        assert_eq!(
            store
                .entries(LogIndex(2), LogIndex(11), u64::MAX)
                .unwrap()
                .len(),
            9
        );
    }

    /// Metadata of a snapshot at `index` in `term`, with no members (the store never reads
    /// them).
    fn snapshot_meta(index: u64, term: u64) -> SnapshotMetadata {
        SnapshotMetadata {
            index: LogIndex(index),
            term: Term(term),
            configuration: Configuration::default(),
        }
    }

    /// A store over entries `1..=300` of term 1 in many small segments, committed up to 200,
    /// compacted to a snapshot at 200 keeping a catch-up tail of 50 entries.
    fn store_compacted_with_a_tail(fs: &SimFs, files: &Arc<MemFiles>) -> WalLogStore<SimFs> {
        store_with_committed_entries(fs, files, 300, 200);
        let mut store = open(fs, files);
        store.set_catchup_entries(50);
        store.compact(&snapshot_meta(200, 1)).unwrap();
        store
    }

    #[test]
    fn compaction_keeps_a_catch_up_tail_behind_the_snapshot() {
        // Given a store of 300 entries whose catch-up tail is 50 entries,
        let fs = SimFs::new(40);
        let files = Arc::new(MemFiles::accepting_all());
        // when it is compacted to a snapshot at 200,
        let store = store_compacted_with_a_tail(&fs, &files);
        // then the snapshot is recorded, whole segments below the tail are gone,
        assert_eq!(store.snapshot_index().unwrap(), LogIndex(200));
        assert_eq!(store.snapshot_metadata().index, LogIndex(200));
        let wal_first = store.wal.first_index();
        assert!(
            wal_first > 100 && wal_first <= 150,
            "the WAL starts at {wal_first}"
        );
        // and at least the last 50 entries the snapshot covers are still served, with the
        // term of the entry before the first one.
        let first = store.first_index().unwrap();
        assert_eq!(first, LogIndex(wal_first + 1));
        assert!(first <= LogIndex(151), "the log starts at {first}");
        assert_eq!(store.term(first.prev()).unwrap(), Term(1));
        let served = store.entries(first, LogIndex(301), u64::MAX).unwrap();
        assert_eq!(served.len() as u64, 301 - first.0);
        assert_eq!(served[0], big_entry(first.0));
        // Below the tail it is compacted.
        assert!(matches!(
            store.term(first.prev().prev()),
            Err(StorageError::Compacted { .. })
        ));
        assert!(matches!(
            store.entries(first.prev(), LogIndex(201), u64::MAX),
            Err(StorageError::Compacted { .. })
        ));
    }

    #[test]
    fn a_reopened_store_serves_its_catch_up_tail() {
        // Given a store compacted to 200 with a tail, closed and crashed,
        let fs = SimFs::new(41);
        let files = Arc::new(MemFiles::accepting_all());
        let store = store_compacted_with_a_tail(&fs, &files);
        let first = store.first_index().unwrap();
        assert!(first <= LogIndex(151));
        drop(store);
        fs.crash();
        // when it opens again, then it serves the same tail (the tail is what the WAL holds:
        // nothing about it was saved).
        let store = open(&fs, &files);
        assert_eq!(store.snapshot_index().unwrap(), LogIndex(200));
        assert_eq!(store.first_index().unwrap(), first);
        assert_eq!(store.term(first.prev()).unwrap(), Term(1));
        assert_eq!(
            store.entries(first, LogIndex(201), u64::MAX).unwrap(),
            (first.0..=200).map(big_entry).collect::<Vec<_>>()
        );
    }

    #[test]
    fn installing_a_leaders_snapshot_resets_the_log_leaving_no_tail() {
        // Given a store compacted to 200 with a tail,
        let fs = SimFs::new(42);
        let files = Arc::new(MemFiles::accepting_all());
        let mut store = store_compacted_with_a_tail(&fs, &files);
        // when a leader's snapshot at 250 of another term is installed over its uncommitted
        // entries,
        let snapshot = Snapshot {
            metadata: snapshot_meta(250, 2),
            data: Bytes::new(),
        };
        files
            .receive_whole(&snapshot.metadata, b"state")
            .expect("any data is taken");
        store.persist(Some(&snapshot), &[], None).unwrap();
        // then the log restarts after it: nothing at or below 250 is served, before or after
        // a restart.
        let no_tail = |store: &WalLogStore<SimFs>| {
            assert_eq!(store.first_index().unwrap(), LogIndex(251));
            assert_eq!(store.last_index().unwrap(), LogIndex(250));
            assert_eq!(store.term(LogIndex(250)).unwrap(), Term(2));
            assert!(matches!(
                store.term(LogIndex(249)),
                Err(StorageError::Compacted { .. })
            ));
        };
        no_tail(&store);
        drop(store);
        no_tail(&open(&fs, &files));
    }

    #[test]
    fn an_old_log_left_by_a_crashed_snapshot_install_is_not_served_as_a_tail() {
        // Given entries 1..=30 of term 1, and a leader's snapshot at 20 of term 4 whose
        // metadata was saved before a crash kept the log from being reset,
        let fs = SimFs::new(43);
        let files = Arc::new(MemFiles::accepting_all());
        drop(store_with_entries(&fs, &files, 30));
        let state = DurableState {
            hard_state: HardState {
                commit: LogIndex(20),
                ..HardState::default()
            },
            snapshot: snapshot_meta(20, 4),
            cluster_id: CLUSTER,
        };
        save_behind_the_store(&fs, &state);
        // when the store opens, then the old entries at or below 20 are not served: they are
        // not the ones the snapshot covers (its term at 20 differs).
        let store = open(&fs, &files);
        assert_eq!(store.first_index().unwrap(), LogIndex(21));
        assert_eq!(store.term(LogIndex(20)).unwrap(), Term(4));
        assert!(matches!(
            store.term(LogIndex(19)),
            Err(StorageError::Compacted { .. })
        ));
    }
}
