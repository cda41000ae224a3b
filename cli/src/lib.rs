//! RaftKV's client library (the Rust SDK) and the pieces of the `kvcli` tool.
//!
//! Job: talk to a RaftKV cluster over either of its APIs (docs/api.md), REST (`http://`
//! endpoints) or gRPC (`grpc://` endpoints), with the same methods, retries and errors — keys,
//! exactly-once sessions, membership, snapshots, health — and drive load against it.
//!
//! - [`client`]: [`Client`], leader discovery, failover and retries; [`Session`] for
//!   exactly-once writes.
//! - [`error`]: [`Error`], one variant per kind of failure, each a one-line message.
//! - [`types`]: the answers ([`KeyValue`], [`PutResult`], ...) and [`ClientOptions`].
//! - [`encoding`]: percent-encoding of keys and base64 of non-UTF-8 JSON fields.
//! - [`bench`]: the load generator behind `kvcli bench`, with its latency histogram.
//! - [`command`]: the `kvcli` command line: arguments, output and exit codes.
//! - [`backup_file`]: `kvcli backup save`, a backup saved whole or not at all.
//!
//! Invariants held across the crate: keys and values are bytes end to end (never assumed
//! UTF-8); no server answer, however malformed, causes a panic; every limit is a named
//! constant.
//!
//! ```no_run
//! # async fn demo() -> cli::Result<()> {
//! use cli::{Client, Consistency, Precondition};
//!
//! // "grpc://127.0.0.1:9091" and so on for the gRPC API: the calls below are the same.
//! let client = Client::new(["http://127.0.0.1:8081", "http://127.0.0.1:8082"])?;
//! let mut session = client.register_session().await?;
//! let put = session.put("greeting", "hello").await?;
//! session.put_if("greeting", "hi", Precondition::Version(put.version)).await?;
//! let kv = client.get("greeting", Consistency::Linearizable).await?;
//! assert_eq!(&kv.value[..], b"hi");
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod backup_file;
pub mod bench;
pub mod client;
pub mod command;
/// The byte encodings of the REST API (the contract's, `proto::rest::encoding`).
pub use proto::rest::encoding;
pub mod error;
pub mod types;

pub use client::{Client, Session};
pub use error::{EndpointFailure, Error, Result};
pub use types::{
    ClientOptions, ClientTls, Consistency, Credential, DeleteResult, JoinResult, KeyValue,
    LeaderInfo, ListResult, NodeId, NodeInfo, Precondition, PutResult, Readiness, RemoveResult,
    Routing, SnapshotInfo, StaleInfo, TransferResult,
};
