//! Dropping entries from the front: [`Wal::compact_prefix`] removes whole segments a snapshot
//! covers, oldest first. Invariant: the active segment is never removed, and a crash part-way
//! leaves a contiguous log (each removal is durable before the next).

use tracing::info;

use super::Wal;
use crate::error::Result;
use crate::fs::FileSystem;

impl<F: FileSystem> Wal<F> {
    /// Removes whole segments whose entries are all `<= upto` (covered by a snapshot), oldest
    /// first, never the active segment. Entries `<= upto` in a kept segment stay readable, so
    /// [`Wal::first_index`] may remain `<= upto`. Returns the number of segments removed.
    pub fn compact_prefix(&mut self, upto: u64) -> Result<usize> {
        self.check_usable()?;
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].first_index <= upto + 1 {
            let entries = self.segments[1].first_index - self.segments[0].first_index;
            let seg = self.segments.remove(0);
            self.remove_segment_file(&seg)?;
            self.metrics
                .entries_compacted
                .fetch_add(entries, std::sync::atomic::Ordering::Relaxed);
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
}
