//! What recording metrics costs one request, on the CPU: what a PUT answered 200 records (the
//! HTTP request's counter and histogram, then the storage operation's) on one instrument set,
//! with metrics on and off, from one thread and from two at once (this machine's cores). Throughput runs
//! (scripts/bench-metrics.sh) are too noisy on this machine to resolve the 2% the issue allows
//! (docs/performance.md, "What metrics cost"); this gives the cost per request to set beside
//! the CPU a request takes.

use std::time::Instant;

use api::metrics::{Metrics, Operation, StorageOutcome};
use criterion::{Criterion, criterion_group, criterion_main};

fn record_put(metrics: &Metrics) {
    let started = Instant::now();
    metrics.storage(Operation::Put, Some(StorageOutcome::Ok), started);
    metrics.http_request(&hyper::Method::PUT, "/keys/user-42", 200, "ok", started);
}

fn recording(c: &mut Criterion) {
    let on = Metrics::new(true).expect("metrics set up");
    let off = Metrics::new(false).expect("metrics set up");
    let mut group = c.benchmark_group("recording a served PUT");
    group.bench_function("metrics on", |b| b.iter(|| record_put(&on)));
    group.bench_function("metrics off", |b| b.iter(|| record_put(&off)));
    group.bench_function("metrics on, 2 threads at once", |b| {
        b.iter_custom(|iterations| {
            let started = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..iterations {
                            record_put(&on);
                        }
                    });
                }
            });
            started.elapsed() / 2
        })
    });
    group.finish();
}

criterion_group!(benches, recording);
criterion_main!(benches);
