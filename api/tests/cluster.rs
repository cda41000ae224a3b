//! Real `raftkv` processes on loopback: a single node killed with SIGKILL, a 3-node cluster
//! losing its leader, a node catching up through a snapshot, membership changes, and hostile
//! input. Each test picks free ports, so the tests run in parallel.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for a cluster to reach a state before it fails.
const WAIT_MAX: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("a bound socket has an address")
        .port()
}

/// One `raftkv` process and how to reach it.
struct Proc {
    name: String,
    http: String,
    raft: String,
    dir: PathBuf,
    extra: Vec<String>,
    join: Option<String>,
    child: Option<Child>,
}

impl Proc {
    fn new(name: &str, root: &Path, join: Option<&Proc>, extra: &[&str]) -> Proc {
        let mut p = Proc {
            name: name.to_string(),
            http: format!("127.0.0.1:{}", free_port()),
            raft: format!("127.0.0.1:{}", free_port()),
            dir: root.join(name),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            join: join.map(|j| format!("http://{}", j.http)),
            child: None,
        };
        p.start();
        p
    }

    fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftkv"));
        cmd.args([
            "--node-id",
            &self.name,
            "--raft-addr",
            &self.raft,
            "--http-addr",
            &self.http,
        ])
        .arg("--data-dir")
        .arg(&self.dir)
        .args(&self.extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(join) = &self.join {
            cmd.args(["--join-addr", join]);
        }
        self.child = Some(cmd.spawn().expect("start raftkv"));
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http(&self.http, "GET", path, b"")
    }

    fn put(&self, key: &str, value: &str) -> (u16, String) {
        http(&self.http, "PUT", &format!("/keys/{key}"), value.as_bytes())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A minimal HTTP/1.1 request (one per connection); status 0 when the node is unreachable.
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let attempt = || -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        stream.write_all(body)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    };
    attempt().unwrap_or((0, String::new()))
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WAIT_MAX, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ready(p: &Proc) -> bool {
    p.get("/ready").0 == 200
}

/// Writes until one succeeds through any of `nodes`; returns the node index that answered.
fn put_anywhere(nodes: &[&Proc], key: &str, value: &str) -> usize {
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

fn three_nodes(root: &Path, extra: &[&str]) -> (Proc, Proc, Proc) {
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

fn leader_of(nodes: &[&Proc]) -> Option<usize> {
    nodes.iter().position(|n| {
        n.child.is_some() && {
            let (status, body) = n.get("/cluster/leader");
            status == 200 && body.contains(&format!("\"id\":\"{}\"", n.name))
        }
    })
}

#[test]
fn a_single_node_survives_kill_9_with_every_acknowledged_write() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Proc::new("solo", root.path(), None, &[]);
    wait_until("the node leads", || ready(&node));
    let mut acked = Vec::new();
    for i in 0..200 {
        let (status, _) = node.put(&format!("k{i}"), &format!("v{i}"));
        assert_eq!(status, 200, "write {i}");
        acked.push(i);
    }
    node.kill9();
    node.start();
    wait_until("the node leads again", || ready(&node));
    for i in acked {
        assert_eq!(
            node.get(&format!("/keys/k{i}")),
            (200, format!("v{i}")),
            "key k{i}"
        );
    }
}

#[test]
fn a_three_node_cluster_serves_from_any_node_and_survives_the_loss_of_its_leader() {
    let root = tempfile::tempdir().unwrap();
    let (n1, n2, n3) = three_nodes(root.path(), &[]);
    let mut nodes = [n1, n2, n3];

    // Given a healthy cluster, a write through a follower is read back from every node,
    // linearizably and stale (after the follower has caught up).
    let leader = leader_of(&nodes.iter().collect::<Vec<_>>()).expect("a leader");
    let follower = (leader + 1) % 3;
    assert_eq!(nodes[follower].put("through-follower", "yes").0, 200);
    for n in &nodes {
        assert_eq!(
            n.get("/keys/through-follower"),
            (200, "yes".into()),
            "{}",
            n.name
        );
        wait_until("stale read catches up", || {
            n.get("/keys/through-follower?consistency=stale") == (200, "yes".into())
        });
    }

    // When the leader is killed, a new one is elected and writes continue.
    let mut acked = vec!["through-follower".to_string()];
    for i in 0..20 {
        let key = format!("before-{i}");
        assert_eq!(nodes[follower].put(&key, "1").0, 200);
        acked.push(key);
    }
    nodes[leader].kill9();
    for i in 0..20 {
        let key = format!("after-{i}");
        put_anywhere(&nodes.iter().collect::<Vec<_>>(), &key, "1");
        acked.push(key);
    }
    let new_leader = leader_of(&nodes.iter().collect::<Vec<_>>()).expect("a new leader");
    assert_ne!(new_leader, leader);

    // Then every acknowledged write is present, and the killed node catches up on restart.
    nodes[leader].start();
    for key in &acked {
        for n in &nodes {
            wait_until(&format!("{key} on {}", n.name), || {
                n.get(&format!("/keys/{key}?consistency=stale")).0 == 200
            });
        }
    }
}

#[test]
fn a_node_restarted_after_the_others_compacted_catches_up_through_a_snapshot() {
    let root = tempfile::tempdir().unwrap();
    // Small segments, so that a snapshot lets the WAL drop whole segments.
    let extra = [
        "--set",
        "wal.segment_size=4KiB",
        "--set",
        "storage.snapshot_every=100000",
    ];
    let (n1, n2, mut n3) = three_nodes(root.path(), &extra);
    n3.kill9();
    let value = "x".repeat(200);
    for i in 0..300 {
        put_anywhere(&[&n1, &n2], &format!("bulk-{i}"), &value);
    }
    for n in [&n1, &n2] {
        let (status, body) = http(&n.http, "POST", "/admin/snapshot", b"");
        assert_eq!(status, 200, "snapshot on {}: {body}", n.name);
        assert!(body.contains("\"keys\":300"), "{body}");
    }
    n3.start();
    wait_until("n3 has the last key", || {
        n3.get("/keys/bulk-299?consistency=stale") == (200, value.clone())
    });
    assert_eq!(
        n3.get("/keys/bulk-0?consistency=stale"),
        (200, value.clone())
    );
    // It got there through the leader's snapshot: its own log now starts after one.
    let (_, body) = n3.get("/ready");
    assert!(
        !body.contains("\"snapshot_index\":0"),
        "n3 installed no snapshot: {body}"
    );
}

#[test]
fn a_fourth_node_joins_as_a_learner_is_promoted_then_removed_and_leadership_moves() {
    let root = tempfile::tempdir().unwrap();
    let (n1, n2, n3) = three_nodes(root.path(), &[]);
    n1.put("k", "v");
    let n4 = Proc::new("n4", root.path(), Some(&n2), &[]);
    wait_until("n4 promoted to voter", || {
        let (_, body) = n1.get("/cluster/nodes");
        body.matches("\"role\":\"follower\"").count() + body.matches("\"role\":\"leader\"").count()
            == 4
    });
    assert_eq!(n4.get("/keys/k"), (200, "v".into()));

    let nodes = [&n1, &n2, &n3, &n4];
    let leader = leader_of(&nodes).expect("a leader");
    let target = (leader + 1) % 4;
    let (status, body) = http(
        &nodes[leader].http,
        "POST",
        "/cluster/transfer-leader",
        format!("{{\"node_id\":\"{}\"}}", nodes[target].name).as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    wait_until("the target leads", || leader_of(&nodes) == Some(target));

    let victim = (target + 1) % 4;
    let (status, body) = http(
        &nodes[target].http,
        "POST",
        "/cluster/remove",
        format!("{{\"node_id\":\"{}\"}}", nodes[victim].name).as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    wait_until("three members left", || {
        let (_, body) = nodes[target].get("/cluster/nodes");
        body.matches("\"id\"").count() == 3
            && !body.contains(&format!("\"{}\"", nodes[victim].name))
    });
    put_anywhere(&[nodes[target]], "after-removal", "ok");
}

#[test]
fn bad_input_gets_clear_errors_and_the_node_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    let node = Proc::new("solo", root.path(), None, &[]);
    wait_until("the node leads", || ready(&node));

    let (status, body) = http(&node.http, "POST", "/cluster/join", b"{not json");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"code\":\"bad_request\""), "{body}");

    let big = vec![b'v'; kv::VALUE_BYTES_MAX + 1];
    let (status, body) = http(&node.http, "PUT", "/keys/big", &big);
    assert_eq!(status, 413, "{body}");

    let (status, body) = node.get("/no/such/route");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no_route"), "{body}");

    let (status, _) = http(&node.http, "PUT", "/keys/%zz", b"v");
    assert_eq!(status, 400);

    // A peer that sends garbage frames loses its connection, nothing else.
    for garbage in [
        &b"\xff\xff\xff\xffnonsense"[..],
        b"\x05\x00\x00\x00\x01\xff\xff\xff\xff",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(&node.raft).unwrap();
        let _ = s.write_all(garbage);
    }
    assert_eq!(node.put("still", "serving").0, 200);
    assert_eq!(node.get("/keys/still"), (200, "serving".into()));
}
