//! The values the client returns, parsed from the answers docs/api.md specifies.
//!
//! Job: one Rust type per kind of successful answer, with keys and values as raw bytes.
//!
//! Invariants:
//! - keys and values are bytes end to end: JSON answers carry them as `key`/`value` (valid
//!   UTF-8) or `key_base64`/`value_base64` (anything else), and serialising a [`KeyValue`]
//!   back to JSON follows the same rule, so `kvcli --json` output has the server's shape;
//! - a node id is a string; a server that sends a number is accepted and its id kept as the
//!   number's decimal text.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::encoding::{base64_decode, base64_encode};

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Through the leader's read index: sees every write acknowledged before it began.
    #[default]
    Linearizable,
    /// From the answering node's local state at once (`?consistency=stale`); may be behind.
    Stale,
}

/// How far behind a stale read may be, as the answering node reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleInfo {
    /// The highest log index the node had applied.
    pub applied_index: u64,
    /// The highest commit index the node knew of.
    pub commit_index: u64,
}

/// One key with its value and etcd-style revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key's bytes.
    pub key: Bytes,
    /// The value's bytes.
    pub value: Bytes,
    /// The revision of the write that created the key (since its last deletion).
    pub create_revision: u64,
    /// The revision of the key's latest write.
    pub mod_revision: u64,
    /// How many times the key was written since it was created (1 after the first put).
    pub version: u64,
    /// The store's revision when the read was served (0 inside a listing, which carries
    /// its revision in [`ListResult::revision`]).
    pub revision: u64,
    /// Present on stale reads.
    pub stale: Option<StaleInfo>,
}

/// The JSON shape of a key-value in answers: text fields when UTF-8, base64 otherwise.
#[derive(Serialize, Deserialize)]
struct KeyValueWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stale: Option<StaleInfo>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn bytes_from_wire(
    text: Option<String>,
    base64: Option<String>,
    field: &str,
) -> Result<Bytes, String> {
    match (text, base64) {
        (Some(text), None) => Ok(Bytes::from(text)),
        (None, Some(encoded)) => base64_decode(&encoded)
            .map(Bytes::from)
            .ok_or_else(|| format!("{field}_base64 is not valid base64")),
        (Some(_), Some(_)) => Err(format!("both {field} and {field}_base64 are present")),
        (None, None) => Err(format!("neither {field} nor {field}_base64 is present")),
    }
}

fn bytes_to_wire(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(base64_encode(bytes))),
    }
}

impl<'de> Deserialize<'de> for KeyValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = KeyValueWire::deserialize(deserializer)?;
        let key =
            bytes_from_wire(wire.key, wire.key_base64, "key").map_err(serde::de::Error::custom)?;
        let value = bytes_from_wire(wire.value, wire.value_base64, "value")
            .map_err(serde::de::Error::custom)?;
        Ok(KeyValue {
            key,
            value,
            create_revision: wire.create_revision,
            mod_revision: wire.mod_revision,
            version: wire.version,
            revision: wire.revision,
            stale: wire.stale,
        })
    }
}

impl Serialize for KeyValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (key, key_base64) = bytes_to_wire(&self.key);
        let (value, value_base64) = bytes_to_wire(&self.value);
        KeyValueWire {
            key,
            key_base64,
            value,
            value_base64,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            revision: self.revision,
            stale: self.stale,
        }
        .serialize(serializer)
    }
}

/// The answer to a put (plain or compare-and-swap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    /// The revision of this write.
    pub revision: u64,
    /// The key's version after this write.
    pub version: u64,
}

/// The answer to a delete of one key or of a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResult {
    /// The store's revision after the delete.
    pub revision: u64,
    /// How many keys were deleted.
    pub deleted: u64,
}

/// The answer to a listing by prefix: one page, read at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ListResultWire", into = "ListResultWire")]
pub struct ListResult {
    /// The keys, in byte order, at most the limit asked for.
    pub kvs: Vec<KeyValue>,
    /// Whether more keys match beyond the limit.
    pub more: bool,
    /// The store's revision when the listing was read.
    pub revision: u64,
    /// When `more`: the last key of this page, to pass as `after` for the next one
    /// ([`crate::Client::list_page`]).
    pub next: Option<Bytes>,
}

/// The JSON shape of a listing: `next` as text when UTF-8, `next_base64` otherwise.
#[derive(Serialize, Deserialize)]
struct ListResultWire {
    kvs: Vec<KeyValue>,
    more: bool,
    revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_base64: Option<String>,
}

impl TryFrom<ListResultWire> for ListResult {
    type Error = String;

    fn try_from(wire: ListResultWire) -> Result<Self, String> {
        let next = match (wire.next, wire.next_base64) {
            (None, None) => None,
            (text, base64) => Some(bytes_from_wire(text, base64, "next")?),
        };
        Ok(ListResult {
            kvs: wire.kvs,
            more: wire.more,
            revision: wire.revision,
            next,
        })
    }
}

impl From<ListResult> for ListResultWire {
    fn from(list: ListResult) -> Self {
        let (next, next_base64) = list.next.as_deref().map_or((None, None), bytes_to_wire);
        ListResultWire {
            kvs: list.kvs,
            more: list.more,
            revision: list.revision,
            next,
            next_base64,
        }
    }
}

/// A compare-and-swap condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// The key's version must be this (0: the key must not exist).
    Version(u64),
    /// The key's value must be exactly these bytes.
    Value(Bytes),
}

/// A node id: a string in the API (`raft.node_id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Number(u64),
        }
        Ok(match Either::deserialize(deserializer)? {
            Either::Text(text) => NodeId(text),
            Either::Number(n) => NodeId(n.to_string()),
        })
    }
}

/// One member of the cluster, from `GET /cluster/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// Its peer (Raft) address.
    pub raft_addr: String,
    /// Its HTTP address.
    pub http_addr: String,
    /// `leader`, `follower`, `candidate`, `learner` or `unknown`.
    pub role: String,
    /// Its match index as the leader knows it; `None` when unknown.
    #[serde(default)]
    pub match_index: Option<u64>,
}

/// The leader, from `GET /cluster/leader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// The leader's id.
    pub id: NodeId,
    /// Its peer (Raft) address.
    pub raft_addr: String,
    /// Its HTTP address.
    pub http_addr: String,
}

/// The answer to `POST /cluster/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResult {
    /// The id of the node that joined.
    pub id: NodeId,
    /// Its role now (`learner` until it has caught up and is promoted).
    pub role: String,
    /// The cluster it was added to (servers before cluster identity did not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

/// The answer to `POST /cluster/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveResult {
    /// The id of the node removed.
    pub removed: NodeId,
}

/// The answer to `POST /cluster/transfer-leader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferResult {
    /// The id of the node that now leads.
    pub leader: NodeId,
}

/// The answer to `POST /admin/snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The last log index the snapshot covers.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// How many keys it holds.
    pub keys: u64,
    /// The file it was written to, on the node.
    pub file: String,
    /// Whether this request wrote it: `false` when nothing was applied since the latest
    /// snapshot, which then already holds the whole applied state and is the one described.
    #[serde(default = "taken_default")]
    pub taken: bool,
}

/// A server from before `taken` existed took a snapshot on every successful request.
fn taken_default() -> bool {
    true
}

/// A node's readiness, from `GET /ready`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    /// The endpoint that answered.
    pub endpoint: String,
    /// Whether the node is ready (`200`) or not (`503 not_ready`).
    pub ready: bool,
    /// The answer's JSON body as sent.
    pub detail: serde_json::Value,
}

/// Options of [`crate::Client`] beyond its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Bound on one attempt, from sending the request to the last byte of the answer (and
    /// never more than what is left of [`ClientOptions::call_timeout`]).
    pub request_timeout: Duration,
    /// Bound on a whole call: every attempt on every endpoint, the pauses between passes and
    /// the leader lookups included, so that a call fails within this time even when no node
    /// can answer (no quorum: each attempt waits out the server's no-leader timeout).
    pub call_timeout: Duration,
    /// Bound on opening a TCP connection.
    pub connect_timeout: Duration,
    /// How many passes over the endpoint list a request makes before giving up with
    /// [`crate::Error::Unavailable`]; at least 1.
    pub passes: u32,
    /// The pause after the first failed pass; doubled after each further pass.
    pub backoff_initial: Duration,
    /// The longest pause between passes.
    pub backoff_max: Duration,
    /// Where key requests go.
    pub routing: Routing,
    /// Most idle keep-alive connections kept per endpoint (the load generator sets it to
    /// its concurrency).
    pub idle_connections_per_endpoint: usize,
}

/// Where key and cluster requests go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// Find the leader with `GET /cluster/leader` and send there first; fail over to the
    /// other endpoints in order.
    #[default]
    Leader,
    /// Rotate over all endpoints, one request after another (followers forward to the
    /// leader).
    Spread,
}

/// Default [`ClientOptions::request_timeout`]: longer than the server's own no-leader
/// timeout (5 s), so the server's `503` arrives before the client gives up.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default [`ClientOptions::call_timeout`]: as long as one attempt, so a call without a
/// quorum fails in 10 s however many passes and endpoints are left, while a failover (a few
/// hundred ms) still fits many times over.
pub const CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default [`ClientOptions::connect_timeout`]: a loopback or LAN connect takes far less.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// Default [`ClientOptions::passes`]: with the default backoff the pauses add up to about
/// 1 s, long enough to ride out one leader election (a few hundred ms after a leader dies,
/// docs/performance.md) with room to spare. The passes stop earlier when the call's
/// [`ClientOptions::call_timeout`] runs out.
pub const PASSES_DEFAULT: u32 = 8;
/// Default [`ClientOptions::backoff_initial`]: short, because the common failure is a leader
/// that just died and whose successor is elected within a few hundred ms; a long first
/// pause would add directly to the time a failover costs a client.
pub const BACKOFF_INITIAL_DEFAULT: Duration = Duration::from_millis(25);
/// Default [`ClientOptions::backoff_max`]: a client retries at least this often, so it notices
/// a new leader at most this late; a retry is one cheap request per endpoint.
pub const BACKOFF_MAX_DEFAULT: Duration = Duration::from_millis(200);
/// Default [`ClientOptions::idle_connections_per_endpoint`].
pub const IDLE_CONNECTIONS_DEFAULT: usize = 8;

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            call_timeout: CALL_TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            passes: PASSES_DEFAULT,
            backoff_initial: BACKOFF_INITIAL_DEFAULT,
            backoff_max: BACKOFF_MAX_DEFAULT,
            routing: Routing::Leader,
            idle_connections_per_endpoint: IDLE_CONNECTIONS_DEFAULT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_json_round_trips_text_and_binary() {
        let kv = KeyValue {
            key: Bytes::from_static(b"k\xff"),
            value: Bytes::from_static(b"plain"),
            create_revision: 1,
            mod_revision: 2,
            version: 3,
            revision: 4,
            stale: None,
        };
        let json = serde_json::to_value(&kv).expect("serialising to a Value cannot fail");
        assert_eq!(json["key_base64"], "a/8=");
        assert_eq!(json["value"], "plain");
        assert!(json.get("key").is_none());
        let back: KeyValue = serde_json::from_value(json).expect("own output parses");
        assert_eq!(back, kv);
    }

    #[test]
    fn key_value_rejects_missing_or_double_fields() {
        let both = r#"{"key":"a","key_base64":"YQ==","value":"v","create_revision":1,"mod_revision":1,"version":1}"#;
        assert!(serde_json::from_str::<KeyValue>(both).is_err());
        let none = r#"{"value":"v","create_revision":1,"mod_revision":1,"version":1}"#;
        assert!(serde_json::from_str::<KeyValue>(none).is_err());
        let bad =
            r#"{"key":"a","value_base64":"!!","create_revision":1,"mod_revision":1,"version":1}"#;
        assert!(serde_json::from_str::<KeyValue>(bad).is_err());
    }

    #[test]
    fn node_ids_accept_strings_and_numbers() {
        let text: LeaderInfo =
            serde_json::from_str(r#"{"id":"n1","raft_addr":"a","http_addr":"b"}"#).expect("valid");
        assert_eq!(text.id, NodeId("n1".into()));
        let number: LeaderInfo =
            serde_json::from_str(r#"{"id":2,"raft_addr":"a","http_addr":"b"}"#).expect("valid");
        assert_eq!(number.id, NodeId("2".into()));
    }
}
