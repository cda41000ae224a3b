//! `cargo bench -p wal`: what the log costs on this machine's disk.
//!
//! 1. The floor: a bare loop of 132-byte `write` + `fdatasync` on one growing file (the size
//!    of one record with a 100-byte payload). One writer cannot beat one fsync per
//!    acknowledged write.
//! 2. The node's path: batches of 1, 8 and 64 entries of 100 bytes, each written with one
//!    `append` and made durable with one fsync, as the Raft node persists one `Ready`; the
//!    fsync either in place (`Wal::sync`) or on another thread (`begin_sync`, `run` on a
//!    dedicated thread, `finish_sync`), as the server runs it. Reports entries/s and the
//!    p50/p99 time to make a batch durable.
//! 3. Recovery: open a log of about 1 GiB of 100-byte records and report MB/s and records/s.
//!
//! Knobs (environment): `WAL_BENCH_SECS` per run (default 3), `WAL_BENCH_RECOVERY_MB`
//! (default 1024), `WAL_BENCH_DIR` (default: a temporary directory under the target dir, so on
//! the same disk as the build, not a tmpfs).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use wal::{Entry, PendingSync, RealFs, Wal, WalConfig};

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

/// Where a batch's fsync runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SyncOn {
    /// In place, on the appending thread (`Wal::sync`).
    Caller,
    /// On a dedicated thread, the caller waiting for it (as the server runs it).
    OtherThread,
}

/// A thread that runs the fsyncs handed to it and sends back each outcome.
struct SyncThread {
    jobs: mpsc::Sender<PendingSync<<RealFs as wal::FileSystem>::File>>,
    done: mpsc::Receiver<(u64, wal::Result<()>)>,
}

impl SyncThread {
    fn start() -> SyncThread {
        let (jobs, job_rx) = mpsc::channel::<PendingSync<_>>();
        let (done_tx, done) = mpsc::channel();
        thread::spawn(move || {
            for job in job_rx {
                if done_tx.send((job.upto(), job.run())).is_err() {
                    return;
                }
            }
        });
        SyncThread { jobs, done }
    }
}

/// Appends `batch`-entry batches for `run_for`, each made durable before the next, the fsync
/// where `sync_on` says. Returns the time to make each batch durable, and entries/s.
fn node_path(
    dir: &Path,
    batch: u64,
    sync_on: SyncOn,
    run_for: Duration,
    label: &str,
) -> (Stats, f64) {
    let mut wal = Wal::open(RealFs, dir, WalConfig::default()).expect("open the log");
    let sync_thread = (sync_on == SyncOn::OtherThread).then(SyncThread::start);
    let bar = progress(label, run_for);
    let payload = vec![0x5Au8; PAYLOAD_BYTES];
    let mut latencies = Vec::new();
    let mut entries = 0u64;
    let start = Instant::now();
    while start.elapsed() < run_for {
        let first = wal.last_index() + 1;
        let records: Vec<Entry> = (0..batch)
            .map(|k| Entry {
                index: first + k,
                term: 1,
                payload: payload.clone(),
            })
            .collect();
        let t = Instant::now();
        wal.append(&records).expect("append");
        match &sync_thread {
            None => {
                wal.sync().expect("fsync");
            }
            Some(syncer) => {
                let pending = wal
                    .begin_sync()
                    .expect("a healthy log")
                    .expect("an appended batch awaits its fsync");
                syncer.jobs.send(pending).expect("the sync thread runs");
                let (upto, outcome) = syncer.done.recv().expect("the sync thread answers");
                wal.finish_sync(upto, outcome).expect("fsync");
            }
        }
        latencies.push(t.elapsed());
        entries += batch;
        if latencies.len() % 64 == 0 {
            bar.set_position(start.elapsed().as_millis() as u64);
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    let per_sec = entries as f64 / elapsed.as_secs_f64();
    (Stats::from(latencies, elapsed), per_sec)
}

/// Tries to empty the page cache (root only), so the next open reads from the disk.
fn drop_page_cache() -> bool {
    // Dirty pages cannot be dropped, so write them back first (std has no `sync(2)`).
    let synced = std::process::Command::new("sync")
        .status()
        .is_ok_and(|s| s.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
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

/// Prints one setting's line: entries/s, the time to make a batch durable, and its p50 against
/// the floor's.
fn print_row(label: &str, stats: &Stats, entries_per_sec: f64, raw: &Stats) {
    println!(
        "{label:<44} {entries_per_sec:>9.0} entries/s  p50 {:>8}  p99 {:>8}  p50 {:.2}x floor",
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
        for sync_on in [SyncOn::Caller, SyncOn::OtherThread] {
            // The floor is measured again right before each setting: the disk's speed drifts
            // on a shared machine, and the ratio is only fair against a neighbouring figure.
            let raw = floor(root.path(), run_for);
            for batch in [1, 8, 64] {
                let dir = root.path().join(format!("node-{batch}"));
                let on = match sync_on {
                    SyncOn::Caller => "fsync in place",
                    SyncOn::OtherThread => "fsync on another thread",
                };
                let label = format!("{batch}-entry batches, {on}");
                let (stats, per_sec) = node_path(&dir, batch, sync_on, run_for, &label);
                print_row(&label, &stats, per_sec, &raw);
                std::fs::remove_dir_all(&dir).expect("clean up the run's log");
            }
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
