//! The HTTP API (docs/api.md): the listener, the router, and the plumbing every route shares
//! (bodies with size limits, JSON answers, error mapping, forwarding to the leader).
//!
//! Shaped like mini-redis: a listener accepts connections, each connection is served on its
//! own task, each request is routed to one handler. Shutdown is a broadcast: the listener stops
//! accepting and every connection finishes its request in flight.

pub mod cluster;
pub mod keys;
pub mod limits;
pub mod quota;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use raft::core::Role;
use raft::node::{NodeError, names};
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config;
use crate::server::Server;

/// How long a request may wait for a leader, a commit or a read index before it is answered
/// with 503 or 504.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JSON request body.
pub const JSON_BODY_BYTES_MAX: usize = 64 * 1024;
/// The largest value body: the `kv` value limit (a larger body is refused with 413 before it
/// is read in full).
pub const VALUE_BODY_BYTES_MAX: usize = kv::VALUE_BYTES_MAX;
/// The header a forwarded request carries: how many times it has been forwarded (1 or more).
/// A node that is not the leader forwards again while fewer than [`FORWARD_HOPS_MAX`] hops
/// were made, so a count a client sends itself cannot make a follower refuse a request it
/// could forward.
pub const FORWARDED_HEADER: &str = "x-raftkv-forwarded";
/// Most times one request is forwarded between nodes: enough for a leader change while the
/// request travels (follower -> old leader -> new leader), few enough to end a loop fast.
pub const FORWARD_HOPS_MAX: u64 = 3;
/// The header with which a client asks for a redirect (307) instead of forwarding.
pub const NO_FORWARD_HEADER: &str = "x-raftkv-no-forward";
/// The session id of an exactly-once write (with [`SEQUENCE_HEADER`]).
pub const CLIENT_ID_HEADER: &str = "x-raftkv-client-id";
/// The sequence number of an exactly-once write (with [`CLIENT_ID_HEADER`]).
pub const SEQUENCE_HEADER: &str = "x-raftkv-sequence";
/// Every `X-Raftkv-*` request header some route takes; any other is refused.
pub const REQUEST_HEADERS: [&str; 4] = [
    FORWARDED_HEADER,
    NO_FORWARD_HEADER,
    CLIENT_ID_HEADER,
    SEQUENCE_HEADER,
];
/// Largest edit distance at which an unknown parameter or header name is taken for a typo of a
/// known one and the answer suggests it.
pub const SUGGESTION_DISTANCE_MAX: usize = 3;

/// The body type of every answer.
pub type Body = Full<Bytes>;

/// An error answer: status, stable code, message, and optional extra JSON fields.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Option<(&'static str, Value)>,
}

impl ApiError {
    /// An error answer.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }

    /// 400 bad_request.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// Adds a field to the JSON body.
    pub fn with(mut self, field: &'static str, value: Value) -> ApiError {
        self.extra = Some((field, value));
        self
    }

    fn into_response(self) -> Response<Body> {
        let mut body = json!({"error": self.message, "code": self.code});
        if let Some((field, value)) = self.extra {
            body[field] = value;
        }
        json_response(self.status, &body)
    }

    /// The answer for a node error on a request that was not forwarded. Each refusal is
    /// answered as what it is: a request that cannot succeed as it stands gets a 4xx that a
    /// client does not retry; only a real unavailability (no leader, a leadership transfer
    /// under way, a full uncommitted window, failed storage, shutdown) is a 503.
    pub fn from_node(e: NodeError) -> ApiError {
        match e {
            NodeError::NotLeader { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_leader",
                "no leader is available; retry",
            ),
            NodeError::Dropped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_leader",
                "the leader changed before the write committed; it was not applied: retry",
            ),
            NodeError::Unknown => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "the outcome of the write is unknown (it may have been applied)",
            ),
            NodeError::ConfChangeInProgress => ApiError::new(
                StatusCode::CONFLICT,
                "conf_change_in_progress",
                "another membership change is in progress; retry when it completes",
            ),
            NodeError::Rejected(core) => ApiError::from_core(core),
            NodeError::NothingToSnapshot => ApiError::new(
                StatusCode::CONFLICT,
                "nothing_to_snapshot",
                "this node has applied nothing yet, so there is nothing to snapshot",
            ),
            NodeError::Storage(why) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_failed",
                format!("this node's storage failed: {why}"),
            ),
            NodeError::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the node is shutting down",
            ),
            NodeError::NoSpace(no_space) => ApiError::no_space(no_space),
        }
    }

    /// 507 no_space: the leader's disk is (nearly) full, and the write was not taken.
    pub fn no_space(no_space: raft::node::NoSpace) -> ApiError {
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "no_space",
            format!(
                "the write was refused and not applied: {no_space}; writes resume by themselves once space is freed, reads go on"
            ),
        )
    }

    /// 503 storage_failed: the node's storage failed for good and it stopped.
    pub fn storage_failed(node: &str, failure: &str) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_failed",
            format!(
                "{node} stopped: its storage failed ({failure}); see its log, and restart it once the disk is fixed"
            ),
        )
    }

    /// The answer for a request the Raft core refused, by its typed reason, with nodes named
    /// by their names.
    fn from_core(e: raft::core::Error) -> ApiError {
        use raft::core::Error as Core;
        match e {
            Core::NotLeader { leader_hint } => {
                ApiError::from_node(NodeError::NotLeader { leader_hint })
            }
            Core::ConfChangeInProgress { .. } => {
                ApiError::from_node(NodeError::ConfChangeInProgress)
            }
            Core::TransferInProgress { to } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "transfer_in_progress",
                format!(
                    "leadership is moving to {}; retry in a moment",
                    names::of(to)
                ),
            ),
            Core::ProposalDropped { reason } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "proposal_dropped",
                format!("the leader cannot take more writes now ({reason}); retry later"),
            ),
            Core::ProposalTooLarge {
                size_bytes,
                max_bytes,
            } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the write of {size_bytes} bytes exceeds the limit of {max_bytes}"),
            ),
            Core::InvalidConfChange(why) => ApiError::new(
                StatusCode::CONFLICT,
                "invalid_membership_change",
                format!("the membership change is refused: {why}"),
            ),
            Core::InvalidTransferTarget { to, reason } => ApiError::new(
                StatusCode::CONFLICT,
                "invalid_transfer_target",
                format!("cannot transfer leadership to {}: {reason}", names::of(to)),
            ),
            Core::TooManyPendingReads { max } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_reads",
                format!("{max} linearizable reads are pending on the leader already; retry later"),
            ),
            Core::Storage(why) => ApiError::from_node(NodeError::Storage(why.to_string())),
            // None comes from a client's request as such (a snapshot is asked for at the
            // applied index, and `/admin/snapshot` answers an up-to-date one itself; a
            // committed conflict, a term jump, a malformed message and a config error come
            // from peers and start-up): a 500 says that this server, not the client, is wrong.
            other @ (Core::SnapshotBeyondApplied { .. }
            | Core::SnapshotOutOfDate { .. }
            | Core::CommittedConflict { .. }
            | Core::TermJump { .. }
            | Core::StrangerTerm { .. }
            | Core::Malformed { .. }
            | Core::Config(_)) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the server failed to handle the request: {other}"),
            ),
        }
    }

    pub(crate) fn timeout() -> ApiError {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "no answer within {}s; a write may still be applied",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
    }
}

/// What a handler returns.
pub type Handled = Result<Response<Body>, ApiError>;

/// A JSON answer.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// 200 with a JSON body.
pub fn ok(body: Value) -> Handled {
    Ok(json_response(StatusCode::OK, &body))
}

/// Waits for `fut` at most [`REQUEST_TIMEOUT`].
pub async fn within<T>(fut: impl Future<Output = Result<T, NodeError>>) -> Result<T, ApiError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(result) => result.map_err(ApiError::from_node),
        Err(_) => Err(ApiError::timeout()),
    }
}

/// Reads the whole body, refusing one over `max` bytes with 413, one that does not arrive
/// within `server.body_read_timeout` with 408 `body_timeout`, and one whose bytes would pass
/// the node-wide budget of bodies in flight (`server.body_bytes_in_flight_max`) with 503
/// `overloaded`. A body with a declared length is counted in full before any of it is read;
/// one without is counted as it comes; one declared over `max` is not kept at all. The count
/// ends with this call: the bytes it returns are the handler's, bounded by its own timeout.
pub async fn read_body(server: &Server, body: Incoming, max: usize) -> Result<Bytes, ApiError> {
    let limits = &server.limits;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body exceeds {max} bytes"),
        )
    };
    let overloaded = |full: limits::BudgetFull| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "request bodies being received on this node already hold its budget of {} bytes (server.body_bytes_in_flight_max); retry shortly",
                full.max
            ),
        )
    };
    let declared = body.size_hint().exact();
    // A body declared too large is still read up to the limit, and thrown away as it comes:
    // a client that sends its whole body before reading the answer would otherwise see its
    // connection reset and never read the 413.
    let discard = declared.is_some_and(|len| len > max as u64);
    let mut counted = match declared {
        Some(len) if !discard => limits.body_bytes(len as usize).map_err(overloaded)?,
        _ => limits.body_bytes(0).map_err(overloaded)?,
    };
    let deadline = tokio::time::Instant::now() + limits.body_read_timeout;
    let mut body = body;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the request body did not arrive within {} (server.body_read_timeout); {len} bytes came",
                        config::units::format_duration(limits.body_read_timeout)
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(format!("reading the body: {e}")));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // Trailers carry nothing a handler reads.
        };
        len += data.len();
        if len > max {
            return Err(too_large());
        }
        if discard {
            continue;
        }
        if declared.is_none() {
            counted.merge(limits.body_bytes(data.len()).map_err(overloaded)?);
        }
        chunks.push(data);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => Bytes::from(chunks.concat()),
    })
}

/// Parses a JSON body.
pub fn read_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// A string field of a JSON object.
pub fn json_str<'a>(body: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    body.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "the JSON body needs a non-empty string field \"{field}\""
            ))
        })
}

/// Decodes `%XX` escapes (and, in a query, `+` as a space) into bytes.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Result<Vec<u8>, ApiError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("bad percent-escape in `{text}`"))
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The query parameters, decoded.
pub fn query_params(req_query: Option<&str>) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let mut params = Vec::new();
    for pair in req_query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = String::from_utf8(percent_decode(name, true)?)
            .map_err(|_| ApiError::bad_request("a query parameter name is not UTF-8"))?;
        params.push((name, percent_decode(value, true)?));
    }
    Ok(params)
}

/// What a route takes besides its path and body: the query parameters and the `X-Raftkv-*`
/// headers it reads. The router refuses anything else before a handler runs, so that a typo
/// (`prev_versoin`) or a parameter another route takes (`revision`) is never silently
/// ignored.
#[derive(Debug, Clone, Copy)]
pub struct Accepts {
    /// Query parameter names, each at most once.
    pub params: &'static [&'static str],
    /// `X-Raftkv-*` header names (lower case), each at most once.
    pub headers: &'static [&'static str],
}

/// Headers every route takes: forwarding concerns only routes that forward, and is harmless
/// elsewhere.
const FORWARDING_HEADERS: &[&str] = &[FORWARDED_HEADER, NO_FORWARD_HEADER];
/// Headers of a route that writes keys: forwarding and an optional session.
const WRITE_HEADERS: &[&str] = &[
    FORWARDED_HEADER,
    NO_FORWARD_HEADER,
    CLIENT_ID_HEADER,
    SEQUENCE_HEADER,
];

/// The parameters and headers of the route `method path`, or `None` when there is no such
/// route (the router then answers 404 or 405). Kept beside [`route`], which it mirrors.
pub fn accepts(method: &Method, path: &str) -> Option<Accepts> {
    let only = |params: &'static [&'static str], headers: &'static [&'static str]| {
        Some(Accepts { params, headers })
    };
    if path.starts_with("/keys/") {
        return match *method {
            Method::GET => only(&["consistency"], FORWARDING_HEADERS),
            Method::PUT => only(&["prev_version", "prev_value"], WRITE_HEADERS),
            Method::DELETE => only(&[], WRITE_HEADERS),
            _ => None,
        };
    }
    match (method, path) {
        (&Method::GET, "/keys") => only(
            &["prefix", "limit", "after", "consistency"],
            FORWARDING_HEADERS,
        ),
        (&Method::DELETE, "/keys") => only(&["prefix", "all"], WRITE_HEADERS),
        (&Method::POST, "/sessions")
        | (&Method::GET, "/health" | "/ready")
        | (&Method::GET, "/cluster/nodes" | "/cluster/leader" | "/cluster/id")
        | (&Method::POST, "/cluster/join" | "/cluster/remove" | "/cluster/transfer-leader")
        | (&Method::POST, "/admin/snapshot") => only(&[], FORWARDING_HEADERS),
        _ => None,
    }
}

/// The known name nearest to `name`, if it is close enough to be a typo of it.
fn suggestion<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (crate::config::edit_distance(name, k), k))
        .filter(|(d, _)| *d <= SUGGESTION_DISTANCE_MAX)
        .min()
        .map(|(_, k)| k)
}

fn did_you_mean(found: Option<&str>) -> String {
    found.map_or(String::new(), |k| format!("; did you mean {k}?"))
}

/// Refuses a request whose query or `X-Raftkv-*` headers the route does not take, or repeats
/// (which value would count is a guess): 400 `unknown_parameter`, `repeated_parameter`,
/// `unknown_header` or `repeated_header`, naming the culprit and, when one is close, the name
/// the client probably meant.
pub fn check_strict(
    method: &Method,
    path: &str,
    parts: &hyper::http::request::Parts,
) -> Result<(), ApiError> {
    let Some(accepts) = accepts(method, path) else {
        return Ok(());
    };
    let params = query_params(parts.uri.query())?;
    for (i, (name, _)) in params.iter().enumerate() {
        if !accepts.params.contains(&name.as_str()) {
            let taken = if accepts.params.is_empty() {
                "takes no query parameters".to_string()
            } else {
                format!("takes {}", accepts.params.join(", "))
            };
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_parameter",
                format!(
                    "unknown query parameter `{name}`: {method} {} {taken}{}",
                    route_name(path),
                    did_you_mean(suggestion(name, accepts.params.iter().copied()))
                ),
            )
            .with("parameter", json!(name)));
        }
        if params[..i].iter().any(|(earlier, _)| earlier == name) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "repeated_parameter",
                format!("query parameter `{name}` is given more than once; give it once"),
            )
            .with("parameter", json!(name)));
        }
    }
    for name in parts.headers.keys() {
        let name = name.as_str();
        if !name.starts_with("x-raftkv-") {
            continue;
        }
        if !accepts.headers.contains(&name) {
            let why = if REQUEST_HEADERS.contains(&name) {
                format!("{method} {} does not take it", route_name(path))
            } else {
                format!(
                    "no route takes it{}",
                    did_you_mean(suggestion(name, REQUEST_HEADERS.iter().copied()))
                )
            };
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_header",
                format!("unknown request header `{name}`: {why}"),
            )
            .with("header", json!(name)));
        }
        if parts.headers.get_all(name).iter().nth(1).is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "repeated_header",
                format!("header `{name}` is given more than once; give it once"),
            )
            .with("header", json!(name)));
        }
    }
    forwarded_hops(&parts.headers)?;
    Ok(())
}

/// The route's name in docs/api.md: `/keys/{key}` for any key.
fn route_name(path: &str) -> &str {
    if path.starts_with("/keys/") {
        "/keys/{key}"
    } else {
        path
    }
}

/// The value of query parameter `name`, if given.
pub fn param<'a>(params: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// A numeric query parameter.
pub fn param_u64(params: &[(String, Vec<u8>)], name: &str) -> Result<Option<u64>, ApiError> {
    match param(params, name) {
        None => Ok(None),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!("query parameter {name} must be a whole number"))
            }),
    }
}

/// Waits (bounded) until some node is known to lead; returns whether it is this one.
pub async fn await_leader(server: &Server) -> Result<bool, ApiError> {
    let mut status = server.node.watch_status();
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        {
            let s = status.borrow_and_update();
            if let Some(leader) = s.leader {
                return Ok(leader == server.id && s.role == Some(Role::Leader));
            }
            if let Some(failure) = &s.failed {
                if s.storage == raft::node::StorageHealth::Failed {
                    return Err(ApiError::storage_failed(
                        &server.config.raft.node_id,
                        failure,
                    ));
                }
                return Err(ApiError::from_node(NodeError::Stopped));
            }
        }
        match tokio::time::timeout_at(deadline, status.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return Err(ApiError::from_node(NodeError::Stopped)),
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_leader",
                    format!("no leader within {}s", REQUEST_TIMEOUT.as_secs()),
                ));
            }
        }
    }
}

/// The request as a handler sees it: head, and the body read within the route's limit.
pub struct Req {
    /// Method, URI, headers.
    pub parts: hyper::http::request::Parts,
    /// The body.
    pub body: Bytes,
}

impl Req {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends the request to the leader and relays its answer, or redirects when the client asked
/// not to be forwarded. Called by a follower for writes.
///
/// Each hop adds one to [`FORWARDED_HEADER`]; after [`FORWARD_HOPS_MAX`] hops the request is
/// not forwarded again (leadership keeps moving, or the nodes disagree on the leader, or a
/// client sent the header itself): it is redirected (307 `not_leader`) to the leader this node
/// knows, as if the client had asked not to be forwarded, so that the answer is never a false
/// "no leader"; only a node that knows no leader answers 503.
pub async fn forward(server: &Server, req: Req) -> Handled {
    let hops = forwarded_hops(&req.parts.headers)?;
    let status = server.node.status();
    let leader = status
        .leader
        .and_then(|id| server.members().get(&id).cloned())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_leader",
                "the leader's address is not known yet; retry",
            )
        })?;
    let path = req
        .parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let url = format!("http://{}{path}", leader.http_addr);
    if req.header(NO_FORWARD_HEADER).is_some() || hops >= FORWARD_HOPS_MAX {
        let message = if hops >= FORWARD_HOPS_MAX {
            format!(
                "this node is not the leader, and the request was forwarded {hops} times already ({FORWARDED_HEADER}: {hops}): send it to the leader {}",
                leader.name
            )
        } else {
            "this node is not the leader".to_string()
        };
        let mut response = json_response(
            StatusCode::TEMPORARY_REDIRECT,
            &json!({"error": message, "code": "not_leader", "leader": leader.name}),
        );
        if let Ok(location) = HeaderValue::from_str(&url) {
            response.headers_mut().insert(LOCATION, location);
        }
        return Ok(response);
    }
    let body = req.body;
    let mut builder = Request::builder()
        .method(req.parts.method.clone())
        .uri(&url);
    for (name, value) in &req.parts.headers {
        if name != hyper::header::HOST
            && name != hyper::header::CONTENT_LENGTH
            && name != FORWARDED_HEADER
        {
            builder = builder.header(name, value);
        }
    }
    let outgoing = builder
        .header(FORWARDED_HEADER, hops + 1)
        .body(Full::new(body))
        .map_err(|e| ApiError::bad_request(format!("cannot forward: {e}")))?;
    let client = forward_client();
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, client.request(outgoing))
        .await
        .map_err(|_| ApiError::timeout())?
        .map_err(|e| {
            if e.is_connect() {
                // Nothing reached the leader: safe to retry anywhere.
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_leader",
                    format!("the leader {} is unreachable: {e}", leader.name),
                )
            } else {
                outcome_unknown(&leader.name, &e)
            }
        })?;
    let (parts, body) = answer.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| outcome_unknown(&leader.name, &e))?
        .to_bytes();
    Ok(Response::from_parts(parts, Full::new(bytes)))
}

/// How many times the request has been forwarded already: 0 without [`FORWARDED_HEADER`].
fn forwarded_hops(headers: &hyper::HeaderMap) -> Result<u64, ApiError> {
    let Some(value) = headers.get(FORWARDED_HEADER) else {
        return Ok(0);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|hops| (1..=FORWARD_HOPS_MAX).contains(hops))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{FORWARDED_HEADER} is a hop count from 1 to {FORWARD_HOPS_MAX}, set by the nodes; a client need not send it"
            ))
        })
}

/// The answer when the connection to the leader broke after the request went out: the leader
/// may have applied the write, so the client must not take it for a refusal (a 503 is retried
/// as "not applied"), but as a timeout whose outcome is unknown.
fn outcome_unknown(leader: &str, e: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        format!(
            "the connection to the leader {leader} broke after the request was sent ({e}); a write may still be applied"
        ),
    )
}

/// POSTs a JSON body to `url` and returns the status and the parsed answer.
pub async fn post_json(url: &str, body: &Value) -> Result<(StatusCode, Value), String> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("bad URL {url}: {e}"))?;
    call_json(url, request, REQUEST_TIMEOUT).await
}

/// GETs `url` and returns the status and the parsed answer, waiting at most `timeout`.
pub async fn get_json(url: &str, timeout: Duration) -> Result<(StatusCode, Value), String> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("bad URL {url}: {e}"))?;
    call_json(url, request, timeout).await
}

async fn call_json(
    url: &str,
    request: Request<Body>,
    timeout: Duration,
) -> Result<(StatusCode, Value), String> {
    let answer = tokio::time::timeout(timeout, forward_client().request(request))
        .await
        .map_err(|_| format!("{url}: no answer within {}ms", timeout.as_millis()))?
        .map_err(|e| format!("{url}: {e}"))?;
    let status = answer.status();
    let bytes = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{url}: reading the answer: {e}"))?
        .to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, value))
}

type Client =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

fn forward_client() -> &'static Client {
    static CLIENT: std::sync::OnceLock<Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
    })
}

async fn route(server: Arc<Server>, req: Request<Incoming>) -> Handled {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    // Before the body is read: a misspelt request is refused at once.
    check_strict(&method, &path, &parts)?;
    // Only a value may be large; every other body is a small JSON document (or empty).
    let limit = if method == Method::PUT && path.starts_with("/keys/") {
        VALUE_BODY_BYTES_MAX
    } else {
        JSON_BODY_BYTES_MAX
    };
    let body = read_body(&server, body, limit).await?;
    let req = Req { parts, body };
    // A removed node serves nothing but what tells an operator where it stands.
    if let Some(at) = server.removed_at()
        && !matches!(
            path.as_str(),
            "/health" | "/ready" | "/cluster/id" | "/cluster/nodes"
        )
    {
        return Err(cluster::removed_error(&server, at));
    }
    if let Some(raw_key) = path.strip_prefix("/keys/") {
        let key = percent_decode(raw_key, false)?;
        return match method {
            Method::GET => keys::get(&server, req, key).await,
            Method::PUT => keys::put(&server, req, key).await,
            Method::DELETE => keys::delete(&server, req, key).await,
            _ => Err(method_not_allowed(&path)),
        };
    }
    match (method, path.as_str()) {
        (Method::GET, "/keys") => keys::list(&server, req).await,
        (Method::DELETE, "/keys") => keys::delete_prefix(&server, req).await,
        (Method::POST, "/sessions") => keys::register_session(&server, req).await,
        (Method::GET, "/health") => cluster::health(&server),
        (Method::GET, "/ready") => cluster::ready(&server),
        (Method::GET, "/cluster/nodes") => cluster::nodes(&server),
        (Method::GET, "/cluster/leader") => cluster::leader(&server),
        (Method::GET, "/cluster/id") => cluster::cluster_id(&server),
        (Method::POST, "/cluster/join") => cluster::join(&server, req).await,
        (Method::POST, "/cluster/remove") => cluster::remove(&server, req).await,
        (Method::POST, "/cluster/transfer-leader") => cluster::transfer(&server, req).await,
        (Method::POST, "/admin/snapshot") => cluster::snapshot(&server).await,
        (
            _,
            "/keys"
            | "/sessions"
            | "/health"
            | "/ready"
            | "/cluster/nodes"
            | "/cluster/leader"
            | "/cluster/id"
            | "/cluster/join"
            | "/cluster/remove"
            | "/cluster/transfer-leader"
            | "/admin/snapshot",
        ) => Err(method_not_allowed(&path)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no route {path}; see docs/api.md"),
        )),
    }
}

fn method_not_allowed(path: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this method is not supported on {path}"),
    )
}

async fn handle(
    server: Arc<Server>,
    activity: Arc<limits::Activity>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let _busy = activity.busy();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    Ok(match route(server, req).await {
        Ok(response) => response,
        Err(e) => {
            debug!(%method, %path, status = e.status.as_u16(), code = e.code, error = %e.message, "request failed");
            e.into_response()
        }
    })
}

/// Serves the API on `listener` until `shutdown` turns true, then lets the requests in flight
/// finish (bounded by [`REQUEST_TIMEOUT`]). Each connection is admitted within the node's
/// limits ([`limits`]): over the cap it is answered `503 too_many_connections` and closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<Server>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limits = &server.limits;
    let (configured, allowed) = (
        server.config.server.max_connections,
        limits.connections_allowed(),
    );
    if allowed < configured {
        warn!(
            fd_limit = limits.fd_limit(),
            fd_reserve = limits::FD_RESERVE,
            max_connections = configured,
            connections_allowed = allowed,
            "the file descriptor limit lowers the client connection cap below server.max_connections; raise the hard limit (ulimit -Hn, LimitNOFILE=) to serve more"
        );
    } else {
        info!(
            fd_limit = limits.fd_limit(),
            fd_reserve = limits::FD_RESERVE,
            max_connections = configured,
            connections_allowed = allowed,
            "client connections bounded"
        );
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "accepting an HTTP connection failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Some(slot) = server.limits.admit() else {
                    let allowed = server.limits.connections_allowed();
                    limits::refuse(stream, allowed, server.limits.refusal());
                    debug!(allowed, "refused a client connection: too many open");
                    continue;
                };
                let activity = limits::Activity::new();
                let io = TokioIo::new(limits::Watched::new(stream, Arc::clone(&activity)));
                let for_service = (Arc::clone(&server), Arc::clone(&activity));
                let service = hyper::service::service_fn(move |req| {
                    handle(Arc::clone(&for_service.0), Arc::clone(&for_service.1), req)
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(io, service);
                let conn = graceful.watch(conn);
                let server = Arc::clone(&server);
                tokio::spawn(async move {
                    match limits::watch(conn, &activity, &server.limits).await {
                        limits::Ended::Served(Err(e)) => {
                            debug!(error = %e, "HTTP connection ended with an error")
                        }
                        limits::Ended::Served(Ok(())) => {}
                        limits::Ended::Idle => debug!("closed an idle HTTP connection"),
                        limits::Ended::HeaderTimeout => {
                            debug!("closed an HTTP connection whose request header was too slow")
                        }
                    }
                    drop(slot);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, uri: &str, headers: &[(&str, &str)]) -> hyper::http::request::Parts {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("a valid request").into_parts().0
    }

    fn refusal(method: Method, uri: &str, headers: &[(&str, &str)]) -> Option<ApiError> {
        let p = parts(method, uri, headers);
        check_strict(&p.method, p.uri.path(), &p).err()
    }

    #[test]
    fn a_route_takes_its_own_parameters_and_headers() {
        assert!(refusal(Method::PUT, "/keys/k?prev_version=3", &[]).is_none());
        assert!(
            refusal(
                Method::GET,
                "/keys?prefix=a&limit=2&after=a1&consistency=stale",
                &[]
            )
            .is_none()
        );
        assert!(
            refusal(
                Method::DELETE,
                "/keys?all=true",
                &[(SEQUENCE_HEADER, "1"), (CLIENT_ID_HEADER, "1")]
            )
            .is_none()
        );
        assert!(refusal(Method::POST, "/cluster/remove", &[(FORWARDED_HEADER, "2")]).is_none());
        // Headers outside X-Raftkv- are not the router's business.
        assert!(refusal(Method::GET, "/health", &[("x-request-id", "7")]).is_none());
    }

    #[test]
    fn a_typo_gets_its_own_code_and_the_likely_intent() {
        let e = refusal(Method::PUT, "/keys/t?prev_versoin=5", &[]).expect("refused");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "unknown_parameter")
        );
        assert!(
            e.message.ends_with("did you mean prev_version?"),
            "{}",
            e.message
        );
        // Nothing close: no suggestion, but the parameters the route takes.
        let e = refusal(Method::GET, "/keys/k?revision=1", &[]).expect("refused");
        assert!(e.message.contains("takes consistency"), "{}", e.message);
        assert!(!e.message.contains("did you mean"), "{}", e.message);
        let e = refusal(Method::GET, "/ready?x=1", &[]).expect("refused");
        assert!(
            e.message.contains("takes no query parameters"),
            "{}",
            e.message
        );
    }

    #[test]
    fn repeats_and_misplaced_or_unknown_headers_are_refused() {
        let e = refusal(Method::GET, "/keys?limit=1&limit=2", &[]).expect("refused");
        assert_eq!(e.code, "repeated_parameter");
        let e = refusal(Method::PUT, "/keys/k", &[("X-Raftkv-Sequense", "1")]).expect("refused");
        assert_eq!(e.code, "unknown_header");
        assert!(
            e.message.ends_with("did you mean x-raftkv-sequence?"),
            "{}",
            e.message
        );
        let e = refusal(Method::GET, "/keys/k", &[(CLIENT_ID_HEADER, "1")]).expect("refused");
        assert_eq!(e.code, "unknown_header");
        assert!(
            e.message.contains("GET /keys/{key} does not take it"),
            "{}",
            e.message
        );
        let e = refusal(
            Method::PUT,
            "/keys/k",
            &[(SEQUENCE_HEADER, "1"), (SEQUENCE_HEADER, "2")],
        )
        .expect("refused");
        assert_eq!(e.code, "repeated_header");
    }

    #[test]
    fn the_forwarded_header_is_a_bounded_hop_count() {
        for good in ["1", "3"] {
            assert!(refusal(Method::PUT, "/keys/k", &[(FORWARDED_HEADER, good)]).is_none());
        }
        for bad in ["0", "4", "yes", ""] {
            assert!(
                refusal(Method::PUT, "/keys/k", &[(FORWARDED_HEADER, bad)]).is_some(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_unknown_route_is_left_to_the_router_for_its_404_or_405() {
        assert!(refusal(Method::GET, "/nowhere?x=1", &[]).is_none());
        assert!(refusal(Method::PATCH, "/keys/k?x=1", &[]).is_none());
    }
}
