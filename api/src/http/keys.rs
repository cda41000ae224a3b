//! The key routes over REST: each decodes its path, query and headers into the shared
//! handler's arguments ([`crate::service::keys`]) and encodes the answer (a raw value with
//! revision headers, or JSON), or relays the request to the leader when the handler says so.

use bytes::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use kv::{Compare, Session};
use proto::rest::{self, Consistency, ErrorCode};

use super::{
    ApiError, Body, CLIENT_ID_HEADER, Handled, Req, SEQUENCE_HEADER, answer, json_response, param,
    param_u64, query_params, via,
};
use crate::server::Server;
use crate::service::keys::{self as service, DeletePrefixArgs, ListArgs, PutArgs};

pub use crate::service::keys::LIST_LIMIT_DEFAULT;

/// The session headers, if the client sent them.
fn session(req: &Req) -> Result<Option<Session>, ApiError> {
    let parse = |s: &str, what: &str| {
        s.trim().parse::<u64>().map_err(|_| {
            ApiError::new(
                ErrorCode::BadSession,
                format!("{what} must be a whole number, not `{s}`"),
            )
        })
    };
    match (req.header(CLIENT_ID_HEADER), req.header(SEQUENCE_HEADER)) {
        (None, None) => Ok(None),
        (Some(id), Some(seq)) => {
            let names = ["X-Raftkv-Client-Id", "X-Raftkv-Sequence"];
            let (id, seq) = (parse(id, names[0])?, parse(seq, names[1])?);
            service::session(id, seq, names).map(Some)
        }
        _ => Err(ApiError::new(
            ErrorCode::BadSession,
            "X-Raftkv-Client-Id and X-Raftkv-Sequence go together",
        )),
    }
}

/// `PUT /keys/{key}`, with `?prev_version=V` or `?prev_value=X` for compare-and-swap.
pub async fn put(server: &Server, req: Req, key: Vec<u8>) -> Handled {
    service::check_key(&key)?;
    let params = query_params(req.parts.uri.query())?;
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
    let args = PutArgs {
        key: Bytes::from(key),
        value: req.body.clone(),
        compare,
        session: session(&req)?,
    };
    let step = service::put(server, via(&req)?, args).await?;
    answer(req, step).await
}

/// `DELETE /keys/{key}`.
pub async fn delete(server: &Server, req: Req, key: Vec<u8>) -> Handled {
    service::check_key(&key)?;
    let step = service::delete(server, via(&req)?, Bytes::from(key), session(&req)?).await?;
    answer(req, step).await
}

/// `DELETE /keys?prefix=P`, or `DELETE /keys?all=true` for every key.
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
    // The REST wording of the shared handler's two refusals, which name the query parameters.
    match (prefix.is_empty(), all) {
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
        _ => {}
    }
    service::check_prefix(prefix)?;
    let args = DeletePrefixArgs {
        prefix: Bytes::copy_from_slice(prefix),
        all,
        session: session(&req)?,
    };
    let step = service::delete_prefix(server, via(&req)?, args).await?;
    answer(req, step).await
}

/// `POST /sessions`.
pub async fn register_session(server: &Server, req: Req) -> Handled {
    let step = service::register_session(server, via(&req)?).await?;
    answer(req, step).await
}

fn consistency(params: &[(String, Vec<u8>)]) -> Result<Consistency, ApiError> {
    match param(params, "consistency") {
        None => Ok(Consistency::Linearizable),
        Some(value) => Consistency::from_query(value).ok_or_else(|| {
            ApiError::bad_request(format!(
                "consistency must be linearizable or stale, not `{}`",
                String::from_utf8_lossy(value)
            ))
        }),
    }
}

/// The staleness bound of a stale read in the answer's headers too, beside the JSON body's.
fn add_staleness(response: &mut Response<Body>, stale: Option<&rest::StaleInfo>) {
    if let Some(stale) = stale {
        let headers = response.headers_mut();
        headers.insert(
            rest::headers::APPLIED_INDEX,
            HeaderValue::from(stale.applied_index),
        );
        headers.insert(
            rest::headers::COMMIT_INDEX,
            HeaderValue::from(stale.commit_index),
        );
    }
}

/// `GET /keys/{key}`: raw value, or JSON with `Accept: application/json`.
pub async fn get(server: &Server, req: Req, key: Vec<u8>) -> Handled {
    service::check_key(&key)?;
    let params = query_params(req.parts.uri.query())?;
    let reader = super::auth::credential(&req.parts);
    let kv = service::get(server, &key, consistency(&params)?, &reader).await?;
    let wants_json = req
        .header(ACCEPT.as_str())
        .is_some_and(|a| a.contains("application/json"));
    if wants_json {
        let mut response = json_response(StatusCode::OK, &kv);
        add_staleness(&mut response, kv.stale.as_ref());
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
    headers.insert(rest::headers::REVISION, HeaderValue::from(kv.revision));
    add_staleness(&mut response, kv.stale.as_ref());
    Ok(response)
}

/// `GET /keys?prefix=P&limit=N&after=K`: one page of the keys under a prefix, in key order
/// (see [`service::list`]). When more keys match, the answer says `"more": true` and gives
/// `next` (or `next_base64`) to pass as `after` for the next page.
pub async fn list(server: &Server, req: Req) -> Handled {
    let params = query_params(req.parts.uri.query())?;
    let prefix = param(&params, "prefix").unwrap_or(b"");
    let after = param(&params, "after");
    // Before the limit, as before the shared handler existed: a bad key is named first.
    service::check_list(prefix, after)?;
    let limit = param_u64(&params, "limit")?.map_or(LIST_LIMIT_DEFAULT, |l| {
        usize::try_from(l).unwrap_or(usize::MAX)
    });
    service::check_limit(limit)?;
    let args = ListArgs {
        prefix: Bytes::copy_from_slice(prefix),
        after: after.map(Bytes::copy_from_slice),
        limit,
        consistency: consistency(&params)?,
    };
    let page = service::list(server, &args, &super::auth::credential(&req.parts)).await?;
    let mut response = json_response(StatusCode::OK, &page);
    add_staleness(&mut response, page.stale.as_ref());
    Ok(response)
}
