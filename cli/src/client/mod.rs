//! [`Client`]: the Rust SDK for RaftKV's APIs (docs/api.md), REST or gRPC per endpoint
//! (`http://` or `grpc://`).
//!
//! Job: send each call to a node that can answer it, survive a node or a leader going away,
//! and hand back typed answers or a typed [`Error`].
//!
//! Routing. With [`Routing::Leader`] (the default) the client asks `GET /cluster/leader` and
//! sends key and cluster requests to the leader first, so a write does not pay a forwarding
//! hop. With [`Routing::Spread`] it rotates over the endpoints (followers forward). Requests
//! about one node (`/health`, `/ready`, `/admin/snapshot`) go to the endpoints in the order
//! given, so a single endpoint names the node.
//!
//! Retries. A request tries the endpoints one after another, for
//! [`ClientOptions::passes`] passes with exponential backoff between passes, all within
//! [`ClientOptions::call_timeout`], and then fails with [`Error::Unavailable`] listing
//! each endpoint's last failure. A `4xx` answer is final: it is never retried. What may be retried
//! depends on whether sending the request twice is harmless:
//! - a refused or failed *connect*, a `503` (no leader, shutting down) or a `307`
//!   `not_leader` (a node that will not forward it): always retried on the next endpoint,
//!   since the request was not applied;
//! - a connection lost after sending, a client-side timeout, or a `504` (outcome unknown):
//!   retried only for reads and for [`Session`] writes, which carry the same
//!   `X-Raftkv-Sequence` on every retry so the server applies them at most once. A plain
//!   write fails at once with [`Error::Timeout`] instead: the caller must decide.
//!
//! Invariants:
//! - a [`Session`] sends sequence numbers 1, 2, 3, ... one write at a time (`&mut self`); the
//!   retries of one write reuse its number; the number advances after every write whatever
//!   its outcome, so a later write never reuses the number of an earlier one (the server
//!   accepts gaps: only a number at or below the last one is a duplicate);
//! - every answer body is read with a size bound ([`RESPONSE_BYTES_MAX`]), every attempt
//!   with a time bound ([`ClientOptions::request_timeout`]) and every call, all its attempts
//!   together, with another ([`ClientOptions::call_timeout`]);
//! - a malformed answer becomes [`Error::Protocol`], never a panic.
//!
//! Protocols. A call is described once (`call::Op`, with its REST form beside it). Over REST
//! it is sent as is; over gRPC (`grpc`) the matching method is called and its answer, or the
//! node's refusal (its `ErrorInfo` reason is the REST code), is turned into the REST form, so
//! that the retry rules, sessions and answer parsing above are one code path for both. Over
//! gRPC a call that could not connect counts as not sent; any other failure without a node's
//! answer as possibly applied. Gets, puts and deletes go over gRPC on one `KVCalls` stream per
//! connection (unary calls on a node without that service); a call left unanswered when the
//! node ends that stream was never taken, and counts as not sent. Leader discovery matches the
//! leader's gRPC address against `grpc://` endpoints.
//!
//! Modules, one job each: `endpoint` (parsing the endpoints given), `call` (one request, before
//! it is sent, and its answer), `retry` (the retry engine: routing, leader lookup, attempts
//! and the retry rules above), `grpc` (an attempt over gRPC), `channel` (one HTTP/2
//! connection), `call_stream` (its `KVCalls` stream), `api` (the API methods: keys,
//! cluster, admin, with their checks before sending and their answer parsing), `auth` (logging
//! in; users, roles and API keys), `session` ([`Session`]) and `backup` (downloading a
//! backup, streamed and checked). This module holds the [`Client`] handle and the limits they share.

mod api;
mod auth;
mod backup;
mod call;
mod call_stream;
mod channel;
mod endpoint;
mod grpc;
mod retry;
mod session;
mod tls;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::{Error, Result};
#[cfg(doc)]
use crate::types::Routing;
use crate::types::{ClientOptions, Credential};
use endpoint::{Endpoint, parse_endpoint};

pub use backup::{BACKUP_CHECK_ALLOWANCE, BACKUP_HEAD_TIMEOUT_DEFAULT};
pub use endpoint::Protocol;
pub use proto::rest::backup::BACKUP_STALL_TIMEOUT;
pub use session::Session;

/// Largest key the server accepts (docs/api.md: 4 KiB); checked before sending.
pub const KEY_BYTES_MAX: usize = 4 * 1024;
/// Largest value the server accepts (docs/api.md: 1 MiB); checked before sending.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Largest `limit` of a listing (docs/api.md: 10,000).
pub const LIST_LIMIT_MAX: u32 = 10_000;
/// Largest answer body read. A listing of the maximum number of keys with large values can
/// exceed it, and then fails with [`Error::Protocol`]: list with a smaller limit.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Bound on one leader lookup per endpoint, whatever the request timeout.
pub const LEADER_LOOKUP_TIMEOUT_MAX: Duration = Duration::from_secs(2);
/// Least time between two leader lookups, so that many concurrent callers that lose the
/// leader together send one lookup, not one each.
pub const LEADER_LOOKUP_INTERVAL_MIN: Duration = Duration::from_millis(200);
/// Most endpoints a client accepts; more is a configuration mistake.
pub const ENDPOINTS_MAX: usize = 64;

/// Header carrying a session's client id.
pub const CLIENT_ID_HEADER: &str = proto::rest::headers::CLIENT_ID;
/// Header carrying a session write's sequence number.
pub const SEQUENCE_HEADER: &str = proto::rest::headers::SEQUENCE;

const NO_LEADER: usize = usize::MAX;

/// A RaftKV client: cheap to clone (clones share connections and the known leader).
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoints: Vec<Endpoint>,
    options: ClientOptions,
    /// Index into `endpoints` of the known leader, or [`NO_LEADER`].
    leader: AtomicUsize,
    /// Rotation counter for [`Routing::Spread`] and for starting points without a leader.
    rotation: AtomicUsize,
    /// When a leader lookup last started.
    last_lookup: Mutex<Option<Instant>>,
    /// What every call carries (`ClientOptions::credential` at first).
    credential: std::sync::RwLock<Arc<Credential>>,
}

impl Client {
    /// A client for `endpoints` (each `http://host:port` or `grpc://host:port`) with default
    /// options.
    pub fn new<I, S>(endpoints: I) -> Result<Client>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Client::with_options(endpoints, ClientOptions::default())
    }

    /// A client for `endpoints` (each `http://host:port` or `grpc://host:port`) with
    /// `options`.
    pub fn with_options<I, S>(endpoints: I, options: ClientOptions) -> Result<Client>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints = endpoints
            .into_iter()
            .map(|e| {
                parse_endpoint(
                    e.as_ref(),
                    options.grpc_connections_per_endpoint,
                    options.connect_timeout,
                    options.tls.as_ref(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let no_endpoint = |reason: &str| Error::InvalidEndpoint {
            endpoint: String::new(),
            reason: reason.to_owned(),
        };
        if endpoints.is_empty() {
            return Err(no_endpoint("no endpoint given"));
        }
        if endpoints.len() > ENDPOINTS_MAX {
            return Err(no_endpoint(&format!("more than {ENDPOINTS_MAX} endpoints")));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(options.connect_timeout));
        let connector = tls::connector(options.tls.as_ref(), connector, false)?;
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(options.idle_connections_per_endpoint)
            .build(connector);
        let options = ClientOptions {
            passes: options.passes.max(1),
            ..options
        };
        let credential = std::sync::RwLock::new(Arc::new(options.credential.clone()));
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                endpoints,
                options,
                leader: AtomicUsize::new(NO_LEADER),
                rotation: AtomicUsize::new(0),
                last_lookup: Mutex::new(None),
                credential,
            }),
        })
    }

    /// The endpoints, normalised to `http://host:port` or `grpc://host:port`.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .endpoints
            .iter()
            .map(|e| e.base.clone())
            .collect()
    }

    /// The options in force.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Sends `credential` with every later call, of this client and its clones (after
    /// [`Client::login`], or to switch to an API key).
    pub fn set_credential(&self, credential: Credential) {
        *self
            .inner
            .credential
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(credential);
    }

    /// The credential calls carry now.
    pub(crate) fn credential(&self) -> Arc<Credential> {
        Arc::clone(
            &self
                .inner
                .credential
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// The endpoint believed to be the leader, if one is known.
    pub fn known_leader(&self) -> Option<String> {
        let index = self.inner.leader.load(Ordering::Relaxed);
        self.inner.endpoints.get(index).map(|e| e.base.clone())
    }
}
