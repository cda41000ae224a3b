//! What happens around every gRPC call, as around every HTTP request: a tower layer in front
//! of every service that gives the call its request id (from its `x-request-id` metadata, or
//! a new one; returned in the answer's metadata and written on the log lines emitted while it
//! is served, see [`crate::request_id`]), and times the call to its response headers and
//! counts it by method and status code ([`crate::metrics`]).
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
use tracing::debug;

use crate::metrics::labels;
use crate::request_id::{self, REQUEST_ID};
use crate::server::Server;

/// Gives every call through it a request id and records it into the node's metrics.
#[derive(Clone)]
pub struct ObserveLayer {
    server: Arc<Server>,
}

impl ObserveLayer {
    /// A layer recording into `server`'s metrics.
    pub fn new(server: Arc<Server>) -> ObserveLayer {
        ObserveLayer { server }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            server: Arc::clone(&self.server),
        }
    }
}

/// The service [`ObserveLayer`] wraps.
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    server: Arc<Server>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Observed<S>
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
        let (observation, serving) =
            Observation::begin(&self.server, request.headers(), request.uri());
        let answered = self.inner.call(request);
        Box::pin(request_id::scope(serving, async move {
            let mut response = answered.await?;
            observation.answered(response.headers_mut());
            Ok(response)
        }))
    }
}

/// One call being observed: its request id, and its record for the metrics (counted
/// `CANCELLED` if it is dropped unanswered).
pub struct Observation {
    id: Arc<str>,
    recorded: Recorded,
}

impl Observation {
    /// Starts observing the call with these `headers` to `uri`; the call is to be served
    /// within the returned request scope ([`request_id::scope`]).
    pub fn begin(
        server: &Arc<Server>,
        headers: &http::HeaderMap,
        uri: &http::Uri,
    ) -> (Observation, request_id::Request) {
        Observation::with_id(
            server,
            request_id::take_or_make(headers.get(REQUEST_ID)),
            uri,
        )
    }

    /// Starts observing one call of a `KVCalls` stream, to the unary method at `uri`, with the
    /// request id the call gave (or a new one); the call is to be served within the returned
    /// request scope, and ends with [`Observation::finish`].
    pub fn begin_call(
        server: &Arc<Server>,
        given_id: &str,
        uri: &http::Uri,
    ) -> (Observation, request_id::Request) {
        let id = request_id::from_text(given_id).unwrap_or_else(request_id::generate);
        Observation::with_id(server, id, uri)
    }

    fn with_id(
        server: &Arc<Server>,
        id: Arc<str>,
        uri: &http::Uri,
    ) -> (Observation, request_id::Request) {
        // A `Uri` clone shares its bytes: the path costs no copy.
        let serving = request_id::Request::grpc(Arc::clone(&id), uri.clone());
        let recorded = Recorded {
            server: Arc::clone(server),
            uri: uri.clone(),
            started: Instant::now(),
            done: false,
        };
        (Observation { id, recorded }, serving)
    }

    /// The call's request id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The call is answered with `code`: it is counted by it.
    pub fn finish(mut self, code: tonic::Code) {
        if code != tonic::Code::Ok {
            debug!(code = labels::grpc_code(code), "call failed");
        }
        self.recorded.answered(code);
    }

    /// The call is answered with these response `headers` (a failure's status is in them):
    /// they get the request id, and the call is counted by its status code.
    pub fn answered(mut self, headers: &mut http::HeaderMap) {
        headers.insert(REQUEST_ID, request_id::header_value(&self.id));
        let code = headers
            .get(proto::codec::GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map_or(tonic::Code::Ok, tonic::Code::from_i32);
        if code != tonic::Code::Ok {
            // Formatted only when the line is written (debug).
            debug!(
                code = labels::grpc_code(code),
                message = ?headers.get("grpc-message"),
                "call failed"
            );
        }
        self.recorded.answered(code);
    }
}

/// Records a call into the metrics once it is answered, or, when its client goes away first
/// (cancelled, or its deadline passed: the server then drops the call's future), as
/// `CANCELLED` with the time it had taken.
struct Recorded {
    server: Arc<Server>,
    uri: http::Uri,
    started: Instant,
    done: bool,
}

impl Recorded {
    fn answered(&mut self, code: tonic::Code) {
        self.done = true;
        let metrics = &self.server.metrics;
        if metrics.enabled() {
            let method = metrics.grpc_methods.label(self.uri.path(), code);
            metrics.grpc_request(method, labels::grpc_code(code), self.started);
        }
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let metrics = &self.server.metrics;
        if !self.done && metrics.enabled() {
            let method = metrics.grpc_methods.known(self.uri.path());
            metrics.grpc_request(
                method,
                labels::grpc_code(tonic::Code::Cancelled),
                self.started,
            );
        }
    }
}
