//! Checking a whole history: split it into the model's partitions, search each under one shared
//! time budget, and combine the answers into a [`Verdict`].
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
use super::search::{Exhaustion, Limits, SearchResult, search};

/// The time a check may take when the caller does not say: long enough for every history we
/// know of (the largest shared ones take well under a second in release builds).
pub const DEFAULT_CHECK_BUDGET: Duration = Duration::from_secs(60);

/// The most (set, state) pairs one partition's search may memoise before it answers unknown:
/// about 1–2 GiB for partitions of a few hundred calls.
pub const DEFAULT_CACHE_ENTRIES_MAX: usize = 10_000_000;

/// Limits on a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Wall time for all partitions together.
    pub budget: Duration,
    /// Memo size limit per partition.
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
    /// Wall time spent.
    pub elapsed: Duration,
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
        elapsed: Duration::ZERO,
    };
    for partition in partitions {
        let calls: Vec<&Call> = partition
            .calls
            .iter()
            .map(|&id| &history.calls[id])
            .collect();
        let outcome = search(model, &calls, &limits);
        report.cache_entries_max_seen = report.cache_entries_max_seen.max(outcome.cache_entries);
        match outcome.result {
            SearchResult::Linearizable { .. } => report.partitions_decided += 1,
            SearchResult::NotLinearizable => {
                report.partitions_decided += 1;
                report.verdict = Verdict::NotLinearizable;
                report.failure = Some(Failure {
                    best_prefix: outcome.best_prefix.iter().map(|&i| calls[i].id).collect(),
                    culprit: outcome.culprit.map(|i| calls[i].id),
                    partition,
                });
                break;
            }
            SearchResult::Exhausted { reason } => {
                report.verdict = Verdict::Unknown;
                report.exhausted = Some(reason);
                if reason == Exhaustion::Time {
                    break;
                }
            }
        }
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
