//! The REST API's contract (docs/api.md): answer bodies ([`types`]), error codes with their
//! HTTP and gRPC statuses ([`codes`]), header names ([`headers`]) and byte encodings
//! ([`encoding`]).

pub mod codes;
pub mod encoding;
pub mod headers;
pub mod types;

pub use codes::{ErrorCode, GrpcCode};
pub use types::*;
