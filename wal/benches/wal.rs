//! `cargo bench -p wal`: what the log costs on this machine's disk.
//!
//! 1. The floor: a bare loop of 132-byte `write` + `fdatasync` on one growing file (the size
//!    of one record with a 100-byte payload), measured before each group-commit setting. A
//!    lone writer cannot beat one fsync per acknowledged write.
//! 2. Group commit: 1, 8 and 64 threads each appending one 100-byte entry at a time and waiting
//!    until it is durable, for several batch settings (the seed of 10 ms / 100 ops, and
//!    the defaults), reporting appends/s, p50/p99 latency and the mean batch per fsync.
//! 3. Recovery: open a log of about 1 GiB of 100-byte records and report MB/s and records/s.
//!
//! Knobs (environment): `WAL_BENCH_SECS` per run (default 3), `WAL_BENCH_RECOVERY_MB`
//! (default 1024), `WAL_BENCH_DIR` (default: a temporary directory under the target dir, so on
//! the same disk as the build, not a tmpfs).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use wal::{Entry, GroupCommit, GroupCommitConfig, RealFs, Wal, WalConfig, WalWriter};

/// The payload size the issue asks for.
const PAYLOAD_BYTES: usize = 100;
/// On-disk bytes of one such record: 28-byte header + payload + 4-byte CRC.
const RECORD_BYTES: usize = 28 + PAYLOAD_BYTES + 4;

fn secs() -> Duration {
    let s: f64 = std::env::var("WAL_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(s)
}

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var("WAL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    std::fs::create_dir_all(&base).expect("create the bench base directory");
    tempfile::tempdir_in(base).expect("a temporary directory for the bench")
}

fn progress(label: &str, total: Duration) -> ProgressBar {
    let bar = ProgressBar::new(total.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>38} [{bar:30}] {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

struct Stats {
    ops: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Stats {
    fn from(mut latencies: Vec<Duration>, elapsed: Duration) -> Stats {
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
        Stats {
            ops: latencies.len(),
            elapsed,
            p50: at(0.50),
            p99: at(0.99),
        }
    }

    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// The floor: write one record's worth of bytes and fdatasync, in a loop.
fn raw_fdatasync(dir: &Path, run_for: Duration) -> Stats {
    let bar = progress("raw write + fdatasync", run_for);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw"))
        .expect("open the raw file");
    let record = [0xA5u8; RECORD_BYTES];
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < run_for {
        let t = Instant::now();
        file.write_all(&record).expect("write");
        file.sync_data().expect("fdatasync");
        latencies.push(t.elapsed());
        if latencies.len() % 64 == 0 {
            bar.set_position(start.elapsed().as_millis() as u64);
        }
    }
    bar.finish_and_clear();
    Stats::from(latencies, start.elapsed())
}

/// `appenders` threads, each appending one entry at a time through group commit.
fn group_commit(
    dir: &Path,
    appenders: usize,
    config: GroupCommitConfig,
    run_for: Duration,
    label: &str,
) -> (Stats, f64) {
    let wal = Wal::open(RealFs, dir, WalConfig::default()).expect("open the log");
    let metrics = wal.metrics();
    let group = GroupCommit::new(wal, config).expect("a valid config");
    let bar = progress(label, run_for);
    let barrier = Arc::new(Barrier::new(appenders + 1));
    let handles: Vec<_> = (0..appenders)
        .map(|_| {
            let group = group.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let payload = vec![0x5Au8; PAYLOAD_BYTES];
                let mut latencies = Vec::new();
                barrier.wait();
                let start = Instant::now();
                while start.elapsed() < run_for {
                    let t = Instant::now();
                    group.append_next(1, vec![payload.clone()]).expect("append");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let before = metrics.snapshot();
    barrier.wait();
    let start = Instant::now();
    while start.elapsed() < run_for {
        thread::sleep(Duration::from_millis(50));
        bar.set_position(start.elapsed().as_millis() as u64);
    }
    let latencies: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("an appender thread"))
        .collect();
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    let after = metrics.snapshot();
    let fsyncs = (after.fsyncs - before.fsyncs).max(1);
    let per_fsync = (after.records_appended - before.records_appended) as f64 / fsyncs as f64;
    (Stats::from(latencies, elapsed), per_fsync)
}

/// Tries to empty the page cache (root only), so the next open reads from the disk.
fn drop_page_cache() -> bool {
    // Dirty pages cannot be dropped, so write them back first (std has no `sync(2)`).
    let synced = std::process::Command::new("sync")
        .status()
        .is_ok_and(|s| s.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// `appenders` async tasks on a 2-worker tokio runtime, each appending one entry at a time
/// through the dedicated writer thread of [`WalWriter`].
fn async_writer(dir: &Path, appenders: usize, run_for: Duration, label: &str) -> (Stats, f64) {
    let wal = Wal::open(RealFs, dir, WalConfig::default()).expect("open the log");
    let metrics = wal.metrics();
    let writer = WalWriter::start(wal, GroupCommitConfig::default()).expect("a valid config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let bar = progress(label, run_for);
    let before = metrics.snapshot();
    let start = Instant::now();
    let latencies: Vec<Duration> = runtime.block_on(async {
        let tasks: Vec<_> = (0..appenders)
            .map(|_| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    let payload = vec![0x5Au8; PAYLOAD_BYTES];
                    let mut latencies = Vec::new();
                    while start.elapsed() < run_for {
                        let t = Instant::now();
                        writer
                            .append_next(1, vec![payload.clone()])
                            .await
                            .expect("append");
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("an appender task"));
        }
        all
    });
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    let after = metrics.snapshot();
    let fsyncs = (after.fsyncs - before.fsyncs).max(1);
    let per_fsync = (after.records_appended - before.records_appended) as f64 / fsyncs as f64;
    (Stats::from(latencies, elapsed), per_fsync)
}

/// Writes about `mb` MiB of 100-byte records, then times `Wal::open` twice: first with the
/// page cache dropped when permitted (reading the disk), then warm (parsing and checksumming
/// alone). Returns (cold or `None`, warm, bytes, records).
fn recovery(dir: &Path, mb: u64) -> (Option<Duration>, Duration, u64, u64) {
    let records = mb * 1024 * 1024 / RECORD_BYTES as u64;
    let bar = ProgressBar::new(records);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>38} [{bar:30}] {pos}/{len} records")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("writing a {mb} MiB log"));
    {
        let mut wal = Wal::open(RealFs, dir, WalConfig::default()).expect("open the log");
        let payload = vec![0x3Cu8; PAYLOAD_BYTES];
        let chunk = 4096u64;
        let mut next = 1u64;
        while next <= records {
            let hi = (next + chunk).min(records + 1);
            let batch: Vec<Entry> = (next..hi)
                .map(|index| Entry {
                    index,
                    term: 1,
                    payload: payload.clone(),
                })
                .collect();
            wal.append(&batch).expect("append");
            next = hi;
            bar.set_position(next - 1);
        }
        wal.sync().expect("sync");
    }
    bar.finish_and_clear();
    let open = || {
        let start = Instant::now();
        let wal = Wal::open(RealFs, dir, WalConfig::default()).expect("reopen the log");
        let took = start.elapsed();
        assert_eq!(wal.last_index(), records, "recovery found every record");
        (took, wal.metrics_snapshot().bytes_on_disk)
    };
    let cold = drop_page_cache().then(|| open().0);
    let (warm, bytes) = open();
    (cold, warm, bytes, records)
}

/// Measures and prints the floor.
fn floor(dir: &Path, run_for: Duration) -> Stats {
    let raw = raw_fdatasync(dir, run_for);
    println!(
        "{:<44} {:>9.0} ops/s  p50 {:>8}  p99 {:>8}",
        "raw write+fdatasync (floor)",
        raw.ops_per_sec(),
        us(raw.p50),
        us(raw.p99)
    );
    raw
}

/// Prints one setting's line; for 64 appenders also the ratio to `single` (one appender's
/// throughput in the same setting), when known.
fn print_row(
    label: &str,
    stats: &Stats,
    per_fsync: f64,
    raw: &Stats,
    appenders: usize,
    single: Option<f64>,
) {
    let scale = match (appenders, single) {
        (64, Some(one)) => format!("  ({:.1}x one appender)", stats.ops_per_sec() / one),
        _ => String::new(),
    };
    println!(
        "{label:<44} {:>9.0} ops/s  p50 {:>8}  p99 {:>8}  {per_fsync:>6.1} records/fsync  p50 {:.2}x floor{scale}",
        stats.ops_per_sec(),
        us(stats.p50),
        us(stats.p99),
        stats.p50.as_secs_f64() / raw.p50.as_secs_f64(),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects parts by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |part: &str| filter.is_empty() || filter.iter().any(|f| part.contains(f.as_str()));
    let run_for = secs();
    let root = bench_dir();
    println!(
        "wal bench in {} ({run_for:?} per run)",
        root.path().display()
    );

    if wanted("append") {
        let configs = [
            (
                "seed: wait 10ms, 100 ops",
                GroupCommitConfig {
                    batch_ops_max: 100,
                    batch_bytes_max: wal::BATCH_BYTES_MAX_DEFAULT,
                    batch_wait: Duration::from_millis(10),
                },
            ),
            (
                "wait 200µs, 1024 ops",
                GroupCommitConfig {
                    batch_wait: Duration::from_micros(200),
                    ..GroupCommitConfig::default()
                },
            ),
            (
                "no wait, 100 ops",
                GroupCommitConfig {
                    batch_ops_max: 100,
                    ..GroupCommitConfig::default()
                },
            ),
            ("default: no wait, 1024 ops", GroupCommitConfig::default()),
        ];
        let mut single = None;
        for (name, config) in configs {
            // The floor is measured again right before each setting: the disk's speed drifts
            // on a shared machine, and the ratio is only fair against a neighbouring figure.
            let raw = floor(root.path(), run_for);
            for appenders in [1, 8, 64] {
                let dir = root.path().join(format!("gc-{appenders}-{}", name.len()));
                let label = format!("{name}, {appenders} appenders");
                let (stats, per_fsync) =
                    group_commit(&dir, appenders, config.clone(), run_for, &label);
                if name.starts_with("default") && appenders == 1 {
                    single = Some(stats.ops_per_sec());
                }
                let default_single = single.filter(|_| name.starts_with("default"));
                print_row(&label, &stats, per_fsync, &raw, appenders, default_single);
                std::fs::remove_dir_all(&dir).expect("clean up the run's log");
            }
        }
    }

    if wanted("async") {
        let raw = floor(root.path(), run_for);
        let mut single = None;
        for appenders in [1, 8, 64] {
            let dir = root.path().join(format!("async-{appenders}"));
            let label = format!("WalWriter (async tasks), {appenders} appenders");
            let (stats, per_fsync) = async_writer(&dir, appenders, run_for, &label);
            if appenders == 1 {
                single = Some(stats.ops_per_sec());
            }
            print_row(&label, &stats, per_fsync, &raw, appenders, single);
            std::fs::remove_dir_all(&dir).expect("clean up the run's log");
        }
    }

    if wanted("recovery") {
        let mb = std::env::var("WAL_BENCH_RECOVERY_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1024);
        let dir = root.path().join("recovery");
        let (cold, warm, bytes, records) = recovery(&dir, mb);
        let report = |label: &str, took: Duration| {
            println!(
                "{label:<44} {:>9.0} MB/s  {:>10.0} records/s  ({} MiB, {records} records in {took:.2?})",
                bytes as f64 / 1e6 / took.as_secs_f64(),
                records as f64 / took.as_secs_f64(),
                bytes / (1024 * 1024),
            );
        };
        match cold {
            Some(took) => report("recovery, page cache dropped", took),
            None => println!("recovery, page cache dropped: skipped (needs root to drop caches)"),
        }
        report("recovery, page cache warm (CRC + parse)", warm);
    }
}
