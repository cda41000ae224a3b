//! Shrinking a violation to a small set of calls that still cannot be linearized.
//!
//! Removing calls from a history is not a sound way to shrink it: drop the write a read saw and
//! the read alone "cannot be linearized" for a reason the real history never had. So shrinking
//! here *relaxes* instead of removing. A relaxed call keeps its invocation but loses its return
//! and its answer: it may take effect at any time after it was invoked, or never (a relaxed read
//! constrains nothing and is dropped). Relaxing only ever adds linearizations, so when a search
//! proves the relaxed history not linearizable, the strict calls left are a violation on their
//! own *and* whatever the relaxed calls really did.
//!
//! Steps:
//! 1. The earliest failing prefix: the smallest return time `T` such that the history cut at `T`
//!    (calls returned by `T` strict, calls invoked by `T` and still running relaxed, later calls
//!    gone) is proven not linearizable. A cut of a linearizable history is linearizable, so this
//!    is monotone in `T` and found by binary search.
//! 2. Delta debugging over the strict calls: relax ever smaller chunks, then single calls,
//!    keeping a relaxation only when a search proves the result still not linearizable.
//!
//! The result is 1-minimal (relaxing any one of its calls allows a linearization) when every
//! search finished within its budget; otherwise it is still a proven violation, perhaps not the
//! smallest.
//!
//! Invariant: every set this module returns was proven not linearizable by [`Search`], with all
//! other calls of the partition relaxed.

use std::time::{Duration, Instant};

use super::check::{CheckOptions, Failure};
use super::history::{Call, History, Output, Time};
use super::model::Model;
use super::search::{Limits, Search, SearchOutcome, SearchResult};

/// Time spent shrinking when the caller does not say.
pub const DEFAULT_SHRINK_BUDGET: Duration = Duration::from_secs(10);

/// The longest shrinking budget honoured (a larger one is cut to this, so that adding it to the
/// clock cannot overflow).
pub const SHRINK_BUDGET_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// The most one candidate check may take while shrinking: a candidate that needs longer is
/// treated as "not proven", i.e. the relaxation is not kept.
pub const SHRINK_CHECK_BUDGET_MAX: Duration = Duration::from_secs(2);

/// The fewest search steps one candidate check may take while shrinking before it counts as
/// "not proven" (same treatment as [`SHRINK_CHECK_BUDGET_MAX`]; steps make the result
/// independent of the machine's speed).
pub const SHRINK_CHECK_STEPS_MIN: u64 = 200_000;

/// A candidate may also take this many times the steps the original proof took: candidates
/// close to the whole partition are about as hard as it was.
pub const SHRINK_CHECK_STEPS_FACTOR: u64 = 4;

/// A small set of calls that cannot be linearized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinimalFailure {
    /// The partition the calls come from.
    pub label: String,
    /// The calls (history ids), in invocation order.
    pub calls: Vec<usize>,
    /// How many other calls of the partition were relaxed: allowed to take effect at any time
    /// after their invocation, or never, without making `calls` linearizable.
    pub relaxed: usize,
    /// The longest sequence of `calls` alone that can be linearized (history ids).
    pub best_prefix: Vec<usize>,
    /// The call that cannot be placed after `best_prefix` before it returns.
    pub culprit: Option<usize>,
    /// True when relaxing any single one of `calls` was proven to allow a linearization.
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
    let mut shrinker = Shrinker {
        model,
        history,
        deadline: Instant::now() + budget.min(SHRINK_BUDGET_MAX),
        cache_entries_max: options.cache_entries_max,
        steps_max: SHRINK_CHECK_STEPS_MIN
            .max(failure.steps.saturating_mul(SHRINK_CHECK_STEPS_FACTOR)),
        all_decided: true,
    };
    let partition = &failure.partition.calls;

    // 1. The earliest failing prefix.
    let mut cut: Option<Time> = None;
    let mut returns: Vec<Time> = partition
        .iter()
        .filter_map(|&id| history.calls[id].ret)
        .collect();
    returns.sort_unstable();
    returns.dedup();
    let (mut low, mut high) = (0, returns.len());
    while low < high && !shrinker.out_of_time() {
        let mid = low + (high - low) / 2;
        let t = returns[mid];
        let strict: Vec<usize> = partition
            .iter()
            .copied()
            .filter(|&id| history.calls[id].ret.is_some_and(|r| r <= t))
            .collect();
        if shrinker.fails(&strict, partition, Some(t)).is_some() {
            cut = Some(t);
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    let current: Vec<usize> = partition
        .iter()
        .copied()
        .filter(|&id| match (history.calls[id].ret, cut) {
            (Some(r), Some(t)) => r <= t,
            (Some(_), None) => true,
            (None, _) => false,
        })
        .collect();

    // 2. Delta debugging over the strict calls: first over the reads only, then over all. So
    // reads are relaxed first and the set left tends to be the writes that make a read
    // impossible, which explains more than a read that contradicts another read.
    let (current, _) = shrinker.delta(current, partition, cut, |call| call.op.is_read_only());
    let (mut current, one_minimal) = shrinker.delta(current, partition, cut, |_| true);

    current.sort_unstable();
    // The strict calls alone fail too (relaxed calls may also never happen); their own search
    // gives the longest attempt to show.
    let alone: Vec<&Call> = current.iter().map(|&id| &history.calls[id]).collect();
    // This last search has its own budget, so a spent shrinking budget still shows an attempt.
    let mut search = Search::new(model, alone.clone());
    let limits = Limits {
        deadline: Some(Instant::now() + SHRINK_CHECK_BUDGET_MAX),
        cache_entries_max: options.cache_entries_max,
    };
    search.run(shrinker.steps_max, &limits);
    let SearchOutcome {
        best_prefix,
        culprit,
        ..
    } = search.finish();
    let relaxed = shrinker.relaxed_calls(&current, partition, cut).len();
    MinimalFailure {
        label: failure.partition.label.clone(),
        best_prefix: best_prefix.iter().map(|&i| alone[i].id).collect(),
        culprit: culprit.map(|i| alone[i].id),
        calls: current,
        relaxed,
        one_minimal,
        original_len: partition.len(),
    }
}

struct Shrinker<'a, M> {
    model: &'a M,
    history: &'a History,
    deadline: Instant,
    cache_entries_max: usize,
    /// Steps one candidate check may take.
    steps_max: u64,
    /// False once some candidate check ran out of budget during the current pass.
    all_decided: bool,
}

impl<M: Model> Shrinker<'_, M> {
    /// Delta debugging: relaxes chunks of the calls of `current` that `movable` accepts, halving
    /// the chunk size down to single calls, keeping every relaxation that still fails. Returns
    /// the calls left and whether the result is proven 1-minimal over the movable calls.
    fn delta(
        &mut self,
        mut current: Vec<usize>,
        partition: &[usize],
        cut: Option<Time>,
        movable: impl Fn(&Call) -> bool,
    ) -> (Vec<usize>, bool) {
        let movable_count = |current: &[usize]| {
            current
                .iter()
                .filter(|&&id| movable(&self.history.calls[id]))
                .count()
        };
        let mut chunk = (movable_count(&current) / 2).max(1);
        loop {
            if self.out_of_time() {
                return (current, false);
            }
            let mut relaxed_any = false;
            self.all_decided = true;
            // Walk the movable calls in chunks of `chunk`.
            let mut skip = 0;
            loop {
                if self.out_of_time() {
                    return (current, false);
                }
                let positions: Vec<usize> = current
                    .iter()
                    .enumerate()
                    .filter(|(_, id)| movable(&self.history.calls[**id]))
                    .map(|(at, _)| at)
                    .skip(skip)
                    .take(chunk)
                    .collect();
                if positions.is_empty() {
                    break;
                }
                let candidate: Vec<usize> = current
                    .iter()
                    .enumerate()
                    .filter(|(at, _)| positions.binary_search(at).is_err())
                    .map(|(_, &id)| id)
                    .collect();
                if self.fails(&candidate, partition, cut).is_some() {
                    current = candidate;
                    relaxed_any = true;
                } else {
                    skip += positions.len();
                }
            }
            if chunk == 1 {
                if !relaxed_any {
                    return (current, self.all_decided);
                }
            } else {
                chunk /= 2;
            }
        }
    }

    fn out_of_time(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn limits(&self) -> Limits {
        Limits {
            deadline: Some((Instant::now() + SHRINK_CHECK_BUDGET_MAX).min(self.deadline)),
            cache_entries_max: self.cache_entries_max,
        }
    }

    /// The calls of `partition` relaxed around `strict` (both in id order): not strict, invoked by the cut (if
    /// any) and by the last strict return (after it they could not matter), and able to change
    /// the state (a relaxed read constrains nothing).
    fn relaxed_calls(&self, strict: &[usize], partition: &[usize], cut: Option<Time>) -> Vec<Call> {
        let last_return = strict
            .iter()
            .filter_map(|&id| self.history.calls[id].ret)
            .max()
            .unwrap_or(0);
        let horizon = cut.map_or(last_return, |t| t.min(last_return));
        partition
            .iter()
            .map(|&id| &self.history.calls[id])
            .filter(|call| {
                strict.binary_search(&call.id).is_err()
                    && call.invoke <= horizon
                    && !call.op.is_read_only()
            })
            .map(|call| Call {
                ret: None,
                output: Output::Unknown,
                return_line: None,
                ..call.clone()
            })
            .collect()
    }

    /// Searches `strict` with the rest of `partition` relaxed (and nothing invoked after `cut`);
    /// returns the search's outcome if that is proven not linearizable.
    fn fails(
        &mut self,
        strict: &[usize],
        partition: &[usize],
        cut: Option<Time>,
    ) -> Option<SearchOutcome> {
        if strict.is_empty() {
            return None;
        }
        let mut strict = strict.to_vec();
        strict.sort_unstable();
        let relaxed = self.relaxed_calls(&strict, partition, cut);
        let mut calls: Vec<&Call> = strict.iter().map(|&id| &self.history.calls[id]).collect();
        calls.extend(relaxed.iter());
        let mut search = Search::new(self.model, calls);
        search.run(self.steps_max, &self.limits());
        let outcome = search.finish();
        match outcome.result {
            SearchResult::NotLinearizable => Some(outcome),
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

        // write 1, write 2, read 1: relax any one and the rest is linearizable.
        assert_eq!(minimal.calls, vec![0, 1, 6]);
        assert!(minimal.one_minimal);
        assert_eq!(minimal.culprit, Some(6));
        assert_eq!(minimal.best_prefix, vec![0, 1]);
        assert_eq!(minimal.relaxed, 0);
    }
}
