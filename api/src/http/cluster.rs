//! The cluster and admin routes: readiness, members, the leader, join, remove, leadership
//! transfer, and on-demand snapshots.
//!
//! Membership changes run on the leader (a follower forwards them) and answer once the change
//! is applied on the leader; a join adds a learner, which the leader promotes to voter by
//! itself once its log has caught up (see `server::leader_duties`).

use std::time::Duration;

use hyper::StatusCode;
use raft::core::{ConfChange, ConfChangeKind, Role};
use raft::node::Status;
use raft::node::driver::node_id_for_name;
use serde_json::{Value, json};

use super::{ApiError, Handled, Req, await_leader, forward, json_str, ok, read_json, within};
use crate::server::Server;
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

/// `GET /ready`.
pub fn ready(server: &Server) -> Handled {
    let status = server.node.status();
    let config = &status.configuration;
    let member = config.voters.contains(&server.id) || config.learners.contains(&server.id);
    let caught_up = status.applied.0 + READY_LAG_ENTRIES_MAX >= status.commit.0;
    if member && status.leader.is_some() && caught_up && status.failed.is_none() {
        ok(
            json!({"status": "ready", "applied_index": status.applied.0, "commit_index": status.commit.0}),
        )
    } else {
        let why = if status.failed.is_some() {
            "the node stopped after a storage failure"
        } else if !member {
            "not a member of the cluster (yet)"
        } else if status.leader.is_none() {
            "no known leader"
        } else {
            "still applying the log"
        };
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            why,
        ))
    }
}

/// `GET /cluster/nodes`.
pub fn nodes(server: &Server) -> Handled {
    let status = server.node.status();
    let config = &status.configuration;
    let members = server.members();
    let ids: std::collections::BTreeSet<_> = config
        .voters
        .iter()
        .chain(&config.voters_outgoing)
        .chain(&config.learners)
        .chain(&config.learners_next)
        .copied()
        .collect();
    let nodes: Vec<Value> = ids
        .into_iter()
        .map(|id| {
            let member = members.get(&id);
            let match_index = status
                .match_index
                .iter()
                .find(|(m, _)| *m == id)
                .map(|(_, i)| i.0);
            json!({
                "id": member.map_or_else(|| id.0.to_string(), |m| m.name.clone()),
                "raft_addr": member.map(|m| m.raft_addr.clone()),
                "http_addr": member.map(|m| m.http_addr.clone()),
                "role": role_name(server, &status, id),
                "match_index": match_index,
            })
        })
        .collect();
    ok(json!({"nodes": nodes}))
}

/// `GET /cluster/leader`.
pub fn leader(server: &Server) -> Handled {
    let status = server.node.status();
    let leader = status
        .leader
        .and_then(|id| server.members().get(&id).cloned());
    match leader {
        Some(m) => ok(json!({"id": m.name, "raft_addr": m.raft_addr, "http_addr": m.http_addr})),
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            "no leader is known (or its address is not recorded yet)",
        )),
    }
}

fn check_addr(field: &str, value: &str) -> Result<(), ApiError> {
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(ApiError::bad_request(format!(
            "{field} must be host:port, not `{value}`"
        ))),
    }
}

/// `POST /cluster/join` `{"node_id", "raft_addr", "http_addr"}`.
pub async fn join(server: &Server, req: Req) -> Handled {
    let body = read_json(&req.body)?;
    let name = json_str(&body, "node_id")?.to_string();
    let raft_addr = json_str(&body, "raft_addr")?.to_string();
    let http_addr = json_str(&body, "http_addr")?.to_string();
    check_addr("raft_addr", &raft_addr)?;
    check_addr("http_addr", &http_addr)?;
    if !await_leader(server).await? {
        return forward(server, req).await;
    }
    let id = node_id_for_name(&name);
    if let Some(existing) = server.members().get(&id)
        && existing.name != name
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "id_collision",
            format!(
                "node name {name} maps to the same id as {}; choose another name",
                existing.name
            ),
        ));
    }
    let member = MemberInfo {
        id,
        name: name.clone(),
        raft_addr,
        http_addr,
    };
    within(server.add_learner(member)).await?;
    let role = if server.node.status().configuration.voters.contains(&id) {
        "voter"
    } else {
        "learner"
    };
    ok(json!({"id": name, "role": role}))
}

/// `POST /cluster/remove` `{"node_id"}`.
pub async fn remove(server: &Server, req: Req) -> Handled {
    let body = read_json(&req.body)?;
    let name = json_str(&body, "node_id")?.to_string();
    if !await_leader(server).await? {
        return forward(server, req).await;
    }
    let id = node_id_for_name(&name);
    let config = server.node.status().configuration;
    let is_member = config.voters.contains(&id) || config.learners.contains(&id);
    if !is_member {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{name} is not a member"),
        ));
    }
    within(
        server
            .node
            .change_membership(ConfChange::single(ConfChangeKind::RemoveNode, id)),
    )
    .await?;
    ok(json!({"removed": name}))
}

/// `POST /cluster/transfer-leader` `{"node_id"}`.
pub async fn transfer(server: &Server, req: Req) -> Handled {
    let body = read_json(&req.body)?;
    let name = json_str(&body, "node_id")?.to_string();
    if !await_leader(server).await? {
        return forward(server, req).await;
    }
    let to = node_id_for_name(&name);
    if server.node.status().leader == Some(to) {
        return ok(json!({"leader": name}));
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
        Ok(true) => ok(json!({"leader": name})),
        _ => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "{name} did not take over within {}s",
                TRANSFER_WAIT_MAX.as_secs()
            ),
        )),
    }
}

/// `POST /admin/snapshot`: this node's snapshot (any node can take its own).
pub async fn snapshot(server: &Server) -> Handled {
    let meta = within(server.node.snapshot_now()).await?;
    let keys = server
        .machine
        .lock()
        .expect("the state machine lock is poisoned only if apply panicked")
        .kv
        .len();
    let file = server
        .config
        .storage
        .data_dir
        .join("snapshots")
        .join(kv::SnapshotStore::file_name(meta.index.0, 0));
    ok(json!({
        "index": meta.index.0,
        "term": meta.term.0,
        "keys": keys,
        "file": file.display().to_string(),
    }))
}
