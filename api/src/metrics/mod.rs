//! Prometheus metrics, served at `GET /metrics` in the text format (docs/operations.md,
//! "Monitoring", lists every series).
//!
//! Two kinds of series share one `prometheus::Registry` encoding:
//! - **recorded as requests are served** (HTTP requests, gRPC calls, storage operations):
//!   OpenTelemetry counters and histograms ([`Recording`]), exported by
//!   `opentelemetry-prometheus`;
//! - **read at scrape time** from what the node keeps anyway (the Raft status, the WAL's, the
//!   node's and the transport's atomic counters, the store): built afresh for each scrape
//!   ([`state`]), so they cost the write path nothing.
//!
//! Invariant: every label value comes from a closed set (route templates, the server's own
//! gRPC methods, status and error codes, member names), never from a key or any other string
//! a client chose, so the number of series stays bounded whatever clients send.
//! With `observability.metrics_enabled` off nothing is recorded: each recording call is one
//! branch on an `Option`.

mod family;
pub mod labels;
mod state;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::Encoder;

use crate::server::Server;
use crate::service::ApiError;

/// Bucket bounds, in seconds, of every request and operation latency histogram: from half a
/// millisecond (a stale read) to ten seconds (a request waiting out a leader election).
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The content type of `GET /metrics`: Prometheus' text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A storage operation, as `kvstore_storage_operations_total` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A key read.
    Get,
    /// A page of a listing.
    List,
    /// A put or compare-and-swap.
    Put,
    /// A key delete.
    Delete,
    /// A prefix delete.
    DeletePrefix,
}

impl Operation {
    fn label(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::List => "list",
            Operation::Put => "put",
            Operation::Delete => "delete",
            Operation::DeletePrefix => "delete_prefix",
        }
    }
}

/// The node's metrics: the instruments requests record into, and the rendering of
/// `GET /metrics`.
pub struct Metrics {
    recording: Option<Recording>,
    /// Proposals this node waits on (made, not yet answered).
    proposals_pending: AtomicI64,
    /// Proposals refused or lost (see [`PendingProposal`]).
    proposals_failed: AtomicU64,
    /// The commit and applied index the node started with.
    start: OnceLock<(u64, u64)>,
    /// The gRPC methods' label values.
    pub(crate) grpc_methods: labels::GrpcMethods,
}

/// The instruments requests record into (present when metrics are on).
struct Recording {
    registry: prometheus::Registry,
    /// Dropping the last provider shuts the exporter down, so it lives as long as the node.
    _provider: SdkMeterProvider,
    http_requests: Counter<u64>,
    http_duration: Histogram<f64>,
    storage_operations: Counter<u64>,
    storage_duration: Histogram<f64>,
    grpc_requests: Counter<u64>,
    grpc_duration: Histogram<f64>,
}

/// Why metrics could not be set up (the exporter refused its registry).
#[derive(Debug, thiserror::Error)]
#[error("the metrics exporter could not be set up: {0}")]
pub struct MetricsError(String);

impl Metrics {
    /// The node's metrics; with `enabled` off, nothing is recorded and nothing served.
    pub fn new(enabled: bool) -> Result<Metrics, MetricsError> {
        let recording = enabled.then(Recording::new).transpose()?;
        Ok(Metrics {
            recording,
            proposals_pending: AtomicI64::new(0),
            proposals_failed: AtomicU64::new(0),
            start: OnceLock::new(),
            grpc_methods: labels::GrpcMethods::default(),
        })
    }

    /// Whether `GET /metrics` is served.
    pub fn enabled(&self) -> bool {
        self.recording.is_some()
    }

    /// Records an HTTP request: its method, route template, status and error code (`ok` when
    /// it succeeded), and how long it took.
    pub fn http_request(
        &self,
        method: &hyper::Method,
        path: &str,
        status: u16,
        code: &'static str,
        started: Instant,
    ) {
        let Some(r) = &self.recording else { return };
        let method = labels::http_method(method);
        let path = labels::route_template(path);
        r.http_requests.add(
            1,
            &[
                KeyValue::new("method", method),
                KeyValue::new("path", path),
                KeyValue::new("status", labels::http_status(status)),
                KeyValue::new("code", code),
            ],
        );
        r.http_duration.record(
            started.elapsed().as_secs_f64(),
            &[KeyValue::new("method", method), KeyValue::new("path", path)],
        );
    }

    /// Records a storage operation this node served (a write the leader proposed and
    /// applied, a read served here), with its outcome; `None` when this node only forwarded
    /// it (the node that serves it records it).
    pub fn storage(&self, operation: Operation, outcome: Option<StorageOutcome>, started: Instant) {
        let (Some(r), Some(outcome)) = (&self.recording, outcome) else {
            return;
        };
        let operation = operation.label();
        r.storage_operations.add(
            1,
            &[
                KeyValue::new("operation", operation),
                KeyValue::new("status", outcome.label()),
            ],
        );
        r.storage_duration.record(
            started.elapsed().as_secs_f64(),
            &[KeyValue::new("operation", operation)],
        );
    }

    /// Records a gRPC call: its method (`/package.Service/Method`, one the server has) and
    /// status code name.
    pub(crate) fn grpc_request(
        &self,
        method: labels::GrpcMethod,
        code: &'static str,
        started: Instant,
    ) {
        let Some(r) = &self.recording else { return };
        r.grpc_requests.add(
            1,
            &[
                KeyValue::new("method", method.0.clone()),
                KeyValue::new("code", code),
            ],
        );
        r.grpc_duration.record(
            started.elapsed().as_secs_f64(),
            &[KeyValue::new("method", method.0)],
        );
    }

    /// Counts a proposal as pending until the returned guard is dropped; a guard dropped
    /// without [`PendingProposal::answered`] (its caller gave up waiting) counts it failed.
    pub fn proposal_pending(&self) -> PendingProposal<'_> {
        self.proposals_pending.fetch_add(1, Ordering::Relaxed);
        PendingProposal {
            metrics: self,
            answered: false,
        }
    }

    fn pending(&self) -> i64 {
        self.proposals_pending.load(Ordering::Relaxed)
    }

    /// Notes the commit and applied index the node started with: the proposal counters count
    /// entries from there, so that a restart starts them at zero as a counter must.
    pub fn started_at(&self, commit: u64, applied: u64) {
        let _ = self.start.set((commit, applied));
    }

    /// The text of `GET /metrics` for `server`; `None` when metrics are off.
    pub fn render(&self, server: &Server) -> Option<String> {
        let r = self.recording.as_ref()?;
        let mut families = r.registry.gather();
        let proposals = state::Proposals {
            pending: self.pending(),
            failed: self.proposals_failed.load(Ordering::Relaxed),
            start: self.start.get().copied().unwrap_or_default(),
        };
        families.extend(state::families(server, proposals));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut text = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&families, &mut text)
            .expect("invariant: encoding into a Vec cannot fail, and every family is well formed");
        Some(String::from_utf8(text).expect("invariant: the text format is UTF-8"))
    }
}

impl Recording {
    fn new() -> Result<Recording, MetricsError> {
        let registry = prometheus::Registry::new();
        // Names are spelled whole in the instruments below (the seed's names, with their
        // `_total` and unit suffixes), so the exporter adds none, nor labels of its own.
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_units()
            .without_counter_suffixes()
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .map_err(|e| MetricsError(e.to_string()))?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("raftkv");
        let latency = |name: &'static str, help: &'static str| {
            meter
                .f64_histogram(name)
                .with_description(help)
                .with_boundaries(LATENCY_BUCKETS_SECONDS.to_vec())
                .build()
        };
        Ok(Recording {
            http_requests: meter
                .u64_counter("kvstore_http_requests_total")
                .with_description("HTTP requests answered, by method, route, status and error code")
                .build(),
            http_duration: latency(
                "kvstore_http_request_duration_seconds",
                "Time to answer an HTTP request, by method and route",
            ),
            storage_operations: meter
                .u64_counter("kvstore_storage_operations_total")
                .with_description("Key operations this node served, by operation and outcome")
                .build(),
            storage_duration: latency(
                "kvstore_storage_operation_duration_seconds",
                "Time to serve a key operation (a write: proposed, committed and applied)",
            ),
            grpc_requests: meter
                .u64_counter("raftkv_grpc_requests_total")
                .with_description("gRPC calls answered, by method and status code")
                .build(),
            grpc_duration: latency(
                "raftkv_grpc_request_duration_seconds",
                "Time to answer a gRPC call (to its response headers), by method",
            ),
            registry,
            _provider: provider,
        })
    }
}

/// How a storage operation ended, as `kvstore_storage_operations_total{status}` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageOutcome {
    /// Served.
    Ok,
    /// The key did not exist.
    NotFound,
    /// A compare-and-swap whose condition did not hold.
    FailedPrecondition,
    /// Any other failure (no leader, timeout, quota, bad input...).
    Error,
}

impl StorageOutcome {
    /// The outcome of an answer (`Ok` for anything served).
    pub fn of<T>(answer: &Result<T, ApiError>) -> StorageOutcome {
        use proto::rest::ErrorCode;
        match answer {
            Ok(_) => StorageOutcome::Ok,
            Err(e) if e.code() == ErrorCode::NotFound => StorageOutcome::NotFound,
            Err(e) if e.code() == ErrorCode::CasFailed => StorageOutcome::FailedPrecondition,
            Err(_) => StorageOutcome::Error,
        }
    }

    fn label(self) -> &'static str {
        match self {
            StorageOutcome::Ok => "ok",
            StorageOutcome::NotFound => "not_found",
            StorageOutcome::FailedPrecondition => "failed_precondition",
            StorageOutcome::Error => "error",
        }
    }
}

/// Counts one pending proposal while it lives, and whether it failed: refused for any reason
/// but "not the leader" (the caller forwards the request, or tells the client where the
/// leader is: nothing failed), lost with leadership, or abandoned by a caller that stopped
/// waiting (its timeout).
pub struct PendingProposal<'a> {
    metrics: &'a Metrics,
    answered: bool,
}

impl PendingProposal<'_> {
    /// Notes the node's answer to the proposal.
    pub fn answered<T>(mut self, answer: &Result<T, raft::node::NodeError>) {
        self.answered = true;
        if let Err(e) = answer
            && !matches!(e, raft::node::NodeError::NotLeader { .. })
        {
            self.metrics
                .proposals_failed
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for PendingProposal<'_> {
    fn drop(&mut self) {
        self.metrics
            .proposals_pending
            .fetch_sub(1, Ordering::Relaxed);
        if !self.answered {
            self.metrics
                .proposals_failed
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}
