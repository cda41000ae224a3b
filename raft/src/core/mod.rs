//! The pure Raft core.

pub mod confchange;
pub mod config;
pub mod errors;
pub mod membership;
pub mod message;
pub mod progress;
pub mod quorum;
pub mod rng;
pub mod storage;
pub mod types;
