//! The node's configuration: embedded defaults, then a file (`--config`, YAML or TOML), then
//! environment variables `RAFTKV_<SECTION>__<KEY>`, then command-line flags, each layer
//! overriding the one before.
//!
//! The layers are merged as untyped trees first and converted to [`Config`] once, so that every
//! error can name the key it is about (`raft.election_timeout: unknown duration unit ...`) and
//! the layer it came from. Unknown keys are errors, not silently ignored: a typo in a config file
//! must not fall back to a default without a word. [`Config::validate`] then checks what types
//! cannot (ranges and relations between keys).
//!
//! A few settings are also accepted under a second name ([`ALIASES`]): the seed's
//! (hashicorp/raft style) `raft.heartbeat_timeout` for `raft.election_timeout`, and the earlier
//! `wal.batch_size` and `wal.batch_wait_time` for `raft.batch_size` and `raft.batch_wait`.
//! Both names of one setting given with different values are refused.
//!
//! The seed's settings that have no key here ([`seed::SEED_KEYS`]) are accepted where their
//! meaning holds anyway and refused, with the reason, where it cannot (`storage.sync_on_write:
//! false`).

mod layers;
pub mod seed;
pub mod units;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) use layers::edit_distance;
pub use layers::{ALIASES, Alias, ConfigArgs, load};

/// Where a bad setting came from, for the one-line error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The configuration file, by path.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag.
    Flag(String),
    /// The merged result (a relation between keys, or a range).
    Merged,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "in {}", path.display()),
            Source::Env(name) => write!(f, "from ${name}"),
            Source::Flag(flag) => write!(f, "from {flag}"),
            Source::Merged => write!(f, "in the configuration"),
        }
    }
}

/// A configuration that cannot be used. Its `Display` is the one line printed at start-up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A key has a value of the wrong shape or out of range.
    #[error("config error: {key} {source_}: {problem}")]
    BadValue {
        /// The dotted key, e.g. `raft.election_timeout`.
        key: String,
        /// Where the value came from.
        source_: Source,
        /// What is wrong with it.
        problem: String,
    },
    /// A key that does not exist (usually a typo).
    #[error("config error: unknown key {key} {source_}{hint}")]
    UnknownKey {
        /// The dotted key as written.
        key: String,
        /// Where it came from.
        source_: Source,
        /// A suggestion of the closest known key, if any.
        hint: String,
    },
    /// A setting given under two of its names (see [`ALIASES`]) with different values:
    /// which one was meant cannot be known. Boxed: the other variants are far smaller.
    #[error("config error: {0}")]
    Conflict(Box<NameConflict>),
    /// A seed key whose value cannot keep its meaning here (see [`seed::SEED_KEYS`]).
    #[error("config error: {key}={value} {source_} is refused: {why}")]
    Refused {
        /// The dotted key as written.
        key: String,
        /// The value as written.
        value: String,
        /// Where it came from.
        source_: Source,
        /// Why the value cannot be honoured, and what the node does instead.
        why: &'static str,
    },
    /// The configuration file cannot be read or parsed.
    #[error("config error: cannot read {path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        problem: String,
    },
}

/// The two names of one setting, given different values (see [`ConfigError::Conflict`]).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{alias} {alias_source} ({alias_value}) and {key} {key_source} ({key_value}) disagree: {meaning}; give only one of them"
)]
pub struct NameConflict {
    /// The second name, as written (`raft.heartbeat_timeout`).
    pub alias: &'static str,
    /// Where it was given.
    pub alias_source: Source,
    /// Its value, as given.
    pub alias_value: String,
    /// The key (`raft.election_timeout`).
    pub key: &'static str,
    /// Where it was given.
    pub key_source: Source,
    /// Its value, as given.
    pub key_value: String,
    /// How the two names relate.
    pub meaning: &'static str,
}

/// Raft settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSection {
    /// The seed's switch between a replicated node (`true`, the default) and a single node
    /// (`false`). A single node founds a cluster of one when its data directory is blank,
    /// whatever `bootstrap` says, and may not be given `join_addr`. It still writes every
    /// change through the Raft log (a cluster of one commits on its own fsync), so its data
    /// directory can later be the first member of a larger cluster.
    pub enabled: bool,
    /// This node's name in the cluster; unique and stable across restarts.
    pub node_id: String,
    /// `host:port` peers connect to for Raft traffic: the address this node advertises in the
    /// cluster's address book (and listens on, unless `raft_listen_addr` is set). A host of
    /// `0.0.0.0`, `::` or none (`:7000`) listens on every interface and is advertised as
    /// `server.advertise_host` (see [`Config::raft_advertised_addr`]).
    pub raft_addr: String,
    /// `host:port` to bind the Raft listener to, when it differs from the advertised
    /// `raft_addr` (behind NAT or a port-forwarding proxy; the Jepsen-style runner puts a
    /// fault-injecting proxy there). Unset: listen on `raft_addr`.
    pub raft_listen_addr: Option<String>,
    /// Found a new cluster of one when the data directory is empty. Founding is explicit: a
    /// node given `join_addr` never founds, and a node given its own name (`node_id` set in
    /// any layer) founds only when this is set to true; left unset, only the quick-start node
    /// (nothing configured) founds. Ignored when the data directory holds a node's data.
    pub bootstrap: bool,
    /// HTTP URL of any member of an existing cluster to join (as a learner, promoted once
    /// caught up). Unset: bootstrap or restart from the data directory.
    pub join_addr: Option<String>,
    /// Base election timeout: a follower that hears nothing from a leader for a random time
    /// in `[t, 2t)` campaigns. Also accepted as `raft.heartbeat_timeout`, the seed's
    /// (hashicorp/raft) name for it.
    #[serde(with = "units::duration")]
    pub election_timeout: Duration,
    /// Interval between a leader's heartbeats; well below the election timeout.
    #[serde(with = "units::duration")]
    pub heartbeat_interval: Duration,
    /// At most this many requests and peer messages go into one Raft `Ready`, and so share
    /// one WAL fsync (the node driver's batching). Also accepted as `wal.batch_size`.
    pub batch_size: usize,
    /// How long the node driver keeps gathering a batch once its first request has arrived
    /// (0: batches fill by themselves while the previous fsync runs). Also accepted as
    /// `wal.batch_wait_time`.
    #[serde(with = "units::duration")]
    pub batch_wait: Duration,
}

/// Client-facing server settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// `host:port` of the HTTP API: bound, and recorded in the cluster's address book so that
    /// followers can forward to this node. A host of `0.0.0.0`, `::` or none (the seed's
    /// `:8080`) binds every interface and is recorded as `advertise_host:port`.
    pub http_addr: String,
    /// The host name peers and clients reach this node by, for every address above whose
    /// host is `0.0.0.0`, `::` or empty (a container's or pod's addresses). Unset: the
    /// machine's host name, which is what a Compose service's `hostname:` sets; in
    /// Kubernetes, the pod's DNS name under its headless Service.
    pub advertise_host: Option<String>,
    /// `host:port` of the gRPC API (`raftkv.v1`, with gRPC health checking and reflection);
    /// unset, the host of `http_addr` and port [`GRPC_PORT_DEFAULT`] (see
    /// [`Config::grpc_addr`]). Recorded with the node's other addresses.
    pub grpc_addr: Option<String>,
    /// The most client connections served at once; one more is answered `503
    /// too_many_connections` and closed. The node lowers it at start when the process's file
    /// descriptor limit cannot hold this many beside the reserve for the WAL, snapshots and
    /// peers (`http::limits`), and logs both figures.
    pub max_connections: usize,
    /// How long a client may take to send a request's header, from its first byte; a slower
    /// one is disconnected.
    #[serde(with = "units::duration")]
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body once its header is in; a slower
    /// one is answered `408 body_timeout`.
    #[serde(with = "units::duration")]
    pub body_read_timeout: Duration,
    /// How long a connection may stay open with no request in progress (before its first
    /// request, or after an answer) before the node closes it.
    #[serde(with = "units::duration")]
    pub idle_timeout: Duration,
    /// The most bytes of request bodies held in memory at once, across all connections: a
    /// body that would pass it is answered `503 overloaded` and its bytes released, so slow
    /// or stalled uploads cannot fill the node's memory.
    #[serde(with = "units::size")]
    pub body_bytes_in_flight_max: u64,
}

/// Storage settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Where the WAL, the hard state and the snapshots live.
    pub data_dir: PathBuf,
    /// The fewest applied entries between two automatic snapshots (each snapshot compacts the
    /// WAL behind it).
    pub snapshot_every: u64,
    /// An automatic snapshot also waits until the log written since the last one reaches this
    /// percentage of the last snapshot's size, so that snapshots cost the same per write however
    /// large the state grows (a fixed entry count alone would copy a large state ever more
    /// often per byte written). Lower: faster restarts (less log to replay), more snapshot
    /// writing.
    pub snapshot_log_percent: u32,
    /// Entries kept in the log behind each snapshot, so that a follower that lags a little
    /// catches up from the log instead of receiving the whole snapshot (etcd's
    /// `snapshot-catchup-entries`).
    pub snapshot_catchup_entries: u64,
    /// Free space kept in reserve on the data directory's disk: below it, the node refuses
    /// new writes (`507 no_space`) before they enter the log, so that what is already in
    /// flight, the hard state and the next snapshot still fit; reads go on, and writes resume
    /// by themselves once space is freed.
    #[serde(with = "units::size")]
    pub free_space_reserve: u64,
    /// The space quota, as etcd's `--quota-backend-bytes`: once the state's size (every key
    /// and value plus `kv::KV_OVERHEAD_BYTES` each) reaches it, the leader refuses writes that
    /// would grow the state (`507 quota_exceeded`); deletes, shorter overwrites and reads go
    /// on, and writes resume by themselves once deletes bring it under. Checked against the
    /// leader's applied state, so writes in flight may take it past the quota by what they add.
    #[serde(with = "units::size")]
    pub quota_bytes: u64,
}

/// Write-ahead log settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalSection {
    /// A new segment file starts once the current one passes this size.
    #[serde(with = "units::size")]
    pub segment_size: u64,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (for log shippers).
    Json,
    /// Human-readable lines.
    Console,
}

/// Logging and metrics settings (docs/operations.md, "Monitoring").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservabilitySection {
    /// `trace`, `debug`, `info`, `warn` or `error`, or a `tracing` filter such as
    /// `info,raft=debug`; `RUST_LOG` overrides it.
    pub log_level: String,
    /// `json` or `console`.
    pub log_format: LogFormat,
    /// Serve Prometheus metrics at `GET /metrics` and record them (default on). Off, the
    /// route answers 404 `no_route` and requests record nothing.
    pub metrics_enabled: bool,
}

/// A secret setting: its `Debug` never shows the value, so a logged configuration cannot leak
/// it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Authentication settings (docs/security.md). Whether authentication is on is cluster state
/// (changed through `POST /auth/enable` and `/auth/disable`); `enabled` here only founds it on
/// a new cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Turn authentication on as this node founds a new cluster, with a first admin named
    /// `admin_user` whose password comes from `admin_password_file` or
    /// `RAFTKV_AUTH__ADMIN_PASSWORD`; the node refuses to start without one. A node joining a
    /// cluster whose authentication is on logs in with the same credentials to join.
    pub enabled: bool,
    /// The first admin's name.
    pub admin_user: String,
    /// A file holding the first admin's password (trailing newlines are dropped).
    pub admin_password_file: Option<PathBuf>,
    /// The first admin's password itself: meant for `RAFTKV_AUTH__ADMIN_PASSWORD`; a file is
    /// safer than an environment variable, a config file the least safe.
    pub admin_password: Option<Secret>,
    /// The secret tokens are signed with, the same on every node; unset, the cluster makes a
    /// random 256-bit key when authentication is first enabled and keeps it in its replicated
    /// state (docs/security.md says which to choose).
    pub jwt_secret: Option<Secret>,
    /// The signing algorithm: `HS256`, `HS384` or `HS512`; a token signed any other way
    /// (including `none`) is refused.
    pub jwt_algorithm: String,
    /// The `iss` claim tokens carry and must carry.
    pub jwt_issuer: String,
    /// The `aud` claim tokens carry and must carry.
    pub jwt_audience: String,
    /// How long a token from `POST /auth/login` is valid.
    #[serde(with = "units::duration")]
    pub token_ttl: Duration,
    /// argon2id memory cost in KiB (OWASP's minimum: 19456, i.e. 19 MiB).
    pub argon2_memory_kib: u32,
    /// argon2id passes (OWASP: 2 with 19 MiB).
    pub argon2_iterations: u32,
    /// argon2id lanes (OWASP: 1).
    pub argon2_parallelism: u32,
    /// Failed logins allowed per user per minute; then logins as that user are refused
    /// (`429 rate_limited`) until the minute's allowance comes back.
    pub failed_logins_per_user: u32,
    /// Failed logins allowed per client address per minute, whatever the user.
    pub failed_logins_per_address: u32,
}

/// TLS for the client APIs and the calls between nodes' client ports (docs/security.md,
/// "TLS"); the seed's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Serve HTTP and gRPC over TLS only.
    pub enabled: bool,
    /// The node's certificate (PEM, chain first to last).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key_file: Option<PathBuf>,
    /// The CA that client certificates (mTLS) and other nodes' certificates chain to.
    pub ca_file: Option<PathBuf>,
    /// Require a client certificate from the CA at the handshake.
    pub enable_mtls: bool,
    /// Peer (Raft) connections over TLS with certificates checked both ways against
    /// `ca_file`: only a holder of a certificate from the cluster's CA can send Raft messages or
    /// snapshots. Uses `cert_file` and `key_file`, which must be valid for both server and
    /// client authentication.
    pub enable_peer_tls: bool,
}

/// Request rate limits (docs/security.md, "Rate limits").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerformanceSection {
    /// Limit each client's request rate: per principal when authenticated, per address
    /// otherwise (`429 rate_limited` with `Retry-After` over it).
    pub enable_rate_limit: bool,
    /// The requests a second each client may make on average.
    pub rate_limit_per_second: u32,
    /// The requests a client may make at once above its average.
    pub rate_limit_burst: u32,
}

/// Everything a node is configured with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Raft settings.
    pub raft: RaftSection,
    /// HTTP settings.
    pub server: ServerSection,
    /// Storage settings.
    pub storage: StorageSection,
    /// WAL settings.
    pub wal: WalSection,
    /// Logging settings.
    pub observability: ObservabilitySection,
    /// Authentication settings.
    pub auth: AuthSection,
    /// Request rate limits.
    pub performance: PerformanceSection,
    /// TLS.
    pub tls: TlsSection,
    /// The seed keys that were given and are ignored, each with why (see [`seed`]): logged
    /// once the node's logging is set up. Not a setting.
    #[serde(skip)]
    pub ignored_seed_keys: Vec<String>,
}

/// The shortest election timeout accepted: below this, ordinary scheduling jitter deposes
/// leaders.
pub const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(20);
/// The longest election timeout accepted.
pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// The election timeout must be at least this many heartbeat intervals, so that one lost
/// heartbeat does not start an election (the replica's own floor).
pub use replica::timing::ELECTION_TO_HEARTBEAT_RATIO_MIN;
/// The shortest heartbeat interval accepted. The Raft clock ticks several times per heartbeat
/// (`replica::timing::TICKS_PER_HEARTBEAT_DEFAULT`), and a tick must be a real, nonzero timer
/// period.
pub const HEARTBEAT_INTERVAL_MIN: Duration = Duration::from_millis(1);
/// The largest `raft.batch_size`.
pub const RAFT_BATCH_SIZE_MAX: usize = 65_536;
/// The longest `raft.batch_wait`.
pub const RAFT_BATCH_WAIT_MAX: Duration = Duration::from_millis(100);
/// The smallest `wal.segment_size` (4 KiB).
pub const WAL_SEGMENT_SIZE_MIN: u64 = 4 * 1024;
/// The largest `wal.segment_size` (1 GiB).
pub const WAL_SEGMENT_SIZE_MAX: u64 = 1024 * 1024 * 1024;
/// The largest `server.max_connections`.
pub const MAX_CONNECTIONS_MAX: usize = 1_000_000;
/// The shortest `server.header_read_timeout`, `server.body_read_timeout` and
/// `server.idle_timeout`: below this, an ordinary client on a busy network is cut off.
pub const HTTP_TIMEOUT_MIN: Duration = Duration::from_millis(100);
/// The longest of those timeouts.
pub const HTTP_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
/// The smallest `server.body_bytes_in_flight_max`: one largest value body must fit.
pub const BODY_BYTES_IN_FLIGHT_MIN: u64 = kv::VALUE_BYTES_MAX as u64;
/// The smallest `storage.quota_bytes` (64 KiB): a smaller quota is taken for a forgotten unit
/// (`quota_bytes: 2` meant as 2 GiB is 2 bytes), and would refuse writes almost at once.
pub const QUOTA_BYTES_MIN: u64 = 64 * 1024;
/// The default `storage.quota_bytes` (2 GiB), etcd's default quota.
pub const QUOTA_BYTES_DEFAULT: u64 = 2 * 1024 * 1024 * 1024;
/// The longest node id.
pub const NODE_ID_BYTES_MAX: usize = 64;
/// Default of `storage.snapshot_log_percent` (the node's default, see its docs).
pub use raft::node::SNAPSHOT_LOG_PERCENT_DEFAULT;
/// Largest `storage.snapshot_log_percent`: beyond ten times the state, the log to replay at a
/// restart dwarfs the snapshot it was meant to spare.
pub const SNAPSHOT_LOG_PERCENT_MAX: u32 = 1000;
/// Default of `storage.snapshot_catchup_entries` (the store's default, etcd's too).
pub use raft::node::store::SNAPSHOT_CATCHUP_ENTRIES_DEFAULT;
/// Largest `storage.snapshot_catchup_entries`: a log tail longer than this is better sent as a
/// snapshot.
pub const SNAPSHOT_CATCHUP_ENTRIES_MAX: u64 = 10_000_000;
/// The gRPC port of a node whose `server.grpc_addr` is unset (on the host of its
/// `server.http_addr`).
pub const GRPC_PORT_DEFAULT: u16 = 9090;
/// The longest `host:port` address (a DNS name is at most 253 bytes).
pub const ADDRESS_BYTES_MAX: usize = 255;
/// How long a login token is valid by default.
pub const TOKEN_TTL_DEFAULT: Duration = Duration::from_secs(3600);
/// The shortest and longest token lifetime accepted.
pub const TOKEN_TTL_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(60)..=Duration::from_secs(7 * 24 * 3600);
/// argon2id's defaults, OWASP's password-storage guidance (m = 19 MiB, t = 2, p = 1).
pub const ARGON2_MEMORY_KIB_DEFAULT: u32 = 19 * 1024;
/// See [`ARGON2_MEMORY_KIB_DEFAULT`].
pub const ARGON2_ITERATIONS_DEFAULT: u32 = 2;
/// See [`ARGON2_MEMORY_KIB_DEFAULT`].
pub const ARGON2_PARALLELISM_DEFAULT: u32 = 1;
/// The most memory one password hash may take (1 GiB), so a typo cannot exhaust the node.
pub const ARGON2_MEMORY_KIB_MAX: u32 = 1024 * 1024;
/// The most argon2id lanes accepted.
pub const ARGON2_PARALLELISM_MAX: u32 = 16;
/// The most argon2id passes accepted (each pass is another sweep over the memory).
pub const ARGON2_ITERATIONS_MAX: u32 = 64;
/// The shortest JWT secret accepted: 32 bytes, HS256's output size.
pub const JWT_SECRET_BYTES_MIN: usize = 32;

impl Default for Config {
    /// A single node with data in `./data` and HTTP on `127.0.0.1:8080`. The timeouts are chosen
    /// for a leader failover well under a second on a LAN: a leader is suspected after 250-500
    /// ms of silence, and heartbeats every 50 ms leave room for four lost in a row.
    fn default() -> Self {
        Config {
            raft: RaftSection {
                enabled: true,
                node_id: "node1".into(),
                raft_addr: "127.0.0.1:7001".into(),
                raft_listen_addr: None,
                bootstrap: true,
                join_addr: None,
                election_timeout: replica::timing::ELECTION_TIMEOUT_DEFAULT,
                heartbeat_interval: replica::timing::HEARTBEAT_INTERVAL_DEFAULT,
                batch_size: 1024,
                batch_wait: Duration::ZERO,
            },
            server: ServerSection {
                http_addr: "127.0.0.1:8080".into(),
                advertise_host: None,
                grpc_addr: None,
                max_connections: 4096,
                header_read_timeout: Duration::from_secs(10),
                body_read_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(60),
                body_bytes_in_flight_max: 64 * 1024 * 1024,
            },
            storage: StorageSection {
                data_dir: PathBuf::from("./data"),
                snapshot_every: 10_000,
                snapshot_log_percent: SNAPSHOT_LOG_PERCENT_DEFAULT,
                snapshot_catchup_entries: SNAPSHOT_CATCHUP_ENTRIES_DEFAULT,
                free_space_reserve: 64 * 1024 * 1024,
                quota_bytes: QUOTA_BYTES_DEFAULT,
            },
            wal: WalSection {
                segment_size: 64 * 1024 * 1024,
            },
            observability: ObservabilitySection {
                log_level: "info".into(),
                log_format: LogFormat::Console,
                metrics_enabled: true,
            },
            auth: AuthSection {
                enabled: false,
                admin_user: "admin".into(),
                admin_password_file: None,
                admin_password: None,
                jwt_secret: None,
                jwt_algorithm: "HS256".into(),
                jwt_issuer: "raftkv".into(),
                jwt_audience: "raftkv".into(),
                token_ttl: TOKEN_TTL_DEFAULT,
                argon2_memory_kib: ARGON2_MEMORY_KIB_DEFAULT,
                argon2_iterations: ARGON2_ITERATIONS_DEFAULT,
                argon2_parallelism: ARGON2_PARALLELISM_DEFAULT,
                failed_logins_per_user: 10,
                failed_logins_per_address: 30,
            },
            performance: PerformanceSection {
                enable_rate_limit: false,
                rate_limit_per_second: 1000,
                rate_limit_burst: 2000,
            },
            tls: TlsSection {
                enabled: false,
                cert_file: None,
                key_file: None,
                ca_file: None,
                enable_mtls: false,
                enable_peer_tls: false,
            },
            ignored_seed_keys: Vec::new(),
        }
    }
}

fn bad(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::BadValue {
        key: key.into(),
        source_: Source::Merged,
        problem: problem.into(),
    }
}

/// Checks a node name: 1 to [`NODE_ID_BYTES_MAX`] letters, digits, `-`, `_` or `.`. The same
/// rule holds wherever a name comes in (the config, a join request), so a name a node can be
/// started with is exactly a name the cluster accepts.
pub fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > NODE_ID_BYTES_MAX {
        return Err(format!("must be 1 to {NODE_ID_BYTES_MAX} characters"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "`{}` may hold only letters, digits, '-', '_' and '.'",
            id.escape_debug()
        ));
    }
    Ok(())
}

/// Checks that `text` is `host:port` with a non-empty host and a numeric port.
pub fn check_address(text: &str) -> Result<(), String> {
    if text.len() > ADDRESS_BYTES_MAX {
        return Err(format!(
            "an address of {} bytes is longer than {ADDRESS_BYTES_MAX}",
            text.len()
        ));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("`{}` is not host:port", text.escape_debug()));
    };
    if host.is_empty() || host.contains('/') || host.chars().any(char::is_whitespace) {
        return Err(format!("`{}` has no valid host", text.escape_debug()));
    }
    port.parse::<u16>()
        .map_err(|_| format!("`{}` is not a port number", port.escape_debug()))?;
    Ok(())
}

/// [`check_address`] for config key `key`.
fn check_host_port(key: &str, text: &str) -> Result<(), ConfigError> {
    check_address(text).map_err(|problem| bad(key, problem))
}

/// The path the seed's `join_addr` ends with (`http://node1:8080/cluster/join`).
pub const JOIN_PATH: &str = "/cluster/join";

/// `join_addr` without a trailing `/` or [`JOIN_PATH`]: the base URL of the member to join.
/// The seed wrote the whole endpoint; RaftKV's own form is the node's base URL. Both mean the
/// same member.
pub fn join_base(join_addr: &str) -> &str {
    let trimmed = join_addr.trim_end_matches('/');
    trimmed
        .strip_suffix(JOIN_PATH)
        .unwrap_or(trimmed)
        .trim_end_matches('/')
}

/// Whether `host`, the host part of a `host:port`, means every interface: none (`:8080`, the
/// seed's form), `0.0.0.0`, `::` or `[::]`. Such an address is bound as is and advertised
/// under `server.advertise_host`.
pub fn is_unspecified_host(host: &str) -> bool {
    matches!(host, "" | "0.0.0.0" | "::" | "[::]")
}

/// The host of `host:port` when it is unspecified ([`is_unspecified_host`]), with its port.
fn unspecified_port(addr: &str) -> Option<&str> {
    addr.rsplit_once(':')
        .filter(|(host, _)| is_unspecified_host(host))
        .map(|(_, port)| port)
}

/// [`check_host_port`] for an address that is bound: its host may also be empty (every
/// interface, as in the seed's `:8080`).
fn check_bind_address(key: &str, text: &str) -> Result<(), ConfigError> {
    match unspecified_port(text) {
        Some(port) => check_host_port(key, &format!("0.0.0.0:{port}")),
        None => check_host_port(key, text),
    }
}

/// The machine's host name, which `server.advertise_host` defaults to.
pub fn host_name() -> Option<String> {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    (!name.is_empty()).then_some(name)
}

impl Config {
    /// The gRPC API's address: `server.grpc_addr`, or, unset, the host of `server.http_addr`
    /// with port [`GRPC_PORT_DEFAULT`]. Derived from the HTTP host rather than fixed, so that
    /// the members of a cluster on several hosts, configured before the gRPC API existed, each
    /// advertise their own host's address (a fixed `127.0.0.1:9090` would be the same on every
    /// member, and joins would find it in use).
    pub fn grpc_addr(&self) -> String {
        if let Some(addr) = &self.server.grpc_addr {
            return addr.clone();
        }
        let http = &self.server.http_addr;
        let host = http
            .rsplit_once(':')
            .map_or(http.as_str(), |(host, _)| host);
        format!("{host}:{GRPC_PORT_DEFAULT}")
    }

    /// `addr` as peers and clients are told it: an unspecified host
    /// ([`is_unspecified_host`]) becomes `server.advertise_host`.
    fn advertised(&self, addr: &str) -> String {
        match (unspecified_port(addr), &self.server.advertise_host) {
            // An IPv6 address is bracketed, or its colons would read as the port's.
            (Some(port), Some(host)) if host.parse::<std::net::Ipv6Addr>().is_ok() => {
                format!("[{host}]:{port}")
            }
            (Some(port), Some(host)) => format!("{host}:{port}"),
            _ => addr.to_string(),
        }
    }

    /// `addr` as it is bound: an empty host (the seed's `:8080`) is every IPv4 interface, and
    /// `::` written without brackets is every IPv6 one.
    fn bound(addr: &str) -> String {
        match addr.rsplit_once(':') {
            Some(("", port)) => format!("0.0.0.0:{port}"),
            Some(("::", port)) => format!("[::]:{port}"),
            _ => addr.to_string(),
        }
    }

    /// The address the HTTP API listens on.
    pub fn http_bind_addr(&self) -> String {
        Self::bound(&self.server.http_addr)
    }

    /// The HTTP address recorded in the cluster's address book (followers forward to it).
    pub fn http_advertised_addr(&self) -> String {
        self.advertised(&self.server.http_addr)
    }

    /// The address the gRPC API listens on.
    pub fn grpc_bind_addr(&self) -> String {
        Self::bound(&self.grpc_addr())
    }

    /// The gRPC address recorded in the cluster's address book.
    pub fn grpc_advertised_addr(&self) -> String {
        self.advertised(&self.grpc_addr())
    }

    /// The address the peer (Raft) listener binds: `raft.raft_listen_addr`, or `raft_addr`.
    pub fn raft_bind_addr(&self) -> String {
        Self::bound(
            self.raft
                .raft_listen_addr
                .as_deref()
                .unwrap_or(&self.raft.raft_addr),
        )
    }

    /// The Raft address peers are told to connect to.
    pub fn raft_advertised_addr(&self) -> String {
        self.advertised(&self.raft.raft_addr)
    }

    /// Whether any advertised address binds every interface, and so needs
    /// `server.advertise_host`.
    pub fn needs_advertise_host(&self) -> bool {
        [
            self.raft.raft_addr.as_str(),
            self.server.http_addr.as_str(),
            self.grpc_addr().as_str(),
        ]
        .into_iter()
        .any(|addr| unspecified_port(addr).is_some())
    }

    /// Checks ranges and relations between keys that the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.raft;
        check_node_id(&r.node_id).map_err(|problem| bad("raft.node_id", problem))?;
        check_bind_address("raft.raft_addr", &r.raft_addr)?;
        if let Some(listen) = &r.raft_listen_addr {
            check_bind_address("raft.raft_listen_addr", listen)?;
        }
        check_bind_address("server.http_addr", &self.server.http_addr)?;
        let grpc_addr = self.grpc_addr();
        check_bind_address("server.grpc_addr", &grpc_addr)?;
        if let Some(host) = &self.server.advertise_host {
            if is_unspecified_host(host) {
                return Err(bad(
                    "server.advertise_host",
                    format!(
                        "`{host}` is no host anyone can reach; give this node's DNS name or IP"
                    ),
                ));
            }
            // A host name, an IPv4 address, or an IPv6 one with or without brackets; never
            // host:port.
            let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
            let ipv6 = bracketed
                .unwrap_or(host)
                .parse::<std::net::Ipv6Addr>()
                .is_ok();
            let plain = !host.contains(':')
                && check_host_port("server.advertise_host", &format!("{host}:1")).is_ok();
            if !(ipv6 || plain) {
                return Err(bad(
                    "server.advertise_host",
                    format!(
                        "`{}` is not a host name or IP address (give the host alone, without a port)",
                        host.escape_debug()
                    ),
                ));
            }
        } else if self.needs_advertise_host() {
            return Err(bad(
                "server.advertise_host",
                "an address binds every interface (0.0.0.0, :: or no host) and this machine's host name cannot be read: set the name peers and clients reach this node by",
            ));
        }
        if grpc_addr == self.server.http_addr {
            return Err(bad(
                "server.grpc_addr",
                format!("`{grpc_addr}` is server.http_addr too; the two APIs need their own ports"),
            ));
        }
        if let Some(join) = &r.join_addr {
            let rest = join
                .strip_prefix("http://")
                .or_else(|| join.strip_prefix("https://"))
                .ok_or_else(|| {
                    bad(
                        "raft.join_addr",
                        format!("`{join}` is not an http:// or https:// URL"),
                    )
                })?;
            check_host_port("raft.join_addr", join_base(rest))?;
        }
        if !(ELECTION_TIMEOUT_MIN..=ELECTION_TIMEOUT_MAX).contains(&r.election_timeout) {
            return Err(bad(
                "raft.election_timeout",
                format!(
                    "{} is outside {}..={}",
                    units::format_duration(r.election_timeout),
                    units::format_duration(ELECTION_TIMEOUT_MIN),
                    units::format_duration(ELECTION_TIMEOUT_MAX)
                ),
            ));
        }
        if r.heartbeat_interval < HEARTBEAT_INTERVAL_MIN
            || r.heartbeat_interval * ELECTION_TO_HEARTBEAT_RATIO_MIN > r.election_timeout
        {
            return Err(bad(
                "raft.heartbeat_interval",
                format!(
                    "{} must be at least {} and at most 1/{ELECTION_TO_HEARTBEAT_RATIO_MIN} of raft.election_timeout ({})",
                    units::format_duration(r.heartbeat_interval),
                    units::format_duration(HEARTBEAT_INTERVAL_MIN),
                    units::format_duration(r.election_timeout)
                ),
            ));
        }
        if !(1..=RAFT_BATCH_SIZE_MAX).contains(&r.batch_size) {
            return Err(bad(
                "raft.batch_size",
                format!("{} is outside 1..={RAFT_BATCH_SIZE_MAX}", r.batch_size),
            ));
        }
        if r.batch_wait > RAFT_BATCH_WAIT_MAX {
            return Err(bad(
                "raft.batch_wait",
                format!(
                    "{} is above the maximum {}",
                    units::format_duration(r.batch_wait),
                    units::format_duration(RAFT_BATCH_WAIT_MAX)
                ),
            ));
        }
        let server = &self.server;
        if !(1..=MAX_CONNECTIONS_MAX).contains(&server.max_connections) {
            return Err(bad(
                "server.max_connections",
                format!(
                    "{} is outside 1..={MAX_CONNECTIONS_MAX}",
                    server.max_connections
                ),
            ));
        }
        for (key, timeout) in [
            ("server.header_read_timeout", server.header_read_timeout),
            ("server.body_read_timeout", server.body_read_timeout),
            ("server.idle_timeout", server.idle_timeout),
        ] {
            if !(HTTP_TIMEOUT_MIN..=HTTP_TIMEOUT_MAX).contains(&timeout) {
                return Err(bad(
                    key,
                    format!(
                        "{} is outside {}..={}",
                        units::format_duration(timeout),
                        units::format_duration(HTTP_TIMEOUT_MIN),
                        units::format_duration(HTTP_TIMEOUT_MAX)
                    ),
                ));
            }
        }
        if server.body_bytes_in_flight_max < BODY_BYTES_IN_FLIGHT_MIN {
            return Err(bad(
                "server.body_bytes_in_flight_max",
                format!(
                    "{} is below {}, the largest value body",
                    units::format_size(server.body_bytes_in_flight_max),
                    units::format_size(BODY_BYTES_IN_FLIGHT_MIN)
                ),
            ));
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return Err(bad("storage.data_dir", "must not be empty"));
        }
        if self.storage.snapshot_every == 0 {
            return Err(bad("storage.snapshot_every", "must be at least 1"));
        }
        if !(1..=SNAPSHOT_LOG_PERCENT_MAX).contains(&self.storage.snapshot_log_percent) {
            return Err(bad(
                "storage.snapshot_log_percent",
                format!(
                    "{} is outside 1..={SNAPSHOT_LOG_PERCENT_MAX}",
                    self.storage.snapshot_log_percent
                ),
            ));
        }
        if self.storage.snapshot_catchup_entries > SNAPSHOT_CATCHUP_ENTRIES_MAX {
            return Err(bad(
                "storage.snapshot_catchup_entries",
                format!(
                    "{} is above {SNAPSHOT_CATCHUP_ENTRIES_MAX}",
                    self.storage.snapshot_catchup_entries
                ),
            ));
        }
        if self.storage.quota_bytes < QUOTA_BYTES_MIN {
            // Unlike etcd, 0 does not mean "the default": a layer that sets a value means it,
            // and a quota too small to hold anything is refused rather than reinterpreted.
            return Err(bad(
                "storage.quota_bytes",
                format!(
                    "{} is below the minimum {} (the default is {}; a size without a unit is bytes)",
                    units::format_size(self.storage.quota_bytes),
                    units::format_size(QUOTA_BYTES_MIN),
                    units::format_size(QUOTA_BYTES_DEFAULT)
                ),
            ));
        }
        let w = &self.wal;
        if !(WAL_SEGMENT_SIZE_MIN..=WAL_SEGMENT_SIZE_MAX).contains(&w.segment_size) {
            return Err(bad(
                "wal.segment_size",
                format!(
                    "{} is outside {}..={}",
                    units::format_size(w.segment_size),
                    units::format_size(WAL_SEGMENT_SIZE_MIN),
                    units::format_size(WAL_SEGMENT_SIZE_MAX)
                ),
            ));
        }
        let level = &self.observability.log_level;
        let valid_level = |l: &str| {
            matches!(
                l.to_ascii_lowercase().as_str(),
                "trace" | "debug" | "info" | "warn" | "error" | "off"
            )
        };
        // Either a plain level or `tracing` directives (`target=level`, comma-separated).
        let directives_ok = !level.is_empty()
            && level.split(',').all(|d| match d.split_once('=') {
                Some((target, l)) => !target.is_empty() && valid_level(l),
                None => valid_level(d),
            });
        if !directives_ok {
            return Err(bad(
                "observability.log_level",
                format!(
                    "`{level}` is not a level (trace, debug, info, warn, error) or filter like `info,raft=debug`"
                ),
            ));
        }
        self.validate_auth()
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        replica::auth::check_name("user", &a.admin_user)
            .map_err(|e| bad("auth.admin_user", e.to_string()))?;
        if !matches!(a.jwt_algorithm.as_str(), "HS256" | "HS384" | "HS512") {
            return Err(bad(
                "auth.jwt_algorithm",
                format!(
                    "`{}` is not HS256, HS384 or HS512 (tokens are signed with a shared secret)",
                    a.jwt_algorithm
                ),
            ));
        }
        if let Some(secret) = &a.jwt_secret
            && secret.0.len() < JWT_SECRET_BYTES_MIN
        {
            return Err(bad(
                "auth.jwt_secret",
                format!(
                    "a secret of {} bytes is too short to sign with: give at least {JWT_SECRET_BYTES_MIN} random bytes (openssl rand -base64 48)",
                    secret.0.len()
                ),
            ));
        }
        for (key, value) in [
            ("auth.jwt_issuer", &a.jwt_issuer),
            ("auth.jwt_audience", &a.jwt_audience),
        ] {
            if value.is_empty() || value.len() > replica::auth::NAME_BYTES_MAX {
                return Err(bad(
                    key,
                    format!("must be 1 to {} bytes", replica::auth::NAME_BYTES_MAX),
                ));
            }
        }
        if !TOKEN_TTL_RANGE.contains(&a.token_ttl) {
            return Err(bad(
                "auth.token_ttl",
                format!(
                    "{} is outside {}..={}",
                    units::format_duration(a.token_ttl),
                    units::format_duration(*TOKEN_TTL_RANGE.start()),
                    units::format_duration(*TOKEN_TTL_RANGE.end())
                ),
            ));
        }
        if !(1..=ARGON2_PARALLELISM_MAX).contains(&a.argon2_parallelism) {
            return Err(bad(
                "auth.argon2_parallelism",
                format!(
                    "{} is outside 1..={ARGON2_PARALLELISM_MAX}",
                    a.argon2_parallelism
                ),
            ));
        }
        if !(1..=ARGON2_ITERATIONS_MAX).contains(&a.argon2_iterations) {
            return Err(bad(
                "auth.argon2_iterations",
                format!(
                    "{} is outside 1..={ARGON2_ITERATIONS_MAX}",
                    a.argon2_iterations
                ),
            ));
        }
        // argon2 needs at least 8 KiB per lane.
        let memory_min = 8 * a.argon2_parallelism;
        if !(memory_min..=ARGON2_MEMORY_KIB_MAX).contains(&a.argon2_memory_kib) {
            return Err(bad(
                "auth.argon2_memory_kib",
                format!(
                    "{} is outside {memory_min}..={ARGON2_MEMORY_KIB_MAX} (at least 8 per lane; over {ARGON2_MEMORY_KIB_MAX} KiB a single login could exhaust the node)",
                    a.argon2_memory_kib
                ),
            ));
        }
        for (key, value) in [
            ("auth.failed_logins_per_user", a.failed_logins_per_user),
            (
                "auth.failed_logins_per_address",
                a.failed_logins_per_address,
            ),
            (
                "performance.rate_limit_per_second",
                self.performance.rate_limit_per_second,
            ),
            (
                "performance.rate_limit_burst",
                self.performance.rate_limit_burst,
            ),
        ] {
            if value == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        let t = &self.tls;
        if t.enabled && (t.cert_file.is_none() || t.key_file.is_none()) {
            return Err(bad(
                "tls.enabled",
                "TLS needs tls.cert_file and tls.key_file (scripts/tls-certs.sh makes them)",
            ));
        }
        if t.enable_peer_tls
            && (t.cert_file.is_none() || t.key_file.is_none() || t.ca_file.is_none())
        {
            return Err(bad(
                "tls.enable_peer_tls",
                "peer TLS needs tls.cert_file, tls.key_file and tls.ca_file (nodes check each other against the CA; scripts/tls-certs.sh makes them)",
            ));
        }
        if t.enable_mtls && !t.enabled {
            return Err(bad("tls.enable_mtls", "mTLS needs tls.enabled"));
        }
        if t.enable_mtls && t.ca_file.is_none() {
            return Err(bad(
                "tls.enable_mtls",
                "mTLS needs tls.ca_file: client certificates are checked against it",
            ));
        }
        if a.enabled && a.admin_password.is_none() && a.admin_password_file.is_none() {
            return Err(bad(
                "auth.enabled",
                "authentication needs a first admin password, and RaftKV has no default password: set auth.admin_password_file or RAFTKV_AUTH__ADMIN_PASSWORD",
            ));
        }
        Ok(())
    }
}
