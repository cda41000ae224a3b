//! The commit rule (paper §5.3, §5.4.2 and Figure 8) and what a leader does when its commit
//! index moves: leave a committed joint configuration, step down once a configuration that
//! removed it is committed (dissertation §4.2.2), and release reads waiting for the first
//! commit of its term.
//!
//! Invariant: a leader commits by counting replicas only an entry of its own term; earlier
//! entries are committed indirectly, by the Log Matching property. Counting an old-term entry
//! could commit something a later leader overwrites (Figure 8).

use super::membership::ConfChange;
use super::message::EntryPayload;
use super::quorum;
use super::raft::{Raft, Role};
use super::storage::Storage;
use super::types::LogIndex;

impl<S: Storage> Raft<S> {
    /// Leader: commits the highest index a quorum (of both halves when joint) holds, if it
    /// is of the current term. Returns whether the commit index moved.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        debug_assert_eq!(self.role, Role::Leader);
        let progress = &self.progress;
        let acked = |id| {
            progress
                .get(&id)
                .map_or(LogIndex::ZERO, |pr| pr.match_index)
        };
        let candidate = quorum::committed_index(self.configs.current(), acked);
        if candidate <= self.log.committed || candidate > self.log.last_index() {
            return false;
        }
        // Figure 8: only an entry of the current term is committed by counting.
        if self.log.term(candidate).ok() != Some(self.term) {
            return false;
        }
        let before = self.log.committed;
        self.log.commit_to(candidate);
        debug_assert!(self.log.committed > before);
        self.after_commit();
        true
    }

    /// Leader: consequences of a new commit index.
    fn after_commit(&mut self) {
        while let Some((index, size_bytes)) = self.uncommitted.front().copied() {
            if index > self.log.committed {
                break;
            }
            self.uncommitted.pop_front();
            self.uncommitted_bytes -= size_bytes;
        }
        self.release_reads_after_term_commit();
        let config = self.configs.current();
        let settled = self.configs.current_index() <= self.log.committed;
        if settled && config.is_joint() && config.auto_leave {
            // Dissertation §4.3: once C(old,new) is committed, the leader moves on to C(new).
            self.append_entry(EntryPayload::ConfChange(ConfChange::leave_joint()));
            return;
        }
        if settled && !config.is_voter(self.id) {
            // Dissertation §4.2.2: a leader outside the committed configuration steps down.
            let term = self.term;
            self.become_follower(term, None);
        }
    }
}
