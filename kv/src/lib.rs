//! RaftKV's replicated state machine (the `kv` crate).
//!
//! Job: turn a sequence of committed Raft log entries into the key-value state users read.
//! The crate is pure and deterministic: no clock, no OS randomness, no async, no dependency
//! on the `raft` crate. Every replica that applies the same entries at the same indexes ends
//! in the same state, byte for byte, which is what lets the same code run in the server and
//! under simulation.
//!
//! - [`limits`]: key and value size limits and the validation the API layer runs before
//!   proposing (the same checks run again at apply).

pub mod limits;

pub use limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX, ValidationError, validate_key, validate_value};
