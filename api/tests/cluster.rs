//! Real `raftkv` processes on loopback: a single node killed with SIGKILL, a 3-node cluster
//! losing its leader, a node catching up through a snapshot, membership changes, and hostile
//! input. Each test picks free ports, so the tests run in parallel.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::{
    Proc, SMALL_SEGMENTS_NO_SNAPSHOTS, http, leader_of, put_anywhere, ready, three_nodes,
    wait_until,
};

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
    // Small segments, so that a snapshot lets the WAL drop whole segments, and no catch-up
    // tail behind a snapshot, so that a follower behind it needs the snapshot itself.
    let mut extra = SMALL_SEGMENTS_NO_SNAPSHOTS.to_vec();
    extra.extend(["--set", "storage.snapshot_catchup_entries=0"]);
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
fn a_node_restarted_a_little_behind_catches_up_from_the_log_tail_not_a_snapshot() {
    // Given three nodes keeping the default catch-up tail (5,000 entries) behind each snapshot,
    let root = tempfile::tempdir().unwrap();
    let (n1, n2, mut n3) = three_nodes(root.path(), &SMALL_SEGMENTS_NO_SNAPSHOTS);
    // when n3 is down for a few hundred writes and the others snapshot and compact meanwhile,
    n3.kill9();
    for i in 0..300 {
        put_anywhere(&[&n1, &n2], &format!("bulk-{i}"), "v");
    }
    for n in [&n1, &n2] {
        let (status, body) = http(&n.http, "POST", "/admin/snapshot", b"");
        assert_eq!(status, 200, "snapshot on {}: {body}", n.name);
    }
    // then the restarted n3 catches up from the entries kept behind the snapshot: it has
    // every write, and took no snapshot from the leader.
    n3.start();
    wait_until("n3 has the last key", || {
        n3.get("/keys/bulk-299?consistency=stale") == (200, "v".to_string())
    });
    assert_eq!(n3.get("/keys/bulk-0?consistency=stale"), (200, "v".into()));
    let (_, body) = n3.get("/ready");
    assert!(
        body.contains("\"snapshot_index\":0"),
        "n3 installed a snapshot it did not need: {body}"
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
