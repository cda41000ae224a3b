//! The contract of `GET /admin/backup` (docs/api.md, "Backup"): the route, the headers that
//! describe the backup streamed as the body, and [`BackupInfo`], what they carry once parsed.
//!
//! The body is a snapshot file of the cluster's state (the `kv` crate's snapshot format) and
//! nothing else, so that a saved backup is checked by the same reader that checks any
//! snapshot. What describes it travels in headers, sent before the body: the server computes
//! the SHA-256 of the whole file before it answers, and the client checks the bytes it
//! received against it.
//!
//! Invariant: the server writes these headers with [`BackupInfo::headers`] and every reader
//! parses them with [`BackupInfo::from_headers`]; no header name is spelled anywhere else. The
//! digest is written as text by [`hex`] on both sides, so the two compare as strings.

use std::time::Duration;

/// The route.
pub const BACKUP_PATH: &str = "/admin/backup";
/// The body's media type: the snapshot file's bytes.
pub const BACKUP_CONTENT_TYPE: &str = "application/octet-stream";
/// The last log index the backup covers: every write acknowledged before the request was
/// made is at or below it.
pub const BACKUP_INDEX: &str = "x-raftkv-backup-index";
/// The term of the entry at [`BACKUP_INDEX`].
pub const BACKUP_TERM: &str = "x-raftkv-backup-term";
/// How many keys the backup holds.
pub const BACKUP_KEYS: &str = "x-raftkv-backup-keys";
/// The body's length in bytes (also in `Content-Length`, which a proxy may drop).
pub const BACKUP_BYTES: &str = "x-raftkv-backup-bytes";
/// The SHA-256 of the whole body, as [`SHA256_HEX_CHARS`] lowercase hex digits.
pub const BACKUP_SHA256: &str = "x-raftkv-backup-sha256";
/// The cluster the backup was taken of (16 hex digits).
pub const BACKUP_CLUSTER_ID: &str = "x-raftkv-backup-cluster-id";
/// Length of a SHA-256 digest in hex.
pub const SHA256_HEX_CHARS: usize = 64;

/// Longest a node waits for the snapshot a backup is taken from before it answers
/// `504 timeout`. Minutes, not the seconds of other requests: writing a snapshot of a state of
/// several GB takes that long, and the time is spent once, on the node asked. A client waits
/// longer than this for the answer's head, which comes only after the snapshot and a pass that
/// checks and hashes the whole file.
pub const BACKUP_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Longest either side waits on the other while the body streams: a node gives up on a client
/// that takes no chunk for this long, and a client on a node that sends none.
pub const BACKUP_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a backup is, as its answer's headers say.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupInfo {
    /// The last log index the backup covers.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// How many keys it holds.
    pub keys: u64,
    /// The body's length in bytes.
    pub bytes: u64,
    /// The SHA-256 of the body, lowercase hex.
    pub sha256: String,
    /// The cluster it was taken of.
    pub cluster_id: String,
}

/// Why an answer's headers do not describe a backup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BackupHeaderError(pub String);

/// Lowercase hex of `bytes`, two digits a byte: how [`BACKUP_SHA256`] writes a digest.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    text
}

/// Whether `text` is a SHA-256 digest as [`BACKUP_SHA256`] carries it.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == SHA256_HEX_CHARS
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BackupInfo {
    /// The headers that carry it, names and values.
    pub fn headers(&self) -> [(&'static str, String); 6] {
        [
            (BACKUP_INDEX, self.index.to_string()),
            (BACKUP_TERM, self.term.to_string()),
            (BACKUP_KEYS, self.keys.to_string()),
            (BACKUP_BYTES, self.bytes.to_string()),
            (BACKUP_SHA256, self.sha256.clone()),
            (BACKUP_CLUSTER_ID, self.cluster_id.clone()),
        ]
    }

    /// Parses the headers an answer carries; `header` looks one up by name (`None` when it is
    /// missing or not text). Every header must be there and well formed.
    pub fn from_headers<'a>(
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<BackupInfo, BackupHeaderError> {
        let text = |name: &str| {
            header(name).map(str::trim).ok_or_else(|| {
                BackupHeaderError(format!(
                    "the answer has no {name} header: is this a RaftKV backup answer?"
                ))
            })
        };
        let number = |name: &str| {
            text(name)?
                .parse::<u64>()
                .map_err(|_| BackupHeaderError(format!("the {name} header is not a whole number")))
        };
        let sha256 = text(BACKUP_SHA256)?.to_string();
        if !is_sha256_hex(&sha256) {
            return Err(BackupHeaderError(format!(
                "the {BACKUP_SHA256} header is not {SHA256_HEX_CHARS} lowercase hex digits"
            )));
        }
        Ok(BackupInfo {
            index: number(BACKUP_INDEX)?,
            term: number(BACKUP_TERM)?,
            keys: number(BACKUP_KEYS)?,
            bytes: number(BACKUP_BYTES)?,
            sha256,
            cluster_id: text(BACKUP_CLUSTER_ID)?.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BackupInfo {
        BackupInfo {
            index: 42,
            term: 3,
            keys: 7,
            bytes: 1234,
            sha256: "ab".repeat(32),
            cluster_id: "00000000000000ff".into(),
        }
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(hex(&[]), "");
        assert!(is_sha256_hex(&hex(&[0x5a; 32])));
    }

    #[test]
    fn the_headers_read_back_as_what_was_written() {
        let info = sample();
        let headers = info.headers();
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(BackupInfo::from_headers(lookup), Ok(info));
    }

    #[test]
    fn a_missing_or_malformed_header_is_refused_by_name() {
        let info = sample();
        let headers = info.headers();
        let without_index = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name && *n != BACKUP_INDEX)
                .map(|(_, v)| v.as_str())
        };
        let e = BackupInfo::from_headers(without_index).unwrap_err();
        assert!(e.0.contains(BACKUP_INDEX), "{e}");
        let bad = |name: &str| match name {
            BACKUP_SHA256 => Some("ABC"),
            _ => Some("1"),
        };
        let e = BackupInfo::from_headers(bad).unwrap_err();
        assert!(e.0.contains(BACKUP_SHA256), "{e}");
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(is_sha256_hex(&"0f".repeat(32)));
    }
}
