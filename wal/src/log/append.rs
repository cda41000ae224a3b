//! Appending and syncing: entries are encoded into the active segment (whose space is reserved
//! ahead of the writes), the segment is sealed and a new one started once it is full, and
//! [`Wal::sync`] (or [`Wal::begin_sync`] and [`Wal::finish_sync`], for an fsync run elsewhere)
//! makes them durable. Invariants: a rejected batch writes nothing; an append that fails for
//! lack of space leaves the log as it was, unpoisoned; any other failed write or fsync poisons
//! the log; a sealed segment is synced in full and ends with its last record.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{info, warn};

use super::{Entry, PREALLOCATE_BYTES, Wal};
use crate::error::{Result, WalError};
use crate::fs::{FileHandle, FileSystem};
use crate::metrics::WalMetrics;
use crate::record::{self, PAYLOAD_BYTES_MAX, RecordKind};

impl<F: FileSystem> Wal<F> {
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

    /// Reserves the active segment's space up to at least `end`, a [`PREALLOCATE_BYTES`] step
    /// at a time but not past the segment's size. Reserving is only an optimisation: if writing
    /// the reserved zeros fails for any reason but a full disk, the log stops trying and appends
    /// grow the file as they go; a real lack of space then shows up in the write itself.
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
    /// ([`Wal::begin_sync`]) run the fsync without holding the `Wal`.
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
        // A truncation while the fsync ran cannot happen (the caller of `begin_sync` changes
        // nothing before `finish_sync`), but never claim more than the log holds.
        let durable = self.durable_index.max(upto).min(self.last_index());
        self.metrics
            .batch_records
            .record(durable.saturating_sub(self.durable_index));
        self.durable_index = durable;
    }
}

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

/// The file a [`PendingSync`] (or [`Wal::sync`]) fsyncs without holding the `Wal`.
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
