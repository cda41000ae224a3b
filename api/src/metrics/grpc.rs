//! The gRPC side of the request metrics: a tower layer in front of every gRPC service that
//! times each call to its response headers and counts it by method and status code.
//!
//! A unary call's failure travels in its headers (`grpc-status`, a trailers-only answer); one
//! whose headers carry no status succeeded, or is a stream whose status comes in its trailers
//! and is counted `OK` here: a stream that fails part-way is told to its client, not counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;

use super::labels;
use crate::server::Server;

/// Records every call through it into the node's metrics.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    server: Arc<Server>,
}

impl GrpcMetricsLayer {
    /// A layer recording into `server`'s metrics.
    pub fn new(server: Arc<Server>) -> GrpcMetricsLayer {
        GrpcMetricsLayer { server }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetered<S>;

    fn layer(&self, inner: S) -> GrpcMetered<S> {
        GrpcMetered {
            inner,
            server: Arc::clone(&self.server),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps.
#[derive(Clone)]
pub struct GrpcMetered<S> {
    inner: S,
    server: Arc<Server>,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetered<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !self.server.metrics.enabled() {
            return Box::pin(self.inner.call(request));
        }
        // A `Uri` clone shares its bytes: the path costs no copy.
        let uri = request.uri().clone();
        let answered = self.inner.call(request);
        let server = Arc::clone(&self.server);
        let started = Instant::now();
        Box::pin(async move {
            let response = answered.await?;
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from_i32);
            let method = server.metrics.grpc_methods.label(uri.path(), code);
            server
                .metrics
                .grpc_request(method, labels::grpc_code(code), started);
            Ok(response)
        })
    }
}
