//! The WAL's error type.
//!
//! Corruption (bytes on disk that cannot be what we wrote) is a different variant from an I/O
//! failure, and both name the file (and, for corruption, the byte offset) so that an operator can
//! look at the damage. A failed fsync poisons the log: the kernel may have dropped the dirty pages,
//! so retrying could report durability that does not exist (the "fsyncgate" lesson).

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An operating-system call failed on a WAL file or directory.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the call was made on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Another process (or another handle in this one) holds the data directory's lock.
    #[error(
        "the WAL directory {dir} is locked by another process (is another node running on it?)"
    )]
    Locked {
        /// The locked directory.
        dir: PathBuf,
    },

    /// Bytes on disk are damaged in a place where damage cannot be explained by a crash.
    #[error("corrupt WAL file {path} at byte offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// An append, truncation or read asked for something the log cannot do.
    #[error("invalid WAL operation: {0}")]
    InvalidOperation(String),

    /// A record's payload is larger than [`crate::PAYLOAD_BYTES_MAX`].
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// The payload's length.
        len: u64,
        /// The limit.
        max: u64,
    },

    /// The configuration is out of range.
    #[error("invalid WAL configuration: {0}")]
    InvalidConfig(String),

    /// A write or fsync failed in a way that leaves what is on disk unknown (this call's or an
    /// earlier one's); the log refuses all further work until it is reopened.
    #[error(
        "the WAL stopped taking writes after a failed write or fsync ({0}): what is on disk is unknown; restart the node"
    )]
    Poisoned(String),
}

impl WalError {
    /// Builds an [`WalError::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds a [`WalError::Corrupt`].
    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        WalError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// True when a write failed because the disk (or a quota) is full and the log is still
    /// usable (a failure that poisoned the log is [`WalError::Poisoned`], whatever its cause).
    /// Such a failure leaves the log whole and unpoisoned: an append may have kept a prefix of its batch (the
    /// segments it filled before a new one could not be created; not durable until a sync),
    /// never a half-written record. The caller may retry once space is freed, from
    /// `last_index() + 1` or after truncating what it no longer wants.
    pub fn is_no_space(&self) -> bool {
        matches!(self, WalError::Io { source, .. } if crate::fs::is_no_space(source))
    }

    /// True for damage on disk (as opposed to I/O failure or misuse).
    pub fn is_corruption(&self) -> bool {
        matches!(self, WalError::Corrupt { .. })
    }
}

/// The WAL's result type.
pub type Result<T, E = WalError> = std::result::Result<T, E>;
