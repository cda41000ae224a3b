//! Reading a request: bodies under a size limit (and the node-wide budget of bodies in flight),
//! JSON fields, percent-decoding, query parameters, and [`Req`], the parts a handler keeps.
//!
//! Invariant: nothing here allocates more than the limit it was given before refusing.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use proto::rest::ErrorCode;
use serde_json::Value;

use super::*;
use crate::config;
use crate::server::Server;

/// Reads the whole body, refusing one over `max` bytes with 413, one that does not arrive
/// within `server.body_read_timeout` with 408 `body_timeout`, and one whose bytes would pass
/// the node-wide budget of bodies in flight (`server.body_bytes_in_flight_max`) with 503
/// `overloaded`. A body with a declared length is counted in full before any of it is read;
/// one without is counted as it comes; one declared over `max` is not kept at all. The count
/// ends with this call: the bytes it returns are the handler's, bounded by its own timeout.
pub async fn read_body(server: &Server, body: Incoming, max: usize) -> Result<Bytes, ApiError> {
    let limits = &server.limits;
    let too_large = || {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("the request body exceeds {max} bytes"),
        )
    };
    let overloaded = |full: limits::BudgetFull| {
        ApiError::new(
            ErrorCode::Overloaded,
            format!(
                "request bodies being received on this node already hold its budget of {} bytes (server.body_bytes_in_flight_max); retry shortly",
                full.max
            ),
        )
    };
    let declared = body.size_hint().exact();
    // A body declared too large is still read up to the limit, and thrown away as it comes:
    // a client that sends its whole body before reading the answer would otherwise see its
    // connection reset and never read the 413.
    let discard = declared.is_some_and(|len| len > max as u64);
    let mut counted = match declared {
        Some(len) if !discard => limits.body_bytes(len as usize).map_err(overloaded)?,
        _ => limits.body_bytes(0).map_err(overloaded)?,
    };
    let deadline = tokio::time::Instant::now() + limits.body_read_timeout;
    let mut body = body;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    ErrorCode::BodyTimeout,
                    format!(
                        "the request body did not arrive within {} (server.body_read_timeout); {len} bytes came",
                        config::units::format_duration(limits.body_read_timeout)
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(format!("reading the body: {e}")));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // Trailers carry nothing a handler reads.
        };
        len += data.len();
        if len > max {
            return Err(too_large());
        }
        if discard {
            continue;
        }
        if declared.is_none() {
            counted.merge(limits.body_bytes(data.len()).map_err(overloaded)?);
        }
        chunks.push(data);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => Bytes::from(chunks.concat()),
    })
}

/// Parses a JSON body.
pub fn read_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// A string field of a JSON object.
pub fn json_str<'a>(body: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    body.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "the JSON body needs a non-empty string field \"{field}\""
            ))
        })
}

/// Decodes `%XX` escapes (and, in a query, `+` as a space) into bytes.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Result<Vec<u8>, ApiError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("bad percent-escape in `{text}`"))
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The query parameters, decoded.
pub fn query_params(req_query: Option<&str>) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let mut params = Vec::new();
    for pair in req_query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = String::from_utf8(percent_decode(name, true)?)
            .map_err(|_| ApiError::bad_request("a query parameter name is not UTF-8"))?;
        params.push((name, percent_decode(value, true)?));
    }
    Ok(params)
}

/// The value of query parameter `name`, if given.
pub fn param<'a>(params: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// A numeric query parameter.
pub fn param_u64(params: &[(String, Vec<u8>)], name: &str) -> Result<Option<u64>, ApiError> {
    match param(params, name) {
        None => Ok(None),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!("query parameter {name} must be a whole number"))
            }),
    }
}

/// The request as a handler sees it: head, and the body read within the route's limit.
pub struct Req {
    /// Method, URI, headers.
    pub parts: hyper::http::request::Parts,
    /// The body.
    pub body: Bytes,
}

impl Req {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }
}
