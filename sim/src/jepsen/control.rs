//! Cluster control over the HTTP API: readiness, the leader, the members, removing a node,
//! moving leadership, and waiting for a cluster to be whole.
//!
//! These calls take plain addresses, not the [`Cluster`](super::cluster::Cluster), so that no
//! lock is held while a request waits. Every call is one bounded request; the waiting helpers
//! poll until a named deadline and say what they were waiting for when it passes.

use std::time::{Duration, Instant};

use serde_json::json;

use super::http;

/// Bound on one control request. The server itself gives up on a membership change or a
/// transfer after 5 s (`api::http::REQUEST_TIMEOUT`, `TRANSFER_WAIT_MAX`), so a little more.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(6);
/// Bound on the quick status requests (`/ready`, `/cluster/leader`, `/cluster/nodes`).
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(1500);
/// Pause between two polls while waiting for a state.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A member as `/cluster/nodes` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Node name.
    pub name: String,
    /// `leader`, `follower`, `candidate`, `learner` or `unknown`.
    pub role: String,
}

impl Member {
    /// True for a voting member.
    pub fn is_voter(&self) -> bool {
        matches!(self.role.as_str(), "leader" | "follower" | "candidate")
    }
}

/// `GET /ready` on one node: its applied index when it is ready.
pub async fn ready(addr: &str) -> Option<u64> {
    let answer = http::request(addr, "GET", "/ready", b"", STATUS_TIMEOUT)
        .await
        .ok()?;
    (answer.status == 200)
        .then(|| answer.json()["applied_index"].as_u64())
        .flatten()
}

/// The HTTP address of the leader, as the first of `addrs` that knows one says.
pub async fn leader(addrs: &[String]) -> Option<String> {
    for addr in addrs {
        let Ok(answer) = http::request(addr, "GET", "/cluster/leader", b"", STATUS_TIMEOUT).await
        else {
            continue;
        };
        if answer.status == 200
            && let Some(http_addr) = answer.json()["http_addr"].as_str()
        {
            return Some(http_addr.to_string());
        }
    }
    None
}

/// The members as the leader lists them (asked through the first of `addrs` that answers with
/// a leader known; a follower's view of the membership may lag).
pub async fn members(addrs: &[String]) -> Option<Vec<Member>> {
    let leader = leader(addrs).await?;
    let answer = http::request(&leader, "GET", "/cluster/nodes", b"", STATUS_TIMEOUT)
        .await
        .ok()?;
    if answer.status != 200 {
        return None;
    }
    let nodes = answer.json()["nodes"].as_array()?.clone();
    Some(
        nodes
            .iter()
            .filter_map(|n| {
                Some(Member {
                    name: n["id"].as_str()?.to_string(),
                    role: n["role"].as_str()?.to_string(),
                })
            })
            .collect(),
    )
}

/// `POST` a JSON body to the first of `addrs` that gives a final answer; returns the status and
/// the answer's text, or why none came.
async fn post_anywhere(addrs: &[String], path: &str, body: &serde_json::Value) -> (u16, String) {
    let body = body.to_string();
    let mut last = "no node to ask".to_string();
    for addr in addrs {
        match http::request(addr, "POST", path, body.as_bytes(), CONTROL_TIMEOUT).await {
            Ok(answer) if answer.status != 503 => {
                return (
                    answer.status,
                    String::from_utf8_lossy(&answer.body).into_owned(),
                );
            }
            Ok(answer) => last = String::from_utf8_lossy(&answer.body).into_owned(),
            Err(e) => last = e.to_string(),
        }
    }
    (0, last)
}

/// `POST /cluster/remove` through any of `addrs`.
pub async fn remove(addrs: &[String], name: &str) -> (u16, String) {
    post_anywhere(addrs, "/cluster/remove", &json!({ "node_id": name })).await
}

/// `POST /cluster/transfer-leader` through any of `addrs`.
pub async fn transfer_leader(addrs: &[String], name: &str) -> (u16, String) {
    post_anywhere(
        addrs,
        "/cluster/transfer-leader",
        &json!({ "node_id": name }),
    )
    .await
}

/// Polls `check` until it is true or `limit` passes; `Err` names what was awaited.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(format!("{what}: not reached within {limit:?}"));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// True when every name in `names` is a voter and nothing else is a member, and every node in
/// `addrs` is ready.
pub async fn whole(addrs: &[String], names: &[String]) -> bool {
    let Some(members) = members(addrs).await else {
        return false;
    };
    let all_voters = names
        .iter()
        .all(|n| members.iter().any(|m| &m.name == n && m.is_voter()));
    if !all_voters || members.len() != names.len() {
        return false;
    }
    for addr in addrs {
        if ready(addr).await.is_none() {
            return false;
        }
    }
    true
}
