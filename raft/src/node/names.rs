//! Node names for the operator: the runtime's logs say `node2`, not the 64-bit hash
//! ([`NodeId`]) the core works with.
//!
//! The core only knows `NodeId(u64)`, hashed from a member's name; the server knows the names
//! (its configuration and the replicated address book) and registers each here with
//! [`register`]. A log line then writes `%names::of(id)`, which prints the registered name, or
//! the core's `n<u64>` for an id nobody named yet, and is always a string, so JSON logs never
//! carry an id as a number above 2^53 that a JSON reader would round.
//!
//! Invariants: a name is registered only for the id it hashes to (one table serves every node
//! of a process, as in the simulation, and cannot disagree between them); the table holds at
//! most [`NAMES_MAX`] names, so it stays bounded whatever a process is asked to register.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{OnceLock, RwLock};

use crate::core::{ConfChange, ConfChangeKind, NodeId, Role};

/// Most names the table keeps; a cluster has a handful of members, and the address book that
/// feeds the table is itself bounded far below this. Names past the limit are not kept (their
/// ids print as `n<u64>`).
pub const NAMES_MAX: usize = 4096;

fn table() -> &'static RwLock<BTreeMap<NodeId, String>> {
    static TABLE: OnceLock<RwLock<BTreeMap<NodeId, String>>> = OnceLock::new();
    TABLE.get_or_init(|| RwLock::new(BTreeMap::new()))
}

/// Records that `id` is called `name`, for the logs. Ignored when `id` is not `name`'s hash
/// (the caller's bug, not worth a panic in a log helper) or the table is full.
pub fn register(id: NodeId, name: &str) {
    if super::driver::node_id_for_name(name) != id {
        return;
    }
    let mut names = table().write().unwrap_or_else(|p| p.into_inner());
    if names.len() < NAMES_MAX || names.contains_key(&id) {
        names.insert(id, name.to_string());
    }
}

/// A node as a log line shows it: its name if registered, else the core's `n<u64>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeName(pub NodeId);

/// `id` as a log field: `node = %names::of(id)`.
pub fn of(id: NodeId) -> NodeName {
    NodeName(id)
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = table().read().unwrap_or_else(|p| p.into_inner());
        match names.get(&self.0) {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

/// An optional node (a leader that may be unknown) as a log field: the name, or `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaybeNodeName(pub Option<NodeId>);

/// `leader = %names::of_opt(leader)`.
pub fn of_opt(id: Option<NodeId>) -> MaybeNodeName {
    MaybeNodeName(id)
}

impl fmt::Display for MaybeNodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => NodeName(id).fmt(f),
            None => f.write_str("none"),
        }
    }
}

/// A role as a log field and in answers: `leader`, `follower`, `pre-candidate`, `candidate`.
pub fn role(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
    }
}

/// A membership change as a log field: `add voter node2, remove node3`, or `leave joint`
/// for the empty change that ends a joint configuration.
#[derive(Clone, Copy, Debug)]
pub struct ChangeText<'a>(pub &'a ConfChange);

impl fmt::Display for ChangeText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.changes.is_empty() {
            return f.write_str("leave joint configuration");
        }
        for (i, change) in self.0.changes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let what = match change.kind {
                ConfChangeKind::AddVoter => "add voter",
                ConfChangeKind::AddLearner => "add learner",
                ConfChangeKind::RemoveNode => "remove",
            };
            write!(f, "{what} {}", NodeName(change.node))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::driver::node_id_for_name;

    #[test]
    fn a_registered_name_is_shown_and_an_unknown_id_as_a_string() {
        // Given a name registered under its own id
        let id = node_id_for_name("names-test-alpha");
        register(id, "names-test-alpha");
        // Then its id prints as the name, and an id nobody named prints as n<u64>.
        assert_eq!(of(id).to_string(), "names-test-alpha");
        assert_eq!(of(NodeId(77)).to_string(), "n77");
        assert_eq!(of_opt(None).to_string(), "none");
        // A name registered under another id is refused: the table never lies.
        register(NodeId(78), "names-test-beta");
        assert_eq!(of(NodeId(78)).to_string(), "n78");
    }

    #[test]
    fn a_change_reads_as_words() {
        let id = node_id_for_name("names-test-gamma");
        register(id, "names-test-gamma");
        let change = ConfChange::single(ConfChangeKind::AddLearner, id);
        assert_eq!(
            ChangeText(&change).to_string(),
            "add learner names-test-gamma"
        );
        assert_eq!(
            ChangeText(&ConfChange::default()).to_string(),
            "leave joint configuration"
        );
    }
}
