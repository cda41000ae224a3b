//! [`Wal`]: the segmented log itself: open and recovery, append, sync, read, truncation,
//! compaction, and the hard state.
//!
//! Invariants (checked by [`Wal::check_invariants`]):
//! - the segments are contiguous: each starts at the index after the previous one's last entry,
//!   and there is always at least one segment (the active one, the last);
//! - every segment but the last is fully durable (it was synced when the log rotated past it);
//! - `first_index() <= durable_index() + 1` and `durable_index() <= last_index()`;
//! - the in-memory offsets and term runs describe exactly the records on disk.
//!
//! A `Wal` has one owner (`&mut self` to change it): the Raft node's log store, which batches
//! one `Ready` per append and may run its `fdatasync` elsewhere ([`Wal::begin_sync`]).
//!
//! Modules, one job each: `open` (opening the directory and recovering the segments),
//! `append` (appending, rotating and syncing), `read` (reading and scanning entries),
//! `truncate` (dropping a suffix, or every entry with `reset`) and `compact` (dropping whole
//! segments a snapshot covers). This module holds the log's state, its accessors, the hard
//! state, and the invariant checks every change ends with.

mod append;
mod compact;
mod open;
mod read;
mod truncate;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{debug, warn};

use crate::error::{Result, WalError};
use crate::fs::{FileHandle, FileSystem};
use crate::hardstate::{HardStateFile, SaveError};
use crate::invariant::WalInvariantError;
use crate::metrics::{WalMetrics, WalMetricsSnapshot};
use crate::record::RECORD_OVERHEAD_BYTES;
use crate::segment::SEGMENT_HEADER_BYTES;

pub use append::PendingSync;

/// Default size at which the active segment is sealed and a new one started (64 MiB).
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// The smallest allowed segment size (tests use small segments to exercise rotation).
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;
/// The largest allowed segment size: with the payload limit, record offsets stay below 4 GiB.
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// How far ahead of its writes the active segment's space is reserved
/// ([`FileHandle::allocate`]): an append into reserved space costs a cheaper `fdatasync` (no new
/// length, blocks or inode to write), and one append in this many bytes pays for the
/// reservation. The reserved zeros reach the disk with the next `fdatasync`, so a larger step
/// makes that one slower (measured here: 4 MiB added up to 7.5 ms to it, 1 MiB 0.9-1.4 ms);
/// and recovery reads a reserved tail to check that it is all zeros.
pub const PREALLOCATE_BYTES: u64 = 1024 * 1024;

/// How a [`Wal`] is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// A segment is sealed once it holds at least this many bytes; the record that crosses the
    /// line stays in it, so a segment can exceed this by one record.
    pub segment_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
        }
    }
}

impl WalConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(WalError::InvalidConfig(format!(
                "segment_bytes is {}, it must be between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX}",
                self.segment_bytes
            )));
        }
        Ok(())
    }
}

/// Most bytes a scan of the log reads at once (whole records; one larger record is read
/// alone): reads stop within a window of where their caller stopped.
pub const SCAN_WINDOW_BYTES: u64 = 1024 * 1024;

/// One log entry as the WAL stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's position in the log (starts at 1).
    pub index: u64,
    /// The term of the leader that created it.
    pub term: u64,
    /// Opaque bytes (the Raft layer's encoding of the entry).
    pub payload: Vec<u8>,
}

struct Segment<H> {
    first_index: u64,
    path: PathBuf,
    file: Arc<H>,
    /// Byte offset of each entry record: entry `first_index + k` starts at `offsets[k]`.
    offsets: Vec<u32>,
    /// Bytes of records (and header) in the file: where the next record goes.
    len: u64,
    /// The file's length, `>= len`: the bytes past `len` are reserved space reading as zeros.
    allocated: u64,
}

impl<H> Segment<H> {
    /// A segment whose file holds only its header (just created, or found so): no entries, and
    /// nothing reserved past the header.
    fn empty(first_index: u64, path: PathBuf, file: H) -> Segment<H> {
        Segment {
            first_index,
            path,
            file: Arc::new(file),
            offsets: Vec::new(),
            len: SEGMENT_HEADER_BYTES,
            allocated: SEGMENT_HEADER_BYTES,
        }
    }

    /// The last entry's index; `first_index - 1` when the segment is empty.
    fn last_index(&self) -> u64 {
        self.first_index + self.offsets.len() as u64 - 1
    }

    /// The end (exclusive) of the run of entries from `index`, before `hi`, whose records fit
    /// in [`SCAN_WINDOW_BYTES`] together; at least one entry. `index..hi` must be in the
    /// segment and not empty.
    fn window_end(&self, index: u64, hi: u64) -> u64 {
        let (k0, k_hi) = (
            (index - self.first_index) as usize,
            (hi - self.first_index) as usize,
        );
        let limit = u64::from(self.offsets[k0]) + SCAN_WINDOW_BYTES;
        // Record k ends where record k + 1 starts; the last record of the range may end at
        // the segment's end.
        let mut fitting = self.offsets[k0 + 1..k_hi].partition_point(|&o| u64::from(o) <= limit);
        if fitting == k_hi - k0 - 1 && self.record_range(hi - 1).1 <= limit {
            fitting += 1;
        }
        index + fitting.max(1) as u64
    }

    /// The byte range of entry `index`, which the segment holds.
    fn record_range(&self, index: u64) -> (u64, u64) {
        let k = (index - self.first_index) as usize;
        let start = u64::from(self.offsets[k]);
        let end = self.offsets.get(k + 1).map_or(self.len, |o| u64::from(*o));
        (start, end)
    }
}

/// A segmented, checksummed write-ahead log of entries, plus the hard state.
pub struct Wal<F: FileSystem> {
    fs: F,
    dir: PathBuf,
    config: WalConfig,
    _lock: F::DirLock,
    /// Never empty; the last is the active segment.
    segments: Vec<Segment<F::File>>,
    /// `(first index of the run, term)` for each run of equal terms among the entries, ascending.
    term_runs: Vec<(u64, u64)>,
    hard_state: HardStateFile<F::File>,
    durable_index: u64,
    poisoned: Option<String>,
    /// Whether to reserve segment space ahead of appends; off once the file system refused.
    preallocate: bool,
    metrics: Arc<WalMetrics>,
    /// Reused encoding buffer, so appends do not allocate once warm.
    scratch: Vec<u8>,
}

impl<F: FileSystem> std::fmt::Debug for Wal<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .field("durable_index", &self.durable_index)
            .field("segments", &self.segments.len())
            .finish()
    }
}

impl<F: FileSystem> Wal<F> {
    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The index of the first entry held (or that the next append must use, when empty).
    pub fn first_index(&self) -> u64 {
        self.segments[0].first_index
    }

    /// The index of the last entry; `first_index() - 1` when the log is empty.
    pub fn last_index(&self) -> u64 {
        self.active().last_index()
    }

    /// True when the log holds no entries.
    pub fn is_empty(&self) -> bool {
        self.last_index() < self.first_index()
    }

    /// The highest index known to be on stable storage.
    pub fn durable_index(&self) -> u64 {
        self.durable_index
    }

    /// The term of entry `index`, from memory, if the log holds it.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index < self.first_index() || index > self.last_index() {
            return None;
        }
        let run = self.term_runs.partition_point(|&(start, _)| start <= index);
        self.term_runs.get(run.checked_sub(1)?).map(|&(_, t)| t)
    }

    /// The newest hard state saved with [`Wal::save_hard_state`].
    pub fn hard_state(&self) -> Option<&[u8]> {
        self.hard_state.current()
    }

    /// The live counters, shareable with an exporter.
    pub fn metrics(&self) -> Arc<WalMetrics> {
        Arc::clone(&self.metrics)
    }

    /// A copy of the counters.
    pub fn metrics_snapshot(&self) -> WalMetricsSnapshot {
        self.metrics.snapshot()
    }

    /// The number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Bytes still available on the file system that holds the log (see
    /// [`FileSystem::available_space`]).
    pub fn available_space(&self) -> std::io::Result<u64> {
        self.fs.available_space(&self.dir)
    }

    fn active(&self) -> &Segment<F::File> {
        self.segments
            .last()
            .expect("a Wal always has an active segment")
    }

    /// True once a failed write or fsync has made the log refuse further work.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    fn check_usable(&self) -> Result<()> {
        match &self.poisoned {
            Some(why) => Err(WalError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Marks the log unusable: after a failed write or fsync we no longer know what is on disk.
    /// Returns [`WalError::Poisoned`] carrying `err`'s text, never `err` itself: a poisoned
    /// log's failure must not pass for a retryable one ([`WalError::is_no_space`]) even when
    /// the disk said it was full.
    fn poison(&mut self, err: WalError) -> WalError {
        warn!(dir = %self.dir.display(), error = %err, "WAL poisoned: no further writes until restart");
        let why = err.to_string();
        self.poisoned = Some(why.clone());
        WalError::Poisoned(why)
    }

    fn remove_segment_file(&mut self, seg: &Segment<F::File>) -> Result<()> {
        let result = self
            .fs
            .remove_file(&seg.path)
            .map_err(|e| WalError::io(&seg.path, e))
            .and_then(|()| {
                self.fs
                    .sync_dir(&self.dir)
                    .map_err(|e| WalError::io(&self.dir, e))
            });
        if let Err(e) = result {
            return Err(self.poison(e));
        }
        self.metrics
            .bytes_on_disk
            .fetch_sub(seg.len, Ordering::Relaxed);
        Ok(())
    }

    /// Saves the hard state (opaque bytes, at most [`crate::HARD_STATE_BYTES_MAX`]) durably.
    /// Call it before sending any message that depends on it (a vote, a new term).
    ///
    /// A slot write that fails for lack of space returns an error for which
    /// [`WalError::is_no_space`] holds and leaves the log unpoisoned: the previous hard state
    /// is still the one [`Wal::hard_state`] returns, and the save may be retried once space is
    /// freed (the two-slot file stays crash-safe, see [`crate::hardstate`]). Any other failure,
    /// a failed fsync above all, poisons the log.
    pub fn save_hard_state(&mut self, payload: &[u8]) -> Result<()> {
        self.check_usable()?;
        match self.hard_state.save(payload) {
            Ok(syncs) => {
                self.metrics
                    .fsyncs
                    .fetch_add(u64::from(syncs), Ordering::Relaxed);
                Ok(())
            }
            Err(SaveError::NoSpace(e)) => {
                warn!(dir = %self.dir.display(), error = %e, "WAL: no space to save the hard state; the previous one stands, the save may be retried");
                Err(e)
            }
            Err(SaveError::Failed(e @ WalError::PayloadTooLarge { .. })) => Err(e),
            Err(SaveError::Failed(e)) => Err(self.poison(e)),
        }
    }

    fn publish_gauges(&self) {
        self.metrics
            .segments
            .store(self.segments.len() as u64, Ordering::Relaxed);
        self.metrics
            .bytes_on_disk
            .store(self.segments.iter().map(|s| s.len).sum(), Ordering::Relaxed);
        self.metrics
            .first_index
            .store(self.first_index(), Ordering::Relaxed);
    }

    /// Checks every invariant of the module doc, walking every entry's offset and term run;
    /// names the first one broken. Called by tests after every step and when the log opens.
    pub fn check_invariants(&self) -> std::result::Result<(), WalInvariantError> {
        self.invariant_violation(true)
    }

    /// The cheap part of [`Wal::check_invariants`] (no walk over every entry).
    fn check_invariants_cheap(&self) -> std::result::Result<(), WalInvariantError> {
        self.invariant_violation(false)
    }

    /// In debug builds, after each change: panics naming the broken invariant, if any.
    fn debug_check_invariants(&self) {
        if cfg!(debug_assertions)
            && let Err(broken) = self.check_invariants_cheap()
        {
            panic!("WAL invariant violated in {}: {broken}", self.dir.display());
        }
    }

    fn invariant_violation(
        &self,
        walk_entries: bool,
    ) -> std::result::Result<(), WalInvariantError> {
        if self.segments.is_empty() {
            return Err(WalInvariantError::NoActiveSegment);
        }
        for pair in self.segments.windows(2) {
            if pair[1].first_index != pair[0].last_index() + 1 {
                return Err(WalInvariantError::SegmentsNotContiguous {
                    previous: pair[0].first_index,
                    next: pair[1].first_index,
                });
            }
        }
        for seg in self.segments.iter().filter(|_| walk_entries) {
            let mut prev = SEGMENT_HEADER_BYTES;
            for (k, off) in seg.offsets.iter().enumerate() {
                let off = u64::from(*off);
                if off
                    < prev
                        + if k == 0 {
                            0
                        } else {
                            RECORD_OVERHEAD_BYTES as u64
                        }
                {
                    return Err(WalInvariantError::OffsetsNotIncreasing {
                        segment: seg.first_index,
                    });
                }
                prev = off;
            }
            if seg.len < prev {
                return Err(WalInvariantError::SegmentShorterThanOffsets {
                    segment: seg.first_index,
                });
            }
        }
        if self.durable_index > self.last_index() || self.durable_index + 1 < self.first_index() {
            return Err(WalInvariantError::DurableOutOfRange {
                durable: self.durable_index,
                low: self.first_index() - 1,
                last: self.last_index(),
            });
        }
        match (self.term_runs.first(), self.is_empty()) {
            (None, true) => {}
            (Some(&(start, _)), false) if start == self.first_index() => {}
            (first, _) => {
                return Err(WalInvariantError::TermRunsMisaligned {
                    first_run: first.map(|&(start, _)| start),
                    first_index: self.first_index(),
                    last_index: self.last_index(),
                });
            }
        }
        if walk_entries
            && self
                .term_runs
                .windows(2)
                .any(|w| w[0].0 >= w[1].0 || w[0].1 >= w[1].1)
        {
            return Err(WalInvariantError::TermRunsNotAscending {
                runs: self.term_runs.clone(),
            });
        }
        if let Some(&(start, _)) = self.term_runs.last()
            && start > self.last_index()
        {
            return Err(WalInvariantError::TermRunPastEnd {
                start,
                last: self.last_index(),
            });
        }
        Ok(())
    }
}

impl<F: FileSystem> Drop for Wal<F> {
    fn drop(&mut self) {
        // A log closed in order gives back its reserved space, so the active segment ends with
        // its last record again. Best effort and unsynced: a reserved tail that survives (a
        // crash, a poisoned log left as it is) is recognised as such by recovery.
        if self.poisoned.is_some() {
            return;
        }
        if let Some(active) = self.segments.last()
            && active.allocated > active.len
            && let Err(e) = active.file.set_len(active.len)
        {
            debug!(file = %active.path.display(), error = %e, "WAL: could not trim reserved space on close");
        }
    }
}
