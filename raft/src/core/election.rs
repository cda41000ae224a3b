//! Leader election (paper §5.2, §5.4.1) with pre-vote and check-quorum (dissertation §9.6,
//! §6.2): the timers, the campaign, and both sides of RequestVote.
//!
//! Invariants:
//! - a node votes at most once per term (the vote is durable before the grant is sent,
//!   because vote responses only leave after the Ready is persisted);
//! - a vote is granted only to a candidate whose log is at least as up to date (§5.4.1);
//! - a pre-vote changes nobody's term or vote.

use super::message::MessageBody;
use super::quorum::{self, VoteResult};
use super::raft::{CampaignKind, Raft, Role};
use super::storage::Storage;
use super::types::NodeId;

impl<S: Storage> Raft<S> {
    /// Follower and candidate tick: campaign once the randomised election timeout passes
    /// without hearing from a leader (paper §5.2).
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed_ticks = self.election_elapsed_ticks.saturating_add(1);
        // Learners and removed nodes never campaign. Their timer keeps running, so that the
        // leader lease they grant (see `in_leader_lease`) expires and they answer pre-votes.
        if self.election_elapsed_ticks < self.randomized_election_ticks || !self.is_promotable() {
            return;
        }
        self.election_elapsed_ticks = 0;
        let kind = if self.cfg.pre_vote {
            CampaignKind::PreVote
        } else {
            CampaignKind::Election
        };
        self.campaign(kind);
    }

    /// Leader tick: heartbeats, the check-quorum step-down, and the transfer timeout.
    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.cfg.election_ticks {
            self.election_elapsed_ticks = 0;
            if self.cfg.check_quorum && !self.quorum_recently_active() {
                // §6.2: a leader that cannot reach a quorum steps down, so that clients
                // looking for the leader go elsewhere and ReadIndex stops being offered.
                let term = self.term;
                self.become_follower(term, None);
                return;
            }
            for (id, pr) in self.progress.iter_mut() {
                pr.recent_active = *id == self.id;
            }
        }
        self.tick_transfer();
        self.tick_snapshots();
        if self.heartbeat_elapsed_ticks >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.bcast_heartbeat();
        }
    }

    /// Whether a quorum of the configuration was heard from in this check-quorum period.
    fn quorum_recently_active(&self) -> bool {
        let active = |id: NodeId| {
            Some(id == self.id || self.progress.get(&id).is_some_and(|pr| pr.recent_active))
        };
        quorum::vote_result(self.configs.current(), active) == VoteResult::Won
    }

    /// The driver has out-of-band evidence that the leader is gone (its connection ended). A
    /// follower forgets the leader (etcd's `ForgetLeader`) and ends the lease it granted it:
    ///
    /// - with no leader it answers a pre-vote at once, instead of ignoring it until its own
    ///   timer runs out. Without this, when two followers learn of a dead leader together, the
    ///   first one to pre-campaign is ignored by the other, and the election waits for the
    ///   other's own timer;
    /// - its election clock moves forward to one tick short of the base election timeout
    ///   (never back), so it campaigns after the random part of its timeout alone, still
    ///   spread apart from the other followers, and never within this call.
    ///
    /// The next message from a leader of the term makes it a follower of that leader again,
    /// with its clock reset. Safety is untouched: the leader is a hint, the clock only times
    /// campaigns, and votes stay one per term.
    pub fn forget_leader(&mut self) {
        if self.role == Role::Follower {
            self.leader = None;
            let skip_to = self.cfg.election_ticks.saturating_sub(1);
            self.election_elapsed_ticks = self.election_elapsed_ticks.max(skip_to);
        }
    }

    /// Starts an election now, as if the election timeout had passed (with a pre-vote first
    /// if configured). Useful to drivers and tests; a non-voter or a leader does nothing.
    pub fn campaign_now(&mut self) {
        if self.role == Role::Leader || !self.is_promotable() {
            return;
        }
        let kind = if self.cfg.pre_vote {
            CampaignKind::PreVote
        } else {
            CampaignKind::Election
        };
        self.campaign(kind);
    }

    /// Starts a pre-vote or a real election.
    pub(crate) fn campaign(&mut self, kind: CampaignKind) {
        assert!(self.is_promotable(), "only a voter campaigns");
        let (pre_vote, term) = if kind == CampaignKind::PreVote {
            self.become_pre_candidate();
            // The term the node would campaign in; its own term does not move yet.
            (true, self.term.next())
        } else {
            self.become_candidate();
            (false, self.term)
        };
        if self.record_vote(self.id, true) == VoteResult::Won {
            // A single voter wins at once.
            self.won_vote();
            return;
        }
        let voters = {
            let config = self.configs.current();
            let mut all = config.voters.clone();
            all.extend(config.voters_outgoing.iter().copied());
            all
        };
        let body = MessageBody::RequestVote {
            pre_vote,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            leadership_transfer: kind == CampaignKind::Transfer,
        };
        let me = self.id;
        for id in voters.into_iter().filter(|id| *id != me) {
            self.send_with_term(id, term, body.clone());
        }
    }

    /// Records a vote and counts them.
    fn record_vote(&mut self, from: NodeId, granted: bool) -> VoteResult {
        self.votes.entry(from).or_insert(granted);
        let votes = &self.votes;
        quorum::vote_result(self.configs.current(), |id| votes.get(&id).copied())
    }

    /// The poll was won: a pre-candidate now runs the real election, a candidate leads.
    fn won_vote(&mut self) {
        if self.role == Role::PreCandidate {
            self.campaign(CampaignKind::Election);
        } else {
            self.become_leader();
        }
    }

    /// A candidate or pre-candidate counts an answer.
    pub(crate) fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        match self.record_vote(from, granted) {
            VoteResult::Won => self.won_vote(),
            VoteResult::Lost => {
                let term = self.term;
                self.become_follower(term, None);
            }
            VoteResult::Pending => {}
        }
    }

    /// Answers RequestVote or a pre-vote (the message's term is at least ours here).
    pub(crate) fn handle_vote_request(&mut self, m: &super::message::Message) {
        let MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            ..
        } = m.body
        else {
            unreachable!("handle_vote_request is only called for RequestVote");
        };
        // Paper Figure 2: vote once per term. A pre-vote for a future term promises nothing.
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && m.term > self.term);
        #[cfg(feature = "fault-injection")]
        let skip_log_check =
            self.cfg.broken_rule == Some(super::fault::BrokenRule::VoteWithoutLogCheck);
        #[cfg(not(feature = "fault-injection"))]
        let skip_log_check = false;
        let granted =
            can_vote && (skip_log_check || self.log.is_up_to_date(last_log_index, last_log_term));
        let body = MessageBody::RequestVoteResponse { pre_vote, granted };
        if granted {
            // A granted pre-vote answers in the future term the pre-candidate asked about.
            self.send_with_term(m.from, m.term, body);
            if !pre_vote {
                self.vote = Some(m.from);
                self.election_elapsed_ticks = 0;
            }
        } else {
            self.send(m.from, body);
        }
    }
}
