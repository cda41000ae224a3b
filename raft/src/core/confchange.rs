//! Membership changes by joint consensus (dissertation §4.3), computed on a copy of the current
//! configuration, validated, and only then returned for the caller to swap in: an invalid change
//! can never leave a half-applied configuration behind.
//!
//! Any non-empty change enters the joint configuration C(old,new); the empty change leaves it,
//! giving C(new). Because configurations take effect when they are appended, the same function
//! is used by the leader before proposing (to refuse invalid changes with a clear error) and by
//! every node when the entry lands in its log (where an invalid entry is skipped, identically on
//! every node, since they all hold the same log prefix).

use thiserror::Error;

use super::membership::{ConfChange, ConfChangeKind, Configuration};
use super::types::NodeId;

/// Why a membership change cannot be applied to the current configuration.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfChangeError {
    /// A joint configuration must be left before another change starts.
    #[error("the configuration is joint; leave it before changing membership again")]
    AlreadyJoint,
    /// Only a joint configuration can be left.
    #[error("the configuration is not joint, there is nothing to leave")]
    NotJoint,
    /// Removing a node that is not a member.
    #[error("{0} is not a member")]
    NotMember(NodeId),
    /// The change would leave no voter at all.
    #[error("the change would leave no voters")]
    NoVotersLeft,
    /// The change would not change anything.
    #[error("the change does not change the configuration")]
    NoChange,
    /// The change holds more single changes than a node decodes.
    #[error("the change holds {count} single changes; at most {max} are allowed")]
    TooManyChanges {
        /// How many it holds.
        count: usize,
        /// [`CONF_CHANGES_MAX`](super::membership::CONF_CHANGES_MAX).
        max: usize,
    },
}

/// Enters the joint configuration C(old,new) described by `change`, on a copy of `current`.
pub fn enter_joint(
    current: &Configuration,
    change: &ConfChange,
) -> Result<Configuration, ConfChangeError> {
    if current.is_joint() {
        return Err(ConfChangeError::AlreadyJoint);
    }
    let mut next = current.clone();
    next.voters_outgoing = current.voters.clone();
    for single in change.changes.iter() {
        apply_single(&mut next, single.kind, single.node)?;
    }
    if next.voters.is_empty() {
        return Err(ConfChangeError::NoVotersLeft);
    }
    let unchanged = next.voters == current.voters
        && next.learners == current.learners
        && next.learners_next.is_empty();
    if unchanged {
        return Err(ConfChangeError::NoChange);
    }
    // From a configuration with no voters (a cluster's first entry, replayed by every node
    // that joins later) there is no old majority to keep: the change takes effect directly.
    next.auto_leave = next.is_joint();
    next.check_invariants()
        .expect("enter_joint keeps the configuration invariants");
    Ok(next)
}

/// Leaves the joint configuration: C(new) alone decides from now on.
pub fn leave_joint(current: &Configuration) -> Result<Configuration, ConfChangeError> {
    if !current.is_joint() {
        return Err(ConfChangeError::NotJoint);
    }
    let mut next = current.clone();
    next.voters_outgoing.clear();
    let demoted = std::mem::take(&mut next.learners_next);
    next.learners.extend(demoted);
    next.auto_leave = false;
    next.check_invariants()
        .expect("leave_joint keeps the configuration invariants");
    Ok(next)
}

/// Applies `change` to `current`: enter or leave the joint state.
pub fn apply(
    current: &Configuration,
    change: &ConfChange,
) -> Result<Configuration, ConfChangeError> {
    let max = super::membership::CONF_CHANGES_MAX;
    if change.changes.len() > max {
        let count = change.changes.len();
        return Err(ConfChangeError::TooManyChanges { count, max });
    }
    if change.is_leave_joint() {
        leave_joint(current)
    } else {
        enter_joint(current, change)
    }
}

fn apply_single(
    next: &mut Configuration,
    kind: ConfChangeKind,
    node: NodeId,
) -> Result<(), ConfChangeError> {
    match kind {
        ConfChangeKind::AddVoter => {
            next.learners.remove(&node);
            next.learners_next.remove(&node);
            next.voters.insert(node);
        }
        ConfChangeKind::AddLearner => {
            next.voters.remove(&node);
            // An outgoing voter still votes in the old half until the joint state is left.
            if next.voters_outgoing.contains(&node) {
                next.learners_next.insert(node);
            } else {
                next.learners.insert(node);
            }
        }
        ConfChangeKind::RemoveNode => {
            let was_member = next.voters.remove(&node)
                | next.learners.remove(&node)
                | next.learners_next.remove(&node);
            if !was_member {
                return Err(ConfChangeError::NotMember(node));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::membership::ConfChangeSingle;

    fn ids(v: &[u64]) -> std::collections::BTreeSet<NodeId> {
        v.iter().map(|i| NodeId(*i)).collect()
    }

    #[test]
    fn the_first_voter_of_an_empty_configuration_is_added_without_a_joint_state() {
        // Given the empty configuration every node starts from, when the cluster's first entry
        // adds its founding voter, then that voter alone decides at once.
        let change = ConfChange::single(ConfChangeKind::AddVoter, NodeId(1));
        let first = apply(&Configuration::default(), &change).unwrap();
        assert_eq!(first.voters, ids(&[1]));
        assert!(!first.is_joint());
        assert!(!first.auto_leave);
        first.check_invariants().unwrap();
    }

    #[test]
    fn replacing_a_voter_enters_a_joint_state_then_leaves_it() {
        let old = Configuration::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
        let change = ConfChange {
            changes: vec![
                ConfChangeSingle {
                    kind: ConfChangeKind::RemoveNode,
                    node: NodeId(1),
                },
                ConfChangeSingle {
                    kind: ConfChangeKind::AddVoter,
                    node: NodeId(4),
                },
            ],
        };
        let joint = apply(&old, &change).unwrap();
        assert_eq!(joint.voters, ids(&[2, 3, 4]));
        assert_eq!(joint.voters_outgoing, ids(&[1, 2, 3]));
        assert!(joint.auto_leave);
        let new = apply(&joint, &ConfChange::leave_joint()).unwrap();
        assert_eq!(new.voters, ids(&[2, 3, 4]));
        assert!(!new.is_joint());
    }

    #[test]
    fn demoting_a_voter_keeps_it_voting_in_the_old_half_until_leaving() {
        let old = Configuration::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
        let joint = apply(
            &old,
            &ConfChange::single(ConfChangeKind::AddLearner, NodeId(3)),
        )
        .unwrap();
        assert!(joint.learners_next.contains(&NodeId(3)));
        assert!(joint.is_voter(NodeId(3)));
        let new = leave_joint(&joint).unwrap();
        assert!(new.learners.contains(&NodeId(3)));
        assert!(!new.is_voter(NodeId(3)));
    }

    #[test]
    fn invalid_changes_are_refused_without_touching_the_original() {
        let old = Configuration::with_voters([NodeId(1)]);
        let remove_all = ConfChange::single(ConfChangeKind::RemoveNode, NodeId(1));
        assert_eq!(apply(&old, &remove_all), Err(ConfChangeError::NoVotersLeft));
        let unknown = ConfChange::single(ConfChangeKind::RemoveNode, NodeId(9));
        assert_eq!(
            apply(&old, &unknown),
            Err(ConfChangeError::NotMember(NodeId(9)))
        );
        let same = ConfChange::single(ConfChangeKind::AddVoter, NodeId(1));
        assert_eq!(apply(&old, &same), Err(ConfChangeError::NoChange));
        assert_eq!(
            apply(&old, &ConfChange::leave_joint()),
            Err(ConfChangeError::NotJoint)
        );
        let max = crate::core::membership::CONF_CHANGES_MAX;
        let huge = ConfChange {
            changes: vec![
                ConfChangeSingle {
                    kind: ConfChangeKind::AddLearner,
                    node: NodeId(2),
                };
                max + 1
            ],
        };
        assert_eq!(
            apply(&old, &huge),
            Err(ConfChangeError::TooManyChanges {
                count: max + 1,
                max
            })
        );
        assert_eq!(old, Configuration::with_voters([NodeId(1)]));
    }
}
