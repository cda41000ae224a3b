//! Property tests of the checker on generated histories.
//!
//! A generated run has several client processes whose operations overlap in time, but the
//! store executes them one at a time: each operation takes effect at one instant between its
//! invocation and its completion, on a real map. Such a history is linearizable by
//! construction, whatever the interleaving, including operations that end `fail` (they never
//! executed) and `info` (their process gave up: they executed before, execute later, or never). Corrupting one read
//! answer into a value that only a *later* write produces (or that no write produces) makes it
//! not linearizable.

use std::collections::BTreeMap;

use proptest::prelude::*;
use sim::lincheck::formats::raftkv;
use sim::lincheck::{
    CheckOptions, Event, EventKind, History, KvModel, Operation, Outcome, Output, Verdict, check,
    shrink,
};

/// Keys the generated clients use: few, so operations on one key overlap a lot.
const KEYS: [&str; 3] = ["a", "b", "c"];

/// What the scheduler does next with one process.
#[derive(Clone, Debug)]
struct Step {
    process: usize,
    /// Picks the operation (when the process is idle) or the way it ends.
    choice: u8,
    key: usize,
}

fn steps() -> impl Strategy<Value = (usize, Vec<Step>)> {
    (2usize..6).prop_flat_map(|processes| {
        let step =
            (0..processes, any::<u8>(), 0..KEYS.len()).prop_map(|(process, choice, key)| Step {
                process,
                choice,
                key,
            });
        (Just(processes), prop::collection::vec(step, 10..160))
    })
}

#[derive(Clone, Debug)]
enum Phase {
    Idle,
    /// Invoked, not yet executed.
    Invoked(Operation),
    /// Executed with this answer, not yet completed.
    Executed(Output),
}

/// Runs the schedule against a real map and records the history's events.
fn run(processes: usize, schedule: &[Step]) -> Vec<Event> {
    let mut store: BTreeMap<String, String> = BTreeMap::new();
    let mut phase = vec![Phase::Idle; processes];
    let mut events = Vec::new();
    let mut unique = 0u64;
    let mut time = 0u64;
    let mut push = |events: &mut Vec<Event>, process: usize, kind: EventKind| {
        time += 1;
        events.push(Event {
            process: process as u64,
            time,
            kind,
            line: 0,
        });
    };
    // Operations whose client gave up, still to be executed by the store.
    let mut late: Vec<Operation> = Vec::new();
    for step in schedule {
        if step.choice % 7 == 0
            && let Some(op) = late.pop()
        {
            execute(&mut store, &op);
        }
        let p = step.process;
        let key = KEYS[step.key].to_string();
        match std::mem::replace(&mut phase[p], Phase::Idle) {
            Phase::Idle => {
                unique += 1;
                let value = format!("v{unique}");
                let op = match step.choice % 5 {
                    0 | 1 => Operation::Get { key },
                    2 => Operation::Put { key, value },
                    3 => Operation::Delete { key },
                    _ => {
                        let expected = match step.choice % 3 {
                            0 => None,
                            _ => store.get(&key).cloned(),
                        };
                        Operation::Cas {
                            key,
                            expected,
                            new: value,
                        }
                    }
                };
                push(&mut events, p, EventKind::Invoke(op.clone()));
                phase[p] = Phase::Invoked(op);
            }
            Phase::Invoked(op) => match step.choice % 8 {
                // Known not to have happened.
                0 => push(&mut events, p, EventKind::Complete(Outcome::Fail)),
                // Gave up before it executed; it never will.
                1 => push(&mut events, p, EventKind::Complete(Outcome::Unknown)),
                // Gave up before it executed; the store executes it later anyway.
                2 => {
                    push(&mut events, p, EventKind::Complete(Outcome::Unknown));
                    late.push(op);
                }
                _ => phase[p] = Phase::Executed(execute(&mut store, &op)),
            },
            Phase::Executed(output) => {
                let outcome = match step.choice % 8 {
                    // Executed, but the answer was lost.
                    0 => Outcome::Unknown,
                    _ => Outcome::Ok(output),
                };
                push(&mut events, p, EventKind::Complete(outcome));
            }
        }
    }
    // Still running at the end: some executed, some not; all end with an unknown outcome.
    events
}

fn execute(store: &mut BTreeMap<String, String>, op: &Operation) -> Output {
    match op {
        Operation::Get { key } => Output::Value(store.get(key).cloned()),
        Operation::Put { key, value } => {
            store.insert(key.clone(), value.clone());
            Output::Done
        }
        Operation::Delete { key } => {
            store.remove(key);
            Output::Done
        }
        Operation::Cas { key, expected, new } => {
            let swapped = store.get(key) == expected.as_ref();
            if swapped {
                store.insert(key.clone(), new.clone());
            }
            Output::Cas { swapped }
        }
        _ => Output::Unknown,
    }
}

/// Indices of completed gets (the invocation and completion events).
fn completed_gets(events: &[Event]) -> Vec<(usize, usize)> {
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    let mut gets = Vec::new();
    for (i, event) in events.iter().enumerate() {
        match &event.kind {
            EventKind::Invoke(_) => {
                open.insert(event.process, i);
            }
            EventKind::Complete(Outcome::Ok(Output::Value(_))) => {
                if let Some(invoke) = open.remove(&event.process) {
                    gets.push((invoke, i));
                }
            }
            EventKind::Complete(_) => {
                open.remove(&event.process);
            }
        }
    }
    gets
}

/// A value for the read at `(invoke, done)` that no linearization allows: one only a write
/// invoked after the read completed stores, or else one nobody stores.
fn impossible_value(events: &[Event], invoke: usize, done: usize) -> String {
    let EventKind::Invoke(Operation::Get { key }) = &events[invoke].kind else {
        return "never-written".to_string();
    };
    events[done + 1..]
        .iter()
        .find_map(|event| match &event.kind {
            EventKind::Invoke(Operation::Put { key: k, value }) if k == key => Some(value.clone()),
            EventKind::Invoke(Operation::Cas { key: k, new, .. }) if k == key => Some(new.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "never-written".to_string())
}

fn verdict(events: &[Event]) -> (Verdict, History) {
    let history = History::from_events(events).expect("generated events pair up");
    let report = check(&KvModel::default(), &history, &CheckOptions::default()).expect("check");
    (report.verdict, history)
}

proptest! {
    // proptest's default of 256 cases; PROPTEST_CASES=N runs more.

    #[test]
    fn a_sequentially_executed_run_is_linearizable((processes, schedule) in steps()) {
        let events = run(processes, &schedule);
        let (verdict, _) = verdict(&events);
        prop_assert_eq!(verdict, Verdict::Linearizable);
    }

    #[test]
    fn a_run_survives_the_raftkv_format_round_trip((processes, schedule) in steps()) {
        let events = run(processes, &schedule);
        let text = raftkv::write_events(&events).expect("raftkv can hold every generated event");
        let read = raftkv::parse_events(&text).expect("written text parses");
        prop_assert_eq!(read.len(), events.len());
        for (a, b) in read.iter().zip(&events) {
            prop_assert_eq!((&a.kind, a.process, a.time), (&b.kind, b.process, b.time));
        }
    }

    #[test]
    fn one_corrupted_read_makes_it_not_linearizable(
        (processes, schedule) in steps(),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut events = run(processes, &schedule);
        let gets = completed_gets(&events);
        prop_assume!(!gets.is_empty());
        let (invoke, done) = gets[pick.index(gets.len())];
        let corrupt = impossible_value(&events, invoke, done);
        events[done].kind = EventKind::Complete(Outcome::Ok(Output::Value(Some(corrupt))));
        let (verdict, history) = verdict(&events);
        prop_assert_eq!(verdict, Verdict::NotLinearizable);

        // The shrunk failing set holds the corrupted read and is itself not linearizable.
        let model = KvModel::default();
        let report = check(&model, &history, &CheckOptions::default()).expect("check");
        let failure = report.failure.expect("a violation has a failing partition");
        let minimal = shrink::shrink(
            &model,
            &history,
            &failure,
            shrink::DEFAULT_SHRINK_BUDGET,
            &CheckOptions::default(),
        );
        let read = history
            .calls
            .iter()
            .find(|c| c.invoke == events[invoke].time)
            .expect("the corrupted read is a call");
        prop_assert!(minimal.calls.contains(&read.id), "{:?} lacks #{}", minimal.calls, read.id);
        let alone = History {
            calls: minimal
                .calls
                .iter()
                .enumerate()
                .map(|(i, &id)| sim::lincheck::Call { id: i, ..history.calls[id].clone() })
                .collect(),
            ..History::default()
        };
        let again = check(&model, &alone, &CheckOptions::default()).expect("check");
        prop_assert_eq!(again.verdict, Verdict::NotLinearizable);
    }
}
