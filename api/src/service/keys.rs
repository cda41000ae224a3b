//! The key operations both APIs serve: get, list a page, put (with compare-and-swap), delete,
//! delete by prefix, and client sessions for exactly-once writes. Arguments and answers are
//! typed (the contract's [`rest`] types); each protocol only decodes its request into them and
//! encodes the answer.
//!
//! Writes go to the leader (a follower hands back [`Step::Forward`]); linearizable reads wait
//! for a read index confirmed by the leader and applied here; stale reads answer from local
//! state at once and say how far behind it may be.

use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use kv::{ApplyError, CasAction, Command, Compare, KeyValue, Outcome, Session, Write, WriteOp};
use proto::rest::{self, Consistency, ErrorCode};
use serde_json::json;

use super::MACHINE_LOCK;
use super::route::{Step, Via, await_leader, forward_to_leader};
use super::{ApiError, REQUEST_TIMEOUT, within};
use crate::auth::{Credential, Need, Scope};
use crate::metrics::{Operation, StorageOutcome};
use crate::server::Server;
use crate::server::machine::{Output, Proposal};

/// The default number of keys a page of `GET /keys` holds (the contract's).
pub use proto::rest::LIST_LIMIT_DEFAULT;

fn too_large(e: kv::ValidationError) -> ApiError {
    ApiError::new(ErrorCode::TooLarge, e.to_string())
}

/// Checks a key: not empty (400), not over the size limit (413).
pub fn check_key(key: &[u8]) -> Result<(), ApiError> {
    kv::validate_key(key).map_err(|e| match e {
        kv::ValidationError::EmptyKey => ApiError::bad_request("the key must not be empty"),
        other => too_large(other),
    })
}

/// A client session as a request carries it: the id and sequence number, each checked against
/// [`kv::SESSION_NUMBER_MIN`]..=[`kv::SESSION_NUMBER_MAX`] here, not in the state machine, so
/// that log entries written before the check existed still apply as they did. `names` are the
/// two fields' names in the caller's protocol, for the error.
pub fn session(client_id: u64, sequence: u64, names: [&str; 2]) -> Result<Session, ApiError> {
    let check = |n: u64, what: &str| {
        if (kv::SESSION_NUMBER_MIN..=kv::SESSION_NUMBER_MAX).contains(&n) {
            Ok(n)
        } else {
            Err(ApiError::new(
                ErrorCode::BadSession,
                format!(
                    "{what} {n} is out of range: it must be {}..={}",
                    kv::SESSION_NUMBER_MIN,
                    kv::SESSION_NUMBER_MAX
                ),
            ))
        }
    };
    Ok(Session {
        client_id: check(client_id, names[0])?,
        sequence: check(sequence, names[1])?,
    })
}

/// A put: plain, or compare-and-swap on the key's version or value.
#[derive(Debug, Clone)]
pub struct PutArgs {
    /// The key.
    pub key: Bytes,
    /// The new value.
    pub value: Bytes,
    /// The condition, if any.
    pub compare: Option<Compare>,
    /// The exactly-once session, if any.
    pub session: Option<Session>,
}

/// A prefix delete: a non-empty prefix, or every key with `all`.
#[derive(Debug, Clone)]
pub struct DeletePrefixArgs {
    /// The prefix (empty only with `all`).
    pub prefix: Bytes,
    /// Delete every key (only without a prefix).
    pub all: bool,
    /// The exactly-once session, if any.
    pub session: Option<Session>,
}

/// A page of a listing.
#[derive(Debug, Clone)]
pub struct ListArgs {
    /// Keys under this prefix.
    pub prefix: Bytes,
    /// Only keys strictly after this one.
    pub after: Option<Bytes>,
    /// At most this many keys (1..=[`kv::RANGE_LIMIT_MAX`]).
    pub limit: usize,
    /// How fresh the read must be.
    pub consistency: Consistency,
}

fn with_session(session: Option<Session>, command: Command) -> Command {
    match session {
        Some(s) => command.with_session(s),
        None => command,
    }
}

/// Proposes a command on the leader, or says where to forward it from a follower.
async fn write(server: &Server, via: Via, command: Command) -> Result<Step<Outcome>, ApiError> {
    command.validate().map_err(too_large)?;
    if !await_leader(server).await? {
        return forward_to_leader(server, via).map(Step::Forward);
    }
    // Judged here, on the leader that proposes it, so that a forwarded write is judged alike.
    server
        .quota
        .check_write(&server.machine, &command, &server.config.raft.node_id)?;
    let proposal = Proposal::Kv(Bytes::from(command.encode()));
    match tokio::time::timeout(REQUEST_TIMEOUT, server.propose(proposal)).await {
        Err(_) => Err(ApiError::from_node(raft::node::NodeError::Unknown)),
        // Leadership moved between the check and the proposal: the new leader answers.
        Ok(Err(raft::node::NodeError::NotLeader { .. })) => {
            forward_to_leader(server, via).map(Step::Forward)
        }
        Ok(Err(e)) => Err(ApiError::from_node(e)),
        Ok(Ok(Output::Kv(Ok(outcome)))) => Ok(Step::Done(outcome)),
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

/// Serves `answer` and records it in the metrics as `operation`, timed from here, with the
/// outcome `outcome` reads from it. Not an `async fn`, which would hold `answer` twice (see
/// `request_id::scope`).
fn recorded<'a, R: 'a>(
    server: &'a Server,
    operation: Operation,
    outcome: fn(&R) -> Option<StorageOutcome>,
    answer: impl std::future::Future<Output = R> + 'a,
) -> impl std::future::Future<Output = R> + 'a {
    let started = Instant::now();
    answer.map(move |answer| {
        server.metrics.storage(operation, outcome(&answer), started);
        answer
    })
}

/// A write's outcome: none when this node only forwarded it (the leader records it).
fn write_outcome<T>(answer: &Result<Step<T>, ApiError>) -> Option<StorageOutcome> {
    match answer {
        Ok(Step::Forward(_)) => None,
        other => Some(StorageOutcome::of(other)),
    }
}

/// A read's outcome: a read is always served where it was asked.
fn read_outcome<T>(answer: &Result<T, ApiError>) -> Option<StorageOutcome> {
    Some(StorageOutcome::of(answer))
}

/// Maps a served write's outcome, leaving a forward as it is.
fn then<T>(
    step: Step<Outcome>,
    answer: impl FnOnce(Outcome) -> Result<T, ApiError>,
) -> Result<Step<T>, ApiError> {
    match step {
        Step::Done(outcome) => answer(outcome).map(Step::Done),
        Step::Forward(to) => Ok(Step::Forward(to)),
    }
}

/// Puts a key, or compare-and-swaps it: 409 `cas_failed` with the key's `current_version`
/// when the condition does not hold.
pub async fn put(
    server: &Server,
    via: Via,
    args: PutArgs,
) -> Result<Step<rest::PutResult>, ApiError> {
    recorded(
        server,
        Operation::Put,
        write_outcome,
        put_here(server, via, args),
    )
    .await
}

async fn put_here(
    server: &Server,
    via: Via,
    args: PutArgs,
) -> Result<Step<rest::PutResult>, ApiError> {
    check_key(&args.key)?;
    let command = match args.compare {
        Some(compare) => Command::compare_and_swap(args.key, compare, CasAction::Put(args.value)),
        // prev_kv, so that the answer can give the key's new version.
        None => Command::Write(Write {
            session: None,
            op: WriteOp::Put {
                key: args.key,
                value: args.value,
                prev_kv: true,
            },
        }),
    };
    let step = write(server, via, with_session(args.session, command)).await?;
    then(step, |outcome| match outcome {
        Outcome::Put { revision, prev } => {
            let version = prev.map_or(1, |p| p.version + 1);
            Ok(rest::PutResult { revision, version })
        }
        Outcome::CompareAndSwap {
            succeeded: true,
            revision,
            version,
            ..
        } => Ok(rest::PutResult { revision, version }),
        Outcome::CompareAndSwap {
            succeeded: false,
            version,
            ..
        } => Err(ApiError::new(
            ErrorCode::CasFailed,
            "the compare-and-swap condition did not hold",
        )
        .with("current_version", json!(version))),
        other => Err(unexpected(other)),
    })
}

/// Deletes a key.
pub async fn delete(
    server: &Server,
    via: Via,
    key: Bytes,
    session: Option<Session>,
) -> Result<Step<rest::DeleteResult>, ApiError> {
    let served = delete_here(server, via, key, session);
    recorded(server, Operation::Delete, write_outcome, served).await
}

async fn delete_here(
    server: &Server,
    via: Via,
    key: Bytes,
    session: Option<Session>,
) -> Result<Step<rest::DeleteResult>, ApiError> {
    check_key(&key)?;
    let step = write(server, via, with_session(session, Command::delete(key))).await?;
    then(step, |outcome| match outcome {
        Outcome::Delete {
            revision, deleted, ..
        } => Ok(rest::DeleteResult { revision, deleted }),
        other => Err(unexpected(other)),
    })
}

/// Deletes the keys under a prefix, or every key with `all`.
///
/// An empty prefix would match every key, so it is taken only with the explicit `all` (and
/// `all` only without a prefix): a prefix lost on the way (an unset shell variable) must not
/// empty the store.
pub async fn delete_prefix(
    server: &Server,
    via: Via,
    args: DeletePrefixArgs,
) -> Result<Step<rest::DeleteResult>, ApiError> {
    let served = delete_prefix_here(server, via, args);
    recorded(server, Operation::DeletePrefix, write_outcome, served).await
}

async fn delete_prefix_here(
    server: &Server,
    via: Via,
    args: DeletePrefixArgs,
) -> Result<Step<rest::DeleteResult>, ApiError> {
    match (args.prefix.is_empty(), args.all) {
        (false, false) | (true, true) => {}
        (true, false) => {
            return Err(ApiError::new(
                ErrorCode::EmptyPrefix,
                "a prefix delete needs a non-empty prefix, or `all` to delete every key",
            ));
        }
        (false, true) => {
            return Err(ApiError::bad_request(
                "give a prefix or `all`, not both: `all` deletes every key",
            ));
        }
    }
    check_prefix(&args.prefix)?;
    let command = with_session(args.session, Command::delete_prefix(args.prefix));
    let step = write(server, via, command).await?;
    then(step, |outcome| match outcome {
        Outcome::DeletePrefix { revision, deleted } => Ok(rest::DeleteResult { revision, deleted }),
        other => Err(unexpected(other)),
    })
}

/// Registers a client session for exactly-once writes.
pub async fn register_session(
    server: &Server,
    via: Via,
) -> Result<Step<rest::SessionRegistered>, ApiError> {
    let step = write(server, via, Command::RegisterSession).await?;
    then(step, |outcome| match outcome {
        Outcome::SessionRegistered { client_id } => Ok(rest::SessionRegistered { client_id }),
        other => Err(unexpected(other)),
    })
}

/// Waits until a linearizable read may be served here (ReadIndex, confirmed by the leader and
/// applied locally), then checks `reader` against the access records as of that point: the
/// check before the request was served (`service::auth::admit`) used this node's records as
/// they were, which on a lagging follower may predate a revocation the read would otherwise
/// outlive.
async fn barrier(
    server: &Server,
    consistency: Consistency,
    reader: &Credential,
    scope: Scope<'_>,
) -> Result<(), ApiError> {
    if let Consistency::Linearizable = consistency {
        await_leader(server).await?;
        within(server.node.read_index()).await?;
        server.auth.authorize(reader, Need::Read(scope))?;
    }
    Ok(())
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

/// The staleness bound of a stale read (what this node applied and the commit it knows of),
/// read once per request so that every part of the answer states the same bound.
fn staleness(server: &Server, consistency: Consistency) -> Option<rest::StaleInfo> {
    matches!(consistency, Consistency::Stale).then(|| {
        let status = server.node.status();
        rest::StaleInfo {
            applied_index: status.applied.0,
            commit_index: status.commit.0,
        }
    })
}

/// Reads a key for `reader`: 404 `not_found` when it does not exist.
pub async fn get(
    server: &Server,
    key: &[u8],
    consistency: Consistency,
    reader: &Credential,
) -> Result<rest::KeyValue, ApiError> {
    let served = get_here(server, key, consistency, reader);
    recorded(server, Operation::Get, read_outcome, served).await
}

async fn get_here(
    server: &Server,
    key: &[u8],
    consistency: Consistency,
    reader: &Credential,
) -> Result<rest::KeyValue, ApiError> {
    check_key(key)?;
    barrier(server, consistency, reader, Scope::Key(key)).await?;
    let (found, revision) = {
        let machine = server.machine.lock().expect(MACHINE_LOCK);
        (machine.kv.get(key), machine.kv.revision())
    };
    let Some(kv) = found else {
        return Err(ApiError::new(ErrorCode::NotFound, "no such key"));
    };
    Ok(kv_answer(&kv, revision, staleness(server, consistency)))
}

/// Checks a listing's arguments as both protocols take them: a prefix and an `after` key
/// within the key limits.
pub fn check_list(prefix: &[u8], after: Option<&[u8]>) -> Result<(), ApiError> {
    check_prefix(prefix)?;
    if let Some(after) = after {
        kv::validate_key(after).map_err(|e| {
            ApiError::bad_request(format!("after must be a key (the `next` of a page): {e}"))
        })?;
    }
    Ok(())
}

/// Checks a page's `limit`: 1..=[`kv::RANGE_LIMIT_MAX`].
pub fn check_limit(limit: usize) -> Result<(), ApiError> {
    if limit == 0 || limit > kv::RANGE_LIMIT_MAX {
        return Err(ApiError::bad_request(format!(
            "limit must be 1..={} (page with `after` for more)",
            kv::RANGE_LIMIT_MAX
        )));
    }
    Ok(())
}

/// Checks a prefix against the key limits (413 `too_large`).
pub fn check_prefix(prefix: &[u8]) -> Result<(), ApiError> {
    kv::validate_prefix(prefix).map_err(too_large)
}

/// One page of the keys under a prefix, in key order.
///
/// A page holds at most `limit` keys (at most [`kv::RANGE_LIMIT_MAX`]) strictly after `after`
/// and is one consistent read at one revision. When more keys match, the answer says `more`
/// and gives `next`: the last key of the page, to pass as `after` for the next one. Paging
/// has no end but the keys: each page is bounded, the walk is not. Pages read at different
/// revisions, so a walk sees keys written meanwhile only if they sort after the page being
/// read.
pub async fn list(
    server: &Server,
    args: &ListArgs,
    reader: &Credential,
) -> Result<rest::ListResult, ApiError> {
    recorded(
        server,
        Operation::List,
        read_outcome,
        list_here(server, args, reader),
    )
    .await
}

async fn list_here(
    server: &Server,
    args: &ListArgs,
    reader: &Credential,
) -> Result<rest::ListResult, ApiError> {
    check_list(&args.prefix, args.after.as_deref())?;
    check_limit(args.limit)?;
    barrier(
        server,
        args.consistency,
        reader,
        Scope::Prefix(&args.prefix),
    )
    .await?;
    let (range, revision) = {
        let machine = server.machine.lock().expect(MACHINE_LOCK);
        let range = match &args.after {
            Some(after) => machine
                .kv
                .range_prefix_after(&args.prefix, after, args.limit),
            None => machine.kv.range_prefix(&args.prefix, args.limit),
        };
        (range, machine.kv.revision())
    };
    let next = if range.more {
        range.kvs.last().map(|last| last.key.clone())
    } else {
        None
    };
    Ok(rest::ListResult {
        kvs: range
            .kvs
            .iter()
            .map(|kv| kv_answer(kv, revision, None))
            .collect(),
        more: range.more,
        revision,
        next,
        stale: staleness(server, args.consistency),
    })
}
