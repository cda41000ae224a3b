//! Forwarding to the leader: waiting for one to be known, proxying a request to it (at most
//! [`super::FORWARD_HOPS_MAX`] hops), or redirecting when the client asks not to be forwarded;
//! plus the small JSON client the server uses to call other nodes.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioExecutor;
use proto::rest::ErrorCode;
use raft::core::Role;
use raft::node::NodeError;
use serde_json::{Value, json};

use super::*;
use crate::server::Server;

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
                    ErrorCode::NoLeader,
                    format!("no leader within {}s", REQUEST_TIMEOUT.as_secs()),
                ));
            }
        }
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
                ErrorCode::NoLeader,
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
        let code = ErrorCode::NotLeader;
        let mut body = proto::rest::ErrorBody {
            error: message,
            code: code.as_str().to_string(),
            extra: serde_json::Map::new(),
        };
        body.extra.insert("leader".into(), json!(leader.name));
        let mut response = json_response(
            StatusCode::from_u16(code.http_status())
                .expect("invariant: every error code's status is a valid HTTP status"),
            &body,
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
                    ErrorCode::NoLeader,
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
pub(super) fn forwarded_hops(headers: &hyper::HeaderMap) -> Result<u64, ApiError> {
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
        ErrorCode::Timeout,
        format!(
            "the connection to the leader {leader} broke after the request was sent ({e}); a write may still be applied"
        ),
    )
}

/// POSTs a JSON body to `url` and returns the status and the parsed answer.
pub async fn post_json(
    url: &str,
    body: &impl serde::Serialize,
) -> Result<(StatusCode, Value), String> {
    let body = serde_json::to_vec(body).map_err(|e| format!("encoding the body for {url}: {e}"))?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
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
