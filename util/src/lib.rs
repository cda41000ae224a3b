//! Small building blocks that several RaftKV crates need and none of them owns.
//!
//! Why a crate of its own: the users sit on every floor of the dependency graph. The pure Raft
//! core (which must build without tokio or the WAL) draws election jitter from [`SplitMix64`];
//! the WAL's simulated disk draws crash schedules from it, below the core; the server's
//! configuration, the `kvcli` client (which depends on no other RaftKV crate) and the
//! verification binaries all read [`duration`]s written by people; the real-process tests and the
//! Jepsen-style runs both pick loopback [`ports`]. No existing crate is below
//! all of them, so each kept its own copy, and the copies had already drifted apart. This crate
//! depends on nothing of the workspace, so that any crate may use it.
//!
//! Invariant: what these helpers compute never changes between versions. Simulation seeds
//! recorded in docs and tests replay only as long as [`SplitMix64`] draws the same numbers, and
//! configuration files mean what they meant only as long as [`duration`] reads them the same.

pub mod duration;
pub mod ports;
pub mod splitmix;

pub use duration::{
    BareNumber, DurationError, format_duration, parse_duration, parse_flag_duration,
};
pub use ports::PortRange;
pub use splitmix::SplitMix64;
