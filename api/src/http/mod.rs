//! The HTTP API (docs/api.md): the listener, the router, and the plumbing every route shares
//! (bodies with size limits, JSON answers, error mapping, forwarding to the leader).
//!
//! Shaped like mini-redis: a listener accepts connections, each connection is served on its
//! own task, each request is routed to one handler. Shutdown is a broadcast: the listener stops
//! accepting and every connection finishes its request in flight.

pub mod cluster;
pub mod keys;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use raft::core::Role;
use raft::node::NodeError;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::server::Server;

/// How long a request may wait for a leader, a commit or a read index before it is answered
/// with 503 or 504.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JSON request body.
pub const JSON_BODY_BYTES_MAX: usize = 64 * 1024;
/// The largest value body: the `kv` value limit (a larger body is refused with 413 before it
/// is read in full).
pub const VALUE_BODY_BYTES_MAX: usize = kv::VALUE_BYTES_MAX;
/// The header a forwarded request carries, so that it is never forwarded twice.
pub const FORWARDED_HEADER: &str = "x-raftkv-forwarded";
/// The header with which a client asks for a redirect (307) instead of forwarding.
pub const NO_FORWARD_HEADER: &str = "x-raftkv-no-forward";

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

    /// The answer for a node error on a request that was not forwarded.
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
            NodeError::Refused(why) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why)
            }
            NodeError::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the node is shutting down",
            ),
        }
    }

    fn timeout() -> ApiError {
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

/// Reads the whole body, refusing one over `max` bytes with 413.
pub async fn read_body(body: Incoming, max: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the request body exceeds {max} bytes"),
                ))
            } else {
                Err(ApiError::bad_request(format!("reading the body: {e}")))
            }
        }
    }
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
            if s.failed.is_some() {
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
pub async fn forward(server: &Server, req: Req) -> Handled {
    if req.header(FORWARDED_HEADER).is_some() {
        // The leader that forwarded this has lost leadership meanwhile.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            "leadership moved while the request was forwarded; retry",
        ));
    }
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
    if req.header(NO_FORWARD_HEADER).is_some() {
        let mut response = json_response(
            StatusCode::TEMPORARY_REDIRECT,
            &json!({"error": "this node is not the leader", "code": "not_leader", "leader": leader.name}),
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
        if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
            builder = builder.header(name, value);
        }
    }
    let outgoing = builder
        .header(FORWARDED_HEADER, "1")
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
    // Only a value may be large; every other body is a small JSON document (or empty).
    let limit = if method == Method::PUT && path.starts_with("/keys/") {
        VALUE_BODY_BYTES_MAX
    } else {
        JSON_BODY_BYTES_MAX
    };
    let body = read_body(body, limit).await?;
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
        // A process whose Raft loop stopped (it panicked, or its storage failed) is up but
        // useless: health says so, as readiness does, so a supervisor restarts it.
        (Method::GET, "/health") => match server.node.status().failed {
            None => ok(json!({"status": "ok"})),
            Some(failure) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                format!("the node stopped: {failure}"),
            )),
        },
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

async fn handle(server: Arc<Server>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
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
/// finish (bounded by [`REQUEST_TIMEOUT`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<Server>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
                let server = Arc::clone(&server);
                let service = hyper::service::service_fn(move |req| handle(Arc::clone(&server), req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(error = %e, "HTTP connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, graceful.shutdown()).await;
}
