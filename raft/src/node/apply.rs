//! The applier: a task that applies committed entries to the state machine, in index order,
//! away from the loop, so that a slow state machine delays answers but not replication.
//!
//! It also holds everything waiting on the applied index: proposals (answered when their entry
//! is applied, or failed when a different entry turns up at their index) and linearizable reads
//! (released once the applied index reaches their read index).
//!
//! Snapshots stay off the apply path. When one is due (see [`Applier::snapshot_due`]: an
//! entry-count floor and a share of the last snapshot's size, so that their cost per write does
//! not grow with the state), the applier takes a [`StateMachine::view`] under the lock, which
//! the state machine makes cheap, and a writer task writes it out through
//! [`SnapshotFiles::write`] on a blocking thread while entries go on being applied. Once the
//! file is durable the writer tells the loop, which compacts the log behind it, and the
//! applier, which may then start the next one. A snapshot from the leader is read into a new
//! state on a blocking thread too, and only installed under the lock.
//!
//! Invariants: entries are applied once each, in strictly increasing index order; a waiter is
//! answered at most once; a read is released only when `applied >= read index`; at most one
//! snapshot is being written at a time.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::snapshot_files::offload;
use super::{Event, NodeError, SnapshotFiles, SnapshotFilesError, StateMachine, names};
use crate::core::{
    Configuration, Entry, EntryPayload, Error, LogIndex, SnapshotMetadata, Term, confchange,
};

/// What an applied entry is counted as, in bytes, beyond its command, toward the next
/// snapshot: about what the WAL stores per record besides the payload (index, term, length,
/// checksum), so that many tiny entries count as the log space they take.
pub const ENTRY_OVERHEAD_BYTES: u64 = 32;

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
    /// Replace the state with the snapshot kept at this metadata (already durable).
    Restore(SnapshotMetadata),
    /// Take a snapshot now (the operator asked).
    SnapshotNow(Reply<SnapshotMetadata>),
}

/// From a snapshot writer task back to the applier: the size of the file it wrote, or why it
/// failed.
/// A snapshot writer's outcome: the file's size, or why it failed (shared: the applier and
/// the loop both hear it).
type Written = Result<u64, Arc<SnapshotFilesError>>;

pub(crate) struct Applier<M: StateMachine> {
    pub(crate) machine: Arc<Mutex<M>>,
    pub(crate) applied: Arc<AtomicU64>,
    pub(crate) snapshots: Arc<dyn SnapshotFiles>,
    /// The entry-count floor between automatic snapshots (0: only on demand).
    pub(crate) snapshot_every: u64,
    /// The share of the last snapshot's size the entries applied since must reach.
    pub(crate) snapshot_log_share: f64,
    /// The index of the latest snapshot, kept or being written.
    pub(crate) last_snapshot: LogIndex,
    /// The size in bytes of the latest snapshot file (0 if unknown or none).
    pub(crate) last_snapshot_bytes: u64,
    /// Bytes of entries applied since the latest snapshot's index (see
    /// [`ENTRY_OVERHEAD_BYTES`]).
    pub(crate) bytes_since_snapshot: u64,
    /// Set while a writer task writes a snapshot: what to go back to if it fails.
    pub(crate) writing: Option<Writing>,
    /// Requests for a snapshot that wait for the next one to be started.
    pub(crate) snapshot_requests: Vec<Reply<SnapshotMetadata>>,
    /// Unbounded (it carries only snapshot news, rare and one at a time), so that neither the
    /// applier nor a writer ever waits on the loop while the loop waits on the applier.
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
    /// What the node counts for its operators (snapshots taken, their time and size).
    pub(crate) metrics: Arc<super::metrics::NodeMetrics>,
}

const MACHINE_LOCK: &str =
    "the state machine lock is poisoned only if apply panicked, after which the node cannot go on";

impl<M: StateMachine> Applier<M> {
    fn applied(&self) -> LogIndex {
        LogIndex(self.applied.load(Ordering::Acquire))
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<ApplyCmd<M::Output>>) {
        let (written_tx, mut written_rx) = mpsc::unbounded_channel::<Written>();
        // Commands that arrived while a leader's snapshot was being read, in order.
        let mut backlog = VecDeque::new();
        loop {
            let cmd = match backlog.pop_front() {
                Some(cmd) => cmd,
                None => tokio::select! {
                    // Commands first: a snapshot that finished can wait for the entries in hand.
                    biased;
                    cmd = commands.recv() => match cmd {
                        Some(cmd) => cmd,
                        None => break,
                    },
                    Some(written) = written_rx.recv() => {
                        self.snapshot_written(written, &written_tx);
                        continue;
                    }
                },
            };
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
                ApplyCmd::Entries(entries) => {
                    self.apply_entries(entries);
                    if self.snapshot_due() {
                        self.start_snapshot(&written_tx);
                    }
                }
                ApplyCmd::Restore(metadata) => {
                    if !self.restore(metadata, &mut commands, &mut backlog).await {
                        break;
                    }
                }
                ApplyCmd::SnapshotNow(reply) => self.snapshot_now(reply, &written_tx),
            }
        }
        // The loop stopped: everyone still waiting learns it.
        for (_, (_, waiter)) in std::mem::take(&mut self.waiters) {
            fail(waiter, NodeError::Stopped);
        }
        for reply in self.snapshot_requests.drain(..) {
            let _ = reply.send(Err(NodeError::Stopped));
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
                self.bytes_since_snapshot += ENTRY_OVERHEAD_BYTES + entry_bytes(&entry.payload);
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

    /// Replaces the state with the snapshot kept at `metadata`: read into a new state on a
    /// blocking thread (the state machine goes on serving reads meanwhile), then installed
    /// under the lock. The commands that arrive meanwhile go to `backlog`, in order, so the
    /// loop never waits on a full queue while a large snapshot is read (it must go on
    /// answering its leader). Returns false when the snapshot cannot be read: the node is
    /// told to stop, and the applier ends.
    async fn restore(
        &mut self,
        metadata: SnapshotMetadata,
        commands: &mut mpsc::Receiver<ApplyCmd<M::Output>>,
        backlog: &mut VecDeque<ApplyCmd<M::Output>>,
    ) -> bool {
        let index = metadata.index;
        if index <= self.applied() {
            return true;
        }
        let restorer = self.machine.lock().expect(MACHINE_LOCK).restorer();
        let files = Arc::clone(&self.snapshots);
        let read_metadata = metadata.clone();
        let read = offload(self.snapshots.offload(), move || {
            let (mut data, bytes) = files.open(&read_metadata)?;
            restorer(&read_metadata, &mut data).map(|restored| (restored, bytes))
        });
        tokio::pin!(read);
        let mut open = true;
        let read = loop {
            tokio::select! {
                biased;
                read = &mut read => break read,
                cmd = commands.recv(), if open => match cmd {
                    Some(cmd) => backlog.push_back(cmd),
                    None => open = false,
                },
            }
        };
        // The snapshot was received whole, checked and kept before the core took it; failing
        // to read it back now (a disk error) leaves the state machine unusable.
        let (restored, bytes) = match read {
            Ok(read) => read,
            Err(e) => {
                let why = format!("cannot restore the snapshot at {index}: {e}");
                error!(error = %why, "the state machine cannot go on");
                let _ = self.to_loop.send(Event::ApplierFailed(why));
                return false;
            }
        };
        {
            let mut machine = self.machine.lock().expect(MACHINE_LOCK);
            machine.install(&metadata, restored);
            self.applied.store(index.0, Ordering::Release);
        }
        self.applied_term = metadata.term;
        self.configuration = metadata.configuration.clone();
        self.last_snapshot = index;
        self.last_snapshot_bytes = bytes;
        self.bytes_since_snapshot = 0;
        info!(
            index = index.0,
            term = metadata.term.0,
            bytes,
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
        true
    }

    /// Whether an automatic snapshot is due: none is being written, at least `snapshot_every`
    /// entries were applied since the last one, and their bytes reach `snapshot_log_share` of
    /// the last snapshot's size. The second rule is what keeps the cost per write flat: a
    /// snapshot costs about its size, and is taken once per that share of it in new log.
    fn snapshot_due(&self) -> bool {
        let applied = self.applied();
        self.snapshot_every > 0
            && self.writing.is_none()
            && applied.0 >= self.last_snapshot.0.saturating_add(self.snapshot_every)
            && self.bytes_since_snapshot as f64
                >= self.snapshot_log_share * self.last_snapshot_bytes as f64
    }

    /// The operator asked for a snapshot: one of everything applied so far, unless the latest
    /// already covers it (then the answer says so, and nothing is written).
    fn snapshot_now(&mut self, reply: Reply<SnapshotMetadata>, written: &WrittenTx) {
        let applied = self.applied();
        if applied == LogIndex::ZERO {
            let _ = reply.send(Err(NodeError::NothingToSnapshot));
            return;
        }
        if self.writing.is_none() && applied <= self.last_snapshot {
            let _ = reply.send(Err(NodeError::Rejected(Error::SnapshotOutOfDate {
                index: applied,
                current: self.last_snapshot,
            })));
            return;
        }
        self.snapshot_requests.push(reply);
        if self.writing.is_none() {
            self.start_snapshot(written);
        }
        // Else the next snapshot starts when this one is written, and answers the request.
    }

    /// Takes a view of the state at the applied index and hands it to a writer task.
    fn start_snapshot(&mut self, written: &WrittenTx) {
        debug_assert!(self.writing.is_none(), "one snapshot is written at a time");
        let metadata = SnapshotMetadata {
            index: self.applied(),
            term: self.applied_term,
            configuration: self.configuration.clone(),
        };
        let view = self.machine.lock().expect(MACHINE_LOCK).view(&metadata);
        self.writing = Some(Writing {
            index: metadata.index,
            counted_bytes: std::mem::take(&mut self.bytes_since_snapshot),
            previous: self.last_snapshot,
            started: tokio::time::Instant::now(),
        });
        self.last_snapshot = metadata.index;
        let replies = std::mem::take(&mut self.snapshot_requests);
        let files = Arc::clone(&self.snapshots);
        let how = files.offload();
        let to_loop = self.to_loop.clone();
        let written = written.clone();
        debug!(index = metadata.index.0, "snapshot started");
        tokio::spawn(async move {
            let write_metadata = metadata.clone();
            let result = offload(how, move || files.write(&write_metadata, &view))
                .await
                .map_err(Arc::new);
            let _ = written.send(result.clone());
            let _ = to_loop.send(Event::SnapshotWritten(metadata, result, replies));
        });
    }

    /// A writer task finished: note the new size, or give back the bytes counted toward the
    /// failed snapshot so that the next one comes as soon as it would have; then start the one
    /// requests are waiting for, if any.
    fn snapshot_written(&mut self, written: Written, tx: &WrittenTx) {
        let Some(writing) = self.writing.take() else {
            debug_assert!(false, "a snapshot was written that was never started");
            return;
        };
        // A leader's snapshot restored meanwhile is the latest, and set the cadence afresh:
        // this one's outcome then changes nothing.
        let superseded = self.last_snapshot != writing.index;
        if let Ok(bytes) = written {
            let metrics = &self.metrics;
            super::metrics::NodeMetrics::count(&metrics.snapshots_taken);
            metrics
                .snapshot_write_us
                .record(writing.started.elapsed().as_micros() as u64);
            metrics.snapshot_bytes.store(bytes, Ordering::Relaxed);
        }
        match written {
            Ok(_) if superseded => {}
            Ok(bytes) => self.last_snapshot_bytes = bytes,
            Err(e) => {
                warn!(error = %e, "writing a snapshot failed; the log is kept until one is written");
                if !superseded {
                    self.bytes_since_snapshot += writing.counted_bytes;
                    self.last_snapshot = writing.previous;
                }
            }
        }
        if !self.snapshot_requests.is_empty() {
            if self.applied() > self.last_snapshot {
                self.start_snapshot(tx);
            } else {
                // Nothing was applied since: the snapshot just written answers them (the loop
                // reports it with the metadata once it has compacted).
                let current = self.last_snapshot;
                for reply in self.snapshot_requests.drain(..) {
                    let _ = reply.send(Err(NodeError::Rejected(Error::SnapshotOutOfDate {
                        index: current,
                        current,
                    })));
                }
            }
        }
    }
}

type WrittenTx = mpsc::UnboundedSender<Written>;

/// A snapshot being written, and what the applier goes back to if writing it fails.
pub(crate) struct Writing {
    /// Its index.
    index: LogIndex,
    /// The bytes of entries counted toward it.
    counted_bytes: u64,
    /// The latest snapshot before it.
    previous: LogIndex,
    /// When it was started (its view taken).
    started: tokio::time::Instant,
}

/// The bytes an entry's payload takes, for the snapshot cadence.
fn entry_bytes(payload: &EntryPayload) -> u64 {
    match payload {
        EntryPayload::Normal(data) => data.len() as u64,
        EntryPayload::Noop => 0,
        // Rare and small: counted as one overhead more.
        EntryPayload::ConfChange(_) => ENTRY_OVERHEAD_BYTES,
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
