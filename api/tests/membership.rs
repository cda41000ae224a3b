//! Membership and restart safety, on real `raftkv` processes: cluster identity (no node is
//! captured by another cluster), joins that cannot break a cluster, restarts that always come
//! back, damaged data directories refused rather than silently shortened, failed starts that
//! leave nothing behind, and removed nodes that know it. Each test is one of the cases outside
//! testing found on f4a642e.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use common::{
    Proc, SMALL_SEGMENTS_NO_SNAPSHOTS, free_port, http, put_anywhere, ready, three_nodes,
    wait_until,
};

fn join_body(name: &str, raft: &str, http_addr: &str, extra: &str) -> Vec<u8> {
    format!(r#"{{"node_id":"{name}","raft_addr":"{raft}","http_addr":"{http_addr}"{extra}}}"#)
        .into_bytes()
}

fn post(p: &Proc, path: &str, body: &[u8]) -> (u16, String) {
    http(&p.http, "POST", path, body)
}

/// The term a node reports on `/ready` (`None` from a server that does not say).
fn term_of(p: &Proc) -> Option<u64> {
    let (_, body) = p.get("/ready");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    json["term"].as_u64()
}

fn roles(p: &Proc) -> Vec<(String, String)> {
    let (_, body) = p.get("/cluster/nodes");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    json["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    (
                        n["id"].as_str().unwrap_or("").to_string(),
                        n["role"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_node_of_another_cluster_is_never_captured_and_both_clusters_stay_available() {
    let root = tempfile::tempdir().unwrap();
    // Given y1, a cluster of one with 50 acknowledged writes,
    let y1 = Proc::new("y1", root.path(), None, &[]);
    wait_until("y1 leads", || ready(&y1));
    for i in 0..50 {
        assert_eq!(y1.put(&format!("y{i}"), "yes").0, 200);
    }
    // and x1, another cluster of one, at a higher term (each restart is one more election),
    let mut x1 = Proc::new("x1", root.path(), None, &[]);
    wait_until("x1 leads", || ready(&x1));
    for _ in 0..3 {
        x1.kill9();
        x1.start();
        wait_until("x1 leads again", || ready(&x1));
    }
    let y_term = term_of(&y1);
    // (A server older than `term` on /ready cannot say; the restarts above make it so anyway.)
    if let (Some(x), Some(y)) = (term_of(&x1), y_term) {
        assert!(x > y, "x1 at term {x}, y1 at {y}");
    }

    // when x1 is asked to add y1, then it refuses: y1 says it belongs to another cluster.
    let (status, body) = post(
        &x1,
        "/cluster/join",
        &join_body("y1", &y1.raft, &y1.http, ""),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("cluster_mismatch"), "{body}");

    // And when x1 is made to add y1 anyway (a caller that claims y1 is blank), the peer
    // handshake keeps them apart: y1 refuses x1's connections,
    let lie = join_body("y1", &y1.raft, &y1.http, r#","fresh":true"#);
    let (status, body) = post(&x1, "/cluster/join", &lie);
    assert_eq!(status, 200, "{body}");
    wait_until("y1 logs the refusal", || {
        y1.log_text().contains("refused a peer")
    });
    std::thread::sleep(Duration::from_secs(2));
    // then y1 keeps every acknowledged write, its own term and its clients,
    for i in 0..50 {
        assert_eq!(
            y1.get(&format!("/keys/y{i}")),
            (200, "yes".to_string()),
            "key y{i}"
        );
    }
    assert_eq!(term_of(&y1), y_term, "y1 never adopted x1's term");
    assert_eq!(y1.put("after", "y").0, 200);
    // and x1 keeps serving, with y1 a learner it never promotes.
    assert_eq!(x1.put("after", "x").0, 200);
    assert!(
        roles(&x1).contains(&("y1".to_string(), "learner".to_string())),
        "{:?}",
        roles(&x1)
    );
    assert_eq!(x1.get("/keys/y0").0, 404, "x1 never saw y1's data");
}

#[test]
fn a_node_added_by_name_and_started_without_join_addr_refuses_then_joins_when_told() {
    let root = tempfile::tempdir().unwrap();
    let (n1, n2, n3) = three_nodes(root.path(), &[]);
    // Given node4 added by name (as `kvcli cluster join` does) before it runs,
    let mut n4 = Proc::configure("n4", root.path(), None, &[]);
    let (status, body) = post(
        &n1,
        "/cluster/join",
        &join_body("n4", &n4.raft, &n4.http, ""),
    );
    assert_eq!(status, 200, "{body}");
    // when it is started with neither --join-addr nor --bootstrap, then it refuses with one
    // line that says what to pass, and leaves no data directory behind,
    let said = n4.start_expecting_refusal();
    assert!(
        said.contains("--join-addr") && said.contains("--bootstrap"),
        "{said}"
    );
    assert_eq!(said.trim().lines().count(), 1, "one line: {said}");
    assert!(!n4.dir.exists(), "a refused start creates nothing");
    // the cluster keeps serving (node4 is a learner, never promoted while unreachable),
    put_anywhere(&[&n1, &n2, &n3], "during", "1");
    assert!(roles(&n1).contains(&("n4".to_string(), "learner".to_string())));
    // and when it is started with --join-addr, it joins, catches up and is promoted.
    n4.join = Some(format!("http://{}", n1.http));
    n4.start();
    wait_until("n4 ready", || ready(&n4));
    wait_until("n4 promoted", || {
        roles(&n1)
            .iter()
            .any(|(id, role)| id == "n4" && (role == "follower" || role == "leader"))
    });
    assert_eq!(n4.get("/keys/during"), (200, "1".into()));
}

#[test]
fn a_cluster_stopped_right_after_forming_always_comes_back() {
    for stop_with_sigterm in [false, true] {
        let root = tempfile::tempdir().unwrap();
        // Given three nodes that just formed (no snapshot: the log holds everything),
        let (n1, n2, n3) = three_nodes(root.path(), &[]);
        let mut nodes = [n1, n2, n3];
        put_anywhere(&nodes.iter().collect::<Vec<_>>(), "k", "v");
        // when all stop within moments of each other,
        for n in nodes.iter_mut() {
            if stop_with_sigterm {
                n.terminate();
            } else {
                n.kill9();
            }
        }
        // then after a restart they elect a leader, know each other's addresses, and keep
        // every acknowledged write.
        for n in nodes.iter_mut() {
            n.start();
        }
        let refs: Vec<&Proc> = nodes.iter().collect();
        put_anywhere(&refs, "after", "1");
        for n in &nodes {
            wait_until(&format!("{} ready", n.name), || ready(n));
            assert_eq!(n.get("/keys/k"), (200, "v".into()), "{}", n.name);
            let (_, body) = n.get("/cluster/nodes");
            assert!(!body.contains("\"raft_addr\":null"), "{}: {body}", n.name);
        }
    }
}

#[test]
fn a_join_cannot_re_address_a_member_or_reuse_an_address_or_bring_a_bad_name() {
    let root = tempfile::tempdir().unwrap();
    let (n1, mut n2, n3) = three_nodes(root.path(), &[]);
    let elsewhere = format!("127.0.0.1:{}", free_port());
    // An existing member with new addresses is refused, and its record is unchanged.
    let (status, body) = post(
        &n1,
        "/cluster/join",
        &join_body("n2", &elsewhere, &elsewhere, ""),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("member_exists"), "{body}");
    // Another node at a member's address is refused.
    let (status, body) = post(
        &n3,
        "/cluster/join",
        &join_body("n9", &n2.raft, &elsewhere, ""),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("address_in_use"), "{body}");
    // Names follow the config file's rules.
    for bad in [
        "a\\nb".to_string(),
        "nul\\u0000".to_string(),
        "x".repeat(60_000),
    ] {
        let (status, body) = post(
            &n1,
            "/cluster/join",
            &join_body(&bad, &elsewhere, &elsewhere, ""),
        );
        assert_eq!(status, 400, "{}: {body}", &bad[..bad.len().min(20)]);
    }
    // The cluster is as it was: n2 keeps its address, and survives a restart of n2.
    let (_, body) = n1.get("/cluster/nodes");
    assert!(body.contains(&n2.raft), "{body}");
    n2.kill9();
    n2.start();
    wait_until("n2 ready after restart", || ready(&n2));
    put_anywhere(&[&n1, &n2, &n3], "still", "ok");
}

#[test]
fn unreachable_joiners_in_a_young_cluster_are_never_promoted() {
    let root = tempfile::tempdir().unwrap();
    // Given a young cluster of one (a log far shorter than the catch-up bound),
    let mut n1 = Proc::new("n1", root.path(), None, &[]);
    wait_until("n1 leads", || ready(&n1));
    // when five nodes are added at addresses where nothing runs,
    for i in 0..5 {
        let raft = format!("127.0.0.1:{}", free_port());
        let http_addr = format!("127.0.0.1:{}", free_port());
        let (status, body) = post(
            &n1,
            "/cluster/join",
            &join_body(&format!("ghost{i}"), &raft, &http_addr, ""),
        );
        assert_eq!(status, 200, "{body}");
    }
    std::thread::sleep(Duration::from_secs(2));
    // then they stay learners, the quorum stays one, and writes go on, across a restart.
    let learners = roles(&n1).iter().filter(|(_, r)| r == "learner").count();
    assert_eq!(learners, 5, "{:?}", roles(&n1));
    assert_eq!(n1.put("k", "v").0, 200);
    n1.kill9();
    n1.start();
    wait_until("n1 leads after a restart", || ready(&n1));
    assert_eq!(n1.put("k2", "v").0, 200);
}

#[test]
fn a_damaged_data_directory_is_refused_with_the_file_named_never_silently_shortened() {
    let root = tempfile::tempdir().unwrap();
    // Given a single node with 300 acknowledged writes over several small segments,
    let extra = SMALL_SEGMENTS_NO_SNAPSHOTS;
    let mut node = Proc::new("solo", root.path(), None, &extra);
    wait_until("the node leads", || ready(&node));
    let value = "v".repeat(100);
    for i in 0..300 {
        assert_eq!(node.put(&format!("k{i}"), &value).0, 200);
    }
    // (the commit index is saved every 100 ms; give it a moment as a real node would have)
    std::thread::sleep(Duration::from_millis(500));
    node.kill9();
    let pristine = root.path().join("pristine");
    copy_dir(&node.dir, &pristine);
    let wal = node.dir.join("wal");
    let segments = || {
        let mut names: Vec<_> = std::fs::read_dir(&wal)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .collect();
        names.sort();
        names
    };
    assert!(segments().len() > 2, "several segments: {:?}", segments());
    let restore = |node: &Proc| {
        std::fs::remove_dir_all(&node.dir).unwrap();
        copy_dir(&pristine, &node.dir);
    };

    type Damage = (&'static str, fn(&Path, &[std::path::PathBuf]), &'static str);
    let cases: [Damage; 4] = [
        (
            "the last segment cut to its header",
            |_, segs| {
                let last = segs.last().unwrap();
                let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
                f.set_len(wal::segment::SEGMENT_HEADER_BYTES).unwrap();
            },
            "committed",
        ),
        (
            "the last segment deleted",
            |_, segs| std::fs::remove_file(segs.last().unwrap()).unwrap(),
            "committed",
        ),
        (
            "the hard state deleted",
            |wal, _| std::fs::remove_file(wal.join("hardstate")).unwrap(),
            "hardstate",
        ),
        (
            "the hard state zeroed",
            |wal, _| {
                let len = std::fs::metadata(wal.join("hardstate")).unwrap().len();
                std::fs::write(wal.join("hardstate"), vec![0u8; len as usize]).unwrap();
            },
            "hardstate",
        ),
    ];
    for (what, damage, named) in cases {
        restore(&node);
        damage(&wal, &segments());
        let said = node.start_expecting_refusal();
        assert!(said.contains(named), "{what}: {said}");
    }
    // The write-ahead log deleted beside a snapshot is no fresh node either.
    restore(&node);
    node.start();
    wait_until("the node leads", || ready(&node));
    let (status, body) = http(&node.http, "POST", "/admin/snapshot", b"");
    assert_eq!(status, 200, "{body}");
    node.kill9();
    std::fs::remove_dir_all(&wal).unwrap();
    let said = node.start_expecting_refusal();
    assert!(said.contains("no write-ahead log"), "{said}");

    // And the undamaged directory still starts with every write.
    restore(&node);
    node.start();
    wait_until("the node leads", || ready(&node));
    for i in [0, 150, 299] {
        assert_eq!(node.get(&format!("/keys/k{i}")), (200, value.clone()));
    }
}

#[test]
fn a_failed_start_leaves_nothing_and_a_node_keeps_its_cluster() {
    let root = tempfile::tempdir().unwrap();
    let n1 = Proc::new("n1", root.path(), None, &[]);
    wait_until("n1 leads", || ready(&n1));
    // Given a blank node whose peer port is taken, when it is told to found a cluster, then
    // it refuses and leaves no data directory,
    let mut n2 = Proc::configure("n2", root.path(), None, &["--bootstrap"]);
    let taken = TcpListener::bind(&n2.raft).unwrap();
    let said = n2.start_expecting_refusal();
    assert!(said.contains("listening for peers"), "{said}");
    assert!(!n2.dir.exists(), "nothing founded on disk");
    drop(taken);
    // so that when it is then told to join, it joins.
    n2.extra.clear();
    n2.join = Some(format!("http://{}", n1.http));
    n2.start();
    wait_until("n2 ready in n1's cluster", || ready(&n2));
    // (while n2 is promoted a write may meet a 503 that a client retries)
    put_anywhere(&[&n2], "k", "v");
    assert_eq!(n1.get("/keys/k"), (200, "v".into()));

    // A node with another cluster's data, told to join this one, refuses to start.
    let mut y = Proc::new("y", root.path(), None, &[]);
    wait_until("y leads", || ready(&y));
    y.kill9();
    y.extra.clear();
    y.join = Some(format!("http://{}", n1.http));
    let said = y.start_expecting_refusal();
    assert!(said.contains("belongs to cluster"), "{said}");
}

#[test]
fn a_removed_node_learns_it_stops_campaigning_and_says_so_after_a_restart_too() {
    let root = tempfile::tempdir().unwrap();
    let (n1, n2, mut n3) = three_nodes(root.path(), &[]);
    // Given n3 removed from the cluster,
    let (status, body) = post(&n1, "/cluster/remove", br#"{"node_id":"n3"}"#);
    assert_eq!(status, 200, "{body}");
    // then it answers with 410 node_removed, and logs it,
    wait_until("n3 knows it was removed", || {
        let (status, body) = n3.put("x", "1");
        status == 410 && body.contains("node_removed")
    });
    assert!(n3.log_text().contains("removed"), "{}", n3.log_text());
    // while the others serve on, undisturbed.
    put_anywhere(&[&n1, &n2], "after", "1");
    // When it restarts with --join-addr, it still knows (and does not run as a candidate).
    n3.kill9();
    n3.join = Some(format!("http://{}", n1.http));
    n3.start();
    wait_until("n3 knows it after a restart", || {
        let (status, body) = n3.get("/keys/after");
        status == 410 && body.contains("node_removed")
    });
    let (_, body) = n3.get("/cluster/nodes");
    assert!(!body.contains("\"candidate\""), "{body}");
    put_anywhere(&[&n1, &n2], "later", "1");
}
