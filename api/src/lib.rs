//! RaftKV's server crate: the node's configuration ([`config`]), the wiring of the WAL, the
//! Raft node, the transport and the state machine ([`server`]), the HTTP API ([`http`]), and
//! the `raftkv` binary (`src/bin/raftkv.rs`).

pub mod config;
pub mod http;
pub mod server;
