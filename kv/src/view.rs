//! PROVISIONAL (task A2): a point-in-time view of the store, done the simple way.
//!
//! Job: let the streamed snapshot writer and reader (`snapshot::format`) compile and be tested
//! before the persistent tree (task A1) lands. This whole file is replaced by A1's `view.rs`
//! at merge: here a view holds a full clone of the store (O(n) to take, not O(1)), and
//! [`KvStore::from_sorted`] inserts into today's `BTreeMap` one key at a time. The signatures
//! are the ones A1 provides, so the snapshot code does not change when this file does.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::command::KeyValue;
use crate::session::{SessionRecord, SessionTable};
use crate::store::{InvariantError, KvConfig, KvStore, StoredValue};

/// A consistent, immutable copy of the state at one applied index (provisional: a clone of the
/// whole store).
#[derive(Debug, Clone)]
pub struct KvView {
    store: Arc<KvStore>,
}

impl KvView {
    /// Index of the last entry applied when the view was taken.
    pub fn applied_index(&self) -> u64 {
        self.store.applied_index
    }

    /// The store revision when the view was taken.
    pub fn revision(&self) -> u64 {
        self.store.revision
    }

    /// Number of keys in the view.
    pub fn len(&self) -> usize {
        self.store.map.len()
    }

    /// Whether the view holds no keys.
    pub fn is_empty(&self) -> bool {
        self.store.map.is_empty()
    }

    /// Every key-value, in key order.
    pub fn kvs(&self) -> impl Iterator<Item = KeyValue> + '_ {
        self.store.map.iter().map(|(key, stored)| KeyValue {
            key: key.clone(),
            value: stored.value.clone(),
            create_revision: stored.create_revision,
            mod_revision: stored.mod_revision,
            version: stored.version,
        })
    }

    /// Every live session, in client-id order.
    pub fn sessions(&self) -> Vec<SessionRecord> {
        self.store.sessions.records()
    }

    /// The store as of the view.
    pub fn to_store(&self) -> KvStore {
        (*self.store).clone()
    }
}

impl KvStore {
    /// A consistent view of the whole state at the applied index (provisional: O(n)).
    pub fn view(&self) -> KvView {
        KvView {
            store: Arc::new(self.clone()),
        }
    }

    /// Builds a store from a snapshot's parts in one pass and checks every invariant
    /// ([`KvStore::check_invariants`], and strictly increasing keys).
    pub fn from_sorted(
        config: KvConfig,
        applied_index: u64,
        revision: u64,
        kvs: impl Iterator<Item = KeyValue>,
        sessions: Vec<SessionRecord>,
    ) -> Result<KvStore, InvariantError> {
        let mut map: BTreeMap<Bytes, StoredValue> = BTreeMap::new();
        for kv in kvs {
            if map
                .last_key_value()
                .is_some_and(|(last, _)| *last >= kv.key)
            {
                return Err(InvariantError::KeysNotSorted { key: kv.key });
            }
            map.insert(
                kv.key,
                StoredValue {
                    value: kv.value,
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                    version: kv.version,
                },
            );
        }
        let store = KvStore {
            map,
            sessions: SessionTable::from_records(config.sessions, sessions),
            applied_index,
            revision,
        };
        store.check_invariants()?;
        Ok(store)
    }
}
