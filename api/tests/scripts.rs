//! `scripts/cluster.sh` as an operator runs it (issue 11, part 5, as found on f4a642e: `stop &&
//! start` raced, and a node that died on the WAL lock was reported "started"): `start` returns
//! only once every node is ready and prints the endpoints for kvcli; `stop` returns only once
//! every node has exited, so an immediate `start` comes back whole.

mod common;

use std::path::Path;
use std::process::Command;

use common::{free_port, http};

/// A base such that base+1..=base+count are free and handed to no other caller: `free_port`
/// gives out ports in order, each once, so `count` of them in a row are such a run.
fn free_base(count: u16) -> u16 {
    loop {
        let first = free_port();
        if (1..count).all(|i| free_port() == first + i) {
            return first - 1;
        }
    }
}

/// Runs `scripts/cluster.sh ARGS` on the cluster in `dir`; returns (success, stdout+stderr).
fn cluster_sh(command: &str, dir: &Path, bases: Bases) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg(command)
        .arg(dir)
        .env("RAFTKV_BIN", env!("CARGO_BIN_EXE_raftkv"))
        .env("NODES", "3")
        .env("HTTP_BASE", bases.http.to_string())
        .env("RAFT_BASE", bases.raft.to_string())
        .env("GRPC_BASE", bases.grpc.to_string())
        .env("START_WAIT", "40")
        .output()
        .expect("run scripts/cluster.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The pid in node N's pid file.
fn pid_of(dir: &Path, n: u16) -> Option<u32> {
    std::fs::read_to_string(dir.join(format!("node{n}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is a live process (a zombie waiting to be reaped counts as exited).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z')
        })
        .unwrap_or(false)
}

/// Stops the cluster however the test ends, so a failed assertion leaves no node running.
struct StopOnDrop<'a> {
    dir: &'a Path,
    bases: Bases,
}

/// The port bases `scripts/cluster.sh` numbers its nodes' ports from.
#[derive(Clone, Copy)]
struct Bases {
    http: u16,
    raft: u16,
    grpc: u16,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = cluster_sh("stop", self.dir, self.bases);
    }
}

#[test]
fn cluster_sh_start_waits_for_ready_nodes_and_stop_for_exited_ones() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("cluster");
    let bases = Bases {
        http: free_base(3),
        raft: free_base(3),
        grpc: free_base(3),
    };
    let http_base = bases.http;
    let ready = |n: u16| {
        http(
            &format!("127.0.0.1:{}", http_base + n),
            "GET",
            "/ready",
            b"",
        )
        .0
    };

    let _stop = StopOnDrop { dir: &dir, bases };

    // When the cluster is started, then every node is ready as soon as `start` returns, and
    // the script says how to point kvcli at it.
    let (ok, text) = cluster_sh("start", &dir, bases);
    assert!(ok, "start failed: {text}");
    for n in 1..=3 {
        assert_eq!(ready(n), 200, "node{n} not ready after start: {text}");
    }
    let endpoints = (1..=3)
        .map(|n| format!("http://127.0.0.1:{}", http_base + n))
        .collect::<Vec<_>>()
        .join(",");
    assert!(
        text.contains(&format!("export RAFTKV_ENDPOINTS={endpoints}")),
        "{text}"
    );

    // When it is stopped and at once started again, then `stop` left no node running, and
    // the new start comes back whole (no node dies on the previous one's WAL lock).
    let pids: Vec<u32> = (1..=3).filter_map(|n| pid_of(&dir, n)).collect();
    assert_eq!(pids.len(), 3, "{text}");
    let (ok, text) = cluster_sh("stop", &dir, bases);
    assert!(ok, "stop failed: {text}");
    let running: Vec<u32> = pids.into_iter().filter(|pid| alive(*pid)).collect();
    assert!(
        running.is_empty(),
        "still running after stop returned: {running:?}"
    );
    let (ok, text) = cluster_sh("start", &dir, bases);
    assert!(ok, "restart failed: {text}");
    for n in 1..=3 {
        assert_eq!(ready(n), 200, "node{n} not ready after the restart: {text}");
    }
    let (ok, text) = cluster_sh("stop", &dir, bases);
    assert!(ok, "stop failed: {text}");
}
