//! The core's typed errors: what a caller did that the core refuses, why, and what to do
//! instead (for example, which node to ask).

use thiserror::Error;

use super::confchange::ConfChangeError;
use super::types::{LogIndex, NodeId, Term};

/// Why the core refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Error {
    /// Only the leader accepts this request; `leader_hint` is the leader this node knows of.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The current leader, if known: retry there.
        leader_hint: Option<NodeId>,
    },
    /// The leader is handing leadership over and refuses proposals until the transfer ends.
    #[error("leadership is being transferred to {to}; proposals are refused until it ends")]
    TransferInProgress {
        /// The transfer target.
        to: NodeId,
    },
    /// The leader refused the proposal for a reason that will pass (too much uncommitted
    /// data, typically because followers are unreachable): retry later.
    #[error("proposal dropped: {reason}")]
    ProposalDropped {
        /// Why.
        reason: &'static str,
    },
    /// The proposal is larger than `Config::proposal_bytes_max`.
    #[error("proposal of {size_bytes} bytes exceeds the limit of {max_bytes}")]
    ProposalTooLarge {
        /// The proposal's payload size.
        size_bytes: u64,
        /// The configured limit.
        max_bytes: u64,
    },
    /// A membership change is already in flight (not yet committed, or the configuration is
    /// still joint); only one may be in flight at a time.
    #[error("a configuration change is in progress (entry {pending_index} not yet settled)")]
    ConfChangeInProgress {
        /// The index of the pending configuration entry.
        pending_index: LogIndex,
    },
    /// The membership change is invalid against the current configuration.
    #[error("invalid configuration change: {0}")]
    InvalidConfChange(#[from] ConfChangeError),
    /// Leadership can only be transferred to a voter other than the leader.
    #[error("cannot transfer leadership to {to}: {reason}")]
    InvalidTransferTarget {
        /// The requested target.
        to: NodeId,
        /// Why it is not a valid target.
        reason: &'static str,
    },
    /// A snapshot can only cover entries the application has applied.
    #[error("cannot snapshot at {index}: only applied up to {applied}")]
    SnapshotBeyondApplied {
        /// The requested snapshot index.
        index: LogIndex,
        /// The applied index.
        applied: LogIndex,
    },
    /// A snapshot at or below the current one is useless.
    #[error("snapshot at {index} is not newer than the current one at {current}")]
    SnapshotOutOfDate {
        /// The requested snapshot index.
        index: LogIndex,
        /// The index of the current snapshot.
        current: LogIndex,
    },
    /// The leader holds `Config::pending_reads_max` unanswered reads already.
    #[error("too many ReadIndex requests pending (limit {max})")]
    TooManyPendingReads {
        /// The configured limit.
        max: usize,
    },
    /// The leader of the current term sent an entry at or below this node's commit index that
    /// differs from the committed one: it lacks a committed entry, which a leader elected by
    /// Raft's rules never does (Leader Completeness). The message is dropped; the node keeps
    /// its committed log and says so loudly.
    #[error(
        "leader {leader} sent an entry at index {index} that differs from this node's committed one (commit {commit}): the leader broke Raft's rules; its message is refused"
    )]
    CommittedConflict {
        /// The sender.
        leader: NodeId,
        /// The first conflicting index.
        index: LogIndex,
        /// This node's commit index.
        commit: LogIndex,
    },
    /// A peer's message claims a term too far ahead of this node's (more than
    /// [`TERM_JUMP_MAX`](super::raft::TERM_JUMP_MAX), or above
    /// [`TERM_MAX`](super::types::TERM_MAX)). Adopting it would be durable and could not be
    /// undone, so the message is dropped and the node keeps its term.
    #[error(
        "refused a message from {from} at term {}: this node is at term {}, and a jump of more than {} terms is taken for a forged or corrupt frame; if {from} is a real member, this node has missed that many elections and must be re-added (stop it, move its data directory aside, start it with --join-addr)",
        term.0,
        current.0,
        super::raft::TERM_JUMP_MAX
    )]
    TermJump {
        /// The sender.
        from: NodeId,
        /// The term the message claimed.
        term: Term,
        /// This node's term, kept.
        current: Term,
    },
    /// A stranger's message (from a sender this node's configuration does not have, served
    /// only because this node knows no leader) would raise this node's term by more than
    /// [`STRANGER_TERM_JUMP_MAX`](super::raft::STRANGER_TERM_JUMP_MAX), or at all while this
    /// node follows a leader. The message is dropped and the node keeps its term.
    #[error(
        "refused a message from {from} at term {}: {from} is not in this node's configuration, and this node, at term {}, {}; if {from} is a real member that joined while this node was away, this node learns the term from the members it knows and then follows it",
        term.0,
        current.0,
        match leader {
            Some(leader) => format!("follows leader {leader}: only a member may move it to a new term"),
            None => format!(
                "takes a term at most {} ahead from a caller it does not know",
                super::raft::STRANGER_TERM_JUMP_MAX
            ),
        }
    )]
    StrangerTerm {
        /// The sender.
        from: NodeId,
        /// The term the message claimed.
        term: Term,
        /// This node's term, kept.
        current: Term,
        /// The leader this node follows, if any.
        leader: Option<NodeId>,
    },
    /// A peer's message is not one a correct node sends (indexes out of order, an entry newer
    /// than its leader's term, an invalid configuration in a snapshot...). It is dropped
    /// before it changes anything.
    #[error("refused a malformed {kind} from {from}: {what}")]
    Malformed {
        /// The sender.
        from: NodeId,
        /// The kind of message.
        kind: &'static str,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The config is invalid.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
}

/// What a [`Storage`](super::storage::Storage) can fail with.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StorageError {
    /// The requested entries were compacted into a snapshot.
    #[error("log compacted: requested index {requested} is below the first index {first}")]
    Compacted {
        /// What was asked for.
        requested: LogIndex,
        /// The first index still held.
        first: LogIndex,
    },
    /// The requested entries are beyond the last index.
    #[error("unavailable: requested index {requested} is beyond the last index {last}")]
    Unavailable {
        /// What was asked for.
        requested: LogIndex,
        /// The last index held.
        last: LogIndex,
    },
    /// Anything else (the driver's storage failed): the core cannot continue.
    #[error("storage failure: {0}")]
    Other(String),
}

/// Why a [`Config`](super::config::Config) is invalid.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// Node id 0 is reserved for "nobody".
    #[error("the node id must not be zero")]
    ZeroId,
    /// A limit that must be positive is zero.
    #[error("{field} must be positive")]
    ZeroLimit {
        /// The field's name.
        field: &'static str,
    },
    /// Heartbeats must come well within an election timeout.
    #[error("election_ticks ({election_ticks}) must exceed heartbeat_ticks ({heartbeat_ticks})")]
    ElectionNotAboveHeartbeat {
        /// The configured election timeout.
        election_ticks: u32,
        /// The configured heartbeat interval.
        heartbeat_ticks: u32,
    },
}

impl Error {
    /// For a message refused because of what its sender put in it: the sender and a short
    /// name for the kind of refusal (for rate-limited logs). `None` for every other error.
    pub fn refused_peer(&self) -> Option<(NodeId, &'static str)> {
        match self {
            Error::TermJump { from, .. } => Some((*from, "term_jump")),
            Error::StrangerTerm { from, .. } => Some((*from, "stranger_term")),
            Error::Malformed { from, .. } => Some((*from, "malformed")),
            Error::CommittedConflict { leader, .. } => Some((*leader, "committed_conflict")),
            _ => None,
        }
    }
}
