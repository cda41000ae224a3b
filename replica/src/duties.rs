//! What a replica does beside its Raft node, in the server and in the simulation alike: hand
//! the transport's news to the node, keep the transport's peer table in step with the applied
//! address book, add members, and (on the leader) keep its own address record current and
//! promote learners that have caught up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use raft::core::{ConfChange, ConfChangeKind, LogIndex, NodeId, Role};
use raft::node::{self, Node};
use raft::transport::{Network, PeerTransport, Refusal, TransportReport};
use tracing::{info, warn};

use crate::machine::{Book, MemberInfo, Output, Proposal};

/// How far behind the leader's log a learner may be to be promoted to voter.
pub const PROMOTE_LAG_ENTRIES_MAX: u64 = 100;
/// How often the leader looks for learners to promote and checks its own address record.
pub const DUTY_INTERVAL: Duration = Duration::from_millis(200);

/// Adds a member through `node` (the leader): records its addresses, then adds it as a
/// learner unless it is a member already (a repeated join is answered as the first). The
/// leader's duties promote it once it has caught up.
pub async fn add_learner(node: &Node<Output>, member: MemberInfo) -> Result<(), node::NodeError> {
    node.propose(Proposal::Member(member.clone()).encode())
        .await?;
    if node.status().configuration.contains(member.id) {
        return Ok(());
    }
    node.change_membership(ConfChange::single(ConfChangeKind::AddLearner, member.id))
        .await
        .map(|_| ())
}

/// Hands the transport's news to the node: how each snapshot sent went, and which peers
/// refused this node as removed. Runs until the transport is dropped.
pub async fn handle_reports(
    node: Node<Output>,
    mut reports: tokio::sync::mpsc::UnboundedReceiver<TransportReport>,
) {
    while let Some(report) = reports.recv().await {
        match report {
            TransportReport::Snapshot(report) => {
                node.report_snapshot(report.to, report.delivered).await
            }
            TransportReport::Refused {
                by,
                refusal: Refusal::Removed { at },
            } => node.removed(by, at),
            // The transport logged it; nothing here can mend another cluster's node.
            TransportReport::Refused { .. } => {}
        }
    }
}

/// Keeps the transport's peer table in step with the applied records: every member's address,
/// and which nodes were removed (their connections are refused, and they are told why). Runs
/// until the machine is dropped.
pub async fn follow_records<N: Network>(
    transport: Arc<PeerTransport<N>>,
    node: Node<Output>,
    mut book: tokio::sync::watch::Receiver<Book>,
) {
    loop {
        let current = book.borrow_and_update().clone();
        for (id, member) in &current.members {
            transport.set_peer(*id, member.raft_addr.clone());
        }
        let configuration = node.status().configuration;
        for (id, _) in transport.peers() {
            if current.removed.contains_key(&id) && !configuration.contains(id) {
                transport.remove_peer(id);
            }
        }
        transport.set_removed(current.removed.into_iter().collect());
        if book.changed().await.is_err() {
            return;
        }
    }
}

/// Whether a leader may promote a learner whose replication stands at `match_index`: it must
/// have acknowledged entries from this leader (a leader's record of every follower starts at
/// zero, so a learner that was never reached, or that runs another cluster's data, never
/// qualifies, however short the log) and be within [`PROMOTE_LAG_ENTRIES_MAX`] of the leader's
/// last index.
pub fn may_promote(match_index: LogIndex, last_index: LogIndex) -> bool {
    match_index > LogIndex::ZERO && last_index.count_since(match_index) <= PROMOTE_LAG_ENTRIES_MAX
}

/// What only the leader does, periodically: make sure its own address record (`me`) is
/// current, and promote learners that have caught up ([`may_promote`]). `members` reads the
/// applied address book. Runs until the node fails or stops.
pub async fn leader_duties<B>(node: Node<Output>, me: MemberInfo, members: B)
where
    B: Fn() -> BTreeMap<NodeId, MemberInfo> + Send + 'static,
{
    let mut interval = tokio::time::interval(DUTY_INTERVAL);
    loop {
        interval.tick().await;
        let status = node.status();
        if status.failed.is_some() {
            return;
        }
        if status.role != Some(Role::Leader) {
            continue;
        }
        let book = members();
        if book.get(&me.id) != Some(&me) {
            if let Err(e) = node.propose(Proposal::Member(me.clone()).encode()).await {
                warn!(error = %e, "could not record this node's addresses");
            }
            continue;
        }
        let configuration = &status.configuration;
        if configuration.is_joint() {
            continue; // A change is in flight.
        }
        let promotable = configuration.learners.iter().find(|learner| {
            status
                .match_index
                .iter()
                .any(|(id, m)| id == *learner && may_promote(*m, status.last_index))
        });
        if let Some(&learner) = promotable {
            let name = book
                .get(&learner)
                .map_or_else(|| learner.to_string(), |m| m.name.clone());
            info!(learner = %name, "learner caught up: promoting to voter");
            if let Err(e) = node
                .change_membership(ConfChange::single(ConfChangeKind::AddVoter, learner))
                .await
            {
                warn!(learner = %name, error = %e, "promotion failed; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_learner_is_promoted_only_after_it_acknowledged_entries_and_caught_up() {
        // Given a young cluster whose log has 5 entries, a learner the leader never reached
        // (match 0) is not promoted, though it is "within 100 entries".
        assert!(!may_promote(LogIndex(0), LogIndex(5)));
        // One that acknowledged the whole log is; one 100 behind is; one 101 behind is not.
        assert!(may_promote(LogIndex(5), LogIndex(5)));
        assert!(may_promote(LogIndex(100), LogIndex(200)));
        assert!(!may_promote(LogIndex(99), LogIndex(200)));
    }
}
