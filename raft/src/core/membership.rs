//! The membership of the cluster: who votes, who only listens, and whether the cluster is in
//! the joint configuration C(old,new) of dissertation §4.3.
//!
//! Invariants (checked by [`Configuration::check_invariants`]):
//! - `voters` is never empty once the cluster is bootstrapped;
//! - a learner is never a voter of either half; `learners_next` only exists in a joint state
//!   and only holds outgoing voters that become learners when the joint state is left;
//! - `auto_leave` is only set in a joint state.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::invariant::InvariantError;
use super::types::NodeId;

/// The most ids in any one set of a [`Configuration`] that a node decodes (a snapshot's
/// membership comes from a peer). Far above any real cluster; it keeps a forged snapshot
/// header of millions of ids from costing hundreds of megabytes.
pub const CONFIGURATION_IDS_MAX: usize = 4096;

fn ids_bounded<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeSet<NodeId>, D::Error> {
    let ids: Vec<NodeId> = super::message::bounded_vec(d, CONFIGURATION_IDS_MAX, "member ids")?;
    Ok(ids.into_iter().collect())
}

/// A membership configuration, as carried by snapshots and implied by the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// The voters of the (incoming) configuration.
    #[serde(deserialize_with = "ids_bounded")]
    pub voters: BTreeSet<NodeId>,
    /// The voters of the outgoing configuration; non-empty exactly in a joint state.
    #[serde(deserialize_with = "ids_bounded")]
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Non-voting members that receive the log.
    #[serde(deserialize_with = "ids_bounded")]
    pub learners: BTreeSet<NodeId>,
    /// Outgoing voters that become learners when the joint state is left: while joint they
    /// still vote in the outgoing half, so they cannot be learners yet.
    #[serde(deserialize_with = "ids_bounded")]
    pub learners_next: BTreeSet<NodeId>,
    /// Whether the leader leaves the joint state by itself once it is committed.
    pub auto_leave: bool,
}

impl Configuration {
    /// A simple configuration of the given voters.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Configuration {
        Configuration {
            voters: voters.into_iter().collect(),
            ..Configuration::default()
        }
    }

    /// Whether decisions currently need majorities of two voter sets.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Whether `id` votes in either half: only such a node may campaign.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    /// Whether `id` is a learner now or will be after leaving the joint state.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id) || self.learners_next.contains(&id)
    }

    /// Whether `id` belongs to the configuration in any role.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member, voters first, each once, in id order.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        all.extend(self.voters_outgoing.iter().copied());
        all.extend(self.learners.iter().copied());
        all.extend(self.learners_next.iter().copied());
        all
    }

    /// Checks the invariants listed in the module documentation.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        for &node in self.learners.iter() {
            if self.is_voter(node) {
                return Err(InvariantError::LearnerIsVoter { node });
            }
        }
        for &node in self.learners_next.iter() {
            if !self.voters_outgoing.contains(&node) {
                return Err(InvariantError::LearnerNextNotOutgoingVoter { node });
            }
            if self.voters.contains(&node) {
                return Err(InvariantError::LearnerNextIsIncomingVoter { node });
            }
        }
        if self.auto_leave && !self.is_joint() {
            return Err(InvariantError::AutoLeaveOutsideJoint);
        }
        if !self.learners_next.is_empty() && !self.is_joint() {
            return Err(InvariantError::LearnersNextOutsideJoint);
        }
        Ok(())
    }
}

/// What a single change does to one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChangeKind {
    /// Make the node a voter (adding it, or promoting a learner).
    AddVoter,
    /// Make the node a learner (adding it, or demoting a voter once the joint state is left).
    AddLearner,
    /// Remove the node from the configuration.
    RemoveNode,
}

/// One change to one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfChangeSingle {
    /// What to do.
    pub kind: ConfChangeKind,
    /// To whom.
    pub node: NodeId,
}

/// The most single changes one membership change may hold. Real changes name a handful of
/// nodes; the bound is what a receiver decodes at most, so that one entry of millions of
/// two-byte changes cannot cost hundreds of megabytes, and a leader refuses to propose more
/// (followers could not decode it).
pub const CONF_CHANGES_MAX: usize = 1024;

/// A membership change: one or several single changes applied together through the joint
/// configuration. An empty list means "leave the joint state".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfChange {
    /// The changes, applied in order on a copy of the current configuration; at most
    /// [`CONF_CHANGES_MAX`].
    #[serde(deserialize_with = "changes_bounded")]
    pub changes: Vec<ConfChangeSingle>,
}

fn changes_bounded<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<ConfChangeSingle>, D::Error> {
    super::message::bounded_vec(d, CONF_CHANGES_MAX, "membership changes")
}

impl ConfChange {
    /// The change that leaves a joint configuration.
    pub fn leave_joint() -> ConfChange {
        ConfChange {
            changes: Vec::new(),
        }
    }

    /// A change of a single node.
    pub fn single(kind: ConfChangeKind, node: NodeId) -> ConfChange {
        ConfChange {
            changes: vec![ConfChangeSingle { kind, node }],
        }
    }

    /// Whether this change leaves the joint state.
    pub fn is_leave_joint(&self) -> bool {
        self.changes.is_empty()
    }
}
