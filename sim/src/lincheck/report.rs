//! The text report: the verdict in words and, for a violation, a timeline of the failing calls.
//!
//! The timeline has one row per call, in invocation order. Time runs left to right by *rank*
//! (the order of the set's invocations and returns), not by clock, so short and long operations
//! stay readable; `[====]` spans a call from invocation to return and `[====>` one whose outcome
//! is unknown. The culprit row is marked. Rendering never fails and never panics on any report.

use std::fmt::Write as _;

use super::check::{CheckReport, Verdict};
use super::history::{Call, History, Time};
use super::model::Model;
use super::search::Exhaustion;
use super::shrink::MinimalFailure;

/// The widest the bar part of a timeline row may be, in characters.
pub const TIMELINE_WIDTH_MAX: usize = 60;

/// Renders the verdict and, for a violation, the shrunk failing set as a timeline.
pub fn render_text<M: Model>(
    model: &M,
    history: &History,
    report: &CheckReport,
    minimal: Option<&MinimalFailure>,
) -> String {
    let mut out = String::new();
    let seconds = report.elapsed.as_secs_f64();
    match report.verdict {
        Verdict::Linearizable => {
            let _ = writeln!(
                out,
                "linearizable: {} operations in {} partition(s), checked in {seconds:.3} s",
                report.calls, report.partitions_total
            );
        }
        Verdict::Unknown => {
            let limit = match report.exhausted {
                Some(Exhaustion::Memory) => "the memory limit",
                _ => "the time budget",
            };
            let _ = writeln!(
                out,
                "unknown: {limit} ran out after {seconds:.3} s with {} of {} partition(s) decided \
                 and no violation found; nothing is claimed",
                report.partitions_decided, report.partitions_total
            );
        }
        Verdict::NotLinearizable => {
            let _ = writeln!(
                out,
                "NOT linearizable: {} operations in {} partition(s), checked in {seconds:.3} s",
                report.calls, report.partitions_total
            );
            if let Some(minimal) = minimal {
                out.push_str(&render_failure(model, history, minimal));
            }
        }
    }
    out
}

/// Renders one failing set: summary, timeline, and the search's best attempt.
pub fn render_failure<M: Model>(model: &M, history: &History, minimal: &MinimalFailure) -> String {
    let mut out = String::new();
    let how_small = if minimal.one_minimal {
        "each one is needed: relaxing any of them allows a linearization"
    } else {
        "some shrinking checks hit their limits, so this set may not be the smallest"
    };
    let _ = writeln!(
        out,
        "{}: these {} of its {} operations cannot be linearized ({how_small}).",
        minimal.label,
        minimal.calls.len(),
        minimal.original_len
    );
    if minimal.relaxed > 0 {
        let _ = writeln!(
            out,
            "They fail on their own and also whenever the {} other operations that could change \
             the state took effect after their invocation, or never.",
            minimal.relaxed
        );
    }
    out.push('\n');
    let calls: Vec<&Call> = minimal
        .calls
        .iter()
        .filter_map(|&id| history.calls.get(id))
        .collect();
    out.push_str(&timeline(&calls, minimal.culprit));
    out.push('\n');

    // Replay the best attempt to show the state it reached.
    let mut state = model.init();
    let mut described = Vec::new();
    for &id in &minimal.best_prefix {
        let Some(call) = history.calls.get(id) else {
            continue;
        };
        match model.step(&state, &call.op, &call.output) {
            Some(next) => state = next,
            None => break,
        }
        described.push(format!("#{id}"));
    }
    let _ = writeln!(out, "initial state: {}", model.describe(&model.init()));
    if minimal.culprit.is_none() {
        let _ = writeln!(
            out,
            "(the search of this set alone ran out of budget, so no attempt is shown)"
        );
    } else if described.is_empty() {
        let _ = writeln!(out, "the search could not linearize any operation first");
    } else {
        let _ = writeln!(
            out,
            "longest linearizable order found: {} (state after it: {})",
            described.join(" "),
            model.describe(&state)
        );
    }
    if let Some(call) = minimal.culprit.and_then(|id| history.calls.get(id)) {
        let _ = writeln!(
            out,
            "then #{} `{call}` (process {}, line {}) cannot take effect in any order before it returns",
            call.id,
            call.process,
            call.return_line.unwrap_or(call.invoke_line)
        );
    }
    out
}

/// One row per call; bars placed by the rank of invocation and return times.
pub fn timeline(calls: &[&Call], culprit: Option<usize>) -> String {
    let ranks = Ranks::new(calls);
    let width = ranks.width();
    let label_width = calls
        .iter()
        .map(|c| format!("p{}", c.process).len())
        .max()
        .unwrap_or(2);
    let mut out = String::new();
    for call in calls {
        let start = ranks.column(call.invoke);
        let end = call.ret.map(|t| ranks.column(t));
        let mut bar = vec![' '; width + 1];
        let last = end.unwrap_or(width).min(width);
        for cell in bar.iter_mut().take(last + 1).skip(start) {
            *cell = '=';
        }
        bar[start] = '[';
        if end.is_some() {
            bar[last] = ']';
        } else {
            bar[width] = '>';
        }
        if start == last && end.is_some() {
            bar[start] = '|';
        }
        let bar: String = bar.into_iter().collect();
        let mark = if Some(call.id) == culprit {
            "   <-- cannot be linearized"
        } else {
            ""
        };
        let lines = match call.return_line {
            Some(line) => format!("lines {}-{line}", call.invoke_line),
            None => format!("line {}", call.invoke_line),
        };
        let _ = writeln!(
            out,
            "  {:>label_width$} {bar} #{} {call} [{lines}]{mark}",
            format!("p{}", call.process),
            call.id
        );
    }
    out
}

/// Maps times to columns by rank, squeezed into [`TIMELINE_WIDTH_MAX`].
struct Ranks {
    times: Vec<Time>,
    step: usize,
}

impl Ranks {
    fn new(calls: &[&Call]) -> Ranks {
        let mut times: Vec<Time> = calls
            .iter()
            .flat_map(|c| std::iter::once(c.invoke).chain(c.ret))
            .collect();
        times.sort_unstable();
        times.dedup();
        let step = if times.len() * 3 <= TIMELINE_WIDTH_MAX {
            3
        } else if times.len() * 2 <= TIMELINE_WIDTH_MAX {
            2
        } else {
            1
        };
        Ranks { times, step }
    }

    fn width(&self) -> usize {
        let columns = self.times.len().saturating_sub(1) * self.step + 1;
        columns.min(TIMELINE_WIDTH_MAX) + 1
    }

    fn column(&self, time: Time) -> usize {
        let rank = self.times.partition_point(|&t| t < time);
        let raw = rank * self.step;
        let span = self.times.len().saturating_sub(1) * self.step;
        if span > TIMELINE_WIDTH_MAX {
            raw * TIMELINE_WIDTH_MAX / span
        } else {
            raw
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lincheck::history::{Operation, Output};

    fn call(id: usize, process: u64, invoke: u64, ret: Option<u64>) -> Call {
        Call {
            id,
            process,
            op: Operation::Get { key: "k".into() },
            output: Output::Value(Some("1".into())),
            invoke,
            ret,
            invoke_line: invoke as usize + 1,
            return_line: ret.map(|t| t as usize + 1),
        }
    }

    #[test]
    fn given_overlapping_calls_when_drawn_then_bars_overlap_and_the_culprit_is_marked() {
        let a = call(0, 1, 0, Some(20));
        let b = call(1, 2, 10, Some(30));
        let c = call(2, 3, 40, None);
        let text = timeline(&[&a, &b, &c], Some(1));
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].contains("p1 [=====]"), "{text}");
        assert!(rows[1].contains("p2    [=====]"), "{text}");
        assert!(rows[1].ends_with("<-- cannot be linearized"), "{text}");
        assert!(rows[2].contains("[=>"), "{text}");
        assert!(rows[2].contains("(unknown outcome)"), "{text}");
    }

    #[test]
    fn given_hundreds_of_calls_when_drawn_then_rows_stay_within_the_width_limit() {
        let calls: Vec<Call> = (0..300)
            .map(|i| call(i, i as u64, i as u64 * 2, Some(i as u64 * 2 + 1)))
            .collect();
        let refs: Vec<&Call> = calls.iter().collect();
        let text = timeline(&refs, None);
        for row in text.lines() {
            let bar = row.split('#').next().unwrap_or_default();
            assert!(bar.chars().count() <= TIMELINE_WIDTH_MAX + 10, "{row}");
        }
    }
}
