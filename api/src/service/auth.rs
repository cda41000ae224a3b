//! The `/auth` operations both APIs serve: logging in, and changing and listing the access
//! records (users, roles, API keys, whether authentication is on). Changes are Raft commands
//! (`replica::auth::AuthCommand`) proposed on the leader, which is also where a password is
//! hashed and an API key or a signing key is made, so that a follower forwards the request as
//! it came and the leader's answer (an API key shown once) travels back to the client.
//!
//! Logging in needs no leader: any node checks the password against its own records and signs
//! with the cluster's key. Listings wait for a read index first, as every read does.

use bytes::Bytes;
use proto::rest::ErrorCode;
use proto::rest::auth::{
    ApiKeyCreated, ApiKeyInfo, ApiKeys, AuthStatus, LoginAnswer, LoginRequest, NewApiKey,
    NewPassword, NewUser, RoleInfo, RoleRequest, Roles, UserInfo, Users,
};
use replica::auth::{
    AuthCommand, AuthRefusal, AuthState, Permission, ROLE_ADMIN, ROLE_READ, ROLE_WRITE, Role,
    check_name,
};

use super::route::{Step, Via, await_leader, forward_to_leader};
use super::{ApiError, REQUEST_TIMEOUT, within};
use crate::auth::password::check_new;
use crate::auth::{Caller, Credential, Need, Principal, apikey, new_signing_key};
use crate::server::Server;
use crate::server::machine::{Output, Proposal};

/// The answer for a refused auth command.
pub fn refusal(e: AuthRefusal) -> ApiError {
    let code = match &e {
        AuthRefusal::UserExists(_) | AuthRefusal::KeyExists(_) => ErrorCode::AlreadyExists,
        AuthRefusal::NoSuchUser(_) | AuthRefusal::NoSuchRole(_) | AuthRefusal::NoSuchKey(_) => {
            ErrorCode::AuthNotFound
        }
        AuthRefusal::BuiltinRole(_) | AuthRefusal::Invalid(_) => ErrorCode::BadRequest,
        AuthRefusal::RoleInUse { .. }
        | AuthRefusal::NoAdmin(_)
        | AuthRefusal::AlreadyBootstrapped
        | AuthRefusal::TooMany { .. } => ErrorCode::AuthConflict,
    };
    ApiError::new(code, e.to_string())
}

fn checked(what: &str, name: &str) -> Result<(), ApiError> {
    check_name(what, name).map_err(refusal)
}

/// Proposes `command` on this node, which must lead, and waits for it to apply.
pub async fn propose_here(server: &Server, command: AuthCommand) -> Result<(), ApiError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, server.propose(Proposal::Auth(command))).await {
        Err(_) => Err(ApiError::from_node(raft::node::NodeError::Unknown)),
        Ok(Err(e)) => Err(ApiError::from_node(e)),
        Ok(Ok(Output::Auth(result))) => result.map_err(refusal),
        Ok(Ok(other)) => Err(ApiError::new(
            ErrorCode::Internal,
            format!("an auth command applied as {other:?}"),
        )),
    }
}

/// On the leader, makes the command with `make` (which may hash or draw random bytes) and
/// proposes it, handing back `answer`; on a follower, says where to forward.
async fn change<T, F, Fut>(server: &Server, via: Via, make: F) -> Result<Step<T>, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(AuthCommand, T), ApiError>>,
{
    if !await_leader(server).await? {
        return forward_to_leader(server, via).map(Step::Forward);
    }
    let (command, answer) = make().await?;
    propose_here(server, command).await?;
    Ok(Step::Done(answer))
}

/// Waits until this node's records hold every change acknowledged before the call.
async fn read_barrier(server: &Server) -> Result<(), ApiError> {
    await_leader(server).await?;
    within(server.node.read_index()).await.map(drop)
}

/// Admits a request: first, on a node that restarted, waits (`503 not_ready`) until it applied
/// the log it found, whose access records may be newer than its snapshot's; then checks that
/// the caller's credential allows `need`
/// ([`crate::auth::Auth::authorize`]), then counts it against the caller's request rate
/// (`crate::ratelimit`). A refused credential is checked once more after a read index: this
/// node's records may lag behind a change just acknowledged through another node (a new API
/// key, a new password and its token), and a credential the cluster issued must work on every
/// node at once. Only refusals pay for it, at most `ratelimit::RECHECKS_PER_ADDRESS_PER_SECOND`
/// per address; a refusal counts against its address's request rate. A request a member
/// forwarded was counted where it entered the cluster and is not counted again.
pub async fn admit(
    server: &Server,
    caller: &Caller,
    need: Need<'_>,
) -> Result<Option<Principal>, ApiError> {
    if need != Need::Open && !server.replayed.load(std::sync::atomic::Ordering::Acquire) {
        let applied = server.node.status().applied;
        if applied < server.replay_to {
            return Err(ApiError::new(
                ErrorCode::NotReady,
                format!(
                    "this node is applying the log it restarted with (at {} of {}) and cannot check credentials against older records; retry in a moment",
                    applied.0, server.replay_to.0
                ),
            ));
        }
        server
            .replayed
            .store(true, std::sync::atomic::Ordering::Release);
    }
    let credential = &caller.credential;
    let refused = |e: &ApiError| {
        matches!(
            e.code(),
            ErrorCode::Unauthenticated | ErrorCode::PermissionDenied
        )
    };
    let checked = match server.auth.authorize(credential, need) {
        Err(e)
            if refused(&e)
                && matches!(credential, Credential::Bearer(_) | Credential::ApiKey(_))
                && server.rate.may_recheck(caller.peer) =>
        {
            // Boxed: a refusal is rare, and inline its future would make every admitted
            // request's future larger (and costlier to move) by its size.
            match Box::pin(read_barrier(server)).await {
                Ok(()) => server.auth.authorize(credential, need),
                Err(_) => Err(e),
            }
        }
        checked => checked,
    };
    let principal = match checked {
        Ok(principal) => principal,
        Err(e) if refused(&e) => {
            // A refused request still counts against its address's rate, so that refusals
            // are no way around the limit.
            server.rate.request(None, caller.peer)?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    if need != Need::Open && !(caller.forwarded && from_member(server, caller.peer)) {
        server
            .rate
            .request(principal.as_ref().map(|p| p.name.as_str()), caller.peer)?;
    }
    Ok(principal)
}

/// Whether `peer` is the address of a member of the cluster (an IP in a member's address).
fn from_member(server: &Server, peer: Option<std::net::IpAddr>) -> bool {
    let Some(peer) = peer else {
        return false;
    };
    server.members().values().any(|m| {
        [Some(&m.http_addr), Some(&m.raft_addr), m.grpc_addr.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|addr| addr.rsplit_once(':'))
            .filter_map(|(host, _)| {
                host.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .ok()
            })
            .any(|ip| ip == peer)
    })
}

/// `POST /auth/login`: a token for a user whose password matches. Every attempt is counted
/// per user and per address (`peer`) before its password is checked, and given back when it
/// succeeds: past the limit a login is refused without a check (`429 rate_limited`), however
/// many are sent at once, so that guessing is slow.
pub async fn login(
    server: &Server,
    request: LoginRequest,
    peer: Option<std::net::IpAddr>,
) -> Result<LoginAnswer, ApiError> {
    let auth = &server.auth;
    server.rate.try_login(&request.username, peer)?;
    let wrong = || ApiError::new(ErrorCode::Unauthenticated, "wrong username or password");
    if request.password.len() > crate::auth::password::PASSWORD_BYTES_MAX {
        return Err(wrong());
    }
    // Whether the password matches the user as `state` has it (false for no such user).
    let matches = |state: &AuthState| {
        let user = state.users.get(&request.username).cloned();
        let password = request.password.clone();
        async move {
            match user {
                Some(user) => auth.passwords.verify(user.password_hash, password).await,
                // As slow as a real check, so that the timing does not tell who exists.
                None => auth.passwords.hash(password).await.map(|_| false),
            }
        }
    };
    let mut state = auth.state();
    if !matches(&state).await? {
        // This node's records may lag behind a user made, or a password set, through another
        // node a moment ago: look once more after a read index, if that changed anything.
        let generation = |s: &AuthState| s.users.get(&request.username).map(|u| u.generation);
        let before = generation(&state);
        if read_barrier(server).await.is_err() {
            return Err(wrong());
        }
        state = auth.state();
        if generation(&state) == before || !matches(&state).await? {
            return Err(wrong());
        }
    }
    let user = state
        .users
        .get(&request.username)
        .cloned()
        .expect("invariant: the password matched this user's record");
    server.rate.login_succeeded(&request.username, peer);
    let (token, expires_at) = auth
        .tokens
        .issue(&state, &request.username, user.generation)?;
    Ok(LoginAnswer { token, expires_at })
}

/// `GET /auth/status`.
pub fn status(server: &Server) -> AuthStatus {
    AuthStatus {
        enabled: server.auth.enabled(),
    }
}

/// `POST /auth/enable` (refused unless a user holds the admin role).
pub async fn enable(server: &Server, via: Via) -> Result<Step<AuthStatus>, ApiError> {
    change(server, via, || async {
        let command = AuthCommand::Enable {
            signing_key: new_signing_key()?,
        };
        Ok((command, AuthStatus { enabled: true }))
    })
    .await
}

/// `POST /auth/disable`.
pub async fn disable(server: &Server, via: Via) -> Result<Step<AuthStatus>, ApiError> {
    change(server, via, || async {
        Ok((AuthCommand::Disable, AuthStatus { enabled: false }))
    })
    .await
}

/// `POST /auth/users`.
pub async fn add_user(server: &Server, via: Via, new: NewUser) -> Result<Step<UserInfo>, ApiError> {
    checked("user", &new.username)?;
    check_new(&new.password)?;
    change(server, via, || async {
        if server.auth.state().role(&new.role).is_none() {
            return Err(refusal(AuthRefusal::NoSuchRole(new.role)));
        }
        let password_hash = server.auth.passwords.hash(new.password).await?;
        let answer = UserInfo {
            username: new.username.clone(),
            role: new.role.clone(),
        };
        let command = AuthCommand::AddUser {
            name: new.username,
            password_hash,
            role: new.role,
        };
        Ok((command, answer))
    })
    .await
}

/// `DELETE /auth/users/{user}`.
pub async fn remove_user(server: &Server, via: Via, name: String) -> Result<Step<()>, ApiError> {
    change(server, via, || async {
        Ok((AuthCommand::RemoveUser { name }, ()))
    })
    .await
}

/// `PUT /auth/users/{user}/password`.
pub async fn set_password(
    server: &Server,
    via: Via,
    name: String,
    new: NewPassword,
) -> Result<Step<()>, ApiError> {
    check_new(&new.password)?;
    change(server, via, || async {
        if !server.auth.state().users.contains_key(&name) {
            return Err(refusal(AuthRefusal::NoSuchUser(name)));
        }
        let password_hash = server.auth.passwords.hash(new.password).await?;
        Ok((
            AuthCommand::SetPassword {
                name,
                password_hash,
            },
            (),
        ))
    })
    .await
}

/// `GET /auth/users`.
pub async fn users(server: &Server) -> Result<Users, ApiError> {
    read_barrier(server).await?;
    let state = server.auth.state();
    Ok(Users {
        users: state
            .users
            .iter()
            .map(|(name, user)| UserInfo {
                username: name.clone(),
                role: user.role.clone(),
            })
            .collect(),
    })
}

/// `PUT /auth/roles/{role}`: creates or replaces a custom role.
pub async fn put_role(
    server: &Server,
    via: Via,
    name: String,
    request: RoleRequest,
) -> Result<Step<RoleInfo>, ApiError> {
    checked("role", &name)?;
    let permission = match request.permission.as_str() {
        ROLE_READ => Permission::Read,
        ROLE_WRITE => Permission::Write,
        other => {
            return Err(ApiError::bad_request(format!(
                "permission `{other}` is neither read nor write (only the built-in admin role administers)"
            )));
        }
    };
    let role = Role {
        permission,
        prefixes: request
            .prefixes
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect(),
    };
    if Role::builtin(&name).is_some() {
        return Err(refusal(AuthRefusal::BuiltinRole(name)));
    }
    replica::auth::check_role(&role).map_err(refusal)?;
    let answer = role_info(&name, &role, false);
    change(server, via, || async {
        Ok((AuthCommand::PutRole { name, role }, answer))
    })
    .await
}

/// `DELETE /auth/roles/{role}`.
pub async fn remove_role(server: &Server, via: Via, name: String) -> Result<Step<()>, ApiError> {
    change(server, via, || async {
        Ok((AuthCommand::RemoveRole { name }, ()))
    })
    .await
}

fn role_info(name: &str, role: &Role, builtin: bool) -> RoleInfo {
    RoleInfo {
        name: name.to_string(),
        permission: role.permission.as_str().to_string(),
        prefixes: role
            .prefixes
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
        builtin,
    }
}

/// `GET /auth/roles`: the built-in roles, then the custom ones by name.
pub async fn roles(server: &Server) -> Result<Roles, ApiError> {
    read_barrier(server).await?;
    let state = server.auth.state();
    let builtin = [ROLE_READ, ROLE_WRITE, ROLE_ADMIN].map(|name| {
        role_info(
            name,
            &Role::builtin(name).expect("invariant: the three names are the built-in roles"),
            true,
        )
    });
    let custom = state
        .roles
        .iter()
        .map(|(name, role)| role_info(name, role, false));
    Ok(Roles {
        roles: builtin.into_iter().chain(custom).collect(),
    })
}

/// `POST /auth/apikeys`: a new key, shown once.
pub async fn add_api_key(
    server: &Server,
    via: Via,
    new: NewApiKey,
) -> Result<Step<ApiKeyCreated>, ApiError> {
    checked("API key", &new.name)?;
    change(server, via, || async {
        if server.auth.state().role(&new.role).is_none() {
            return Err(refusal(AuthRefusal::NoSuchRole(new.role)));
        }
        let made = apikey::generate()?;
        let answer = ApiKeyCreated {
            id: made.id.clone(),
            name: new.name.clone(),
            role: new.role.clone(),
            key: made.key,
        };
        let command = AuthCommand::AddApiKey {
            id: made.id,
            name: new.name,
            role: new.role,
            digest: made.digest,
        };
        Ok((command, answer))
    })
    .await
}

/// `GET /auth/apikeys` (never with secrets).
pub async fn api_keys(server: &Server) -> Result<ApiKeys, ApiError> {
    read_barrier(server).await?;
    let state = server.auth.state();
    Ok(ApiKeys {
        api_keys: state
            .api_keys
            .iter()
            .map(|(id, key)| ApiKeyInfo {
                id: id.clone(),
                name: key.name.clone(),
                role: key.role.clone(),
                created_index: key.created_index,
            })
            .collect(),
    })
}

/// `DELETE /auth/apikeys/{id}`.
pub async fn revoke_api_key(server: &Server, via: Via, id: String) -> Result<Step<()>, ApiError> {
    change(server, via, || async {
        Ok((AuthCommand::RevokeApiKey { id }, ()))
    })
    .await
}
