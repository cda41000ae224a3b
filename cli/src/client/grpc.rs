//! The gRPC transport: one attempt of a [`Call`] on a `grpc://` endpoint, built from the call's
//! typed [`Op`] and answered in the REST form ([`Answer`]: status, headers, body), so that the
//! retry rules, the sessions and the answer parsing are the REST transport's, written once.
//!
//! A node's refusal carries a `google.rpc.ErrorInfo` whose reason is the REST code: it becomes
//! the REST status and error body. A status without it came from the gRPC machinery: a call
//! that could not connect was not sent (retried anywhere); any other may have reached the node
//! (retried only when the call is safe to replay).

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue};
use proto::pb::{
    self, cluster_client::ClusterClient, kv_client::KvClient, maintenance_client::MaintenanceClient,
};
use proto::rest::{self, Consistency, ErrorCode, Precondition, headers};
use tonic::transport::Channel;
use tonic::{Request, Status};
use tonic_types::StatusExt;

use std::time::Duration;

use super::call::{Answer, Call, Op};
use super::endpoint::Endpoint;
use super::retry::Attempt;
use crate::types::ListResult;

/// The default page of a listing without a limit: the server's (docs/api.md).
const LIST_LIMIT_DEFAULT: u64 = 100;

fn json(status: u16, body: &impl serde::Serialize) -> Answer {
    Answer {
        status,
        headers: HeaderMap::new(),
        body: Bytes::from(
            serde_json::to_vec(body).expect("invariant: the contract's bodies serialise to JSON"),
        ),
    }
}

fn consistency(c: Consistency) -> i32 {
    match c {
        Consistency::Linearizable => pb::Consistency::Linearizable as i32,
        Consistency::Stale => pb::Consistency::Stale as i32,
    }
}

fn session(call: &Call<'_>) -> Option<pb::Session> {
    call.session.map(|(client_id, sequence)| pb::Session {
        client_id,
        sequence,
    })
}

fn stale(s: Option<pb::Staleness>) -> Option<rest::StaleInfo> {
    s.map(|s| rest::StaleInfo {
        applied_index: s.applied_index,
        commit_index: s.commit_index,
    })
}

fn key_value(
    kv: pb::KeyValue,
    revision: u64,
    staleness: Option<rest::StaleInfo>,
) -> rest::KeyValue {
    rest::KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        revision,
        stale: staleness,
    }
}

fn given(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// The REST form of a node's refusal, or `None` for a status the node did not send.
fn refusal(status: &Status) -> Option<Answer> {
    let info = status.get_details_error_info()?;
    if info.domain != proto::metadata::ERROR_DOMAIN {
        return None;
    }
    let code = ErrorCode::from_token(&info.reason);
    let mut body = rest::ErrorBody {
        error: status.message().to_owned(),
        code: info.reason.clone(),
        extra: serde_json::Map::new(),
    };
    // The details carry the REST body's extra field as text: a number or an object reads
    // back as one, anything else as the string it is.
    for (field, text) in info.metadata {
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        body.extra.insert(field, value);
    }
    Some(json(code.map_or(500, ErrorCode::http_status), &body))
}

/// Whether a status the node did not send says the connection was never made.
fn never_connected(status: &Status) -> bool {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    status.code() == tonic::Code::Unavailable
        && [
            "tcp connect error",
            "error trying to connect",
            "Connection refused",
        ]
        .iter()
        .any(|sign| text.contains(sign))
}

/// One attempt of `call` on a gRPC endpoint (the caller bounds it in time).
pub(super) async fn attempt(
    endpoint: &Endpoint,
    call: &Call<'_>,
    connect_timeout: Duration,
) -> Attempt {
    let channel = match endpoint.channel(connect_timeout).await {
        Ok(channel) => channel,
        Err(reason) => return Attempt::NotSent(reason),
    };
    match send(channel, call).await {
        Ok(answer) => Attempt::Answer(answer),
        Err(status) => match refusal(&status) {
            Some(answer) => Attempt::Answer(answer),
            None if never_connected(&status) => Attempt::NotSent(status.message().to_owned()),
            None => Attempt::Lost(format!("{}: {}", status.code(), status.message())),
        },
    }
}

async fn send(channel: Channel, call: &Call<'_>) -> Result<Answer, Status> {
    let mut kv = KvClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
    Ok(match &call.op {
        Op::Get {
            key,
            consistency: c,
            json: as_json,
        } => {
            let got = kv
                .get(pb::GetRequest {
                    key: key.clone(),
                    consistency: consistency(*c),
                })
                .await?
                .into_inner();
            let staleness = stale(got.stale);
            let found = got
                .kv
                .ok_or_else(|| Status::internal("a Get answer without its key"))?;
            let answer = key_value(found, got.revision, staleness);
            if *as_json {
                json(200, &answer)
            } else {
                raw_value(answer)
            }
        }
        Op::List {
            prefix,
            after,
            limit,
        } => json(200, &list(&mut kv, prefix, after.as_ref(), *limit).await?),
        Op::Put {
            key,
            value,
            condition,
        } => {
            let put = kv
                .put(pb::PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                    condition: condition.as_ref().map(|c| match c {
                        Precondition::Version(v) => pb::put_request::Condition::PrevVersion(*v),
                        Precondition::Value(x) => pb::put_request::Condition::PrevValue(x.clone()),
                    }),
                    session: session(call),
                })
                .await?
                .into_inner();
            json(
                200,
                &rest::PutResult {
                    revision: put.revision,
                    version: put.version,
                },
            )
        }
        Op::Delete { key } => {
            let deleted = kv
                .delete(pb::DeleteRequest {
                    key: key.clone(),
                    session: session(call),
                })
                .await?
                .into_inner();
            json(
                200,
                &rest::DeleteResult {
                    revision: deleted.revision,
                    deleted: deleted.deleted,
                },
            )
        }
        Op::DeletePrefix { prefix } => {
            let deleted = kv
                .delete_prefix(pb::DeletePrefixRequest {
                    prefix: prefix.clone().unwrap_or_default(),
                    all: prefix.is_none(),
                    session: session(call),
                })
                .await?
                .into_inner();
            json(
                200,
                &rest::DeleteResult {
                    revision: deleted.revision,
                    deleted: deleted.deleted,
                },
            )
        }
        Op::RegisterSession => {
            let registered = kv
                .register_session(pb::RegisterSessionRequest {})
                .await?
                .into_inner();
            json(
                200,
                &rest::SessionRegistered {
                    client_id: registered.client_id,
                },
            )
        }
        Op::Nodes => {
            let nodes = ClusterClient::new(channel)
                .nodes(pb::NodesRequest {})
                .await?
                .into_inner()
                .nodes
                .into_iter()
                .map(|m| rest::NodeInfo {
                    id: rest::NodeId(m.id),
                    raft_addr: given(m.raft_addr),
                    http_addr: given(m.http_addr),
                    grpc_addr: given(m.grpc_addr),
                    role: m.role,
                    match_index: m.match_index,
                })
                .collect();
            json(200, &rest::Nodes { nodes })
        }
        Op::Leader => {
            let leader = ClusterClient::new(channel)
                .leader(pb::LeaderRequest {})
                .await?
                .into_inner();
            json(
                200,
                &rest::LeaderInfo {
                    id: rest::NodeId(leader.id),
                    raft_addr: leader.raft_addr,
                    http_addr: leader.http_addr,
                    grpc_addr: given(leader.grpc_addr),
                },
            )
        }
        Op::Join(request) => {
            let joined = ClusterClient::new(channel)
                .join(pb::JoinRequest {
                    node_id: request.node_id.clone(),
                    raft_addr: request.raft_addr.clone(),
                    http_addr: request.http_addr.clone(),
                    cluster_id: request.cluster_id.clone().unwrap_or_default(),
                    fresh: request.fresh,
                    grpc_addr: request.grpc_addr.clone().unwrap_or_default(),
                })
                .await?
                .into_inner();
            json(
                200,
                &rest::JoinResult {
                    id: rest::NodeId(joined.id),
                    role: joined.role,
                    cluster_id: given(joined.cluster_id),
                    members: joined
                        .members
                        .into_iter()
                        .map(|m| rest::LeaderInfo {
                            id: rest::NodeId(m.id),
                            raft_addr: m.raft_addr,
                            http_addr: m.http_addr,
                            grpc_addr: given(m.grpc_addr),
                        })
                        .collect(),
                },
            )
        }
        Op::Remove(node_id) => {
            let removed = ClusterClient::new(channel)
                .remove(pb::RemoveRequest {
                    node_id: node_id.clone(),
                })
                .await?
                .into_inner();
            json(
                200,
                &rest::RemoveResult {
                    removed: rest::NodeId(removed.removed),
                },
            )
        }
        Op::Transfer(node_id) => {
            let moved = ClusterClient::new(channel)
                .transfer_leader(pb::TransferLeaderRequest {
                    node_id: node_id.clone(),
                })
                .await?
                .into_inner();
            json(
                200,
                &rest::TransferResult {
                    leader: rest::NodeId(moved.leader),
                },
            )
        }
        Op::Snapshot => {
            let taken = MaintenanceClient::new(channel)
                .snapshot(pb::SnapshotRequest {})
                .await?
                .into_inner();
            json(
                200,
                &rest::SnapshotInfo {
                    index: taken.index,
                    term: taken.term,
                    keys: taken.keys,
                    file: taken.file,
                    taken: taken.taken,
                },
            )
        }
        // Over gRPC a node that answers its status is up; readiness is the health service's.
        Op::Health => {
            MaintenanceClient::new(channel)
                .status(pb::StatusRequest {})
                .await?;
            json(
                200,
                &rest::Health {
                    status: "ok".to_owned(),
                },
            )
        }
        Op::Ready => ready(channel).await?,
    })
}

/// A key read as the REST raw answer: the value as the body, the revisions as headers.
fn raw_value(kv: rest::KeyValue) -> Answer {
    let mut map = HeaderMap::new();
    map.insert(
        headers::CREATE_REVISION,
        HeaderValue::from(kv.create_revision),
    );
    map.insert(headers::MOD_REVISION, HeaderValue::from(kv.mod_revision));
    map.insert(headers::VERSION, HeaderValue::from(kv.version));
    map.insert(headers::REVISION, HeaderValue::from(kv.revision));
    if let Some(stale) = kv.stale {
        map.insert(
            headers::APPLIED_INDEX,
            HeaderValue::from(stale.applied_index),
        );
        map.insert(headers::COMMIT_INDEX, HeaderValue::from(stale.commit_index));
    }
    Answer {
        status: 200,
        headers: map,
        body: kv.value,
    }
}

/// One page of a listing: the stream of `List` up to `limit` keys (the server's default page
/// without one), gathered into the REST page.
async fn list(
    kv: &mut KvClient<Channel>,
    prefix: &Bytes,
    after: Option<&Bytes>,
    limit: Option<u32>,
) -> Result<ListResult, Status> {
    let mut stream = kv
        .list(pb::ListRequest {
            prefix: prefix.clone(),
            after: after.cloned().unwrap_or_default(),
            limit: limit.map_or(LIST_LIMIT_DEFAULT, u64::from),
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await?
        .into_inner();
    let mut page = ListResult {
        kvs: Vec::new(),
        more: false,
        revision: 0,
        next: None,
        stale: None,
    };
    while let Some(part) = stream.message().await? {
        let staleness = stale(part.stale);
        page.more = part.more;
        page.revision = part.revision;
        page.stale = staleness;
        page.kvs.extend(
            part.kvs
                .into_iter()
                .map(|kv| key_value(kv, part.revision, None)),
        );
    }
    if page.more {
        page.next = page.kvs.last().map(|kv| kv.key.clone());
    }
    Ok(page)
}

/// Readiness over gRPC: the health service's answer for the whole server, with the node's
/// status as the detail when it serves; `NOT_SERVING` is the REST `503 not_ready`.
async fn ready(channel: Channel) -> Result<Answer, Status> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(Request::new(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        }))
        .await?
        .into_inner();
    if health.status != ServingStatus::Serving as i32 {
        return Ok(json(
            503,
            &rest::ErrorBody {
                error: "the node's gRPC health service says NOT_SERVING".to_owned(),
                code: ErrorCode::NotReady.as_str().to_owned(),
                extra: serde_json::Map::new(),
            },
        ));
    }
    let status = MaintenanceClient::new(channel)
        .status(pb::StatusRequest {})
        .await?
        .into_inner();
    Ok(json(
        200,
        &rest::NodeStatus {
            node_id: rest::NodeId(status.node_id),
            cluster_id: status.cluster_id,
            role: status.role,
            term: status.term,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            leader: given(status.leader).map(rest::NodeId),
            snapshot_index: status.snapshot_index,
            db_size_bytes: status.db_size_bytes,
        },
    ))
}
