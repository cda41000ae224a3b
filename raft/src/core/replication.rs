//! Log replication (paper §5.3): the leader's AppendEntries and heartbeats, the follower's
//! consistency check, and the leader's handling of the answers, with fast back-off
//! (dissertation §5.3), pipelining within the inflight window, and at most `msg_bytes_max`
//! of entries per message.
//!
//! Invariants:
//! - a follower never truncates a committed entry (asserted in the log);
//! - a follower acknowledges an index only in a message sent after the entries up to it are
//!   durable (acknowledgements are `msgs_after_persist`);
//! - the leader's `match_index` of a follower only grows, and never exceeds its own log.

use super::errors::Error;
use super::message::{Entry, MessageBody};
use super::progress::ProgressState;
use super::raft::{Raft, Role};
use super::storage::Storage;
use super::types::{LogIndex, NodeId, Term};

impl<S: Storage> Raft<S> {
    /// Leader: sends every follower what it lacks (or an empty AppendEntries carrying the
    /// commit index).
    pub(crate) fn bcast_append(&mut self) {
        let peers: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|id| *id != self.id)
            .collect();
        for id in peers {
            self.send_append(id, true);
            while self.send_append(id, false) {}
        }
    }

    /// Leader: sends one AppendEntries to `to` if its progress allows. Returns whether a
    /// message was sent. Falls back to InstallSnapshot when the entries are compacted.
    pub(crate) fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next_index;
        let prev = next.prev();
        let last = self.log.last_index();
        let prev_term = self.log.term(prev);
        let entries = self.log.entries(next, last.next(), self.cfg.msg_bytes_max);
        let (Ok(prev_term), Ok(mut entries)) = (prev_term, entries) else {
            return self.send_snapshot(to);
        };
        // Receivers refuse to decode more (see the constant); the rest goes in the next one.
        entries.truncate(super::message::ENTRIES_PER_MESSAGE_MAX);
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let pr = self
            .progress
            .get_mut(&to)
            .expect("invariant: progress checked above");
        match pr.state {
            ProgressState::Replicate => {
                if let Some(last_sent) = entries.last() {
                    // Pipelining: assume success and move on; a rejection moves back.
                    let size_bytes = entries.iter().map(Entry::size_bytes).sum();
                    pr.next_index = last_sent.index.next();
                    pr.inflights.add(last_sent.index, size_bytes);
                }
            }
            ProgressState::Probe => pr.probe_sent = true,
            ProgressState::Snapshot { .. } => unreachable!("a paused progress sends nothing"),
        }
        let body = MessageBody::AppendEntries {
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            leader_commit: self.log.committed,
        };
        self.send(to, body);
        true
    }

    /// Leader: a heartbeat to every member (paper §5.2), carrying the latest ReadIndex round.
    pub(crate) fn bcast_heartbeat(&mut self) {
        let round = self.reads.round;
        let peers: Vec<(NodeId, LogIndex)> = self
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, pr)| (*id, pr.match_index))
            .collect();
        for (id, match_index) in peers {
            // Only tell a follower about commits it is known to hold.
            let leader_commit = self.log.committed.min(match_index);
            self.send(
                id,
                MessageBody::Heartbeat {
                    leader_commit,
                    read_round: round,
                },
            );
        }
    }

    /// Follower: the consistency check and append of AppendEntries (paper §5.3).
    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        prev: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        // `checks::check_shape` saw to it that the entries follow `prev` one by one, with
        // terms that never go back and never pass the leader's (this node's) term.
        if prev < self.log.committed {
            // Entries at or below the commit index must be the committed ones: a leader that
            // sends others lacks a committed entry. Answering "matched" would make it believe
            // it holds them; refuse, keep the committed log, and raise the alarm.
            let committed = self.log.committed;
            // Only a term this node still holds can be compared: an entry its snapshot
            // covers is committed and compacted, and says nothing either way.
            if let Some(e) = entries.iter().find(|e| {
                e.index <= committed && matches!(self.log.term(e.index), Ok(t) if t != e.term)
            }) {
                self.refused = Some(Error::CommittedConflict {
                    leader: from,
                    index: e.index,
                    commit: committed,
                });
                return;
            }
            // Everything up to the commit index already matches; say so, so the leader can
            // move on (this happens after duplicates and reorderings).
            let index = self.log.committed;
            self.send_append_response(from, true, index, LogIndex::ZERO, Term::ZERO);
            return;
        }
        match self.log.maybe_append(prev, prev_term, &entries) {
            Some((last_new, truncated_at)) => {
                if let Some(at) = truncated_at {
                    self.configs.truncate_from(at);
                    for e in entries.iter().filter(|e| e.index >= at) {
                        if let super::message::EntryPayload::ConfChange(change) = &e.payload {
                            self.configs.append(e.index, change);
                        }
                    }
                }
                self.log.commit_to(leader_commit.min(last_new));
                self.send_append_response(from, true, last_new, LogIndex::ZERO, Term::ZERO);
            }
            None => {
                // Fast back-off: point the leader at the last index whose term is no newer
                // than the leader's term at `prev`, skipping a whole conflicting term.
                let hint_index = self.log.find_conflict_by_term(prev, prev_term);
                let hint_term = self.log.term(hint_index).unwrap_or(Term::ZERO);
                self.send_append_response(from, false, prev, hint_index, hint_term);
            }
        }
    }

    fn send_append_response(
        &mut self,
        to: NodeId,
        success: bool,
        index: LogIndex,
        reject_hint_index: LogIndex,
        reject_hint_term: Term,
    ) {
        let body = MessageBody::AppendEntriesResponse {
            success,
            index,
            reject_hint_index,
            reject_hint_term,
        };
        self.send(to, body);
    }

    /// Leader: a follower holds our log up to `index`.
    pub(crate) fn handle_append_success(&mut self, from: NodeId, index: LogIndex) {
        if index > self.log.last_index() {
            return; // Claims entries this leader never had: not trustworthy.
        }
        let first = self.log.first_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        let updated = pr.maybe_update(index);
        match pr.state {
            ProgressState::Probe if updated => pr.become_replicate(),
            ProgressState::Snapshot { pending_index }
                if pr.match_index >= pending_index || pr.match_index.next() >= first =>
            {
                pr.become_probe();
                pr.become_replicate();
            }
            _ => {}
        }
        if updated && self.maybe_commit() {
            // Tell everyone the new commit index without waiting for the next heartbeat.
            if self.role == Role::Leader {
                self.bcast_append();
            }
        } else {
            while self.send_append(from, false) {}
        }
        self.maybe_finish_transfer(from);
    }

    /// Leader: a follower rejected AppendEntries at `rejected`, hinting where to go next.
    pub(crate) fn handle_append_reject(
        &mut self,
        from: NodeId,
        rejected: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
    ) {
        // The leader's side of fast back-off: skip our own entries of terms newer than the
        // follower's term at its hint, since they cannot match there.
        // A hint beyond our log says nothing more than our last index does (and is a peer's
        // number: never do arithmetic on it unbounded).
        let mut next_probe = hint_index.min(self.log.last_index());
        if hint_term > Term::ZERO {
            next_probe = self.log.find_conflict_by_term(hint_index, hint_term);
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        if pr.maybe_decrease_to(rejected, next_probe) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
            self.send_append(from, true);
        }
    }

    /// Follower: a heartbeat from the leader of the current term.
    pub(crate) fn handle_heartbeat(&mut self, from: NodeId, leader_commit: LogIndex, round: u64) {
        // The leader only sends a commit index up to what it knows we hold.
        if leader_commit <= self.log.last_index() {
            self.log.commit_to(leader_commit);
        }
        self.send(from, MessageBody::HeartbeatResponse { read_round: round });
    }

    /// Leader: a follower answered a heartbeat.
    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, round: u64) {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        // A heartbeat answer proves the follower is reachable: unpause a waiting probe, and
        // let one more message into a full window, in case what filled it was lost.
        pr.probe_sent = false;
        if pr.state == ProgressState::Replicate && pr.inflights.is_full() {
            pr.inflights.free_first_one();
        }
        if pr.match_index < last {
            // Sent even when empty: if pipelined entries were lost, the follower rejects it
            // and the leader backs off to resend them.
            self.send_append(from, true);
        }
        self.ack_read_round(from, round);
    }
}
