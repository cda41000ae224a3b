//! The gRPC API (`raftkv.v1`, proto/raftkv.proto; docs/api.md): the listener, the services,
//! and the standard `grpc.health.v1` and server reflection beside them.
//!
//! Every method decodes its message and calls the handler the REST API calls
//! ([`crate::service`]), so limits, forwarding, sessions and error codes are the same rules.
//! Connections count against the same cap as HTTP ones (`server.max_connections`, through
//! `http::limits`); a message over [`MESSAGE_BYTES_MAX`] is refused before it is read, and a
//! listing stops waiting for a client that stopped reading ([`kv::LIST_STALL_MAX`]).
//!
//! One job per file: [`status`] (errors as statuses), [`forward`] (to the leader), then the
//! services: [`kv`] and [`cluster`] (with `Maintenance`).

pub mod cluster;
pub mod forward;
pub mod kv;
pub mod status;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use proto::pb;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tonic::Status;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

use crate::http::limits::ConnectionSlot;
use crate::server::Server;

/// The largest message a client may send: a key and a value at their limits, and room for
/// the other fields. A larger one is refused from its length prefix, before it is read.
pub const MESSAGE_BYTES_MAX: usize = ::kv::KEY_BYTES_MAX + ::kv::VALUE_BYTES_MAX + 64 * 1024;
/// Most requests in flight on one connection (HTTP/2 streams).
pub const STREAMS_PER_CONNECTION_MAX: u32 = 256;
/// How often an idle connection is pinged, and how long the ping's answer may take before
/// the connection is closed (a client that vanished without closing).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the health service re-reads readiness.
pub const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The services whose health `grpc.health.v1` reports (besides the server as a whole, "").
pub const HEALTH_SERVICES: [&str; 3] =
    ["raftkv.v1.KV", "raftkv.v1.Cluster", "raftkv.v1.Maintenance"];

/// The state every gRPC method shares: the node, and the channels to forward to the leader.
pub struct Api {
    server: Arc<Server>,
    relay: forward::Relay,
}

/// Refuses a request to a node removed from its cluster, as the REST API does
/// (`node_removed`): it serves nothing but what tells an operator where it stands.
fn serving(server: &Server) -> Result<(), Status> {
    crate::service::cluster::serving(server).map_err(status::status_of)
}

/// A client connection admitted within the node's connection cap; the slot is given back
/// when the connection closes.
struct Admitted {
    stream: tokio::net::TcpStream,
    _slot: ConnectionSlot,
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
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
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts connections and hands those within the cap to the gRPC server; one over it is
/// closed at once (gRPC has no answer to send before the HTTP/2 handshake).
async fn accept(
    listener: tokio::net::TcpListener,
    server: Arc<Server>,
    admitted: tokio::sync::mpsc::Sender<Result<Admitted, std::io::Error>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(error = %e, "accepting a gRPC connection failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Some(slot) = server.limits.admit() else {
                    debug!(allowed = server.limits.connections_allowed(), "refused a gRPC connection: too many open");
                    continue;
                };
                if admitted.send(Ok(Admitted { stream, _slot: slot })).await.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Keeps `grpc.health.v1` in step with readiness (the rule `GET /ready` answers by):
/// `SERVING` only while the node is ready.
async fn report_health(
    server: std::sync::Weak<Server>,
    reporter: tonic_health::server::HealthReporter,
) {
    use tonic_health::ServingStatus;
    let mut last = None;
    let mut tick = tokio::time::interval(HEALTH_POLL_INTERVAL);
    loop {
        tick.tick().await;
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

/// tonic refuses a message over the size limit with `OUT_OF_RANGE`; this API's code for a
/// size limit is `RESOURCE_EXHAUSTED` (docs/api.md), and none of its own answers is
/// `OUT_OF_RANGE`, so every such answer is the size check's and is renamed.
fn size_refusal_is_resource_exhausted(
    mut response: tonic::codegen::http::Response<tonic::body::Body>,
) -> tonic::codegen::http::Response<tonic::body::Body> {
    const OUT_OF_RANGE: &str = "11";
    let headers = response.headers_mut();
    if headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == OUT_OF_RANGE.as_bytes())
    {
        headers.insert(
            "grpc-status",
            tonic::codegen::http::HeaderValue::from(tonic::Code::ResourceExhausted as i32),
        );
    }
    response
}

/// Serves the gRPC API on `listener` until `shutdown` turns true, then lets the requests in
/// flight finish (the caller bounds the wait, as `raftkv` does by [`crate::service::REQUEST_TIMEOUT`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<Server>,
    shutdown: watch::Receiver<bool>,
) {
    let api = Arc::new(Api {
        server: Arc::clone(&server),
        relay: forward::Relay::default(),
    });
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in std::iter::once("").chain(HEALTH_SERVICES) {
        reporter
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
    }
    tokio::spawn(report_health(Arc::downgrade(&server), reporter));
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
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(accept(listener, Arc::clone(&server), tx, shutdown.clone()));
    let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut stop = shutdown;
    let stopped = async move {
        let _ = stop.changed().await;
    };
    let served = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(STREAMS_PER_CONNECTION_MAX)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(tower::util::MapResponseLayer::new(
            size_refusal_is_resource_exhausted,
        ))
        .add_service(
            pb::kv_server::KvServer::from_arc(Arc::clone(&api))
                .max_decoding_message_size(MESSAGE_BYTES_MAX),
        )
        .add_service(
            pb::cluster_server::ClusterServer::from_arc(Arc::clone(&api))
                .max_decoding_message_size(MESSAGE_BYTES_MAX),
        )
        .add_service(
            pb::maintenance_server::MaintenanceServer::from_arc(api)
                .max_decoding_message_size(MESSAGE_BYTES_MAX),
        )
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .serve_with_incoming_shutdown(incoming, stopped);
    if let Err(e) = served.await {
        warn!(error = %e, "the gRPC server stopped");
    }
}
