//! The named runs: random faults on 3 and 5 nodes, one scenario per bug that other Raft
//! implementations shipped, and the same random runs with a safety rule broken on purpose.
//! Tests and the runner find them by name.
//!
//! A named scenario fixes the faults that matter to its bug and lets the seed choose
//! everything else (timings of elections, the clients' operations, message delays, which
//! unsynced writes a crash keeps).

use std::time::Duration;

use raft::core::BrokenRule;

use super::faults::{Fault, Schedule, Timed};
use super::run::Scenario;

/// Every scenario, by name.
pub fn all() -> Vec<Scenario> {
    vec![
        random3(),
        random5(),
        read_after_transfer(),
        reads_during_transfer(),
        isolated_leader("isolated_leader"),
        removed_leader_keeps_sending(),
        single_node_ack_then_crash(),
        remove_from_two_voters(),
        promote_while_leader_crashes(),
        broken_vote_check(),
        broken_read_confirmation(),
        broken_fsync(),
    ]
}

/// The scenario called `name`.
pub fn by_name(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}

/// Three founding voters and two spare hosts, random faults.
pub fn random3() -> Scenario {
    Scenario::random("random3", 3, 2)
}

/// Five founding voters and one spare host, random faults.
pub fn random5() -> Scenario {
    Scenario::random("random5", 5, 1)
}

fn at(ms: u64, fault: Fault) -> Timed {
    Timed {
        at: Duration::from_millis(ms),
        fault,
    }
}

/// Jitter of up to `span` ms from the seed, so each seed moves the faults a little.
fn jitter(seed: u64, salt: u64, span: u64) -> u64 {
    super::workload::Rng::new(seed ^ salt.wrapping_mul(0x2545_f491_4f6c_dd1d)).below(span + 1)
}

/// Leadership moves around the cluster again and again while clients read and write: a
/// linearizable read served right after a transfer must not miss a write the old leader
/// acknowledged (the new leader must commit an entry of its own term before it answers a read
/// index).
pub fn read_after_transfer() -> Scenario {
    let mut s = Scenario::random("read_after_transfer", 3, 0);
    // Many clients on two keys, transfers every ~100 ms: reads often land in the moment
    // between a new leader's election and its first commit.
    s.workload.clients = 6;
    s.workload.keys = 2;
    s.schedule = |seed, _| {
        Schedule::new(
            (0..36)
                .map(|i| {
                    at(
                        150 + i * 100 + jitter(seed, i, 30),
                        Fault::Transfer {
                            host: jitter(seed, i + 1000, 2) as usize,
                        },
                    )
                })
                .collect(),
        )
    };
    s
}

/// Transfers while messages are slow and the leader is paused: reads that straddle a transfer
/// (asked of the old leader, answered after the new one took over) must stay linearizable.
pub fn reads_during_transfer() -> Scenario {
    let mut s = Scenario::random("reads_during_transfer", 3, 0);
    s.schedule = |seed, _| {
        let mut faults = Vec::new();
        for i in 0..6u64 {
            let t = 300 + i * 600 + jitter(seed, i, 100);
            faults.push(at(t, Fault::Slow { max_ms: 30 }));
            faults.push(at(
                t + 5,
                Fault::Transfer {
                    host: (i % 3) as usize,
                },
            ));
            if i % 2 == 1 {
                faults.push(at(t + 20, Fault::PauseLeader));
                faults.push(at(t + 20 + 150 + jitter(seed, i + 100, 200), Fault::Resume));
            }
            faults.push(at(t + 400, Fault::Heal));
        }
        Schedule::new(faults)
    };
    s
}

/// The leader removes itself and keeps running (it is not shut down): once the removal is
/// committed it must stop leading, and its heartbeats must not disturb the new configuration;
/// a spare then joins to restore three voters.
pub fn removed_leader_keeps_sending() -> Scenario {
    let mut s = Scenario::random("removed_leader_keeps_sending", 3, 1);
    s.schedule = |seed, _| {
        let t = 400 + jitter(seed, 1, 300);
        Schedule::new(vec![
            at(t, Fault::RemoveLeader),
            at(t + 800, Fault::AddLearner { host: 3 }),
            at(t + 1300, Fault::Promote { host: 3 }),
            at(t + 2000, Fault::IsolateLeader),
            at(t + 2600, Fault::Heal),
        ])
    };
    s
}

/// A single node acknowledges writes and loses power, again and again: every acknowledged
/// write must be there after each restart.
pub fn single_node_ack_then_crash() -> Scenario {
    let mut s = Scenario::random("single_node_ack_then_crash", 1, 0);
    s.schedule = |seed, _| {
        Schedule::new(
            (0..6)
                .flat_map(|i| {
                    let t = 300 + i * 600 + jitter(seed, i, 200);
                    [
                        at(t, Fault::CrashAll),
                        at(t + 20 + jitter(seed, i + 9, 100), Fault::RestartAll),
                    ]
                })
                .collect(),
        )
    };
    s
}

/// Two voters; the leader removes the other while it is crashing: the removal needs both
/// votes to commit, so the cluster must wait for the follower to come back and then go on
/// as a single voter, without losing or inventing writes.
pub fn remove_from_two_voters() -> Scenario {
    let mut s = Scenario::random("remove_from_two_voters", 2, 0);
    s.schedule = |seed, _| {
        let t = 500 + jitter(seed, 1, 500);
        Schedule::new(vec![
            at(t, Fault::Remove { host: 1 }),
            at(t + jitter(seed, 2, 30), Fault::Crash { host: 1 }),
            at(t + 900, Fault::Restart { host: 1 }),
            at(t + 1600, Fault::Remove { host: 0 }),
            at(t + 1600 + jitter(seed, 3, 30), Fault::CrashAll),
            at(t + 1900, Fault::RestartAll),
        ])
    };
    s
}

/// A learner is promoted at the moment the leader crashes: whichever leader comes next must
/// agree on whether the promotion happened, and the cluster must keep its quorum rules.
pub fn promote_while_leader_crashes() -> Scenario {
    let mut s = Scenario::random("promote_while_leader_crashes", 3, 1);
    s.schedule = |seed, _| {
        let t = 300 + jitter(seed, 1, 300);
        let crash = t + 500 + jitter(seed, 2, 20);
        Schedule::new(vec![
            at(t, Fault::AddLearner { host: 3 }),
            at(t + 500, Fault::Promote { host: 3 }),
            at(crash, Fault::CrashLeader),
            at(crash + 400, Fault::RestartAll),
            at(crash + 900, Fault::CrashLeader),
            at(crash + 1300, Fault::RestartAll),
        ])
    };
    s
}

/// The leader is cut off again and again while clients keep asking every node: a deposed
/// leader must not answer reads from its own state once another leader may have taken writes.
pub fn isolated_leader(name: &'static str) -> Scenario {
    let mut s = Scenario::random(name, 3, 0);
    s.workload.clients = 6;
    s.workload.keys = 2;
    s.schedule = |seed, _| {
        Schedule::new(
            (0..8u64)
                .flat_map(|i| {
                    let t = 200 + i * 450 + jitter(seed, i, 50);
                    [
                        at(t, Fault::IsolateLeader),
                        at(t + 350 + jitter(seed, i + 30, 50), Fault::Heal),
                    ]
                })
                .collect(),
        )
    };
    s
}

/// Random faults with many crashes and partitions: the schedule the broken-rule scenarios
/// use, because breaking a safety rule shows only when leaders change under faults.
fn churn(name: &'static str) -> Scenario {
    let mut s = Scenario::random(name, 3, 0);
    s.schedule = |seed, s| {
        let mut schedule = Schedule::random(seed, s.hosts(), s.duration);
        let mut extra = Vec::new();
        for i in 0..8u64 {
            let t = 200 + i * 450 + jitter(seed, i, 200);
            let host = jitter(seed, i + 50, 2) as usize;
            extra.push(at(t, Fault::Crash { host }));
            extra.push(at(
                t + 150 + jitter(seed, i + 70, 300),
                Fault::Restart { host },
            ));
            if i % 2 == 0 {
                extra.push(at(t + 40, Fault::IsolateLeader));
                extra.push(at(t + 300, Fault::Heal));
            }
        }
        schedule.faults.extend(extra);
        Schedule::new(schedule.faults)
    };
    s
}

/// Votes granted without the up-to-date check: a node missing committed entries can win an
/// election and overwrite them.
pub fn broken_vote_check() -> Scenario {
    let mut s = churn("broken_vote_check");
    s.settings.broken_rule = Some(BrokenRule::VoteWithoutLogCheck);
    s
}

/// A leader answers reads from its own state at once, confirming nothing.
pub fn broken_read_confirmation() -> Scenario {
    let mut s = isolated_leader("broken_read_confirmation");
    s.settings.broken_rule = Some(BrokenRule::ReadWithoutConfirmation);
    s
}

/// Every fsync lies: writes are acknowledged before they are durable.
pub fn broken_fsync() -> Scenario {
    let mut s = churn("broken_fsync");
    s.lying_fsync = true;
    s
}
