//! API keys: `ak_<id>_<secret>`, where the id (64 random bits, hex) names the key for listing
//! and revoking and the secret (256 random bits, base64url) is kept by the cluster only as
//! its SHA-256 digest. A plain digest is enough, unlike for passwords: the secret is random
//! and long, so it cannot be guessed from its digest, and checking it costs nanoseconds.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proto::rest::ErrorCode;
use proto::rest::auth::API_KEY_PREFIX;
use sha2::{Digest, Sha256};

use crate::service::ApiError;

/// Random bytes in a key's id.
pub const ID_BYTES: usize = 8;
/// Random bytes in a key's secret.
pub const SECRET_BYTES: usize = 32;
/// The longest key accepted before parsing.
pub const KEY_BYTES_MAX: usize = 128;

/// A new key: its id, the whole key (shown once) and the digest the cluster keeps.
pub struct NewKey {
    /// The id.
    pub id: String,
    /// The key, `ak_<id>_<secret>`.
    pub key: String,
    /// SHA-256 of the secret.
    pub digest: [u8; 32],
}

/// Fills `out` from the operating system's random source.
pub fn random(out: &mut [u8]) -> Result<(), ApiError> {
    getrandom::fill(out).map_err(|e| {
        ApiError::new(
            ErrorCode::Internal,
            format!("the operating system's random source failed: {e}"),
        )
    })
}

/// SHA-256 of a key's secret part.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Makes a key.
pub fn generate() -> Result<NewKey, ApiError> {
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    random(&mut id)?;
    random(&mut secret)?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret = URL_SAFE_NO_PAD.encode(secret);
    Ok(NewKey {
        key: format!("{API_KEY_PREFIX}{id}_{secret}"),
        digest: digest(&secret),
        id,
    })
}

/// A key's id and secret, if it has a key's shape.
pub fn parse(key: &str) -> Option<(&str, &str)> {
    if key.len() > KEY_BYTES_MAX {
        return None;
    }
    let (id, secret) = key.strip_prefix(API_KEY_PREFIX)?.split_once('_')?;
    (id.len() == 2 * ID_BYTES && !secret.is_empty()).then_some((id, secret))
}

/// Compares two digests in time that does not depend on where they differ.
pub fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_back_to_its_id_and_digest() {
        let made = generate().expect("random bytes");
        assert!(made.key.starts_with("ak_"));
        let (id, secret) = parse(&made.key).expect("parses");
        assert_eq!(id, made.id);
        assert!(same_digest(&digest(secret), &made.digest));
        assert!(!same_digest(&digest("other"), &made.digest));
        let other = generate().expect("random bytes");
        assert_ne!(other.key, made.key);
    }

    #[test]
    fn shapes_that_are_not_keys_are_refused() {
        for bad in [
            "",
            "ak_",
            "ak_0123456789abcdef",
            "ak_0123_secret",
            "bk_0123456789abcdef_x",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        assert!(parse(&format!("ak_0123456789abcdef_{}", "x".repeat(200))).is_none());
    }
}
