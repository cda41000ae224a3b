//! The loop: the one task that owns the core. See the module documentation of [`super`] for
//! the order in which a `Ready` is handled and why.
//!
//! A storage failure stops the loop (and with it the node): after a failed fsync nothing on
//! disk can be trusted, so the node must not go on acknowledging anything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use super::apply::{Applier, ApplyCmd, Waiter};
use super::store::{LogStore, StoreError};
use super::{
    APPLY_QUEUE_MAX, EVENT_QUEUE_MAX, Event, Node, NodeConfig, NodeError, SnapshotFiles,
    StateMachine, Status, Transport,
};
use crate::core::{LogIndex, NodeId, Raft, Role, SnapshotMetadata};

type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

struct Loop<S: LogStore, T: Transport, M: StateMachine> {
    raft: Raft<S>,
    transport: Arc<T>,
    snapshots: Arc<dyn SnapshotFiles>,
    apply: mpsc::Sender<ApplyCmd<M::Output>>,
    applied: Arc<AtomicU64>,
    status: watch::Sender<Status>,
    /// Reads waiting for the leader to confirm a read index, by context.
    reads: HashMap<u64, Reply<LogIndex>>,
    next_read: u64,
    /// Whether the loop runs on tokio's multi-thread runtime, where a blocking fsync can hand
    /// its worker to another thread (`block_in_place`, which the current-thread runtime of
    /// tests and simulations does not allow).
    multi_thread: bool,
}

/// Starts a node: the loop and the applier, on the current tokio runtime. `machine` must
/// already hold the state as of the store's snapshot (the caller restores it at start-up);
/// the log after the snapshot is replayed to it as the core hands committed entries out.
pub fn spawn<S, T, M>(
    config: NodeConfig,
    store: S,
    transport: Arc<T>,
    snapshots: Arc<dyn SnapshotFiles>,
    machine: Arc<Mutex<M>>,
) -> Result<Node<M::Output>, NodeError>
where
    S: LogStore,
    T: Transport,
    M: StateMachine,
{
    let snapshot_index = store.snapshot_metadata().index;
    let raft =
        Raft::new(config.raft.clone(), store).map_err(|e| NodeError::Refused(e.to_string()))?;
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE_MAX);
    let (side_tx, side_rx) = mpsc::unbounded_channel();
    let (apply_tx, apply_rx) = mpsc::channel(APPLY_QUEUE_MAX);
    let applied = Arc::new(AtomicU64::new(snapshot_index.0));
    let node_applied = Arc::clone(&applied);
    let (status_tx, status_rx) = watch::channel(Status {
        id: config.raft.id,
        ..Status::default()
    });
    let applier = Applier {
        machine,
        applied: Arc::clone(&applied),
        snapshot_every: config.snapshot_every,
        last_snapshot: snapshot_index,
        to_loop: side_tx,
        waiters: Default::default(),
        reads: Default::default(),
    };
    tokio::spawn(applier.run(apply_rx));
    let mut node_loop = Loop::<S, T, M> {
        raft,
        transport,
        snapshots,
        apply: apply_tx,
        applied,
        status: status_tx,
        reads: HashMap::new(),
        next_read: 0,
        multi_thread: tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread,
    };
    node_loop.publish_status(None);
    tokio::spawn(node_loop.run(config, events_rx, side_rx));
    Ok(Node {
        events: events_tx,
        status: status_rx,
        applied: node_applied,
    })
}

impl<S: LogStore, T: Transport, M: StateMachine> Loop<S, T, M> {
    async fn run(
        mut self,
        config: NodeConfig,
        mut events: mpsc::Receiver<Event<M::Output>>,
        mut side: mpsc::UnboundedReceiver<Event<M::Output>>,
    ) {
        let mut ticker = tokio::time::interval(config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            let mut stop = false;
            // Biased, in this order: a due tick first, so that a stream of requests can never
            // starve heartbeats and elections; and no random branch choice, so that a
            // simulation replays exactly from its seed.
            tokio::select! {
                biased;
                _ = ticker.tick() => {
                    self.raft.tick();
                    ticks += 1;
                    // Reads whose caller gave up (timed out) are forgotten.
                    if ticks.is_multiple_of(64) {
                        self.reads.retain(|_, reply| !reply.is_closed());
                    }
                }
                Some(event) = side.recv() => stop |= self.handle(event).await,
                event = events.recv() => match event {
                    None => stop = true,
                    Some(event) => {
                        stop |= self.handle(event).await;
                        // Take whatever else is queued (or arrives within the batch wait):
                        // it all joins this Ready and shares its fsync.
                        let deadline = tokio::time::Instant::now() + config.batch_wait;
                        let mut taken = 1;
                        while taken < config.events_per_ready_max.max(1) && !stop {
                            let event = match events.try_recv() {
                                Ok(event) => event,
                                Err(_) if config.batch_wait.is_zero() => break,
                                Err(_) => match tokio::time::timeout_at(deadline, events.recv()).await {
                                    Ok(Some(event)) => event,
                                    Ok(None) | Err(_) => break,
                                },
                            };
                            stop |= self.handle(event).await;
                            taken += 1;
                        }
                    }
                },
            }
            if let Err(e) = self.handle_ready().await {
                error!(node = self.raft.id().0, error = %e, "storage failed: the node stops");
                self.publish_status(Some(e.to_string()));
                return;
            }
            // The core's invariants, checked in the running node after every Ready (debug
            // builds: the tests and the simulations), not only in the core's own harness.
            debug_assert!(
                self.raft.check_invariants().is_ok(),
                "node {}: {:?}",
                self.raft.id().0,
                self.raft.check_invariants()
            );
            if stop {
                info!(node = self.raft.id().0, "node loop stopped");
                return;
            }
        }
    }

    /// Returns true when the loop must stop.
    async fn handle(&mut self, event: Event<M::Output>) -> bool {
        match event {
            Event::Step(message) => {
                if let Err(e) = self.raft.step(message) {
                    warn!(node = self.raft.id().0, error = %e, "message refused");
                }
            }
            Event::Propose(data, reply) => match self.raft.propose(data) {
                Ok(id) => {
                    self.send_apply(ApplyCmd::Wait(id.index, id.term, Waiter::Command(reply)))
                        .await;
                }
                Err(e) => {
                    let _ = reply.send(Err(NodeError::from_core(e)));
                }
            },
            Event::ConfChange(change, reply) => match self.raft.propose_conf_change(change) {
                Ok(id) => {
                    self.send_apply(ApplyCmd::Wait(id.index, id.term, Waiter::ConfChange(reply)))
                        .await;
                }
                Err(e) => {
                    let _ = reply.send(Err(NodeError::from_core(e)));
                }
            },
            Event::ReadIndex(reply) => {
                let context = self.next_read;
                self.next_read += 1;
                match self
                    .raft
                    .read_index(Bytes::copy_from_slice(&context.to_be_bytes()))
                {
                    Ok(()) => {
                        self.reads.insert(context, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NodeError::from_core(e)));
                    }
                }
            }
            Event::Transfer(to, reply) => {
                let result = self.raft.transfer_leader(to).map_err(NodeError::from_core);
                let _ = reply.send(result);
            }
            Event::Campaign => self.raft.campaign_now(),
            Event::ReportSnapshot(to, delivered) => self.raft.report_snapshot(to, delivered),
            Event::SnapshotNow(reply) => self.send_apply(ApplyCmd::SnapshotNow(Some(reply))).await,
            Event::SnapshotTaken(index, data, reply) => {
                let result = self.install_own_snapshot(index, data);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                } else if let Err(e) = result {
                    warn!(node = self.raft.id().0, index = index.0, error = %e, "periodic snapshot failed");
                }
            }
            Event::Shutdown => return true,
        }
        false
    }

    async fn send_apply(&mut self, cmd: ApplyCmd<M::Output>) {
        // The applier runs as long as the loop does; a closed channel means it panicked, and
        // the callers waiting on it see their replies dropped (`NodeError::Stopped`).
        let _ = self.apply.send(cmd).await;
    }

    /// Turns the state machine's data into a snapshot, keeps it durably, and compacts the log.
    fn install_own_snapshot(
        &mut self,
        index: LogIndex,
        data: Bytes,
    ) -> Result<SnapshotMetadata, NodeError> {
        let snapshot = self
            .raft
            .snapshot_at(index, data)
            .map_err(NodeError::from_core)?;
        self.snapshots.save(&snapshot).map_err(NodeError::Refused)?;
        self.raft
            .storage_mut()
            .compact(&snapshot.metadata)
            .map_err(|e| NodeError::Refused(e.to_string()))?;
        info!(
            node = self.raft.id().0,
            index = index.0,
            term = snapshot.metadata.term.0,
            "snapshot taken, log compacted"
        );
        Ok(snapshot.metadata)
    }

    async fn handle_ready(&mut self) -> Result<(), StoreError> {
        let mut changed = false;
        while self.raft.has_ready() {
            changed = true;
            let mut rd = self.raft.ready();
            if let Some(soft) = rd.soft_state {
                info!(node = self.raft.id().0, term = self.raft.term().0, role = ?soft.role, leader = ?soft.leader.map(|l| l.0), "role or leader changed");
            }
            let sent = !rd.messages.is_empty();
            for message in rd.messages.drain(..) {
                self.transport.send(message);
            }
            // Only entries and snapshots cost an fsync here; a hard state alone is cheap (a
            // commit index is not synced) or rare (a new term or vote).
            let fsyncs = rd.snapshot.is_some() || !rd.entries.is_empty();
            if sent && fsyncs {
                // The transport's sender tasks were just woken, most likely onto this worker
                // thread, where the fsync below would hold them (tokio's LIFO slot is not
                // stolen by the other worker). Yield once so that a leader's appends are on
                // the wire before it blocks on its own fsync, and the followers' fsyncs run in
                // parallel with it (profiled: without this, one follower received its append
                // only after the leader's fsync).
                tokio::task::yield_now().await;
            }
            if fsyncs && self.multi_thread {
                // The fsync blocks this thread; hand its worker to another thread meanwhile, so
                // peers' answers, client requests and the applier keep running.
                let store = self.raft.storage_mut();
                tokio::task::block_in_place(|| {
                    store.persist(rd.snapshot.as_ref(), &rd.entries, rd.hard_state.as_ref())
                })?;
            } else {
                self.raft.storage_mut().persist(
                    rd.snapshot.as_ref(),
                    &rd.entries,
                    rd.hard_state.as_ref(),
                )?;
            }
            for message in rd.persisted_messages.drain(..) {
                self.transport.send(message);
            }
            if let Some(snapshot) = rd.snapshot.clone() {
                self.send_apply(ApplyCmd::Restore(snapshot)).await;
            }
            if !rd.committed_entries.is_empty() {
                self.send_apply(ApplyCmd::Entries(std::mem::take(&mut rd.committed_entries)))
                    .await;
            }
            for read in rd.read_states.drain(..) {
                let Some(context) = read_context(&read.context) else {
                    continue;
                };
                if let Some(reply) = self.reads.remove(&context) {
                    self.send_apply(ApplyCmd::Read(read.index, reply)).await;
                }
            }
            for dropped in rd.dropped_reads.drain(..) {
                let Some(context) = read_context(&dropped) else {
                    continue;
                };
                if let Some(reply) = self.reads.remove(&context) {
                    let _ = reply.send(Err(NodeError::NotLeader {
                        leader_hint: self.raft.leader(),
                    }));
                }
            }
            self.raft.advance(rd);
        }
        if changed {
            self.publish_status(None);
        }
        Ok(())
    }

    fn publish_status(&mut self, failed: Option<String>) {
        let raft = &self.raft;
        let configuration = raft.configuration().clone();
        let match_index = if raft.role() == Role::Leader {
            configuration
                .voters
                .iter()
                .chain(&configuration.voters_outgoing)
                .chain(&configuration.learners)
                .chain(&configuration.learners_next)
                .filter_map(|&id| raft.progress(id).map(|p| (id, p.match_index)))
                .collect()
        } else {
            Vec::new()
        };
        let status = Status {
            id: raft.id(),
            role: Some(raft.role()),
            leader: raft.leader(),
            term: raft.term(),
            commit: raft.committed(),
            applied: LogIndex(self.applied.load(Ordering::Acquire)),
            last_index: raft.last_index(),
            configuration,
            match_index,
            snapshot: raft.storage().snapshot_metadata().clone(),
            failed,
        };
        self.status.send_if_modified(|old| {
            if *old == status {
                false
            } else {
                *old = status;
                true
            }
        });
    }
}

fn read_context(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The node id a cluster member's name maps to: a stable 64-bit hash (FNV-1a), never zero.
pub fn node_id_for_name(name: &str) -> NodeId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    NodeId(hash.max(1))
}
