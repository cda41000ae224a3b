//! The loop: the one task that owns the core. See the module documentation of [`super`] for
//! the order in which a `Ready` is handled and why.
//!
//! A storage failure stops the loop (and with it the node): after a failed fsync nothing on
//! disk can be trusted, so the node must not go on acknowledging anything. A full disk is the
//! one exception, and is waited out: a leader refuses proposals before they enter the log
//! while the disk's free space is under the store's reserve ([`LogStore::check_free_space`]),
//! so its log stops growing and it keeps heartbeating and serving reads; and a persist that
//! still fails for lack of space (a follower's appends, a race with whatever filled the disk)
//! is retried with backoff, the `Ready` held: nothing in it is acknowledged and no message that
//! depends on it is sent until it is durable.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use super::apply::{Applier, ApplyCmd, Waiter};
use super::metrics::NodeMetrics;
use super::snapshot_files::{Offload, offload};
use super::store::{DeferredSync, LogStore, NoSpace, StoreError, SyncDone};
use super::{
    APPLY_QUEUE_MAX, EVENT_QUEUE_MAX, Event, Node, NodeConfig, NodeError, SnapshotFiles,
    StateMachine, Status, StorageHealth, Transport, names,
};
use crate::core::{LogIndex, MessageBody, NodeId, Raft, Role, SnapshotMetadata, Term};

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
    /// Ticks since the loop started.
    ticks: u64,
    /// Set while the disk is short of space (see the module docs).
    no_space: Option<NoSpace>,
    /// The tick at which the free space was last looked at.
    space_checked_at: Option<u64>,
    /// Set while a persist is held for lack of space ([`Loop::persist_waiting_for_space`]):
    /// `no_space` then stays set whatever the reserve check says, since a write is waiting.
    held: bool,
    /// Set once writing failed for good.
    storage_failed: bool,
    /// When each peer's refused messages were last logged, by kind of refusal.
    refusals_logged: crate::transport::RefusalLog,
    /// Whether a persist's fsync may run on tokio's blocking pool (see [`Loop::run_sync`] and
    /// [`SYNC_OFF_THREAD_ENTRIES_MIN`]): on a multi-thread runtime, the server's. Tests and the
    /// simulation run a current-thread runtime, where it runs inline; the store's calls and
    /// their order are the same.
    sync_off_thread: bool,
    /// What the node counts for its operators.
    metrics: Arc<super::metrics::NodeMetrics>,
    /// The leader as of the last `Ready` (`None` while there was none): a new one counts as a
    /// leader change seen.
    leader_seen: Option<NodeId>,
    /// The term as of the last `Ready` (at start, the stored one): a node that votes for
    /// itself in a newer one has started an election.
    term_seen: Term,
    /// On a leader, the heartbeats sent to each peer and not yet answered, oldest first: the
    /// read round each carried and when it went out (at most [`HEARTBEATS_TRACKED_MAX`] per
    /// peer). Answers come back in order on one connection, so an answer pairs with the oldest
    /// heartbeat of its round; older ones went unanswered. Cleared when the node stops leading.
    heartbeats_out: HashMap<NodeId, VecDeque<(u64, tokio::time::Instant)>>,
}

/// The most unanswered heartbeats remembered per peer, for its round-trip time: with the
/// server's heartbeat every 30 ms, over a second's worth (a peer silent that long is not
/// measured until it answers again).
pub const HEARTBEATS_TRACKED_MAX: usize = 64;
/// An answer to a heartbeat sent longer ago than this is not taken as a round trip: the peer
/// was away (its connection lost, its queue full), and its silence is not network latency.
pub const ROUND_TRIP_SAMPLE_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// How often, in ticks, the loop saves the commit index when it has moved (one hard-state
/// save, off the write path). The saved commit index is how far the log must reach at the
/// next start: a log found shorter (a segment deleted or truncated) is refused instead of
/// silently losing committed entries. With the server's 10 ms tick, every 100 ms.
pub const COMMIT_SAVE_TICKS: u64 = 10;

/// How often, in ticks, the loop looks at the disk's free space when nothing else made it
/// look (so that a node refusing writes for lack of space notices, and says, that space was
/// freed). With the server's 10 ms tick, every 100 ms. Proposals look at most once per tick.
pub const SPACE_CHECK_TICKS: u64 = 10;
/// A step of the node loop (a persist, a hand-off to the applier) slower than this is logged:
/// the loop answers no heartbeat meanwhile, and the election timeout is a few times this.
pub const SLOW_LOOP_STEP: std::time::Duration = std::time::Duration::from_millis(100);

/// A persist of at least this many entries runs its fsync on tokio's blocking pool (on a
/// multi-thread runtime; see `Loop::run_sync`), so that this worker serves requests meanwhile.
/// A smaller one runs inline: a lone entry means little load to overlap with, and the hand-off
/// to another thread would cost it about 0.1 ms (measured with one client on one node: p50
/// 0.43 ms inline, 0.50–0.55 ms handed off).
pub const SYNC_OFF_THREAD_ENTRIES_MIN: usize = 2;

/// The first wait before a persist that failed for lack of space is retried; it doubles up
/// to [`PERSIST_RETRY_MAX`].
pub const PERSIST_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(10);
/// The longest wait between retries of a persist that failed for lack of space.
pub const PERSIST_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(1);

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
    let snapshot_term = store.snapshot_metadata().term;
    // The size of the snapshot the node starts from sets when the next one is due.
    let snapshot_bytes = if snapshot_index > LogIndex::ZERO {
        snapshots
            .open(store.snapshot_metadata())
            .map_or(0, |(_, bytes)| bytes)
    } else {
        0
    };
    let raft = Raft::new(config.raft.clone(), store).map_err(NodeError::Rejected)?;
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE_MAX);
    let (side_tx, side_rx) = mpsc::unbounded_channel();
    let (apply_tx, apply_rx) = mpsc::channel(APPLY_QUEUE_MAX);
    let applied = Arc::new(AtomicU64::new(snapshot_index.0));
    let node_applied = Arc::clone(&applied);
    let (status_tx, status_rx) = watch::channel(Status {
        id: config.raft.id,
        ..Status::default()
    });
    let metrics = Arc::new(super::metrics::NodeMetrics::default());
    // The term a restarted node comes back in was not an election of this process.
    let start_term = raft.term();
    let applier = Applier {
        metrics: Arc::clone(&metrics),
        machine,
        applied: Arc::clone(&applied),
        snapshots: Arc::clone(&snapshots),
        snapshot_every: config.snapshot_every,
        snapshot_log_share: config.snapshot_log_share,
        last_snapshot: snapshot_index,
        last_snapshot_bytes: snapshot_bytes,
        bytes_since_snapshot: 0,
        writing: None,
        snapshot_requests: Vec::new(),
        to_loop: side_tx,
        waiters: Default::default(),
        reads: Default::default(),
        configuration: snapshot_configuration,
        applied_term: snapshot_term,
        replay_until: raft.committed(),
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
        ticks: 0,
        no_space: None,
        space_checked_at: None,
        held: false,
        storage_failed: false,
        refusals_logged: Default::default(),
        sync_off_thread: tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread,
        metrics: Arc::clone(&metrics),
        leader_seen: None,
        term_seen: start_term,
        heartbeats_out: HashMap::new(),
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
        metrics,
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
    error!(node = %names::of(id), panic = %what, "the node's loop panicked: the node stops");
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
                    self.ticks = ticks;
                    ticked = true;
                    if ticks.is_multiple_of(SPACE_CHECK_TICKS) {
                        self.refresh_free_space();
                    }
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
                persisted = match self.raft.storage_mut().persist_commit(commit) {
                    // Only a bound for the next start, saved again next time: not worth
                    // waiting for space here. A no-space failure left the store whole and
                    // unpoisoned (the previous hard state stands, see `StoreError::is_no_space`),
                    // so the retry is real; any other failure, a poisoned log above all,
                    // stops the node now, as in `persist_waiting_for_space`.
                    Err(e) if e.is_no_space() => {
                        warn!(node = %names::of(self.raft.id()), error = %e, "could not save the commit index for lack of space; will retry");
                        Ok(())
                    }
                    other => other,
                };
            }
            if let Err(e) = persisted {
                error!(node = %names::of(self.raft.id()), error = %e, "storage failed: the node stops");
                self.storage_failed = true;
                self.publish_status(Some(e.to_string()));
                return;
            }
            self.check_still_removed();
            // The core's invariants, checked in the running node after every Ready (debug
            // builds: the tests and the simulations), not only in the core's own harness.
            if cfg!(debug_assertions)
                && let Err(broken) = self.raft.check_invariants()
            {
                panic!(
                    "node {}: Raft invariant violated: {broken}",
                    self.raft.id().0
                );
            }
            if stop {
                info!(node = %names::of(self.raft.id()), "node loop stopped");
                return;
            }
        }
    }

    /// Returns true when the loop must stop.
    async fn handle(&mut self, event: Event<M::Output>) -> bool {
        match event {
            Event::Step(message, sender) => {
                if let Some(message) = self.check_snapshot_data(message) {
                    self.step(message, sender);
                }
            }
            Event::Propose(_, reply) if self.refuses_for_space().is_some() => {
                let no_space = self.no_space.expect("refuses_for_space saw it set");
                let _ = reply.send(Err(NodeError::NoSpace(no_space)));
            }
            Event::ConfChange(_, reply) if self.refuses_for_space().is_some() => {
                let no_space = self.no_space.expect("refuses_for_space saw it set");
                let _ = reply.send(Err(NodeError::NoSpace(no_space)));
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
                NodeMetrics::count(&self.metrics.read_index_requests);
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
            Event::SnapshotNow(reply) => self.send_apply(ApplyCmd::SnapshotNow(reply)).await,
            Event::SnapshotWritten(metadata, written, replies) => {
                let result = match written {
                    Ok(bytes) => {
                        let started = tokio::time::Instant::now();
                        let compacted = self.compact_behind(&metadata, bytes);
                        self.warn_if_slow(started, "compacting the log behind a snapshot", 0);
                        compacted
                    }
                    Err(e) => Err(NodeError::Storage(e.to_string())),
                };
                match &result {
                    // The status says which snapshot the node holds (`/ready`, and the answer
                    // to a repeated snapshot request).
                    Ok(_) => self.publish_status(None),
                    Err(_) if !replies.is_empty() => {} // The requester hears why.
                    Err(NodeError::Rejected(crate::core::Error::SnapshotOutOfDate { .. })) => {
                        info!(node = %names::of(self.raft.id()), index = metadata.index.0, "a snapshot from the leader superseded the one just written");
                    }
                    Err(e) => {
                        warn!(node = %names::of(self.raft.id()), index = metadata.index.0, error = %e, "periodic snapshot failed");
                    }
                }
                for reply in replies {
                    let _ = reply.send(result.clone());
                }
            }
            Event::ApplierFailed(why) => {
                error!(node = %names::of(self.raft.id()), error = %why, "the state machine failed: the node stops");
                self.storage_failed = true;
                self.publish_status(Some(why));
                return true;
            }
            Event::Shutdown => return true,
        }
        false
    }

    /// Steps the core with a peer's message. A message the core refuses because of what its
    /// sender put in it is logged naming the sender, once per interval per peer and kind (a
    /// forger, or a broken peer, may send thousands).
    fn step(&mut self, message: crate::core::Message, sender: super::Sender) {
        if let MessageBody::HeartbeatResponse { read_round } = message.body
            && let Some(sent) = self.heartbeats_out.get_mut(&message.from)
        {
            while let Some((round, at)) = sent.pop_front() {
                if round == read_round {
                    let took = at.elapsed();
                    if took <= ROUND_TRIP_SAMPLE_MAX {
                        self.metrics
                            .round_trip(message.from, took.as_micros() as u64);
                    }
                    break;
                }
            }
        }
        let stepped = match sender {
            super::Sender::Known => self.raft.step(message),
            super::Sender::Stranger => self.raft.step_from_stranger(message),
        };
        match stepped {
            Ok(()) => {}
            Err(e @ crate::core::Error::CommittedConflict { .. }) => {
                error!(node = %names::of(self.raft.id()), error = %e, "a leader broke Raft's rules");
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
                            node = %names::of(self.raft.id()),
                            peer = %names::of(from),
                            kind,
                            error = %e,
                            "refused a message from peer {} (further such refusals of it \
                             are not logged for {}s): {e}",
                            names::of(from),
                            crate::transport::REFUSAL_LOG_INTERVAL.as_secs()
                        );
                    }
                }
                None => warn!(node = %names::of(self.raft.id()), error = %e, "message refused"),
            },
        }
    }

    /// A snapshot reaches the core only once the transport received all of its data and the
    /// snapshot files checked it ([`SnapshotFiles::has_received`]): otherwise keeping it could
    /// fail and stop the node. Returns the message, or `None` when it is refused (and logged,
    /// rate-limited).
    fn check_snapshot_data(
        &mut self,
        message: crate::core::Message,
    ) -> Option<crate::core::Message> {
        let crate::core::MessageBody::InstallSnapshot { snapshot } = &message.body else {
            return Some(message);
        };
        if self.snapshots.has_received(&snapshot.metadata) {
            return Some(message);
        }
        let from = message.from;
        if self.refusals_logged.should_log(from, "bad_snapshot") {
            warn!(
                node = %names::of(self.raft.id()),
                peer = %names::of(from),
                kind = "bad_snapshot",
                index = snapshot.metadata.index.0,
                "refused a snapshot from peer {} whose data was not received and checked \
                 (further such refusals of it are not logged for {}s)",
                names::of(from),
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
            node = %names::of(self.raft.id()),
            leader = %names::of(peer),
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
            node = %names::of(self.raft.id()),
            by = %names::of(by),
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
                node = %names::of(self.raft.id()),
                "this node was added back to the cluster"
            );
            self.removed = None;
            self.publish_status(None);
        }
    }

    /// Whether a proposal must be refused for lack of space: only a leader refuses (a
    /// follower's answer is "not the leader", whatever its disk), after looking at the free
    /// space at most once per tick.
    fn refuses_for_space(&mut self) -> Option<NoSpace> {
        if self.raft.role() != Role::Leader {
            return None;
        }
        if self.space_checked_at != Some(self.ticks) {
            self.refresh_free_space();
        }
        self.no_space
    }

    /// Looks at the disk's free space, and says so when the node starts or stops refusing
    /// writes for lack of it.
    fn refresh_free_space(&mut self) {
        self.space_checked_at = Some(self.ticks);
        let now = if self.held {
            // A write is waiting for space: the disk is full whatever the reserve says.
            Some(self.held_no_space())
        } else {
            self.raft.storage().check_free_space().err()
        };
        match (self.no_space, now) {
            (None, Some(no_space)) => {
                warn!(node = %names::of(self.raft.id()), %no_space, "disk short of space: refusing new writes until space is freed")
            }
            (Some(_), None) => {
                info!(
                    node = %names::of(self.raft.id()),
                    "disk space freed: taking writes again"
                )
            }
            _ => {}
        }
        if now != self.no_space {
            self.no_space = now;
            self.publish_status(None);
        }
    }

    /// Persists one `Ready`'s durable part, waiting out a full disk: a persist that fails for
    /// lack of space left the store whole (see [`StoreError::is_no_space`]), so the same
    /// persist is retried with backoff until it succeeds or fails otherwise. Meanwhile the
    /// loop does nothing else: the `Ready` is held, so nothing in it is acknowledged or
    /// applied (but the committed entries that were durable before it, which may have gone to
    /// the applier already), and no message that depends on it is sent.
    async fn persist_waiting_for_space(
        &mut self,
        rd: &crate::core::Ready,
    ) -> Result<(), StoreError> {
        let mut wait = PERSIST_RETRY_MIN;
        loop {
            let persisted = self.raft.storage_mut().persist_deferring_sync(
                rd.snapshot.as_ref(),
                &rd.entries,
                rd.hard_state.as_ref(),
            );
            let persisted = match persisted {
                Ok(Some(sync)) => {
                    let off_thread =
                        self.sync_off_thread && rd.entries.len() >= SYNC_OFF_THREAD_ENTRIES_MIN;
                    let done = Self::run_sync(off_thread, sync).await;
                    self.raft.storage_mut().finish_sync(done)
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            match persisted {
                Err(e) if e.is_no_space() => {
                    if !self.held {
                        warn!(node = %names::of(self.raft.id()), error = %e, "disk full: holding this node's writes until space is freed");
                        self.held = true;
                    }
                    // What the status says is refreshed on every try: the real free bytes.
                    let no_space = Some(self.held_no_space());
                    if no_space != self.no_space {
                        self.no_space = no_space;
                        self.publish_status(None);
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(PERSIST_RETRY_MAX);
                }
                other => {
                    if self.held && other.is_ok() {
                        self.held = false;
                        let free = self.raft.storage().free_space();
                        info!(node = %names::of(self.raft.id()), free_bytes = ?free, "disk space freed: the held write is persisted");
                        // Whether writes are taken again is the reserve's to say.
                        self.refresh_free_space();
                    }
                    return other;
                }
            }
        }
    }

    /// Runs a persist's fsync, `off_thread` on tokio's blocking pool instead of this worker,
    /// which meanwhile runs HTTP handlers, the transport and the applier. This loop waits
    /// either way (the `Ready` is held until its entries are durable), so what is sent,
    /// acknowledged or applied does not change. Measured with 64 clients writing new keys to
    /// one node: inline, the worker sat idle in the fsync a quarter of the time
    /// (docs/performance.md).
    async fn run_sync(off_thread: bool, sync: DeferredSync) -> SyncDone {
        let how = if off_thread {
            Offload::BlockingPool
        } else {
            Offload::Inline
        };
        offload(how, move || sync.run()).await
    }

    /// What the node reports while a write is held: the reserve check's answer if it has
    /// one, else a full disk with the free bytes the store sees (a write needed more).
    fn held_no_space(&self) -> NoSpace {
        let storage = self.raft.storage();
        storage.check_free_space().err().unwrap_or(NoSpace {
            available: storage.free_space().unwrap_or(0),
            reserve: 0,
        })
    }

    /// Logs a step of the loop that took longer than [`SLOW_LOOP_STEP`]: while it runs the node
    /// neither sends heartbeats nor answers them, so such steps are what puts elections at
    /// risk (etcd logs its slow fdatasyncs for the same reason).
    fn warn_if_slow(&self, started: tokio::time::Instant, step: &str, entries: usize) {
        let took = started.elapsed();
        if took >= SLOW_LOOP_STEP {
            warn!(node = %names::of(self.raft.id()), took_ms = took.as_millis() as u64, entries, "slow node loop step: {step}");
        }
    }

    /// Gives the committed entries of `rd` that were durable before it
    /// ([`crate::core::Ready::committed_durable`]) to the applier now, ahead of its persist,
    /// so that their writers are answered while its fsync runs rather than after it. Only if
    /// the applier's queue has room: a slow state machine must not hold up the persist (and
    /// a follower's acknowledgement after it), so with a full queue they wait for the persist
    /// as the rest do.
    fn apply_durable_early(&mut self, rd: &mut crate::core::Ready) {
        if rd.committed_durable == 0 {
            return;
        }
        let later = rd.committed_entries.split_off(rd.committed_durable);
        let early = std::mem::replace(&mut rd.committed_entries, later);
        rd.committed_durable = 0;
        match self.apply.try_send(ApplyCmd::Entries(early)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(ApplyCmd::Entries(mut early))) => {
                early.append(&mut rd.committed_entries);
                rd.committed_entries = early;
            }
            // The applier stopped (it panicked): nobody is left to answer, as in `send_apply`.
            Err(_) => {}
        }
    }

    async fn send_apply(&mut self, cmd: ApplyCmd<M::Output>) {
        // The applier runs as long as the loop does; a closed channel means it panicked, and
        // the callers waiting on it see their replies dropped (`NodeError::Stopped`).
        let _ = self.apply.send(cmd).await;
    }

    /// The node's own snapshot at `metadata` is durable (`bytes` long): records it and
    /// compacts the log behind it (the log store keeps a tail of entries for followers that lag
    /// a little). The core checks that it still stands for something: a leader's snapshot
    /// installed while it was written makes it out of date.
    fn compact_behind(
        &mut self,
        metadata: &SnapshotMetadata,
        bytes: u64,
    ) -> Result<SnapshotMetadata, NodeError> {
        let expected = self
            .raft
            .snapshot_at(metadata.index, Bytes::new())
            .map_err(NodeError::from_core)?
            .metadata;
        debug_assert_eq!(
            &expected, metadata,
            "the applier's term and membership at the snapshot's index are the core's"
        );
        self.raft
            .storage_mut()
            .compact(&expected)
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        info!(
            node = %names::of(self.raft.id()),
            index = expected.index.0,
            term = expected.term.0,
            bytes,
            "snapshot taken, log compacted"
        );
        Ok(expected)
    }

    async fn handle_ready(&mut self) -> Result<(), StoreError> {
        let mut changed = false;
        while self.raft.has_ready() {
            changed = true;
            let mut rd = self.raft.ready();
            if let Some(soft) = rd.soft_state {
                info!(node = %names::of(self.raft.id()), term = self.raft.term().0, role = %names::role(soft.role), leader = %names::of_opt(soft.leader), "role or leader changed");
                if soft.leader.is_some() && soft.leader != self.leader_seen {
                    NodeMetrics::count(&self.metrics.leader_changes_seen);
                }
                self.leader_seen = soft.leader;
                if soft.role != Role::Leader {
                    self.heartbeats_out.clear();
                }
            }
            // A candidate votes for itself in the term it starts; a lone voter may have won
            // that election within the same step, so its role alone would miss it.
            let term = self.raft.term();
            if term > self.term_seen && self.raft.vote() == Some(self.raft.id()) {
                NodeMetrics::count(&self.metrics.elections_started);
            }
            self.term_seen = term;
            let sent = !rd.messages.is_empty();
            for message in rd.messages.drain(..) {
                if let MessageBody::Heartbeat { read_round, .. } = message.body {
                    let sent = self.heartbeats_out.entry(message.to).or_default();
                    if sent.len() == HEARTBEATS_TRACKED_MAX {
                        sent.pop_front();
                    }
                    sent.push_back((read_round, tokio::time::Instant::now()));
                }
                self.transport.send(message);
            }
            // Only entries and snapshots cost an fsync here; a hard state alone is cheap (a
            // commit index is not synced) or rare (a new term or vote).
            let fsyncs = rd.snapshot.is_some() || !rd.entries.is_empty();
            if fsyncs {
                self.apply_durable_early(&mut rd);
            }
            if sent && fsyncs {
                // The transport's sender tasks were just woken, most likely onto this worker
                // thread, where the fsync below would hold them (tokio's LIFO slot is not
                // stolen by the other worker). Yield once so that a leader's appends are on
                // the wire before it blocks on its own fsync, and the followers' fsyncs run in
                // parallel with it (profiled: without this, one follower received its append
                // only after the leader's fsync).
                tokio::task::yield_now().await;
            }
            // The fsync runs on the blocking pool (`run_sync`). Handing this worker itself to
            // another thread instead (`block_in_place`) was measured and lost: that hand-off
            // costs more than the work it lets overlap (docs/performance.md).
            let started = tokio::time::Instant::now();
            self.persist_waiting_for_space(&rd).await?;
            self.warn_if_slow(
                started,
                "persisting (WAL write and fsync)",
                rd.entries.len(),
            );
            for message in rd.persisted_messages.drain(..) {
                self.transport.send(message);
            }
            if let Some(snapshot) = &rd.snapshot {
                NodeMetrics::count(&self.metrics.snapshots_received);
                self.send_apply(ApplyCmd::Restore(snapshot.metadata.clone()))
                    .await;
            }
            if !rd.committed_entries.is_empty() {
                let started = tokio::time::Instant::now();
                let entries = rd.committed_entries.len();
                self.send_apply(ApplyCmd::Entries(std::mem::take(&mut rd.committed_entries)))
                    .await;
                self.warn_if_slow(started, "handing committed entries to the applier", entries);
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
            storage: if self.storage_failed {
                StorageHealth::Failed
            } else if let Some(no_space) = self.no_space {
                StorageHealth::NoSpace(no_space)
            } else {
                StorageHealth::Ok
            },
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
    use crate::core::{self, Configuration, Message};
    use crate::node::SnapshotFilesError;

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
        let config = node1_config(42);
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

    /// Bytes the disk of `fs` holds now.
    fn used(fs: &SimFs) -> u64 {
        fs.set_capacity(Some(u64::MAX));
        let available = wal::FileSystem::available_space(fs, std::path::Path::new("/")).unwrap();
        fs.set_capacity(None);
        u64::MAX - available
    }

    /// Node 1's driver settings in these tests: elections after ELECTION_TICKS, the random
    /// part seeded with `rng_seed`, no snapshots, small batches.
    fn node1_config(rng_seed: u64) -> NodeConfig {
        let mut raft = core::Config::new(NodeId(1));
        raft.election_ticks = ELECTION_TICKS;
        raft.rng_seed = rng_seed;
        NodeConfig {
            raft,
            tick: TICK,
            snapshot_every: 0,
            snapshot_log_share: 0.25,
            events_per_ready_max: 16,
            batch_wait: Duration::ZERO,
        }
    }

    /// A lone voter on `fs` keeping `reserve` bytes free, elected leader.
    async fn lone_leader(fs: &SimFs, reserve: u64) -> Node<()> {
        let wal = Wal::open(fs.clone(), "/n1/wal", WalConfig::default()).unwrap();
        let mut store = store_in_term_1(
            wal,
            Configuration {
                voters: [NodeId(1)].into(),
                ..Configuration::default()
            },
        );
        store.set_free_space_reserve(reserve);
        let config = node1_config(7);
        let files: Arc<dyn SnapshotFiles> = Arc::new(NoFiles);
        let node = spawn(
            config,
            store,
            Arc::new(Capture::default()),
            files,
            Arc::new(Mutex::new(Nothing)),
        )
        .unwrap();
        node.campaign().await;
        while node.status().role != Some(Role::Leader) {
            tokio::time::sleep(TICK).await;
        }
        node
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_short_of_space_refuses_proposals_serves_reads_and_resumes_by_itself() {
        // Given a lone leader keeping 4 KiB free, that has taken a write,
        const RESERVE: u64 = 4096;
        let fs = SimFs::new(9);
        let node = lone_leader(&fs, RESERVE).await;
        node.propose(Bytes::from_static(b"first")).await.unwrap();
        let last = node.status().last_index;
        // when its disk fills to within the reserve,
        fs.set_capacity(Some(used(&fs) + 100));
        tokio::time::sleep(TICK).await; // (it looks at the disk at most once per tick)
        // then a proposal is refused before it enters the log, saying how much is free,
        let refused = node.propose(Bytes::from_static(b"refused")).await;
        assert_eq!(
            refused,
            Err(NodeError::NoSpace(NoSpace {
                available: 100,
                reserve: RESERVE
            }))
        );
        assert_eq!(node.status().last_index, last);
        // reads go on, and the status says why writes do not.
        node.read_index().await.unwrap();
        assert!(matches!(node.status().storage, StorageHealth::NoSpace(_)));
        // When space is freed, the node notices by itself and takes writes again.
        fs.set_capacity(None);
        tokio::time::sleep(TICK * (SPACE_CHECK_TICKS as u32 + 1)).await;
        assert_eq!(node.status().storage, StorageHealth::Ok);
        node.propose(Bytes::from_static(b"after")).await.unwrap();
        assert_eq!(node.status().failed, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_persist_that_finds_the_disk_full_is_held_and_completes_once_space_is_freed() {
        // Given a lone leader with no reserve (it never refuses up front), that has taken a
        // write,
        let fs = SimFs::new(10);
        let node = lone_leader(&fs, 0).await;
        node.propose(Bytes::from_static(b"first")).await.unwrap();
        let last = node.status().last_index;
        // when its disk is full and a proposal comes,
        fs.set_capacity(Some(used(&fs)));
        let waiting = tokio::spawn({
            let node = node.clone();
            async move { node.propose(Bytes::from_static(b"held")).await }
        });
        // then it is not acknowledged while the disk is full, and the node is not stopped
        // but says it waits for space, with the bytes really free (none here);
        tokio::time::sleep(TICK * 50).await;
        assert!(!waiting.is_finished());
        assert_eq!(
            node.status().storage,
            StorageHealth::NoSpace(NoSpace {
                available: 0,
                reserve: 0
            })
        );
        assert_eq!(node.status().failed, None);
        // once space is freed, the held write is persisted and acknowledged, and writing goes
        // on.
        fs.set_capacity(None);
        waiting.await.unwrap().unwrap();
        node.propose(Bytes::from_static(b"after")).await.unwrap();
        assert_eq!(node.status().last_index, last.next().next());
        tokio::time::sleep(TICK * (SPACE_CHECK_TICKS as u32 + 1)).await;
        assert_eq!(node.status().storage, StorageHealth::Ok);
    }

    /// Node 1 of the voters {1, 2, 3} in term 1, with no leader, sending through `transport`.
    fn follower_in_term_1(fs: &SimFs, transport: &Arc<Capture>) -> Node<()> {
        let wal = Wal::open(fs.clone(), "/n1/wal", WalConfig::default()).unwrap();
        let store = store_in_term_1(
            wal,
            Configuration {
                voters: [NodeId(1), NodeId(2), NodeId(3)].into(),
                ..Configuration::default()
            },
        );
        let config = node1_config(42);
        let files: Arc<dyn SnapshotFiles> = Arc::new(NoFiles);
        spawn(
            config,
            store,
            Arc::clone(transport),
            files,
            Arc::new(Mutex::new(Nothing)),
        )
        .unwrap()
    }

    /// Node 2 asks node 1 for its vote in term 2, with a log as long as any.
    fn vote_request_in_term_2() -> Message {
        Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(2),
            body: MessageBody::RequestVote {
                pre_vote: false,
                last_log_index: LogIndex(100),
                last_log_term: Term(1),
                leadership_transfer: false,
            },
        }
    }

    /// Whether node 1 has granted a vote in term 2.
    fn vote_granted(transport: &Capture) -> bool {
        transport.0.lock().unwrap().iter().any(|m| {
            m.term == Term(2)
                && matches!(
                    m.body,
                    MessageBody::RequestVoteResponse {
                        pre_vote: false,
                        granted: true,
                        ..
                    }
                )
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_vote_whose_save_finds_the_disk_full_is_not_sent_until_it_is_saved() {
        // Given a follower in term 1 whose hard-state writes fail for lack of space,
        let fs = SimFs::new(12);
        let transport = Arc::new(Capture::default());
        let node = follower_in_term_1(&fs, &transport);
        fs.fail_writes_for_space(0, u32::MAX);
        // when a candidate asks for its vote in term 2,
        node.step(vote_request_in_term_2()).await.unwrap();
        // then the vote is not sent while it cannot be saved (before the fix, the retry found
        // the vote already in memory, saved nothing and sent it), the node is not stopped and
        // says it waits for space;
        tokio::time::sleep(TICK * 50).await;
        assert!(!vote_granted(&transport), "a vote went out unsaved");
        let status = node.status();
        assert!(
            matches!(status.storage, StorageHealth::NoSpace(_)),
            "{:?}",
            status.storage
        );
        assert_eq!(status.failed, None);
        // and once writes succeed again, the vote is saved and then sent.
        fs.fail_writes_for_space(0, 0);
        let mut waited = 0;
        while !vote_granted(&transport) {
            assert!(waited < 1000, "no vote after space came back");
            tokio::time::sleep(TICK).await;
            waited += 1;
        }
        assert_eq!(node.status().failed, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_vote_whose_save_fails_its_fsync_stops_the_node_and_is_never_sent() {
        // Given a follower in term 1, when the fsync of its vote's save fails,
        let fs = SimFs::new(13);
        let transport = Arc::new(Capture::default());
        let node = follower_in_term_1(&fs, &transport);
        fs.fail_next_syncs(1);
        let _ = node.step(vote_request_in_term_2()).await;
        // then the node stops saying its storage failed, and the vote never goes out.
        let mut waited = 0;
        while node.status().storage != StorageHealth::Failed {
            assert!(waited < 1000, "the node did not stop");
            tokio::time::sleep(TICK).await;
            waited += 1;
        }
        tokio::time::sleep(TICK * 20).await;
        assert!(!vote_granted(&transport), "a vote went out unsaved");
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_write_reports_the_bytes_really_free_until_it_is_persisted() {
        // Given a lone leader with no reserve, whose disk has 1000 bytes left,
        const LEFT: u64 = 1000;
        let fs = SimFs::new(14);
        let node = lone_leader(&fs, 0).await;
        fs.set_capacity(Some(used(&fs) + LEFT));
        // when a write bigger than that comes,
        let waiting = tokio::spawn({
            let node = node.clone();
            async move {
                node.propose(Bytes::from(vec![7u8; 4 * LEFT as usize]))
                    .await
            }
        });
        // then it is held, and the status says how much is free (not a placeholder 0) for as
        // long as it waits, past several of the intervals at which the node looks at its disk;
        for _ in 0..3 {
            tokio::time::sleep(TICK * (SPACE_CHECK_TICKS as u32 + 1)).await;
            assert!(!waiting.is_finished());
            assert_eq!(
                node.status().storage,
                StorageHealth::NoSpace(NoSpace {
                    available: LEFT,
                    reserve: 0
                })
            );
        }
        // and once space is freed, the write is acknowledged and the status is clear.
        fs.set_capacity(None);
        waiting.await.unwrap().unwrap();
        assert_eq!(node.status().storage, StorageHealth::Ok);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_fsync_stops_the_node_and_its_status_says_storage_failed() {
        // Given a lone leader, when the fsync of its next write fails,
        let fs = SimFs::new(11);
        let node = lone_leader(&fs, 0).await;
        fs.fail_next_syncs(1);
        // then the write is not acknowledged, and the status says the storage failed and why
        // (a failed fsync is never retried, unlike a full disk).
        let refused = node.propose(Bytes::from_static(b"lost")).await;
        assert_eq!(refused, Err(NodeError::Stopped));
        let status = node.status();
        assert_eq!(status.storage, StorageHealth::Failed);
        let failure = status.failed.expect("a failure is named");
        assert!(failure.contains("fsync"), "{failure}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_multi_thread_runtime_writes_are_durable_before_they_are_acknowledged() {
        // Given a lone leader on the server's kind of runtime, whose fsyncs run on the
        // blocking pool,
        let fs = SimFs::new(12);
        let node = Arc::new(lone_leader(&fs, 0).await);
        // when many writes arrive at once,
        let writes: Vec<_> = (0..64u32)
            .map(|i| {
                let node = Arc::clone(&node);
                tokio::spawn(async move { node.propose(Bytes::from(i.to_string())).await })
            })
            .collect();
        for write in writes {
            write.await.unwrap().expect("the write is acknowledged");
        }
        // then every acknowledged write survives a crash of the disk.
        let acknowledged = node.status().commit;
        let _ = fs.crash();
        let wal = Wal::open(fs.clone(), "/n1/wal", WalConfig::default()).unwrap();
        assert!(
            wal.last_index() >= acknowledged.0 && acknowledged.0 >= 64,
            "log reaches {} after the crash; {} were acknowledged",
            wal.last_index(),
            acknowledged.0
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_multi_thread_runtime_a_failed_fsync_still_stops_the_node() {
        let fs = SimFs::new(13);
        let node = lone_leader(&fs, 0).await;
        fs.fail_next_syncs(1);
        let refused = node.propose(Bytes::from_static(b"lost")).await;
        assert_eq!(refused, Err(NodeError::Stopped));
        assert_eq!(node.status().storage, StorageHealth::Failed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_whose_data_cannot_be_kept_is_refused_and_the_node_goes_on() {
        // Given node 1 of the voters {1, 2, 3} in term 1, whose snapshot files keep only
        // readable data (here, the bytes "good"),
        let wal = Wal::open(SimFs::new(3), "/n1/wal", WalConfig::default()).unwrap();
        let mem = Arc::new(crate::node::MemSnapshotFiles::new(
            |metadata, data| match data {
                b"good" => Ok(()),
                _ => Err(SnapshotFilesError::damaged(
                    metadata.index,
                    "not a snapshot",
                )),
            },
        ));
        let files: Arc<dyn SnapshotFiles> = mem.clone();
        let voters = Configuration {
            voters: [NodeId(1), NodeId(2), NodeId(3)].into(),
            ..Configuration::default()
        };
        let store = crate::node::testing::store_in_term_1_with(wal, voters.clone(), files.clone());
        let config = NodeConfig {
            raft: core::Config::new(NodeId(1)),
            tick: TICK,
            snapshot_every: 0,
            snapshot_log_share: 0.25,
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
        // when peer 2 sends an InstallSnapshot at index 5 whose data is garbage (refused by
        // the files when received, so the message reaches the node with no data behind it),
        let install = || Message {
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
                    data: bytes::Bytes::new(),
                },
            },
        };
        let MessageBody::InstallSnapshot { snapshot } = install().body else {
            unreachable!("built just above")
        };
        assert!(mem.receive_whole(&snapshot.metadata, b"garbage").is_err());
        node.step(install()).await.unwrap();
        tokio::time::sleep(TICK * 5).await;
        // then the node has not stopped (saving it would have failed) and did not take it,
        let status = node.status();
        assert_eq!(status.failed, None);
        assert_eq!(status.commit, LogIndex::ZERO);
        // and a snapshot it can keep is taken as before.
        mem.receive_whole(&snapshot.metadata, b"good").unwrap();
        node.step(install()).await.unwrap();
        tokio::time::sleep(TICK * 5).await;
        let status = node.status();
        assert_eq!(status.failed, None);
        assert_eq!(status.snapshot.index, LogIndex(5));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_returns_once_the_commit_index_is_saved() {
        // Given a lone leader that has just committed a write (its commit index is saved only
        // every COMMIT_SAVE_TICKS, and at shutdown),
        let fs = SimFs::new(12);
        let node = lone_leader(&fs, 0).await;
        node.propose(Bytes::from_static(b"kept")).await.unwrap();
        let committed = node.status().commit;
        // when it shuts down and the process ends at once (a crash right after: nothing more
        // reaches the disk),
        node.shutdown().await;
        fs.crash();
        // then the hard state on disk already holds that commit index, so the restart knows
        // how far its log must reach (and does not take what it applied for news).
        let wal = Wal::open(fs.clone(), "/n1/wal", WalConfig::default()).unwrap();
        let store = crate::node::WalLogStore::open(wal, Arc::new(NoFiles)).unwrap();
        let saved = crate::core::Storage::initial_state(&store)
            .unwrap()
            .hard_state
            .commit;
        assert_eq!(saved, committed);
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
