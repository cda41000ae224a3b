//! The check and the report of a run: the history through the linearizability checker, the
//! members' final states compared, the counts, and the files a person reads afterwards.
//!
//! Files written under the run's directory:
//! `history.jsonl` (raftkv JSON Lines, re-checkable with `lincheck`), `run.json` (the
//! [`RunRecord`]: options, faults with times, final states), `check.txt` (the checker's
//! report), `report.txt` (the summary), `latency.svg` (latency over time, fault windows shaded),
//! `report.html` (summary and picture in one page) and, on a violation, `violation.html` (the
//! smallest failing set, drawn by the checker).
//!
//! Invariant: the exit code says exactly what was proven: 0 only when the checker found a
//! linearization *and* every member's final state is the same; 1 when the checker proved a
//! violation or two members ended with different states; 2 for everything undecided.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::lincheck::{
    self, CheckOptions, Event, EventKind, History, KvModel, Operation, Outcome, Verdict, picture,
};

use super::faults::{FaultKind, FaultRecord};

/// Exit status: linearizable and equal final states.
pub const EXIT_OK: u8 = 0;
/// Exit status: a violation was proven (history or final states).
pub const EXIT_VIOLATION: u8 = 1;
/// Exit status: undecided (checker budget, cluster did not settle) or a setup error.
pub const EXIT_UNKNOWN: u8 = 2;
/// Time the checker may spend shrinking a violation to a small failing set, by default.
pub const SHRINK_BUDGET: Duration = Duration::from_secs(10);

/// Time limits of the check stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// For the verdict; when it runs out the verdict is unknown.
    pub check: Duration,
    /// For shrinking a violation (the verdict stands whatever this is).
    pub shrink: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            check: crate::lincheck::check::DEFAULT_CHECK_BUDGET,
            shrink: SHRINK_BUDGET,
        }
    }
}
/// Most points drawn in the latency picture; longer runs are thinned evenly.
pub const PLOT_POINTS_MAX: usize = 20_000;

/// Why a report could not be made.
#[derive(Debug, Error)]
pub enum ReportError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The history or the run record does not parse.
    #[error("{0}")]
    Parse(String),
}

/// A member's state at the end of the run, read with stale reads once all applied indexes
/// were equal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Node name.
    pub name: String,
    /// The applied index the reads were made at.
    pub applied_index: u64,
    /// Every key of the workload and its value (`None`: absent).
    pub values: BTreeMap<String, Option<String>>,
}

/// Everything about a run except the history itself (`run.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The command line that ran it (to repeat it).
    pub command: String,
    /// The seed of the fault schedule and of the clients' choices.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Concurrent client processes.
    pub clients: usize,
    /// Keys in the workload.
    pub keys: usize,
    /// Length of the workload phase, seconds.
    pub duration_s: f64,
    /// The fault kinds enabled.
    pub faults_enabled: Vec<FaultKind>,
    /// The faults, in order.
    pub faults: Vec<FaultRecord>,
    /// Seconds from the start of the workload until the cluster was whole again after healing.
    pub settled_after_s: Option<f64>,
    /// The members' final states; empty when they could not be read.
    pub final_states: Vec<NodeState>,
    /// What stopped the run from reaching a decision (the cluster did not settle, ...).
    pub problem: Option<String>,
    /// Node processes that exited by themselves (a crash is a bug even when the history is
    /// linearizable).
    #[serde(default)]
    pub crashes: Vec<String>,
}

/// Operations by kind and outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// `ok` completions.
    pub ok: usize,
    /// `fail` completions (certainly did not happen).
    pub fail: usize,
    /// `info` completions or none (outcome unknown).
    pub unknown: usize,
    /// Per operation name: (ok, fail, unknown).
    pub by_op: BTreeMap<String, (usize, usize, usize)>,
}

impl Counts {
    /// All operations.
    pub fn total(&self) -> usize {
        self.ok + self.fail + self.unknown
    }
}

/// One operation with its times, for the picture.
#[derive(Clone, Debug)]
struct Sample {
    invoked_s: f64,
    latency_ms: f64,
    outcome: &'static str,
}

/// What the check found.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The checker's verdict on the history.
    pub verdict: Verdict,
    /// `Some(true)` when every member ended with the same state, `None` when unknown.
    pub states_equal: Option<bool>,
    /// Operations by outcome.
    pub counts: Counts,
    /// 0, 1 or 2 (see the module docs).
    pub exit_code: u8,
    /// One line for a person.
    pub headline: String,
}

/// Pairs invocations with completions: for each operation, its invoke time, completion time (if
/// any), outcome name and operation name.
fn operations(events: &[Event]) -> Vec<(u64, Option<u64>, &'static str, &'static str)> {
    let mut open: HashMap<u64, (u64, &'static str)> = HashMap::new();
    let mut out = Vec::new();
    for event in events {
        match &event.kind {
            EventKind::Invoke(op) => {
                if let Some((t, name)) = open.insert(event.process, (event.time, op.name())) {
                    out.push((t, None, "unknown", name));
                }
            }
            EventKind::Complete(outcome) => {
                if let Some((t, name)) = open.remove(&event.process) {
                    let kind = match outcome {
                        Outcome::Ok(_) => "ok",
                        Outcome::Fail => "fail",
                        Outcome::Unknown => "unknown",
                    };
                    out.push((t, Some(event.time), kind, name));
                }
            }
        }
    }
    out.extend(
        open.into_values()
            .map(|(t, name)| (t, None, "unknown", name)),
    );
    out.sort_by_key(|o| o.0);
    out
}

/// Counts operations by outcome.
pub fn count(events: &[Event]) -> Counts {
    let mut counts = Counts::default();
    for (_, _, outcome, name) in operations(events) {
        let entry = counts.by_op.entry(name.to_string()).or_default();
        match outcome {
            "ok" => {
                counts.ok += 1;
                entry.0 += 1;
            }
            "fail" => {
                counts.fail += 1;
                entry.1 += 1;
            }
            _ => {
                counts.unknown += 1;
                entry.2 += 1;
            }
        }
    }
    counts
}

/// Compares the members' final states: `None` when there are none to compare.
pub fn states_equal(states: &[NodeState]) -> Option<bool> {
    let first = states.first()?;
    Some(states.iter().all(|s| s.values == first.values))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), ReportError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| ReportError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Writes the history as raftkv JSON Lines (`history.jsonl`).
pub fn write_history(dir: &Path, events: &[Event]) -> Result<(), ReportError> {
    let text = lincheck::formats::raftkv::write_events(events)
        .map_err(|e| ReportError::Parse(e.to_string()))?;
    write(dir, "history.jsonl", &text)
}

/// Writes `run.json`.
pub fn write_record(dir: &Path, record: &RunRecord) -> Result<(), ReportError> {
    let text = serde_json::to_string_pretty(record)
        .map_err(|e| ReportError::Parse(format!("run.json: {e}")))?;
    write(dir, "run.json", &text)
}

/// Reads a run's directory back: its record and its history's events.
pub fn load(dir: &Path) -> Result<(RunRecord, Vec<Event>), ReportError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| ReportError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let record: RunRecord = serde_json::from_str(&read("run.json")?)
        .map_err(|e| ReportError::Parse(format!("{}: {e}", dir.join("run.json").display())))?;
    let events = lincheck::formats::raftkv::parse_events(&read("history.jsonl")?)
        .map_err(|e| ReportError::Parse(format!("{}: {e}", dir.join("history.jsonl").display())))?;
    Ok((record, events))
}

/// Checks the history and the final states, writes the report files into `dir`, and says what
/// was found.
pub fn evaluate(
    record: &RunRecord,
    events: &[Event],
    dir: &Path,
    budgets: Budgets,
) -> Result<Evaluation, ReportError> {
    let history = History::from_events(events).map_err(|e| ReportError::Parse(e.to_string()))?;
    let options = CheckOptions {
        budget: budgets.check,
        ..CheckOptions::default()
    };
    let model = KvModel { initial: None };
    let analysis = lincheck::analyze(&model, &history, &options, budgets.shrink)
        .map_err(|e| ReportError::Parse(e.to_string()))?;
    write(dir, "check.txt", &analysis.text)?;
    let verdict = analysis.report.verdict;
    if let Some(minimal) = &analysis.minimal {
        let title = format!("{}: {verdict}", dir.join("history.jsonl").display());
        write(
            dir,
            "violation.html",
            &picture::html(&history, Some(minimal), &title, &analysis.text),
        )?;
    }
    let states_equal = states_equal(&record.final_states);
    let counts = count(events);
    let (exit_code, headline) = match (verdict, states_equal) {
        (Verdict::NotLinearizable, _) => (
            EXIT_VIOLATION,
            format!(
                "NOT linearizable: {} operations; the failing set is in {}",
                counts.total(),
                dir.join("check.txt").display()
            ),
        ),
        (_, Some(false)) => (
            EXIT_VIOLATION,
            format!(
                "final states differ between members: {}",
                state_difference(&record.final_states)
            ),
        ),
        (Verdict::Unknown, _) => (
            EXIT_UNKNOWN,
            format!(
                "unknown: the checker's budget ran out on {} operations",
                counts.total()
            ),
        ),
        (Verdict::Linearizable, None) => (
            EXIT_UNKNOWN,
            format!(
                "unknown: history linearizable, but the final states could not be compared ({})",
                record.problem.as_deref().unwrap_or("no state read")
            ),
        ),
        (Verdict::Linearizable, Some(true)) => (
            EXIT_OK,
            format!(
                "linearizable, {} members with equal final states: {} operations ({} ok, {} fail, {} unknown), {} faults",
                record.final_states.len(),
                counts.total(),
                counts.ok,
                counts.fail,
                counts.unknown,
                record.faults.len()
            ),
        ),
    };
    let (exit_code, headline) = if exit_code == EXIT_OK && !record.crashes.is_empty() {
        (
            EXIT_UNKNOWN,
            format!(
                "linearizable with equal final states, but {}",
                record.crashes.join("; ")
            ),
        )
    } else {
        (exit_code, headline)
    };
    let evaluation = Evaluation {
        verdict,
        states_equal,
        counts,
        exit_code,
        headline,
    };
    let summary = summary(record, &evaluation, &analysis.report);
    write(dir, "report.txt", &summary)?;
    let svg = latency_svg(record, events);
    write(dir, "latency.svg", &svg)?;
    write(dir, "report.html", &html_page(&summary, &svg))?;
    Ok(evaluation)
}

fn state_difference(states: &[NodeState]) -> String {
    let Some(first) = states.first() else {
        return String::new();
    };
    for other in &states[1..] {
        for (key, value) in &first.values {
            let theirs = other.values.get(key).cloned().flatten();
            if theirs != *value {
                return format!(
                    "key {key}: {} has {value:?}, {} has {theirs:?}",
                    first.name, other.name
                );
            }
        }
    }
    "different key sets".into()
}

fn summary(record: &RunRecord, evaluation: &Evaluation, check: &lincheck::CheckReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "RaftKV Jepsen-style run");
    let _ = writeln!(out, "command: {}", record.command);
    let _ = writeln!(
        out,
        "{} nodes, {} clients, {} keys, workload {:.1} s, seed {}",
        record.nodes, record.clients, record.keys, record.duration_s, record.seed
    );
    let _ = writeln!(out, "\nverdict: {}", evaluation.headline);
    let _ = writeln!(
        out,
        "checker: {} on {} operations checked in {} partitions, {:.3} s, {} steps",
        check.verdict,
        check.calls,
        check.partitions_total,
        check.elapsed.as_secs_f64(),
        check.steps_total
    );
    let c = &evaluation.counts;
    let _ = writeln!(
        out,
        "\noperations: {} ({} ok, {} fail, {} unknown)",
        c.total(),
        c.ok,
        c.fail,
        c.unknown
    );
    for (op, (ok, fail, unknown)) in &c.by_op {
        let _ = writeln!(
            out,
            "  {op:<7} ok {ok:>6}  fail {fail:>6}  unknown {unknown:>6}"
        );
    }
    let _ = writeln!(out, "\nfaults ({}):", record.faults.len());
    for f in &record.faults {
        let _ = writeln!(
            out,
            "  {:>7.2} s - {:>7.2} s  {:<10} {}{}{}",
            f.start_s,
            f.end_s,
            f.kind.name(),
            f.description,
            if f.applied { "" } else { " [not applied]" },
            if f.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", f.note)
            }
        );
    }
    if let Some(s) = record.settled_after_s {
        let _ = writeln!(
            out,
            "\ncluster whole again {s:.1} s after the workload started"
        );
    }
    if let Some(problem) = &record.problem {
        let _ = writeln!(out, "problem: {problem}");
    }
    for crash in &record.crashes {
        let _ = writeln!(out, "crash: {crash}");
    }
    let _ = writeln!(out, "\nfinal states:");
    for s in &record.final_states {
        let values: Vec<String> = s
            .values
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("-")))
            .collect();
        let _ = writeln!(
            out,
            "  {:<6} applied {:>7}  {}",
            s.name,
            s.applied_index,
            values.join(" ")
        );
    }
    match evaluation.states_equal {
        Some(true) => out.push_str("  equal on every member\n"),
        Some(false) => out.push_str("  DIFFERENT\n"),
        None => out.push_str("  not compared\n"),
    }
    out
}

fn fault_colour(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Kill => "#e4572e",
        FaultKind::Pause => "#f3a712",
        FaultKind::Partition => "#7b5ea7",
        FaultKind::Membership => "#29a19c",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Latency of every operation against the time it was invoked (log scale), coloured by
/// outcome, with the fault windows shaded and labelled.
pub fn latency_svg(record: &RunRecord, events: &[Event]) -> String {
    const WIDTH: f64 = 1100.0;
    const HEIGHT: f64 = 420.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    let ops = operations(events);
    let last_event_s = events.last().map_or(0.0, |e| e.time as f64 / 1e9);
    let span_s = last_event_s.max(record.duration_s).max(1.0);
    let samples: Vec<Sample> = ops
        .iter()
        .map(|&(invoked, completed, outcome, _)| Sample {
            invoked_s: invoked as f64 / 1e9,
            // An operation that never completed is drawn at its last possible moment.
            latency_ms: completed.map_or(span_s * 1e3 - invoked as f64 / 1e6, |c| {
                (c - invoked) as f64 / 1e6
            }),
            outcome,
        })
        .collect();
    let stride = samples.len().div_ceil(PLOT_POINTS_MAX).max(1);
    let max_ms = samples
        .iter()
        .map(|s| s.latency_ms)
        .fold(10.0_f64, f64::max);
    let (lo, hi) = (0.1_f64.log10(), max_ms.log10().ceil());
    let x = |s: f64| LEFT + (s / span_s) * (WIDTH - LEFT - RIGHT);
    let y = |ms: f64| {
        let v = ms.max(0.1).log10();
        HEIGHT - BOTTOM - (v - lo) / (hi - lo) * (HEIGHT - TOP - BOTTOM)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"##
    );
    let _ = writeln!(
        out,
        r##"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/><text x="{LEFT}" y="16" font-size="13">Latency over time ({} operations; fault windows shaded)</text>"##,
        samples.len()
    );
    for (i, f) in record.faults.iter().enumerate() {
        let (x0, x1) = (x(f.start_s), x(f.end_s.max(f.start_s)));
        let _ = writeln!(
            out,
            r##"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="{}" fill-opacity="0.18"><title>{:.2}-{:.2} s {}</title></rect><text x="{:.1}" y="{}" fill="{}">{}</text>"##,
            (x1 - x0).max(1.0),
            HEIGHT - TOP - BOTTOM,
            fault_colour(f.kind),
            f.start_s,
            f.end_s,
            escape(&f.description),
            x0 + 2.0,
            // Alternate two label rows so that neighbouring windows' labels do not overlap.
            TOP - 4.0 - 12.0 * (i % 2) as f64,
            fault_colour(f.kind),
            f.kind.name()
        );
    }
    // Axes: decades on y, every few seconds on x.
    let mut decade = lo.floor() as i32;
    while f64::from(decade) <= hi {
        let ms = 10f64.powi(decade);
        let yy = y(ms);
        let label = if ms < 1.0 {
            format!("{ms}")
        } else {
            format!("{}", ms as u64)
        };
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            WIDTH - RIGHT,
            LEFT - 4.0,
            yy + 4.0
        );
        decade += 1;
    }
    let step = [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0]
        .into_iter()
        .find(|s| span_s / s <= 15.0)
        .unwrap_or(300.0);
    let mut t = 0.0;
    while t <= span_s {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{}" text-anchor="middle">{t}</text>"##,
            x(t),
            HEIGHT - BOTTOM + 16.0
        );
        t += step;
    }
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{}" text-anchor="middle">seconds since the workload started</text><text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">latency, ms (log)</text>"##,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 10.0,
        HEIGHT / 2.0,
        HEIGHT / 2.0
    );
    for s in samples.iter().step_by(stride) {
        let colour = match s.outcome {
            "ok" => "#1f77b4",
            "fail" => "#ff7f0e",
            _ => "#d62728",
        };
        let _ = writeln!(
            out,
            r##"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{colour}" fill-opacity="0.6"/>"##,
            x(s.invoked_s),
            y(s.latency_ms)
        );
    }
    let legend = [
        ("ok", "#1f77b4"),
        ("fail", "#ff7f0e"),
        ("unknown", "#d62728"),
    ];
    for (i, (name, colour)) in legend.iter().enumerate() {
        let lx = WIDTH - RIGHT - 230.0 + i as f64 * 75.0;
        let _ = writeln!(
            out,
            r##"<circle cx="{lx}" cy="12" r="4" fill="{colour}"/><text x="{}" y="16">{name}</text>"##,
            lx + 7.0
        );
    }
    out.push_str("</svg>\n");
    out
}

fn html_page(summary: &str, svg: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>RaftKV Jepsen-style run</title>\n\
         <style>body{{font-family:sans-serif;margin:1.5em}}pre{{background:#f4f6f8;padding:1em;overflow-x:auto}}</style>\n\
         </head>\n<body>\n<h1>RaftKV Jepsen-style run</h1>\n{svg}<pre>{}</pre>\n</body>\n</html>\n",
        escape(summary)
    )
}

/// Replaces the answer of the `nth` ok read (counting from 0) by `value`, which no write stored:
/// a doctored history that must not be linearizable. For tests of the check stage.
pub fn doctor_read(events: &mut [Event], nth: usize, value: &str) -> bool {
    let mut reads_seen = 0;
    let mut open: HashMap<u64, bool> = HashMap::new();
    for event in events.iter_mut() {
        match &mut event.kind {
            EventKind::Invoke(op) => {
                open.insert(event.process, matches!(op, Operation::Get { .. }));
            }
            EventKind::Complete(Outcome::Ok(lincheck::Output::Value(answer))) => {
                if open.remove(&event.process) == Some(true) {
                    if reads_seen == nth {
                        *answer = Some(value.to_string());
                        return true;
                    }
                    reads_seen += 1;
                }
            }
            EventKind::Complete(_) => {
                open.remove(&event.process);
            }
        }
    }
    false
}
