//! A simulated node: the real driver, log store, transport and state machine, started by
//! turmoil as host software (and started again after a crash), with its WAL on its own
//! [`Disk`].
//!
//! The harness and the clients reach a running node through [`Cluster::live`]; the entry is
//! cleared when the harness crashes the host, so nobody talks to a dead node's handle.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::server::machine::{Machine, Output};
use bytes::Bytes;
use raft::core::{
    self, BrokenRule, ConfChange, ConfChangeKind, ConfChangeSingle, Entry, EntryPayload, HardState,
    LogIndex, NodeId, Snapshot, Term,
};
use raft::node::{
    self, ClusterId, DurableState, LogStore, Node, NodeConfig, SnapshotFiles, StateMachine,
    WalLogStore,
};
use raft::transport::PeerTransport;

use super::disk::{Disk, WAL_DIR};
use super::monitor::{EMPTY_ENTRY_HASH, Monitor, fnv1a};
use super::net::{PEER_PORT, TurmoilNetwork, peer_addr, serve_peers};

/// The length of one Raft tick in simulated time.
pub const RAFT_TICK: Duration = Duration::from_millis(10);
/// Election timeout in ticks (randomised up to twice this): 100–200 ms.
pub const ELECTION_TICKS: u32 = 10;
/// WAL segment size: small, so that rotation and whole-segment compaction happen in every run.
pub const SEGMENT_BYTES: u64 = 16 * 1024;

/// How the nodes of one run are set up.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// Take a snapshot (and compact the log) every this many applied entries.
    pub snapshot_every: u64,
    /// A safety rule every node breaks on purpose (bug-finding tests only).
    pub broken_rule: Option<BrokenRule>,
}

/// One simulated host: its identity, its disk, and its running node if any.
pub struct Host {
    /// Position in [`Cluster::hosts`].
    pub index: usize,
    /// The turmoil host name (`n1`, `n2`, ...); also the node's configured name.
    pub name: String,
    /// The Raft id derived from the name, as the server derives it.
    pub id: NodeId,
    /// The disk, which outlives crashes.
    pub disk: Disk,
    /// The voters this node starts with on an empty disk (empty: it waits to be added).
    pub initial_voters: BTreeSet<NodeId>,
    /// The running node, while the host is up.
    pub live: Mutex<Option<LiveNode>>,
    /// How many times the software started (seeds each start's election jitter differently).
    pub starts: AtomicU64,
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
}

const LIVE_LOCK: &str = "the live-node slot is never held across a panic";
const MACHINE_LOCK: &str = "the state machine lock is poisoned only if apply panicked";

impl Cluster {
    /// A cluster of `voters` founding nodes and `spares` empty nodes.
    pub fn new(voters: usize, spares: usize, settings: NodeSettings, seed: u64) -> Cluster {
        let names: Vec<String> = (1..=voters + spares).map(|i| format!("n{i}")).collect();
        let ids: Vec<NodeId> = names
            .iter()
            .map(|n| node::driver::node_id_for_name(n))
            .collect();
        let founders: BTreeSet<NodeId> = ids[..voters].iter().copied().collect();
        let hosts = names
            .into_iter()
            .zip(ids)
            .enumerate()
            .map(|(index, (name, id))| Host {
                index,
                name,
                id,
                disk: Disk::new(seed.wrapping_mul(31).wrapping_add(index as u64)),
                initial_voters: if index < voters {
                    founders.clone()
                } else {
                    BTreeSet::new()
                },
                live: Mutex::new(None),
                starts: AtomicU64::new(0),
            })
            .collect::<Vec<_>>();
        Cluster {
            monitor: Arc::new(Monitor::new(hosts.len())),
            hosts,
            settings,
            seed,
            cluster_id: ClusterId::from_seed(seed),
        }
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

/// The server's state machine, reporting every applied entry to the [`Monitor`].
pub struct Recording {
    /// The real state machine (key-value store and address book).
    pub inner: Machine,
    node: usize,
    monitor: Arc<Monitor>,
}

impl StateMachine for Recording {
    type Output = Output;

    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Output {
        self.monitor.applied(self.node, index.0, fnv1a(command));
        self.inner.apply(index, command)
    }

    fn apply_empty(&mut self, index: LogIndex) {
        self.monitor.applied(self.node, index.0, EMPTY_ENTRY_HASH);
        self.inner.apply_empty(index);
    }

    fn snapshot_data(&self) -> Bytes {
        self.inner.snapshot_data()
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        self.inner.restore(snapshot)?;
        self.monitor.restored(self.node, snapshot.metadata.index.0);
        Ok(())
    }
}

/// The host software of host `index`: opens its disk, starts the node and serves its peers
/// until turmoil crashes it.
pub async fn run(cluster: Arc<Cluster>, index: usize) -> turmoil::Result {
    let host = &cluster.hosts[index];
    let start = host.starts.fetch_add(1, Ordering::Relaxed);
    let wal = wal::Wal::open(
        host.disk.fs.clone(),
        WAL_DIR,
        wal::WalConfig {
            segment_bytes: SEGMENT_BYTES,
        },
    )?;
    let files: Arc<dyn SnapshotFiles> = host.disk.snapshots.clone();
    // Every node starts from an empty membership, as the server does. A founder's first log
    // entry makes the founders the voters, so a spare that joins later learns the membership
    // by replaying the log from index 1, exactly as a server that joins does. A spare is given
    // the cluster's identity as a server learns it from the answer to its join.
    let store = if WalLogStore::is_blank(&wal) {
        let initial = DurableState::new(cluster.cluster_id);
        let mut store = WalLogStore::create(wal, Arc::clone(&files), initial)?;
        if !host.initial_voters.is_empty() {
            let founding = ConfChange {
                changes: host
                    .initial_voters
                    .iter()
                    .map(|&node| ConfChangeSingle {
                        kind: ConfChangeKind::AddVoter,
                        node,
                    })
                    .collect(),
            };
            let first = Entry {
                term: Term(1),
                index: LogIndex(1),
                payload: EntryPayload::ConfChange(founding),
            };
            let hard_state = HardState {
                term: Term(1),
                vote: None,
                commit: LogIndex(1),
            };
            store.persist(None, &[first], Some(&hard_state))?;
        }
        store
    } else {
        WalLogStore::open(wal, Arc::clone(&files))?
    };
    let (mut machine, book) = Machine::new(kv::KvConfig::default(), store.cluster_id());
    let snapshot = store.snapshot_metadata().clone();
    if snapshot.index > LogIndex::ZERO {
        machine.restore(&files.load(&snapshot)?)?;
    }
    cluster.monitor.started(index, snapshot.index.0);
    let machine = Arc::new(Mutex::new(Recording {
        inner: machine,
        node: index,
        monitor: Arc::clone(&cluster.monitor),
    }));

    let (transport, reports) = PeerTransport::new(
        host.id,
        peer_addr(&host.name),
        store.cluster_id(),
        TurmoilNetwork,
    );
    for peer in &cluster.hosts {
        transport.set_peer(peer.id, peer_addr(&peer.name));
    }
    let mut raft = core::Config::new(host.id);
    raft.election_ticks = ELECTION_TICKS;
    raft.heartbeat_ticks = 1;
    raft.rng_seed = cluster.seed ^ host.id.0 ^ start.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    raft.broken_rule = cluster.settings.broken_rule;
    let node = node::spawn(
        NodeConfig {
            raft,
            tick: RAFT_TICK,
            snapshot_every: cluster.settings.snapshot_every,
            events_per_ready_max: node::EVENTS_PER_READY_MAX_DEFAULT,
            batch_wait: Duration::ZERO,
        },
        store,
        Arc::clone(&transport),
        files,
        Arc::clone(&machine),
    )?;
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PEER_PORT)).await?;
    tokio::spawn(api::server::handle_reports(node.clone(), reports));
    tokio::spawn(api::server::follow_records(
        Arc::clone(&transport),
        node.clone(),
        book,
    ));
    *host.live.lock().expect(LIVE_LOCK) = Some(LiveNode {
        node: node.clone(),
        machine,
    });
    serve_peers(listener, node, transport).await;
    Ok(())
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
