//! Starting a replica, in two calls the server and the simulation both make:
//! [`open`] opens (or creates) the replica's store on its WAL and restores the state machine
//! from the kept snapshot; [`launch`] spawns the Raft node, its peer transport, the accept loop
//! for its peers and the duties beside them. What differs between the server and the
//! simulation is only what they pass in: the file system under the WAL, the network and the
//! listener, the timing, and a wrapper around the state machine (the simulation's reports
//! every applied entry to its safety monitor).
//!
//! Invariants: the node is spawned with the state machine exactly as the store's snapshot left
//! it; the transport knows every peer address the replica could know before anything is
//! applied; the duties run for as long as the node does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::core::{self, NodeId, StorageError};
use raft::node::{
    self, Node, NodeConfig, NodeError, SnapshotFiles, SnapshotFilesError, StateMachine, StoreError,
    WalLogStore,
};
use raft::transport::{Listener, Network, PeerTransport, TransportReport};
use tokio::sync::watch;

use crate::boot::{
    Restored, StoreStart, address_record_entries, initial_addresses, open_store, restored_machine,
};
use crate::duties::{follow_records, handle_reports, leader_duties};
use crate::machine::{Book, Machine, MemberInfo, Output};
use crate::timing::Timing;

const MACHINE_LOCK: &str = "the state machine lock is poisoned only if apply panicked";

/// How a replica runs: its clock, when it snapshots, how it batches, what it keeps.
#[derive(Clone, Debug)]
pub struct ReplicaSettings {
    /// Heartbeat interval, election timeout, and ticks per heartbeat.
    pub timing: Timing,
    /// Take a snapshot (and compact the log) after at least this many applied entries (0: only
    /// on demand).
    pub snapshot_every: u64,
    /// An automatic snapshot also waits for the entries since the last one to add up to this
    /// share of its size (see [`NodeConfig::snapshot_log_share`]).
    pub snapshot_log_share: f64,
    /// The most events the node's loop takes into one `Ready` (one WAL fsync).
    pub events_per_ready_max: usize,
    /// How long the loop gathers events once the first has arrived.
    pub batch_wait: Duration,
    /// Entries kept in the log behind each snapshot, for followers that lag a little.
    pub catchup_entries: u64,
    /// Free disk space below which the leader refuses new writes.
    pub free_space_reserve: u64,
}

impl ReplicaSettings {
    /// The node's settings for replica `id`, its election jitter drawn from `rng_seed`.
    pub fn node_config(&self, id: NodeId, rng_seed: u64) -> NodeConfig {
        let mut raft = core::Config::new(id);
        self.timing.apply_to(&mut raft);
        raft.rng_seed = rng_seed;
        NodeConfig {
            raft,
            tick: self.timing.tick(),
            snapshot_every: self.snapshot_every,
            snapshot_log_share: self.snapshot_log_share,
            events_per_ready_max: self.events_per_ready_max,
            batch_wait: self.batch_wait,
        }
    }
}

/// Why a replica's storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The durable Raft state is unusable (damaged, too short, of another format).
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The latest snapshot cannot be loaded or restored (the disk, or damaged data).
    #[error("the latest snapshot cannot be restored: {0}")]
    Snapshot(#[from] SnapshotFilesError),
    /// The log after the snapshot cannot be read back.
    #[error("reading the log: {0}")]
    LogUnreadable(#[from] StorageError),
}

/// A replica's storage, opened, and its state machine as the snapshot left it.
pub struct Opened<F: wal::FileSystem> {
    /// The log store.
    pub store: WalLogStore<F>,
    /// The restored state machine, its address book, and the snapshot's size.
    pub restored: Restored,
    /// Where the peers are, before anything is applied: the snapshot's address book, then
    /// the member records in the log, newest last.
    pub addresses: BTreeMap<NodeId, String>,
}

/// Opens the replica's store on `wal` (or creates it, as `start` says), sets what it keeps,
/// and restores the state machine from the snapshot it records.
pub fn open<F: wal::FileSystem>(
    wal: wal::Wal<F>,
    files: Arc<dyn SnapshotFiles>,
    start: &StoreStart,
    settings: &ReplicaSettings,
) -> Result<Opened<F>, OpenError> {
    let mut store = open_store(wal, Arc::clone(&files), start)?;
    store.set_free_space_reserve(settings.free_space_reserve);
    store.set_catchup_entries(settings.catchup_entries);
    let restored = restored_machine(&store, files.as_ref())?;
    let addresses = initial_addresses(&restored.machine, &address_record_entries(&store)?);
    Ok(Opened {
        store,
        restored,
        addresses,
    })
}

/// A state machine a replica runs: RaftKV's [`Machine`], or a wrapper around it.
pub trait ReplicaMachine: StateMachine<Output = Output> + Send + 'static {
    /// The machine itself (for its address book).
    fn machine(&self) -> &Machine;
}

impl ReplicaMachine for Machine {
    fn machine(&self) -> &Machine {
        self
    }
}

/// Called with each report of the transport before the replica handles it.
pub type ReportTap = Box<dyn FnMut(&TransportReport) + Send>;

/// Everything [`launch`] needs besides the store.
pub struct Launch<N, L, M> {
    /// The node's settings (from [`ReplicaSettings::node_config`]).
    pub node_config: NodeConfig,
    /// This replica's own address record.
    pub me: MemberInfo,
    /// How the transport connects to peers.
    pub network: N,
    /// Where peers' connections come in (bound already).
    pub listener: L,
    /// The snapshot files.
    pub files: Arc<dyn SnapshotFiles>,
    /// The state machine, as the store's snapshot left it.
    pub machine: Arc<Mutex<M>>,
    /// The machine's applied address book, as it changes.
    pub book: watch::Receiver<Book>,
    /// The peers' addresses known at start.
    pub addresses: BTreeMap<NodeId, String>,
    /// Peers to serve although no configuration names them yet (a joiner's, until its log
    /// arrives: the members the cluster named in its answer).
    pub expected_peers: BTreeSet<NodeId>,
    /// Sees every transport report first (the simulation counts refusals with it).
    pub report_tap: Option<ReportTap>,
}

/// A running replica.
pub struct Replica<N: Network> {
    /// The Raft node.
    pub node: Node<Output>,
    /// Its peer transport.
    pub transport: Arc<PeerTransport<N>>,
}

/// Spawns the replica's node over `store`, its transport, the accept loop on the listener, and
/// the duties: handing the transport's reports to the node, keeping the peer table in step with
/// the applied address book, and (as leader) recording its own address and promoting learners
/// that caught up. A replica that is its cluster's only voter campaigns at once: it wins any
/// election, and nobody else's term can be disturbed.
pub async fn launch<F, N, L, M>(
    launch: Launch<N, L, M>,
    store: WalLogStore<F>,
) -> Result<Replica<N>, NodeError>
where
    F: wal::FileSystem,
    N: Network,
    L: Listener,
    M: ReplicaMachine,
{
    let Launch {
        node_config,
        me,
        network,
        listener,
        files,
        machine,
        book,
        addresses,
        expected_peers,
        report_tap,
    } = launch;
    let (transport, reports) = PeerTransport::new(
        me.id,
        me.raft_addr.clone(),
        store.cluster_id(),
        network,
        Arc::clone(&files),
    );
    for (peer, addr) in addresses {
        transport.set_peer(peer, addr);
    }
    if !expected_peers.is_empty() {
        transport.expect_peers(expected_peers);
    }
    let node = node::spawn(
        node_config,
        store,
        Arc::clone(&transport),
        files,
        Arc::clone(&machine),
    )?;
    let lone_voter = node.with_status(|s| {
        s.configuration.voters == BTreeSet::from([me.id])
            && s.configuration.voters_outgoing.is_empty()
    });
    if lone_voter {
        node.campaign().await;
    }
    tokio::spawn(raft::transport::serve_peers(
        listener,
        node.clone(),
        Arc::clone(&transport),
    ));
    let reports = match report_tap {
        None => reports,
        Some(tap) => tapped(reports, tap),
    };
    tokio::spawn(handle_reports(node.clone(), reports));
    tokio::spawn(follow_records(Arc::clone(&transport), node.clone(), book));
    tokio::spawn(leader_duties(node.clone(), me, move || {
        machine
            .lock()
            .expect(MACHINE_LOCK)
            .machine()
            .members()
            .clone()
    }));
    Ok(Replica { node, transport })
}

/// Passes every report through `tap` on its way to the replica.
fn tapped(
    mut reports: tokio::sync::mpsc::UnboundedReceiver<TransportReport>,
    mut tap: ReportTap,
) -> tokio::sync::mpsc::UnboundedReceiver<TransportReport> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(report) = reports.recv().await {
            tap(&report);
            if tx.send(report).is_err() {
                return;
            }
        }
    });
    rx
}
