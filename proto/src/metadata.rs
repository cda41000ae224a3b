//! The gRPC metadata keys of `raftkv.v1` (lower case, as gRPC requires). The forwarding keys
//! are the REST API's header names, so one rule reads both.

pub use super::rest::headers::{FORWARDED, NO_FORWARD};

/// On an `UNAVAILABLE` `not_leader` answer: the leader's id.
pub const LEADER: &str = "x-raftkv-leader";
/// On an `UNAVAILABLE` `not_leader` answer: the leader's gRPC address (absent when its record
/// predates gRPC).
pub const LEADER_GRPC: &str = "x-raftkv-leader-grpc";
/// On an `UNAVAILABLE` `not_leader` answer: the leader's HTTP address.
pub const LEADER_HTTP: &str = "x-raftkv-leader-http";
/// The domain of the `google.rpc.ErrorInfo` in every error's details, whose `reason` is the
/// REST API's error code (`cas_failed`, `not_leader`, ...) and whose metadata holds the REST
/// body's extra field (`current_version`, `leader`, ...) as text.
pub const ERROR_DOMAIN: &str = "raftkv.io";
/// The `ErrorInfo` metadata fields whose text is JSON (a number or an object in the REST
/// body); every other field's text is the REST body's string as it is.
pub const JSON_FIELDS: [&str; 2] = ["current_version", "quota"];
