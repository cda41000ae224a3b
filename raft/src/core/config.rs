//! The settings of one core, every limit named here with its default, and validated before a
//! core is built from them.

use super::errors::ConfigError;
#[cfg(feature = "fault-injection")]
use super::fault::BrokenRule;
use super::types::{LogIndex, NodeId};

/// Default ticks without hearing from a leader before a follower campaigns (randomised up to
/// twice this).
pub const ELECTION_TICKS_DEFAULT: u32 = 10;
/// Default ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS_DEFAULT: u32 = 1;
/// Default number of AppendEntries a leader may have unacknowledged per follower.
pub const INFLIGHT_MSGS_MAX_DEFAULT: usize = 256;
/// Default bytes of entries a leader may have unacknowledged per follower.
pub const INFLIGHT_BYTES_MAX_DEFAULT: u64 = 32 * 1024 * 1024;
/// Default bytes of entries in one AppendEntries (at least one entry is always sent).
pub const MSG_BYTES_MAX_DEFAULT: u64 = 1024 * 1024;
/// Default largest proposal accepted, in bytes of payload.
pub const PROPOSAL_BYTES_MAX_DEFAULT: u64 = 8 * 1024 * 1024;
/// Default bytes of committed entries handed out in one Ready (at least one entry).
pub const COMMITTED_BYTES_PER_READY_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
/// Default bytes of proposed but uncommitted entries a leader holds before refusing more.
pub const UNCOMMITTED_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;

/// Default ticks a leader waits for a snapshot to be acknowledged before sending it again.
pub const SNAPSHOT_RETRY_TICKS_DEFAULT: u32 = 50;
/// Default number of ReadIndex requests a leader holds unanswered; more are refused.
pub const PENDING_READS_MAX_DEFAULT: usize = 4096;

/// The settings of one Raft core.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; must not be zero.
    pub id: NodeId,
    /// Base election timeout in ticks; each timeout is drawn from `[election_ticks,
    /// 2 * election_ticks)` (paper §5.2). Must exceed `heartbeat_ticks`.
    pub election_ticks: u32,
    /// Ticks between heartbeats from the leader; must be positive.
    pub heartbeat_ticks: u32,
    /// Run a pre-vote round before a real election (dissertation §9.6), so a node that was cut
    /// off does not depose a healthy leader by bumping the term when it comes back.
    pub pre_vote: bool,
    /// The leader steps down when it has not heard from a quorum within an election timeout,
    /// and followers that heard from a leader within one ignore vote requests (§6.2, §9.6).
    pub check_quorum: bool,
    /// Unacknowledged AppendEntries per follower in the replicate state; must be positive.
    pub inflight_msgs_max: usize,
    /// Unacknowledged entry bytes per follower in the replicate state; must be positive.
    pub inflight_bytes_max: u64,
    /// Entry bytes per AppendEntries; must be positive. One entry is always sent even if larger.
    pub msg_bytes_max: u64,
    /// Largest payload a proposal may carry, in bytes; must be positive.
    pub proposal_bytes_max: u64,
    /// Committed entry bytes handed to the application per Ready; must be positive.
    pub committed_bytes_per_ready_max: u64,
    /// Payload bytes of proposals a leader holds uncommitted before it refuses new ones with
    /// `Error::ProposalDropped` (a leader cut off from its followers would otherwise grow its
    /// log without bound); must be positive. A single proposal is always accepted when
    /// nothing is uncommitted.
    pub uncommitted_bytes_max: u64,
    /// Ticks a leader waits for a snapshot to be acknowledged before it presumes it lost and
    /// sends it again; must be positive. Keep it above the time the driver needs to stream
    /// a snapshot, in ticks.
    pub snapshot_retry_ticks: u32,
    /// ReadIndex requests a leader holds unanswered; must be positive.
    pub pending_reads_max: usize,
    /// The index the application's state machine has durably applied, for restarts; entries up
    /// to it are not handed out again. Zero means "as of the snapshot".
    pub applied: LogIndex,
    /// Seed of the PRNG that jitters election timeouts. Give each node its own.
    pub rng_seed: u64,
    /// A safety rule to break on purpose, so that the simulations can show they catch it.
    /// Only in builds with the `fault-injection` feature, which the server never enables.
    #[cfg(feature = "fault-injection")]
    pub broken_rule: Option<BrokenRule>,
}

impl Config {
    /// A config for `id` with every other field at its default.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_ticks: ELECTION_TICKS_DEFAULT,
            heartbeat_ticks: HEARTBEAT_TICKS_DEFAULT,
            pre_vote: true,
            check_quorum: true,
            inflight_msgs_max: INFLIGHT_MSGS_MAX_DEFAULT,
            inflight_bytes_max: INFLIGHT_BYTES_MAX_DEFAULT,
            msg_bytes_max: MSG_BYTES_MAX_DEFAULT,
            proposal_bytes_max: PROPOSAL_BYTES_MAX_DEFAULT,
            committed_bytes_per_ready_max: COMMITTED_BYTES_PER_READY_MAX_DEFAULT,
            uncommitted_bytes_max: UNCOMMITTED_BYTES_MAX_DEFAULT,
            snapshot_retry_ticks: SNAPSHOT_RETRY_TICKS_DEFAULT,
            pending_reads_max: PENDING_READS_MAX_DEFAULT,
            applied: LogIndex::ZERO,
            rng_seed: id.0,
            #[cfg(feature = "fault-injection")]
            broken_rule: None,
        }
    }

    /// Checks every field and every relationship between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == NodeId(0) {
            return Err(ConfigError::ZeroId);
        }
        if self.heartbeat_ticks == 0 {
            return Err(ConfigError::ZeroLimit {
                field: "heartbeat_ticks",
            });
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return Err(ConfigError::ElectionNotAboveHeartbeat {
                election_ticks: self.election_ticks,
                heartbeat_ticks: self.heartbeat_ticks,
            });
        }
        let limits: [(&'static str, u64); 8] = [
            ("uncommitted_bytes_max", self.uncommitted_bytes_max),
            ("snapshot_retry_ticks", u64::from(self.snapshot_retry_ticks)),
            ("pending_reads_max", self.pending_reads_max as u64),
            ("inflight_msgs_max", self.inflight_msgs_max as u64),
            ("inflight_bytes_max", self.inflight_bytes_max),
            ("msg_bytes_max", self.msg_bytes_max),
            ("proposal_bytes_max", self.proposal_bytes_max),
            (
                "committed_bytes_per_ready_max",
                self.committed_bytes_per_ready_max,
            ),
        ];
        for (field, value) in limits {
            if value == 0 {
                return Err(ConfigError::ZeroLimit { field });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_bad_field_is_named() {
        assert_eq!(Config::new(NodeId(1)).validate(), Ok(()));
        assert_eq!(Config::new(NodeId(0)).validate(), Err(ConfigError::ZeroId));
        let mut c = Config::new(NodeId(1));
        c.election_ticks = 1;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ElectionNotAboveHeartbeat { .. })
        ));
        let mut c = Config::new(NodeId(1));
        c.inflight_msgs_max = 0;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroLimit {
                field: "inflight_msgs_max"
            })
        );
    }
}
