//! The joining side of membership: a node with a blank data directory asks a member of an
//! existing cluster to add it, and learns the cluster's identity and address book from the
//! answer *before* it writes anything or accepts a peer; a node with data that was also given
//! `join_addr` checks that the address belongs to its own cluster.
//!
//! Learning the identity from the answer to its own request is what keeps a joiner from being
//! captured: it accepts peers of exactly the cluster it asked, never of whichever cluster
//! happens to reach it first.

use std::time::Duration;

use proto::rest::{self, ErrorCode};
use raft::node::ClusterId;
use serde_json::Value;
use tracing::{info, warn};

use super::machine::MemberInfo;

/// The first delay between join attempts; it doubles up to [`JOIN_RETRY_MAX`].
pub const JOIN_RETRY_MIN: Duration = Duration::from_millis(200);
/// The longest delay between join attempts.
pub const JOIN_RETRY_MAX: Duration = Duration::from_secs(5);
/// How long a restarting node waits for `join_addr` to say which cluster it serves. A restart
/// must come back even when that node is down, so an unanswered check only warns.
pub const CLUSTER_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What a cluster said when it added this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// The cluster this node now belongs to.
    pub cluster_id: ClusterId,
    /// Its members' addresses, so the new node can answer any of them at once.
    pub members: Vec<MemberInfo>,
}

/// Why a join will never succeed as asked (retrying cannot help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cluster at {url} refused to add this node ({status} {code}): {message}")]
pub struct JoinRefused {
    /// The join URL.
    pub url: String,
    /// The HTTP status.
    pub status: u16,
    /// The error code of the answer.
    pub code: String,
    /// The cluster's explanation.
    pub message: String,
}

fn base(join_addr: &str) -> &str {
    crate::config::join_base(join_addr)
}

/// Whether an answer is worth another attempt: the cluster is busy, has no leader yet, or is
/// in the middle of another membership change.
fn transient(status: u16, code: &str) -> bool {
    matches!(status, 0 | 429 | 500..=599) || code == ErrorCode::ConfChangeInProgress.as_str()
}

/// The admission in a `200` answer to a join (the contract's [`rest::JoinResult`]); `None`
/// when the answer is not one, or names no cluster.
fn parse_admission(answer: &Value) -> Option<Admission> {
    let joined: rest::JoinResult = serde_json::from_value(answer.clone()).ok()?;
    let cluster_id = joined.cluster_id?.parse().ok()?;
    let members = joined
        .members
        .into_iter()
        .map(|m| MemberInfo {
            id: raft::node::driver::node_id_for_name(&m.id.0),
            name: m.id.0,
            raft_addr: m.raft_addr,
            http_addr: m.http_addr,
            grpc_addr: m.grpc_addr,
        })
        .collect();
    Some(Admission {
        cluster_id,
        members,
    })
}

/// Asks the cluster at `join_addr` to add `me` (as a learner; the leader promotes it once it
/// has caught up), until it says yes or refuses for good. Network errors and busy answers are
/// retried with a growing delay.
///
/// With `login` (`auth.admin_user` and its password, when `auth.enabled`), a cluster whose
/// authentication is on and answers `401` is logged in to, and the join sent again with the
/// token.
pub async fn ask_to_join(
    join_addr: &str,
    me: &MemberInfo,
    login: Option<&rest::auth::LoginRequest>,
) -> Result<Admission, JoinRefused> {
    let url = format!("{}{}", base(join_addr), crate::config::JOIN_PATH);
    let mut token: Option<String> = None;
    // `fresh`: the node asks for itself and has a blank data directory, so the cluster need
    // not ask it which cluster it belongs to (it belongs to none yet).
    let body = rest::JoinRequest {
        node_id: me.name.clone(),
        raft_addr: me.raft_addr.clone(),
        http_addr: me.http_addr.clone(),
        grpc_addr: me.grpc_addr.clone(),
        cluster_id: None,
        fresh: true,
    };
    let mut delay = JOIN_RETRY_MIN;
    loop {
        let (status, answer) = match crate::http::post_json(&url, &body, token.as_deref()).await {
            Ok((status, answer)) => (status.as_u16(), answer),
            Err(e) => {
                warn!(%url, error = %e, "cannot reach the cluster to join; retrying");
                (0, Value::Null)
            }
        };
        let refusal = serde_json::from_value::<rest::ErrorBody>(answer.clone()).ok();
        let code = refusal
            .as_ref()
            .map_or_else(String::new, |r| r.code.clone());
        if status == 200 {
            match parse_admission(&answer) {
                Some(admission) => {
                    info!(%url, cluster = %admission.cluster_id, "the cluster added this node");
                    return Ok(admission);
                }
                None => {
                    return Err(JoinRefused {
                        url,
                        status,
                        code: "bad_answer".into(),
                        message: format!("the answer names no cluster id: {answer}"),
                    });
                }
            }
        }
        if status == 401
            && token.is_none()
            && let Some(login) = login
        {
            match log_in(join_addr, login).await {
                Ok(t) => {
                    token = Some(t);
                    continue;
                }
                Err(refused) => return Err(refused),
            }
        }
        if !transient(status, &code) {
            let message = refusal.map_or_else(|| "no explanation".to_string(), |r| r.error);
            return Err(JoinRefused {
                url,
                status,
                code,
                message,
            });
        }
        if status != 0 {
            warn!(%url, status, code = %code, "the cluster cannot add this node yet; retrying");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(JOIN_RETRY_MAX);
    }
}

/// A token from the cluster at `join_addr` for `login`.
async fn log_in(join_addr: &str, login: &rest::auth::LoginRequest) -> Result<String, JoinRefused> {
    let url = format!("{}/auth/login", base(join_addr));
    let refused = |status: u16, code: &str, message: String| JoinRefused {
        url: url.clone(),
        status,
        code: code.into(),
        message,
    };
    let (status, answer) = crate::http::post_json(&url, login, None)
        .await
        .map_err(|e| refused(0, "unreachable", e))?;
    if status.is_success()
        && let Ok(answer) = serde_json::from_value::<rest::auth::LoginAnswer>(answer.clone())
    {
        info!(%url, user = %login.username, "logged in to join the cluster");
        return Ok(answer.token);
    }
    let body = serde_json::from_value::<rest::ErrorBody>(answer).ok();
    let code = body
        .as_ref()
        .map_or_else(|| "bad_answer".to_string(), |b| b.code.clone());
    Err(refused(
        status.as_u16(),
        &code,
        format!(
            "the cluster's authentication is on and logging in as {} failed: {}",
            login.username,
            body.map_or_else(|| "no explanation".into(), |b| b.error)
        ),
    ))
}

/// The cluster the node at `join_addr` serves, if it answers within
/// [`CLUSTER_CHECK_TIMEOUT`]; `None` when it cannot be asked.
pub async fn cluster_of(join_addr: &str) -> Option<ClusterId> {
    let url = format!("{}/cluster/id", base(join_addr));
    match crate::http::get_json(&url, CLUSTER_CHECK_TIMEOUT).await {
        Ok((status, answer)) if status.is_success() => {
            serde_json::from_value::<rest::ClusterIdentity>(answer)
                .ok()
                .and_then(|identity| identity.cluster_id.parse().ok())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn busy_answers_are_retried_and_refusals_are_final() {
        for (status, code) in [
            (0, ""),
            (503, "no_leader"),
            (409, "conf_change_in_progress"),
        ] {
            assert!(transient(status, code), "{status} {code}");
        }
        for (status, code) in [
            (409, "member_exists"),
            (400, "bad_request"),
            (409, "cluster_mismatch"),
        ] {
            assert!(!transient(status, code), "{status} {code}");
        }
    }

    #[test]
    fn an_admission_carries_the_cluster_id_and_the_members() {
        let answer = json!({
            "id": "n4", "role": "learner", "cluster_id": "00000000000000ab",
            "members": [{"id": "n1", "raft_addr": "h:1", "http_addr": "h:2"}],
        });
        let admission = parse_admission(&answer).expect("a valid answer");
        assert_eq!(admission.cluster_id, ClusterId(0xab));
        assert_eq!(admission.members[0].name, "n1");
        assert!(parse_admission(&json!({"id": "n4"})).is_none());
    }
}
