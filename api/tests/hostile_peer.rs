//! Hostile peers, on real `raftkv` processes: anyone who can reach a node's Raft port can
//! write frames to it, and the cluster id they need is one `GET /cluster/id` away. Forged
//! frames (a heartbeat at term u64::MAX, a fake leader at term 5000) and a stream of random
//! and mutated frames must neither panic a node nor capture it: the cluster keeps serving, and
//! keeps serving after a full restart (a forged term, once adopted, was durable).
//!
//! The fuzz test is seeded: it prints its seed, and a failure prints the command that
//! replays it (`RAFTKV_FUZZ_SEED=... cargo test -p api --test hostile_peer`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Proc, put_anywhere, ready, three_nodes, wait_until};
use raft::core::{
    ConfChange, ConfChangeKind, Configuration, Entry, EntryPayload, LogIndex, Message, MessageBody,
    NodeId, Snapshot, SnapshotMetadata, TERM_JUMP_MAX, Term,
};
use raft::node::ClusterId;
use raft::node::driver::node_id_for_name;
use raft::transport::frame::{self, Frame, WIRE_VERSION};
use util::SplitMix64;

/// The cluster a node serves, as anyone can ask it.
fn cluster_of(p: &Proc) -> ClusterId {
    let (status, body) = p.get("/cluster/id");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    json["cluster_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a cluster id")
}

/// The term a node reports on `/ready`.
fn term_of(p: &Proc) -> Option<u64> {
    let (_, body) = p.get("/ready");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    json["term"].as_u64()
}

fn hello(from: NodeId, cluster: ClusterId) -> Frame {
    Frame::Hello {
        from,
        addr: "127.0.0.1:9".into(),
        cluster,
    }
}

fn encoded(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        frame::encode(f, &mut out);
    }
    out
}

/// Writes `bytes` to `p`'s Raft port, then reads what comes back for up to `linger` (long
/// enough for the node to take what was sent, or to refuse the caller), and hangs up. A node
/// that closes the connection early is fine: that is what it does to garbage.
fn send_raw(p: &Proc, bytes: &[u8], linger: Duration) {
    let Ok(mut stream) = TcpStream::connect(&p.raft) else {
        return;
    };
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(bytes).is_err() {
        return;
    }
    let _ = stream.set_read_timeout(Some(linger.min(Duration::from_millis(50))));
    let until = Instant::now() + linger;
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn heartbeat(from: NodeId, to: NodeId, term: u64) -> Message {
    Message {
        from,
        to,
        term: Term(term),
        body: MessageBody::Heartbeat {
            leader_commit: LogIndex(1_000_000),
            read_round: u64::MAX,
        },
    }
}

/// A fake leader's AppendEntries at `term`, carrying one entry and claiming it committed.
fn fake_append(from: NodeId, to: NodeId, term: u64) -> Message {
    Message {
        from,
        to,
        term: Term(term),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries: vec![Entry {
                term: Term(term),
                index: LogIndex(1),
                payload: EntryPayload::Normal(Bytes::from_static(b"forged")),
            }],
            leader_commit: LogIndex(1),
        },
    }
}

/// Every log line a node wrote that says something panicked.
fn panics_in(p: &Proc) -> Vec<String> {
    p.log_text()
        .lines()
        .filter(|l| l.contains("panicked"))
        .map(str::to_string)
        .collect()
}

/// The cluster serves: every node is ready (so no Raft loop has failed: `/ready` says so),
/// a write goes through, and every node reads it back; no node's term moved near the forged
/// ones; no node logged a panic.
fn assert_serving(nodes: &[&Proc], key: &str, value: &str) {
    for n in nodes {
        wait_until(&format!("{} is ready", n.name), || ready(n));
    }
    put_anywhere(nodes, key, value);
    for n in nodes {
        wait_until(&format!("{} reads {key}", n.name), || {
            n.get(&format!("/keys/{key}")) == (200, value.to_string())
        });
        let term = term_of(n).expect("a ready node reports its term");
        assert!(
            term < TERM_JUMP_MAX / 2,
            "{} adopted a forged term: {term}",
            n.name
        );
        assert_eq!(panics_in(n), Vec::<String>::new(), "{} panicked", n.name);
    }
}

#[test]
fn forged_term_frames_neither_panic_nor_capture_the_cluster_even_after_a_restart() {
    // Given a three-node cluster, and its id as anyone can read it,
    let root = tempfile::tempdir().unwrap();
    let (mut n1, mut n2, mut n3) = three_nodes(root.path(), &[]);
    let cluster = cluster_of(&n1);
    let id = |p: &Proc| node_id_for_name(&p.name);
    let linger = Duration::from_millis(800);
    // when each node gets, after a correct Hello, a heartbeat at term u64::MAX, once from a
    // member's id and once from an unknown id, and then a fake leader "12345" sends a
    // heartbeat and an entry claimed committed at term 5000,
    for (target, member) in [(&n1, &n2), (&n2, &n3), (&n3, &n1)] {
        let to = id(target);
        for from in [id(member), NodeId(999)] {
            let forged = encoded(&[
                hello(from, cluster),
                Frame::Message(heartbeat(from, to, u64::MAX)),
            ]);
            send_raw(target, &forged, linger);
        }
        // A node that knows no leader serves callers its configuration lacks (it may be the
        // one behind); the fake leader calls one that follows the real leader, as most are.
        wait_until(&format!("{} follows a leader", target.name), || {
            ready(target)
        });
        let fake = NodeId(12345);
        let forged = encoded(&[
            hello(fake, cluster),
            Frame::Message(heartbeat(fake, to, 5000)),
            Frame::Message(fake_append(fake, to, 5000)),
        ]);
        send_raw(target, &forged, linger);
    }
    // then the cluster keeps serving writes and reads on every node, no node adopted a forged
    // term or followed the fake leader, and nothing panicked,
    assert_serving(&[&n1, &n2, &n3], "after-forgery", "1");
    for n in [&n1, &n2, &n3] {
        let (_, leader) = n.get("/cluster/leader");
        assert!(!leader.contains("12345"), "{} follows {leader}", n.name);
    }
    // and the same holds once all three have been killed and restarted.
    for n in [&mut n1, &mut n2, &mut n3] {
        n.kill9();
    }
    for n in [&mut n1, &mut n2, &mut n3] {
        n.start();
    }
    assert_serving(&[&n1, &n2, &n3], "after-restart", "2");
    assert_eq!(n1.get("/keys/after-forgery"), (200, "1".to_string()));
    // The refusals were logged, naming what was refused.
    let logs = [&n1, &n2, &n3].map(|n| n.log_text()).join("\n");
    assert!(
        logs.contains("term_jump"),
        "no term refusal logged:\n{logs}"
    );
    assert!(
        logs.contains("not_member") || logs.contains("not a member"),
        "{logs}"
    );
}

/// Extreme and ordinary values for forged fields.
fn pick(rng: &mut SplitMix64) -> u64 {
    match rng.below(7) {
        0 => 0,
        1 => u64::MAX,
        2 => u64::MAX / 2 + rng.below(3),
        3 => TERM_JUMP_MAX * 2 + rng.below(1000),
        4 => 1 << (rng.below(64)),
        _ => u64::MAX - rng.below(5),
    }
}

/// A message with extreme values (its term always far out of reach), `from` as given.
fn extreme_message(rng: &mut SplitMix64, from: NodeId, to: NodeId) -> Message {
    let mut term = pick(rng);
    if term < TERM_JUMP_MAX * 2 {
        term = u64::MAX - term;
    }
    let body = match rng.below(10) {
        0 => MessageBody::RequestVote {
            pre_vote: rng.below(2) == 0,
            last_log_index: LogIndex(pick(rng)),
            last_log_term: Term(pick(rng)),
            leadership_transfer: true,
        },
        1 => MessageBody::AppendEntries {
            prev_log_index: LogIndex(pick(rng)),
            prev_log_term: Term(pick(rng)),
            entries: (0..rng.below(4))
                .map(|k| Entry {
                    term: Term(pick(rng)),
                    index: LogIndex(pick(rng).wrapping_add(k)),
                    payload: EntryPayload::ConfChange(ConfChange::single(
                        ConfChangeKind::RemoveNode,
                        NodeId(pick(rng)),
                    )),
                })
                .collect(),
            leader_commit: LogIndex(pick(rng)),
        },
        2 => MessageBody::AppendEntriesResponse {
            success: rng.below(2) == 0,
            index: LogIndex(pick(rng)),
            reject_hint_index: LogIndex(pick(rng)),
            reject_hint_term: Term(pick(rng)),
        },
        3 => MessageBody::Heartbeat {
            leader_commit: LogIndex(pick(rng)),
            read_round: pick(rng),
        },
        4 => MessageBody::HeartbeatResponse {
            read_round: pick(rng),
        },
        5 => MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                metadata: SnapshotMetadata {
                    index: LogIndex(pick(rng)),
                    term: Term(pick(rng)),
                    configuration: Configuration::with_voters([NodeId(pick(rng))]),
                },
                data: Bytes::new(),
            },
        },
        6 => MessageBody::TimeoutNow,
        7 => MessageBody::ReadIndex {
            context: Bytes::from(vec![0xab; rng.below(64) as usize]),
        },
        8 => MessageBody::ReadIndexResponse {
            context: Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 1]),
            index: LogIndex(pick(rng)),
        },
        _ => MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        },
    };
    Message {
        from,
        to,
        term: Term(term),
        body,
    }
}

/// One connection's worth of hostile bytes.
fn hostile_bytes(
    rng: &mut SplitMix64,
    cluster: ClusterId,
    members: &[NodeId],
    target: NodeId,
) -> Vec<u8> {
    let member = members[rng.below(members.len() as u64) as usize];
    let caller = match rng.below(4) {
        0 => NodeId(rng.next_u64()),
        _ => member,
    };
    let mut out = encoded(&[hello(caller, cluster)]);
    match rng.below(7) {
        // Random bytes, after a valid Hello or instead of one.
        0 => {
            if rng.below(2) == 0 {
                out.clear();
            }
            out.extend((0..rng.below(512)).map(|_| rng.next_u64() as u8));
        }
        // A length field claiming far more than the limit, or nothing.
        1 => {
            let len = [u32::MAX, frame::FRAME_BYTES_MAX + 1, 0][rng.below(3) as usize];
            out.extend_from_slice(&len.to_le_bytes());
            out.push(WIRE_VERSION);
        }
        // Well-formed messages with extreme values, some naming another sender than the
        // Hello did.
        2 | 3 => {
            for _ in 0..1 + rng.below(8) {
                let from = if rng.below(4) == 0 {
                    members[rng.below(members.len() as u64) as usize]
                } else {
                    caller
                };
                let m = extreme_message(rng, from, target);
                frame::encode(&Frame::Message(m), &mut out);
            }
        }
        // A valid message whose postcard body has a few bytes flipped.
        4 | 5 => {
            let m = extreme_message(rng, caller, target);
            let mut body = Vec::new();
            frame::encode(&Frame::Message(m), &mut body);
            for _ in 0..1 + rng.below(4) {
                // Never the length prefix (the frame would just be cut) nor the version.
                let at = 5 + rng.below(body.len() as u64 - 5) as usize;
                body[at] ^= 1 << rng.below(8);
            }
            out.extend(body);
        }
        // A snapshot stream that lies about its length or is out of order.
        _ => {
            let header = extreme_message(rng, caller, target);
            let frames = [
                Frame::SnapshotBegin {
                    message: header,
                    data_bytes: pick(rng),
                },
                Frame::SnapshotChunk(Bytes::from(vec![7u8; rng.below(2048) as usize])),
                Frame::SnapshotEnd,
                Frame::SnapshotEnd,
                Frame::Ack {
                    bytes: pick(rng),
                    busy: true,
                },
            ];
            for f in frames.iter().skip(rng.below(2) as usize) {
                frame::encode(f, &mut out);
            }
        }
    }
    out
}

#[test]
fn random_and_mutated_frames_for_a_few_seconds_leave_the_cluster_serving() {
    let seed = std::env::var("RAFTKV_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let secs: u64 = std::env::var("RAFTKV_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let replay = format!(
        "replay with: RAFTKV_FUZZ_SEED={seed} RAFTKV_FUZZ_SECS={secs} cargo test -p api --test hostile_peer random_and_mutated"
    );
    eprintln!("fuzz seed {seed}; {replay}");
    // Given a three-node cluster,
    let root = tempfile::tempdir().unwrap();
    let (n1, n2, n3) = three_nodes(root.path(), &[]);
    let cluster = cluster_of(&n1);
    let nodes = [&n1, &n2, &n3];
    let members: Vec<NodeId> = nodes.iter().map(|n| node_id_for_name(&n.name)).collect();
    // when, for a few seconds, connection after connection brings random bytes, huge
    // lengths, extreme field values, mutated bodies and messages claiming other senders, to
    // every node,
    let mut rng = SplitMix64::new(seed);
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let k = rng.below(3) as usize;
        let bytes = hostile_bytes(&mut rng, cluster, &members, members[k]);
        send_raw(nodes[k], &bytes, Duration::from_millis(20));
        sent += 1;
    }
    eprintln!("{sent} hostile connections sent");
    // then every node is still ready, writes and reads succeed, and nothing panicked.
    let check = std::panic::catch_unwind(|| assert_serving(&nodes, "after-fuzz", "ok"));
    if let Err(e) = check {
        eprintln!("fuzz failed; {replay}");
        std::panic::resume_unwind(e);
    }
}

/// Whether the node closed `stream` (end of stream or reset), reading away what it sent.
fn closed_by_node(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn more_idle_connections_to_the_raft_port_than_descriptors_are_capped_and_the_wal_keeps_writing() {
    common::raise_own_fd_limit();
    const NODE_FD_LIMIT: u64 = 1024;
    const IDLE_CONNECTIONS: usize = 1100;
    let root = tempfile::tempdir().unwrap();
    // Given a single node under `ulimit -n 1024`, whose WAL opens a new segment file every few
    // writes (4 KiB segments, no snapshot to close them),
    let node = common::founder_under_fd_limit(root.path(), NODE_FD_LIMIT);
    let cluster = cluster_of(&node);
    let member = node_id_for_name("n1");
    // when 1,100 connections to its Raft port are opened, each says a correct Hello (with
    // the member's id: nothing authenticates it), and all are left idle,
    let greeting = encoded(&[hello(member, cluster)]);
    let mut idle = Vec::new();
    let mut connect_failures = 0;
    for _ in 0..IDLE_CONNECTIONS {
        match TcpStream::connect(&node.raft) {
            Ok(mut s) => {
                let _ = s.write_all(&greeting);
                idle.push(s);
            }
            Err(_) => connect_failures += 1,
        }
    }
    // then at most PEER_CONNECTIONS_MAX of them are served, the rest closed,
    std::thread::sleep(Duration::from_secs(1));
    let closed = idle.iter_mut().map(closed_by_node).filter(|c| *c).count();
    let served = idle.len() - closed;
    println!(
        "{IDLE_CONNECTIONS} idle Raft-port connections under ulimit -n {NODE_FD_LIMIT}: \
         {served} served, {closed} closed by the node, {connect_failures} could not connect"
    );
    assert!(
        served <= raft::transport::PEER_CONNECTIONS_MAX,
        "{served} served"
    );
    // and writes go on, across many new WAL segments, on new client connections, while the
    // served ones are still held;
    let value = "x".repeat(200);
    for i in 0..150 {
        let (status, body) = node.put(&format!("k{i}"), &value);
        assert_eq!(status, 200, "write {i} during the flood: {body}");
    }
    assert_eq!(node.get("/health").0, 200);
    let log = node.log_text();
    assert!(log.contains("peer connections are open"), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
    // and once they close, everything written is there.
    drop(idle);
    for i in 0..150 {
        let (status, body) = node.get(&format!("/keys/k{i}"));
        assert_eq!(status, 200, "k{i}: {body}");
    }
    assert!(ready(&node));
}
