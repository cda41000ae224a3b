//! The clients: concurrent processes issuing gets, puts, deletes and compare-and-swaps on a
//! small key set against random nodes, and the recorder that turns what they saw into a history
//! in the checker's own types.
//!
//! Outcomes, per operation (docs/verification.md, "Jepsen-style runs", has the table):
//! * `ok`: a 2xx answer; a `409 cas_failed` is an `ok` compare-and-swap that did not swap; a
//!   `404 not_found` read is an `ok` read of an absent key;
//! * `fail` (certainly did not happen): the connection was never made, or a 4xx refusal;
//! * unknown (`info`): everything else — no answer in time, a lost connection, any 5xx. A 503
//!   is unknown too: a follower that forwards a write answers 503 when its connection to the
//!   leader breaks, after the leader may have applied the write.
//!
//! Invariants: every written value is unique in the run (`<process>.<counter>`), so a read names
//! the one write it saw; one process has at most one operation outstanding; times come from one
//! clock (`Instant` since the run started, in nanoseconds) and are taken under the recorder's
//! lock, so they never decrease.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use util::SplitMix64;

use crate::lincheck::{Event, EventKind, Operation, Outcome, Output, ProcessId};

use super::http::{self, HttpError, Response};

/// Percent of operations that are reads.
pub const GET_PERCENT: u64 = 45;
/// Percent of operations that are plain writes.
pub const PUT_PERCENT: u64 = 25;
/// Percent of operations that are compare-and-swaps (the rest are deletes).
pub const CAS_PERCENT: u64 = 20;

const RECORDER_LOCK: &str = "the recorder lock is never held across a panic";

/// Collects the events of all processes in the order they happened.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new(started: Instant) -> Recorder {
        Recorder {
            started,
            events: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn push(&self, process: ProcessId, kind: EventKind) {
        let mut events = self.events.lock().expect(RECORDER_LOCK);
        // The time is read under the lock: the event list is in time order.
        let time = self.now();
        events.push(Event {
            process,
            time,
            kind,
            line: 0,
        });
    }

    /// Records that `process` invokes `op`.
    pub fn invoke(&self, process: ProcessId, op: Operation) {
        self.push(process, EventKind::Invoke(op));
    }

    /// Records how `process`'s outstanding operation ended.
    pub fn complete(&self, process: ProcessId, outcome: Outcome) {
        self.push(process, EventKind::Complete(outcome));
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect(RECORDER_LOCK).clone()
    }
}

/// Runs `op` against the node at `addr` and classifies the answer (see the module docs).
pub async fn execute(addr: &str, op: &Operation, timeout: Duration) -> Outcome {
    let (method, path, body) = match op {
        Operation::Get { key } => ("GET", format!("/keys/{key}"), Vec::new()),
        Operation::Put { key, value } => ("PUT", format!("/keys/{key}"), value.clone().into()),
        Operation::Delete { key } => ("DELETE", format!("/keys/{key}"), Vec::new()),
        Operation::Cas { key, expected, new } => {
            // Keys and values are [A-Za-z0-9.-]: nothing to percent-encode.
            let condition = match expected {
                Some(value) => format!("prev_value={value}"),
                None => "prev_version=0".to_string(),
            };
            (
                "PUT",
                format!("/keys/{key}?{condition}"),
                new.clone().into(),
            )
        }
        // The server has no such operations: such a request is never sent.
        Operation::Append { .. } | Operation::Txn { .. } => return Outcome::Fail,
    };
    let answer = http::request(addr, method, &path, &body, timeout).await;
    classify(op, answer)
}

/// The outcome an answer (or its absence) proves.
pub fn classify(op: &Operation, answer: Result<Response, HttpError>) -> Outcome {
    let response = match answer {
        Ok(response) => response,
        Err(e) if e.certainly_not_sent() => return Outcome::Fail,
        Err(_) => return Outcome::Unknown,
    };
    let status = response.status;
    let code = || response.error_code();
    match op {
        Operation::Get { .. } => match status {
            200 => match String::from_utf8(response.body.clone()) {
                Ok(value) => Outcome::Ok(Output::Value(Some(value))),
                Err(_) => Outcome::Unknown,
            },
            404 if code().as_deref() == Some("not_found") => Outcome::Ok(Output::Value(None)),
            // An unanswered read constrains nothing; the checker drops it.
            _ => Outcome::Unknown,
        },
        Operation::Cas { .. } if status == 409 && code().as_deref() == Some("cas_failed") => {
            Outcome::Ok(Output::Cas { swapped: false })
        }
        Operation::Cas { .. } if (200..300).contains(&status) => {
            Outcome::Ok(Output::Cas { swapped: true })
        }
        _ if (200..300).contains(&status) => Outcome::Ok(Output::Done),
        // Refused before it was proposed: bad request, too large, conflict, no route.
        _ if (400..500).contains(&status) => Outcome::Fail,
        _ => Outcome::Unknown,
    }
}

/// What the clients share.
#[derive(Debug)]
pub struct Workload {
    /// The nodes' HTTP addresses, by slot.
    pub nodes: Vec<String>,
    /// The keys operated on.
    pub keys: Vec<String>,
    /// Bound on each operation after connecting.
    pub op_timeout: Duration,
    /// Where events go.
    pub recorder: Arc<Recorder>,
    /// Set when the clients must stop after their current operation.
    pub stop: AtomicBool,
    /// The value each key was last seen to hold, so compare-and-swaps often match.
    last_seen: Mutex<HashMap<String, Option<String>>>,
}

impl Workload {
    /// A workload on `keys` keys (`k0`, `k1`, ...) against `nodes`.
    pub fn new(
        nodes: Vec<String>,
        keys: usize,
        op_timeout: Duration,
        recorder: Arc<Recorder>,
    ) -> Workload {
        Workload {
            nodes,
            keys: (0..keys).map(|i| format!("k{i}")).collect(),
            op_timeout,
            recorder,
            stop: AtomicBool::new(false),
            last_seen: Mutex::new(HashMap::new()),
        }
    }

    fn seen(&self, key: &str) -> Option<String> {
        self.last_seen
            .lock()
            .expect(RECORDER_LOCK)
            .get(key)
            .cloned()
            .flatten()
    }

    fn remember(&self, key: &str, value: Option<String>) {
        self.last_seen
            .lock()
            .expect(RECORDER_LOCK)
            .insert(key.to_string(), value);
    }

    /// One client process: random operations on random nodes until told to stop. A node that
    /// just failed or timed out is avoided for [`NODE_AVOID`], so that a paused or cut-off node
    /// does not soak up every client's time (each would wait out its timeout there again and
    /// again, and the history would hold almost nothing during the fault).
    pub async fn client(self: Arc<Self>, process: ProcessId, mut rng: SplitMix64) {
        let mut counter = 0u64;
        let mut avoid_until: Vec<Option<Instant>> = vec![None; self.nodes.len()];
        while !self.stop.load(Ordering::Relaxed) {
            let key = self.keys[rng.index(self.keys.len())].clone();
            counter += 1;
            let unique = format!("{process}.{counter}");
            let roll = rng.below(100);
            let op = if roll < GET_PERCENT {
                Operation::Get { key: key.clone() }
            } else if roll < GET_PERCENT + PUT_PERCENT {
                Operation::Put {
                    key: key.clone(),
                    value: unique,
                }
            } else if roll < GET_PERCENT + PUT_PERCENT + CAS_PERCENT {
                Operation::Cas {
                    key: key.clone(),
                    expected: self.seen(&key),
                    new: unique,
                }
            } else {
                Operation::Delete { key: key.clone() }
            };
            let now = Instant::now();
            let usable: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| avoid_until[i].is_none_or(|until| until <= now))
                .collect();
            let index = if usable.is_empty() {
                rng.index(self.nodes.len())
            } else {
                usable[rng.index(usable.len())]
            };
            let node = &self.nodes[index];
            self.recorder.invoke(process, op.clone());
            let outcome = execute(node, &op, self.op_timeout).await;
            let answered = match &outcome {
                Outcome::Ok(_) => true,
                // An unknown read that was answered (e.g. 503) still says the node is alive,
                // but there is no way to tell here: treat every non-ok alike.
                Outcome::Fail | Outcome::Unknown => false,
            };
            avoid_until[index] = (!answered).then(|| Instant::now() + NODE_AVOID);
            self.recorder.complete(process, outcome.clone());
            match (&op, &outcome) {
                (Operation::Get { .. }, Outcome::Ok(Output::Value(v))) => {
                    self.remember(&key, v.clone())
                }
                (Operation::Put { value, .. }, Outcome::Ok(_)) => {
                    self.remember(&key, Some(value.clone()))
                }
                (Operation::Cas { new, .. }, Outcome::Ok(Output::Cas { swapped: true })) => {
                    self.remember(&key, Some(new.clone()))
                }
                (Operation::Delete { .. }, Outcome::Ok(_)) => self.remember(&key, None),
                _ => {}
            }
            if matches!(outcome, Outcome::Fail) {
                // The node is down: do not spin on refused connections.
                tokio::time::sleep(FAIL_BACKOFF).await;
            }
        }
    }
}

/// How long a client avoids a node after an operation on it failed or timed out.
pub const NODE_AVOID: Duration = Duration::from_millis(1000);

/// Pause after an operation that certainly failed (a refused connection to a killed node), so a
/// client does not flood the history with instant failures.
pub const FAIL_BACKOFF: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Result<Response, HttpError> {
        Ok(Response {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn answers_are_classified_as_the_module_says() {
        let get = Operation::Get { key: "k".into() };
        let put = Operation::Put {
            key: "k".into(),
            value: "v".into(),
        };
        let cas = Operation::Cas {
            key: "k".into(),
            expected: None,
            new: "v".into(),
        };
        assert_eq!(
            classify(&get, answer(200, "x")),
            Outcome::Ok(Output::Value(Some("x".into())))
        );
        assert_eq!(
            classify(&get, answer(404, r#"{"code":"not_found"}"#)),
            Outcome::Ok(Output::Value(None))
        );
        assert_eq!(
            classify(&get, answer(404, r#"{"code":"no_route"}"#)),
            Outcome::Unknown
        );
        assert_eq!(classify(&put, answer(200, "{}")), Outcome::Ok(Output::Done));
        assert_eq!(classify(&put, answer(413, "{}")), Outcome::Fail);
        assert_eq!(classify(&put, answer(503, "{}")), Outcome::Unknown);
        assert_eq!(classify(&put, answer(504, "{}")), Outcome::Unknown);
        assert_eq!(
            classify(&put, Err(HttpError::NotSent("refused".into()))),
            Outcome::Fail
        );
        assert_eq!(
            classify(&put, Err(HttpError::NoAnswer("timeout".into()))),
            Outcome::Unknown
        );
        assert_eq!(
            classify(&cas, answer(409, r#"{"code":"cas_failed"}"#)),
            Outcome::Ok(Output::Cas { swapped: false })
        );
        assert_eq!(
            classify(&cas, answer(200, "{}")),
            Outcome::Ok(Output::Cas { swapped: true })
        );
    }
}
