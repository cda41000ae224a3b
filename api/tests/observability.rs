//! Metrics and logs of real `raftkv` processes (issue 16): every series the seed names is
//! served by a live node, values follow what happened (N writes move the counters by N, a
//! leader change is seen once by every node, a snapshot counts once), label values stay
//! bounded, metrics can be turned off, and request ids travel with a request across
//! forwarding onto the JSON log lines of both nodes.

mod common;

use std::process::Command;

use common::{Proc, http, http_full, leader_of, ready, three_nodes, wait_until};

/// The value of the series `name` whose labels include `labels`, summed over every such
/// series (0 when there is none).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, sample) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let wanted = series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
            wanted.then(|| sample.parse::<f64>().ok()).flatten()
        })
        .sum()
}

fn scrape(p: &Proc) -> String {
    let (status, text) = p.get("/metrics");
    assert_eq!(status, 200, "{}: GET /metrics: {text}", p.name);
    text
}

/// Every family the node serves, by name (from its `# TYPE` lines).
fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

/// The seed's names and types, exactly.
const SEED: [(&str, &str); 11] = [
    ("kvstore_http_requests_total", "counter"),
    ("kvstore_http_request_duration_seconds", "histogram"),
    ("kvstore_storage_operations_total", "counter"),
    ("kvstore_storage_operation_duration_seconds", "histogram"),
    ("kvstore_storage_keys_total", "gauge"),
    ("raftkv_wal_segments_total", "gauge"),
    ("raftkv_wal_size_bytes", "gauge"),
    ("raftkv_wal_entries_compacted_total", "counter"),
    ("raftkv_raft_log_size_bytes", "gauge"),
    ("raftkv_raft_log_entries_total", "gauge"),
    ("raftkv_raft_is_leader", "gauge"),
];

/// What etcd's operators watch, under `raftkv_` (the leader serves all of them once it has
/// replicated, snapshotted and served gRPC).
const ETCD_STYLE: [&str; 30] = [
    "raftkv_raft_has_leader",
    "raftkv_raft_term",
    "raftkv_raft_commit_index",
    "raftkv_raft_applied_index",
    "raftkv_raft_leader_changes_seen_total",
    "raftkv_raft_role",
    "raftkv_raft_elections_started_total",
    "raftkv_raft_read_index_rounds_total",
    "raftkv_proposals_committed_total",
    "raftkv_proposals_applied_total",
    "raftkv_proposals_pending",
    "raftkv_proposals_failed_total",
    "raftkv_wal_fsync_duration_seconds",
    "raftkv_snapshot_duration_seconds",
    "raftkv_snapshot_size_bytes",
    "raftkv_snapshots_total",
    "raftkv_snapshots_sent_total",
    "raftkv_snapshots_received_total",
    "raftkv_snapshot_index",
    "raftkv_peer_replication_lag_entries",
    "raftkv_peer_round_trip_time_seconds",
    "raftkv_peer_sent_bytes_total",
    "raftkv_peer_received_bytes_total",
    "raftkv_cluster_members",
    "raftkv_sessions",
    "raftkv_quota_bytes",
    "raftkv_quota_used_bytes",
    "raftkv_disk_free_bytes",
    "raftkv_grpc_requests_total",
    "raftkv_node_info",
];

/// A gRPC KV client of `p`.
async fn kv_client(p: &Proc) -> proto::pb::kv_client::KvClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", p.grpc))
        .expect("a valid URI")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {}'s gRPC at {}: {e}", p.name, p.grpc));
    proto::pb::kv_client::KvClient::new(channel)
}

fn leader<'a>(nodes: &[&'a Proc]) -> &'a Proc {
    let mut at = None;
    wait_until("a leader", || {
        at = leader_of(nodes);
        at.is_some()
    });
    nodes[at.expect("waited for it")]
}

#[test]
fn a_live_cluster_serves_every_metric_by_its_seed_name_and_values_follow_what_happened() {
    let root = tempfile::tempdir().unwrap();
    // Given a three-node cluster,
    let (n1, n2, n3) = three_nodes(root.path(), &[]);
    let nodes = [&n1, &n2, &n3];
    let lead = leader(&nodes);
    let follower = nodes.iter().find(|n| n.name != lead.name).unwrap();
    // that has served a gRPC call and taken a snapshot,
    let (status, _) = http(&lead.http, "PUT", "/keys/warm-up", b"x");
    assert_eq!(status, 200);
    let rt = common::runtime();
    rt.block_on(async {
        let mut kv = kv_client(lead).await;
        let answer = kv
            .get(proto::pb::GetRequest {
                key: bytes::Bytes::from_static(b"no-such-key"),
                consistency: proto::pb::Consistency::Linearizable as i32,
            })
            .await;
        assert_eq!(answer.unwrap_err().code(), tonic::Code::NotFound);
    });
    let before = scrape(lead);
    let (status, _) = http(&lead.http, "POST", "/admin/snapshot", b"");
    assert_eq!(status, 200);

    // when N new keys are written through a follower (forwarded to the leader) and read back,
    const N: usize = 40;
    let follower_before = scrape(follower);
    for i in 0..N {
        let (status, body) = http(&follower.http, "PUT", &format!("/keys/new-{i}"), b"v");
        assert_eq!(status, 200, "{body}");
        let (status, _) = http(&lead.http, "GET", &format!("/keys/new-{i}"), b"");
        assert_eq!(status, 200);
    }
    let (status, _) = http(&lead.http, "GET", "/keys/missing-key", b"");
    assert_eq!(status, 404);
    let (status, _) = http(&lead.http, "PUT", "/keys/new-0?prev_version=9", b"v");
    assert_eq!(status, 409);
    let after = scrape(lead);
    let follower_after = scrape(follower);

    // then the leader serves every seed name with its type, and the etcd-style ones,
    let served = families(&after);
    for (name, kind) in SEED {
        assert!(
            served.iter().any(|(n, t)| n == name && t == kind),
            "{name} ({kind}) missing from the leader's /metrics:\n{after}"
        );
    }
    for name in ETCD_STYLE {
        assert!(
            served.iter().any(|(n, _)| n == name),
            "{name} missing from the leader's /metrics:\n{after}"
        );
    }
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    // and the counters moved by what happened: N puts answered 200 on the leader (each
    // forwarded one arrives there), N reads, one 404 and one failed compare-and-swap,
    let put_ok = [
        ("method", "PUT"),
        ("path", "/keys/{key}"),
        ("status", "200"),
    ];
    assert_eq!(moved("kvstore_http_requests_total", &put_ok), N as f64);
    let get_ok = [("method", "GET"), ("path", "/keys/{key}"), ("code", "ok")];
    assert_eq!(moved("kvstore_http_requests_total", &get_ok), N as f64);
    let missing = [("status", "404"), ("code", "not_found")];
    assert_eq!(moved("kvstore_http_requests_total", &missing), 1.0);
    let cas = [("status", "409"), ("code", "cas_failed")];
    assert_eq!(moved("kvstore_http_requests_total", &cas), 1.0);
    let ops = "kvstore_storage_operations_total";
    assert_eq!(
        moved(ops, &[("operation", "put"), ("status", "ok")]),
        N as f64
    );
    assert_eq!(
        moved(ops, &[("operation", "get"), ("status", "ok")]),
        N as f64
    );
    assert_eq!(
        moved(ops, &[("operation", "get"), ("status", "not_found")]),
        1.0
    );
    let failed_cas = [("operation", "put"), ("status", "failed_precondition")];
    assert_eq!(moved(ops, &failed_cas), 1.0);
    assert_eq!(moved("kvstore_storage_keys_total", &[]), N as f64);
    assert!(moved("raftkv_proposals_committed_total", &[]) >= (N + 1) as f64);
    assert!(moved("raftkv_raft_read_index_rounds_total", &[]) >= N as f64);
    // the follower only forwarded its writes: it counts the requests, not the operations,
    let f_moved = |name: &str, labels: &[(&str, &str)]| {
        value(&follower_after, name, labels) - value(&follower_before, name, labels)
    };
    assert_eq!(f_moved("kvstore_http_requests_total", &put_ok), N as f64);
    assert_eq!(f_moved(ops, &[("operation", "put")]), 0.0);
    // a snapshot counted once, gRPC calls by method and code,
    assert_eq!(moved("raftkv_snapshots_total", &[]), 1.0);
    assert!(value(&after, "raftkv_snapshot_index", &[]) > 0.0);
    let grpc_get = [("method", "/raftkv.v1.KV/Get"), ("code", "NOT_FOUND")];
    assert_eq!(value(&after, "raftkv_grpc_requests_total", &grpc_get), 1.0);
    // the leader's view of each peer, and the state gauges,
    for peer in nodes.iter().filter(|n| n.name != lead.name) {
        let by_peer = [("peer", peer.name.as_str())];
        assert!(value(&after, "raftkv_peer_sent_bytes_total", &by_peer) > 0.0);
        assert!(value(&after, "raftkv_peer_received_bytes_total", &by_peer) > 0.0);
        assert!(
            value(
                &after,
                "raftkv_peer_round_trip_time_seconds_count",
                &by_peer
            ) > 0.0,
            "heartbeat round trips to {}",
            peer.name
        );
    }
    assert_eq!(value(&after, "raftkv_raft_is_leader", &[]), 1.0);
    assert_eq!(
        value(&after, "raftkv_raft_role", &[("role", "leader")]),
        1.0
    );
    assert_eq!(
        value(&after, "raftkv_cluster_members", &[("kind", "voter")]),
        3.0
    );
    assert_eq!(value(&follower_after, "raftkv_raft_is_leader", &[]), 0.0);
    assert_eq!(value(&follower_after, "raftkv_raft_has_leader", &[]), 1.0);
    // and no key ever became a label value.
    assert!(!after.contains("new-1"), "a key in a label:\n{after}");

    // When leadership moves to another node,
    let changes = |p: &Proc| value(&scrape(p), "raftkv_raft_leader_changes_seen_total", &[]);
    let elections = |p: &Proc| value(&scrape(p), "raftkv_raft_elections_started_total", &[]);
    let seen_before: Vec<f64> = nodes.iter().map(|n| changes(n)).collect();
    let elections_before = elections(follower);
    let target = follower.name.clone();
    let (status, body) = http(
        &lead.http,
        "POST",
        "/cluster/transfer-leader",
        format!("{{\"node_id\":\"{target}\"}}").as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    wait_until("the new leader leads", || {
        leader_of(&nodes).is_some_and(|i| nodes[i].name == target) && nodes.iter().all(|n| ready(n))
    });
    // then every node saw exactly one leader change, and the new leader started an election.
    wait_until("every node saw the change", || {
        nodes
            .iter()
            .zip(&seen_before)
            .all(|(n, before)| changes(n) == before + 1.0)
    });
    assert!(elections(follower) > elections_before);
}

#[test]
fn a_follower_brought_back_by_a_snapshot_counts_it_and_the_leader_counts_what_it_compacted() {
    let root = tempfile::tempdir().unwrap();
    // Given three nodes with small WAL segments, snapshots only on demand and a short
    // catch-up tail, so that a follower far enough behind needs a snapshot,
    let flags = [
        "--set",
        "wal.segment_size=4KiB",
        "--set",
        "storage.snapshot_every=100000",
        "--set",
        "storage.snapshot_catchup_entries=10",
    ];
    let (n1, n2, n3) = three_nodes(root.path(), &flags);
    let mut nodes = [n1, n2, n3];
    let lead = {
        let refs: Vec<&Proc> = nodes.iter().collect();
        let at = leader_of(&refs).expect("a formed cluster has a leader");
        nodes[at].name.clone()
    };
    let at = |name: &str| nodes.iter().position(|n| n.name == name).unwrap();
    let leader = at(&lead);
    let follower = (leader + 1) % 3;
    // when the follower is down while the others take 300 writes and the leader snapshots,
    nodes[follower].kill9();
    for i in 0..300 {
        let (status, body) = http(
            &nodes[leader].http,
            "PUT",
            &format!("/keys/gap-{i}"),
            b"value",
        );
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = http(&nodes[leader].http, "POST", "/admin/snapshot", b"");
    assert_eq!(status, 200, "{body}");
    let leader_metrics = scrape(&nodes[leader]);
    assert!(
        value(&leader_metrics, "raftkv_wal_entries_compacted_total", &[]) > 0.0,
        "the snapshot compacted the leader's WAL:\n{leader_metrics}"
    );
    assert_eq!(value(&leader_metrics, "raftkv_snapshots_total", &[]), 1.0);
    // and the follower comes back,
    nodes[follower].start();
    // then it catches up from a snapshot it counts, and the leader counts the one it sent.
    wait_until("the follower installs a snapshot", || {
        let (status, text) = nodes[follower].get("/metrics");
        status == 200 && value(&text, "raftkv_snapshots_received_total", &[]) == 1.0
    });
    wait_until("the leader counts the snapshot it sent", || {
        value(&scrape(&nodes[leader]), "raftkv_snapshots_sent_total", &[]) >= 1.0
    });
    let (status, _) = nodes[follower].get("/keys/gap-299?consistency=stale");
    assert_eq!(status, 200);
}

#[test]
fn metrics_can_be_turned_off() {
    let root = tempfile::tempdir().unwrap();
    // Given a node started with metrics off,
    let node = Proc::new(
        "n1",
        root.path(),
        None,
        &["--set", "observability.metrics_enabled=false"],
    );
    wait_until("ready", || ready(&node));
    // then /metrics is no route, and requests are served as before.
    let (status, body) = node.get("/metrics");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("metrics_enabled"), "{body}");
    assert_eq!(http(&node.http, "PUT", "/keys/k", b"v").0, 200);
}

/// Starts a node logging JSON lines at `debug` for the API (its failed requests) and `warn`
/// elsewhere.
fn json_logging(name: &str, root: &std::path::Path, join: Option<&Proc>) -> Proc {
    let mut p = Proc::configure(
        name,
        root,
        join.map(|j| format!("http://{}", j.http)),
        &["--log-format", "json"],
    );
    if join.is_none() {
        p.extra.push("--bootstrap".into());
    }
    let cmd = p.command(Command::new(env!("CARGO_BIN_EXE_raftkv")), "warn,api=debug");
    p.spawn(cmd);
    p
}

/// The node's log lines, each parsed (every line must be one JSON object).
fn json_lines(p: &Proc) -> Vec<serde_json::Value> {
    p.log_text()
        .lines()
        .map(|line| {
            assert!(
                !line.contains('\x1b'),
                "a colour code in a log file: {line:?}"
            );
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {line}", p.name))
        })
        .collect()
}

#[test]
fn a_request_id_travels_with_a_forwarded_request_onto_both_nodes_log_lines() {
    let root = tempfile::tempdir().unwrap();
    // Given two nodes logging JSON lines, the second following the first,
    let n1 = json_logging("n1", root.path(), None);
    wait_until("n1 leads", || ready(&n1));
    let n2 = json_logging("n2", root.path(), Some(&n1));
    wait_until("n2 ready", || ready(&n2));
    assert_eq!(http(&n1.http, "PUT", "/keys/k", b"v").0, 200);

    // when a client sends a failing compare-and-swap with its id to the follower,
    let (status, head, _) = http_full(
        &n2.http,
        "PUT",
        "/keys/k?prev_version=7",
        "X-Request-Id: trace-me-42\r\n",
        b"w",
    );
    assert_eq!(status, 409);
    // then the answer carries the id,
    assert!(
        head.to_ascii_lowercase()
            .contains("x-request-id: trace-me-42"),
        "{head}"
    );
    // and both nodes' lines about it carry it, with the seed's fields.
    for node in [&n1, &n2] {
        wait_until("the line is written", || {
            json_lines(node)
                .iter()
                .any(|l| l["request_id"] == "trace-me-42")
        });
        let lines = json_lines(node);
        let line = lines
            .iter()
            .find(|l| l["request_id"] == "trace-me-42")
            .expect("waited for it");
        assert_eq!(line["node_id"], node.name.as_str(), "{line}");
        assert_eq!(line["level"], "debug", "{line}");
        assert_eq!(line["op"], "put", "{line}");
        assert_eq!(line["key"], "k", "{line}");
        assert!(line["msg"].is_string() && line["ts"].is_string(), "{line}");
        assert!(
            line["term"].is_u64() && line["is_leader"].is_boolean(),
            "{line}"
        );
        assert_eq!(line["is_leader"], node.name == "n1", "{line}");
    }

    // A request without an id gets one of the node's own, and so does a gRPC call through
    // the follower, whose id reaches the leader in the call's metadata.
    let (_, head, _) = http_full(&n2.http, "GET", "/keys/absent", "", b"");
    assert!(
        head.to_ascii_lowercase().contains("x-request-id: "),
        "{head}"
    );
    let rt = common::runtime();
    let answered = rt.block_on(async {
        let mut kv = kv_client(&n2).await;
        let mut request = tonic::Request::new(proto::pb::PutRequest {
            key: bytes::Bytes::from_static(b"k"),
            value: bytes::Bytes::from_static(b"w"),
            condition: Some(proto::pb::put_request::Condition::PrevVersion(7)),
            session: None,
        });
        request
            .metadata_mut()
            .insert("x-request-id", "grpc-trace-7".parse().unwrap());
        kv.put(request).await
    });
    let status = answered.expect_err("the condition does not hold");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        status
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("grpc-trace-7")
    );
    wait_until("the leader logs the forwarded call", || {
        json_lines(&n1)
            .iter()
            .any(|l| l["request_id"] == "grpc-trace-7")
    });
    // A request with an unusable id (a space would break a log line's fields) is served
    // under one of the node's own.
    let (status, head, _) = http_full(
        &n1.http,
        "GET",
        "/keys/k",
        "X-Request-Id: two words\r\n",
        b"",
    );
    assert_eq!(status, 200);
    let id = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-request-id: ")
                .map(str::to_string)
        })
        .expect("an id on the answer");
    assert_eq!(id.len(), 16, "{id}");
}
