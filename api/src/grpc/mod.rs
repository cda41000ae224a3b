//! The gRPC API (`raftkv.v1`, proto/raftkv.proto; docs/api.md): the listener, the services,
//! and the standard `grpc.health.v1` and server reflection beside them.
//!
//! Every method decodes its message and calls the handler the REST API calls
//! ([`crate::service`]), so limits, forwarding, sessions and error codes are the same rules.
//! Connections count against the same cap as HTTP ones (`server.max_connections`, through
//! `http::limits`; one over it is answered `UNAVAILABLE` `too_many_connections`) and are
//! closed after the same silences (`server.header_read_timeout` before the first bytes,
//! `server.idle_timeout` after); a message over [`MESSAGE_BYTES_MAX`] is refused before it is
//! read, and a listing stops waiting for a client that stopped reading (after
//! `server.idle_timeout`).
//!
//! One job per file: [`connection`] (one client connection, on h2), [`status`] (errors as
//! statuses), [`forward`] (to the leader), then the services: [`kv`], [`cluster`] (with
//! `Maintenance`) and [`auth`]; [`observe`] gives every call its request id and records it into
//! the metrics.

pub mod auth;
pub mod calls;
pub mod cluster;
pub mod connection;
pub mod forward;
pub mod kv;
pub mod observe;
pub mod status;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use proto::pb;
use proto::rest::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tonic::codegen::http::Uri;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::http::limits::{ConnectionSlot, Limits};
use crate::server::Server;
use crate::service::Step;

/// The largest message a client may send: a key and a value at their limits, and room for
/// the other fields. A larger one is refused from its length prefix, before it is read.
pub const MESSAGE_BYTES_MAX: usize = ::kv::KEY_BYTES_MAX + ::kv::VALUE_BYTES_MAX + 64 * 1024;
/// Most requests in flight on one connection (HTTP/2 streams).
pub const STREAMS_PER_CONNECTION_MAX: u32 = 256;
/// How often the health service re-reads readiness.
pub const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The services whose health `grpc.health.v1` reports (besides the server as a whole, "").
pub const HEALTH_SERVICES: [&str; 5] = [
    "raftkv.v1.KV",
    "raftkv.v1.KVCalls",
    "raftkv.v1.Cluster",
    "raftkv.v1.Maintenance",
    "raftkv.v1.Auth",
];
/// How long a connection over the cap is served its refusal before it is closed.
pub const REFUSAL_SERVE_MAX: Duration = Duration::from_secs(1);

/// The state every gRPC method shares: the node, and the clients to forward to the leader.
pub struct Api {
    server: Arc<Server>,
    relay: forward::Relay,
}

impl Api {
    /// Answers a call the shared handler served (`encode`d), or relays it to the leader with
    /// `call` (one method of a generated client).
    async fn finish<T, M, R, F, Fut>(
        &self,
        step: Step<T>,
        message: M,
        credentials: &Credentials,
        encode: impl FnOnce(T) -> R,
        call: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(forward::LeaderClient, Uri, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        Ok(Response::new(match step {
            Step::Done(done) => encode(done),
            // Boxed: relaying is the rarer path, and its future is large; inline, it would
            // make every call's future larger (and costlier to move) by its size.
            Step::Forward(to) => Box::pin(self.relay.call(to, message, credentials, call)).await?,
        }))
    }
}

/// The credential metadata of a call (`authorization`, `x-api-key`): checked against what the
/// method needs ([`Api::authorize`]) and passed on as it came when the call is forwarded to
/// the leader, which checks it again.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    authorization: Option<tonic::metadata::AsciiMetadataValue>,
    api_key: Option<tonic::metadata::AsciiMetadataValue>,
    /// Where the call came from.
    peer: Option<std::net::IpAddr>,
    /// Whether a node forwarded it.
    forwarded: bool,
}

impl Credentials {
    /// The credentials `request` carries.
    pub fn of<T>(request: &Request<T>) -> Credentials {
        let meta = request.metadata();
        Credentials {
            authorization: meta.get("authorization").cloned(),
            api_key: meta.get(proto::rest::auth::API_KEY_HEADER).cloned(),
            peer: request.remote_addr().map(|a| a.ip()),
            forwarded: meta.contains_key(proto::metadata::FORWARDED),
        }
    }

    fn credential(&self) -> crate::auth::Credential {
        crate::auth::Credential::from_headers(
            self.authorization.as_ref().map(|v| v.as_bytes()),
            self.api_key.as_ref().map(|v| v.as_bytes()),
        )
    }

    /// Puts the credentials on a call being forwarded.
    pub fn attach(&self, meta: &mut tonic::metadata::MetadataMap) {
        if let Some(value) = &self.authorization {
            meta.insert("authorization", value.clone());
        }
        if let Some(value) = &self.api_key {
            meta.insert(proto::rest::auth::API_KEY_HEADER, value.clone());
        }
    }
}

impl Api {
    /// Refuses a call whose credentials do not allow `need` (`UNAUTHENTICATED`,
    /// `PERMISSION_DENIED`) or whose caller is over its rate (`RESOURCE_EXHAUSTED`), as the
    /// REST router does.
    async fn authorize(
        &self,
        credentials: &Credentials,
        need: crate::auth::Need<'_>,
    ) -> Result<(), Status> {
        let caller = crate::auth::Caller {
            credential: credentials.credential(),
            peer: credentials.peer,
            forwarded: credentials.forwarded,
        };
        crate::service::auth::admit(&self.server, &caller, need)
            .await
            .map(drop)
            .map_err(status::status_of)
    }
}

/// Refuses a request to a node removed from its cluster, as the REST API does
/// (`node_removed`): it serves nothing but what tells an operator where it stands.
fn serving(server: &Server) -> Result<(), Status> {
    crate::service::cluster::serving(server).map_err(status::status_of)
}

/// A client connection admitted within the node's connection cap, closed when it stays
/// silent too long: its first bytes (the HTTP/2 preface) must come within
/// `server.header_read_timeout`, and after that it may go `server.idle_timeout` without a byte
/// either way, as an HTTP connection may. The slot is given back when it closes.
struct Admitted {
    stream: tokio::net::TcpStream,
    _slot: ConnectionSlot,
    idle: Duration,
    /// When the connection last moved a byte (`None`: never yet).
    last_active: Option<tokio::time::Instant>,
    /// Fires at the earliest time the connection may be found silent too long; moved on
    /// lazily, when it fires, rather than on every read and write (a timer reset takes the
    /// timer driver's lock, a clock read does not).
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Admitted {
    fn new(stream: tokio::net::TcpStream, slot: ConnectionSlot, limits: &Limits) -> Admitted {
        Admitted {
            stream,
            _slot: slot,
            idle: limits.idle_timeout,
            last_active: None,
            deadline: Box::pin(tokio::time::sleep(limits.header_read_timeout)),
        }
    }

    fn active(&mut self) {
        self.last_active = Some(tokio::time::Instant::now());
    }

    /// A write's outcome, noting the bytes that moved, or failing a write that has waited past
    /// the silence deadline (a client that reads nothing).
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        wrote: Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        match wrote {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.active();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.silent_too_long(cx) => Poll::Ready(Err(silence())),
            other => other,
        }
    }

    /// Whether the connection has been silent too long; otherwise the deadline is armed (for
    /// the waker of `cx`) at the earliest time it could be.
    fn silent_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        while self.deadline.as_mut().poll(cx).is_ready() {
            match self.last_active {
                Some(at) if at + self.idle > tokio::time::Instant::now() => {
                    let next = at + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                _ => return true,
            }
        }
        false
    }
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

fn silence() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the client sent nothing for too long",
    )
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.silent_too_long(cx) => Poll::Ready(Err(silence())),
            other => other,
        }
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let wrote = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.after_write(cx, wrote)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let wrote = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.after_write(cx, wrote)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Answers every call on a connection over the cap `UNAVAILABLE` `too_many_connections` (as
/// REST answers `503`), for at most [`REFUSAL_SERVE_MAX`], then closes it: a client then
/// knows nothing was applied and tries another node. Refusals in progress are bounded by the
/// node's refusal budget (`http::limits`); past it the connection is closed at once.
fn refuse(stream: tokio::net::TcpStream, server: &Server) {
    let Some(permit) = server.limits.refusal() else {
        return;
    };
    let allowed = server.limits.connections_allowed();
    tokio::spawn(async move {
        let refusal = move |_request: tonic::codegen::http::Request<hyper::body::Incoming>| {
            let status = status::status_of(crate::service::ApiError::new(
                ErrorCode::TooManyConnections,
                format!(
                    "this node serves {allowed} client connections already (server.max_connections); retry another node or later"
                ),
            ));
            async move { Ok::<_, std::convert::Infallible>(status.into_http::<tonic::body::Body>()) }
        };
        let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), hyper::service::service_fn(refusal));
        let _ = tokio::time::timeout(REFUSAL_SERVE_MAX, connection).await;
        drop(permit);
    });
}

/// Accepts connections until `shutdown` turns true and serves each within the cap on a task of
/// its own ([`connection::serve`]); one over the cap is refused ([`refuse`]). Every
/// connection's task holds a clone of `open`, so its receiver learns when the last has ended.
async fn accept(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    routes: connection::Routes,
    shutdown: watch::Receiver<bool>,
    open: tokio::sync::mpsc::Sender<()>,
) {
    let server = Arc::clone(&api.server);
    let tls = match server.tls_acceptor(&[b"h2"]) {
        Ok(tls) => tls,
        Err(e) => {
            warn!(error = %e, "the gRPC API cannot serve TLS");
            return;
        }
    };
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(error = %e, "accepting a gRPC connection failed");
                        tokio::time::sleep(crate::http::limits::ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Some(slot) = server.limits.admit() else {
                    debug!(allowed = server.limits.connections_allowed(), "refused a gRPC connection: too many open");
                    if tls.is_none() {
                        refuse(stream, &server);
                    }
                    // Over TLS the refusal would need a handshake first: the connection is
                    // only closed.
                    continue;
                };
                let connection = Admitted::new(stream, slot, &server.limits);
                let remote = connection.connect_info();
                let (api, routes, shutdown, open) =
                    (Arc::clone(&api), routes.clone(), shutdown.clone(), open.clone());
                let Some(acceptor) = &tls else {
                    tokio::spawn(async move {
                        connection::serve(connection, remote, &api, routes, shutdown).await;
                        drop(open);
                    });
                    continue;
                };
                // The handshake on the connection's task, so a slow client holds up no other.
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(connection));
                    match handshake.await {
                        Ok(Ok(secured)) => {
                            connection::serve(secured, remote, &api, routes, shutdown).await;
                        }
                        Ok(Err(e)) => debug!(error = %e, "refused a TLS handshake on the gRPC port"),
                        Err(_) => debug!("closed a gRPC connection whose TLS handshake was too slow"),
                    }
                    drop(open);
                });
            }
            _ = stop.changed() => return,
        }
    }
}

/// Keeps `grpc.health.v1` in step with readiness (the rule `GET /ready` answers by):
/// `SERVING` only while the node is ready. Ends with the server.
async fn report_health(
    server: std::sync::Weak<Server>,
    reporter: tonic_health::server::HealthReporter,
    mut shutdown: watch::Receiver<bool>,
) {
    use tonic_health::ServingStatus;
    let mut last = None;
    let mut tick = tokio::time::interval(HEALTH_POLL_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Some(server) = server.upgrade() else {
            return;
        };
        let ready = crate::service::cluster::ready(&server).is_ok();
        if last != Some(ready) {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for service in std::iter::once("").chain(HEALTH_SERVICES) {
                reporter.set_service_status(service, status).await;
            }
            last = Some(ready);
        }
    }
}

/// tonic refuses a message over the size limit with `OUT_OF_RANGE` and no details; this
/// API's answer for a size limit is `RESOURCE_EXHAUSTED` `too_large` with its `ErrorInfo`
/// (docs/api.md), and none of its own answers is `OUT_OF_RANGE`, so every such answer is the
/// size check's and is replaced.
fn size_refusal_is_too_large(
    mut response: tonic::codegen::http::Response<tonic::body::Body>,
) -> tonic::codegen::http::Response<tonic::body::Body> {
    let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
    if response
        .headers()
        .get(proto::codec::GRPC_STATUS)
        .is_none_or(|v| v.as_bytes() != out_of_range.as_bytes())
    {
        return response;
    }
    let ours = connection::too_large().into_http::<tonic::body::Body>();
    for (name, value) in ours.headers() {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// Serves the gRPC API on `listener` until `shutdown` turns true, then lets the requests in
/// flight finish (the caller bounds the wait, as `raftkv` does by
/// [`crate::service::REQUEST_TIMEOUT`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<Server>,
    shutdown: watch::Receiver<bool>,
) {
    let api = Arc::new(Api {
        server: Arc::clone(&server),
        relay: forward::Relay::new(server.tls.clone()),
    });
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in std::iter::once("").chain(HEALTH_SERVICES) {
        reporter
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
    }
    tokio::spawn(report_health(
        Arc::downgrade(&server),
        reporter,
        shutdown.clone(),
    ));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("invariant: the descriptor sets were compiled by this build and decode");
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("invariant: the descriptor sets were compiled by this build and decode");
    let routes = tonic::service::Routes::new(
        pb::kv_server::KvServer::from_arc(Arc::clone(&api))
            .max_decoding_message_size(MESSAGE_BYTES_MAX),
    )
    .add_service(
        pb::cluster_server::ClusterServer::from_arc(Arc::clone(&api))
            .max_decoding_message_size(MESSAGE_BYTES_MAX),
    )
    .add_service(
        pb::maintenance_server::MaintenanceServer::from_arc(Arc::clone(&api))
            .max_decoding_message_size(MESSAGE_BYTES_MAX),
    )
    .add_service(
        pb::auth_server::AuthServer::from_arc(Arc::clone(&api))
            .max_decoding_message_size(MESSAGE_BYTES_MAX),
    )
    .add_service(health)
    .add_service(reflection)
    .add_service(reflection_alpha)
    .prepare();
    let routes = tower::ServiceBuilder::new()
        .layer(observe::ObserveLayer::new(Arc::clone(&server)))
        .layer(tower::util::MapResponseLayer::new(
            size_refusal_is_too_large,
        ))
        .service(routes);
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    accept(
        listener,
        api,
        tower::util::BoxCloneService::new(routes),
        shutdown,
        open,
    )
    .await;
    // Every connection was asked to stop with the same signal: wait until the last has let
    // its calls finish.
    let _ = all_closed.recv().await;
}
