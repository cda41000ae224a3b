//! The pure Raft core: a deterministic state machine per node, driven by
//! [`Raft::step`], [`Raft::tick`] and the proposal calls, whose only output is a [`Ready`].
//! No I/O, no clock, no async, no OS randomness.
//!
//! Modules, one job each:
//! - `types`, `message`, `membership`: the vocabulary (terms, indexes, entries, messages,
//!   configurations);
//! - `config`, `errors`, `invariant`: settings with their limits, typed errors (and the
//!   broken-invariant one every `check_invariants` returns); the seeded jitter comes from
//!   `util::SplitMix64`;
//! - `fault` (feature `fault-injection` only): the safety rules a simulation may break;
//! - `checks`: what every peer message must satisfy before the rules see it;
//! - `storage`, `log`: the durable log as read by the core, plus the unstable tail
//!   (`storage_conformance`, test-only: the scenarios every `Storage` must pass);
//! - `quorum`, `confchange`, `conf_log`, `progress`: majorities, joint consensus, the
//!   configuration history, and per-follower replication state;
//! - `raft`: node state, role transitions and the dispatcher;
//! - `election`, `replication`, `commit`, `read_index`, `transfer`, `snapshot`: the rules;
//! - `ready`: the output and its persistence contract.
//!
//! The driver loop, on a single-voter cluster (see `ready` for the contract and
//! `docs/raft.md` for the walkthrough from the paper to the code):
//!
//! ```
//! use bytes::Bytes;
//! use raft::core::{Config, Configuration, MemStorage, NodeId, Raft, Role};
//!
//! let storage = MemStorage::new_with_configuration(Configuration::with_voters([NodeId(1)]));
//! let mut node = Raft::new(Config::new(NodeId(1)), storage).expect("valid config");
//! node.campaign_now(); // A single voter is its own majority: it leads at once.
//! assert_eq!(node.role(), Role::Leader);
//! let hello = node.propose(Bytes::from_static(b"hello")).expect("the leader accepts");
//!
//! let mut applied = Vec::new();
//! while node.has_ready() {
//!     let rd = node.ready();
//!     // 1. Send `rd.messages` (none here), in parallel with 2. persisting:
//!     let storage = node.storage_mut();
//!     if let Some(snapshot) = &rd.snapshot {
//!         storage.apply_snapshot(snapshot.clone());
//!     }
//!     storage.append(&rd.entries);
//!     if let Some(hard_state) = &rd.hard_state {
//!         storage.set_hard_state(hard_state.clone());
//!     }
//!     // 3. Only now send `rd.persisted_messages`. 4. Apply:
//!     applied.extend(rd.committed_entries.iter().map(|e| e.index));
//!     // 5. Tell the core.
//!     node.advance(rd);
//! }
//! assert!(applied.contains(&hello.index));
//! ```

pub mod checks;
pub mod commit;
pub mod conf_log;
pub mod confchange;
pub mod config;
pub mod election;
pub mod errors;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod invariant;
pub mod log;
pub mod membership;
pub mod message;
pub mod progress;
pub mod quorum;
pub mod raft;
pub mod read_index;
pub mod ready;
pub mod replication;
pub mod snapshot;
pub mod storage;
#[cfg(test)]
pub(crate) mod storage_conformance;
pub mod transfer;
pub mod types;

pub use config::Config;
pub use errors::{ConfigError, Error, StorageError};
#[cfg(feature = "fault-injection")]
pub use fault::BrokenRule;
pub use invariant::InvariantError;
pub use membership::{ConfChange, ConfChangeKind, ConfChangeSingle, Configuration};
pub use message::{
    Entry, EntryPayload, HardState, Message, MessageBody, Snapshot, SnapshotMetadata,
};
pub use raft::{EntryId, Raft, Role, STRANGER_TERM_JUMP_MAX, SoftState, TERM_JUMP_MAX};
pub use read_index::ReadState;
pub use ready::Ready;
pub use storage::{InitialState, MemStorage, Storage};
pub use types::{LOG_INDEX_MAX, LogIndex, NodeId, TERM_MAX, Term};
