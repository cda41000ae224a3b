//! What the leader knows about each follower's log, and how it paces replication to it.
//!
//! A follower is in one of three states (as in etcd-io/raft's tracker):
//! - `Probe`: the leader does not know where the logs match; it sends one AppendEntries and
//!   waits for the answer (or a heartbeat response) before sending another.
//! - `Replicate`: the logs match up to `match_index`; the leader pipelines AppendEntries,
//!   optimistically advancing `next_index`, bounded by the inflight window.
//! - `Snapshot`: the follower needs entries the leader compacted; a snapshot is on its way and
//!   nothing else is sent until it is acknowledged (or reported failed).
//!
//! Invariant: `match_index < next_index`.

use std::collections::VecDeque;

use super::invariant::InvariantError;
use super::types::LogIndex;

/// The replication state of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Finding the point where the logs match, one message at a time.
    Probe,
    /// Streaming entries, pipelined within the inflight window.
    Replicate,
    /// Waiting for a snapshot up to `pending_index` to be installed.
    Snapshot {
        /// The index of the snapshot sent.
        pending_index: LogIndex,
    },
}

/// A bounded window of unacknowledged AppendEntries: how many, and how many entry bytes.
#[derive(Clone, Debug)]
pub struct Inflights {
    /// The last index and the entry bytes of each message in flight, oldest first.
    window: VecDeque<(LogIndex, u64)>,
    bytes: u64,
    msgs_max: usize,
    bytes_max: u64,
}

impl Inflights {
    /// An empty window with the given limits.
    pub fn new(msgs_max: usize, bytes_max: u64) -> Inflights {
        Inflights {
            window: VecDeque::new(),
            bytes: 0,
            msgs_max,
            bytes_max,
        }
    }

    /// Records a message whose last entry is `last_index`.
    pub fn add(&mut self, last_index: LogIndex, bytes: u64) {
        assert!(!self.is_full(), "sending into a full inflight window");
        if let Some((back, _)) = self.window.back() {
            assert!(
                last_index > *back,
                "inflight messages must be sent in index order"
            );
        }
        self.window.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose last entry is at or below `index` (acknowledged).
    pub fn free_to(&mut self, index: LogIndex) {
        while let Some((last, bytes)) = self.window.front().copied() {
            if last > index {
                break;
            }
            self.window.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Frees the oldest message in flight (a heartbeat answer showed the follower is alive,
    /// so one more message is worth risking even if earlier ones were lost).
    pub fn free_first_one(&mut self) {
        if let Some((_, bytes)) = self.window.pop_front() {
            self.bytes -= bytes;
        }
    }

    /// Whether another message may be sent.
    pub fn is_full(&self) -> bool {
        self.window.len() >= self.msgs_max || self.bytes >= self.bytes_max
    }

    /// Forgets everything in flight.
    pub fn reset(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }

    /// The number of messages in flight.
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }
}

/// The leader's view of one follower (or of itself, where only `match_index` matters).
#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to match the leader's log, durably on the follower.
    pub match_index: LogIndex,
    /// The next index to send.
    pub next_index: LogIndex,
    /// See [`ProgressState`].
    pub state: ProgressState,
    /// In `Probe`: a probe is out, wait for its answer or the next heartbeat response.
    pub probe_sent: bool,
    /// The pipelining window, used in `Replicate`.
    pub inflights: Inflights,
    /// Whether the follower was heard from during the current check-quorum period.
    pub recent_active: bool,
    /// In `Snapshot`: ticks since the snapshot was sent, to retry one that was lost.
    pub snapshot_wait_ticks: u32,
}

impl Progress {
    /// A follower about which nothing is known: probe from `next_index`.
    pub fn new(
        next_index: LogIndex,
        inflight_msgs_max: usize,
        inflight_bytes_max: u64,
    ) -> Progress {
        Progress {
            match_index: LogIndex::ZERO,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(inflight_msgs_max, inflight_bytes_max),
            recent_active: false,
            snapshot_wait_ticks: 0,
        }
    }

    /// Back to probing, after a rejection in `Replicate` or a finished or failed snapshot.
    pub fn become_probe(&mut self) {
        self.next_index = match self.state {
            // After a snapshot the follower holds at least the snapshot (if it was installed;
            // if not, the next rejection walks `next_index` back down).
            ProgressState::Snapshot { pending_index } => pending_index.max(self.match_index).next(),
            _ => self.match_index.next(),
        };
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// Start pipelining from the match point.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index.next();
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// A snapshot up to `pending_index` was sent; wait for it.
    pub fn become_snapshot(&mut self, pending_index: LogIndex) {
        self.state = ProgressState::Snapshot { pending_index };
        self.snapshot_wait_ticks = 0;
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// The follower acknowledged a match up to `index`. Returns whether `match_index` moved;
    /// stale (reordered or duplicated) acknowledgements change nothing.
    pub fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        if self.next_index <= index {
            self.next_index = index.next();
        }
        self.inflights.free_to(index);
        updated
    }

    /// The follower rejected an AppendEntries whose previous index was `rejected`; its hint
    /// says its log matches the leader's at most up to `hint_index`. Returns whether
    /// `next_index` moved; rejections of messages the leader no longer waits on are ignored.
    pub fn maybe_decrease_to(&mut self, rejected: LogIndex, hint_index: LogIndex) -> bool {
        if self.state == ProgressState::Replicate {
            // Everything up to `match_index` is known to match: an older rejection is stale.
            if rejected <= self.match_index {
                return false;
            }
            self.next_index = self.match_index.next();
            return true;
        }
        // In Probe only the latest probe counts.
        if self.next_index.prev() != rejected {
            return false;
        }
        self.next_index = rejected.min(hint_index.next()).max(self.match_index.next());
        self.probe_sent = false;
        true
    }

    /// Whether sending more must wait.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Checks `match_index < next_index`, and that the in-flight window is within its bound
    /// and used only in the replicate state.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        if self.match_index >= self.next_index {
            return Err(InvariantError::MatchNotBelowNext {
                matched: self.match_index,
                next: self.next_index,
            });
        }
        if self.inflights.len() > self.inflights.msgs_max {
            return Err(InvariantError::InflightAboveWindow {
                inflight: self.inflights.len(),
            });
        }
        if self.state != ProgressState::Replicate && !self.inflights.is_empty() {
            return Err(InvariantError::InflightOutsideReplicate {
                inflight: self.inflights.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_fills_by_count_and_frees_by_acknowledged_index() {
        let mut w = Inflights::new(2, 1000);
        w.add(LogIndex(3), 10);
        w.add(LogIndex(5), 10);
        assert!(w.is_full());
        w.free_to(LogIndex(4));
        assert_eq!(w.len(), 1);
        assert!(!w.is_full());
        w.free_to(LogIndex(9));
        assert!(w.is_empty());
    }

    #[test]
    fn the_window_fills_by_bytes() {
        let mut w = Inflights::new(100, 15);
        w.add(LogIndex(1), 10);
        assert!(!w.is_full());
        w.add(LogIndex(2), 10);
        assert!(w.is_full());
    }

    #[test]
    fn a_stale_rejection_does_not_move_a_replicating_follower_back() {
        let mut p = Progress::new(LogIndex(10), 4, 1000);
        p.maybe_update(LogIndex(8));
        p.become_replicate();
        assert!(!p.maybe_decrease_to(LogIndex(7), LogIndex(7)));
        assert_eq!(p.next_index, LogIndex(9));
        assert!(p.maybe_decrease_to(LogIndex(12), LogIndex(10)));
        assert_eq!(p.next_index, LogIndex(9));
    }

    #[test]
    fn a_probe_uses_the_followers_hint_but_never_goes_below_match() {
        let mut p = Progress::new(LogIndex(11), 4, 1000);
        assert!(p.maybe_decrease_to(LogIndex(10), LogIndex(4)));
        assert_eq!(p.next_index, LogIndex(5));
        // A rejection of an older probe is ignored.
        assert!(!p.maybe_decrease_to(LogIndex(10), LogIndex(2)));
        p.maybe_update(LogIndex(3));
        assert!(p.maybe_decrease_to(LogIndex(4), LogIndex(0)));
        assert_eq!(p.next_index, LogIndex(4));
    }
}
