//! The key-value state machine: the ordered map, revisions, and `apply`.
//!
//! Job: apply committed log entries in index order and answer reads. The model is etcd's:
//! the *revision* of a write is the Raft log index of the entry that made it; per key the
//! store keeps `create_revision` (index of the write that created the key), `mod_revision`
//! (index of the latest write) and `version` (writes since creation, 1 when created; a
//! deleted key is gone, and recreating it starts again at version 1). The store's
//! [`KvStore::revision`] is the index of the latest write that changed the map.
//!
//! The map is a persistent B+tree ([`crate::tree::Tree`]) of compact `Entry`s, one heap
//! allocation per key: [`KvStore::view`] takes a point-in-time copy in O(1) while apply goes
//! on. Entries copy the bytes of a command's key and value, so a decoded command's buffer (a
//! slice of a network or WAL read) is never kept alive by the map.
//!
//! `apply` never panics on any input: undecodable bytes, oversized keys, unknown sessions and
//! out-of-order indexes all give a typed [`ApplyError`]. Except for an index that does not
//! increase (a driver bug, which changes nothing), every call records its index as applied.
//!
//! Invariants (checked by [`KvStore::check_invariants`]):
//! - the tree satisfies its own invariants;
//! - every key and value is within [`crate::limits`];
//! - per key: `1 <= create_revision <= mod_revision <= revision <= applied_index`, `version >= 1`;
//! - [`KvStore::data_bytes`] is the sum over keys of key, value and [`KV_OVERHEAD_BYTES`];
//! - the session table satisfies its own invariants and bound.

use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use crate::command::{
    ApplyError, CasAction, Command, Compare, KeyValue, Outcome, Response, Write, WriteOp, decode,
};
use crate::limits::{KEY_BYTES_MAX, ValidationError, validate_key, validate_value};
use crate::session::{
    SessionCheck, SessionConfig, SessionInvariantError, SessionRecord, SessionTable,
};
use crate::tree::{Keyed, Tree, TreeInvariantError};
use crate::view::KvView;

/// Most key-values one range read returns; a larger `limit` is lowered to this.
///
/// 10,000 entries of at most 1 MiB each is still a lot of memory for one answer; callers page
/// with [`KvStore::range_prefix_after`].
pub const RANGE_LIMIT_MAX: usize = 10_000;

/// What one key costs beyond its key and value bytes, for [`KvStore::data_bytes`]: an upper
/// bound on a snapshot record's framing, the varint lengths of key (2 bytes for up to
/// [`KEY_BYTES_MAX`]) and value (3 bytes for up to 1 MiB) and its three revisions (10 bytes
/// each at most). A fixed number, so the quota counts the same on every replica and every
/// release, and a million empty values still count for something.
pub const KV_OVERHEAD_BYTES: u64 = 2 + 3 + 3 * 10;

/// Configuration of a [`KvStore`]. Must be the same on every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvConfig {
    /// The client session table's limits.
    pub sessions: SessionConfig,
}

// A key's length is stored in two bytes.
const _: () = assert!(KEY_BYTES_MAX <= u16::MAX as usize);

/// One key with its value and revisions, in a single shared allocation:
///
/// ```text
/// key length (u16 LE) | key | create_revision | mod_revision | version | value
/// ```
///
/// with the three numbers as LEB128 varints (a revision below 2^21 takes 3 bytes). Cloning is
/// a reference-count increment, which is what copying a tree leaf shared with a view costs
/// per key. Built only from validated keys (at most [`KEY_BYTES_MAX`] bytes).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Entry(Arc<[u8]>);

/// Length of the key-length field at the start of an [`Entry`].
const ENTRY_KEY_LEN_BYTES: usize = 2;

/// Longest LEB128 encoding of a u64.
const VARINT_BYTES_MAX: usize = 10;

impl Entry {
    /// Copies `key` and `value` into a new entry. `key` must be validated.
    pub(crate) fn new(
        key: &[u8],
        value: &[u8],
        create_revision: u64,
        mod_revision: u64,
        version: u64,
    ) -> Entry {
        let key_len =
            u16::try_from(key.len()).expect("invariant: keys are validated to KEY_BYTES_MAX");
        // The small fields go through a buffer on the stack, so that the entry is one
        // allocation filled in place (a `Vec` turned into an `Arc` would be copied once more:
        // a cost every key of a restored snapshot pays).
        let mut numbers = [0u8; 3 * VARINT_BYTES_MAX];
        let mut used = 0;
        for number in [create_revision, mod_revision, version] {
            used += write_varint(&mut numbers[used..], number);
        }
        Entry(concat_into_arc(&[
            &key_len.to_le_bytes(),
            key,
            &numbers[..used],
            value,
        ]))
    }

    fn key_len(&self) -> usize {
        usize::from(u16::from_le_bytes([self.0[0], self.0[1]]))
    }

    /// The key.
    pub(crate) fn key_bytes(&self) -> &[u8] {
        &self.0[ENTRY_KEY_LEN_BYTES..ENTRY_KEY_LEN_BYTES + self.key_len()]
    }

    /// `(create_revision, mod_revision, version)` and the value.
    pub(crate) fn meta_and_value(&self) -> ([u64; 3], &[u8]) {
        let mut rest = &self.0[ENTRY_KEY_LEN_BYTES + self.key_len()..];
        let mut numbers = [0u64; 3];
        for number in &mut numbers {
            let (value, used) = get_varint(rest);
            *number = value;
            rest = &rest[used..];
        }
        (numbers, rest)
    }

    /// The value.
    pub(crate) fn value(&self) -> &[u8] {
        self.meta_and_value().1
    }

    /// Revision of the write that created the key.
    pub(crate) fn create_revision(&self) -> u64 {
        self.meta_and_value().0[0]
    }

    /// Revision of the latest write to the key.
    pub(crate) fn mod_revision(&self) -> u64 {
        self.meta_and_value().0[1]
    }

    /// Writes since the key was created.
    pub(crate) fn version(&self) -> u64 {
        self.meta_and_value().0[2]
    }

    /// What the key costs in [`KvStore::data_bytes`].
    pub(crate) fn data_bytes(&self) -> u64 {
        (self.key_len() + self.value().len()) as u64 + KV_OVERHEAD_BYTES
    }

    /// The entry as a [`KeyValue`] (copies key and value into new `Bytes`).
    pub(crate) fn to_key_value(&self) -> KeyValue {
        let ([create_revision, mod_revision, version], value) = self.meta_and_value();
        KeyValue {
            key: Bytes::copy_from_slice(self.key_bytes()),
            value: Bytes::copy_from_slice(value),
            create_revision,
            mod_revision,
            version,
        }
    }
}

impl Keyed for Entry {
    type Key = [u8];
    fn key(&self) -> &[u8] {
        self.key_bytes()
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_key_value(), f)
    }
}

/// One `Arc<[u8]>` holding `parts` one after another: a single allocation, each part copied
/// once. `Arc::from(Vec)` would copy everything a second time and `Arc::from_iter`
/// copies byte by byte; both showed in the profile of a restore, which builds an entry per key.
fn concat_into_arc(parts: &[&[u8]]) -> Arc<[u8]> {
    let len = parts.iter().map(|part| part.len()).sum();
    let mut arc = Arc::<[u8]>::new_uninit_slice(len);
    let slots = Arc::get_mut(&mut arc).expect("invariant: a new Arc has no other owner");
    let mut at = 0;
    for part in parts {
        // A plain loop over two slices: the compiler makes it a `memcpy`.
        for (slot, byte) in slots[at..at + part.len()].iter_mut().zip(part.iter()) {
            slot.write(*byte);
        }
        at += part.len();
    }
    assert_eq!(at, len, "invariant: the parts fill the allocation exactly");
    // SAFETY: the loop wrote every one of the `len` bytes (the parts' lengths sum to `len`,
    // asserted above), so the slice is fully initialised.
    unsafe { arc.assume_init() }
}

/// Writes `number` as a varint at the start of `out` (which must hold [`VARINT_BYTES_MAX`]
/// bytes); returns its length.
fn write_varint(out: &mut [u8], mut number: u64) -> usize {
    let mut used = 0;
    while number >= 0x80 {
        out[used] = (number as u8 & 0x7f) | 0x80;
        number >>= 7;
        used += 1;
    }
    out[used] = number as u8;
    used + 1
}

/// Reads a varint written by [`write_varint`] into an entry; returns it and its length.
fn get_varint(bytes: &[u8]) -> (u64, usize) {
    let mut number = 0u64;
    for (i, &byte) in bytes.iter().take(VARINT_BYTES_MAX).enumerate() {
        number |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (number, i + 1);
        }
    }
    unreachable!("invariant: entries are built by Entry::new, which ends every varint")
}

/// The answer to a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The matching key-values, in key order, at most the (clamped) limit.
    pub kvs: Vec<KeyValue>,
    /// Whether more keys match beyond the last one returned.
    pub more: bool,
}

/// A violation found by [`KvStore::check_invariants`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantError {
    /// A stored key or value breaks a size limit.
    #[error("key {key:?}: {error}")]
    Limit {
        /// The key (possibly truncated in logs by the caller).
        key: Bytes,
        /// The broken limit.
        error: ValidationError,
    },
    /// A key's revisions or version are out of order.
    #[error(
        "key {key:?}: create_revision {create_revision}, mod_revision {mod_revision}, version {version} with revision {revision} and applied index {applied_index}"
    )]
    Revisions {
        /// The key.
        key: Bytes,
        /// Its create revision.
        create_revision: u64,
        /// Its mod revision.
        mod_revision: u64,
        /// Its version.
        version: u64,
        /// The store revision.
        revision: u64,
        /// The applied index.
        applied_index: u64,
    },
    /// The store revision is above the applied index.
    #[error("store revision {revision} is above the applied index {applied_index}")]
    RevisionAboveApplied {
        /// The store revision.
        revision: u64,
        /// The applied index.
        applied_index: u64,
    },
    /// Keys in a snapshot are not in strictly increasing order.
    #[error("snapshot keys are not strictly increasing at {key:?}")]
    KeysNotSorted {
        /// The first key out of order.
        key: Bytes,
    },
    /// The session table is inconsistent.
    #[error("session table: {0}")]
    Sessions(#[from] SessionInvariantError),
    /// The ordered map's structure is broken (a bug in the tree, never bad input).
    #[error("map structure: {0}")]
    Tree(#[from] TreeInvariantError),
    /// The incrementally kept [`KvStore::data_bytes`] disagrees with the keys held.
    #[error("data_bytes says {counted}, the keys add up to {actual}")]
    DataBytes {
        /// The running total.
        counted: u64,
        /// The sum over the keys held.
        actual: u64,
    },
}

/// The replicated key-value state machine.
///
/// `Clone` is O(sessions): the map is shared until either copy writes to it. Equality
/// compares contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvStore {
    pub(crate) map: Tree<Entry>,
    pub(crate) sessions: SessionTable,
    pub(crate) applied_index: u64,
    pub(crate) revision: u64,
    /// See [`KvStore::data_bytes`].
    pub(crate) data_bytes: u64,
}

impl KvStore {
    /// An empty store at applied index 0.
    pub fn new(config: KvConfig) -> Self {
        KvStore {
            map: Tree::new(),
            sessions: SessionTable::new(config.sessions),
            applied_index: 0,
            revision: 0,
            data_bytes: 0,
        }
    }

    /// Builds a store from a snapshot's parts in one pass (bulk tree build) and checks every
    /// invariant [`KvStore::check_invariants`] checks: strictly increasing keys, limits,
    /// revisions, sessions. `kvs` must be in strictly increasing key order. The session bound
    /// (from `config`) must be at least the number of sessions.
    pub fn from_sorted(
        config: KvConfig,
        applied_index: u64,
        revision: u64,
        kvs: impl Iterator<Item = KeyValue>,
        sessions: Vec<SessionRecord>,
    ) -> Result<KvStore, InvariantError> {
        if revision > applied_index {
            return Err(InvariantError::RevisionAboveApplied {
                revision,
                applied_index,
            });
        }
        let mut error = None;
        let mut data_bytes = 0u64;
        let mut previous: Option<Bytes> = None;
        let entries = kvs.map_while(|kv| {
            let checked = check_key_value(
                &kv.key,
                &kv.value,
                [kv.create_revision, kv.mod_revision, kv.version],
                previous.as_deref(),
                (revision, applied_index),
            );
            match checked {
                Ok(()) => {
                    let entry = Entry::new(
                        &kv.key,
                        &kv.value,
                        kv.create_revision,
                        kv.mod_revision,
                        kv.version,
                    );
                    data_bytes += entry.data_bytes();
                    previous = Some(kv.key);
                    Some(entry)
                }
                Err(e) => {
                    error = Some(e);
                    None
                }
            }
        });
        let map = Tree::from_sorted(entries).expect(
            "invariant: the adapter above stops at the first key not after the one before it",
        );
        if let Some(error) = error {
            return Err(error);
        }
        let sessions = SessionTable::from_records(config.sessions, sessions);
        sessions.check_invariants(applied_index)?;
        let store = KvStore {
            map,
            sessions,
            applied_index,
            revision,
            data_bytes,
        };
        debug_assert_eq!(store.check_invariants(), Ok(()));
        Ok(store)
    }

    /// Σ over keys of `key.len() + value.len() +` [`KV_OVERHEAD_BYTES`], kept as keys change
    /// (deterministic, the same on every replica): the state's size for the space quota.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// An O(1) consistent view of the whole state at the applied index: the map is shared
    /// with the store, which goes on applying; the session table (at most `sessions_max`
    /// records) is copied.
    pub fn view(&self) -> KvView {
        KvView {
            map: self.map.clone(),
            sessions: self.sessions.clone(),
            applied_index: self.applied_index,
            revision: self.revision,
            data_bytes: self.data_bytes,
        }
    }

    /// The store's configuration.
    pub fn config(&self) -> KvConfig {
        KvConfig {
            sessions: self.sessions.config(),
        }
    }

    /// Index of the last log entry applied (or marked applied).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Index of the latest write that changed the map (etcd's current revision).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map holds no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The client session table (read-only).
    pub fn sessions(&self) -> &SessionTable {
        &self.sessions
    }

    /// Applies the log entry at `index` whose payload is `command_bytes`.
    ///
    /// `index` must be above [`KvStore::applied_index`], else nothing changes and the answer
    /// is [`ApplyError::IndexNotIncreasing`]. Gaps are allowed: entries that are not for the
    /// state machine (configuration changes, the leader's empty entry) may be skipped or passed
    /// to [`KvStore::mark_applied`], and either choice gives the same responses and the same
    /// map and sessions (session expiry depends only on the index of the command at hand).
    /// Every other outcome, errors included, records `index` as applied. Never panics on any
    /// bytes.
    pub fn apply(&mut self, index: u64, command_bytes: &[u8]) -> Response {
        self.begin(index)?;
        match decode(command_bytes) {
            Ok(command) => self.execute(index, command),
            Err(error) => {
                tracing::warn!(index, %error, "log entry is not a state-machine command");
                Err(ApplyError::Decode(error))
            }
        }
    }

    /// Applies an already decoded command at `index`; the same as [`KvStore::apply`] on its
    /// encoding.
    pub fn apply_command(&mut self, index: u64, command: Command) -> Response {
        self.begin(index)?;
        self.execute(index, command)
    }

    /// Records `index` as applied without a command (for log entries the state machine does
    /// not interpret). Expires idle sessions like any applied index.
    pub fn mark_applied(&mut self, index: u64) -> Result<(), ApplyError> {
        self.begin(index)
    }

    /// Checks the index, records it as applied and expires idle sessions.
    fn begin(&mut self, index: u64) -> Result<(), ApplyError> {
        if index <= self.applied_index {
            return Err(ApplyError::IndexNotIncreasing {
                index,
                applied_index: self.applied_index,
            });
        }
        self.applied_index = index;
        self.sessions.expire(index);
        Ok(())
    }

    fn execute(&mut self, index: u64, command: Command) -> Response {
        match command {
            Command::Noop => Ok(Outcome::Noop {
                revision: self.revision,
            }),
            Command::RegisterSession => Ok(Outcome::SessionRegistered {
                client_id: self.sessions.register(index),
            }),
            Command::Write(Write { session: None, op }) => self.write(index, op),
            Command::Write(Write {
                session: Some(session),
                op,
            }) => {
                let fingerprint = op.fingerprint();
                match self
                    .sessions
                    .check(session.client_id, session.sequence, fingerprint, index)
                {
                    SessionCheck::Unknown => Err(ApplyError::SessionExpired {
                        client_id: session.client_id,
                    }),
                    SessionCheck::Stale { last_sequence } => Err(ApplyError::StaleSequence {
                        client_id: session.client_id,
                        sequence: session.sequence,
                        last_sequence,
                    }),
                    SessionCheck::Duplicate(response) => response,
                    SessionCheck::Reused => Err(ApplyError::SequenceReused {
                        client_id: session.client_id,
                        sequence: session.sequence,
                    }),
                    SessionCheck::Fresh => {
                        let response = self.write(index, op);
                        self.sessions.record(
                            session.client_id,
                            session.sequence,
                            fingerprint,
                            &response,
                        );
                        response
                    }
                }
            }
        }
    }

    fn write(&mut self, index: u64, op: WriteOp) -> Response {
        op.validate()?;
        let outcome = match op {
            WriteOp::Put {
                key,
                value,
                prev_kv,
            } => {
                let prev = self.put(index, &key, &value);
                Outcome::Put {
                    revision: index,
                    prev: prev.filter(|_| prev_kv).map(|p| p.to_key_value()),
                }
            }
            WriteOp::Delete { key, prev_kv } => match self.remove(&key) {
                Some(prev) => {
                    self.revision = index;
                    Outcome::Delete {
                        revision: index,
                        deleted: 1,
                        prev: prev_kv.then(|| prev.to_key_value()),
                    }
                }
                None => Outcome::Delete {
                    revision: self.revision,
                    deleted: 0,
                    prev: None,
                },
            },
            WriteOp::DeletePrefix { prefix } => {
                // Collected first: the tree cannot be written while it is being iterated.
                let doomed: Vec<Entry> = self.prefix_iter(&prefix, None).cloned().collect();
                for entry in &doomed {
                    self.remove(entry.key_bytes());
                }
                if !doomed.is_empty() {
                    self.revision = index;
                }
                Outcome::DeletePrefix {
                    revision: self.revision,
                    deleted: doomed.len() as u64,
                }
            }
            WriteOp::CompareAndSwap {
                key,
                compare,
                action,
            } => {
                let current = self.map.get(&key[..]);
                let holds = match (&compare, current) {
                    (Compare::Value(expected), Some(stored)) => stored.value() == &expected[..],
                    (Compare::Value(_), None) => false,
                    (Compare::Version(expected), Some(stored)) => stored.version() == *expected,
                    (Compare::Version(expected), None) => *expected == 0,
                };
                if !holds {
                    let (version, mod_revision) =
                        current.map_or((0, 0), |s| (s.version(), s.mod_revision()));
                    return Ok(Outcome::CompareAndSwap {
                        succeeded: false,
                        revision: self.revision,
                        version,
                        mod_revision,
                    });
                }
                let (version, mod_revision) = match action {
                    CasAction::Put(value) => {
                        let version = self.put(index, &key, &value).map_or(1, |p| p.version() + 1);
                        (version, index)
                    }
                    CasAction::Delete => {
                        if self.remove(&key).is_some() {
                            self.revision = index;
                        }
                        (0, 0)
                    }
                };
                Outcome::CompareAndSwap {
                    succeeded: true,
                    revision: self.revision,
                    version,
                    mod_revision,
                }
            }
        };
        Ok(outcome)
    }

    /// Stores `value` at revision `index`, returning what was there before. Copies the key
    /// and value out of the command's buffers.
    fn put(&mut self, index: u64, key: &[u8], value: &[u8]) -> Option<Entry> {
        self.revision = index;
        let prev = self.map.insert_with(key, |prev| {
            let (create_revision, version) =
                prev.map_or((index, 1), |p| (p.create_revision(), p.version() + 1));
            Entry::new(key, value, create_revision, index, version)
        });
        self.data_bytes += (key.len() + value.len()) as u64 + KV_OVERHEAD_BYTES;
        if let Some(prev) = &prev {
            self.data_bytes -= prev.data_bytes();
        }
        prev
    }

    /// Removes `key`, keeping [`KvStore::data_bytes`] in step.
    fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let prev = self.map.remove(key)?;
        self.data_bytes -= prev.data_bytes();
        Some(prev)
    }

    /// The key-value stored under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.map.get(key).map(Entry::to_key_value)
    }

    /// Up to `limit` key-values whose keys start with `prefix`, in key order (the empty prefix
    /// matches every key). `limit` is lowered to [`RANGE_LIMIT_MAX`].
    pub fn range_prefix(&self, prefix: &[u8], limit: usize) -> Range {
        self.range(prefix, None, limit)
    }

    /// Like [`KvStore::range_prefix`], but only keys strictly after `after`: pass the last key
    /// of the previous page to read the next one.
    pub fn range_prefix_after(&self, prefix: &[u8], after: &[u8], limit: usize) -> Range {
        self.range(prefix, Some(after), limit)
    }

    fn range(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Range {
        let limit = limit.min(RANGE_LIMIT_MAX);
        let mut iter = self.prefix_iter(prefix, after);
        let kvs: Vec<KeyValue> = iter.by_ref().take(limit).map(Entry::to_key_value).collect();
        let more = iter.next().is_some();
        Range { kvs, more }
    }

    /// Number of keys that start with `prefix` (linear in that number).
    pub fn count_prefix(&self, prefix: &[u8]) -> u64 {
        self.prefix_iter(prefix, None).count() as u64
    }

    fn prefix_iter<'a>(
        &'a self,
        prefix: &'a [u8],
        after: Option<&'a [u8]>,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let start: Bound<&[u8]> = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        self.map
            .range(start)
            .take_while(move |entry| entry.key_bytes().starts_with(prefix))
    }

    /// Checks the invariants listed in the module documentation.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        if self.revision > self.applied_index {
            return Err(InvariantError::RevisionAboveApplied {
                revision: self.revision,
                applied_index: self.applied_index,
            });
        }
        self.map.check_invariants()?;
        let mut actual = 0u64;
        for entry in self.map.iter() {
            let (meta, value) = entry.meta_and_value();
            check_key_value(
                entry.key_bytes(),
                value,
                meta,
                None,
                (self.revision, self.applied_index),
            )?;
            actual += entry.data_bytes();
        }
        if actual != self.data_bytes {
            return Err(InvariantError::DataBytes {
                counted: self.data_bytes,
                actual,
            });
        }
        self.sessions.check_invariants(self.applied_index)?;
        Ok(())
    }
}

/// Checks one key-value against the per-key invariants: after `previous` (if given), within
/// the limits, revisions in order.
/// `[create_revision, mod_revision, version]`.
fn check_key_value(
    key: &[u8],
    value: &[u8],
    [create_revision, mod_revision, version]: [u64; 3],
    previous: Option<&[u8]>,
    (revision, applied_index): (u64, u64),
) -> Result<(), InvariantError> {
    if previous.is_some_and(|previous| previous >= key) {
        return Err(InvariantError::KeysNotSorted {
            key: Bytes::copy_from_slice(key),
        });
    }
    validate_key(key)
        .and_then(|()| validate_value(value))
        .map_err(|error| InvariantError::Limit {
            key: Bytes::copy_from_slice(key),
            error,
        })?;
    let ordered = 1 <= create_revision
        && create_revision <= mod_revision
        && mod_revision <= revision
        && version >= 1;
    if !ordered {
        return Err(InvariantError::Revisions {
            key: Bytes::copy_from_slice(key),
            create_revision,
            mod_revision,
            version,
            revision,
            applied_index,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Session;
    use crate::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

    fn store() -> KvStore {
        KvStore::new(KvConfig::default())
    }

    fn apply(s: &mut KvStore, index: u64, command: Command) -> Response {
        let response = s.apply(index, &command.encode());
        s.check_invariants()
            .expect("invariants hold after every apply");
        response
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn put_creates_then_modifies() {
        let mut s = store();
        assert_eq!(
            apply(&mut s, 1, Command::put("a", "1")),
            Ok(Outcome::Put {
                revision: 1,
                prev: None
            })
        );
        let got = s.get(b"a").expect("a exists");
        assert_eq!(
            (got.create_revision, got.mod_revision, got.version),
            (1, 1, 1)
        );
        let put = Command::Write(Write {
            session: None,
            op: WriteOp::Put {
                key: b("a"),
                value: b("2"),
                prev_kv: true,
            },
        });
        let prev = KeyValue {
            key: b("a"),
            value: b("1"),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
        };
        assert_eq!(
            apply(&mut s, 4, put),
            Ok(Outcome::Put {
                revision: 4,
                prev: Some(prev)
            })
        );
        let got = s.get(b"a").expect("a exists");
        assert_eq!(
            (
                got.value,
                got.create_revision,
                got.mod_revision,
                got.version
            ),
            (b("2"), 1, 4, 2)
        );
        assert_eq!((s.revision(), s.applied_index()), (4, 4));
    }

    #[test]
    fn delete_resets_version() {
        let mut s = store();
        apply(&mut s, 1, Command::put("a", "1")).expect("put");
        apply(&mut s, 2, Command::put("a", "2")).expect("put");
        let del = Command::Write(Write {
            session: None,
            op: WriteOp::Delete {
                key: b("a"),
                prev_kv: true,
            },
        });
        let prev = KeyValue {
            key: b("a"),
            value: b("2"),
            create_revision: 1,
            mod_revision: 2,
            version: 2,
        };
        assert_eq!(
            apply(&mut s, 3, del),
            Ok(Outcome::Delete {
                revision: 3,
                deleted: 1,
                prev: Some(prev)
            })
        );
        assert_eq!(s.get(b"a"), None);
        // Deleting a missing key deletes nothing and leaves the revision alone.
        assert_eq!(
            apply(&mut s, 4, Command::delete("a")),
            Ok(Outcome::Delete {
                revision: 3,
                deleted: 0,
                prev: None
            })
        );
        apply(&mut s, 5, Command::put("a", "3")).expect("put");
        let got = s.get(b"a").expect("a exists");
        assert_eq!(
            (got.create_revision, got.mod_revision, got.version),
            (5, 5, 1)
        );
    }

    #[test]
    fn delete_prefix_counts() {
        let mut s = store();
        for (i, key) in ["a/1", "a/2", "a0", "b/1", "a/3"].iter().enumerate() {
            apply(&mut s, i as u64 + 1, Command::put(*key, "v")).expect("put");
        }
        assert_eq!(
            apply(&mut s, 10, Command::delete_prefix("a/")),
            Ok(Outcome::DeletePrefix {
                revision: 10,
                deleted: 3
            })
        );
        assert_eq!(s.len(), 2);
        assert_eq!(
            apply(&mut s, 11, Command::delete_prefix("zz")),
            Ok(Outcome::DeletePrefix {
                revision: 10,
                deleted: 0
            })
        );
        assert_eq!(
            apply(&mut s, 12, Command::delete_prefix("")),
            Ok(Outcome::DeletePrefix {
                revision: 12,
                deleted: 2
            })
        );
        assert!(s.is_empty());
    }

    #[test]
    fn compare_and_swap_on_version() {
        let mut s = store();
        let create =
            || Command::compare_and_swap("k", Compare::Version(0), CasAction::Put(b("v1")));
        assert_eq!(
            apply(&mut s, 1, create()),
            Ok(Outcome::CompareAndSwap {
                succeeded: true,
                revision: 1,
                version: 1,
                mod_revision: 1
            })
        );
        // "Create if absent" fails once the key exists, and reports its version.
        assert_eq!(
            apply(&mut s, 2, create()),
            Ok(Outcome::CompareAndSwap {
                succeeded: false,
                revision: 1,
                version: 1,
                mod_revision: 1
            })
        );
        assert_eq!(
            apply(
                &mut s,
                3,
                Command::compare_and_swap("k", Compare::Version(1), CasAction::Put(b("v2")))
            ),
            Ok(Outcome::CompareAndSwap {
                succeeded: true,
                revision: 3,
                version: 2,
                mod_revision: 3
            })
        );
        assert_eq!(
            apply(
                &mut s,
                4,
                Command::compare_and_swap("k", Compare::Version(1), CasAction::Delete)
            ),
            Ok(Outcome::CompareAndSwap {
                succeeded: false,
                revision: 3,
                version: 2,
                mod_revision: 3
            })
        );
        assert_eq!(
            apply(
                &mut s,
                5,
                Command::compare_and_swap("k", Compare::Version(2), CasAction::Delete)
            ),
            Ok(Outcome::CompareAndSwap {
                succeeded: true,
                revision: 5,
                version: 0,
                mod_revision: 0
            })
        );
        assert_eq!(s.get(b"k"), None);
    }

    #[test]
    fn compare_and_swap_on_value() {
        let mut s = store();
        let cas = |expected: &str, new: &str| {
            Command::compare_and_swap("k", Compare::Value(b(expected)), CasAction::Put(b(new)))
        };
        assert_eq!(
            apply(&mut s, 1, cas("", "x")),
            Ok(Outcome::CompareAndSwap {
                succeeded: false,
                revision: 0,
                version: 0,
                mod_revision: 0
            })
        );
        apply(&mut s, 2, Command::put("k", "a")).expect("put");
        assert_eq!(
            apply(&mut s, 3, cas("b", "c")),
            Ok(Outcome::CompareAndSwap {
                succeeded: false,
                revision: 2,
                version: 1,
                mod_revision: 2
            })
        );
        assert_eq!(
            apply(&mut s, 4, cas("a", "c")),
            Ok(Outcome::CompareAndSwap {
                succeeded: true,
                revision: 4,
                version: 2,
                mod_revision: 4
            })
        );
        assert_eq!(s.get(b"k").expect("k exists").value, b("c"));
    }

    #[test]
    fn noop_and_mark_applied_advance_the_index_only() {
        let mut s = store();
        apply(&mut s, 1, Command::put("a", "1")).expect("put");
        assert_eq!(
            apply(&mut s, 2, Command::Noop),
            Ok(Outcome::Noop { revision: 1 })
        );
        s.mark_applied(5).expect("increasing");
        assert_eq!((s.applied_index(), s.revision()), (5, 1));
        assert_eq!(
            s.mark_applied(5),
            Err(ApplyError::IndexNotIncreasing {
                index: 5,
                applied_index: 5
            })
        );
    }

    #[test]
    fn non_increasing_index_changes_nothing() {
        let mut s = store();
        apply(&mut s, 3, Command::put("a", "1")).expect("put");
        let before = s.clone();
        assert_eq!(
            s.apply(3, &Command::put("b", "1").encode()),
            Err(ApplyError::IndexNotIncreasing {
                index: 3,
                applied_index: 3
            })
        );
        assert_eq!(
            s.apply(1, b"garbage"),
            Err(ApplyError::IndexNotIncreasing {
                index: 1,
                applied_index: 3
            })
        );
        assert_eq!(s, before);
    }

    #[test]
    fn garbage_bytes_give_an_error_and_advance_the_index() {
        let mut s = store();
        apply(&mut s, 1, Command::put("a", "1")).expect("put");
        let before = s.get(b"a");
        let inputs: [&[u8]; 5] = [b"", &[0xff; 3], &[1, 2, 1, 0xff], &[1, 9, 9, 9], &[1, 0, 0]];
        for (i, bytes) in inputs.iter().enumerate() {
            let index = 2 + i as u64;
            assert!(
                matches!(s.apply(index, bytes), Err(ApplyError::Decode(_))),
                "input {bytes:?}"
            );
            assert_eq!(s.applied_index(), index);
            s.check_invariants().expect("invariants hold");
        }
        assert_eq!(s.get(b"a"), before);
        assert_eq!(s.revision(), 1);
    }

    #[test]
    fn limits_are_enforced_at_apply() {
        let mut s = store();
        let big_value = Bytes::from(vec![0u8; VALUE_BYTES_MAX + 1]);
        let long_key = Bytes::from(vec![b'k'; KEY_BYTES_MAX + 1]);
        assert!(matches!(
            apply(&mut s, 1, Command::put("k", big_value)),
            Err(ApplyError::Invalid(ValidationError::ValueTooLarge { .. }))
        ));
        assert!(matches!(
            apply(&mut s, 2, Command::put(long_key, "v")),
            Err(ApplyError::Invalid(ValidationError::KeyTooLarge { .. }))
        ));
        assert!(matches!(
            apply(&mut s, 3, Command::put("", "v")),
            Err(ApplyError::Invalid(ValidationError::EmptyKey))
        ));
        assert!(s.is_empty());
        assert_eq!(s.applied_index(), 3);
        // At the limits exactly, the write is accepted.
        let key = Bytes::from(vec![b'k'; KEY_BYTES_MAX]);
        apply(&mut s, 4, Command::put(key, vec![0u8; VALUE_BYTES_MAX]))
            .expect("limits are inclusive");
    }

    #[test]
    fn sessions_make_writes_exactly_once() {
        let mut s = store();
        let Ok(Outcome::SessionRegistered { client_id }) =
            apply(&mut s, 1, Command::RegisterSession)
        else {
            panic!("registration succeeds");
        };
        assert_eq!(client_id, 1);
        let put = |seq: u64, value: &str| {
            Command::put("k", Bytes::copy_from_slice(value.as_bytes())).with_session(Session {
                client_id,
                sequence: seq,
            })
        };
        let first = apply(&mut s, 2, put(1, "a"));
        assert_eq!(
            first,
            Ok(Outcome::Put {
                revision: 2,
                prev: None
            })
        );
        // The retry gets the original answer and is not applied again.
        assert_eq!(apply(&mut s, 3, put(1, "a")), first);
        assert_eq!(s.get(b"k").expect("k").version, 1);
        assert_eq!(
            apply(&mut s, 4, put(2, "b")),
            Ok(Outcome::Put {
                revision: 4,
                prev: None
            })
        );
        assert_eq!(
            apply(&mut s, 5, put(1, "a")),
            Err(ApplyError::StaleSequence {
                client_id,
                sequence: 1,
                last_sequence: 2
            })
        );
        assert_eq!(s.get(b"k").expect("k").value, b("b"));
        // An error is an answer too: a retried invalid write gets the same error.
        let bad = Command::put("", "x").with_session(Session {
            client_id,
            sequence: 3,
        });
        let error = apply(&mut s, 6, bad.clone());
        assert!(matches!(error, Err(ApplyError::Invalid(_))));
        assert_eq!(apply(&mut s, 7, bad), error);
        assert_eq!(
            apply(
                &mut s,
                8,
                put(9, "z").with_session(Session {
                    client_id: 77,
                    sequence: 1
                })
            ),
            Err(ApplyError::SessionExpired { client_id: 77 })
        );
    }

    #[test]
    fn a_sequence_reused_for_another_write_is_refused_and_changes_nothing() {
        // Given a session that wrote k=a with sequence 1
        let mut s = store();
        apply(&mut s, 1, Command::RegisterSession).expect("register");
        let session = Session {
            client_id: 1,
            sequence: 1,
        };
        let first = apply(&mut s, 2, Command::put("k", "a").with_session(session));
        assert!(first.is_ok());
        // When the same sequence carries a different write
        let reused = apply(&mut s, 3, Command::put("k", "b").with_session(session));
        // Then it is refused, nothing is written, and a replica that applies it agrees
        assert_eq!(
            reused,
            Err(ApplyError::SequenceReused {
                client_id: 1,
                sequence: 1
            })
        );
        assert_eq!(s.get(b"k").expect("k").value, b("a"));
        let delete = apply(&mut s, 4, Command::delete("k").with_session(session));
        assert!(matches!(delete, Err(ApplyError::SequenceReused { .. })));
        assert!(s.get(b"k").is_some());
        // and the true retry still gets the first answer
        assert_eq!(
            apply(&mut s, 5, Command::put("k", "a").with_session(session)),
            first
        );
        s.check_invariants().expect("invariants hold");
        // A snapshot keeps the fingerprint: a restored replica refuses the reuse too.
        let restored =
            KvStore::restore(s.snapshot(1, Bytes::new()), KvConfig::default()).expect("restore");
        let mut restored = restored;
        assert!(matches!(
            apply(
                &mut restored,
                6,
                Command::put("k", "c").with_session(session)
            ),
            Err(ApplyError::SequenceReused { .. })
        ));
    }

    #[test]
    fn expired_session_is_refused_not_reapplied() {
        let config = KvConfig {
            sessions: SessionConfig {
                sessions_max: 10,
                idle_indexes_max: 3,
            },
        };
        let mut s = KvStore::new(config);
        apply(&mut s, 1, Command::RegisterSession).expect("register");
        let write = Command::put("k", "v").with_session(Session {
            client_id: 1,
            sequence: 1,
        });
        apply(&mut s, 2, write.clone()).expect("put");
        s.mark_applied(6).expect("increasing"); // 6 - 2 = 4 > 3: expired
        assert!(!s.sessions().contains(1));
        assert_eq!(
            apply(&mut s, 7, write),
            Err(ApplyError::SessionExpired { client_id: 1 })
        );
        assert_eq!(s.get(b"k").expect("k").version, 1);
    }

    #[test]
    fn session_table_is_bounded() {
        let config = KvConfig {
            sessions: SessionConfig {
                sessions_max: 3,
                idle_indexes_max: 1_000,
            },
        };
        let mut s = KvStore::new(config);
        for index in 1..=10 {
            apply(&mut s, index, Command::RegisterSession).expect("register");
            assert!(s.sessions().len() <= 3);
        }
        assert!((8..=10).all(|id| s.sessions().contains(id)));
        assert!(matches!(
            apply(
                &mut s,
                11,
                Command::put("k", "v").with_session(Session {
                    client_id: 7,
                    sequence: 1
                })
            ),
            Err(ApplyError::SessionExpired { client_id: 7 })
        ));
    }

    #[test]
    fn skipped_and_marked_indexes_give_the_same_results() {
        let config = KvConfig {
            sessions: SessionConfig {
                sessions_max: 2,
                idle_indexes_max: 3,
            },
        };
        let mut marking = KvStore::new(config);
        let mut skipping = KvStore::new(config);
        let write = |client_id: u64, sequence: u64| {
            Command::put("k", sequence.to_string()).with_session(Session {
                client_id,
                sequence,
            })
        };
        // (index, command); the indexes in between are not state-machine entries.
        let script = [
            (1, Command::RegisterSession),
            (2, write(1, 1)),
            (5, write(1, 2)), // 5 - 2 = 3: still live
            (6, Command::RegisterSession),
            (9, write(1, 2)), // 9 - 5 = 4: expired
            (10, Command::RegisterSession),
            (11, Command::RegisterSession), // full: evicts 6
            (12, write(6, 1)),
            (13, write(10, 1)),
        ];
        let mut last = 0;
        for (index, command) in script {
            for gap in last + 1..index {
                marking.mark_applied(gap).expect("increasing");
            }
            last = index;
            let a = marking.apply(index, &command.encode());
            let b = skipping.apply(index, &command.encode());
            assert_eq!(a, b, "index {index}");
            marking.check_invariants().expect("invariants hold");
        }
        assert_eq!(marking, skipping);
        assert_eq!(
            skipping.apply(9 + 100, &write(1, 3).encode()),
            Err(ApplyError::SessionExpired { client_id: 1 })
        );
        assert!(!marking.sessions().contains(6));
        assert!(marking.sessions().contains(10) && marking.sessions().contains(11));
        assert_eq!(marking.get(b"k").expect("k").value, b("1"));
    }

    #[test]
    fn ranges_and_counts() {
        let mut s = store();
        for (i, key) in ["a/1", "a/2", "a/3", "a0", "b"].iter().enumerate() {
            apply(&mut s, i as u64 + 1, Command::put(*key, "v")).expect("put");
        }
        let keys = |r: &Range| r.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();
        let r = s.range_prefix(b"a/", 2);
        assert_eq!(keys(&r), vec![b("a/1"), b("a/2")]);
        assert!(r.more);
        let r = s.range_prefix_after(b"a/", b"a/2", 2);
        assert_eq!(keys(&r), vec![b("a/3")]);
        assert!(!r.more);
        // `after` below the prefix starts at the prefix.
        assert_eq!(keys(&s.range_prefix_after(b"a/", b"", 10)).len(), 3);
        assert_eq!(s.range_prefix(b"", 100).kvs.len(), 5);
        assert_eq!(
            s.range_prefix(b"a/", 0),
            Range {
                kvs: vec![],
                more: true
            }
        );
        assert_eq!(s.count_prefix(b"a"), 4);
        assert_eq!(s.count_prefix(b""), 5);
        assert_eq!(s.count_prefix(b"c"), 0);
    }

    #[test]
    fn range_limit_is_clamped() {
        let mut s = store();
        for i in 0..(RANGE_LIMIT_MAX as u64 + 5) {
            s.apply_command(i + 1, Command::put(format!("k{i:06}"), ""))
                .expect("put");
        }
        let r = s.range_prefix(b"k", usize::MAX);
        assert_eq!(r.kvs.len(), RANGE_LIMIT_MAX);
        assert!(r.more);
    }

    #[test]
    fn data_bytes_counts_every_key_and_follows_every_write() {
        // Given an empty store
        let mut s = store();
        assert_eq!(s.data_bytes(), 0);
        let cost = |k: &str, v: &str| (k.len() + v.len()) as u64 + KV_OVERHEAD_BYTES;
        // When keys are created, replaced and deleted, then data_bytes follows
        apply(&mut s, 1, Command::put("a", "1")).expect("put");
        apply(&mut s, 2, Command::put("bb", "22")).expect("put");
        assert_eq!(s.data_bytes(), cost("a", "1") + cost("bb", "22"));
        apply(&mut s, 3, Command::put("a", "longer")).expect("put");
        assert_eq!(s.data_bytes(), cost("a", "longer") + cost("bb", "22"));
        apply(&mut s, 4, Command::delete("bb")).expect("delete");
        apply(
            &mut s,
            5,
            Command::compare_and_swap("c", Compare::Version(0), CasAction::Put(b("x"))),
        )
        .expect("cas");
        assert_eq!(s.data_bytes(), cost("a", "longer") + cost("c", "x"));
        apply(&mut s, 6, Command::delete_prefix("")).expect("delete prefix");
        assert_eq!(s.data_bytes(), 0);
    }

    #[test]
    fn a_view_keeps_the_state_of_its_index_while_the_store_goes_on() {
        // Given a store deep enough for several tree levels, and a view of it
        let mut s = store();
        for i in 0..200u64 {
            apply(&mut s, i + 1, Command::put(format!("k{i:03}"), "old")).expect("put");
        }
        let view = s.view();
        let before = s.clone();
        // When the store replaces, deletes and adds keys
        apply(&mut s, 201, Command::put("k005", "new")).expect("put");
        apply(&mut s, 202, Command::delete_prefix("k1")).expect("delete prefix");
        apply(&mut s, 203, Command::put("z", "new")).expect("put");
        apply(&mut s, 204, Command::RegisterSession).expect("register");
        // Then the view is the store as of index 200
        assert_eq!(view.applied_index(), 200);
        assert_eq!(view.revision(), 200);
        assert_eq!(view.len(), 200);
        assert!(view.kvs().all(|kv| kv.value == b("old")));
        assert!(view.sessions().is_empty());
        assert_eq!(view.to_store(), before);
        view.to_store().check_invariants().expect("invariants hold");
        assert_eq!(s.len(), 200 - 100 + 1);
    }

    #[test]
    fn from_sorted_checks_what_restore_checked() {
        let kv = |key: &str, create: u64, modified: u64| KeyValue {
            key: b(key),
            value: b("v"),
            create_revision: create,
            mod_revision: modified,
            version: 1,
        };
        let build = |kvs: Vec<KeyValue>, revision: u64| {
            KvStore::from_sorted(KvConfig::default(), 10, revision, kvs.into_iter(), vec![])
        };
        let store = build(vec![kv("a", 1, 2), kv("b", 3, 3)], 5).expect("valid");
        assert_eq!(store.len(), 2);
        assert_eq!(store.data_bytes(), 2 * (1 + 1 + KV_OVERHEAD_BYTES));
        assert_eq!(
            build(vec![kv("b", 1, 1), kv("a", 1, 1)], 5),
            Err(InvariantError::KeysNotSorted { key: b("a") })
        );
        assert_eq!(
            build(vec![kv("a", 1, 1), kv("a", 1, 1)], 5),
            Err(InvariantError::KeysNotSorted { key: b("a") })
        );
        assert!(matches!(
            build(vec![kv("", 1, 1)], 5),
            Err(InvariantError::Limit {
                error: ValidationError::EmptyKey,
                ..
            })
        ));
        assert!(matches!(
            build(vec![kv("a", 3, 2)], 5),
            Err(InvariantError::Revisions { .. })
        ));
        assert!(matches!(
            build(vec![kv("a", 1, 6)], 5),
            Err(InvariantError::Revisions { .. })
        ));
        assert!(matches!(
            build(vec![], 11),
            Err(InvariantError::RevisionAboveApplied { .. })
        ));
    }

    #[test]
    fn the_store_keeps_no_reference_to_a_command_buffer() {
        // Given a put whose key and value are slices of a large received buffer
        let buffer = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut s = store();
        let put = Command::Write(Write {
            session: None,
            op: WriteOp::Put {
                key: buffer.slice(0..16),
                value: buffer.slice(16..116),
                prev_kv: true,
            },
        });
        // When it is applied, twice (the second answer carries the previous key-value)
        s.apply_command(1, put.clone()).expect("put");
        let answer = s.apply_command(2, put).expect("put");
        drop(answer);
        // Then nothing in the store still points into the buffer
        assert!(buffer.is_unique());
        assert_eq!(s.get(&[b'x'; 16]).expect("stored").value.len(), 100);
    }
}
