//! The gRPC transport: one attempt of a [`Call`] on a `grpc://` endpoint, built from the call's
//! typed [`Op`] and answered in the REST form ([`Answer`]: status, headers, body), so that the
//! retry rules, the sessions and the answer parsing are the REST transport's, written once.
//! The exception is the content of a successful get, put or delete ([`Typed`]): it is handed
//! over as the SDK's type, which the REST form would only be parsed back into.
//!
//! A node's refusal carries a `google.rpc.ErrorInfo` whose reason is the REST code: it becomes
//! the REST status and error body. A status without it came from the gRPC machinery: a call
//! that could not connect was not sent (retried anywhere); any other may have reached the node
//! (retried only when the call is safe to replay).

use bytes::Bytes;
use hyper::header::HeaderMap;
use proto::pb::{
    self, auth_client::AuthClient, call, call_answer, cluster_client::ClusterClient,
    kv_client::KvClient, maintenance_client::MaintenanceClient,
};
use proto::rest::auth as rest_auth;
use proto::rest::{self, Consistency, ErrorCode, Precondition};
use tonic::Status;
use tonic_types::StatusExt;

use hyper::Uri;

use super::RESPONSE_BYTES_MAX;
use super::auth::AuthOp;
use super::call::{Answer, Call, Op, Typed};
use super::channel::{Channel, NotSent};
use super::endpoint::Endpoint;
use super::retry::Attempt;
use crate::types::{Credential, ListResult};

fn json(status: u16, body: &impl serde::Serialize) -> Answer {
    Answer {
        status,
        headers: HeaderMap::new(),
        body: Bytes::from(
            serde_json::to_vec(body).expect("invariant: the contract's bodies serialise to JSON"),
        ),
        typed: None,
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
    // The details carry the REST body's extra field as text: JSON for the fields that are
    // numbers or objects in the REST body, the string itself for the others.
    for (field, text) in info.metadata {
        let value = if proto::metadata::JSON_FIELDS.contains(&field.as_str()) {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        } else {
            serde_json::Value::String(text)
        };
        body.extra.insert(field, value);
    }
    Some(json(code.map_or(500, ErrorCode::http_status), &body))
}

/// Whether a status the node did not send says the call never left ([`NotSent`]: the
/// connection could not be made, or the node refused the stream unread).
fn never_connected(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        if cause.downcast_ref::<NotSent>().is_some() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// One attempt of `call` on a gRPC endpoint (the caller bounds it in time).
pub(super) async fn attempt(
    endpoint: &Endpoint,
    call: &Call<'_>,
    credential: &Credential,
) -> Attempt {
    match send(endpoint.grpc(), call, credential).await {
        Ok(answer) => Attempt::Answer(answer),
        Err(status) => match refusal(&status) {
            Some(answer) => Attempt::Answer(answer),
            None if never_connected(&status) => Attempt::NotSent(status.message().to_owned()),
            None => Attempt::Lost(format!("{}: {}", status.code(), status.message())),
        },
    }
}

/// A hot call's answer of the kind `$kind`, or an internal error for any other kind.
macro_rules! answer_of {
    ($answer:expr, $kind:ident) => {
        match $answer {
            call_answer::Answer::$kind(answer) => answer,
            _ => {
                return Err(Status::internal(
                    "a call answered with another kind of answer",
                ))
            }
        }
    };
}

async fn send(
    channel: &Channel,
    call: &Call<'_>,
    credential: &Credential,
) -> Result<Answer, Status> {
    Ok(match &call.op {
        Op::Get {
            key,
            consistency: c,
            json: as_json,
        } => {
            let request = pb::GetRequest {
                key: key.clone(),
                consistency: consistency(*c),
            };
            let got = answer_of!(
                channel
                    .call(credential, call::Request::Get(request), RESPONSE_BYTES_MAX)
                    .await?,
                Get
            );
            let staleness = stale(got.stale);
            let found = got
                .kv
                .ok_or_else(|| Status::internal("a Get answer without its key"))?;
            let answer = key_value(found, got.revision, staleness);
            if *as_json {
                json(200, &answer)
            } else {
                Answer::typed(Typed::Read(Box::new(answer)))
            }
        }
        Op::Put {
            key,
            value,
            condition,
        } => {
            let request = pb::PutRequest {
                key: key.clone(),
                value: value.clone(),
                condition: condition.as_ref().map(|c| match c {
                    Precondition::Version(v) => pb::put_request::Condition::PrevVersion(*v),
                    Precondition::Value(x) => pb::put_request::Condition::PrevValue(x.clone()),
                }),
                session: session(call),
            };
            let put = answer_of!(
                channel
                    .call(credential, call::Request::Put(request), RESPONSE_BYTES_MAX)
                    .await?,
                Put
            );
            Answer::typed(Typed::Put(rest::PutResult {
                revision: put.revision,
                version: put.version,
            }))
        }
        Op::Delete { key } => {
            let request = pb::DeleteRequest {
                key: key.clone(),
                session: session(call),
            };
            let answer = answer_of!(
                channel
                    .call(
                        credential,
                        call::Request::Delete(request),
                        RESPONSE_BYTES_MAX
                    )
                    .await?,
                Delete
            );
            Answer::typed(Typed::Delete(deleted(answer)))
        }
        // Boxed, with the tonic clients they use: held inline, these rarer calls' futures
        // made every get's and put's future 1.7 KB larger, and each call moves its future.
        _ => return Box::pin(send_other(channel, call, credential)).await,
    })
}

/// Every call but those [`Channel::call`] makes itself, through tonic's clients.
async fn send_other(
    channel: &Channel,
    call: &Call<'_>,
    credential: &Credential,
) -> Result<Answer, Status> {
    let origin = channel.origin();
    let channel = channel.clone();
    let mut kv = KvClient::with_origin(channel.clone(), origin.clone())
        .max_decoding_message_size(RESPONSE_BYTES_MAX);
    Ok(match &call.op {
        Op::Get { .. } | Op::Put { .. } | Op::Delete { .. } => {
            unreachable!("invariant: `send` makes the get, put and delete calls itself")
        }
        Op::List {
            prefix,
            after,
            limit,
        } => json(
            200,
            &list(&mut kv, prefix, after.as_ref(), *limit, credential).await?,
        ),
        Op::DeletePrefix { prefix } => Answer::typed(Typed::Delete(deleted(
            kv.delete_prefix(credential.request(pb::DeletePrefixRequest {
                prefix: prefix.clone().unwrap_or_default(),
                all: prefix.is_none(),
                session: session(call),
            }))
            .await?
            .into_inner(),
        ))),
        Op::RegisterSession => {
            let registered = kv
                .register_session(credential.request(pb::RegisterSessionRequest {}))
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
            let nodes = ClusterClient::with_origin(channel, origin)
                .nodes(credential.request(pb::NodesRequest {}))
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
            let leader = ClusterClient::with_origin(channel, origin)
                .leader(credential.request(pb::LeaderRequest {}))
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
            let joined = ClusterClient::with_origin(channel, origin)
                .join(credential.request(pb::JoinRequest {
                    node_id: request.node_id.clone(),
                    raft_addr: request.raft_addr.clone(),
                    http_addr: request.http_addr.clone(),
                    cluster_id: request.cluster_id.clone().unwrap_or_default(),
                    fresh: request.fresh,
                    grpc_addr: request.grpc_addr.clone().unwrap_or_default(),
                }))
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
            let removed = ClusterClient::with_origin(channel, origin)
                .remove(credential.request(pb::RemoveRequest {
                    node_id: node_id.clone(),
                }))
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
            let moved = ClusterClient::with_origin(channel, origin)
                .transfer_leader(credential.request(pb::TransferLeaderRequest {
                    node_id: node_id.clone(),
                }))
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
            let taken = MaintenanceClient::with_origin(channel, origin)
                .snapshot(credential.request(pb::SnapshotRequest {}))
                .await?
                .into_inner();
            json(
                200,
                &rest::SnapshotInfo::new(
                    taken.index,
                    taken.term,
                    taken.keys,
                    taken.file,
                    taken.taken,
                ),
            )
        }
        Op::Health => {
            let health = MaintenanceClient::with_origin(channel, origin)
                .health(credential.request(pb::HealthRequest {}))
                .await?
                .into_inner();
            json(
                200,
                &rest::Health {
                    status: health.status,
                },
            )
        }
        Op::Ready => ready(channel, origin, credential).await?,
        Op::Auth(op) => auth(AuthClient::with_origin(channel, origin), op, credential).await?,
    })
}

/// A delete's answer in the SDK's type.
fn deleted(answer: pb::DeleteResponse) -> rest::DeleteResult {
    rest::DeleteResult {
        revision: answer.revision,
        deleted: answer.deleted,
    }
}

/// One page of a listing: the first page of `List`'s stream (at most the limit, which the
/// server reads as one page when it is at most a page's size, else its first page of
/// `api::grpc::kv::LIST_PAGE_KEYS`), so that, as over REST, a page is one consistent read at
/// its revision; `more` and `next` lead on from it. The rest of the stream is dropped, which
/// cancels it on the node.
async fn list(
    kv: &mut KvClient<Channel>,
    prefix: &Bytes,
    after: Option<&Bytes>,
    limit: Option<u32>,
    credential: &Credential,
) -> Result<ListResult, Status> {
    let limit = limit.map_or(rest::LIST_LIMIT_DEFAULT as u64, u64::from);
    let mut stream = kv
        .list(credential.request(pb::ListRequest {
            prefix: prefix.clone(),
            after: after.cloned().unwrap_or_default(),
            limit,
            consistency: pb::Consistency::Linearizable as i32,
        }))
        .await?
        .into_inner();
    let Some(first) = stream.message().await? else {
        return Err(Status::internal("a listing answered no page"));
    };
    let kvs: Vec<rest::KeyValue> = first
        .kvs
        .into_iter()
        .map(|kv| key_value(kv, first.revision, None))
        .collect();
    // Keys may follow this page in the stream (a limit over a page's size) or after the limit.
    let more = first.more;
    Ok(ListResult {
        next: if more {
            kvs.last().map(|kv| kv.key.clone())
        } else {
            None
        },
        kvs,
        more,
        revision: first.revision,
        stale: stale(first.stale),
    })
}

/// Readiness over gRPC (`Maintenance.Ready`, REST's `GET /ready`): the answer in the REST
/// body's form; a refusal (`not_ready` with its quota, a storage problem) is the REST
/// refusal, as [`refusal`] reads it.
async fn ready(channel: Channel, origin: Uri, credential: &Credential) -> Result<Answer, Status> {
    let ready = MaintenanceClient::with_origin(channel, origin)
        .ready(credential.request(pb::ReadyRequest {}))
        .await?
        .into_inner();
    let quota = ready.quota.unwrap_or_default();
    Ok(json(
        200,
        &rest::Ready {
            status: ready.status,
            cluster_id: ready.cluster_id,
            term: ready.term,
            applied_index: ready.applied_index,
            commit_index: ready.commit_index,
            snapshot_index: ready.snapshot_index,
            quota: rest::QuotaInfo {
                used_bytes: quota.used_bytes,
                quota_bytes: quota.quota_bytes,
                exceeded: quota.exceeded,
            },
        },
    ))
}

fn user(u: pb::User) -> rest_auth::UserInfo {
    rest_auth::UserInfo {
        username: u.username,
        role: u.role,
    }
}

fn role(r: pb::Role) -> rest_auth::RoleInfo {
    rest_auth::RoleInfo {
        name: r.name,
        permission: r.permission,
        prefixes: r
            .prefixes
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
        builtin: r.builtin,
    }
}

fn changed(c: pb::AuthChangedResponse) -> Answer {
    json(200, &rest_auth::Changed { name: c.name })
}

fn auth_status(s: pb::AuthStatusResponse) -> Answer {
    json(200, &rest_auth::AuthStatus { enabled: s.enabled })
}

/// An authentication call over gRPC (`raftkv.v1.Auth`), answered in the REST form.
async fn auth(
    mut client: AuthClient<Channel>,
    op: &AuthOp,
    credential: &Credential,
) -> Result<Answer, Status> {
    let c = credential;
    Ok(match op {
        AuthOp::Login(login) => {
            let answer = client
                .login(c.request(pb::LoginRequest {
                    username: login.username.clone(),
                    password: login.password.clone(),
                }))
                .await?
                .into_inner();
            json(
                200,
                &rest_auth::LoginAnswer {
                    token: answer.token,
                    expires_at: answer.expires_at,
                },
            )
        }
        AuthOp::Status => auth_status(
            client
                .status(c.request(pb::AuthStatusRequest {}))
                .await?
                .into_inner(),
        ),
        AuthOp::Enable => auth_status(
            client
                .enable(c.request(pb::AuthEnableRequest {}))
                .await?
                .into_inner(),
        ),
        AuthOp::Disable => auth_status(
            client
                .disable(c.request(pb::AuthDisableRequest {}))
                .await?
                .into_inner(),
        ),
        AuthOp::UserAdd(new) => json(
            200,
            &user(
                client
                    .user_add(c.request(pb::UserAddRequest {
                        username: new.username.clone(),
                        password: new.password.clone(),
                        role: new.role.clone(),
                    }))
                    .await?
                    .into_inner(),
            ),
        ),
        AuthOp::UserDelete(name) => changed(
            client
                .user_delete(c.request(pb::UserDeleteRequest {
                    username: name.clone(),
                }))
                .await?
                .into_inner(),
        ),
        AuthOp::UserPassword(name, new) => changed(
            client
                .user_change_password(c.request(pb::UserChangePasswordRequest {
                    username: name.clone(),
                    password: new.password.clone(),
                }))
                .await?
                .into_inner(),
        ),
        AuthOp::UserList => {
            let users = client
                .user_list(c.request(pb::UserListRequest {}))
                .await?
                .into_inner()
                .users;
            json(
                200,
                &rest_auth::Users {
                    users: users.into_iter().map(user).collect(),
                },
            )
        }
        AuthOp::RolePut(name, request) => json(
            200,
            &role(
                client
                    .role_put(
                        c.request(pb::RolePutRequest {
                            name: name.clone(),
                            permission: request.permission.clone(),
                            prefixes: request
                                .prefixes
                                .iter()
                                .map(|p| Bytes::from(p.clone()))
                                .collect(),
                        }),
                    )
                    .await?
                    .into_inner(),
            ),
        ),
        AuthOp::RoleDelete(name) => changed(
            client
                .role_delete(c.request(pb::RoleDeleteRequest { name: name.clone() }))
                .await?
                .into_inner(),
        ),
        AuthOp::RoleList => {
            let roles = client
                .role_list(c.request(pb::RoleListRequest {}))
                .await?
                .into_inner()
                .roles;
            json(
                200,
                &rest_auth::Roles {
                    roles: roles.into_iter().map(role).collect(),
                },
            )
        }
        AuthOp::ApiKeyAdd(new) => {
            let made = client
                .api_key_add(c.request(pb::ApiKeyAddRequest {
                    name: new.name.clone(),
                    role: new.role.clone(),
                }))
                .await?
                .into_inner();
            json(
                200,
                &rest_auth::ApiKeyCreated {
                    id: made.id,
                    name: made.name,
                    role: made.role,
                    key: made.key,
                },
            )
        }
        AuthOp::ApiKeyList => {
            let keys = client
                .api_key_list(c.request(pb::ApiKeyListRequest {}))
                .await?
                .into_inner()
                .api_keys;
            json(
                200,
                &rest_auth::ApiKeys {
                    api_keys: keys
                        .into_iter()
                        .map(|k| rest_auth::ApiKeyInfo {
                            id: k.id,
                            name: k.name,
                            role: k.role,
                            created_index: k.created_index,
                        })
                        .collect(),
                },
            )
        }
        AuthOp::ApiKeyRevoke(id) => changed(
            client
                .api_key_revoke(c.request(pb::ApiKeyRevokeRequest { id: id.clone() }))
                .await?
                .into_inner(),
        ),
    })
}
