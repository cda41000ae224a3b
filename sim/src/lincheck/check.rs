//! Checking a whole history: split it into the model's partitions, search them interleaved in
//! doubling slices of steps under one shared time budget and memory limit, and combine the
//! answers into a [`Verdict`]. The first partition proven not linearizable ends the check.
//!
//! Invariants: `NotLinearizable` is reported only when a search proved that some partition has
//! no linearization; `Linearizable` only when every partition has one; anything else — a
//! deadline or memory limit reached in some partition and no violation found in the others — is
//! `Unknown`. A history with no operations is linearizable.

use std::fmt;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::history::{Call, History};
use super::model::{Model, Partition};
use super::search::{Exhaustion, Limits, Search, SearchResult};

/// Search steps each undecided partition gets in the first round; every round doubles it.
pub const SEARCH_SLICE_STEPS_INITIAL: u64 = 10_000;

/// The time a check may take when the caller does not say: long enough for every history we
/// know of (the largest shared ones take well under a second in release builds).
pub const DEFAULT_CHECK_BUDGET: Duration = Duration::from_secs(60);

/// The most (set, state) pairs the searches may memoise at once before a partition answers
/// unknown. An entry costs 100–250 bytes for partitions of a few hundred calls (more for long
/// string states), so this is about 1–2.5 GB at worst.
pub const DEFAULT_CACHE_ENTRIES_MAX: usize = 10_000_000;

/// Limits on a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Wall time for all partitions together.
    pub budget: Duration,
    /// Memo size limit: (set, state) pairs held by all partitions searched at the same time.
    pub cache_entries_max: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            budget: DEFAULT_CHECK_BUDGET,
            cache_entries_max: DEFAULT_CACHE_ENTRIES_MAX,
        }
    }
}

/// The checker's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations, consistent with real time, obeys the model.
    Linearizable,
    /// No such order exists.
    NotLinearizable,
    /// The budget ran out before an answer: nothing is claimed.
    Unknown,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "NOT linearizable",
            Verdict::Unknown => "unknown",
        })
    }
}

/// A partition proven not linearizable, with the search's longest attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The partition (call ids of the history).
    pub partition: Partition,
    /// The longest sequence of calls (history ids) the search could linearize.
    pub best_prefix: Vec<usize>,
    /// The call (history id) that could not be placed after `best_prefix` before it returned.
    pub culprit: Option<usize>,
    /// Search steps the proof took (shrinking scales its per-candidate limit on it).
    pub steps: u64,
}

/// What a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// The answer.
    pub verdict: Verdict,
    /// Calls checked.
    pub calls: usize,
    /// Partitions the history was split into.
    pub partitions_total: usize,
    /// Partitions whose search finished (linearizable or not).
    pub partitions_decided: usize,
    /// For `NotLinearizable`: the partition that failed.
    pub failure: Option<Failure>,
    /// For `Unknown`: which limit was hit.
    pub exhausted: Option<Exhaustion>,
    /// Memoised pairs in the largest partition's search.
    pub cache_entries_max_seen: usize,
    /// Search steps over all partitions (a machine-independent measure of the work done).
    pub steps_total: u64,
    /// Calls in the largest partition.
    pub partition_calls_max: usize,
    /// One entry per partition searched, in the order searched.
    pub partition_stats: Vec<PartitionStats>,
    /// Wall time spent.
    pub elapsed: Duration,
}

/// What the search of one partition did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStats {
    /// The partition's label.
    pub label: String,
    /// Its calls.
    pub calls: usize,
    /// How its search ended.
    pub outcome: PartitionOutcome,
    /// Search steps.
    pub steps: u64,
    /// Memoised (set, state) pairs.
    pub cache_entries: usize,
    /// Wall time of its search.
    pub elapsed: Duration,
}

/// How the search of one partition ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionOutcome {
    /// A linearization was found.
    Linearizable,
    /// Proven to have none.
    NotLinearizable,
    /// A limit was reached.
    Exhausted(Exhaustion),
    /// Stopped because another partition was proven not linearizable, or the deadline passed
    /// while another partition was being searched.
    NotFinished,
}

impl fmt::Display for PartitionOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PartitionOutcome::Linearizable => "linearizable",
            PartitionOutcome::NotLinearizable => "NOT linearizable",
            PartitionOutcome::Exhausted(Exhaustion::Time) => "unknown (time budget spent)",
            PartitionOutcome::Exhausted(Exhaustion::Memory) => "unknown (memory limit reached)",
            PartitionOutcome::NotFinished => "not finished",
        })
    }
}

/// A history the model cannot check at all.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// An operation the model does not know.
    #[error("line {line}: the {model} model has no {op} operation")]
    Unsupported {
        /// The model's name.
        model: &'static str,
        /// The operation's name.
        op: &'static str,
        /// Line of its invocation.
        line: usize,
    },
}

/// Checks `history` against `model`.
pub fn check<M: Model>(
    model: &M,
    history: &History,
    options: &CheckOptions,
) -> Result<CheckReport, CheckError> {
    let started = Instant::now();
    if let Some(call) = history.calls.iter().find(|c| !model.supports(&c.op)) {
        return Err(CheckError::Unsupported {
            model: model.name(),
            op: call.op.name(),
            line: call.invoke_line,
        });
    }
    let limits = Limits {
        deadline: started.checked_add(options.budget),
        cache_entries_max: options.cache_entries_max,
    };
    let partitions = model.partition(&history.calls);
    let mut report = CheckReport {
        verdict: Verdict::Linearizable,
        calls: history.calls.len(),
        partitions_total: partitions.len(),
        partitions_decided: 0,
        failure: None,
        exhausted: None,
        cache_entries_max_seen: 0,
        steps_total: 0,
        partition_calls_max: 0,
        partition_stats: Vec::new(),
        elapsed: Duration::ZERO,
    };
    report.partition_calls_max = partitions.iter().map(|p| p.calls.len()).max().unwrap_or(0);

    // Interleave the partitions' searches in slices that double each round, so that the answer
    // comes from whichever partition is quick to decide: one proven violation settles the
    // history, however hard the other keys are.
    struct Live<'a, M: Model> {
        index: usize,
        partition: Partition,
        search: Search<'a, M>,
        elapsed: Duration,
    }
    let mut live: Vec<Live<'_, M>> = Vec::with_capacity(partitions.len());
    for (index, partition) in partitions.into_iter().enumerate() {
        let calls: Vec<&Call> = partition
            .calls
            .iter()
            .map(|&id| &history.calls[id])
            .collect();
        report.partition_stats.push(PartitionStats {
            label: partition.label.clone(),
            calls: calls.len(),
            outcome: PartitionOutcome::NotFinished,
            steps: 0,
            cache_entries: 0,
            elapsed: Duration::ZERO,
        });
        live.push(Live {
            index,
            search: Search::new(model, calls),
            partition,
            elapsed: Duration::ZERO,
        });
    }
    let mut slice = SEARCH_SLICE_STEPS_INITIAL;
    let mut live_entries = 0usize;
    'rounds: while !live.is_empty() {
        let mut k = 0;
        while k < live.len() {
            let part = &mut live[k];
            let before = part.search.cache_entries();
            let limits = Limits {
                deadline: limits.deadline,
                cache_entries_max: options
                    .cache_entries_max
                    .saturating_sub(live_entries - before),
            };
            let sliced = Instant::now();
            let done = part.search.run(slice, &limits);
            part.elapsed += sliced.elapsed();
            live_entries = live_entries - before + part.search.cache_entries();
            if !done {
                k += 1;
                continue;
            }
            let Live {
                index,
                partition,
                search,
                elapsed,
            } = live.swap_remove(k);
            live_entries -= search.cache_entries();
            let outcome = search.finish();
            report.steps_total += outcome.steps;
            report.cache_entries_max_seen =
                report.cache_entries_max_seen.max(outcome.cache_entries);
            let stats = &mut report.partition_stats[index];
            stats.steps = outcome.steps;
            stats.cache_entries = outcome.cache_entries;
            stats.elapsed = elapsed;
            match outcome.result {
                SearchResult::Linearizable { .. } => {
                    stats.outcome = PartitionOutcome::Linearizable;
                    report.partitions_decided += 1;
                }
                SearchResult::NotLinearizable => {
                    stats.outcome = PartitionOutcome::NotLinearizable;
                    report.partitions_decided += 1;
                    let ids = &partition.calls;
                    report.verdict = Verdict::NotLinearizable;
                    report.failure = Some(Failure {
                        best_prefix: outcome.best_prefix.iter().map(|&i| ids[i]).collect(),
                        culprit: outcome.culprit.map(|i| ids[i]),
                        steps: outcome.steps,
                        partition,
                    });
                    break 'rounds;
                }
                SearchResult::Exhausted { reason } => {
                    stats.outcome = PartitionOutcome::Exhausted(reason);
                    report.verdict = Verdict::Unknown;
                    report.exhausted = Some(reason);
                    if reason == Exhaustion::Time {
                        break 'rounds;
                    }
                }
            }
        }
        slice = slice.saturating_mul(2);
    }
    // Searches cut short by a violation elsewhere or by the deadline.
    for part in live {
        let stats = &mut report.partition_stats[part.index];
        stats.steps = part.search.steps();
        stats.cache_entries = part.search.cache_entries();
        stats.elapsed = part.elapsed;
        report.steps_total += stats.steps;
        report.cache_entries_max_seen = report.cache_entries_max_seen.max(stats.cache_entries);
    }
    if report.verdict == Verdict::Unknown && report.exhausted.is_none() {
        report.exhausted = Some(Exhaustion::Time);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lincheck::history::{Event, EventKind, Operation, Outcome, Output};
    use crate::lincheck::model::KvModel;

    fn history(events: &[(u64, EventKind)]) -> History {
        let events: Vec<Event> = events
            .iter()
            .enumerate()
            .map(|(i, (process, kind))| Event {
                process: *process,
                time: i as u64,
                kind: kind.clone(),
                line: i + 1,
            })
            .collect();
        History::from_events(&events).unwrap()
    }

    fn put(key: &str, value: &str) -> EventKind {
        EventKind::Invoke(Operation::Put {
            key: key.into(),
            value: value.into(),
        })
    }

    fn get(key: &str) -> EventKind {
        EventKind::Invoke(Operation::Get { key: key.into() })
    }

    fn ok(output: Output) -> EventKind {
        EventKind::Complete(Outcome::Ok(output))
    }

    #[test]
    fn given_an_empty_history_when_checked_then_linearizable() {
        let report = check(
            &KvModel::default(),
            &History::default(),
            &CheckOptions::default(),
        );
        assert_eq!(report.unwrap().verdict, Verdict::Linearizable);
    }

    #[test]
    fn given_a_stale_read_on_one_key_when_checked_then_that_key_is_the_failure() {
        let h = history(&[
            (1, put("a", "1")),
            (1, ok(Output::Done)),
            (2, put("b", "1")),
            (2, ok(Output::Done)),
            (3, get("b")),
            (3, ok(Output::Value(None))),
        ]);
        let report = check(&KvModel::default(), &h, &CheckOptions::default()).unwrap();
        assert_eq!(report.verdict, Verdict::NotLinearizable);
        let failure = report.failure.unwrap();
        assert_eq!(failure.partition.label, "key \"b\"");
        assert_eq!(failure.culprit, Some(2));
        assert_eq!(failure.best_prefix, vec![1]);
    }

    #[test]
    fn given_a_zero_budget_when_a_hard_history_is_checked_then_the_verdict_is_unknown() {
        let mut events = Vec::new();
        for p in 0..12 {
            events.push((p, put("k", &p.to_string())));
        }
        for p in 0..12 {
            events.push((p, ok(Output::Done)));
        }
        events.push((99, get("k")));
        events.push((99, ok(Output::Value(Some("never".into())))));
        let h = history(&events);
        let options = CheckOptions {
            budget: Duration::ZERO,
            ..CheckOptions::default()
        };
        let report = check(&KvModel::default(), &h, &options).unwrap();
        assert_eq!(report.verdict, Verdict::Unknown);
        assert_eq!(report.exhausted, Some(Exhaustion::Time));
    }
}
