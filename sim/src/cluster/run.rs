//! One simulated run: build the cluster from a seed, run the clients while the schedule's
//! faults happen, heal, let it settle, read every key, and check everything.
//!
//! Phases, in simulated time:
//! 1. **Workload** (`Scenario::duration`): clients and faults.
//! 2. **Heal**: every link repaired, every crashed host restarted; clients stop.
//! 3. **Settle** ([`SETTLE`]), then a **final read** of every key through the leader,
//!    recorded in the history, so a lost acknowledged write shows up as a read the checker
//!    cannot explain.
//! 4. **Converge** (at most [`CONVERGE_MAX`]): every member applies up to the leader's commit.
//!
//! Then: the monitor's safety properties held throughout, the history is linearizable, and
//! every member holds the same key-value state at the same applied index.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::control::{Requests, controller};
use super::faults::{Fault, Schedule, Timed};
use super::host::{self, Cluster, Formation, NodeSettings, Unreachable};
use super::workload::{self, HistoryLog, Workload, perform};
use crate::lincheck::{
    self, CheckOptions, Event, EventKind, History, KvModel, Operation, Outcome, Verdict,
};

/// turmoil's step: every host runs this much simulated time per step.
pub const STEP: Duration = Duration::from_millis(1);
/// The longest normal message delay (a [`Fault::Slow`] raises it).
pub const LATENCY_MAX: Duration = Duration::from_millis(2);
/// The chance, per message on a link failed by [`Fault::Flaky`], that the link repairs itself.
pub const FLAKY_REPAIR_RATE: f64 = 0.05;
/// Simulated time between healing and the final reads.
pub const SETTLE: Duration = Duration::from_secs(2);
/// How long the final reads and convergence may take before the run fails for liveness.
pub const CONVERGE_MAX: Duration = Duration::from_secs(10);
/// The process id of the final reader in the history.
pub const FINAL_READER: u64 = 1_000;
/// How many times the final reader retries a key.
pub const FINAL_READ_ATTEMPTS: usize = 40;
/// The checker's time budget per run.
pub const CHECK_BUDGET: Duration = Duration::from_secs(30);
/// How long [`Fault::AwaitVoters`] holds the schedule before the run fails for liveness: a
/// cluster forming by joins has three voters in well under a second.
pub const FORMATION_WAIT_MAX: Duration = Duration::from_secs(3);

/// A kind of run: cluster size, workload, node settings and how faults are chosen.
#[derive(Clone)]
pub struct Scenario {
    /// The name printed with failures.
    pub name: &'static str,
    /// Founding voters (with [`Formation::Joining`], host 0 founds and the others join when
    /// the schedule says).
    pub voters: usize,
    /// Empty hosts that faults may add.
    pub spares: usize,
    /// Hosts where no node ever runs, after the spares: joins may name them.
    pub unreachable: Vec<Unreachable>,
    /// The clients.
    pub workload: Workload,
    /// Simulated time of the workload phase.
    pub duration: Duration,
    /// Node settings (snapshot interval, a deliberately broken rule).
    pub settings: NodeSettings,
    /// The faults for a seed.
    pub schedule: fn(u64, &Scenario) -> Schedule,
    /// Extra harness switch: every disk's fsync lies (acknowledges before durability).
    pub lying_fsync: bool,
    /// The scenario's own checks, run once the cluster has converged: what its faults must
    /// (not) have led to, and that they happened at all. Each string is a violation.
    pub end_check: fn(&Cluster) -> Vec<String>,
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scenario({})", self.name)
    }
}

impl Scenario {
    /// Random faults from the seed over `voters + spares` hosts.
    pub fn random(name: &'static str, voters: usize, spares: usize) -> Scenario {
        Scenario {
            name,
            voters,
            spares,
            workload: Workload {
                clients: 4,
                keys: 4,
                start_after: Duration::ZERO,
                value_bytes: 0,
                auth_ops_percent: 0,
            },
            duration: Duration::from_secs(4),
            unreachable: Vec::new(),
            settings: NodeSettings {
                snapshot_every: 60,
                broken_rule: None,
                formation: Formation::Founders,
            },
            schedule: |seed, s| Schedule::random(seed, s.voters + s.spares, s.duration),
            lying_fsync: false,
            end_check: |_| Vec::new(),
        }
    }

    /// The hosts of a run.
    pub fn hosts(&self) -> usize {
        self.voters + self.spares + self.unreachable.len()
    }
}

/// What one run found.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The scenario's name.
    pub scenario: &'static str,
    /// The seed.
    pub seed: u64,
    /// The faults.
    pub schedule: Schedule,
    /// The faults as the harness applied them, at the simulated time it did: later than
    /// scheduled after a [`Fault::AwaitVoters`], never for those scheduled after the workload.
    pub applied: Vec<Timed>,
    /// Safety violations, liveness failures and state differences found.
    pub violations: Vec<String>,
    /// The checker's verdict on the history (`None`: not checked, the run failed earlier).
    pub verdict: Option<Verdict>,
    /// The checker's account of a violation.
    pub checker_text: Option<String>,
    /// Operations by outcome: ok, fail, unknown.
    pub ops: (usize, usize, usize),
    /// Hash of every traced event: equal for two runs of one seed.
    pub trace_hash: u64,
    /// How many events were traced.
    pub trace_events: u64,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// Elections (distinct terms with a leader).
    pub terms_led: usize,
    /// The history.
    pub history: Vec<Event>,
    /// What the nodes did with snapshots, summed over the hosts.
    pub snapshots: SnapshotCounts,
}

/// Snapshots in one run, summed over every host of the run's cluster: how much of the
/// snapshot machinery the run exercised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotCounts {
    /// Snapshots the nodes wrote of their own state.
    pub written: u64,
    /// Snapshot streams that began to arrive from a leader.
    pub streams_begun: u64,
    /// Streams received whole and checked.
    pub streams_received: u64,
    /// Streams that ended before their last byte.
    pub streams_abandoned: u64,
    /// Snapshots from a leader installed into a running state machine.
    pub installed: u64,
    /// The largest snapshot received, in bytes.
    pub largest_received_bytes: u64,
}

impl SnapshotCounts {
    fn of(cluster: &Cluster) -> SnapshotCounts {
        let mut counts = SnapshotCounts {
            installed: cluster.monitor.restores()[..cluster.hosts.len()]
                .iter()
                .sum(),
            ..SnapshotCounts::default()
        };
        for host in &cluster.hosts {
            let activity = host.disk.snapshots.activity();
            counts.written += activity.written;
            counts.streams_begun += activity.streams_begun;
            counts.streams_received += activity.streams_received;
            counts.streams_abandoned += activity.streams_abandoned;
            counts.largest_received_bytes = counts
                .largest_received_bytes
                .max(activity.largest_received_bytes);
        }
        counts
    }
}

impl fmt::Display for SnapshotCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "snapshots: {} written, {} streams begun, {} received, {} abandoned, {} installed, largest {} bytes",
            self.written,
            self.streams_begun,
            self.streams_received,
            self.streams_abandoned,
            self.installed,
            self.largest_received_bytes
        )
    }
}

impl RunReport {
    /// True when nothing was found.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.verdict == Some(Verdict::Linearizable)
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run -p sim --release -- --scenario {} --seed {} --verbose",
            self.scenario, self.seed
        )
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.passed() { "passed" } else { "FAILED" };
        writeln!(
            f,
            "{} seed {}: {status}; {} ops ({} ok, {} fail, {} unknown), {} led terms, {:?} simulated, verdict {}, trace {:016x}",
            self.scenario,
            self.seed,
            self.ops.0 + self.ops.1 + self.ops.2,
            self.ops.0,
            self.ops.1,
            self.ops.2,
            self.terms_led,
            self.simulated,
            self.verdict
                .map_or("not checked".to_string(), |v| v.to_string()),
            self.trace_hash
        )?;
        writeln!(f, "  {}", self.snapshots)?;
        for v in &self.violations {
            writeln!(f, "  violation: {v}")?;
        }
        if let Some(text) = &self.checker_text {
            writeln!(f, "{text}")?;
        }
        if !self.passed() {
            write!(f, "faults:\n{}", self.schedule)?;
            let held = |t: &Timed| matches!(t.fault, Fault::AwaitVoters { .. });
            if self.schedule.faults.iter().any(held) {
                let applied = Schedule {
                    faults: self.applied.clone(),
                };
                write!(f, "as applied:\n{applied}")?;
            }
            writeln!(f, "replay: {}", self.replay_command())?;
        }
        Ok(())
    }
}

/// Runs `scenario` with `seed` and its own schedule.
pub fn run_seed(scenario: &Scenario, seed: u64) -> RunReport {
    let schedule = (scenario.schedule)(seed, scenario);
    run(scenario, seed, schedule)
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Workload,
    Settling,
    FinalReads,
}

/// Runs `scenario` with `seed` and the given faults.
pub fn run(scenario: &Scenario, seed: u64, schedule: Schedule) -> RunReport {
    align_task_ids();
    let cluster = Arc::new(Cluster::new(
        scenario.voters,
        scenario.spares,
        &scenario.unreachable,
        scenario.settings.clone(),
        seed,
    ));
    if scenario.lying_fsync {
        for host in &cluster.hosts {
            host.disk.fs.set_lying_syncs(true);
        }
    }
    let log = Arc::new(HistoryLog::default());
    let stop = Arc::new(AtomicBool::new(false));
    let final_phase = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(Requests::default());
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(scenario.duration + SETTLE + CONVERGE_MAX + Duration::from_secs(5))
        .tick_duration(STEP)
        .min_message_latency(Duration::ZERO)
        .max_message_latency(LATENCY_MAX)
        .repair_rate(FLAKY_REPAIR_RATE)
        .build();
    let names: Vec<String> = cluster.hosts.iter().map(|h| h.name.clone()).collect();
    for (index, name) in names.iter().enumerate() {
        let cluster = Arc::clone(&cluster);
        sim.host(name.as_str(), move || {
            host::run(Arc::clone(&cluster), index)
        });
    }
    for process in 0..scenario.workload.clients as u64 {
        sim.client(
            format!("client{process}"),
            workload::client(
                Arc::clone(&cluster),
                scenario.workload.clone(),
                process,
                Arc::clone(&stop),
                Arc::clone(&log),
            ),
        );
    }
    sim.client(
        "controller",
        controller(
            Arc::clone(&cluster),
            Arc::clone(&requests),
            Arc::clone(&stop),
        ),
    );
    sim.client(
        "final-reader",
        final_reads(
            Arc::clone(&cluster),
            scenario.workload.keys,
            Arc::clone(&final_phase),
            Arc::clone(&log),
        ),
    );

    let mut faults = schedule.faults.iter().peekable();
    let mut applied = Vec::new();
    // How far `Fault::AwaitVoters` moved the faults after it back.
    let mut held = Duration::ZERO;
    let mut phase = Phase::Workload;
    let mut healed_at = Duration::ZERO;
    loop {
        let now = sim.elapsed();
        // Faults happen during the workload only; healing ends them all.
        while let Some(&timed) = faults.peek().filter(|_| phase == Phase::Workload) {
            let due = timed.at + held;
            if due > now {
                break;
            }
            if let Fault::AwaitVoters { voters } = timed.fault {
                if cluster.formed_voters() < voters {
                    if now < due + FORMATION_WAIT_MAX {
                        break; // Hold this and every later fault.
                    }
                    cluster.monitor.report(format!(
                        "liveness: the cluster did not reach {voters} voters within \
                         {FORMATION_WAIT_MAX:?} ({})",
                        statuses(&cluster)
                    ));
                }
                held = now - timed.at;
            }
            apply(&mut sim, &cluster, &requests, &names, &timed.fault);
            applied.push(Timed {
                at: now,
                fault: timed.fault.clone(),
            });
            faults.next();
        }
        if phase == Phase::Workload {
            fire_armed(&mut sim, &cluster, &names);
        }
        observe(&cluster);
        if phase == Phase::Workload && now >= scenario.duration {
            stop.store(true, Ordering::Relaxed);
            {
                let mut faults = cluster.snapshot_faults();
                faults.mid_install_armed = false;
                faults.after_snapshot_armed = None;
            }
            arm_crash_mid_stream(&cluster, false);
            for host in 0..names.len() {
                impostor_gone(&mut sim, &cluster, &names, host);
            }
            heal(&mut sim, &cluster, &names);
            phase = Phase::Settling;
            healed_at = now;
        }
        if phase == Phase::Settling && now >= healed_at + SETTLE {
            final_phase.store(true, Ordering::Relaxed);
            phase = Phase::FinalReads;
        }
        if !cluster.monitor.violations().is_empty() {
            break; // A safety violation: report it now, with the seed.
        }
        match sim.step() {
            Ok(true) if phase == Phase::FinalReads => break,
            Ok(_) => {}
            Err(e) => {
                cluster.monitor.report(format!(
                    "the simulation failed: {e} ({})",
                    statuses(&cluster)
                ));
                break;
            }
        }
    }
    if cluster.monitor.violations().is_empty() {
        converge(&mut sim, &cluster);
    }
    if cluster.monitor.violations().is_empty() {
        for violation in (scenario.end_check)(&cluster) {
            cluster.monitor.report(violation);
        }
    }
    finish(scenario, seed, schedule, applied, &sim, &cluster, &log)
}

/// How many lists a tokio current-thread runtime keeps its tasks in (tokio 1.x's
/// `OwnedTasks::new(1)`: the next power of two of one core, times four). A task goes to the list
/// its id picks, modulo this.
const TOKIO_TASK_LISTS: u64 = 4;
/// The id tokio gives the first task of a process: a run started in a fresh process sees the
/// task-id counter here, and the replay command starts a fresh process.
const FIRST_TASK_ID: u64 = 1;

/// Makes a run's trace independent of the runs before it in the same process. tokio numbers
/// tasks from one counter for the whole process, and a current-thread runtime files each task
/// in one of [`TOKIO_TASK_LISTS`] lists by its number. When turmoil crashes a host it drops the
/// host's runtime, which drops the tasks list by list; their sockets send FIN or RST as they
/// go, each segment drawing its delay from the simulation's RNG. So the order of those draws,
/// and everything after them, depended on how many tasks the process had spawned before:
/// seed 4 of `broken_vote_check` failed after seed 3 in one process and passed alone, so a
/// failure found in a batch did not replay. Spawning throwaway tasks until the counter is
/// where a fresh process has it makes every run start alike (threads that spawn tasks at the
/// same time, as parallel tests do, can still interleave with it).
fn align_task_ids() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a bare current-thread runtime always builds");
    loop {
        let probe = runtime.spawn(async {});
        let id: u64 = probe
            .id()
            .to_string()
            .parse()
            .expect("a tokio task id prints as a number");
        if (id + 1) % TOKIO_TASK_LISTS == FIRST_TASK_ID % TOKIO_TASK_LISTS {
            return;
        }
    }
}

/// Applies one fault now.
fn apply(
    sim: &mut turmoil::Sim<'_>,
    cluster: &Cluster,
    requests: &Requests,
    names: &[String],
    fault: &Fault,
) {
    cluster.monitor.trace(&("fault", sim.elapsed(), fault));
    let hosts = names.len();
    match fault {
        Fault::Partition { side } => {
            for a in 0..hosts {
                for b in 0..hosts {
                    if side & (1 << a) != 0 && side & (1 << b) == 0 {
                        sim.partition(names[a].as_str(), names[b].as_str());
                    }
                }
            }
        }
        Fault::IsolateLeader => {
            if let Some(leader) = cluster.leader() {
                for (b, name) in names.iter().enumerate() {
                    if b != leader {
                        sim.partition(names[leader].as_str(), name.as_str());
                    }
                }
            }
        }
        Fault::OneWay { from, to } => {
            sim.partition_oneway(names[*from].as_str(), names[*to].as_str())
        }
        Fault::Flaky { per_million } => sim.set_fail_rate(f64::from(*per_million) / 1e6),
        Fault::Slow { max_ms } => sim.set_max_message_latency(Duration::from_millis(*max_ms)),
        Fault::Crash { host } => crash(sim, cluster, names, *host),
        Fault::CrashLeader => {
            if let Some(leader) = cluster.leader() {
                crash(sim, cluster, names, leader);
            }
        }
        Fault::CrashAll => {
            for host in 0..hosts {
                crash(sim, cluster, names, host);
            }
        }
        Fault::Restart { host } => restart(sim, cluster, names, *host),
        Fault::RestartAll => {
            for host in 0..hosts {
                restart(sim, cluster, names, host);
            }
        }
        Fault::PauseLeader => {
            if let Some(leader) = cluster.leader() {
                for (b, name) in names.iter().enumerate() {
                    if b != leader {
                        sim.hold(names[leader].as_str(), name.as_str());
                    }
                }
            }
        }
        Fault::Resume => release_all(sim, names),
        Fault::Heal => {
            heal(sim, cluster, names);
            let terms = cluster.monitor.terms();
            let mut faults = cluster.snapshot_faults();
            if faults.cut_off.is_some() && faults.terms_at_reconnect.is_none() {
                faults.terms_at_reconnect = Some(terms);
            }
        }
        Fault::IsolateFollower => {
            let leader = cluster.leader();
            let follower = (0..hosts).find(|&h| Some(h) != leader && cluster.live(h).is_some());
            if let Some(follower) = follower {
                for (b, name) in names.iter().enumerate() {
                    if b != follower {
                        sim.partition(names[follower].as_str(), name.as_str());
                    }
                }
                cluster.snapshot_faults().cut_off = Some(follower);
                cluster.monitor.trace(&("cut off", follower));
            }
        }
        Fault::CrashMidInstall => {
            cluster.snapshot_faults().mid_install_armed = true;
            arm_crash_mid_stream(cluster, true);
        }
        Fault::CrashLeaderAfterSnapshot => {
            let written = written_snapshots(cluster);
            cluster.snapshot_faults().after_snapshot_armed = Some(written);
        }
        Fault::Impostor { host } => impostor(sim, cluster, names, *host),
        Fault::ImpostorGone { host } => impostor_gone(sim, cluster, names, *host),
        // The schedule loop holds the faults after it; nothing to do here.
        Fault::AwaitVoters { .. } => {}
        request => requests.push(request.clone()),
    }
}

/// Arms (or disarms) every host's snapshot files for [`Fault::CrashMidInstall`].
fn arm_crash_mid_stream(cluster: &Cluster, armed: bool) {
    for host in &cluster.hosts {
        host.disk.snapshots.arm_crash_mid_stream(armed);
    }
}

/// Each host's count of its own snapshots written.
fn written_snapshots(cluster: &Cluster) -> Vec<u64> {
    cluster
        .hosts
        .iter()
        .map(|h| h.disk.snapshots.activity().written)
        .collect()
}

/// Fires the armed snapshot crashes whose moment has come (see [`Fault::CrashMidInstall`] and
/// [`Fault::CrashLeaderAfterSnapshot`]). Called between steps: what a node does inside one
/// step (with the simulation's in-place snapshot files, receiving the last chunk, checking,
/// keeping, persisting and restoring a snapshot all happen in the step the chunk arrives) is
/// seen whole or not at all.
fn fire_armed(sim: &mut turmoil::Sim<'_>, cluster: &Cluster, names: &[String]) {
    let (mid_install, after_snapshot) = {
        let faults = cluster.snapshot_faults();
        (
            faults.mid_install_armed,
            faults.after_snapshot_armed.clone(),
        )
    };
    if mid_install {
        let due = (0..names.len()).find_map(|h| {
            let chunks = cluster.hosts[h].disk.snapshots.activity().crash_due?;
            cluster.live(h).is_some().then_some((h, chunks))
        });
        if let Some((host, chunks)) = due {
            cluster
                .monitor
                .trace(&("crash mid-install", sim.elapsed(), host, chunks));
            crash(sim, cluster, names, host);
            arm_crash_mid_stream(cluster, false);
            let mut faults = cluster.snapshot_faults();
            faults.mid_install_armed = false;
            faults.crashed_mid_install.push((host, chunks));
        }
    }
    if let Some(before) = after_snapshot
        && let Some(leader) = cluster.leader()
    {
        let written = cluster.hosts[leader].disk.snapshots.activity().written;
        if written > before[leader] {
            cluster
                .monitor
                .trace(&("crash after snapshot", sim.elapsed(), leader, written));
            crash(sim, cluster, names, leader);
            let mut faults = cluster.snapshot_faults();
            faults.after_snapshot_armed = None;
            faults.crashed_after_snapshot.push((leader, written));
        }
    }
}

fn crash(sim: &mut turmoil::Sim<'_>, cluster: &Cluster, names: &[String], host: usize) {
    if cluster.live(host).is_none() {
        return;
    }
    cluster.set_down(host);
    sim.crash(names[host].as_str());
    let report = cluster.hosts[host].disk.fs.crash();
    cluster
        .monitor
        .trace(&("crash", host, format!("{report:?}")));
}

fn restart(sim: &mut turmoil::Sim<'_>, cluster: &Cluster, names: &[String], host: usize) {
    // Up already, never to run a node, or running an impostor's software.
    if cluster.live(host).is_some()
        || cluster.hosts[host].unreachable.is_some()
        || cluster.impostor(host).is_some()
    {
        return;
    }
    sim.bounce(names[host].as_str());
    cluster.monitor.trace(&("restart", host));
}

/// Replaces the host's software with an impostor's (see [`Fault::Impostor`]).
fn impostor(sim: &mut turmoil::Sim<'_>, cluster: &Cluster, names: &[String], host: usize) {
    if cluster.hosts[host].unreachable.is_some() || cluster.impostor(host).is_some() {
        return;
    }
    crash(sim, cluster, names, host);
    let impostor = cluster.set_impostor(host);
    sim.bounce(names[host].as_str());
    cluster
        .monitor
        .trace(&("impostor", host, impostor.cluster_id.0));
}

/// Checks and stops the impostor on the host, if one runs; the host stays down.
fn impostor_gone(sim: &mut turmoil::Sim<'_>, cluster: &Cluster, names: &[String], host: usize) {
    let Some(impostor) = cluster.impostor(host) else {
        return;
    };
    for violation in impostor.check(&cluster.hosts[host]) {
        cluster.monitor.report(violation);
    }
    impostor.set_down();
    sim.crash(names[host].as_str());
    cluster.clear_impostor(host);
    cluster.monitor.trace(&("impostor gone", host));
}

fn release_all(sim: &mut turmoil::Sim<'_>, names: &[String]) {
    for a in names {
        for b in names {
            if a < b {
                sim.release(a.as_str(), b.as_str());
            }
        }
    }
}

/// Ends every network fault and restarts every crashed host.
fn heal(sim: &mut turmoil::Sim<'_>, cluster: &Cluster, names: &[String]) {
    for a in names {
        for b in names {
            if a < b {
                sim.repair(a.as_str(), b.as_str());
                sim.release(a.as_str(), b.as_str());
            }
        }
    }
    sim.set_fail_rate(0.0);
    sim.set_max_message_latency(LATENCY_MAX);
    for host in 0..names.len() {
        restart(sim, cluster, names, host);
    }
}

/// Checks every running node's status with the monitor (an impostor's in its own slot), and
/// that no node counts an unreachable host among the voters: a learner that never answered
/// must never be promoted.
fn observe(cluster: &Cluster) {
    for index in 0..cluster.hosts.len() {
        if let Some(live) = cluster.live(index) {
            let status = live.node.status();
            cluster.monitor.observe(index, &status);
            for host in cluster.hosts.iter().filter(|h| h.unreachable.is_some()) {
                if status.configuration.voters.contains(&host.id) {
                    cluster.monitor.report(format!(
                        "n{} counts {}, where no node ever ran, among its voters: {:?}",
                        index + 1,
                        host.name,
                        status.configuration
                    ));
                }
            }
        }
        if let Some(live) = cluster.impostor(index).and_then(|i| i.live()) {
            let slot = cluster.impostor_slot(index);
            cluster.monitor.observe(slot, &live.node.status());
        }
    }
}

/// The final reader: once the cluster has settled, reads every key linearizably (retrying
/// until a read succeeds) so that the history ends with the state every write led to.
async fn final_reads(
    cluster: Arc<Cluster>,
    keys: usize,
    start: Arc<AtomicBool>,
    log: Arc<HistoryLog>,
) -> turmoil::Result {
    while !start.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for k in 0..keys {
        let mut read = false;
        for _ in 0..FINAL_READ_ATTEMPTS {
            let target = cluster.leader().unwrap_or(0);
            let op = Operation::Get {
                key: format!("k{k}"),
            };
            if let Outcome::Ok(_) = perform(&cluster, &log, FINAL_READER, target, op, 0).await {
                read = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !read {
            cluster.monitor.report(format!(
                "liveness: key k{k} could not be read after healing ({})",
                statuses(&cluster)
            ));
        }
    }
    Ok(())
}

/// Steps until every member has applied the leader's commit index, or reports that it did not.
fn converge(sim: &mut turmoil::Sim<'_>, cluster: &Cluster) {
    let started = sim.elapsed();
    loop {
        observe(cluster);
        if let Some(leader) = cluster.leader().and_then(|l| cluster.live(l)) {
            let status = leader.node.status();
            // A host where no node ever runs applies nothing; the others must all catch up.
            let members: Vec<_> = status
                .configuration
                .members()
                .into_iter()
                .filter(|id| {
                    cluster
                        .host_of(*id)
                        .is_none_or(|h| cluster.hosts[h].unreachable.is_none())
                })
                .collect();
            let applied: Option<Vec<_>> = members
                .iter()
                .map(|id| {
                    let live = cluster.host_of(*id).and_then(|h| cluster.live(h))?;
                    Some(live.node.applied())
                })
                .collect();
            // Compare only once every member has applied the same index, at least the leader's
            // commit (a new leader's commit index may briefly lag its followers').
            let settled = applied.is_some_and(|a| {
                a.iter().all(|i| *i == a[0]) && a.first().is_some_and(|i| *i >= status.commit)
            });
            if settled {
                compare_states(cluster, &members, &status.configuration);
                return;
            }
        }
        if sim.elapsed() >= started + CONVERGE_MAX {
            cluster.monitor.report(format!(
                "liveness: the cluster did not converge within {CONVERGE_MAX:?} of healing ({})",
                statuses(cluster)
            ));
            return;
        }
        if let Err(e) = sim.step() {
            cluster.monitor.report(format!(
                "the simulation failed: {e} ({})",
                statuses(cluster)
            ));
            return;
        }
    }
}

/// One line on every host's state, for liveness failures.
fn statuses(cluster: &Cluster) -> String {
    let lines: Vec<String> = (0..cluster.hosts.len())
        .map(|i| match cluster.live(i) {
            None if cluster.hosts[i].unreachable.is_some() => format!("n{}: unreachable", i + 1),
            None if cluster.impostor(i).is_some() => format!("n{}: impostor", i + 1),
            Some(live) => {
                let s = live.node.status();
                let ids = |set: &std::collections::BTreeSet<raft::core::NodeId>| {
                    set.iter()
                        .filter_map(|id| cluster.host_of(*id).map(|h| format!("n{}", h + 1)))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                format!(
                    "n{}: {:?} term {} leader {:?} commit {} applied {} last {} voters [{}]{} learners [{}]{}{}",
                    i + 1,
                    s.role,
                    s.term.0,
                    s.leader.and_then(|l| cluster.host_of(l)).map(|h| h + 1),
                    s.commit.0,
                    s.applied.0,
                    s.last_index.0,
                    ids(&s.configuration.voters),
                    if s.configuration.is_joint() {
                        format!(" outgoing [{}]", ids(&s.configuration.voters_outgoing))
                    } else {
                        String::new()
                    },
                    ids(&s.configuration.learners),
                    s.removed
                        .map(|at| format!(" REMOVED at {}", at.0))
                        .unwrap_or_default(),
                    s.failed.map(|f| format!(" FAILED: {f}")).unwrap_or_default()
                )
            }
            None => format!("n{}: down", i + 1),
        })
        .collect();
    lines.join("; ")
}

/// Every member's key-value state and membership must be the same.
fn compare_states(
    cluster: &Cluster,
    members: &[raft::core::NodeId],
    configuration: &raft::core::Configuration,
) {
    let mut first: Option<(usize, host::Dump)> = None;
    for id in members {
        let Some(index) = cluster.host_of(*id) else {
            continue;
        };
        let Some(live) = cluster.live(index) else {
            continue;
        };
        let theirs = live.node.status().configuration;
        if &theirs != configuration {
            cluster.monitor.report(format!(
                "memberships differ: n{} follows {theirs:?}, the leader {configuration:?}",
                index + 1
            ));
            return;
        }
        let theirs = host::cluster_of(&live.machine);
        if theirs != cluster.cluster_id {
            cluster.monitor.report(format!(
                "n{} holds the state of cluster {theirs}, not the run's {}",
                index + 1,
                cluster.cluster_id
            ));
            return;
        }
        let dump = host::dump(&live.machine);
        let prefix = host::IMPOSTOR_KEY_PREFIX.as_bytes();
        if let Some(kv) = dump.1.iter().find(|kv| kv.0.starts_with(prefix)) {
            cluster.monitor.report(format!(
                "n{} holds {:?}, a key only an impostor writes: another cluster's write reached \
                 the run's cluster",
                index + 1,
                kv.0
            ));
            return;
        }
        match &first {
            None => first = Some((index, dump)),
            Some((other, expected)) if expected != &dump => {
                cluster.monitor.report(format!(
                    "replicas differ: n{} holds {:?} at applied {}, n{} holds {:?} at applied {}",
                    other + 1,
                    expected.1,
                    expected.0,
                    index + 1,
                    dump.1,
                    dump.0
                ));
                return;
            }
            Some(_) => {}
        }
    }
}

fn finish(
    scenario: &Scenario,
    seed: u64,
    schedule: Schedule,
    applied: Vec<Timed>,
    sim: &turmoil::Sim<'_>,
    cluster: &Cluster,
    log: &HistoryLog,
) -> RunReport {
    let history = log.events();
    let mut ops = (0, 0, 0);
    for event in &history {
        match &event.kind {
            EventKind::Complete(Outcome::Ok(_)) => ops.0 += 1,
            EventKind::Complete(Outcome::Fail) => ops.1 += 1,
            EventKind::Complete(Outcome::Unknown) => ops.2 += 1,
            EventKind::Invoke(_) => {}
        }
    }
    let mut violations = cluster.monitor.violations();
    let (mut verdict, mut checker_text) = (None, None);
    if violations.is_empty() {
        match History::from_events(&history) {
            Ok(parsed) => {
                let options = CheckOptions {
                    budget: CHECK_BUDGET,
                    ..CheckOptions::default()
                };
                match lincheck::analyze(&KvModel::default(), &parsed, &options, CHECK_BUDGET) {
                    Ok(analysis) => {
                        verdict = Some(analysis.report.verdict);
                        if analysis.report.verdict != Verdict::Linearizable {
                            checker_text = Some(analysis.text);
                        }
                    }
                    Err(e) => violations.push(format!("the checker refused the history: {e}")),
                }
            }
            Err(e) => violations.push(format!("the history is malformed: {e}")),
        }
    }
    let (trace_hash, trace_events) = cluster.monitor.trace_hash();
    RunReport {
        scenario: scenario.name,
        seed,
        schedule,
        applied,
        violations,
        verdict,
        checker_text,
        ops,
        trace_hash,
        trace_events,
        simulated: sim.elapsed(),
        terms_led: cluster.monitor.leaders().len(),
        history,
        snapshots: SnapshotCounts::of(cluster),
    }
}
