//! Starting a node from its configuration: the data directory, the WAL, the snapshot files,
//! the state machine, the Raft node, the peer transport, and the background duties (keeping
//! the address book current, promoting caught-up learners).
//!
//! A node with an empty data directory either founds a cluster of one (`raft.bootstrap`) or
//! waits to be added by the cluster it asked to join (`raft.join_addr`). A node with data
//! restarts from it and ignores both.

pub mod machine;
pub mod snapshots;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::core::{
    self, ConfChange, ConfChangeKind, Entry, EntryPayload, HardState, LogIndex, NodeId, Role, Term,
};
use raft::node::{self, DurableState, Node, NodeConfig, SnapshotFiles, WalLogStore};
use raft::transport::{PeerTransport, TcpNetwork};
use tracing::{info, warn};

use crate::config::Config;
use machine::{Machine, MemberInfo, Output, Proposal};
use snapshots::KvSnapshotFiles;

/// How far behind the leader's log a learner may be to be promoted to voter.
pub const PROMOTE_LAG_ENTRIES_MAX: u64 = 100;
/// How often the leader looks for learners to promote and checks its own address record.
pub const DUTY_INTERVAL: Duration = Duration::from_millis(200);
/// Raft clock ticks per `raft.heartbeat_timeout`. A tick finer than the heartbeat draws the
/// random part of each follower's election timeout at a finer grain: at one tick per
/// heartbeat (5 possible draws with the defaults), two followers that learn of a dead leader
/// at the same moment draw the same timeout one time in five, campaign together and split the
/// vote, which costs a whole further election timeout.
pub const TICKS_PER_HEARTBEAT: u32 = 5;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory or a listening socket is unusable.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The WAL refused to open (locked by another process, or damaged).
    #[error("{0}")]
    Wal(#[from] wal::WalError),
    /// The durable Raft state or the snapshot is unreadable.
    #[error("{0}")]
    Store(String),
}

/// A running node and everything the HTTP layer needs to serve it.
pub struct Server {
    /// The configuration it runs with.
    pub config: Config,
    /// This node's id.
    pub id: NodeId,
    /// The Raft node.
    pub node: Node<Output>,
    /// The state machine (read by stale and linearizable reads).
    pub machine: Arc<Mutex<Machine>>,
    /// The peer transport (for its address table).
    pub transport: Arc<PeerTransport<TcpNetwork>>,
    /// The address Raft peers connect to, as bound.
    pub raft_listen_addr: std::net::SocketAddr,
}

const MACHINE_LOCK: &str = "the state machine lock is poisoned only if apply panicked";

impl Server {
    /// This node's own address record.
    pub fn me(&self) -> MemberInfo {
        MemberInfo {
            id: self.id,
            name: self.config.raft.node_id.clone(),
            raft_addr: self.config.raft.raft_addr.clone(),
            http_addr: self.config.server.http_addr.clone(),
        }
    }

    /// The address book as this node has applied it.
    pub fn members(&self) -> std::collections::BTreeMap<NodeId, MemberInfo> {
        self.machine.lock().expect(MACHINE_LOCK).members().clone()
    }

    /// Starts the node. Must run inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Arc<Server>, StartError> {
        let id = node::driver::node_id_for_name(&config.raft.node_id);
        let data_dir = config.storage.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| StartError::Io {
            what: format!("creating the data directory {}", data_dir.display()),
            source,
        })?;
        let wal = wal::Wal::open(
            wal::RealFs,
            data_dir.join("wal"),
            wal::WalConfig {
                segment_bytes: config.wal.segment_size,
            },
        )?;
        let snapshot_files: Arc<KvSnapshotFiles> =
            Arc::new(KvSnapshotFiles::open(data_dir.join("snapshots")).map_err(StartError::Store)?);
        let founding = config.raft.bootstrap && config.raft.join_addr.is_none();
        // Every node starts from an empty membership; a founder's first log entry adds it as
        // the only voter, so nodes that join later replay the same history from index 1.
        let initial = DurableState::default();
        let files: Arc<dyn SnapshotFiles> = snapshot_files.clone();
        let mut store = WalLogStore::open(wal, Arc::clone(&files), initial)
            .map_err(|e| StartError::Store(e.to_string()))?;
        // A node that has never been a member founds a cluster or asks to join one; a node with
        // data restarts from it.
        let fresh = store.is_fresh();
        if fresh && founding {
            let first = Entry {
                term: Term(1),
                index: LogIndex(1),
                payload: EntryPayload::ConfChange(ConfChange::single(ConfChangeKind::AddVoter, id)),
            };
            let hard_state = HardState {
                term: Term(1),
                vote: None,
                commit: LogIndex(1),
            };
            raft::node::LogStore::persist(&mut store, None, &[first], Some(&hard_state))
                .map_err(|e| StartError::Store(e.to_string()))?;
            info!(node = %config.raft.node_id, "founded a new cluster of one");
        }
        let (mut machine, members_rx) = Machine::new(kv::KvConfig::default());
        let snapshot_meta = raft::node::LogStore::snapshot_metadata(&store).clone();
        if snapshot_meta.index.0 > 0 {
            let snapshot = files.load(&snapshot_meta).map_err(StartError::Store)?;
            raft::node::StateMachine::restore(&mut machine, &snapshot)
                .map_err(StartError::Store)?;
            info!(
                index = snapshot_meta.index.0,
                "state machine restored from snapshot"
            );
        }
        let machine = Arc::new(Mutex::new(machine));

        let (transport, mut reports) =
            PeerTransport::new(id, config.raft.raft_addr.clone(), TcpNetwork);
        let tick = config.raft.heartbeat_timeout / TICKS_PER_HEARTBEAT;
        let election_ticks = (config.raft.election_timeout.as_nanos() / tick.as_nanos().max(1))
            // Config validation bounds this far lower; the cap keeps `2 * election_ticks`
            // (the top of the randomised timeout) within u32 whatever the input.
            .clamp(
                u128::from(3 * TICKS_PER_HEARTBEAT),
                u128::from(u32::MAX / 2),
            ) as u32;
        let mut raft_config = core::Config::new(id);
        raft_config.election_ticks = election_ticks;
        raft_config.heartbeat_ticks = TICKS_PER_HEARTBEAT;
        raft_config.snapshot_retry_ticks =
            core::config::SNAPSHOT_RETRY_TICKS_DEFAULT.saturating_mul(TICKS_PER_HEARTBEAT);
        raft_config.rng_seed = id.0 ^ std::process::id() as u64;
        let node = node::spawn(
            NodeConfig {
                raft: raft_config,
                tick,
                snapshot_every: config.storage.snapshot_every,
                events_per_ready_max: config.wal.batch_size,
                batch_wait: config.wal.batch_wait_time,
            },
            store,
            Arc::clone(&transport),
            files,
            Arc::clone(&machine),
        )
        .map_err(|e| StartError::Store(e.to_string()))?;

        // Peers are told `raft_addr`; the socket may be bound elsewhere (a proxy forwards).
        let bind_addr = config
            .raft
            .raft_listen_addr
            .clone()
            .unwrap_or_else(|| config.raft.raft_addr.clone());
        let listener = tokio::net::TcpListener::bind(&bind_addr)
            .await
            .map_err(|source| StartError::Io {
                what: format!("listening for peers on {bind_addr}"),
                source,
            })?;
        let raft_listen_addr = listener.local_addr().map_err(|source| StartError::Io {
            what: "reading the peer listener's address".into(),
            source,
        })?;
        tokio::spawn(raft::transport::serve_tcp(
            listener,
            node.clone(),
            Arc::clone(&transport),
        ));
        let reporter = node.clone();
        tokio::spawn(async move {
            while let Some(report) = reports.recv().await {
                reporter.report_snapshot(report.to, report.delivered).await;
            }
        });

        let server = Arc::new(Server {
            config,
            id,
            node,
            machine,
            transport,
            raft_listen_addr,
        });
        tokio::spawn(keep_peers_current(Arc::clone(&server), members_rx));
        tokio::spawn(leader_duties(Arc::clone(&server)));
        if let Some(join_addr) = server.config.raft.join_addr.clone()
            && fresh
        {
            tokio::spawn(join_cluster(Arc::clone(&server), join_addr));
        }
        info!(node = %server.config.raft.node_id, id = id.0, raft = %server.raft_listen_addr, founding, "node started");
        Ok(server)
    }

    /// Proposes and waits for the answer.
    pub async fn propose(&self, proposal: Proposal) -> Result<Output, node::NodeError> {
        self.node.propose(proposal.encode()).await
    }

    /// Adds a member: records its addresses, then adds it as a learner (the leader promotes it
    /// once caught up). Only on the leader.
    pub async fn add_learner(&self, member: MemberInfo) -> Result<(), node::NodeError> {
        self.propose(Proposal::Member(member.clone())).await?;
        let configuration = self.node.status().configuration;
        if configuration.voters.contains(&member.id) || configuration.learners.contains(&member.id)
        {
            return Ok(());
        }
        self.node
            .change_membership(ConfChange::single(ConfChangeKind::AddLearner, member.id))
            .await
            .map(|_| ())
    }
}

/// The first delay between join attempts; it doubles up to [`JOIN_RETRY_MAX`].
pub const JOIN_RETRY_MIN: Duration = Duration::from_millis(200);
/// The longest delay between join attempts.
pub const JOIN_RETRY_MAX: Duration = Duration::from_secs(5);

/// Asks the cluster at `join_addr` to add this node, until it says yes. The cluster adds it as
/// a learner and promotes it once caught up.
async fn join_cluster(server: Arc<Server>, join_addr: String) {
    let me = server.me();
    let url = format!("{}/cluster/join", join_addr.trim_end_matches('/'));
    let body = serde_json::json!({"node_id": me.name, "raft_addr": me.raft_addr, "http_addr": me.http_addr});
    let mut delay = JOIN_RETRY_MIN;
    loop {
        match crate::http::post_json(&url, &body).await {
            Ok((status, answer)) if status.is_success() => {
                info!(%url, answer = %answer, "joined the cluster");
                return;
            }
            Ok((status, answer)) => {
                warn!(%url, status = status.as_u16(), answer = %answer, "join refused; retrying")
            }
            Err(e) => warn!(%url, error = %e, "join failed; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(JOIN_RETRY_MAX);
    }
}

/// Keeps the transport's peer table equal to the applied address book.
async fn keep_peers_current(
    server: Arc<Server>,
    mut members: tokio::sync::watch::Receiver<std::collections::BTreeMap<NodeId, MemberInfo>>,
) {
    loop {
        let book = members.borrow_and_update().clone();
        for (id, member) in &book {
            server.transport.set_peer(*id, member.raft_addr.clone());
        }
        for (id, _) in server.transport.peers() {
            if !book.contains_key(&id) {
                server.transport.remove_peer(id);
            }
        }
        if members.changed().await.is_err() {
            return;
        }
    }
}

/// What only the leader does, periodically: make sure its own address record is current,
/// and promote learners that have caught up.
async fn leader_duties(server: Arc<Server>) {
    let mut interval = tokio::time::interval(DUTY_INTERVAL);
    loop {
        interval.tick().await;
        let status = server.node.status();
        if status.failed.is_some() {
            return;
        }
        if status.role != Some(Role::Leader) {
            continue;
        }
        let me = server.me();
        if server.members().get(&server.id) != Some(&me) {
            if let Err(e) = server.propose(Proposal::Member(me)).await {
                warn!(error = %e, "could not record this node's addresses");
            }
            continue;
        }
        let configuration = &status.configuration;
        if !configuration.voters_outgoing.is_empty() {
            continue; // A change is in flight.
        }
        for learner in &configuration.learners {
            let caught_up = status.match_index.iter().any(|(id, m)| {
                id == learner && m.0 + PROMOTE_LAG_ENTRIES_MAX >= status.last_index.0
            });
            if caught_up {
                info!(learner = learner.0, "learner caught up: promoting to voter");
                match server
                    .node
                    .change_membership(ConfChange::single(ConfChangeKind::AddVoter, *learner))
                    .await
                {
                    Ok(_) => {}
                    Err(e) => {
                        warn!(learner = learner.0, error = %e, "promotion failed; will retry")
                    }
                }
                break; // One change at a time.
            }
        }
    }
}
