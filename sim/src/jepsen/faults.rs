//! The nemesis: a fault schedule drawn from the seed, and its execution against the cluster.
//!
//! Faults run one at a time: each starts, holds for its drawn time, and is undone before the
//! next starts, so every fault window in the report has one cause. The *schedule* (kinds,
//! targets, shapes, times) depends only on the seed and the options; which node is the leader
//! when a fault aims at "the leader" is decided when it starts.
//!
//! | fault | start | end |
//! |---|---|---|
//! | kill | SIGKILL the target | restart it on its data |
//! | pause | SIGSTOP the target | SIGCONT |
//! | partition | cut links in the proxies (a majority/minority split, one node isolated, or one node's outgoing links only) | heal every link |
//! | membership | remove the target (`POST /cluster/remove`), kill it; or move leadership (`POST /cluster/transfer-leader`) | start a new incarnation (new name, empty data) that joins through `raft.join_addr`; wait until it is a voter |
//!
//! Invariant: when [`Nemesis::run`] returns, no fault is in force (every link heals, no process
//! is paused, every killed node was restarted), though a replaced node may still be catching up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use util::SplitMix64;

use super::cluster::Cluster;
use super::control;
use super::proxy::Links;

/// Quiet time at the start of a run, before the first fault: a baseline for the latency plot.
pub const FIRST_FAULT_AFTER: Duration = Duration::from_millis(1500);
/// Quiet time at the end of the workload, after the last fault ends.
pub const QUIET_END: Duration = Duration::from_millis(1000);
/// Shortest time a fault holds.
pub const HOLD_MIN: Duration = Duration::from_millis(1000);
/// Longest time a fault holds.
pub const HOLD_MAX: Duration = Duration::from_millis(4000);
/// Shortest quiet gap between two faults.
pub const GAP_MIN: Duration = Duration::from_millis(500);
/// Longest quiet gap between two faults.
pub const GAP_MAX: Duration = Duration::from_millis(2000);
/// How long a removal is retried (a membership change may be in flight, or no leader known).
pub const REMOVE_WAIT_MAX: Duration = Duration::from_secs(10);
/// How long a new incarnation may take to join and be promoted to voter.
pub const REJOIN_WAIT_MAX: Duration = Duration::from_secs(30);

const CLUSTER_LOCK: &str = "the cluster lock is never held across a panic";

/// A kind of fault, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// kill -9 a node, then restart it on its data.
    Kill,
    /// SIGSTOP a node, then SIGCONT it.
    Pause,
    /// Cut Raft links in the proxies, then heal them.
    Partition,
    /// Remove a node and add a fresh one back, or move leadership.
    Membership,
}

impl FaultKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Membership => "membership",
        }
    }
}

/// Which node a fault aims at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Whichever node leads when the fault starts (a random one if none is known).
    Leader,
    /// The node in this slot.
    Slot(usize),
}

/// One fault of the schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, later restart.
    Kill(Target),
    /// SIGSTOP, later SIGCONT.
    Pause(Target),
    /// These slots (a minority) are cut off from the others, both directions.
    Split(Vec<usize>),
    /// One node cut off from all others, both directions.
    Isolate(Target),
    /// One node's outgoing links cut; it still hears the others (an asymmetric partition).
    Mute(Target),
    /// Remove the node and add a new incarnation back.
    Replace(Target),
    /// Move leadership to the node in this slot (or, if it leads already, to another).
    Transfer(usize),
}

impl Fault {
    /// The kind this fault belongs to.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Kill(_) => FaultKind::Kill,
            Fault::Pause(_) => FaultKind::Pause,
            Fault::Split(_) | Fault::Isolate(_) | Fault::Mute(_) => FaultKind::Partition,
            Fault::Replace(_) | Fault::Transfer(_) => FaultKind::Membership,
        }
    }
}

/// A fault and when it should start and how long it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// Earliest start, from the start of the workload.
    pub at: Duration,
    /// How long it holds once started.
    pub hold: Duration,
    /// What it does.
    pub fault: Fault,
}

/// Draws the schedule for `nodes` nodes and a workload of `duration`. The first faults are one
/// of each enabled kind, in a random order (squeezed to fit a short run); then kinds are drawn
/// at random until the time is used up.
pub fn plan(seed: u64, kinds: &[FaultKind], nodes: usize, duration: Duration) -> Vec<Planned> {
    let mut rng = SplitMix64::new(seed).fork(0xfa17);
    let mut out = Vec::new();
    if kinds.is_empty() || duration <= FIRST_FAULT_AFTER + QUIET_END {
        return out;
    }
    let usable = duration - FIRST_FAULT_AFTER - QUIET_END;
    // In the first round every kind gets an equal share of the time, so all of them fit.
    let share = usable / kinds.len() as u32;
    let mut first_round: Vec<FaultKind> = kinds.to_vec();
    rng.shuffle(&mut first_round);
    let mut at = FIRST_FAULT_AFTER;
    let end = duration - QUIET_END;
    let mut round = first_round.into_iter();
    loop {
        let (kind, hold, gap) = match round.next() {
            Some(kind) => {
                let hold = rng.duration_between(HOLD_MIN, HOLD_MAX).min(share * 6 / 10);
                let gap = rng.duration_between(GAP_MIN, GAP_MAX).min(share * 3 / 10);
                (kind, hold, gap)
            }
            None => (
                kinds[rng.index(kinds.len())],
                rng.duration_between(HOLD_MIN, HOLD_MAX),
                rng.duration_between(GAP_MIN, GAP_MAX),
            ),
        };
        if at + hold > end {
            break;
        }
        let fault = draw(&mut rng, kind, nodes);
        out.push(Planned { at, hold, fault });
        at += hold + gap;
    }
    out
}

fn draw(rng: &mut SplitMix64, kind: FaultKind, nodes: usize) -> Fault {
    let target = |rng: &mut SplitMix64| {
        if rng.chance(40) {
            Target::Leader
        } else {
            Target::Slot(rng.index(nodes))
        }
    };
    match kind {
        FaultKind::Kill => Fault::Kill(target(rng)),
        FaultKind::Pause => Fault::Pause(target(rng)),
        FaultKind::Partition => match rng.below(3) {
            0 => {
                let mut slots: Vec<usize> = (0..nodes).collect();
                rng.shuffle(&mut slots);
                let minority = 1 + rng.index((nodes - 1) / 2);
                let mut cut: Vec<usize> = slots[..minority].to_vec();
                cut.sort_unstable();
                Fault::Split(cut)
            }
            1 => Fault::Isolate(target(rng)),
            _ => Fault::Mute(target(rng)),
        },
        FaultKind::Membership => {
            if rng.chance(60) {
                Fault::Replace(target(rng))
            } else {
                Fault::Transfer(rng.index(nodes))
            }
        }
    }
}

/// What happened to one fault, for the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Its kind.
    pub kind: FaultKind,
    /// What was done, naming the nodes (`kill n2 (leader)`, `partition {n1} | {n2, n3}`).
    pub description: String,
    /// When it started, seconds from the start of the workload.
    pub start_s: f64,
    /// When it was undone, seconds from the start of the workload.
    pub end_s: f64,
    /// False when it could not be carried out (the note says why); the window is still shown.
    pub applied: bool,
    /// Anything worth knowing (a removal that was refused, how long a rejoin took).
    pub note: String,
}

/// Carries out a schedule against a cluster.
#[derive(Debug)]
pub struct Nemesis {
    cluster: Arc<Mutex<Cluster>>,
    links: Arc<Links>,
    started: Instant,
    rng: SplitMix64,
    /// What was done so far.
    pub records: Vec<FaultRecord>,
}

/// What must be done to end a fault.
enum Undo {
    Nothing,
    Restart(usize),
    Resume(usize),
    Heal,
    Rejoin(usize),
}

impl Nemesis {
    /// A nemesis for `cluster`; times are measured from `started` (the start of the workload).
    pub fn new(
        cluster: Arc<Mutex<Cluster>>,
        links: Arc<Links>,
        started: Instant,
        seed: u64,
    ) -> Self {
        Nemesis {
            cluster,
            links,
            started,
            rng: SplitMix64::new(seed).fork(0x7e55),
            records: Vec::new(),
        }
    }

    fn now_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn http_addrs(&self) -> Vec<String> {
        self.cluster.lock().expect(CLUSTER_LOCK).http_addrs()
    }

    fn name(&self, slot: usize) -> String {
        self.cluster.lock().expect(CLUSTER_LOCK).slots[slot]
            .name
            .clone()
    }

    /// HTTP addresses of the slots whose process runs and is not paused.
    fn live_addrs(&self) -> Vec<String> {
        let cluster = self.cluster.lock().expect(CLUSTER_LOCK);
        cluster
            .slots
            .iter()
            .filter(|s| s.is_running() && !s.paused)
            .map(|s| s.http_addr.clone())
            .collect()
    }

    /// The slot a target names, and a note on its role (`(leader)`, `(follower)`) for the
    /// report: what a fault does depends on it.
    async fn resolve(&mut self, target: Target) -> (usize, &'static str) {
        let addrs = self.http_addrs();
        let leader = control::leader(&self.live_addrs())
            .await
            .and_then(|leader| addrs.iter().position(|a| *a == leader));
        let slot = match (target, leader) {
            (Target::Slot(slot), _) | (Target::Leader, Some(slot)) => slot,
            (Target::Leader, None) => self.rng.index(addrs.len()),
        };
        let role = match leader {
            Some(l) if l == slot => " (leader)",
            Some(_) => " (follower)",
            None => " (no leader known)",
        };
        (slot, role)
    }

    /// Runs the schedule; faults that cannot start before `deadline` (from the start of the
    /// workload) are skipped, and a fault still holding at the deadline ends then.
    pub async fn run(&mut self, plan: &[Planned], deadline: Duration) {
        for planned in plan {
            let now = self.started.elapsed();
            if planned.at > now {
                tokio::time::sleep(planned.at - now).await;
            }
            if self.started.elapsed() + HOLD_MIN > deadline {
                break;
            }
            let start_s = self.now_s();
            let (description, undo, applied, mut note) = self.start(&planned.fault).await;
            let hold_until = (self.started.elapsed() + planned.hold).min(deadline);
            let now = self.started.elapsed();
            if hold_until > now {
                tokio::time::sleep(hold_until - now).await;
            }
            let end_note = self.end(undo).await;
            if !end_note.is_empty() {
                if !note.is_empty() {
                    note.push_str("; ");
                }
                note.push_str(&end_note);
            }
            self.records.push(FaultRecord {
                kind: planned.fault.kind(),
                description,
                start_s,
                end_s: self.now_s(),
                applied,
                note,
            });
        }
    }

    /// Starts a fault: returns its description, how to undo it, whether it was carried out,
    /// and a note.
    async fn start(&mut self, fault: &Fault) -> (String, Undo, bool, String) {
        match fault {
            Fault::Kill(target) => {
                let (slot, why) = self.resolve(*target).await;
                let name = self.name(slot);
                self.cluster.lock().expect(CLUSTER_LOCK).kill(slot);
                (
                    format!("kill -9 {name}{why}"),
                    Undo::Restart(slot),
                    true,
                    String::new(),
                )
            }
            Fault::Pause(target) => {
                let (slot, why) = self.resolve(*target).await;
                let name = self.name(slot);
                let paused = self.cluster.lock().expect(CLUSTER_LOCK).pause(slot);
                let (applied, note) = match paused {
                    Ok(()) => (true, String::new()),
                    Err(e) => (false, e.to_string()),
                };
                (
                    format!("SIGSTOP {name}{why}"),
                    Undo::Resume(slot),
                    applied,
                    note,
                )
            }
            Fault::Split(minority) => {
                let n = self.http_addrs().len();
                for &a in minority {
                    for b in (0..n).filter(|b| !minority.contains(b)) {
                        self.links.block(a, b);
                        self.links.block(b, a);
                    }
                }
                let names = |inside: bool| {
                    (0..n)
                        .filter(|s| minority.contains(s) == inside)
                        .map(|s| self.name(s))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                (
                    format!("partition {{{}}} | {{{}}}", names(true), names(false)),
                    Undo::Heal,
                    true,
                    String::new(),
                )
            }
            Fault::Isolate(target) | Fault::Mute(target) => {
                let (slot, why) = self.resolve(*target).await;
                let n = self.http_addrs().len();
                let both = matches!(fault, Fault::Isolate(_));
                for other in (0..n).filter(|&o| o != slot) {
                    self.links.block(slot, other);
                    if both {
                        self.links.block(other, slot);
                    }
                }
                let name = self.name(slot);
                let description = if both {
                    format!("partition: isolate {name}{why}")
                } else {
                    format!("partition: {name}{why} cannot send (one-way)")
                };
                (description, Undo::Heal, true, String::new())
            }
            Fault::Transfer(slot) => {
                let addrs = self.live_addrs();
                let mut to = *slot;
                if let Some(leader) = control::leader(&addrs).await
                    && self.http_addrs()[to] == leader
                {
                    to = (to + 1) % self.http_addrs().len();
                }
                let name = self.name(to);
                let (status, answer) = control::transfer_leader(&addrs, &name).await;
                let applied = status == 200;
                let note = if applied {
                    String::new()
                } else {
                    format!("transfer answered {status}: {}", answer.trim())
                };
                (
                    format!("transfer leadership to {name}"),
                    Undo::Nothing,
                    applied,
                    note,
                )
            }
            Fault::Replace(target) => {
                let (slot, why) = self.resolve(*target).await;
                let name = self.name(slot);
                let description = format!("remove {name}{why}, add a fresh node back");
                let started = Instant::now();
                let mut last = String::new();
                while started.elapsed() < REMOVE_WAIT_MAX {
                    let (status, answer) = control::remove(&self.live_addrs(), &name).await;
                    if status == 200 {
                        self.cluster.lock().expect(CLUSTER_LOCK).kill(slot);
                        return (description, Undo::Rejoin(slot), true, String::new());
                    }
                    last = format!("remove answered {status}: {}", answer.trim());
                    tokio::time::sleep(control::POLL_INTERVAL * 5).await;
                }
                // Not removed as far as we know: leave it running; healing re-checks membership.
                (description, Undo::Nothing, false, last)
            }
        }
    }

    /// Ends a fault; returns a note when something did not go as planned.
    async fn end(&mut self, undo: Undo) -> String {
        match undo {
            Undo::Nothing => String::new(),
            Undo::Heal => {
                self.links.heal_all();
                String::new()
            }
            Undo::Resume(slot) => match self.cluster.lock().expect(CLUSTER_LOCK).resume(slot) {
                Ok(()) => String::new(),
                Err(e) => e.to_string(),
            },
            Undo::Restart(slot) => match self.cluster.lock().expect(CLUSTER_LOCK).start(slot) {
                Ok(()) => String::new(),
                Err(e) => e.to_string(),
            },
            Undo::Rejoin(slot) => self.rejoin(slot).await,
        }
    }

    /// Starts a new incarnation in `slot` that joins through a live member, and waits (bounded)
    /// until it is a voter.
    pub async fn rejoin(&mut self, slot: usize) -> String {
        let started = Instant::now();
        let name = {
            let mut cluster = self.cluster.lock().expect(CLUSTER_LOCK);
            let name = cluster.replace(slot);
            if let Err(e) = cluster.start(slot) {
                return e.to_string();
            }
            name
        };
        let addrs = self.http_addrs();
        let joined = control::wait_for(
            &format!("{name} to become a voter"),
            REJOIN_WAIT_MAX,
            || {
                let addrs = addrs.clone();
                let name = name.clone();
                async move {
                    control::members(&addrs)
                        .await
                        .is_some_and(|m| m.iter().any(|m| m.name == name && m.is_voter()))
                }
            },
        )
        .await;
        match joined {
            Ok(()) => format!(
                "{name} joined and was promoted in {:.1} s",
                started.elapsed().as_secs_f64()
            ),
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_depends_only_on_the_seed_and_a_short_run_gets_every_kind() {
        let kinds = [
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::Partition,
            FaultKind::Membership,
        ];
        let a = plan(42, &kinds, 3, Duration::from_secs(16));
        assert_eq!(a, plan(42, &kinds, 3, Duration::from_secs(16)));
        assert_ne!(a, plan(43, &kinds, 3, Duration::from_secs(16)));
        for kind in kinds {
            assert!(
                a.iter().any(|p| p.fault.kind() == kind),
                "{kind:?} missing from {a:?}"
            );
        }
        // Faults do not overlap and end before the quiet end.
        for pair in a.windows(2) {
            assert!(pair[0].at + pair[0].hold <= pair[1].at);
        }
        let last = a.last().expect("some faults");
        assert!(last.at + last.hold <= Duration::from_secs(16) - QUIET_END);
        assert!(plan(1, &[], 3, Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn a_split_cuts_off_a_minority() {
        for seed in 0..200 {
            for p in plan(seed, &[FaultKind::Partition], 5, Duration::from_secs(30)) {
                if let Fault::Split(cut) = p.fault {
                    assert!(!cut.is_empty() && cut.len() <= 2, "{cut:?}");
                }
            }
        }
    }
}
