//! The load generator behind `kvcli bench`.
//!
//! Job: drive a chosen workload (writes over a fixed keyspace, writes of new keys only,
//! linearizable reads, stale reads or a mix) from `concurrency` workers over one shared
//! [`Client`] — one keep-alive connection per worker from a pool sized to the concurrency —
//! for a duration or a number of operations, and report throughput, errors, latency
//! percentiles and the generator's own CPU time, for the whole run and, when asked, per
//! window of time ([`window`]).
//!
//! Invariants:
//! - keys of the fixed keyspace are `k` followed by a zero-padded index, exactly `key_size`
//!   bytes, so a preload and a later read run address the same keys;
//! - the write-new workload takes each key's counter from one shared counter, so no two
//!   operations of a run, on any worker in any window, write the same key ([`newkeys`]);
//! - writes go through one [`crate::Session`] per worker, so a retried write is applied once;
//! - latency is measured per operation, retries included, and only successful operations
//!   (a missing key is a success for a read) enter the histogram; failures are counted by
//!   [`Error::kind`];
//! - memory is bounded: one [`Histogram`] (30 KiB) per worker, at most [`CONCURRENCY_MAX`]
//!   workers.

pub mod cpu;
pub mod histogram;
pub mod newkeys;
pub mod plot;
pub mod window;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::client::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::{Client, Consistency, Error, Session};
pub use cpu::CpuTime;
pub use histogram::Histogram;
pub use newkeys::NewKeys;
use window::{Sample, WindowClock, WindowTally, WorkerWindows};
pub use window::{WindowReport, WindowSummary};

/// Most concurrent workers (each holds a connection and a 30 KiB histogram).
pub const CONCURRENCY_MAX: usize = 1024;
/// Most keys in the key space.
pub const KEYS_MAX: u64 = 100_000_000;
/// How often the progress bar is redrawn.
pub const PROGRESS_TICK: Duration = Duration::from_millis(100);

/// What each operation is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Workload {
    /// Puts of random keys.
    Write,
    /// Puts of keys never written before in this run: the keyspace grows by one key per
    /// write. Keys are `n`, the run tag in hex, and a scrambled counter ([`NewKeys`]).
    WriteNew {
        /// Tells this run's keys from every other run's (at most [`newkeys::RUN_TAG_MAX`]).
        run_tag: u32,
    },
    /// Linearizable gets of random keys.
    Read,
    /// Stale gets of random keys.
    StaleRead,
    /// Linearizable gets with probability `read_ratio`, puts otherwise.
    Mixed {
        /// Fraction of reads, in [0, 1].
        read_ratio: f64,
    },
}

impl Workload {
    fn writes(&self) -> bool {
        match self {
            Workload::Write | Workload::WriteNew { .. } => true,
            Workload::Read | Workload::StaleRead => false,
            Workload::Mixed { read_ratio } => *read_ratio < 1.0,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Workload::Write => "write",
            Workload::WriteNew { .. } => "write-new",
            Workload::Read => "read",
            Workload::StaleRead => "stale-read",
            Workload::Mixed { .. } => "mixed",
        }
    }
}

/// When the run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this much time.
    After(Duration),
    /// After this many operations in all.
    Ops(u64),
}

/// A load-generator run.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    /// The operations.
    pub workload: Workload,
    /// Concurrent workers, each with one request in flight.
    pub concurrency: usize,
    /// Size of the key space.
    pub keys: u64,
    /// Bytes per key.
    pub key_size: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// When to stop.
    pub stop: Stop,
    /// Write every key once before measuring.
    pub preload: bool,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Report figures per window of this length (at least [`window::WINDOW_MIN`]).
    pub window: Option<Duration>,
}

/// Why a run could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BenchError {
    /// The configuration is inconsistent.
    #[error("invalid bench configuration: {0}")]
    Config(String),
    /// A worker could not register its client session.
    #[error("registering a client session failed: {0}")]
    Session(Error),
    /// The preload failed.
    #[error("preloading key {key} failed: {error}")]
    Preload {
        /// The key being written.
        key: String,
        /// What went wrong.
        error: Error,
    },
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Fastest.
    pub min: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl LatencyMs {
    /// The figures of `histogram` (nanoseconds); `None` when it is empty.
    pub fn of(histogram: &Histogram) -> Option<LatencyMs> {
        let ms = |ns: u64| ns as f64 / 1e6;
        Some(LatencyMs {
            p50: ms(histogram.percentile(50.0)?),
            p95: ms(histogram.percentile(95.0)?),
            p99: ms(histogram.percentile(99.0)?),
            p99_9: ms(histogram.percentile(99.9)?),
            min: ms(histogram.min()?),
            max: ms(histogram.max()?),
            mean: histogram.mean()? / 1e6,
        })
    }
}

/// The generator's CPU use during the measured phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuUse {
    /// Seconds in user mode.
    pub user_s: f64,
    /// Seconds in the kernel.
    pub system_s: f64,
    /// User plus system, as a percentage of one core over the elapsed time.
    pub percent_of_one_core: f64,
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// `write`, `write-new`, `read`, `stale-read` or `mixed`.
    pub workload: &'static str,
    /// What every key written by `write-new` starts with (`n` and the run tag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// Fraction of reads for `mixed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_ratio: Option<f64>,
    /// Concurrent workers.
    pub concurrency: usize,
    /// Key space; for `write-new`, the new keys the run tried to write (successes and
    /// failures).
    pub keys: u64,
    /// Bytes per key.
    pub key_size: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// The endpoints used.
    pub endpoints: Vec<String>,
    /// `leader` or `all`.
    pub target: &'static str,
    /// Operations that succeeded.
    pub ops: u64,
    /// Reads that found no key (counted in `ops`).
    pub not_found: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Failures by [`Error::kind`].
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    /// Wall time of the measured phase, seconds.
    pub elapsed_s: f64,
    /// Successful operations per second.
    pub ops_per_s: f64,
    /// Latency of successful operations; `None` when none succeeded.
    pub latency_ms: Option<LatencyMs>,
    /// The generator's CPU use; `None` where `/proc/self/stat` is unavailable.
    pub cpu: Option<CpuUse>,
    /// What the windows add up to, when the run was asked for windows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows: Option<WindowSummary>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mix = self
            .read_ratio
            .map(|r| format!(" ({:.0}% reads)", r * 100.0))
            .unwrap_or_default();
        let keys = match &self.key_prefix {
            Some(prefix) => format!("new keys under {prefix}"),
            None => format!("{} keys", self.keys),
        };
        writeln!(
            f,
            "workload   {}{mix}, concurrency {}, {keys}, key {} B, value {} B, target {} ({})",
            self.workload,
            self.concurrency,
            self.key_size,
            self.value_size,
            self.target,
            self.endpoints.join(",")
        )?;
        writeln!(
            f,
            "ops        {} in {:.2} s = {:.1} ops/s ({} not found)",
            self.ops, self.elapsed_s, self.ops_per_s, self.not_found
        )?;
        let kinds: Vec<String> = self
            .errors_by_kind
            .iter()
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect();
        if kinds.is_empty() {
            writeln!(f, "errors     0")?;
        } else {
            writeln!(f, "errors     {} ({})", self.errors, kinds.join(", "))?;
        }
        match &self.latency_ms {
            Some(l) => writeln!(
                f,
                "latency ms p50 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
                l.p50, l.p95, l.p99, l.p99_9, l.max, l.mean
            )?,
            None => writeln!(f, "latency ms (no successful operation)")?,
        }
        match &self.cpu {
            Some(c) => write!(
                f,
                "cpu        generator {:.2} s user + {:.2} s system = {:.1}% of one core",
                c.user_s, c.system_s, c.percent_of_one_core
            )?,
            None => write!(f, "cpu        (unavailable: no /proc/self/stat)")?,
        }
        if let Some(windows) = &self.windows {
            write!(f, "\n{windows}")?;
        }
        Ok(())
    }
}

/// The `index`-th key of the key space: `k` and the zero-padded index, `key_size` bytes.
pub fn key_for(index: u64, key_size: usize) -> Bytes {
    let digits = key_size.saturating_sub(1);
    Bytes::from(format!("k{index:0digits$}"))
}

/// A value of `value_size` printable bytes.
fn value_of(value_size: usize) -> Bytes {
    (0..value_size)
        .map(|i| b'a' + (i % 26) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Checks `config` before anything is sent.
pub fn validate(config: &BenchConfig) -> Result<(), BenchError> {
    let bad = |m: String| Err(BenchError::Config(m));
    if config.concurrency == 0 || config.concurrency > CONCURRENCY_MAX {
        return bad(format!("concurrency must be 1..={CONCURRENCY_MAX}"));
    }
    if let Workload::WriteNew { run_tag } = config.workload {
        if run_tag > newkeys::RUN_TAG_MAX {
            return bad(format!(
                "run tag must be at most {:x} (hex)",
                newkeys::RUN_TAG_MAX
            ));
        }
        let needed = newkeys::NEW_KEY_BYTES_MIN;
        if config.key_size < needed || config.key_size > KEY_BYTES_MAX {
            return bad(format!(
                "key size must be {needed}..={KEY_BYTES_MAX} bytes for new keys"
            ));
        }
        if config.preload {
            return bad("write-new writes only new keys: it takes no preload".to_owned());
        }
    } else {
        if config.keys == 0 || config.keys > KEYS_MAX {
            return bad(format!("keys must be 1..={KEYS_MAX}"));
        }
        let needed = 1 + digits(config.keys - 1);
        if config.key_size < needed || config.key_size > KEY_BYTES_MAX {
            return bad(format!(
                "key size must be {needed}..={KEY_BYTES_MAX} bytes for {} keys",
                config.keys
            ));
        }
    }
    if let Some(window) = config.window
        && window < window::WINDOW_MIN
    {
        return bad(format!(
            "window must be at least {} ms",
            window::WINDOW_MIN.as_millis()
        ));
    }
    if config.value_size > VALUE_BYTES_MAX {
        return bad(format!(
            "value size must be at most {VALUE_BYTES_MAX} bytes"
        ));
    }
    if let Workload::Mixed { read_ratio } = config.workload
        && !(0.0..=1.0).contains(&read_ratio)
    {
        return bad("read ratio must be between 0 and 1".to_owned());
    }
    match config.stop {
        Stop::Ops(0) => bad("ops must be at least 1".to_owned()),
        Stop::After(d) if d.is_zero() => bad("duration must be positive".to_owned()),
        _ => Ok(()),
    }
}

/// What all workers share.
struct Shared {
    client: Client,
    config: BenchConfig,
    value: Bytes,
    started: Instant,
    issued: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    /// The write-new workload's keys and its next counter.
    new_keys: Option<(NewKeys, AtomicU64)>,
    /// Each worker's open windows, when the run reports windows.
    windows: Option<(WindowClock, Vec<WorkerWindows>)>,
}

impl Shared {
    /// Claims the next operation; false once the run is over.
    fn claim(&self) -> bool {
        match self.config.stop {
            Stop::After(d) => self.started.elapsed() < d,
            Stop::Ops(n) => self.issued.fetch_add(1, Ordering::Relaxed) < n,
        }
    }

    /// The next new key of the write-new workload; `None` once the run's keys are used up
    /// (2^32 at the least: in practice never).
    fn next_new_key(&self) -> Option<Bytes> {
        let (keys, next) = self.new_keys.as_ref()?;
        let counter = next.fetch_add(1, Ordering::Relaxed);
        (counter < keys.capacity()).then(|| keys.key(counter))
    }

    /// Records a sample of worker `w` in its window, if the run reports windows.
    fn record_window(&self, w: usize, sample: impl FnOnce() -> Sample) {
        if let Some((clock, workers)) = &self.windows
            && let Some(worker) = workers.get(w)
        {
            worker.record(clock, || self.started.elapsed(), sample());
        }
    }
}

/// One worker's tally.
struct Tally {
    histogram: Histogram,
    not_found: u64,
    errors: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Copy)]
enum Op {
    Write,
    Read(Consistency),
}

async fn worker(shared: Arc<Shared>, mut session: Option<Session>, w: usize) -> Tally {
    let seed = w as u64 + 1;
    let config = &shared.config;
    let mut rng = util::SplitMix64::new(seed);
    let mut tally = Tally {
        histogram: Histogram::new(),
        not_found: 0,
        errors: BTreeMap::new(),
    };
    while shared.claim() {
        let op = match config.workload {
            Workload::Write | Workload::WriteNew { .. } => Op::Write,
            Workload::Read => Op::Read(Consistency::Linearizable),
            Workload::StaleRead => Op::Read(Consistency::Stale),
            Workload::Mixed { read_ratio } if rng.unit() < read_ratio => {
                Op::Read(Consistency::Linearizable)
            }
            Workload::Mixed { .. } => Op::Write,
        };
        let key = if let Workload::WriteNew { .. } = config.workload {
            match shared.next_new_key() {
                Some(key) => key,
                None => break,
            }
        } else {
            key_for(rng.below(config.keys), config.key_size)
        };
        let begun = Instant::now();
        let outcome = match (op, session.as_mut()) {
            (Op::Write, Some(session)) => session.put(&key, shared.value.clone()).await.map(drop),
            (Op::Write, None) => shared
                .client
                .put(&key, shared.value.clone())
                .await
                .map(drop),
            (Op::Read(consistency), _) => shared.client.get(&key, consistency).await.map(drop),
        };
        let latency = begun.elapsed();
        match outcome {
            Ok(()) => {
                tally.histogram.record(nanos(latency));
                shared.record_window(w, || Sample::Ok(nanos(latency)));
            }
            Err(Error::NotFound { .. }) => {
                tally.not_found += 1;
                tally.histogram.record(nanos(latency));
                shared.record_window(w, || Sample::Ok(nanos(latency)));
            }
            Err(error) => {
                shared.record_window(w, || Sample::Failed(window::error_label(&error)));
                if matches!(error, Error::SessionExpired(_))
                    && let Ok(fresh) = shared.client.register_session().await
                {
                    session = Some(fresh);
                }
                *tally.errors.entry(error.kind()).or_insert(0) += 1;
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn progress_bar(show: bool, length: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(length),
        if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Writes every key once, `concurrency` at a time, through the workers' sessions.
async fn preload(
    sessions: Vec<Session>,
    config: &BenchConfig,
    value: &Bytes,
) -> Result<Vec<Session>, BenchError> {
    let bar = progress_bar(
        config.progress,
        config.keys,
        "preload {bar:40} {pos}/{len} keys [{elapsed_precise}]",
    );
    let workers = sessions.len() as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for (w, mut session) in sessions.into_iter().enumerate() {
        let (config, value, bar) = (config.clone(), value.clone(), bar.clone());
        tasks.spawn(async move {
            let mut index = w as u64;
            while index < config.keys {
                let key = key_for(index, config.key_size);
                if let Err(error) = session.put(&key, value.clone()).await {
                    return Err(BenchError::Preload {
                        key: String::from_utf8_lossy(&key).into_owned(),
                        error,
                    });
                }
                bar.inc(1);
                index += workers;
            }
            Ok(session)
        });
    }
    let mut sessions = Vec::new();
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(session)) => sessions.push(session),
            Ok(Err(error)) => failure = failure.or(Some(error)),
            Err(panic) => std::panic::resume_unwind(panic.into_panic()),
        }
    }
    bar.finish_and_clear();
    match failure {
        Some(error) => Err(error),
        None => Ok(sessions),
    }
}

/// Runs `config` against `client` and reports. `target` names the routing for the report.
pub async fn run(
    client: &Client,
    config: &BenchConfig,
    target: &'static str,
) -> Result<BenchReport, BenchError> {
    run_observed(client, config, target, &mut |_| {}).await
}

/// Collects the windows of a run as they end and hands each to the observer, in order.
struct WindowCollector<'a> {
    clock: WindowClock,
    next: u64,
    reports: Vec<WindowReport>,
    observer: &'a mut dyn FnMut(&WindowReport),
}

impl WindowCollector<'_> {
    /// Drains every worker's windows up to `through`, reports them, and moves on. With
    /// `run_end` (the run is over), window `through` is the last and ends there.
    fn emit_through(&mut self, workers: &[WorkerWindows], through: u64, run_end: Option<Duration>) {
        if through < self.next {
            return;
        }
        let mut merged: BTreeMap<u64, WindowTally> = BTreeMap::new();
        for worker in workers {
            for (index, tally) in worker.drain_through(through) {
                merged.entry(index).or_default().merge(&tally);
            }
        }
        let empty = WindowTally::default();
        for index in self.next..=through {
            let start = self.clock.start(index);
            let length = match run_end {
                Some(end) if index == through => end.saturating_sub(start),
                _ => self.clock.window,
            };
            let report =
                WindowReport::of(index, start, length, merged.get(&index).unwrap_or(&empty));
            (self.observer)(&report);
            self.reports.push(report);
        }
        self.next = through + 1;
    }
}

/// Runs `config` against `client` like [`run`], and with [`BenchConfig::window`] hands each
/// window's figures to `observer` as soon as the window has ended (in order, none skipped).
pub async fn run_observed(
    client: &Client,
    config: &BenchConfig,
    target: &'static str,
    observer: &mut dyn FnMut(&WindowReport),
) -> Result<BenchReport, BenchError> {
    validate(config)?;
    let value = value_of(config.value_size);
    let mut sessions = Vec::new();
    if config.workload.writes() || config.preload {
        let mut registering = tokio::task::JoinSet::new();
        for _ in 0..config.concurrency {
            let client = client.clone();
            registering.spawn(async move { client.register_session().await });
        }
        while let Some(joined) = registering.join_next().await {
            match joined {
                Ok(Ok(session)) => sessions.push(session),
                Ok(Err(error)) => return Err(BenchError::Session(error)),
                Err(panic) => std::panic::resume_unwind(panic.into_panic()),
            }
        }
    }
    if config.preload {
        sessions = preload(sessions, config, &value).await?;
    }
    let new_keys = match config.workload {
        Workload::WriteNew { run_tag } => Some(
            NewKeys::new(run_tag, config.key_size)
                .ok_or_else(|| BenchError::Config("bad key size or run tag".to_owned()))?,
        ),
        _ => None,
    };
    let key_prefix = new_keys.as_ref().map(|k| k.prefix().to_owned());
    let limit = match config.stop {
        Stop::After(d) => Some(d),
        Stop::Ops(_) => None,
    };
    let clock = config.window.map(|w| WindowClock::new(w, limit));
    let shared = Arc::new(Shared {
        client: client.clone(),
        config: config.clone(),
        value,
        started: Instant::now(),
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        new_keys: new_keys.map(|k| (k, AtomicU64::new(0))),
        windows: clock.map(|c| {
            (
                c,
                (0..config.concurrency)
                    .map(|_| WorkerWindows::default())
                    .collect(),
            )
        }),
    });
    let cpu_before = CpuTime::now();
    let (length, template) = match config.stop {
        Stop::Ops(n) => (n, "{bar:40} {pos}/{len} ops [{elapsed_precise}] {msg}"),
        Stop::After(d) => (nanos(d) / 1_000_000, "{bar:40} [{elapsed_precise}] {msg}"),
    };
    let bar = progress_bar(config.progress, length, template);
    let mut tasks = tokio::task::JoinSet::new();
    let mut sessions = sessions.into_iter();
    for w in 0..config.concurrency {
        tasks.spawn(worker(shared.clone(), sessions.next(), w));
    }
    let ticker = {
        let (shared, bar) = (shared.clone(), bar.clone());
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(PROGRESS_TICK);
            loop {
                interval.tick().await;
                let done = shared.done.load(Ordering::Relaxed);
                let elapsed = shared.started.elapsed();
                match shared.config.stop {
                    Stop::Ops(_) => bar.set_position(done),
                    Stop::After(_) => bar.set_position(nanos(elapsed) / 1_000_000),
                }
                let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
                let failed = shared.failed.load(Ordering::Relaxed);
                bar.set_message(format!("{done} ops, {rate:.0} ops/s, {failed} errors"));
            }
        })
    };
    let mut total = Tally {
        histogram: Histogram::new(),
        not_found: 0,
        errors: BTreeMap::new(),
    };
    let mut collector = clock.map(|clock| WindowCollector {
        clock,
        next: 0,
        reports: Vec::new(),
        observer,
    });
    let started = tokio::time::Instant::from_std(shared.started);
    loop {
        // A window is drained once its end has passed (the last one only at the end of the
        // run, since operations in flight at the deadline still count in it).
        let due = collector.as_ref().and_then(|c| {
            let boundary = c.clock.start(c.next) + c.clock.window;
            let not_last = c.clock.last.is_none_or(|last| c.next < last);
            not_last.then_some(started + boundary)
        });
        let window_due = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(tally)) => {
                    total.histogram.merge(&tally.histogram);
                    total.not_found += tally.not_found;
                    for (kind, n) in tally.errors {
                        *total.errors.entry(kind).or_insert(0) += n;
                    }
                }
                Some(Err(panic)) => std::panic::resume_unwind(panic.into_panic()),
            },
            () = window_due => {
                if let (Some(c), Some((_, workers))) = (collector.as_mut(), &shared.windows) {
                    let through = c.next;
                    c.emit_through(workers, through, None);
                }
            }
        }
    }
    let elapsed = shared.started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    let windows = match (collector, &shared.windows) {
        (Some(mut c), Some((clock, workers))) => {
            let last = clock.last.unwrap_or_else(|| clock.index(elapsed));
            c.emit_through(workers, last, Some(elapsed));
            Some(WindowSummary::of(clock.window, &c.reports))
        }
        _ => None,
    };
    let cpu = match (cpu_before, CpuTime::now()) {
        (Some(before), Some(after)) => {
            let used = after.since(&before);
            Some(CpuUse {
                user_s: used.user.as_secs_f64(),
                system_s: used.system.as_secs_f64(),
                percent_of_one_core: 100.0 * used.total().as_secs_f64()
                    / elapsed.as_secs_f64().max(1e-9),
            })
        }
        _ => None,
    };
    let ops = total.histogram.count();
    Ok(BenchReport {
        workload: config.workload.name(),
        key_prefix,
        read_ratio: match config.workload {
            Workload::Mixed { read_ratio } => Some(read_ratio),
            _ => None,
        },
        concurrency: config.concurrency,
        keys: match &shared.new_keys {
            Some((keys, next)) => next.load(Ordering::Relaxed).min(keys.capacity()),
            None => config.keys,
        },
        key_size: config.key_size,
        value_size: config.value_size,
        endpoints: client.endpoints(),
        target,
        ops,
        not_found: total.not_found,
        errors: total.errors.values().sum(),
        errors_by_kind: total.errors,
        elapsed_s: elapsed.as_secs_f64(),
        ops_per_s: ops as f64 / elapsed.as_secs_f64().max(1e-9),
        latency_ms: LatencyMs::of(&total.histogram),
        cpu,
        windows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BenchConfig {
        BenchConfig {
            workload: Workload::Write,
            concurrency: 4,
            keys: 1000,
            key_size: 16,
            value_size: 100,
            stop: Stop::Ops(10),
            preload: false,
            progress: false,
            window: None,
        }
    }

    #[test]
    fn keys_have_the_asked_size_and_are_distinct() {
        assert_eq!(&key_for(7, 16)[..], b"k000000000000007");
        assert_eq!(key_for(999, 4).len(), 4);
        assert_ne!(key_for(1, 8), key_for(10, 8));
        assert_eq!(value_of(30).len(), 30);
    }

    #[test]
    fn configurations_are_validated() {
        assert_eq!(validate(&config()), Ok(()));
        let cases = [
            BenchConfig {
                concurrency: 0,
                ..config()
            },
            BenchConfig {
                concurrency: CONCURRENCY_MAX + 1,
                ..config()
            },
            BenchConfig {
                keys: 0,
                ..config()
            },
            // 1000 keys need "k" + 3 digits
            BenchConfig {
                key_size: 3,
                ..config()
            },
            BenchConfig {
                key_size: KEY_BYTES_MAX + 1,
                ..config()
            },
            BenchConfig {
                value_size: VALUE_BYTES_MAX + 1,
                ..config()
            },
            BenchConfig {
                workload: Workload::Mixed { read_ratio: 1.5 },
                ..config()
            },
            BenchConfig {
                stop: Stop::Ops(0),
                ..config()
            },
            BenchConfig {
                stop: Stop::After(Duration::ZERO),
                ..config()
            },
        ];
        for case in cases {
            assert!(
                matches!(validate(&case), Err(BenchError::Config(_))),
                "{case:?}"
            );
        }
        assert_eq!(
            validate(&BenchConfig {
                key_size: 4,
                ..config()
            }),
            Ok(())
        );
    }

    #[test]
    fn the_workers_generator_spreads_over_the_key_space() {
        // Given one worker's generator, when it picks 10,000 keys of ten, then each key gets
        // its share within a fifth, and its fractions lie in [0, 1).
        let mut rng = util::SplitMix64::new(1);
        let mut hits = [0u32; 10];
        for _ in 0..10_000 {
            hits[rng.below(10) as usize] += 1;
        }
        assert!(hits.iter().all(|&h| (800..1200).contains(&h)), "{hits:?}");
        let u = rng.unit();
        assert!((0.0..1.0).contains(&u));
    }

    #[test]
    fn latency_summary_is_in_milliseconds() {
        let mut h = Histogram::new();
        for _ in 0..100 {
            h.record(2_000_000);
        }
        let l = LatencyMs::of(&h).expect("not empty");
        assert!(
            (l.p50 - 2.0).abs() < 0.02 && (l.max - 2.0).abs() < 1e-9,
            "{l:?}"
        );
        assert_eq!(LatencyMs::of(&Histogram::new()), None);
    }
}
