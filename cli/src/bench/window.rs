//! Per-window figures of a bench run (`kvcli bench --window 10s`): throughput, latency
//! percentiles and errors for each consecutive slice of the run, and a summary that says
//! whether the run held its pace.
//!
//! How: each worker owns a [`WorkerWindows`], a small map from window index to a
//! [`WindowTally`] behind an uncontended mutex. A sample's window is chosen from the clock
//! read *while that mutex is held*, so once the collector has drained window `k` after the
//! time `(k + 1) × window` has passed, no later sample can land in `k`: every window is
//! reported whole, and a worker stuck in a slow request delays nothing.
//!
//! Invariants:
//! - windows are reported in order, each exactly once, with no gap: a window in which nothing
//!   completed is reported with 0 ops;
//! - with a time limit, the operations still in flight at the deadline count in the last
//!   window, whose length is then measured to the end of the run; every other window is
//!   exactly one window long;
//! - memory per worker is one or two histograms (30 KiB each), since windows are drained as
//!   they end.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use super::histogram::Histogram;
use crate::Error;

/// Shortest window: ten reports a second is already more than a person can read.
pub const WINDOW_MIN: Duration = Duration::from_millis(100);
/// The span compared at the start and at the end of a run for the throughput trend (the
/// issue's "last minute against first minute").
pub const TREND_SPAN: Duration = Duration::from_secs(60);

/// A name for counting a failure: the HTTP status and the API's code where the server gave
/// them (`503/no_leader`, `409/stale_sequence`), else the kind of [`Error::kind`]
/// (`timeout`, `unavailable`, ...).
pub fn error_label(error: &Error) -> String {
    match error {
        Error::Rejected { status, code, .. } => format!("{status}/{code}"),
        // The client keeps the server's code of a 503 at the end of its message, in parentheses.
        Error::NoLeader(message) => match message
            .strip_suffix(')')
            .and_then(|m| m.rsplit_once('('))
            .map(|(_, code)| code)
        {
            Some(code) if !code.is_empty() && !code.contains(' ') => format!("503/{code}"),
            _ => "503".to_owned(),
        },
        other => other.kind().to_owned(),
    }
}

/// What one worker saw in one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowTally {
    /// Latency of the successful operations, nanoseconds.
    pub histogram: Histogram,
    /// Failures by [`error_label`].
    pub errors: BTreeMap<String, u64>,
}

impl WindowTally {
    /// Adds `other` to this one.
    pub fn merge(&mut self, other: &WindowTally) {
        self.histogram.merge(&other.histogram);
        for (label, n) in &other.errors {
            *self.errors.entry(label.clone()).or_insert(0) += n;
        }
    }
}

/// One sample: a success with its latency, or a failure with its label.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A successful operation and its latency in nanoseconds.
    Ok(u64),
    /// A failed operation, by [`error_label`].
    Failed(String),
}

/// Maps a time since the start of the run to its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowClock {
    /// Length of a window.
    pub window: Duration,
    /// The last window, when the run has a time limit: samples after the deadline count in it.
    pub last: Option<u64>,
}

impl WindowClock {
    /// A clock of `window`-long windows; with `limit`, the run ends after that long.
    pub fn new(window: Duration, limit: Option<Duration>) -> WindowClock {
        let last = limit.map(|limit| {
            let n = limit.as_nanos().div_ceil(window.as_nanos().max(1));
            u64::try_from(n).unwrap_or(u64::MAX).saturating_sub(1)
        });
        WindowClock { window, last }
    }

    /// The window of a sample taken `at` after the start.
    pub fn index(&self, at: Duration) -> u64 {
        let index =
            u64::try_from(at.as_nanos() / self.window.as_nanos().max(1)).unwrap_or(u64::MAX);
        match self.last {
            Some(last) => index.min(last),
            None => index,
        }
    }

    /// When window `index` starts, after the start of the run.
    pub fn start(&self, index: u64) -> Duration {
        self.window
            .saturating_mul(u32::try_from(index).unwrap_or(u32::MAX))
    }
}

/// One worker's windows not yet collected.
#[derive(Debug, Default)]
pub struct WorkerWindows {
    open: Mutex<BTreeMap<u64, WindowTally>>,
}

impl WorkerWindows {
    /// Records `sample` in the window of the time `now()` gives, read under the lock (see
    /// the module's doc for why that matters).
    pub fn record(&self, clock: &WindowClock, now: impl FnOnce() -> Duration, sample: Sample) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let tally = open.entry(clock.index(now())).or_default();
        match sample {
            Sample::Ok(ns) => tally.histogram.record(ns),
            Sample::Failed(label) => *tally.errors.entry(label).or_insert(0) += 1,
        }
    }

    /// Takes out every window up to and including `through`.
    pub fn drain_through(&self, through: u64) -> BTreeMap<u64, WindowTally> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match through.checked_add(1) {
            Some(after) => {
                let later = open.split_off(&after);
                std::mem::replace(&mut *open, later)
            }
            None => std::mem::take(&mut *open),
        }
    }
}

/// Latency of one window, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowLatencyMs {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest, exactly.
    pub max: f64,
}

/// The figures of one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowReport {
    /// Its number, from 0.
    pub window: u64,
    /// Its start, seconds after the start of the measured run.
    pub start_s: f64,
    /// Its length in seconds (the last may differ from the others).
    pub length_s: f64,
    /// Operations that succeeded.
    pub ops: u64,
    /// `ops` per second of `length_s`.
    pub ops_per_s: f64,
    /// Latency of the successes; `None` when none succeeded.
    pub latency_ms: Option<WindowLatencyMs>,
    /// Operations that failed.
    pub errors: u64,
    /// Failures by [`error_label`].
    pub errors_by_kind: BTreeMap<String, u64>,
}

impl WindowReport {
    /// The report of window `window` from `start` lasting `length`, from its merged `tally`.
    pub fn of(window: u64, start: Duration, length: Duration, tally: &WindowTally) -> WindowReport {
        let ms = |ns: u64| ns as f64 / 1e6;
        let h = &tally.histogram;
        let latency_ms = match (h.percentile(50.0), h.percentile(99.0), h.max()) {
            (Some(p50), Some(p99), Some(max)) => Some(WindowLatencyMs {
                p50: ms(p50),
                p99: ms(p99),
                max: ms(max),
            }),
            _ => None,
        };
        WindowReport {
            window,
            start_s: start.as_secs_f64(),
            length_s: length.as_secs_f64(),
            ops: h.count(),
            ops_per_s: h.count() as f64 / length.as_secs_f64().max(1e-9),
            latency_ms,
            errors: tally.errors.values().sum(),
            errors_by_kind: tally.errors.clone(),
        }
    }

    /// The CSV header matching [`WindowReport::csv_row`].
    pub const CSV_HEADER: &'static str =
        "window,start_s,length_s,ops,ops_per_s,p50_ms,p99_ms,max_ms,errors,errors_by_kind";

    /// This window as one CSV row (no newline). Latency fields are empty when nothing
    /// succeeded; `errors_by_kind` is `label=n` pairs joined by `;` (labels hold no comma).
    pub fn csv_row(&self) -> String {
        let (p50, p99, max) = match &self.latency_ms {
            Some(l) => (
                format!("{:.3}", l.p50),
                format!("{:.3}", l.p99),
                format!("{:.3}", l.max),
            ),
            None => Default::default(),
        };
        let kinds: Vec<String> = self
            .errors_by_kind
            .iter()
            .map(|(label, n)| format!("{}={n}", label.replace([',', ';', '=', '\n'], "_")))
            .collect();
        format!(
            "{},{:.3},{:.3},{},{:.1},{p50},{p99},{max},{},{}",
            self.window,
            self.start_s,
            self.length_s,
            self.ops,
            self.ops_per_s,
            self.errors,
            kinds.join(";")
        )
    }
}

impl std::fmt::Display for WindowReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "window {:>4} at {:>7.1} s  {:>10.1} ops/s",
            self.window, self.start_s, self.ops_per_s
        )?;
        match &self.latency_ms {
            Some(l) => write!(
                f,
                "  p50 {:.3}  p99 {:.3}  max {:.3} ms",
                l.p50, l.p99, l.max
            )?,
            None => write!(f, "  (no successful operation)")?,
        }
        write!(f, "  errors {}", self.errors)?;
        if !self.errors_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(label, n)| format!("{label}: {n}"))
                .collect();
            write!(f, " ({})", kinds.join(", "))?;
        }
        Ok(())
    }
}

/// What the windows of a run add up to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowSummary {
    /// Length of a window, seconds.
    pub window_s: f64,
    /// Number of windows.
    pub windows: u64,
    /// Seconds compared at each end of the run for the trend: [`TREND_SPAN`], or less when
    /// the run is too short for two such spans that do not overlap.
    pub trend_span_s: f64,
    /// Throughput over the first `trend_span_s`.
    pub first_ops_per_s: f64,
    /// Throughput over the last `trend_span_s`.
    pub last_ops_per_s: f64,
    /// `last_ops_per_s / first_ops_per_s`; `None` with fewer than two windows or nothing
    /// done at the start.
    pub last_to_first_ratio: Option<f64>,
    /// The highest p99 of any window, milliseconds.
    pub worst_p99_ms: Option<f64>,
    /// The window with that p99.
    pub worst_p99_window: Option<u64>,
    /// Failures in all windows.
    pub errors: u64,
    /// Failures by [`error_label`].
    pub errors_by_kind: BTreeMap<String, u64>,
}

impl WindowSummary {
    /// The summary of `windows` (in order) of `window` each.
    pub fn of(window: Duration, windows: &[WindowReport]) -> WindowSummary {
        let n = windows.len();
        let per_span = usize::try_from(TREND_SPAN.as_nanos().div_ceil(window.as_nanos().max(1)))
            .unwrap_or(usize::MAX);
        let span = per_span.min(n / 2).max(1).min(n);
        let rate = |ws: &[WindowReport]| {
            let ops: u64 = ws.iter().map(|w| w.ops).sum();
            let secs: f64 = ws.iter().map(|w| w.length_s).sum();
            if secs > 0.0 { ops as f64 / secs } else { 0.0 }
        };
        let first = rate(&windows[..span]);
        let last = rate(&windows[n - span..]);
        let worst = windows
            .iter()
            .filter_map(|w| w.latency_ms.map(|l| (w.window, l.p99)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let mut errors_by_kind = BTreeMap::new();
        for w in windows {
            for (label, count) in &w.errors_by_kind {
                *errors_by_kind.entry(label.clone()).or_insert(0) += count;
            }
        }
        WindowSummary {
            window_s: window.as_secs_f64(),
            windows: n as u64,
            trend_span_s: windows[..span].iter().map(|w| w.length_s).sum(),
            first_ops_per_s: first,
            last_ops_per_s: last,
            last_to_first_ratio: (n >= 2 && first > 0.0).then(|| last / first),
            worst_p99_ms: worst.map(|(_, p99)| p99),
            worst_p99_window: worst.map(|(w, _)| w),
            errors: errors_by_kind.values().sum(),
            errors_by_kind,
        }
    }
}

/// Seconds for a person: up to millisecond precision, without trailing zeros (`10`, `0.25`).
fn seconds(s: f64) -> String {
    let text = format!("{s:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl std::fmt::Display for WindowSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "windows    {} of {} s",
            self.windows,
            seconds(self.window_s)
        )?;
        match self.last_to_first_ratio {
            Some(ratio) => write!(
                f,
                "; last {span} s {:.1} ops/s vs first {span} s {:.1} ops/s = {:.3}",
                self.last_ops_per_s,
                self.first_ops_per_s,
                ratio,
                span = seconds(self.trend_span_s),
            )?,
            None => write!(f, "; too few windows for a trend")?,
        }
        match (self.worst_p99_ms, self.worst_p99_window) {
            (Some(p99), Some(w)) => write!(f, "; worst p99 {p99:.3} ms (window {w})")?,
            _ => write!(f, "; no successful operation")?,
        }
        write!(f, "; errors {}", self.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn samples_fall_in_the_window_of_their_time_and_late_ones_in_the_last() {
        // Given 10 s windows and a 30 s limit, then samples map by time, and one finishing
        // after the deadline counts in the last window.
        let clock = WindowClock::new(Duration::from_secs(10), Some(Duration::from_secs(30)));
        assert_eq!(clock.last, Some(2));
        assert_eq!(clock.index(secs(0.0)), 0);
        assert_eq!(clock.index(secs(9.999)), 0);
        assert_eq!(clock.index(secs(10.0)), 1);
        assert_eq!(clock.index(secs(31.5)), 2);
        assert_eq!(clock.start(2), Duration::from_secs(20));
        // a limit that is not a multiple: 25 s → windows 0, 1, 2 (the last 5 s long)
        assert_eq!(
            WindowClock::new(Duration::from_secs(10), Some(secs(25.0))).last,
            Some(2)
        );
        // no limit: no clamping
        assert_eq!(
            WindowClock::new(Duration::from_secs(10), None).index(secs(95.0)),
            9
        );
    }

    #[test]
    fn draining_takes_whole_windows_and_leaves_later_ones() {
        // Given samples of two workers in windows 0, 1 and 2
        let clock = WindowClock::new(Duration::from_secs(10), None);
        let (a, b) = (WorkerWindows::default(), WorkerWindows::default());
        for (worker, at, sample) in [
            (&a, 1.0, Sample::Ok(2 * MS)),
            (&a, 5.0, Sample::Ok(4 * MS)),
            (&b, 9.0, Sample::Failed("503/no_leader".into())),
            (&b, 12.0, Sample::Ok(3 * MS)),
            (&a, 25.0, Sample::Ok(MS)),
        ] {
            worker.record(&clock, || secs(at), sample);
        }
        // When windows up to 1 are drained from both and merged
        let mut merged: BTreeMap<u64, WindowTally> = BTreeMap::new();
        for worker in [&a, &b] {
            for (index, tally) in worker.drain_through(1) {
                merged.entry(index).or_default().merge(&tally);
            }
        }
        // Then window 0 has both workers' samples, window 1 its one, and window 2 waits
        assert_eq!(merged.keys().copied().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(merged[&0].histogram.count(), 2);
        assert_eq!(merged[&0].errors["503/no_leader"], 1);
        assert_eq!(merged[&1].histogram.count(), 1);
        let rest = a.drain_through(u64::MAX);
        assert_eq!(rest.keys().copied().collect::<Vec<_>>(), [2]);
        assert!(a.drain_through(u64::MAX).is_empty());
    }

    #[test]
    fn a_window_reports_rate_percentiles_and_errors() {
        // Given 1,000 successes in a 10 s window, 990 at 1 ms and 10 at 50 ms, and 3 errors
        let mut tally = WindowTally::default();
        for i in 0..1000 {
            tally
                .histogram
                .record(if i % 100 == 0 { 50 * MS } else { MS });
        }
        tally.errors.insert("timeout".into(), 2);
        tally.errors.insert("503/no_leader".into(), 1);
        let w = WindowReport::of(3, Duration::from_secs(30), Duration::from_secs(10), &tally);
        // Then the rate is per second of the window and p99 is still the fast path
        assert_eq!((w.window, w.ops, w.errors), (3, 1000, 3));
        assert!((w.ops_per_s - 100.0).abs() < 1e-9);
        let l = w.latency_ms.expect("successes");
        assert!(
            (l.p50 - 1.0).abs() < 0.01 && (l.p99 - 1.0).abs() < 0.01,
            "{l:?}"
        );
        assert!((l.max - 50.0).abs() < 1e-9);
        // (1.004: the histogram answers its bucket's upper bound, within 1/128 of 1 ms)
        assert_eq!(
            w.csv_row(),
            "3,30.000,10.000,1000,100.0,1.004,1.004,50.000,3,503/no_leader=1;timeout=2"
        );
        assert_eq!(
            w.csv_row().split(',').count(),
            WindowReport::CSV_HEADER.split(',').count()
        );
        assert!(
            w.to_string()
                .contains("errors 3 (503/no_leader: 1, timeout: 2)")
        );
        // and an empty window has no latency and empty latency fields
        let empty = WindowReport::of(4, secs(40.0), secs(10.0), &WindowTally::default());
        assert_eq!(empty.latency_ms, None);
        assert_eq!(empty.csv_row(), "4,40.000,10.000,0,0.0,,,,0,");
    }

    fn window(index: u64, ops: u64, p99: f64, errors: u64) -> WindowReport {
        WindowReport {
            window: index,
            start_s: index as f64 * 10.0,
            length_s: 10.0,
            ops,
            ops_per_s: ops as f64 / 10.0,
            latency_ms: (ops > 0).then_some(WindowLatencyMs {
                p50: p99 / 2.0,
                p99,
                max: p99 * 2.0,
            }),
            errors,
            errors_by_kind: if errors > 0 {
                BTreeMap::from([("timeout".to_owned(), errors)])
            } else {
                BTreeMap::new()
            },
        }
    }

    #[test]
    fn the_summary_compares_the_last_minute_with_the_first() {
        // Given 5 minutes of 10 s windows slowing from 2,000 to 1,500 ops/s in the last
        // minute, one slow window and two errors
        let windows: Vec<WindowReport> = (0..30)
            .map(|i| {
                let ops = if i >= 24 { 15_000 } else { 20_000 };
                let p99 = if i == 17 { 12.5 } else { 4.0 };
                window(i, ops, p99, u64::from(i == 3) * 2)
            })
            .collect();
        let s = WindowSummary::of(Duration::from_secs(10), &windows);
        // Then the trend is over 60 s at each end, and the worst window is named
        assert_eq!(s.windows, 30);
        assert!((s.trend_span_s - 60.0).abs() < 1e-9);
        assert!((s.first_ops_per_s - 2000.0).abs() < 1e-9);
        assert!((s.last_ops_per_s - 1500.0).abs() < 1e-9);
        assert!((s.last_to_first_ratio.expect("trend") - 0.75).abs() < 1e-9);
        assert_eq!((s.worst_p99_ms, s.worst_p99_window), (Some(12.5), Some(17)));
        assert_eq!(s.errors, 2);
        assert!(
            s.to_string().starts_with(
                "windows    30 of 10 s; last 60 s 1500.0 ops/s vs first 60 s 2000.0 ops/s = 0.750; worst p99 12.500 ms (window 17); errors 2"
            ),
            "{s}"
        );
        assert_eq!(seconds(0.25), "0.25");
        assert_eq!(seconds(60.0), "60");
    }

    #[test]
    fn a_short_run_compares_non_overlapping_halves() {
        // Given a 30 s run (three windows), then the first and the last window are compared
        let windows = [
            window(0, 1000, 1.0, 0),
            window(1, 900, 1.0, 0),
            window(2, 800, 1.0, 0),
        ];
        let s = WindowSummary::of(Duration::from_secs(10), &windows);
        assert!((s.trend_span_s - 10.0).abs() < 1e-9);
        assert!((s.last_to_first_ratio.expect("trend") - 0.8).abs() < 1e-9);
        // and one window alone has no trend
        let s = WindowSummary::of(Duration::from_secs(10), &windows[..1]);
        assert_eq!(s.last_to_first_ratio, None);
    }

    #[test]
    fn errors_are_labelled_by_status_and_code() {
        assert_eq!(
            error_label(&Error::NoLeader("the leader changed (no_leader)".into())),
            "503/no_leader"
        );
        assert_eq!(error_label(&Error::NoLeader("odd message".into())), "503");
        assert_eq!(
            error_label(&Error::Rejected {
                status: 409,
                code: "stale_sequence".into(),
                message: "m".into()
            }),
            "409/stale_sequence"
        );
        assert_eq!(error_label(&Error::Timeout("t".into())), "timeout");
    }
}
