//! Point-in-time views of the state machine, for snapshots taken while apply goes on.
//!
//! Job: hand the snapshot writer a consistent, immutable copy of the whole replicated state
//! (map, sessions, applied index, revision) without stopping or slowing apply. A view shares
//! the map's tree with the live store ([`crate::tree::Tree`] is persistent), so taking one is
//! O(1) in the number of keys; the store's later writes copy only the nodes they touch.
//!
//! Invariant: a view never changes; it is the state exactly as of [`KvView::applied_index`].

use crate::command::KeyValue;
use crate::session::{SessionRecord, SessionTable};
use crate::store::{Entry, KvStore};
use crate::tree::Tree;

/// A consistent, immutable copy of the state at one applied index (O(1) to take; shares
/// structure with the live store, which goes on applying).
#[derive(Clone)]
pub struct KvView {
    pub(crate) map: Tree<Entry>,
    /// Copied when the view is taken: at most `sessions_max` records.
    pub(crate) sessions: SessionTable,
    pub(crate) applied_index: u64,
    pub(crate) revision: u64,
    pub(crate) data_bytes: u64,
}

impl KvView {
    /// The applied index the view stands for.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The store revision as of the view.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the view holds no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// [`KvStore::data_bytes`] as of the view.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Every key-value, in key order (each one copied out as it is read).
    pub fn kvs(&self) -> impl Iterator<Item = KeyValue> + '_ {
        self.map.iter().map(Entry::to_key_value)
    }

    /// Every live client session, in client-id order.
    pub fn sessions(&self) -> Vec<SessionRecord> {
        self.sessions.records()
    }

    /// The store as of the view (for tests and tools; shares the map with the view).
    pub fn to_store(&self) -> KvStore {
        KvStore {
            map: self.map.clone(),
            sessions: self.sessions.clone(),
            applied_index: self.applied_index,
            revision: self.revision,
            data_bytes: self.data_bytes,
        }
    }
}

impl std::fmt::Debug for KvView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvView")
            .field("applied_index", &self.applied_index)
            .field("revision", &self.revision)
            .field("len", &self.map.len())
            .field("data_bytes", &self.data_bytes)
            .finish_non_exhaustive()
    }
}

// A view is handed to a snapshot task on another thread, which also drops it there (freeing
// the nodes the store has replaced since, off the apply path).
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<KvView>();
};
