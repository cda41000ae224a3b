//! The bodies of the `/auth` routes (docs/api.md, "Authentication"): login, users, roles, API
//! keys and whether authentication is on. Requests refuse unknown fields, so that a misspelt
//! field is an error rather than a silently ignored setting.

use serde::{Deserialize, Serialize};

/// The header an API key travels in.
pub const API_KEY_HEADER: &str = "x-api-key";
/// What an API key starts with.
pub const API_KEY_PREFIX: &str = "ak_";

/// The body of `POST /auth/login`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The user.
    pub username: String,
    /// The password.
    pub password: String,
}

/// The answer to a login. Its `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginAnswer {
    /// The token, for `Authorization: Bearer <token>`.
    pub token: String,
    /// When it expires, in seconds since the Unix epoch.
    pub expires_at: u64,
}

/// The body of `POST /auth/users`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// The user's name.
    pub username: String,
    /// The password.
    pub password: String,
    /// The role: `read`, `write`, `admin` or a custom role.
    pub role: String,
}

/// One user, as listed (never with a password or its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The name.
    pub username: String,
    /// The role.
    pub role: String,
}

/// The answer to `GET /auth/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Users {
    /// Every user, by name.
    pub users: Vec<UserInfo>,
}

/// The body of `PUT /auth/users/{user}/password`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// The new password.
    pub password: String,
}

/// The body of `PUT /auth/roles/{role}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    /// `read` or `write`.
    pub permission: String,
    /// The key prefixes the role is limited to (UTF-8); empty or absent for every key.
    #[serde(default)]
    pub prefixes: Vec<String>,
}

/// One role, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleInfo {
    /// The name.
    pub name: String,
    /// `read`, `write` or `admin`.
    pub permission: String,
    /// The key prefixes it is limited to; empty for every key.
    pub prefixes: Vec<String>,
    /// Whether it is one of the three built-in roles.
    pub builtin: bool,
}

/// The answer to `GET /auth/roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    /// Every role, built-in ones first.
    pub roles: Vec<RoleInfo>,
}

/// The body of `POST /auth/apikeys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// A name for people (what or who uses the key).
    pub name: String,
    /// The role.
    pub role: String,
}

/// The answer to `POST /auth/apikeys`: the only time the key itself is shown (never by its
/// `Debug`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    /// The key's id (its public part, for listing and revoking).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// The key, for `X-API-Key`; kept by the cluster only as a digest.
    pub key: String,
}

/// One API key, as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    /// The id.
    pub id: String,
    /// The name.
    pub name: String,
    /// The role.
    pub role: String,
    /// The log index of its creation.
    pub created_index: u64,
}

/// The answer to `GET /auth/apikeys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeys {
    /// Every key, by id.
    pub api_keys: Vec<ApiKeyInfo>,
}

/// The answer to `GET /auth/status`, `POST /auth/enable` and `POST /auth/disable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthStatus {
    /// Whether requests must carry a credential.
    pub enabled: bool,
}

/// The answer to a removal (`DELETE /auth/users/{user}`, `/auth/roles/{role}`,
/// `/auth/apikeys/{id}`) and to a password change (`updated`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// The user, role or key id the change was about.
    pub name: String,
}

// Passwords, tokens and keys never appear in `Debug` output (a logged request or answer).
impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPassword").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LoginAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginAnswer")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ApiKeyCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyCreated")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}
