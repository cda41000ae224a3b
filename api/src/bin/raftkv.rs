//! `raftkv`: one RaftKV node. With no configuration at all it is a single node with data in
//! `./data`, the HTTP API on `127.0.0.1:8080` and the gRPC API on `127.0.0.1:9090`; see
//! `config/config.example.yaml`.
//!
//! `raftkv restore --from FILE --data-dir DIR` prepares an empty data directory from a backup
//! (`kvcli backup save`), from which the node then founds a new cluster holding the backup's
//! data ([`api::restore`]; docs/operations.md, "Backup and restore").

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use api::config::{self, ConfigArgs};
use api::server::Server;
use clap::Parser;
use raft::core::Role;
use tracing::{info, warn};

/// How long a leader waits for its leadership transfer at shutdown before it stops anyway.
const SHUTDOWN_TRANSFER_WAIT: Duration = Duration::from_secs(2);

#[derive(Parser)]
#[command(
    name = "raftkv",
    version,
    about = "A RaftKV node: a strongly consistent key-value store"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    /// Without a command, run the node.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Prepare an empty data directory from a backup (kvcli backup save): a node started on it
    /// founds a new cluster holding the backup's data, with itself as the only member.
    Restore(RestoreArgs),
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// The backup file.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// storage.data_dir: the directory to prepare (empty or missing).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// raft.node_id: the node that will start on it, the new cluster's only voter. Required,
    /// not taken from a default: a node started under another name would wait forever for a
    /// vote from this one.
    #[arg(long)]
    node_id: String,
    /// The configuration file the node will start with (.yaml, .yml or .toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Restore(args)) = cli.command {
        return restore(cli.config, args);
    }
    let config = match config::load(&cli.config, std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("raftkv: {e}");
            return ExitCode::from(2);
        }
    };
    api::logging::init(&config);
    for note in &config.ignored_seed_keys {
        warn!("{note}");
    }
    // Before the runtime starts threads or anything opens a file (see `raise_fd_limit`).
    let fds = api::http::limits::raise_fd_limit();
    info!(
        before = fds.before,
        now = fds.now,
        hard = fds.hard,
        "file descriptor limit"
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(allocator::on_park)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftkv: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On a worker thread, not this one: everything the node allocates as it starts (the
    // restored state among it) then belongs to a thread that gives freed memory back as it
    // parks (`allocator::on_park`), where this thread sleeps in `block_on` for good.
    match runtime.block_on(runtime.spawn(run(config))) {
        Ok(code) => code,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => {
            eprintln!("raftkv: the node's task ended early: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `raftkv restore`: the node's configuration as it will start (the flags given before or
/// after `restore`, the file, the environment), then [`api::restore::restore`]. Prints one
/// line, on stdout when it worked, on stderr when it did not (the directory then untouched).
fn restore(mut flags: ConfigArgs, args: RestoreArgs) -> ExitCode {
    flags.data_dir = Some(args.data_dir);
    flags.node_id = Some(args.node_id);
    flags.config = args.config.or(flags.config);
    let config = match config::load(&flags, std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("raftkv: {e}");
            return ExitCode::from(2);
        }
    };
    match api::restore::restore(&args.from, &config) {
        Ok(restored) => {
            println!(
                "restored backup {} (index {}, term {}, {} keys, of cluster {}) into {} as new cluster {}, its log starting at index {} (client sessions are not carried over); start it with --node-id {} --data-dir {} (no --bootstrap or --join-addr needed), then join the other nodes to it with --join-addr",
                args.from.display(),
                restored.index,
                restored.term,
                restored.keys,
                restored.from_cluster,
                restored.data_dir.display(),
                restored.cluster_id,
                restored.start_index + 1,
                restored.node_id,
                restored.data_dir.display(),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raftkv: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: config::Config) -> ExitCode {
    let http_addr = config.http_bind_addr();
    let grpc_addr = config.grpc_bind_addr();
    // Every port is bound before the data directory is touched (the peer port inside
    // `Server::start`): a node that cannot listen leaves its data directory as it found it.
    let listener = match tokio::net::TcpListener::bind(&http_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("raftkv: cannot listen for HTTP on {http_addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let grpc_listener = match tokio::net::TcpListener::bind(&grpc_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("raftkv: cannot listen for gRPC on {grpc_addr} (server.grpc_addr): {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(config).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("raftkv: {e}");
            return ExitCode::FAILURE;
        }
    };
    let node = server.node.clone();
    api::logging::set_node_view(Box::new(move || {
        node.with_status(|s| (s.term.0, s.role == Some(Role::Leader)))
    }));
    let scheme = if server.tls.is_some() {
        "TLS"
    } else {
        "plain text"
    };
    let me = server.me();
    info!(http = %http_addr, grpc = %grpc_addr, over = scheme, advertised_http = %me.http_addr, advertised_grpc = me.grpc_addr.as_deref().unwrap_or(""), advertised_raft = %me.raft_addr, "serving the HTTP and gRPC APIs");
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let http = tokio::spawn(api::http::serve(
        listener,
        Arc::clone(&server),
        shutdown_rx.clone(),
    ));
    if let Some(tls) = &server.tls_files {
        tokio::spawn(api::tls::watch_files(Arc::clone(tls), shutdown_rx.clone()));
    }
    let grpc = tokio::spawn(api::grpc::serve(
        grpc_listener,
        Arc::clone(&server),
        shutdown_rx,
    ));

    wait_for_signal().await;
    info!("shutting down");
    hand_over_leadership(&server).await;
    let _ = shutdown_tx.send(true);
    let _ = http.await;
    let _ = tokio::time::timeout(api::service::REQUEST_TIMEOUT, grpc).await;
    server.node.shutdown().await;
    info!("stopped");
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// A leader with other voters hands leadership to the most caught-up one first, so the
/// cluster does not wait an election timeout.
async fn hand_over_leadership(server: &Server) {
    let status = server.node.status();
    if status.role != Some(Role::Leader) {
        return;
    }
    let target = status
        .match_index
        .iter()
        .filter(|(id, _)| *id != server.id && status.configuration.voters.contains(id))
        .max_by_key(|(_, m)| *m)
        .map(|(id, _)| *id);
    let Some(target) = target else { return };
    if server.node.transfer_leader(target).await.is_err() {
        return;
    }
    let mut watch = server.node.watch_status();
    let _ = tokio::time::timeout(SHUTDOWN_TRANSFER_WAIT, async {
        while watch.borrow_and_update().leader != Some(target) {
            if watch.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    info!(to = %raft::node::names::of(target), "leadership handed over before shutdown");
}

/// The node's memory allocator: mimalloc, with which the node spent about a fifth less CPU per
/// put than with glibc's malloc (one node, 64 gRPC writers: 20.4-20.6 µs against 24.2-25.5);
/// plus the one duty it needs from the runtime.
mod allocator {
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    #[global_allocator]
    static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

    /// The least time between two collections on one worker thread.
    const COLLECT_EVERY: Duration = Duration::from_millis(100);

    thread_local! {
        static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
    }

    /// Run by each runtime worker as it goes idle. mimalloc takes back the blocks other threads
    /// free, and gives empty pages back to the system, only within the thread that owns them,
    /// during that thread's later allocations; a worker that goes idle after a burst (500
    /// stalled uploads closed at once, api/tests/exhaustion.rs) would keep its share of the
    /// burst's memory for good. Collecting here gives it back, at most once per
    /// [`COLLECT_EVERY`] per thread, so that a busy node, which parks thousands of times a
    /// second, does not walk its heap on every park. What a worker's pages get back after its
    /// last collection waits for its next park: the next time any work reaches it.
    pub fn on_park() {
        let now = Instant::now();
        let due = LAST_COLLECT.with(|last| {
            let due = last.get().is_none_or(|at| now - at >= COLLECT_EVERY);
            if due {
                last.set(Some(now));
            }
            due
        });
        if due {
            // SAFETY: `mi_collect` takes no pointers and may be called on any thread outside
            // an allocation; it only returns to the system memory that no live block uses.
            unsafe { libmimalloc_sys::mi_collect(false) };
        }
    }
}
