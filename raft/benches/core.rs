//! Throughput of the pure core (filled in below once the cluster loop exists).
use criterion::{Criterion, criterion_group, criterion_main};

fn noop(_c: &mut Criterion) {}

criterion_group!(benches, noop);
criterion_main!(benches);
