//! A replica's clock: how the heartbeat interval and election timeout a user configures become
//! the Raft core's ticks. The server and the simulation both derive their node's tick from
//! here, so the simulation runs the node's clock as the server does.
//!
//! Invariants: a tick is a whole fraction of the heartbeat interval
//! ([`Timing::ticks_per_heartbeat`] of them per heartbeat), never zero; the election timeout
//! is at least [`ELECTION_TO_HEARTBEAT_RATIO_MIN`] heartbeats, and its randomised top
//! (`2 * election_ticks`) fits the core's `u32`.

use std::time::Duration;

use raft::core;

/// The default time between a leader's heartbeats (`raft.heartbeat_interval`).
pub const HEARTBEAT_INTERVAL_DEFAULT: Duration = Duration::from_millis(50);
/// The default election timeout (`raft.election_timeout`): how long a follower waits without
/// hearing from a leader before it campaigns, randomised up to twice this.
pub const ELECTION_TIMEOUT_DEFAULT: Duration = Duration::from_millis(250);
/// Raft clock ticks per heartbeat interval. A tick finer than the heartbeat draws the random
/// part of each follower's election timeout at a finer grain: at one tick per heartbeat (5
/// possible draws with the defaults), two followers that learn of a dead leader at the same
/// moment draw the same timeout one time in five, campaign together and split the vote, which
/// costs a whole further election timeout.
pub const TICKS_PER_HEARTBEAT_DEFAULT: u32 = 5;
/// The election timeout is at least this many heartbeat intervals: fewer, and a follower may
/// campaign between two heartbeats of a healthy leader.
pub const ELECTION_TO_HEARTBEAT_RATIO_MIN: u32 = 3;

/// A replica's Raft timing, in wall-clock terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The time between a leader's heartbeats.
    pub heartbeat_interval: Duration,
    /// How long a follower waits without hearing from a leader before it campaigns
    /// (randomised up to twice this).
    pub election_timeout: Duration,
    /// Raft clock ticks per heartbeat interval.
    pub ticks_per_heartbeat: u32,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            heartbeat_interval: HEARTBEAT_INTERVAL_DEFAULT,
            election_timeout: ELECTION_TIMEOUT_DEFAULT,
            ticks_per_heartbeat: TICKS_PER_HEARTBEAT_DEFAULT,
        }
    }
}

impl Timing {
    /// The length of one tick (at least a nanosecond: a timer needs a period).
    pub fn tick(&self) -> Duration {
        (self.heartbeat_interval / self.ticks_per_heartbeat.max(1)).max(Duration::from_nanos(1))
    }

    /// Sets the core's election, heartbeat and snapshot-retry periods, in ticks.
    pub fn apply_to(&self, raft: &mut core::Config) {
        let per_heartbeat = self.ticks_per_heartbeat.max(1);
        let election_ticks = (self.election_timeout.as_nanos() / self.tick().as_nanos())
            // The server's configuration bounds this far lower; the cap keeps
            // `2 * election_ticks` (the top of the randomised timeout) within u32 whatever the
            // input.
            .clamp(
                u128::from(ELECTION_TO_HEARTBEAT_RATIO_MIN * per_heartbeat),
                u128::from(u32::MAX / 2),
            ) as u32;
        raft.election_ticks = election_ticks;
        raft.heartbeat_ticks = per_heartbeat;
        raft.snapshot_retry_ticks =
            core::config::SNAPSHOT_RETRY_TICKS_DEFAULT.saturating_mul(per_heartbeat);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_timing_ticks_five_times_per_heartbeat() {
        // Given the defaults (50 ms heartbeats, a 250 ms election timeout),
        let timing = Timing::default();
        let mut raft = core::Config::new(core::NodeId(1));
        timing.apply_to(&mut raft);
        // then a tick is 10 ms, a heartbeat 5 ticks, an election timeout 25 ticks.
        assert_eq!(timing.tick(), Duration::from_millis(10));
        assert_eq!(raft.heartbeat_ticks, 5);
        assert_eq!(raft.election_ticks, 25);
        assert_eq!(
            raft.snapshot_retry_ticks,
            core::config::SNAPSHOT_RETRY_TICKS_DEFAULT * 5
        );
    }

    #[test]
    fn an_election_timeout_too_short_for_the_heartbeat_is_raised_to_three_heartbeats() {
        // Given an election timeout shorter than one heartbeat (the server refuses it; a
        // caller that skips that check still gets a sane core),
        let timing = Timing {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(10),
            ticks_per_heartbeat: 5,
        };
        let mut raft = core::Config::new(core::NodeId(1));
        timing.apply_to(&mut raft);
        // then it is three heartbeats, and the tick is never zero even at absurd settings.
        assert_eq!(raft.election_ticks, 15);
        let zero = Timing {
            heartbeat_interval: Duration::ZERO,
            election_timeout: Duration::from_secs(u64::MAX / 4),
            ticks_per_heartbeat: 0,
        };
        zero.apply_to(&mut raft);
        assert!(zero.tick() > Duration::ZERO);
        assert!(raft.election_ticks <= u32::MAX / 2);
    }
}
