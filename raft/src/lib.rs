//! RaftKV's consensus crate.
//!
//! - [`core`]: the pure Raft state machine: no I/O, no clock, no async, no OS randomness.
//! - `node` (feature `runtime`, on by default): the tokio driver that runs the core against a
//!   log store, a transport and a state machine.
//! - `transport` (feature `runtime`): the peer wire format and the TCP transport.
//!
//! `cargo build -p raft --no-default-features` builds the core alone, without tokio.
#![deny(missing_docs)]

pub mod core;

#[cfg(feature = "runtime")]
pub mod node;
#[cfg(feature = "runtime")]
pub mod transport;
