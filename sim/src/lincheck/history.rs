//! Events, operations and outcomes, and the pairing of invocations with completions into calls.
//!
//! Invariants of a [`History`] built by [`History::from_events`]:
//! * every call's `ret` is `None` (still pending at +infinity) or `>= invoke`;
//! * calls that cannot constrain the search are gone: a call whose outcome is `fail` (it is known
//!   not to have happened) and a read-only call whose result is unknown;
//! * call ids are `0..calls.len()`, in invocation order;
//! * a call's output has the shape its operation expects (a get's output is a value, a
//!   compare-and-swap's says whether it swapped, ...), or is [`Output::Unknown`].

use std::collections::HashMap;
use std::fmt;

use thiserror::Error;

/// A key of the store.
pub type Key = String;
/// A value of the store. Registers store integers; they are kept as their decimal text.
pub type Value = String;
/// A client process: at most one operation outstanding at a time.
pub type ProcessId = u64;
/// A point in time, in any unit, as long as it never goes backwards for one process.
pub type Time = u64;

/// The most events one history may hold: bounds memory before the search starts.
pub const MAX_HISTORY_EVENTS: usize = 4_000_000;

/// What a client asked the store to do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Read one key.
    Get {
        /// The key read.
        key: Key,
    },
    /// Set one key.
    Put {
        /// The key written.
        key: Key,
        /// The value stored.
        value: Value,
    },
    /// Remove one key.
    Delete {
        /// The key removed.
        key: Key,
    },
    /// Set `key` to `new` if it holds `expected` (`None`: if it is absent).
    Cas {
        /// The key compared and written.
        key: Key,
        /// The value the key must hold for the swap to happen; `None` means absent.
        expected: Option<Value>,
        /// The value stored when the comparison succeeds.
        new: Value,
    },
    /// Concatenate `value` to the key's current value (absent counts as empty).
    Append {
        /// The key appended to.
        key: Key,
        /// The text appended.
        value: Value,
    },
    /// Several reads and writes applied atomically, in order (the knossos multi-register).
    Txn {
        /// The micro-operations, in order.
        ops: Vec<MicroOp>,
    },
}

/// One step of a [`Operation::Txn`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MicroOp {
    /// Read a key.
    Read {
        /// The key read.
        key: Key,
    },
    /// Write a key.
    Write {
        /// The key written.
        key: Key,
        /// The value stored.
        value: Value,
    },
}

impl Operation {
    /// The one key this operation touches, or `None` for a transaction.
    pub fn key(&self) -> Option<&str> {
        match self {
            Operation::Get { key }
            | Operation::Put { key, .. }
            | Operation::Delete { key }
            | Operation::Cas { key, .. }
            | Operation::Append { key, .. } => Some(key),
            Operation::Txn { .. } => None,
        }
    }

    /// True when the operation can never change the store's state.
    pub fn is_read_only(&self) -> bool {
        match self {
            Operation::Get { .. } => true,
            Operation::Txn { ops } => ops.iter().all(|op| matches!(op, MicroOp::Read { .. })),
            _ => false,
        }
    }

    /// True when `output` has the shape this operation's completion must have.
    pub fn accepts_output_shape(&self, output: &Output) -> bool {
        match (self, output) {
            (_, Output::Unknown) => true,
            (Operation::Get { .. }, Output::Value(_)) => true,
            (
                Operation::Put { .. } | Operation::Delete { .. } | Operation::Append { .. },
                Output::Done,
            ) => true,
            (Operation::Cas { .. }, Output::Cas { .. }) => true,
            (Operation::Txn { ops }, Output::Txn { reads }) => ops.len() == reads.len(),
            _ => false,
        }
    }

    /// The operation's name as written in histories.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Get { .. } => "get",
            Operation::Put { .. } => "put",
            Operation::Delete { .. } => "delete",
            Operation::Cas { .. } => "cas",
            Operation::Append { .. } => "append",
            Operation::Txn { .. } => "txn",
        }
    }
}

/// What a completed operation answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// Nothing is known about the answer (a timeout, a crash, or a read whose value was not
    /// recorded): any state accepts it.
    Unknown,
    /// A get's answer: the value, or `None` when the key was absent.
    Value(Option<Value>),
    /// A put, delete or append was acknowledged.
    Done,
    /// A compare-and-swap executed; `swapped` says whether its comparison held.
    Cas {
        /// True when the key held the expected value and now holds the new one.
        swapped: bool,
    },
    /// A transaction's answer: for each micro-op, the value a read saw (`None` for a write or
    /// an unrecorded read, which constrain nothing).
    Txn {
        /// One entry per micro-op.
        reads: Vec<Option<Value>>,
    },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It took effect, with this answer.
    Ok(Output),
    /// It is known not to have taken effect.
    Fail,
    /// It may take effect at any time after its invocation, or never (timeout, crash).
    Unknown,
}

/// What one history line records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A client called an operation.
    Invoke(Operation),
    /// The process's outstanding operation ended.
    Complete(Outcome),
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The client process.
    pub process: ProcessId,
    /// When it happened.
    pub time: Time,
    /// Invocation or completion.
    pub kind: EventKind,
    /// The 1-based line of the file it came from (0 when it was not read from a file).
    pub line: usize,
}

/// An operation from invocation to return: the unit the search orders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Index of this call in [`History::calls`].
    pub id: usize,
    /// The client process.
    pub process: ProcessId,
    /// What was asked.
    pub op: Operation,
    /// What was answered ([`Output::Unknown`] for a pending call).
    pub output: Output,
    /// Invocation time.
    pub invoke: Time,
    /// Return time; `None` means +infinity (the outcome is unknown).
    pub ret: Option<Time>,
    /// Line of the invocation (0 when not from a file).
    pub invoke_line: usize,
    /// Line of the completion, if any.
    pub return_line: Option<usize>,
}

impl Call {
    /// True when the call's outcome is unknown: it may take effect at any later time, or never.
    pub fn is_pending(&self) -> bool {
        self.ret.is_none()
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| match v {
            Some(v) => format!("{v:?}"),
            None => "absent".to_string(),
        };
        match &self.op {
            Operation::Get { key } => write!(f, "get {key:?}")?,
            Operation::Put { key, value } => write!(f, "put {key:?}={value:?}")?,
            Operation::Delete { key } => write!(f, "delete {key:?}")?,
            Operation::Cas { key, expected, new } => {
                write!(f, "cas {key:?} {}->{new:?}", show(expected))?
            }
            Operation::Append { key, value } => write!(f, "append {key:?}+={value:?}")?,
            Operation::Txn { ops } => {
                write!(f, "txn [")?;
                for (i, op) in ops.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " " };
                    let seen = match &self.output {
                        Output::Txn { reads } => reads.get(i).cloned().flatten(),
                        _ => None,
                    };
                    match op {
                        MicroOp::Read { key } => match seen {
                            Some(v) => write!(f, "{sep}r {key}={v}")?,
                            None => write!(f, "{sep}r {key}=?")?,
                        },
                        MicroOp::Write { key, value } => write!(f, "{sep}w {key}={value}")?,
                    }
                }
                write!(f, "]")?;
            }
        }
        match &self.output {
            _ if self.ret.is_none() => write!(f, " (unknown outcome)"),
            Output::Unknown => write!(f, " -> ?"),
            Output::Value(v) => write!(f, " -> {}", show(v)),
            Output::Done => write!(f, " ok"),
            Output::Cas { swapped: true } => write!(f, " swapped"),
            Output::Cas { swapped: false } => write!(f, " not swapped"),
            Output::Txn { .. } => write!(f, " ok"),
        }
    }
}

/// Why events could not be paired into calls.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HistoryError {
    /// A completion for a process with no outstanding invocation.
    #[error("line {line}: completion for process {process}, which has no outstanding invocation")]
    UnmatchedCompletion {
        /// Line of the completion.
        line: usize,
        /// Its process.
        process: ProcessId,
    },
    /// A second invocation while the process's previous one is still outstanding.
    #[error(
        "line {line}: process {process} invokes again while its invocation on line {previous_line} is outstanding"
    )]
    OverlappingInvoke {
        /// Line of the second invocation.
        line: usize,
        /// Its process.
        process: ProcessId,
        /// Line of the outstanding one.
        previous_line: usize,
    },
    /// A process's events go back in time.
    #[error("line {line}: process {process} goes back in time ({time} after {previous})")]
    TimeGoesBack {
        /// Line of the event.
        line: usize,
        /// Its process.
        process: ProcessId,
        /// Its time.
        time: Time,
        /// The process's previous time.
        previous: Time,
    },
    /// A completion whose answer does not fit its operation.
    #[error("line {line}: a {op} cannot complete with {output}")]
    OutputMismatch {
        /// Line of the completion.
        line: usize,
        /// The operation's name.
        op: &'static str,
        /// The answer, described.
        output: String,
    },
    /// More events than [`MAX_HISTORY_EVENTS`].
    #[error("the history has {events} events, more than the limit of {limit}")]
    TooLarge {
        /// Events in the input.
        events: usize,
        /// The limit.
        limit: usize,
    },
}

/// A history ready to check: calls with their real-time intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The calls, in invocation order; `calls[i].id == i`.
    pub calls: Vec<Call>,
    /// Calls dropped because they failed (known not to have happened).
    pub failed_dropped: usize,
    /// Read-only calls dropped because their answer is unknown (they constrain nothing).
    pub unknown_reads_dropped: usize,
}

impl History {
    /// Pairs each completion with its process's outstanding invocation. An invocation that is
    /// never completed becomes a pending call (return at +infinity).
    pub fn from_events(events: &[Event]) -> Result<History, HistoryError> {
        if events.len() > MAX_HISTORY_EVENTS {
            return Err(HistoryError::TooLarge {
                events: events.len(),
                limit: MAX_HISTORY_EVENTS,
            });
        }
        // Outstanding invocation per process: index into `open`.
        let mut outstanding: HashMap<ProcessId, usize> = HashMap::new();
        let mut last_time: HashMap<ProcessId, Time> = HashMap::new();
        // (event index of the invoke, completion) in invocation order.
        let mut open: Vec<(usize, Option<(usize, Outcome)>)> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            if let Some(&previous) = last_time.get(&event.process)
                && event.time < previous
            {
                return Err(HistoryError::TimeGoesBack {
                    line: event.line,
                    process: event.process,
                    time: event.time,
                    previous,
                });
            }
            last_time.insert(event.process, event.time);
            match &event.kind {
                EventKind::Invoke(_) => {
                    if let Some(&slot) = outstanding.get(&event.process) {
                        return Err(HistoryError::OverlappingInvoke {
                            line: event.line,
                            process: event.process,
                            previous_line: events[open[slot].0].line,
                        });
                    }
                    outstanding.insert(event.process, open.len());
                    open.push((index, None));
                }
                EventKind::Complete(outcome) => {
                    let Some(slot) = outstanding.remove(&event.process) else {
                        return Err(HistoryError::UnmatchedCompletion {
                            line: event.line,
                            process: event.process,
                        });
                    };
                    open[slot].1 = Some((index, outcome.clone()));
                }
            }
        }

        let mut history = History::default();
        for (invoke_index, completion) in open {
            let invoke = &events[invoke_index];
            let EventKind::Invoke(op) = &invoke.kind else {
                continue;
            };
            let (output, ret, return_line) = match completion {
                None | Some((_, Outcome::Unknown)) => (Output::Unknown, None, None),
                Some((_, Outcome::Fail)) => {
                    history.failed_dropped += 1;
                    continue;
                }
                Some((index, Outcome::Ok(output))) => {
                    let done = &events[index];
                    if !op.accepts_output_shape(&output) {
                        return Err(HistoryError::OutputMismatch {
                            line: done.line,
                            op: op.name(),
                            output: format!("{output:?}"),
                        });
                    }
                    (output, Some(done.time), Some(done.line))
                }
            };
            if op.is_read_only() && output_constrains_nothing(&output) {
                history.unknown_reads_dropped += 1;
                continue;
            }
            history.calls.push(Call {
                id: history.calls.len(),
                process: invoke.process,
                op: op.clone(),
                output,
                invoke: invoke.time,
                ret,
                invoke_line: invoke.line,
                return_line,
            });
        }
        Ok(history)
    }

    /// Number of distinct processes among the calls.
    pub fn process_count(&self) -> usize {
        let mut processes: Vec<ProcessId> = self.calls.iter().map(|c| c.process).collect();
        processes.sort_unstable();
        processes.dedup();
        processes.len()
    }
}

/// True when an answer says nothing about the state (so a read with it can be dropped).
fn output_constrains_nothing(output: &Output) -> bool {
    match output {
        Output::Unknown => true,
        Output::Txn { reads } => reads.iter().all(Option::is_none),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(process: ProcessId, time: Time, kind: EventKind) -> Event {
        Event {
            process,
            time,
            kind,
            line: time as usize + 1,
        }
    }

    fn get(key: &str) -> EventKind {
        EventKind::Invoke(Operation::Get { key: key.into() })
    }

    fn put(key: &str, value: &str) -> EventKind {
        EventKind::Invoke(Operation::Put {
            key: key.into(),
            value: value.into(),
        })
    }

    #[test]
    fn given_an_invoke_never_completed_when_built_then_the_call_returns_at_infinity() {
        let history = History::from_events(&[ev(1, 0, put("a", "1"))]).unwrap();
        assert_eq!(history.calls.len(), 1);
        assert!(history.calls[0].is_pending());
        assert_eq!(history.calls[0].output, Output::Unknown);
    }

    #[test]
    fn given_a_failed_call_when_built_then_it_is_dropped() {
        let events = [
            ev(1, 0, put("a", "1")),
            ev(1, 1, EventKind::Complete(Outcome::Fail)),
        ];
        let history = History::from_events(&events).unwrap();
        assert!(history.calls.is_empty());
        assert_eq!(history.failed_dropped, 1);
    }

    #[test]
    fn given_a_read_with_unknown_outcome_when_built_then_it_is_dropped() {
        let events = [
            ev(1, 0, get("a")),
            ev(1, 1, EventKind::Complete(Outcome::Unknown)),
        ];
        let history = History::from_events(&events).unwrap();
        assert!(history.calls.is_empty());
        assert_eq!(history.unknown_reads_dropped, 1);
    }

    #[test]
    fn given_a_completion_without_invoke_when_built_then_it_names_the_line() {
        let events = [ev(3, 4, EventKind::Complete(Outcome::Ok(Output::Done)))];
        let error = History::from_events(&events).unwrap_err();
        assert_eq!(
            error,
            HistoryError::UnmatchedCompletion {
                line: 5,
                process: 3
            }
        );
        assert!(error.to_string().starts_with("line 5:"));
    }

    #[test]
    fn given_a_get_completed_as_done_when_built_then_the_shape_mismatch_is_an_error() {
        let events = [
            ev(1, 0, get("a")),
            ev(1, 1, EventKind::Complete(Outcome::Ok(Output::Done))),
        ];
        assert!(matches!(
            History::from_events(&events),
            Err(HistoryError::OutputMismatch { line: 2, .. })
        ));
    }

    #[test]
    fn given_two_invokes_by_one_process_when_built_then_it_is_an_error() {
        let events = [ev(1, 0, get("a")), ev(1, 1, get("b"))];
        assert!(matches!(
            History::from_events(&events),
            Err(HistoryError::OverlappingInvoke { line: 2, .. })
        ));
    }
}
