//! `raftkv`: one RaftKV node. With no configuration at all it is a single node with data in
//! `./data`, the HTTP API on `127.0.0.1:8080` and the gRPC API on `127.0.0.1:9090`; see
//! `config/config.example.yaml`.

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config::load(&cli.config, std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("raftkv: {e}");
            return ExitCode::from(2);
        }
    };
    api::logging::init(&config);
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
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftkv: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: config::Config) -> ExitCode {
    let http_addr = config.server.http_addr.clone();
    let grpc_addr = config.grpc_addr();
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
    info!(http = %http_addr, grpc = %grpc_addr, over = scheme, "serving the HTTP and gRPC APIs");
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
