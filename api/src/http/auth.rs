//! The `/auth` routes over REST (docs/api.md, "Authentication"), and what every route needs of
//! the caller's credential ([`need`]), which the router checks before it reads a body.

use hyper::Method;
use proto::rest::auth::{Changed, LoginRequest, NewApiKey, NewPassword, NewUser, RoleRequest};
use serde::de::DeserializeOwned;

use super::{ApiError, Handled, Req, answer, ok, param, percent_decode, query_params, via};
use crate::auth::{Credential, Need, Scope};
use crate::server::Server;
use crate::service::Step;
use crate::service::auth as service;

/// The credential a request carries (`Authorization: Bearer`, or `X-API-Key`).
pub fn credential(parts: &hyper::http::request::Parts) -> Credential {
    Credential::from_headers(
        parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
        parts
            .headers
            .get(proto::rest::auth::API_KEY_HEADER)
            .map(|v| v.as_bytes()),
    )
}

/// What the route `method path` needs of the caller, with the key or prefix it touches
/// (`key` is the decoded key of a `/keys/{key}` route). Unknown routes need nothing here: the
/// router answers them 404 or 405 whoever asks.
pub fn need<'a>(
    method: &Method,
    path: &'a str,
    key: Option<&'a [u8]>,
    prefix: &'a [u8],
) -> Need<'a> {
    if let Some(key) = key {
        return match *method {
            Method::GET => Need::Read(Scope::Key(key)),
            _ => Need::Write(Scope::Key(key)),
        };
    }
    match (method, path) {
        (&Method::GET, "/keys") => Need::Read(Scope::Prefix(prefix)),
        (&Method::DELETE, "/keys") => Need::Write(Scope::Prefix(prefix)),
        (&Method::POST, "/sessions") => Need::Write(Scope::Cluster),
        (_, "/health" | "/ready" | "/metrics" | "/cluster/id" | "/auth/login" | "/auth/status") => {
            Need::Open
        }
        (_, "/status" | "/cluster/nodes" | "/cluster/leader") => Need::Read(Scope::Cluster),
        (&Method::PUT, p) if user_password_path(p).is_some() => {
            Need::UserOrAdmin(user_password_path(p).unwrap_or_default())
        }
        (_, p) if p.starts_with("/cluster/") || p.starts_with("/admin/") => Need::Admin,
        (_, p) if p.starts_with("/auth/") => Need::Admin,
        _ => Need::Open,
    }
}

/// The user of `/auth/users/{user}/password`.
fn user_password_path(path: &str) -> Option<&str> {
    path.strip_prefix("/auth/users/")?
        .strip_suffix("/password")
        .filter(|u| !u.is_empty() && !u.contains('/'))
}

/// The prefix a listing or prefix delete names (empty for every key), for [`need`].
pub fn prefix_of(req: &hyper::http::request::Parts) -> Result<Vec<u8>, ApiError> {
    let params = query_params(req.uri.query())?;
    Ok(param(&params, "prefix").unwrap_or_default().to_vec())
}

fn body<T: DeserializeOwned>(req: &Req) -> Result<T, ApiError> {
    serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

fn name(segment: &str) -> Result<String, ApiError> {
    String::from_utf8(percent_decode(segment, false)?)
        .map_err(|_| ApiError::bad_request("a name in the path must be UTF-8"))
}

async fn changed(req: Req, step: Step<()>, name: String) -> Handled {
    match step {
        Step::Done(()) => ok(Changed { name }),
        Step::Forward(to) => super::relay(req, to).await,
    }
}

/// Routes `/auth/...`; `None` when the path is not one of its routes.
pub async fn route(
    server: &Server,
    req: Req,
    method: &Method,
    path: &str,
    peer: std::net::IpAddr,
) -> Option<Handled> {
    let segments: Vec<&str> = path.strip_prefix("/auth/")?.split('/').collect();
    let known = matches!(
        segments.as_slice(),
        ["login" | "status" | "enable" | "disable" | "users" | "roles" | "apikeys"]
            | ["users" | "roles" | "apikeys", _]
            | ["users", _, "password"]
    );
    if !known {
        return None;
    }
    Some(serve(server, req, method, &segments, path, peer).await)
}

async fn serve(
    server: &Server,
    req: Req,
    method: &Method,
    segments: &[&str],
    path: &str,
    peer: std::net::IpAddr,
) -> Handled {
    match (method, segments) {
        (&Method::POST, ["login"]) => {
            ok(service::login(server, body::<LoginRequest>(&req)?, Some(peer)).await?)
        }
        (&Method::GET, ["status"]) => ok(service::status(server)),
        (&Method::POST, ["enable"]) => {
            let step = service::enable(server, via(&req)?).await?;
            answer(req, step).await
        }
        (&Method::POST, ["disable"]) => {
            let step = service::disable(server, via(&req)?).await?;
            answer(req, step).await
        }
        (&Method::GET, ["users"]) => ok(service::users(server).await?),
        (&Method::POST, ["users"]) => {
            let new = body::<NewUser>(&req)?;
            let step = service::add_user(server, via(&req)?, new).await?;
            answer(req, step).await
        }
        (&Method::DELETE, ["users", user]) => {
            let user = name(user)?;
            let step = service::remove_user(server, via(&req)?, user.clone()).await?;
            changed(req, step, user).await
        }
        (&Method::PUT, ["users", user, "password"]) => {
            let (user, new) = (name(user)?, body::<NewPassword>(&req)?);
            let step = service::set_password(server, via(&req)?, user.clone(), new).await?;
            changed(req, step, user).await
        }
        (&Method::GET, ["roles"]) => ok(service::roles(server).await?),
        (&Method::PUT, ["roles", role]) => {
            let (role, request) = (name(role)?, body::<RoleRequest>(&req)?);
            let step = service::put_role(server, via(&req)?, role, request).await?;
            answer(req, step).await
        }
        (&Method::DELETE, ["roles", role]) => {
            let role = name(role)?;
            let step = service::remove_role(server, via(&req)?, role.clone()).await?;
            changed(req, step, role).await
        }
        (&Method::GET, ["apikeys"]) => ok(service::api_keys(server).await?),
        (&Method::POST, ["apikeys"]) => {
            let new = body::<NewApiKey>(&req)?;
            let step = service::add_api_key(server, via(&req)?, new).await?;
            answer(req, step).await
        }
        (&Method::DELETE, ["apikeys", id]) => {
            let id = name(id)?;
            let step = service::revoke_api_key(server, via(&req)?, id.clone()).await?;
            changed(req, step, id).await
        }
        _ => Err(ApiError::new(
            proto::rest::ErrorCode::MethodNotAllowed,
            format!("this method is not supported on {path}"),
        )),
    }
}
