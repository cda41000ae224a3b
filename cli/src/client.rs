//! [`Client`]: the Rust SDK for RaftKV's HTTP API (docs/api.md).
//!
//! Job: send each call to a node that can answer it, survive a node or a leader going away,
//! and hand back typed answers or a typed [`Error`].
//!
//! Routing. With [`Routing::Leader`] (the default) the client asks `GET /cluster/leader` and
//! sends key and cluster requests to the leader first, so a write does not pay a forwarding
//! hop. With [`Routing::Spread`] it rotates over the endpoints (followers forward). Requests
//! about one node (`/health`, `/ready`, `/admin/snapshot`) go to the endpoints in the order
//! given, so a single endpoint names the node.
//!
//! Retries. A request tries the endpoints one after another, for
//! [`ClientOptions::passes`] passes with exponential backoff between passes, all within
//! [`ClientOptions::call_timeout`], and then fails with [`Error::Unavailable`] listing
//! each endpoint's last failure. A `4xx` answer is final: it is never retried. What may be retried
//! depends on whether sending the request twice is harmless:
//! - a refused or failed *connect*, or a `503` (no leader, shutting down): always retried,
//!   since the request was not applied;
//! - a connection lost after sending, a client-side timeout, or a `504` (outcome unknown):
//!   retried only for reads and for [`Session`] writes, which carry the same
//!   `X-Raftkv-Sequence` on every retry so the server applies them at most once. A plain
//!   write fails at once with [`Error::Timeout`] instead: the caller must decide.
//!
//! Invariants:
//! - a [`Session`] sends sequence numbers 1, 2, 3, ... one write at a time (`&mut self`); the
//!   retries of one write reuse its number; the number advances after every write whatever
//!   its outcome, so a later write never reuses the number of an earlier one (the server
//!   accepts gaps: only a number at or below the last one is a duplicate);
//! - every answer body is read with a size bound ([`RESPONSE_BYTES_MAX`]), every attempt
//!   with a time bound ([`ClientOptions::request_timeout`]) and every call, all its attempts
//!   together, with another ([`ClientOptions::call_timeout`]);
//! - a malformed answer becomes [`Error::Protocol`], never a panic.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::encoding::percent_encode;
use crate::error::{EndpointFailure, Error, Result, from_response, one_line, printable};
use crate::types::{
    ClientOptions, Consistency, DeleteResult, JoinResult, KeyValue, LeaderInfo, ListResult,
    NodeInfo, Precondition, PutResult, Readiness, RemoveResult, Routing, SnapshotInfo, StaleInfo,
    TransferResult,
};

/// Largest key the server accepts (docs/api.md: 4 KiB); checked before sending.
pub const KEY_BYTES_MAX: usize = 4 * 1024;
/// Largest value the server accepts (docs/api.md: 1 MiB); checked before sending.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Largest `limit` of a listing (docs/api.md: 10,000).
pub const LIST_LIMIT_MAX: u32 = 10_000;
/// Largest answer body read. A listing of the maximum number of keys with large values can
/// exceed it, and then fails with [`Error::Protocol`]: list with a smaller limit.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Bound on one leader lookup per endpoint, whatever the request timeout.
pub const LEADER_LOOKUP_TIMEOUT_MAX: Duration = Duration::from_secs(2);
/// Least time between two leader lookups, so that many concurrent callers that lose the
/// leader together send one lookup, not one each.
pub const LEADER_LOOKUP_INTERVAL_MIN: Duration = Duration::from_millis(200);
/// Most endpoints a client accepts; more is a configuration mistake.
pub const ENDPOINTS_MAX: usize = 64;

/// Header carrying a session's client id.
pub const CLIENT_ID_HEADER: &str = "x-raftkv-client-id";
/// Header carrying a session write's sequence number.
pub const SEQUENCE_HEADER: &str = "x-raftkv-sequence";

const NO_LEADER: usize = usize::MAX;

/// One server, as given to the client.
#[derive(Debug)]
struct Endpoint {
    /// `http://host:port`, no trailing slash.
    base: String,
    /// `host:port`, to recognise the leader's `http_addr`.
    authority: String,
}

/// A RaftKV client: cheap to clone (clones share connections and the known leader).
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: HyperClient<HttpConnector, Full<Bytes>>,
    endpoints: Vec<Endpoint>,
    options: ClientOptions,
    /// Index into `endpoints` of the known leader, or [`NO_LEADER`].
    leader: AtomicUsize,
    /// Rotation counter for [`Routing::Spread`] and for starting points without a leader.
    rotation: AtomicUsize,
    /// When a leader lookup last started.
    last_lookup: Mutex<Option<Instant>>,
}

/// Whether sending a request twice is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Reads and session writes: retried after any failure.
    Safe,
    /// Plain writes: retried only when the request certainly was not applied.
    Unsafe,
}

/// Which endpoints a request goes to first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Per [`ClientOptions::routing`].
    Cluster,
    /// The endpoints in the order given; only transport failures move on.
    NodeLocal,
}

/// One API call, before it is sent anywhere.
struct Call<'a> {
    method: Method,
    path_and_query: String,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    key: Option<&'a [u8]>,
    replay: Replay,
    route: Route,
}

impl<'a> Call<'a> {
    fn new(method: Method, path_and_query: String, replay: Replay) -> Self {
        Call {
            method,
            path_and_query,
            body: Bytes::new(),
            headers: Vec::new(),
            key: None,
            replay,
            route: Route::Cluster,
        }
    }

    fn json_body(mut self, body: &serde_json::Value) -> Self {
        self.body = Bytes::from(body.to_string());
        self.headers
            .push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
        self
    }

    fn accept_json(mut self) -> Self {
        self.headers
            .push((ACCEPT, HeaderValue::from_static("application/json")));
        self
    }
}

/// A final answer: its status, headers and body.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

/// What one attempt on one endpoint came to.
enum Attempt {
    /// The server answered.
    Answer(Answer),
    /// The request certainly did not reach the server.
    NotSent(String),
    /// The request may have reached the server; no answer came.
    Lost(String),
}

/// One line from an error and its causes.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    // hyper-util's own layer ("client error (Connect)") says nothing its causes do not.
    let (mut text, mut source) = match error.source() {
        Some(cause) if error.to_string().starts_with("client error (") => {
            (cause.to_string(), cause.source())
        }
        _ => (error.to_string(), error.source()),
    };
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    one_line(&text)
}

/// Parses `http://host:port` (a trailing `/` allowed) into an [`Endpoint`].
fn parse_endpoint(text: &str) -> Result<Endpoint> {
    let invalid = |reason: &str| Error::InvalidEndpoint {
        endpoint: text.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = text.trim().trim_end_matches('/');
    let uri: Uri = trimmed
        .parse()
        .map_err(|_| invalid("not a URL; expected http://host:port"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err(invalid("only http:// is supported")),
        None => return Err(invalid("missing http:// scheme")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| invalid("missing host:port"))?;
    if authority.port_u16().is_none() {
        return Err(invalid("missing port"));
    }
    if uri
        .path_and_query()
        .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return Err(invalid("must not have a path or query"));
    }
    Ok(Endpoint {
        base: format!("http://{authority}"),
        authority: authority.as_str().to_owned(),
    })
}

/// A leader's `http_addr` as `host:port` (with or without a scheme).
fn authority_of(http_addr: &str) -> &str {
    let without_scheme = http_addr.strip_prefix("http://").unwrap_or(http_addr);
    without_scheme.trim_end_matches('/')
}

/// Refuses an empty prefix for a prefix delete: it would match every key, which takes the
/// explicit `delete_all`.
fn non_empty_prefix(prefix: &[u8]) -> Result<&[u8]> {
    if prefix.is_empty() {
        return Err(Error::BadRequest(
            "an empty prefix would delete every key; call delete_all to mean that".to_owned(),
        ));
    }
    Ok(prefix)
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::BadRequest("the key is empty".to_owned()));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(Error::TooLarge(format!(
            "key of {} bytes; the limit is {KEY_BYTES_MAX}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(Error::TooLarge(format!(
            "value of {} bytes; the limit is {VALUE_BYTES_MAX}",
            value.len()
        )));
    }
    Ok(())
}

fn parse_json<T: DeserializeOwned>(answer: &Answer, what: &str) -> Result<T> {
    serde_json::from_slice(&answer.body).map_err(|e| {
        Error::Protocol(format!(
            "{what}: {} in {}",
            one_line(&e.to_string()),
            printable(&answer.body, 200)
        ))
    })
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| Error::Protocol(format!("header {name} is not a number"))),
    }
}

fn required_header(headers: &HeaderMap, name: &str) -> Result<u64> {
    header_u64(headers, name)?.ok_or_else(|| Error::Protocol(format!("header {name} missing")))
}

/// The headers of a session write.
fn session_headers(client_id: u64, sequence: u64) -> Vec<(HeaderName, HeaderValue)> {
    vec![
        (
            HeaderName::from_static(CLIENT_ID_HEADER),
            HeaderValue::from(client_id),
        ),
        (
            HeaderName::from_static(SEQUENCE_HEADER),
            HeaderValue::from(sequence),
        ),
    ]
}

fn key_path(key: &[u8]) -> String {
    format!("/keys/{}", percent_encode(key))
}

fn read_query(consistency: Consistency) -> &'static str {
    match consistency {
        Consistency::Linearizable => "",
        Consistency::Stale => "?consistency=stale",
    }
}

impl Client {
    /// A client for `endpoints` (each `http://host:port`) with default options.
    pub fn new<I, S>(endpoints: I) -> Result<Client>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Client::with_options(endpoints, ClientOptions::default())
    }

    /// A client for `endpoints` (each `http://host:port`) with `options`.
    pub fn with_options<I, S>(endpoints: I, options: ClientOptions) -> Result<Client>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints = endpoints
            .into_iter()
            .map(|e| parse_endpoint(e.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let no_endpoint = |reason: &str| Error::InvalidEndpoint {
            endpoint: String::new(),
            reason: reason.to_owned(),
        };
        if endpoints.is_empty() {
            return Err(no_endpoint("no endpoint given"));
        }
        if endpoints.len() > ENDPOINTS_MAX {
            return Err(no_endpoint(&format!("more than {ENDPOINTS_MAX} endpoints")));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(options.connect_timeout));
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(options.idle_connections_per_endpoint)
            .build(connector);
        let options = ClientOptions {
            passes: options.passes.max(1),
            ..options
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                endpoints,
                options,
                leader: AtomicUsize::new(NO_LEADER),
                rotation: AtomicUsize::new(0),
                last_lookup: Mutex::new(None),
            }),
        })
    }

    /// The endpoints, normalised to `http://host:port`.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .endpoints
            .iter()
            .map(|e| e.base.clone())
            .collect()
    }

    /// The options in force.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The endpoint believed to be the leader, if one is known.
    pub fn known_leader(&self) -> Option<String> {
        let index = self.inner.leader.load(Ordering::Relaxed);
        self.inner.endpoints.get(index).map(|e| e.base.clone())
    }

    // ---- keys ----

    /// Reads `key` (raw value; revisions from the answer's headers).
    /// A missing key is [`Error::NotFound`].
    pub async fn get(&self, key: impl AsRef<[u8]>, consistency: Consistency) -> Result<KeyValue> {
        let key = key.as_ref();
        check_key(key)?;
        let path = format!("{}{}", key_path(key), read_query(consistency));
        let mut call = Call::new(Method::GET, path, Replay::Safe);
        call.key = Some(key);
        let answer = self.execute_ok(call).await?;
        let headers = &answer.headers;
        let stale = match (
            header_u64(headers, "x-raftkv-applied-index")?,
            header_u64(headers, "x-raftkv-commit-index")?,
        ) {
            (Some(applied_index), Some(commit_index)) => Some(StaleInfo {
                applied_index,
                commit_index,
            }),
            _ => None,
        };
        Ok(KeyValue {
            key: Bytes::copy_from_slice(key),
            create_revision: required_header(headers, "x-raftkv-create-revision")?,
            mod_revision: required_header(headers, "x-raftkv-mod-revision")?,
            version: required_header(headers, "x-raftkv-version")?,
            revision: required_header(headers, "x-raftkv-revision")?,
            stale,
            value: answer.body,
        })
    }

    /// Reads `key` through the JSON form of the answer (`Accept: application/json`).
    /// A missing key is [`Error::NotFound`].
    pub async fn get_json(
        &self,
        key: impl AsRef<[u8]>,
        consistency: Consistency,
    ) -> Result<KeyValue> {
        let key = key.as_ref();
        check_key(key)?;
        let path = format!("{}{}", key_path(key), read_query(consistency));
        let mut call = Call::new(Method::GET, path, Replay::Safe).accept_json();
        call.key = Some(key);
        let answer = self.execute_ok(call).await?;
        let kv: KeyValue = parse_json(&answer, "GET /keys answer")?;
        if kv.key != key {
            return Err(Error::Protocol(format!(
                "asked for key {} but got {}",
                printable(key, 200),
                printable(&kv.key, 200)
            )));
        }
        Ok(kv)
    }

    /// Lists up to `limit` keys starting with `prefix` (server default 100 when `None`): the
    /// first page; [`Client::list_page`] reads the ones after it.
    pub async fn list(&self, prefix: impl AsRef<[u8]>, limit: Option<u32>) -> Result<ListResult> {
        self.list_page(prefix, None, limit).await
    }

    /// One page of the keys starting with `prefix`, strictly after `after` (pass the previous
    /// page's [`ListResult::next`]); at most `limit` keys (server default 100 when `None`,
    /// at most [`LIST_LIMIT_MAX`]). Each page is one consistent read; follow `next` while
    /// `more` to walk any number of keys.
    pub async fn list_page(
        &self,
        prefix: impl AsRef<[u8]>,
        after: Option<&[u8]>,
        limit: Option<u32>,
    ) -> Result<ListResult> {
        let mut path = format!("/keys?prefix={}", percent_encode(prefix.as_ref()));
        if let Some(after) = after {
            check_key(after)?;
            path.push_str(&format!("&after={}", percent_encode(after)));
        }
        if let Some(limit) = limit {
            if limit > LIST_LIMIT_MAX {
                return Err(Error::BadRequest(format!(
                    "limit {limit} is over the maximum {LIST_LIMIT_MAX}"
                )));
            }
            path.push_str(&format!("&limit={limit}"));
        }
        let answer = self
            .execute_ok(Call::new(Method::GET, path, Replay::Safe).accept_json())
            .await?;
        parse_json(&answer, "GET /keys?prefix answer")
    }

    /// Writes `value` under `key`. Not retried once it may have been sent: use a [`Session`]
    /// for retries that stay exactly-once.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Result<PutResult> {
        self.put_call(key.as_ref(), value.into(), None, None).await
    }

    /// Writes `value` under `key` if `condition` holds, else [`Error::CasFailed`].
    pub async fn put_if(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        condition: Precondition,
    ) -> Result<PutResult> {
        self.put_call(key.as_ref(), value.into(), Some(&condition), None)
            .await
    }

    /// Deletes `key`; `deleted` is 0 when it did not exist.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<DeleteResult> {
        self.delete_call(key.as_ref(), None).await
    }

    /// Deletes every key starting with `prefix`, which must not be empty
    /// ([`Client::delete_all`] deletes every key).
    pub async fn delete_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<DeleteResult> {
        self.delete_prefix_call(Some(non_empty_prefix(prefix.as_ref())?), None)
            .await
    }

    /// Deletes every key (`DELETE /keys?all=true`).
    pub async fn delete_all(&self) -> Result<DeleteResult> {
        self.delete_prefix_call(None, None).await
    }

    /// Registers a client session for exactly-once writes (`POST /sessions`).
    pub async fn register_session(&self) -> Result<Session> {
        #[derive(Deserialize)]
        struct Registered {
            client_id: u64,
        }
        let answer = self
            .execute_ok(Call::new(
                Method::POST,
                "/sessions".to_owned(),
                Replay::Unsafe,
            ))
            .await?;
        let registered: Registered = parse_json(&answer, "POST /sessions answer")?;
        Ok(Session {
            client: self.clone(),
            client_id: registered.client_id,
            next_sequence: 1,
        })
    }

    async fn put_call(
        &self,
        key: &[u8],
        value: Bytes,
        condition: Option<&Precondition>,
        session: Option<(u64, u64)>,
    ) -> Result<PutResult> {
        check_key(key)?;
        check_value(&value)?;
        let mut path = key_path(key);
        match condition {
            None => {}
            Some(Precondition::Version(v)) => path.push_str(&format!("?prev_version={v}")),
            Some(Precondition::Value(x)) => {
                check_value(x)?;
                path.push_str(&format!("?prev_value={}", percent_encode(x)));
            }
        }
        let mut call = Call::new(Method::PUT, path, Replay::Unsafe);
        call.body = value;
        call.key = Some(key);
        if let Some((client_id, sequence)) = session {
            call.headers = session_headers(client_id, sequence);
            call.replay = Replay::Safe;
        }
        let answer = self.execute_ok(call).await?;
        parse_json(&answer, "PUT answer")
    }

    async fn delete_call(&self, key: &[u8], session: Option<(u64, u64)>) -> Result<DeleteResult> {
        check_key(key)?;
        let mut call = Call::new(Method::DELETE, key_path(key), Replay::Unsafe);
        call.key = Some(key);
        if let Some((client_id, sequence)) = session {
            call.headers = session_headers(client_id, sequence);
            call.replay = Replay::Safe;
        }
        let answer = self.execute_ok(call).await?;
        parse_json(&answer, "DELETE answer")
    }

    /// `DELETE /keys?prefix=P`, or `?all=true` for `None`: the server takes no empty prefix.
    async fn delete_prefix_call(
        &self,
        prefix: Option<&[u8]>,
        session: Option<(u64, u64)>,
    ) -> Result<DeleteResult> {
        let path = match prefix {
            Some(prefix) => format!("/keys?prefix={}", percent_encode(prefix)),
            None => "/keys?all=true".to_owned(),
        };
        let mut call = Call::new(Method::DELETE, path, Replay::Unsafe);
        if let Some((client_id, sequence)) = session {
            call.headers = session_headers(client_id, sequence);
            call.replay = Replay::Safe;
        }
        let answer = self.execute_ok(call).await?;
        parse_json(&answer, "DELETE /keys?prefix answer")
    }

    // ---- cluster ----

    /// The cluster's members (`GET /cluster/nodes`).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        #[derive(Deserialize)]
        struct Nodes {
            nodes: Vec<NodeInfo>,
        }
        let answer = self
            .execute_ok(Call::new(
                Method::GET,
                "/cluster/nodes".to_owned(),
                Replay::Safe,
            ))
            .await?;
        Ok(parse_json::<Nodes>(&answer, "GET /cluster/nodes answer")?.nodes)
    }

    /// The current leader (`GET /cluster/leader`).
    pub async fn leader(&self) -> Result<LeaderInfo> {
        let answer = self
            .execute_ok(Call::new(
                Method::GET,
                "/cluster/leader".to_owned(),
                Replay::Safe,
            ))
            .await?;
        parse_json(&answer, "GET /cluster/leader answer")
    }

    /// Adds a node as a learner; it is promoted once caught up (`POST /cluster/join`).
    pub async fn join(
        &self,
        node_id: &str,
        raft_addr: &str,
        http_addr: &str,
    ) -> Result<JoinResult> {
        let body =
            serde_json::json!({"node_id": node_id, "raft_addr": raft_addr, "http_addr": http_addr});
        let call =
            Call::new(Method::POST, "/cluster/join".to_owned(), Replay::Unsafe).json_body(&body);
        parse_json(&self.execute_ok(call).await?, "POST /cluster/join answer")
    }

    /// Removes a node from the configuration (`POST /cluster/remove`).
    pub async fn remove(&self, node_id: &str) -> Result<RemoveResult> {
        let body = serde_json::json!({"node_id": node_id});
        let call =
            Call::new(Method::POST, "/cluster/remove".to_owned(), Replay::Unsafe).json_body(&body);
        parse_json(&self.execute_ok(call).await?, "POST /cluster/remove answer")
    }

    /// Moves leadership to `node_id` (`POST /cluster/transfer-leader`).
    pub async fn transfer_leader(&self, node_id: &str) -> Result<TransferResult> {
        let body = serde_json::json!({"node_id": node_id});
        let call = Call::new(
            Method::POST,
            "/cluster/transfer-leader".to_owned(),
            Replay::Unsafe,
        )
        .json_body(&body);
        let result = parse_json(
            &self.execute_ok(call).await?,
            "POST /cluster/transfer-leader answer",
        );
        // The leader changed on purpose: look it up again next time.
        self.inner.leader.store(NO_LEADER, Ordering::Relaxed);
        result
    }

    /// Takes a snapshot on the first reachable endpoint (`POST /admin/snapshot`).
    pub async fn snapshot(&self) -> Result<SnapshotInfo> {
        let mut call = Call::new(Method::POST, "/admin/snapshot".to_owned(), Replay::Unsafe);
        call.route = Route::NodeLocal;
        parse_json(&self.execute_ok(call).await?, "POST /admin/snapshot answer")
    }

    /// The `status` of the first reachable endpoint's `GET /health` (`"ok"`).
    pub async fn health(&self) -> Result<String> {
        #[derive(Deserialize)]
        struct Health {
            status: String,
        }
        let mut call = Call::new(Method::GET, "/health".to_owned(), Replay::Safe);
        call.route = Route::NodeLocal;
        Ok(parse_json::<Health>(&self.execute_ok(call).await?, "GET /health answer")?.status)
    }

    /// The readiness of the first reachable endpoint (`GET /ready`): `503 not_ready` is an
    /// answer here, not an error.
    pub async fn ready(&self) -> Result<Readiness> {
        let mut call = Call::new(Method::GET, "/ready".to_owned(), Replay::Safe);
        call.route = Route::NodeLocal;
        let (endpoint, answer) = self.execute(call).await?;
        let ready = match answer.status {
            200 => true,
            503 => false,
            status => return Err(from_response(status, &answer.body, None)),
        };
        Ok(Readiness {
            endpoint,
            ready,
            detail: parse_json(&answer, "GET /ready answer")?,
        })
    }

    // ---- sending ----

    /// [`Client::execute`], with error answers turned into [`Error`]s.
    async fn execute_ok(&self, call: Call<'_>) -> Result<Answer> {
        let key = call.key;
        let (_, answer) = self.execute(call).await?;
        if (200..300).contains(&answer.status) {
            Ok(answer)
        } else {
            Err(from_response(answer.status, &answer.body, key))
        }
    }

    /// Sends `call` until an endpoint gives a final answer, per the retry rules in the module
    /// documentation. Returns the answering endpoint and its answer.
    async fn execute(&self, call: Call<'_>) -> Result<(String, Answer)> {
        let inner = &*self.inner;
        let n = inner.endpoints.len();
        let mut failures: Vec<Option<String>> = vec![None; n];
        let mut backoff = inner.options.backoff_initial;
        // The whole call, retries included, ends by this: without a quorum every attempt
        // waits out the server's own no-leader timeout, and passes × endpoints of those
        // would add up to far more than the caller asked to wait.
        let deadline = tokio::time::Instant::now() + inner.options.call_timeout;
        'passes: for pass in 0..inner.options.passes {
            if pass > 0 {
                if tokio::time::Instant::now() + backoff >= deadline {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(inner.options.backoff_max);
            }
            let start = self.start_index(call.route, deadline).await;
            for step in 0..n {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break 'passes;
                }
                let index = (start + step) % n;
                let endpoint = &inner.endpoints[index];
                let timeout = left.min(inner.options.request_timeout);
                let failure = match self.attempt(endpoint, &call, timeout).await? {
                    Attempt::Answer(answer) => {
                        let retry = match (answer.status, call.route) {
                            (_, Route::NodeLocal) => false,
                            (503, Route::Cluster) => true,
                            (504, Route::Cluster) => call.replay == Replay::Safe,
                            _ => false,
                        };
                        if !retry {
                            return Ok((endpoint.base.clone(), answer));
                        }
                        from_response(answer.status, &answer.body, None).to_string()
                    }
                    Attempt::NotSent(reason) => reason,
                    Attempt::Lost(reason) => {
                        if call.replay == Replay::Unsafe {
                            return Err(Error::Timeout(format!(
                                "{}: {reason}; the request may or may not have been applied",
                                endpoint.base
                            )));
                        }
                        // An attempt cut short by the call's deadline says less than what
                        // this endpoint answered before (typically the server's "no leader").
                        match failures[index].take() {
                            Some(earlier) if timeout < inner.options.request_timeout => format!(
                                "{earlier}; then no answer before the call's {} ms ran out",
                                inner.options.call_timeout.as_millis()
                            ),
                            _ => reason,
                        }
                    }
                };
                // Whatever failed here is no longer a leader we should prefer.
                let _ = inner.leader.compare_exchange(
                    index,
                    NO_LEADER,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                failures[index] = Some(failure);
            }
        }
        Err(Error::Unavailable(
            inner
                .endpoints
                .iter()
                .zip(failures)
                .filter_map(|(endpoint, failure)| {
                    failure.map(|reason| EndpointFailure {
                        endpoint: endpoint.base.clone(),
                        reason,
                    })
                })
                .collect(),
        ))
    }

    /// Where a pass over the endpoints starts.
    async fn start_index(&self, route: Route, deadline: tokio::time::Instant) -> usize {
        let inner = &*self.inner;
        let n = inner.endpoints.len();
        match (route, inner.options.routing) {
            (Route::NodeLocal, _) => 0,
            (Route::Cluster, Routing::Spread) => inner.rotation.fetch_add(1, Ordering::Relaxed) % n,
            (Route::Cluster, Routing::Leader) => {
                let known = inner.leader.load(Ordering::Relaxed);
                if known < n {
                    return known;
                }
                if let Some(found) = self.look_up_leader(deadline).await {
                    return found;
                }
                inner.rotation.fetch_add(1, Ordering::Relaxed) % n
            }
        }
    }

    /// Asks the endpoints for the leader, at most once per [`LEADER_LOOKUP_INTERVAL_MIN`];
    /// remembers and returns its index when it is one of the endpoints.
    async fn look_up_leader(&self, deadline: tokio::time::Instant) -> Option<usize> {
        let inner = &*self.inner;
        {
            let mut last = inner
                .last_lookup
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.is_some_and(|at| at.elapsed() < LEADER_LOOKUP_INTERVAL_MIN) {
                return None;
            }
            *last = Some(Instant::now());
        }
        let call = Call::new(Method::GET, "/cluster/leader".to_owned(), Replay::Safe);
        for endpoint in &inner.endpoints {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            let timeout = left.min(LEADER_LOOKUP_TIMEOUT_MAX);
            let answer = match self.attempt(endpoint, &call, timeout).await {
                Ok(Attempt::Answer(answer)) if answer.status == 200 => answer,
                _ => continue,
            };
            let Ok(leader) = parse_json::<LeaderInfo>(&answer, "leader") else {
                continue;
            };
            let wanted = authority_of(&leader.http_addr);
            let found = inner.endpoints.iter().position(|e| e.authority == wanted);
            if let Some(index) = found {
                inner.leader.store(index, Ordering::Relaxed);
            }
            // A leader outside the endpoint list is reached through forwarding.
            return found;
        }
        None
    }

    /// One attempt of `call` on `endpoint`, bounded by `timeout` (what is left of the call's).
    async fn attempt(
        &self,
        endpoint: &Endpoint,
        call: &Call<'_>,
        timeout: Duration,
    ) -> Result<Attempt> {
        let uri = format!("{}{}", endpoint.base, call.path_and_query);
        let mut builder = Request::builder().method(call.method.clone()).uri(&uri);
        for (name, value) in &call.headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(call.body.clone()))
            .map_err(|e| Error::BadRequest(format!("cannot form a request for {uri}: {e}")))?;
        let exchange = async {
            let response = match self.inner.http.request(request).await {
                Ok(response) => response,
                Err(e) if e.is_connect() => return Ok(Attempt::NotSent(error_chain(&e))),
                Err(e) => return Ok(Attempt::Lost(error_chain(&e))),
            };
            let (parts, body) = response.into_parts();
            match Limited::new(body, RESPONSE_BYTES_MAX).collect().await {
                Ok(collected) => Ok(Attempt::Answer(Answer {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    body: collected.to_bytes(),
                })),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    Err(Error::Protocol(format!(
                        "{}: answer larger than {RESPONSE_BYTES_MAX} bytes",
                        endpoint.base
                    )))
                }
                Err(e) => Ok(Attempt::Lost(error_chain(&*e))),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Ok(Attempt::Lost(format!("no answer within {timeout:?}"))),
        }
    }
}

/// A client session: writes through it are applied exactly once, even when retried on
/// another node after a connection loss, a timeout or a leader change.
///
/// Writes take `&mut self`: a session has one write in flight at a time, as the server
/// requires. Use one session per concurrent writer.
#[derive(Debug)]
pub struct Session {
    client: Client,
    client_id: u64,
    next_sequence: u64,
}

impl Session {
    /// The session's id, as the server assigned it.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The sequence number the next write will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The client the session writes through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Takes the next sequence number: every write consumes one, whatever its outcome.
    fn take_sequence(&mut self) -> (u64, u64) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        (self.client_id, sequence)
    }

    /// [`Client::put`], exactly once.
    pub async fn put(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
    ) -> Result<PutResult> {
        let session = self.take_sequence();
        self.client
            .put_call(key.as_ref(), value.into(), None, Some(session))
            .await
    }

    /// [`Client::put_if`], exactly once.
    pub async fn put_if(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        condition: Precondition,
    ) -> Result<PutResult> {
        let session = self.take_sequence();
        self.client
            .put_call(key.as_ref(), value.into(), Some(&condition), Some(session))
            .await
    }

    /// [`Client::delete`], exactly once.
    pub async fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<DeleteResult> {
        let session = self.take_sequence();
        self.client.delete_call(key.as_ref(), Some(session)).await
    }

    /// [`Client::delete_prefix`], exactly once.
    pub async fn delete_prefix(&mut self, prefix: impl AsRef<[u8]>) -> Result<DeleteResult> {
        let prefix = non_empty_prefix(prefix.as_ref())?;
        let session = self.take_sequence();
        self.client
            .delete_prefix_call(Some(prefix), Some(session))
            .await
    }

    /// [`Client::delete_all`], exactly once.
    pub async fn delete_all(&mut self) -> Result<DeleteResult> {
        let session = self.take_sequence();
        self.client.delete_prefix_call(None, Some(session)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_strictly() {
        let e = parse_endpoint("http://127.0.0.1:8080/").expect("valid endpoint");
        assert_eq!(e.base, "http://127.0.0.1:8080");
        assert_eq!(e.authority, "127.0.0.1:8080");
        for bad in [
            "127.0.0.1:8080",
            "https://h:1",
            "http://h",
            "http://h:1/x",
            "http://h:1?q=1",
            "not a url",
        ] {
            assert!(
                matches!(parse_endpoint(bad), Err(Error::InvalidEndpoint { .. })),
                "{bad}"
            );
        }
        assert!(Client::new(Vec::<String>::new()).is_err());
    }

    #[test]
    fn leader_addresses_match_with_or_without_scheme() {
        assert_eq!(authority_of("http://10.0.0.1:8081/"), "10.0.0.1:8081");
        assert_eq!(authority_of("10.0.0.1:8081"), "10.0.0.1:8081");
    }

    #[test]
    fn limits_are_checked_before_sending() {
        assert!(matches!(check_key(b""), Err(Error::BadRequest(_))));
        assert!(matches!(
            check_key(&vec![b'k'; KEY_BYTES_MAX + 1]),
            Err(Error::TooLarge(_))
        ));
        assert!(check_key(&vec![b'k'; KEY_BYTES_MAX]).is_ok());
        assert!(matches!(
            check_value(&vec![0; VALUE_BYTES_MAX + 1]),
            Err(Error::TooLarge(_))
        ));
    }
}
