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
    /// Shared with the supervisor, which reports a panic of the loop (see [`spawn`]).
    status: Arc<watch::Sender<Status>>,
    /// Reads waiting for the leader to confirm a read index, by context.
    reads: HashMap<u64, Reply<LogIndex>>,
    next_read: u64,
    /// A peer said this node was removed by the membership change at this index: the core is
    /// no longer ticked, so the node never campaigns again (see [`Node::removed`]).
    removed: Option<LogIndex>,
    /// The first broken Raft rule this node witnessed (see [`Status::alarm`]).
    alarm: Option<String>,
    /// When each peer's refused messages were last logged, by kind of refusal.
    refusals_logged: crate::transport::RefusalLog,
}

/// How often, in ticks, the loop saves the commit index when it has moved (one hard-state
/// save, off the write path). The saved commit index is how far the log must reach at the
/// next start: a log found shorter (a segment deleted or truncated) is refused instead of
/// silently losing committed entries. With the server's 10 ms tick, every 100 ms.
pub const COMMIT_SAVE_TICKS: u64 = 10;

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
    let snapshot_configuration = store.snapshot_metadata().configuration.clone();
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
        configuration: snapshot_configuration,
    };
    tokio::spawn(applier.run(apply_rx));
    let mut node_loop = Loop::<S, T, M> {
        raft,
        transport,
        snapshots,
        apply: apply_tx,
        applied,
        status: Arc::new(status_tx),
        reads: HashMap::new(),
        next_read: 0,
        removed: None,
        alarm: None,
        refusals_logged: Default::default(),
    };
    node_loop.publish_status(None);
    let status = Arc::clone(&node_loop.status);
    let id = config.raft.id;
    let running = tokio::spawn(node_loop.run(config, events_rx, side_rx));
    tokio::spawn(supervise(running, id, status));
    Ok(Node {
        events: events_tx,
        status: status_rx,
        applied: node_applied,
    })
}

/// Waits for the loop to end and, if it panicked (an invariant of the core broke, e.g. a
/// leader asked it to overwrite committed entries), says so in the status: the node has
/// stopped, and whoever watches it (readiness, the simulation's monitor) must know, rather
/// than see its last status forever.
async fn supervise(
    running: tokio::task::JoinHandle<()>,
    id: NodeId,
    status: Arc<watch::Sender<Status>>,
) {
    let Err(e) = running.await else { return };
    if !e.is_panic() {
        return; // Cancelled: the runtime (or a simulated host) is going away.
    }
    let payload = e.into_panic();
    let what = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into());
    error!(node = id.0, panic = %what, "the node's loop panicked: the node stops");
    status.send_modify(|s| s.failed = Some(format!("the node's loop panicked: {what}")));
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
            let mut ticked = false;
            // Biased, in this order: a due tick first, so that a stream of requests can never
            // starve heartbeats and elections; and no random branch choice, so that a
            // simulation replays exactly from its seed.
            tokio::select! {
                biased;
                _ = ticker.tick() => {
                    // A removed node's clock stands still: it must never campaign again.
                    if self.removed.is_none() {
                        self.raft.tick();
                    }
                    ticks += 1;
                    ticked = true;
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
            let mut persisted = self.handle_ready().await;
            // Everything the core handed out is durable now, so its commit index is covered by
            // the log on disk and may be saved as the bound the log must reach.
            if persisted.is_ok() && (stop || (ticked && ticks.is_multiple_of(COMMIT_SAVE_TICKS))) {
                let commit = self.raft.committed();
                persisted = self.raft.storage_mut().persist_commit(commit);
            }
            if let Err(e) = persisted {
                error!(node = self.raft.id().0, error = %e, "storage failed: the node stops");
                self.publish_status(Some(e.to_string()));
                return;
            }
            self.check_still_removed();
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
                if let Some(message) = self.check_snapshot_data(message) {
                    self.step(message);
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
            Event::PeerLost(peer) => self.leader_connection_lost(peer),
            Event::Removed { by, at } => self.told_removed(by, at),
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

    /// Steps the core with a peer's message. A message the core refuses because of what its
    /// sender put in it is logged naming the sender, once per interval per peer and kind (a
    /// forger, or a broken peer, may send thousands).
    fn step(&mut self, message: crate::core::Message) {
        match self.raft.step(message) {
            Ok(()) => {}
            Err(e @ crate::core::Error::CommittedConflict { .. }) => {
                error!(node = self.raft.id().0, error = %e, "a leader broke Raft's rules");
                if self.alarm.is_none() {
                    self.alarm = Some(e.to_string());
                    self.publish_status(None);
                }
            }
            Err(e) => match e.refused_peer() {
                // A peer's message the core would not take (a term out of reach, a shape
                // no correct node sends): named, once per interval per peer and kind, as
                // a forger or a broken peer may send thousands.
                Some((from, kind)) => {
                    if self.refusals_logged.should_log(from, kind) {
                        warn!(
                            node = self.raft.id().0,
                            peer = %from,
                            kind,
                            error = %e,
                            "refused a message from peer {from} (further such refusals of \
                             it are not logged for {}s): {e}",
                            crate::transport::REFUSAL_LOG_INTERVAL.as_secs()
                        );
                    }
                }
                None => warn!(node = self.raft.id().0, error = %e, "message refused"),
            },
        }
    }

    /// A snapshot a peer streamed must hold data this node can keep (see
    /// [`SnapshotFiles::verify_received`]): otherwise saving it would fail and stop the node.
    /// Returns the message, or `None` when it is refused (and logged, rate-limited).
    fn check_snapshot_data(
        &mut self,
        message: crate::core::Message,
    ) -> Option<crate::core::Message> {
        let crate::core::MessageBody::InstallSnapshot { snapshot } = &message.body else {
            return Some(message);
        };
        let Err(e) = self.snapshots.verify_received(snapshot) else {
            return Some(message);
        };
        let from = message.from;
        if self.refusals_logged.should_log(from, "bad_snapshot") {
            warn!(
                node = self.raft.id().0,
                peer = %from,
                kind = "bad_snapshot",
                error = %e,
                "refused a snapshot from peer {from} (further such refusals of it are not \
                 logged for {}s): {e}",
                crate::transport::REFUSAL_LOG_INTERVAL.as_secs()
            );
        }
        None
    }

    /// The connection from `peer` ended. If `peer` is our leader, forget it
    /// ([`Raft::forget_leader`]): the lease it held ends now, so this follower answers
    /// pre-votes at once, and it campaigns after the random part of its election timeout
    /// alone.
    ///
    /// Why this is safe: it changes only *when* a follower campaigns and whom it names as
    /// leader, neither of which Raft's safety relies on; votes stay one per term. A live
    /// leader whose connection to this follower ended (the transport reports only the newest
    /// connection's end) reconnects and sends its next heartbeat within a heartbeat interval,
    /// which makes this follower follow it again and resets the clock; until then a pre-vote
    /// from this follower needs the others, who still hold the leader's lease.
    fn leader_connection_lost(&mut self, peer: NodeId) {
        if self.raft.role() != Role::Follower || self.raft.leader() != Some(peer) {
            return;
        }
        info!(
            node = self.raft.id().0,
            leader = peer.0,
            term = self.raft.term().0,
            "the leader's connection ended: campaigning after the random part of the election timeout"
        );
        self.raft.forget_leader();
    }

    /// Peer `by` refused this node because it applied the change at `at` that removed it.
    /// Believed unless this node leads (the core steps a removed leader down by itself once
    /// the change commits) or its own log holds a later configuration with it (it was added
    /// back since; the peer's news is older than what this node knows).
    fn told_removed(&mut self, by: NodeId, at: LogIndex) {
        if self.removed.is_some() || self.raft.role() == Role::Leader || self.added_back_after(at) {
            return;
        }
        warn!(
            node = self.raft.id().0,
            by = by.0,
            at = at.0,
            "this node was removed from the cluster: it stops campaigning. To add it back, stop it, move its data directory aside and start it with --join-addr"
        );
        self.removed = Some(at);
        self.publish_status(None);
    }

    fn added_back_after(&self, at: LogIndex) -> bool {
        self.raft.configuration().contains(self.raft.id()) && self.raft.configs.current_index() > at
    }

    /// A removed node that has since received a configuration that includes it again (it was
    /// added back, and a leader reached it) takes part again.
    fn check_still_removed(&mut self) {
        if let Some(at) = self.removed
            && self.added_back_after(at)
        {
            info!(
                node = self.raft.id().0,
                "this node was added back to the cluster"
            );
            self.removed = None;
            self.publish_status(None);
        }
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
            // The fsync runs on this worker thread. Handing the worker to another thread
            // meanwhile (`block_in_place`) was measured and lost: the hand-off costs more than
            // the little work that could overlap with a 0.1 ms fsync (docs/performance.md).
            self.raft.storage_mut().persist(
                rd.snapshot.as_ref(),
                &rd.entries,
                rd.hard_state.as_ref(),
            )?;
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
            removed: self.removed,
            alarm: self.alarm.clone(),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use wal::{SimFs, Wal, WalConfig};

    use super::*;
    use crate::core::{self, Configuration, Message, MessageBody, Term};

    const ELECTION_TICKS: u32 = 10;
    const TICK: Duration = Duration::from_millis(10);

    /// Keeps every message the node sends.
    #[derive(Default)]
    struct Capture(Mutex<Vec<Message>>);

    impl Transport for Capture {
        fn send(&self, message: Message) {
            self.0.lock().unwrap().push(message);
        }
    }

    use crate::node::testing::{NoFiles, Nothing, store_in_term_1};

    /// Node 1 of the voters {1, 2, 3}, a follower of node 2 in term 1 once it heard its
    /// heartbeat. If `lost` is given, the connection from that peer then ends. Returns how many
    /// ticks later node 1 sent its first pre-vote request.
    async fn ticks_until_prevote(lost: Option<NodeId>) -> u32 {
        let fs = SimFs::new(7);
        let wal = Wal::open(fs, "/n1/wal", WalConfig::default()).unwrap();
        let voters: BTreeSet<NodeId> = [NodeId(1), NodeId(2), NodeId(3)].into();
        let files: Arc<dyn SnapshotFiles> = Arc::new(NoFiles);
        let store = store_in_term_1(
            wal,
            Configuration {
                voters,
                ..Configuration::default()
            },
        );
        let mut raft = core::Config::new(NodeId(1));
        raft.election_ticks = ELECTION_TICKS;
        raft.rng_seed = 42;
        let config = NodeConfig {
            raft,
            tick: TICK,
            snapshot_every: 0,
            events_per_ready_max: 16,
            batch_wait: Duration::ZERO,
        };
        let transport = Arc::new(Capture::default());
        let node = spawn(
            config,
            store,
            Arc::clone(&transport),
            files,
            Arc::new(Mutex::new(Nothing)),
        )
        .unwrap();
        let heartbeat = Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(1),
            body: MessageBody::Heartbeat {
                leader_commit: LogIndex::ZERO,
                read_round: 0,
            },
        };
        node.step(heartbeat).await.unwrap();
        while node.status().leader != Some(NodeId(2)) {
            tokio::time::sleep(TICK / 10).await;
        }
        if let Some(peer) = lost {
            node.peer_lost(peer);
        }
        for ticks in 1..=3 * ELECTION_TICKS {
            tokio::time::sleep(TICK).await;
            let sent = transport
                .0
                .lock()
                .unwrap()
                .iter()
                .any(|m| matches!(m.body, MessageBody::RequestVote { pre_vote: true, .. }));
            if sent {
                return ticks;
            }
        }
        panic!("no pre-vote within {} ticks", 3 * ELECTION_TICKS);
    }

    /// Snapshot files that, like the server's, keep only data they can read back: here, the
    /// bytes "good".
    struct Picky;

    impl SnapshotFiles for Picky {
        fn save(&self, snapshot: &core::Snapshot) -> Result<(), String> {
            self.verify_received(snapshot)
        }
        fn load(&self, _: &core::SnapshotMetadata) -> Result<core::Snapshot, String> {
            Err("nothing saved".into())
        }
        fn verify_received(&self, snapshot: &core::Snapshot) -> Result<(), String> {
            match &snapshot.data[..] {
                b"good" => Ok(()),
                _ => Err("not a snapshot".into()),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_whose_data_cannot_be_kept_is_refused_and_the_node_goes_on() {
        // Given node 1 of the voters {1, 2, 3} in term 1, whose snapshot files keep only
        // readable data,
        let wal = Wal::open(SimFs::new(3), "/n1/wal", WalConfig::default()).unwrap();
        let files: Arc<dyn SnapshotFiles> = Arc::new(Picky);
        let voters = Configuration {
            voters: [NodeId(1), NodeId(2), NodeId(3)].into(),
            ..Configuration::default()
        };
        let store = crate::node::testing::store_in_term_1_with(wal, voters.clone(), files.clone());
        let config = NodeConfig {
            raft: core::Config::new(NodeId(1)),
            tick: TICK,
            snapshot_every: 0,
            events_per_ready_max: 16,
            batch_wait: Duration::ZERO,
        };
        let transport = Arc::new(Capture::default());
        let node = spawn(
            config,
            store,
            transport,
            files,
            Arc::new(Mutex::new(Nothing)),
        )
        .unwrap();
        // when peer 2 sends an InstallSnapshot at index 5 whose data is garbage,
        let install = |data: &'static [u8]| Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(1),
            body: MessageBody::InstallSnapshot {
                snapshot: core::Snapshot {
                    metadata: core::SnapshotMetadata {
                        index: LogIndex(5),
                        term: Term(1),
                        configuration: voters.clone(),
                    },
                    data: bytes::Bytes::from_static(data),
                },
            },
        };
        node.step(install(b"garbage")).await.unwrap();
        tokio::time::sleep(TICK * 5).await;
        // then the node has not stopped (saving it would have failed) and did not take it,
        let status = node.status();
        assert_eq!(status.failed, None);
        assert_eq!(status.commit, LogIndex::ZERO);
        // and a snapshot it can keep is taken as before.
        node.step(install(b"good")).await.unwrap();
        tokio::time::sleep(TICK * 5).await;
        let status = node.status();
        assert_eq!(status.failed, None);
        assert_eq!(status.snapshot.index, LogIndex(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_whose_leader_connection_ends_campaigns_after_the_random_part_alone() {
        // Given a follower that stops hearing from its leader, when the leader's connection
        // ends, then it campaigns within one base election timeout,
        let after_loss = ticks_until_prevote(Some(NodeId(2))).await;
        assert!(after_loss <= ELECTION_TICKS + 1, "{after_loss} ticks");
        // whereas one that merely stops hearing (same random timeout) waits the base timeout
        // and more,
        let silence = ticks_until_prevote(None).await;
        assert!(silence >= ELECTION_TICKS, "{silence} ticks");
        assert!(after_loss < silence);
        // and losing the connection from a peer that is not the leader changes nothing.
        let other = ticks_until_prevote(Some(NodeId(3))).await;
        assert_eq!(other, silence);
    }
}
