//! The client's own types: its options, where it routes, and what `ready` reports. The
//! answers it parses are the REST contract's types (`proto::rest`), re-exported here.

use std::time::Duration;

use serde::Serialize;

pub use proto::rest::{
    Consistency, DeleteResult, JoinResult, KeyValue, LeaderInfo, ListResult, NodeId, NodeInfo,
    Precondition, PutResult, RemoveResult, SnapshotInfo, StaleInfo, TransferResult,
};

/// A node's readiness, from `GET /ready`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    /// The endpoint that answered.
    pub endpoint: String,
    /// Whether the node is ready (`200`) or not (`503 not_ready`).
    pub ready: bool,
    /// The answer's JSON body as sent.
    pub detail: serde_json::Value,
}

/// The credential a client sends with every call when the cluster's authentication is on
/// (docs/api.md, "Authentication"). Its `Debug` never shows the secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credential {
    /// None (authentication off).
    #[default]
    None,
    /// A token from `POST /auth/login` ([`crate::Client::login`]): `Authorization: Bearer`.
    Token(String),
    /// An API key (`ak_...`): `X-API-Key`.
    ApiKey(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::None => "None",
            Credential::Token(_) => "Token(..)",
            Credential::ApiKey(_) => "ApiKey(..)",
        })
    }
}

impl Credential {
    /// The HTTP header that carries it, if any (name, value).
    pub fn header(&self) -> Option<(&'static str, String)> {
        match self {
            Credential::None => None,
            Credential::Token(token) => Some(("authorization", format!("Bearer {token}"))),
            Credential::ApiKey(key) => Some((proto::rest::auth::API_KEY_HEADER, key.clone())),
        }
    }

    /// `message` as a gRPC request carrying the credential in its metadata. A credential that
    /// is not valid metadata text is left off (the node then answers `UNAUTHENTICATED`).
    pub fn request<M>(&self, message: M) -> tonic::Request<M> {
        let mut request = tonic::Request::new(message);
        if let Some((name, value)) = self.header()
            && let Ok(value) = value.parse()
        {
            request.metadata_mut().insert(name, value);
        }
        request
    }
}

/// TLS for `https://` and `grpcs://` endpoints: the CA the nodes' certificates chain to, and
/// the client's own certificate and key when the cluster requires mTLS. Its `Debug` never
/// shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA certificate(s), PEM.
    pub ca_cert_pem: Vec<u8>,
    /// The client certificate chain and its private key, PEM, for mTLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("mtls", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the CA and, for mTLS, the client's certificate and key from PEM files.
    pub fn from_files(
        ca_cert: &std::path::Path,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> crate::Result<ClientTls> {
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| crate::Error::BadRequest(format!("reading {}: {e}", path.display())))
        };
        Ok(ClientTls {
            ca_cert_pem: read(ca_cert)?,
            identity: match identity {
                Some((cert, key)) => Some((read(cert)?, read(key)?)),
                None => None,
            },
        })
    }
}

/// Options of [`crate::Client`] beyond its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Bound on one attempt, from sending the request to the last byte of the answer (and
    /// never more than what is left of [`ClientOptions::call_timeout`]).
    pub request_timeout: Duration,
    /// Bound on a whole call: every attempt on every endpoint, the pauses between passes and
    /// the leader lookups included, so that a call fails within this time even when no node
    /// can answer (no quorum: each attempt waits out the server's no-leader timeout).
    pub call_timeout: Duration,
    /// Bound on opening a TCP connection.
    pub connect_timeout: Duration,
    /// How many passes over the endpoint list a request makes before giving up with
    /// [`crate::Error::Unavailable`]; at least 1.
    pub passes: u32,
    /// The pause after the first failed pass; doubled after each further pass.
    pub backoff_initial: Duration,
    /// The longest pause between passes.
    pub backoff_max: Duration,
    /// Where key requests go.
    pub routing: Routing,
    /// Most idle keep-alive connections kept per endpoint (the load generator sets it to
    /// its concurrency).
    pub idle_connections_per_endpoint: usize,
    /// HTTP/2 connections a client opens to each `grpc://` endpoint, taken in turn by its
    /// calls (each multiplexes many calls). One is enough for most programs; the load
    /// generator opens one per worker, as etcd's benchmark clients do.
    pub grpc_connections_per_endpoint: usize,
    /// The credential sent with every call ([`crate::Client::set_credential`] changes it).
    pub credential: Credential,
    /// TLS for `https://` and `grpcs://` endpoints (they are refused without it).
    pub tls: Option<ClientTls>,
}

/// Where key and cluster requests go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// Find the leader with `GET /cluster/leader` and send there first; fail over to the
    /// other endpoints in order.
    #[default]
    Leader,
    /// Rotate over all endpoints, one request after another (followers forward to the
    /// leader).
    Spread,
}

/// Default [`ClientOptions::request_timeout`]: longer than the server's own no-leader
/// timeout (5 s), so the server's `503` arrives before the client gives up.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default [`ClientOptions::call_timeout`]: as long as one attempt, so a call without a
/// quorum fails in 10 s however many passes and endpoints are left, while a failover (a few
/// hundred ms) still fits many times over.
pub const CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default [`ClientOptions::connect_timeout`]: a loopback or LAN connect takes far less.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// Default [`ClientOptions::passes`]: with the default backoff the pauses add up to about
/// 1 s, long enough to ride out one leader election (a few hundred ms after a leader dies,
/// docs/performance.md) with room to spare. The passes stop earlier when the call's
/// [`ClientOptions::call_timeout`] runs out.
pub const PASSES_DEFAULT: u32 = 8;
/// Default [`ClientOptions::backoff_initial`]: short, because the common failure is a leader
/// that just died and whose successor is elected within a few hundred ms; a long first
/// pause would add directly to the time a failover costs a client.
pub const BACKOFF_INITIAL_DEFAULT: Duration = Duration::from_millis(25);
/// Default [`ClientOptions::backoff_max`]: a client retries at least this often, so it notices
/// a new leader at most this late; a retry is one cheap request per endpoint.
pub const BACKOFF_MAX_DEFAULT: Duration = Duration::from_millis(200);
/// Default [`ClientOptions::idle_connections_per_endpoint`].
pub const IDLE_CONNECTIONS_DEFAULT: usize = 8;
/// Default [`ClientOptions::grpc_connections_per_endpoint`].
pub const GRPC_CONNECTIONS_DEFAULT: usize = 1;

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            call_timeout: CALL_TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            passes: PASSES_DEFAULT,
            backoff_initial: BACKOFF_INITIAL_DEFAULT,
            backoff_max: BACKOFF_MAX_DEFAULT,
            routing: Routing::Leader,
            idle_connections_per_endpoint: IDLE_CONNECTIONS_DEFAULT,
            grpc_connections_per_endpoint: GRPC_CONNECTIONS_DEFAULT,
            credential: Credential::None,
            tls: None,
        }
    }
}
