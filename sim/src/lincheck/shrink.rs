//! Shrinking a violation to a small set of calls that still cannot be linearized.
//!
//! Start from the failing partition; first try keeping only the calls invoked before the
//! culprit returned, then remove ever smaller chunks (delta debugging), then single calls, each
//! time keeping a removal only when a search *proves* the rest still not linearizable. The result
//! is 1-minimal (removing any one call makes it linearizable) when every check finished in time;
//! otherwise it is still a proven violation, just perhaps not the smallest.
//!
//! Invariant: every set this module returns was proven not linearizable by [`search`].

use std::time::{Duration, Instant};

use super::check::{CheckOptions, Failure};
use super::history::{Call, History};
use super::model::Model;
use super::search::{Limits, SearchOutcome, SearchResult, search};

/// Time spent shrinking when the caller does not say.
pub const DEFAULT_SHRINK_BUDGET: Duration = Duration::from_secs(10);

/// The most one candidate check may take while shrinking: a candidate that needs longer is
/// treated as "not proven", i.e. the removal is not kept.
pub const SHRINK_CHECK_BUDGET_MAX: Duration = Duration::from_secs(2);

/// A small set of calls that cannot be linearized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinimalFailure {
    /// The partition the calls come from.
    pub label: String,
    /// The calls (history ids), in invocation order.
    pub calls: Vec<usize>,
    /// The longest sequence of these calls that can be linearized (history ids).
    pub best_prefix: Vec<usize>,
    /// The call that cannot be placed after `best_prefix` before it returns.
    pub culprit: Option<usize>,
    /// True when removing any single call was proven to make the rest linearizable.
    pub one_minimal: bool,
    /// Calls in the failing partition before shrinking.
    pub original_len: usize,
}

/// Shrinks `failure` (a partition of `history` proven not linearizable).
pub fn shrink<M: Model>(
    model: &M,
    history: &History,
    failure: &Failure,
    budget: Duration,
    options: &CheckOptions,
) -> MinimalFailure {
    let deadline = Instant::now() + budget;
    let mut shrinker = Shrinker {
        model,
        history,
        deadline,
        cache_entries_max: options.cache_entries_max,
        all_decided: true,
    };
    let mut current = failure.partition.calls.clone();
    let mut best = (failure.best_prefix.clone(), failure.culprit);

    // Calls invoked after the culprit returned are often irrelevant: try without them at once.
    if let Some(ret) = failure.culprit.and_then(|c| history.calls[c].ret) {
        let before: Vec<usize> = current
            .iter()
            .copied()
            .filter(|&id| history.calls[id].invoke <= ret)
            .collect();
        if before.len() < current.len()
            && let Some(found) = shrinker.still_fails(&before)
        {
            current = before;
            best = found;
        }
    }

    let mut chunk = (current.len() / 2).max(1);
    let mut one_minimal = false;
    while Instant::now() < deadline {
        let mut removed_any = false;
        shrinker.all_decided = true;
        let mut start = 0;
        while start < current.len() && Instant::now() < deadline {
            let end = (start + chunk).min(current.len());
            let candidate: Vec<usize> = current[..start]
                .iter()
                .chain(&current[end..])
                .copied()
                .collect();
            match shrinker.still_fails(&candidate) {
                Some(found) => {
                    current = candidate;
                    best = found;
                    removed_any = true;
                }
                None => start = end,
            }
        }
        if chunk == 1 {
            if !removed_any && start >= current.len() {
                one_minimal = shrinker.all_decided;
                break;
            }
        } else {
            chunk /= 2;
        }
    }

    MinimalFailure {
        label: failure.partition.label.clone(),
        calls: current,
        best_prefix: best.0,
        culprit: best.1,
        one_minimal,
        original_len: failure.partition.calls.len(),
    }
}

struct Shrinker<'a, M> {
    model: &'a M,
    history: &'a History,
    deadline: Instant,
    cache_entries_max: usize,
    /// False once some candidate check ran out of budget during the current pass.
    all_decided: bool,
}

impl<M: Model> Shrinker<'_, M> {
    /// Searches the calls `ids`; returns the best attempt (history ids) if they are proven not
    /// linearizable.
    fn still_fails(&mut self, ids: &[usize]) -> Option<(Vec<usize>, Option<usize>)> {
        if ids.is_empty() {
            return None;
        }
        let calls: Vec<&Call> = ids.iter().map(|&id| &self.history.calls[id]).collect();
        let check_deadline = (Instant::now() + SHRINK_CHECK_BUDGET_MAX).min(self.deadline);
        let limits = Limits {
            deadline: Some(check_deadline),
            cache_entries_max: self.cache_entries_max,
        };
        let SearchOutcome {
            result,
            best_prefix,
            culprit,
            ..
        } = search(self.model, &calls, &limits);
        match result {
            SearchResult::NotLinearizable => Some((
                best_prefix.iter().map(|&i| calls[i].id).collect(),
                culprit.map(|i| calls[i].id),
            )),
            SearchResult::Linearizable { .. } => None,
            SearchResult::Exhausted { .. } => {
                self.all_decided = false;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lincheck::check::{Verdict, check};
    use crate::lincheck::history::{Event, EventKind, Operation, Outcome, Output};
    use crate::lincheck::model::KvModel;

    #[test]
    fn given_a_stale_read_among_noise_when_shrunk_then_only_the_write_and_the_read_remain() {
        // Process 0 writes "1" then "2" sequentially; others read along; process 9's read of "1"
        // after "2" was written is stale. Unrelated reads of "2" are noise.
        let mut events = Vec::new();
        let mut push = |process: u64, kind: EventKind| {
            let time = events.len() as u64;
            events.push(Event {
                process,
                time,
                kind,
                line: time as usize + 1,
            })
        };
        let put = |v: &str| {
            EventKind::Invoke(Operation::Put {
                key: "k".into(),
                value: v.into(),
            })
        };
        let get = || EventKind::Invoke(Operation::Get { key: "k".into() });
        let ok = |o: Output| EventKind::Complete(Outcome::Ok(o));
        push(0, put("1"));
        push(0, ok(Output::Done));
        push(0, put("2"));
        push(0, ok(Output::Done));
        for p in 1..5 {
            push(p, get());
            push(p, ok(Output::Value(Some("2".into()))));
        }
        push(9, get());
        push(9, ok(Output::Value(Some("1".into()))));
        let history = History::from_events(&events).unwrap();
        let model = KvModel::default();
        let options = CheckOptions::default();
        let report = check(&model, &history, &options).unwrap();
        assert_eq!(report.verdict, Verdict::NotLinearizable);

        let minimal = shrink(
            &model,
            &history,
            report.failure.as_ref().unwrap(),
            DEFAULT_SHRINK_BUDGET,
            &options,
        );

        // write 1, write 2, read 1: drop any one and the rest is linearizable.
        assert_eq!(minimal.calls, vec![0, 1, 6]);
        assert!(minimal.one_minimal);
        assert_eq!(minimal.culprit, Some(6));
    }
}
