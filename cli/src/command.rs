//! The `kvcli` command line: arguments, what each command prints, and exit codes.
//!
//! Job: parse the arguments (clap), call the [`Client`], print the answer (text, or JSON
//! with `--json`) on stdout, and on failure print exactly one line `error: ...` on stderr
//! and exit with a code that says what kind of failure it was ([`exit_code`]).
//!
//! Invariants:
//! - keys, values and prefixes are taken as raw OS bytes, so non-UTF-8 keys work;
//! - write commands go through a client session, so a write retried on another endpoint
//!   is applied at most once;
//! - stdout carries only the answer; `kvcli get` without `--json` writes the value's bytes
//!   exactly (a newline is added only when stdout is a terminal);
//! - every failure, usage errors included, is one line on stderr; only a command line with
//!   no command at all (bare `kvcli`, or `kvcli cluster`) prints the whole help there.

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use util::parse_flag_duration;

use crate::bench::plot::{self, PlotError, PlotOptions};
use crate::bench::{self, BenchConfig, BenchError, Stop, WindowReport, Workload};
use crate::client::VALUE_BYTES_MAX;
use crate::error::printable;
use crate::types::{ClientOptions, Credential, Routing};
use crate::{Client, Consistency, Error, ListResult, Precondition};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: any failure not listed below (bad answer, rejected request, bad input).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: the command line is wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the key does not exist (`get`).
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code: the compare-and-swap condition did not hold.
pub const EXIT_CAS_FAILED: u8 = 4;
/// Exit code: no endpoint could serve the request (unreachable, no leader) or its outcome
/// is unknown (timed out): a write may or may not have been applied.
pub const EXIT_UNAVAILABLE: u8 = 5;

/// Exit code: not authenticated (no or a refused credential) or permission denied.
pub const EXIT_AUTH: u8 = 6;

/// Where `kvcli auth login` keeps its token, under the home directory, unless
/// `--token-file` / `RAFTKV_TOKEN_FILE` says otherwise.
pub const TOKEN_FILE_DEFAULT: &str = ".config/raftkv/token";

/// Default duration of `kvcli bench` when neither `--duration` nor `--ops` is given.
pub const BENCH_DURATION_DEFAULT: Duration = Duration::from_secs(30);

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  error (rejected request, unexpected answer, bad input)
  2  usage error
  3  key not found (get)
  4  compare-and-swap failed
  5  unavailable (no endpoint reachable, no leader) or timed out (outcome unknown)
  6  not authenticated (log in: kvcli auth login USER) or permission denied

Endpoints come from --endpoints, else RAFTKV_ENDPOINTS, else http://127.0.0.1:8080
(grpc://127.0.0.1:9090 with --grpc). The credential is --token, else --api-key, else the
token `kvcli auth login` kept (--token-file, else RAFTKV_TOKEN_FILE, else
~/.config/raftkv/token).";

/// `kvcli`: the RaftKV command-line client.
#[derive(Debug, Parser)]
#[command(
    name = "kvcli",
    version,
    about = "RaftKV command-line client",
    after_help = EXIT_CODES_HELP,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Comma-separated server URLs: http://host:port (REST) or grpc://host:port (gRPC); the
    /// leader is found among them.
    #[arg(long, global = true, env = "RAFTKV_ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Talk gRPC: endpoints given as host:port are gRPC ones, and the default endpoint is
    /// grpc://127.0.0.1:9090.
    #[arg(long, global = true)]
    pub grpc: bool,
    /// Print answers as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Bound on each request, all retries included, e.g. 500ms, 10s, 1m.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_flag_duration)]
    pub timeout: Duration,
    /// A login token (from `kvcli auth login`), sent as `Authorization: Bearer`.
    #[arg(long, global = true, env = "RAFTKV_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// An API key (`ak_...`), sent as `X-API-Key`.
    #[arg(
        long,
        global = true,
        env = "RAFTKV_API_KEY",
        hide_env_values = true,
        conflicts_with = "token"
    )]
    pub api_key: Option<String>,
    /// The file `kvcli auth login` keeps its token in, and other commands read it from.
    #[arg(long, global = true, env = "RAFTKV_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Talk TLS: http:// and grpc:// endpoints (and the default one) become https:// and
    /// grpcs://; needs --ca-cert.
    #[arg(long, global = true)]
    pub tls: bool,
    /// Present a client certificate (--cert, --key): for a cluster with tls.enable_mtls.
    #[arg(long, global = true, requires_all = ["client_cert", "client_key"])]
    pub mtls: bool,
    /// The CA the nodes' certificates chain to (PEM), for https:// and grpcs:// endpoints.
    #[arg(long, global = true, env = "RAFTKV_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// The client certificate (PEM), with --key, for mTLS.
    #[arg(
        long = "cert",
        id = "client_cert",
        global = true,
        env = "RAFTKV_CERT",
        requires = "client_key"
    )]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long = "key",
        id = "client_key",
        global = true,
        env = "RAFTKV_KEY",
        requires = "client_cert"
    )]
    pub key: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a key's value (exit code 3 when it does not exist).
    Get {
        /// The key.
        key: OsString,
        /// Answer from the contacted node's local state, possibly behind.
        #[arg(long)]
        stale: bool,
    },
    /// Write a value; with --prev-version or --prev-value only if the condition holds.
    Put {
        /// The key.
        key: OsString,
        /// The value, or `-` to read it from stdin.
        value: OsString,
        /// The optional compare-and-swap condition.
        #[command(flatten)]
        condition: OptionalCondition,
    },
    /// Delete a key, every key under a prefix, or every key.
    Delete {
        /// The key.
        #[arg(required_unless_present_any = ["prefix", "all"], conflicts_with_all = ["prefix", "all"])]
        key: Option<OsString>,
        /// Delete every key starting with this (must not be empty: see --all).
        #[arg(long, conflicts_with = "all")]
        prefix: Option<OsString>,
        /// Delete every key in the store.
        #[arg(long)]
        all: bool,
    },
    /// List keys and values under a prefix, in byte order, following the server's pages.
    List {
        /// The prefix (may be empty: all keys).
        #[arg(long)]
        prefix: OsString,
        /// Most keys to list in all (default: every matching key).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
    /// Compare-and-swap: write NEW only if the key's version or value is as given.
    Cas {
        /// The key.
        key: OsString,
        /// The compare-and-swap condition.
        #[command(flatten)]
        condition: RequiredCondition,
        /// The new value, or `-` to read it from stdin.
        new: OsString,
    },
    /// Cluster membership.
    #[command(arg_required_else_help = true)]
    Cluster {
        /// The cluster command.
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Node administration.
    #[command(arg_required_else_help = true)]
    Admin {
        /// The admin command.
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Backups of the whole cluster.
    #[command(arg_required_else_help = true)]
    Backup {
        /// The backup command.
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Generate load and report throughput and latency (`bench plot` draws window CSVs).
    Bench(BenchCommand),
    /// Authentication: log in, users, roles and API keys.
    #[command(arg_required_else_help = true)]
    Auth {
        /// The auth command.
        #[command(subcommand)]
        command: AuthCommand,
    },
}

/// Where a password comes from: `--password` (visible to other users of the machine in the
/// process list: prefer the others), else `RAFTKV_PASSWORD`, else one line of stdin.
#[derive(Debug, Args)]
pub struct PasswordArg {
    /// The password (prefer RAFTKV_PASSWORD or stdin: a flag shows in the process list).
    #[arg(long, env = "RAFTKV_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// `kvcli auth ...`
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Log in and keep the token (0600) for later commands.
    Login {
        /// The user.
        username: String,
        /// The password.
        #[command(flatten)]
        password: PasswordArg,
    },
    /// Forget the kept token.
    Logout,
    /// Whether the cluster's authentication is on.
    Status,
    /// Turn authentication on (an admin user must exist).
    Enable,
    /// Turn authentication off.
    Disable,
    /// Users.
    #[command(subcommand)]
    User(UserCommand),
    /// Roles (built-in: read, write, admin; custom ones limited to key prefixes).
    #[command(subcommand)]
    Role(RoleCommand),
    /// API keys.
    #[command(subcommand)]
    Apikey(ApiKeyCommand),
}

/// `kvcli auth user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Add {
        /// The name.
        username: String,
        /// The role: read, write, admin or a custom role.
        #[arg(long)]
        role: String,
        /// The password.
        #[command(flatten)]
        password: PasswordArg,
    },
    /// Remove a user.
    Delete {
        /// The name.
        username: String,
    },
    /// Set a user's password (their earlier tokens stop working).
    Passwd {
        /// The name.
        username: String,
        /// The new password.
        #[command(flatten)]
        password: PasswordArg,
    },
    /// List the users.
    List,
}

/// `kvcli auth role ...`
#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Create or replace a custom role.
    Put {
        /// The name.
        name: String,
        /// read or write.
        #[arg(long)]
        permission: String,
        /// A key prefix the role is limited to (repeat for several; none: every key).
        #[arg(long = "prefix")]
        prefixes: Vec<String>,
    },
    /// Remove a custom role nobody holds.
    Delete {
        /// The name.
        name: String,
    },
    /// List the roles.
    List,
}

/// `kvcli auth apikey ...`
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key (printed once).
    Add {
        /// A name for people: what or who uses it.
        name: String,
        /// The role.
        #[arg(long)]
        role: String,
    },
    /// List the API keys (without secrets).
    List,
    /// Revoke an API key.
    Revoke {
        /// The key's id.
        id: String,
    },
}

/// An optional compare-and-swap condition (`put`).
#[derive(Debug, Args)]
pub struct OptionalCondition {
    /// Write only if the key's version is this (0: only if it does not exist).
    #[arg(long, conflicts_with = "prev_value")]
    pub prev_version: Option<u64>,
    /// Write only if the key's value is exactly this.
    #[arg(long)]
    pub prev_value: Option<OsString>,
}

/// A required compare-and-swap condition (`cas`).
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RequiredCondition {
    /// The key's expected version (0: it must not exist).
    #[arg(long)]
    pub prev_version: Option<u64>,
    /// The key's expected value.
    #[arg(long)]
    pub prev_value: Option<OsString>,
}

/// `kvcli cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// List the members with their roles.
    Nodes,
    /// Show the leader.
    Leader,
    /// Add a node (as a learner, promoted once caught up).
    Join {
        /// The new node's id.
        id: String,
        /// Its Raft address (host:port).
        raft_addr: String,
        /// Its HTTP address (host:port).
        http_addr: String,
        /// Its gRPC address (host:port), as its `server.grpc_addr`.
        #[arg(long)]
        grpc_addr: Option<String>,
    },
    /// Remove a node.
    Remove {
        /// The node's id.
        id: String,
    },
    /// Transfer leadership to a node.
    Transfer {
        /// The node's id.
        id: String,
    },
}

/// `kvcli admin ...`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Take a snapshot on the first reachable endpoint.
    Snapshot,
    /// Ask the first reachable endpoint whether it is healthy (`GET /health`): exit 0 when it
    /// answers ok, non-zero when it reports a failure (its storage, say) or cannot be reached.
    /// A container's health check.
    Health,
}

/// `kvcli backup ...`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Save a consistent backup of the cluster (any node serves it; needs the admin role) to
    /// FILE, checked against its SHA-256 and written whole or not at all. Restore it with
    /// `raftkv restore --from FILE --data-dir DIR`.
    Save {
        /// Where to write it (replaced whole if it exists), readable by its owner only: it
        /// holds the cluster's password and API key hashes.
        file: PathBuf,
        /// Longest wait for the node to start sending, e.g. 30m: it first snapshots its state
        /// and checks the whole file, minutes on a state of several GB (the global --timeout
        /// does not apply). After this the command fails without asking another node.
        #[arg(long, default_value = BACKUP_WAIT_DEFAULT, value_parser = parse_flag_duration)]
        wait: Duration,
    },
}

/// Default of `kvcli backup save --wait`: [`crate::client::BACKUP_HEAD_TIMEOUT_DEFAULT`],
/// written as the flag takes it (a unit test holds the two equal).
pub const BACKUP_WAIT_DEFAULT: &str = "15m";

/// `kvcli bench [OPTIONS]` runs a load; `kvcli bench plot ...` draws earlier runs.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchCommand {
    /// Draw instead of run.
    #[command(subcommand)]
    pub command: Option<BenchSubcommand>,
    /// The run's options.
    #[command(flatten)]
    pub args: BenchArgs,
}

/// `kvcli bench ...` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchSubcommand {
    /// Draw window CSVs (from `bench --window ... --csv FILE`) as one SVG: ops/s and p99.
    Plot(PlotArgs),
}

/// `kvcli bench plot` options.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Window CSVs, each `LABEL=PATH` or `PATH` (then the label is the file's name).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Where to write the SVG.
    #[arg(long)]
    pub out: PathBuf,
    /// The picture's title.
    #[arg(long, default_value = "kvcli bench: throughput and p99 per window")]
    pub title: String,
    /// Draw a dashed target line at this p99, in milliseconds.
    #[arg(long)]
    pub p99_limit_ms: Option<f64>,
}

/// The workloads of `kvcli bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadArg {
    /// Puts.
    Write,
    /// Puts of a new key each (the keyspace grows by one key per write).
    WriteNew,
    /// Linearizable gets.
    Read,
    /// Stale gets.
    StaleRead,
    /// Linearizable gets and puts, per --read-ratio.
    Mixed,
}

/// Default `kvcli bench --grpc-connections`. HTTP/2 multiplexes: on this project's 2-core
/// machine, 64 workers reading from one node did 32,000-35,000 reads/s over 2 to 4 shared
/// connections and 27,600 over one connection each (docs/performance.md).
pub const BENCH_GRPC_CONNECTIONS_DEFAULT: u64 = 4;

/// Which API `kvcli bench` loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// REST over HTTP/1.1.
    Http,
    /// gRPC over HTTP/2.
    Grpc,
}

/// The endpoints to use: those given (`host:port` taken as gRPC with `grpc`), or the default
/// single node's. With `grpc`, an `http://` endpoint is refused: it names the REST port.
pub fn endpoints(given: &[String], grpc: bool) -> Result<Vec<String>, CliError> {
    if given.is_empty() {
        let default = if grpc {
            "grpc://127.0.0.1:9090"
        } else {
            "http://127.0.0.1:8080"
        };
        return Ok(vec![default.to_owned()]);
    }
    given
        .iter()
        .map(|e| {
            let e = e.trim();
            if !grpc || e.starts_with("grpc://") || e.starts_with("grpcs://") {
                Ok(e.to_owned())
            } else if e.starts_with("http://") || e.starts_with("https://") {
                Err(CliError::Usage(format!(
                    "--grpc talks to the gRPC API: give grpc://host:port (or host:port) endpoints, not the REST URL {e}"
                )))
            } else {
                Ok(format!("grpc://{e}"))
            }
        })
        .collect()
}

/// Where `kvcli bench` sends requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetArg {
    /// The leader (found among the endpoints).
    Leader,
    /// Every endpoint in turn (followers forward to the leader).
    All,
}

/// `kvcli bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The operations.
    #[arg(long, value_enum, default_value = "write")]
    pub workload: WorkloadArg,
    /// Fraction of reads in the mixed workload.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Concurrent clients, each with one request in flight and its own connection.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Size of the key space.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Write every key once before measuring (for read workloads).
    #[arg(long)]
    pub preload: bool,
    /// Bytes per key.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// How long to run, e.g. 30s (default 30s unless --ops is given).
    #[arg(long, value_parser = parse_flag_duration, conflicts_with = "ops")]
    pub duration: Option<Duration>,
    /// Stop after this many operations.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Send to the leader or spread over all endpoints.
    #[arg(long, value_enum, default_value = "leader")]
    pub target: TargetArg,
    /// The API to load: REST (http) or gRPC (grpc, the same as the global --grpc).
    #[arg(long, value_enum, default_value = "http")]
    pub protocol: ProtocolArg,
    /// Over gRPC: HTTP/2 connections per endpoint, which the workers share (at most one per
    /// worker).
    #[arg(long, default_value_t = BENCH_GRPC_CONNECTIONS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub grpc_connections: u64,
    /// Report ops/s, p50, p99, max and errors per window of this length, e.g. 10s.
    #[arg(long, value_parser = parse_flag_duration)]
    pub window: Option<Duration>,
    /// Also write the windows to this CSV file, one row per window as it ends.
    #[arg(long, requires = "window")]
    pub csv: Option<PathBuf>,
    /// The write-new run's tag, in hex (at most 6 digits); random when not given.
    #[arg(long, value_parser = parse_run_tag)]
    pub run_tag: Option<u32>,
}

/// Parses a write-new run tag: 1 to 6 hex digits.
pub fn parse_run_tag(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text, 16) {
        Ok(tag) if tag <= bench::newkeys::RUN_TAG_MAX && !text.starts_with('+') => Ok(tag),
        _ => Err(format!(
            "{text:?} is not a run tag (1 to {} hex digits)",
            bench::newkeys::RUN_TAG_HEX_DIGITS
        )),
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The client call failed.
    #[error(transparent)]
    Client(#[from] Error),
    /// The load generator could not run.
    #[error(transparent)]
    Bench(#[from] BenchError),
    /// `bench plot` could not draw.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// The command line is wrong beyond what clap checks.
    #[error("{0}")]
    Usage(String),
    /// Reading input or writing output failed.
    #[error("{0}")]
    Io(String),
}

/// The exit code for `error`.
pub fn exit_code(error: &CliError) -> u8 {
    match error {
        CliError::Client(Error::NotFound { .. }) => EXIT_NOT_FOUND,
        CliError::Client(Error::CasFailed { .. }) => EXIT_CAS_FAILED,
        CliError::Client(Error::Unavailable(_) | Error::NoLeader(_) | Error::Timeout(_)) => {
            EXIT_UNAVAILABLE
        }
        CliError::Bench(BenchError::Session(Error::Unavailable(_) | Error::NoLeader(_))) => {
            EXIT_UNAVAILABLE
        }
        CliError::Client(Error::Unauthenticated(_) | Error::PermissionDenied(_)) => EXIT_AUTH,
        CliError::Usage(_) | CliError::Client(Error::InvalidEndpoint { .. }) => EXIT_USAGE,
        CliError::Bench(BenchError::Config(_)) => EXIT_USAGE,
        CliError::Plot(PlotError::Input(_)) => EXIT_USAGE,
        _ => EXIT_ERROR,
    }
}

/// Where a command writes its answer.
pub struct Output<'a> {
    /// The answer's stream (stdout).
    pub out: &'a mut dyn Write,
    /// Notes that are not the answer (stderr).
    pub notes: &'a mut dyn Write,
    /// Whether `out` is a terminal (then raw values get a trailing newline).
    pub terminal: bool,
}

#[cfg(unix)]
fn os_bytes(text: &OsString) -> Bytes {
    use std::os::unix::ffi::OsStrExt;
    Bytes::copy_from_slice(text.as_bytes())
}

#[cfg(not(unix))]
fn os_bytes(text: &OsString) -> Bytes {
    Bytes::from(text.to_string_lossy().into_owned())
}

/// Keys `kvcli list` asks for per page: small enough that a page of large values stays well
/// under the client's answer limit, large enough that a walk makes few round trips.
pub const LIST_PAGE_KEYS: u32 = 1_000;

/// `kvcli list`: follows the server's pages until the keys or `limit` run out. Text output is
/// written page by page, so memory stays one page; `--json` gathers one listing (the `kvs`
/// of every page, `more` and `next` as of the last key printed, `revision` of the last
/// page).
async fn list(
    client: &Client,
    prefix: &[u8],
    limit: Option<u64>,
    json: bool,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> Result<(), CliError> {
    let mut listed: u64 = 0;
    let mut after: Option<Bytes> = None;
    let mut gathered: Option<ListResult> = None;
    loop {
        let wanted = limit.map_or(u64::from(LIST_PAGE_KEYS), |l| {
            (l - listed).min(u64::from(LIST_PAGE_KEYS))
        });
        let page_limit =
            u32::try_from(wanted).expect("invariant: a page is at most LIST_PAGE_KEYS keys");
        let mut page = client
            .list_page(prefix, after.as_deref(), Some(page_limit))
            .await?;
        listed += page.kvs.len() as u64;
        let more = page.more;
        after = page.next.clone();
        if json {
            match &mut gathered {
                None => gathered = Some(page),
                Some(all) => {
                    all.kvs.append(&mut page.kvs);
                    all.more = page.more;
                    all.next = page.next;
                    all.revision = page.revision;
                }
            }
        } else {
            for kv in &page.kvs {
                writeln!(
                    out,
                    "{}\t{}",
                    printable(&kv.key, usize::MAX),
                    printable(&kv.value, usize::MAX)
                )
                .map_err(io_error)?;
            }
        }
        if !more {
            break;
        }
        if limit.is_some_and(|l| listed >= l) {
            if !json {
                writeln!(notes, "note: more keys match; raise --limit to see them")
                    .map_err(io_error)?;
            }
            break;
        }
        if after.is_none() {
            return Err(CliError::Client(Error::Protocol(
                "a listing page says more keys match but gives no next key".to_owned(),
            )));
        }
    }
    match gathered {
        Some(all) if json => print_json(out, &all),
        _ => Ok(()),
    }
}

/// A value argument: its bytes, or stdin for `-` (bounded by the value limit).
fn value_arg(value: &OsString, stdin: &mut dyn Read) -> Result<Bytes, CliError> {
    if value != "-" {
        return Ok(os_bytes(value));
    }
    let mut buffer = Vec::new();
    stdin
        .take(VALUE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut buffer)
        .map_err(|e| CliError::Io(format!("reading the value from stdin: {e}")))?;
    if buffer.len() > VALUE_BYTES_MAX {
        return Err(Error::TooLarge(format!(
            "the value on stdin is over {VALUE_BYTES_MAX} bytes"
        ))
        .into());
    }
    Ok(Bytes::from(buffer))
}

fn condition(prev_version: Option<u64>, prev_value: Option<&OsString>) -> Option<Precondition> {
    match (prev_version, prev_value) {
        (Some(v), _) => Some(Precondition::Version(v)),
        (None, Some(x)) => Some(Precondition::Value(os_bytes(x))),
        (None, None) => None,
    }
}

/// `endpoint` over TLS: `http://` becomes `https://`, `grpc://` becomes `grpcs://`.
fn secure(endpoint: &str) -> String {
    if let Some(rest) = endpoint.strip_prefix("http://") {
        format!("https://{rest}")
    } else if let Some(rest) = endpoint.strip_prefix("grpc://") {
        format!("grpcs://{rest}")
    } else {
        endpoint.to_owned()
    }
}

/// The token file: the one given, else `~/.config/raftkv/token` (`None` without a home).
fn token_file(given: Option<&std::path::Path>) -> Option<PathBuf> {
    given.map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(TOKEN_FILE_DEFAULT))
    })
}

/// The credential to send: `--token`, else `--api-key`, else the kept token, if any.
fn credential(cli: &Cli, token_file: Option<&std::path::Path>) -> Result<Credential, CliError> {
    if let Some(token) = &cli.token {
        return Ok(Credential::Token(token.trim().to_owned()));
    }
    if let Some(key) = &cli.api_key {
        return Ok(Credential::ApiKey(key.trim().to_owned()));
    }
    let Some(path) = token_file else {
        return Ok(Credential::None);
    };
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Credential::Token(text.trim().to_owned())),
        Ok(_) => Ok(Credential::None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Credential::None),
        Err(e) => Err(CliError::Io(format!(
            "reading the token file {}: {e}",
            path.display()
        ))),
    }
}

/// The password of `arg`, else one line read from `stdin`.
fn password(arg: PasswordArg, stdin: &mut dyn Read) -> Result<String, CliError> {
    if let Some(password) = arg.password {
        return Ok(password);
    }
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() <= PASSWORD_INPUT_BYTES_MAX {
        match stdin.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => {
                return Err(CliError::Io(format!(
                    "reading the password from stdin: {e}"
                )));
            }
        }
    }
    let text = String::from_utf8(line)
        .map_err(|_| CliError::Usage("the password on stdin is not UTF-8".to_owned()))?;
    let text = text.trim_end_matches('\r').to_owned();
    if text.is_empty() {
        return Err(CliError::Usage(
            "no password: give --password, RAFTKV_PASSWORD, or one line on stdin".to_owned(),
        ));
    }
    Ok(text)
}

/// The longest password line read from stdin.
pub const PASSWORD_INPUT_BYTES_MAX: usize = 4096;

/// Writes `token` to `path`, readable by its owner only (0600), creating the directory.
fn keep_token(path: &std::path::Path, token: &str) -> Result<(), CliError> {
    let fail =
        |e: std::io::Error| CliError::Io(format!("keeping the token in {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    // Written beside it and renamed over it, so that a reader never sees half a token, and
    // created 0600 so that it is never readable by others, not even for a moment.
    let partial = path.with_extension("partial");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&partial).map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(fail)?;
    }
    file.write_all(token.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&partial, path).map_err(fail)
}

/// `kvcli auth ...`
async fn auth_command(
    client: &Client,
    command: AuthCommand,
    token_file: Option<&std::path::Path>,
    stdin: &mut dyn Read,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let no_token_file = || {
        CliError::Usage(
            "no token file: give --token-file or RAFTKV_TOKEN_FILE (no HOME is set)".to_owned(),
        )
    };
    match command {
        AuthCommand::Login {
            username,
            password: p,
        } => {
            let password = password(p, stdin)?;
            let path = token_file.ok_or_else(no_token_file)?;
            let answer = client.login(&username, &password).await?;
            keep_token(path, &answer.token)?;
            if json {
                return print_json(
                    out,
                    &serde_json::json!({
                        "username": username, "expires_at": answer.expires_at,
                        "token_file": path.display().to_string(),
                    }),
                );
            }
            writeln!(
                out,
                "logged in as {username} until {} (Unix seconds); token kept in {}",
                answer.expires_at,
                path.display()
            )
            .map_err(io_error)
        }
        AuthCommand::Logout => {
            let path = token_file.ok_or_else(no_token_file)?;
            match std::fs::remove_file(path) {
                Ok(()) => writeln!(out, "removed {}", path.display()).map_err(io_error),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    writeln!(out, "no token kept in {}", path.display()).map_err(io_error)
                }
                Err(e) => Err(CliError::Io(format!("removing {}: {e}", path.display()))),
            }
        }
        AuthCommand::Status | AuthCommand::Enable | AuthCommand::Disable => {
            let status = match command {
                AuthCommand::Enable => client.auth_enable().await?,
                AuthCommand::Disable => client.auth_disable().await?,
                _ => client.auth_status().await?,
            };
            if json {
                return print_json(out, &status);
            }
            let state = if status.enabled { "on" } else { "off" };
            writeln!(out, "authentication is {state}").map_err(io_error)
        }
        AuthCommand::User(UserCommand::Add {
            username,
            role,
            password: p,
        }) => {
            let password = password(p, stdin)?;
            let user = client.user_add(&username, &password, &role).await?;
            if json {
                return print_json(out, &user);
            }
            writeln!(out, "added user {} with role {}", user.username, user.role).map_err(io_error)
        }
        AuthCommand::User(UserCommand::Delete { username }) => {
            let changed = client.user_delete(&username).await?;
            if json {
                return print_json(out, &changed);
            }
            writeln!(out, "removed user {}", changed.name).map_err(io_error)
        }
        AuthCommand::User(UserCommand::Passwd {
            username,
            password: p,
        }) => {
            let password = password(p, stdin)?;
            let changed = client.user_change_password(&username, &password).await?;
            if json {
                return print_json(out, &changed);
            }
            writeln!(
                out,
                "changed the password of {}; log in again",
                changed.name
            )
            .map_err(io_error)
        }
        AuthCommand::User(UserCommand::List) => {
            let users = client.user_list().await?;
            if json {
                return print_json(out, &serde_json::json!({ "users": users }));
            }
            writeln!(out, "{:<32} ROLE", "USER").map_err(io_error)?;
            for u in &users {
                writeln!(out, "{:<32} {}", u.username, u.role).map_err(io_error)?;
            }
            Ok(())
        }
        AuthCommand::Role(RoleCommand::Put {
            name,
            permission,
            prefixes,
        }) => {
            let role = client.role_put(&name, &permission, &prefixes).await?;
            if json {
                return print_json(out, &role);
            }
            writeln!(out, "role {}: {}", role.name, describe_role(&role)).map_err(io_error)
        }
        AuthCommand::Role(RoleCommand::Delete { name }) => {
            let changed = client.role_delete(&name).await?;
            if json {
                return print_json(out, &changed);
            }
            writeln!(out, "removed role {}", changed.name).map_err(io_error)
        }
        AuthCommand::Role(RoleCommand::List) => {
            let roles = client.role_list().await?;
            if json {
                return print_json(out, &serde_json::json!({ "roles": roles }));
            }
            writeln!(out, "{:<32} ALLOWS", "ROLE").map_err(io_error)?;
            for r in &roles {
                writeln!(out, "{:<32} {}", r.name, describe_role(r)).map_err(io_error)?;
            }
            Ok(())
        }
        AuthCommand::Apikey(ApiKeyCommand::Add { name, role }) => {
            let made = client.api_key_add(&name, &role).await?;
            if json {
                return print_json(out, &made);
            }
            writeln!(
                out,
                "API key {} ({}, role {}); keep it now, it is not shown again:\n{}",
                made.id, made.name, made.role, made.key
            )
            .map_err(io_error)
        }
        AuthCommand::Apikey(ApiKeyCommand::List) => {
            let keys = client.api_key_list().await?;
            if json {
                return print_json(out, &serde_json::json!({ "api_keys": keys }));
            }
            writeln!(
                out,
                "{:<18} {:<24} {:<16} CREATED_INDEX",
                "ID", "NAME", "ROLE"
            )
            .map_err(io_error)?;
            for k in &keys {
                writeln!(
                    out,
                    "{:<18} {:<24} {:<16} {}",
                    k.id, k.name, k.role, k.created_index
                )
                .map_err(io_error)?;
            }
            Ok(())
        }
        AuthCommand::Apikey(ApiKeyCommand::Revoke { id }) => {
            let changed = client.api_key_revoke(&id).await?;
            if json {
                return print_json(out, &changed);
            }
            writeln!(out, "revoked API key {}", changed.name).map_err(io_error)
        }
    }
}

/// A role's permission and reach, in words.
fn describe_role(role: &proto::rest::auth::RoleInfo) -> String {
    let reach = if role.prefixes.is_empty() {
        "every key".to_owned()
    } else {
        format!("keys under {}", role.prefixes.join(", "))
    };
    let builtin = if role.builtin { " (built-in)" } else { "" };
    format!("{} on {reach}{builtin}", role.permission)
}

fn io_error(e: std::io::Error) -> CliError {
    CliError::Io(format!("writing output: {e}"))
}

fn print_json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<(), CliError> {
    let text =
        serde_json::to_string(value).map_err(|e| CliError::Io(format!("encoding JSON: {e}")))?;
    writeln!(out, "{text}").map_err(io_error)
}

/// Runs `cli`, reading `-` values from `stdin` and writing to `output`.
pub async fn run(cli: Cli, stdin: &mut dyn Read, output: Output<'_>) -> Result<(), CliError> {
    let Output {
        out,
        notes,
        terminal,
    } = output;
    let mut options = ClientOptions {
        call_timeout: cli.timeout,
        ..ClientOptions::default()
    };
    let mut grpc = cli.grpc;
    if let Command::Bench(BenchCommand {
        command: None,
        args,
    }) = &cli.command
    {
        grpc |= args.protocol == ProtocolArg::Grpc;
        options.idle_connections_per_endpoint = args.concurrency;
        options.grpc_connections_per_endpoint = usize::try_from(args.grpc_connections)
            .map_or(args.concurrency, |n| n.min(args.concurrency));
        options.routing = match args.target {
            TargetArg::Leader => Routing::Leader,
            TargetArg::All => Routing::Spread,
        };
    }
    let token_file = token_file(cli.token_file.as_deref());
    options.credential = credential(&cli, token_file.as_deref())?;
    let mut endpoints = endpoints(&cli.endpoints, grpc)?;
    if cli.tls {
        endpoints = endpoints.into_iter().map(|e| secure(&e)).collect();
    }
    if let Some(ca) = &cli.ca_cert {
        let identity = cli.cert.as_deref().zip(cli.key.as_deref());
        options.tls = Some(crate::types::ClientTls::from_files(ca, identity)?);
    } else if cli.tls {
        return Err(CliError::Usage(
            "--tls needs --ca-cert (the CA the nodes' certificates chain to)".to_owned(),
        ));
    }
    let client = Client::with_options(endpoints, options)?;
    let json = cli.json;
    match cli.command {
        Command::Get { key, stale } => {
            let consistency = if stale {
                Consistency::Stale
            } else {
                Consistency::Linearizable
            };
            if json {
                let kv = client.get_json(os_bytes(&key), consistency).await?;
                print_json(out, &kv)
            } else {
                let kv = client.get(os_bytes(&key), consistency).await?;
                out.write_all(&kv.value).map_err(io_error)?;
                if terminal && !kv.value.ends_with(b"\n") {
                    out.write_all(b"\n").map_err(io_error)?;
                }
                Ok(())
            }
        }
        Command::Put {
            key,
            value,
            condition: c,
        } => {
            let value = value_arg(&value, stdin)?;
            let condition = condition(c.prev_version, c.prev_value.as_ref());
            put(&client, os_bytes(&key), value, condition, json, out).await
        }
        Command::Cas {
            key,
            condition: c,
            new,
        } => {
            let value = value_arg(&new, stdin)?;
            let condition = condition(c.prev_version, c.prev_value.as_ref());
            put(&client, os_bytes(&key), value, condition, json, out).await
        }
        Command::Delete { key, prefix, all } => {
            let mut session = client.register_session().await?;
            let result = match (key, prefix, all) {
                (Some(key), None, false) => session.delete(os_bytes(&key)).await?,
                (None, Some(prefix), false) if !prefix.is_empty() => {
                    session.delete_prefix(os_bytes(&prefix)).await?
                }
                (None, Some(_), false) => {
                    return Err(CliError::Usage(
                        "delete --prefix needs a non-empty prefix; to delete every key, say --all"
                            .to_owned(),
                    ));
                }
                (None, None, true) => session.delete_all().await?,
                _ => {
                    return Err(CliError::Usage(
                        "delete needs a KEY, --prefix P or --all".to_owned(),
                    ));
                }
            };
            if json {
                print_json(out, &result)
            } else {
                writeln!(
                    out,
                    "deleted {} (revision {})",
                    result.deleted, result.revision
                )
                .map_err(io_error)
            }
        }
        Command::List { prefix, limit } => {
            list(&client, &os_bytes(&prefix), limit, json, out, notes).await
        }
        Command::Cluster { command } => cluster(&client, command, json, out).await,
        Command::Admin {
            command: AdminCommand::Snapshot,
        } => {
            let snapshot = client.snapshot().await?;
            if json {
                print_json(out, &snapshot)
            } else {
                let what = if snapshot.taken {
                    "snapshot taken"
                } else {
                    "nothing applied since the latest snapshot, which holds everything: snapshot"
                };
                writeln!(
                    out,
                    "{what} at index {} term {} with {} keys: {}",
                    snapshot.index, snapshot.term, snapshot.keys, snapshot.file
                )
                .map_err(io_error)
            }
        }
        Command::Admin {
            command: AdminCommand::Health,
        } => {
            let status = client.health().await?;
            if json {
                print_json(out, &serde_json::json!({ "status": status }))
            } else {
                writeln!(out, "{status}").map_err(io_error)
            }
        }
        Command::Backup {
            command: BackupCommand::Save { file, wait },
        } => {
            let info = crate::backup_file::save(&client, &file, wait)
                .await
                .map_err(|e| match e {
                    crate::backup_file::SaveError::Client(e) => CliError::Client(e),
                    other => CliError::Io(other.to_string()),
                })?;
            if json {
                print_json(out, &info)
            } else {
                writeln!(
                    out,
                    "saved backup {}: index {}, term {}, {} keys, {} bytes, sha256 {}, of cluster {}",
                    file.display(),
                    info.index,
                    info.term,
                    info.keys,
                    info.bytes,
                    info.sha256,
                    info.cluster_id
                )
                .map_err(io_error)
            }
        }
        Command::Bench(BenchCommand {
            command: Some(BenchSubcommand::Plot(args)),
            ..
        }) => plot_command(&args, out),
        Command::Bench(BenchCommand {
            command: None,
            args,
        }) => bench_command(&client, &args, json, terminal, out).await,
        Command::Auth { command } => {
            auth_command(&client, command, token_file.as_deref(), stdin, json, out).await
        }
    }
}

/// `kvcli bench`: runs the load; with `--window`, prints each window as it ends (text, or
/// one JSON object per line with `--json`) and appends it to the `--csv` file, then the report.
async fn bench_command(
    client: &Client,
    args: &BenchArgs,
    json: bool,
    terminal: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let config = bench_config(args, terminal)?;
    let target = match args.target {
        TargetArg::Leader => "leader",
        TargetArg::All => "all",
    };
    let mut csv = match &args.csv {
        Some(path) => {
            let mut file = std::fs::File::create(path).map_err(|e| {
                CliError::Io(format!("creating the CSV file {}: {e}", path.display()))
            })?;
            writeln!(file, "{}", WindowReport::CSV_HEADER).map_err(|e| {
                CliError::Io(format!("writing the CSV file {}: {e}", path.display()))
            })?;
            Some((path, file))
        }
        None => None,
    };
    // The first output failure is kept and reported once the run is over: a run is not
    // cut short for it.
    let mut failure: Option<CliError> = None;
    let mut observer = |window: &WindowReport| {
        let printed = if json {
            serde_json::to_string(window)
                .map_err(|e| CliError::Io(format!("encoding JSON: {e}")))
                .and_then(|line| writeln!(out, "{line}").map_err(io_error))
        } else {
            writeln!(out, "{window}").map_err(io_error)
        };
        let printed = printed.and_then(|()| out.flush().map_err(io_error));
        let written = match &mut csv {
            Some((path, file)) => writeln!(file, "{}", window.csv_row())
                .and_then(|()| file.flush())
                .map_err(|e| CliError::Io(format!("writing the CSV file {}: {e}", path.display()))),
            None => Ok(()),
        };
        if let Err(error) = printed.and(written) {
            failure.get_or_insert(error);
        }
    };
    let report = bench::run_observed(client, &config, target, &mut observer).await?;
    if let Some(error) = failure {
        return Err(error);
    }
    if json {
        print_json(out, &report)
    } else {
        writeln!(out, "{report}").map_err(io_error)
    }
}

/// `kvcli bench plot`: reads each window CSV and writes one SVG.
fn plot_command(args: &PlotArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut series = Vec::new();
    for input in &args.inputs {
        let (label, path) = match input.split_once('=') {
            Some((label, path)) if !label.is_empty() => (label.to_owned(), path),
            _ => {
                let stem = std::path::Path::new(input)
                    .file_stem()
                    .map_or_else(|| input.clone(), |s| s.to_string_lossy().into_owned());
                (stem, input.as_str())
            }
        };
        let text = std::fs::read_to_string(path).map_err(|error| PlotError::Read {
            path: path.to_owned(),
            error,
        })?;
        series.push(plot::parse_csv(&label, path, &text)?);
    }
    let options = PlotOptions {
        title: args.title.clone(),
        p99_limit_ms: args.p99_limit_ms,
    };
    let picture = plot::svg(&series, &options)?;
    std::fs::write(&args.out, picture)
        .map_err(|e| CliError::Io(format!("writing {}: {e}", args.out.display())))?;
    writeln!(
        out,
        "wrote {} ({} series)",
        args.out.display(),
        series.len()
    )
    .map_err(io_error)
}

async fn put(
    client: &Client,
    key: Bytes,
    value: Bytes,
    condition: Option<Precondition>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut session = client.register_session().await?;
    let result = match condition {
        Some(condition) => session.put_if(key, value, condition).await?,
        None => session.put(key, value).await?,
    };
    if json {
        print_json(out, &result)
    } else {
        writeln!(
            out,
            "revision {} version {}",
            result.revision, result.version
        )
        .map_err(io_error)
    }
}

async fn cluster(
    client: &Client,
    command: ClusterCommand,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        ClusterCommand::Nodes => {
            let nodes = client.nodes().await?;
            if json {
                return print_json(out, &serde_json::json!({ "nodes": nodes }));
            }
            writeln!(
                out,
                "{:<16} {:<10} {:<22} {:<22} {:<22} MATCH_INDEX",
                "ID", "ROLE", "RAFT_ADDR", "HTTP_ADDR", "GRPC_ADDR"
            )
            .map_err(io_error)?;
            for n in &nodes {
                let match_index = n
                    .match_index
                    .map_or_else(|| "-".to_owned(), |i| i.to_string());
                writeln!(
                    out,
                    "{:<16} {:<10} {:<22} {:<22} {:<22} {match_index}",
                    n.id.0,
                    n.role,
                    n.raft_addr.as_deref().unwrap_or("-"),
                    n.http_addr.as_deref().unwrap_or("-"),
                    n.grpc_addr.as_deref().unwrap_or("-")
                )
                .map_err(io_error)?;
            }
            Ok(())
        }
        ClusterCommand::Leader => {
            let leader = client.leader().await?;
            if json {
                return print_json(out, &leader);
            }
            writeln!(
                out,
                "{} raft {} http {} grpc {}",
                leader.id,
                leader.raft_addr,
                leader.http_addr,
                leader.grpc_addr.as_deref().unwrap_or("-")
            )
            .map_err(io_error)
        }
        ClusterCommand::Join {
            id,
            raft_addr,
            http_addr,
            grpc_addr,
        } => {
            let joined = client
                .join(&id, &raft_addr, &http_addr, grpc_addr.as_deref())
                .await?;
            if json {
                return print_json(out, &joined);
            }
            let cluster = joined
                .cluster_id
                .as_deref()
                .map_or(String::new(), |c| format!(" cluster {c}"));
            writeln!(out, "{} joined{cluster} as {}", joined.id, joined.role).map_err(io_error)?;
            // A blank node refuses to start unless told how: say what to pass.
            writeln!(
                out,
                "start it with: raftkv --node-id {id} --raft-addr {raft_addr} --http-addr {http_addr} --grpc-addr {} --join-addr <any member's HTTP URL>",
                grpc_addr.as_deref().unwrap_or("<its gRPC host:port>")
            )
            .map_err(io_error)
        }
        ClusterCommand::Remove { id } => {
            let removed = client.remove(&id).await?;
            if json {
                return print_json(out, &removed);
            }
            writeln!(out, "removed {}", removed.removed).map_err(io_error)
        }
        ClusterCommand::Transfer { id } => {
            let transferred = client.transfer_leader(&id).await?;
            if json {
                return print_json(out, &transferred);
            }
            writeln!(out, "{} is now the leader", transferred.leader).map_err(io_error)
        }
    }
}

/// The load-generator configuration of `args`.
pub fn bench_config(args: &BenchArgs, progress: bool) -> Result<BenchConfig, CliError> {
    let workload = match args.workload {
        WorkloadArg::Write => Workload::Write,
        WorkloadArg::WriteNew => Workload::WriteNew {
            run_tag: args.run_tag.unwrap_or_else(bench::newkeys::random_run_tag),
        },
        WorkloadArg::Read => Workload::Read,
        WorkloadArg::StaleRead => Workload::StaleRead,
        WorkloadArg::Mixed => Workload::Mixed {
            read_ratio: args.read_ratio,
        },
    };
    let stop = match (args.duration, args.ops) {
        (_, Some(ops)) => Stop::Ops(ops),
        (Some(d), None) => Stop::After(d),
        (None, None) => Stop::After(BENCH_DURATION_DEFAULT),
    };
    let config = BenchConfig {
        workload,
        concurrency: args.concurrency,
        keys: args.keys,
        key_size: args.key_size,
        value_size: args.value_size,
        stop,
        preload: args.preload,
        progress,
        window: args.window,
    };
    if args.run_tag.is_some() && args.workload != WorkloadArg::WriteNew {
        return Err(CliError::Usage(
            "--run-tag is for --workload write-new only".to_owned(),
        ));
    }
    bench::validate(&config)?;
    Ok(config)
}

/// A clap error as one line: its message lines before the usage, joined.
fn clap_error_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let mut parts = Vec::new();
    for line in rendered.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line);
        }
    }
    let joined = parts.join(" ");
    if joined.starts_with("error:") {
        joined
    } else {
        format!("error: {joined}")
    }
}

/// What a command line clap refused prints on stderr (exit code [`EXIT_USAGE`]): one line
/// saying what is wrong, except for a command line with no command at all (bare `kvcli`, or
/// `kvcli cluster`), for which the help is the useful answer.
fn usage_failure(e: &clap::Error) -> String {
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        e.render().to_string().trim_end().to_string()
    } else {
        clap_error_line(e)
    }
}

/// The `kvcli` program: parses the process's arguments, runs, and returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", usage_failure(&e));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let mut out = stdout.lock();
    let mut notes = std::io::stderr();
    let outcome = runtime.block_on(run(
        cli,
        &mut std::io::stdin(),
        Output {
            out: &mut out,
            notes: &mut notes,
            terminal,
        },
    ));
    let flushed = out.flush();
    match (outcome, flushed) {
        (Ok(()), Ok(())) => ExitCode::from(EXIT_OK),
        (Ok(()), Err(e)) => {
            eprintln!("error: writing output: {e}");
            ExitCode::from(EXIT_ERROR)
        }
        (Err(error), _) => {
            eprintln!("error: {error}");
            ExitCode::from(exit_code(&error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kvcli").chain(args.iter().copied()))
    }

    #[test]
    fn backup_save_waits_its_own_time_for_the_node() {
        // Given `backup save` without --wait, then it waits the SDK's default, however short
        // the global --timeout; with --wait, as long as told.
        let wait = |args: &[&str]| match parse(args).map(|cli| cli.command) {
            Ok(Command::Backup {
                command: BackupCommand::Save { wait, .. },
            }) => Some(wait),
            _ => None,
        };
        assert_eq!(
            wait(&["--timeout", "1s", "backup", "save", "f"]),
            Some(crate::client::BACKUP_HEAD_TIMEOUT_DEFAULT)
        );
        assert_eq!(
            wait(&["backup", "save", "--wait", "30m", "f"]),
            Some(Duration::from_secs(30 * 60))
        );
    }

    #[test]
    fn duration_flags_take_a_unit_or_count_seconds() {
        // Given each duration flag, when written with a unit or as a bare number, then a bare
        // number is seconds, and what is not a duration is refused.
        let timeout = |text: &str| parse(&["--timeout", text, "get", "k"]).map(|cli| cli.timeout);
        assert_eq!(timeout("500ms").ok(), Some(Duration::from_millis(500)));
        assert_eq!(timeout("2m").ok(), Some(Duration::from_secs(120)));
        assert_eq!(timeout("1.5").ok(), Some(Duration::from_millis(1500)));
        for bad in ["fast", "3 weeks", ""] {
            assert!(timeout(bad).is_err(), "{bad}");
        }
        let bench = |flag: &str, text: &str| {
            let cli = parse(&["bench", flag, text]).expect("valid");
            let Command::Bench(BenchCommand { args, .. }) = cli.command else {
                panic!("not bench")
            };
            (args.duration, args.window)
        };
        assert_eq!(bench("--duration", "30").0, Some(Duration::from_secs(30)));
        assert_eq!(bench("--window", "10s").1, Some(Duration::from_secs(10)));
    }

    #[test]
    fn global_flags_and_endpoints() {
        let cli = parse(&[
            "get",
            "k",
            "--stale",
            "--endpoints",
            "http://a:1,http://b:2",
            "--json",
            "--timeout",
            "2s",
        ])
        .expect("valid");
        assert_eq!(cli.endpoints, ["http://a:1", "http://b:2"]);
        assert!(cli.json);
        assert_eq!(cli.timeout, Duration::from_secs(2));
        assert!(matches!(cli.command, Command::Get { stale: true, .. }));
    }

    #[test]
    fn grpc_picks_grpc_endpoints_and_refuses_a_rest_url() {
        // Without endpoints, each protocol's default single node.
        assert_eq!(
            endpoints(&[], false).expect("ok"),
            ["http://127.0.0.1:8080"]
        );
        assert_eq!(endpoints(&[], true).expect("ok"), ["grpc://127.0.0.1:9090"]);
        // With --grpc, host:port is a gRPC endpoint and grpc:// stays as it is,
        let given = ["a:1".to_owned(), "grpc://b:2".to_owned()];
        assert_eq!(
            endpoints(&given, true).expect("ok"),
            ["grpc://a:1", "grpc://b:2"]
        );
        // but a REST URL is a usage error that says why.
        let e = endpoints(&["http://a:1".to_owned()], true).expect_err("a REST URL");
        assert!(e.to_string().contains("grpc://host:port"), "{e}");
        // Without --grpc the endpoints are kept as given (their schemes choose).
        assert_eq!(endpoints(&given, false).expect("ok"), ["a:1", "grpc://b:2"]);
        let cli = parse(&["bench", "--protocol", "grpc"]).expect("valid");
        let Command::Bench(BenchCommand { args, .. }) = cli.command else {
            panic!("not bench")
        };
        assert_eq!(args.protocol, ProtocolArg::Grpc);
        assert_eq!(args.grpc_connections, BENCH_GRPC_CONNECTIONS_DEFAULT);
        assert!(parse(&["bench", "--grpc-connections", "0"]).is_err());
    }

    #[test]
    fn put_and_cas_conditions() {
        let cli = parse(&["put", "k", "v", "--prev-version", "3"]).expect("valid");
        let Command::Put { condition, .. } = cli.command else {
            panic!("not put")
        };
        assert_eq!(condition.prev_version, Some(3));
        assert!(parse(&["put", "k", "v", "--prev-version", "3", "--prev-value", "x"]).is_err());
        let cli = parse(&["cas", "k", "--prev-value", "old", "new"]).expect("valid");
        let Command::Cas { condition, new, .. } = cli.command else {
            panic!("not cas")
        };
        assert_eq!(condition.prev_value, Some(OsString::from("old")));
        assert_eq!(new, "new");
        // cas needs exactly one condition
        assert!(parse(&["cas", "k", "new"]).is_err());
        assert!(
            parse(&[
                "cas",
                "k",
                "--prev-version",
                "1",
                "--prev-value",
                "x",
                "new"
            ])
            .is_err()
        );
    }

    #[test]
    fn delete_takes_a_key_a_prefix_or_all() {
        assert!(matches!(
            parse(&["delete", "k"]).expect("valid").command,
            Command::Delete {
                key: Some(_),
                prefix: None,
                all: false
            }
        ));
        assert!(matches!(
            parse(&["delete", "--prefix", "p/"]).expect("valid").command,
            Command::Delete {
                key: None,
                prefix: Some(_),
                all: false
            }
        ));
        assert!(matches!(
            parse(&["delete", "--all"]).expect("valid").command,
            Command::Delete {
                key: None,
                prefix: None,
                all: true
            }
        ));
        assert!(parse(&["delete"]).is_err());
        assert!(parse(&["delete", "k", "--prefix", "p"]).is_err());
        assert!(parse(&["delete", "k", "--all"]).is_err());
        assert!(parse(&["delete", "--prefix", "p", "--all"]).is_err());
    }

    #[test]
    fn cluster_and_admin_commands() {
        let cli =
            parse(&["cluster", "join", "n4", "127.0.0.1:7004", "127.0.0.1:8084"]).expect("valid");
        assert!(
            matches!(cli.command, Command::Cluster { command: ClusterCommand::Join { ref id, .. } } if id == "n4")
        );
        assert!(parse(&["cluster", "join", "n4"]).is_err());
        assert!(parse(&["cluster", "transfer", "n2"]).is_ok());
        assert!(parse(&["admin", "snapshot"]).is_ok());
        assert!(parse(&["cluster", "frobnicate"]).is_err());
    }

    #[test]
    fn bench_flags_make_a_config() {
        let cli = parse(&[
            "bench",
            "--workload",
            "mixed",
            "--read-ratio",
            "0.9",
            "--concurrency",
            "64",
            "--keys",
            "100",
            "--ops",
            "5000",
            "--target",
            "all",
            "--preload",
        ])
        .expect("valid");
        let Command::Bench(BenchCommand { args, .. }) = cli.command else {
            panic!("not bench")
        };
        assert_eq!(args.target, TargetArg::All);
        let config = bench_config(&args, false).expect("valid config");
        assert_eq!(config.workload, Workload::Mixed { read_ratio: 0.9 });
        assert_eq!(config.stop, Stop::Ops(5000));
        assert!(config.preload);
        assert_eq!((config.key_size, config.value_size), (16, 100));

        let Command::Bench(BenchCommand { args, .. }) = parse(&["bench"]).expect("valid").command
        else {
            panic!("not bench")
        };
        let config = bench_config(&args, false).expect("valid config");
        assert_eq!(config.stop, Stop::After(BENCH_DURATION_DEFAULT));
        assert_eq!(config.workload, Workload::Write);

        assert!(parse(&["bench", "--duration", "5s", "--ops", "10"]).is_err());
        assert!(parse(&["bench", "--workload", "scan"]).is_err());
        let Command::Bench(BenchCommand { args, .. }) = parse(&["bench", "--concurrency", "0"])
            .expect("parses")
            .command
        else {
            panic!("not bench")
        };
        let error = bench_config(&args, false).expect_err("zero concurrency");
        assert_eq!(exit_code(&error), EXIT_USAGE);
    }

    #[test]
    fn write_new_with_windows_and_a_csv_makes_a_config() {
        // Given the growing-keyspace flags, then the config has the tag and the window
        let cli = parse(&[
            "bench",
            "--workload",
            "write-new",
            "--run-tag",
            "a1b2c3",
            "--window",
            "10s",
            "--csv",
            "w.csv",
            "--duration",
            "5m",
        ])
        .expect("valid");
        let Command::Bench(BenchCommand {
            command: None,
            args,
        }) = cli.command
        else {
            panic!("not a bench run")
        };
        assert_eq!(args.csv, Some(PathBuf::from("w.csv")));
        let config = bench_config(&args, false).expect("valid config");
        assert_eq!(config.workload, Workload::WriteNew { run_tag: 0xa1b2c3 });
        assert_eq!(config.window, Some(Duration::from_secs(10)));
        assert_eq!(config.stop, Stop::After(Duration::from_secs(300)));
        // a CSV needs windows; a run tag is hex of at most 6 digits and for write-new only
        assert!(parse(&["bench", "--csv", "w.csv"]).is_err());
        assert!(parse(&["bench", "--workload", "write-new", "--run-tag", "1234567"]).is_err());
        assert!(parse(&["bench", "--workload", "write-new", "--run-tag", "xyz"]).is_err());
        let Command::Bench(BenchCommand { args, .. }) =
            parse(&["bench", "--run-tag", "1"]).expect("parses").command
        else {
            panic!("not bench")
        };
        assert!(matches!(
            bench_config(&args, false),
            Err(CliError::Usage(_))
        ));
        // a window under the minimum is refused before anything is sent
        let Command::Bench(BenchCommand { args, .. }) = parse(&["bench", "--window", "10ms"])
            .expect("parses")
            .command
        else {
            panic!("not bench")
        };
        let error = bench_config(&args, false).expect_err("window too short");
        assert_eq!(exit_code(&error), EXIT_USAGE);
    }

    #[test]
    fn bench_plot_is_a_subcommand_that_takes_csvs() {
        let cli = parse(&[
            "bench",
            "plot",
            "one node=a.csv",
            "b.csv",
            "--out",
            "g.svg",
            "--p99-limit-ms",
            "10",
        ])
        .expect("valid");
        let Command::Bench(BenchCommand {
            command: Some(BenchSubcommand::Plot(plot)),
            ..
        }) = cli.command
        else {
            panic!("not bench plot")
        };
        assert_eq!(plot.inputs, ["one node=a.csv", "b.csv"]);
        assert_eq!(plot.p99_limit_ms, Some(10.0));
        // run options do not mix with plot, and plot needs inputs and --out
        assert!(
            parse(&[
                "bench",
                "--concurrency",
                "4",
                "plot",
                "a.csv",
                "--out",
                "g.svg"
            ])
            .is_err()
        );
        assert!(parse(&["bench", "plot", "--out", "g.svg"]).is_err());
        assert!(parse(&["bench", "plot", "a.csv"]).is_err());
    }

    #[test]
    fn bare_kvcli_prints_the_help() {
        // Given no command at all, then the whole help is printed (commands and flags), not
        // one line; a command group alone prints its own help.
        let error = parse(&[]).expect_err("no command");
        let text = usage_failure(&error);
        assert!(text.contains("Usage: kvcli"), "{text}");
        assert!(
            text.contains("cluster") && text.contains("--endpoints"),
            "{text}"
        );
        assert!(text.contains("RAFTKV_ENDPOINTS"), "{text}");
        let error = parse(&["cluster"]).expect_err("no cluster command");
        let text = usage_failure(&error);
        assert!(
            text.contains("transfer") && text.contains("remove"),
            "{text}"
        );
    }

    #[test]
    fn usage_errors_render_as_one_line() {
        let error = parse(&["get"]).expect_err("missing key");
        let line = usage_failure(&error);
        assert!(line.starts_with("error: "), "{line}");
        assert!(line.contains("<KEY>"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn stdin_values_are_read_and_bounded() {
        let mut input: &[u8] = b"from stdin";
        assert_eq!(
            value_arg(&OsString::from("-"), &mut input).expect("small"),
            Bytes::from_static(b"from stdin")
        );
        let mut untouched: &[u8] = b"unused";
        assert_eq!(
            value_arg(&OsString::from("v"), &mut untouched).expect("literal"),
            Bytes::from_static(b"v")
        );
        let big = vec![b'x'; VALUE_BYTES_MAX + 1];
        let error = value_arg(&OsString::from("-"), &mut &big[..]).expect_err("too large");
        assert!(matches!(error, CliError::Client(Error::TooLarge(_))));
    }

    #[test]
    fn exit_codes_by_error() {
        let code = |e: Error| exit_code(&CliError::Client(e));
        assert_eq!(code(Error::NotFound { key: "k".into() }), EXIT_NOT_FOUND);
        assert_eq!(
            code(Error::CasFailed { current_version: 2 }),
            EXIT_CAS_FAILED
        );
        assert_eq!(code(Error::Unavailable(vec![])), EXIT_UNAVAILABLE);
        assert_eq!(code(Error::Timeout("t".into())), EXIT_UNAVAILABLE);
        assert_eq!(code(Error::Protocol("p".into())), EXIT_ERROR);
        assert_eq!(code(Error::BadRequest("b".into())), EXIT_ERROR);
    }
}
