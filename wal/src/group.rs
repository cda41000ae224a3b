//! Group commit: many threads share one `fdatasync`.
//!
//! Callers submit operations (appends, truncations, hard-state saves) to a FIFO queue. The first
//! caller that finds no writer at work becomes the writer: it takes every pending operation (up to
//! [`GroupCommitConfig::batch_ops_max`] / [`GroupCommitConfig::batch_bytes_max`]), applies them
//! in order, runs one `fdatasync`, and wakes every caller of the batch with the index now durable.
//! Callers that arrive meanwhile queue up and form the next batch, so the batch grows by itself
//! with the load and a lone caller pays one fsync and no thread hand-off (the write-group pattern
//! of LevelDB and RocksDB). [`GroupCommitConfig::batch_wait`] optionally holds the writer back to
//! gather more.
//!
//! Each caller sleeps on its own condition variable: a finished writer wakes exactly the callers
//! of its batch and hands the writer role to the oldest caller still queued. Waking everyone on
//! each fsync (one shared condition variable) cost half the throughput with 64 appenders on two
//! cores, all of it in futile wake-ups.
//!
//! Invariants: operations are applied in submission order; a caller's result arrives only after
//! the fsync that covers its operation; a failed fsync fails every caller of the batch and poisons
//! the log (fsync is never retried). The `Wal` lock is released during the fsync, so reads are not
//! blocked by it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Result, WalError};
use crate::fs::FileSystem;
use crate::log::{Entry, Wal};
use crate::record::PAYLOAD_BYTES_MAX;

/// Default cap on operations per fsync: large enough that 64 concurrent appenders share one
/// fsync, small enough that one batch's write stays short.
pub const BATCH_OPS_MAX_DEFAULT: usize = 1024;
/// Default cap on payload bytes per fsync (8 MiB).
pub const BATCH_BYTES_MAX_DEFAULT: u64 = 8 * 1024 * 1024;
/// Default time a writer waits for more operations before it writes: none, because batches grow
/// by themselves while an fsync runs and any wait adds to a lone caller's latency (see the
/// crate README for the measurements).
pub const BATCH_WAIT_DEFAULT: Duration = Duration::ZERO;
/// The longest allowed `batch_wait`: waiting longer than an election timeout makes no sense.
pub const BATCH_WAIT_MAX: Duration = Duration::from_millis(100);

/// How group commit forms batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// At most this many operations share one fsync.
    pub batch_ops_max: usize,
    /// At most about this many payload bytes share one fsync (a single larger operation still
    /// goes alone).
    pub batch_bytes_max: u64,
    /// How long the writer waits for the batch to fill before writing.
    pub batch_wait: Duration,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        GroupCommitConfig {
            batch_ops_max: BATCH_OPS_MAX_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            batch_wait: BATCH_WAIT_DEFAULT,
        }
    }
}

impl GroupCommitConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        if self.batch_ops_max == 0 {
            return Err(WalError::InvalidConfig(
                "batch_ops_max must be at least 1".into(),
            ));
        }
        if self.batch_bytes_max == 0 {
            return Err(WalError::InvalidConfig(
                "batch_bytes_max must be at least 1".into(),
            ));
        }
        if self.batch_wait > BATCH_WAIT_MAX {
            return Err(WalError::InvalidConfig(format!(
                "batch_wait is {:?}, at most {BATCH_WAIT_MAX:?} is allowed",
                self.batch_wait
            )));
        }
        Ok(())
    }
}

/// An operation on the log, applied in submission order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalOp {
    /// Append entries with explicit indexes (the Raft driver's case).
    Append(Vec<Entry>),
    /// Append payloads at the next free indexes, all with `term` (for independent writers).
    AppendNext {
        /// The term of every new entry.
        term: u64,
        /// The payloads, in order.
        payloads: Vec<Vec<u8>>,
    },
    /// Remove entries `>= from`.
    TruncateSuffix(u64),
    /// Discard the log and restart it at this index.
    Reset(u64),
    /// Save the hard state.
    SaveHardState(Vec<u8>),
}

impl WalOp {
    pub(crate) fn payload_bytes(&self) -> u64 {
        match self {
            WalOp::Append(entries) => entries.iter().map(|e| e.payload.len() as u64).sum(),
            WalOp::AppendNext { payloads, .. } => payloads.iter().map(|p| p.len() as u64).sum(),
            WalOp::SaveHardState(p) => p.len() as u64,
            WalOp::TruncateSuffix(_) | WalOp::Reset(_) => 0,
        }
    }
}

/// What a completed operation reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The log's last index right after this operation (for appends: the operation's own last
    /// entry).
    pub last_index: u64,
    /// The durable index after the fsync that covered the operation: `>= last_index`, unless
    /// a later operation of the same batch truncated the log below this one's entries.
    pub durable_index: u64,
}

/// A [`Wal`] shared by threads, with group commit. Cloning shares the same log.
pub struct GroupCommit<F: FileSystem> {
    shared: Arc<Shared<F>>,
}

impl<F: FileSystem> Clone for GroupCommit<F> {
    fn clone(&self) -> Self {
        GroupCommit {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<F: FileSystem> {
    wal: Mutex<Wal<F>>,
    queue: Mutex<Queue>,
    /// Signalled when an operation is queued (a writer gathering a batch waits on it).
    arrived: Condvar,
    config: GroupCommitConfig,
}

/// A queued operation and the condition variable its caller sleeps on.
struct Pending {
    ticket: u64,
    op: WalOp,
    waker: Arc<Condvar>,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    pending_bytes: u64,
    next_ticket: u64,
    results: HashMap<u64, Result<Committed>>,
    writer_active: bool,
}

const LOCK_INVARIANT: &str = "a WAL lock is poisoned only if a thread panicked while holding it, after which the log's state is unknown";

impl<F: FileSystem> GroupCommit<F> {
    /// Wraps an open log.
    pub fn new(wal: Wal<F>, config: GroupCommitConfig) -> Result<Self> {
        config.validate()?;
        Ok(GroupCommit {
            shared: Arc::new(Shared {
                wal: Mutex::new(wal),
                queue: Mutex::new(Queue::default()),
                arrived: Condvar::new(),
                config,
            }),
        })
    }

    /// Appends entries with explicit indexes; returns once they are durable.
    pub fn append(&self, entries: Vec<Entry>) -> Result<Committed> {
        self.submit(WalOp::Append(entries))
    }

    /// Appends payloads at the next free indexes; returns once they are durable.
    pub fn append_next(&self, term: u64, payloads: Vec<Vec<u8>>) -> Result<Committed> {
        self.submit(WalOp::AppendNext { term, payloads })
    }

    /// Runs `f` on the log under its lock, for reads (`read`, `term`, `first_index`, ...).
    pub fn with_wal<T>(&self, f: impl FnOnce(&Wal<F>) -> T) -> T {
        f(&self.lock_wal())
    }

    /// Removes whole segments covered by a snapshot at `upto` (see [`Wal::compact_prefix`]).
    /// Ordering with queued appends does not matter: it only touches sealed segments.
    pub fn compact_prefix(&self, upto: u64) -> Result<usize> {
        self.lock_wal().compact_prefix(upto)
    }

    fn lock_wal(&self) -> MutexGuard<'_, Wal<F>> {
        self.shared.wal.lock().expect(LOCK_INVARIANT)
    }

    /// Queues `op` and returns once it is applied and durable (or failed).
    pub fn submit(&self, op: WalOp) -> Result<Committed> {
        let shared = &*self.shared;
        let mut q = shared.queue.lock().expect(LOCK_INVARIANT);
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.pending_bytes += op.payload_bytes();
        let waker = Arc::new(Condvar::new());
        q.pending.push_back(Pending {
            ticket,
            op,
            waker: Arc::clone(&waker),
        });
        shared.arrived.notify_one();
        loop {
            if let Some(result) = q.results.remove(&ticket) {
                return result;
            }
            if q.writer_active {
                q = waker.wait(q).expect(LOCK_INVARIANT);
                continue;
            }
            // Become the writer for the next batch.
            q.writer_active = true;
            q = self.gather(q);
            let batch = take_batch(&mut q, &shared.config);
            drop(q);
            let (wakers, ops): (Vec<Arc<Condvar>>, Vec<(u64, WalOp)>) = batch
                .into_iter()
                .map(|p| (p.waker, (p.ticket, p.op)))
                .unzip();
            let guard = WriterGuard {
                shared,
                wakers: &wakers,
            };
            let results = self.write_batch(ops);
            std::mem::forget(guard);
            q = shared.queue.lock().expect(LOCK_INVARIANT);
            q.results.extend(results);
            q.writer_active = false;
            wake_batch_and_next_writer(&q, &wakers);
        }
    }

    /// Waits up to `batch_wait` for the batch to fill.
    fn gather<'a>(&self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        let config = &self.shared.config;
        if config.batch_wait.is_zero() {
            return q;
        }
        let deadline = Instant::now() + config.batch_wait;
        while q.pending.len() < config.batch_ops_max && q.pending_bytes < config.batch_bytes_max {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            q = self
                .shared
                .arrived
                .wait_timeout(q, deadline - now)
                .expect(LOCK_INVARIANT)
                .0;
        }
        q
    }

    /// Applies a batch in order, then one fsync for all of it.
    /// Applies `ops` as one batch, in order, with one fsync, and returns each operation's
    /// outcome. For a caller that batches by itself (a dedicated writer thread, see
    /// [`crate::WalWriter`]). Call it from one thread only, and not alongside
    /// [`GroupCommit::submit`] callers: batches would interleave around each other's fsyncs.
    pub fn submit_batch(&self, ops: Vec<WalOp>) -> Vec<Result<Committed>> {
        let numbered: Vec<(u64, WalOp)> = ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| (i as u64, op))
            .collect();
        self.write_batch(numbered)
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    fn write_batch(&self, batch: Vec<(u64, WalOp)>) -> Vec<(u64, Result<Committed>)> {
        let mut wal = self.lock_wal();
        let ops = batch.len() as u64;
        let records_before = wal.metrics().snapshot().records_appended;
        let mut applied: Vec<(u64, Result<u64>)> = Vec::with_capacity(batch.len());
        // Consecutive `AppendNext` operations are merged into one `Wal::append`, so a batch of
        // independent writers costs one `write` call, not one per caller.
        let mut run = AppendRun::default();
        for (ticket, op) in batch {
            if let WalOp::AppendNext { term, payloads } = op {
                match run.check(&wal, term, &payloads) {
                    Ok(()) => run.push(&wal, ticket, term, payloads),
                    Err(e) => applied.push((ticket, Err(e))),
                }
                continue;
            }
            run.flush(&mut wal, &mut applied);
            let result = match op {
                WalOp::Append(entries) => wal.append(&entries),
                WalOp::AppendNext { .. } => unreachable!("handled above"),
                WalOp::TruncateSuffix(from) => wal.truncate_suffix(from),
                WalOp::Reset(next) => wal.reset(next),
                WalOp::SaveHardState(state) => wal.save_hard_state(&state),
            };
            applied.push((ticket, result.map(|()| wal.last_index())));
        }
        run.flush(&mut wal, &mut applied);
        let metrics = wal.metrics();
        metrics.batch_ops.record(ops);
        metrics
            .batch_records
            .record(metrics.snapshot().records_appended - records_before);

        // Sync without holding the log, so readers are not held up by the disk.
        let (target, upto) = wal.sync_target();
        let need_sync = !wal.is_poisoned() && wal.durable_index() < upto;
        drop(wal);
        let synced = if need_sync { target.sync() } else { Ok(()) };
        let mut wal = self.lock_wal();
        let poisoned = match synced {
            Ok(()) => {
                wal.mark_durable(upto);
                None
            }
            Err(e) => Some(wal.poison_with(e)),
        };
        let durable_index = wal.durable_index();
        applied
            .into_iter()
            .map(|(ticket, result)| {
                let result = match (&poisoned, result) {
                    (Some(why), _) => Err(WalError::Poisoned(why.clone())),
                    (None, Ok(last_index)) => Ok(Committed {
                        last_index,
                        durable_index,
                    }),
                    (None, Err(e)) => Err(e),
                };
                (ticket, result)
            })
            .collect()
    }
}

/// `AppendNext` operations of one batch gathered into one append.
#[derive(Default)]
struct AppendRun {
    entries: Vec<Entry>,
    /// Each merged operation's ticket and its last entry's index.
    tickets: Vec<(u64, u64)>,
}

impl AppendRun {
    /// The index the next merged entry gets.
    fn next_index<F: FileSystem>(&self, wal: &Wal<F>) -> u64 {
        self.entries
            .last()
            .map_or(wal.last_index() + 1, |e| e.index + 1)
    }

    /// Rejects, alone, an operation that `Wal::append` would reject, so one bad caller cannot
    /// fail the others merged with it.
    fn check<F: FileSystem>(&self, wal: &Wal<F>, term: u64, payloads: &[Vec<u8>]) -> Result<()> {
        let last_term = self
            .entries
            .last()
            .map(|e| e.term)
            .or_else(|| wal.term(wal.last_index()))
            .unwrap_or(0);
        if term < last_term {
            return Err(WalError::InvalidOperation(format!(
                "append with term {term} after term {last_term}: terms never go down"
            )));
        }
        if let Some(p) = payloads.iter().find(|p| p.len() > PAYLOAD_BYTES_MAX) {
            return Err(WalError::PayloadTooLarge {
                len: p.len() as u64,
                max: PAYLOAD_BYTES_MAX as u64,
            });
        }
        Ok(())
    }

    fn push<F: FileSystem>(
        &mut self,
        wal: &Wal<F>,
        ticket: u64,
        term: u64,
        payloads: Vec<Vec<u8>>,
    ) {
        let first = self.next_index(wal);
        let count = payloads.len() as u64;
        self.entries.extend(
            payloads
                .into_iter()
                .zip(first..)
                .map(|(payload, index)| Entry {
                    index,
                    term,
                    payload,
                }),
        );
        // An empty append reports the log's end, like `Wal::append` of nothing would.
        self.tickets.push((ticket, first + count - 1));
    }

    /// Writes the merged entries; every merged caller gets the outcome.
    fn flush<F: FileSystem>(&mut self, wal: &mut Wal<F>, applied: &mut Vec<(u64, Result<u64>)>) {
        if self.tickets.is_empty() {
            return;
        }
        match wal.append(&self.entries) {
            Ok(()) => applied.extend(self.tickets.iter().map(|&(t, last)| (t, Ok(last)))),
            Err(e) => {
                // Each operation was checked alone, so a failure here is the disk's: it poisoned
                // the log, and every merged caller fails with that reason.
                let why = e.to_string();
                let mut tickets = self.tickets.iter();
                if let Some(&(first, _)) = tickets.next() {
                    applied.push((first, Err(e)));
                }
                applied.extend(tickets.map(|&(t, _)| (t, Err(WalError::Poisoned(why.clone())))));
            }
        }
        self.entries.clear();
        self.tickets.clear();
    }
}

/// Takes the oldest pending operations, within the batch limits (always at least one).
fn take_batch(q: &mut Queue, config: &GroupCommitConfig) -> Vec<Pending> {
    let mut batch = Vec::with_capacity(q.pending.len().min(config.batch_ops_max));
    let mut bytes = 0u64;
    while let Some(front) = q.pending.front() {
        let op_bytes = front.op.payload_bytes();
        if !batch.is_empty()
            && (batch.len() >= config.batch_ops_max || bytes + op_bytes > config.batch_bytes_max)
        {
            break;
        }
        bytes += op_bytes;
        q.pending_bytes -= op_bytes;
        batch.push(q.pending.pop_front().expect("front() was Some"));
    }
    batch
}

/// Wakes the callers whose operations just completed, and the oldest caller still queued so that
/// it takes the writer role (a caller arriving meanwhile may take it first; then the woken one
/// finds a writer at work and sleeps again until its own batch completes).
fn wake_batch_and_next_writer(q: &Queue, batch_wakers: &[Arc<Condvar>]) {
    for waker in batch_wakers {
        waker.notify_one();
    }
    if let Some(next) = q.pending.front() {
        next.waker.notify_one();
    }
}

/// If the writer panics, releases the writer role and wakes the batch's callers and the next
/// writer, so that nobody sleeps forever (they will then find the log lock poisoned and fail
/// loudly).
struct WriterGuard<'a, F: FileSystem> {
    shared: &'a Shared<F>,
    wakers: &'a [Arc<Condvar>],
}

impl<F: FileSystem> Drop for WriterGuard<'_, F> {
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.writer_active = false;
            wake_batch_and_next_writer(&q, self.wakers);
        }
    }
}
