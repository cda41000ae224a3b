//! Size limits on what a client may store, and the validation that enforces them.
//!
//! Job: one place for every byte limit the state machine enforces, so that the API layer can
//! reject a request with the same typed error *before* proposing it, and the state machine
//! rejects it again at apply (a hostile or buggy proposer cannot get past the limits).
//!
//! Invariant: every key in a [`crate::KvStore`] is non-empty and at most [`KEY_BYTES_MAX`]
//! bytes; every value is at most [`VALUE_BYTES_MAX`] bytes.

use serde::{Deserialize, Serialize};

/// Largest key, in bytes (4 KiB).
///
/// etcd has no separate key limit (only its 1.5 MiB request limit); 4 KiB is far above any
/// sensible key and keeps the per-key overhead of range scans and snapshots small.
pub const KEY_BYTES_MAX: usize = 4 * 1024;

/// Largest value, in bytes (1 MiB).
///
/// etcd caps a whole request at 1.5 MiB (`--max-request-bytes`); a 1 MiB value plus key and
/// framing stays under that, so anything etcd accepts as a single value we accept too.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// Why a key, value or command was refused before (or at) apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ValidationError {
    /// Keys must have at least one byte.
    #[error("key is empty")]
    EmptyKey,
    /// The key is longer than [`KEY_BYTES_MAX`].
    #[error("key is {bytes} bytes, the limit is {max} bytes")]
    KeyTooLarge {
        /// Size of the refused key.
        bytes: u64,
        /// The limit, [`KEY_BYTES_MAX`].
        max: u64,
    },
    /// The value is longer than [`VALUE_BYTES_MAX`].
    #[error("value is {bytes} bytes, the limit is {max} bytes")]
    ValueTooLarge {
        /// Size of the refused value.
        bytes: u64,
        /// The limit, [`VALUE_BYTES_MAX`].
        max: u64,
    },
    /// A prefix is longer than [`KEY_BYTES_MAX`]; no key could match it.
    #[error("prefix is {bytes} bytes, the limit is {max} bytes")]
    PrefixTooLarge {
        /// Size of the refused prefix.
        bytes: u64,
        /// The limit, [`KEY_BYTES_MAX`].
        max: u64,
    },
}

/// Checks a key against the key rules: non-empty and at most [`KEY_BYTES_MAX`] bytes.
pub fn validate_key(key: &[u8]) -> Result<(), ValidationError> {
    if key.is_empty() {
        return Err(ValidationError::EmptyKey);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(ValidationError::KeyTooLarge {
            bytes: key.len() as u64,
            max: KEY_BYTES_MAX as u64,
        });
    }
    Ok(())
}

/// Checks a value against [`VALUE_BYTES_MAX`]. Empty values are allowed.
pub fn validate_value(value: &[u8]) -> Result<(), ValidationError> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(ValidationError::ValueTooLarge {
            bytes: value.len() as u64,
            max: VALUE_BYTES_MAX as u64,
        });
    }
    Ok(())
}

/// Checks a prefix for a prefix operation: at most [`KEY_BYTES_MAX`] bytes. The empty prefix
/// is allowed and matches every key.
pub fn validate_prefix(prefix: &[u8]) -> Result<(), ValidationError> {
    if prefix.len() > KEY_BYTES_MAX {
        return Err(ValidationError::PrefixTooLarge {
            bytes: prefix.len() as u64,
            max: KEY_BYTES_MAX as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_limits() {
        assert_eq!(validate_key(b""), Err(ValidationError::EmptyKey));
        assert_eq!(validate_key(&[b'k'; KEY_BYTES_MAX]), Ok(()));
        assert_eq!(
            validate_key(&[b'k'; KEY_BYTES_MAX + 1]),
            Err(ValidationError::KeyTooLarge {
                bytes: KEY_BYTES_MAX as u64 + 1,
                max: KEY_BYTES_MAX as u64
            })
        );
    }

    #[test]
    fn value_limits() {
        assert_eq!(validate_value(b""), Ok(()));
        assert_eq!(validate_value(&vec![0u8; VALUE_BYTES_MAX]), Ok(()));
        assert!(matches!(
            validate_value(&vec![0u8; VALUE_BYTES_MAX + 1]),
            Err(ValidationError::ValueTooLarge { .. })
        ));
    }

    #[test]
    fn prefix_limits() {
        assert_eq!(validate_prefix(b""), Ok(()));
        assert!(matches!(
            validate_prefix(&[b'p'; KEY_BYTES_MAX + 1]),
            Err(ValidationError::PrefixTooLarge { .. })
        ));
    }
}
