//! The state machine at a million keys: what a new-key write costs, what a point-in-time view
//! costs (and a write while one lives, which copies the path it touches), and how long a
//! restore's bulk build takes.
//!
//! Method: one store is built once by applying `KEYS` new-key puts (16-byte keys, 100-byte
//! values, increasing like a growing keyspace), as the node's apply task does. Then:
//! - `apply_new_key_put`: one more new-key put through `apply` (decode, validate, insert);
//! - `view_then_write`: `view()`, then a new-key put while the view is alive, then the view
//!   dropped (the write copies the nodes on its path, the drop frees the old ones);
//! - `apply_new_key_put_random` (own store): a new-key put at a random position of a store of
//!   `KEYS` scrambled keys (`n` + a 6-hex-digit run tag + a scrambled 9-hex-digit counter,
//!   16 bytes, as the restart benchmark writes), where every probe of the descent lands on a
//!   different part of the tree;
//! - `get_random`: `get` of a random key present in that store;
//! - `view_with_full_session_table`: `view()` of a store holding the default bound of
//!   10,000 client sessions, each with a cached answer (the view copies the session table);
//! - `from_sorted_1m`: a store rebuilt from the million key-values in one pass (restore).
//!
//! Run with `cargo bench -p kv --bench store`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kv::{Command, KeyValue, KvConfig, KvStore, SESSIONS_MAX_DEFAULT, Session};
use util::SplitMix64;

/// Keys in the store under test.
const KEYS: u64 = 1_000_000;
/// Value size, in bytes, as in issue 12's workload.
const VALUE_BYTES: usize = 100;

/// A 16-byte key: "key-" and twelve digits, so that keys sort in numeric order.
fn key(i: u64) -> String {
    format!("key-{i:012}")
}

fn put(i: u64) -> Vec<u8> {
    Command::put(key(i), vec![b'v'; VALUE_BYTES]).encode()
}

fn million() -> KvStore {
    let mut store = KvStore::new(KvConfig::default());
    for i in 0..KEYS {
        store.apply(i + 1, &put(i)).expect("put");
    }
    store
}

/// Bits of the scrambled counter in [`scrambled_key`]: nine hex digits, so that the keys of a
/// few million puts almost never collide (a collision is a replacement, not a new key).
const SCRAMBLED_MASK: u64 = (1 << 36) - 1;

/// A 16-byte key at a random position: "n", a run tag, and the scrambled counter `i`
/// (SplitMix64's first draw from `i`: a bijection that scatters consecutive counters).
fn scrambled_key(i: u64) -> String {
    format!(
        "n1f3a9c{:09x}",
        SplitMix64::new(i).next_u64() & SCRAMBLED_MASK
    )
}

fn scrambled_put(i: u64) -> Vec<u8> {
    Command::put(scrambled_key(i), vec![b'v'; VALUE_BYTES]).encode()
}

fn bench(c: &mut Criterion) {
    let mut store = million();
    let mut next = KEYS;
    // Entries encoded ahead, so that the measured time is apply's alone.
    let encoded: Vec<Vec<u8>> = (0..2_000_000).map(|i| put(KEYS + i)).collect();
    let mut group = c.benchmark_group("kv_1m_keys");
    group.throughput(Throughput::Elements(1));
    group.bench_function("apply_new_key_put", |b| {
        b.iter(|| {
            let entry = &encoded[((next - KEYS) as usize) % encoded.len()];
            next += 1;
            black_box(store.apply(next, entry))
        })
    });
    group.bench_function("view_then_write", |b| {
        b.iter(|| {
            let view = store.view();
            let entry = &encoded[((next - KEYS) as usize) % encoded.len()];
            next += 1;
            let response = store.apply(next, entry);
            drop(black_box(view));
            black_box(response)
        })
    });
    drop(store);
    drop(encoded);

    let mut store = KvStore::new(KvConfig::default());
    for i in 0..KEYS {
        store.apply(i + 1, &scrambled_put(i)).expect("put");
    }
    let mut next = KEYS;
    let encoded: Vec<Vec<u8>> = (0..2_000_000).map(|i| scrambled_put(KEYS + i)).collect();
    group.bench_function("apply_new_key_put_random", |b| {
        b.iter(|| {
            let entry = &encoded[((next - KEYS) as usize) % encoded.len()];
            next += 1;
            black_box(store.apply(next, entry))
        })
    });
    drop(encoded);
    let present: Vec<Vec<u8>> = (0..KEYS).map(|i| scrambled_key(i).into_bytes()).collect();
    let mut probe = 0usize;
    group.bench_function("get_random", |b| {
        b.iter(|| {
            // A stride prime to KEYS visits the keys in an order unrelated to their positions.
            probe = (probe + 7_919) % present.len();
            black_box(store.get(&present[probe]))
        })
    });
    drop(store);

    let mut sessions = KvStore::new(KvConfig::default());
    let mut index = 0;
    for client in 0..SESSIONS_MAX_DEFAULT as u64 {
        index += 1;
        let client_id = index;
        sessions
            .apply(index, &Command::RegisterSession.encode())
            .expect("register");
        index += 1;
        let write = Command::put(key(client), vec![b'v'; VALUE_BYTES]).with_session(Session {
            client_id,
            sequence: 1,
        });
        sessions.apply(index, &write.encode()).expect("put");
    }
    assert_eq!(sessions.sessions().len(), SESSIONS_MAX_DEFAULT);
    group.bench_function("view_with_full_session_table", |b| {
        b.iter(|| black_box(sessions.view()))
    });
    group.finish();

    let kvs: Vec<KeyValue> = (0..KEYS)
        .map(|i| KeyValue {
            key: Bytes::from(key(i)),
            value: Bytes::from(vec![b'v'; VALUE_BYTES]),
            create_revision: i + 1,
            mod_revision: i + 1,
            version: 1,
        })
        .collect();
    let mut group = c.benchmark_group("kv_restore");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(KEYS));
    group.bench_function("from_sorted_1m", |b| {
        b.iter(|| {
            KvStore::from_sorted(KvConfig::default(), KEYS, KEYS, kvs.iter().cloned(), vec![])
                .expect("valid")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
