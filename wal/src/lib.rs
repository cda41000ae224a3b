//! RaftKV's write-ahead log: a segmented, checksummed, append-only log of entries with crash
//! recovery, plus the durable hard state.
//!
//! - [`record`]: the byte-by-byte record format (magic, version, kind, index, term, length,
//!   payload, CRC-32).
//! - [`segment`]: segment files (named by their first index) and the recovery scan.
//! - [`Wal`]: open/recover, `append`, `sync`, `read`, `truncate_suffix`, `compact_prefix`,
//!   `reset`, `save_hard_state`.
//! - Batching is the caller's: the Raft node appends one `Ready`'s entries at a time and
//!   syncs them with one `fdatasync`, which [`Wal::begin_sync`] lets it run on another thread.
//! - [`FileSystem`]: the I/O seam, with [`RealFs`] and the crashable [`SimFs`].
//!
//! Durability contract: an entry is durable once [`Wal::sync`] (or [`Wal::finish_sync`] with a
//! successful outcome) that covers it returns, or once [`Wal::open`] recovered it (the open
//! syncs what it found: a killed process may have left it only in the page cache); recovery
//! never drops a durable entry without an error naming the damaged file and offset, and never
//! returns bytes that fail their checksum.

pub mod error;
pub mod fs;
mod hardstate;
mod invariant;
mod log;
pub mod metrics;
pub mod record;
pub mod segment;
mod simfs;

pub use error::{Result, WalError};
pub use fs::{FileHandle, FileSystem, RealFs};
pub use hardstate::{HARD_STATE_BYTES_MAX, HARD_STATE_FILE_NAME, HARD_STATE_SLOT_BYTES};
pub use invariant::WalInvariantError;
pub use log::{
    Entry, PREALLOCATE_BYTES, PendingSync, SCAN_WINDOW_BYTES, SEGMENT_BYTES_DEFAULT,
    SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, Wal, WalConfig,
};
pub use metrics::{WalMetrics, WalMetricsSnapshot};
pub use record::PAYLOAD_BYTES_MAX;
pub use simfs::{CrashReport, SimDirLock, SimFile, SimFs};
