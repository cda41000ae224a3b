//! Simulated clients: each issues random gets, puts, deletes and compare-and-swaps against
//! random nodes through the node's own API (propose; read index, then read the state machine,
//! as the HTTP layer does), and records every invocation and completion for the checker.
//!
//! Outcomes follow what a client can know: an answer is `ok`; a refusal before the proposal
//! entered any log (not the leader, no quorum to accept it, a committed entry of another
//! leader took its place) is `fail`; a timeout, a stopped node or a snapshot covering the
//! proposal is `unknown` (it may take effect later, or never). Every written value is unique,
//! so a read names the write it saw.
//!
//! A workload may pad its values ([`Workload::value_bytes`]) so that the state, and so its
//! snapshots, grow large while the keys stay few: the store holds the value, a
//! [`PADDING_MARK`] and filler; the history holds the value alone, and a read strips the
//! padding before it is recorded, so the checker's work does not grow with the padding.
//!
//! A workload may also change the cluster's access records ([`Workload::auth_ops_percent`]):
//! each user `u<k>` is then one more register of the history, under the key `user:u<k>`,
//! written through Raft like a key: adding the user is a compare-and-swap from absent (the
//! user's password hash carries the value, so a read names the add it saw), removing it a
//! delete, and a read waits for a read index and looks the user up in the replica's records.
//! The checker then holds the access records to the same linearizability as the keys.
//!
//! Event times are a global sequence number: the simulation runs on one thread, so the order in
//! which events are recorded is their real-time order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kv::{CasAction, Compare, Outcome as KvOutcome};
use raft::node::NodeError;
use replica::auth::{AuthCommand, AuthRefusal};
use replica::machine::{Output, Proposal};
use util::SplitMix64;

use super::host::{Cluster, read_key};
use crate::lincheck::{Event, EventKind, Operation, Outcome, Output as LinOutput, ProcessId};

/// How long one operation may take before the client gives up and records it as unknown.
pub const OP_TIMEOUT: Duration = Duration::from_millis(1500);
/// A client pauses up to this long between operations, so runs stay small enough to check.
pub const THINK_MAX: Duration = Duration::from_millis(12);
/// How many times an operation moves on after a "not the leader" answer (to the leader named,
/// or else to the next host).
pub const REDIRECTS_MAX: usize = 3;

/// The client workload of a run.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Concurrent clients.
    pub clients: usize,
    /// Keys they share (`k0`, `k1`, ...): few, so operations contend.
    pub keys: usize,
    /// How long the clients wait before their first operation (zero: they start with the
    /// run). A cluster forming without clients keeps a short log for as long as it forms.
    pub start_after: Duration,
    /// Every value is stored padded to this many bytes (0: as it is), at most
    /// `kv::VALUE_BYTES_MAX`.
    pub value_bytes: usize,
    /// The share of operations, in percent, on users (`user:u<k>`) instead of keys.
    pub auth_ops_percent: u64,
}

/// The prefix of the history keys that stand for users (see the module).
pub const USER_KEY_PREFIX: &str = "user:";

/// What a simulated user's password hash holds: this, then the value of the add that made it.
const SIM_HASH_PREFIX: &str = "$sim$";

/// Separates a stored value from its padding; no value a client writes contains it.
pub const PADDING_MARK: char = '#';

/// The value as stored: `value`, then [`PADDING_MARK`] and filler up to `value_bytes` bytes
/// (`value` as it is when it is that long already, or `value_bytes` is 0).
pub fn padded(value: &str, value_bytes: usize) -> String {
    let filler = value_bytes.saturating_sub(value.len() + PADDING_MARK.len_utf8());
    if value_bytes == 0 || filler == 0 {
        return value.to_string();
    }
    let mut stored = String::with_capacity(value_bytes);
    stored.push_str(value);
    stored.push(PADDING_MARK);
    stored.extend(std::iter::repeat_n('x', filler));
    stored
}

/// The value a client wrote, from the value as stored (see [`padded`]).
pub fn unpadded(stored: &str) -> &str {
    stored
        .split_once(PADDING_MARK)
        .map_or(stored, |(value, _)| value)
}

/// The history every client appends to.
#[derive(Default)]
pub struct HistoryLog {
    events: Mutex<Vec<Event>>,
}

const LOG_LOCK: &str = "the history lock is never held across a panic";

impl HistoryLog {
    fn push(&self, process: ProcessId, kind: EventKind) -> usize {
        let mut events = self.events.lock().expect(LOG_LOCK);
        let time = events.len() as u64;
        events.push(Event {
            process,
            time,
            kind,
            line: 0,
        });
        events.len() - 1
    }

    /// Every event so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect(LOG_LOCK).clone()
    }
}

/// One client: operations until `stop` is set.
pub async fn client(
    cluster: Arc<Cluster>,
    workload: Workload,
    process: ProcessId,
    stop: Arc<AtomicBool>,
    log: Arc<HistoryLog>,
) -> turmoil::Result {
    let mut rng = SplitMix64::new(cluster.seed ^ (process + 1).wrapping_mul(0xa076_1d64_78bd_642f));
    let mut seen: Vec<Option<String>> = vec![None; workload.keys];
    let mut sequence = 0u64;
    if !workload.start_after.is_zero() {
        tokio::time::sleep(workload.start_after).await;
    }
    while !stop.load(Ordering::Relaxed) {
        let k = rng.below(workload.keys as u64) as usize;
        sequence += 1;
        let value = format!("{process}.{sequence}");
        if rng.below(100) < workload.auth_ops_percent {
            let key = format!("{USER_KEY_PREFIX}u{k}");
            let op = match rng.below(100) {
                0..40 => Operation::Get { key },
                40..80 => Operation::Cas {
                    key,
                    expected: None,
                    new: value,
                },
                _ => Operation::Delete { key },
            };
            let target = rng.below(cluster.reachable_hosts() as u64) as usize;
            perform(&cluster, &log, process, target, op, workload.value_bytes).await;
            tokio::time::sleep(Duration::from_micros(
                rng.below(THINK_MAX.as_micros() as u64 + 1),
            ))
            .await;
            continue;
        }
        let key = format!("k{k}");
        let op = match rng.below(100) {
            0..45 => Operation::Get { key },
            45..75 => Operation::Put { key, value },
            75..85 => Operation::Delete { key },
            _ => Operation::Cas {
                key,
                expected: seen[k].clone(),
                new: value,
            },
        };
        let target = rng.below(cluster.reachable_hosts() as u64) as usize;
        let outcome = perform(&cluster, &log, process, target, op, workload.value_bytes).await;
        if let Outcome::Ok(LinOutput::Value(v)) = &outcome {
            seen[k] = v.clone();
        }
        tokio::time::sleep(Duration::from_micros(
            rng.below(THINK_MAX.as_micros() as u64 + 1),
        ))
        .await;
    }
    Ok(())
}

/// Records `op`, runs it against host `target` (following redirects to the leader), records
/// and returns its outcome. Values are stored padded to `value_bytes` (see [`padded`]).
pub async fn perform(
    cluster: &Cluster,
    log: &HistoryLog,
    process: ProcessId,
    target: usize,
    op: Operation,
    value_bytes: usize,
) -> Outcome {
    let at = log.push(process, EventKind::Invoke(op.clone()));
    cluster
        .monitor
        .trace(&("invoke", at, process, format!("{op:?}")));
    let outcome =
        match tokio::time::timeout(OP_TIMEOUT, execute(cluster, target, &op, value_bytes)).await {
            Ok(outcome) => outcome,
            // A read that timed out changed nothing; a write may still happen.
            Err(_) if op.is_read_only() => Outcome::Fail,
            Err(_) => Outcome::Unknown,
        };
    let at = log.push(process, EventKind::Complete(outcome.clone()));
    cluster
        .monitor
        .trace(&("complete", at, process, format!("{outcome:?}")));
    outcome
}

async fn execute(
    cluster: &Cluster,
    mut target: usize,
    op: &Operation,
    value_bytes: usize,
) -> Outcome {
    for _ in 0..=REDIRECTS_MAX {
        let Some(live) = cluster.live(target) else {
            return Outcome::Fail; // Nothing was sent.
        };
        let user = op.key().and_then(|k| k.strip_prefix(USER_KEY_PREFIX));
        let answer = match (op, user) {
            (Operation::Get { .. }, Some(user)) => match live.node.read_index().await {
                Ok(_) => {
                    let machine = live.machine.lock().expect(super::host::MACHINE_LOCK);
                    let value = machine.inner.auth().users.get(user).map(|u| {
                        u.password_hash
                            .strip_prefix(SIM_HASH_PREFIX)
                            .unwrap_or(&u.password_hash)
                            .to_string()
                    });
                    return Outcome::Ok(LinOutput::Value(value));
                }
                Err(e) => e,
            },
            (_, Some(user)) => {
                let command = match op {
                    Operation::Cas { new, .. } => AuthCommand::AddUser {
                        name: user.to_string(),
                        password_hash: format!("{SIM_HASH_PREFIX}{new}"),
                        role: replica::auth::ROLE_READ.to_string(),
                    },
                    _ => AuthCommand::RemoveUser {
                        name: user.to_string(),
                    },
                };
                match live.node.propose(Proposal::Auth(command).encode()).await {
                    Ok(Output::Auth(Ok(()))) => {
                        return match op {
                            Operation::Cas { .. } => Outcome::Ok(LinOutput::Cas { swapped: true }),
                            _ => Outcome::Ok(LinOutput::Done),
                        };
                    }
                    // Applied and refused alike on every replica: the user was there already
                    // (an add that did not swap), or not there (a delete of nothing).
                    Ok(Output::Auth(Err(AuthRefusal::UserExists(_)))) => {
                        return Outcome::Ok(LinOutput::Cas { swapped: false });
                    }
                    Ok(Output::Auth(Err(AuthRefusal::NoSuchUser(_)))) => {
                        return Outcome::Ok(LinOutput::Done);
                    }
                    Ok(_) => return Outcome::Unknown,
                    Err(e) => e,
                }
            }
            (Operation::Get { key }, None) => match live.node.read_index().await {
                Ok(_) => {
                    let value = read_key(&live.machine, key.as_bytes());
                    return Outcome::Ok(LinOutput::Value(
                        value.map(|v| unpadded(&String::from_utf8_lossy(&v)).to_string()),
                    ));
                }
                Err(e) => e,
            },
            (_, None) => {
                let command = write_command(op, value_bytes);
                let proposal = Proposal::Kv(Bytes::from(command.encode())).encode();
                match live.node.propose(proposal).await {
                    Ok(Output::Kv(Ok(outcome))) => return completed(outcome),
                    // Refused by the state machine on every replica alike: not applied.
                    Ok(Output::Kv(Err(_))) => return Outcome::Fail,
                    Ok(_) => return Outcome::Unknown,
                    Err(e) => e,
                }
            }
        };
        match answer {
            NodeError::NotLeader {
                leader_hint: Some(leader),
            } => match cluster.host_of(leader) {
                Some(next) if next != target => target = next,
                _ => return Outcome::Fail,
            },
            // No leader known there (a spare, or a node cut off): try the next host, as a
            // client with a list of endpoints would.
            NodeError::NotLeader { leader_hint: None } => {
                target = (target + 1) % cluster.reachable_hosts()
            }
            NodeError::Dropped
            | NodeError::Rejected(_)
            | NodeError::NothingToSnapshot
            | NodeError::Storage(_)
            | NodeError::ConfChangeInProgress
            | NodeError::NoSpace(_) => {
                return Outcome::Fail;
            }
            NodeError::Unknown | NodeError::Stopped if op.is_read_only() => return Outcome::Fail,
            NodeError::Unknown | NodeError::Stopped => return Outcome::Unknown,
        }
    }
    Outcome::Fail
}

fn write_command(op: &Operation, value_bytes: usize) -> kv::Command {
    let stored = |value: &str| Bytes::from(padded(value, value_bytes));
    match op {
        Operation::Put { key, value } => kv::Command::put(Bytes::from(key.clone()), stored(value)),
        Operation::Delete { key } => kv::Command::delete(Bytes::from(key.clone())),
        // Every write of a run pads alike, so the expected value is stored exactly so.
        Operation::Cas { key, expected, new } => kv::Command::compare_and_swap(
            Bytes::from(key.clone()),
            match expected {
                Some(v) => Compare::Value(stored(v)),
                None => Compare::Version(0),
            },
            CasAction::Put(stored(new)),
        ),
        Operation::Get { .. } | Operation::Append { .. } | Operation::Txn { .. } => {
            unreachable!("the simulated clients only write with put, delete and cas")
        }
    }
}

fn completed(outcome: KvOutcome) -> Outcome {
    match outcome {
        KvOutcome::CompareAndSwap { succeeded, .. } => {
            Outcome::Ok(LinOutput::Cas { swapped: succeeded })
        }
        _ => Outcome::Ok(LinOutput::Done),
    }
}
