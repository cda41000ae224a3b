//! Where a request is served: waiting for a leader to be known, and the one rule for a
//! request that only the leader can serve when it reached a follower. The follower forwards it
//! to the leader, at most [`FORWARD_HOPS_MAX`] hops, or refuses it as `not_leader`, naming the
//! leader, when the client asked not to be forwarded or the hops are spent. Each protocol
//! carries a forwarded request its own way (`http::forward`, `grpc::forward`); neither decides
//! when.

use proto::rest::ErrorCode;
use raft::core::Role;
use raft::node::NodeError;

use super::{ApiError, REQUEST_TIMEOUT};
use crate::server::Server;
use crate::server::machine::MemberInfo;

/// Most times one request is forwarded between nodes: enough for a leader change while the
/// request travels (follower -> old leader -> new leader), few enough to end a loop fast.
pub const FORWARD_HOPS_MAX: u64 = 3;

/// How a request arrived, as far as forwarding goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Via {
    /// How many times nodes forwarded it already (0 from a client).
    pub hops: u64,
    /// The client asked to be told the leader instead of being forwarded.
    pub no_forward: bool,
}

/// What a handler that needs the leader did: served the request here, or found that another
/// node leads and the request must go there.
#[derive(Debug)]
pub enum Step<T> {
    /// Served on this node (the leader).
    Done(T),
    /// Another node leads: send the request there, counting one more hop.
    Forward(Forward),
}

/// A request to send on to the leader.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The leader, as the address book has it.
    pub leader: MemberInfo,
    /// The hop count the forwarded request carries (the one it came with, plus one).
    pub hops: u64,
}

/// Waits (bounded) until some node is known to lead; returns whether it is this one.
pub async fn await_leader(server: &Server) -> Result<bool, ApiError> {
    let mut status = server.node.watch_status();
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        {
            let s = status.borrow_and_update();
            if let Some(leader) = s.leader {
                return Ok(leader == server.id && s.role == Some(Role::Leader));
            }
            if let Some(failure) = &s.failed {
                if s.storage == raft::node::StorageHealth::Failed {
                    return Err(ApiError::storage_failed(
                        &server.config.raft.node_id,
                        failure,
                    ));
                }
                return Err(ApiError::from_node(NodeError::Stopped));
            }
        }
        match tokio::time::timeout_at(deadline, status.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return Err(ApiError::from_node(NodeError::Stopped)),
            Err(_) => {
                return Err(ApiError::new(
                    ErrorCode::NoLeader,
                    format!("no leader within {}s", REQUEST_TIMEOUT.as_secs()),
                ));
            }
        }
    }
}

/// The forwarding of a request that reached a follower: where it goes, or the `not_leader`
/// refusal that names the leader (307 over REST, `UNAVAILABLE` over gRPC) when the client
/// asked not to be forwarded or the request was forwarded [`FORWARD_HOPS_MAX`] times already
/// (leadership keeps moving, the nodes disagree on the leader, or a client sent the count
/// itself), so that the answer is never a false "no leader"; only a node that knows no
/// leader's address answers `no_leader`.
pub fn forward_to_leader(server: &Server, via: Via) -> Result<Forward, ApiError> {
    let leader = server
        .node
        .status()
        .leader
        .and_then(|id| server.members().get(&id).cloned())
        // A member added with the seed's join body has no HTTP address until it records
        // its own (at once when it leads): until then it cannot be forwarded to or named.
        .filter(|leader| !leader.http_addr.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NoLeader,
                "the leader's address is not known yet; retry",
            )
        })?;
    if via.no_forward || via.hops >= FORWARD_HOPS_MAX {
        let message = if via.hops >= FORWARD_HOPS_MAX {
            format!(
                "this node is not the leader, and the request was forwarded {hops} times already ({FORWARDED}: {hops}): send it to the leader {}",
                leader.name,
                hops = via.hops,
                FORWARDED = proto::rest::headers::FORWARDED
            )
        } else {
            "this node is not the leader".to_string()
        };
        return Err(ApiError::not_leader(&leader, message));
    }
    Ok(Forward {
        leader,
        hops: via.hops + 1,
    })
}

/// A hop count as a request carries it (text), checked: 1 to [`FORWARD_HOPS_MAX`]. `what`
/// names where it came from for the error.
pub fn parse_hops(text: &str, what: &str) -> Result<u64, ApiError> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|hops| (1..=FORWARD_HOPS_MAX).contains(hops))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{what} is a hop count from 1 to {FORWARD_HOPS_MAX}, set by the nodes; a client need not send it"
            ))
        })
}
