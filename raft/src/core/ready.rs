//! The only output of the core: a [`Ready`], and the persistence contract that goes with it.
//!
//! The driver loop is: `if raft.has_ready() { let rd = raft.ready(); ...; raft.advance(rd) }`,
//! handling each Ready in this order:
//! 1. send `messages` (they may go at once, in parallel with step 2: the leader's own
//!    AppendEntries and heartbeats, dissertation §10.2.1);
//! 2. persist `snapshot` (if any), then `entries` (writing index i discards every persisted
//!    entry from i on), then `hard_state` (if any) — durably (fsync);
//! 3. only then send `persisted_messages` (votes and acknowledgements: they promise that the
//!    state above is durable);
//! 4. apply `snapshot`, then `committed_entries`, in order; serve `read_states` once their
//!    index is applied; fail `dropped_reads`; note `soft_state`;
//! 5. call `advance(rd)`.
//!
//! One exception to the order: the first [`Ready::committed_durable`] of `committed_entries`
//! were durable here before this Ready (and committed entries are never overwritten), so they
//! may be applied at step 1, before or while step 2 runs. On a busy leader these are the
//! previous batch's entries, committed by the acknowledgements that arrived during its
//! fsync: applying them only after the next batch's fsync would add that fsync to every
//! write's latency.
//!
//! One Ready is outstanding at a time. Between `ready()` and `advance()` the core may be
//! stepped and ticked; whatever that produces goes into the next Ready.
//!
//! Invariants (asserted here and by the harness):
//! - committed entries are handed out in index order, each once, never above the commit
//!   index or above what is durable once this Ready is persisted;
//! - a Ready's entries start at most one past the durable log and are contiguous.

use bytes::Bytes;

use super::message::{Entry, HardState, Message, Snapshot};
use super::raft::{Raft, Role, SoftState};
use super::read_index::ReadState;
use super::storage::Storage;
use super::types::LogIndex;

/// What the driver must do, in the order of the module documentation.
#[derive(Debug, Default)]
#[must_use = "a Ready must be handled and then given back through advance()"]
pub struct Ready {
    /// Role or leader changed: the new values.
    pub soft_state: Option<SoftState>,
    /// Term, vote or commit changed: persist this.
    pub hard_state: Option<HardState>,
    /// A snapshot from the leader: persist it (replacing the log), then apply it.
    pub snapshot: Option<Snapshot>,
    /// Entries to persist, appended after discarding any persisted entry at or after the
    /// first one's index.
    pub entries: Vec<Entry>,
    /// Messages that may be sent before or while the above is persisted.
    pub messages: Vec<Message>,
    /// Messages that may only be sent once the above is durable.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// How many of `committed_entries`, from the first, were durable on this node before this
    /// Ready: they may be applied without waiting for its persist (see the module docs).
    pub committed_durable: usize,
    /// Confirmed ReadIndex requests.
    pub read_states: Vec<ReadState>,
    /// ReadIndex requests this node gave up on because it lost leadership: fail them so the
    /// client retries elsewhere.
    pub dropped_reads: Vec<Bytes>,
    /// What `advance` records as applied.
    applied_to: LogIndex,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.dropped_reads.is_empty()
    }
}

impl<S: Storage> Raft<S> {
    /// Whether `ready()` would return something to do.
    pub fn has_ready(&self) -> bool {
        if self.ready_outstanding {
            return false;
        }
        self.soft_state() != self.prev_soft_state
            || self.hard_state() != self.prev_hard_state
            || self.log.has_unhanded_snapshot()
            || self.log.has_unhanded_entries()
            || !self.msgs.is_empty()
            || !self.msgs_after_persist.is_empty()
            || self.log.committed > self.log.applying
            || !self.read_states.is_empty()
            || !self.dropped_reads.is_empty()
            || (self.role == Role::Leader && (self.append_pending || !self.reads.unsent.is_empty()))
    }

    /// Collects what the driver must do. Panics if the previous Ready was not advanced.
    pub fn ready(&mut self) -> Ready {
        assert!(
            !self.ready_outstanding,
            "advance() the previous Ready before asking again"
        );
        if self.role == Role::Leader && self.append_pending {
            self.append_pending = false;
            self.bcast_append();
        }
        self.flush_reads();
        let mut rd = Ready::default();
        let soft = self.soft_state();
        if soft != self.prev_soft_state {
            rd.soft_state = Some(soft);
            self.prev_soft_state = soft;
        }
        let hard = self.hard_state();
        if hard != self.prev_hard_state {
            rd.hard_state = Some(hard.clone());
            self.prev_hard_state = hard;
        }
        rd.snapshot = self.log.take_unstable_snapshot();
        if let Some(snapshot) = &rd.snapshot {
            // Applying the snapshot counts as applying everything it covers.
            self.log.applying = self.log.applying.max(snapshot.metadata.index);
        }
        rd.entries = self.log.take_unstable_entries();
        // Once this Ready is persisted the whole log is durable: that bounds what to apply.
        let durable_after = self.log.last_index();
        let max_bytes = self.cfg.committed_bytes_per_ready_max;
        rd.committed_entries = self.log.next_committed_entries(durable_after, max_bytes);
        if let Some(last) = rd.committed_entries.last() {
            debug_assert_eq!(rd.committed_entries[0].index, self.log.applying.next());
            self.log.applying = last.index;
        }
        // `persisted` only rises in `advance` (a conflict or a snapshot lowers it), so here it
        // is what was durable, and still in this log, before this Ready. A snapshot in the
        // Ready is applied first, so nothing goes ahead of it.
        if rd.snapshot.is_none() {
            let durable = self.log.persisted;
            rd.committed_durable = rd.committed_entries.partition_point(|e| e.index <= durable);
        }
        rd.applied_to = self.log.applying;
        rd.messages = std::mem::take(&mut self.msgs);
        rd.persisted_messages = std::mem::take(&mut self.msgs_after_persist);
        rd.read_states = std::mem::take(&mut self.read_states);
        rd.dropped_reads = std::mem::take(&mut self.dropped_reads);
        self.ready_outstanding = true;
        rd
    }

    /// The driver handled `rd` as the module documentation says: its state is durable, its
    /// messages sent, its entries applied.
    pub fn advance(&mut self, rd: Ready) {
        assert!(
            self.ready_outstanding,
            "advance() without an outstanding Ready"
        );
        self.ready_outstanding = false;
        self.log
            .persisted_handed(rd.snapshot.as_ref().map(|s| s.metadata.index));
        if let Some(hs) = &rd.hard_state {
            self.durable_term = self.durable_term.max(hs.term);
        }
        assert!(
            rd.applied_to <= self.log.applying,
            "applied beyond what was handed out"
        );
        self.log.applied = self.log.applied.max(rd.applied_to);
        if self.role == Role::Leader {
            // The leader counts itself toward a quorum only for entries it has persisted.
            let persisted = self.log.persisted;
            if let Some(me) = self.progress.get_mut(&self.id) {
                me.maybe_update(persisted);
            }
            if self.maybe_commit() && self.role == Role::Leader {
                self.bcast_append();
            }
        }
    }
}
