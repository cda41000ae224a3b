//! The safety monitor: Raft's properties checked while the simulation runs, and the trace hash
//! that proves a seed replays identically.
//!
//! Checked on every applied entry, and on every node's status after every 1 ms step (a
//! sample: a state that lasts less than a step can be missed):
//! - **Election safety**: at most one leader per term, across all nodes and restarts.
//! - **Durable terms**: a node's term never goes back, even across a crash (it is fsynced
//!   before any vote or append is acknowledged).
//! - **State machine safety**: every node applies the same entry at the same index, and each
//!   node applies indexes one after another without gaps (a snapshot restore moves it ahead).
//! - **Status sanity**: commit ≤ last index on every node.
//!
//! Nodes are compared only with nodes of their own cluster: a run can start a node of another
//! cluster on a host (an impostor, see `Fault::Impostor`), which has its own monitor slot in a
//! cluster of its own, so its entries and terms, which rightly differ from the run's cluster's,
//! are checked against its own history and never fed in as the host's.
//!
//! A violation is recorded, not panicked on, so the run can finish its report with the seed.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use raft::core::Role;
use raft::node::Status;

/// The hash recorded for an applied entry that carries no command (a no-op or a membership
/// change): two nodes must agree on that too.
pub const EMPTY_ENTRY_HASH: u64 = 0;

/// FNV-1a over `bytes`: a stable hash for applied commands (no per-process random keys).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash | 1 // never EMPTY_ENTRY_HASH
}

/// Shared by every simulated node and the harness of one run.
pub struct Monitor {
    state: Mutex<State>,
}

struct State {
    /// Per node: the cluster it belongs to (0: the run's cluster).
    cluster_of: Vec<usize>,
    /// (Cluster, index) → (hash of the entry applied there, the first node that applied it).
    applied_at: BTreeMap<(usize, u64), (u64, usize)>,
    /// Per node: the index it must apply next.
    next_apply: Vec<u64>,
    /// (Cluster, term) → the node that led it.
    leaders: BTreeMap<(usize, u64), usize>,
    /// Per node: the highest term it has reported.
    max_term: Vec<u64>,
    /// Per node: how many snapshots from a leader it installed.
    restores: Vec<u64>,
    /// Per node: the last status seen, to trace changes only.
    last_seen: Vec<Option<(Option<Role>, u64, u64)>>,
    violations: Vec<String>,
    trace: u64,
    trace_events: u64,
}

const STATE_LOCK: &str = "the monitor lock is never held across a panic";

impl Monitor {
    /// A monitor for `nodes` nodes, all of one cluster.
    pub fn new(nodes: usize) -> Monitor {
        Monitor::with_clusters(vec![0; nodes])
    }

    /// A monitor for one node per entry of `cluster_of`, each of the cluster it names (0 is
    /// the run's cluster): safety is checked among the nodes of each cluster separately.
    pub fn with_clusters(cluster_of: Vec<usize>) -> Monitor {
        let nodes = cluster_of.len();
        Monitor {
            state: Mutex::new(State {
                cluster_of,
                applied_at: BTreeMap::new(),
                next_apply: vec![1; nodes],
                leaders: BTreeMap::new(),
                max_term: vec![0; nodes],
                restores: vec![0; nodes],
                last_seen: vec![None; nodes],
                violations: Vec::new(),
                trace: 0,
                trace_events: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect(STATE_LOCK)
    }

    /// Node `node` (re)started with its state machine at `applied`.
    pub fn started(&self, node: usize, applied: u64) {
        let mut s = self.lock();
        s.next_apply[node] = applied + 1;
        s.record(&("start", node, applied));
    }

    /// Node `node` replaced its state with a snapshot at `index`.
    pub fn restored(&self, node: usize, index: u64) {
        let mut s = self.lock();
        if index < s.next_apply[node] {
            let next = s.next_apply[node];
            s.violation(format!(
                "node {node} restored a snapshot at {index} after applying up to {}",
                next - 1
            ));
        }
        s.next_apply[node] = index + 1;
        s.restores[node] += 1;
        s.record(&("restore", node, index));
    }

    /// Node `node` applied the entry hashed `hash` at `index`.
    pub fn applied(&self, node: usize, index: u64, hash: u64) {
        let mut s = self.lock();
        let expected = s.next_apply[node];
        if index != expected {
            s.violation(format!(
                "node {node} applied index {index} but its next index was {expected}"
            ));
        }
        s.next_apply[node] = index + 1;
        let at = (s.cluster_of[node], index);
        match s.applied_at.get(&at).copied() {
            Some((first_hash, first_node)) if first_hash != hash => s.violation(format!(
                "state machine safety: node {node} applied entry {hash:#x} at index {index}, \
                 node {first_node} applied {first_hash:#x} there"
            )),
            Some(_) => {}
            None => {
                s.applied_at.insert(at, (hash, node));
            }
        }
        s.record(&("apply", node, index, hash));
    }

    /// Checks one node's published status.
    pub fn observe(&self, node: usize, status: &Status) {
        let mut s = self.lock();
        let term = status.term.0;
        if term < s.max_term[node] {
            let max = s.max_term[node];
            s.violation(format!("node {node}'s term went back from {max} to {term}"));
        }
        s.max_term[node] = s.max_term[node].max(term);
        if status.role == Some(Role::Leader) {
            let led = (s.cluster_of[node], term);
            match s.leaders.get(&led).copied() {
                Some(other) if other != node => s.violation(format!(
                    "election safety: nodes {other} and {node} both led term {term}"
                )),
                Some(_) => {}
                None => {
                    s.leaders.insert(led, node);
                }
            }
        }
        // The simulated disks never fail an fsync, so a node that stopped on its storage
        // refused something no correct cluster asks of it (overwriting committed entries).
        if let Some(failure) = &status.failed {
            s.violation(format!("node {node} stopped: {failure}"));
        }
        if let Some(alarm) = &status.alarm {
            s.violation(format!("node {node} raised an alarm: {alarm}"));
        }
        if status.commit > status.last_index && status.role.is_some() {
            s.violation(format!(
                "node {node}: commit {} beyond its last index {}",
                status.commit.0, status.last_index.0
            ));
        }
        let seen = (status.role, term, status.commit.0);
        if s.last_seen[node] != Some(seen) {
            s.last_seen[node] = Some(seen);
            s.record(&(
                "status",
                node,
                format!("{:?}", status.role),
                term,
                status.commit.0,
            ));
        }
    }

    /// Adds a harness event (a fault, a client event) to the trace.
    pub fn trace(&self, event: &impl Hash) {
        self.lock().record(event);
    }

    /// Records a violation found by the harness.
    pub fn report(&self, violation: String) {
        self.lock().violation(violation);
    }

    /// The violations found so far.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// The hash of every event traced so far, and how many there were.
    pub fn trace_hash(&self) -> (u64, u64) {
        let s = self.lock();
        (s.trace, s.trace_events)
    }

    /// Per node: how many snapshots from a leader it installed (restored into its state
    /// machine) while running, over all its starts.
    pub fn restores(&self) -> Vec<u64> {
        self.lock().restores.clone()
    }

    /// Per node: the highest term it has reported so far (0: none yet).
    pub fn terms(&self) -> Vec<u64> {
        self.lock().max_term.clone()
    }

    /// The leader of each term seen in the run's cluster (cluster 0).
    pub fn leaders(&self) -> BTreeMap<u64, usize> {
        self.lock()
            .leaders
            .iter()
            .filter(|((cluster, _), _)| *cluster == 0)
            .map(|((_, term), node)| (*term, *node))
            .collect()
    }
}

/// The most violations kept: the first few explain a run, thousands of repeats do not.
const VIOLATIONS_KEPT_MAX: usize = 20;

impl State {
    fn violation(&mut self, message: String) {
        if self.violations.len() < VIOLATIONS_KEPT_MAX {
            self.violations.push(message);
        }
    }

    fn record(&mut self, event: &impl Hash) {
        // `DefaultHasher::new()` has fixed keys: the same events give the same hash in every run.
        let mut hasher = DefaultHasher::new();
        self.trace.hash(&mut hasher);
        event.hash(&mut hasher);
        self.trace = hasher.finish();
        self.trace_events += 1;
    }
}
