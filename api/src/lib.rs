//! RaftKV's server crate: the node's configuration ([`config`]), the wiring of the WAL, the
//! Raft node, the transport and the state machine ([`server`]), the handlers both APIs share
//! ([`service`]), the HTTP API ([`http`]), the gRPC API ([`grpc`]), Prometheus metrics
//! ([`metrics`]), log lines ([`logging`]) with request ids ([`request_id`]), restoring a backup
//! into a new node's data directory ([`restore`]), and the `raftkv` binary (`src/bin/raftkv.rs`).

pub mod auth;
pub mod config;
pub mod grpc;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod ratelimit;
pub mod repoll;
pub mod request_id;
pub mod restore;
pub mod server;
pub mod service;
pub mod tls;
