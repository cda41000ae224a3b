//! Reading entries back: [`Wal::read`] and [`Wal::read_limited`] copy them out, [`Wal::scan`]
//! visits them in place. Invariant: every record read is checked against its checksum and
//! against what the in-memory index says was written (kind, index, term); a mismatch is
//! [`WalError::Corrupt`], never wrong data.

use std::ops::ControlFlow;

use super::{Entry, Wal};
use crate::error::{Result, WalError};
use crate::fs::{FileHandle, FileSystem};
use crate::record::{self, Decoded, RecordKind};

impl<F: FileSystem> Wal<F> {
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
}
