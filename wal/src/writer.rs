//! Group commit for async callers: a dedicated writer thread takes every pending operation,
//! writes them as one batch, syncs once, and completes each caller's future with the index now
//! durable.
//!
//! [`GroupCommit`] makes one of the calling threads the writer, which suits a few threads but
//! makes every caller an OS thread that must be put to sleep and woken. Here callers are tasks:
//! waking one is a queue push on the runtime, not a context switch, so many appenders cost
//! little CPU and the batch per fsync grows with the load.
//!
//! Invariants: operations are applied in the order they were submitted; a caller's future
//! completes only after the fsync covering its operation; the writer thread stops when the last
//! [`WalWriter`] is dropped, after finishing what was queued.

use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::error::{Result, WalError};
use crate::fs::FileSystem;
use crate::group::{Committed, GroupCommit, GroupCommitConfig, WalOp};
use crate::log::Wal;

struct Request {
    op: WalOp,
    bytes: u64,
    reply: oneshot::Sender<Result<Committed>>,
}

/// A handle on the writer thread; cheap to clone.
#[derive(Clone)]
pub struct WalWriter<F: FileSystem> {
    requests: mpsc::Sender<Request>,
    group: GroupCommit<F>,
}

impl<F: FileSystem> WalWriter<F> {
    /// Starts the writer thread over `wal`.
    pub fn start(wal: Wal<F>, config: GroupCommitConfig) -> Result<Self> {
        let group = GroupCommit::new(wal, config.clone())?;
        let (requests, rx) = mpsc::channel::<Request>();
        let writer_group = group.clone();
        thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || run(writer_group, config, rx))
            .map_err(|e| {
                WalError::InvalidConfig(format!("cannot start the WAL writer thread: {e}"))
            })?;
        Ok(WalWriter { requests, group })
    }

    /// Queues `op`; completes once it is applied and durable (or failed).
    pub async fn submit(&self, op: WalOp) -> Result<Committed> {
        let (reply, done) = oneshot::channel();
        let bytes = op.payload_bytes();
        self.requests
            .send(Request { op, bytes, reply })
            .map_err(|_| WalError::Poisoned("the WAL writer thread has stopped".into()))?;
        done.await
            .map_err(|_| WalError::Poisoned("the WAL writer thread has stopped".into()))?
    }

    /// Appends payloads at the next free indexes, all with `term`.
    pub async fn append_next(&self, term: u64, payloads: Vec<Vec<u8>>) -> Result<Committed> {
        self.submit(WalOp::AppendNext { term, payloads }).await
    }

    /// Runs `f` on the log, for reads.
    pub fn with_wal<T>(&self, f: impl FnOnce(&Wal<F>) -> T) -> T {
        self.group.with_wal(f)
    }
}

fn run<F: FileSystem>(
    group: GroupCommit<F>,
    config: GroupCommitConfig,
    rx: mpsc::Receiver<Request>,
) {
    let mut held: Option<Request> = None;
    loop {
        let first = match held.take() {
            Some(r) => r,
            None => match rx.recv() {
                Ok(r) => r,
                Err(_) => return, // Every handle is gone and the queue is empty.
            },
        };
        let deadline = Instant::now() + config.batch_wait;
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < config.batch_ops_max {
            let next = match rx.try_recv() {
                Ok(r) => r,
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match rx.recv_timeout(deadline - now) {
                        Ok(r) => r,
                        Err(_) => break,
                    }
                }
            };
            if bytes + next.bytes > config.batch_bytes_max {
                held = Some(next);
                break;
            }
            bytes += next.bytes;
            batch.push(next);
        }
        let (ops, replies): (Vec<WalOp>, Vec<_>) =
            batch.into_iter().map(|r| (r.op, r.reply)).unzip();
        let results = group.submit_batch(ops);
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}
