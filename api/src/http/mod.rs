//! The HTTP API (docs/api.md): the listener, the router, and the plumbing every route shares
//! (bodies with size limits, JSON answers, error mapping, forwarding to the leader).
//!
//! Shaped like mini-redis: a listener accepts connections, each connection is served on its
//! own task, each request is routed to one handler. Shutdown is a broadcast: the listener stops
//! accepting and every connection finishes its request in flight.
//!
//! This file holds the listener and the router; the rest, one job per file: `error.rs` (error
//! answers and their codes), `request.rs` (bodies, JSON, query parameters), `strict.rs` (which
//! parameters and headers each route takes), `forward.rs` (to the leader), then the routes:
//! [`keys`], [`cluster`], [`auth`] (which also says what each route needs of the caller's
//! credential), [`backup`] (the one answer streamed rather than whole), and the limits they
//! share ([`limits`], [`quota`]).

pub mod auth;
pub mod backup;
pub mod cluster;
mod error;
mod forward;
pub mod keys;
pub mod limits;
pub mod quota;
mod request;
mod strict;

pub use error::*;
pub use forward::*;
pub use request::*;
pub use strict::*;

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use proto::rest::ErrorCode;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::server::Server;

pub use crate::service::REQUEST_TIMEOUT;
pub use crate::service::route::{FORWARD_HOPS_MAX, await_leader};
/// The largest JSON request body.
pub const JSON_BODY_BYTES_MAX: usize = 64 * 1024;
/// The largest value body: the `kv` value limit (a larger body is refused with 413 before it
/// is read in full).
pub const VALUE_BODY_BYTES_MAX: usize = kv::VALUE_BYTES_MAX;
/// The header a forwarded request carries: how many times it has been forwarded (1 or more).
/// A node that is not the leader forwards again while fewer than [`FORWARD_HOPS_MAX`] hops
/// were made (`service::route`).
pub const FORWARDED_HEADER: &str = proto::rest::headers::FORWARDED;
/// The header with which a client asks for a redirect (307) instead of forwarding.
pub const NO_FORWARD_HEADER: &str = proto::rest::headers::NO_FORWARD;
/// The session id of an exactly-once write (with [`SEQUENCE_HEADER`]).
pub const CLIENT_ID_HEADER: &str = proto::rest::headers::CLIENT_ID;
/// The sequence number of an exactly-once write (with [`CLIENT_ID_HEADER`]).
pub const SEQUENCE_HEADER: &str = proto::rest::headers::SEQUENCE;
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

async fn route(server: Arc<Server>, peer: std::net::IpAddr, req: Request<Incoming>) -> Handled {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    // Before the body is read: a misspelt request is refused at once, and so is a caller
    // whose credential does not allow the request.
    check_strict(&method, &path, &parts)?;
    let key = match path.strip_prefix("/keys/") {
        Some(raw_key) => Some(percent_decode(raw_key, false)?),
        None => None,
    };
    let prefix = if path == "/keys" {
        auth::prefix_of(&parts)?
    } else {
        Vec::new()
    };
    let need = auth::need(&method, &path, key.as_deref(), &prefix);
    let caller = crate::auth::Caller {
        credential: auth::credential(&parts),
        peer: Some(peer),
        forwarded: parts.headers.contains_key(FORWARDED_HEADER),
    };
    crate::service::auth::admit(&server, &caller, need).await?;
    // Only a value may be large; every other body is a small JSON document (or empty).
    let limit = if method == Method::PUT && path.starts_with("/keys/") {
        VALUE_BODY_BYTES_MAX
    } else {
        JSON_BODY_BYTES_MAX
    };
    let body = read_body(&server, body, limit).await?;
    let req = Req { parts, body };
    // A removed node serves nothing but what tells an operator where it stands.
    if !matches!(
        path.as_str(),
        "/health" | "/ready" | "/status" | "/metrics" | "/cluster/id" | "/cluster/nodes"
    ) {
        crate::service::cluster::serving(&server)?;
    }
    if let Some(key) = key {
        return match method {
            Method::GET => keys::get(&server, req, key).await,
            Method::PUT => keys::put(&server, req, key).await,
            Method::DELETE => keys::delete(&server, req, key).await,
            _ => Err(method_not_allowed(&path)),
        };
    }
    if path.starts_with("/auth/") {
        let path = path.clone();
        if let Some(handled) = auth::route(&server, req, &method, &path, peer).await {
            return handled;
        }
        return Err(ApiError::new(
            ErrorCode::NoRoute,
            format!("no route {path}; see docs/api.md"),
        ));
    }
    match (method, path.as_str()) {
        (Method::GET, "/keys") => keys::list(&server, req).await,
        (Method::DELETE, "/keys") => keys::delete_prefix(&server, req).await,
        (Method::POST, "/sessions") => keys::register_session(&server, req).await,
        (Method::GET, "/health") => cluster::health(&server),
        (Method::GET, "/ready") => cluster::ready(&server),
        (Method::GET, "/status") => cluster::status(&server),
        (Method::GET, "/metrics") => cluster::metrics(&server),
        (Method::GET, "/cluster/nodes") => cluster::nodes(&server),
        (Method::GET, "/cluster/leader") => cluster::leader(&server),
        (Method::GET, "/cluster/id") => cluster::cluster_id(&server),
        (Method::POST, "/cluster/join") => cluster::join(&server, req).await,
        (Method::POST, "/cluster/remove") => cluster::remove(&server, req).await,
        (Method::POST, "/cluster/transfer-leader") => cluster::transfer(&server, req).await,
        (Method::POST, "/admin/snapshot") => cluster::snapshot(&server).await,
        (Method::GET, proto::rest::backup::BACKUP_PATH) => backup::backup(server).await,
        (
            _,
            "/keys"
            | "/sessions"
            | "/health"
            | "/ready"
            | "/status"
            | "/metrics"
            | "/cluster/nodes"
            | "/cluster/leader"
            | "/cluster/id"
            | "/cluster/join"
            | "/cluster/remove"
            | "/cluster/transfer-leader"
            | "/admin/snapshot"
            | proto::rest::backup::BACKUP_PATH,
        ) => Err(method_not_allowed(&path)),
        _ => Err(ApiError::new(
            ErrorCode::NoRoute,
            format!("no route {path}; see docs/api.md"),
        )),
    }
}

fn method_not_allowed(path: &str) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("this method is not supported on {path}"),
    )
}

async fn handle(
    server: Arc<Server>,
    activity: Arc<limits::Activity>,
    peer: std::net::IpAddr,
    req: Request<Incoming>,
) -> Result<Response<backup::Answer>, Infallible> {
    // Kept by a streamed answer until its last byte is out (`backup::into_answer`).
    let busy = activity.busy();
    let method = req.method().clone();
    // Kept for an error answer (its log line and a redirect's Location); a `Uri` clone shares
    // its bytes, so a request that succeeds pays no copy of its path.
    let uri = req.uri().clone();
    let id = crate::request_id::take_or_make(req.headers().get(crate::request_id::REQUEST_ID));
    let request = crate::request_id::Request::http(Arc::clone(&id), method.clone(), uri.clone());
    let mut recorded = Recorded {
        server: Arc::clone(&server),
        method: method.clone(),
        uri: uri.clone(),
        started: std::time::Instant::now(),
        done: false,
    };
    let routed = crate::request_id::scope(request, async {
        let routed = route(server, peer, req).await;
        if let Err(e) = &routed {
            let path = uri.path();
            debug!(%method, %path, status = e.code.http_status(), code = e.code.as_str(), error = %e.message, "request failed");
        }
        routed
    })
    .await;
    let mut response = match routed {
        Ok(response) => {
            let code = response
                .extensions()
                .get::<RelayedCode>()
                .map_or("ok", |relayed| relayed.0);
            recorded.answered(response.status().as_u16(), code);
            response
        }
        Err(e) => {
            recorded.answered(e.code.http_status(), e.code.as_str());
            let path = uri.path();
            let path_and_query = uri.path_and_query().map_or(path, |p| p.as_str());
            error_response(e, path_and_query)
        }
    };
    // Replaces the leader's copy on a relayed answer: the same id.
    response.headers_mut().insert(
        crate::request_id::REQUEST_ID,
        crate::request_id::header_value(&id),
    );
    Ok(backup::into_answer(response, busy))
}

/// Records a request into the metrics once it is answered, or, when its client goes away
/// first (hyper then drops the request's future), as `499 cancelled` with the time it had
/// taken: a request too slow for its client still shows in the latencies.
struct Recorded {
    server: Arc<Server>,
    method: Method,
    uri: hyper::Uri,
    started: std::time::Instant,
    done: bool,
}

impl Recorded {
    fn answered(&mut self, status: u16, code: &'static str) {
        self.done = true;
        self.server
            .metrics
            .http_request(&self.method, self.uri.path(), status, code, self.started);
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        if !self.done {
            self.server.metrics.http_request(
                &self.method,
                self.uri.path(),
                crate::metrics::labels::CLIENT_GONE,
                crate::metrics::labels::CANCELLED,
                self.started,
            );
        }
    }
}

/// Serves HTTP/1.1 on one admitted connection (plain or TLS) until it ends or the node
/// shuts down, within the connection limits.
async fn serve_connection<S>(
    io: S,
    server: &Arc<Server>,
    activity: &Arc<limits::Activity>,
    peer: std::net::IpAddr,
    watcher: hyper_util::server::graceful::Watcher,
) -> limits::Ended<hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let for_service = (Arc::clone(server), Arc::clone(activity));
    let service = hyper::service::service_fn(move |req| {
        handle(
            Arc::clone(&for_service.0),
            Arc::clone(&for_service.1),
            peer,
            req,
        )
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    // The connection wakes this task from within its own polls (a request's first bytes
    // notify the idle watch): those wakes are taken in place (see `Repoll`).
    crate::repoll::Repoll::new(limits::watch(watcher.watch(conn), activity, &server.limits)).await
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
    let tls = match server.tls_acceptor(&[b"http/1.1"]) {
        Ok(tls) => tls,
        Err(e) => {
            warn!(error = %e, "the HTTP API cannot serve TLS");
            return;
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "accepting an HTTP connection failed");
                        tokio::time::sleep(limits::ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Some(slot) = server.limits.admit() else {
                    let allowed = server.limits.connections_allowed();
                    // Over TLS the plain-text refusal would be noise to the client: the
                    // connection is only closed.
                    if tls.is_none() {
                        limits::refuse(stream, allowed, server.limits.refusal());
                    }
                    debug!(allowed, "refused a client connection: too many open");
                    continue;
                };
                let watcher = graceful.watcher();
                let server = Arc::clone(&server);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let activity = limits::Activity::new();
                    let watched = limits::Watched::new(stream, Arc::clone(&activity));
                    let ended = match tls {
                        None => serve_connection(watched, &server, &activity, peer.ip(), watcher).await,
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(
                                crate::tls::HANDSHAKE_TIMEOUT,
                                acceptor.accept(watched),
                            );
                            match handshake.await {
                                Ok(Ok(secured)) => {
                                    serve_connection(secured, &server, &activity, peer.ip(), watcher).await
                                }
                                Ok(Err(e)) => {
                                    debug!(%peer, error = %e, "refused a TLS handshake on the HTTP port");
                                    return;
                                }
                                Err(_) => {
                                    debug!(%peer, "closed a connection whose TLS handshake was too slow");
                                    return;
                                }
                            }
                        }
                    };
                    match ended {
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
            (e.code.http_status(), e.code),
            (400, ErrorCode::UnknownParameter)
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
        assert_eq!(e.code, ErrorCode::RepeatedParameter);
        let e = refusal(Method::PUT, "/keys/k", &[("X-Raftkv-Sequense", "1")]).expect("refused");
        assert_eq!(e.code, ErrorCode::UnknownHeader);
        assert!(
            e.message.ends_with("did you mean x-raftkv-sequence?"),
            "{}",
            e.message
        );
        let e = refusal(Method::GET, "/keys/k", &[(CLIENT_ID_HEADER, "1")]).expect("refused");
        assert_eq!(e.code, ErrorCode::UnknownHeader);
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
        assert_eq!(e.code, ErrorCode::RepeatedHeader);
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
