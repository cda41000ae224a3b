//! Forwarding over gRPC: reading how a request arrived ([`via`]) and sending it on to the
//! leader's gRPC address when the shared handler says so ([`Relay::call`]; when is decided
//! once, in `service::route`). One HTTP/2 client per leader address is kept; it reconnects by
//! itself, and its errors say whether a connection could be made at all.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use proto::metadata;
use proto::rest::ErrorCode;
use tonic::codegen::http::Uri;
use tonic::{Request, Response, Status};

use super::status::{is_ours, status_of};
use crate::service::route::parse_hops;
use crate::service::{ApiError, Forward, REQUEST_TIMEOUT, Via};

/// How long a follower waits to connect to the leader before it answers `no_leader`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The HTTP/2 client a forwarded call goes over.
pub type LeaderClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, tonic::body::Body>;

/// How the request arrived: the hop count in `x-raftkv-forwarded` (0 without it) and
/// whether it asks not to be forwarded (`x-raftkv-no-forward`).
pub fn via<T>(request: &Request<T>) -> Result<Via, ApiError> {
    let meta = request.metadata();
    let hops = match meta.get(metadata::FORWARDED) {
        None => 0,
        Some(value) => parse_hops(value.to_str().unwrap_or(""), metadata::FORWARDED)?,
    };
    Ok(Via {
        hops,
        no_forward: meta.get(metadata::NO_FORWARD).is_some(),
    })
}

/// The clients of the nodes a follower forwards to, by gRPC address, over TLS when the node's
/// API is (with its CA, and its certificate under mTLS).
pub struct Relay {
    clients: Mutex<HashMap<String, LeaderClient>>,
    tls: Option<std::sync::Arc<crate::tls::Tls>>,
}

impl Relay {
    /// A relay for a node with these TLS settings.
    pub fn new(tls: Option<std::sync::Arc<crate::tls::Tls>>) -> Relay {
        Relay {
            clients: Mutex::default(),
            tls,
        }
    }
}

/// Whether the HTTP client's error in a status's causes says no connection could be made.
fn never_connected(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        if let Some(e) = cause.downcast_ref::<hyper_util::client::legacy::Error>() {
            return e.is_connect();
        }
        source = cause.source();
    }
    false
}

impl Relay {
    /// The client for the leader's gRPC address and that address as an origin; a leader
    /// whose record has no gRPC address (written by an older version) is named instead, as a
    /// client asking not to be forwarded is told, so that the client sends it there itself.
    fn client(&self, to: &Forward) -> Result<(LeaderClient, Uri), ApiError> {
        let Some(addr) = to.leader.grpc_addr.clone() else {
            return Err(ApiError::not_leader(
                &to.leader,
                format!(
                    "this node is not the leader, and the leader {} has no gRPC address on record yet; send the request to it",
                    to.leader.name
                ),
            ));
        };
        let scheme = crate::tls::scheme(self.tls.as_ref());
        let origin: Uri = format!("{scheme}://{addr}").parse().map_err(|e| {
            ApiError::new(
                ErrorCode::NoLeader,
                format!("the leader's gRPC address {addr} is not usable: {e}"),
            )
        })?;
        let mut clients = self
            .clients
            .lock()
            .expect("the client map's lock is poisoned only if an insert panicked");
        if let Some(client) = clients.get(&addr) {
            return Ok((client.clone(), origin));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = crate::tls::connector(self.tls.as_ref(), connector, true).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("forwarding to the leader: {e}"),
            )
        })?;
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        clients.insert(addr, client.clone());
        Ok((client, origin))
    }

    /// Sends `message` to the leader with `call` (one method of a generated client, given the
    /// HTTP/2 client and the leader's origin), with the forward's hop count, the caller's
    /// credentials and the request's id, and hands back
    /// the leader's answer. A status the leader sent is passed on as it is; a leader that
    /// cannot be reached is `no_leader` (nothing was sent: safe to retry anywhere); a call
    /// that broke after it went out is a `timeout` whose outcome is unknown (a write may have
    /// been applied), never a refusal.
    pub async fn call<M, R, F, Fut>(
        &self,
        to: Forward,
        message: M,
        credentials: &super::Credentials,
        call: F,
    ) -> Result<R, Status>
    where
        F: FnOnce(LeaderClient, Uri, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let (client, origin) = self.client(&to).map_err(status_of)?;
        let mut request = Request::new(message);
        request.set_timeout(REQUEST_TIMEOUT);
        credentials.attach(request.metadata_mut());
        // The leader logs the call under the id it has here.
        if let Some(id) = crate::request_id::current_id() {
            // Sensitive, as in every answer: an id is new on every call, not worth indexing in
            // the HPACK table of the connection to the leader (`request_id::header_value`).
            let mut id: tonic::metadata::MetadataValue<_> = id
                .parse()
                .expect("invariant: a request id is visible ASCII, valid metadata");
            id.set_sensitive(true);
            request
                .metadata_mut()
                .insert(crate::request_id::REQUEST_ID, id);
        }
        request.metadata_mut().insert(
            metadata::FORWARDED,
            to.hops
                .to_string()
                .parse()
                .expect("a number is valid metadata"),
        );
        match tokio::time::timeout(REQUEST_TIMEOUT, call(client, origin, request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) if is_ours(&status) => Err(status),
            Ok(Err(status)) if never_connected(&status) => Err(status_of(ApiError::new(
                ErrorCode::NoLeader,
                format!(
                    "the leader {} is unreachable: {}",
                    to.leader.name,
                    status.message()
                ),
            ))),
            Ok(Err(status)) => Err(status_of(ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "the call to the leader {} failed after it was sent ({}); a write may still be applied",
                    to.leader.name,
                    status.message()
                ),
            ))),
            Err(_) => Err(status_of(ApiError::timeout())),
        }
    }
}
