//! RaftKV's verification crate.
//!
//! Today it holds the linearizability checker ([`lincheck`]): it reads histories of client
//! operations on a key-value store and decides whether some total order of them, consistent with
//! real time, obeys the store's sequential specification. The simulations and Jepsen-style runs
//! that produce such histories will live beside it.

#![warn(missing_docs)]

pub mod jepsen;
pub mod lincheck;

pub use lincheck::{
    Analysis, Call, CheckOptions, CheckReport, Event, EventKind, Format, History, KvModel, Model,
    ModelSpec, MultiRegisterModel, Operation, Outcome, Output, RegisterModel, Verdict,
};
