//! The cluster and admin operations both APIs serve: health, readiness, status, members, the
//! leader, join, remove, leadership transfer, and on-demand snapshots.
//!
//! Membership changes run on the leader (a follower hands back [`Step::Forward`]) and answer
//! once the change is applied on the leader; a join adds a learner, which the leader promotes
//! to voter by itself once its log has caught up (see `replica::duties::leader_duties`).

use std::time::Duration;

use proto::rest::{self, ErrorCode};
use raft::core::{ConfChange, ConfChangeKind, Role};
use raft::node::driver::node_id_for_name;
use raft::node::{NodeError, Status, StorageHealth};
use serde_json::json;

use super::route::{Step, Via, await_leader, forward_to_leader};
use super::{ApiError, REQUEST_TIMEOUT, within};
use crate::server::Server;
use crate::server::data_dir::SNAPSHOTS_DIR;
use crate::server::machine::MemberInfo;

/// How far behind the commit index a node may have applied and still call itself ready.
pub const READY_LAG_ENTRIES_MAX: u64 = 1000;
/// How long a leadership transfer may take before the request gives up (the core itself
/// abandons a transfer after an election timeout).
pub const TRANSFER_WAIT_MAX: Duration = Duration::from_secs(5);

fn role_name(server: &Server, status: &Status, id: raft::core::NodeId) -> &'static str {
    let config = &status.configuration;
    if status.leader == Some(id) {
        "leader"
    } else if config.learners.contains(&id) || config.learners_next.contains(&id) {
        "learner"
    } else if id == server.id && server.removed_at().is_some() {
        "removed"
    } else if config.voters.contains(&id) || config.voters_outgoing.contains(&id) {
        if id == server.id {
            match status.role {
                Some(Role::Candidate) | Some(Role::PreCandidate) => "candidate",
                _ => "follower",
            }
        } else {
            "follower"
        }
    } else {
        "unknown"
    }
}

/// The storage problem a node has, if any, as the error `/health` and `/ready` answer: a
/// full disk (507 `no_space`, clears by itself) or storage that failed for good (503
/// `storage_failed`).
fn storage_problem(server: &Server, status: &Status) -> Option<ApiError> {
    match &status.storage {
        StorageHealth::Ok => None,
        StorageHealth::NoSpace(no_space) => Some(ApiError::new(
            ErrorCode::NoSpace,
            format!(
                "{} refuses writes: {no_space}; reads go on, and writes resume by themselves once space is freed",
                server.config.raft.node_id
            ),
        )),
        StorageHealth::Failed => Some(ApiError::storage_failed(
            &server.config.raft.node_id,
            status.failed.as_deref().unwrap_or("unknown failure"),
        )),
    }
}

/// Health (`GET /health`): the process is up and its storage works. A storage problem is not
/// health: a full disk answers 507 `no_space`, failed storage 503 `storage_failed`.
pub fn health(server: &Server) -> Result<rest::Health, ApiError> {
    let status = server.node.status();
    if let Some(problem) = storage_problem(server, &status) {
        return Err(problem);
    }
    // A process whose Raft loop stopped (it panicked) is up but useless: health says so, as
    // readiness does, so that a supervisor restarts it.
    if let Some(failure) = status.failed {
        return Err(ApiError::new(
            ErrorCode::NotReady,
            format!("{} stopped: {failure}", server.config.raft.node_id),
        ));
    }
    Ok(rest::Health {
        status: "ok".to_string(),
    })
}

/// Readiness (`GET /ready`, gRPC health `SERVING`). Its answer always shows the space quota (`quota`: used and quota bytes, and
/// whether writes that grow the state are refused); a state over the quota leaves the node
/// ready.
pub fn ready(server: &Server) -> Result<rest::Ready, ApiError> {
    let status = server.node.status();
    if let Some(problem) = storage_problem(server, &status) {
        return Err(problem);
    }
    let config = &status.configuration;
    let member = config.voters.contains(&server.id) || config.learners.contains(&server.id);
    // Also past the log found at start: until then requests are answered `not_ready`
    // (`service::auth::admit`), so a load balancer must not send them here.
    let caught_up = status.applied.0 + READY_LAG_ENTRIES_MAX >= status.commit.0
        && status.applied >= server.replay_to;
    if let Some(at) = server.removed_at() {
        return Err(removed_error(server, at));
    }
    if member
        && status.leader.is_some()
        && caught_up
        && status.failed.is_none()
        && status.alarm.is_none()
    {
        Ok(rest::Ready {
            status: "ready".to_string(),
            cluster_id: server.cluster_id.to_string(),
            term: status.term.0,
            applied_index: status.applied.0,
            commit_index: status.commit.0,
            snapshot_index: status.snapshot.index.0,
            // Over the quota the node stays ready: it serves reads, deletes and the writes
            // that do not grow the state, so a load balancer must not drop it (as etcd).
            quota: server.quota.state().info(),
        })
    } else {
        let why = if let Some(failure) = &status.failed {
            format!("the node stopped: {failure}")
        } else if let Some(alarm) = &status.alarm {
            format!(
                "a peer broke Raft's rules; this node refused it and needs an operator: {alarm}"
            )
        } else if !member {
            "not a member of the cluster (yet)".to_string()
        } else if status.leader.is_none() {
            "no known leader".to_string()
        } else {
            "still applying the log".to_string()
        };
        Err(ApiError::new(ErrorCode::NotReady, why).with("quota", server.quota.state().to_json()))
    }
}

/// Whether this node serves requests: a node that knows it was removed from its cluster
/// serves nothing but what tells an operator where it stands (health, readiness, status, the
/// cluster's id and members), and refuses the rest with [`removed_error`].
pub fn serving(server: &Server) -> Result<(), ApiError> {
    match server.removed_at() {
        Some(at) => Err(removed_error(server, at)),
        None => Ok(()),
    }
}

/// The answer of a node that knows it was removed from its cluster (410 Gone, as etcd's
/// "member has been permanently removed"): it serves nothing, and says how to add it back.
pub fn removed_error(server: &Server, at: raft::core::LogIndex) -> ApiError {
    ApiError::new(
        ErrorCode::NodeRemoved,
        format!(
            "{} was removed from cluster {} (membership change at index {}); to add it back, stop it, move its data directory aside and start it with --join-addr",
            server.config.raft.node_id, server.cluster_id, at.0
        ),
    )
}

/// The members, with their addresses and roles as this node knows them.
pub fn nodes(server: &Server) -> rest::Nodes {
    let status = server.node.status();
    let config = &status.configuration;
    let members = server.members();
    let ids = config.members();
    let nodes: Vec<rest::NodeInfo> = ids
        .into_iter()
        .map(|id| {
            let member = members.get(&id);
            let match_index = status
                .match_index
                .iter()
                .find(|(m, _)| *m == id)
                .map(|(_, i)| i.0);
            rest::NodeInfo {
                id: rest::NodeId(member.map_or_else(|| id.0.to_string(), |m| m.name.clone())),
                raft_addr: member.map(|m| m.raft_addr.clone()),
                http_addr: member.map(|m| m.http_addr.clone()),
                grpc_addr: member.and_then(|m| m.grpc_addr.clone()),
                role: role_name(server, &status, id).to_string(),
                match_index,
            }
        })
        .collect();
    rest::Nodes { nodes }
}

/// The leader's addresses: 503 `no_leader` when none is known (or its address is not
/// recorded yet).
pub fn leader(server: &Server) -> Result<rest::LeaderInfo, ApiError> {
    let status = server.node.status();
    let leader = status
        .leader
        .and_then(|id| server.members().get(&id).cloned());
    match leader {
        Some(m) => Ok(address_of(&m)),
        None => Err(ApiError::new(
            ErrorCode::NoLeader,
            "no leader is known (or its address is not recorded yet)",
        )),
    }
}

/// How long a join waits for the joining node to say which cluster it belongs to, when the
/// request did not come from the node itself (a node that is not up yet cannot answer, and
/// is then added as asked: the peer handshake still keeps it out if it is another cluster's).
pub const JOINER_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Checks a field of a request by the configuration's rule for it (400 `bad_request`).
fn check(name: &str, value: &str, rule: fn(&str) -> Result<(), String>) -> Result<(), ApiError> {
    rule(value).map_err(|problem| ApiError::bad_request(format!("{name}: {problem}")))
}

fn conflict(code: ErrorCode, message: String) -> ApiError {
    debug_assert_eq!(code.http_status(), 409, "{code} is not a conflict");
    ApiError::new(code, message)
}

/// A member's addresses as the contract sends them.
pub fn address_of(member: &MemberInfo) -> rest::LeaderInfo {
    rest::LeaderInfo {
        id: rest::NodeId(member.name.clone()),
        raft_addr: member.raft_addr.clone(),
        http_addr: member.http_addr.clone(),
        grpc_addr: member.grpc_addr.clone(),
    }
}

/// The cluster this node belongs to, and its own name.
pub fn cluster_id(server: &Server) -> rest::ClusterIdentity {
    rest::ClusterIdentity {
        cluster_id: server.cluster_id.to_string(),
        node_id: rest::NodeId(server.config.raft.node_id.clone()),
    }
}

/// Adds a node as a learner (`POST /cluster/join`, `Cluster.Join`).
///
/// Refused (409) when the name is another member's with other addresses (`member_exists`: a
/// join never re-addresses a member), when a fresh node names an existing voter (a voter that
/// lost its data must be removed first, or it could vote twice in a term), when another member
/// already has either address (`address_in_use`), or when the node belongs to another cluster
/// (`cluster_mismatch`: named in the request, or said by the node itself when asked). The same
/// request again is answered as the first (a joiner retries after a lost answer).
pub async fn join(
    server: &Server,
    via: Via,
    request: rest::JoinRequest,
) -> Result<Step<rest::JoinResult>, ApiError> {
    let rest::JoinRequest {
        node_id: name,
        raft_addr,
        http_addr,
        grpc_addr,
        cluster_id,
        fresh,
    } = request;
    check("node_id", &name, crate::config::check_node_id)?;
    check("raft_addr", &raft_addr, crate::config::check_address)?;
    // The contract's empty HTTP address is the seed's body, which names none: unknown here,
    // like a gRPC address an older joiner does not send.
    let http_addr = (!http_addr.is_empty()).then_some(http_addr);
    if let Some(http_addr) = &http_addr {
        check("http_addr", http_addr, crate::config::check_address)?;
    }
    if let Some(grpc_addr) = &grpc_addr {
        check("grpc_addr", grpc_addr, crate::config::check_address)?;
    }
    if let Some(claimed) = cluster_id {
        let claimed: raft::node::ClusterId = claimed
            .parse()
            .map_err(|_| ApiError::bad_request("cluster_id must be 16 hex digits"))?;
        if claimed != server.cluster_id {
            return Err(conflict(
                ErrorCode::ClusterMismatch,
                format!(
                    "{name} belongs to cluster {claimed}; this is cluster {}",
                    server.cluster_id
                ),
            ));
        }
    }
    if !await_leader(server).await? {
        return forward_to_leader(server, via).map(Step::Forward);
    }
    let id = node_id_for_name(&name);
    let members = server.members();
    let configuration = server.node.status().configuration;
    if let Some(existing) = members.get(&id) {
        if existing.name != name {
            return Err(conflict(
                ErrorCode::IdCollision,
                format!(
                    "node name {name} maps to the same id as {}; choose another name",
                    existing.name
                ),
            ));
        }
        let is_member = configuration.contains(id);
        // A gRPC address may be filled in (a member added by name before it ran, or recorded
        // by an older version), never changed.
        let other_grpc =
            grpc_addr.is_some() && existing.grpc_addr.is_some() && existing.grpc_addr != grpc_addr;
        // So may an HTTP address (a member added with the seed's body, which names none).
        let other_http = http_addr
            .as_ref()
            .is_some_and(|http| !existing.http_addr.is_empty() && &existing.http_addr != http);
        if is_member && (existing.raft_addr != raft_addr || other_http || other_grpc) {
            return Err(conflict(
                ErrorCode::MemberExists,
                format!(
                    "{name} is already a member at raft {} and http {}{}; a join does not change a member's addresses (remove it first to add it anew)",
                    existing.raft_addr,
                    existing.http_addr,
                    existing
                        .grpc_addr
                        .as_deref()
                        .map_or_else(String::new, |grpc| format!(" and grpc {grpc}")),
                ),
            ));
        }
        if fresh && configuration.is_voter(id) {
            return Err(conflict(
                ErrorCode::MemberExists,
                format!(
                    "{name} is already a voter; a voter whose data directory is empty lost its votes and log, so it must be removed first (kvcli cluster remove {name}) and then join again"
                ),
            ));
        }
    }
    if let Some(other) = members.values().find(|m| {
        m.id != id
            && configuration.contains(m.id)
            && (m.raft_addr == raft_addr
                || http_addr.as_ref() == Some(&m.http_addr)
                || (grpc_addr.is_some() && m.grpc_addr == grpc_addr))
    }) {
        return Err(conflict(
            ErrorCode::AddressInUse,
            format!(
                "member {} already uses raft {} / http {} / grpc {}",
                other.name,
                other.raft_addr,
                other.http_addr,
                other.grpc_addr.as_deref().unwrap_or("-")
            ),
        ));
    }
    if let (false, false, Some(http_addr)) = (fresh, configuration.contains(id), &http_addr) {
        let url = format!("{}://{http_addr}/cluster/id", crate::http::peer_scheme());
        if let Ok((status, answer)) = crate::http::get_json(&url, JOINER_PROBE_TIMEOUT).await
            && status.is_success()
            && let Some(theirs) = answer.get("cluster_id").and_then(serde_json::Value::as_str)
            && theirs != server.cluster_id.to_string()
        {
            return Err(conflict(
                ErrorCode::ClusterMismatch,
                format!(
                    "{name} at {http_addr} already belongs to cluster {theirs}; this is cluster {}. To move it here, stop it, move its data directory aside and start it with --join-addr",
                    server.cluster_id
                ),
            ));
        }
    }
    // A joiner that does not say its gRPC address (an older version) keeps the recorded one;
    // so does one that does not say its HTTP address (the seed's body).
    let grpc_addr = grpc_addr.or_else(|| members.get(&id).and_then(|m| m.grpc_addr.clone()));
    let http_addr = http_addr
        .or_else(|| members.get(&id).map(|m| m.http_addr.clone()))
        .unwrap_or_default();
    if http_addr.is_empty() {
        tracing::warn!(node = %name, "adding a member without an HTTP address (the seed's join body names only the Raft address): it is recorded when the node joins for itself or leads; until then no request is forwarded to it, and whether it belongs to another cluster could not be asked");
    }
    let member = MemberInfo {
        id,
        name: name.clone(),
        raft_addr,
        http_addr,
        grpc_addr,
    };
    within(server.add_learner(member)).await?;
    let configuration = server.node.status().configuration;
    let role = if configuration.is_voter(id) {
        "voter"
    } else {
        "learner"
    };
    // This leader is in the list even before its own address record is applied (a young
    // cluster), so the joiner knows its name and address from the start.
    let mut book = server.members();
    book.entry(server.id).or_insert_with(|| server.me());
    let members = book
        .values()
        .filter(|m| configuration.contains(m.id))
        .map(address_of)
        .collect();
    Ok(Step::Done(rest::JoinResult {
        id: rest::NodeId(name),
        role: role.to_string(),
        cluster_id: Some(server.cluster_id.to_string()),
        members,
    }))
}

/// The member a remove or a transfer names: the name checked like a configured one (400
/// `bad_request`), then looked up among the current members on the leader (404
/// `unknown_member`, naming it and the members, never a 503 a client would retry).
fn named_member(
    server: &Server,
    name: &str,
    configuration: &raft::core::Configuration,
) -> Result<raft::core::NodeId, ApiError> {
    let id = node_id_for_name(name);
    if !configuration.contains(id) {
        let members = server.members();
        let mut names: Vec<String> = configuration
            .members()
            .into_iter()
            .map(|m| {
                members
                    .get(&m)
                    .map_or_else(|| m.to_string(), |info| info.name.clone())
            })
            .collect();
        names.sort();
        return Err(ApiError::new(
            ErrorCode::UnknownMember,
            format!(
                "{name} is not a member of cluster {} (members: {})",
                server.cluster_id,
                names.join(", ")
            ),
        )
        .with("node_id", json!(name)));
    }
    Ok(id)
}

/// Removes a member: 404 `unknown_member` for a name that is not a member, 409
/// `invalid_membership_change` for a removal the configuration cannot take (the last voter).
pub async fn remove(
    server: &Server,
    via: Via,
    name: String,
) -> Result<Step<rest::RemoveResult>, ApiError> {
    check("node_id", &name, crate::config::check_node_id)?;
    if !await_leader(server).await? {
        return forward_to_leader(server, via).map(Step::Forward);
    }
    let id = named_member(server, &name, &server.node.status().configuration)?;
    within(
        server
            .node
            .change_membership(ConfChange::single(ConfChangeKind::RemoveNode, id)),
    )
    .await?;
    Ok(Step::Done(rest::RemoveResult {
        removed: rest::NodeId(name),
    }))
}

/// Moves leadership to a member, answering once it leads: 404 `unknown_member` for a name
/// that is not a member, 409 `invalid_transfer_target` for a learner.
pub async fn transfer(
    server: &Server,
    via: Via,
    name: String,
) -> Result<Step<rest::TransferResult>, ApiError> {
    check("node_id", &name, crate::config::check_node_id)?;
    if !await_leader(server).await? {
        return forward_to_leader(server, via).map(Step::Forward);
    }
    let status = server.node.status();
    let to = named_member(server, &name, &status.configuration)?;
    if status.leader == Some(to) {
        return Ok(Step::Done(rest::TransferResult {
            leader: rest::NodeId(name),
        }));
    }
    if !status.configuration.is_voter(to) {
        return Err(ApiError::new(
            ErrorCode::InvalidTransferTarget,
            format!("{name} is a learner; only a voter can lead (it is promoted once caught up)"),
        ));
    }
    within(server.node.transfer_leader(to)).await?;
    let mut status = server.node.watch_status();
    let waited = tokio::time::timeout(TRANSFER_WAIT_MAX, async {
        loop {
            if status.borrow_and_update().leader == Some(to) {
                return true;
            }
            if status.changed().await.is_err() {
                return false;
            }
        }
    })
    .await;
    match waited {
        Ok(true) => Ok(Step::Done(rest::TransferResult {
            leader: rest::NodeId(name),
        })),
        _ => Err(ApiError::new(
            ErrorCode::Timeout,
            format!(
                "{name} did not take over within {}s",
                TRANSFER_WAIT_MAX.as_secs()
            ),
        )),
    }
}

/// This node's snapshot (any node can take its own). When nothing was applied since the
/// latest snapshot, that snapshot already holds the whole applied state: the answer describes
/// it with `taken: false`, as a repeated request should be, not an error. 409
/// `nothing_to_snapshot` before anything is applied.
pub async fn snapshot(server: &Server) -> Result<rest::SnapshotInfo, ApiError> {
    let asked = tokio::time::timeout(REQUEST_TIMEOUT, server.node.snapshot_now())
        .await
        .map_err(|_| ApiError::timeout())?;
    let (meta, taken) = match asked {
        Ok(meta) => (meta, true),
        Err(NodeError::Rejected(raft::core::Error::SnapshotOutOfDate { .. })) => {
            (server.node.status().snapshot, false)
        }
        Err(e) => return Err(ApiError::from_node(e)),
    };
    let keys = server
        .machine
        .lock()
        .expect("the state machine lock is poisoned only if apply panicked")
        .kv
        .len();
    let dir = server.config.storage.data_dir.join(SNAPSHOTS_DIR);
    Ok(rest::SnapshotInfo::new(
        meta.index.0,
        meta.term.0,
        keys as u64,
        snapshot_file(&dir, meta.index.0, meta.term.0)
            .display()
            .to_string(),
        taken,
    ))
}

/// The file of the snapshot at `index`: the kept one at that index whatever the term in its
/// name (an older version wrote 0 there), or, when it cannot be found (pruned meanwhile), the
/// name it was saved under, which the answer still reports.
fn snapshot_file(dir: &std::path::Path, index: u64, term: u64) -> std::path::PathBuf {
    kv::SnapshotStore::file_at(dir, index)
        .ok()
        .flatten()
        .unwrap_or_else(|| dir.join(kv::SnapshotStore::file_name(index, term)))
}

/// What this node is and how far it has come: the answer of `GET /status` and
/// `Maintenance.Status`.
pub fn status(server: &Server) -> rest::NodeStatus {
    let status = server.node.status();
    let members = server.members();
    rest::NodeStatus {
        node_id: rest::NodeId(server.config.raft.node_id.clone()),
        cluster_id: server.cluster_id.to_string(),
        role: role_name(server, &status, server.id).to_string(),
        term: status.term.0,
        commit_index: status.commit.0,
        applied_index: status.applied.0,
        leader: status.leader.map(|id| {
            rest::NodeId(
                members
                    .get(&id)
                    .map_or_else(|| id.0.to_string(), |m| m.name.clone()),
            )
        }),
        snapshot_index: status.snapshot.index.0,
        db_size_bytes: server.quota.state().used_bytes,
    }
}
