//! `kill -9` while a snapshot is being written or installed, on real `raftkv` processes
//! (issue 12: "a crash while a snapshot is being written or installed recovers to a correct
//! state with every acknowledged write").
//!
//! Each test kills a node at moments chosen by watching its snapshot directory: a
//! `snap-….snap.tmp` file exists only while the node writes its own snapshot, a
//! `snap-….snap.recv` file only while it receives (and checks) a leader's. Rounds alternate
//! between killing while that file is on disk and killing right after it was renamed into
//! place (then the WAL is compacted behind a written snapshot, or a received one is
//! installed). Timing decides only which moment a round hits; the checks after each restart
//! are the same every time: every acknowledged write is there with its value, the node is
//! ready, and no unfinished snapshot file is left. Each test also asserts that each moment was
//! hit by at least one round (judged from the directory as the kill left it), so that a run
//! that never hit a window fails instead of passing vacuously.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Client, Proc, http, leader_of, ready, three_nodes, wait_until};

/// Bytes in every value written: the size the issue measures with.
const VALUE_BYTES: usize = 100;
/// Keys a single node holds before the first kill: enough that writing its snapshot takes a
/// noticeable time (a snapshot file of about 12.6 MB).
const SINGLE_NODE_KEYS: usize = 100_000;
/// Keys the cluster takes while the follower is stopped in each round of the three-node test:
/// far more than the catch-up tail, so the follower needs a snapshot.
const FOLLOWER_LAG_KEYS: usize = 20_000;
/// Concurrent writers filling a node before a round.
const FILL_WRITERS: usize = 32;
/// Concurrent writers going on while a snapshot is written or received.
const BACKGROUND_WRITERS: usize = 2;
/// Writes the background writers get acknowledged before a round's snapshot starts.
const WRITES_BEFORE_KILL: usize = 50;
/// Rounds of kill and restart of the single node.
const ROUNDS: usize = 4;
/// Rounds of kill and restart of the follower: odd, so that the last one kills it while a
/// `.recv` file is on disk, which its next start must remove by itself.
const FOLLOWER_ROUNDS: usize = 5;
/// How long a round waits for the snapshot file that marks its window before killing anyway.
const WINDOW_WAIT: Duration = Duration::from_secs(15);
/// Keys read per page when a test compares a node's whole state (the server's largest page).
const PAGE_KEYS: usize = 10_000;

/// Small snapshot cadence: the floor of applied entries between automatic snapshots is 1,000,
/// and the log-to-state ratio is 1%, so snapshots come often while the tests write.
const FREQUENT_SNAPSHOTS: [&str; 4] = [
    "--set",
    "storage.snapshot_every=1000",
    "--set",
    "storage.snapshot_log_percent=1",
];

/// The value written under `key`: the key itself, padded to [`VALUE_BYTES`], so that a value
/// read back names the write it came from.
fn value_of(key: &str) -> String {
    let mut value = format!("{key}=");
    while value.len() < VALUE_BYTES {
        value.push('.');
    }
    value
}

/// The key written `i`-th by writer `writer` in phase `phase` (all under the prefix `k-`).
fn key_of(phase: &str, writer: usize, i: usize) -> String {
    format!("k-{phase}-w{writer:02}-{i:07}")
}

/// Writers putting new keys to one node, each on its own kept-alive connection, recording the
/// keys whose write was acknowledged (200).
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    handles: Vec<JoinHandle<Vec<String>>>,
}

impl Writers {
    /// `count` writers to `addr`, each writing up to `keys_each` keys of phase `phase`, or
    /// until [`Writers::stop`].
    fn start(addr: &str, phase: &str, count: usize, keys_each: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked_count = Arc::new(AtomicUsize::new(0));
        let handles = (0..count)
            .map(|w| {
                let (addr, phase) = (addr.to_string(), phase.to_string());
                let (stop, acked_count) = (Arc::clone(&stop), Arc::clone(&acked_count));
                std::thread::spawn(move || {
                    let mut client = Client::new(&addr);
                    let mut acked = Vec::new();
                    for i in 0..keys_each {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let key = key_of(&phase, w, i);
                        match client.put(&key, &value_of(&key)) {
                            200 => {
                                acked.push(key);
                                acked_count.fetch_add(1, Ordering::Relaxed);
                            }
                            // The node is down (killed by the test) or busy: this key is not
                            // acknowledged and is not checked; wait a little before the next.
                            _ => std::thread::sleep(Duration::from_millis(10)),
                        }
                    }
                    acked
                })
            })
            .collect();
        Writers {
            stop,
            acked: acked_count,
            handles,
        }
    }

    /// Waits until the writers have `n` acknowledged writes between them, so that a round's
    /// snapshot is taken while writes really go on.
    fn wait_for_acks(&self, n: usize) {
        wait_until("the writers get acknowledgements", || {
            self.acked.load(Ordering::Relaxed) >= n
        });
    }

    /// Stops the writers; returns every acknowledged key.
    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.finish()
    }

    /// Waits for the writers to write all their keys; returns every acknowledged key.
    fn finish(self) -> Vec<String> {
        self.handles
            .into_iter()
            .flat_map(|h| h.join().expect("a writer thread never panics"))
            .collect()
    }
}

/// Whether `dir` holds a snapshot file whose name ends with `suffix`.
fn has_file(dir: &Path, suffix: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("snap-") && n.ends_with(suffix))
        })
    })
}

/// Polls `dir` as fast as it can until a file ending with `suffix` appears or `max` passes;
/// returns whether it appeared.
fn wait_for_file(dir: &Path, suffix: &str, max: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < max {
        if has_file(dir, suffix) {
            return true;
        }
        std::thread::yield_now();
    }
    false
}

/// The size of the largest complete snapshot file in `dir` (0 if there is none).
fn largest_snapshot_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".snap")))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Polls `dir` as fast as it can until no file ending with `suffix` is left or `max` passes;
/// returns whether they went.
fn wait_for_no_file(dir: &Path, suffix: &str, max: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < max {
        if !has_file(dir, suffix) {
            return true;
        }
        std::thread::yield_now();
    }
    false
}

/// Where in a snapshot's life a round kills the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// While its unfinished file (`.tmp` written, or `.recv` received) is on disk.
    FileOnDisk,
    /// As soon as that file is gone (renamed into place): what follows is the WAL compaction
    /// behind a written snapshot, or the install of a received one.
    RightAfter,
}

impl Moment {
    /// Rounds alternate between the two moments.
    fn of_round(round: usize) -> Moment {
        if round.is_multiple_of(2) {
            Moment::FileOnDisk
        } else {
            Moment::RightAfter
        }
    }
}

/// Kills `node` with -9 at `moment` of the next snapshot file ending with `suffix` in `dir`
/// (or, if the file never shows or never goes, after a bounded wait); returns whether the
/// kill fell in that moment, judged from the directory as the kill left it.
fn kill_at(node: &mut Proc, dir: &Path, suffix: &str, moment: Moment) -> bool {
    let seen = wait_for_file(dir, suffix, WINDOW_WAIT);
    match moment {
        Moment::FileOnDisk => {
            node.kill9();
            seen && has_file(dir, suffix)
        }
        Moment::RightAfter => {
            let gone = seen && wait_for_no_file(dir, suffix, WINDOW_WAIT);
            node.kill9();
            gone
        }
    }
}

/// Every key under `k-` on `node` with its value, read page by page (`stale`: from the node's
/// own applied state, without asking the leader).
fn all_keys(node: &Proc, stale: bool) -> HashMap<String, String> {
    let mut keys = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/keys?prefix=k-&limit={PAGE_KEYS}");
        if stale {
            path.push_str("&consistency=stale");
        }
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let (status, body) = node.get(&path);
        assert_eq!(status, 200, "{} lists its keys: {body}", node.name);
        let page: serde_json::Value = serde_json::from_str(&body).expect("a JSON page");
        for kv in page["kvs"].as_array().expect("a page has kvs") {
            let key = kv["key"].as_str().expect("text keys").to_string();
            let value = kv["value"].as_str().expect("text values").to_string();
            keys.insert(key, value);
        }
        if page["more"] != serde_json::Value::Bool(true) {
            return keys;
        }
        after = Some(
            page["next"]
                .as_str()
                .expect("a page with more has next")
                .into(),
        );
    }
}

/// Fails unless every key in `acked` is in `state` with the value written under it.
fn assert_every_acknowledged_write(node: &str, acked: &[String], state: &HashMap<String, String>) {
    let missing: Vec<&String> = acked
        .iter()
        .filter(|k| state.get(*k) != Some(&value_of(k)))
        .collect();
    assert!(
        missing.is_empty(),
        "{node} lost {} of {} acknowledged writes, first: {:?} (it holds {:?})",
        missing.len(),
        acked.len(),
        missing.first(),
        missing.first().and_then(|k| state.get(*k)),
    );
}

/// Fails if `node` panicked in any of its lives (its log gathers them all).
fn assert_never_panicked(node: &Proc) {
    let log = node.log_text();
    assert!(!log.contains("panicked"), "{} panicked: {log}", node.name);
}

/// Fails unless each [`Moment`] was hit by at least one round.
fn assert_each_moment_hit(hits: &[(Moment, bool)]) {
    for moment in [Moment::FileOnDisk, Moment::RightAfter] {
        assert!(
            hits.contains(&(moment, true)),
            "no round killed the node at {moment:?}: {hits:?}"
        );
    }
}

/// A number from a node's `/ready` body (`applied_index`, `commit_index`), if it is ready.
fn ready_number(node: &Proc, field: &str) -> Option<u64> {
    let (status, body) = node.get("/ready");
    if status != 200 {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    json[field].as_u64()
}

#[test]
fn a_node_killed_while_writing_its_snapshot_restarts_with_every_acknowledged_write() {
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    // Given a single node with 100,000 keys of 100 B and frequent snapshots,
    let mut node = Proc::new("n1", root.path(), None, &FREQUENT_SNAPSHOTS);
    wait_until("n1 leads", || ready(&node));
    let mut acked = Writers::start(
        &node.http,
        "fill",
        FILL_WRITERS,
        SINGLE_NODE_KEYS / FILL_WRITERS,
    )
    .finish();
    println!(
        "filled: {:?}; largest snapshot file {} bytes",
        started.elapsed(),
        largest_snapshot_bytes(&node.dir.join("snapshots"))
    );
    assert!(
        acked.len() > SINGLE_NODE_KEYS * 9 / 10,
        "the fill was acknowledged: {} keys",
        acked.len()
    );
    let snapshots = node.dir.join("snapshots");
    let mut hits = Vec::new();
    for round in 0..ROUNDS {
        // when writes go on, a snapshot is asked for, and the node is killed with -9 while
        // its temporary snapshot file is on disk, or right after it was renamed (or after a
        // bounded wait),
        let writers = Writers::start(
            &node.http,
            &format!("r{round}"),
            BACKGROUND_WRITERS,
            usize::MAX,
        );
        writers.wait_for_acks(WRITES_BEFORE_KILL);
        let addr = node.http.clone();
        // Its answer is not checked: the node may die before it gives one.
        let trigger = std::thread::spawn(move || http(&addr, "POST", "/admin/snapshot", b""));
        let moment = Moment::of_round(round);
        let hit = kill_at(&mut node, &snapshots, ".tmp", moment);
        hits.push((moment, hit));
        let _ = trigger.join();
        acked.extend(writers.stop());
        println!(
            "round {round}: killed at {moment:?}: {hit} ({:?})",
            started.elapsed()
        );
        // then after a restart the node is ready, the unfinished file is gone,
        node.start();
        wait_until("n1 ready after the kill", || ready(&node));
        // (ready, it may take an automatic snapshot of the entries it replayed, whose `.tmp`
        // file is no leftover: so this waits, bounded, for the directory to hold none; a
        // leftover would stay for good)
        wait_until(&format!("round {round}: no .tmp file left"), || {
            !has_file(&snapshots, ".tmp")
        });
        // and every acknowledged write is there with its value.
        assert_every_acknowledged_write("n1", &acked, &all_keys(&node, false));
    }
    assert_never_panicked(&node);
    // At least one round killed the node while its snapshot file was being written, and one
    // right after it was renamed (timing only decides which rounds hit their moment; a run
    // that hit none tests nothing and fails).
    assert_each_moment_hit(&hits);
    println!(
        "{hits:?}; {} acknowledged keys; {:?}",
        acked.len(),
        started.elapsed()
    );
}

#[test]
fn a_follower_killed_while_receiving_a_snapshot_catches_up_with_every_acknowledged_write() {
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    // Given three nodes with frequent snapshots, a catch-up tail of 100 entries and small WAL
    // segments (compaction keeps whole segments), so a follower a few thousand entries behind
    // needs a snapshot,
    let mut flags = FREQUENT_SNAPSHOTS.to_vec();
    flags.extend([
        "--set",
        "storage.snapshot_catchup_entries=100",
        "--set",
        "wal.segment_size=256KiB",
    ]);
    let (n1, n2, n3) = three_nodes(root.path(), &flags);
    let mut nodes = [n1, n2, n3];
    let leader = {
        let refs: Vec<&Proc> = nodes.iter().collect();
        leader_of(&refs).expect("a formed cluster has a leader")
    };
    let follower = (leader + 1) % nodes.len();
    let other = (leader + 2) % nodes.len();
    let leader_http = nodes[leader].http.clone();
    let snapshots = nodes[follower].dir.join("snapshots");
    let mut acked = Vec::new();
    let mut hits = Vec::new();
    for round in 0..FOLLOWER_ROUNDS {
        // and the follower stopped while the others take writes and snapshots,
        nodes[follower].kill9();
        acked.extend(
            Writers::start(
                &leader_http,
                &format!("lag{round}"),
                FILL_WRITERS,
                FOLLOWER_LAG_KEYS / FILL_WRITERS,
            )
            .finish(),
        );
        for i in [leader, other] {
            let (status, body) = http(&nodes[i].http, "POST", "/admin/snapshot", b"");
            assert_eq!(status, 200, "{} snapshots: {body}", nodes[i].name);
        }
        // when it is restarted while writes go on, and killed with -9 while the snapshot it
        // receives is on disk as a `.recv` file, or right after it was kept (renamed) and is
        // being installed (or after a bounded wait),
        let writers = Writers::start(
            &leader_http,
            &format!("r{round}"),
            BACKGROUND_WRITERS,
            usize::MAX,
        );
        writers.wait_for_acks(WRITES_BEFORE_KILL);
        nodes[follower].start();
        let moment = Moment::of_round(round);
        let hit = kill_at(&mut nodes[follower], &snapshots, ".recv", moment);
        hits.push((moment, hit));
        acked.extend(writers.stop());
        println!(
            "round {round}: killed at {moment:?}: {hit} ({:?})",
            started.elapsed()
        );
    }
    // then, restarted alone (the others killed too, so that no leader can send it anything),
    // it has removed at start the `.recv` file the last round left (when that round hit),
    let left = has_file(&snapshots, ".recv");
    nodes[leader].kill9();
    nodes[other].kill9();
    nodes[follower].start();
    // (HTTP is served only once the node has opened its data directory)
    wait_until("the follower serves HTTP", || {
        nodes[follower].get("/health").0 == 200
    });
    assert!(
        !has_file(&snapshots, ".recv"),
        "a .recv file left at start (one was there at the kill: {left})"
    );
    // and once the others are back, it catches up: it applies up to the highest commit index
    // of the three (the writes have stopped),
    nodes[leader].start();
    nodes[other].start();
    wait_until("all three ready", || nodes.iter().all(ready));
    let commit = nodes
        .iter()
        .filter_map(|n| ready_number(n, "commit_index"))
        .max()
        .expect("ready nodes say their commit index");
    wait_until("the follower applies the commit index", || {
        ready_number(&nodes[follower], "applied_index").is_some_and(|a| a >= commit)
    });
    // with no unfinished received snapshot left,
    assert!(!has_file(&snapshots, ".recv"), "a leftover .recv file");
    // every acknowledged write is in its own state with its value,
    let on_follower = all_keys(&nodes[follower], true);
    assert_every_acknowledged_write(&nodes[follower].name, &acked, &on_follower);
    // and its state is the leader's, key for key.
    let refs: Vec<&Proc> = nodes.iter().collect();
    let leader = leader_of(&refs).expect("three ready nodes have a leader");
    let on_leader = all_keys(&nodes[leader], false);
    assert_eq!(
        on_follower.len(),
        on_leader.len(),
        "the follower holds as many keys as the leader"
    );
    assert!(
        on_follower == on_leader,
        "the follower's state is the leader's"
    );
    nodes.iter().for_each(assert_never_panicked);
    // At least one round killed the follower while a received snapshot was on disk unkept,
    // and one right after it was kept, as it installs it (timing only decides which rounds hit
    // their moment; a run that hit none tests nothing and fails).
    assert_each_moment_hit(&hits);
    println!(
        "{hits:?}; .recv at the last kill: {left}; {} acknowledged keys; {:?}",
        acked.len(),
        started.elapsed()
    );
}
