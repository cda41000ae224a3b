//! Helpers shared by the real-process tests: `raftkv` processes on loopback with free ports,
//! a minimal HTTP client, and waiting for a cluster to reach a state.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the helpers"
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for a cluster to reach a state before it fails.
pub const WAIT_MAX: Duration = Duration::from_secs(20);

/// Flags for small WAL segments and no automatic snapshot: a few hundred writes span several
/// segments, and only `POST /admin/snapshot` compacts.
pub const SMALL_SEGMENTS_NO_SNAPSHOTS: [&str; 4] = [
    "--set",
    "wal.segment_size=4KiB",
    "--set",
    "storage.snapshot_every=100000",
];

/// The test nodes' ports (see `util::ports`): 20000 on, apart from the Jepsen-style runs'
/// range (10000 on), as both may run on one machine.
static TEST_PORTS: util::PortRange = util::PortRange::new(20_000, 10_000);

/// A port nobody listens on right now, and that this process has not handed out before.
pub fn free_port() -> u16 {
    TEST_PORTS
        .free_port()
        .expect("a free test port (10,000 per test process)")
}

/// One `raftkv` process and how to reach it.
pub struct Proc {
    pub name: String,
    pub http: String,
    pub raft: String,
    pub grpc: String,
    pub dir: PathBuf,
    pub extra: Vec<String>,
    pub join: Option<String>,
    pub child: Option<Child>,
    /// Where the process's standard error goes (beside the data directory).
    pub log: PathBuf,
}

impl Proc {
    /// Starts a node; without `join` it founds a cluster (`--bootstrap`).
    pub fn new(name: &str, root: &Path, join: Option<&Proc>, extra: &[&str]) -> Proc {
        let mut p = Proc::configure(
            name,
            root,
            join.map(|j| format!("http://{}", j.http)),
            extra,
        );
        if p.join.is_none() {
            p.extra.push("--bootstrap".into());
        }
        p.start();
        p
    }

    /// A node's settings, not started: `extra` are further flags.
    pub fn configure(name: &str, root: &Path, join: Option<String>, extra: &[&str]) -> Proc {
        Proc {
            name: name.to_string(),
            http: format!("127.0.0.1:{}", free_port()),
            raft: format!("127.0.0.1:{}", free_port()),
            grpc: format!("127.0.0.1:{}", free_port()),
            dir: root.join(name),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            join,
            child: None,
            log: root.join(format!("{name}.log")),
        }
    }

    /// Starts the process (its standard error appended to `self.log`), logging warnings.
    pub fn start(&mut self) {
        let cmd = self.command(Command::new(env!("CARGO_BIN_EXE_raftkv")), "warn");
        self.spawn(cmd);
    }

    /// `program` (raftkv, or a wrapper that execs it with what follows) given this node's
    /// flags, logging at `log_level` to `self.log`.
    pub fn command(&self, mut program: Command, log_level: &str) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the node's log file");
        program
            .args([
                "--node-id",
                &self.name,
                "--raft-addr",
                &self.raft,
                "--http-addr",
                &self.http,
                "--grpc-addr",
                &self.grpc,
            ])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(&self.extra)
            .env("RUST_LOG", log_level)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if let Some(join) = &self.join {
            program.args(["--join-addr", join]);
        }
        program
    }

    /// Runs `cmd` (from [`Proc::command`]) as this node's process.
    pub fn spawn(&mut self, mut cmd: Command) {
        self.child = Some(cmd.spawn().expect("start raftkv"));
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> (u16, String) {
        http(&self.http, "GET", path, b"")
    }

    /// `PUT /keys/{key}`.
    pub fn put(&self, key: &str, value: &str) -> (u16, String) {
        http(&self.http, "PUT", &format!("/keys/{key}"), value.as_bytes())
    }
}

impl Proc {
    /// Stops the process with SIGTERM and waits for it to exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            child.wait().expect("reap");
        }
    }

    /// Waits up to [`WAIT_MAX`] for a process expected to stop by itself; returns whether it
    /// exited successfully, or `None` if it still runs.
    pub fn wait_exit(&mut self) -> Option<bool> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        while start.elapsed() < WAIT_MAX {
            if let Some(status) = child.try_wait().expect("poll the child") {
                self.child = None;
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Everything the process wrote to standard error so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the process, expects it to refuse to start, and returns its error output.
    pub fn start_expecting_refusal(&mut self) -> String {
        let before = self.log_text().len();
        self.start();
        let exited = self.wait_exit();
        let text = self.log_text()[before..].to_string();
        assert_eq!(
            exited,
            Some(false),
            "{} should refuse to start; its log: {text}",
            self.name
        );
        text
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A minimal HTTP/1.1 request (one per connection); status 0 when the node is unreachable.
pub fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    http_with(addr, method, path, "", body)
}

/// [`http`] with extra header lines (`"Name: value\r\n"` each).
pub fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String) {
    let (status, _, body) = http_full(addr, method, path, headers, body);
    (status, body)
}

/// [`http_with`], with the answer's header block (status line included) too.
pub fn http_full(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String, String) {
    let attempt = || -> std::io::Result<(u16, String, String)> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        stream.write_all(body)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .map(|(h, b)| (h.to_string(), b.to_string()))
            .unwrap_or_default();
        Ok((status, head, body))
    };
    attempt().unwrap_or((0, String::new(), String::new()))
}

/// The `Content-Length` of an HTTP answer's header block, if it has one that parses.
pub fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// A two-worker runtime for a test that drives a client (the gRPC and SDK tests).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Waits until `check` holds, failing the test after [`WAIT_MAX`].
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WAIT_MAX, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the node answers `/ready` with 200.
pub fn ready(p: &Proc) -> bool {
    p.get("/ready").0 == 200
}

/// Writes until one succeeds through any of `nodes`; returns the node index that answered.
pub fn put_anywhere(nodes: &[&Proc], key: &str, value: &str) -> usize {
    let start = Instant::now();
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if n.child.is_some() && n.put(key, value).0 == 200 {
                return i;
            }
        }
        assert!(
            start.elapsed() < WAIT_MAX,
            "no node accepted the write of {key}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// n1 founds, n2 and n3 join; returns once all three are ready voters.
pub fn three_nodes(root: &Path, extra: &[&str]) -> (Proc, Proc, Proc) {
    let n1 = Proc::new("n1", root, None, extra);
    wait_until("n1 leads", || ready(&n1));
    let n2 = Proc::new("n2", root, Some(&n1), extra);
    let n3 = Proc::new("n3", root, Some(&n1), extra);
    wait_until("three voters", || {
        let (_, body) = n1.get("/cluster/nodes");
        body.matches("\"role\":\"follower\"").count() == 2
    });
    wait_until("all ready", || ready(&n2) && ready(&n3));
    (n1, n2, n3)
}

/// The index of the node that says it leads.
pub fn leader_of(nodes: &[&Proc]) -> Option<usize> {
    nodes.iter().position(|n| {
        n.child.is_some() && {
            let (status, body) = n.get("/cluster/leader");
            status == 200 && body.contains(&format!("\"id\":\"{}\"", n.name))
        }
    })
}

/// Raises this process's soft limit on open files to its hard limit (a test that holds
/// more than 1,024 connections needs it).
pub fn raise_own_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
}

/// A lone node `n1` under `root` that founds its cluster under `ulimit -n LIMIT` (started
/// through `sh -c 'ulimit -n LIMIT && exec raftkv'`), with [`SMALL_SEGMENTS_NO_SNAPSHOTS`]
/// so that its WAL opens a new segment file every few writes; returned once it leads.
pub fn founder_under_fd_limit(root: &Path, limit: u64) -> Proc {
    let mut p = Proc::configure("n1", root, None, &SMALL_SEGMENTS_NO_SNAPSHOTS);
    p.extra.push("--bootstrap".into());
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_raftkv"));
    let cmd = p.command(sh, "warn");
    p.spawn(cmd);
    wait_until("n1 leads", || ready(&p));
    p
}

/// An HTTP/1.1 client on one kept-alive connection, for tests that write many keys: a new
/// connection per request would leave tens of thousands of sockets in TIME_WAIT.
pub struct Client {
    addr: String,
    stream: Option<std::io::BufReader<TcpStream>>,
}

impl Client {
    /// A client of the node at `addr`; it connects at its first request.
    pub fn new(addr: &str) -> Client {
        Client {
            addr: addr.to_string(),
            stream: None,
        }
    }

    /// One request; status 0 when the node is unreachable or the connection broke (the
    /// next request then opens a new one). Never retried: a write that got no answer is
    /// not acknowledged.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        match self.try_request(method, path, body) {
            Ok(answer) => answer,
            Err(_) => {
                self.stream = None;
                (0, String::new())
            }
        }
    }

    /// `PUT /keys/{key}`; returns the status.
    pub fn put(&mut self, key: &str, value: &str) -> u16 {
        self.request("PUT", &format!("/keys/{key}"), value.as_bytes())
            .0
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        use std::io::BufRead;
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            stream.set_nodelay(true)?;
            self.stream = Some(std::io::BufReader::new(stream));
        }
        let reader = self.stream.as_mut().expect("connected just above");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let out = reader.get_mut();
        out.write_all(head.as_bytes())?;
        out.write_all(body)?;
        let mut status_line = String::new();
        if reader.read_line(&mut status_line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = status_line
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.trim().eq_ignore_ascii_case("close");
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        if close {
            self.stream = None;
        }
        Ok((status, String::from_utf8_lossy(&body).to_string()))
    }
}

/// Runs `kvcli ARGS` in-process, reading `stdin` where it reads standard input; returns what
/// it printed and its exit code.
pub fn kvcli_with_stdin(args: &[&str], stdin: &str) -> (String, u8) {
    let mut argv = vec!["kvcli"];
    argv.extend_from_slice(args);
    let parsed =
        <cli::command::Cli as clap::Parser>::try_parse_from(argv).expect("valid arguments");
    let (mut out, mut notes) = (Vec::new(), Vec::new());
    let outcome = runtime().block_on(cli::command::run(
        parsed,
        &mut stdin.as_bytes(),
        cli::command::Output {
            out: &mut out,
            notes: &mut notes,
            terminal: false,
        },
    ));
    let code = match &outcome {
        Ok(()) => 0,
        Err(e) => cli::command::exit_code(e),
    };
    (String::from_utf8_lossy(&out).into_owned(), code)
}
