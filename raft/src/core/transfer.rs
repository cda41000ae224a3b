//! Leadership transfer (dissertation §3.10): the leader stops accepting proposals, brings the
//! target's log up to date, then sends it TimeoutNow so it campaigns at once, with a flag
//! that lets its RequestVote through other nodes' leader leases. A transfer that has not
//! finished within an election timeout is abandoned so the cluster is not left refusing
//! proposals forever.

use super::errors::Error;
use super::message::MessageBody;
use super::raft::{CampaignKind, Raft, Role, Transfer};
use super::storage::Storage;
use super::types::NodeId;

impl<S: Storage> Raft<S> {
    /// Asks the leader to hand leadership to `to`, a voter of the configuration in force.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader,
            });
        }
        if to == self.id {
            return Err(Error::InvalidTransferTarget {
                to,
                reason: "it is already the leader",
            });
        }
        if !self.configs.current().voters.contains(&to) {
            return Err(Error::InvalidTransferTarget {
                to,
                reason: "it is not a voter",
            });
        }
        if let Some(transfer) = self.transfer {
            if transfer.to == to {
                return Ok(()); // Already on its way.
            }
            return Err(Error::TransferInProgress { to: transfer.to });
        }
        self.transfer = Some(Transfer {
            to,
            elapsed_ticks: 0,
        });
        if !self.maybe_finish_transfer(to) {
            self.send_append(to, true);
        }
        Ok(())
    }

    /// Leader: if the transfer target holds the whole log, tells it to campaign now.
    /// Returns whether TimeoutNow was sent.
    pub(crate) fn maybe_finish_transfer(&mut self, from: NodeId) -> bool {
        let Some(transfer) = self.transfer else {
            return false;
        };
        let caught_up = self
            .progress
            .get(&from)
            .is_some_and(|pr| pr.match_index == self.log.last_index());
        if transfer.to != from || !caught_up {
            return false;
        }
        self.send(from, MessageBody::TimeoutNow);
        true
    }

    /// Leader tick: abandons a transfer older than an election timeout.
    pub(crate) fn tick_transfer(&mut self) {
        let Some(transfer) = self.transfer.as_mut() else {
            return;
        };
        transfer.elapsed_ticks += 1;
        if transfer.elapsed_ticks >= self.cfg.election_ticks {
            self.transfer = None;
        }
    }

    /// Follower: the leader asks us to campaign now.
    pub(crate) fn handle_timeout_now(&mut self) {
        if self.is_promotable() {
            self.campaign(CampaignKind::Transfer);
        }
    }
}
