//! Counters and histograms the server exports (segments, bytes on disk, records appended,
//! fsyncs, records made durable per fsync, fsync latency, entries compacted away).
//!
//! Plain atomics, so recording costs a few nanoseconds and needs no metrics library here; the
//! server turns a [`WalMetricsSnapshot`] into Prometheus series.

use std::sync::atomic::{AtomicU64, Ordering};

/// How many bounded buckets a histogram has: bounds 1, 2, 4, ... 2^27. In microseconds (the
/// fsync, snapshot and round-trip times the server exports) that is 1 µs to about 134 s, so
/// that a stalled disk or a multi-second snapshot still lands in a bucket of its own.
const BUCKETS: usize = 28;

/// Upper bounds (inclusive) of the histogram buckets: powers of two, then everything above.
const BUCKET_BOUNDS: [u64; BUCKETS] = {
    let mut bounds = [0; BUCKETS];
    let mut i = 0;
    while i < BUCKETS {
        bounds[i] = 1 << i;
        i += 1;
    }
    bounds
};

/// A lock-free histogram with power-of-two buckets.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKET_BOUNDS.len() + 1],
    sum: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn record(&self, value: u64) {
        let bucket = BUCKET_BOUNDS.partition_point(|bound| *bound < value);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: BUCKET_BOUNDS
                .iter()
                .map(|b| Some(*b))
                .chain([None])
                .zip(&self.buckets)
                .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// `(inclusive upper bound, count)` per bucket; `None` is the overflow bucket.
    pub buckets: Vec<(Option<u64>, u64)>,
    /// The sum of all observations.
    pub sum: u64,
    /// The number of observations.
    pub count: u64,
}

impl HistogramSnapshot {
    /// The mean observation, or 0 with none.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }
}

/// The WAL's live counters. Shared (`Arc`) between the log and whoever exports them.
#[derive(Debug, Default)]
pub struct WalMetrics {
    pub(crate) segments: AtomicU64,
    pub(crate) bytes_on_disk: AtomicU64,
    pub(crate) records_appended: AtomicU64,
    pub(crate) bytes_appended: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) fsync_latency_us: Histogram,
    pub(crate) batch_records: Histogram,
    pub(crate) entries_compacted: AtomicU64,
    pub(crate) first_index: AtomicU64,
}

/// A point-in-time copy of [`WalMetrics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalMetricsSnapshot {
    /// Segment files in the log now.
    pub segments: u64,
    /// Bytes of segment files on disk now (the hard-state file excluded).
    pub bytes_on_disk: u64,
    /// Entry records appended since open.
    pub records_appended: u64,
    /// Bytes of entry records appended since open.
    pub bytes_appended: u64,
    /// `fdatasync` calls on log files since open (directory syncs excluded).
    pub fsyncs: u64,
    /// Latency of each `fdatasync`, in microseconds.
    pub fsync_latency_us: HistogramSnapshot,
    /// Records made durable by each fsync of the log (the caller's batch: one Raft `Ready`).
    pub batch_records: HistogramSnapshot,
    /// Entries removed from the front of the log by compaction since open.
    pub entries_compacted: u64,
    /// The index of the first entry the log holds (as of its last change of segments).
    pub first_index: u64,
}

impl WalMetrics {
    /// Segment files in the log now (each holds an open file descriptor), without copying
    /// the histograms as [`WalMetrics::snapshot`] does.
    pub fn segments(&self) -> u64 {
        self.segments.load(Ordering::Relaxed)
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> WalMetricsSnapshot {
        WalMetricsSnapshot {
            segments: self.segments.load(Ordering::Relaxed),
            bytes_on_disk: self.bytes_on_disk.load(Ordering::Relaxed),
            records_appended: self.records_appended.load(Ordering::Relaxed),
            bytes_appended: self.bytes_appended.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            fsync_latency_us: self.fsync_latency_us.snapshot(),
            batch_records: self.batch_records.snapshot(),
            entries_compacted: self.entries_compacted.load(Ordering::Relaxed),
            first_index: self.first_index.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_smallest_bucket_that_holds_them() {
        let h = Histogram::default();
        for v in [0, 1, 2, 3, 1000, u64::MAX / 2] {
            h.record(v);
        }
        let s = h.snapshot();
        let count_at = |bound: Option<u64>| s.buckets.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!(count_at(Some(1)), 2, "0 and 1");
        assert_eq!(count_at(Some(2)), 1);
        assert_eq!(count_at(Some(4)), 1, "3");
        assert_eq!(count_at(Some(1024)), 1, "1000");
        assert_eq!(count_at(None), 1, "overflow");
        assert_eq!(s.count, 6);
    }
}
