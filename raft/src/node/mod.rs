//! The node: the asynchronous driver that runs a pure [`crate::core::Raft`] against the world.
//!
//! One task (the *loop*, [`driver`]) owns the core. It ticks it on a timer, steps it with
//! messages from the transport and with client requests, and handles every `Ready` in the
//! order the core documents. Messages that may go at once are sent first: a leader's appends
//! travel while it persists its own copy. Then the log is persisted through a [`LogStore`],
//! then the messages that promise durable state are sent. Committed entries go to a second task
//! (the *applier*, [`apply`]), which applies them to the [`StateMachine`], answers the proposals
//! waiting on them and releases linearizable reads once their read index is applied; those that
//! were durable before the persist go ahead of it, so their writers are answered while it runs
//! (on a busy leader, the previous batch, committed during its own fsync). Client
//! requests that arrive while the loop is persisting queue up and join the next `Ready`, so a
//! busy node batches by itself.
//!
//! The node is generic over its [`LogStore`], [`Transport`] and [`StateMachine`], so the same
//! code runs in production (WAL on disk, TCP) and in simulation (WAL on the simulated disk,
//! turmoil's network). It reads no clock except through tokio's timers, which turmoil drives.

pub mod apply;
pub mod driver;
pub mod identity;
pub mod mem_snapshots;
pub mod metrics;
pub mod names;
pub mod snapshot_files;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::{
    self, ConfChange, Configuration, LogIndex, Message, NodeId, Role, SnapshotMetadata, Term,
};

pub use identity::ClusterId;
pub use mem_snapshots::MemSnapshotFiles;
pub use snapshot_files::{
    BoxError, Offload, Restorer, SnapshotFiles, SnapshotFilesError, SnapshotSink, SnapshotView,
};
pub use store::{DeferredSync, DurableState, LogStore, NoSpace, StoreError, SyncDone, WalLogStore};

/// Capacity of the queue of events into the loop (messages and client requests). A full queue
/// makes callers wait, which is the node's back-pressure.
pub const EVENT_QUEUE_MAX: usize = 8192;
/// The longest [`Node::shutdown`] waits for the loop to end (it finishes the `Ready` in hand,
/// an fsync or two, and saves its commit index).
pub const SHUTDOWN_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);
/// Capacity of the queue from the loop to the applier.
pub const APPLY_QUEUE_MAX: usize = 1024;
/// The default for [`NodeConfig::events_per_ready_max`]: enough for 64 clients' requests and
/// their peers' answers to share one fsync, small enough that one burst adds little latency.
pub const EVENTS_PER_READY_MAX_DEFAULT: usize = 1024;
/// The default log share that calls for a snapshot, in percent of the last snapshot's size
/// ([`NodeConfig::snapshot_log_share`] is this over 100): a snapshot once the new log reaches a
/// quarter of the last one's size, so at most about a quarter of the state is replayed at a
/// restart, and a write costs about four bytes of snapshot writing per byte of log.
pub const SNAPSHOT_LOG_PERCENT_DEFAULT: u32 = 25;

/// The application's replicated state machine, as the node drives it.
pub trait StateMachine: Send + 'static {
    /// What applying a command answers, handed to the proposer.
    type Output: Send + 'static;
    /// A consistent copy of the whole state at the applied index, for a snapshot: cheap to
    /// take (it is taken under the apply lock) and written out while applying goes on.
    type View: SnapshotView;
    /// A state read back from a snapshot by [`StateMachine::restorer`], ready to install.
    type Restored: Send + 'static;

    /// Applies the committed command at `index`.
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Self::Output;

    /// Notes an applied entry that carries no command (a leader's no-op).
    fn apply_empty(&mut self, index: LogIndex);

    /// Notes an applied membership change: `configuration` is the membership in force after
    /// the entry at `index` (a change the core skipped as invalid leaves it as it was). A
    /// state machine that keeps cluster records (who was removed, and when) keeps them here;
    /// the default only notes the index.
    fn apply_conf_change(&mut self, index: LogIndex, configuration: &Configuration) {
        let _ = configuration;
        self.apply_empty(index);
    }

    /// The state as of the last applied index, for the snapshot described by `metadata`
    /// (whose index is the applied index and whose term is that entry's).
    fn view(&self, metadata: &SnapshotMetadata) -> Self::View;

    /// What reads a snapshot's data into a state to install. It runs on a blocking thread,
    /// without the apply lock, and must check everything it reads (the data may come from a
    /// peer).
    fn restorer(&self) -> Restorer<Self::Restored>;

    /// Replaces the whole state with one read by [`StateMachine::restorer`] from the snapshot
    /// at `metadata`.
    fn install(&mut self, metadata: &SnapshotMetadata, restored: Self::Restored);
}

/// Sends messages to peers. Sending never blocks the loop: a transport queues (bounded) and
/// drops what it cannot deliver; Raft retries.
pub trait Transport: Send + Sync + 'static {
    /// Queues `message` for its recipient.
    fn send(&self, message: Message);
}

/// How the node runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The core's settings (id, election and heartbeat ticks, limits, seed).
    pub raft: core::Config,
    /// The length of one tick.
    pub tick: Duration,
    /// The fewest entries applied between two automatic snapshots (0: snapshots only on
    /// demand): `storage.snapshot_every`.
    pub snapshot_every: u64,
    /// An automatic snapshot also waits until the entries applied since the last one add up to
    /// this share of the last snapshot's size in bytes (`storage.snapshot_log_share`): the
    /// snapshot's cost per write then stays the same however large the state grows, where a
    /// fixed entry count makes it grow with the state.
    pub snapshot_log_share: f64,
    /// The most events (messages, proposals, reads) the loop takes into one `Ready`, and so
    /// the most proposals that share one WAL fsync (`raft.batch_size`).
    pub events_per_ready_max: usize,
    /// How long the loop keeps gathering events once the first has arrived before it hands
    /// the batch to storage (`raft.batch_wait`; zero: batches fill while the previous
    /// fsync runs).
    pub batch_wait: Duration,
}

/// Why a request to the node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// This node does not lead; `leader_hint` may.
    #[error("not the leader (leader: {})", names::of_opt(*leader_hint))]
    NotLeader {
        /// The leader this node knows of.
        leader_hint: Option<NodeId>,
    },
    /// The proposal was overwritten by a new leader's log: it was not applied and never will be.
    #[error("the proposal was dropped by a change of leader and was not applied")]
    Dropped,
    /// The proposal's outcome cannot be known here any more (the node installed a snapshot
    /// that covers it): it may or may not have been applied.
    #[error("the outcome of the proposal is unknown (covered by a snapshot)")]
    Unknown,
    /// The core refused the request as it stands (a transfer to a learner, an invalid
    /// membership change, a proposal over the size limit, a snapshot no newer than the
    /// current one, ...): the typed reason, so that a caller answers each as what it is.
    #[error("{0}")]
    Rejected(core::Error),
    /// A snapshot was asked for before anything was applied: there is nothing to keep.
    #[error("nothing has been applied yet, so there is nothing to snapshot")]
    NothingToSnapshot,
    /// Storage failed while serving the request (a snapshot could not be kept, or the log
    /// not compacted behind it). The typed cause is logged where it happened; a reply carries
    /// its message, since one outcome answers every request waiting on it (`NodeError` is
    /// `Clone`, a disk error is not).
    #[error("storage failed: {0}")]
    Storage(String),
    /// A membership change is already in flight.
    #[error("a configuration change is in progress")]
    ConfChangeInProgress,
    /// The node has stopped (shut down or failed).
    #[error("the node has stopped")]
    Stopped,
    /// The disk is (nearly) full: the proposal was refused before it entered the log. Nothing
    /// was written; the node takes writes again by itself once space is freed.
    #[error("no space for new writes: {0}")]
    NoSpace(NoSpace),
}

impl NodeError {
    fn from_core(e: core::Error) -> NodeError {
        match e {
            core::Error::NotLeader { leader_hint } => NodeError::NotLeader { leader_hint },
            core::Error::ConfChangeInProgress { .. } => NodeError::ConfChangeInProgress,
            other => NodeError::Rejected(other),
        }
    }
}

/// How the node's storage stands, as its status reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StorageHealth {
    /// Writing works.
    #[default]
    Ok,
    /// The disk is (nearly) full: a leader refuses proposals ([`NodeError::NoSpace`]), and a
    /// write already in hand waits for space. Reads go on; this clears by itself once space
    /// is freed.
    NoSpace(NoSpace),
    /// Writing failed for good (an fsync or I/O error): the node stopped, and
    /// [`Status::failed`] says why.
    Failed,
}

/// What the node looks like right now, published by the loop after every `Ready`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role (`None` before the loop first ran).
    pub role: Option<Role>,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its current term.
    pub term: Term,
    /// Its commit index.
    pub commit: LogIndex,
    /// The index the state machine has applied.
    pub applied: LogIndex,
    /// Its last log index.
    pub last_index: LogIndex,
    /// The membership it follows.
    pub configuration: Configuration,
    /// On a leader: each member's match index.
    pub match_index: Vec<(NodeId, LogIndex)>,
    /// The latest snapshot's metadata.
    pub snapshot: SnapshotMetadata,
    /// Set when the node stopped because of a failure.
    pub failed: Option<String>,
    /// Whether the node can write to its storage.
    pub storage: StorageHealth,
    /// Set when a peer told this node that it was removed from the cluster by the membership
    /// change at this index: the node no longer campaigns (see [`Node::removed`]).
    pub removed: Option<LogIndex>,
    /// Set when this node witnessed a peer breaking Raft's rules (a leader that lacks a
    /// committed entry): the node refused it and keeps its log, but the cluster needs an
    /// operator. Never set in a correct cluster.
    pub alarm: Option<String>,
}

/// Who sent a peer's message, as far as the transport can tell: it decides how far the
/// message may move this node's term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sender {
    /// A member of this node's configuration, or a joiner it expects.
    Known,
    /// Anyone else, served only while this node knows no leader (see
    /// [`Raft::step_from_stranger`](crate::core::Raft::step_from_stranger)).
    Stranger,
}

/// A request into the loop.
pub(crate) enum Event<O> {
    Step(Message, Sender),
    Propose(Bytes, oneshot::Sender<Result<O, NodeError>>),
    ConfChange(ConfChange, oneshot::Sender<Result<LogIndex, NodeError>>),
    ReadIndex(oneshot::Sender<Result<LogIndex, NodeError>>),
    Transfer(NodeId, oneshot::Sender<Result<(), NodeError>>),
    Campaign,
    /// The transport's connection from this peer ended.
    PeerLost(NodeId),
    /// Peer `by` refused this node: it applied the change at `at` that removed it.
    Removed {
        by: NodeId,
        at: LogIndex,
    },
    ReportSnapshot(NodeId, bool),
    SnapshotNow(oneshot::Sender<Result<SnapshotMetadata, NodeError>>),
    /// From the snapshot writer: the node's own snapshot at this metadata is durable (or
    /// failed to be written), answering these requests.
    SnapshotWritten(
        SnapshotMetadata,
        Result<u64, std::sync::Arc<SnapshotFilesError>>,
        Vec<oneshot::Sender<Result<SnapshotMetadata, NodeError>>>,
    ),
    /// From the applier: it cannot go on (a kept snapshot could not be read back), so the
    /// node stops rather than acknowledge entries it will never apply.
    ApplierFailed(String),
    Shutdown,
}

/// A handle on a running node; cheap to clone.
pub struct Node<O> {
    events: mpsc::Sender<Event<O>>,
    status: watch::Receiver<Status>,
    applied: Arc<AtomicU64>,
    metrics: Arc<metrics::NodeMetrics>,
}

impl<O> Clone for Node<O> {
    fn clone(&self) -> Self {
        Node {
            events: self.events.clone(),
            status: self.status.clone(),
            applied: Arc::clone(&self.applied),
            metrics: Arc::clone(&self.metrics),
        }
    }
}

impl<O: Send + 'static> Node<O> {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, NodeError>>) -> Event<O>,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.events
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Proposes a command; returns the state machine's answer once it is applied here.
    pub async fn propose(&self, command: Bytes) -> Result<O, NodeError> {
        self.ask(|tx| Event::Propose(command, tx)).await
    }

    /// What the node counts for its operators (see [`metrics`]).
    pub fn metrics(&self) -> metrics::NodeMetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Proposes a membership change; returns its index once it is applied here.
    pub async fn change_membership(&self, change: ConfChange) -> Result<LogIndex, NodeError> {
        self.ask(|tx| Event::ConfChange(change, tx)).await
    }

    /// Waits until a linearizable read may be served from this node's state machine: the
    /// leader has confirmed its leadership for a read index and this node has applied it.
    /// Returns the read index.
    pub async fn read_index(&self) -> Result<LogIndex, NodeError> {
        self.ask(Event::ReadIndex).await
    }

    /// Starts handing leadership to `to` (returns at once; watch [`Node::status`]).
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), NodeError> {
        self.ask(|tx| Event::Transfer(to, tx)).await
    }

    /// Takes a snapshot now and compacts the log; returns its metadata.
    pub async fn snapshot_now(&self) -> Result<SnapshotMetadata, NodeError> {
        self.ask(Event::SnapshotNow).await
    }

    /// Hands the node a message from a peer (the transport's inbound side): a member of its
    /// configuration, or a joiner it expects.
    pub async fn step(&self, message: Message) -> Result<(), NodeError> {
        self.events
            .send(Event::Step(message, Sender::Known))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Hands the node a message from a stranger: a peer its configuration does not have, nor
    /// a joiner it expects, served only because the node knows no leader. Such a message may
    /// raise the node's term only a little, and only while it follows no leader (see
    /// [`Raft::step_from_stranger`](crate::core::Raft::step_from_stranger)).
    pub async fn step_from_stranger(&self, message: Message) -> Result<(), NodeError> {
        self.events
            .send(Event::Step(message, Sender::Stranger))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Tells the node that the connection on which `peer` sent it messages ended (the
    /// transport's inbound side). If `peer` is the leader this node follows, the node stops
    /// waiting a whole election timeout for its heartbeats: a leader process that died closed
    /// its connections at once, so the silence that follows is no longer to be sat out in
    /// full. See [`driver`] for what exactly is shortened and why it stays safe.
    ///
    /// Never waits: with the event queue full the news is dropped, and the follower waits out
    /// its election timeout as it would have anyway.
    pub fn peer_lost(&self, peer: NodeId) {
        let _ = self.events.try_send(Event::PeerLost(peer));
    }

    /// Tells the node that peer `by` refused its connection because it applied the membership
    /// change at index `at`, which removed this node (the transport's outbound side). Unless
    /// this node leads, or its own log already holds a later configuration that includes it
    /// (it was added back), it stops campaigning: a removed node's elections can never succeed
    /// and would only disturb its former peers. It keeps answering leaders, so a node that was
    /// added back catches up and takes part again. Never waits (see [`Node::peer_lost`]).
    pub fn removed(&self, by: NodeId, at: LogIndex) {
        let _ = self.events.try_send(Event::Removed { by, at });
    }

    /// Tells the node whether a snapshot it sent to `to` arrived.
    pub async fn report_snapshot(&self, to: NodeId, delivered: bool) {
        let _ = self.events.send(Event::ReportSnapshot(to, delivered)).await;
    }

    /// Asks the node to start an election now (tests, and a lone voter's fast start).
    pub async fn campaign(&self) {
        let _ = self.events.send(Event::Campaign).await;
    }

    /// The latest published status, with the applied index as of now.
    pub fn status(&self) -> Status {
        let mut status = self.status.borrow().clone();
        status.applied = self.applied();
        status
    }

    /// Reads the latest published status in place, without cloning it (hot paths: a check
    /// on every request). The applied index in it may lag [`Node::applied`].
    pub fn with_status<R>(&self, read: impl FnOnce(&Status) -> R) -> R {
        read(&self.status.borrow())
    }

    /// The index the state machine has applied, as of now.
    pub fn applied(&self) -> LogIndex {
        LogIndex(self.applied.load(Ordering::Acquire))
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Stops the loop after the `Ready` in hand (everything acknowledged stays durable), and
    /// waits (at most [`SHUTDOWN_WAIT_MAX`]) until it has stopped, having saved its commit
    /// index: a process that returned at once could end before the loop ran its last step, and
    /// restart with a commit index older than the entries it had applied.
    pub async fn shutdown(&self) {
        let _ = self.events.send(Event::Shutdown).await;
        // The loop and its supervisor hold the only senders of the status: once both are
        // gone, the loop has ended.
        let mut status = self.status.clone();
        let _ = tokio::time::timeout(SHUTDOWN_WAIT_MAX, async {
            while status.changed().await.is_ok() {}
        })
        .await;
    }
}

pub use driver::spawn;
