//! Snapshots (paper §7): the leader sends its snapshot to a follower that needs entries it
//! has compacted away; a follower behind the snapshot replaces its log with it. The driver
//! streams the data in chunks; the core only sees the whole message and its metadata, which
//! carries the membership as of the snapshot's last entry.
//!
//! Compaction itself is the driver's: once the state machine has a snapshot at an applied
//! index, the driver writes it to storage, which drops the entries it covers except perhaps a
//! catch-up tail (see [`Storage`]). The core reads the new snapshot index and first index from
//! storage the next time it needs them. A follower whose next entry is still held, tail
//! included, is sent entries; only one behind `first_index()` gets the snapshot.
//!
//! Invariant: a snapshot never moves the commit index back, and a follower never restores a
//! snapshot whose last entry is already in its log with the same term (that would discard
//! entries after it that the leader may have counted).

use bytes::Bytes;

use super::errors::Error;
use super::message::{MessageBody, Snapshot, SnapshotMetadata};
use super::raft::Raft;
use super::storage::Storage;
use super::types::{LogIndex, NodeId, Term};

impl<S: Storage> Raft<S> {
    /// Leader: sends the latest snapshot to `to`, which is behind the compacted log.
    pub(crate) fn send_snapshot(&mut self, to: NodeId) -> bool {
        let snapshot = self.log.snapshot();
        let index = snapshot.metadata.index;
        let Some(pr) = self.progress.get_mut(&to) else {
            return false;
        };
        pr.become_snapshot(index);
        self.send(to, MessageBody::InstallSnapshot { snapshot });
        true
    }

    /// Follower: a snapshot from the leader of the current term.
    pub(crate) fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        let term = snapshot.metadata.term;
        if index <= self.log.committed {
            // Already have (and committed) everything it covers.
            let committed = self.log.committed;
            self.send_snapshot_response(from, committed);
            return;
        }
        if self.log.matches(index, term) {
            // Our log already holds its last entry: keep the entries after it, just commit.
            self.log.commit_to(index);
            self.send_snapshot_response(from, index);
            return;
        }
        self.configs
            .reset(index, snapshot.metadata.configuration.clone());
        self.log.restore(snapshot);
        self.send_snapshot_response(from, index);
    }

    fn send_snapshot_response(&mut self, to: NodeId, index: LogIndex) {
        let body = MessageBody::AppendEntriesResponse {
            success: true,
            index,
            reject_hint_index: LogIndex::ZERO,
            reject_hint_term: Term::ZERO,
        };
        self.send(to, body);
    }
}

impl<S: Storage> Raft<S> {
    /// The driver reports how streaming a snapshot to `to` ended. On failure the leader goes
    /// back to probing, which sends the snapshot again if it is still needed.
    pub fn report_snapshot(&mut self, to: NodeId, success: bool) {
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        if let super::progress::ProgressState::Snapshot { .. } = pr.state
            && !success
        {
            pr.become_probe();
        }
    }

    /// Leader tick: a snapshot that has not been acknowledged for `snapshot_retry_ticks` is
    /// presumed lost, so the follower is probed again (which resends it if still needed).
    /// Without this a single dropped InstallSnapshot would stall that follower for good.
    pub(crate) fn tick_snapshots(&mut self) {
        let retry_ticks = self.cfg.snapshot_retry_ticks;
        for pr in self.progress.values_mut() {
            if let super::progress::ProgressState::Snapshot { .. } = pr.state {
                pr.snapshot_wait_ticks += 1;
                if pr.snapshot_wait_ticks >= retry_ticks {
                    pr.become_probe();
                }
            }
        }
    }
}

impl<S: Storage> Raft<S> {
    /// The state machine has a snapshot of everything up to the applied entry `index`:
    /// returns the snapshot (with the term and the configuration as of `index`) for the
    /// driver to write to storage, which compacts the log up to it.
    pub fn snapshot_at(&self, index: LogIndex, data: Bytes) -> Result<Snapshot, Error> {
        let applied = self.log.applied;
        if index > applied {
            return Err(Error::SnapshotBeyondApplied { index, applied });
        }
        // Not `first_index() - 1`: with a catch-up tail the log starts below the snapshot.
        let current = self.log.snapshot_index();
        if index <= current {
            return Err(Error::SnapshotOutOfDate { index, current });
        }
        let term = self.log.term(index)?;
        let configuration = self
            .configs
            .at(index)
            .expect("invariant: the config history reaches back to the latest snapshot")
            .clone();
        Ok(Snapshot {
            metadata: SnapshotMetadata {
                index,
                term,
                configuration,
            },
            data,
        })
    }
}
