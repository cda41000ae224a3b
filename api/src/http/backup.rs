//! `GET /admin/backup` over REST: the backup's description in headers
//! ([`proto::rest::backup`]) and its snapshot file streamed as the body, in chunks of
//! [`BACKUP_CHUNK_BYTES`] with at most [`BACKUP_CHUNKS_QUEUED`] waiting, so a backup of any
//! size costs a node about a megabyte.
//!
//! Every other answer is a whole body ([`super::Body`]); this one cannot be. The handler
//! answers like the others, through the router, with an empty body and a [`Streamed`]
//! extension; the connection's service ([`super::handle`]) swaps the stream in as the body
//! ([`Answer`]) and hands it the request's busy guard, so that the connection counts as busy
//! (not idle, and not closed by `server.idle_timeout`) until the body has taken the last
//! chunk; what is then still on its way to the client keeps the connection open as any
//! answer being written does ([`super::limits::WRITE_STALL_TIMEOUT`]).
//!
//! A client that takes no chunk for [`BACKUP_STALL_TIMEOUT`] is given up on: the reader stops
//! and releases the busy guard, so the connection falls idle and is closed by the usual idle
//! timeout, and the file and the backup's place are freed. A read failure midway ends the
//! body with an error, which closes the connection: the client sees fewer bytes than
//! `Content-Length` announced, never a short body taken for a whole one.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::Either;
use hyper::body::{Frame, SizeHint};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use proto::rest::ErrorCode;
use proto::rest::backup::{BACKUP_CONTENT_TYPE, BACKUP_STALL_TIMEOUT};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::limits::BusyGuard;
use super::{ApiError, Body, Handled};
use crate::server::Server;
use crate::service::backup::{self as service, Backup};

/// Bytes read from the file and sent as one chunk.
pub const BACKUP_CHUNK_BYTES: usize = 256 * 1024;
/// Chunks read ahead of the client at most.
pub const BACKUP_CHUNKS_QUEUED: usize = 4;

/// What the connection's service sends: a whole body, or a backup's stream.
pub type Answer = Either<Body, BackupBody>;

/// A backup waiting to be streamed, carried from the handler to the connection's service as a
/// response extension (which must be `Clone`: the backup itself is taken once).
#[derive(Clone)]
pub struct Streamed(Arc<Mutex<Option<Backup>>>);

const STREAMED_LOCK: &str = "the streamed backup's lock is held only to take it";

/// `GET /admin/backup` (see [`service::backup`]).
pub async fn backup(server: Arc<Server>) -> Handled {
    let backup = service::backup(server).await?;
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(BACKUP_CONTENT_TYPE));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(backup.info.bytes));
    for (name, value) in backup.info.headers() {
        let value = HeaderValue::from_str(&value).map_err(|e| {
            ApiError::new(ErrorCode::Internal, format!("backup header {name}: {e}"))
        })?;
        headers.insert(HeaderName::from_static(name), value);
    }
    info!(
        index = backup.info.index,
        term = backup.info.term,
        keys = backup.info.keys,
        bytes = backup.info.bytes,
        sha256 = %backup.info.sha256,
        path = %backup.path.display(),
        "serving a backup"
    );
    response
        .extensions_mut()
        .insert(Streamed(Arc::new(Mutex::new(Some(backup)))));
    Ok(response)
}

/// The answer as the connection sends it: a backup's response gets its stream as the body,
/// which keeps `busy` until the last byte is out; any other keeps its whole body (and `busy`
/// is dropped here: the handler is done).
pub fn into_answer(mut response: Response<Body>, busy: BusyGuard) -> Response<Answer> {
    let backup = response
        .extensions_mut()
        .remove::<Streamed>()
        .and_then(|streamed| streamed.0.lock().expect(STREAMED_LOCK).take());
    match backup {
        Some(backup) => response.map(|_| Either::Right(BackupBody::start(backup, busy))),
        None => response.map(Either::Left),
    }
}

/// A backup's body: the chunks a reader task sends, in order, then the end.
pub struct BackupBody {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    bytes_left: u64,
}

impl BackupBody {
    /// Starts the reader task of `backup`'s file; it holds `busy` and the backup's place
    /// until it has sent the last chunk, failed, or given up on the client.
    fn start(backup: Backup, busy: BusyGuard) -> BackupBody {
        let (tx, chunks) = mpsc::channel(BACKUP_CHUNKS_QUEUED);
        let bytes_left = backup.info.bytes;
        crate::request_id::spawn_serving(send_file(backup, tx, busy));
        BackupBody { chunks, bytes_left }
    }
}

impl hyper::body::Body for BackupBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.chunks.poll_recv(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.bytes_left = self.bytes_left.saturating_sub(chunk.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) if self.bytes_left > 0 => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the backup ended {} bytes short", self.bytes_left),
            )))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.bytes_left)
    }
}

/// Reads `backup`'s file in chunks into `tx`, checking that it is as long as announced.
async fn send_file(backup: Backup, tx: mpsc::Sender<io::Result<Bytes>>, busy: BusyGuard) {
    let Backup {
        info,
        file,
        path,
        permit,
    } = backup;
    let mut file = tokio::fs::File::from_std(file);
    let mut sent = 0u64;
    let outcome = loop {
        let mut chunk = BytesMut::zeroed(BACKUP_CHUNK_BYTES);
        let n = match file.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        if n == 0 {
            break if sent == info.bytes {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file ended after {sent} of {} bytes", info.bytes),
                ))
            };
        }
        sent += n as u64;
        if sent > info.bytes {
            break Err(io::Error::other(format!(
                "the file grew past its {} checked bytes",
                info.bytes
            )));
        }
        chunk.truncate(n);
        match tx
            .send_timeout(Ok(chunk.freeze()), BACKUP_STALL_TIMEOUT)
            .await
        {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                warn!(
                    sent,
                    bytes = info.bytes,
                    stalled_s = BACKUP_STALL_TIMEOUT.as_secs(),
                    "gave up on a backup whose client stopped reading"
                );
                drop((busy, permit));
                return;
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                debug!(sent, bytes = info.bytes, "a backup's client went away");
                drop((busy, permit));
                return;
            }
        }
    };
    match outcome {
        Ok(()) => {
            // The last chunks are queued, not sent: the connection stays busy (so the idle
            // timeout cannot cut them off) and the backup keeps its place until the body has
            // taken every chunk, which `reserve_many` of the whole queue waits for, or the
            // client stalls for BACKUP_STALL_TIMEOUT.
            match tokio::time::timeout(BACKUP_STALL_TIMEOUT, tx.reserve_many(BACKUP_CHUNKS_QUEUED))
                .await
            {
                Ok(Ok(_)) => debug!(bytes = sent, index = info.index, "backup sent"),
                Ok(Err(_)) => debug!(sent, "a backup's client went away before its last chunks"),
                Err(_) => warn!(
                    sent,
                    stalled_s = BACKUP_STALL_TIMEOUT.as_secs(),
                    "gave up on a backup whose client stopped reading its last chunks"
                ),
            }
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "a backup failed while it was sent");
            // Ends the channel early: the body then ends in an error for the bytes still
            // missing, and hyper closes the connection mid-body. (Sending the error would wait
            // behind a client that stopped reading, with the connection kept busy.)
        }
    }
    drop((tx, busy, permit));
}
