//! Jepsen-style runs against real `raftkv` processes on loopback.
//!
//! A run: start a cluster of real server processes, each behind a fault-injecting proxy on its
//! Raft port ([`proxy`], [`cluster`]); run concurrent clients that record a history
//! ([`workload`]) while the nemesis injects a seeded schedule of faults ([`faults`]); heal
//! everything and wait until the cluster is whole; read every key linearizably (recorded too);
//! read every member's final state once their applied indexes agree; then check the history
//! with the linearizability checker and compare the states ([`report`]), and write the report.
//!
//! Invariants: all traffic stays on 127.0.0.1; every phase has a named time bound, so a run
//! stops by itself; every child process is killed when the [`cluster::Cluster`] is dropped,
//! on every path out (errors, panics, an interrupted run).

pub mod cluster;
pub mod control;
pub mod faults;
pub mod http;
pub mod proxy;
pub mod report;
pub mod workload;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::task::JoinHandle;
use util::SplitMix64;

use crate::lincheck::{Operation, Outcome, Output};
use cluster::Cluster;
use faults::{FaultKind, Nemesis};
use proxy::{Links, Proxy};
use report::{Evaluation, NodeState, ReportError, RunRecord};
use workload::{Recorder, Workload};

/// How long the founding node may take to elect itself and the others to join and be
/// promoted (debug builds on a loaded 2-core machine are slow to start).
pub const STARTUP_WAIT_MAX: Duration = Duration::from_secs(60);
/// How long the healed cluster may take to be whole again: every slot a voter and ready.
pub const SETTLE_WAIT_MAX: Duration = Duration::from_secs(30);
/// How long the members' applied indexes may take to agree for the final state reads.
pub const CONVERGE_WAIT_MAX: Duration = Duration::from_secs(15);
/// Attempts at the final linearizable read of each key (each one recorded).
pub const FINAL_READ_ATTEMPTS: usize = 10;
/// Bound on each final read and each state read.
pub const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// The fewest nodes a run accepts (a partition needs someone to be cut off from).
pub const NODES_MIN: usize = 3;
/// The most nodes a run accepts.
pub const NODES_MAX: usize = 9;

const CLUSTER_LOCK: &str = "the cluster lock is never held across a panic";

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Cluster size.
    pub nodes: usize,
    /// Length of the workload phase (faults happen within it).
    pub duration: Duration,
    /// Fault kinds to inject.
    pub faults: Vec<FaultKind>,
    /// Seed of the schedule and of the clients' choices.
    pub seed: u64,
    /// Concurrent client processes.
    pub clients: usize,
    /// Keys in the workload.
    pub keys: usize,
    /// Bound on each client operation.
    pub op_timeout: Duration,
    /// Where the report, history, node logs and data go.
    pub out: PathBuf,
    /// The `raftkv` binary.
    pub raftkv: PathBuf,
    /// The nodes' `--log-level`.
    pub node_log_level: String,
    /// The check stage's time limits.
    pub budgets: report::Budgets,
    /// The command line, for the report.
    pub command: String,
}

/// Why a run could not reach a verdict at all.
#[derive(Debug, Error)]
pub enum RunError {
    /// The options, the binary, a port, a directory, or the first cluster start failed.
    #[error("setup: {0}")]
    Setup(String),
    /// The report could not be written.
    #[error("report: {0}")]
    Report(#[from] ReportError),
}

/// A finished run.
#[derive(Debug)]
pub struct RunResult {
    /// What the check found.
    pub evaluation: Evaluation,
    /// The record written to `run.json`.
    pub record: RunRecord,
    /// The run's directory.
    pub dir: PathBuf,
}

/// Aborts a spawned task when dropped, so an interrupted run leaves no task behind.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn setup(what: impl std::fmt::Display) -> RunError {
    RunError::Setup(what.to_string())
}

/// Runs one Jepsen-style test and writes its report under `options.out`.
pub async fn run(options: &Options) -> Result<RunResult, RunError> {
    if !(NODES_MIN..=NODES_MAX).contains(&options.nodes) {
        return Err(setup(format!(
            "--nodes {} is outside {NODES_MIN}..={NODES_MAX}",
            options.nodes
        )));
    }
    if options.clients == 0 || options.keys == 0 {
        return Err(setup("--clients and --keys must be at least 1"));
    }
    let dir = options.out.clone();
    std::fs::create_dir_all(&dir).map_err(|e| setup(format!("{}: {e}", dir.display())))?;

    // The proxies bind first (port 0, kept), so their ports cannot be taken by anyone else.
    let links = Arc::new(Links::default());
    let mut listeners = Vec::new();
    for _ in 0..options.nodes {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| setup(format!("binding a proxy port: {e}")))?;
        listeners.push(listener);
    }
    let proxy_addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()
        .map_err(|e| setup(format!("proxy address: {e}")))?;
    let cluster = Cluster::new(
        options.raftkv.clone(),
        dir.clone(),
        &proxy_addrs,
        &options.node_log_level,
        Arc::clone(&links),
    )
    .map_err(setup)?;
    let mut proxies: Vec<Proxy> = Vec::new();
    for (index, listener) in listeners.into_iter().enumerate() {
        let upstream = cluster.slots[index].listen_addr;
        proxies.push(
            Proxy::spawn(listener, index, upstream, Arc::clone(&links))
                .map_err(|e| setup(format!("starting a proxy: {e}")))?,
        );
    }
    let cluster = Arc::new(Mutex::new(cluster));
    start_cluster(&cluster).await?;

    // The workload, with the nemesis beside it.
    let started = Instant::now();
    let recorder = Arc::new(Recorder::new(started));
    let addrs = cluster.lock().expect(CLUSTER_LOCK).http_addrs();
    let workload = Arc::new(Workload::new(
        addrs.clone(),
        options.keys,
        options.op_timeout,
        Arc::clone(&recorder),
    ));
    let mut rng = SplitMix64::new(options.seed);
    let mut clients = Vec::new();
    for process in 0..options.clients as u64 {
        let client_rng = rng.fork(process);
        clients.push(AbortOnDrop(tokio::spawn(
            Arc::clone(&workload).client(process, client_rng),
        )));
    }
    let plan = faults::plan(
        options.seed,
        &options.faults,
        options.nodes,
        options.duration,
    );
    let mut nemesis = Nemesis::new(
        Arc::clone(&cluster),
        Arc::clone(&links),
        started,
        options.seed,
    );
    let deadline = options.duration;
    let mut nemesis_task = AbortOnDrop(tokio::spawn(async move {
        nemesis.run(&plan, deadline).await;
        nemesis
    }));
    tokio::time::sleep(options.duration.saturating_sub(started.elapsed())).await;
    workload
        .stop
        .store(true, std::sync::atomic::Ordering::Relaxed);
    for client in &mut clients {
        // A client that panicked has recorded what it did; the history shows the gap.
        let _ = (&mut client.0).await;
    }
    let mut nemesis = (&mut nemesis_task.0)
        .await
        .map_err(|e| setup(format!("the nemesis failed: {e}")))?;
    let duration_s = started.elapsed().as_secs_f64();

    // Heal everything and wait for the cluster to be whole.
    let crashes: Vec<String> = cluster
        .lock()
        .expect(CLUSTER_LOCK)
        .crashed()
        .into_iter()
        .map(|(name, status)| format!("{name} exited by itself ({status})"))
        .collect();
    let mut problem = heal(&cluster, &links, &mut nemesis).await.err();
    let settled_after_s = problem.is_none().then(|| started.elapsed().as_secs_f64());

    // Final reads, recorded in the history, then the members' states.
    final_reads(&workload, options.clients as u64).await;
    let mut final_states = Vec::new();
    if problem.is_none() {
        match read_states(&addrs, &names(&cluster), &workload.keys).await {
            Ok(states) => final_states = states,
            Err(e) => problem = Some(e),
        }
    }
    drop(proxies);
    drop(cluster);

    let record = RunRecord {
        command: options.command.clone(),
        seed: options.seed,
        nodes: options.nodes,
        clients: options.clients,
        keys: options.keys,
        duration_s,
        faults_enabled: options.faults.clone(),
        faults: nemesis.records.clone(),
        settled_after_s,
        final_states,
        problem,
        crashes,
    };
    let events = recorder.events();
    report::write_history(&dir, &events)?;
    report::write_record(&dir, &record)?;
    let evaluation = report::evaluate(&record, &events, &dir, options.budgets)?;
    Ok(RunResult {
        evaluation,
        record,
        dir,
    })
}

fn names(cluster: &Arc<Mutex<Cluster>>) -> Vec<String> {
    cluster
        .lock()
        .expect(CLUSTER_LOCK)
        .slots
        .iter()
        .map(|s| s.name.clone())
        .collect()
}

/// Starts the founder, waits for it to lead, then starts the others and waits until all are
/// voters and ready.
async fn start_cluster(cluster: &Arc<Mutex<Cluster>>) -> Result<(), RunError> {
    let (first, addrs) = {
        let mut c = cluster.lock().expect(CLUSTER_LOCK);
        c.start(0).map_err(setup)?;
        (c.slots[0].http_addr.clone(), c.http_addrs())
    };
    control::wait_for("the founding node to be ready", STARTUP_WAIT_MAX, || {
        let first = first.clone();
        async move { control::ready(&first).await.is_some() }
    })
    .await
    .map_err(setup)?;
    {
        let mut c = cluster.lock().expect(CLUSTER_LOCK);
        for index in 1..c.slots.len() {
            c.start(index).map_err(setup)?;
        }
    }
    let names = names(cluster);
    control::wait_for("every node to join as a voter", STARTUP_WAIT_MAX, || {
        let (addrs, names) = (addrs.clone(), names.clone());
        async move { control::whole(&addrs, &names).await }
    })
    .await
    .map_err(setup)
}

/// Ends every fault, then waits until the cluster is whole; a slot whose node is not a member
/// (a removal that went through although its answer was lost) gets a new incarnation.
async fn heal(
    cluster: &Arc<Mutex<Cluster>>,
    links: &Links,
    nemesis: &mut Nemesis,
) -> Result<(), String> {
    links.heal_all();
    let addrs = {
        let mut c = cluster.lock().expect(CLUSTER_LOCK);
        for index in 0..c.slots.len() {
            c.resume(index).map_err(|e| e.to_string())?;
            c.start(index).map_err(|e| e.to_string())?;
        }
        c.http_addrs()
    };
    let whole = |names: Vec<String>, limit: Duration| {
        let addrs = addrs.clone();
        async move {
            control::wait_for("the healed cluster to be whole", limit, || {
                let (addrs, names) = (addrs.clone(), names.clone());
                async move { control::whole(&addrs, &names).await }
            })
            .await
        }
    };
    if whole(names(cluster), SETTLE_WAIT_MAX / 2).await.is_ok() {
        return Ok(());
    }
    // Give slots that are not members at all a new incarnation.
    if let Some(members) = control::members(&addrs).await {
        let missing: Vec<usize> = names(cluster)
            .iter()
            .enumerate()
            .filter(|(_, name)| !members.iter().any(|m| &m.name == *name))
            .map(|(slot, _)| slot)
            .collect();
        for slot in missing {
            nemesis.rejoin(slot).await;
        }
    }
    whole(names(cluster), SETTLE_WAIT_MAX / 2).await
}

/// One linearizable read of every key, through the nodes in turn, retried until one answers;
/// each attempt is recorded as process `process`.
async fn final_reads(workload: &Workload, process: u64) {
    let mut turn = 0;
    for key in &workload.keys {
        for _ in 0..FINAL_READ_ATTEMPTS {
            let node = &workload.nodes[turn % workload.nodes.len()];
            turn += 1;
            let op = Operation::Get { key: key.clone() };
            workload.recorder.invoke(process, op.clone());
            let outcome = workload::execute(node, &op, FINAL_READ_TIMEOUT).await;
            let done = matches!(outcome, Outcome::Ok(_));
            workload.recorder.complete(process, outcome);
            if done {
                break;
            }
        }
    }
}

/// Waits until every member has applied the same index, then reads every key from each with
/// stale (local) reads, checking that each answer was made at that index.
async fn read_states(
    addrs: &[String],
    names: &[String],
    keys: &[String],
) -> Result<Vec<NodeState>, String> {
    let started = Instant::now();
    let mut last_problem = String::new();
    while started.elapsed() < CONVERGE_WAIT_MAX {
        let mut applied = Vec::new();
        for addr in addrs {
            applied.push(control::ready(addr).await);
        }
        let first = applied[0];
        if first.is_none() || applied.iter().any(|a| *a != first) {
            last_problem = format!("applied indexes differ: {applied:?}");
            tokio::time::sleep(control::POLL_INTERVAL).await;
            continue;
        }
        let index = first.expect("checked above");
        match read_all(addrs, names, keys, index).await {
            Ok(states) => return Ok(states),
            Err(e) => last_problem = e,
        }
        tokio::time::sleep(control::POLL_INTERVAL).await;
    }
    Err(format!(
        "the members' states could not be read at one applied index within {CONVERGE_WAIT_MAX:?}: {last_problem}"
    ))
}

async fn read_all(
    addrs: &[String],
    names: &[String],
    keys: &[String],
    index: u64,
) -> Result<Vec<NodeState>, String> {
    let mut states = Vec::new();
    for (addr, name) in addrs.iter().zip(names) {
        let mut values = BTreeMap::new();
        for key in keys {
            let path = format!("/keys/{key}?consistency=stale");
            let answer = http::request(addr, "GET", &path, b"", FINAL_READ_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            let at = answer
                .header("x-raftkv-applied-index")
                .and_then(|v| v.parse::<u64>().ok());
            // A 404 carries no index header; the index was checked before and after.
            let op = Operation::Get { key: key.clone() };
            let value = match workload::classify(&op, Ok(answer)) {
                Outcome::Ok(Output::Value(v)) => v,
                other => return Err(format!("stale read of {key} on {name}: {other:?}")),
            };
            if at.is_some_and(|at| at != index) {
                return Err(format!("{name} moved from index {index} to {at:?}"));
            }
            values.insert(key.clone(), value);
        }
        if control::ready(addr).await != Some(index) {
            return Err(format!("{name} applied more entries while being read"));
        }
        states.push(NodeState {
            name: name.clone(),
            applied_index: index,
            values,
        });
    }
    Ok(states)
}
