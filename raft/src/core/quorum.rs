//! Majorities, single and joint, as pure functions over "what has each voter acked".
//! They know nothing of messages or roles, so they can be tested exhaustively.
//!
//! A joint configuration decides only with a majority of *both* halves (dissertation §4.3).
//! An empty voter set agrees to everything: that makes the joint functions the plain ones
//! when the outgoing half is empty.

use std::collections::BTreeSet;

use super::membership::Configuration;
use super::types::{LogIndex, NodeId};

/// The outcome of counting votes (or any yes/no poll).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A quorum said yes.
    Won,
    /// A quorum can no longer say yes.
    Lost,
    /// Not decided yet.
    Pending,
}

/// The highest index acked by a majority of `voters`, where `acked(id)` is what `id` has
/// durably matched. An empty set returns `u64::MAX` so it never limits a joint minimum.
pub fn majority_committed_index(
    voters: &BTreeSet<NodeId>,
    acked: impl Fn(NodeId) -> LogIndex,
) -> LogIndex {
    if voters.is_empty() {
        return LogIndex(u64::MAX);
    }
    // Small clusters: a sorted stack array would do, but a Vec keeps this obviously right.
    let mut indexes: Vec<LogIndex> = voters.iter().map(|id| acked(*id)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    let quorum = voters.len() / 2 + 1;
    indexes[quorum - 1]
}

/// The committed index of a possibly joint configuration: the minimum over both halves.
pub fn committed_index(config: &Configuration, acked: impl Fn(NodeId) -> LogIndex) -> LogIndex {
    let incoming = majority_committed_index(&config.voters, &acked);
    let outgoing = majority_committed_index(&config.voters_outgoing, &acked);
    incoming.min(outgoing)
}

/// Counts a poll among `voters`; `vote(id)` is `Some(yes)` once `id` answered.
pub fn majority_vote_result(
    voters: &BTreeSet<NodeId>,
    vote: impl Fn(NodeId) -> Option<bool>,
) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut yes, mut missing) = (0usize, 0usize);
    for id in voters.iter() {
        match vote(*id) {
            Some(true) => yes += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let quorum = voters.len() / 2 + 1;
    if yes >= quorum {
        VoteResult::Won
    } else if yes + missing >= quorum {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// Counts a poll in a possibly joint configuration: both halves must win.
pub fn vote_result(config: &Configuration, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    let incoming = majority_vote_result(&config.voters, &vote);
    let outgoing = majority_vote_result(&config.voters_outgoing, &vote);
    match (incoming, outgoing) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn set(v: &[u64]) -> BTreeSet<NodeId> {
        v.iter().map(|i| NodeId(*i)).collect()
    }

    #[test]
    fn three_voters_commit_what_two_of_them_hold() {
        let acked: BTreeMap<u64, u64> = [(1, 5), (2, 3), (3, 9)].into_iter().collect();
        let got = majority_committed_index(&set(&[1, 2, 3]), |id| LogIndex(acked[&id.0]));
        assert_eq!(got, LogIndex(5));
    }

    #[test]
    fn a_joint_configuration_commits_the_minimum_of_both_halves() {
        let config = Configuration {
            voters: set(&[3, 4, 5]),
            voters_outgoing: set(&[1, 2, 3]),
            ..Configuration::default()
        };
        let acked: BTreeMap<u64, u64> = [(1, 9), (2, 9), (3, 2), (4, 1), (5, 1)]
            .into_iter()
            .collect();
        assert_eq!(
            committed_index(&config, |id| LogIndex(acked[&id.0])),
            LogIndex(1)
        );
    }

    #[test]
    fn a_joint_vote_needs_both_halves() {
        let config = Configuration {
            voters: set(&[3, 4, 5]),
            voters_outgoing: set(&[1, 2, 3]),
            ..Configuration::default()
        };
        let yes = set(&[1, 2]);
        let result = vote_result(
            &config,
            |id| if yes.contains(&id) { Some(true) } else { None },
        );
        assert_eq!(result, VoteResult::Pending);
        let no = set(&[4, 5]);
        let result = vote_result(&config, |id| {
            if yes.contains(&id) {
                Some(true)
            } else if no.contains(&id) {
                Some(false)
            } else {
                None
            }
        });
        assert_eq!(result, VoteResult::Lost);
    }

    proptest! {
        /// Smart versus dumb: the committed index is the largest index acked by a majority.
        #[test]
        fn committed_index_is_the_largest_index_a_majority_holds(
            acks in proptest::collection::vec(0u64..20, 1..8)
        ) {
            let voters: BTreeSet<NodeId> = (0..acks.len() as u64).map(NodeId).collect();
            let got = majority_committed_index(&voters, |id| LogIndex(acks[id.0 as usize]));
            let dumb = (0..=20u64)
                .filter(|i| acks.iter().filter(|a| **a >= *i).count() > acks.len() / 2)
                .max()
                .unwrap();
            prop_assert_eq!(got, LogIndex(dumb));
        }
    }
}
