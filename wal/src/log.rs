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
//! A `Wal` has one owner (`&mut self` to change it). Group commit across threads is layered on
//! top in [`crate::GroupCommit`]; the simulator drives a `Wal` directly.

use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{debug, info, warn};

use crate::error::{Result, WalError};
use crate::fs::{FileHandle, FileSystem};
use crate::hardstate::{HardStateFile, SaveError};
use crate::invariant::WalInvariantError;
use crate::metrics::{WalMetrics, WalMetricsSnapshot};
use crate::record::{self, Decoded, PAYLOAD_BYTES_MAX, RECORD_OVERHEAD_BYTES, RecordKind};
use crate::segment::{self, SEGMENT_HEADER_BYTES};

/// Default size at which the active segment is sealed and a new one started (64 MiB).
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// The smallest allowed segment size (tests use small segments to exercise rotation).
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;
/// The largest allowed segment size: with the payload limit, record offsets stay below 4 GiB.
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// How far ahead of its writes the active segment's space is reserved
/// ([`FileHandle::allocate`]): an append into reserved space costs a cheaper `fdatasync` (no new
/// length or blocks to journal), and one append in this many bytes pays for the reservation.
/// Recovery reads a reserved tail to check that it is all zeros, so it stays small.
pub const PREALLOCATE_BYTES: u64 = 4 * 1024 * 1024;

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
    /// Opens the log in `dir` (creating it if needed), locks the directory and recovers.
    ///
    /// Recovery reads every segment and checks every CRC. A torn tail of the *last* segment (bad
    /// or cut-short bytes after which no valid record follows) is truncated and logged. Anything
    /// else (a bad record followed by valid ones, a gap or step back in indexes, a damaged
    /// segment that is not the last) is [`WalError::Corrupt`], naming the file and offset.
    pub fn open(fs: F, dir: impl Into<PathBuf>, config: WalConfig) -> Result<Self> {
        config.validate()?;
        let dir = dir.into();
        fs.create_dir_all(&dir).map_err(|e| WalError::io(&dir, e))?;
        let lock = fs.lock_dir(&dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                WalError::Locked { dir: dir.clone() }
            } else {
                WalError::io(&dir, e)
            }
        })?;
        let hard_state = HardStateFile::open(&fs, &dir)?;
        let mut wal = Wal {
            fs,
            dir,
            config,
            _lock: lock,
            segments: Vec::new(),
            term_runs: Vec::new(),
            hard_state,
            durable_index: 0,
            poisoned: None,
            preallocate: true,
            metrics: Arc::new(WalMetrics::default()),
            scratch: Vec::new(),
        };
        wal.recover()?;
        wal.publish_gauges();
        if let Err(broken) = wal.check_invariants() {
            // Recovery reports damage on disk as errors; what it built must hold.
            panic!(
                "WAL invariant violated after recovering {}: {broken}",
                wal.dir.display()
            );
        }
        info!(dir = %wal.dir.display(), first_index = wal.first_index(), last_index = wal.last_index(),
              segments = wal.segments.len(), "WAL opened");
        Ok(wal)
    }

    fn recover(&mut self) -> Result<()> {
        let mut firsts = Vec::new();
        for name in self
            .fs
            .list_files(&self.dir)
            .map_err(|e| WalError::io(&self.dir, e))?
        {
            if let Some(first) = segment::parse_segment_file_name(&name) {
                firsts.push(first);
            } else if name.ends_with(segment::SEGMENT_FILE_SUFFIX) {
                return Err(WalError::corrupt(
                    self.dir.join(&name),
                    0,
                    "a .wal file whose name is not a 20-digit first index",
                ));
            }
        }
        firsts.sort_unstable();
        if firsts.is_empty() {
            self.create_segment(1)?;
            return Ok(());
        }
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            self.recover_segment(first, i + 1 == count)?;
        }
        // Everything that survived recovery is on disk; count it as durable.
        self.durable_index = self.last_index();
        Ok(())
    }

    fn recover_segment(&mut self, first_index: u64, is_last: bool) -> Result<()> {
        let path = self.dir.join(segment::segment_file_name(first_index));
        if first_index == 0 {
            return Err(WalError::corrupt(&path, 0, "segment named for index 0"));
        }
        if let Some(prev) = self.segments.last()
            && first_index != prev.last_index() + 1
        {
            return Err(WalError::corrupt(
                &path,
                0,
                format!(
                    "gap between segments: the previous one ends at index {}, this one starts at {first_index}",
                    prev.last_index()
                ),
            ));
        }
        let file = self.fs.open(&path).map_err(|e| WalError::io(&path, e))?;
        let file_len = file.len().map_err(|e| WalError::io(&path, e))?;
        let mut header = vec![0u8; file_len.min(SEGMENT_HEADER_BYTES) as usize];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| WalError::io(&path, e))?;
        match segment::decode_header(&header) {
            Ok(stored) if stored == first_index => {}
            Ok(stored) => {
                return Err(WalError::corrupt(
                    &path,
                    12,
                    format!("header says first index {stored}, the file name says {first_index}"),
                ));
            }
            // A crash while the segment was being created: nothing after the header can have
            // been synced, because a record is only synced after its segment's header.
            Err(why) if is_last && file_len <= SEGMENT_HEADER_BYTES => {
                warn!(file = %path.display(), problem = %why,
                      "WAL recovery: the newest segment's header was torn by a crash; rewriting it");
                file.set_len(0)
                    .and_then(|()| file.write_all_at(&segment::encode_header(first_index), 0))
                    .and_then(|()| file.sync_data())
                    .map_err(|e| WalError::io(&path, e))?;
                self.segments.push(Segment {
                    first_index,
                    path,
                    file: Arc::new(file),
                    offsets: Vec::new(),
                    len: SEGMENT_HEADER_BYTES,
                    allocated: SEGMENT_HEADER_BYTES,
                });
                return Ok(());
            }
            Err(why) => return Err(WalError::corrupt(&path, 0, why)),
        }

        let prev_term = self.term_runs.last().map_or(0, |&(_, t)| t);
        let scan = segment::scan(&file, &path, first_index, prev_term)?;
        if let Some(damage) = &scan.damage {
            if !is_last || damage.valid_record_follows {
                let reason = if damage.valid_record_follows {
                    format!(
                        "{}; valid records follow, so this is not a torn write",
                        damage.reason
                    )
                } else {
                    format!("{}; this is not the newest segment", damage.reason)
                };
                return Err(WalError::corrupt(&path, damage.offset, reason));
            }
            warn!(file = %path.display(), offset = damage.offset, problem = %damage.reason,
                  dropped_bytes = scan.file_len - damage.offset,
                  "WAL recovery: truncating a torn tail left by a crash");
            file.set_len(damage.offset)
                .and_then(|()| file.sync_data())
                .map_err(|e| WalError::io(&path, e))?;
        }
        let allocated = if scan.damage.is_some() {
            scan.valid_len
        } else {
            scan.file_len
        };
        for &(index, term) in &scan.term_runs {
            if self.term_runs.last().is_none_or(|&(_, t)| t != term) {
                self.term_runs.push((index, term));
            }
        }
        self.segments.push(Segment {
            first_index,
            path,
            file: Arc::new(file),
            offsets: scan.offsets,
            len: scan.valid_len,
            allocated,
        });
        Ok(())
    }

    /// Creates, durably, an empty segment starting at `first_index` and makes it active.
    fn create_segment(&mut self, first_index: u64) -> Result<()> {
        let path = self.dir.join(segment::segment_file_name(first_index));
        let file = self
            .fs
            .create_new(&path)
            .map_err(|e| WalError::io(&path, e))?;
        if let Err(e) = file.write_all_at(&segment::encode_header(first_index), 0) {
            // Not kept: a retry creates the file anew (and recovery would refuse a segment
            // without its header). Its name was never synced, so no crash can depend on it.
            drop(file);
            let _ = self.fs.remove_file(&path);
            return Err(WalError::io(&path, e));
        }
        // The name must be durable before any record in the file is reported durable.
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| WalError::io(&self.dir, e))?;
        self.segments.push(Segment {
            first_index,
            path,
            file: Arc::new(file),
            offsets: Vec::new(),
            len: SEGMENT_HEADER_BYTES,
            allocated: SEGMENT_HEADER_BYTES,
        });
        Ok(())
    }

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

    /// Appends entries, which must continue the log: the first has index `last_index() + 1`,
    /// indexes rise by one, and terms never go down. Nothing is durable until [`Wal::sync`].
    ///
    /// The batch is validated as a whole before anything is written: a rejected batch writes
    /// nothing.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.check_usable()?;
        self.validate_append(entries)?;
        let mut start = 0;
        while start < entries.len() {
            if self.active().len >= self.config.segment_bytes && !self.active().offsets.is_empty() {
                self.rotate()?;
            }
            // Encode as many entries as fit in the active segment and write them with one call.
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            let base = self.active().len;
            let mut new_offsets = Vec::new();
            let mut end = start;
            while end < entries.len()
                && (end == start || base + (scratch.len() as u64) < self.config.segment_bytes)
            {
                let e = &entries[end];
                new_offsets.push(u32::try_from(base + scratch.len() as u64).expect(
                    "segments stay below 4 GiB: segment_bytes <= 1 GiB plus one record <= 64 MiB",
                ));
                record::encode(RecordKind::Entry, e.index, e.term, &e.payload, &mut scratch);
                end += 1;
            }
            self.reserve(base + scratch.len() as u64);
            let written = self.active().file.write_all_at(&scratch, base);
            if let Err(e) = written {
                let path = self.active().path.clone();
                self.scratch = scratch;
                if crate::fs::is_no_space(&e) {
                    return Err(self.undo_partial_write(base, WalError::io(path, e)));
                }
                return Err(self.poison(WalError::io(path, e)));
            }
            let active = self
                .segments
                .last_mut()
                .expect("a Wal always has an active segment");
            active.offsets.extend(new_offsets);
            active.len += scratch.len() as u64;
            for e in &entries[start..end] {
                if self.term_runs.last().is_none_or(|&(_, t)| t != e.term) {
                    self.term_runs.push((e.index, e.term));
                }
            }
            self.metrics
                .records_appended
                .fetch_add((end - start) as u64, Ordering::Relaxed);
            self.metrics
                .bytes_appended
                .fetch_add(scratch.len() as u64, Ordering::Relaxed);
            self.metrics
                .bytes_on_disk
                .fetch_add(scratch.len() as u64, Ordering::Relaxed);
            self.scratch = scratch;
            start = end;
        }
        self.debug_check_invariants();
        Ok(())
    }

    /// After a write into the active segment at `base` failed for lack of space: cuts the
    /// segment back to `base`, so that no record of the failed write (a whole one may have
    /// landed before the disk filled) can be read back at recovery after a different append
    /// takes its place. The log is then exactly as before the call and not poisoned; `err`
    /// is returned for the caller to retry later. If the cut itself fails, what the file holds
    /// past `base` is unknown, and the log is poisoned.
    fn undo_partial_write(&mut self, base: u64, err: WalError) -> WalError {
        let active = self.active();
        if let Err(e) = active.file.set_len(base) {
            let path = active.path.clone();
            return self.poison(WalError::io(path, e));
        }
        let active = self
            .segments
            .last_mut()
            .expect("a Wal always has an active segment");
        active.allocated = base;
        warn!(dir = %self.dir.display(), error = %err, "WAL: no space for an append; nothing was kept, the append may be retried");
        err
    }

    /// Bytes still available on the file system that holds the log (see
    /// [`FileSystem::available_space`]).
    pub fn available_space(&self) -> std::io::Result<u64> {
        self.fs.available_space(&self.dir)
    }

    /// Reserves the active segment's space up to at least `end`, a [`PREALLOCATE_BYTES`] step
    /// at a time but not past the segment's size. Reserving is only an optimisation: if the file
    /// system refuses (not every one supports it), the log stops trying and appends grow the
    /// file as they go; a real lack of space then shows up in the write itself.
    fn reserve(&mut self, end: u64) {
        if !self.preallocate || end <= self.active().allocated {
            return;
        }
        let target = end
            .next_multiple_of(PREALLOCATE_BYTES)
            .min(self.config.segment_bytes.max(end));
        let active = self.active();
        match active.file.allocate(target) {
            Ok(()) => {
                let active = self
                    .segments
                    .last_mut()
                    .expect("a Wal always has an active segment");
                active.allocated = target;
            }
            // A full disk is not a file system that cannot reserve: try again next time.
            Err(e) if crate::fs::is_no_space(&e) => {}
            Err(e) => {
                warn!(file = %active.path.display(), error = %e,
                      "WAL: cannot reserve space ahead of appends; appends will grow the file");
                self.preallocate = false;
            }
        }
    }

    fn validate_append(&self, entries: &[Entry]) -> Result<()> {
        let mut last_term = self.term(self.last_index()).unwrap_or(0);
        for (expected, e) in (self.last_index() + 1..).zip(entries) {
            if e.index != expected {
                return Err(WalError::InvalidOperation(format!(
                    "append of index {} where {expected} was expected (truncate first to overwrite)",
                    e.index
                )));
            }
            if e.term < last_term {
                return Err(WalError::InvalidOperation(format!(
                    "entry {} has term {} after term {last_term}: terms never go down",
                    e.index, e.term
                )));
            }
            if e.payload.len() > PAYLOAD_BYTES_MAX {
                return Err(WalError::PayloadTooLarge {
                    len: e.payload.len() as u64,
                    max: PAYLOAD_BYTES_MAX as u64,
                });
            }
            last_term = e.term;
        }
        Ok(())
    }

    /// Seals the active segment (synced in full, so every non-last segment is durable) and
    /// starts a new one at the next index.
    fn rotate(&mut self) -> Result<()> {
        self.check_usable()?;
        // A sealed segment ends with its last record: its reserved tail is given back before
        // the final sync, so that only the active segment carries reserved space.
        let active = self.active();
        if active.allocated > active.len {
            let (len, path) = (active.len, active.path.clone());
            if let Err(e) = active.file.set_len(len) {
                return Err(self.poison(WalError::io(path, e)));
            }
            let active = self
                .segments
                .last_mut()
                .expect("a Wal always has an active segment");
            active.allocated = len;
        }
        // Synced in full (records and final length) even if every record already was.
        let (file, upto) = self.sync_target();
        file.sync().map_err(|e| self.poison(e))?;
        self.mark_durable(upto);
        let next = self.last_index() + 1;
        if let Err(e) = self.create_segment(next) {
            // No new segment was kept (see `create_segment`): the sealed one stays active, and
            // the next append tries the rotation again.
            if e.is_no_space() {
                return Err(e);
            }
            return Err(self.poison(e));
        }
        self.publish_gauges();
        info!(dir = %self.dir.display(), first_index = next, "WAL rotated to a new segment");
        Ok(())
    }

    /// Makes every appended entry durable (one `fdatasync` of the active segment; sealed segments
    /// are already durable). Returns the durable index. A failed fsync poisons the log.
    pub fn sync(&mut self) -> Result<u64> {
        match self.begin_sync()? {
            None => Ok(self.durable_index),
            Some(pending) => {
                let outcome = pending.run();
                self.finish_sync(pending.upto(), outcome)
            }
        }
    }

    /// The fsync that [`Wal::sync`] would run, taken out so that it can run on another thread
    /// while the caller waits without holding its own (`None`: everything appended is already
    /// durable). Run it with [`PendingSync::run`], then hand the outcome to
    /// [`Wal::finish_sync`]. The log must not change in between: a truncation could otherwise
    /// be counted as durable. A sealed segment is synced in full when it is sealed, so a
    /// rotation in between would be harmless; the node loop, the one caller, changes nothing.
    pub fn begin_sync(&self) -> Result<Option<PendingSync<F::File>>> {
        self.check_usable()?;
        if self.durable_index == self.last_index() {
            return Ok(None);
        }
        let (target, upto) = self.sync_target();
        Ok(Some(PendingSync { target, upto }))
    }

    /// Records the outcome of a [`PendingSync`] from [`Wal::begin_sync`]: the entries it covers
    /// are durable, or, when its fsync failed, the log is poisoned (as by a failed
    /// [`Wal::sync`]). Returns the durable index.
    pub fn finish_sync(&mut self, upto: u64, outcome: Result<()>) -> Result<u64> {
        debug_assert!(
            upto <= self.last_index(),
            "the log lost entries while their fsync ran: {upto} > {}",
            self.last_index()
        );
        outcome.map_err(|e| self.poison(e))?;
        self.mark_durable(upto);
        Ok(self.durable_index)
    }

    /// The file to sync and the index that will be durable once it is synced: lets a caller
    /// (group commit) run the fsync without holding the `Wal`.
    pub(crate) fn sync_target(&self) -> (SyncTarget<F::File>, u64) {
        let active = self.active();
        (
            SyncTarget {
                file: Arc::clone(&active.file),
                path: active.path.clone(),
                metrics: Arc::clone(&self.metrics),
            },
            active.last_index(),
        )
    }

    /// Records that everything up to `upto` is durable (after a [`SyncTarget::sync`]).
    pub(crate) fn mark_durable(&mut self, upto: u64) {
        // A truncation while the fsync ran cannot happen (group commit serialises writers), but
        // never claim more than the log holds.
        self.durable_index = self.durable_index.max(upto).min(self.last_index());
    }

    /// Poisons the log after a failed fsync done outside it; returns why, for the callers.
    pub(crate) fn poison_with(&mut self, err: WalError) -> String {
        let why = err.to_string();
        self.poison(err);
        why
    }

    /// Reads the entries with indexes in `lo..hi`.
    pub fn read(&self, lo: u64, hi: u64) -> Result<Vec<Entry>> {
        self.read_limited(lo, hi, u64::MAX)
    }

    /// Reads entries from `lo` up to `hi` (exclusive), stopping before the total payload would
    /// pass `max_bytes`, but always returning at least one entry if the range is not empty (so
    /// that a single large entry still makes progress, as Raft's max-bytes-per-message needs).
    pub fn read_limited(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>> {
        let mut out = Vec::with_capacity((hi.saturating_sub(lo)).min(4096) as usize);
        let mut total = 0u64;
        self.scan(lo, hi, |index, term, payload| {
            let len = payload.len() as u64;
            if !out.is_empty() && total + len > max_bytes {
                return ControlFlow::Break(());
            }
            total += len;
            out.push(Entry {
                index,
                term,
                payload: payload.to_vec(),
            });
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// Visits the entries with indexes in `lo..hi` in order, each as its index, term and
    /// payload, without copying the payload; `visit` ends the scan early with `Break`.
    ///
    /// For passes over the whole tail that keep little of it (a restart looking for its
    /// configuration and address records), where [`Wal::read`]'s copy of every payload would
    /// cost more than the reading. Every record is checked as `read` checks it.
    pub fn scan(
        &self,
        lo: u64,
        hi: u64,
        mut visit: impl FnMut(u64, u64, &[u8]) -> ControlFlow<()>,
    ) -> Result<()> {
        if lo > hi || lo < self.first_index() || hi > self.last_index() + 1 {
            return Err(WalError::InvalidOperation(format!(
                "read of [{lo}, {hi}) outside the log [{}, {}]",
                self.first_index(),
                self.last_index()
            )));
        }
        let mut index = lo;
        let mut bytes = Vec::new();
        while index < hi {
            let seg_idx = self.segments.partition_point(|s| s.first_index <= index) - 1;
            let seg = &self.segments[seg_idx];
            // One window of whole records at a time: a caller that stops after a megabyte
            // (a message's worth of a long log) must not have read the whole range first.
            let window_hi = seg.window_end(index, hi.min(seg.last_index() + 1));
            let (start, _) = seg.record_range(index);
            let (_, end) = seg.record_range(window_hi - 1);
            bytes.clear();
            bytes.resize((end - start) as usize, 0);
            seg.file
                .read_exact_at(&mut bytes, start)
                .map_err(|e| WalError::io(&seg.path, e))?;
            let mut pos = 0usize;
            while index < window_hi {
                let at = start + pos as u64;
                let (header, payload) = match record::decode(&bytes[pos..]) {
                    Decoded::Record { header, payload } => (header, payload),
                    other => {
                        return Err(WalError::corrupt(
                            &seg.path,
                            at,
                            format!("entry {index} no longer reads back: {other:?}"),
                        ));
                    }
                };
                // Both sides of the disk: what we read must be what the index says we wrote.
                if header.kind != RecordKind::Entry
                    || header.index != index
                    || Some(header.term) != self.term(index)
                {
                    return Err(WalError::corrupt(
                        &seg.path,
                        at,
                        format!(
                            "expected entry {index} (term {:?}), found {:?} {} (term {})",
                            self.term(index),
                            header.kind,
                            header.index,
                            header.term
                        ),
                    ));
                }
                if visit(index, header.term, payload).is_break() {
                    return Ok(());
                }
                pos += header.record_bytes();
                index += 1;
            }
        }
        Ok(())
    }

    /// Removes every entry with index `>= from` (Raft overwrites a conflicting suffix), durably:
    /// when this returns, a crash cannot bring them back. `from` may be `last_index() + 1` (no-op)
    /// down to `first_index()` (the log becomes empty and the next append uses `from`).
    pub fn truncate_suffix(&mut self, from: u64) -> Result<()> {
        self.check_usable()?;
        if from > self.last_index() {
            return Ok(());
        }
        if from < self.first_index() {
            return Err(WalError::InvalidOperation(format!(
                "truncate from {from} below the first index {} (compacted entries cannot be rewritten; reset the log instead)",
                self.first_index()
            )));
        }
        // Later segments go first, newest first, one durable removal at a time: a crash at any
        // point leaves a contiguous log.
        while self.active().first_index > from {
            let seg = self
                .segments
                .pop()
                .expect("loop guard: more than one segment");
            self.remove_segment_file(&seg)?;
        }
        let seg = self
            .segments
            .last_mut()
            .expect("a Wal always has an active segment");
        let cut = if from == seg.first_index {
            SEGMENT_HEADER_BYTES
        } else {
            seg.record_range(from).0
        };
        let dropped = seg.len - cut;
        let result = seg.file.set_len(cut).and_then(|()| seg.file.sync_data());
        let path = seg.path.clone();
        if let Err(e) = result {
            return Err(self.poison(WalError::io(path, e)));
        }
        seg.offsets.truncate((from - seg.first_index) as usize);
        seg.len = cut;
        seg.allocated = cut;
        self.metrics.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .bytes_on_disk
            .fetch_sub(dropped, Ordering::Relaxed);
        let keep = self.term_runs.partition_point(|&(start, _)| start < from);
        self.term_runs.truncate(keep);
        // The cut segment was synced, and sealed ones always are: everything left is durable.
        self.durable_index = self.last_index();
        self.publish_gauges();
        info!(dir = %self.dir.display(), from, last_index = self.last_index(), "WAL suffix truncated");
        self.debug_check_invariants();
        Ok(())
    }

    /// Removes whole segments whose entries are all `<= upto` (covered by a snapshot), oldest
    /// first, never the active segment. Entries `<= upto` in a kept segment stay readable, so
    /// [`Wal::first_index`] may remain `<= upto`. Returns the number of segments removed.
    pub fn compact_prefix(&mut self, upto: u64) -> Result<usize> {
        self.check_usable()?;
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].first_index <= upto + 1 {
            let seg = self.segments.remove(0);
            self.remove_segment_file(&seg)?;
            removed += 1;
        }
        if removed > 0 {
            let first = self.first_index();
            let drop_runs = self.term_runs.partition_point(|&(start, _)| start <= first) - 1;
            self.term_runs.drain(..drop_runs);
            if let Some(run) = self.term_runs.first_mut() {
                run.0 = run.0.max(first);
            }
            if self.is_empty() {
                self.term_runs.clear();
            }
            self.publish_gauges();
            info!(dir = %self.dir.display(), upto, removed_segments = removed,
                  first_index = first, "WAL prefix compacted");
        }
        self.debug_check_invariants();
        Ok(removed)
    }

    /// Discards every entry and restarts the log empty at `next_index` (after installing a
    /// snapshot that the log does not match). Durable on return.
    ///
    /// A crash part-way leaves a contiguous prefix of the old log or an empty log starting at 1;
    /// the caller, which keeps the snapshot, calls `reset` again on recovery when the log does not
    /// continue its snapshot.
    pub fn reset(&mut self, next_index: u64) -> Result<()> {
        self.check_usable()?;
        if next_index == 0 {
            return Err(WalError::InvalidOperation(
                "a log cannot start at index 0".into(),
            ));
        }
        while let Some(seg) = self.segments.pop() {
            self.remove_segment_file(&seg)?;
        }
        self.term_runs.clear();
        if let Err(e) = self.create_segment(next_index) {
            return Err(self.poison(e));
        }
        self.durable_index = next_index - 1;
        self.publish_gauges();
        info!(dir = %self.dir.display(), next_index, "WAL reset to start at a new index");
        self.debug_check_invariants();
        Ok(())
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

/// The handle group commit fsyncs outside the `Wal`'s lock.
/// An fsync taken out of a [`Wal`] by [`Wal::begin_sync`]: the caller runs it where it likes
/// (it needs no access to the `Wal`) and reports the outcome through [`Wal::finish_sync`].
#[must_use = "entries are durable only once the sync has run and Wal::finish_sync has its outcome"]
pub struct PendingSync<H> {
    target: SyncTarget<H>,
    upto: u64,
}

impl<H: FileHandle> PendingSync<H> {
    /// The `fdatasync` itself: blocks until the segment's appended records are on disk.
    pub fn run(&self) -> Result<()> {
        self.target.sync()
    }

    /// The last index this sync makes durable.
    pub fn upto(&self) -> u64 {
        self.upto
    }
}

impl<H> fmt::Debug for PendingSync<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingSync")
            .field("path", &self.target.path)
            .field("upto", &self.upto)
            .finish()
    }
}

pub(crate) struct SyncTarget<H> {
    file: Arc<H>,
    path: PathBuf,
    metrics: Arc<WalMetrics>,
}

impl<H: FileHandle> SyncTarget<H> {
    /// `fdatasync`, timed into the metrics.
    pub(crate) fn sync(&self) -> Result<()> {
        let started = Instant::now();
        self.file
            .sync_data()
            .map_err(|e| WalError::io(&self.path, e))?;
        self.metrics.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .fsync_latency_us
            .record(started.elapsed().as_micros() as u64);
        Ok(())
    }
}
