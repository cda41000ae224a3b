//! Errors of the shared handlers: [`ApiError`] (a stable code, a message, an optional extra
//! field), and how node and core errors map onto the codes docs/api.md lists. Each protocol
//! renders an [`ApiError`] its own way: the REST layer as a status and a JSON body, the gRPC
//! layer as a status code with the code in its details.
//!
//! Invariant: every code an [`ApiError`] carries is in docs/api.md's error tables.

use proto::rest::ErrorCode;
use raft::node::{NodeError, names};
use serde_json::Value;

use super::REQUEST_TIMEOUT;
use crate::server::machine::MemberInfo;

/// An error answer: its code (which sets its status), message, and optional extra JSON fields.
#[derive(Debug)]
pub struct ApiError {
    /// The stable code (docs/api.md), which sets the HTTP status and the gRPC code.
    pub(crate) code: ErrorCode,
    /// What went wrong, for a person.
    pub(crate) message: String,
    /// One extra field of the answer (the REST body's, the gRPC details' metadata).
    pub(crate) extra: Option<(&'static str, Value)>,
    /// The leader a `not_leader` refusal names ([`ApiError::not_leader`], the only way to
    /// set it), whose addresses each protocol gives in its own way (REST: `Location`; gRPC:
    /// metadata).
    pub(crate) leader: Option<Box<MemberInfo>>,
}

impl ApiError {
    /// An error answer.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            extra: None,
            leader: None,
        }
    }

    /// The `not_leader` refusal (307 over REST, `UNAVAILABLE` over gRPC): this node is not
    /// the leader and will not forward; it names `leader`, whose addresses go with it.
    pub fn not_leader(leader: &MemberInfo, message: impl Into<String>) -> ApiError {
        let mut refusal = ApiError::new(ErrorCode::NotLeader, message)
            .with("leader", Value::String(leader.name.clone()));
        refusal.leader = Some(Box::new(leader.clone()));
        refusal
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
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

/// Waits for `fut` at most [`REQUEST_TIMEOUT`].
pub async fn within<T>(fut: impl Future<Output = Result<T, NodeError>>) -> Result<T, ApiError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(result) => result.map_err(ApiError::from_node),
        Err(_) => Err(ApiError::timeout()),
    }
}
