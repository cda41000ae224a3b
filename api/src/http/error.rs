//! Error answers: [`ApiError`] (status, stable code, message, extra fields), how node and core
//! errors map onto the codes docs/api.md lists, and the JSON answer helpers every route uses.
//!
//! Invariant: every code an [`ApiError`] carries is in docs/api.md's error table.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use proto::rest::{ErrorBody, ErrorCode};
use raft::node::{NodeError, names};
use serde_json::Value;

use super::*;

/// The body type of every answer.
pub type Body = Full<Bytes>;

/// An error answer: its code (which sets its status), message, and optional extra JSON fields.
#[derive(Debug)]
pub struct ApiError {
    pub(super) code: ErrorCode,
    pub(super) message: String,
    pub(super) extra: Option<(&'static str, Value)>,
}

impl ApiError {
    /// An error answer.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            extra: None,
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status())
            .expect("invariant: every error code's status is a valid HTTP status")
    }

    /// 400 bad_request.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    /// Adds a field to the JSON body.
    pub fn with(mut self, field: &'static str, value: Value) -> ApiError {
        self.extra = Some((field, value));
        self
    }

    pub(super) fn into_response(self) -> Response<Body> {
        let status = self.status();
        let mut body = ErrorBody {
            error: self.message,
            code: self.code.as_str().to_string(),
            extra: serde_json::Map::new(),
        };
        if let Some((field, value)) = self.extra {
            body.extra.insert(field.to_string(), value);
        }
        json_response(status, &body)
    }

    /// The answer for a node error on a request that was not forwarded. Each refusal is
    /// answered as what it is: a request that cannot succeed as it stands gets a 4xx that a
    /// client does not retry; only a real unavailability (no leader, a leadership transfer
    /// under way, a full uncommitted window, failed storage, shutdown) is a 503.
    pub fn from_node(e: NodeError) -> ApiError {
        match e {
            NodeError::NotLeader { .. } => {
                ApiError::new(ErrorCode::NoLeader, "no leader is available; retry")
            }
            NodeError::Dropped => ApiError::new(
                ErrorCode::NoLeader,
                "the leader changed before the write committed; it was not applied: retry",
            ),
            NodeError::Unknown => ApiError::new(
                ErrorCode::Timeout,
                "the outcome of the write is unknown (it may have been applied)",
            ),
            NodeError::ConfChangeInProgress => ApiError::new(
                ErrorCode::ConfChangeInProgress,
                "another membership change is in progress; retry when it completes",
            ),
            NodeError::Rejected(core) => ApiError::from_core(core),
            NodeError::NothingToSnapshot => ApiError::new(
                ErrorCode::NothingToSnapshot,
                "this node has applied nothing yet, so there is nothing to snapshot",
            ),
            NodeError::Storage(why) => ApiError::new(
                ErrorCode::StorageFailed,
                format!("this node's storage failed: {why}"),
            ),
            NodeError::Stopped => {
                ApiError::new(ErrorCode::ShuttingDown, "the node is shutting down")
            }
            NodeError::NoSpace(no_space) => ApiError::no_space(no_space),
        }
    }

    /// 507 no_space: the leader's disk is (nearly) full, and the write was not taken.
    pub fn no_space(no_space: raft::node::NoSpace) -> ApiError {
        ApiError::new(
            ErrorCode::NoSpace,
            format!(
                "the write was refused and not applied: {no_space}; writes resume by themselves once space is freed, reads go on"
            ),
        )
    }

    /// 503 storage_failed: the node's storage failed for good and it stopped.
    pub fn storage_failed(node: &str, failure: &str) -> ApiError {
        ApiError::new(
            ErrorCode::StorageFailed,
            format!(
                "{node} stopped: its storage failed ({failure}); see its log, and restart it once the disk is fixed"
            ),
        )
    }

    /// The answer for a request the Raft core refused, by its typed reason, with nodes named
    /// by their names.
    fn from_core(e: raft::core::Error) -> ApiError {
        use raft::core::Error as Core;
        match e {
            Core::NotLeader { leader_hint } => {
                ApiError::from_node(NodeError::NotLeader { leader_hint })
            }
            Core::ConfChangeInProgress { .. } => {
                ApiError::from_node(NodeError::ConfChangeInProgress)
            }
            Core::TransferInProgress { to } => ApiError::new(
                ErrorCode::TransferInProgress,
                format!(
                    "leadership is moving to {}; retry in a moment",
                    names::of(to)
                ),
            ),
            Core::ProposalDropped { reason } => ApiError::new(
                ErrorCode::ProposalDropped,
                format!("the leader cannot take more writes now ({reason}); retry later"),
            ),
            Core::ProposalTooLarge {
                size_bytes,
                max_bytes,
            } => ApiError::new(
                ErrorCode::TooLarge,
                format!("the write of {size_bytes} bytes exceeds the limit of {max_bytes}"),
            ),
            Core::InvalidConfChange(why) => ApiError::new(
                ErrorCode::InvalidMembershipChange,
                format!("the membership change is refused: {why}"),
            ),
            Core::InvalidTransferTarget { to, reason } => ApiError::new(
                ErrorCode::InvalidTransferTarget,
                format!("cannot transfer leadership to {}: {reason}", names::of(to)),
            ),
            Core::TooManyPendingReads { max } => ApiError::new(
                ErrorCode::TooManyReads,
                format!("{max} linearizable reads are pending on the leader already; retry later"),
            ),
            Core::Storage(why) => ApiError::from_node(NodeError::Storage(why.to_string())),
            // None comes from a client's request as such (a snapshot is asked for at the
            // applied index, and `/admin/snapshot` answers an up-to-date one itself; a
            // committed conflict, a term jump, a malformed message and a config error come
            // from peers and start-up): a 500 says that this server, not the client, is wrong.
            other @ (Core::SnapshotBeyondApplied { .. }
            | Core::SnapshotOutOfDate { .. }
            | Core::CommittedConflict { .. }
            | Core::TermJump { .. }
            | Core::StrangerTerm { .. }
            | Core::Malformed { .. }
            | Core::Config(_)) => ApiError::new(
                ErrorCode::Internal,
                format!("the server failed to handle the request: {other}"),
            ),
        }
    }

    pub(crate) fn timeout() -> ApiError {
        ApiError::new(
            ErrorCode::Timeout,
            format!(
                "no answer within {}s; a write may still be applied",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
    }
}

/// What a handler returns.
pub type Handled = Result<Response<Body>, ApiError>;

/// A JSON answer.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    let json = serde_json::to_vec(body)
        .expect("invariant: answer bodies are maps with string keys, which serialise to JSON");
    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// 200 with a JSON body (one of the contract's answers, `proto::rest`).
pub fn ok(body: impl serde::Serialize) -> Handled {
    Ok(json_response(StatusCode::OK, &body))
}

/// Waits for `fut` at most [`REQUEST_TIMEOUT`].
pub async fn within<T>(fut: impl Future<Output = Result<T, NodeError>>) -> Result<T, ApiError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(result) => result.map_err(ApiError::from_node),
        Err(_) => Err(ApiError::timeout()),
    }
}
