//! The authentication methods of [`Client`] (docs/api.md, "Authentication"): logging in, and
//! managing users, roles and API keys. Each is a [`Call`] like the key methods, so it goes to
//! the leader (or is forwarded there), over REST or gRPC, with the same retry rules: listings,
//! logins and enabling or disabling are safe to send twice; creating and removing are not.

use hyper::Method;
use proto::rest::auth::{
    ApiKeyCreated, ApiKeyInfo, ApiKeys, AuthStatus, Changed, LoginAnswer, LoginRequest, NewApiKey,
    NewPassword, NewUser, RoleInfo, RoleRequest, Roles, UserInfo, Users,
};

use super::Client;
use super::api::parse_json;
use super::call::{Call, Op, Replay};
use crate::encoding::percent_encode;
use crate::error::Result;
use crate::types::Credential;

/// An authentication call, typed (the gRPC transport builds its `Auth` request from it).
#[derive(Debug, Clone)]
pub(super) enum AuthOp {
    Login(LoginRequest),
    Status,
    Enable,
    Disable,
    UserAdd(NewUser),
    UserDelete(String),
    UserPassword(String, NewPassword),
    UserList,
    RolePut(String, RoleRequest),
    RoleDelete(String),
    RoleList,
    ApiKeyAdd(NewApiKey),
    ApiKeyList,
    ApiKeyRevoke(String),
}

fn name(segment: &str) -> String {
    percent_encode(segment.as_bytes())
}

impl Client {
    async fn auth_call<T: serde::de::DeserializeOwned>(
        &self,
        op: AuthOp,
        method: Method,
        path: String,
        replay: Replay,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T> {
        let what = format!("{method} {path} answer");
        let mut call = Call::new(Op::Auth(op), method, path, replay);
        if let Some(body) = body {
            call = call.json_body(body);
        }
        parse_json(&self.execute_ok(call).await?, &what)
    }

    /// Logs in (`POST /auth/login`) and, on success, sends the token with every later call
    /// of this client and its clones.
    pub async fn login(&self, username: &str, password: &str) -> Result<LoginAnswer> {
        let body = LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
        };
        let answer: LoginAnswer = self
            .auth_call(
                AuthOp::Login(body.clone()),
                Method::POST,
                "/auth/login".into(),
                Replay::Safe,
                Some(&body),
            )
            .await?;
        self.set_credential(Credential::Token(answer.token.clone()));
        Ok(answer)
    }

    /// Whether the cluster's authentication is on (`GET /auth/status`).
    pub async fn auth_status(&self) -> Result<AuthStatus> {
        self.auth_call(
            AuthOp::Status,
            Method::GET,
            "/auth/status".into(),
            Replay::Safe,
            None::<&()>,
        )
        .await
    }

    /// Turns authentication on (`POST /auth/enable`; an admin user must exist).
    pub async fn auth_enable(&self) -> Result<AuthStatus> {
        self.auth_call(
            AuthOp::Enable,
            Method::POST,
            "/auth/enable".into(),
            Replay::Safe,
            None::<&()>,
        )
        .await
    }

    /// Turns authentication off (`POST /auth/disable`).
    pub async fn auth_disable(&self) -> Result<AuthStatus> {
        self.auth_call(
            AuthOp::Disable,
            Method::POST,
            "/auth/disable".into(),
            Replay::Safe,
            None::<&()>,
        )
        .await
    }

    /// Creates a user with a role (`POST /auth/users`).
    pub async fn user_add(&self, username: &str, password: &str, role: &str) -> Result<UserInfo> {
        let body = NewUser {
            username: username.to_owned(),
            password: password.to_owned(),
            role: role.to_owned(),
        };
        self.auth_call(
            AuthOp::UserAdd(body.clone()),
            Method::POST,
            "/auth/users".into(),
            Replay::Unsafe,
            Some(&body),
        )
        .await
    }

    /// Removes a user (`DELETE /auth/users/{user}`).
    pub async fn user_delete(&self, username: &str) -> Result<Changed> {
        self.auth_call(
            AuthOp::UserDelete(username.to_owned()),
            Method::DELETE,
            format!("/auth/users/{}", name(username)),
            Replay::Unsafe,
            None::<&()>,
        )
        .await
    }

    /// Sets a user's password (`PUT /auth/users/{user}/password`); the user's earlier tokens
    /// stop working.
    pub async fn user_change_password(&self, username: &str, password: &str) -> Result<Changed> {
        let body = NewPassword {
            password: password.to_owned(),
        };
        self.auth_call(
            AuthOp::UserPassword(username.to_owned(), body.clone()),
            Method::PUT,
            format!("/auth/users/{}/password", name(username)),
            Replay::Safe,
            Some(&body),
        )
        .await
    }

    /// Every user (`GET /auth/users`).
    pub async fn user_list(&self) -> Result<Vec<UserInfo>> {
        let users: Users = self
            .auth_call(
                AuthOp::UserList,
                Method::GET,
                "/auth/users".into(),
                Replay::Safe,
                None::<&()>,
            )
            .await?;
        Ok(users.users)
    }

    /// Creates or replaces a custom role (`PUT /auth/roles/{role}`): `read` or `write`,
    /// limited to keys under `prefixes` (none: every key).
    pub async fn role_put(
        &self,
        role: &str,
        permission: &str,
        prefixes: &[String],
    ) -> Result<RoleInfo> {
        let body = RoleRequest {
            permission: permission.to_owned(),
            prefixes: prefixes.to_vec(),
        };
        self.auth_call(
            AuthOp::RolePut(role.to_owned(), body.clone()),
            Method::PUT,
            format!("/auth/roles/{}", name(role)),
            Replay::Safe,
            Some(&body),
        )
        .await
    }

    /// Removes a custom role nobody holds (`DELETE /auth/roles/{role}`).
    pub async fn role_delete(&self, role: &str) -> Result<Changed> {
        self.auth_call(
            AuthOp::RoleDelete(role.to_owned()),
            Method::DELETE,
            format!("/auth/roles/{}", name(role)),
            Replay::Unsafe,
            None::<&()>,
        )
        .await
    }

    /// Every role, the built-in ones first (`GET /auth/roles`).
    pub async fn role_list(&self) -> Result<Vec<RoleInfo>> {
        let roles: Roles = self
            .auth_call(
                AuthOp::RoleList,
                Method::GET,
                "/auth/roles".into(),
                Replay::Safe,
                None::<&()>,
            )
            .await?;
        Ok(roles.roles)
    }

    /// Creates an API key (`POST /auth/apikeys`); the answer holds the key, shown only once.
    pub async fn api_key_add(&self, name: &str, role: &str) -> Result<ApiKeyCreated> {
        let body = NewApiKey {
            name: name.to_owned(),
            role: role.to_owned(),
        };
        self.auth_call(
            AuthOp::ApiKeyAdd(body.clone()),
            Method::POST,
            "/auth/apikeys".into(),
            Replay::Unsafe,
            Some(&body),
        )
        .await
    }

    /// Every API key, without secrets (`GET /auth/apikeys`).
    pub async fn api_key_list(&self) -> Result<Vec<ApiKeyInfo>> {
        let keys: ApiKeys = self
            .auth_call(
                AuthOp::ApiKeyList,
                Method::GET,
                "/auth/apikeys".into(),
                Replay::Safe,
                None::<&()>,
            )
            .await?;
        Ok(keys.api_keys)
    }

    /// Revokes an API key by its id (`DELETE /auth/apikeys/{id}`).
    pub async fn api_key_revoke(&self, id: &str) -> Result<Changed> {
        self.auth_call(
            AuthOp::ApiKeyRevoke(id.to_owned()),
            Method::DELETE,
            format!("/auth/apikeys/{}", name(id)),
            Replay::Unsafe,
            None::<&()>,
        )
        .await
    }
}
