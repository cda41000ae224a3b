//! Dropping entries from the end: [`Wal::truncate_suffix`] removes a conflicting suffix, and
//! [`Wal::reset`] every entry, restarting the log at a new index after a snapshot. Invariant:
//! both are durable on return, and a crash part-way leaves a contiguous log (later segments
//! are removed first, newest first, one durable removal at a time).

use std::sync::atomic::Ordering;

use tracing::info;

use super::Wal;
use crate::error::{Result, WalError};
use crate::fs::{FileHandle, FileSystem};
use crate::segment::SEGMENT_HEADER_BYTES;

impl<F: FileSystem> Wal<F> {
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
}
