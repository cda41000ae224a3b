//! Downloading a backup (`GET /admin/backup`, [`proto::rest::backup`]): the one answer the
//! client streams instead of collecting, because a backup is as large as the cluster's state.
//!
//! Job: find an endpoint that serves the backup (the endpoints in the order given, as for the
//! other requests about one node; any node serves a consistent backup), then pass its bytes to
//! the caller's writer as they arrive while SHA-256 runs over them, and check at the end that
//! exactly the announced bytes came, with the announced digest.
//!
//! Invariants: a backup is a read, so an endpoint that could not be reached, or answered
//! `503`, is followed by the next; once a byte was written to the caller's writer the call
//! never moves to another endpoint (the writer holds part of one backup). The answer's head
//! is bounded by [`ClientOptions::call_timeout`](crate::ClientOptions::call_timeout), each
//! chunk of its body by [`BACKUP_STALL_TIMEOUT`]; a short, long, stalled or mismatching body
//! is [`Error::BackupIncomplete`], never a success.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use proto::rest::backup::{BACKUP_PATH, BackupInfo};
use sha2::{Digest, Sha256};

use super::endpoint::Protocol;
use super::{Client, RESPONSE_BYTES_MAX};
use crate::error::{EndpointFailure, Error, Result, from_response, one_line};

/// Longest wait for the next chunk of a backup's body before the download is given up.
pub const BACKUP_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Client {
    /// Downloads a consistent backup of the cluster from the first endpoint that serves it
    /// (`GET /admin/backup`, needs the admin role when authentication is on), writing its
    /// bytes to `out` as they arrive. Returns what the backup is once every byte came and the
    /// SHA-256 matched; `out` then holds exactly the backup. On any error `out` may hold part
    /// of one: the caller discards it.
    pub async fn backup(&self, out: &mut (dyn Write + Send)) -> Result<BackupInfo> {
        let inner = &*self.inner;
        let mut failures = Vec::new();
        for endpoint in &inner.endpoints {
            let mut failed = |reason: String| {
                failures.push(EndpointFailure {
                    endpoint: endpoint.base.clone(),
                    reason,
                })
            };
            if endpoint.protocol == Protocol::Grpc {
                failed(
                    "a backup is served over REST only: give the node's http:// endpoint"
                        .to_owned(),
                );
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
            let asked =
                tokio::time::timeout(inner.options.call_timeout, inner.http.request(request));
            let response = match asked.await {
                Err(_) => {
                    failed(format!(
                        "no answer within {} ms",
                        inner.options.call_timeout.as_millis()
                    ));
                    continue;
                }
                Ok(Err(e)) => {
                    failed(one_line(&e.to_string()));
                    continue;
                }
                Ok(Ok(response)) => response,
            };
            let (parts, body) = response.into_parts();
            let status = parts.status.as_u16();
            if !(200..300).contains(&status) {
                let text = match Limited::new(body, RESPONSE_BYTES_MAX).collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => Bytes::new(),
                };
                let error = from_response(status, &text, None);
                if status == 503 {
                    failed(error.to_string());
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
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let incomplete = |received: u64, why: &str| {
        Error::BackupIncomplete(format!("{why} after {received} of {} bytes", info.bytes))
    };
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
        out.write_all(&data)
            .map_err(|e| Error::BackupWrite(one_line(&e.to_string())))?;
    }
    if received != info.bytes {
        return Err(incomplete(received, "the download ended"));
    }
    let digest = hex(&hasher.finalize());
    if digest != info.sha256 {
        return Err(Error::BackupIncomplete(format!(
            "the {} bytes received have SHA-256 {digest}, the server announced {}: damaged on the way",
            info.bytes, info.sha256
        )));
    }
    Ok(())
}
