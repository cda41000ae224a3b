//! Authentication and authorization, for both APIs: who a request comes from (a login token or
//! an API key, [`Credential`]) and whether their role allows it ([`Need`]). The access records
//! themselves are replicated state (`replica::auth`); this module reads them through a watch,
//! without the state machine's lock, and never writes them (the `/auth` handlers propose
//! changes through Raft, `service::auth`).
//!
//! While authentication is off every request passes (as etcd without auth). While it is on,
//! `/health`, `/ready` and `POST /auth/login` stay open; everything else needs a valid
//! credential (401 / `UNAUTHENTICATED` otherwise) whose role allows it (403 /
//! `PERMISSION_DENIED` otherwise). A node configured with `auth.enabled` that has not yet seen
//! its cluster's first admin answers 503 `not_ready` instead of serving in the open.
//!
//! Verified tokens are cached ([`TOKEN_CACHE_ENTRIES`]) so that a request pays one lookup,
//! not a signature check; the user's existence and password generation are checked against
//! the records on every request all the same, so a removed user or a changed password takes
//! effect at once.

pub mod apikey;
pub mod password;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto::rest::ErrorCode;
use replica::auth::{AuthState, Permission, Role};
use tokio::sync::watch;

use crate::config::AuthSection;
use crate::service::ApiError;

/// Verified tokens kept, so that a repeated token is not verified again.
pub const TOKEN_CACHE_ENTRIES: u64 = 10_000;

/// The credential a request carries, as read from its headers or metadata. Its `Debug` never
/// shows a token or key.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// None.
    Missing,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `X-API-Key: <key>`.
    ApiKey(String),
    /// Something that is not a usable credential (why).
    Malformed(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Missing => f.write_str("Missing"),
            Credential::Bearer(_) => f.write_str("Bearer(..)"),
            Credential::ApiKey(_) => f.write_str("ApiKey(..)"),
            Credential::Malformed(why) => write!(f, "Malformed({why:?})"),
        }
    }
}

impl Credential {
    /// The credential in an `Authorization` and an `X-API-Key` value (either may be absent);
    /// both at once is refused, so that which one counts is never a guess.
    pub fn from_headers(authorization: Option<&[u8]>, api_key: Option<&[u8]>) -> Credential {
        fn text(bytes: &[u8]) -> Option<&str> {
            std::str::from_utf8(bytes).map(str::trim).ok()
        }
        match (authorization, api_key) {
            (None, None) => Credential::Missing,
            (Some(_), Some(_)) => {
                Credential::Malformed("give Authorization or X-API-Key, not both".into())
            }
            (Some(value), None) => match text(value).and_then(|v| {
                v.split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, token)| token.trim())
            }) {
                Some(token) if !token.is_empty() => Credential::Bearer(token.to_string()),
                _ => Credential::Malformed(
                    "the Authorization header must be `Bearer <token>`".into(),
                ),
            },
            (None, Some(value)) => match text(value) {
                Some(key) if !key.is_empty() => Credential::ApiKey(key.to_string()),
                _ => Credential::Malformed("the X-API-Key header is empty or not text".into()),
            },
        }
    }
}

/// Who is asking, as a request arrives: its credential, the address it came from, and whether
/// a node forwarded it (then it was counted against its rate where it entered the cluster).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The credential.
    pub credential: Credential,
    /// The client's address (the forwarding node's, for a forwarded request).
    pub peer: Option<std::net::IpAddr>,
    /// Whether the request carries a hop count (`x-raftkv-forwarded`).
    pub forwarded: bool,
}

/// What part of the data a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One key.
    Key(&'a [u8]),
    /// Every key under a prefix (the empty prefix: every key).
    Prefix(&'a [u8]),
    /// No key: cluster information, or a session.
    Cluster,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// Nothing: open even with authentication on.
    Open,
    /// To read within a scope.
    Read(Scope<'a>),
    /// To write within a scope.
    Write(Scope<'a>),
    /// To administer.
    Admin,
    /// To be this user (changing one's own password), or an admin.
    UserOrAdmin(&'a str),
}

/// Who a request was found to come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user's name, or `apikey:<id>`.
    pub name: String,
    /// Whether it is a user (rather than an API key).
    pub is_user: bool,
    /// The role's name.
    pub role_name: String,
    /// The role.
    pub role: Role,
}

#[derive(Clone)]
struct Verified {
    user: String,
    generation: u64,
    exp: u64,
}

/// The node's authenticator.
pub struct Auth {
    state: watch::Receiver<Arc<AuthState>>,
    /// `auth.enabled`: this node founds authentication on a new cluster.
    founding: bool,
    /// Password hashing.
    pub passwords: password::Passwords,
    /// Token issuing and checking.
    pub tokens: token::Tokens,
    verified: moka::sync::Cache<String, Verified>,
}

fn unauthenticated(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, message)
}

fn denied(principal: &Principal, what: &str) -> ApiError {
    let limits = if principal.role.covers_all() {
        String::new()
    } else {
        let prefixes: Vec<String> = principal
            .role
            .prefixes
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        format!(", limited to keys under {}", prefixes.join(", "))
    };
    ApiError::new(
        ErrorCode::PermissionDenied,
        format!(
            "{} has role {} ({}{limits}), which does not allow {what}",
            principal.name,
            principal.role_name,
            principal.role.permission.as_str()
        ),
    )
}

impl Auth {
    /// The authenticator over the records `state` publishes.
    pub fn new(config: &AuthSection, state: watch::Receiver<Arc<AuthState>>) -> Auth {
        Auth {
            state,
            founding: config.enabled,
            passwords: password::Passwords::new(config),
            tokens: token::Tokens::new(config),
            verified: moka::sync::Cache::builder()
                .max_capacity(TOKEN_CACHE_ENTRIES)
                .time_to_live(config.token_ttl + Duration::from_secs(60))
                .build(),
        }
    }

    /// The access records as applied here.
    pub fn state(&self) -> Arc<AuthState> {
        Arc::clone(&self.state.borrow())
    }

    /// Whether requests must carry a credential, as this node's records say.
    pub fn enabled(&self) -> bool {
        self.state.borrow().enabled
    }

    /// Whether this node waits for its new cluster's first admin (see the module).
    pub fn founding(&self) -> bool {
        self.founding
    }

    /// Checks that `credential` allows `need`: `Ok(None)` while authentication is off (or the
    /// need is open), the principal otherwise.
    pub fn authorize(
        &self,
        credential: &Credential,
        need: Need<'_>,
    ) -> Result<Option<Principal>, ApiError> {
        if need == Need::Open {
            return Ok(None);
        }
        let state = self.state();
        if !state.enabled {
            if self.founding && !state.founded && state.users.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::NotReady,
                    "authentication is being set up on this new cluster (its first admin is not committed yet); retry in a moment",
                ));
            }
            return Ok(None);
        }
        let principal = self.authenticate(&state, credential)?;
        check(&principal, need)?;
        Ok(Some(principal))
    }

    /// Who `credential` is, against `state`.
    pub fn authenticate(
        &self,
        state: &AuthState,
        credential: &Credential,
    ) -> Result<Principal, ApiError> {
        match credential {
            Credential::Missing => Err(unauthenticated(
                "authentication is on: send Authorization: Bearer <token> (from POST /auth/login) or X-API-Key",
            )),
            Credential::Malformed(why) => Err(unauthenticated(why.clone())),
            Credential::Bearer(token) => {
                let verified = match self.verified.get(token) {
                    Some(v) => v,
                    None => {
                        let claims = self.tokens.verify(state, token)?;
                        let v = Verified {
                            user: claims.sub,
                            generation: claims.generation,
                            exp: claims.exp,
                        };
                        self.verified.insert(token.clone(), v.clone());
                        v
                    }
                };
                if token::now() > verified.exp + token::CLOCK_LEEWAY.as_secs() {
                    self.verified.invalidate(token);
                    return Err(unauthenticated(
                        "the token is refused: it has expired; log in again",
                    ));
                }
                let user = state
                    .users
                    .get(&verified.user)
                    .filter(|u| u.generation == verified.generation)
                    .ok_or_else(|| {
                        unauthenticated(format!(
                            "the token is refused: user {} was removed or changed password since it was issued; log in again",
                            verified.user
                        ))
                    })?;
                let role = state.role(&user.role).ok_or_else(|| {
                    unauthenticated(format!("user {} has no valid role", verified.user))
                })?;
                Ok(Principal {
                    name: verified.user,
                    is_user: true,
                    role_name: user.role.clone(),
                    role,
                })
            }
            Credential::ApiKey(key) => {
                let refused = || unauthenticated("the API key is not valid (unknown or revoked)");
                let (id, secret) = apikey::parse(key).ok_or_else(refused)?;
                let stored = state.api_keys.get(id).ok_or_else(refused)?;
                if !apikey::same_digest(&apikey::digest(secret), &stored.digest) {
                    return Err(refused());
                }
                let role = state.role(&stored.role).ok_or_else(refused)?;
                Ok(Principal {
                    name: format!("apikey:{id}"),
                    is_user: false,
                    role_name: stored.role.clone(),
                    role,
                })
            }
        }
    }
}

/// Whether `principal`'s role allows `need`.
pub fn check(principal: &Principal, need: Need<'_>) -> Result<(), ApiError> {
    let role = &principal.role;
    let covers = |scope: Scope<'_>| match scope {
        Scope::Key(key) => role.covers_key(key),
        Scope::Prefix(prefix) => role.covers_prefix(prefix),
        Scope::Cluster => true,
    };
    let describe = |verb: &str, scope: Scope<'_>| match scope {
        Scope::Key(key) => format!("{verb} key {}", String::from_utf8_lossy(key)),
        Scope::Prefix(b"") => format!("{verb} every key"),
        Scope::Prefix(p) => format!("{verb} keys under {}", String::from_utf8_lossy(p)),
        Scope::Cluster if verb == "reading" => "reading cluster information".to_string(),
        Scope::Cluster => "opening sessions".to_string(),
    };
    match need {
        Need::Open => Ok(()),
        Need::Read(scope) if role.permission >= Permission::Read && covers(scope) => Ok(()),
        Need::Read(scope) => Err(denied(principal, &describe("reading", scope))),
        Need::Write(scope) if role.permission >= Permission::Write && covers(scope) => Ok(()),
        Need::Write(scope) => Err(denied(principal, &describe("writing", scope))),
        Need::Admin if role.permission == Permission::Admin => Ok(()),
        Need::Admin => Err(denied(principal, "administration (admin role only)")),
        Need::UserOrAdmin(user) if principal.is_user && principal.name == user => Ok(()),
        Need::UserOrAdmin(_) if role.permission == Permission::Admin => Ok(()),
        Need::UserOrAdmin(user) => Err(denied(
            principal,
            &format!("changing the password of {user} (only {user} or an admin may)"),
        )),
    }
}

/// A fresh signing key for the cluster (used only if it has none yet).
pub fn new_signing_key() -> Result<Bytes, ApiError> {
    let mut key = vec![0u8; replica::auth::SIGNING_KEY_BYTES];
    apikey::random(&mut key)?;
    Ok(Bytes::from(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: &str, prefixes: &[&str], is_user: bool) -> Principal {
        let mut r = Role::builtin(role).unwrap_or(Role {
            permission: Permission::Write,
            prefixes: Vec::new(),
        });
        r.prefixes = prefixes
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect();
        Principal {
            name: "alice".into(),
            is_user,
            role_name: role.into(),
            role: r,
        }
    }

    #[test]
    fn the_permission_matrix_of_the_built_in_roles() {
        let needs = [
            Need::Read(Scope::Key(b"k")),
            Need::Read(Scope::Prefix(b"")),
            Need::Read(Scope::Cluster),
            Need::Write(Scope::Key(b"k")),
            Need::Write(Scope::Prefix(b"a")),
            Need::Write(Scope::Cluster),
            Need::Admin,
        ];
        // read: the first three; write: all but admin; admin: everything.
        for (role, allowed) in [("read", 3), ("write", 6), ("admin", 7)] {
            let p = principal(role, &[], true);
            for (i, need) in needs.iter().enumerate() {
                assert_eq!(check(&p, *need).is_ok(), i < allowed, "{role} {need:?}");
            }
        }
        let refused = check(&principal("read", &[], true), Need::Admin).expect_err("refused");
        assert_eq!(refused.code(), ErrorCode::PermissionDenied);
    }

    #[test]
    fn a_prefix_role_reaches_only_its_prefixes() {
        let p = principal("app", &["app/"], true);
        assert!(check(&p, Need::Write(Scope::Key(b"app/x"))).is_ok());
        assert!(check(&p, Need::Read(Scope::Prefix(b"app/sub"))).is_ok());
        assert!(check(&p, Need::Write(Scope::Cluster)).is_ok());
        for need in [
            Need::Write(Scope::Key(b"other")),
            Need::Read(Scope::Prefix(b"ap")),
            Need::Read(Scope::Prefix(b"")),
        ] {
            let refused = check(&p, need).expect_err("outside its prefixes");
            assert!(refused.message().contains("limited to keys under app/"));
        }
    }

    #[test]
    fn a_user_may_change_only_their_own_password_unless_admin() {
        assert!(check(&principal("read", &[], true), Need::UserOrAdmin("alice")).is_ok());
        assert!(check(&principal("read", &[], true), Need::UserOrAdmin("bob")).is_err());
        assert!(check(&principal("read", &[], false), Need::UserOrAdmin("alice")).is_err());
        assert!(check(&principal("admin", &[], true), Need::UserOrAdmin("bob")).is_ok());
    }

    #[test]
    fn credentials_are_read_from_their_headers() {
        assert_eq!(
            Credential::from_headers(Some(b"Bearer abc"), None),
            Credential::Bearer("abc".into())
        );
        assert_eq!(
            Credential::from_headers(Some(b"bearer  abc "), None),
            Credential::Bearer("abc".into())
        );
        assert_eq!(
            Credential::from_headers(None, Some(b"ak_x")),
            Credential::ApiKey("ak_x".into())
        );
        assert_eq!(Credential::from_headers(None, None), Credential::Missing);
        for (authorization, key) in [
            (Some(&b"Basic abc"[..]), None),
            (Some(&b"Bearer"[..]), None),
            (Some(&b"Bearer x"[..]), Some(&b"ak_x"[..])),
            (None, Some(&b"\xff"[..])),
        ] {
            assert!(matches!(
                Credential::from_headers(authorization, key),
                Credential::Malformed(_)
            ));
        }
    }
}
