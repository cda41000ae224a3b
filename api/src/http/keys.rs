//! The key routes: get, put (with compare-and-swap), delete, list and delete by prefix, and
//! client sessions for exactly-once writes.
//!
//! Writes go to the leader (a follower forwards them); linearizable reads wait for a read
//! index confirmed by the leader and applied here; stale reads answer from local state at once
//! and say how far behind it may be.

use bytes::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use kv::{ApplyError, CasAction, Command, Compare, KeyValue, Outcome, Session, Write, WriteOp};
use proto::rest::{self, ErrorCode};
use serde_json::json;

use super::{
    ApiError, Body, CLIENT_ID_HEADER, Handled, Req, SEQUENCE_HEADER, await_leader, forward,
    json_response, ok, param, param_u64, query_params, within,
};
use crate::server::Server;
use crate::server::machine::{Output, Proposal};

/// The default number of keys `GET /keys` returns.
pub const LIST_LIMIT_DEFAULT: usize = 100;

const MACHINE_LOCK: &str = "the state machine lock is poisoned only if apply panicked";

fn too_large(e: kv::ValidationError) -> ApiError {
    ApiError::new(ErrorCode::TooLarge, e.to_string())
}

fn check_key(key: &[u8]) -> Result<(), ApiError> {
    kv::validate_key(key).map_err(|e| match e {
        kv::ValidationError::EmptyKey => ApiError::bad_request("the key must not be empty"),
        other => too_large(other),
    })
}

/// The session headers, if the client sent them. Ids and sequence numbers are checked against
/// [`kv::SESSION_NUMBER_MIN`]..=[`kv::SESSION_NUMBER_MAX`] here, not in the state machine, so
/// that log entries written before the check existed still apply as they did.
fn session(req: &Req) -> Result<Option<Session>, ApiError> {
    let parse = |s: &str, what: &str| {
        let n = s.trim().parse::<u64>().map_err(|_| {
            ApiError::new(
                ErrorCode::BadSession,
                format!("{what} must be a whole number, not `{s}`"),
            )
        })?;
        if !(kv::SESSION_NUMBER_MIN..=kv::SESSION_NUMBER_MAX).contains(&n) {
            return Err(ApiError::new(
                ErrorCode::BadSession,
                format!(
                    "{what} {n} is out of range: it must be {}..={}",
                    kv::SESSION_NUMBER_MIN,
                    kv::SESSION_NUMBER_MAX
                ),
            ));
        }
        Ok(n)
    };
    match (req.header(CLIENT_ID_HEADER), req.header(SEQUENCE_HEADER)) {
        (None, None) => Ok(None),
        (Some(id), Some(seq)) => Ok(Some(Session {
            client_id: parse(id, "X-Raftkv-Client-Id")?,
            sequence: parse(seq, "X-Raftkv-Sequence")?,
        })),
        _ => Err(ApiError::new(
            ErrorCode::BadSession,
            "X-Raftkv-Client-Id and X-Raftkv-Sequence go together",
        )),
    }
}

fn with_session(req: &Req, command: Command) -> Result<Command, ApiError> {
    Ok(match session(req)? {
        Some(s) => command.with_session(s),
        None => command,
    })
}

/// Proposes a command on the leader, or forwards the request from a follower. `Err(response)`
/// carries the leader's answer to a forwarded request.
async fn write(
    server: &Server,
    req: Req,
    command: Command,
) -> Result<Result<kv::Outcome, Handled>, ApiError> {
    command.validate().map_err(too_large)?;
    if !await_leader(server).await? {
        return Ok(Err(forward(server, req).await));
    }
    // Judged here, on the leader that proposes it, so that a forwarded write is judged alike.
    server
        .quota
        .check_write(&server.machine, &command, &server.config.raft.node_id)?;
    let proposal = Proposal::Kv(Bytes::from(command.encode()));
    match tokio::time::timeout(super::REQUEST_TIMEOUT, server.propose(proposal)).await {
        Err(_) => Err(ApiError::from_node(raft::node::NodeError::Unknown)),
        // Leadership moved between the check and the proposal: the new leader answers.
        Ok(Err(raft::node::NodeError::NotLeader { .. })) => Ok(Err(forward(server, req).await)),
        Ok(Err(e)) => Err(ApiError::from_node(e)),
        Ok(Ok(Output::Kv(Ok(outcome)))) => Ok(Ok(outcome)),
        Ok(Ok(Output::Kv(Err(e)))) => Err(apply_error(e)),
        Ok(Ok(_)) => Err(ApiError::new(
            ErrorCode::Internal,
            "the state machine answered a key command with something else",
        )),
    }
}

fn apply_error(e: ApplyError) -> ApiError {
    match e {
        ApplyError::SessionExpired { .. } => {
            ApiError::new(ErrorCode::SessionExpired, e.to_string())
        }
        ApplyError::StaleSequence { .. } => ApiError::new(ErrorCode::StaleSequence, e.to_string()),
        ApplyError::SequenceReused { .. } => {
            ApiError::new(ErrorCode::SequenceReused, e.to_string())
        }
        ApplyError::Invalid(v) => too_large(v),
        other => ApiError::bad_request(other.to_string()),
    }
}

fn unexpected(outcome: Outcome) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("unexpected outcome {outcome:?}"),
    )
}

/// `PUT /keys/{key}`, with `?prev_version=V` or `?prev_value=X` for compare-and-swap.
pub async fn put(server: &Server, req: Req, key: Vec<u8>) -> Handled {
    check_key(&key)?;
    let params = query_params(req.parts.uri.query())?;
    let value = req.body.clone();
    let key = Bytes::from(key);
    let compare = match (
        param_u64(&params, "prev_version")?,
        param(&params, "prev_value"),
    ) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give prev_version or prev_value, not both",
            ));
        }
        (Some(v), None) => Some(Compare::Version(v)),
        (None, Some(v)) => Some(Compare::Value(Bytes::copy_from_slice(v))),
        (None, None) => None,
    };
    let command = match compare {
        Some(compare) => Command::compare_and_swap(key, compare, CasAction::Put(value)),
        // prev_kv, so that the answer can give the key's new version.
        None => Command::Write(Write {
            session: None,
            op: WriteOp::Put {
                key,
                value,
                prev_kv: true,
            },
        }),
    };
    let command = with_session(&req, command)?;
    match write(server, req, command).await? {
        Err(forwarded) => forwarded,
        Ok(Outcome::Put { revision, prev }) => {
            let version = prev.map_or(1, |p| p.version + 1);
            ok(rest::PutResult { revision, version })
        }
        Ok(Outcome::CompareAndSwap {
            succeeded: true,
            revision,
            version,
            ..
        }) => ok(rest::PutResult { revision, version }),
        Ok(Outcome::CompareAndSwap {
            succeeded: false,
            version,
            ..
        }) => Err(ApiError::new(
            ErrorCode::CasFailed,
            "the compare-and-swap condition did not hold",
        )
        .with("current_version", json!(version))),
        Ok(other) => Err(unexpected(other)),
    }
}

/// `DELETE /keys/{key}`.
pub async fn delete(server: &Server, req: Req, key: Vec<u8>) -> Handled {
    check_key(&key)?;
    let command = with_session(&req, Command::delete(Bytes::from(key)))?;
    match write(server, req, command).await? {
        Err(forwarded) => forwarded,
        Ok(Outcome::Delete {
            revision, deleted, ..
        }) => ok(rest::DeleteResult { revision, deleted }),
        Ok(other) => Err(unexpected(other)),
    }
}

/// `DELETE /keys?prefix=P`, or `DELETE /keys?all=true` for every key.
///
/// An empty or missing prefix would match every key, so it is taken only with the explicit
/// `all=true` (and `all=true` only without a prefix): a prefix lost on the way (an unset
/// shell variable) must not empty the store.
pub async fn delete_prefix(server: &Server, req: Req) -> Handled {
    let params = query_params(req.parts.uri.query())?;
    let all = match param(&params, "all") {
        None => false,
        Some(b"true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "all must be `true` (to delete every key), not `{}`",
                String::from_utf8_lossy(other)
            )));
        }
    };
    let prefix = param(&params, "prefix").unwrap_or(b"");
    match (prefix.is_empty(), all) {
        (false, false) | (true, true) => {}
        (true, false) => {
            return Err(ApiError::new(
                ErrorCode::EmptyPrefix,
                "DELETE /keys needs a non-empty ?prefix=, or ?all=true to delete every key",
            ));
        }
        (false, true) => {
            return Err(ApiError::bad_request(
                "give ?prefix= or ?all=true, not both: all=true deletes every key",
            ));
        }
    }
    kv::validate_prefix(prefix).map_err(too_large)?;
    let command = with_session(&req, Command::delete_prefix(Bytes::copy_from_slice(prefix)))?;
    match write(server, req, command).await? {
        Err(forwarded) => forwarded,
        Ok(Outcome::DeletePrefix { revision, deleted }) => {
            ok(rest::DeleteResult { revision, deleted })
        }
        Ok(other) => Err(unexpected(other)),
    }
}

/// `POST /sessions`.
pub async fn register_session(server: &Server, req: Req) -> Handled {
    match write(server, req, Command::RegisterSession).await? {
        Err(forwarded) => forwarded,
        Ok(Outcome::SessionRegistered { client_id }) => ok(rest::SessionRegistered { client_id }),
        Ok(other) => Err(unexpected(other)),
    }
}

/// How fresh a read must be.
enum Consistency {
    Linearizable,
    Stale,
}

fn consistency(params: &[(String, Vec<u8>)]) -> Result<Consistency, ApiError> {
    match param(params, "consistency") {
        None | Some(b"linearizable") => Ok(Consistency::Linearizable),
        Some(b"stale") => Ok(Consistency::Stale),
        Some(other) => Err(ApiError::bad_request(format!(
            "consistency must be linearizable or stale, not `{}`",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// Waits until a linearizable read may be served here (ReadIndex, confirmed by the leader and
/// applied locally).
async fn linearizable_barrier(server: &Server) -> Result<(), ApiError> {
    await_leader(server).await?;
    within(server.node.read_index()).await.map(|_| ())
}

/// A key-value as the contract sends it, with the store's revision when read.
fn kv_answer(kv: &KeyValue, revision: u64, stale: Option<rest::StaleInfo>) -> rest::KeyValue {
    rest::KeyValue {
        key: kv.key.clone(),
        value: kv.value.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        revision,
        stale,
    }
}

/// The staleness bound of a stale read: what this node applied and the commit it knows of.
struct Staleness {
    applied: u64,
    commit: u64,
}

impl Staleness {
    /// Read once per request, so that the headers and the JSON body state the same bound.
    fn of(server: &Server) -> Staleness {
        let status = server.node.status();
        Staleness {
            applied: status.applied.0,
            commit: status.commit.0,
        }
    }

    fn info(&self) -> rest::StaleInfo {
        rest::StaleInfo {
            applied_index: self.applied,
            commit_index: self.commit,
        }
    }

    fn add_headers(&self, response: &mut Response<Body>) {
        let headers = response.headers_mut();
        headers.insert(
            rest::headers::APPLIED_INDEX,
            HeaderValue::from(self.applied),
        );
        headers.insert(rest::headers::COMMIT_INDEX, HeaderValue::from(self.commit));
    }
}

/// `GET /keys/{key}`: raw value, or JSON with `Accept: application/json`.
pub async fn get(server: &Server, req: Req, key: Vec<u8>) -> Handled {
    check_key(&key)?;
    let params = query_params(req.parts.uri.query())?;
    let consistency = consistency(&params)?;
    if let Consistency::Linearizable = consistency {
        linearizable_barrier(server).await?;
    }
    let (found, revision) = {
        let machine = server.machine.lock().expect(MACHINE_LOCK);
        (machine.kv.get(&key), machine.kv.revision())
    };
    let Some(kv) = found else {
        return Err(ApiError::new(ErrorCode::NotFound, "no such key"));
    };
    let wants_json = req
        .header(ACCEPT.as_str())
        .is_some_and(|a| a.contains("application/json"));
    let stale = matches!(consistency, Consistency::Stale).then(|| Staleness::of(server));
    if wants_json {
        let body = kv_answer(&kv, revision, stale.as_ref().map(Staleness::info));
        let mut response = json_response(StatusCode::OK, &body);
        if let Some(stale) = &stale {
            stale.add_headers(&mut response);
        }
        return Ok(response);
    }
    let mut response = Response::new(http_body_util::Full::new(kv.value.clone()));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        rest::headers::CREATE_REVISION,
        HeaderValue::from(kv.create_revision),
    );
    headers.insert(
        rest::headers::MOD_REVISION,
        HeaderValue::from(kv.mod_revision),
    );
    headers.insert(rest::headers::VERSION, HeaderValue::from(kv.version));
    headers.insert(rest::headers::REVISION, HeaderValue::from(revision));
    if let Some(stale) = &stale {
        stale.add_headers(&mut response);
    }
    Ok(response)
}

/// `GET /keys?prefix=P&limit=N&after=K`: one page of the keys under a prefix, in key order.
///
/// A page holds at most `limit` keys (at most [`kv::RANGE_LIMIT_MAX`]) strictly after `after`
/// and is one consistent read at one revision. When more keys match, the answer says
/// `"more": true` and gives `next` (or `next_base64`): the last key of the page, to pass as
/// `after` for the next one. Paging has no end but the keys: each page is bounded, the walk is
/// not. Pages read at different revisions, so a walk sees keys written meanwhile only if they
/// sort after the page being read.
pub async fn list(server: &Server, req: Req) -> Handled {
    let params = query_params(req.parts.uri.query())?;
    let prefix = param(&params, "prefix").unwrap_or(b"").to_vec();
    kv::validate_prefix(&prefix).map_err(too_large)?;
    let after = param(&params, "after").map(<[u8]>::to_vec);
    if let Some(after) = &after {
        kv::validate_key(after).map_err(|e| {
            ApiError::bad_request(format!("after must be a key (the `next` of a page): {e}"))
        })?;
    }
    let limit = param_u64(&params, "limit")?.map_or(LIST_LIMIT_DEFAULT, |l| l as usize);
    if limit == 0 || limit > kv::RANGE_LIMIT_MAX {
        return Err(ApiError::bad_request(format!(
            "limit must be 1..={} (page with `after` for more)",
            kv::RANGE_LIMIT_MAX
        )));
    }
    let consistency = consistency(&params)?;
    if let Consistency::Linearizable = consistency {
        linearizable_barrier(server).await?;
    }
    let (range, revision) = {
        let machine = server.machine.lock().expect(MACHINE_LOCK);
        let range = match &after {
            Some(after) => machine.kv.range_prefix_after(&prefix, after, limit),
            None => machine.kv.range_prefix(&prefix, limit),
        };
        (range, machine.kv.revision())
    };
    let stale = matches!(consistency, Consistency::Stale).then(|| Staleness::of(server));
    let next = if range.more {
        range.kvs.last().map(|last| last.key.clone())
    } else {
        None
    };
    let body = rest::ListResult {
        kvs: range
            .kvs
            .iter()
            .map(|kv| kv_answer(kv, revision, None))
            .collect(),
        more: range.more,
        revision,
        next,
        stale: stale.as_ref().map(Staleness::info),
    };
    let mut response = json_response(StatusCode::OK, &body);
    if let Some(stale) = &stale {
        stale.add_headers(&mut response);
    }
    Ok(response)
}
