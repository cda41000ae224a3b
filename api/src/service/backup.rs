//! A consistent backup of the running cluster (`GET /admin/backup`), served by any node: the
//! snapshot file of its applied state, after a linearizable read barrier, checked and hashed
//! before a byte of it is sent.
//!
//! Consistency: the node first waits, as a linearizable read does, for a read index confirmed
//! by the leader and applied here ([`raft::node::Node::read_index`]); every write acknowledged
//! before the request arrived is at or below that index. It then takes a snapshot of its
//! applied state (or, when nothing was applied since its newest snapshot, uses that one, which
//! already holds the whole applied state), so the file covers at least the read index.
//!
//! Memory: the file is read twice, never held: once here, through the snapshot reader that
//! checks all of it (magic, checksum, structure, invariants) while SHA-256 runs over the same
//! bytes, and once by the protocol layer that streams it. Both read from one open handle,
//! which stays valid on Linux when the node prunes the file meanwhile.
//!
//! Time: the snapshot may take minutes on a state of several GB, so it is bounded by
//! [`BACKUP_SNAPSHOT_TIMEOUT`], not by the seconds of other requests; the check-and-hash pass
//! reads the file at disk speed and is not bounded (it ends with the file). The answer's head
//! goes out only after both, and clients wait for it accordingly.
//!
//! Invariants: the file served covers an index at or above the read barrier's; it belongs to
//! this node's cluster; its SHA-256, length and key count are those of the bytes sent; at most
//! [`BACKUPS_IN_FLIGHT_MAX`] backups use this node's disk at once: a backup's place is held
//! from the request until its last byte is sent, or until its snapshot and check end when the
//! client goes away first (the preparation runs in a task of its own, which the client's
//! going away does not cancel).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proto::rest::ErrorCode;
use proto::rest::backup::{BACKUP_SNAPSHOT_TIMEOUT, BackupInfo, hex};
use raft::core::LogIndex;
use raft::node::NodeError;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::route::await_leader;
use super::{ApiError, within};
use crate::server::Server;
use crate::server::data_dir::SNAPSHOTS_DIR;

/// Most backups one node serves at once: each takes a snapshot and reads a whole file twice,
/// so a few at once already use the disk; one more is answered `503 overloaded`.
pub const BACKUPS_IN_FLIGHT_MAX: usize = 2;

/// How many times a backup looks for its snapshot file again when the node pruned it between
/// the snapshot and the open (it keeps the newest three, so this takes three snapshots in that
/// instant: one retry is nearly always enough).
pub const BACKUP_ATTEMPTS_MAX: usize = 3;

/// The backups being served by this process (one node per process).
static IN_FLIGHT: Semaphore = Semaphore::const_new(BACKUPS_IN_FLIGHT_MAX);

/// A backup ready to stream: what it is, and its file, open and positioned at its start.
pub struct Backup {
    /// What the answer's headers say.
    pub info: BackupInfo,
    /// The snapshot file, at offset 0.
    pub file: File,
    /// The file's path, for logs.
    pub path: PathBuf,
    /// This backup's place among the [`BACKUPS_IN_FLIGHT_MAX`]: hold it until the last byte
    /// is sent.
    pub permit: SemaphorePermit<'static>,
}

/// Prepares a consistent backup of the cluster on this node (see the module documentation).
/// `503 overloaded` when [`BACKUPS_IN_FLIGHT_MAX`] are being served; the read barrier's and
/// the snapshot's errors as a linearizable read and `POST /admin/snapshot` answer them, but
/// the snapshot is given [`BACKUP_SNAPSHOT_TIMEOUT`].
pub async fn backup(server: Arc<Server>) -> Result<Backup, ApiError> {
    let permit = IN_FLIGHT.try_acquire().map_err(|_| {
        ApiError::new(
            ErrorCode::Overloaded,
            format!(
                "this node is serving {BACKUPS_IN_FLIGHT_MAX} backups already; retry once one is done, or ask another node"
            ),
        )
    })?;
    // A task of its own, holding the permit: when the client goes away hyper drops this
    // future, but the node's snapshot and the blocking pass over the file go on to their end,
    // and the permit must stay taken until then or the limit would not limit the disk work.
    crate::request_id::spawn_serving(prepare(server, permit))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("preparing the backup: {e}")))?
}

/// [`backup`] once its place among the [`BACKUPS_IN_FLIGHT_MAX`] is taken.
async fn prepare(
    server: Arc<Server>,
    permit: SemaphorePermit<'static>,
) -> Result<Backup, ApiError> {
    let server = &*server;
    await_leader(server).await?;
    let read_index = within(server.node.read_index()).await?;
    let dir = server.config.storage.data_dir.join(SNAPSHOTS_DIR);
    for _ in 0..BACKUP_ATTEMPTS_MAX {
        let index = snapshot_index(server).await?;
        if index < read_index {
            return Err(ApiError::new(
                ErrorCode::Internal,
                format!(
                    "the snapshot at index {} is older than the read index {}; this is a bug",
                    index.0, read_index.0
                ),
            ));
        }
        let Some(path) =
            kv::SnapshotStore::file_at(&dir, index.0).map_err(|e| io_failure(&dir, e))?
        else {
            continue; // Pruned already by newer snapshots: take one again.
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_failure(&path, e)),
        };
        let checked_path = path.clone();
        let checked = tokio::task::spawn_blocking(move || check_and_hash(file, &checked_path))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("checking the backup: {e}")))?;
        let (info, file) = checked?;
        if LogIndex(info.index) < read_index {
            return Err(ApiError::new(
                ErrorCode::Internal,
                format!(
                    "the snapshot file {} holds index {}, below the read index {}; this is a bug",
                    path.display(),
                    info.index,
                    read_index.0
                ),
            ));
        }
        if info.cluster_id != server.cluster_id.to_string() {
            return Err(ApiError::new(
                ErrorCode::Internal,
                format!(
                    "the snapshot file {} belongs to cluster {}, this node to {}",
                    path.display(),
                    info.cluster_id,
                    server.cluster_id
                ),
            ));
        }
        return Ok(Backup {
            info,
            file,
            path,
            permit,
        });
    }
    Err(ApiError::new(
        ErrorCode::Overloaded,
        format!(
            "the node pruned each of its {BACKUP_ATTEMPTS_MAX} newest snapshots before it could open them (it is taking snapshots very fast); retry"
        ),
    ))
}

/// The index of a snapshot of this node's whole applied state: a new one, or the newest one
/// when nothing was applied since (then the refusal names it). `504 timeout` after
/// [`BACKUP_SNAPSHOT_TIMEOUT`].
async fn snapshot_index(server: &Server) -> Result<LogIndex, ApiError> {
    let asked = tokio::time::timeout(BACKUP_SNAPSHOT_TIMEOUT, server.node.snapshot_now())
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "the snapshot for the backup took longer than {} s; the node finishes it in the background: retry once it is done (nothing applied since, it is served as it is)",
                    BACKUP_SNAPSHOT_TIMEOUT.as_secs()
                ),
            )
        })?;
    match asked {
        Ok(meta) => Ok(meta.index),
        Err(NodeError::Rejected(raft::core::Error::SnapshotOutOfDate { current, .. })) => {
            Ok(current)
        }
        Err(e) => Err(ApiError::from_node(e)),
    }
}

fn io_failure(path: &Path, e: io::Error) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("reading {}: {e}", path.display()),
    )
}

/// Passes what it reads through SHA-256 and counts it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Reads the whole file once, checking it as any snapshot is checked while hashing the same
/// bytes; returns what the headers say of it and the file, back at its start. Blocking.
fn check_and_hash(file: File, path: &Path) -> Result<(BackupInfo, File), ApiError> {
    let mut reading = Hashing {
        inner: file,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let summary = kv::verify_snapshot_summary(&mut reading).map_err(|e| {
        ApiError::new(
            ErrorCode::Internal,
            format!(
                "the snapshot file {} does not verify: {e}; the node's disk may be failing",
                path.display()
            ),
        )
    })?;
    // The reader stops at the trailer, having checked that nothing follows; this only makes
    // sure the hash covers every byte the stream will send.
    io::copy(&mut reading, &mut io::sink()).map_err(|e| io_failure(path, e))?;
    let cluster = crate::server::machine::records_cluster(summary.meta.index, &summary.meta.config)
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("the snapshot file {}: {e}", path.display()),
            )
        })?;
    let Hashing {
        inner: mut file,
        hasher,
        bytes,
    } = reading;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_failure(path, e))?;
    let info = BackupInfo {
        index: summary.meta.index,
        term: summary.meta.term,
        keys: summary.keys,
        bytes,
        sha256: hex(&hasher.finalize()),
        cluster_id: cluster.to_string(),
    };
    Ok((info, file))
}
