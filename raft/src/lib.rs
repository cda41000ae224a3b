//! RaftKV's consensus crate. `core` is the pure Raft state machine: no I/O, no clock, no
//! async, no OS randomness. The async driver and transport come later behind the `runtime`
//! feature.
#![deny(missing_docs)]

pub mod core;

#[cfg(feature = "node")]
pub mod node;
#[cfg(feature = "node")]
pub mod transport;
