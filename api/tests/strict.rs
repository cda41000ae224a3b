//! Strict requests against real `raftkv` processes: a request the server would misread is
//! refused with a 400 that names the problem (an unknown or repeated query parameter or
//! `X-Raftkv-*` header, an empty-prefix delete without `all=true`, a session number out of
//! range), a session sequence reused for another write is a 409, a client's
//! `X-Raftkv-Forwarded` header cannot make a follower refuse, a YAML config with a key given
//! twice does not start, and a listing pages past any single-page limit.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use clap::Parser;
use common::{Proc, leader_of, ready, three_nodes, wait_until};
use serde_json::Value;

/// One HTTP/1.1 request with extra headers; returns the status, the raw head and the body.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the node");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set a read timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send the head");
    stream.write_all(body).expect("send the body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

/// The `code` of a JSON error answer.
fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("<no code in {body}>"))
}

fn solo(root: &std::path::Path) -> Proc {
    let node = Proc::new("solo", root, None, &[]);
    wait_until("the node leads", || ready(&node));
    node
}

#[test]
fn unknown_query_parameters_are_refused_with_a_suggestion_and_nothing_is_written() {
    let root = tempfile::tempdir().unwrap();
    let node = solo(root.path());
    assert_eq!(node.put("k", "current").0, 200);

    // A misspelt compare-and-swap condition is not a blind write.
    let (status, _, body) = request(&node.http, "PUT", "/keys/t?prev_versoin=5", &[], b"x");
    assert_eq!(
        (status, code(&body)),
        (400, "unknown_parameter".into()),
        "{body}"
    );
    assert!(body.contains("prev_versoin"), "{body}");
    assert!(body.contains("did you mean prev_version?"), "{body}");
    assert_eq!(node.get("/keys/t").0, 404, "the refused write left nothing");

    // A parameter no read takes does not answer the current value as if it were honoured.
    let (status, _, body) = request(&node.http, "GET", "/keys/k?revision=1", &[], b"");
    assert_eq!(
        (status, code(&body)),
        (400, "unknown_parameter".into()),
        "{body}"
    );
    assert!(body.contains("revision"), "{body}");

    // A misspelt prefix does not list every key.
    let (status, _, body) = request(&node.http, "GET", "/keys?prefx=zzz", &[], b"");
    assert_eq!(
        (status, code(&body)),
        (400, "unknown_parameter".into()),
        "{body}"
    );
    assert!(body.contains("did you mean prefix?"), "{body}");

    // Which of two values would count is a guess: refused too.
    let (status, _, body) = request(&node.http, "GET", "/keys?prefix=a&prefix=b", &[], b"");
    assert_eq!(
        (status, code(&body)),
        (400, "repeated_parameter".into()),
        "{body}"
    );

    // Routes without parameters take none.
    let (status, _, body) = request(&node.http, "GET", "/health?verbose=1", &[], b"");
    assert_eq!(
        (status, code(&body)),
        (400, "unknown_parameter".into()),
        "{body}"
    );

    // The parameters a route does take still work.
    let (status, _, body) = request(&node.http, "PUT", "/keys/k?prev_version=1", &[], b"v2");
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = request(
        &node.http,
        "GET",
        "/keys?prefix=k&limit=5&consistency=stale",
        &[],
        b"",
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn unknown_or_misplaced_raftkv_headers_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let node = solo(root.path());

    // Given a misspelt session header, the write is refused, not done without a session.
    let (status, _, body) = request(
        &node.http,
        "PUT",
        "/keys/k",
        &[("X-Raftkv-Client-Id", "1"), ("X-Raftkv-Sequense", "1")],
        b"v",
    );
    assert_eq!(
        (status, code(&body)),
        (400, "unknown_header".into()),
        "{body}"
    );
    assert!(body.contains("did you mean x-raftkv-sequence?"), "{body}");
    assert_eq!(node.get("/keys/k").0, 404);

    // A session header on a read is not silently ignored.
    let (status, _, body) = request(
        &node.http,
        "GET",
        "/keys/k",
        &[("X-Raftkv-Sequence", "1")],
        b"",
    );
    assert_eq!(
        (status, code(&body)),
        (400, "unknown_header".into()),
        "{body}"
    );
    assert!(body.contains("does not take it"), "{body}");

    // Other headers are none of the router's business.
    let (status, _, _) = request(&node.http, "PUT", "/keys/k", &[("X-Other", "1")], b"v");
    assert_eq!(status, 200);
}

#[test]
fn deleting_with_an_empty_prefix_needs_all_true() {
    let root = tempfile::tempdir().unwrap();
    let node = solo(root.path());
    for key in ["a/1", "a/2", "b/1"] {
        assert_eq!(node.put(key, "v").0, 200);
    }

    // An empty prefix (an unset shell variable, say) is refused, and every key stays.
    for path in ["/keys?prefix=", "/keys"] {
        let (status, _, body) = request(&node.http, "DELETE", path, &[], b"");
        assert_eq!(
            (status, code(&body)),
            (400, "empty_prefix".into()),
            "{path}: {body}"
        );
        assert!(body.contains("all=true"), "{body}");
    }
    for key in ["a/1", "a/2", "b/1"] {
        assert_eq!(node.get(&format!("/keys/{key}")).0, 200, "{key} kept");
    }
    // all=true goes with no prefix only, and is spelt true.
    let (status, _, body) = request(&node.http, "DELETE", "/keys?prefix=a/&all=true", &[], b"");
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = request(&node.http, "DELETE", "/keys?all=yes", &[], b"");
    assert_eq!(status, 400, "{body}");

    // A real prefix deletes under it; all=true deletes the rest.
    let (status, _, body) = request(&node.http, "DELETE", "/keys?prefix=a/", &[], b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"deleted\":2"), "{body}");
    let (status, _, body) = request(&node.http, "DELETE", "/keys?all=true", &[], b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"deleted\":1"), "{body}");
    assert_eq!(node.get("/keys/b/1").0, 404);
}

#[test]
fn a_sequence_reused_for_another_write_is_a_conflict_and_out_of_range_numbers_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let node = solo(root.path());
    let (status, _, body) = request(&node.http, "POST", "/sessions", &[], b"");
    assert_eq!(status, 200, "{body}");
    let client_id = serde_json::from_str::<Value>(&body).unwrap()["client_id"]
        .as_u64()
        .expect("a client id")
        .to_string();
    let session = |seq: &'static str| {
        [
            ("X-Raftkv-Client-Id", client_id.clone()),
            ("X-Raftkv-Sequence", seq.to_string()),
        ]
    };
    let put = |seq: &'static str, key: &str, value: &str| {
        let headers = session(seq);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        request(
            &node.http,
            "PUT",
            &format!("/keys/{key}"),
            &headers,
            value.as_bytes(),
        )
    };

    // Given a session whose write 1 put k=a
    let (status, _, first) = put("1", "k", "a");
    assert_eq!(status, 200, "{first}");
    // When sequence 1 is used again for a different write
    let (status, _, body) = put("1", "k", "b");
    // Then it is a conflict of its own, and the value is untouched
    assert_eq!(
        (status, code(&body)),
        (409, "sequence_reused".into()),
        "{body}"
    );
    let (status, _, body) = put("1", "other", "a");
    assert_eq!(
        (status, code(&body)),
        (409, "sequence_reused".into()),
        "{body}"
    );
    assert_eq!(node.get("/keys/k"), (200, "a".into()));
    assert_eq!(node.get("/keys/other").0, 404);
    // and a true retry still gets the first answer, applied once
    let (status, _, retry) = put("1", "k", "a");
    assert_eq!((status, retry.clone()), (200, first.clone()));
    assert!(first.contains("\"version\":1"), "{first}");

    // Sequence 0 and u64::MAX are refused, naming the valid range.
    for seq in ["0", "18446744073709551615"] {
        let (status, _, body) = put(seq, "k", "z");
        assert_eq!(
            (status, code(&body)),
            (400, "bad_session".into()),
            "{seq}: {body}"
        );
        assert!(body.contains("1..=18446744073709551614"), "{body}");
    }
    // A client id of 0 is no session either.
    let (status, _, body) = request(
        &node.http,
        "PUT",
        "/keys/k",
        &[("X-Raftkv-Client-Id", "0"), ("X-Raftkv-Sequence", "2")],
        b"z",
    );
    assert_eq!((status, code(&body)), (400, "bad_session".into()), "{body}");
    assert_eq!(node.get("/keys/k"), (200, "a".into()));
}

#[test]
fn a_client_sent_forwarded_header_does_not_make_a_follower_refuse() {
    let root = tempfile::tempdir().unwrap();
    let (n1, n2, n3) = three_nodes(root.path(), &[]);
    let nodes = [n1, n2, n3];
    let leader = leader_of(&nodes.iter().collect::<Vec<_>>()).expect("a leader");
    let follower = &nodes[(leader + 1) % 3];

    // Given a client that sends the internal header to a follower
    let (status, _, body) = request(
        &follower.http,
        "PUT",
        "/keys/forged",
        &[("X-Raftkv-Forwarded", "1")],
        b"yes",
    );
    // Then the write is forwarded and done, not refused with a false no_leader
    assert_eq!(status, 200, "{body}");
    assert_eq!(nodes[leader].get("/keys/forged"), (200, "yes".into()));

    // With every hop spent, a follower that knows the leader sends the client there (307
    // not_leader with Location), never a false no_leader.
    let (status, head, body) = request(
        &follower.http,
        "PUT",
        "/keys/spent",
        &[("X-Raftkv-Forwarded", "3")],
        b"v",
    );
    assert_eq!((status, code(&body)), (307, "not_leader".into()), "{body}");
    assert!(
        head.to_ascii_lowercase().contains(&format!(
            "location: http://{}/keys/spent",
            nodes[leader].http
        )),
        "{head}"
    );

    // A value that is no hop count is a clear 400.
    let (status, _, body) = request(
        &follower.http,
        "PUT",
        "/keys/forged",
        &[("X-Raftkv-Forwarded", "lots")],
        b"no",
    );
    assert_eq!(status, 400, "{body}");

    // The redirect a client may ask for still works.
    let (status, head, body) = request(
        &follower.http,
        "PUT",
        "/keys/redirected",
        &[("X-Raftkv-No-Forward", "1")],
        b"v",
    );
    assert_eq!((status, code(&body)), (307, "not_leader".into()), "{body}");
    assert!(
        head.to_ascii_lowercase().contains(&format!(
            "location: http://{}/keys/redirected",
            nodes[leader].http
        )),
        "{head}"
    );
}

#[test]
fn a_config_file_with_a_key_given_twice_does_not_start() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("node.yaml");
    std::fs::write(
        &config,
        "storage:\n  snapshot_every: 100\n  snapshot_every: 200\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let mut node = Proc::configure(
        "dup",
        root.path(),
        None,
        &["--bootstrap", "--config", &config],
    );
    let log = node.start_expecting_refusal();
    assert!(
        log.contains("key storage.snapshot_every appears twice, on lines 2 and 3"),
        "{log}"
    );
}

/// Keys that need escaping in a query (`&`, `%`, `+`, space, `=`) and one that is not UTF-8.
const AWKWARD_KEYS: [&str; 5] = ["p/a b", "p/a&b", "p/a%b", "p/a+b", "p/a=b"];

#[test]
fn a_listing_pages_through_25000_keys_each_once_and_in_order() {
    let root = tempfile::tempdir().unwrap();
    let node = solo(root.path());

    // Given 25,000 keys under p/ (written by a few clients at once), a few awkward ones, a
    // key that is not UTF-8, and keys outside the prefix
    const KEYS: usize = 25_000;
    const WRITERS: usize = 8;
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let node = &node;
            scope.spawn(move || {
                for i in (w..KEYS).step_by(WRITERS) {
                    let (status, body) = node.put(&format!("p/{i:05}"), "v");
                    assert_eq!(status, 200, "write {i}: {body}");
                }
            });
        }
    });
    let mut expected: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("p/{i:05}").into_bytes())
        .collect();
    for key in AWKWARD_KEYS {
        let (status, _, body) = request(
            &node.http,
            "PUT",
            &format!("/keys/{}", escape(key.as_bytes())),
            &[],
            b"v",
        );
        assert_eq!(status, 200, "{key}: {body}");
        expected.push(key.as_bytes().to_vec());
    }
    let (status, _, body) = request(&node.http, "PUT", "/keys/p/%FF%FE", &[], b"v");
    assert_eq!(status, 200, "{body}");
    expected.push(b"p/\xff\xfe".to_vec());
    assert_eq!(node.put("q", "outside").0, 200);
    assert_eq!(node.put("o", "outside").0, 200);
    expected.sort();

    // When a client follows `next` page after page
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    let mut pages = 0;
    loop {
        let mut path = "/keys?prefix=p/&limit=1000".to_string();
        if let Some(after) = &after {
            path.push_str(&format!("&after={}", escape(after)));
        }
        let (status, _, body) = request(&node.http, "GET", &path, &[], b"");
        assert_eq!(status, 200, "{path}: {body}");
        let page: Value = serde_json::from_str(&body).expect("a JSON page");
        pages += 1;
        let kvs = page["kvs"].as_array().expect("kvs");
        assert!(kvs.len() <= 1000);
        for kv in kvs {
            seen.push(key_of(kv, "key"));
        }
        if page["more"] != Value::Bool(true) {
            assert!(page.get("next").is_none() && page.get("next_base64").is_none());
            break;
        }
        let next = key_of(&page, "next");
        assert_eq!(Some(&next), seen.last(), "next is the page's last key");
        after = Some(next);
        assert!(pages <= 40, "paging does not end");
    }

    // Then every key under the prefix came exactly once, in byte order
    assert_eq!(seen.len(), expected.len());
    assert!(seen == expected, "the walk differs from the keys written");
    assert!(pages >= 26, "{pages} pages");

    // and kvcli list, following the pages itself, prints every key once, in order
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let endpoint = format!("http://{}", node.http);
    let kvcli = cli::command::Cli::try_parse_from([
        "kvcli",
        "--endpoints",
        &endpoint,
        "list",
        "--prefix",
        "p/",
    ])
    .expect("valid arguments");
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(cli::command::run(
            kvcli,
            &mut std::io::empty(),
            cli::command::Output {
                out: &mut out,
                notes: &mut notes,
                terminal: false,
            },
        ))
        .expect("kvcli list");
    let printed: Vec<String> = String::from_utf8(out)
        .expect("kvcli prints text")
        .lines()
        .map(|line| line.split('\t').next().expect("a key").to_string())
        .collect();
    let want: Vec<String> = expected
        .iter()
        .map(|k| cli::error::printable(k, usize::MAX))
        .collect();
    assert_eq!(printed.len(), want.len());
    assert!(printed == want, "kvcli list differs from the keys written");
    assert!(notes.is_empty(), "{}", String::from_utf8_lossy(&notes));

    // and one page may be as large as the limit allows, still with a way on
    let (status, _, body) = request(&node.http, "GET", "/keys?prefix=p/&limit=10000", &[], b"");
    assert_eq!(status, 200);
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["kvs"].as_array().unwrap().len(), 10_000);
    assert_eq!(page["next"], Value::String("p/09999".into()));
}

/// A key of a JSON answer: `field` as text, or `{field}_base64` when it is not UTF-8.
fn key_of(value: &Value, field: &str) -> Vec<u8> {
    if let Some(text) = value[field].as_str() {
        return text.as_bytes().to_vec();
    }
    let encoded = value[format!("{field}_base64")]
        .as_str()
        .unwrap_or_else(|| {
            let fields: Vec<&String> = value
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            panic!("no {field} in an answer with fields {fields:?}")
        });
    unbase64(encoded)
}

/// Percent-encodes every byte but unreserved ones and `/`.
fn escape(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn unbase64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}
