//! The Raft state machine of one node: its state (paper Figure 2), the role transitions, and
//! the one dispatcher every input goes through. The protocol rules themselves live in sibling
//! modules, one job each: `election`, `replication`, `commit`, `read`, `transfer`,
//! `snapshot`, `ready`.
//!
//! Invariants (checked by [`Raft::check_invariants`]):
//! - a leader's `leader` is itself, and it voted for itself in its term;
//! - only a leader has a progress tracker and reads waiting;
//! - the log, configuration history, progress and read invariants all hold.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use util::SplitMix64;

use super::conf_log::ConfigLog;
use super::config::Config;
use super::errors::Error;
use super::invariant::InvariantError;
use super::log::RaftLog;
use super::membership::{ConfChange, Configuration};
use super::message::{Entry, EntryPayload, HardState, Message, MessageBody};
use super::progress::Progress;
use super::read_index::{PendingReads, ReadState};
use super::storage::Storage;
use super::types::{LogIndex, NodeId, Term};

/// The most a peer's message may raise this node's term in one step. A term only grows by
/// one per election, so a real peer is this far ahead only after this node missed ten
/// thousand elections (with pre-vote, elections that actually ran): days of a badly flapping
/// cluster. A forged or corrupt frame, on the other hand, can claim any term, and a term once
/// adopted is durable and never goes back (`u64::MAX` would end the cluster: no node could
/// campaign again). Messages beyond the bound are refused with [`Error::TermJump`], which the
/// driver logs naming the sender; an operator who sees that line about a real member re-adds
/// this node, which has fallen too far behind to rejoin by itself.
pub const TERM_JUMP_MAX: u64 = 10_000;
/// The most a stranger's message may raise this node's term: a stranger is a caller the
/// driver serves although this node's configuration does not have it (this node knows no
/// leader, and may be the one that is behind: a member added while it was away, now leading,
/// is unknown to it). Such a leader is only as many terms ahead as the elections this node
/// missed, while a forger can pick any term under [`TERM_JUMP_MAX`]; and a stranger may raise
/// the term only while this node follows no leader, so that it cannot climb step by step.
/// A node further behind learns the term first from the members it knows (their answers to
/// its pre-votes carry it), and then takes the stranger's. See [`Raft::step_from_stranger`].
pub const STRANGER_TERM_JUMP_MAX: u64 = 100;

/// The role of a node (paper §5.1, plus the pre-candidate of dissertation §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Answers leaders and candidates; campaigns when it stops hearing from a leader.
    Follower,
    /// Asks whether it could win before disturbing anyone with a new term.
    PreCandidate,
    /// Campaigns for votes in a new term.
    Candidate,
    /// Accepts proposals and replicates the log.
    Leader,
}

/// Volatile state the driver may want to observe: who leads, and in which role this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// This node's role.
    pub role: Role,
    /// The leader this node knows of in its current term.
    pub leader: Option<NodeId>,
}

/// The position of a proposed entry: it is committed with this term at this index, or never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryId {
    /// The leader's term when the entry was created.
    pub term: Term,
    /// The index it was appended at.
    pub index: LogIndex,
}

/// Why a node campaigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CampaignKind {
    /// A pre-vote round first (dissertation §9.6).
    PreVote,
    /// A real election.
    Election,
    /// A real election ordered by the leader (TimeoutNow): it may disturb a live leader.
    Transfer,
}

/// A leadership transfer in progress (dissertation §3.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transfer {
    /// The node that should become leader.
    pub to: NodeId,
    /// Ticks since the transfer started; it is abandoned after an election timeout.
    pub elapsed_ticks: u32,
}

/// One Raft node: a deterministic state machine over `step`, `tick` and the proposal calls,
/// whose only output is [`Ready`](super::ready::Ready).
pub struct Raft<S: Storage> {
    /// This node's id.
    pub(crate) id: NodeId,
    /// The validated settings.
    pub(crate) cfg: Config,
    /// The latest term seen (Figure 2 `currentTerm`), durable through Ready.
    pub(crate) term: Term,
    /// The candidate voted for in `term` (Figure 2 `votedFor`), durable through Ready.
    pub(crate) vote: Option<NodeId>,
    /// The current role.
    pub(crate) role: Role,
    /// The leader of `term`, once known.
    pub(crate) leader: Option<NodeId>,
    /// The log, its commit and apply cursors.
    pub(crate) log: RaftLog<S>,
    /// The configurations implied by the log; the last one is in force.
    pub(crate) configs: ConfigLog,
    /// Leader only: what each member holds. Includes the leader itself if it is a member.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Candidate and pre-candidate only: the answers received.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    /// Ticks since the last reset: since hearing from the leader (follower), since the
    /// campaign started (candidate), since the last quorum check (leader).
    pub(crate) election_elapsed_ticks: u32,
    /// Leader only: ticks since the last heartbeat.
    pub(crate) heartbeat_elapsed_ticks: u32,
    /// The current election timeout, drawn from `[election_ticks, 2 * election_ticks)`.
    pub(crate) randomized_election_ticks: u32,
    /// The seeded source of election jitter.
    pub(crate) rng: SplitMix64,
    /// Leader only: a leadership transfer in progress.
    pub(crate) transfer: Option<Transfer>,
    /// Leader only: ReadIndex requests by stage.
    pub(crate) reads: PendingReads,
    /// Leader only: proposals were appended since the last Ready; the Ready broadcasts them,
    /// so that all proposals between two Readies share one AppendEntries per follower.
    pub(crate) append_pending: bool,
    /// Leader only: `(index, payload bytes)` of its proposals not yet committed, oldest
    /// first, and their total; bounded by `Config::uncommitted_bytes_max`.
    pub(crate) uncommitted: std::collections::VecDeque<(LogIndex, u64)>,
    /// See `uncommitted`.
    pub(crate) uncommitted_bytes: u64,
    /// Messages that may be sent before this Ready's state is persisted.
    pub(crate) msgs: Vec<Message>,
    /// Messages that may only be sent once this Ready's state is persisted.
    pub(crate) msgs_after_persist: Vec<Message>,
    /// Confirmed reads for the application.
    pub(crate) read_states: Vec<ReadState>,
    /// Reads this node gave up on (it lost leadership); the driver fails them.
    pub(crate) dropped_reads: Vec<Bytes>,
    /// The hard state last handed out in a Ready.
    pub(crate) prev_hard_state: HardState,
    /// The soft state last handed out in a Ready.
    pub(crate) prev_soft_state: SoftState,
    /// The term known durable (the latest hard state whose Ready was advanced). A leader's
    /// messages go out before persistence only once its term is durable.
    pub(crate) durable_term: Term,
    /// A Ready was handed out and not yet advanced.
    pub(crate) ready_outstanding: bool,
    /// Set while stepping a message that must be refused with an error (a leader that broke
    /// Raft's rules); `step` returns it.
    pub(crate) refused: Option<Error>,
}

impl<S: Storage> Raft<S> {
    /// A node restarted (or started) from `storage`, as a follower of its persisted term.
    pub fn new(cfg: Config, storage: S) -> Result<Raft<S>, Error> {
        cfg.validate()?;
        let init = storage.initial_state()?;
        let hs = init.hard_state.clone();
        if hs.term > super::types::TERM_MAX {
            // Only a forged frame adopted by an older version gets here: refuse to run on it
            // rather than panic at the first election.
            return Err(Error::Storage(super::errors::StorageError::Other(format!(
                "the persisted term {} is above the highest term a node may hold ({}); it was \
                 most likely adopted from a forged message: this node's data must be replaced \
                 (move the data directory aside and rejoin the cluster)",
                hs.term.0,
                super::types::TERM_MAX.0
            ))));
        }
        let log = RaftLog::new(storage, &init, cfg.applied);
        let meta = init.snapshot_metadata;
        // The history starts at the snapshot, whose configuration already includes every
        // configuration entry of the catch-up tail: replaying those would apply them twice.
        let mut configs = ConfigLog::new(meta.index, meta.configuration);
        let changes = log
            .storage()
            .conf_change_entries(meta.index.next(), log.last_index().next())
            .expect("invariant: entries in the log are readable");
        for entry in changes {
            if let EntryPayload::ConfChange(change) = &entry.payload {
                configs.append(entry.index, change);
            }
        }
        let soft = SoftState {
            role: Role::Follower,
            leader: None,
        };
        let mut raft = Raft {
            id: cfg.id,
            rng: SplitMix64::new(cfg.rng_seed),
            randomized_election_ticks: cfg.election_ticks,
            cfg,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            log,
            configs,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            transfer: None,
            reads: PendingReads::default(),
            append_pending: false,
            uncommitted: std::collections::VecDeque::new(),
            uncommitted_bytes: 0,
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            durable_term: hs.term,
            prev_hard_state: hs,
            prev_soft_state: soft,
            ready_outstanding: false,
            refused: None,
        };
        raft.reset_election_timer();
        Ok(raft)
    }

    // ----- observers -----

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The vote cast in the current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader of the current term, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The commit index.
    pub fn committed(&self) -> LogIndex {
        self.log.committed
    }

    /// The index the application confirmed applied.
    pub fn applied(&self) -> LogIndex {
        self.log.applied
    }

    /// The last index of the log (durable or not).
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// The term of the entry at `index`, if it is still held.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index).ok()
    }

    /// Entries in `[low, high)`, if they are still held (tests and tools).
    pub fn entries(&self, low: LogIndex, high: LogIndex) -> Option<Vec<Entry>> {
        self.log.entries(low, high, u64::MAX).ok()
    }

    /// The first index still held in the log (at or below the snapshot's index when the
    /// storage keeps a catch-up tail).
    pub fn first_index(&self) -> LogIndex {
        self.log.first_index()
    }

    /// The index of the latest snapshot (stored, or received and not yet persisted):
    /// everything up to it is committed and covered by it.
    pub fn snapshot_index(&self) -> LogIndex {
        self.log.snapshot_index()
    }

    /// The configuration in force (the latest in the log, committed or not).
    pub fn configuration(&self) -> &Configuration {
        self.configs.current()
    }

    /// The durable storage.
    pub fn storage(&self) -> &S {
        self.log.storage()
    }

    /// The durable storage, for the driver to persist what a Ready hands it, or to compact.
    pub fn storage_mut(&mut self) -> &mut S {
        self.log.storage_mut()
    }

    /// The replication progress of `id` (leader only).
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }

    /// The persistent state of Figure 2.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// The volatile role state.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
        }
    }

    /// The leader transfer target, while a transfer is in progress.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.to)
    }

    /// Whether this node may campaign: it votes in its latest configuration, or in one that
    /// is not yet superseded by a committed one. Dissertation §4.2.2: a server removed by an
    /// uncommitted configuration may still be needed to elect a leader (its vote, or its
    /// longer log, may be necessary for the old majority), so it keeps starting elections
    /// until the configuration without it is committed; it never counts its own vote then,
    /// because votes are counted against its latest configuration.
    pub fn is_promotable(&self) -> bool {
        let me = self.id;
        self.configs
            .any_since(self.log.committed, |config| config.is_voter(me))
    }

    // ----- inputs -----

    /// Advances logical time by one tick: elections, heartbeats, quorum checks and transfer
    /// timeouts are all counted in ticks (etcd's abstract tick), never read from a clock.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    /// Processes a message from a peer. Every message goes through here: it is checked first
    /// (`checks`: a term within reach, fields a correct sender produces; a refused message
    /// changes nothing and comes back as an error naming its sender), then the term is
    /// normalised once (paper §5.1: a higher term makes anyone a follower; a lower term is
    /// stale), then the message is dispatched on its kind and this node's role.
    pub fn step(&mut self, m: Message) -> Result<(), Error> {
        if m.to != self.id || m.from == self.id || m.from == NodeId(0) {
            return Ok(()); // Misrouted: not ours to act on.
        }
        super::checks::check_term(&m, self.term)?;
        super::checks::check_shape(&m)?;
        if m.term > self.term && !self.step_higher_term(&m) {
            return Ok(());
        }
        if m.term < self.term {
            self.step_lower_term(&m);
            return Ok(());
        }
        match &m.body {
            MessageBody::RequestVote { .. } => self.handle_vote_request(&m),
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
        match self.refused.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Processes a message from a stranger: a sender this node's configuration does not have
    /// (nor a joiner it expects), which the driver serves only because this node knows no
    /// leader. It is [`Raft::step`] with a tighter term check: such a message may raise the
    /// term by at most [`STRANGER_TERM_JUMP_MAX`], and only while this node follows no leader;
    /// otherwise it is refused with [`Error::StrangerTerm`] and changes nothing.
    pub fn step_from_stranger(&mut self, m: Message) -> Result<(), Error> {
        super::checks::check_stranger_term(&m, self.term, self.leader)?;
        self.step(m)
    }

    /// A message from a higher term. Returns whether to go on processing it.
    fn step_higher_term(&mut self, m: &Message) -> bool {
        match &m.body {
            MessageBody::RequestVote {
                pre_vote,
                leadership_transfer,
                ..
            } => {
                // Dissertation §4.2.3: a node that heard from a leader within the minimum
                // election timeout ignores vote requests, so a removed or partitioned node
                // cannot depose a healthy leader. A transfer is the leader's own wish.
                if self.in_leader_lease() && !leadership_transfer {
                    return false;
                }
                if !pre_vote {
                    self.become_follower(m.term, None);
                }
            }
            // A granted pre-vote carries the future term; nobody's term changes for it.
            MessageBody::RequestVoteResponse {
                pre_vote: true,
                granted: true,
            } => {}
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => self.become_follower(m.term, Some(m.from)),
            _ => self.become_follower(m.term, None),
        }
        true
    }

    /// A message from a lower term: ignored, except that a stale leader or pre-candidate is
    /// told the newer term. Without this a node that was partitioned away, and cannot win a
    /// pre-vote, would never learn the term and could stay out of the cluster forever.
    fn step_lower_term(&mut self, m: &Message) {
        match &m.body {
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } => {
                let body = MessageBody::AppendEntriesResponse {
                    success: false,
                    index: LogIndex::ZERO,
                    reject_hint_index: LogIndex::ZERO,
                    reject_hint_term: Term::ZERO,
                };
                self.send(m.from, body);
            }
            MessageBody::RequestVote { pre_vote: true, .. } => {
                let body = MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    granted: false,
                };
                self.send(m.from, body);
            }
            _ => {}
        }
    }

    /// Whether this node heard from a live leader within the election timeout.
    fn in_leader_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.leader.is_some()
            && self.election_elapsed_ticks < self.cfg.election_ticks
    }

    fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.heard_from_leader(m.from);
                self.handle_append(
                    m.from,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                );
            }
            MessageBody::Heartbeat {
                leader_commit,
                read_round,
            } => {
                self.heard_from_leader(m.from);
                self.handle_heartbeat(m.from, leader_commit, read_round);
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.heard_from_leader(m.from);
                self.handle_snapshot(m.from, snapshot);
            }
            // Only the leader this node follows may order an election or confirm a read: from
            // anyone else these would disturb the cluster or answer a read with a stale index.
            MessageBody::TimeoutNow if self.leader == Some(m.from) => self.handle_timeout_now(),
            MessageBody::ReadIndexResponse { context, index } if self.leader == Some(m.from) => {
                self.read_states.push(ReadState { context, index });
            }
            _ => {}
        }
    }

    fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // Paper §5.2: a candidate that hears from a leader of its term steps down.
                self.become_follower(m.term, Some(m.from));
                self.step_follower(m);
            }
            MessageBody::RequestVoteResponse { pre_vote, granted }
                if pre_vote == (self.role == Role::PreCandidate) =>
            {
                self.handle_vote_response(m.from, granted);
            }
            _ => {}
        }
    }

    fn step_leader(&mut self, m: Message) {
        if let Some(pr) = self.progress.get_mut(&m.from) {
            pr.recent_active = true;
        }
        match m.body {
            MessageBody::AppendEntriesResponse {
                success,
                index,
                reject_hint_index,
                reject_hint_term,
            } => {
                if success {
                    self.handle_append_success(m.from, index);
                } else {
                    self.handle_append_reject(m.from, index, reject_hint_index, reject_hint_term);
                }
            }
            MessageBody::HeartbeatResponse { read_round } => {
                self.handle_heartbeat_response(m.from, read_round)
            }
            MessageBody::ReadIndex { context } => self.register_read(context, Some(m.from)),
            _ => {}
        }
    }

    /// A leader of the current term spoke: reset the election timer and remember it.
    fn heard_from_leader(&mut self, from: NodeId) {
        self.election_elapsed_ticks = 0;
        self.leader = Some(from);
    }

    /// Proposes an application command. Returns where it will be committed, if it is.
    pub fn propose(&mut self, data: Bytes) -> Result<EntryId, Error> {
        self.check_can_propose()?;
        let size_bytes = data.len() as u64;
        if size_bytes > self.cfg.proposal_bytes_max {
            let max_bytes = self.cfg.proposal_bytes_max;
            return Err(Error::ProposalTooLarge {
                size_bytes,
                max_bytes,
            });
        }
        let over = self.uncommitted_bytes + size_bytes > self.cfg.uncommitted_bytes_max;
        if over && self.uncommitted_bytes > 0 {
            return Err(Error::ProposalDropped {
                reason: "too many uncommitted bytes",
            });
        }
        let id = self.append_entry(EntryPayload::Normal(data));
        self.uncommitted.push_back((id.index, size_bytes));
        self.uncommitted_bytes += size_bytes;
        Ok(id)
    }

    /// Proposes a membership change (dissertation §4.3). Only one may be in flight: the
    /// previous configuration entry must be committed and the configuration not joint.
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<EntryId, Error> {
        self.check_can_propose()?;
        let pending_index = self.configs.current_index();
        if pending_index > self.log.committed || self.configs.current().is_joint() {
            return Err(Error::ConfChangeInProgress { pending_index });
        }
        super::confchange::apply(self.configs.current(), &change)?;
        Ok(self.append_entry(EntryPayload::ConfChange(change)))
    }

    fn check_can_propose(&self) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader,
            });
        }
        if let Some(transfer) = self.transfer {
            return Err(Error::TransferInProgress { to: transfer.to });
        }
        Ok(())
    }

    /// Leader: appends a new entry of its term. Followers receive it with the next Ready's
    /// broadcast, together with every other entry proposed before that Ready.
    pub(crate) fn append_entry(&mut self, payload: EntryPayload) -> EntryId {
        debug_assert_eq!(self.role, Role::Leader);
        let index = self.log.last_index().next();
        let entry = Entry {
            term: self.term,
            index,
            payload,
        };
        if let EntryPayload::ConfChange(change) = &entry.payload {
            self.configs.append(index, change);
            self.sync_progress_with_config();
        }
        self.log.append(std::slice::from_ref(&entry));
        self.append_pending = true;
        EntryId {
            term: self.term,
            index,
        }
    }

    // ----- role transitions -----

    /// Becomes a follower in `term` (a higher term clears the vote, paper Figure 2).
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(
            term >= self.term,
            "terms never go back: {} -> {term}",
            self.term
        );
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.leave_role();
        self.role = Role::Follower;
        self.leader = leader;
    }

    /// Becomes a pre-candidate: same term, same vote, nobody disturbed yet.
    pub(crate) fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader never pre-campaigns");
        self.leave_role();
        self.role = Role::PreCandidate;
        self.leader = None;
    }

    /// Becomes a candidate in a new term, voting for itself (paper §5.2).
    pub(crate) fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader never campaigns");
        self.term = self.term.next();
        self.vote = Some(self.id);
        self.leave_role();
        self.role = Role::Candidate;
        self.leader = None;
    }

    /// Becomes leader: fresh progress for every member, then the no-op of its term (paper
    /// §8): committing it commits every earlier entry and lets reads be served.
    pub(crate) fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate becomes leader"
        );
        assert_eq!(self.vote, Some(self.id), "a leader voted for itself");
        self.leave_role();
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.progress.clear();
        self.sync_progress_with_config();
        let persisted = self.log.persisted;
        if let Some(me) = self.progress.get_mut(&self.id) {
            me.maybe_update(persisted);
            me.become_replicate();
        }
        self.append_entry(EntryPayload::Noop);
        self.bcast_append();
        self.append_pending = false;
    }

    /// Clears everything that belongs to the role being left.
    fn leave_role(&mut self) {
        self.votes.clear();
        self.progress.clear();
        self.transfer = None;
        self.append_pending = false;
        self.uncommitted.clear();
        self.uncommitted_bytes = 0;
        let dropped = self.reads.clear();
        self.dropped_reads.extend(dropped);
        self.heartbeat_elapsed_ticks = 0;
        self.reset_election_timer();
    }

    /// Restarts the election timer with a fresh random timeout (paper §5.2).
    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed_ticks = 0;
        let base = self.cfg.election_ticks;
        let jitter = self.rng.below(u64::from(base)) as u32;
        self.randomized_election_ticks = base + jitter;
    }

    /// Leader: makes the progress tracker follow the configuration in force: new members
    /// are probed from the end of the log, departed ones are forgotten.
    pub(crate) fn sync_progress_with_config(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let members = self.configs.current().members();
        self.progress.retain(|id, _| members.contains(id));
        let next = self.log.last_index().next();
        for id in members {
            self.progress.entry(id).or_insert_with(|| {
                Progress::new(
                    next,
                    self.cfg.inflight_msgs_max,
                    self.cfg.inflight_bytes_max,
                )
            });
        }
    }

    /// Queues a message in the current term.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send_with_term(to, term, body);
    }

    /// Queues a message. A leader's replication traffic may leave before its own log write
    /// is durable (dissertation §10.2.1) as long as its term is durable; everything else,
    /// votes and acknowledgements above all, waits for the Ready to be persisted.
    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        debug_assert_ne!(to, self.id, "a node never messages itself");
        let leader_traffic = matches!(
            body,
            MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow
                | MessageBody::ReadIndexResponse { .. }
        );
        let m = Message {
            from: self.id,
            to,
            term,
            body,
        };
        if leader_traffic && self.role == Role::Leader && self.durable_term == self.term {
            self.msgs.push(m);
        } else {
            self.msgs_after_persist.push(m);
        }
    }

    /// Checks every invariant of this node and of the structures it owns.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        self.log.check_invariants()?;
        self.configs.check_invariants()?;
        self.reads.check_invariants()?;
        if self.role == Role::Leader {
            if self.leader != Some(self.id) {
                return Err(InvariantError::LeaderDoesNotKnowItself {
                    node: self.id,
                    believed: self.leader,
                });
            }
            if self.vote != Some(self.id) {
                return Err(InvariantError::LeaderDidNotVoteForItself { node: self.id });
            }
            let held: u64 = self.uncommitted.iter().map(|(_, bytes)| bytes).sum();
            if held != self.uncommitted_bytes {
                return Err(InvariantError::UncommittedBytesMismatch {
                    counted: self.uncommitted_bytes,
                    held,
                });
            }
            if self
                .uncommitted
                .front()
                .is_some_and(|(index, _)| *index <= self.log.committed)
            {
                return Err(InvariantError::CommittedProposalCounted);
            }
            for (&peer, pr) in self.progress.iter() {
                pr.check_invariants()
                    .map_err(|broken| InvariantError::Progress {
                        peer,
                        broken: Box::new(broken),
                    })?;
                if pr.match_index > self.log.last_index() {
                    return Err(InvariantError::MatchBeyondLeaderLog { peer });
                }
            }
        } else {
            if !self.progress.is_empty() {
                return Err(InvariantError::NonLeaderTracksProgress);
            }
            if !self.reads.is_empty() {
                return Err(InvariantError::NonLeaderHoldsReads);
            }
        }
        if self.role == Role::Candidate && self.vote != Some(self.id) {
            return Err(InvariantError::CandidateDidNotVoteForItself);
        }
        Ok(())
    }
}
