//! The client, the `kvcli` commands and the load generator against an in-process fake of the
//! HTTP API (docs/api.md): hyper servers on 127.0.0.1:0 that share one in-memory store, the
//! way the nodes of a cluster share the replicated state.
//!
//! Each fake node keeps a log of the requests it saw (raw path and session headers) and a
//! queue of faults to inject into its next key requests, so the tests can check where
//! requests went, what was resent, and what was applied.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use cli::bench::{self, BenchConfig, Stop, Workload};
use cli::command::{self, Cli, EXIT_CAS_FAILED, EXIT_NOT_FOUND, Output};
use cli::encoding::percent_decode;
use cli::{Client, ClientOptions, Consistency, Error, Precondition, Routing};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use proto::rest::{self, ErrorCode, headers};
use serde_json::json;
use tokio::net::TcpListener;

// ---------------------------------------------------------------- the fake

/// A stored key.
#[derive(Clone)]
struct Entry {
    value: Vec<u8>,
    create: u64,
    modified: u64,
    version: u64,
}

/// A key's entry as if written once at revision 1.
fn entry(value: &[u8]) -> Entry {
    Entry {
        value: value.to_vec(),
        create: 1,
        modified: 1,
        version: 1,
    }
}

/// The state all fake nodes share.
#[derive(Default)]
struct Store {
    kv: BTreeMap<Vec<u8>, Entry>,
    revision: u64,
    next_client_id: u64,
    /// client id → (last sequence, its answer)
    sessions: HashMap<u64, (u64, u16, String)>,
    /// what `GET /cluster/leader` names, if any
    leader_http: Option<String>,
    /// how many writes were applied (duplicates excluded)
    applied: u64,
}

/// A fault injected into a node's next key request.
#[derive(Clone, Debug)]
enum Fault {
    /// Answer with this error code (and its status), applying nothing.
    Status(ErrorCode),
    /// Close the connection without answering, applying nothing.
    Drop,
    /// Apply the request, then close the connection without answering.
    ApplyThenDrop,
    /// Wait this long before handling the request.
    Delay(Duration),
    /// Answer 200 with a body that is not JSON.
    Garbage,
}

/// What a node saw.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    client_id: Option<u64>,
    sequence: Option<u64>,
}

#[derive(Clone)]
struct Node {
    addr: SocketAddr,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Node {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn fault(&self, fault: Fault) {
        self.faults.lock().expect("test lock").push_back(fault);
    }

    fn seen(&self, method: &str, path_prefix: &str) -> Vec<Seen> {
        self.log
            .lock()
            .expect("test lock")
            .iter()
            .filter(|s| s.method == method && s.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }
}

struct Cluster {
    store: Arc<Mutex<Store>>,
    nodes: Vec<Node>,
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        let store = Arc::new(Mutex::new(Store::default()));
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(start_node(store.clone()).await);
        }
        Cluster { store, nodes }
    }

    fn set_leader(&self, index: Option<usize>) {
        self.store.lock().expect("test lock").leader_http =
            index.map(|i| self.nodes[i].addr.to_string());
    }

    fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    fn entry(&self, key: &[u8]) -> Option<Entry> {
        self.store.lock().expect("test lock").kv.get(key).cloned()
    }

    fn applied(&self) -> u64 {
        self.store.lock().expect("test lock").applied
    }
}

async fn start_node(store: Arc<Mutex<Store>>) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let node = Node {
        addr: listener.local_addr().expect("bound address"),
        faults: Arc::default(),
        log: Arc::default(),
    };
    let serving = node.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (store, node) = (store.clone(), serving.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| handle(store.clone(), node.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    node
}

type Reply = Result<Response<Full<Bytes>>, std::io::Error>;

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).expect("valid status in the fake");
    response
}

/// A contract answer body as JSON.
fn json_of(answer: &impl serde::Serialize) -> String {
    serde_json::to_string(answer).expect("the contract's answers serialise to JSON")
}

/// An error answer with `code`'s status; `extra` adds the fields some codes carry.
fn error_body(code: ErrorCode, extra: &[(&str, serde_json::Value)]) -> String {
    json_of(&rest::ErrorBody {
        error: format!("fake {code}"),
        code: code.as_str().to_owned(),
        extra: extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    })
}

fn error(code: ErrorCode) -> Response<Full<Bytes>> {
    reply(code.http_status(), error_body(code, &[]))
}

fn header_u64(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.headers().get(name)?.to_str().ok()?.parse().ok()
}

fn query(req: &Request<Incoming>) -> HashMap<String, Vec<u8>> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((k.to_owned(), percent_decode(v)?))
        })
        .collect()
}

/// A key and its entry as the contract sends them, read at `revision`.
fn kv_answer(key: &[u8], e: &Entry, revision: u64) -> rest::KeyValue {
    rest::KeyValue {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(&e.value),
        create_revision: e.create,
        mod_revision: e.modified,
        version: e.version,
        revision,
        stale: None,
    }
}

async fn handle(store: Arc<Mutex<Store>>, node: Node, req: Request<Incoming>) -> Reply {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let raw = req
        .uri()
        .path_and_query()
        .map_or(path.clone(), |p| p.as_str().to_owned());
    let client_id = header_u64(&req, headers::CLIENT_ID);
    let sequence = header_u64(&req, headers::SEQUENCE);
    node.log.lock().expect("test lock").push(Seen {
        method: method.clone(),
        path: raw,
        client_id,
        sequence,
    });
    let is_key_request = path.starts_with("/keys");
    let fault = if is_key_request {
        node.faults.lock().expect("test lock").pop_front()
    } else {
        None
    };
    let json_wanted = req
        .headers()
        .get("accept")
        .is_some_and(|v| v == "application/json");
    let q = query(&req);
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    match fault {
        Some(Fault::Status(code)) => return Ok(error(code)),
        Some(Fault::Drop) => return Err(std::io::Error::other("fault: drop")),
        Some(Fault::Garbage) => return Ok(reply(200, "<html>not json</html>")),
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::ApplyThenDrop) | None => {}
    }
    let response = {
        let mut s = store.lock().expect("test lock");
        route(
            &mut s,
            &method,
            &path,
            &q,
            json_wanted,
            body,
            client_id.zip(sequence),
        )
    };
    if matches!(fault, Some(Fault::ApplyThenDrop)) {
        return Err(std::io::Error::other("fault: applied, then dropped"));
    }
    Ok(response)
}

fn route(
    s: &mut Store,
    method: &str,
    path: &str,
    q: &HashMap<String, Vec<u8>>,
    json_wanted: bool,
    body: Bytes,
    session: Option<(u64, u64)>,
) -> Response<Full<Bytes>> {
    match (method, path) {
        ("GET", "/cluster/leader") => match &s.leader_http {
            Some(addr) => reply(
                200,
                json_of(&rest::LeaderInfo {
                    id: rest::NodeId("n1".into()),
                    raft_addr: "127.0.0.1:1".into(),
                    http_addr: addr.clone(),
                    grpc_addr: None,
                }),
            ),
            None => error(ErrorCode::NoLeader),
        },
        ("GET", "/health") => reply(
            200,
            json_of(&rest::Health {
                status: "ok".into(),
            }),
        ),
        ("GET", "/ready") => match &s.leader_http {
            Some(_) => reply(
                200,
                json!({"status": "ready", "applied": s.revision}).to_string(),
            ),
            None => error(ErrorCode::NotReady),
        },
        ("POST", "/admin/snapshot") => reply(
            200,
            json_of(&rest::SnapshotInfo::new(
                s.revision,
                1,
                s.kv.len() as u64,
                "snap-1".into(),
                true,
            )),
        ),
        ("POST", "/sessions") => {
            s.next_client_id += 1;
            reply(
                200,
                json_of(&rest::SessionRegistered {
                    client_id: s.next_client_id,
                }),
            )
        }
        ("DELETE", "/keys") => {
            let prefix = q.get("prefix").cloned().unwrap_or_default();
            // As the server: an empty prefix only with the explicit all=true.
            let all = q.get("all").map(Vec::as_slice) == Some(b"true");
            if prefix.is_empty() != all {
                return error(ErrorCode::EmptyPrefix);
            }
            let before = s.kv.len();
            s.kv.retain(|k, _| !k.starts_with(&prefix));
            s.revision += 1;
            s.applied += 1;
            let deleted = (before - s.kv.len()) as u64;
            reply(
                200,
                json_of(&rest::DeleteResult {
                    revision: s.revision,
                    deleted,
                }),
            )
        }
        ("GET", "/keys") => {
            let prefix = q.get("prefix").cloned().unwrap_or_default();
            let limit: usize = q
                .get("limit")
                .and_then(|l| std::str::from_utf8(l).ok()?.parse().ok())
                .unwrap_or(100);
            // As the server: keys strictly after `after`, and `next` when more match.
            let after = q.get("after").cloned();
            let matching: Vec<_> =
                s.kv.iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
                    .collect();
            let page = &matching[..limit.min(matching.len())];
            let more = matching.len() > limit;
            let answer = rest::ListResult {
                kvs: page
                    .iter()
                    .map(|(k, e)| kv_answer(k, e, s.revision))
                    .collect(),
                more,
                revision: s.revision,
                next: page
                    .last()
                    .filter(|_| more)
                    .map(|(last, _)| Bytes::copy_from_slice(last)),
                stale: None,
            };
            reply(200, json_of(&answer))
        }
        _ => {
            let Some(encoded) = path.strip_prefix("/keys/") else {
                return error(ErrorCode::NoRoute);
            };
            let Some(key) = percent_decode(encoded) else {
                return error(ErrorCode::BadRequest);
            };
            if method == "GET" {
                return get(s, &key, q, json_wanted);
            }
            // a write: exactly once per session sequence
            if let Some((id, seq)) = session
                && let Some((last, status, answer)) = s.sessions.get(&id)
                && *last == seq
            {
                return reply(*status, answer.clone());
            }
            let response = write(s, method, key, q, body);
            if let Some((id, seq)) = session {
                let status = response.0;
                s.sessions.insert(id, (seq, status, response.1.clone()));
            }
            reply(response.0, response.1)
        }
    }
}

fn get(
    s: &Store,
    key: &[u8],
    q: &HashMap<String, Vec<u8>>,
    json_wanted: bool,
) -> Response<Full<Bytes>> {
    let Some(e) = s.kv.get(key) else {
        return error(ErrorCode::NotFound);
    };
    let stale = q.get("consistency").is_some_and(|c| c == b"stale");
    if json_wanted {
        let mut answer = kv_answer(key, e, s.revision);
        answer.stale = stale.then_some(rest::StaleInfo {
            applied_index: s.revision,
            commit_index: s.revision + 2,
        });
        return reply(200, json_of(&answer));
    }
    let mut r = reply(200, e.value.clone());
    let h = r.headers_mut();
    h.insert(headers::CREATE_REVISION, e.create.into());
    h.insert(headers::MOD_REVISION, e.modified.into());
    h.insert(headers::VERSION, e.version.into());
    h.insert(headers::REVISION, s.revision.into());
    if stale {
        h.insert(headers::APPLIED_INDEX, s.revision.into());
        h.insert(headers::COMMIT_INDEX, (s.revision + 2).into());
    }
    r
}

fn write(
    s: &mut Store,
    method: &str,
    key: Vec<u8>,
    q: &HashMap<String, Vec<u8>>,
    body: Bytes,
) -> (u16, String) {
    let current = s.kv.get(&key).map_or(0, |e| e.version);
    match method {
        "PUT" => {
            let holds = match (q.get("prev_version"), q.get("prev_value")) {
                (Some(v), _) => {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        == Some(current)
                }
                (None, Some(x)) => s.kv.get(&key).is_some_and(|e| &e.value == x),
                (None, None) => true,
            };
            if !holds {
                let code = ErrorCode::CasFailed;
                let answer = error_body(code, &[("current_version", json!(current))]);
                return (code.http_status(), answer);
            }
            s.revision += 1;
            s.applied += 1;
            let revision = s.revision;
            let entry = s.kv.entry(key).or_insert(Entry {
                value: Vec::new(),
                create: revision,
                modified: revision,
                version: 0,
            });
            entry.value = body.to_vec();
            entry.modified = revision;
            entry.version += 1;
            (
                200,
                json_of(&rest::PutResult {
                    revision,
                    version: entry.version,
                }),
            )
        }
        "DELETE" => {
            s.revision += 1;
            s.applied += 1;
            let deleted = u64::from(s.kv.remove(&key).is_some());
            (
                200,
                json_of(&rest::DeleteResult {
                    revision: s.revision,
                    deleted,
                }),
            )
        }
        _ => {
            let code = ErrorCode::MethodNotAllowed;
            (code.http_status(), error_body(code, &[]))
        }
    }
}

// ---------------------------------------------------------------- helpers

fn fast_options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        passes: 2,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(20),
        ..ClientOptions::default()
    }
}

fn client(urls: &[String]) -> Client {
    Client::with_options(urls, fast_options()).expect("valid endpoints")
}

/// An address nothing listens on.
async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    drop(listener);
    format!("http://{addr}")
}

// ---------------------------------------------------------------- client tests

#[tokio::test]
async fn the_leader_is_found_and_preferred() {
    let cluster = Cluster::start(3).await;
    cluster.set_leader(Some(2));
    let client = client(&cluster.urls());
    client.put("k", "v").await.expect("put");
    client.put("k", "w").await.expect("put");
    assert_eq!(client.known_leader(), Some(cluster.nodes[2].url()));
    assert_eq!(cluster.nodes[2].seen("PUT", "/keys/").len(), 2);
    assert!(cluster.nodes[0].seen("PUT", "/keys/").is_empty());
    assert!(cluster.nodes[1].seen("PUT", "/keys/").is_empty());
    // one lookup, on the first endpoint, then no more
    assert_eq!(cluster.nodes[0].seen("GET", "/cluster/leader").len(), 1);
    assert_eq!(
        client
            .get("k", Consistency::Linearizable)
            .await
            .expect("get")
            .value,
        "w"
    );
}

#[tokio::test]
async fn a_dead_endpoint_is_skipped_and_all_dead_lists_every_endpoint() {
    let cluster = Cluster::start(1).await;
    cluster.set_leader(None);
    let dead = dead_url().await;
    let client = client(&[dead.clone(), cluster.nodes[0].url()]);
    client
        .put("k", "v")
        .await
        .expect("plain write after a refused connect");
    assert_eq!(
        client
            .get("k", Consistency::Linearizable)
            .await
            .expect("get")
            .value,
        "v"
    );

    let other_dead = dead_url().await;
    let nobody = client_with(&[dead.clone(), other_dead.clone()], 1);
    match nobody.get("k", Consistency::Linearizable).await {
        Err(Error::Unavailable(failures)) => {
            let endpoints: Vec<_> = failures.iter().map(|f| f.endpoint.clone()).collect();
            assert_eq!(endpoints, [dead, other_dead]);
            let line = Error::Unavailable(failures).to_string();
            assert!(line.contains("refused"), "{line}");
            assert!(!line.contains('\n'));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn client_with(urls: &[String], passes: u32) -> Client {
    Client::with_options(
        urls,
        ClientOptions {
            passes,
            ..fast_options()
        },
    )
    .expect("valid endpoints")
}

#[tokio::test]
async fn a_503_moves_even_a_plain_write_to_the_next_node() {
    let cluster = Cluster::start(2).await;
    cluster.set_leader(Some(0));
    cluster.nodes[0].fault(Fault::Status(ErrorCode::NoLeader));
    let client = client(&cluster.urls());
    client.put("k", "v").await.expect("write lands on node 1");
    assert_eq!(cluster.nodes[1].seen("PUT", "/keys/k").len(), 1);
    assert_eq!(cluster.applied(), 1);
}

#[tokio::test]
async fn a_session_write_retried_after_a_lost_answer_is_applied_once() {
    let cluster = Cluster::start(2).await;
    cluster.set_leader(Some(0));
    let client = client(&cluster.urls());
    let mut session = client.register_session().await.expect("session");
    // node 0 applies the write but the answer is lost: the retry on node 1 must carry the
    // same sequence, and the store must answer it from the session table.
    cluster.nodes[0].fault(Fault::ApplyThenDrop);
    let first = session.put("k", "v").await.expect("retried write");
    assert_eq!(first.version, 1);
    assert_eq!(cluster.entry(b"k").expect("stored").version, 1);
    assert_eq!(cluster.applied(), 1);
    let on0 = cluster.nodes[0].seen("PUT", "/keys/k");
    let on1 = cluster.nodes[1].seen("PUT", "/keys/k");
    assert_eq!((on0.len(), on1.len()), (1, 1));
    assert_eq!(on0[0].sequence, Some(1));
    assert_eq!(on1[0].sequence, Some(1));
    assert_eq!(on0[0].client_id, Some(session.client_id()));

    // the next write uses the next sequence, whichever node it goes to
    session.put("k", "w").await.expect("second write");
    assert_eq!(cluster.entry(b"k").expect("stored").version, 2);
    // a write dropped unapplied by both nodes is resent on the next pass, same sequence
    cluster.nodes[0].fault(Fault::Drop);
    cluster.nodes[1].fault(Fault::Drop);
    session
        .put("k", "x")
        .await
        .expect("third write, on the second pass");
    let mut sequences: Vec<_> = [0, 1]
        .iter()
        .flat_map(|&i| cluster.nodes[i].seen("PUT", "/keys/k"))
        .filter_map(|s| s.sequence)
        .collect();
    sequences.sort_unstable();
    assert_eq!(sequences, [1, 1, 2, 3, 3, 3]);
    assert_eq!(cluster.entry(b"k").expect("stored").version, 3);
    assert_eq!(cluster.applied(), 3);
}

#[tokio::test]
async fn a_504_is_retried_with_the_same_sequence_only_in_a_session() {
    let cluster = Cluster::start(2).await;
    cluster.set_leader(Some(0));
    let client = client(&cluster.urls());
    let mut session = client.register_session().await.expect("session");
    cluster.nodes[0].fault(Fault::Status(ErrorCode::Timeout));
    session.delete("absent").await.expect("retried delete");
    let sequences: Vec<_> = [0, 1]
        .iter()
        .flat_map(|&i| cluster.nodes[i].seen("DELETE", "/keys/absent"))
        .map(|s| s.sequence)
        .collect();
    assert_eq!(sequences, [Some(1), Some(1)]);

    cluster.nodes[0].fault(Fault::Status(ErrorCode::Timeout));
    assert!(matches!(client.put("p", "v").await, Err(Error::Timeout(_))));
    assert!(
        cluster.nodes[1].seen("PUT", "/keys/p").is_empty(),
        "plain write was retried"
    );
}

#[tokio::test]
async fn a_plain_write_whose_answer_is_lost_is_not_retried() {
    let cluster = Cluster::start(2).await;
    cluster.set_leader(Some(0));
    let client = client(&cluster.urls());
    cluster.nodes[0].fault(Fault::ApplyThenDrop);
    match client.put("k", "v").await {
        Err(Error::Timeout(message)) => assert!(message.contains("may or may not"), "{message}"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(cluster.nodes[1].seen("PUT", "/keys/").is_empty());
    assert_eq!(cluster.applied(), 1);
}

#[tokio::test]
async fn a_slow_node_is_left_for_another_on_reads() {
    let cluster = Cluster::start(2).await;
    cluster.set_leader(Some(0));
    let setup = client(&cluster.urls());
    setup.put("k", "v").await.expect("put");
    let impatient = Client::with_options(
        cluster.urls(),
        ClientOptions {
            request_timeout: Duration::from_millis(200),
            ..fast_options()
        },
    )
    .expect("valid endpoints");
    cluster.nodes[0].fault(Fault::Delay(Duration::from_secs(2)));
    let kv = impatient
        .get("k", Consistency::Linearizable)
        .await
        .expect("read from node 1");
    assert_eq!(kv.value, "v");
    assert_eq!(cluster.nodes[1].seen("GET", "/keys/k").len(), 1);
}

#[tokio::test]
async fn error_codes_map_to_typed_errors() {
    let cluster = Cluster::start(1).await;
    cluster.set_leader(Some(0));
    let client = client(&cluster.urls());
    assert_eq!(
        client.get("missing", Consistency::Linearizable).await,
        Err(Error::NotFound {
            key: "missing".into()
        })
    );
    client.put("k", "v1").await.expect("put");
    assert_eq!(
        client.put_if("k", "v2", Precondition::Version(5)).await,
        Err(Error::CasFailed { current_version: 1 })
    );
    assert_eq!(
        client
            .put_if("k", "v2", Precondition::Value(Bytes::from_static(b"nope")))
            .await,
        Err(Error::CasFailed { current_version: 1 })
    );
    assert_eq!(
        client
            .put_if("new", "x", Precondition::Version(0))
            .await
            .map(|r| r.version),
        Ok(1)
    );
    let swapped = client
        .put_if("k", "v2", Precondition::Value(Bytes::from_static(b"v1")))
        .await
        .expect("condition holds");
    assert_eq!(swapped.version, 2);

    let node = &cluster.nodes[0];
    node.fault(Fault::Status(ErrorCode::TooLarge));
    assert!(matches!(
        client.put("k", "v").await,
        Err(Error::TooLarge(_))
    ));
    node.fault(Fault::Status(ErrorCode::BadRequest));
    assert!(matches!(
        client.get("k", Consistency::Linearizable).await,
        Err(Error::BadRequest(_))
    ));
    node.fault(Fault::Status(ErrorCode::SessionExpired));
    assert!(matches!(
        client.delete("k").await,
        Err(Error::SessionExpired(_))
    ));
    node.fault(Fault::Garbage);
    assert!(matches!(
        client.put("k", "v").await,
        Err(Error::Protocol(_))
    ));
    // a raw GET answer without the revision headers does not follow the API
    node.fault(Fault::Garbage);
    assert!(matches!(
        client.get("k", Consistency::Linearizable).await,
        Err(Error::Protocol(_))
    ));
    // a 503 on the only endpoint, every pass: unavailable, naming the server's reason
    for _ in 0..2 {
        node.fault(Fault::Status(ErrorCode::ShuttingDown));
    }
    match client.get("k", Consistency::Linearizable).await {
        Err(Error::Unavailable(f)) => assert!(f[0].reason.contains("shutting_down"), "{f:?}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // limits are checked before anything is sent
    let sent_before = node.seen("PUT", "/keys/").len();
    let huge = vec![b'x'; cli::client::VALUE_BYTES_MAX + 1];
    assert!(matches!(
        client.put("k", huge).await,
        Err(Error::TooLarge(_))
    ));
    assert_eq!(node.seen("PUT", "/keys/").len(), sent_before);
}

#[tokio::test]
async fn keys_with_slashes_spaces_and_non_utf8_bytes_survive() {
    let cluster = Cluster::start(1).await;
    cluster.set_leader(Some(0));
    let client = client(&cluster.urls());
    let key: &[u8] = b"dir/sub key\xff%?&=";
    let value: &[u8] = b"\x00\x01binary\xfe";
    client
        .put(key, Bytes::from_static(value))
        .await
        .expect("put");
    let seen = cluster.nodes[0].seen("PUT", "/keys/").pop().expect("seen");
    assert_eq!(seen.path, "/keys/dir%2Fsub%20key%FF%25%3F%26%3D");
    assert_eq!(
        cluster
            .entry(key)
            .expect("stored under the exact bytes")
            .value,
        value
    );

    let raw = client
        .get(key, Consistency::Linearizable)
        .await
        .expect("raw get");
    assert_eq!((&raw.key[..], &raw.value[..]), (key, value));
    assert_eq!(
        (raw.version, raw.create_revision, raw.mod_revision),
        (1, 1, 1)
    );
    let json = client
        .get_json(key, Consistency::Linearizable)
        .await
        .expect("json get");
    assert_eq!((&json.key[..], &json.value[..]), (key, value));
    assert_eq!(json.revision, 1);

    client.put("dir/plain", "text").await.expect("put");
    client.put("other", "x").await.expect("put");
    let listing = client.list("dir/", Some(1)).await.expect("list");
    assert!(listing.more);
    assert_eq!(&listing.kvs[0].key[..], b"dir/plain");
    let listing = client.list("dir/", None).await.expect("list");
    assert_eq!(listing.kvs.len(), 2);
    assert_eq!(&listing.kvs[1].key[..], key);
    let seen = cluster.nodes[0].seen("GET", "/keys?").pop().expect("seen");
    assert_eq!(seen.path, "/keys?prefix=dir%2F");
}

#[tokio::test]
async fn stale_reads_report_how_far_behind_they_may_be() {
    let cluster = Cluster::start(1).await;
    cluster.set_leader(Some(0));
    let client = client(&cluster.urls());
    client.put("k", "v").await.expect("put");
    let raw = client
        .get("k", Consistency::Stale)
        .await
        .expect("stale get");
    let stale = raw.stale.expect("stale info from the headers");
    assert_eq!((stale.applied_index, stale.commit_index), (1, 3));
    let json = client
        .get_json("k", Consistency::Stale)
        .await
        .expect("stale json get");
    assert_eq!(json.stale, raw.stale);
    assert!(
        client
            .get("k", Consistency::Linearizable)
            .await
            .expect("get")
            .stale
            .is_none()
    );
    assert!(
        cluster.nodes[0]
            .seen("GET", "/keys/k?consistency=stale")
            .len()
            == 2
    );
}

// ---------------------------------------------------------------- kvcli

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a loopback port")
        .port()
}

async fn kvcli(args: &[&str], stdin: &[u8]) -> (Result<(), command::CliError>, Vec<u8>, Vec<u8>) {
    let cli = Cli::try_parse_from(std::iter::once("kvcli").chain(args.iter().copied()))
        .expect("valid arguments");
    let (mut out, mut notes) = (Vec::new(), Vec::new());
    let mut input = stdin;
    let outcome = command::run(
        cli,
        &mut input,
        Output {
            out: &mut out,
            notes: &mut notes,
            terminal: false,
        },
    )
    .await;
    (outcome, out, notes)
}

#[tokio::test]
async fn kvcli_list_follows_the_pages_to_the_last_key_and_stops_at_its_own_limit() {
    // Given 2,500 keys under p/ (more than two of kvcli's pages), one not UTF-8, and keys
    // around the prefix
    let cluster = Cluster::start(1).await;
    cluster.set_leader(Some(0));
    let mut expected: Vec<Vec<u8>> = Vec::new();
    {
        let mut store = cluster.store.lock().expect("test lock");
        for i in 0..2_500 {
            let key = format!("p/{i:05}").into_bytes();
            store.kv.insert(key.clone(), entry(b"v"));
            expected.push(key);
        }
        store.kv.insert(b"p/\xff".to_vec(), entry(b"v"));
        expected.push(b"p/\xff".to_vec());
        store.kv.insert(b"o".to_vec(), entry(b"outside"));
        store.kv.insert(b"q".to_vec(), entry(b"outside"));
    }
    let e = cluster.nodes[0].url();

    // When kvcli lists the prefix without a limit
    let (outcome, out, notes) = kvcli(&["--endpoints", &e, "list", "--prefix", "p/"], b"").await;
    outcome.expect("list");
    // Then every key comes once, in order, read in pages that each continue after the last
    let text = String::from_utf8_lossy(&out);
    let listed: Vec<&str> = text
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    let want: Vec<String> = expected
        .iter()
        .map(|k| cli::error::printable(k, usize::MAX))
        .collect();
    assert_eq!(listed, want);
    assert!(notes.is_empty(), "{}", String::from_utf8_lossy(&notes));
    let pages = cluster.nodes[0].seen("GET", "/keys?");
    assert_eq!(pages.len(), 3, "1,000 keys a page");
    assert!(!pages[0].path.contains("after="));
    assert!(
        pages[1].path.ends_with("&after=p%2F00999&limit=1000"),
        "{}",
        pages[1].path
    );

    // and --limit is a total over pages, with a note that more keys match
    let (outcome, out, notes) = kvcli(
        &[
            "--endpoints",
            &e,
            "list",
            "--prefix",
            "p/",
            "--limit",
            "1500",
        ],
        b"",
    )
    .await;
    outcome.expect("list --limit");
    assert_eq!(String::from_utf8_lossy(&out).lines().count(), 1_500);
    assert!(String::from_utf8_lossy(&notes).contains("--limit"));

    // and --json gathers the pages into one listing
    let (outcome, out, _) = kvcli(
        &["--endpoints", &e, "--json", "list", "--prefix", "p/"],
        b"",
    )
    .await;
    outcome.expect("list --json");
    let parsed: serde_json::Value = serde_json::from_slice(&out).expect("one JSON document");
    assert_eq!(parsed["kvs"].as_array().expect("kvs").len(), 2_501);
    assert_eq!(parsed["more"], json!(false));
    assert!(Cli::try_parse_from(["kvcli", "list", "--prefix", "p/", "--limit", "0"]).is_err());
}

#[tokio::test]
async fn kvcli_delete_all_says_so_and_an_empty_prefix_is_refused() {
    let cluster = Cluster::start(1).await;
    cluster.set_leader(Some(0));
    {
        let mut store = cluster.store.lock().expect("test lock");
        store.kv.insert(b"a".to_vec(), entry(b"1"));
        store.kv.insert(b"b".to_vec(), entry(b"2"));
    }
    let e = cluster.nodes[0].url();
    let (outcome, _, _) = kvcli(&["--endpoints", &e, "delete", "--prefix", ""], b"").await;
    assert!(outcome.is_err());
    assert!(cluster.entry(b"a").is_some(), "nothing deleted");
    assert!(Cli::try_parse_from(["kvcli", "delete", "--all", "--prefix", "a"]).is_err());
    // The library refuses the empty prefix before sending, too.
    let client = Client::new([e.as_str()]).expect("client");
    assert!(matches!(
        client.delete_prefix("").await,
        Err(Error::BadRequest(_))
    ));
    assert!(
        cluster.nodes[0].seen("DELETE", "/keys").is_empty(),
        "nothing sent"
    );

    let (outcome, out, _) = kvcli(&["--endpoints", &e, "delete", "--all"], b"").await;
    outcome.expect("delete --all");
    assert!(String::from_utf8_lossy(&out).starts_with("deleted 2 "));
    let sent = cluster.nodes[0].seen("DELETE", "/keys");
    assert_eq!(sent.last().expect("a delete").path, "/keys?all=true");
}

#[tokio::test]
async fn kvcli_commands_print_answers_and_exit_codes() {
    let cluster = Cluster::start(2).await;
    cluster.set_leader(Some(1));
    let endpoints = cluster.urls().join(",");
    let e = endpoints.as_str();

    let (outcome, out, _) =
        kvcli(&["--endpoints", e, "put", "greeting", "-"], b"hello\nworld").await;
    outcome.expect("put from stdin");
    assert_eq!(String::from_utf8_lossy(&out), "revision 1 version 1\n");

    let (outcome, out, _) = kvcli(&["--endpoints", e, "get", "greeting"], b"").await;
    outcome.expect("get");
    assert_eq!(
        out, b"hello\nworld",
        "raw value, nothing added when not a terminal"
    );

    let (outcome, out, _) = kvcli(&["--endpoints", e, "--json", "get", "greeting"], b"").await;
    outcome.expect("get --json");
    let parsed: serde_json::Value = serde_json::from_slice(&out).expect("one JSON document");
    assert_eq!(parsed["value"], "hello\nworld");
    assert_eq!(parsed["version"], 1);

    // The container health check: ok from a node that answers, an error from none.
    let (outcome, out, _) = kvcli(&["--endpoints", e, "admin", "health"], b"").await;
    outcome.expect("admin health");
    assert_eq!(String::from_utf8_lossy(&out), "ok\n");
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let (outcome, _, _) = kvcli(
        &["--endpoints", &closed, "--timeout", "1s", "admin", "health"],
        b"",
    )
    .await;
    outcome.expect_err("no node answers");

    let (outcome, _, _) = kvcli(&["--endpoints", e, "get", "nope"], b"").await;
    let error = outcome.expect_err("missing key");
    assert_eq!(command::exit_code(&error), EXIT_NOT_FOUND);
    assert_eq!(error.to_string(), "key not found: nope");

    let (outcome, _, _) = kvcli(
        &[
            "--endpoints",
            e,
            "cas",
            "greeting",
            "--prev-version",
            "7",
            "x",
        ],
        b"",
    )
    .await;
    let error = outcome.expect_err("stale version");
    assert_eq!(command::exit_code(&error), EXIT_CAS_FAILED);
    let (outcome, out, _) = kvcli(
        &[
            "--endpoints",
            e,
            "cas",
            "greeting",
            "--prev-version",
            "1",
            "x",
        ],
        b"",
    )
    .await;
    outcome.expect("cas");
    assert_eq!(String::from_utf8_lossy(&out), "revision 2 version 2\n");

    kvcli(&["--endpoints", e, "put", "p/a", "1"], b"")
        .await
        .0
        .expect("put");
    kvcli(&["--endpoints", e, "put", "p/b", "2"], b"")
        .await
        .0
        .expect("put");
    let (outcome, out, notes) = kvcli(
        &["--endpoints", e, "list", "--prefix", "p/", "--limit", "1"],
        b"",
    )
    .await;
    outcome.expect("list");
    assert_eq!(String::from_utf8_lossy(&out), "p/a\t1\n");
    assert!(String::from_utf8_lossy(&notes).contains("--limit"));

    let (outcome, out, _) = kvcli(&["--endpoints", e, "delete", "--prefix", "p/"], b"").await;
    outcome.expect("delete prefix");
    assert!(String::from_utf8_lossy(&out).starts_with("deleted 2 "));
    let (outcome, _, _) = kvcli(&["--endpoints", e, "delete", "--prefix", ""], b"").await;
    assert_eq!(
        command::exit_code(&outcome.expect_err("empty prefix")),
        command::EXIT_USAGE
    );

    // every write went to the leader, each through a session
    let writes = cluster.nodes[1].seen("PUT", "/keys/");
    assert_eq!(writes.len(), 5);
    assert!(
        writes
            .iter()
            .all(|w| w.sequence == Some(1) && w.client_id.is_some())
    );
    assert!(cluster.nodes[0].seen("PUT", "/keys/").is_empty());
}

// ---------------------------------------------------------------- bench

#[tokio::test]
async fn bench_preloads_then_runs_the_asked_number_of_operations() {
    let cluster = Cluster::start(2).await;
    cluster.set_leader(Some(0));
    let client = Client::with_options(
        cluster.urls(),
        ClientOptions {
            routing: Routing::Spread,
            idle_connections_per_endpoint: 4,
            ..fast_options()
        },
    )
    .expect("valid endpoints");
    let config = BenchConfig {
        workload: Workload::Mixed { read_ratio: 0.5 },
        concurrency: 4,
        keys: 50,
        key_size: 8,
        value_size: 32,
        stop: Stop::Ops(400),
        preload: true,
        progress: false,
        window: None,
    };
    let report = bench::run(&client, &config, "all")
        .await
        .expect("bench runs");
    assert_eq!(report.ops + report.errors, 400);
    assert_eq!(report.errors, 0, "{:?}", report.errors_by_kind);
    assert_eq!(report.not_found, 0, "every key was preloaded");
    let store = cluster.store.lock().expect("test lock");
    assert_eq!(store.kv.len(), 50);
    assert!(store.kv.keys().all(|k| k.len() == 8 && k.starts_with(b"k")));
    assert!(store.kv.values().all(|e| e.value.len() == 32));
    drop(store);
    // spread over both nodes
    assert!(!cluster.nodes[0].seen("GET", "/keys/").is_empty());
    assert!(!cluster.nodes[1].seen("GET", "/keys/").is_empty());
    let latency = report.latency_ms.expect("successes were timed");
    assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    let json = serde_json::to_value(&report).expect("serialises");
    assert_eq!(json["workload"], "mixed");
    assert!(json["latency_ms"]["p99_9"].is_number());
    assert!(report.to_string().contains("ops/s"));
}

#[tokio::test]
async fn write_new_writes_a_new_key_each_time_and_reports_every_window() {
    // Given a two-node fake cluster and a write-new run of 6 workers, 3,000 writes, with
    // 100 ms windows; the leader answers one write with 503 no_leader, which the client
    // sends again to the other node
    let cluster = Cluster::start(2).await;
    cluster.set_leader(Some(0));
    cluster.nodes[0].fault(Fault::Status(ErrorCode::NoLeader));
    let client = Client::with_options(
        cluster.urls(),
        ClientOptions {
            idle_connections_per_endpoint: 6,
            ..fast_options()
        },
    )
    .expect("valid endpoints");
    let config = BenchConfig {
        workload: Workload::WriteNew { run_tag: 0xabc123 },
        concurrency: 6,
        keys: 1,
        key_size: 16,
        value_size: 100,
        stop: Stop::Ops(3000),
        preload: false,
        progress: false,
        window: Some(Duration::from_millis(100)),
    };
    let mut windows = Vec::new();
    let report = bench::run_observed(&client, &config, "leader", &mut |w| windows.push(w.clone()))
        .await
        .expect("bench runs");
    // Then every write made its own key under the run's prefix: as many keys as successes
    assert_eq!(report.errors, 0, "{:?}", report.errors_by_kind);
    assert_eq!(report.ops, 3000);
    assert_eq!(report.key_prefix.as_deref(), Some("nabc123"));
    assert_eq!(report.keys, 3000, "one new key per operation");
    let store = cluster.store.lock().expect("test lock");
    assert_eq!(store.kv.len(), 3000, "a key was written twice");
    assert_eq!(store.applied, 3000);
    assert!(
        store
            .kv
            .iter()
            .all(|(k, e)| k.len() == 16 && k.starts_with(b"nabc123") && e.value.len() == 100)
    );
    drop(store);
    // and the windows came in order, none missing, and add up to the run
    assert!(!windows.is_empty());
    assert!(
        windows
            .iter()
            .enumerate()
            .all(|(i, w)| w.window == i as u64)
    );
    assert_eq!(windows.iter().map(|w| w.ops).sum::<u64>(), 3000);
    let summary = report.windows.as_ref().expect("windows were asked for");
    assert_eq!(summary.windows, windows.len() as u64);
    assert_eq!(summary.errors, 0);
    let json = serde_json::to_value(&report).expect("serialises");
    assert_eq!(json["workload"], "write-new");
    assert_eq!(json["windows"]["windows"], windows.len());
}

#[tokio::test]
async fn kvcli_bench_write_new_prints_windows_and_writes_the_csv() {
    // Given a fake node and a temporary CSV path
    let cluster = Cluster::start(1).await;
    cluster.set_leader(Some(0));
    let csv = std::env::temp_dir().join(format!("kvcli-windows-{}.csv", std::process::id()));
    let csv_arg = csv.to_string_lossy().into_owned();
    let url = cluster.urls()[0].clone();
    // When kvcli runs 500 new-key writes with windows, as JSON lines
    let (outcome, out, _) = kvcli(
        &[
            "--endpoints",
            &url,
            "--json",
            "bench",
            "--workload",
            "write-new",
            "--concurrency",
            "4",
            "--ops",
            "500",
            "--window",
            "100ms",
            "--csv",
            &csv_arg,
        ],
        b"",
    )
    .await;
    outcome.expect("bench succeeds");
    // Then each window is one JSON line, then the report with its window summary
    let text = String::from_utf8(out).expect("utf-8");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    let (report, windows) = lines.split_last().expect("some output");
    assert!(
        windows
            .iter()
            .all(|w| w["window"].is_u64() && w["p99_ms"].is_null())
    );
    assert_eq!(report["ops"], 500);
    assert_eq!(report["windows"]["windows"], windows.len());
    // and the CSV has the header and one row per window
    let written = std::fs::read_to_string(&csv).expect("CSV written");
    let _ = std::fs::remove_file(&csv);
    let rows: Vec<&str> = written.lines().collect();
    assert_eq!(rows[0], bench::WindowReport::CSV_HEADER);
    assert_eq!(rows.len(), 1 + windows.len());
    assert_eq!(cluster.store.lock().expect("test lock").kv.len(), 500);
}

#[tokio::test]
async fn node_local_requests_take_the_first_reachable_endpoint_and_its_answer() {
    let cluster = Cluster::start(2).await;
    cluster.set_leader(None);
    let dead = dead_url().await;
    let client = client(&[dead, cluster.nodes[1].url(), cluster.nodes[0].url()]);
    assert_eq!(client.health().await.expect("health"), "ok");
    // not ready is an answer, not a reason to ask another node
    let readiness = client.ready().await.expect("ready answer");
    assert!(!readiness.ready);
    assert_eq!(readiness.endpoint, cluster.nodes[1].url());
    assert_eq!(readiness.detail["code"], "not_ready");
    cluster.set_leader(Some(0));
    assert!(client.ready().await.expect("ready answer").ready);
    let snapshot = client.snapshot().await.expect("snapshot");
    assert_eq!(snapshot.file, "snap-1");
    assert_eq!(cluster.nodes[1].seen("POST", "/admin/snapshot").len(), 1);
    assert!(cluster.nodes[0].seen("POST", "/admin/snapshot").is_empty());
    assert!(cluster.nodes[0].seen("GET", "/ready").is_empty());
}

#[tokio::test]
async fn a_call_ends_within_its_call_timeout_when_no_node_answers_in_time() {
    // Given two nodes that each take 3 s over every request, and a client that may wait 10 s
    // per attempt and make 8 passes, but only 1 s for the whole call
    let cluster = Cluster::start(2).await;
    cluster.set_leader(Some(0));
    for node in &cluster.nodes {
        for _ in 0..20 {
            node.fault(Fault::Delay(Duration::from_secs(3)));
        }
    }
    let client = Client::with_options(
        cluster.urls(),
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(1),
            passes: 8,
            ..ClientOptions::default()
        },
    )
    .expect("valid endpoints");
    // When it reads
    let started = std::time::Instant::now();
    let outcome = client.get("k", Consistency::Linearizable).await;
    let took = started.elapsed();
    // Then it fails as unavailable once the call's second is up, not after 8 passes of
    // attempts (generous bound: the machine is shared).
    assert!(
        matches!(outcome, Err(Error::Unavailable(_))),
        "expected Unavailable, got {outcome:?}"
    );
    assert!(took < Duration::from_millis(2500), "the call took {took:?}");
}
