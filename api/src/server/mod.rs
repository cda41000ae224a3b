//! Starting a node from its configuration: the data directory, the WAL, the snapshot files,
//! the state machine, the Raft node, the peer transport, and the background duties (keeping
//! the address book current, promoting caught-up learners).
//!
//! How a node starts depends on its data directory ([`data_dir::inspect`]):
//! - **with data**, it restarts from it, whatever `bootstrap` says; with `join_addr` too, it
//!   first checks that the address serves its own cluster and refuses to start otherwise;
//! - **blank**, with `join_addr`, it asks that cluster to add it and takes the cluster's
//!   identity from the answer ([`join`]) before it writes anything;
//! - **blank**, with `bootstrap`, it founds a new cluster of one under a fresh [`ClusterId`];
//! - **blank** with neither, it refuses with one line saying what to pass.
//!
//! The listening sockets are bound before the data directory is touched, and a start that
//! fails after it began filling a blank directory removes what it created
//! ([`data_dir::CreatedGuard`]): a failed start never leaves a founded cluster behind.
//!
//! Peers' addresses come from the snapshot's address book and from the member records still in
//! the log, applied or not, so a restart never depends on how far the node had applied.

pub mod data_dir;
pub mod join;

use replica::boot::{Restored, StoreStart};
use replica::duties::add_learner;
use replica::launch::{self, Launch, Opened, Replica, ReplicaSettings};
use replica::timing::{TICKS_PER_HEARTBEAT_DEFAULT, Timing};
pub use replica::{machine, snapshots};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use proto::rest;
use raft::core::{LogIndex, NodeId};
use raft::node::{self, ClusterId, LogStore, Node, SnapshotFiles, WalLogStore};
use raft::transport::PeerTransport;
use tracing::{info, warn};

use crate::config::{Config, Secret};
use crate::service::MACHINE_LOCK;
use data_dir::{CreatedGuard, DataDirError, Found, SNAPSHOTS_DIR, WAL_DIR};
use join::{Admission, JoinRefused};
use machine::{Machine, MemberInfo, Output, Proposal};
use snapshots::KvSnapshotFiles;

/// Why a node could not start. Its `Display` is the one line printed before the node exits.
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
    /// The data directory holds a damaged or partial node.
    #[error("{0}")]
    DataDir(#[from] DataDirError),
    /// The WAL refused to open (locked by another process, or damaged).
    #[error("{0}")]
    Wal(#[from] wal::WalError),
    /// The durable Raft state is unusable (damaged, too short, of another format).
    #[error("{0}")]
    Store(#[from] node::StoreError),
    /// The snapshot directory cannot be opened.
    #[error("the snapshot directory cannot be opened: {0}")]
    SnapshotDir(#[from] kv::SnapshotError),
    /// The store, the latest snapshot or the log after it cannot be read back.
    #[error("{0}")]
    Open(#[from] launch::OpenError),
    /// The Raft node refused its settings.
    #[error("{0}")]
    Node(#[from] node::NodeError),
    /// A blank data directory, and nothing said whether to found or to join.
    #[error(
        "{node}: the data directory {dir} is empty and this node was told neither to found a cluster nor to join one: start it with --join-addr URL (the HTTP address of any member) to join a cluster, or with --bootstrap to found a new one"
    )]
    NotToldHowToStart {
        /// The node's name.
        node: String,
        /// Its data directory.
        dir: std::path::PathBuf,
    },
    /// The cluster asked to add this node refused.
    #[error("{0}")]
    JoinRefused(#[from] JoinRefused),
    /// The TLS files are unusable.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// `auth.enabled` without a usable first admin password.
    #[error("{0}")]
    AdminPassword(String),
    /// The metrics exporter could not be set up.
    #[error("{0}")]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The data directory belongs to another cluster than the one `join_addr` serves.
    #[error(
        "the data directory {dir} belongs to cluster {ours}, but --join-addr {join_addr} serves cluster {theirs}: a node keeps the cluster it was founded or added in. To join {theirs}, remove this node from {ours} and move the directory aside first"
    )]
    OtherCluster {
        /// The data directory.
        dir: std::path::PathBuf,
        /// The cluster in the data directory.
        ours: ClusterId,
        /// The cluster `join_addr` serves.
        theirs: ClusterId,
        /// The join address.
        join_addr: String,
    },
}

/// A running node and everything the HTTP layer needs to serve it.
pub struct Server {
    /// The configuration it runs with.
    pub config: Config,
    /// This node's id.
    pub id: NodeId,
    /// The cluster this node belongs to.
    pub cluster_id: ClusterId,
    /// The Raft node.
    pub node: Node<Output>,
    /// The state machine (read by stale and linearizable reads).
    pub machine: Arc<Mutex<Machine>>,
    /// The peer transport (for its address table).
    pub transport: Arc<PeerTransport<crate::tls::PeerNetwork>>,
    /// The address Raft peers connect to, as bound.
    pub raft_listen_addr: std::net::SocketAddr,
    /// What clients may hold of this node (connections, time, body memory).
    pub limits: crate::http::limits::Limits,
    /// The space quota (`storage.quota_bytes`) over this node's applied state.
    pub quota: Arc<crate::http::quota::Quota>,
    /// Who may do what (the access records, read without the machine's lock).
    pub auth: crate::auth::Auth,
    /// Request rates and failed logins, per client.
    pub rate: crate::ratelimit::RateLimits,
    /// The client APIs' TLS material, when `tls.enabled`.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// The TLS material in use by the client APIs or the peer transport, which `raftkv`
    /// reloads when its files change.
    pub tls_files: Option<Arc<crate::tls::Tls>>,
    /// The commit index the node found in its storage at start: until it has applied that
    /// far, its access records may be older than ones it already acknowledged, so it checks
    /// no credential before (`service::auth::admit`).
    pub replay_to: LogIndex,
    /// Set once the node applied up to [`Server::replay_to`].
    pub replayed: std::sync::atomic::AtomicBool,
    /// The first admin's password, when this node founds authentication (`auth.enabled`).
    admin_password: Option<Secret>,
    /// What requests record, and what `GET /metrics` serves.
    pub metrics: crate::metrics::Metrics,
    /// The WAL's counters (read by `GET /metrics`).
    pub wal_metrics: Arc<wal::WalMetrics>,
}

/// The first admin's password as configured: `auth.admin_password` (meant for
/// `RAFTKV_AUTH__ADMIN_PASSWORD`) or the contents of `auth.admin_password_file`, checked;
/// `None` when `auth.enabled` is off.
fn admin_password(config: &Config) -> Result<Option<Secret>, StartError> {
    let auth = &config.auth;
    if !auth.enabled {
        return Ok(None);
    }
    let password = match (&auth.admin_password, &auth.admin_password_file) {
        (Some(password), _) => password.0.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| {
                StartError::AdminPassword(format!(
                    "auth.admin_password_file {}: {e}",
                    path.display()
                ))
            })?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, None) => {
            return Err(StartError::AdminPassword(
                "auth.enabled needs the first admin's password in auth.admin_password_file or RAFTKV_AUTH__ADMIN_PASSWORD; RaftKV has no default password".into(),
            ));
        }
    };
    crate::auth::password::check_new(&password).map_err(|e| {
        StartError::AdminPassword(format!("the first admin's password: {}", e.message()))
    })?;
    Ok(Some(Secret(password)))
}

/// How the storage was come by: restarted, founded, or joined.
enum Origin {
    Restarted,
    Founded,
    Joined(Admission),
}

impl Server {
    /// A TLS acceptor offering `alpn`, when TLS is on.
    pub fn tls_acceptor(
        &self,
        alpn: &[&[u8]],
    ) -> Result<Option<tokio_rustls::TlsAcceptor>, crate::tls::TlsError> {
        self.tls
            .as_ref()
            .map(|tls| tls.server_config(alpn).map(tokio_rustls::TlsAcceptor::from))
            .transpose()
    }

    /// This node's own address record.
    pub fn me(&self) -> MemberInfo {
        member_of(&self.config)
    }

    /// The address book as this node has applied it.
    pub fn members(&self) -> BTreeMap<NodeId, MemberInfo> {
        self.machine.lock().expect(MACHINE_LOCK).members().clone()
    }

    /// The index of the committed membership change that removed this node, if it knows it
    /// was removed (from its own applied state, or because a peer refused it as removed).
    pub fn removed_at(&self) -> Option<LogIndex> {
        // Asked on every request: a member (the common case) is answered from the status in
        // place, without the state machine's lock.
        let (told, member) = self
            .node
            .with_status(|s| (s.removed, s.configuration.contains(self.id)));
        if member {
            return told;
        }
        told.or_else(|| {
            self.machine
                .lock()
                .expect(MACHINE_LOCK)
                .removed()
                .get(&self.id)
                .copied()
        })
    }

    /// Starts the node. Must run inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Arc<Server>, StartError> {
        // Bind first: a node that cannot listen must not have touched its data directory.
        let bind_addr = config.raft_bind_addr();
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

        let admin_password = admin_password(&config)?;
        let tls_files = crate::tls::Tls::load(&config.tls)?;
        let tls = tls_files.clone().filter(|_| config.tls.enabled);
        crate::http::install_client(tls.as_ref())?;
        let (peer_network, peer_listener_tls) = match (&tls_files, config.tls.enable_peer_tls) {
            (Some(files), true) => {
                let (server_side, client_side) = files.peer_configs()?;
                (
                    crate::tls::PeerNetwork::new(Some(client_side)),
                    Some(server_side),
                )
            }
            _ => (crate::tls::PeerNetwork::new(None), None),
        };
        let peer_port_open = peer_listener_tls.is_none();
        let id = node::driver::node_id_for_name(&config.raft.node_id);
        node::names::register(id, &config.raft.node_id);
        let data_dir = config.storage.data_dir.clone();
        let found = data_dir::inspect(&data_dir)?;
        let guard = (found == Found::Blank).then(|| CreatedGuard::before_creating(&data_dir));
        let origin = match found {
            Found::Member => Origin::Restarted,
            Found::Blank => {
                if let Some(join_addr) = &config.raft.join_addr {
                    let login = admin_password.as_ref().map(|p| rest::auth::LoginRequest {
                        username: config.auth.admin_user.clone(),
                        password: p.0.clone(),
                    });
                    Origin::Joined(
                        join::ask_to_join(join_addr, &member_of(&config), login.as_ref()).await?,
                    )
                } else if config.raft.bootstrap {
                    Origin::Founded
                } else {
                    return Err(StartError::NotToldHowToStart {
                        node: config.raft.node_id.clone(),
                        dir: data_dir,
                    });
                }
            }
        };
        std::fs::create_dir_all(&data_dir).map_err(|source| StartError::Io {
            what: format!("creating the data directory {}", data_dir.display()),
            source,
        })?;
        let wal = wal::Wal::open(
            wal::RealFs,
            data_dir.join(WAL_DIR),
            wal::WalConfig {
                segment_bytes: config.wal.segment_size,
            },
        )?;
        let start = match &origin {
            Origin::Restarted => StoreStart::Existing,
            Origin::Founded => StoreStart::New {
                cluster: ClusterId::random(),
                founders: [id].into(),
            },
            Origin::Joined(admission) => StoreStart::New {
                cluster: admission.cluster_id,
                founders: Default::default(),
            },
        };
        // The store needs the snapshot files and the files need the store's cluster id: on a
        // restart, read the id from the WAL's hard state first.
        let cluster = match &start {
            StoreStart::Existing => WalLogStore::<wal::RealFs>::cluster_id_in(&wal)?,
            StoreStart::New { cluster, .. } => *cluster,
        };
        let snapshot_files = Arc::new(KvSnapshotFiles::open(
            data_dir.join(SNAPSHOTS_DIR),
            cluster,
        )?);
        let settings = replica_settings(&config);
        let files: Arc<dyn SnapshotFiles> = snapshot_files;
        let Opened {
            store,
            restored:
                Restored {
                    machine,
                    book,
                    snapshot_bytes,
                },
            mut addresses,
        } = launch::open(wal, Arc::clone(&files), &start, &settings)?;
        if matches!(origin, Origin::Founded) {
            info!(node = %config.raft.node_id, cluster = %cluster, "founded a new cluster of one");
        }
        let cluster_id = store.cluster_id();
        if let (Origin::Restarted, Some(join_addr)) = (&origin, &config.raft.join_addr) {
            check_join_addr_cluster(&data_dir, cluster_id, join_addr).await?;
        }
        if let Some(bytes) = snapshot_bytes {
            info!(
                index = store.snapshot_metadata().index.0,
                bytes,
                keys = machine.kv.len(),
                "state machine restored from snapshot"
            );
        }
        // Until its log arrives a joiner's configuration is empty: the members the cluster
        // named in its answer are where its peers are, and the callers it serves (the leader
        // among them).
        let mut expected_peers = BTreeSet::new();
        if let Origin::Joined(admission) = &origin {
            for member in &admission.members {
                node::names::register(member.id, &member.name);
                addresses.insert(member.id, member.raft_addr.clone());
                expected_peers.insert(member.id);
            }
        }
        let quota = Arc::new(crate::http::quota::Quota::new(
            config.storage.quota_bytes,
            machine.data_bytes_gauge(),
        ));
        let wal_metrics = store.wal_metrics();
        let limits = crate::http::limits::Limits::new(
            &config.server,
            crate::http::limits::fd_limit_now(),
            Arc::clone(&wal_metrics),
        );
        let metrics = crate::metrics::Metrics::new(config.observability.metrics_enabled)?;
        let auth = crate::auth::Auth::new(&config.auth, machine.auth_watch());
        let replay_to = raft::core::Storage::initial_state(&store)
            .map(|state| state.hard_state.commit)
            .unwrap_or_default();
        let rate = crate::ratelimit::RateLimits::new(&config);
        let machine = Arc::new(Mutex::new(machine));
        let Replica { node, transport } = launch::launch(
            Launch {
                node_config: settings.node_config(id, id.0 ^ u64::from(std::process::id())),
                me: member_of(&config),
                network: peer_network,
                listener: crate::tls::PeerListener::new(listener, peer_listener_tls),
                files,
                machine: Arc::clone(&machine),
                book,
                addresses,
                expected_peers,
                report_tap: None,
            },
            store,
        )
        .await?;

        let server = Arc::new(Server {
            config,
            id,
            cluster_id,
            node,
            machine,
            transport,
            raft_listen_addr,
            limits,
            quota,
            auth,
            admin_password,
            rate,
            tls,
            tls_files,
            replay_to,
            replayed: std::sync::atomic::AtomicBool::new(false),
            metrics,
            wal_metrics,
        });
        server
            .metrics
            .started_at(server.replay_to.0, server.node.applied().0);
        tokio::spawn(crate::http::quota::watch(Arc::downgrade(&server.quota)));
        if server.admin_password.is_some() {
            tokio::spawn(found_auth(Arc::downgrade(&server)));
        }
        if let Some(guard) = guard {
            guard.disarm();
        }
        let how = match origin {
            Origin::Restarted => "restarted",
            Origin::Founded => "founded",
            Origin::Joined(_) => "joined",
        };
        info!(node = %server.config.raft.node_id, cluster = %cluster_id, raft = %server.raft_listen_addr, how = %how, "node started");
        if peer_port_open {
            warn!(raft = %server.raft_listen_addr, "the peer port is open: anyone who can reach it can send this node Raft messages and snapshots; set tls.enable_peer_tls (docs/security.md)");
        }
        Ok(server)
    }

    /// Proposes and waits for the answer.
    pub async fn propose(&self, proposal: Proposal) -> Result<Output, node::NodeError> {
        let pending = self.metrics.proposal_pending();
        let answer = self.node.propose(proposal.encode()).await;
        pending.answered(&answer);
        answer
    }

    /// Adds a member: records its addresses, then adds it as a learner (the leader promotes it
    /// once caught up). Only on the leader. The leader first makes sure its own address record
    /// is current (a founder records it only shortly after it leads): the join answer lists
    /// the members with records, and the joiner serves only those until its log arrives, so
    /// it must find the leader there.
    pub async fn add_learner(&self, member: MemberInfo) -> Result<(), node::NodeError> {
        let me = self.me();
        if self.members().get(&me.id) != Some(&me) {
            self.propose(Proposal::Member(me)).await?;
        }
        add_learner(&self.node, member).await
    }
}

/// This node's address record, from its configuration.
fn member_of(config: &Config) -> MemberInfo {
    MemberInfo {
        id: node::driver::node_id_for_name(&config.raft.node_id),
        name: config.raft.node_id.clone(),
        raft_addr: config.raft_advertised_addr(),
        http_addr: config.http_advertised_addr(),
        grpc_addr: Some(config.grpc_advertised_addr()),
    }
}

/// The replica's settings from the server's configuration.
fn replica_settings(config: &Config) -> ReplicaSettings {
    ReplicaSettings {
        timing: Timing {
            heartbeat_interval: config.raft.heartbeat_interval,
            election_timeout: config.raft.election_timeout,
            ticks_per_heartbeat: TICKS_PER_HEARTBEAT_DEFAULT,
        },
        snapshot_every: config.storage.snapshot_every,
        snapshot_log_share: f64::from(config.storage.snapshot_log_percent) / 100.0,
        events_per_ready_max: config.raft.batch_size,
        batch_wait: config.raft.batch_wait,
        catchup_entries: config.storage.snapshot_catchup_entries,
        free_space_reserve: config.storage.free_space_reserve,
    }
}

/// A restarting node that was also given `join_addr` checks that the address serves its own
/// cluster: pointing a member of one cluster at another is a mistake to stop at, not to run
/// with. When the address does not answer, the node restarts anyway (a restart must come back
/// even with that node down), and says so.
async fn check_join_addr_cluster(
    dir: &std::path::Path,
    ours: ClusterId,
    join_addr: &str,
) -> Result<(), StartError> {
    match join::cluster_of(join_addr).await {
        Some(theirs) if theirs != ours => Err(StartError::OtherCluster {
            dir: dir.to_path_buf(),
            ours,
            theirs,
            join_addr: join_addr.to_string(),
        }),
        Some(_) => {
            info!(cluster = %ours, %join_addr, "restarting as a member; join_addr serves the same cluster");
            Ok(())
        }
        None => {
            warn!(cluster = %ours, %join_addr, "restarting as a member; join_addr did not say which cluster it serves");
            Ok(())
        }
    }
}

/// How often a node founding authentication looks whether it leads and the first admin is in.
pub const AUTH_FOUNDING_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Founds authentication on a new cluster (`auth.enabled`): once this node leads and the
/// cluster has no user yet, it proposes the first admin with authentication on. Whichever
/// node's proposal commits first wins; the others are refused as `AlreadyBootstrapped`. Ends
/// once the cluster has users (or the server is gone).
async fn found_auth(server: std::sync::Weak<Server>) {
    use replica::auth::AuthCommand;
    loop {
        tokio::time::sleep(AUTH_FOUNDING_POLL).await;
        let Some(server) = server.upgrade() else {
            return;
        };
        let state = server.auth.state();
        if state.founded || !state.users.is_empty() {
            if !state.enabled {
                warn!(
                    "auth.enabled is set, but this cluster's authentication is off (an admin turned it off, or users were made before): the cluster's state rules; POST /auth/enable turns it on"
                );
            }
            return;
        }
        if server.node.status().role != Some(raft::core::Role::Leader) {
            continue;
        }
        let Some(password) = server.admin_password.clone() else {
            return;
        };
        let founded = async {
            let password_hash = server.auth.passwords.hash(password.0).await?;
            let command = AuthCommand::Bootstrap {
                user: server.config.auth.admin_user.clone(),
                password_hash,
                signing_key: crate::auth::new_signing_key()?,
            };
            crate::service::auth::propose_here(&server, command).await
        };
        match founded.await {
            Ok(()) => {
                info!(user = %server.config.auth.admin_user, "authentication founded: the first admin is in and authentication is on");
                return;
            }
            Err(e) if e.code() == proto::rest::ErrorCode::AuthConflict => return,
            Err(e) => warn!(error = %e.message(), "founding authentication failed; retrying"),
        }
    }
}
