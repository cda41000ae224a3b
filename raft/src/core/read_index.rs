//! ReadIndex (dissertation §6.4): the leader answers a linearizable read with its commit
//! index once a heartbeat round started *after* the read arrived was acknowledged by a quorum,
//! which proves no newer leader existed when the read was registered. Reads registered
//! between two Readies share one round (batching). A leader that has not yet committed an
//! entry of its own term does not know the latest commit index, so reads wait until it has.
//!
//! Invariants (checked by [`PendingReads::check_invariants`]):
//! - pending reads are ordered by round, and every round is at most `round`;
//! - each read's index never exceeds the commit index of its term's leader (checked by Raft).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::errors::Error;
#[cfg(feature = "fault-injection")]
use super::fault::BrokenRule;
use super::invariant::InvariantError;
use super::message::MessageBody;
use super::quorum::{self, VoteResult};
use super::raft::{Raft, Role};
use super::storage::Storage;
use super::types::{LogIndex, NodeId};

/// A read waiting for its confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRead {
    /// The caller's identifier, echoed in the answer.
    pub context: Bytes,
    /// The follower that asked on behalf of its client, or `None` for a local read.
    pub from: Option<NodeId>,
    /// The commit index when the read was registered: the read index.
    pub index: LogIndex,
}

/// A confirmed read: once the application has applied `index`, a read with `context` may be
/// served from its state machine (dissertation §6.4 step 4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's identifier.
    pub context: Bytes,
    /// The index the state machine must have applied first.
    pub index: LogIndex,
}

/// The reads a leader holds until it may answer them, by stage.
#[derive(Clone, Debug, Default)]
pub struct PendingReads {
    /// The latest heartbeat round started. Monotonic over the node's life, so an
    /// acknowledgement of an old round can never confirm a newer read.
    pub round: u64,
    /// The highest round each peer acknowledged in the current term.
    pub acks: BTreeMap<NodeId, u64>,
    /// Reads that arrived before the leader committed an entry of its own term; their index
    /// is set once it has.
    pub waiting_commit: Vec<(Bytes, Option<NodeId>)>,
    /// Reads registered since the last round started: the next round confirms them.
    pub unsent: Vec<PendingRead>,
    /// Reads whose round is out, oldest first.
    pub pending: VecDeque<(u64, PendingRead)>,
}

impl PendingReads {
    /// How many reads are waiting, at any stage.
    pub fn len(&self) -> usize {
        self.waiting_commit.len() + self.unsent.len() + self.pending.len()
    }

    /// Whether no read is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a new round for every unsent read; returns the round to put in heartbeats.
    pub fn start_round(&mut self) -> u64 {
        debug_assert!(
            !self.unsent.is_empty(),
            "a round is only started for waiting reads"
        );
        self.round += 1;
        for read in self.unsent.drain(..) {
            self.pending.push_back((self.round, read));
        }
        self.round
    }

    /// Records that `from` acknowledged a heartbeat of `round`.
    pub fn ack(&mut self, from: NodeId, round: u64) {
        if round > self.round {
            return; // Not a round this node started: a hostile or confused peer.
        }
        let acked = self.acks.entry(from).or_insert(0);
        *acked = (*acked).max(round);
    }

    /// Forgets every read (the node is no longer leader); returns their contexts.
    pub fn clear(&mut self) -> Vec<Bytes> {
        let mut dropped: Vec<Bytes> = self.waiting_commit.drain(..).map(|(c, _)| c).collect();
        dropped.extend(self.unsent.drain(..).map(|r| r.context));
        dropped.extend(self.pending.drain(..).map(|(_, r)| r.context));
        self.acks.clear();
        dropped
    }

    /// Checks the invariants listed in the module documentation.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        let mut previous = 0;
        for (round, _) in self.pending.iter() {
            if *round < previous || *round > self.round {
                return Err(InvariantError::ReadRoundOutOfOrder {
                    round: *round,
                    latest: self.round,
                });
            }
            previous = *round;
        }
        Ok(())
    }
}

impl<S: Storage> Raft<S> {
    /// Asks for a linearizable read. The answer comes in a later Ready's `read_states`: once
    /// the state machine has applied its index, the read may be served. A follower forwards
    /// the request to the leader; without a known leader the request is refused.
    pub fn read_index(&mut self, context: Bytes) -> Result<(), Error> {
        match self.role {
            Role::Leader => {
                if self.reads.len() >= self.cfg.pending_reads_max {
                    return Err(Error::TooManyPendingReads {
                        max: self.cfg.pending_reads_max,
                    });
                }
                self.register_read(context, None);
                Ok(())
            }
            _ => match self.leader {
                Some(leader) => {
                    self.send(leader, MessageBody::ReadIndex { context });
                    Ok(())
                }
                None => Err(Error::NotLeader { leader_hint: None }),
            },
        }
    }

    /// Leader: registers a read from the application (`from == None`) or a follower.
    pub(crate) fn register_read(&mut self, context: Bytes, from: Option<NodeId>) {
        debug_assert_eq!(self.role, Role::Leader);
        if from.is_some() && self.reads.len() >= self.cfg.pending_reads_max {
            return; // The follower's client times out and retries; the bound holds.
        }
        #[cfg(feature = "fault-injection")]
        let unconfirmed = self.cfg.broken_rule == Some(BrokenRule::ReadWithoutConfirmation);
        #[cfg(not(feature = "fault-injection"))]
        let unconfirmed = false;
        if self.log.term(self.log.committed).ok() != Some(self.term) && !unconfirmed {
            // §6.4 step 1: until an entry of its term is committed the leader does not know
            // the latest commit index.
            self.reads.waiting_commit.push((context, from));
            return;
        }
        let index = self.log.committed;
        if self.only_self_decides() || unconfirmed {
            // A single voter is its own quorum: no round needed.
            self.answer_read(PendingRead {
                context,
                from,
                index,
            });
            return;
        }
        self.reads.unsent.push(PendingRead {
            context,
            from,
            index,
        });
    }

    /// Whether this leader alone is a quorum of the configuration.
    fn only_self_decides(&self) -> bool {
        let me = self.id;
        quorum::vote_result(self.configs.current(), |id| Some(id == me)) == VoteResult::Won
    }

    /// Leader: the first entry of the term committed; reads waiting for it get its index.
    pub(crate) fn release_reads_after_term_commit(&mut self) {
        if self.reads.waiting_commit.is_empty() {
            return;
        }
        for (context, from) in std::mem::take(&mut self.reads.waiting_commit) {
            self.register_read(context, from);
        }
    }

    /// Leader, while building a Ready: starts one heartbeat round shared by every read
    /// registered since the previous Ready (the batching of dissertation §6.4).
    pub(crate) fn flush_reads(&mut self) {
        if self.role == Role::Leader && !self.reads.unsent.is_empty() {
            self.reads.start_round();
            self.bcast_heartbeat();
        }
    }

    /// Leader: `from` acknowledged a heartbeat of `round`; answers every read whose round a
    /// quorum has now acknowledged, in order.
    pub(crate) fn ack_read_round(&mut self, from: NodeId, round: u64) {
        self.reads.ack(from, round);
        while let Some((round, _)) = self.reads.pending.front() {
            let round = *round;
            let me = self.id;
            let acks = &self.reads.acks;
            let confirmed =
                |id: NodeId| Some(id == me || acks.get(&id).is_some_and(|r| *r >= round));
            if quorum::vote_result(self.configs.current(), confirmed) != VoteResult::Won {
                break;
            }
            let (_, read) = self
                .reads
                .pending
                .pop_front()
                .expect("invariant: front exists");
            self.answer_read(read);
        }
    }

    fn answer_read(&mut self, read: PendingRead) {
        debug_assert!(
            read.index <= self.log.committed,
            "a read index is a commit index"
        );
        match read.from {
            None => self.read_states.push(ReadState {
                context: read.context,
                index: read.index,
            }),
            Some(to) => {
                let body = MessageBody::ReadIndexResponse {
                    context: read.context,
                    index: read.index,
                };
                self.send(to, body);
            }
        }
    }
}
