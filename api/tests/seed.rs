//! The seed's ways of starting and joining nodes, on real processes: the per-node files
//! `config/node*.yaml`, the seed's environment variables (a `join_addr` ending in
//! `/cluster/join`), its join body `{"node_id", "addr"}`, and its snapshot answer's names.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Proc, http, ready, wait_until};

/// The repository's file for node `n`, with its addresses moved to `p`'s free ports (and
/// node1's, for a joiner) and its data directory to `p`'s, so the test runs beside anything
/// else on the machine; every other line is the file as shipped.
fn node_file(n: u32, p: &Proc, node1: Option<&Proc>, root: &Path) -> PathBuf {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../config/node{n}.yaml"));
    let mut text = std::fs::read_to_string(&shipped).expect("the shipped node file");
    let replacements = [
        (format!("127.0.0.1:{}", 6999 + n), p.raft.clone()),
        (format!("127.0.0.1:{}", 8080 + n), p.http.clone()),
        (format!("127.0.0.1:{}", 9090 + n), p.grpc.clone()),
        (format!("./data/node{n}"), p.dir.display().to_string()),
    ];
    for (from, to) in replacements {
        assert!(text.contains(&from), "node{n}.yaml names {from}");
        text = text.replace(&from, &to);
    }
    if let Some(node1) = node1 {
        assert!(text.contains("http://127.0.0.1:8081/cluster/join"));
        text = text.replace("127.0.0.1:8081", &node1.http);
    }
    let path = root.join(format!("node{n}.yaml"));
    std::fs::write(&path, text).expect("write the node file");
    path
}

/// Starts `p` as `raftkv --config file` with the seed's variables `vars`, logging warnings.
fn start_with(p: &mut Proc, config: Option<&Path>, vars: &[(&str, &str)], flags: &[&str]) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.log)
        .expect("open the node's log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftkv"));
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.args(flags)
        .envs(vars.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    p.spawn(cmd);
}

fn voters(p: &Proc) -> usize {
    let (_, body) = p.get("/cluster/nodes");
    body.matches("\"role\":\"leader\"").count() + body.matches("\"role\":\"follower\"").count()
}

#[test]
fn the_per_node_files_and_the_seeds_join_forms_make_a_working_cluster() {
    let root = tempfile::tempdir().expect("a temporary directory");
    // Given node1..3 started from the shipped per-node files (node2 and node3 join with the
    // seed's full /cluster/join URL),
    let mut n1 = Proc::configure("node1", root.path(), None, &[]);
    let file1 = node_file(1, &n1, None, root.path());
    start_with(&mut n1, Some(&file1), &[], &[]);
    wait_until("node1 founds and leads", || ready(&n1));
    let mut n2 = Proc::configure("node2", root.path(), None, &[]);
    let mut n3 = Proc::configure("node3", root.path(), None, &[]);
    for (n, p) in [(2, &mut n2), (3, &mut n3)] {
        let file = node_file(n, p, Some(&n1), root.path());
        start_with(p, Some(&file), &[], &[]);
    }
    // then the three are voters, and a write through a follower is read through the other.
    wait_until("three voters", || voters(&n1) == 3);
    wait_until("node2 and node3 ready", || ready(&n2) && ready(&n3));
    assert_eq!(n2.put("greeting", "hello").0, 200);
    assert_eq!(n3.get("/keys/greeting"), (200, "hello".to_string()));

    // When an operator adds node4 with the seed's join body, which names only the Raft
    // address (`addr`),
    let mut n4 = Proc::configure("node4", root.path(), None, &[]);
    let body = format!(r#"{{"node_id":"node4","addr":"{}"}}"#, n4.raft);
    let (status, answer) = http(&n3.http, "POST", "/cluster/join", body.as_bytes());
    // then it is added (through a follower, forwarded to the leader) as a learner,
    assert_eq!(status, 200, "{answer}");
    let (_, nodes) = n1.get("/cluster/nodes");
    assert!(nodes.contains("node4"), "{nodes}");
    // and node4, started with the seed's Compose variables, joins for itself: its HTTP address
    // is recorded, it is promoted once caught up, and it serves the cluster's data.
    let join = format!("http://{}/cluster/join", n1.http);
    let flags = [
        "--raft-addr".to_string(),
        n4.raft.clone(),
        "--http-addr".to_string(),
        n4.http.clone(),
        "--grpc-addr".to_string(),
        n4.grpc.clone(),
        "--data-dir".to_string(),
        n4.dir.display().to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    start_with(
        &mut n4,
        None,
        &[
            ("RAFTKV_RAFT__ENABLED", "true"),
            ("RAFTKV_RAFT__NODE_ID", "node4"),
            ("RAFTKV_RAFT__JOIN_ADDR", &join),
        ],
        &flags,
    );
    wait_until("four voters", || voters(&n1) == 4);
    wait_until("node4's HTTP address recorded", || {
        n1.get("/cluster/nodes").1.contains(&n4.http)
    });
    wait_until("node4 ready", || ready(&n4));
    assert_eq!(n4.get("/keys/greeting"), (200, "hello".to_string()));

    // The seed's names in the snapshot answer carry the same figures as ours.
    let (status, answer) = http(&n1.http, "POST", "/admin/snapshot", b"");
    assert_eq!(status, 200, "{answer}");
    let info: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    assert!(info["index"].as_u64().is_some_and(|i| i > 0), "{info}");
    assert_eq!(info["raft_index"], info["index"], "{info}");
    assert_eq!(info["raft_term"], info["term"], "{info}");
    assert_eq!(info["key_count"], info["keys"], "{info}");
    assert_eq!(info["key_count"], 1, "{info}");
}

#[test]
fn the_seeds_single_node_mode_founds_on_its_own_and_refuses_fsync_off() {
    let root = tempfile::tempdir().expect("a temporary directory");
    // Given a named node in the seed's single-node mode, with the seed's ":port" address,
    let mut solo = Proc::configure("solo", root.path(), None, &[]);
    let port = solo.http.rsplit_once(':').expect("host:port").1.to_string();
    let flags = [
        "--raft-addr".to_string(),
        solo.raft.clone(),
        "--http-addr".to_string(),
        format!(":{port}"),
        "--grpc-addr".to_string(),
        solo.grpc.clone(),
        "--data-dir".to_string(),
        solo.dir.display().to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    start_with(
        &mut solo,
        None,
        &[
            ("RAFTKV_RAFT__ENABLED", "false"),
            ("RAFTKV_RAFT__NODE_ID", "solo"),
            ("RAFTKV_SERVER__ADVERTISE_HOST", "127.0.0.1"),
            ("RAFTKV_CACHE__ENABLED", "true"),
        ],
        &flags,
    );
    // then it founds a cluster of one on every interface, advertised as asked,
    wait_until("the single node is ready", || ready(&solo));
    assert_eq!(solo.put("k", "v").0, 200);
    // (A founder records its own addresses shortly after it leads: a write may be answered
    // first.)
    let advertised = format!("127.0.0.1:{port}");
    wait_until("the node lists itself at its advertised address", || {
        solo.get("/cluster/nodes").1.contains(&advertised)
    });
    // and the ignored seed key is reported once, with why.
    solo.terminate();
    let log = solo.log_text();
    assert!(
        log.contains("cache.enabled") && log.contains("ignored"),
        "{log}"
    );

    // Given fsync turned off the seed's way, then the node refuses to start, in one line,
    // and leaves its data as it was.
    let mut refused = Proc::configure("refused", root.path(), None, &[]);
    let dir = refused.dir.display().to_string();
    start_with(
        &mut refused,
        None,
        &[("RAFTKV_STORAGE__SYNC_ON_WRITE", "false")],
        &["--data-dir", &dir],
    );
    assert_eq!(refused.wait_exit(), Some(false));
    let log = refused.log_text();
    assert!(
        log.contains("storage.sync_on_write=false") && log.contains("refused"),
        "{log}"
    );
    assert_eq!(log.trim().lines().count(), 1, "{log}");
    assert!(!refused.dir.exists(), "nothing was written");
}
