//! Error answers over HTTP: an [`ApiError`] as its status and JSON body, and the JSON answer
//! helpers every route uses.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::{Response, StatusCode};
use proto::rest::ErrorBody;

pub use crate::service::{ApiError, within};

/// The body type of every answer.
pub type Body = Full<Bytes>;

/// The HTTP status of an error's code.
pub fn status_of(e: &ApiError) -> StatusCode {
    StatusCode::from_u16(e.code.http_status())
        .expect("invariant: every error code's status is a valid HTTP status")
}

/// The answer for an error: its status, the JSON body with its code, and for a `not_leader`
/// refusal the leader's URL in `Location` (a redirect the client may follow), for a
/// `rate_limited` one the seconds to wait in `Retry-After`.
pub fn error_response(e: ApiError, path_and_query: &str) -> Response<Body> {
    let status = status_of(&e);
    let retry_after = match (&e.code, &e.extra) {
        (proto::rest::ErrorCode::RateLimited, Some((_, value))) => value.as_u64(),
        _ => None,
    };
    let mut body = ErrorBody {
        error: e.message,
        code: e.code.as_str().to_string(),
        extra: serde_json::Map::new(),
    };
    if let Some((field, value)) = e.extra {
        body.extra.insert(field.to_string(), value);
    }
    let mut response = json_response(status, &body);
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let Some(leader) = e.leader
        && let Ok(location) = HeaderValue::from_str(&format!(
            "{}://{}{path_and_query}",
            super::peer_scheme(),
            leader.http_addr
        ))
    {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// What a handler returns.
pub type Handled = Result<Response<Body>, ApiError>;

/// A JSON answer.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    let json = serde_json::to_vec(body)
        .expect("invariant: answer bodies are maps with string keys, which serialise to JSON");
    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// 200 with a JSON body (one of the contract's answers, `proto::rest`).
pub fn ok(body: impl serde::Serialize) -> Handled {
    Ok(json_response(StatusCode::OK, &body))
}
