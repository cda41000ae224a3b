//! [`InvariantError`]: which invariant of the core a check found broken.
//!
//! Every structure of the core with invariants (`log`, `membership`, `conf_log`, `progress`,
//! `read_index`, and `raft` over them all) has a `check_invariants` that returns the first
//! one broken as a variant of this enum, with the values that show it. A broken invariant is
//! a bug in the core, never bad input, so nothing handles it: the test harnesses and the
//! driver's debug check panic with it. The one exception is a peer's snapshot, whose
//! configuration is checked as input (`checks`) and refused when invalid.

use super::types::{LogIndex, NodeId};

/// One broken invariant of the core, with the values that show it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvariantError {
    // --- log (`log::RaftLog`)
    /// The log's cursors are not `applied <= applying <= committed <= last`.
    #[error(
        "cursors out of order: applied {applied} applying {applying} committed {committed} last {last}"
    )]
    CursorsOutOfOrder {
        /// Applied index.
        applied: LogIndex,
        /// Index handed to the application, not yet confirmed applied.
        applying: LogIndex,
        /// Commit index.
        committed: LogIndex,
        /// Last index.
        last: LogIndex,
    },
    /// The persisted index is past the log's end.
    #[error("persisted {persisted} beyond last {last}")]
    PersistedBeyondLast {
        /// Persisted index.
        persisted: LogIndex,
        /// Last index.
        last: LogIndex,
    },
    /// The log leaves a gap after the snapshot.
    #[error("the log starts at {first}, after the snapshot at {snapshot}")]
    LogStartsAfterSnapshot {
        /// First index of the log.
        first: LogIndex,
        /// Index of the snapshot.
        snapshot: LogIndex,
    },
    /// The snapshot covers entries that are not committed.
    #[error("the snapshot at {snapshot} is beyond commit {committed}")]
    SnapshotBeyondCommit {
        /// Index of the snapshot.
        snapshot: LogIndex,
        /// Commit index.
        committed: LogIndex,
    },
    /// An unstable entry is not at the index its position says.
    #[error("unstable entry {position} has index {index}")]
    UnstableEntryMisplaced {
        /// Position in the unstable tail.
        position: usize,
        /// The entry's index.
        index: LogIndex,
    },
    /// The unstable snapshot does not end right before the unstable entries.
    #[error("the unstable snapshot does not end before the unstable entries")]
    UnstableSnapshotNotAdjacent,

    // --- membership (`membership::Configuration`)
    /// A node is both a learner and a voter.
    #[error("{node} is both a learner and a voter")]
    LearnerIsVoter {
        /// The node.
        node: NodeId,
    },
    /// A node waits to become a learner without being an outgoing voter.
    #[error("{node} is in learners_next but not an outgoing voter")]
    LearnerNextNotOutgoingVoter {
        /// The node.
        node: NodeId,
    },
    /// A node waits to become a learner but is an incoming voter.
    #[error("{node} is in learners_next but an incoming voter")]
    LearnerNextIsIncomingVoter {
        /// The node.
        node: NodeId,
    },
    /// `auto_leave` outside a joint configuration.
    #[error("auto_leave set outside a joint state")]
    AutoLeaveOutsideJoint,
    /// `learners_next` outside a joint configuration.
    #[error("learners_next set outside a joint state")]
    LearnersNextOutsideJoint,

    // --- configuration history (`conf_log::ConfLog`)
    /// The configuration history is empty.
    #[error("empty configuration history")]
    EmptyConfigurationHistory,
    /// The configuration history is not in strictly ascending index order.
    #[error("configuration indexes {earlier} then {later}")]
    ConfigurationsOutOfOrder {
        /// Index of the earlier configuration.
        earlier: LogIndex,
        /// Index of the configuration after it.
        later: LogIndex,
    },
    /// A configuration in the history breaks its own invariants.
    #[error("configuration at {index}: {broken}")]
    Configuration {
        /// Index of the configuration's entry.
        index: LogIndex,
        /// What it breaks.
        broken: Box<InvariantError>,
    },

    // --- ReadIndex (`read_index::PendingReads`)
    /// A pending read's round is out of order or was never started.
    #[error("pending round {round} out of order (latest {latest})")]
    ReadRoundOutOfOrder {
        /// The read's round.
        round: u64,
        /// The latest round started.
        latest: u64,
    },

    // --- replication progress (`progress::Progress`)
    /// A follower's match index is not below its next index.
    #[error("match {matched} >= next {next}")]
    MatchNotBelowNext {
        /// Match index.
        matched: LogIndex,
        /// Next index.
        next: LogIndex,
    },
    /// More messages are in flight than the window allows.
    #[error("{inflight} messages inflight above the window")]
    InflightAboveWindow {
        /// Messages in flight.
        inflight: usize,
    },
    /// Messages are in flight to a follower outside the replicate state.
    #[error("{inflight} messages inflight outside Replicate")]
    InflightOutsideReplicate {
        /// Messages in flight.
        inflight: usize,
    },
    /// One follower's progress breaks its invariants.
    #[error("progress of {peer}: {broken}")]
    Progress {
        /// The follower.
        peer: NodeId,
        /// What its progress breaks.
        broken: Box<InvariantError>,
    },

    // --- the node (`raft::Raft`)
    /// A leader does not name itself as leader.
    #[error("leader {node} believes the leader is {believed:?}")]
    LeaderDoesNotKnowItself {
        /// The leader.
        node: NodeId,
        /// Whom it takes for the leader.
        believed: Option<NodeId>,
    },
    /// A leader did not vote for itself in its term.
    #[error("leader {node} did not vote for itself")]
    LeaderDidNotVoteForItself {
        /// The leader.
        node: NodeId,
    },
    /// The leader's count of uncommitted bytes disagrees with the proposals it holds.
    #[error("uncommitted bytes {counted} but {held} held")]
    UncommittedBytesMismatch {
        /// The running count.
        counted: u64,
        /// The sum over the proposals held.
        held: u64,
    },
    /// A committed proposal still counts against the uncommitted limit.
    #[error("a committed proposal still counts as uncommitted")]
    CommittedProposalCounted,
    /// A follower matched entries the leader does not have.
    #[error("{peer} matched beyond the leader's log")]
    MatchBeyondLeaderLog {
        /// The follower.
        peer: NodeId,
    },
    /// A node that is not leader tracks replication progress.
    #[error("a non-leader tracks progress")]
    NonLeaderTracksProgress,
    /// A node that is not leader holds ReadIndex requests.
    #[error("a non-leader holds reads")]
    NonLeaderHoldsReads,
    /// A candidate did not vote for itself.
    #[error("a candidate did not vote for itself")]
    CandidateDidNotVoteForItself,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::membership::Configuration;

    #[test]
    fn a_broken_configuration_is_reported_by_the_invariant_it_breaks() {
        // Given a configuration in which node 2 is both a voter and a learner
        let mut config = Configuration::with_voters([NodeId(1), NodeId(2)]);
        config.learners.insert(NodeId(2));
        // When it is checked
        let broken = config.check_invariants();
        // Then the error names that invariant and the node, in its type and in its message
        assert_eq!(
            broken,
            Err(InvariantError::LearnerIsVoter { node: NodeId(2) })
        );
        assert_eq!(
            broken.unwrap_err().to_string(),
            "n2 is both a learner and a voter"
        );
    }
}
