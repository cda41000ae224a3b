//! Forwarding over HTTP: reading how a request arrived ([`via`]), relaying it to the leader when
//! the shared handler says so ([`relay`]; when is decided once, in `service::route`), and the
//! small JSON client the server uses to call other nodes.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioExecutor;
use proto::rest::ErrorCode;
use serde_json::Value;

use super::*;
use crate::service::route::parse_hops;
use crate::service::{Forward, Step, Via};

/// How the request arrived: the hop count in [`FORWARDED_HEADER`] (0 without it) and
/// whether it asks not to be forwarded ([`NO_FORWARD_HEADER`]).
pub fn via(req: &Req) -> Result<Via, ApiError> {
    let hops = match req.parts.headers.get(FORWARDED_HEADER) {
        None => 0,
        Some(value) => parse_hops(value.to_str().unwrap_or(""), FORWARDED_HEADER)?,
    };
    Ok(Via {
        hops,
        no_forward: req.header(NO_FORWARD_HEADER).is_some(),
    })
}

/// Answers a request the shared handler took: its answer as JSON, or the leader's answer to the
/// request relayed there.
pub async fn answer<T: serde::Serialize>(req: Req, step: Step<T>) -> Handled {
    match step {
        Step::Done(body) => ok(body),
        Step::Forward(to) => relay(req, to).await,
    }
}

/// Sends the request to the leader, as the shared handler decided ([`Forward`]), and relays
/// its answer. Every header goes along but the hop count, which becomes the forward's, and the
/// request id, which becomes the one this node gave the request (the client's, or its own).
pub async fn relay(req: Req, to: Forward) -> Handled {
    let Forward { leader, hops } = to;
    let path = req
        .parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let url = format!("{}://{}{path}", peer_scheme(), leader.http_addr);
    let body = req.body;
    let mut builder = Request::builder()
        .method(req.parts.method.clone())
        .uri(&url);
    for (name, value) in &req.parts.headers {
        if name != hyper::header::HOST
            && name != hyper::header::CONTENT_LENGTH
            && name != FORWARDED_HEADER
            && name != crate::request_id::REQUEST_ID
        {
            builder = builder.header(name, value);
        }
    }
    if let Some(id) = crate::request_id::current_id() {
        builder = builder.header(
            crate::request_id::REQUEST_ID,
            crate::request_id::header_value(&id),
        );
    }
    let outgoing = builder
        .header(FORWARDED_HEADER, hops)
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
    debug!(leader = %leader.name, hops, status = parts.status.as_u16(), "relayed to the leader");
    let mut response = Response::from_parts(parts, Full::new(bytes.clone()));
    if response.status().as_u16() >= 400 {
        // The leader's error code, for this node's metrics of the request it answered.
        let code = serde_json::from_slice::<proto::rest::ErrorBody>(&bytes)
            .ok()
            .and_then(|body| ErrorCode::from_token(&body.code))
            .map_or(crate::metrics::labels::OTHER, ErrorCode::as_str);
        response.extensions_mut().insert(RelayedCode(code));
    }
    Ok(response)
}

/// The error code of a relayed answer that is an error (a response extension): the node that
/// relayed it records the request under it.
#[derive(Clone, Copy, Debug)]
pub struct RelayedCode(pub &'static str);

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
    bearer: Option<&str>,
) -> Result<(StatusCode, Value), String> {
    let body = serde_json::to_vec(body).map_err(|e| format!("encoding the body for {url}: {e}"))?;
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(CONTENT_TYPE, "application/json");
    if let Some(token) = bearer {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
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

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Body,
>;

/// The client of a node's calls to other nodes' HTTP ports (relays, joins, cluster checks),
/// and the scheme their URLs take: one per process, as a process runs one node.
static CLIENT: std::sync::OnceLock<(Client, &'static str)> = std::sync::OnceLock::new();

/// Sets the client for this node's TLS settings ([`crate::tls::connector`]); called once at
/// start, before the node makes any call. A later call changes nothing.
pub fn install_client(
    tls: Option<&std::sync::Arc<crate::tls::Tls>>,
) -> Result<(), crate::tls::TlsError> {
    let connector = crate::tls::connector(
        tls,
        hyper_util::client::legacy::connect::HttpConnector::new(),
        false,
    )?;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let _ = CLIENT.set((client, crate::tls::scheme(tls)));
    Ok(())
}

fn forward_client() -> &'static Client {
    &installed().0
}

fn installed() -> &'static (Client, &'static str) {
    CLIENT.get_or_init(|| {
        let connector = crate::tls::connector(
            None,
            hyper_util::client::legacy::connect::HttpConnector::new(),
            false,
        )
        .expect("invariant: a plain connector needs no TLS material");
        (
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector),
            "http",
        )
    })
}

/// `http` or `https`: how this node reaches other nodes' HTTP ports.
pub fn peer_scheme() -> &'static str {
    installed().1
}
