//! The `raftkv` processes of a run: ports, data directories, starting, killing, pausing,
//! restarting and replacing nodes, and finding the server binary.
//!
//! A run has a fixed number of *slots*. Each slot has its HTTP port, the port of its Raft proxy
//! (advertised to peers as `raft.raft_addr`) and the port of its real Raft listener
//! (`raft.raft_listen_addr`), for the whole run. The process in a slot may be killed and
//! restarted with its data, or replaced by a new *incarnation* (a new node name, an empty data
//! directory) when the nemesis removes it from the cluster and adds it back.
//!
//! Invariants: every child process is killed (SIGKILL, after SIGCONT if it was paused) and
//! reaped when the [`Cluster`] is dropped, on every exit path including panics; all traffic is
//! on 127.0.0.1.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use thiserror::Error;

use super::proxy::Links;

/// Why a node could not be started or signalled.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// A process, port or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The `raftkv` binary is missing and could not be built.
    #[error("{0}")]
    Binary(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// The nodes' ports (see `util::ports`): 10000 on, apart from the API tests' range (20000
/// on), as both may run on one machine.
static PORTS: util::PortRange = util::PortRange::new(10_000, 10_000);

/// Picks a free loopback port that this process has not handed out before. Another process
/// could still bind it before the node does; the node then fails to start and the run reports
/// a setup error.
pub fn free_port() -> Result<u16, ClusterError> {
    PORTS.free_port().map_err(io("finding a free port"))
}

/// One node position of the cluster.
#[derive(Debug)]
pub struct Slot {
    /// Position, 0-based; slot 0 founds the cluster.
    pub index: usize,
    /// The current incarnation's node name (`n1`, then `n1.2` after a replacement, ...).
    pub name: String,
    /// Incarnation number, 1 for the first process of the slot.
    pub incarnation: u32,
    /// `127.0.0.1:port` of the HTTP API.
    pub http_addr: String,
    /// `127.0.0.1:port` of the gRPC API.
    pub grpc_addr: String,
    /// The proxy's address: what peers connect to (`raft.raft_addr`).
    pub raft_addr: SocketAddr,
    /// The real Raft listener (`raft.raft_listen_addr`), reached only through the proxy.
    pub listen_addr: SocketAddr,
    /// The running process, if any.
    child: Option<Child>,
    /// True while the process is stopped by SIGSTOP.
    pub paused: bool,
}

impl Slot {
    /// True when a process runs in this slot (paused or not).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id, while one runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The data directory of the current incarnation.
    fn data_dir(&self, root: &Path) -> PathBuf {
        root.join("data").join(&self.name)
    }
}

/// The processes of one run.
#[derive(Debug)]
pub struct Cluster {
    binary: PathBuf,
    root: PathBuf,
    log_level: String,
    links: Arc<Links>,
    /// The slots, by index.
    pub slots: Vec<Slot>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for index in 0..self.slots.len() {
            self.kill(index);
        }
    }
}

impl Cluster {
    /// Plans `nodes` slots with fresh ports (nothing is started). `proxy_addrs[i]` is where slot
    /// `i`'s proxy listens; `root` receives the data directories and the node logs.
    pub fn new(
        binary: PathBuf,
        root: PathBuf,
        proxy_addrs: &[SocketAddr],
        log_level: &str,
        links: Arc<Links>,
    ) -> Result<Cluster, ClusterError> {
        let mut slots = Vec::with_capacity(proxy_addrs.len());
        for (index, raft_addr) in proxy_addrs.iter().enumerate() {
            let listen_port = free_port()?;
            let slot = Slot {
                index,
                name: format!("n{}", index + 1),
                incarnation: 1,
                http_addr: format!("127.0.0.1:{}", free_port()?),
                grpc_addr: format!("127.0.0.1:{}", free_port()?),
                raft_addr: *raft_addr,
                listen_addr: SocketAddr::from(([127, 0, 0, 1], listen_port)),
                child: None,
                paused: false,
            };
            links.register(&slot.name, index);
            slots.push(slot);
        }
        std::fs::create_dir_all(root.join("logs"))
            .map_err(io(format!("creating {}", root.join("logs").display())))?;
        Ok(Cluster {
            binary,
            root,
            log_level: log_level.to_string(),
            links,
            slots,
        })
    }

    /// The HTTP addresses of all slots.
    pub fn http_addrs(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.http_addr.clone()).collect()
    }

    /// Where a fresh node in `index` asks to join: another slot whose process runs and is not
    /// paused (any other slot if none is). `None` for the founder, the first incarnation of
    /// slot 0: it alone may bootstrap, so that a restarted node can never found a second
    /// cluster.
    fn join_via(&self, index: usize) -> Option<String> {
        if index == 0 && self.slots[0].incarnation == 1 {
            return None;
        }
        let others = || self.slots.iter().filter(|s| s.index != index);
        others()
            .find(|s| s.is_running() && !s.paused)
            .or_else(|| others().next())
            .map(|s| s.http_addr.clone())
    }

    /// Starts the process of `index` with its current name and data directory (no-op when one
    /// runs). A node with data restarts from it (the server ignores the join address then); a
    /// fresh one joins the cluster, or founds it (slot 0's first incarnation).
    pub fn start(&mut self, index: usize) -> Result<(), ClusterError> {
        let join = self.join_via(index);
        let slot = &self.slots[index];
        if slot.child.is_some() {
            return Ok(());
        }
        let log_path = self.root.join("logs").join(format!("{}.log", slot.name));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("opening {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io(format!("opening {}", log_path.display())))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("--node-id")
            .arg(&slot.name)
            .arg("--raft-addr")
            .arg(slot.raft_addr.to_string())
            .arg("--set")
            .arg(format!("raft.raft_listen_addr={}", slot.listen_addr))
            .arg("--http-addr")
            .arg(&slot.http_addr)
            .arg("--grpc-addr")
            .arg(&slot.grpc_addr)
            .arg("--data-dir")
            .arg(slot.data_dir(&self.root))
            .arg("--log-level")
            .arg(&self.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        match join {
            Some(join) => command.arg("--join-addr").arg(format!("http://{join}")),
            None => command.arg("--bootstrap").arg("true"),
        };
        let child = command.spawn().map_err(io(format!(
            "starting {} for {}",
            self.binary.display(),
            slot.name
        )))?;
        let slot = &mut self.slots[index];
        slot.child = Some(child);
        slot.paused = false;
        Ok(())
    }

    /// Kills the process of `index` with SIGKILL and reaps it (no-op when none runs).
    pub fn kill(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if let Some(mut child) = slot.child.take() {
            // SIGKILL ends a stopped process too; reaping it frees the pid and the ports.
            let _ = child.kill();
            let _ = child.wait();
        }
        slot.paused = false;
    }

    /// Stops the process of `index` with SIGSTOP (it keeps its sockets; peers see silence).
    pub fn pause(&mut self, index: usize) -> Result<(), ClusterError> {
        if let Some(pid) = self.slots[index].pid() {
            signal("-STOP", pid)?;
            self.slots[index].paused = true;
        }
        Ok(())
    }

    /// Resumes a process stopped by [`Cluster::pause`].
    pub fn resume(&mut self, index: usize) -> Result<(), ClusterError> {
        if let Some(pid) = self.slots[index].pid()
            && self.slots[index].paused
        {
            signal("-CONT", pid)?;
        }
        self.slots[index].paused = false;
        Ok(())
    }

    /// Replaces the node of `index` by a new incarnation: kills the process, and gives the slot a
    /// new name and an empty data directory (the caller starts it; it joins). The old
    /// incarnation's data stays on disk for inspection.
    pub fn replace(&mut self, index: usize) -> String {
        self.kill(index);
        let slot = &mut self.slots[index];
        slot.incarnation += 1;
        slot.name = format!("n{}.{}", index + 1, slot.incarnation);
        self.links.register(&slot.name, index);
        slot.name.clone()
    }

    /// Whether each slot's process has exited by itself (a crash), with its exit status.
    pub fn crashed(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for slot in &mut self.slots {
            if let Some(child) = &mut slot.child
                && let Ok(Some(status)) = child.try_wait()
            {
                out.push((slot.name.clone(), status.to_string()));
                slot.child = None;
            }
        }
        out
    }
}

/// Sends a signal with the `kill` command (no `libc` binding needed).
fn signal(which: &str, pid: u32) -> Result<(), ClusterError> {
    let status = Command::new("kill")
        .arg(which)
        .arg(pid.to_string())
        .status()
        .map_err(io(format!("running kill {which} {pid}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(ClusterError::Io {
            what: format!("kill {which} {pid}"),
            source: std::io::Error::other(status.to_string()),
        })
    }
}

/// Finds the `raftkv` binary: `explicit` if given, else `$RAFTKV_BIN`, else the one next to the
/// running executable (cargo puts all of a workspace's binaries in one directory; a test runs
/// from its `deps/` subdirectory). When that is missing, builds it with `cargo build -p api
/// --bin raftkv` in the same profile, so `cargo run -p sim --bin jepsen` works from a clean
/// tree.
pub fn find_raftkv(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(ClusterError::Binary(format!(
                "the raftkv binary {} does not exist",
                path.display()
            )))
        };
    }
    if let Some(path) = std::env::var_os("RAFTKV_BIN").map(PathBuf::from)
        && path.is_file()
    {
        return Ok(path);
    }
    let exe = std::env::current_exe().map_err(io("finding the running executable"))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| ClusterError::Binary("the executable has no directory".into()))?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let candidate = dir.join(format!("raftkv{}", std::env::consts::EXE_SUFFIX));
    if candidate.is_file() {
        return Ok(candidate);
    }
    // target/<profile>/: build the server there.
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let target_dir = dir
        .parent()
        .ok_or_else(|| ClusterError::Binary("the executable is not under a target dir".into()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "-p", "api", "--bin", "raftkv"])
        .env("CARGO_TARGET_DIR", target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    let status = build
        .status()
        .map_err(io("running cargo build -p api --bin raftkv"))?;
    if status.success() && candidate.is_file() {
        Ok(candidate)
    } else {
        Err(ClusterError::Binary(format!(
            "no raftkv binary at {} and `cargo build -p api --bin raftkv` failed ({status}); \
             build it, or pass --raftkv PATH",
            candidate.display()
        )))
    }
}
