//! Downloading a backup (`GET /admin/backup`, [`proto::rest::backup`]): the one answer the
//! client streams instead of collecting, because a backup is as large as the cluster's state.
//!
//! Job: find an endpoint that serves the backup (the endpoints in the order given, as for the
//! other requests about one node; any node serves a consistent backup), then pass its bytes to
//! the caller's writer as they arrive while SHA-256 runs over them, and check at the end that
//! exactly the announced bytes came, with the announced digest.
//!
//! Waiting: the node answers only once it has taken a snapshot of its state and checked and
//! hashed the whole file, which on a state of several GB takes minutes (the node bounds its
//! snapshot by [`BACKUP_SNAPSHOT_TIMEOUT`]). So the answer's head is awaited for the caller's
//! `wait` ([`BACKUP_HEAD_TIMEOUT_DEFAULT`] unless told), not for
//! [`ClientOptions::call_timeout`](crate::ClientOptions::call_timeout); each chunk of the body
//! then for [`BACKUP_STALL_TIMEOUT`].
//!
//! Invariants: the next endpoint is tried only when this one was not reached (the connection
//! could not be opened) or refused at once because it is busy (`503 overloaded`,
//! `503 too_many_connections`), before it took any snapshot. A node that was asked and gave no
//! head in time, or dropped the connection, may be writing its snapshot still: asking another
//! would make a second node do the same work, so the call fails instead and says so. Once a
//! byte was written to the caller's writer the call never moves to another endpoint (the writer
//! holds part of one backup). A short, long, stalled or mismatching body is
//! [`Error::BackupIncomplete`], never a success.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use proto::rest::backup::{
    BACKUP_PATH, BACKUP_SNAPSHOT_TIMEOUT, BACKUP_STALL_TIMEOUT, BackupInfo, hex,
};
use proto::rest::{ErrorBody, ErrorCode};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::endpoint::Protocol;
use super::retry::error_chain;
use super::{Client, RESPONSE_BYTES_MAX};
use crate::error::{EndpointFailure, Error, Result, from_response, one_line};

/// Time a client allows a node beyond its snapshot bound ([`BACKUP_SNAPSHOT_TIMEOUT`]) for
/// the rest of the work before the answer's head: the read barrier (seconds) and the pass that
/// checks and hashes the whole file, which at a disk's 100 MB/s reads 30 GB in five minutes.
pub const BACKUP_CHECK_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// Default longest wait for a backup's answer head: the node's snapshot bound and
/// [`BACKUP_CHECK_ALLOWANCE`], so that a node that will answer is waited for.
pub const BACKUP_HEAD_TIMEOUT_DEFAULT: Duration =
    Duration::from_secs(BACKUP_SNAPSHOT_TIMEOUT.as_secs() + BACKUP_CHECK_ALLOWANCE.as_secs());

/// Whether a refusal sends the download on to the next endpoint: only a node at its limit,
/// which refuses before it takes a snapshot and which another node may well not be at.
fn busy_refusal(status: u16, body: &[u8]) -> bool {
    let code = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|parsed| ErrorCode::from_token(&parsed.code));
    status == 503
        && matches!(
            code,
            Some(ErrorCode::Overloaded | ErrorCode::TooManyConnections)
        )
}

impl Client {
    /// Downloads a consistent backup of the cluster from the first endpoint that serves it
    /// (`GET /admin/backup`, needs the admin role when authentication is on), writing its
    /// bytes to `out` as they arrive, and flushing it at the end. `wait` bounds the time
    /// until the answer's head, which a node sends after its snapshot (see the module
    /// documentation; [`BACKUP_HEAD_TIMEOUT_DEFAULT`] suits any node). Returns what the backup
    /// is once every byte came and the SHA-256 matched; `out` then holds exactly the backup.
    /// On any error `out` may hold part of one: the caller discards it.
    pub async fn backup(
        &self,
        out: &mut (dyn AsyncWrite + Unpin + Send),
        wait: Duration,
    ) -> Result<BackupInfo> {
        let inner = &*self.inner;
        let mut failures = Vec::new();
        for endpoint in &inner.endpoints {
            let failure = |reason: String| EndpointFailure {
                endpoint: endpoint.base.clone(),
                reason,
            };
            if endpoint.protocol == Protocol::Grpc {
                failures.push(failure(
                    "a backup is served over REST only: give the node's http:// endpoint"
                        .to_owned(),
                ));
                continue;
            }
            let uri = format!("{}{BACKUP_PATH}", endpoint.base);
            let mut builder = Request::get(&uri);
            if let Some((name, value)) = self.credential().header() {
                builder = builder.header(name, value);
            }
            let request = builder
                .body(Full::new(Bytes::new()))
                .map_err(|e| Error::BadRequest(format!("cannot form a request for {uri}: {e}")))?;
            let response = match tokio::time::timeout(wait, inner.http.request(request)).await {
                Err(_) => {
                    return Err(Error::Timeout(format!(
                        "{}: no answer to the backup within {:?}; the node may still be taking its snapshot (not asking another node, which would take one too): retry later or with a longer --wait",
                        endpoint.base, wait
                    )));
                }
                Ok(Err(e)) if e.is_connect() => {
                    failures.push(failure(error_chain(&e)));
                    continue;
                }
                Ok(Err(e)) => {
                    failures.push(failure(format!(
                        "{} (not asking another node: this one may have been taking its snapshot)",
                        error_chain(&e)
                    )));
                    return Err(Error::Unavailable(failures));
                }
                Ok(Ok(response)) => response,
            };
            let (parts, body) = response.into_parts();
            let status = parts.status.as_u16();
            if !(200..300).contains(&status) {
                // Bounded like the backup's own body: a node or proxy that sends an error's
                // head and then stalls must not hold the command forever.
                let collected = tokio::time::timeout(
                    BACKUP_STALL_TIMEOUT,
                    Limited::new(body, RESPONSE_BYTES_MAX).collect(),
                )
                .await;
                let text = match collected {
                    Ok(Ok(collected)) => collected.to_bytes(),
                    _ => Bytes::new(),
                };
                let error = from_response(status, &text, None);
                if busy_refusal(status, &text) {
                    failures.push(failure(error.to_string()));
                    continue;
                }
                return Err(error);
            }
            let info = BackupInfo::from_headers(|name| {
                parts.headers.get(name).and_then(|v| v.to_str().ok())
            })
            .map_err(|e| Error::Protocol(format!("{}: {e}", endpoint.base)))?;
            return receive(body, &info, out).await.map(|()| info);
        }
        Err(Error::Unavailable(failures))
    }
}

/// Passes `body` to `out`, checking it against `info`: its length and its SHA-256.
async fn receive(
    mut body: hyper::body::Incoming,
    info: &BackupInfo,
    out: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<()> {
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let incomplete = |received: u64, why: &str| {
        Error::BackupIncomplete(format!("{why} after {received} of {} bytes", info.bytes))
    };
    let write_failed = |e: std::io::Error| Error::BackupWrite(one_line(&e.to_string()));
    loop {
        let frame = match tokio::time::timeout(BACKUP_STALL_TIMEOUT, body.frame()).await {
            Err(_) => {
                return Err(incomplete(
                    received,
                    &format!("no data for {} s", BACKUP_STALL_TIMEOUT.as_secs()),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(incomplete(
                    received,
                    &format!("the download broke ({})", one_line(&e.to_string())),
                ));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // Trailers carry nothing of the backup.
        };
        received += data.len() as u64;
        if received > info.bytes {
            return Err(incomplete(received, "more bytes than announced came"));
        }
        hasher.update(&data);
        out.write_all(&data).await.map_err(write_failed)?;
    }
    if received != info.bytes {
        return Err(incomplete(received, "the download ended"));
    }
    out.flush().await.map_err(write_failed)?;
    let digest = hex(&hasher.finalize());
    if digest != info.sha256 {
        return Err(Error::BackupIncomplete(format!(
            "the {} bytes received have SHA-256 {digest}, the server announced {}: damaged on the way",
            info.bytes, info.sha256
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_busy_node_sends_the_download_elsewhere() {
        let body = |code: &str| format!(r#"{{"error":"e","code":"{code}"}}"#).into_bytes();
        assert!(busy_refusal(503, &body("overloaded")));
        assert!(busy_refusal(503, &body("too_many_connections")));
        assert!(!busy_refusal(503, &body("no_leader")));
        assert!(!busy_refusal(504, &body("timeout")));
        assert!(!busy_refusal(503, b"not json"));
    }

    #[test]
    fn the_default_wait_outlasts_the_node_s_snapshot_bound() {
        assert!(BACKUP_HEAD_TIMEOUT_DEFAULT > BACKUP_SNAPSHOT_TIMEOUT);
    }
}
