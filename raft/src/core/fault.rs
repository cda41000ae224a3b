//! Rule-breaking switches for the simulations, compiled only with the `fault-injection`
//! feature: a checker that never failed has not been tested, so the simulations make the core
//! break one safety rule on purpose and demand that their checks notice.
//!
//! Invariant: no default build contains this module, so no configuration file, flag or peer
//! can reach it; the rules that consult it (`election`, `read_index`) compile to their
//! correct form without the feature.

/// Safety rules the core can be told to break, one at a time, to test that the deterministic
/// simulation notices. Even with the feature on, [`Config::new`](super::Config::new) leaves it
/// `None`: a test sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokenRule {
    /// Grant votes without checking that the candidate's log is at least as up to date
    /// (the election restriction of §5.4.1).
    VoteWithoutLogCheck,
    /// Answer a linearizable read at once with the leader's commit index: no heartbeat round
    /// to prove no newer leader exists, no wait for an entry of the leader's own term to
    /// commit (a read right after an election or a transfer misses acknowledged writes, and a
    /// deposed leader serves stale data).
    ReadWithoutConfirmation,
}
