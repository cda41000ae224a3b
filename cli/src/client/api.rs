//! The API methods of [`Client`]: keys (read, list, write, delete) and the cluster and admin
//! calls, each checked against the server's limits before it is sent and its answer parsed
//! into a typed result. Invariants: a key, value or listing limit over the documented maximum
//! never leaves the client; a malformed answer becomes [`Error::Protocol`], never a panic; a
//! plain write is marked [`Replay::Unsafe`], so the retry engine never sends it twice.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use hyper::Method;
use hyper::header::HeaderMap;
use serde::de::DeserializeOwned;

#[cfg(doc)]
use super::Session;
use super::call::{Answer, Call, Op, Replay, Route, Typed};
use super::{Client, KEY_BYTES_MAX, LIST_LIMIT_MAX, NO_LEADER, VALUE_BYTES_MAX};
use crate::encoding::percent_encode;
use crate::error::{Error, Result, from_response, one_line, printable};
use crate::types::{
    Consistency, DeleteResult, JoinResult, KeyValue, LeaderInfo, ListResult, NodeInfo,
    Precondition, PutResult, Readiness, RemoveResult, SnapshotInfo, StaleInfo, TransferResult,
};
use proto::rest::{Health, JoinRequest, NodeRequest, Nodes, headers};

/// Refuses an empty prefix for a prefix delete: it would match every key, which takes the
/// explicit `delete_all`.
pub(super) fn non_empty_prefix(prefix: &[u8]) -> Result<&[u8]> {
    if prefix.is_empty() {
        return Err(Error::BadRequest(
            "an empty prefix would delete every key; call delete_all to mean that".to_owned(),
        ));
    }
    Ok(prefix)
}

pub(super) fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::BadRequest("the key is empty".to_owned()));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(Error::TooLarge(format!(
            "key of {} bytes; the limit is {KEY_BYTES_MAX}",
            key.len()
        )));
    }
    Ok(())
}

pub(super) fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(Error::TooLarge(format!(
            "value of {} bytes; the limit is {VALUE_BYTES_MAX}",
            value.len()
        )));
    }
    Ok(())
}

pub(super) fn parse_json<T: DeserializeOwned>(answer: &Answer, what: &str) -> Result<T> {
    serde_json::from_slice(&answer.body).map_err(|e| {
        Error::Protocol(format!(
            "{what}: {} in {}",
            one_line(&e.to_string()),
            printable(&answer.body, 200)
        ))
    })
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| Error::Protocol(format!("header {name} is not a number"))),
    }
}

fn required_header(headers: &HeaderMap, name: &str) -> Result<u64> {
    header_u64(headers, name)?.ok_or_else(|| Error::Protocol(format!("header {name} missing")))
}

fn key_path(key: &[u8]) -> String {
    format!("/keys/{}", percent_encode(key))
}

fn read_query(consistency: Consistency) -> &'static str {
    match consistency {
        Consistency::Linearizable => "",
        Consistency::Stale => "?consistency=stale",
    }
}

impl Client {
    // ---- keys ----

    /// Reads `key` (raw value; revisions from the answer's headers).
    /// A missing key is [`Error::NotFound`].
    pub async fn get(&self, key: impl AsRef<[u8]>, consistency: Consistency) -> Result<KeyValue> {
        let key = key.as_ref();
        check_key(key)?;
        let path = format!("{}{}", key_path(key), read_query(consistency));
        let op = Op::Get {
            key: Bytes::copy_from_slice(key),
            consistency,
            json: false,
        };
        let mut call = Call::new(op, Method::GET, path, Replay::Safe);
        call.key = Some(key);
        let answer = self.execute_ok(call).await?;
        if let Some(Typed::Read(kv)) = answer.typed {
            return Ok(KeyValue {
                key: Bytes::copy_from_slice(key),
                ..*kv
            });
        }
        let headers = &answer.headers;
        let stale = match (
            header_u64(headers, headers::APPLIED_INDEX)?,
            header_u64(headers, headers::COMMIT_INDEX)?,
        ) {
            (Some(applied_index), Some(commit_index)) => Some(StaleInfo {
                applied_index,
                commit_index,
            }),
            _ => None,
        };
        Ok(KeyValue {
            key: Bytes::copy_from_slice(key),
            create_revision: required_header(headers, headers::CREATE_REVISION)?,
            mod_revision: required_header(headers, headers::MOD_REVISION)?,
            version: required_header(headers, headers::VERSION)?,
            revision: required_header(headers, headers::REVISION)?,
            stale,
            value: answer.body,
        })
    }

    /// Reads `key` through the JSON form of the answer (`Accept: application/json`).
    /// A missing key is [`Error::NotFound`].
    pub async fn get_json(
        &self,
        key: impl AsRef<[u8]>,
        consistency: Consistency,
    ) -> Result<KeyValue> {
        let key = key.as_ref();
        check_key(key)?;
        let path = format!("{}{}", key_path(key), read_query(consistency));
        let op = Op::Get {
            key: Bytes::copy_from_slice(key),
            consistency,
            json: true,
        };
        let mut call = Call::new(op, Method::GET, path, Replay::Safe).accept_json();
        call.key = Some(key);
        let answer = self.execute_ok(call).await?;
        let kv: KeyValue = parse_json(&answer, "GET /keys answer")?;
        if kv.key != key {
            return Err(Error::Protocol(format!(
                "asked for key {} but got {}",
                printable(key, 200),
                printable(&kv.key, 200)
            )));
        }
        Ok(kv)
    }

    /// Lists up to `limit` keys starting with `prefix` (server default 100 when `None`): the
    /// first page; [`Client::list_page`] reads the ones after it.
    pub async fn list(&self, prefix: impl AsRef<[u8]>, limit: Option<u32>) -> Result<ListResult> {
        self.list_page(prefix, None, limit).await
    }

    /// One page of the keys starting with `prefix`, strictly after `after` (pass the previous
    /// page's [`ListResult::next`]); at most `limit` keys (server default 100 when `None`,
    /// at most [`LIST_LIMIT_MAX`]). Each page is one consistent read; follow `next` while
    /// `more` to walk any number of keys.
    pub async fn list_page(
        &self,
        prefix: impl AsRef<[u8]>,
        after: Option<&[u8]>,
        limit: Option<u32>,
    ) -> Result<ListResult> {
        let mut path = format!("/keys?prefix={}", percent_encode(prefix.as_ref()));
        if let Some(after) = after {
            check_key(after)?;
            path.push_str(&format!("&after={}", percent_encode(after)));
        }
        if let Some(limit) = limit {
            if limit == 0 || limit > LIST_LIMIT_MAX {
                return Err(Error::BadRequest(format!(
                    "limit {limit} is not 1..={LIST_LIMIT_MAX}"
                )));
            }
            path.push_str(&format!("&limit={limit}"));
        }
        let op = Op::List {
            prefix: Bytes::copy_from_slice(prefix.as_ref()),
            after: after.map(Bytes::copy_from_slice),
            limit,
        };
        let answer = self
            .execute_ok(Call::new(op, Method::GET, path, Replay::Safe).accept_json())
            .await?;
        parse_json(&answer, "GET /keys?prefix answer")
    }

    /// Writes `value` under `key`. Not retried once it may have been sent: use a [`Session`]
    /// for retries that stay exactly-once.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Result<PutResult> {
        self.put_call(key.as_ref(), value.into(), None, None).await
    }

    /// Writes `value` under `key` if `condition` holds, else [`Error::CasFailed`].
    pub async fn put_if(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        condition: Precondition,
    ) -> Result<PutResult> {
        self.put_call(key.as_ref(), value.into(), Some(&condition), None)
            .await
    }

    /// Deletes `key`; `deleted` is 0 when it did not exist.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<DeleteResult> {
        self.delete_call(key.as_ref(), None).await
    }

    /// Deletes every key starting with `prefix`, which must not be empty
    /// ([`Client::delete_all`] deletes every key).
    pub async fn delete_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<DeleteResult> {
        self.delete_prefix_call(Some(non_empty_prefix(prefix.as_ref())?), None)
            .await
    }

    /// Deletes every key (`DELETE /keys?all=true`).
    pub async fn delete_all(&self) -> Result<DeleteResult> {
        self.delete_prefix_call(None, None).await
    }

    pub(super) async fn put_call(
        &self,
        key: &[u8],
        value: Bytes,
        condition: Option<&Precondition>,
        session: Option<(u64, u64)>,
    ) -> Result<PutResult> {
        check_key(key)?;
        check_value(&value)?;
        let mut path = key_path(key);
        match condition {
            None => {}
            Some(Precondition::Version(v)) => path.push_str(&format!("?prev_version={v}")),
            Some(Precondition::Value(x)) => {
                check_value(x)?;
                path.push_str(&format!("?prev_value={}", percent_encode(x)));
            }
        }
        let op = Op::Put {
            key: Bytes::copy_from_slice(key),
            value: value.clone(),
            condition: condition.cloned(),
        };
        let mut call = Call::new(op, Method::PUT, path, Replay::Unsafe);
        call.body = value;
        call.key = Some(key);
        let call = call.in_session(session);
        let answer = self.execute_ok(call).await?;
        if let Some(Typed::Put(put)) = answer.typed {
            return Ok(put);
        }
        parse_json(&answer, "PUT answer")
    }

    pub(super) async fn delete_call(
        &self,
        key: &[u8],
        session: Option<(u64, u64)>,
    ) -> Result<DeleteResult> {
        check_key(key)?;
        let op = Op::Delete {
            key: Bytes::copy_from_slice(key),
        };
        let mut call = Call::new(op, Method::DELETE, key_path(key), Replay::Unsafe);
        call.key = Some(key);
        let call = call.in_session(session);
        let answer = self.execute_ok(call).await?;
        if let Some(Typed::Delete(deleted)) = answer.typed {
            return Ok(deleted);
        }
        parse_json(&answer, "DELETE answer")
    }

    /// `DELETE /keys?prefix=P`, or `?all=true` for `None`: the server takes no empty prefix.
    pub(super) async fn delete_prefix_call(
        &self,
        prefix: Option<&[u8]>,
        session: Option<(u64, u64)>,
    ) -> Result<DeleteResult> {
        let path = match prefix {
            Some(prefix) => format!("/keys?prefix={}", percent_encode(prefix)),
            None => "/keys?all=true".to_owned(),
        };
        let op = Op::DeletePrefix {
            prefix: prefix.map(Bytes::copy_from_slice),
        };
        let call = Call::new(op, Method::DELETE, path, Replay::Unsafe).in_session(session);
        let answer = self.execute_ok(call).await?;
        if let Some(Typed::Delete(deleted)) = answer.typed {
            return Ok(deleted);
        }
        parse_json(&answer, "DELETE /keys?prefix answer")
    }

    // ---- cluster ----

    /// The cluster's members (`GET /cluster/nodes`).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let answer = self
            .execute_ok(Call::new(
                Op::Nodes,
                Method::GET,
                "/cluster/nodes".to_owned(),
                Replay::Safe,
            ))
            .await?;
        Ok(parse_json::<Nodes>(&answer, "GET /cluster/nodes answer")?.nodes)
    }

    /// The current leader (`GET /cluster/leader`).
    pub async fn leader(&self) -> Result<LeaderInfo> {
        let answer = self
            .execute_ok(Call::new(
                Op::Leader,
                Method::GET,
                "/cluster/leader".to_owned(),
                Replay::Safe,
            ))
            .await?;
        parse_json(&answer, "GET /cluster/leader answer")
    }

    /// Adds a node as a learner; it is promoted once caught up (`POST /cluster/join`).
    /// `grpc_addr` is its `server.grpc_addr` (the cluster records it once the node itself
    /// joins, when not given here).
    pub async fn join(
        &self,
        node_id: &str,
        raft_addr: &str,
        http_addr: &str,
        grpc_addr: Option<&str>,
    ) -> Result<JoinResult> {
        let body = JoinRequest {
            node_id: node_id.to_owned(),
            raft_addr: raft_addr.to_owned(),
            http_addr: http_addr.to_owned(),
            grpc_addr: grpc_addr.map(str::to_owned),
            cluster_id: None,
            fresh: false,
        };
        let call = Call::new(
            Op::Join(body.clone()),
            Method::POST,
            "/cluster/join".to_owned(),
            Replay::Unsafe,
        )
        .json_body(&body);
        parse_json(&self.execute_ok(call).await?, "POST /cluster/join answer")
    }

    /// Removes a node from the configuration (`POST /cluster/remove`).
    pub async fn remove(&self, node_id: &str) -> Result<RemoveResult> {
        let body = NodeRequest {
            node_id: node_id.to_owned(),
        };
        let call = Call::new(
            Op::Remove(node_id.to_owned()),
            Method::POST,
            "/cluster/remove".to_owned(),
            Replay::Unsafe,
        )
        .json_body(&body);
        parse_json(&self.execute_ok(call).await?, "POST /cluster/remove answer")
    }

    /// Moves leadership to `node_id` (`POST /cluster/transfer-leader`).
    pub async fn transfer_leader(&self, node_id: &str) -> Result<TransferResult> {
        let body = NodeRequest {
            node_id: node_id.to_owned(),
        };
        let call = Call::new(
            Op::Transfer(node_id.to_owned()),
            Method::POST,
            "/cluster/transfer-leader".to_owned(),
            Replay::Unsafe,
        )
        .json_body(&body);
        let result = parse_json(
            &self.execute_ok(call).await?,
            "POST /cluster/transfer-leader answer",
        );
        // The leader changed on purpose: look it up again next time.
        self.inner.leader.store(NO_LEADER, Ordering::Relaxed);
        result
    }

    /// Takes a snapshot on the first reachable endpoint (`POST /admin/snapshot`).
    pub async fn snapshot(&self) -> Result<SnapshotInfo> {
        let mut call = Call::new(
            Op::Snapshot,
            Method::POST,
            "/admin/snapshot".to_owned(),
            Replay::Unsafe,
        );
        call.route = Route::NodeLocal;
        parse_json(&self.execute_ok(call).await?, "POST /admin/snapshot answer")
    }

    /// The `status` of the first reachable endpoint's `GET /health` (`"ok"`).
    pub async fn health(&self) -> Result<String> {
        let mut call = Call::new(Op::Health, Method::GET, "/health".to_owned(), Replay::Safe);
        call.route = Route::NodeLocal;
        Ok(parse_json::<Health>(&self.execute_ok(call).await?, "GET /health answer")?.status)
    }

    /// The readiness of the first reachable endpoint (`GET /ready`): `503 not_ready` is an
    /// answer here, not an error.
    pub async fn ready(&self) -> Result<Readiness> {
        let mut call = Call::new(Op::Ready, Method::GET, "/ready".to_owned(), Replay::Safe);
        call.route = Route::NodeLocal;
        let (endpoint, answer) = self.execute(call).await?;
        let ready = match answer.status {
            200 => true,
            503 => false,
            status => return Err(from_response(status, &answer.body, None)),
        };
        Ok(Readiness {
            endpoint,
            ready,
            detail: parse_json(&answer, "GET /ready answer")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_before_sending() {
        assert!(matches!(check_key(b""), Err(Error::BadRequest(_))));
        assert!(matches!(
            check_key(&vec![b'k'; KEY_BYTES_MAX + 1]),
            Err(Error::TooLarge(_))
        ));
        assert!(check_key(&vec![b'k'; KEY_BYTES_MAX]).is_ok());
        assert!(matches!(
            check_value(&vec![0; VALUE_BYTES_MAX + 1]),
            Err(Error::TooLarge(_))
        ));
    }
}
