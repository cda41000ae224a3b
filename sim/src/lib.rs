//! RaftKV's verification crate.
//!
//! - [`lincheck`]: the linearizability checker. It reads histories of client operations on a
//!   key-value store and decides whether some total order of them, consistent with real time,
//!   obeys the store's sequential specification.
//! - [`cluster`]: deterministic simulations of whole clusters (the real node code on turmoil's
//!   network and the WAL's simulated disk) whose histories the checker judges.
//! - [`jepsen`]: Jepsen-style runs against real `raftkv` processes on loopback.

#![warn(missing_docs)]

pub mod cluster;
pub mod jepsen;
pub mod lincheck;

pub use lincheck::{
    Analysis, Call, CheckOptions, CheckReport, Event, EventKind, Format, History, KvModel, Model,
    ModelSpec, MultiRegisterModel, Operation, Outcome, Output, RegisterModel, Verdict,
};
