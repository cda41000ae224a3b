//! A simulated node: the real driver, log store, transport and state machine, started by
//! turmoil as host software (and started again after a crash), with its WAL on its own
//! [`Disk`].
//!
//! The harness and the clients reach a running node through [`Cluster::live`]; the entry is
//! cleared when the harness crashes the host, so nobody talks to a dead node's handle.
//!
//! A cluster forms in one of two ways ([`Formation`]): every founder writes the same founding
//! entry and knows every host's address from the start (the existing scenarios), or it forms
//! as servers do, by one founder and joins, with addresses only from the address records.
//! Besides RaftKV nodes of the run's cluster, a host can be [`Unreachable`] (nothing of RaftKV
//! ever runs there) or, for a while, run an [`Impostor`]: a node of another cluster under the
//! same name, id and address.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use raft::core::{self, BrokenRule, LogIndex, NodeId, Role, SnapshotMetadata};
use raft::node::{
    self, ClusterId, LogStore, Node, NodeError, Restorer, SnapshotFiles, StateMachine, WalLogStore,
};
use raft::transport::{Refusal, TransportReport};
use replica::boot::{Restored, StoreStart};
use replica::launch::{self, Launch, Opened, Replica, ReplicaMachine, ReplicaSettings};
use replica::machine::{Machine, MachineView, MemberInfo, Output, Proposal, RestoredState};
use replica::timing::{TICKS_PER_HEARTBEAT_DEFAULT, Timing};

use super::disk::{Disk, WAL_DIR};
use super::monitor::{EMPTY_ENTRY_HASH, Monitor, fnv1a};
use super::net::{PEER_PORT, TurmoilListener, TurmoilNetwork, peer_addr};

/// Every simulated node's clock: a server's started with `raft.heartbeat_interval: 10ms` and
/// `raft.election_timeout: 100ms` (elections after 100–200 ms of silence), ticking as the server
/// does. Five times faster than the server's defaults, so that a few seconds of simulated time
/// see many elections.
pub const TIMING: Timing = Timing {
    heartbeat_interval: Duration::from_millis(10),
    election_timeout: Duration::from_millis(100),
    ticks_per_heartbeat: TICKS_PER_HEARTBEAT_DEFAULT,
};
/// WAL segment size: the smallest the WAL takes, so that rotation and whole-segment
/// compaction happen in every run. Compaction removes whole segments only, so a segment holds
/// the entries a lagging follower can still get from the log: at 16 KiB (about 200 of the
/// simulation's small entries) no follower in six seeds each of `random3` and `random5` ever
/// needed a snapshot, at 4 KiB four of the twelve seeds streamed one.
pub const SEGMENT_BYTES: u64 = wal::SEGMENT_BYTES_MIN;

/// The keys an impostor writes start with this; no client of the run's cluster writes such a
/// key, so one found in the run's cluster came from the impostor.
pub const IMPOSTOR_KEY_PREFIX: &str = "impostor/";
/// How many keys an impostor writes into its own cluster.
pub const IMPOSTOR_WRITES_MAX: u64 = 20;
/// How often an impostor's own client tries its next write.
pub const IMPOSTOR_WRITE_INTERVAL: Duration = Duration::from_millis(20);
/// Mixed into the run's seed to make an impostor's cluster id (and its disk's seed).
pub const IMPOSTOR_SEED_SALT: u64 = 0x1b05_7e12;
/// Appended to an [`Unreachable::Unresolvable`] host's name to make an address that names no
/// host of the simulation.
pub const UNRESOLVABLE_SUFFIX: &str = "-nowhere";

/// How the nodes of one run are set up.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// Take a snapshot (and compact the log) every this many applied entries.
    pub snapshot_every: u64,
    /// A safety rule every node breaks on purpose (bug-finding tests only).
    pub broken_rule: Option<BrokenRule>,
    /// How the cluster forms and where nodes learn their peers' addresses.
    pub formation: Formation,
}

/// How a run's cluster comes together, and where its nodes learn each other's addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Formation {
    /// Every founding voter writes the same first entry, naming all of them, and every
    /// host's transport is given every other host's address at each start. The scenarios that
    /// predate joins run this way. Their nodes run the server's duties too (the leader
    /// records its address and promotes learners that caught up, before the schedule's own
    /// `Promote` if it comes later).
    #[default]
    Founders,
    /// As servers form a cluster: host 0 founds a cluster of one (the server's own founding
    /// code); the other founding hosts start blank, in the cluster's id as a server learns it
    /// from the answer to its join, and wait until the schedule's [`super::faults::Fault::Join`]
    /// has the leader add them with the server's `add_learner`. A node's transport learns
    /// addresses only as a server's does: from the snapshot's address book and the member
    /// records in its log at start, then from the applied records (and from each caller's
    /// Hello). A full restart must therefore find its peers without any help from the harness.
    Joining,
}

/// A host where no RaftKV node ever runs, so that a join can name an address nobody answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unreachable {
    /// The machine is up but nothing listens on the peer port: every connect is refused.
    Refusing,
    /// The host's address names no machine of the simulation: every connect fails to resolve.
    Unresolvable,
}

/// One simulated host: its identity, its disk, and its running node if any.
pub struct Host {
    /// Position in [`Cluster::hosts`].
    pub index: usize,
    /// The turmoil host name (`n1`, `n2`, ...); also the node's configured name.
    pub name: String,
    /// The Raft id derived from the name, as the server derives it.
    pub id: NodeId,
    /// The Raft address its member record gives: its name and the peer port (for an
    /// [`Unreachable::Unresolvable`] host, a name no machine has).
    pub raft_addr: String,
    /// The disk, which outlives crashes.
    pub disk: Disk,
    /// The voters this node starts with on an empty disk (empty: it waits to be added).
    pub initial_voters: BTreeSet<NodeId>,
    /// Set when no RaftKV node ever runs on this host.
    pub unreachable: Option<Unreachable>,
    /// The running node, while the host is up.
    pub live: Mutex<Option<LiveNode>>,
    /// The node of another cluster that runs on this host instead of its own, while one does.
    pub impostor: Mutex<Option<Arc<Impostor>>>,
    /// How many times the software started (seeds each start's election jitter differently).
    pub starts: AtomicU64,
}

/// A node of another cluster that took a host's place: same name, so same node id and same
/// address, but its own fresh disk and its own cluster id, founding a cluster of one and
/// writing keys of its own. It has its own monitor slot ([`Cluster::impostor_slot`]), and the
/// harness and the clients never see it as the host's node.
pub struct Impostor {
    /// Its cluster, never the run's.
    pub cluster_id: ClusterId,
    /// Its own disk.
    pub disk: Disk,
    /// Its running node.
    pub live: Mutex<Option<LiveNode>>,
}

/// Handles on a running node.
#[derive(Clone)]
pub struct LiveNode {
    /// The Raft node.
    pub node: Node<Output>,
    /// Its state machine.
    pub machine: Arc<Mutex<Recording>>,
}

/// Every host of one run, and what they share.
pub struct Cluster {
    /// The hosts, initial voters first, then spares that may be added later.
    pub hosts: Vec<Host>,
    /// The safety monitor.
    pub monitor: Arc<Monitor>,
    /// How nodes are set up.
    pub settings: NodeSettings,
    /// The run's seed.
    pub seed: u64,
    /// The cluster's identity (from the seed), as founding would make it.
    pub cluster_id: ClusterId,
    /// How many times a peer refused a node because it belongs to another cluster (see
    /// [`count_refusal`]).
    pub wrong_cluster_refusals: Arc<AtomicU64>,
    /// What the snapshot faults did (the harness writes it, the scenarios' checks read it).
    pub snapshot_faults: Mutex<SnapshotFaults>,
}

/// What the snapshot faults of a run chose and did: which follower was cut off, the terms when
/// it was reconnected, the crashes still armed and those that fired.
#[derive(Clone, Debug, Default)]
pub struct SnapshotFaults {
    /// The follower [`super::faults::Fault::IsolateFollower`] cut off.
    pub cut_off: Option<usize>,
    /// Every node's highest term (the monitor's) when the cut-off follower was reconnected.
    pub terms_at_reconnect: Option<Vec<u64>>,
    /// [`super::faults::Fault::CrashMidInstall`] is armed.
    pub mid_install_armed: bool,
    /// [`super::faults::Fault::CrashLeaderAfterSnapshot`] is armed: each host's count of own
    /// snapshots written when it was armed.
    pub after_snapshot_armed: Option<Vec<u64>>,
    /// The crashes that hit a snapshot being received: the host, and the chunks of the open
    /// stream it had received.
    pub crashed_mid_install: Vec<(usize, u64)>,
    /// The leaders crashed right after writing a snapshot: the host, and the snapshots it had
    /// written.
    pub crashed_after_snapshot: Vec<(usize, u64)>,
}

const LIVE_LOCK: &str = "the live-node slot is never held across a panic";
const FAULTS_LOCK: &str = "the snapshot-fault record is never held across a panic";
pub(crate) const MACHINE_LOCK: &str = "the state machine lock is poisoned only if apply panicked";

impl Cluster {
    /// A cluster of `voters` founding nodes and `spares` empty nodes, then one host per entry
    /// of `unreachable`, where no node ever runs.
    pub fn new(
        voters: usize,
        spares: usize,
        unreachable: &[Unreachable],
        settings: NodeSettings,
        seed: u64,
    ) -> Cluster {
        let count = voters + spares + unreachable.len();
        let names: Vec<String> = (1..=count).map(|i| format!("n{i}")).collect();
        let ids: Vec<NodeId> = names
            .iter()
            .map(|n| node::driver::node_id_for_name(n))
            .collect();
        // Joining: host 0 founds alone and the other founding hosts join it.
        let founders: BTreeSet<NodeId> = match settings.formation {
            Formation::Founders => ids[..voters].iter().copied().collect(),
            Formation::Joining => ids[..voters.min(1)].iter().copied().collect(),
        };
        let hosts = names
            .into_iter()
            .zip(ids)
            .enumerate()
            .map(|(index, (name, id))| {
                let unreachable = index.checked_sub(voters + spares).map(|i| unreachable[i]);
                let raft_addr = match unreachable {
                    Some(Unreachable::Unresolvable) => {
                        peer_addr(&format!("{name}{UNRESOLVABLE_SUFFIX}"))
                    }
                    _ => peer_addr(&name),
                };
                Host {
                    index,
                    id,
                    raft_addr,
                    disk: Disk::new(seed.wrapping_mul(31).wrapping_add(index as u64)),
                    initial_voters: if founders.contains(&id) {
                        founders.clone()
                    } else {
                        BTreeSet::new()
                    },
                    unreachable,
                    live: Mutex::new(None),
                    impostor: Mutex::new(None),
                    starts: AtomicU64::new(0),
                    name,
                }
            })
            .collect::<Vec<_>>();
        // Slots 0..n are the hosts' own nodes, in the run's cluster; slot n + i is the
        // impostor that may run on host i, each in a cluster of its own.
        let clusters = (0..hosts.len()).map(|_| 0).chain(1..=hosts.len()).collect();
        Cluster {
            monitor: Arc::new(Monitor::with_clusters(clusters)),
            hosts,
            settings,
            seed,
            cluster_id: ClusterId::from_seed(seed),
            wrong_cluster_refusals: Arc::new(AtomicU64::new(0)),
            snapshot_faults: Mutex::new(SnapshotFaults::default()),
        }
    }

    /// How many hosts may run a node of the run's cluster: the first ones, before the
    /// [`Unreachable`] hosts. Clients pick their targets among these.
    pub fn reachable_hosts(&self) -> usize {
        self.hosts
            .iter()
            .take_while(|h| h.unreachable.is_none())
            .count()
    }

    /// The address record of host `index`, as its server would send it with a join.
    pub fn member_info(&self, index: usize) -> MemberInfo {
        let host = &self.hosts[index];
        MemberInfo {
            id: host.id,
            name: host.name.clone(),
            raft_addr: host.raft_addr.clone(),
            // The simulation has no HTTP; the record needs an address, and this one names the
            // right machine.
            http_addr: host.raft_addr.clone(),
            grpc_addr: None,
        }
    }

    /// How many voters the current leader's membership has, outside a joint change (zero
    /// without a leader, or during a joint change).
    pub fn formed_voters(&self) -> usize {
        self.leader()
            .and_then(|l| self.live(l))
            .map(|live| live.node.status().configuration)
            .filter(|c| !c.is_joint())
            .map_or(0, |c| c.voters.len())
    }

    /// The impostor running on host `index`, if one does.
    pub fn impostor(&self, index: usize) -> Option<Arc<Impostor>> {
        self.hosts[index].impostor.lock().expect(LIVE_LOCK).clone()
    }

    /// Puts a fresh impostor on host `index` (its software starts at the host's next start);
    /// returns it.
    pub fn set_impostor(&self, index: usize) -> Arc<Impostor> {
        let mut cluster_id = ClusterId::from_seed(self.seed ^ IMPOSTOR_SEED_SALT);
        if cluster_id == self.cluster_id {
            cluster_id = ClusterId(cluster_id.0.wrapping_add(1).max(1));
        }
        let disk_seed = (self.seed ^ IMPOSTOR_SEED_SALT)
            .wrapping_mul(31)
            .wrapping_add(index as u64);
        let impostor = Arc::new(Impostor {
            cluster_id,
            disk: Disk::new(disk_seed),
            live: Mutex::new(None),
        });
        *self.hosts[index].impostor.lock().expect(LIVE_LOCK) = Some(Arc::clone(&impostor));
        impostor
    }

    /// Takes the impostor off host `index` (its software must be stopped already).
    pub fn clear_impostor(&self, index: usize) -> Option<Arc<Impostor>> {
        self.hosts[index].impostor.lock().expect(LIVE_LOCK).take()
    }

    /// The monitor slot of the impostor that may run on host `index`.
    pub fn impostor_slot(&self, index: usize) -> usize {
        self.hosts.len() + index
    }

    /// The running node on host `index`, if it is up.
    pub fn live(&self, index: usize) -> Option<LiveNode> {
        self.hosts[index].live.lock().expect(LIVE_LOCK).clone()
    }

    /// Marks host `index` as down (the harness crashed it).
    pub fn set_down(&self, index: usize) {
        *self.hosts[index].live.lock().expect(LIVE_LOCK) = None;
    }

    /// The host with Raft id `id`.
    pub fn host_of(&self, id: NodeId) -> Option<usize> {
        self.hosts.iter().position(|h| h.id == id)
    }

    /// What the snapshot faults chose and did so far.
    pub fn snapshot_faults(&self) -> std::sync::MutexGuard<'_, SnapshotFaults> {
        self.snapshot_faults.lock().expect(FAULTS_LOCK)
    }

    /// The running node that leads the highest term, if any.
    pub fn leader(&self) -> Option<usize> {
        (0..self.hosts.len())
            .filter_map(|i| {
                let status = self.live(i)?.node.status();
                (status.role == Some(core::Role::Leader)).then_some((status.term, i))
            })
            .max()
            .map(|(_, i)| i)
    }
}

/// Entries each node keeps in its log behind a snapshot (the server keeps 5,000 by default):
/// a third of a typical [`NodeSettings::snapshot_every`], so that lagging followers get both
/// entries from the tail and whole snapshots.
pub const SNAPSHOT_CATCHUP_ENTRIES: u64 = 20;

/// The server's state machine, reporting every applied entry to the [`Monitor`].
pub struct Recording {
    /// The real state machine (key-value store and address book).
    pub inner: Machine,
    node: usize,
    monitor: Arc<Monitor>,
}

impl StateMachine for Recording {
    type Output = Output;
    type View = MachineView;
    type Restored = RestoredState;

    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Output {
        self.monitor.applied(self.node, index.0, fnv1a(command));
        self.inner.apply(index, command)
    }

    fn apply_empty(&mut self, index: LogIndex) {
        self.monitor.applied(self.node, index.0, EMPTY_ENTRY_HASH);
        self.inner.apply_empty(index);
    }

    fn view(&self, metadata: &SnapshotMetadata) -> MachineView {
        self.inner.view(metadata)
    }

    fn restorer(&self) -> Restorer<RestoredState> {
        self.inner.restorer()
    }

    fn install(&mut self, metadata: &SnapshotMetadata, restored: RestoredState) {
        self.inner.install(metadata, restored);
        self.monitor.restored(self.node, metadata.index.0);
    }
}

impl ReplicaMachine for Recording {
    fn machine(&self) -> &Machine {
        &self.inner
    }
}

/// The host software of host `index`: opens its disk, starts the node and serves its peers
/// until turmoil crashes it. On an [`Unreachable`] host nothing starts; while an [`Impostor`]
/// is set, the impostor starts instead of the host's own node.
pub async fn run(cluster: Arc<Cluster>, index: usize) -> turmoil::Result {
    let host = &cluster.hosts[index];
    if host.unreachable.is_some() {
        // The machine is up (turmoil knows it), but RaftKV never runs on it.
        return std::future::pending().await;
    }
    let start = host.starts.fetch_add(1, Ordering::Relaxed);
    match cluster.impostor(index) {
        None => {
            let boot = Boot {
                disk: &host.disk,
                cluster_id: cluster.cluster_id,
                slot: index,
                founders: host.initial_voters.clone(),
                formation: cluster.settings.formation,
                sink: &host.live,
                impostor: false,
            };
            boot.run(&cluster, index, start).await
        }
        Some(impostor) => {
            let boot = Boot {
                disk: &impostor.disk,
                cluster_id: impostor.cluster_id,
                slot: cluster.impostor_slot(index),
                founders: BTreeSet::from([host.id]),
                // An impostor is a server like any other: it founds alone, as servers do.
                formation: Formation::Joining,
                sink: &impostor.live,
                impostor: true,
            };
            boot.run(&cluster, index, start).await
        }
    }
}

/// What one start of a host's software runs as.
struct Boot<'a> {
    /// The disk it runs on.
    disk: &'a Disk,
    /// The cluster a blank disk is created in.
    cluster_id: ClusterId,
    /// Its monitor slot.
    slot: usize,
    /// The voters of the founding entry it writes on a blank disk (empty: it waits to be
    /// added).
    founders: BTreeSet<NodeId>,
    /// How it founds and where it learns addresses.
    formation: Formation,
    /// Where the harness finds the running node.
    sink: &'a Mutex<Option<LiveNode>>,
    /// Whether this is an impostor, which writes keys of its own.
    impostor: bool,
}

impl Boot<'_> {
    async fn run(self, cluster: &Cluster, index: usize, start: u64) -> turmoil::Result {
        let host = &cluster.hosts[index];
        let wal = wal::Wal::open(
            self.disk.fs.clone(),
            WAL_DIR,
            wal::WalConfig {
                segment_bytes: SEGMENT_BYTES,
            },
        )?;
        let files: Arc<dyn SnapshotFiles> = self.disk.snapshots.clone();
        // Every node starts from an empty membership, as the server does. A founder's first
        // log entry makes the founders the voters, so a node that joins later learns the
        // membership by replaying the log from index 1, exactly as a server that joins does. A
        // node that waits to be added is given the cluster's identity as a server learns it
        // from the answer to its join.
        let store_start = if WalLogStore::is_blank(&wal) {
            debug_assert!(
                self.formation == Formation::Founders
                    || self.founders.is_empty()
                    || self.founders == BTreeSet::from([host.id]),
                "a joining run founds its cluster with one node"
            );
            StoreStart::New {
                cluster: self.cluster_id,
                founders: self.founders.clone(),
            }
        } else {
            StoreStart::Existing
        };
        let settings = settings(&cluster.settings);
        let Opened {
            store,
            restored: Restored { machine, book, .. },
            addresses,
        } = launch::open(wal, Arc::clone(&files), &store_start, &settings)?;
        cluster
            .monitor
            .started(self.slot, store.snapshot_metadata().index.0);
        // Founders: every host's address, from the harness. Joining: only what a server knows
        // before it has applied anything.
        let addresses = match self.formation {
            Formation::Founders => cluster
                .hosts
                .iter()
                .map(|peer| (peer.id, peer_addr(&peer.name)))
                .collect(),
            Formation::Joining => addresses,
        };
        let machine = Arc::new(Mutex::new(Recording {
            inner: machine,
            node: self.slot,
            monitor: Arc::clone(&cluster.monitor),
        }));
        let mut node_config = settings.node_config(
            host.id,
            cluster.seed ^ host.id.0 ^ start.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        node_config.raft.broken_rule = cluster.settings.broken_rule;
        let refusals = Arc::clone(&cluster.wrong_cluster_refusals);
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PEER_PORT)).await?;
        let Replica { node, .. } = launch::launch(
            Launch {
                node_config,
                me: cluster.member_info(index),
                network: TurmoilNetwork,
                listener: TurmoilListener(listener),
                files,
                machine: Arc::clone(&machine),
                book,
                addresses,
                expected_peers: BTreeSet::new(),
                report_tap: Some(Box::new(move |report| count_refusal(report, &refusals))),
            },
            store,
        )
        .await?;
        if self.impostor {
            tokio::spawn(impostor_writes(node.clone()));
        }
        *self.sink.lock().expect(LIVE_LOCK) = Some(LiveNode { node, machine });
        // The host's software runs until turmoil crashes the host; its tasks do the work.
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// The replica settings of every simulated node: a server's, with the simulation's timing,
/// snapshot frequency and catch-up tail.
fn settings(node: &NodeSettings) -> ReplicaSettings {
    ReplicaSettings {
        timing: TIMING,
        snapshot_every: node.snapshot_every,
        // The server's default: the simulation's small states keep the entry floor in charge,
        // so snapshots stay frequent.
        snapshot_log_share: f64::from(node::SNAPSHOT_LOG_PERCENT_DEFAULT) / 100.0,
        events_per_ready_max: node::EVENTS_PER_READY_MAX_DEFAULT,
        batch_wait: Duration::ZERO,
        // A short tail behind each snapshot: followers that lag a little catch up from the
        // log, as with the server's default, and those that lag more still get snapshots,
        // which the simulation must keep exercising with its small states.
        catchup_entries: SNAPSHOT_CATCHUP_ENTRIES,
        // The simulated disk has no size; a full disk is tested on its own (`SimFs`).
        free_space_reserve: 0,
    }
}

/// Counts a refusal of another cluster's peer in `counter`, so that a run can tell that its
/// nodes were refused as it expects.
fn count_refusal(report: &TransportReport, counter: &AtomicU64) {
    if let TransportReport::Refused {
        refusal: Refusal::WrongCluster { .. },
        ..
    } = report
    {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// An impostor's own client: once its node leads its cluster of one, it writes
/// [`IMPOSTOR_WRITES_MAX`] keys under [`IMPOSTOR_KEY_PREFIX`], so that its state holds data
/// that must never reach the run's cluster, and the run's data must never reach it.
async fn impostor_writes(node: Node<Output>) {
    let mut written = 0;
    while written < IMPOSTOR_WRITES_MAX {
        tokio::time::sleep(IMPOSTOR_WRITE_INTERVAL).await;
        if node.status().role != Some(Role::Leader) {
            continue;
        }
        let key = format!("{IMPOSTOR_KEY_PREFIX}{written}");
        let command = kv::Command::put(Bytes::from(key), Bytes::from_static(b"impostor"));
        match node
            .propose(Proposal::Kv(Bytes::from(command.encode())).encode())
            .await
        {
            Ok(Output::Kv(Ok(_))) => written += 1,
            Err(NodeError::Stopped) => return,
            _ => {}
        }
    }
}

impl Impostor {
    /// Its running node, if it has started.
    pub fn live(&self) -> Option<LiveNode> {
        self.live.lock().expect(LIVE_LOCK).clone()
    }

    /// Marks it as stopped (the harness crashed it).
    pub fn set_down(&self) {
        *self.live.lock().expect(LIVE_LOCK) = None;
    }

    /// What must hold of an impostor's state while it runs on host `host`: it belongs to its
    /// own cluster, holds only its own keys (at least one: it did apply entries of its own),
    /// and its membership is itself alone. Returns what does not hold.
    pub fn check(&self, host: &Host) -> Vec<String> {
        let Some(live) = self.live() else {
            return vec![format!("the impostor on {} never started", host.name)];
        };
        let mut found = Vec::new();
        let ours = cluster_of(&live.machine);
        if ours != self.cluster_id {
            found.push(format!(
                "the impostor on {} holds the state of cluster {ours}, not its own {}",
                host.name, self.cluster_id
            ));
        }
        let (applied, kvs) = dump(&live.machine);
        let foreign: Vec<_> = kvs
            .iter()
            .filter(|kv| !kv.0.starts_with(IMPOSTOR_KEY_PREFIX.as_bytes()))
            .map(|kv| String::from_utf8_lossy(&kv.0).into_owned())
            .collect();
        if !foreign.is_empty() {
            found.push(format!(
                "the impostor on {} holds keys it never wrote: {foreign:?}",
                host.name
            ));
        }
        if kvs.is_empty() {
            found.push(format!(
                "the impostor on {} applied none of its own writes (applied index {applied}): \
                 the run did not test what it claims",
                host.name
            ));
        }
        let members = live.node.status().configuration.members();
        if members != BTreeSet::from([host.id]) {
            found.push(format!(
                "the impostor on {} has members {members:?}, not itself alone",
                host.name
            ));
        }
        found
    }
}

/// A state machine's applied index and key-value pairs.
pub type Dump = (u64, Vec<(Bytes, Bytes, u64, u64, u64)>);

/// The key-value pairs of a node's state machine, in key order: what must be equal on every
/// member once the cluster has settled.
pub fn dump(machine: &Mutex<Recording>) -> Dump {
    let machine = machine.lock().expect(MACHINE_LOCK);
    let kv = &machine.inner.kv;
    let range = kv.range_prefix(b"", usize::MAX);
    (
        kv.applied_index(),
        range
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    kv.key,
                    kv.value,
                    kv.create_revision,
                    kv.mod_revision,
                    kv.version,
                )
            })
            .collect(),
    )
}

/// The cluster a node's state machine belongs to.
pub fn cluster_of(machine: &Mutex<Recording>) -> ClusterId {
    machine.lock().expect(MACHINE_LOCK).inner.cluster_id()
}

/// Reads `key` from a node's state machine (after a read index confirmed it may).
pub fn read_key(machine: &Mutex<Recording>, key: &[u8]) -> Option<Bytes> {
    machine
        .lock()
        .expect(MACHINE_LOCK)
        .inner
        .kv
        .get(key)
        .map(|kv| kv.value)
}
