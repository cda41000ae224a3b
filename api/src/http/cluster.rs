//! The cluster and admin routes over REST: readiness, status, members, the leader, join,
//! remove, leadership transfer, and on-demand snapshots. Each decodes its request into the
//! shared handler's arguments ([`crate::service::cluster`]) and encodes the answer as JSON, or
//! relays the request to the leader when the handler says so.

use proto::rest;
use serde_json::Value;

use proto::rest::ErrorCode;

use super::{ApiError, Body, Handled, Req, answer, json_str, ok, read_json, via};
use crate::server::Server;
use crate::service::cluster as service;

/// `GET /health`: the process is up and its storage works (see [`service::health`]).
pub fn health(server: &Server) -> Handled {
    ok(service::health(server)?)
}

/// `GET /ready` (see [`service::ready`]).
pub fn ready(server: &Server) -> Handled {
    ok(service::ready(server)?)
}

/// `GET /status`: what this node is and how far it has come.
pub fn status(server: &Server) -> Handled {
    ok(service::status(server))
}

/// `GET /metrics`: Prometheus' text format (404 `no_route` with `observability.metrics_enabled`
/// off).
pub fn metrics(server: &Server) -> Handled {
    let Some(text) = server.metrics.render(server) else {
        return Err(ApiError::new(
            ErrorCode::NoRoute,
            "metrics are off on this node (observability.metrics_enabled)",
        ));
    };
    hyper::Response::builder()
        .header(hyper::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)
        .body(Body::from(text))
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

/// `GET /cluster/nodes`.
pub fn nodes(server: &Server) -> Handled {
    ok(service::nodes(server))
}

/// `GET /cluster/leader`.
pub fn leader(server: &Server) -> Handled {
    ok(service::leader(server)?)
}

/// `GET /cluster/id`: the cluster this node belongs to.
pub fn cluster_id(server: &Server) -> Handled {
    ok(service::cluster_id(server))
}

/// A non-empty string field of the JSON body.
fn text(body: &Value, name: &str) -> Result<String, ApiError> {
    json_str(body, name).map(str::to_string)
}

/// An optional string field: absent or null is `None`.
fn optional_text(body: &Value, name: &str) -> Result<Option<String>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    }
}

/// `POST /cluster/join` `{"node_id", "raft_addr", "http_addr"?, "grpc_addr"?, "cluster_id"?,
/// "fresh"?}` (see [`service::join`]). The seed's body, `{"node_id", "addr"}`, is read too:
/// `addr` is the Raft address.
pub async fn join(server: &Server, req: Req) -> Handled {
    let body = read_json(&req.body)?;
    // The names and addresses first, as they were always checked.
    let node_id = text(&body, "node_id")?;
    let raft_addr = match (
        optional_text(&body, "raft_addr")?,
        optional_text(&body, "addr")?,
    ) {
        (Some(raft), Some(addr)) if raft != addr => {
            return Err(ApiError::bad_request(format!(
                "raft_addr ({raft}) and addr ({addr}) name the same setting, the Raft address, and disagree; give one"
            )));
        }
        (Some(raft), _) => raft,
        (None, Some(addr)) => addr,
        (None, None) => text(&body, "raft_addr")?,
    };
    let http_addr = optional_text(&body, "http_addr")?.unwrap_or_default();
    let fresh = match body.get("fresh") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("fresh must be true or false")),
    };
    let cluster_id = match body.get("cluster_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::bad_request("cluster_id must be 16 hex digits")),
    };
    let request = rest::JoinRequest {
        node_id,
        raft_addr,
        http_addr,
        grpc_addr: optional_text(&body, "grpc_addr")?,
        cluster_id,
        fresh,
    };
    let step = service::join(server, via(&req)?, request).await?;
    answer(req, step).await
}

/// `POST /cluster/remove` `{"node_id"}` (see [`service::remove`]).
pub async fn remove(server: &Server, req: Req) -> Handled {
    let name = text(&read_json(&req.body)?, "node_id")?;
    let step = service::remove(server, via(&req)?, name).await?;
    answer(req, step).await
}

/// `POST /cluster/transfer-leader` `{"node_id"}` (see [`service::transfer`]).
pub async fn transfer(server: &Server, req: Req) -> Handled {
    let name = text(&read_json(&req.body)?, "node_id")?;
    let step = service::transfer(server, via(&req)?, name).await?;
    answer(req, step).await
}

/// `POST /admin/snapshot` (see [`service::snapshot`]).
pub async fn snapshot(server: &Server) -> Handled {
    ok(service::snapshot(server).await?)
}
