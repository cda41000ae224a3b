//! The cluster's access records: users, roles, API keys, whether authentication is on, and the
//! key the cluster signs tokens with when no secret is configured. They are replicated state:
//! changed only by [`AuthCommand`]s committed through Raft, applied alike on every replica,
//! carried in snapshots, so that a credential issued through one node works on every node and
//! survives restarts and leader changes.
//!
//! Everything secret is made before proposing, on the node that takes the request: password
//! hashes (argon2id, `api::auth::password`), API-key digests, the signing key. Apply only
//! stores what the command carries, so it stays deterministic.
//!
//! Invariants: while authentication is on, at least one user holds the `admin` role (the last
//! one cannot be removed; a user's role is set when it is made); every user and key names a
//! role that exists (a built-in one, or a custom role that cannot be removed while in use);
//! every name and count is within the limits below, checked by the API before proposing and
//! again by apply.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The longest user, role or API-key name, in bytes.
pub const NAME_BYTES_MAX: usize = 64;
/// The most users a cluster keeps.
pub const USERS_MAX: usize = 1024;
/// The most custom roles a cluster keeps (besides the built-in three).
pub const ROLES_MAX: usize = 256;
/// The most API keys a cluster keeps.
pub const API_KEYS_MAX: usize = 4096;
/// The most key prefixes one custom role may be limited to.
pub const ROLE_PREFIXES_MAX: usize = 64;
/// The longest encoded password hash (a PHC string), in bytes.
pub const PASSWORD_HASH_BYTES_MAX: usize = 512;
/// The length of a signing key the cluster makes for itself, in bytes (256 bits).
pub const SIGNING_KEY_BYTES: usize = 32;

/// The built-in role that may read keys and cluster information.
pub const ROLE_READ: &str = "read";
/// The built-in role that may also write and delete keys.
pub const ROLE_WRITE: &str = "write";
/// The built-in role that may do everything, including managing users, keys and members.
pub const ROLE_ADMIN: &str = "admin";

/// What a role allows, each level including the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Read keys (within the role's prefixes) and cluster information.
    Read,
    /// Also write and delete keys (within the role's prefixes) and open sessions.
    Write,
    /// Everything: snapshots, membership, leadership, users, roles and keys. Only the
    /// built-in `admin` role has it.
    Admin,
}

impl Permission {
    /// The permission's name in the API (`read`, `write`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => ROLE_READ,
            Permission::Write => ROLE_WRITE,
            Permission::Admin => ROLE_ADMIN,
        }
    }
}

/// A role: a permission level, over every key or only over keys under some prefixes (as
/// etcd's role permissions are).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// What the role allows.
    pub permission: Permission,
    /// The key prefixes it is limited to; empty means every key.
    pub prefixes: Vec<Bytes>,
}

impl Role {
    /// The built-in role named `name`, if it is one.
    pub fn builtin(name: &str) -> Option<Role> {
        let permission = match name {
            ROLE_READ => Permission::Read,
            ROLE_WRITE => Permission::Write,
            ROLE_ADMIN => Permission::Admin,
            _ => return None,
        };
        Some(Role {
            permission,
            prefixes: Vec::new(),
        })
    }

    /// Whether the role reaches `key`.
    pub fn covers_key(&self, key: &[u8]) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| key.starts_with(p))
    }

    /// Whether the role reaches every key under `prefix` (the empty prefix: every key).
    pub fn covers_prefix(&self, prefix: &[u8]) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| prefix.starts_with(p))
    }

    /// Whether the role reaches every key.
    pub fn covers_all(&self) -> bool {
        self.prefixes.is_empty()
    }
}

/// A user: a password (as its argon2id hash) and a role. Its `Debug` never shows the hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The role's name (built-in or custom).
    pub role: String,
    /// The password's argon2id hash, as a PHC string.
    pub password_hash: String,
    /// The log index at which the password was last set: tokens carry it, so a password
    /// change (or a user removed and created again) invalidates every token issued before.
    pub generation: u64,
}

/// An API key, kept only as a digest of its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The name it was created under (for people; not unique).
    pub name: String,
    /// The role's name (built-in or custom).
    pub role: String,
    /// SHA-256 of the key's secret part.
    pub digest: [u8; 32],
    /// The log index of its creation.
    pub created_index: u64,
}

/// The access records as applied. Its `Debug` never shows the signing key or a hash.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    /// Whether requests must carry a credential.
    pub enabled: bool,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Custom roles by name (the built-in ones are not stored).
    pub roles: BTreeMap<String, Role>,
    /// API keys by id (the public part of the key).
    pub api_keys: BTreeMap<String, ApiKey>,
    /// The key tokens are signed with when `auth.jwt_secret` is not configured; made once, by
    /// the node that first enabled authentication, and kept.
    pub signing_key: Option<Bytes>,
    /// Whether authentication was ever enabled (by `Bootstrap` or `Enable`): a founding node
    /// (`auth.enabled`) bootstraps only a cluster where it never was, so turning it off and
    /// removing every user later never brings the configured first admin back.
    pub founded: bool,
}

/// A change to the access records: the payload of an auth log entry. Its `Debug` names the
/// change and what it is about, never a hash or a key.
///
/// Encoded with postcard, which encodes a variant by its index: variants are only ever
/// appended.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    /// Founds authentication on a cluster that never had a user: creates the first admin and
    /// turns authentication on. Refused once any user exists (so it happens at most once,
    /// whichever node proposes it).
    Bootstrap {
        /// The admin's name.
        user: String,
        /// The admin's password hash.
        password_hash: String,
        /// The signing key to keep if the cluster has none.
        signing_key: Bytes,
    },
    /// Creates a user.
    AddUser {
        /// The name.
        name: String,
        /// The password hash.
        password_hash: String,
        /// The role's name.
        role: String,
    },
    /// Removes a user.
    RemoveUser {
        /// The name.
        name: String,
    },
    /// Sets a user's password (and so invalidates the user's tokens).
    SetPassword {
        /// The name.
        name: String,
        /// The new password hash.
        password_hash: String,
    },
    /// Creates or replaces a custom role.
    PutRole {
        /// The name (not a built-in one).
        name: String,
        /// What it allows.
        role: Role,
    },
    /// Removes a custom role no user or key holds.
    RemoveRole {
        /// The name.
        name: String,
    },
    /// Adds an API key.
    AddApiKey {
        /// The key's id (its public part).
        id: String,
        /// Its name.
        name: String,
        /// The role's name.
        role: String,
        /// SHA-256 of its secret part.
        digest: [u8; 32],
    },
    /// Revokes an API key.
    RevokeApiKey {
        /// The key's id.
        id: String,
    },
    /// Turns authentication on; refused unless a user holds the `admin` role.
    Enable {
        /// The signing key to keep if the cluster has none.
        signing_key: Bytes,
    },
    /// Turns authentication off.
    Disable,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("role", &self.role)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("enabled", &self.enabled)
            .field("founded", &self.founded)
            .field("users", &self.users)
            .field("roles", &self.roles)
            .field("api_keys", &self.api_keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AuthCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthCommand::Bootstrap { user, .. } => write!(f, "Bootstrap({user})"),
            AuthCommand::AddUser { name, role, .. } => write!(f, "AddUser({name}, {role})"),
            AuthCommand::RemoveUser { name } => write!(f, "RemoveUser({name})"),
            AuthCommand::SetPassword { name, .. } => write!(f, "SetPassword({name})"),
            AuthCommand::PutRole { name, role } => write!(f, "PutRole({name}, {role:?})"),
            AuthCommand::RemoveRole { name } => write!(f, "RemoveRole({name})"),
            AuthCommand::AddApiKey { id, name, role, .. } => {
                write!(f, "AddApiKey({id}, {name}, {role})")
            }
            AuthCommand::RevokeApiKey { id } => write!(f, "RevokeApiKey({id})"),
            AuthCommand::Enable { .. } => f.write_str("Enable"),
            AuthCommand::Disable => f.write_str("Disable"),
        }
    }
}

/// Why an [`AuthCommand`] was refused (nothing changed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AuthRefusal {
    /// The user exists already.
    #[error("user {0} exists already")]
    UserExists(String),
    /// No such user.
    #[error("there is no user {0}")]
    NoSuchUser(String),
    /// No such role.
    #[error("there is no role {0} (the built-in roles are read, write and admin)")]
    NoSuchRole(String),
    /// A built-in role cannot be changed or removed.
    #[error("{0} is a built-in role and cannot be changed or removed")]
    BuiltinRole(String),
    /// The role is held by users or keys.
    #[error("role {role} is held by {holder}; give them another role first")]
    RoleInUse {
        /// The role.
        role: String,
        /// One user or key that holds it.
        holder: String,
    },
    /// No such API key.
    #[error("there is no API key {0}")]
    NoSuchKey(String),
    /// An API key with this id exists already.
    #[error("an API key with id {0} exists already")]
    KeyExists(String),
    /// Turning auth on, or removing a user, would leave nobody able to administer.
    #[error("{0}")]
    NoAdmin(String),
    /// Authentication was founded already.
    #[error("authentication was set up already")]
    AlreadyBootstrapped,
    /// A count limit is reached.
    #[error("the cluster holds {max} {what} already, the most it keeps")]
    TooMany {
        /// What (users, roles, API keys).
        what: String,
        /// The limit.
        max: u64,
    },
    /// A name, prefix or hash outside its limits.
    #[error("{0}")]
    Invalid(String),
}

/// Checks a user, role or key name: 1 to [`NAME_BYTES_MAX`] bytes of letters, digits and
/// `_ - . @`, so that it is safe in a URL path, a log line and a token.
pub fn check_name(what: &str, name: &str) -> Result<(), AuthRefusal> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(AuthRefusal::Invalid(format!(
            "a {what} name must be 1 to {NAME_BYTES_MAX} bytes long"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@')))
    {
        return Err(AuthRefusal::Invalid(format!(
            "a {what} name may hold letters, digits and _ - . @ only, not {c:?}"
        )));
    }
    Ok(())
}

/// Checks a custom role: not admin-level (only the built-in `admin` administers), a bounded
/// number of valid, non-empty prefixes.
pub fn check_role(role: &Role) -> Result<(), AuthRefusal> {
    if role.permission == Permission::Admin {
        return Err(AuthRefusal::Invalid(
            "a custom role is read or write; only the built-in admin role administers".into(),
        ));
    }
    if role.prefixes.len() > ROLE_PREFIXES_MAX {
        return Err(AuthRefusal::Invalid(format!(
            "a role may be limited to at most {ROLE_PREFIXES_MAX} prefixes"
        )));
    }
    for prefix in &role.prefixes {
        if prefix.is_empty() {
            return Err(AuthRefusal::Invalid(
                "a role's prefix must not be empty (give no prefixes for every key)".into(),
            ));
        }
        kv::validate_prefix(prefix).map_err(|e| AuthRefusal::Invalid(e.to_string()))?;
    }
    Ok(())
}

fn check_hash(hash: &str) -> Result<(), AuthRefusal> {
    if hash.is_empty() || hash.len() > PASSWORD_HASH_BYTES_MAX {
        return Err(AuthRefusal::Invalid(format!(
            "a password hash must be 1 to {PASSWORD_HASH_BYTES_MAX} bytes long"
        )));
    }
    Ok(())
}

fn too_many(what: &str, max: usize) -> AuthRefusal {
    AuthRefusal::TooMany {
        what: what.into(),
        max: max as u64,
    }
}

impl AuthState {
    /// The role named `name`: built-in or custom.
    pub fn role(&self, name: &str) -> Option<Role> {
        Role::builtin(name).or_else(|| self.roles.get(name).cloned())
    }

    /// Whether any user holds the `admin` role.
    pub fn has_admin(&self) -> bool {
        self.users.values().any(|u| u.role == ROLE_ADMIN)
    }

    fn check_role_exists(&self, role: &str) -> Result<(), AuthRefusal> {
        match self.role(role) {
            Some(_) => Ok(()),
            None => Err(AuthRefusal::NoSuchRole(role.into())),
        }
    }

    fn keep_signing_key(&mut self, key: Bytes) -> Result<(), AuthRefusal> {
        if self.signing_key.is_none() {
            if key.len() != SIGNING_KEY_BYTES {
                return Err(AuthRefusal::Invalid(format!(
                    "a signing key is {SIGNING_KEY_BYTES} bytes"
                )));
            }
            self.signing_key = Some(key);
        }
        Ok(())
    }

    /// Applies `command`, committed at `index`; a refusal changes nothing.
    pub fn apply(&mut self, index: u64, command: AuthCommand) -> Result<(), AuthRefusal> {
        match command {
            AuthCommand::Bootstrap {
                user,
                password_hash,
                signing_key,
            } => {
                if self.founded || !self.users.is_empty() {
                    return Err(AuthRefusal::AlreadyBootstrapped);
                }
                check_name("user", &user)?;
                check_hash(&password_hash)?;
                self.keep_signing_key(signing_key)?;
                self.users.insert(
                    user,
                    User {
                        role: ROLE_ADMIN.into(),
                        password_hash,
                        generation: index,
                    },
                );
                self.enabled = true;
                self.founded = true;
                Ok(())
            }
            AuthCommand::AddUser {
                name,
                password_hash,
                role,
            } => {
                check_name("user", &name)?;
                check_hash(&password_hash)?;
                self.check_role_exists(&role)?;
                if self.users.contains_key(&name) {
                    return Err(AuthRefusal::UserExists(name));
                }
                if self.users.len() >= USERS_MAX {
                    return Err(too_many("users", USERS_MAX));
                }
                self.users.insert(
                    name,
                    User {
                        role,
                        password_hash,
                        generation: index,
                    },
                );
                Ok(())
            }
            AuthCommand::RemoveUser { name } => {
                let Some(user) = self.users.get(&name) else {
                    return Err(AuthRefusal::NoSuchUser(name));
                };
                let last_admin = user.role == ROLE_ADMIN
                    && !self
                        .users
                        .iter()
                        .any(|(other, u)| *other != name && u.role == ROLE_ADMIN);
                if self.enabled && last_admin {
                    return Err(AuthRefusal::NoAdmin(format!(
                        "{name} is the last admin and authentication is on: disable \
                         authentication or make another admin first"
                    )));
                }
                self.users.remove(&name);
                Ok(())
            }
            AuthCommand::SetPassword {
                name,
                password_hash,
            } => {
                check_hash(&password_hash)?;
                let Some(user) = self.users.get_mut(&name) else {
                    return Err(AuthRefusal::NoSuchUser(name));
                };
                user.password_hash = password_hash;
                user.generation = index;
                Ok(())
            }
            AuthCommand::PutRole { name, role } => {
                check_name("role", &name)?;
                if Role::builtin(&name).is_some() {
                    return Err(AuthRefusal::BuiltinRole(name));
                }
                check_role(&role)?;
                if !self.roles.contains_key(&name) && self.roles.len() >= ROLES_MAX {
                    return Err(too_many("roles", ROLES_MAX));
                }
                self.roles.insert(name, role);
                Ok(())
            }
            AuthCommand::RemoveRole { name } => {
                if Role::builtin(&name).is_some() {
                    return Err(AuthRefusal::BuiltinRole(name));
                }
                if !self.roles.contains_key(&name) {
                    return Err(AuthRefusal::NoSuchRole(name));
                }
                let user = self
                    .users
                    .iter()
                    .find(|(_, u)| u.role == name)
                    .map(|(n, _)| format!("user {n}"));
                let key = || {
                    self.api_keys
                        .iter()
                        .find(|(_, k)| k.role == name)
                        .map(|(id, _)| format!("API key {id}"))
                };
                if let Some(holder) = user.or_else(key) {
                    return Err(AuthRefusal::RoleInUse { role: name, holder });
                }
                self.roles.remove(&name);
                Ok(())
            }
            AuthCommand::AddApiKey {
                id,
                name,
                role,
                digest,
            } => {
                check_name("API key", &name)?;
                check_name("API key id", &id)?;
                self.check_role_exists(&role)?;
                if self.api_keys.contains_key(&id) {
                    return Err(AuthRefusal::KeyExists(id));
                }
                if self.api_keys.len() >= API_KEYS_MAX {
                    return Err(too_many("API keys", API_KEYS_MAX));
                }
                self.api_keys.insert(
                    id,
                    ApiKey {
                        name,
                        role,
                        digest,
                        created_index: index,
                    },
                );
                Ok(())
            }
            AuthCommand::RevokeApiKey { id } => match self.api_keys.remove(&id) {
                Some(_) => Ok(()),
                None => Err(AuthRefusal::NoSuchKey(id)),
            },
            AuthCommand::Enable { signing_key } => {
                if !self.has_admin() {
                    return Err(AuthRefusal::NoAdmin(
                        "no user has the admin role: create one before enabling \
                         authentication, or nobody could administer the cluster"
                            .into(),
                    ));
                }
                self.keep_signing_key(signing_key)?;
                self.enabled = true;
                self.founded = true;
                Ok(())
            }
            AuthCommand::Disable => {
                self.enabled = false;
                Ok(())
            }
        }
    }
}

impl AuthCommand {
    /// The command's bytes (postcard).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("invariant: postcard encodes an AuthCommand into a Vec")
    }

    /// Decodes a command written by [`AuthCommand::encode`].
    pub fn decode(bytes: &[u8]) -> Result<AuthCommand, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Bytes {
        Bytes::from(vec![7; SIGNING_KEY_BYTES])
    }

    fn add_user(state: &mut AuthState, index: u64, name: &str, role: &str) {
        state
            .apply(
                index,
                AuthCommand::AddUser {
                    name: name.into(),
                    password_hash: "$argon2id$x".into(),
                    role: role.into(),
                },
            )
            .expect("the user is added");
    }

    #[test]
    fn enabling_needs_an_admin_and_the_last_admin_stays() {
        let mut state = AuthState::default();
        let refused = state.apply(1, AuthCommand::Enable { signing_key: key() });
        assert!(
            matches!(refused, Err(AuthRefusal::NoAdmin(_))),
            "{refused:?}"
        );
        add_user(&mut state, 2, "root", ROLE_ADMIN);
        state
            .apply(3, AuthCommand::Enable { signing_key: key() })
            .expect("enabled with an admin");
        assert!(state.enabled && state.signing_key == Some(key()));
        let refused = state.apply(
            4,
            AuthCommand::RemoveUser {
                name: "root".into(),
            },
        );
        assert!(
            matches!(refused, Err(AuthRefusal::NoAdmin(_))),
            "{refused:?}"
        );
        add_user(&mut state, 5, "ops", ROLE_ADMIN);
        state
            .apply(
                6,
                AuthCommand::RemoveUser {
                    name: "root".into(),
                },
            )
            .expect("another admin remains");
    }

    #[test]
    fn bootstrap_happens_once_and_a_password_change_moves_the_generation() {
        let mut state = AuthState::default();
        let boot = |user: &str| AuthCommand::Bootstrap {
            user: user.into(),
            password_hash: "$argon2id$a".into(),
            signing_key: key(),
        };
        state.apply(10, boot("admin")).expect("first bootstrap");
        assert_eq!(
            state.apply(11, boot("other")),
            Err(AuthRefusal::AlreadyBootstrapped)
        );
        // Turned off, with every user gone: still founded, never bootstrapped again.
        let mut emptied = state.clone();
        emptied.apply(20, AuthCommand::Disable).expect("disabled");
        emptied
            .apply(
                21,
                AuthCommand::RemoveUser {
                    name: "admin".into(),
                },
            )
            .expect("removed while off");
        assert_eq!(
            emptied.apply(22, boot("again")),
            Err(AuthRefusal::AlreadyBootstrapped)
        );
        assert!(state.enabled && state.users["admin"].generation == 10);
        state
            .apply(
                12,
                AuthCommand::SetPassword {
                    name: "admin".into(),
                    password_hash: "$argon2id$b".into(),
                },
            )
            .expect("password set");
        assert_eq!(state.users["admin"].generation, 12);
    }

    #[test]
    fn a_custom_role_is_limited_to_its_prefixes_and_kept_while_in_use() {
        let mut state = AuthState::default();
        let role = Role {
            permission: Permission::Write,
            prefixes: vec![Bytes::from_static(b"app/")],
        };
        state
            .apply(
                1,
                AuthCommand::PutRole {
                    name: "app".into(),
                    role: role.clone(),
                },
            )
            .expect("role stored");
        assert!(role.covers_key(b"app/x") && !role.covers_key(b"other"));
        assert!(role.covers_prefix(b"app/sub/") && !role.covers_prefix(b"ap"));
        add_user(&mut state, 2, "svc", "app");
        let refused = state.apply(2, AuthCommand::RemoveRole { name: "app".into() });
        assert!(matches!(refused, Err(AuthRefusal::RoleInUse { .. })));
        let admin_role = Role {
            permission: Permission::Admin,
            prefixes: Vec::new(),
        };
        let refused = state.apply(
            3,
            AuthCommand::PutRole {
                name: "boss".into(),
                role: admin_role,
            },
        );
        assert!(matches!(refused, Err(AuthRefusal::Invalid(_))));
        let refused = state.apply(
            4,
            AuthCommand::PutRole {
                name: "read".into(),
                role,
            },
        );
        assert!(matches!(refused, Err(AuthRefusal::BuiltinRole(_))));
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "a b", "x/y", &"n".repeat(NAME_BYTES_MAX + 1)] {
            assert!(check_name("user", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("user", "alice.smith@example-1_x").is_ok());
    }

    #[test]
    fn commands_round_trip() {
        let command = AuthCommand::AddApiKey {
            id: "k1".into(),
            name: "ci".into(),
            role: ROLE_WRITE.into(),
            digest: [3; 32],
        };
        assert_eq!(AuthCommand::decode(&command.encode()), Ok(command));
        assert!(AuthCommand::decode(&[200, 1, 2]).is_err());
    }
}
