//! The space quota on real `raftkv` processes (issue 12, item 5): a node started with a tiny
//! `storage.quota_bytes` is filled until it refuses a new key with `507 quota_exceeded`;
//! then nothing of the refused write is stored, shorter overwrites, deletes and reads go on,
//! `/ready` stays ready and shows the condition, `kvcli put` prints the server's sentence, the
//! log says it once, and deletes clear it by themselves. In a cluster, a write sent to a
//! follower is forwarded and refused the same way by the leader.

mod common;

use std::process::Command;

use common::{Proc, http, leader_of, ready, three_nodes, wait_until};
use serde_json::Value;

/// The quota the nodes are started with: the smallest the configuration takes.
const QUOTA: &str = "64KiB";
const QUOTA_BYTES: u64 = 64 * 1024;
/// Each filling value; with its key and the per-key overhead, about 60 fill the quota.
const VALUE_BYTES: usize = 1000;
/// More filling writes than can fit: the test fails if none is refused by then.
const FILL_WRITES_MAX: usize = 200;
/// What the node logs when its state reaches the quota, and when it is back under.
const REACHED_LINE: &str = "the state has reached its space quota";
const CLEARED_LINE: &str = "the state is back under its space quota";

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn value(fill: char, len: usize) -> String {
    std::iter::repeat_n(fill, len).collect()
}

/// `/ready`'s `quota` object, asserting the node is ready (200).
fn ready_quota(p: &Proc) -> Value {
    let (status, body) = p.get("/ready");
    assert_eq!(status, 200, "{}: /ready {body}", p.name);
    json_of(&body)["quota"].clone()
}

/// Puts `fill-NNN` keys through `via` until one is refused; returns how many were stored and
/// the refusal's body. Every answer before the refusal must be a success.
fn fill_until_refused(via: &Proc) -> (usize, Value) {
    for i in 0..FILL_WRITES_MAX {
        let (status, body) = via.put(&format!("fill-{i:03}"), &value('v', VALUE_BYTES));
        match status {
            200 => continue,
            507 => return (i, json_of(&body)),
            other => panic!("fill-{i:03}: unexpected {other} {body}"),
        }
    }
    panic!("{FILL_WRITES_MAX} writes of {VALUE_BYTES} bytes fit in a quota of {QUOTA}");
}

/// Checks that an answer is `507 quota_exceeded` with the quota's figures, and returns the
/// sentence.
fn expect_quota_exceeded(what: &str, (status, body): (u16, String)) -> String {
    let json = json_of(&body);
    assert_eq!(
        (status, json["code"].as_str()),
        (507, Some("quota_exceeded")),
        "{what}: {body}"
    );
    assert_eq!(
        json["quota"]["exceeded"],
        Value::Bool(true),
        "{what}: {body}"
    );
    assert_eq!(json["quota"]["quota_bytes"], QUOTA_BYTES, "{what}: {body}");
    assert!(
        json["quota"]["used_bytes"].as_u64() >= Some(QUOTA_BYTES),
        "{what}: {body}"
    );
    json["error"].as_str().unwrap_or_default().to_string()
}

/// Runs `kvcli --endpoints http://ADDR ARGS...` in this process; returns its error line, if it
/// failed, and its exit code.
fn kvcli(addr: &str, args: &[&str]) -> (Option<String>, u8) {
    let endpoint = format!("http://{addr}");
    let argv = ["kvcli", "--endpoints", &endpoint]
        .into_iter()
        .chain(args.iter().copied());
    let cli = <cli::command::Cli as clap::Parser>::try_parse_from(argv).expect("valid arguments");
    let (mut out, mut notes) = (Vec::new(), Vec::new());
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(cli::command::run(
            cli,
            &mut std::io::empty(),
            cli::command::Output {
                out: &mut out,
                notes: &mut notes,
                terminal: false,
            },
        ));
    match outcome {
        Ok(()) => (None, cli::command::EXIT_OK),
        Err(e) => (Some(e.to_string()), cli::command::exit_code(&e)),
    }
}

#[test]
fn a_full_node_refuses_growth_only_says_so_once_and_clears_by_itself() {
    // Given a single node with a 64 KiB quota, logging at info
    let root = tempfile::tempdir().expect("temp dir");
    let mut n1 = Proc::configure(
        "n1",
        root.path(),
        None,
        &[
            "--bootstrap",
            "--set",
            &format!("storage.quota_bytes={QUOTA}"),
        ],
    );
    let cmd = n1.command(Command::new(env!("CARGO_BIN_EXE_raftkv")), "info");
    n1.spawn(cmd);
    wait_until("n1 is ready", || ready(&n1));
    let quota = ready_quota(&n1);
    assert_eq!(
        (quota["quota_bytes"].as_u64(), quota["exceeded"].as_bool()),
        (Some(QUOTA_BYTES), Some(false)),
        "{quota}"
    );

    // When writes fill it, then a put of a new key is refused with 507 quota_exceeded,
    let (stored, refusal) = fill_until_refused(&n1);
    assert!(stored > 50, "only {stored} writes fit in {QUOTA}");
    assert_eq!(refusal["code"], "quota_exceeded", "{refusal}");
    let refused_key = format!("fill-{stored:03}");
    // and nothing of it was written.
    assert_eq!(n1.get(&format!("/keys/{refused_key}")).0, 404);

    // Writes that would grow the state are refused: a longer value, a compare-and-swap that
    // would create a key or lengthen one.
    let message = expect_quota_exceeded("a new key", n1.put("another", "x"));
    assert!(
        message.contains("refused and not applied") && message.contains("storage.quota_bytes"),
        "{message}"
    );
    expect_quota_exceeded(
        "a longer value",
        n1.put("fill-000", &value('v', VALUE_BYTES + 1)),
    );
    expect_quota_exceeded(
        "a compare-and-swap creating a key",
        http(&n1.http, "PUT", "/keys/another?prev_version=0", b"x"),
    );
    expect_quota_exceeded(
        "a compare-and-swap lengthening a value",
        http(
            &n1.http,
            "PUT",
            "/keys/fill-001?prev_version=1",
            value('w', VALUE_BYTES + 1).as_bytes(),
        ),
    );
    // kvcli put prints the server's sentence on one line and fails.
    let (error, code) = kvcli(&n1.http, &["put", "from-kvcli", "x"]);
    let error = error.expect("kvcli put over the quota fails");
    assert!(
        error.contains("507 quota_exceeded") && error.contains("refused and not applied"),
        "{error}"
    );
    assert!(!error.contains('\n'), "one line: {error}");
    assert_eq!(code, cli::command::EXIT_ERROR, "{error}");

    // /ready stays ready and shows the condition; the log said it once for all refusals.
    let quota = ready_quota(&n1);
    assert_eq!(quota["exceeded"], Value::Bool(true), "{quota}");
    assert!(quota["used_bytes"].as_u64() >= Some(QUOTA_BYTES), "{quota}");
    wait_until("the log says the quota was reached", || {
        n1.log_text().contains(REACHED_LINE)
    });
    assert_eq!(
        n1.log_text().matches(REACHED_LINE).count(),
        1,
        "{}",
        n1.log_text()
    );

    // Overwrites no longer than the stored value, reads, and deletes go on.
    assert_eq!(n1.put("fill-000", &value('s', VALUE_BYTES - 1)).0, 200);
    assert_eq!(n1.put("fill-001", &value('e', VALUE_BYTES)).0, 200);
    let (status, body) = n1.get("/keys/fill-000");
    assert_eq!((status, body.len()), (200, VALUE_BYTES - 1));
    assert_eq!(n1.get("/keys/fill-002?consistency=stale").0, 200);
    let (status, body) = http(&n1.http, "DELETE", "/keys/fill-002", b"");
    assert_eq!(
        (status, json_of(&body)["deleted"].as_u64()),
        (200, Some(1)),
        "{body}"
    );

    // When deletes bring the state under the quota
    let (status, body) = http(&n1.http, "DELETE", "/keys?prefix=fill-00", b"");
    assert_eq!(status, 200, "{body}");
    // then the refused write is taken, /ready says it cleared, and so does the log, once.
    assert_eq!(n1.put(&refused_key, "back").0, 200);
    assert_eq!(
        n1.get(&format!("/keys/{refused_key}")),
        (200, "back".to_string())
    );
    let quota = ready_quota(&n1);
    assert_eq!(quota["exceeded"], Value::Bool(false), "{quota}");
    assert!(quota["used_bytes"].as_u64() < Some(QUOTA_BYTES), "{quota}");
    wait_until("the log says the quota cleared", || {
        n1.log_text().contains(CLEARED_LINE)
    });
    let log = n1.log_text();
    assert_eq!(
        (
            log.matches(REACHED_LINE).count(),
            log.matches(CLEARED_LINE).count()
        ),
        (1, 1),
        "{log}"
    );
}

#[test]
fn a_write_to_a_follower_is_refused_by_the_leader_alike() {
    // Given a three-node cluster with a 64 KiB quota, filled through its leader
    let root = tempfile::tempdir().expect("temp dir");
    let flag = format!("storage.quota_bytes={QUOTA}");
    let (n1, n2, n3) = three_nodes(root.path(), &["--set", &flag]);
    let nodes = [&n1, &n2, &n3];
    let leader = nodes[leader_of(&nodes).expect("a leader")];
    let follower = nodes
        .iter()
        .find(|n| n.name != leader.name)
        .expect("a follower");
    let (stored, _) = fill_until_refused(leader);

    // When a new key is written through a follower, then it is forwarded and refused by the
    // leader, which names itself, and nothing is written;
    let message = expect_quota_exceeded("a new key via a follower", follower.put("via", "x"));
    assert!(
        message.contains(&format!("leader {}", leader.name)),
        "{message}"
    );
    assert_eq!(leader.get("/keys/via").0, 404);
    // the follower stays ready and shows the condition from its own applied state;
    wait_until("the follower has applied the fill", || {
        ready_quota(follower)["exceeded"] == Value::Bool(true)
    });
    // and a delete through it frees the space for the next write.
    let (status, body) = http(&follower.http, "DELETE", "/keys?prefix=fill-00", b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(follower.put(&format!("fill-{stored:03}"), "x").0, 200);
}
