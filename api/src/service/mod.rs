//! The handlers both APIs share, below the protocol layer: what a request means once decoded,
//! whatever carried it. The REST layer ([`crate::http`]) and the gRPC layer ([`crate::grpc`])
//! decode their requests into these calls' typed arguments and encode the typed answers and
//! [`ApiError`]s back; every rule that is not about bytes on the wire lives here once: key and
//! value limits, the space quota, sessions, consistency, which node serves a request and when
//! a follower forwards it ([`route`]), and how node errors become the codes docs/api.md lists.
//!
//! One job per file: `error` (the error type and its codes), [`route`] (leader and
//! forwarding), [`keys`], [`cluster`], [`auth`] and [`backup`] (the operations).

pub mod auth;
pub mod backup;
pub mod cluster;
mod error;
pub mod keys;
pub mod route;

pub use error::{ApiError, within};
pub use route::{Forward, Step, Via};

use std::time::Duration;

/// How long a request may wait for a leader, a commit or a read index before it is answered
/// `no_leader` (503 / `UNAVAILABLE`) or `timeout` (504 / `DEADLINE_EXCEEDED`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The `expect` message of every lock of the state machine: it is poisoned only if apply
/// panicked, after which the node has stopped anyway.
pub const MACHINE_LOCK: &str = "the state machine lock is poisoned only if apply panicked";
