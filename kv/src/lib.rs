//! RaftKV's replicated state machine (the `kv` crate).
//!
//! Job: turn a sequence of committed Raft log entries into the key-value state users read.
//! The crate is pure and deterministic: no clock, no OS randomness, no async, no dependency
//! on the `raft` crate. Every replica that applies the same entries at the same indexes ends
//! in the same state, which is what lets the same code run in the server and under
//! simulation. The only I/O is in [`SnapshotStore`], which the state machine never calls.
//!
//! - [`limits`]: key and value size limits and the validation the API layer runs before
//!   proposing (the same checks run again at apply).
//! - [`command`]: [`Command`] (put, delete, delete-prefix, compare-and-swap, session
//!   registration, no-op), its versioned encoding, and the [`Response`] of apply.
//! - [`store`]: [`KvStore`], the ordered map with etcd-style revisions; `apply`, reads and
//!   `check_invariants`.
//! - [`tree`]: [`Tree`], the persistent B+tree under the store's map (O(1) clones).
//! - [`session`]: the bounded, deterministic client-session table for exactly-once writes.
//! - [`view`]: [`KvView`], an O(1) point-in-time view of the state that a snapshot is written
//!   from while the store goes on applying.
//! - [`snapshot`]: the checksummed snapshot formats (streamed: [`KvView::write_snapshot`],
//!   [`read_snapshot`]) and [`SnapshotStore`], the directory of the newest [`SNAPSHOTS_KEPT`]
//!   snapshot files.
//!
//! Typical use by the node driver:
//!
//! ```
//! use kv::{Command, KvConfig, KvStore, Outcome};
//!
//! let mut store = KvStore::new(KvConfig::default());
//! let entry = Command::put("greeting", "hello").encode(); // proposed through Raft
//! let response = store.apply(1, &entry); // once committed, at log index 1
//! assert_eq!(response, Ok(Outcome::Put { revision: 1, prev: None }));
//! assert_eq!(store.get(b"greeting").map(|kv| kv.version), Some(1));
//! ```

#![warn(missing_docs)]

pub mod command;
pub mod limits;
pub mod session;
pub mod snapshot;
pub mod store;
pub mod tree;
pub mod view;

pub use command::{
    ApplyError, COMMAND_BYTES_MAX, COMMAND_FORMAT_VERSION, CasAction, Command, Compare,
    DecodeError, KeyValue, Outcome, Response, SESSION_NUMBER_MAX, SESSION_NUMBER_MIN, Session,
    Write, WriteOp, decode,
};
pub use limits::{
    KEY_BYTES_MAX, VALUE_BYTES_MAX, ValidationError, validate_key, validate_prefix, validate_value,
};
pub use session::{
    SESSION_IDLE_INDEXES_DEFAULT, SESSIONS_MAX_DEFAULT, SessionConfig, SessionRecord, SessionTable,
};
pub use snapshot::{
    CorruptSnapshot, Loaded, Receiving, SNAPSHOT_FORMAT_VERSION, SNAPSHOT_FORMAT_VERSION_MIN,
    SNAPSHOT_SYNC_BYTES, SNAPSHOTS_KEPT, Snapshot, SnapshotError, SnapshotFile, SnapshotMeta,
    SnapshotReadError, SnapshotStore, SnapshotSummary, read_meta, read_snapshot, verify_snapshot,
    verify_snapshot_summary,
};
pub use store::{InvariantError, KV_OVERHEAD_BYTES, KvConfig, KvStore, RANGE_LIMIT_MAX, Range};
pub use tree::{Keyed, NodeAt, NotSorted, Tree, TreeInvariantError};
pub use view::KvView;
