//! Property tests of the state machine against a model, of determinism across snapshot
//! restores, of point-in-time views while writes continue, and of apply on hostile bytes.
//!
//! The model is a plain `BTreeMap` with the revision rules written out the obvious way, plus a
//! map of sessions with no bound (the tests keep well inside the default bounds); eviction and
//! expiry are exercised by the determinism test with tiny bounds, where the property is that a
//! store restored from a snapshot at any point behaves exactly like the original.

use std::collections::BTreeMap;

use bytes::Bytes;
use kv::{
    ApplyError, CasAction, Command, Compare, KeyValue, KvConfig, KvStore, KvView, Outcome,
    Response, Session, SessionConfig, SessionRecord, Snapshot, Write, WriteOp,
};
use proptest::prelude::*;

/// Keys and prefixes from a tiny alphabet so that operations collide often.
fn key() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'/')], 1..=3)
        .prop_map(Bytes::from)
}

fn prefix() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'/')], 0..=2)
        .prop_map(Bytes::from)
}

fn value() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(0u8..3, 0..=2).prop_map(Bytes::from)
}

fn write_op() -> impl Strategy<Value = WriteOp> {
    prop_oneof![
        4 => (key(), value(), any::<bool>()).prop_map(|(key, value, prev_kv)| WriteOp::Put { key, value, prev_kv }),
        2 => (key(), any::<bool>()).prop_map(|(key, prev_kv)| WriteOp::Delete { key, prev_kv }),
        1 => prefix().prop_map(|prefix| WriteOp::DeletePrefix { prefix }),
        2 => (key(), 0u64..4, proptest::option::of(value())).prop_map(|(key, v, put)| {
            WriteOp::CompareAndSwap { key, compare: Compare::Version(v), action: action(put) }
        }),
        2 => (key(), value(), proptest::option::of(value())).prop_map(|(key, expected, put)| {
            WriteOp::CompareAndSwap { key, compare: Compare::Value(expected), action: action(put) }
        }),
    ]
}

fn action(put: Option<Bytes>) -> CasAction {
    put.map_or(CasAction::Delete, CasAction::Put)
}

#[derive(Debug, Clone)]
enum Step {
    /// A write, with a session of the client in this slot (if any client is registered).
    Write {
        op: WriteOp,
        client: Option<u8>,
    },
    /// The client in this slot resends its latest write unchanged.
    Retry(u8),
    /// The client in this slot sends a new write with an old sequence number.
    Stale(u8, WriteOp),
    /// The client in this slot sends another write with its latest sequence number.
    Reuse(u8, WriteOp),
    /// A write with a session that was never registered.
    Unknown(WriteOp),
    Register,
    Noop,
    /// An index the state machine does not interpret.
    Skip,
    /// Bytes that are probably not a command.
    Garbage(Vec<u8>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (write_op(), proptest::option::of(any::<u8>())).prop_map(|(op, client)| Step::Write { op, client }),
        3 => any::<u8>().prop_map(Step::Retry),
        1 => (any::<u8>(), write_op()).prop_map(|(c, op)| Step::Stale(c, op)),
        2 => (any::<u8>(), write_op()).prop_map(|(c, op)| Step::Reuse(c, op)),
        1 => write_op().prop_map(Step::Unknown),
        1 => Just(Step::Register),
        1 => Just(Step::Noop),
        1 => Just(Step::Skip),
        1 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(Step::Garbage),
    ]
}

/// Index gaps between steps: mostly 1, sometimes more.
fn steps() -> impl Strategy<Value = Vec<(Step, u64)>> {
    proptest::collection::vec((step(), prop_oneof![4 => Just(1u64), 1 => 2u64..5]), 1..120)
}

#[derive(Debug, Clone, PartialEq)]
struct ModelValue {
    value: Bytes,
    create: u64,
    modified: u64,
    version: u64,
}

#[derive(Default)]
struct Model {
    map: BTreeMap<Bytes, ModelValue>,
    revision: u64,
    /// Client slot order: ids of registered clients.
    clients: Vec<u64>,
    /// Per client: its latest (sequence, command, response).
    last: BTreeMap<u64, (u64, Command, Response)>,
}

impl Model {
    fn kv(&self, key: &Bytes) -> Option<KeyValue> {
        self.map.get(key).map(|m| KeyValue {
            key: key.clone(),
            value: m.value.clone(),
            create_revision: m.create,
            mod_revision: m.modified,
            version: m.version,
        })
    }

    fn put(&mut self, index: u64, key: Bytes, value: Bytes) {
        let (create, version) = match self.map.get(&key) {
            Some(m) => (m.create, m.version + 1),
            None => (index, 1),
        };
        self.map.insert(
            key,
            ModelValue {
                value,
                create,
                modified: index,
                version,
            },
        );
        self.revision = index;
    }

    fn write(&mut self, index: u64, op: &WriteOp) -> Outcome {
        match op.clone() {
            WriteOp::Put {
                key,
                value,
                prev_kv,
            } => {
                let prev = if prev_kv { self.kv(&key) } else { None };
                self.put(index, key, value);
                Outcome::Put {
                    revision: index,
                    prev,
                }
            }
            WriteOp::Delete { key, prev_kv } => {
                let prev = self.kv(&key);
                if prev.is_some() {
                    self.map.remove(&key);
                    self.revision = index;
                }
                Outcome::Delete {
                    revision: self.revision,
                    deleted: u64::from(prev.is_some()),
                    prev: if prev_kv { prev } else { None },
                }
            }
            WriteOp::DeletePrefix { prefix } => {
                let before = self.map.len();
                self.map.retain(|k, _| !k.starts_with(&prefix));
                let deleted = (before - self.map.len()) as u64;
                if deleted > 0 {
                    self.revision = index;
                }
                Outcome::DeletePrefix {
                    revision: self.revision,
                    deleted,
                }
            }
            WriteOp::CompareAndSwap {
                key,
                compare,
                action,
            } => {
                let current = self.map.get(&key).cloned();
                let holds = match (&compare, &current) {
                    (Compare::Value(v), Some(m)) => m.value == *v,
                    (Compare::Value(_), None) => false,
                    (Compare::Version(v), Some(m)) => m.version == *v,
                    (Compare::Version(v), None) => *v == 0,
                };
                if !holds {
                    let (version, mod_revision) =
                        current.map_or((0, 0), |m| (m.version, m.modified));
                    return Outcome::CompareAndSwap {
                        succeeded: false,
                        revision: self.revision,
                        version,
                        mod_revision,
                    };
                }
                match action {
                    CasAction::Put(value) => {
                        self.put(index, key.clone(), value);
                        let m = &self.map[&key];
                        Outcome::CompareAndSwap {
                            succeeded: true,
                            revision: index,
                            version: m.version,
                            mod_revision: index,
                        }
                    }
                    CasAction::Delete => {
                        if self.map.remove(&key).is_some() {
                            self.revision = index;
                        }
                        Outcome::CompareAndSwap {
                            succeeded: true,
                            revision: self.revision,
                            version: 0,
                            mod_revision: 0,
                        }
                    }
                }
            }
        }
    }

    fn client(&self, slot: u8) -> Option<u64> {
        (!self.clients.is_empty()).then(|| self.clients[slot as usize % self.clients.len()])
    }

    fn next_sequence(&self, client_id: u64) -> u64 {
        self.last.get(&client_id).map_or(1, |(seq, _, _)| seq + 1)
    }
}

fn with_session(op: WriteOp, client_id: u64, sequence: u64) -> Command {
    Command::Write(Write {
        session: Some(Session {
            client_id,
            sequence,
        }),
        op,
    })
}

fn assert_same_state(store: &KvStore, model: &Model) {
    let all = store.range_prefix(b"", usize::MAX);
    assert!(!all.more);
    let expected: Vec<KeyValue> = model
        .map
        .keys()
        .map(|k| model.kv(k).expect("model key"))
        .collect();
    assert_eq!(all.kvs, expected);
    assert_eq!(store.revision(), model.revision);
    for prefix in [&b""[..], b"a", b"a/", b"b"] {
        let count = model.map.keys().filter(|k| k.starts_with(prefix)).count() as u64;
        assert_eq!(store.count_prefix(prefix), count);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every response and the whole state match the model after every step, including
    /// retries, stale and unknown sessions, gaps and garbage.
    #[test]
    fn store_matches_model(steps in steps()) {
        let mut store = KvStore::new(KvConfig::default());
        let mut model = Model::default();
        let mut index = 0u64;
        for (step, gap) in steps {
            index += gap;
            let before = store.clone();
            match step {
                Step::Write { op, client } => {
                    let session = client.and_then(|slot| model.client(slot));
                    let (command, sequence) = match session {
                        Some(id) => {
                            let seq = model.next_sequence(id);
                            (with_session(op.clone(), id, seq), seq)
                        }
                        None => (Command::Write(Write { session: None, op: op.clone() }), 0),
                    };
                    let response = store.apply(index, &command.encode());
                    let expected = Ok(model.write(index, &op));
                    prop_assert_eq!(&response, &expected);
                    if let Some(id) = session {
                        model.last.insert(id, (sequence, command, expected));
                    }
                }
                Step::Retry(slot) => {
                    let Some((_, command, cached)) = model.client(slot).and_then(|id| model.last.get(&id)).cloned()
                    else {
                        store.mark_applied(index).expect("index increases");
                        continue;
                    };
                    let response = store.apply(index, &command.encode());
                    prop_assert_eq!(response, cached);
                    // Nothing but the applied index (and the session's last use) changed.
                    prop_assert_eq!(store.range_prefix(b"", usize::MAX), before.range_prefix(b"", usize::MAX));
                    prop_assert_eq!(store.revision(), before.revision());
                }
                Step::Stale(slot, op) => {
                    let Some((id, last_sequence)) = model
                        .client(slot)
                        .and_then(|id| model.last.get(&id).map(|(seq, _, _)| (id, *seq)))
                    else {
                        store.mark_applied(index).expect("index increases");
                        continue;
                    };
                    let response = store.apply(index, &with_session(op, id, last_sequence - 1).encode());
                    prop_assert_eq!(
                        response,
                        Err(ApplyError::StaleSequence { client_id: id, sequence: last_sequence - 1, last_sequence })
                    );
                    prop_assert_eq!(store.range_prefix(b"", usize::MAX), before.range_prefix(b"", usize::MAX));
                }
                Step::Reuse(slot, op) => {
                    let Some((id, (sequence, command, cached))) = model
                        .client(slot)
                        .and_then(|id| model.last.get(&id).cloned().map(|last| (id, last)))
                    else {
                        store.mark_applied(index).expect("index increases");
                        continue;
                    };
                    let response = store.apply(index, &with_session(op.clone(), id, sequence).encode());
                    // The same write is a retry; any other is refused as a reuse.
                    let same = matches!(&command, Command::Write(Write { op: sent, .. }) if *sent == op);
                    let expected = if same {
                        cached
                    } else {
                        Err(ApplyError::SequenceReused { client_id: id, sequence })
                    };
                    prop_assert_eq!(response, expected);
                    prop_assert_eq!(store.range_prefix(b"", usize::MAX), before.range_prefix(b"", usize::MAX));
                    prop_assert_eq!(store.revision(), before.revision());
                }
                Step::Unknown(op) => {
                    // Session ids are indexes of registrations; index + 1 is never one yet.
                    let response = store.apply(index, &with_session(op, index + 1, 1).encode());
                    prop_assert_eq!(response, Err(ApplyError::SessionExpired { client_id: index + 1 }));
                }
                Step::Register => {
                    let response = store.apply(index, &Command::RegisterSession.encode());
                    prop_assert_eq!(response, Ok(Outcome::SessionRegistered { client_id: index }));
                    model.clients.push(index);
                }
                Step::Noop => {
                    let response = store.apply(index, &Command::Noop.encode());
                    prop_assert_eq!(response, Ok(Outcome::Noop { revision: model.revision }));
                }
                Step::Skip => store.mark_applied(index).expect("index increases"),
                Step::Garbage(bytes) => {
                    // Random bytes may happen to be a valid command; then the model applies it.
                    match kv::decode(&bytes) {
                        Ok(command) => {
                            let expected = store.clone().apply_command(index, command);
                            prop_assume!(matches!(expected, Ok(Outcome::Noop { .. }) | Err(_)));
                            prop_assert_eq!(store.apply(index, &bytes), expected);
                        }
                        Err(error) => {
                            prop_assert_eq!(store.apply(index, &bytes), Err(ApplyError::Decode(error)));
                            prop_assert_eq!(store.range_prefix(b"", usize::MAX), before.range_prefix(b"", usize::MAX));
                        }
                    }
                }
            }
            prop_assert_eq!(store.applied_index(), index);
            store.check_invariants().expect("invariants hold after every step");
            assert_same_state(&store, &model);
        }
    }

    /// Snapshot at any point, encode, decode, restore: the restored store equals the original
    /// and answers every later entry identically (including session eviction and expiry with
    /// tiny bounds, and retries that race them).
    #[test]
    fn snapshot_restore_is_indistinguishable(
        commands in proptest::collection::vec(
            (prop_oneof![
                3 => write_op().prop_map(|op| (op, None)),
                3 => (write_op(), 0u64..8, 1u64..4).prop_map(|(op, c, s)| (op, Some((c, s)))),
            ], prop_oneof![
                6 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8),
            ], 1u64..3),
            1..80,
        ),
        cut in any::<prop::sample::Index>(),
        term in 1u64..10,
        config in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let small = KvConfig { sessions: SessionConfig { sessions_max: 3, idle_indexes_max: 6 } };
        // Session writes pick among the sessions registered so far (by slot), or an id that
        // was never registered when there are none, so retries, stale sequences, eviction and
        // expiry all happen.
        let mut registered: Vec<u64> = Vec::new();
        let mut index = 0;
        let mut encoded: Vec<(Vec<u8>, u64)> = Vec::new();
        for ((op, session), kind, gap) in commands {
            index += gap;
            let command = match kind {
                1 => {
                    registered.push(index);
                    Command::RegisterSession
                }
                2 => Command::Noop,
                _ => match session {
                    Some((slot, sequence)) => {
                        let client_id = if registered.is_empty() {
                            u64::MAX
                        } else {
                            registered[slot as usize % registered.len()]
                        };
                        with_session(op, client_id, sequence)
                    }
                    None => Command::Write(Write { session: None, op }),
                },
            };
            encoded.push((command.encode(), gap));
        }
        let cut = cut.index(encoded.len() + 1);
        let mut original = KvStore::new(small);
        let mut index = 0;
        for (bytes, gap) in &encoded[..cut] {
            index += gap;
            let _ = original.apply(index, bytes);
            original.check_invariants().expect("invariants hold");
        }
        let snapshot = original.snapshot(term, Bytes::from(config.clone()));
        prop_assert_eq!(snapshot.meta.index, original.applied_index());
        let decoded = Snapshot::decode(&snapshot.encode()).expect("a fresh snapshot decodes");
        prop_assert_eq!(&decoded, &snapshot);
        prop_assert_eq!(decoded.meta.config.as_ref(), &config[..]);
        let mut restored = KvStore::restore(decoded, small).expect("a fresh snapshot restores");
        prop_assert_eq!(&restored, &original);
        for (bytes, gap) in &encoded[cut..] {
            index += gap;
            prop_assert_eq!(restored.apply(index, bytes), original.apply(index, bytes));
            restored.check_invariants().expect("invariants hold");
        }
        prop_assert_eq!(restored, original);
    }

    /// Arbitrary bytes and damaged encodings never panic, always advance the applied index and
    /// leave the store consistent.
    #[test]
    fn hostile_bytes_never_break_the_store(
        inputs in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                (write_op(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(op, at, xor)| {
                    let mut bytes = Command::Write(Write { session: None, op }).encode();
                    let i = at.index(bytes.len());
                    bytes[i] ^= xor;
                    bytes
                }),
            ],
            1..40,
        )
    ) {
        let mut store = KvStore::new(KvConfig::default());
        for (i, bytes) in inputs.iter().enumerate() {
            let index = i as u64 + 1;
            let _ = store.apply(index, bytes);
            prop_assert_eq!(store.applied_index(), index);
            store.check_invariants().expect("invariants hold after hostile input");
        }
    }

    /// A view taken while writes continue equals the state at its index: after many more
    /// writes (puts, deletes, prefix deletes that merge and shrink the tree, sessions that
    /// expire), each view still equals, exactly, the store as it was when the view was taken.
    /// The reference is both a `clone()` of the store and a deep copy of its contents (the
    /// clone shares the tree too, so it alone could not catch a write leaking into shared
    /// nodes).
    #[test]
    fn a_view_taken_while_writes_continue_equals_the_state_at_its_index(
        initial in 0u32..3_000,
        steps in proptest::collection::vec(
            (prop_oneof![
                4 => view_write_op().prop_map(|op| (op, None)),
                2 => (view_write_op(), 0u64..8, 1u64..4).prop_map(|(op, c, s)| (op, Some((c, s)))),
                1 => Just((WriteOp::DeletePrefix { prefix: Bytes::from_static(b"many/0") }, None)),
            ], prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)], any::<bool>(), 1u64..3),
            1..150,
        ),
    ) {
        let config = KvConfig { sessions: SessionConfig { sessions_max: 3, idle_indexes_max: 20 } };
        let mut store = KvStore::new(config);
        let mut index = 0u64;
        // A store deep enough that writes copy paths of several levels.
        for i in 0..initial {
            index += 1;
            store.apply(index, &Command::put(many_key(i), vec![b'v'; 20]).encode()).expect("put");
        }
        let mut registered: Vec<u64> = Vec::new();
        let mut views: Vec<(KvView, KvStore, Contents)> = Vec::new();
        for ((op, session), kind, take_view, gap) in steps {
            if take_view {
                views.push((store.view(), store.clone(), Contents::of(&store)));
            }
            index += gap;
            let command = match kind {
                1 => {
                    registered.push(index);
                    Command::RegisterSession
                }
                2 => Command::Noop,
                _ => match session {
                    Some((slot, sequence)) if !registered.is_empty() => {
                        with_session(op, registered[slot as usize % registered.len()], sequence)
                    }
                    _ => Command::Write(Write { session: None, op }),
                },
            };
            let _ = store.apply(index, &command.encode());
        }
        store.check_invariants().expect("invariants hold");
        for (view, reference, contents) in views {
            let as_store = view.to_store();
            as_store.check_invariants().expect("a view's store is consistent");
            prop_assert_eq!(&as_store, &reference);
            prop_assert_eq!(Contents::of(&as_store), contents.clone());
            prop_assert_eq!(view.kvs().collect::<Vec<_>>(), contents.kvs);
            prop_assert_eq!(view.sessions(), contents.sessions);
            prop_assert_eq!(view.applied_index(), contents.applied_index);
            prop_assert_eq!(view.revision(), contents.revision);
            prop_assert_eq!(view.len(), reference.len());
            prop_assert_eq!(view.data_bytes(), reference.data_bytes());
        }
    }
}

/// Keys of the bulk of a store in the view test: `many/` and five digits.
fn many_key(i: u32) -> Bytes {
    Bytes::from(format!("many/{i:05}"))
}

/// Writes for the view test: the small colliding keys of the model test, or keys of the bulk.
fn view_write_op() -> impl Strategy<Value = WriteOp> {
    prop_oneof![
        2 => write_op(),
        2 => (0u32..3_500, value(), any::<bool>()).prop_map(|(i, value, prev_kv)| WriteOp::Put { key: many_key(i), value, prev_kv }),
        2 => (0u32..3_500, any::<bool>()).prop_map(|(i, prev_kv)| WriteOp::Delete { key: many_key(i), prev_kv }),
    ]
}

/// A deep copy of a store's contents, shared with nothing.
#[derive(Debug, Clone, PartialEq)]
struct Contents {
    kvs: Vec<KeyValue>,
    sessions: Vec<SessionRecord>,
    applied_index: u64,
    revision: u64,
}

impl Contents {
    fn of(store: &KvStore) -> Contents {
        let snapshot = store.snapshot(1, Bytes::new());
        Contents {
            kvs: snapshot.kvs,
            sessions: snapshot.sessions,
            applied_index: store.applied_index(),
            revision: store.revision(),
        }
    }
}
