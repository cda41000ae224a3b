//! The REST API's contract (docs/api.md): answer bodies ([`types`]), error codes with their
//! HTTP and gRPC statuses ([`codes`]), header names ([`headers`]) and byte encodings
//! ([`encoding`]), the `/auth` routes' bodies ([`auth`]), and the backup's headers ([`backup`]).

pub mod auth;
pub mod backup;
pub mod codes;
pub mod encoding;
pub mod headers;
pub mod types;

pub use codes::{ErrorCode, GrpcCode};

/// The number of keys a page of `GET /keys` holds when the request gives no `limit` (the SDK
/// asks a gRPC listing for as many).
pub const LIST_LIMIT_DEFAULT: usize = 100;
pub use types::*;
