//! The `raftkv.v1.KV` service: each method decodes its message into the shared handler's
//! arguments ([`crate::service::keys`]) and encodes the answer, or relays the request to the
//! leader when the handler says so. `List` streams pages from a task that gives up on a
//! client that stops reading, and says so in the stream's status.

use std::sync::Arc;

use proto::pb::{self, kv_client::KvClient};
use proto::rest::{self, Consistency, ErrorCode};
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::forward::via;
use super::status::status_of;
use super::{Api, Credentials, serving};
use crate::auth::{Need, Scope};
use crate::service::ApiError;
use crate::service::keys::{self as service, DeletePrefixArgs, ListArgs, PutArgs};

/// Keys per page of a streamed listing (at most [`kv::RANGE_LIMIT_MAX`]).
pub const LIST_PAGE_KEYS: usize = 1000;
/// Pages a listing prepares ahead of the client.
pub const LIST_PAGES_AHEAD: usize = 2;

/// The consistency a request names: `INVALID_ARGUMENT` for a number the enum does not have.
pub(super) fn consistency(value: i32) -> Result<Consistency, ApiError> {
    match pb::Consistency::try_from(value) {
        Ok(pb::Consistency::Linearizable) => Ok(Consistency::Linearizable),
        Ok(pb::Consistency::Stale) => Ok(Consistency::Stale),
        Err(_) => Err(ApiError::bad_request(format!(
            "consistency {value} is neither CONSISTENCY_LINEARIZABLE (0) nor CONSISTENCY_STALE (1)"
        ))),
    }
}

fn session(session: Option<pb::Session>) -> Result<Option<kv::Session>, ApiError> {
    session
        .map(|s| {
            service::session(
                s.client_id,
                s.sequence,
                ["session.client_id", "session.sequence"],
            )
        })
        .transpose()
}

fn staleness(stale: Option<rest::StaleInfo>) -> Option<pb::Staleness> {
    stale.map(|s| pb::Staleness {
        applied_index: s.applied_index,
        commit_index: s.commit_index,
    })
}

fn key_value(kv: rest::KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
    }
}

fn delete_response(d: rest::DeleteResult) -> pb::DeleteResponse {
    pb::DeleteResponse {
        revision: d.revision,
        deleted: d.deleted,
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for Api {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        serving(&self.server)?;
        let credentials = Credentials::of(&request);
        let message = request.into_inner();
        self.authorize(&credentials, Need::Read(Scope::Key(&message.key)))
            .await?;
        // The key first, as over REST, where it is the path.
        service::check_key(&message.key).map_err(status_of)?;
        let consistency = consistency(message.consistency).map_err(status_of)?;
        let kv = service::get(
            &self.server,
            &message.key,
            consistency,
            &credentials.credential(),
        )
        .await
        .map_err(status_of)?;
        Ok(Response::new(pb::GetResponse {
            revision: kv.revision,
            stale: staleness(kv.stale),
            kv: Some(key_value(kv)),
        }))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        serving(&self.server)?;
        let via = via(&request).map_err(status_of)?;
        let credentials = Credentials::of(&request);
        let message = request.into_inner();
        self.authorize(&credentials, Need::Write(Scope::Key(&message.key)))
            .await?;
        service::check_key(&message.key).map_err(status_of)?;
        let compare = message.condition.clone().map(|c| match c {
            pb::put_request::Condition::PrevVersion(v) => kv::Compare::Version(v),
            pb::put_request::Condition::PrevValue(v) => kv::Compare::Value(v),
        });
        let args = PutArgs {
            key: message.key.clone(),
            value: message.value.clone(),
            compare,
            session: session(message.session).map_err(status_of)?,
        };
        let step = service::put(&self.server, via, args)
            .await
            .map_err(status_of)?;
        self.finish(
            step,
            message,
            &credentials,
            |put| pb::PutResponse {
                revision: put.revision,
                version: put.version,
            },
            |c, o, r| async move { KvClient::with_origin(c, o).put(r).await },
        )
        .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        serving(&self.server)?;
        let via = via(&request).map_err(status_of)?;
        let credentials = Credentials::of(&request);
        let message = request.into_inner();
        self.authorize(&credentials, Need::Write(Scope::Key(&message.key)))
            .await?;
        service::check_key(&message.key).map_err(status_of)?;
        let session = session(message.session).map_err(status_of)?;
        let step = service::delete(&self.server, via, message.key.clone(), session)
            .await
            .map_err(status_of)?;
        self.finish(
            step,
            message,
            &credentials,
            delete_response,
            |c, o, r| async move { KvClient::with_origin(c, o).delete(r).await },
        )
        .await
    }

    type ListStream = ReceiverStream<Result<pb::ListResponse, Status>>;

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        serving(&self.server)?;
        let credentials = Credentials::of(&request);
        let message = request.into_inner();
        self.authorize(&credentials, Need::Read(Scope::Prefix(&message.prefix)))
            .await?;
        let after = (!message.after.is_empty()).then(|| message.after.clone());
        service::check_list(&message.prefix, after.as_deref()).map_err(status_of)?;
        // 0: every key. A bound past what memory could hold still streams page by page.
        let mut left = match message.limit {
            0 => u64::MAX,
            n => n,
        };
        let page_limit =
            |left: u64| LIST_PAGE_KEYS.min(usize::try_from(left).unwrap_or(usize::MAX));
        let mut args = ListArgs {
            prefix: message.prefix,
            after,
            limit: page_limit(left),
            consistency: consistency(message.consistency).map_err(status_of)?,
        };
        // The first page before the answer, so that an error is the call's status rather
        // than the stream's first item.
        let reader = credentials.credential();
        let first = service::list(&self.server, &args, &reader)
            .await
            .map_err(status_of)?;
        // One slot more than the pages ahead, held for the last word: a stream the client
        // stopped reading ends with an error after the pages it holds, never as if complete.
        let (tx, rx) = tokio::sync::mpsc::channel(LIST_PAGES_AHEAD + 1);
        let last_word = tx
            .clone()
            .reserve_owned()
            .await
            .expect("invariant: the receiver is still here");
        let server = Arc::clone(&self.server);
        // A client that stopped reading (its connection kept busy by other calls) is given up
        // after as long a silence as an idle connection; the stream then ends with
        // `DEADLINE_EXCEEDED` after the pages already queued, and what it held is freed.
        let stall_max = server.limits.idle_timeout;
        // The pages are read on a task of their own, which logs under the call's request id.
        let pages = async move {
            let mut page = first;
            loop {
                left -= page.kvs.len() as u64;
                let next = page.next.clone();
                // `more` says whether keys match after this page, also when the limit ends
                // the stream here: a client that pages by limit knows to ask again.
                let more = page.more;
                let answer = pb::ListResponse {
                    more,
                    revision: page.revision,
                    stale: staleness(page.stale),
                    kvs: page.kvs.into_iter().map(key_value).collect(),
                };
                match tx.send_timeout(Ok(answer), stall_max).await {
                    Ok(()) => {}
                    Err(SendTimeoutError::Closed(_)) => return, // The client went away.
                    Err(SendTimeoutError::Timeout(_)) => {
                        last_word.send(Err(status_of(ApiError::new(
                            ErrorCode::Timeout,
                            format!(
                                "the listing stopped: the client read nothing for {} (server.idle_timeout)",
                                crate::config::units::format_duration(stall_max)
                            ),
                        ))));
                        return;
                    }
                }
                let (true, true, Some(next)) = (more, left > 0, next) else {
                    return;
                };
                args.after = Some(next);
                args.limit = page_limit(left);
                page = match service::list(&server, &args, &reader).await {
                    Ok(page) => page,
                    Err(e) => {
                        last_word.send(Err(status_of(e)));
                        return;
                    }
                };
            }
        };
        crate::request_id::spawn_serving(pages);
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delete_prefix(
        &self,
        request: Request<pb::DeletePrefixRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        serving(&self.server)?;
        let via = via(&request).map_err(status_of)?;
        let credentials = Credentials::of(&request);
        let message = request.into_inner();
        self.authorize(&credentials, Need::Write(Scope::Prefix(&message.prefix)))
            .await?;
        let args = DeletePrefixArgs {
            prefix: message.prefix.clone(),
            all: message.all,
            session: session(message.session).map_err(status_of)?,
        };
        let step = service::delete_prefix(&self.server, via, args)
            .await
            .map_err(status_of)?;
        self.finish(
            step,
            message,
            &credentials,
            delete_response,
            |c, o, r| async move { KvClient::with_origin(c, o).delete_prefix(r).await },
        )
        .await
    }

    async fn register_session(
        &self,
        request: Request<pb::RegisterSessionRequest>,
    ) -> Result<Response<pb::RegisterSessionResponse>, Status> {
        serving(&self.server)?;
        let via = via(&request).map_err(status_of)?;
        let credentials = Credentials::of(&request);
        self.authorize(&credentials, Need::Write(Scope::Cluster))
            .await?;
        let message = request.into_inner();
        let step = service::register_session(&self.server, via)
            .await
            .map_err(status_of)?;
        self.finish(
            step,
            message,
            &credentials,
            |s| pb::RegisterSessionResponse {
                client_id: s.client_id,
            },
            |c, o, r| async move { KvClient::with_origin(c, o).register_session(r).await },
        )
        .await
    }
}
