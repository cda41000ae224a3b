//! Protocol quantities as distinct `u64` newtypes, so a term can never be passed where a log
//! index is expected. The arithmetic offered is only what the protocol needs; anything else
//! goes through `.0` on purpose, where a reader can see it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Raft term: a logical clock that only moves forward on every node (paper §5.1).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Term(pub u64);

/// The position of an entry in the replicated log. Index 0 is the empty prefix; real entries
/// start at 1.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogIndex(pub u64);

/// The identity of a node in the core. Human-readable names live above the core.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeId(pub u64);

/// The highest term a node ever adopts. Far beyond any real cluster (a new term every
/// millisecond for 290 million years), it leaves room above it, so that the term after any
/// term a node holds always exists: [`Term::next`] never fails on a term the core accepted.
/// A message at a higher term is refused (see `Raft::step`).
pub const TERM_MAX: Term = Term(u64::MAX / 2);

/// The highest log index the core accepts from a peer (a snapshot's, an entry's, a commit
/// index). No real log reaches it; the room above it keeps `index + count` arithmetic on
/// anything a peer sent from overflowing.
pub const LOG_INDEX_MAX: LogIndex = LogIndex(u64::MAX / 2);

impl Term {
    /// The term before any election: nothing has happened yet.
    pub const ZERO: Term = Term(0);

    /// The next term, used when a node starts an election. The core only ever holds terms up
    /// to [`TERM_MAX`] (it refuses higher ones from peers and from its own storage), so the
    /// next one always exists.
    pub fn next(self) -> Term {
        Term(
            self.0
                .checked_add(1)
                .expect("invariant: the core holds no term above TERM_MAX"),
        )
    }
}

impl LogIndex {
    /// The index of the empty log prefix.
    pub const ZERO: LogIndex = LogIndex(0);

    /// The index right after this one.
    pub fn next(self) -> LogIndex {
        LogIndex(
            self.0
                .checked_add(1)
                .expect("a log index cannot reach u64::MAX"),
        )
    }

    /// The index right before this one; the empty prefix has no predecessor, so it saturates.
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }

    /// This index moved forward by `count` entries.
    pub fn plus(self, count: u64) -> LogIndex {
        LogIndex(
            self.0
                .checked_add(count)
                .expect("a log index cannot reach u64::MAX"),
        )
    }

    /// The number of entries in the half-open range `[from, self)`; zero when `from >= self`.
    pub fn count_since(self, from: LogIndex) -> u64 {
        self.0.saturating_sub(from.0)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_arithmetic_saturates_at_the_empty_prefix() {
        assert_eq!(LogIndex::ZERO.prev(), LogIndex::ZERO);
        assert_eq!(LogIndex(5).count_since(LogIndex(2)), 3);
        assert_eq!(LogIndex(2).count_since(LogIndex(5)), 0);
        assert_eq!(LogIndex(2).plus(3), LogIndex(5));
    }
}
