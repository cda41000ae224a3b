//! The `X-Raftkv-*` headers of the REST API, lower-case as HTTP/2 and `hyper` carry them.
//! Every header the API defines starts with [`PREFIX`]; the server refuses one it does not
//! take on a route (docs/api.md, "Strict requests").

/// A request's id, on a request (the client's, kept when it is 1 to
/// [`REQUEST_ID_BYTES_MAX`] visible ASCII characters) and on every answer (the one the server
/// used, made when the request had none). gRPC carries it as metadata of the same name. Not an
/// `x-raftkv-` header: proxies and tracing tools already know this one.
pub const REQUEST_ID: &str = "x-request-id";
/// The longest request id taken from a client; a longer one is replaced by the server's own.
pub const REQUEST_ID_BYTES_MAX: usize = 128;
/// What every RaftKV header name starts with.
pub const PREFIX: &str = "x-raftkv-";
/// Set by the nodes on a forwarded request: how many times it was forwarded (1 to 3).
pub const FORWARDED: &str = "x-raftkv-forwarded";
/// `1`: a follower answers `307` with the leader's URL instead of forwarding.
pub const NO_FORWARD: &str = "x-raftkv-no-forward";
/// An exactly-once session's id (from `POST /sessions`).
pub const CLIENT_ID: &str = "x-raftkv-client-id";
/// The write's sequence number within its session.
pub const SEQUENCE: &str = "x-raftkv-sequence";
/// On a stale read: the highest log index the node had applied.
pub const APPLIED_INDEX: &str = "x-raftkv-applied-index";
/// On a stale read: the highest commit index the node knew of.
pub const COMMIT_INDEX: &str = "x-raftkv-commit-index";
/// On a raw `GET /keys/{key}`: the revision of the write that created the key.
pub const CREATE_REVISION: &str = "x-raftkv-create-revision";
/// On a raw `GET /keys/{key}`: the revision of the key's latest write.
pub const MOD_REVISION: &str = "x-raftkv-mod-revision";
/// On a raw `GET /keys/{key}`: how many times the key was written since it was created.
pub const VERSION: &str = "x-raftkv-version";
/// On a raw `GET /keys/{key}`: the store's revision when the read was served.
pub const REVISION: &str = "x-raftkv-revision";
