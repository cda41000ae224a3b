//! Forwarding over gRPC: reading how a request arrived ([`via`]) and sending it on to the
//! leader's gRPC address when the shared handler says so ([`Relay::call`]; when is decided
//! once, in `service::route`). Channels to the leaders are kept, one per address.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use proto::metadata;
use proto::rest::ErrorCode;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::status::{is_ours, status_of};
use crate::service::route::parse_hops;
use crate::service::{ApiError, Forward, REQUEST_TIMEOUT, Via};

/// How long a follower waits to connect to the leader before it answers `no_leader`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

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

/// The channels to the nodes a follower forwards to, by gRPC address.
#[derive(Default)]
pub struct Relay {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Relay {
    async fn channel(&self, to: &Forward) -> Result<Channel, ApiError> {
        let Some(addr) = to.leader.grpc_addr.clone() else {
            // The leader's record predates gRPC: name it, as a client asking not to be
            // forwarded is told.
            let mut refusal = ApiError::new(
                ErrorCode::NotLeader,
                format!(
                    "this node is not the leader, and the leader {} has no gRPC address on record yet; send the request to it",
                    to.leader.name
                ),
            )
            .with("leader", serde_json::json!(to.leader.name));
            refusal.leader = Some(Box::new(to.leader.clone()));
            return Err(refusal);
        };
        let known = self
            .channels
            .lock()
            .expect("the channel map's lock is poisoned only if an insert panicked")
            .get(&addr)
            .cloned();
        if let Some(channel) = known {
            return Ok(channel);
        }
        let unreachable = |e: &dyn std::fmt::Display| {
            ApiError::new(
                ErrorCode::NoLeader,
                format!("the leader {} is unreachable: {e}", to.leader.name),
            )
        };
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| unreachable(&e))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| unreachable(&e))?;
        self.channels
            .lock()
            .expect("the channel map's lock is poisoned only if an insert panicked")
            .insert(addr, channel.clone());
        Ok(channel)
    }

    /// Sends `message` to the leader with `call` (one method of a generated client), with the
    /// forward's hop count, and hands back the leader's answer. A status the leader sent is
    /// passed on as it is; a connection that broke after the request went out is a `timeout`
    /// whose outcome is unknown (a write may have been applied), never a refusal.
    pub async fn call<M, R, F, Fut>(&self, to: Forward, message: M, call: F) -> Result<R, Status>
    where
        F: FnOnce(Channel, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let channel = self.channel(&to).await.map_err(status_of)?;
        let mut request = Request::new(message);
        request.set_timeout(REQUEST_TIMEOUT);
        request.metadata_mut().insert(
            metadata::FORWARDED,
            to.hops
                .to_string()
                .parse()
                .expect("a number is valid metadata"),
        );
        match tokio::time::timeout(REQUEST_TIMEOUT, call(channel, request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) if is_ours(&status) => Err(status),
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
