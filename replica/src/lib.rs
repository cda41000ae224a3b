//! One replica of RaftKV's replicated state, everything around the Raft node that is not a
//! client protocol: the application state machine (the `kv` store plus the cluster's member
//! records), its snapshot files, how a replica starts from its storage, and the duties it runs
//! beside the node. The server (`api`) puts its HTTP API on top; the simulation (`sim`) runs
//! the same code over a simulated network and disk, so what the simulation proves is about the
//! replica the server runs.
//!
//! - [`auth`]: the access records (users, roles, API keys) and their commands.
//! - [`machine`]: the state machine, its proposals and outputs, snapshot views and restores.
//! - [`snapshots`]: snapshot files on a real disk, streamed and checked whole.
//! - [`boot`]: founding a cluster, restoring at start, the peers' first addresses.
//! - [`duties`]: transport reports, the address book, adding and promoting members.
//! - [`timing`]: the heartbeat interval and election timeout as the core's ticks.
//! - [`launch`]: opening a replica's storage and spawning its node, transport and duties.

pub mod auth;
pub mod boot;
pub mod duties;
pub mod launch;
pub mod machine;
pub mod snapshots;
pub mod timing;
