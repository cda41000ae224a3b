//! `cargo bench -p kv --bench snapshot`: what a streamed snapshot (format 3) costs to write
//! and to load, for 100,000 and 1,000,000 keys of 16 B with 100 B values (the shape).
//!
//! - write: a view streamed into a snapshot file by [`SnapshotStore::write`] (buffered
//!   writer, fsync, rename, directory fsync);
//! - verify: [`verify_snapshot`] over the file (what a follower does before keeping one);
//! - load: [`SnapshotStore::load_with`], read and build the store (what a node does at start).
//!
//! Files go in a temporary directory under the target directory (on the build's disk, not a
//! tmpfs); `SNAPSHOT_BENCH_DIR` overrides it. The node's target is 1,000,000 keys ready in
//! under a second, this load included.

use std::path::PathBuf;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kv::{KeyValue, KvConfig, KvStore, SnapshotStore, verify_snapshot};

/// Key sizes of the bench, in keys.
const SIZES: [u64; 2] = [100_000, 1_000_000];
/// Value bytes per key (the wrk script).
const VALUE_BYTES: usize = 100;
/// Opaque config bytes written with each snapshot (a small cluster's records).
const CONFIG_BYTES: usize = 200;

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var("SNAPSHOT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    std::fs::create_dir_all(&base).expect("create the bench base directory");
    tempfile::tempdir_in(base).expect("a temporary directory for the bench")
}

/// A store of `keys` keys of 16 bytes (`key-000000000042`) with 100-byte values.
fn store_of(keys: u64) -> KvStore {
    let kvs = (1..=keys).map(|i| KeyValue {
        key: Bytes::from(format!("key-{i:012}")),
        value: Bytes::from(vec![b'v'; VALUE_BYTES]),
        create_revision: i,
        mod_revision: i,
        version: 1,
    });
    KvStore::from_sorted(KvConfig::default(), keys, keys, kvs, Vec::new())
        .expect("generated keys are sorted and within limits")
}

fn snapshot(c: &mut Criterion) {
    let dir = bench_dir();
    let files = SnapshotStore::open(dir.path().join("snapshots")).expect("open");
    let config = vec![b'c'; CONFIG_BYTES];
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    for keys in SIZES {
        let view = store_of(keys).view();
        group.throughput(Throughput::Elements(keys));
        // Each pass rewrites the same file (the rename replaces it), as its name is the
        // view's index.
        group.bench_with_input(BenchmarkId::new("write", keys), &keys, |b, _| {
            b.iter(|| {
                files
                    .write(view.applied_index(), 1, |out| {
                        view.write_snapshot(1, &config, out).map(drop)
                    })
                    .expect("write")
            })
        });
        // The file read below, written once whichever benches the filter selects.
        let file = files
            .write(view.applied_index(), 1, |out| {
                view.write_snapshot(1, &config, out).map(drop)
            })
            .expect("write");
        eprintln!("{keys} keys: {} bytes on disk", file.bytes);
        group.bench_with_input(BenchmarkId::new("verify", keys), &keys, |b, _| {
            b.iter(|| {
                let (mut handle, _) = files.open_snapshot(&file).expect("open");
                verify_snapshot(&mut handle).expect("verifies")
            })
        });
        // A starting node keeps the store: its drop is not part of the load.
        group.bench_with_input(BenchmarkId::new("load", keys), &keys, |b, _| {
            b.iter_with_large_drop(|| {
                let (_, store) = files.load_with(&file, KvConfig::default()).expect("load");
                assert_eq!(store.len() as u64, keys);
                store
            })
        });
    }
    group.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
