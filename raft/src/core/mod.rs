//! The pure Raft core: a deterministic state machine per node, driven by
//! [`Raft::step`], [`Raft::tick`] and the proposal calls, whose only output is a [`Ready`].
//! No I/O, no clock, no async, no OS randomness.
//!
//! Modules, one job each:
//! - `types`, `message`, `membership`: the vocabulary (terms, indexes, entries, messages,
//!   configurations);
//! - `config`, `errors`, `rng`: settings with their limits, typed errors, seeded jitter;
//! - `storage`, `log`: the durable log as read by the core, plus the unstable tail;
//! - `quorum`, `confchange`, `conf_log`, `progress`: majorities, joint consensus, the
//!   configuration history, and per-follower replication state;
//! - `raft`: node state, role transitions and the dispatcher;
//! - `election`, `replication`, `commit`, `read_index`, `transfer`, `snapshot`: the rules;
//! - `ready`: the output and its persistence contract.

pub mod commit;
pub mod conf_log;
pub mod confchange;
pub mod config;
pub mod election;
pub mod errors;
pub mod log;
pub mod membership;
pub mod message;
pub mod progress;
pub mod quorum;
pub mod raft;
pub mod read_index;
pub mod ready;
pub mod replication;
pub mod rng;
pub mod snapshot;
pub mod storage;
pub mod transfer;
pub mod types;

pub use config::Config;
pub use errors::{ConfigError, Error, StorageError};
pub use membership::{ConfChange, ConfChangeKind, ConfChangeSingle, Configuration};
pub use message::{
    Entry, EntryPayload, HardState, Message, MessageBody, Snapshot, SnapshotMetadata,
};
pub use raft::{EntryId, Raft, Role, SoftState};
pub use read_index::ReadState;
pub use ready::Ready;
pub use storage::{InitialState, MemStorage, Storage};
pub use types::{LogIndex, NodeId, Term};
