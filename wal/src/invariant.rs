//! [`WalInvariantError`]: which of [`Wal`](crate::Wal)'s invariants (listed in its module
//! documentation) a check found broken.
//!
//! A broken invariant is a bug in this crate, never bad input or a damaged disk (recovery
//! reports those as [`WalError`](crate::WalError)s), so callers do not handle it: tests and
//! `debug_assert`-style checks panic with it, naming the invariant and the indexes involved.

/// One broken invariant of the log, with the indexes that show it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalInvariantError {
    /// The log has no segment at all; the active segment must always exist.
    #[error("no active segment")]
    NoActiveSegment,
    /// Two neighbouring segments leave a gap or overlap.
    #[error("segment {next} does not continue segment {previous}")]
    SegmentsNotContiguous {
        /// First index of the earlier segment.
        previous: u64,
        /// First index of the segment that should follow it.
        next: u64,
    },
    /// A segment's in-memory record offsets do not increase by at least a record each.
    #[error("offsets of segment {segment} not increasing")]
    OffsetsNotIncreasing {
        /// First index of the segment.
        segment: u64,
    },
    /// A segment's length ends before its last record's offset.
    #[error("segment {segment} shorter than its last offset")]
    SegmentShorterThanOffsets {
        /// First index of the segment.
        segment: u64,
    },
    /// The durable index lies outside `[first_index - 1, last_index]`.
    #[error("durable index {durable} outside [{low}, {last}]")]
    DurableOutOfRange {
        /// The durable index.
        durable: u64,
        /// `first_index - 1`.
        low: u64,
        /// The last index.
        last: u64,
    },
    /// The term runs do not start at the log's first index (or exist for an empty log).
    #[error("term runs start at {first_run:?} for a log [{first_index}, {last_index}]")]
    TermRunsMisaligned {
        /// Start of the first term run, if any.
        first_run: Option<u64>,
        /// The log's first index.
        first_index: u64,
        /// The log's last index.
        last_index: u64,
    },
    /// The term runs are not strictly ascending in both start index and term.
    #[error("term runs not ascending: {runs:?}")]
    TermRunsNotAscending {
        /// Every run, as (first index, term).
        runs: Vec<(u64, u64)>,
    },
    /// The last term run starts after the last entry.
    #[error("a term run starts at {start}, past the last index {last}")]
    TermRunPastEnd {
        /// Start of the last run.
        start: u64,
        /// The log's last index.
        last: u64,
    },
}
