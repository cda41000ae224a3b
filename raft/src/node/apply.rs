//! The applier: a task that applies committed entries to the state machine, in index order,
//! away from the loop, so that a slow state machine delays answers but not replication.
//!
//! It also holds everything waiting on the applied index: proposals (answered when their entry
//! is applied, or failed when a different entry turns up at their index) and linearizable reads
//! (released once the applied index reaches their read index). Every `snapshot_every` applied
//! entries it serializes the state machine and hands the data to the loop, which turns it into
//! a snapshot and compacts the log.
//!
//! Invariants: entries are applied once each, in strictly increasing index order; a waiter is
//! answered at most once; a read is released only when `applied >= read index`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use super::{Event, NodeError, StateMachine, names};
use crate::core::{
    Configuration, Entry, EntryPayload, LogIndex, Snapshot, SnapshotMetadata, Term, confchange,
};

type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// A proposal waiting for its entry.
pub(crate) enum Waiter<O> {
    Command(Reply<O>),
    ConfChange(Reply<LogIndex>),
}

/// What the loop sends the applier, in log order.
pub(crate) enum ApplyCmd<O> {
    /// A proposal was appended at `index` in `term`: answer it when that index is applied.
    Wait(LogIndex, Term, Waiter<O>),
    /// Release this read once `index` is applied.
    Read(LogIndex, Reply<LogIndex>),
    /// Committed entries, in order.
    Entries(Vec<Entry>),
    /// Replace the state with this snapshot (already durable).
    Restore(Snapshot),
    /// Serialize the state now and hand it to the loop.
    SnapshotNow(Option<Reply<SnapshotMetadata>>),
}

pub(crate) struct Applier<M: StateMachine> {
    pub(crate) machine: Arc<Mutex<M>>,
    pub(crate) applied: Arc<AtomicU64>,
    pub(crate) snapshot_every: u64,
    pub(crate) last_snapshot: LogIndex,
    /// Unbounded (it carries only snapshot hand-offs, rare and one at a time), so that the
    /// applier never waits on the loop while the loop waits on the applier.
    pub(crate) to_loop: mpsc::UnboundedSender<Event<M::Output>>,
    pub(crate) waiters: BTreeMap<LogIndex, (Term, Waiter<M::Output>)>,
    pub(crate) reads: BTreeMap<LogIndex, Vec<Reply<LogIndex>>>,
    /// The membership as of the applied index: the snapshot's, then each applied change
    /// applied to it exactly as the core does (an invalid change is skipped by everyone).
    pub(crate) configuration: Configuration,
    /// The term of the entry at the applied index (of the snapshot's last entry before any
    /// is applied): what a snapshot taken now stands for.
    pub(crate) applied_term: Term,
    /// The commit index saved when the node started: entries up to it were applied before the
    /// restart, and replaying them is not news for the operator's log.
    pub(crate) replay_until: LogIndex,
}

const MACHINE_LOCK: &str =
    "the state machine lock is poisoned only if apply panicked, after which the node cannot go on";

impl<M: StateMachine> Applier<M> {
    fn applied(&self) -> LogIndex {
        LogIndex(self.applied.load(Ordering::Acquire))
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<ApplyCmd<M::Output>>) {
        while let Some(cmd) = commands.recv().await {
            match cmd {
                ApplyCmd::Wait(index, term, waiter) => {
                    debug_assert!(
                        index > self.applied(),
                        "a proposal is registered before it can apply"
                    );
                    self.waiters.insert(index, (term, waiter));
                }
                ApplyCmd::Read(index, reply) => {
                    if index <= self.applied() {
                        let _ = reply.send(Ok(index));
                    } else {
                        self.reads.entry(index).or_default().push(reply);
                    }
                }
                ApplyCmd::Entries(entries) => self.apply_entries(entries),
                ApplyCmd::Restore(snapshot) => self.restore(snapshot),
                ApplyCmd::SnapshotNow(reply) => self.take_snapshot(reply),
            }
        }
        // The loop stopped: everyone still waiting learns it.
        for (_, (_, waiter)) in std::mem::take(&mut self.waiters) {
            fail(waiter, NodeError::Stopped);
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) {
        let mut answers = Vec::new();
        {
            let mut machine = self.machine.lock().expect(MACHINE_LOCK);
            for entry in entries {
                let applied = self.applied();
                if entry.index <= applied {
                    continue; // Covered by a snapshot restored meanwhile.
                }
                assert_eq!(
                    entry.index,
                    applied.next(),
                    "entries are applied in order without gaps"
                );
                let waiter = self.waiters.remove(&entry.index);
                match &entry.payload {
                    EntryPayload::Normal(data) => {
                        let output = machine.apply(entry.index, data);
                        answers.push((entry.term, waiter, Some(output)));
                    }
                    EntryPayload::ConfChange(change) => {
                        let change_text = names::ChangeText(change);
                        if entry.index <= self.replay_until {
                            debug!(index = entry.index.0, term = entry.term.0, change = %change_text, "membership change replayed");
                        } else {
                            info!(index = entry.index.0, term = entry.term.0, change = %change_text, "membership change applied");
                        }
                        if let Ok(next) = confchange::apply(&self.configuration, change) {
                            self.configuration = next;
                        }
                        machine.apply_conf_change(entry.index, &self.configuration);
                        answers.push((entry.term, waiter, None));
                    }
                    EntryPayload::Noop => {
                        machine.apply_empty(entry.index);
                        answers.push((entry.term, waiter, None));
                    }
                }
                self.applied_term = entry.term;
                // Published under the lock, so a reader that sees the new index sees its state.
                self.applied.store(entry.index.0, Ordering::Release);
                // Proposals below this index that were never seen were overwritten.
                while let Some((&index, _)) = self.waiters.first_key_value() {
                    if index >= entry.index {
                        break;
                    }
                    let (_, (_, waiter)) = self.waiters.pop_first().expect("just looked");
                    fail(waiter, NodeError::Dropped);
                }
            }
        }
        let applied = self.applied();
        for (term, waiter, output) in answers {
            let Some((expected_term, waiter)) = waiter else {
                continue;
            };
            match (term == expected_term, waiter, output) {
                (true, Waiter::Command(reply), Some(output)) => {
                    let _ = reply.send(Ok(output));
                }
                (true, Waiter::ConfChange(reply), None) => {
                    let _ = reply.send(Ok(applied));
                }
                // Another leader's entry took the proposal's place: it was never applied.
                (_, waiter, _) => fail(waiter, NodeError::Dropped),
            }
        }
        self.release_reads();
        if self.snapshot_every > 0 && applied.0 >= self.last_snapshot.0 + self.snapshot_every {
            self.take_snapshot(None);
        }
    }

    fn release_reads(&mut self) {
        let applied = self.applied();
        while let Some(entry) = self.reads.first_entry() {
            if *entry.key() > applied {
                break;
            }
            let (index, replies) = entry.remove_entry();
            for reply in replies {
                let _ = reply.send(Ok(index));
            }
        }
    }

    fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        if index <= self.applied() {
            return;
        }
        {
            let mut machine = self.machine.lock().expect(MACHINE_LOCK);
            if let Err(e) = machine.restore(&snapshot) {
                // The snapshot was verified when it was received and saved; failing to load it
                // now leaves the state machine unusable.
                panic!("cannot restore the snapshot at {index}: {e}");
            }
            self.applied.store(index.0, Ordering::Release);
        }
        self.applied_term = snapshot.metadata.term;
        self.configuration = snapshot.metadata.configuration.clone();
        self.last_snapshot = index;
        info!(
            index = index.0,
            term = snapshot.metadata.term.0,
            "restored a snapshot from the leader"
        );
        // Proposals the snapshot covers may or may not be in it.
        while let Some((&i, _)) = self.waiters.first_key_value() {
            if i > index {
                break;
            }
            let (_, (_, waiter)) = self.waiters.pop_first().expect("just looked");
            fail(waiter, NodeError::Unknown);
        }
        self.release_reads();
    }

    fn take_snapshot(&mut self, reply: Option<Reply<SnapshotMetadata>>) {
        let (index, data) = {
            let machine = self.machine.lock().expect(MACHINE_LOCK);
            (self.applied(), machine.snapshot_data(self.applied_term))
        };
        if index == LogIndex::ZERO {
            if let Some(reply) = reply {
                let _ = reply.send(Err(NodeError::NothingToSnapshot));
            }
            return;
        }
        self.last_snapshot = index;
        debug!(
            index = index.0,
            bytes = data.len(),
            "state machine serialized for a snapshot"
        );
        let _ = self.to_loop.send(Event::SnapshotTaken(index, data, reply));
    }
}

fn fail<O>(waiter: Waiter<O>, error: NodeError) {
    match waiter {
        Waiter::Command(reply) => {
            let _ = reply.send(Err(error));
        }
        Waiter::ConfChange(reply) => {
            let _ = reply.send(Err(error));
        }
    }
}
