//! The node's seams for snapshot data: where a snapshot's bytes are written, kept, streamed
//! from and received into. The core never holds snapshot data (its `Snapshot` messages carry
//! only metadata here); the data goes from the state machine to a file, from that file to a
//! follower's file, and from the file back into the state machine, in streams.
//!
//! - A node's own snapshot: the applier takes a [`SnapshotView`] of the state machine under the
//!   apply lock (cheap: the state machine shares structure with it), and
//!   [`SnapshotFiles::write`] writes it out on a blocking thread while applying goes on.
//! - To a follower: the transport streams the kept file ([`SnapshotFiles::open`]).
//! - From a leader: the transport streams the chunks into a [`SnapshotSink`]
//!   ([`SnapshotFiles::receive`]), which checks the whole file when it ends; only then is the
//!   core told of the snapshot, and the log store keeps the file
//!   ([`SnapshotFiles::keep_received`]) when it persists the snapshot.
//! - Restoring: the applier reads the kept file through the state machine's
//!   [`Restorer`] on a blocking thread, then installs the result under the lock.
//!
//! Invariant: a snapshot's metadata is made durable (by the log store) only after its data is:
//! [`SnapshotFiles::write`] and [`SnapshotFiles::keep_received`] return once the file is
//! durable.

use std::io::{Read, Write};

use crate::core::{LogIndex, SnapshotMetadata, Term};
use crate::node::ClusterId;

/// Any error, as a damaged snapshot's cause (each state machine has its own format errors).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a snapshot file operation failed. The kinds call for different answers: a disk failure
/// stops a node that needed the snapshot; damaged data from a peer is refused, and the leader
/// sends it again; a refused reception (already received, another cluster) changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFilesError {
    /// The disk (or the OS) failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, on which file.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The data does not verify (length, checksum, structure, or the state machine's own
    /// invariants): damaged on disk or in transit, or sent by a faulty peer.
    #[error("the snapshot at index {index} is damaged: {source}")]
    Damaged {
        /// The snapshot's index.
        index: LogIndex,
        /// What is wrong, as the format's reader says.
        #[source]
        source: BoxError,
    },
    /// The snapshot verifies but belongs to another cluster.
    #[error(
        "the snapshot at index {index} belongs to cluster {theirs}, this node to cluster {ours}"
    )]
    WrongCluster {
        /// The snapshot's index.
        index: LogIndex,
        /// The cluster recorded in the snapshot.
        theirs: ClusterId,
        /// This node's cluster.
        ours: ClusterId,
    },
    /// The same snapshot was already received and waits to be kept: the copy in hand is the
    /// one the node takes.
    #[error("the snapshot at index {index} term {term} is already received")]
    AlreadyReceived {
        /// The snapshot's index.
        index: LogIndex,
        /// The snapshot's term.
        term: Term,
    },
    /// No snapshot at this index and term is kept, or received and waiting to be kept.
    #[error("no snapshot is {state} at index {index} term {term}")]
    Missing {
        /// "kept" or "received".
        state: &'static str,
        /// The index asked for.
        index: LogIndex,
        /// The term asked for.
        term: Term,
    },
}

impl SnapshotFilesError {
    /// A damaged snapshot at `index`, for `reason`.
    pub fn damaged(index: LogIndex, reason: impl Into<BoxError>) -> SnapshotFilesError {
        SnapshotFilesError::Damaged {
            index,
            source: reason.into(),
        }
    }

    /// A failed I/O operation, `context` saying what and where.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> SnapshotFilesError {
        SnapshotFilesError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A consistent copy of a state machine's whole state at one applied index, taken under the
/// apply lock and written out elsewhere while the state machine goes on applying.
///
/// `Sync` so that a writer can hand it to a thread of its own (the server's runs at a lower
/// CPU priority).
pub trait SnapshotView: Send + Sync + 'static {
    /// Writes the snapshot's data (the state machine's own format, which must detect damage) to
    /// `out` in one forward pass.
    fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()>;
}

/// Reads snapshot data (from [`SnapshotFiles::open`]) into a state to install. It runs on a
/// blocking thread without the apply lock, so a large snapshot does not stall reads.
pub type Restorer<R> = Box<
    dyn FnOnce(&SnapshotMetadata, &mut dyn Read) -> Result<R, SnapshotFilesError> + Send + 'static,
>;

/// Where the node runs blocking work: snapshot files (writes, fsyncs, reading a whole
/// snapshot), and the WAL fsync of a batched persist (`Loop::run_sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offload {
    /// On tokio's blocking pool: files on a real disk, where the work takes milliseconds to
    /// seconds and must not hold up the node's tasks.
    BlockingPool,
    /// In place, on the calling task: files in memory (the simulation, whose schedule must
    /// not depend on other threads).
    Inline,
}

/// Receives one snapshot streamed by a peer.
pub trait SnapshotSink: Send {
    /// Appends the next chunk.
    fn write(&mut self, chunk: &[u8]) -> Result<(), SnapshotFilesError>;
    /// Every byte arrived: makes the data durable and checks all of it (blocking: run it as
    /// [`SnapshotFiles::offload`] says). Once this succeeded, [`SnapshotFiles::has_received`]
    /// answers true for the snapshot until it is kept or a newer one is received.
    fn finish(self: Box<Self>) -> Result<(), SnapshotFilesError>;
}

/// The node's snapshot files.
pub trait SnapshotFiles: Send + Sync + 'static {
    /// Writes this node's own snapshot at `metadata` from `view`, durably (temporary file,
    /// fsync, rename, directory fsync); returns its size in bytes. Blocking.
    fn write(
        &self,
        metadata: &SnapshotMetadata,
        view: &dyn SnapshotView,
    ) -> Result<u64, SnapshotFilesError>;

    /// Opens the kept snapshot at `metadata`'s index for reading (to stream it to a follower or
    /// restore it); returns it with its size in bytes.
    fn open(
        &self,
        metadata: &SnapshotMetadata,
    ) -> Result<(Box<dyn Read + Send>, u64), SnapshotFilesError>;

    /// Starts receiving the snapshot at `metadata`, announced as `bytes` long, from a peer.
    fn receive(
        &self,
        metadata: &SnapshotMetadata,
        bytes: u64,
    ) -> Result<Box<dyn SnapshotSink>, SnapshotFilesError>;

    /// Whether the snapshot at exactly `metadata`'s index and term was received and checked
    /// ([`SnapshotSink::finish`]) and waits to be kept. The driver steps the core with a
    /// snapshot only then: keeping it cannot fail on its content.
    fn has_received(&self, metadata: &SnapshotMetadata) -> bool;

    /// Keeps the received snapshot at `metadata` as the node's latest, durably. The log store
    /// calls it when it persists the snapshot, before the log forgets what the snapshot covers.
    /// Keeping one already kept succeeds: the log store retries a persist that failed after
    /// this step (a full disk).
    fn keep_received(&self, metadata: &SnapshotMetadata) -> Result<(), SnapshotFilesError>;

    /// Where blocking work on these files runs.
    fn offload(&self) -> Offload {
        Offload::BlockingPool
    }
}

/// Runs `work` where `how` says: on tokio's blocking pool, or in place.
pub async fn offload<T, F>(how: Offload, work: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match how {
        Offload::Inline => work(),
        Offload::BlockingPool => match tokio::task::spawn_blocking(work).await {
            Ok(value) => value,
            // The work panicked: carry the panic to the caller, as running it in place would.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: the runtime is shutting down, and this task goes with it.
            Err(_) => std::future::pending().await,
        },
    }
}
