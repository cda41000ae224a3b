//! Strict requests: which query parameters and `X-Raftkv-*` headers each route takes, and the
//! refusal (with a did-you-mean suggestion) of any other, so that a typo never silently turns a
//! conditional write into a blind one.

use hyper::Method;
use proto::rest::ErrorCode;
use serde_json::json;

use super::*;

/// What a route takes besides its path and body: the query parameters and the `X-Raftkv-*`
/// headers it reads. The router refuses anything else before a handler runs, so that a typo
/// (`prev_versoin`) or a parameter another route takes (`revision`) is never silently
/// ignored.
#[derive(Debug, Clone, Copy)]
pub struct Accepts {
    /// Query parameter names, each at most once.
    pub params: &'static [&'static str],
    /// `X-Raftkv-*` header names (lower case), each at most once.
    pub headers: &'static [&'static str],
}

/// Headers every route takes: forwarding concerns only routes that forward, and is harmless
/// elsewhere.
const FORWARDING_HEADERS: &[&str] = &[FORWARDED_HEADER, NO_FORWARD_HEADER];
/// Headers of a route that writes keys: forwarding and an optional session.
const WRITE_HEADERS: &[&str] = &[
    FORWARDED_HEADER,
    NO_FORWARD_HEADER,
    CLIENT_ID_HEADER,
    SEQUENCE_HEADER,
];

/// The parameters and headers of the route `method path`, or `None` when there is no such
/// route (the router then answers 404 or 405). Kept in step with the router (`route` in mod.rs), which it mirrors.
pub fn accepts(method: &Method, path: &str) -> Option<Accepts> {
    let only = |params: &'static [&'static str], headers: &'static [&'static str]| {
        Some(Accepts { params, headers })
    };
    if path.starts_with("/keys/") {
        return match *method {
            Method::GET => only(&["consistency"], FORWARDING_HEADERS),
            Method::PUT => only(&["prev_version", "prev_value"], WRITE_HEADERS),
            Method::DELETE => only(&[], WRITE_HEADERS),
            _ => None,
        };
    }
    match (method, path) {
        (&Method::GET, "/keys") => only(
            &["prefix", "limit", "after", "consistency"],
            FORWARDING_HEADERS,
        ),
        (&Method::DELETE, "/keys") => only(&["prefix", "all"], WRITE_HEADERS),
        (&Method::POST, "/sessions")
        | (&Method::GET, "/health" | "/ready" | "/status" | "/metrics")
        | (&Method::GET, "/cluster/nodes" | "/cluster/leader" | "/cluster/id")
        | (&Method::POST, "/cluster/join" | "/cluster/remove" | "/cluster/transfer-leader")
        | (&Method::POST, "/admin/snapshot") => only(&[], FORWARDING_HEADERS),
        // Served by the node asked, never forwarded.
        (&Method::GET, proto::rest::backup::BACKUP_PATH) => only(&[], &[]),
        (method, path) if auth_route(method, path) => only(&[], FORWARDING_HEADERS),
        _ => None,
    }
}

/// Whether `method path` is one of the `/auth` routes (`http::auth`).
fn auth_route(method: &Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/auth/") else {
        return false;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    matches!(
        (method, segments.as_slice()),
        (
            &Method::POST,
            ["login" | "enable" | "disable" | "users" | "apikeys"]
        ) | (&Method::GET, ["status" | "users" | "roles" | "apikeys"])
            | (&Method::DELETE, ["users" | "roles" | "apikeys", _])
            | (&Method::PUT, ["roles", _])
            | (&Method::PUT, ["users", _, "password"])
    )
}

/// The known name nearest to `name`, if it is close enough to be a typo of it.
fn suggestion<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (crate::config::edit_distance(name, k), k))
        .filter(|(d, _)| *d <= SUGGESTION_DISTANCE_MAX)
        .min()
        .map(|(_, k)| k)
}

fn did_you_mean(found: Option<&str>) -> String {
    found.map_or(String::new(), |k| format!("; did you mean {k}?"))
}

/// Refuses a request whose query or `X-Raftkv-*` headers the route does not take, or repeats
/// (which value would count is a guess): 400 `unknown_parameter`, `repeated_parameter`,
/// `unknown_header` or `repeated_header`, naming the culprit and, when one is close, the name
/// the client probably meant.
pub fn check_strict(
    method: &Method,
    path: &str,
    parts: &hyper::http::request::Parts,
) -> Result<(), ApiError> {
    let Some(accepts) = accepts(method, path) else {
        return Ok(());
    };
    let params = query_params(parts.uri.query())?;
    for (i, (name, _)) in params.iter().enumerate() {
        if !accepts.params.contains(&name.as_str()) {
            let taken = if accepts.params.is_empty() {
                "takes no query parameters".to_string()
            } else {
                format!("takes {}", accepts.params.join(", "))
            };
            return Err(ApiError::new(
                ErrorCode::UnknownParameter,
                format!(
                    "unknown query parameter `{name}`: {method} {} {taken}{}",
                    route_name(path),
                    did_you_mean(suggestion(name, accepts.params.iter().copied()))
                ),
            )
            .with("parameter", json!(name)));
        }
        if params[..i].iter().any(|(earlier, _)| earlier == name) {
            return Err(ApiError::new(
                ErrorCode::RepeatedParameter,
                format!("query parameter `{name}` is given more than once; give it once"),
            )
            .with("parameter", json!(name)));
        }
    }
    for name in parts.headers.keys() {
        let name = name.as_str();
        if !name.starts_with(proto::rest::headers::PREFIX) {
            continue;
        }
        if !accepts.headers.contains(&name) {
            let why = if REQUEST_HEADERS.contains(&name) {
                format!("{method} {} does not take it", route_name(path))
            } else {
                format!(
                    "no route takes it{}",
                    did_you_mean(suggestion(name, REQUEST_HEADERS.iter().copied()))
                )
            };
            return Err(ApiError::new(
                ErrorCode::UnknownHeader,
                format!("unknown request header `{name}`: {why}"),
            )
            .with("header", json!(name)));
        }
        if parts.headers.get_all(name).iter().nth(1).is_some() {
            return Err(ApiError::new(
                ErrorCode::RepeatedHeader,
                format!("header `{name}` is given more than once; give it once"),
            )
            .with("header", json!(name)));
        }
    }
    if let Some(value) = parts.headers.get(FORWARDED_HEADER) {
        crate::service::route::parse_hops(value.to_str().unwrap_or(""), FORWARDED_HEADER)?;
    }
    Ok(())
}

/// The route's name in docs/api.md: `/keys/{key}` for any key.
fn route_name(path: &str) -> &str {
    if path.starts_with("/keys/") {
        "/keys/{key}"
    } else {
        path
    }
}
