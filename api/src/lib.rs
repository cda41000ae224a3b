//! RaftKV's server crate: the node's configuration today; the HTTP API and the `raftkv` binary
//! join it as the server is built.

pub mod config;
