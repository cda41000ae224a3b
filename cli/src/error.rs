//! The client's typed errors.
//!
//! Job: turn every way a request can fail — a bad endpoint, a refused connection, a timeout,
//! an error answer from the server, an answer that does not follow docs/api.md — into one
//! [`Error`] value whose `Display` is a single line a person can act on.
//!
//! Invariants:
//! - every error answer of the API maps by its stable `code` token (never by its sentence);
//! - an answer the client cannot make sense of is [`Error::Protocol`], never a panic;
//! - no `Display` output contains a newline (the CLI prints exactly one line per error).

use std::fmt;

use proto::rest::{ErrorBody, ErrorCode};

/// Result of every client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Most bytes of a server's error sentence kept in an [`Error`]: enough for any sentence the
/// server writes, short enough that a hostile server cannot make the one error line huge.
pub const SERVER_MESSAGE_BYTES_MAX: usize = 512;

/// Everything a client call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An endpoint given to the client is not of the form `http://host:port`.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The key does not exist (`404 not_found`).
    #[error("key not found: {key}")]
    NotFound {
        /// The key, printable (non-UTF-8 bytes escaped).
        key: String,
    },
    /// A compare-and-swap whose condition did not hold (`409 cas_failed`).
    #[error(
        "compare-and-swap failed: the key's current version is {current_version} (0: no such key)"
    )]
    CasFailed {
        /// The key's version when the condition was checked; 0 when the key does not exist.
        current_version: u64,
    },
    /// The cluster cannot serve the request now (`503`): no leader within the server's
    /// timeout, the node shutting down or not ready, a leadership transfer under way, failed
    /// storage. The message ends with the server's code.
    #[error("unavailable: {0}")]
    NoLeader(String),
    /// A cluster command named a node that is not a member (`404 unknown_member`).
    #[error("unknown member: {0}")]
    UnknownMember(String),
    /// The outcome of the request is unknown: the server answered `504 timeout`, or no answer
    /// came in time after the request was sent. A write may or may not have been applied.
    #[error("timed out, outcome unknown: {0}")]
    Timeout(String),
    /// A key, value or body over its limit (`413 too_large`, or checked before sending).
    #[error("too large: {0}")]
    TooLarge(String),
    /// The server rejected the request as malformed (`400 bad_request`).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No credential, or one the cluster does not accept (`401 unauthenticated`): log in
    /// again, or check the API key.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// The credential's role does not allow the request (`403 permission_denied`).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A client-session write the server no longer remembers (`409 session_expired`):
    /// register a new session.
    #[error("session expired: {0}")]
    SessionExpired(String),
    /// Any other error answer that follows the API's error format (for example
    /// `409 conf_change_in_progress` or `409 stale_sequence`).
    #[error("server refused ({status} {code}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The API's stable error token.
        code: String,
        /// The server's sentence.
        message: String,
    },
    /// Every attempt on every endpoint failed; one entry per endpoint with its last failure.
    #[error("all endpoints failed: {}", DisplayAttempts(.0))]
    Unavailable(Vec<EndpointFailure>),
    /// The server's answer does not follow docs/api.md.
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// A backup's body did not arrive whole: cut short, stalled, longer than announced, or
    /// with another SHA-256 than the server announced. What was received must be discarded.
    #[error("the backup did not arrive whole: {0}")]
    BackupIncomplete(String),
    /// A backup's bytes could not be written where the caller asked.
    #[error("writing the backup failed: {0}")]
    BackupWrite(String),
}

/// The last failure seen on one endpoint, listed by [`Error::Unavailable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFailure {
    /// The endpoint, as `http://host:port`.
    pub endpoint: String,
    /// What went wrong there, one line.
    pub reason: String,
}

struct DisplayAttempts<'a>(&'a [EndpointFailure]);

impl fmt::Display for DisplayAttempts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no endpoint was tried");
        }
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", failure.endpoint, failure.reason)?;
        }
        Ok(())
    }
}

impl Error {
    /// A short stable name of the variant, for counting errors (the load generator) and for
    /// `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidEndpoint { .. } => "invalid_endpoint",
            Error::NotFound { .. } => "not_found",
            Error::CasFailed { .. } => "cas_failed",
            Error::NoLeader(_) => "no_leader",
            Error::UnknownMember(_) => "unknown_member",
            Error::Timeout(_) => "timeout",
            Error::TooLarge(_) => "too_large",
            Error::BadRequest(_) => "bad_request",
            Error::SessionExpired(_) => "session_expired",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::PermissionDenied(_) => "permission_denied",
            Error::Rejected { .. } => "rejected",
            Error::BackupIncomplete(_) => "backup_incomplete",
            Error::BackupWrite(_) => "backup_write",
            Error::Unavailable(_) => "unavailable",
            Error::Protocol(_) => "protocol",
        }
    }
}

/// Maps an error answer (`status` ≥ 300) to an [`Error`]. `key` names the key of a key
/// request, for [`Error::NotFound`].
pub(crate) fn from_response(status: u16, body: &[u8], key: Option<&[u8]>) -> Error {
    let parsed: ErrorBody = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(_) => {
            return Error::Protocol(format!(
                "HTTP {status} without the API's JSON error body: {}",
                printable(body, SERVER_MESSAGE_BYTES_MAX)
            ));
        }
    };
    let message = one_line(&parsed.error);
    let code = ErrorCode::from_token(&parsed.code).filter(|c| c.http_status() == status);
    match (status, code) {
        (_, Some(ErrorCode::NotFound)) => Error::NotFound {
            key: key.map_or_else(|| message.clone(), |k| printable(k, usize::MAX)),
        },
        (_, Some(ErrorCode::CasFailed)) => {
            match parsed.extra.get("current_version").and_then(|v| v.as_u64()) {
                Some(current_version) => Error::CasFailed { current_version },
                None => Error::Protocol("409 cas_failed without current_version".to_owned()),
            }
        }
        (_, Some(ErrorCode::SessionExpired)) => Error::SessionExpired(message),
        (_, Some(ErrorCode::Unauthenticated)) => Error::Unauthenticated(message),
        (_, Some(ErrorCode::PermissionDenied)) => Error::PermissionDenied(message),
        (_, Some(ErrorCode::UnknownMember)) => Error::UnknownMember(message),
        (413, _) => Error::TooLarge(message),
        (400, _) => Error::BadRequest(message),
        (503, _) => Error::NoLeader(format!("{message} ({})", one_line(&parsed.code))),
        (504, _) => Error::Timeout(message),
        _ => Error::Rejected {
            status,
            code: one_line(&parsed.code),
            message,
        },
    }
}

/// A server-supplied string made safe for a one-line error: control characters escaped and
/// the length bounded by [`SERVER_MESSAGE_BYTES_MAX`].
pub(crate) fn one_line(text: &str) -> String {
    printable(text.as_bytes(), SERVER_MESSAGE_BYTES_MAX)
}

/// Bytes as text for a person: UTF-8 kept as is except control characters, everything else
/// escaped as `\xNN`; cut after `max_bytes` input bytes with a trailing `...`.
pub fn printable(bytes: &[u8], max_bytes: usize) -> String {
    let cut = bytes.len() > max_bytes;
    let bytes = if cut { &bytes[..max_bytes] } else { bytes };
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if cut {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_variants() {
        let body = br#"{"error":"no such key","code":"not_found"}"#;
        assert_eq!(
            from_response(404, body, Some(b"a/b")),
            Error::NotFound { key: "a/b".into() }
        );
        let body = br#"{"error":"x","code":"cas_failed","current_version":7}"#;
        assert_eq!(
            from_response(409, body, None),
            Error::CasFailed { current_version: 7 }
        );
        let body = br#"{"error":"big","code":"too_large"}"#;
        assert_eq!(
            from_response(413, body, None),
            Error::TooLarge("big".into())
        );
        let body = br#"{"error":"bye","code":"shutting_down"}"#;
        assert_eq!(
            from_response(503, body, None),
            Error::NoLeader("bye (shutting_down)".into())
        );
        let body = br#"{"error":"ghost is not a member","code":"unknown_member"}"#;
        assert_eq!(
            from_response(404, body, None).to_string(),
            "unknown member: ghost is not a member"
        );
        let body = br#"{"error":"busy","code":"conf_change_in_progress"}"#;
        assert!(matches!(
            from_response(409, body, None),
            Error::Rejected { status: 409, ref code, .. } if code == "conf_change_in_progress"
        ));
        assert!(matches!(
            from_response(500, b"<html>oops</html>", None),
            Error::Protocol(_)
        ));
        // An unknown route is not a missing key.
        let body = br#"{"error":"no route","code":"no_route"}"#;
        assert!(matches!(
            from_response(404, body, None),
            Error::Rejected { .. }
        ));
    }

    #[test]
    fn displays_are_one_line() {
        let body = b"{\"error\":\"line1\\nline2\",\"code\":\"bad_request\"}";
        let shown = from_response(400, body, None).to_string();
        assert!(!shown.contains('\n'), "{shown}");
        let unavailable = Error::Unavailable(vec![
            EndpointFailure {
                endpoint: "http://a:1".into(),
                reason: "connection refused".into(),
            },
            EndpointFailure {
                endpoint: "http://b:2".into(),
                reason: "no leader".into(),
            },
        ]);
        assert_eq!(
            unavailable.to_string(),
            "all endpoints failed: http://a:1: connection refused; http://b:2: no leader"
        );
    }

    #[test]
    fn printable_escapes_and_bounds() {
        assert_eq!(printable(b"a b\xffc\n", 100), "a b\\xffc\\n");
        assert_eq!(printable(b"abcdef", 3), "abc...");
    }
}
