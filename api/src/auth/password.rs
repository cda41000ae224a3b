//! Passwords: hashed with argon2id at the configured cost, verified against a stored PHC
//! string (whose own parameters are used, so hashes made under an older cost still verify).
//!
//! Both run on tokio's blocking pool, never on an async worker: one hash at OWASP's cost takes
//! tens of milliseconds and 19 MiB. At most [`HASHES_IN_FLIGHT_MAX`] run at once, so a flood
//! of logins queues instead of taking the node's memory.

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use proto::rest::ErrorCode;
use tokio::sync::Semaphore;

use crate::config::AuthSection;
use crate::service::ApiError;

/// The shortest password accepted.
pub const PASSWORD_BYTES_MIN: usize = 8;
/// The longest password accepted (argon2 takes any length; this bounds the work per request).
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// The most password hashes computed at once on one node.
pub const HASHES_IN_FLIGHT_MAX: usize = 4;
/// The most password hashes waiting for one of those slots; more are refused
/// (`503 overloaded`) rather than queued without bound.
pub const HASHES_WAITING_MAX: usize = 64;

/// Hashes and verifies passwords.
pub struct Passwords {
    params: Params,
    slots: Arc<Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
}

/// Checks a new password's length.
pub fn check_new(password: &str) -> Result<(), ApiError> {
    if !(PASSWORD_BYTES_MIN..=PASSWORD_BYTES_MAX).contains(&password.len()) {
        return Err(ApiError::bad_request(format!(
            "a password must be {PASSWORD_BYTES_MIN} to {PASSWORD_BYTES_MAX} bytes long"
        )));
    }
    Ok(())
}

impl Passwords {
    /// Hashing at the configured cost (checked by `Config::validate`).
    pub fn new(config: &AuthSection) -> Passwords {
        let params = Params::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            config.argon2_parallelism,
            None,
        )
        .expect("invariant: Config::validate checked the argon2 parameters");
        Passwords {
            params,
            slots: Arc::new(Semaphore::new(HASHES_IN_FLIGHT_MAX)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        /// Counts a waiter for as long as it waits, also when its request is dropped midway.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let waiting = Waiting(&self.waiting);
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= HASHES_WAITING_MAX {
            return Err(ApiError::new(
                ErrorCode::Overloaded,
                "too many password checks are waiting on this node; retry shortly",
            ));
        }
        let slot = self.slots.acquire().await;
        drop(waiting);
        let _slot = slot.expect("invariant: the semaphore is never closed");
        tokio::task::spawn_blocking(work).await.map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("hashing a password failed: {e}"),
            )
        })
    }

    /// The argon2id hash of `password`, as a PHC string, with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let params = self.params.clone();
        self.run(move || {
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
        })
        .await?
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("hashing a password failed: {e}"),
            )
        })
    }

    /// Whether `password` matches `hash` (a PHC string; a malformed one matches nothing).
    pub async fn verify(&self, hash: String, password: String) -> Result<bool, ApiError> {
        self.run(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Passwords {
        let mut config = crate::config::Config::default().auth;
        config.argon2_memory_kib = 64;
        config.argon2_iterations = 1;
        Passwords::new(&config)
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let passwords = cheap();
        let hash = passwords
            .hash("correct horse".into())
            .await
            .expect("hashed");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(
            passwords
                .verify(hash.clone(), "correct horse".into())
                .await
                .expect("ran")
        );
        assert!(
            !passwords
                .verify(hash, "correct horsf".into())
                .await
                .expect("ran")
        );
        assert!(
            !passwords
                .verify("not a hash".into(), "x".into())
                .await
                .expect("ran")
        );
    }

    #[test]
    fn new_passwords_are_bounded() {
        assert!(check_new("short").is_err());
        assert!(check_new("long enough").is_ok());
        assert!(check_new(&"x".repeat(PASSWORD_BYTES_MAX + 1)).is_err());
    }
}
