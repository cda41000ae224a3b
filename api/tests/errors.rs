//! Errors that say what they are, and what an operator reads, on real `raftkv` processes
//! (issue 11, parts 4 and 5, as found on f4a642e):
//! - docs/api.md's error table is the whole truth: it lists exactly the contract's codes
//!   (`proto::rest::ErrorCode`), every one of them is built somewhere in api/src (a source
//!   scan), and each row is built with its status; each row a test can provoke is provoked on a cluster;
//! - a remove or transfer of a node that is not a member is `404 unknown_member` naming it, a
//!   transfer to a learner is `409 invalid_transfer_target`, a repeated snapshot is an honest
//!   `200` with `"taken": false` and the snapshot's real term (never a `503` kvcli retries);
//! - without a quorum, `kvcli get` fails within its `--timeout`;
//! - a start error is one line; logs name nodes by their names (strings in JSON) and hold no
//!   colour codes when they go to a file; a restart does not re-log the membership history.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use proto::rest::ErrorCode;

use common::{Proc, free_port, http, http_with, leader_of, ready, three_nodes, wait_until};
use serde_json::Value;

const API_DOC: &str = include_str!("../../docs/api.md");

/// The `(status, code)` rows of docs/api.md's error table.
fn documented() -> BTreeSet<(u16, String)> {
    let mut rows = BTreeSet::new();
    for line in API_DOC.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| 404 | `unknown_member` | when |" splits into ["", "404", "`unknown_member`", ...].
        if cells.len() < 4 {
            continue;
        }
        let (Ok(status), Some(code)) = (
            cells[1].parse::<u16>(),
            cells[2].strip_prefix('`').and_then(|c| c.strip_suffix('`')),
        ) else {
            continue;
        };
        assert!(
            rows.insert((status, code.to_string())),
            "docs/api.md lists {status} {code} twice"
        );
    }
    rows
}

/// Every `(status, code)` pair built in api/src, with the files that build it: each
/// `ErrorCode::Name` the source names (the contract's codes, `proto::rest::ErrorCode`, carry
/// their status), and `bad_request(` for 400 `bad_request`.
fn built_in_source() -> BTreeMap<(u16, String), BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found: BTreeMap<(u16, String), BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![root.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read api/src") {
                files.push(entry.expect("a directory entry").path());
            }
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read a source file");
        let name = path
            .strip_prefix(&root)
            .expect("under api/src")
            .display()
            .to_string();
        let mut add = |code: ErrorCode| {
            found
                .entry((code.http_status(), code.as_str().to_string()))
                .or_default()
                .insert(name.clone());
        };
        for code in ErrorCode::ALL {
            let spelled = format!("ErrorCode::{code:?}");
            let named = text.match_indices(&spelled).any(|(at, _)| {
                !text[at + spelled.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if named {
                add(code);
            }
        }
        if text.contains("bad_request(") {
            add(ErrorCode::BadRequest);
        }
    }
    found
}

#[test]
fn the_error_table_in_docs_api_md_matches_the_codes_the_server_builds() {
    // Given the table and the server's source
    let documented = documented();
    let built = built_in_source();
    // Then every code the server builds is documented with its status ...
    let undocumented: Vec<String> = built
        .iter()
        .filter(|(pair, _)| !documented.contains(*pair))
        .map(|((status, code), files)| format!("{status} {code} (built in {files:?})"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "codes the server answers with that docs/api.md's error table lacks: {undocumented:?}"
    );
    // ... and every row is a code the server can answer with.
    let unbuilt: Vec<&(u16, String)> = documented
        .iter()
        .filter(|pair| !built.contains_key(*pair))
        .collect();
    assert!(
        unbuilt.is_empty(),
        "rows of docs/api.md's error table that no code in api/src builds: {unbuilt:?}"
    );
    // ... and the table is the contract's list of codes, no more and no less.
    let contract: BTreeSet<(u16, String)> = ErrorCode::ALL
        .iter()
        .map(|c| (c.http_status(), c.as_str().to_string()))
        .collect();
    assert_eq!(
        documented, contract,
        "docs/api.md's error table and proto::rest::ErrorCode differ"
    );
}

/// The `(REST code, gRPC code)` rows of docs/api.md's gRPC error table.
fn documented_grpc() -> BTreeMap<String, String> {
    let table = API_DOC
        .split("## gRPC")
        .nth(1)
        .expect("docs/api.md has a gRPC section");
    let mut rows = BTreeMap::new();
    for line in table.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let unquote = |c: &str| {
            c.strip_prefix('`')
                .and_then(|c| c.strip_suffix('`'))
                .map(str::to_string)
        };
        if cells.len() < 4 {
            continue;
        }
        if let (Some(rest), Some(grpc)) = (unquote(cells[1]), unquote(cells[2]))
            && grpc.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        {
            assert!(
                rows.insert(rest.clone(), grpc).is_none(),
                "docs/api.md's gRPC table lists {rest} twice"
            );
        }
    }
    rows
}

/// `FailedPrecondition` as gRPC spells it: `FAILED_PRECONDITION`.
fn screaming(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[test]
fn the_grpc_error_table_in_docs_api_md_is_the_contracts_mapping() {
    // Given the gRPC table and the contract's mapping, then they are the same rows.
    let contract: BTreeMap<String, String> = ErrorCode::ALL
        .iter()
        .map(|c| {
            (
                c.as_str().to_string(),
                screaming(&format!("{:?}", c.grpc())),
            )
        })
        .collect();
    assert_eq!(
        documented_grpc(),
        contract,
        "docs/api.md's gRPC table and proto::rest::ErrorCode::grpc differ"
    );
}

/// Checks that an answer is an error with this status and code, that the pair is in
/// docs/api.md's table, and returns its message.
fn expect_error(what: &str, (status, body): (u16, String), want: u16, code: &str) -> String {
    let json: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{what}: the answer {status} is not JSON ({e}): {body}"));
    assert_eq!(
        (status, json["code"].as_str()),
        (want, Some(code)),
        "{what}: {body}"
    );
    assert!(
        documented().contains(&(want, code.to_string())),
        "{what}: {want} {code} is not in docs/api.md's error table"
    );
    json["error"].as_str().unwrap_or_default().to_string()
}

fn post(p: &Proc, path: &str, body: &str) -> (u16, String) {
    http(&p.http, "POST", path, body.as_bytes())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn each_refusal_is_its_own_documented_code_and_names_the_node() {
    // Given a three-node cluster
    let root = tempfile::tempdir().expect("temp dir");
    let (n1, n2, n3) = three_nodes(root.path(), &[]);
    let nodes = [&n1, &n2, &n3];
    let leader = nodes[leader_of(&nodes).expect("a leader")];
    let follower = nodes
        .iter()
        .find(|n| n.name != leader.name)
        .expect("a follower");

    // When a node that is not a member is removed or made leader, through a follower (which
    // forwards) and through the leader, then the answer is 404 unknown_member naming it and
    // the members: not a 503 that a client retries, not "key not found".
    for via in [*follower, leader] {
        let message = expect_error(
            "remove ghost",
            post(via, "/cluster/remove", r#"{"node_id":"ghost"}"#),
            404,
            "unknown_member",
        );
        assert!(
            message.contains("ghost") && message.contains("n1") && message.contains("n3"),
            "{message}"
        );
        let message = expect_error(
            "transfer to ghost",
            post(via, "/cluster/transfer-leader", r#"{"node_id":"ghost"}"#),
            404,
            "unknown_member",
        );
        assert!(message.contains("ghost"), "{message}");
        assert!(
            !message.contains(&raft::node::driver::node_id_for_name("ghost").0.to_string()),
            "the message names the node, not its internal id: {message}"
        );
    }
    // A name no node could have is refused like a bad config id.
    expect_error(
        "remove a bad name",
        post(leader, "/cluster/remove", r#"{"node_id":"a b\n"}"#),
        400,
        "bad_request",
    );

    // When a snapshot is taken twice with nothing applied in between, then both succeed: the
    // second describes the first, with its real term, instead of "no leader: ... not newer".
    let (status, first) = post(leader, "/admin/snapshot", "");
    assert_eq!(status, 200, "{first}");
    let first = json_of(&first);
    assert_eq!(first["taken"], Value::Bool(true), "{first}");
    let (status, second) = post(leader, "/admin/snapshot", "");
    assert_eq!(status, 200, "{second}");
    let second = json_of(&second);
    assert_eq!(second["taken"], Value::Bool(false), "{second}");
    assert_eq!(second["index"], first["index"], "{second}");
    let term = first["term"].as_u64().expect("a term");
    assert!(term >= 1, "{first}");
    let file = first["file"].as_str().expect("a file");
    assert!(
        file.ends_with(&format!("-{term:020}.snap")),
        "the file is named by the real term {term}: {file}"
    );
    assert!(Path::new(file).exists(), "{file} exists");
    let (_, readiness) = leader.get("/ready");
    assert_eq!(
        json_of(&readiness)["snapshot_index"],
        first["index"],
        "/ready says which snapshot the node holds: {readiness}"
    );

    // When a learner (a node added but never started) is named for leadership, then 409
    // invalid_transfer_target; removing it works.
    let (status, body) = post(
        leader,
        "/cluster/join",
        &format!(
            r#"{{"node_id":"n4","raft_addr":"127.0.0.1:{}","http_addr":"127.0.0.1:{}"}}"#,
            free_port(),
            free_port()
        ),
    );
    assert_eq!(status, 200, "{body}");
    let message = expect_error(
        "transfer to a learner",
        post(leader, "/cluster/transfer-leader", r#"{"node_id":"n4"}"#),
        409,
        "invalid_transfer_target",
    );
    assert!(message.contains("n4"), "{message}");
    // (A leader elected anew on a loaded machine refuses membership changes until it has
    // committed an entry of its own term: 409 conf_change_in_progress, which says to retry.)
    let mut removed = (0, String::new());
    wait_until("n4 removed", || {
        removed = post(leader, "/cluster/remove", r#"{"node_id":"n4"}"#);
        removed.0 != 409 || !removed.1.contains("conf_change_in_progress")
    });
    assert_eq!(removed.0, 200, "{}", removed.1);

    // And the router's other error paths answer as the table says.
    expect_error(
        "a missing key",
        leader.get("/keys/missing"),
        404,
        "not_found",
    );
    expect_error("no such route", leader.get("/nowhere"), 404, "no_route");
    expect_error(
        "a wrong method",
        http(&leader.http, "DELETE", "/health", b""),
        405,
        "method_not_allowed",
    );
    expect_error(
        "malformed JSON",
        post(leader, "/cluster/join", "{"),
        400,
        "bad_request",
    );
    expect_error(
        "a value over 1 MiB",
        http(
            &leader.http,
            "PUT",
            "/keys/big",
            &vec![b'x'; 1024 * 1024 + 1],
        ),
        413,
        "too_large",
    );
    assert_eq!(leader.put("cas", "v1").0, 200);
    expect_error(
        "a failed compare-and-swap",
        http(&leader.http, "PUT", "/keys/cas?prev_version=7", b"v2"),
        409,
        "cas_failed",
    );
    expect_error(
        "a join that re-addresses a member",
        post(
            leader,
            "/cluster/join",
            &format!(
                r#"{{"node_id":"n2","raft_addr":"127.0.0.1:{}","http_addr":"127.0.0.1:{}"}}"#,
                free_port(),
                free_port()
            ),
        ),
        409,
        "member_exists",
    );
    expect_error(
        "a join at a member's address",
        post(
            leader,
            "/cluster/join",
            &format!(
                r#"{{"node_id":"n5","raft_addr":"{}","http_addr":"127.0.0.1:{}"}}"#,
                n2.raft,
                free_port()
            ),
        ),
        409,
        "address_in_use",
    );
    expect_error(
        "a join naming another cluster",
        post(
            leader,
            "/cluster/join",
            r#"{"node_id":"n6","raft_addr":"127.0.0.1:1","http_addr":"127.0.0.1:2","cluster_id":"00000000000000ff"}"#,
        ),
        409,
        "cluster_mismatch",
    );
    let (status, body) = http_with(
        &follower.http,
        "PUT",
        "/keys/redirected",
        "X-Raftkv-No-Forward: 1\r\n",
        b"v",
    );
    let message = expect_error(
        "a write to a follower that asks not to be forwarded",
        (status, body.clone()),
        307,
        "not_leader",
    );
    assert!(!message.is_empty());
    assert_eq!(
        json_of(&body)["leader"].as_str(),
        Some(leader.name.as_str())
    );

    // When a member is removed, then it answers 410 node_removed.
    let gone = nodes
        .iter()
        .find(|n| n.name != leader.name && n.name != follower.name)
        .expect("a third node");
    let (status, body) = post(
        leader,
        "/cluster/remove",
        &format!(r#"{{"node_id":"{}"}}"#, gone.name),
    );
    assert_eq!(status, 200, "{body}");
    wait_until("the removed node knows", || {
        gone.get("/keys/anything").0 == 410
    });
    expect_error(
        "a request to a removed node",
        gone.get("/keys/anything"),
        410,
        "node_removed",
    );
}

#[test]
fn without_a_quorum_kvcli_get_fails_within_its_timeout() {
    // Given a three-node cluster of which two nodes are killed
    let root = tempfile::tempdir().expect("temp dir");
    let (mut n1, mut n2, n3) = three_nodes(root.path(), &[]);
    assert_eq!(n1.put("k", "v").0, 200);
    let endpoints = [&n1, &n2, &n3]
        .iter()
        .map(|n| format!("http://{}", n.http))
        .collect::<Vec<_>>()
        .join(",");
    n1.kill9();
    n2.kill9();
    wait_until("n3 knows it has no leader", || !ready(&n3));
    expect_error(
        "/ready without a quorum",
        n3.get("/ready"),
        503,
        "not_ready",
    );

    // When kvcli reads with its default timeout (10 s, docs/cli.md)
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let args = ["kvcli", "--endpoints", &endpoints, "get", "k"];
    let cli = <cli::command::Cli as clap::Parser>::try_parse_from(args).expect("valid arguments");
    let (mut out, mut notes) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let outcome = runtime.block_on(cli::command::run(
        cli,
        &mut std::io::empty(),
        cli::command::Output {
            out: &mut out,
            notes: &mut notes,
            terminal: false,
        },
    ));
    let took = started.elapsed();

    // Then it fails as unavailable within the timeout (a generous bound for a shared
    // machine; on f4a642e it took 41 s), not after every retry's own timeout.
    let error = outcome.expect_err("no quorum, no read");
    assert_eq!(
        cli::command::exit_code(&error),
        cli::command::EXIT_UNAVAILABLE,
        "{error}"
    );
    assert!(took < Duration::from_secs(16), "kvcli get took {took:?}");
}

/// Starts `p` like `Proc::start`, but logging at `level` (the helper logs warnings only).
fn start_logging(p: &mut Proc, level: &str) {
    let cmd = p.command(Command::new(env!("CARGO_BIN_EXE_raftkv")), level);
    p.spawn(cmd);
}

#[test]
fn logs_name_nodes_hold_no_colour_codes_and_do_not_replay_history() {
    // Given n1 logging JSON and n2 logging text, both to files, at info
    let root = tempfile::tempdir().expect("temp dir");
    let mut n1 = Proc::configure(
        "n1",
        root.path(),
        None,
        &["--bootstrap", "--set", "observability.log_format=json"],
    );
    start_logging(&mut n1, "info");
    wait_until("n1 leads", || ready(&n1));
    let mut n2 = Proc::configure("n2", root.path(), Some(format!("http://{}", n1.http)), &[]);
    start_logging(&mut n2, "info");
    wait_until("n2 is a voter", || {
        let (_, body) = n1.get("/cluster/nodes");
        body.contains("\"role\":\"follower\"")
    });
    wait_until("n2 ready", || ready(&n2));

    // Then neither log holds an escape byte (no colour codes in a file) nor a node's 64-bit
    // id; the nodes are named.
    let hashes = [
        raft::node::driver::node_id_for_name("n1").0.to_string(),
        raft::node::driver::node_id_for_name("n2").0.to_string(),
    ];
    for p in [&n1, &n2] {
        let log = p.log_text();
        assert!(
            !log.contains('\u{1b}'),
            "{} logged colour codes: {log}",
            p.name
        );
        for hash in &hashes {
            assert!(
                !log.contains(hash),
                "{} logged a node's hash {hash}: {log}",
                p.name
            );
        }
        assert!(
            !log.contains("Some("),
            "{} logged a Debug dump: {log}",
            p.name
        );
        assert!(
            !log.contains("ConfChangeSingle"),
            "{} logged a Debug dump: {log}",
            p.name
        );
    }
    let text = n2.log_text();
    assert!(text.contains("leader=n1"), "n2 names its leader: {text}");
    assert!(
        text.contains("add learner n2"),
        "n2 names the change: {text}"
    );
    // n1's JSON lines all parse, and carry node names as strings.
    let json = n1.log_text();
    let mut named = 0;
    for line in json.lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["node", "leader", "to", "from", "peer"] {
            if let Some(v) = value.get(field) {
                assert!(v.is_string(), "{field} is not a string: {line}");
                named += 1;
            }
        }
    }
    assert!(named > 0, "n1 logged no node field at all: {json}");
    // A snapshot is logged with the term of its last entry, not 0.
    let (status, body) = post(&n1, "/admin/snapshot", "");
    assert_eq!(status, 200, "{body}");
    let saved = n1
        .log_text()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["msg"] == "snapshot written")
        .expect("n1 logs the snapshot it saved");
    assert!(
        saved["term"].as_u64() >= Some(1),
        "the snapshot is logged with its real term: {saved}"
    );

    // When n2, having applied all n1 committed (else that is news to it after the restart),
    // restarts, then it does not log the membership history again.
    let index = |p: &Proc, field: &str| -> u64 {
        let (_, body) = p.get("/ready");
        serde_json::from_str::<Value>(&body).map_or(0, |v| v[field].as_u64().unwrap_or(0))
    };
    wait_until("n2 applied what n1 committed", || {
        index(&n2, "applied_index") >= index(&n1, "commit_index")
    });
    n2.terminate();
    let before = n2.log_text().len();
    start_logging(&mut n2, "info");
    wait_until("n2 ready again", || ready(&n2));
    let after = n2.log_text()[before..].to_string();
    assert!(
        !after.contains("membership change applied"),
        "a restart re-logs the membership history: {after}"
    );
}

#[test]
fn a_start_error_is_one_line() {
    // Given a node with a blank data directory, told neither to found nor to join
    let root = tempfile::tempdir().expect("temp dir");
    let mut lost = Proc::configure("lost", root.path(), None, &[]);
    // When it starts, then it refuses with exactly one line.
    let text = lost.start_expecting_refusal();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("raftkv: "), "{text}");
}
