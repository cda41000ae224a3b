//! The REST API's bodies as Rust types (docs/api.md): what the server sends and the client
//! reads, serialised by one set of derives so the two agree by construction.
//!
//! Invariants:
//! - keys and values are bytes end to end: JSON answers carry them as `key`/`value` (valid
//!   UTF-8) or `key_base64`/`value_base64` (anything else), and serialising a [`KeyValue`]
//!   back to JSON follows the same rule;
//! - a node id is a string; an answer with a number is accepted and its id kept as the
//!   number's decimal text.

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::encoding::{base64_decode, base64_encode};

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Through the leader's read index: sees every write acknowledged before it began.
    #[default]
    Linearizable,
    /// From the answering node's local state at once (`?consistency=stale`); may be behind.
    Stale,
}

impl Consistency {
    /// Both, as `ALL` lists every value the query takes.
    pub const ALL: [Consistency; 2] = [Consistency::Linearizable, Consistency::Stale];

    /// The value of the `consistency` query parameter that asks for it.
    pub fn as_query(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Stale => "stale",
        }
    }

    /// The consistency a `consistency` query value names, if any.
    pub fn from_query(value: &[u8]) -> Option<Consistency> {
        Consistency::ALL
            .into_iter()
            .find(|c| c.as_query().as_bytes() == value)
    }
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
    /// The store's revision when the read was served; inside a listing, the listing's
    /// ([`ListResult::revision`]). The store's own key-value (`kv::KeyValue`) has no such
    /// field: this type is the answer, read at one revision, and the contract depends on no
    /// store crate.
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
    /// When `more`: the last key of this page, to pass as `after` for the next one.
    pub next: Option<Bytes>,
    /// Present on stale reads.
    pub stale: Option<StaleInfo>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stale: Option<StaleInfo>,
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
            stale: wire.stale,
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
            stale: list.stale,
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
    /// Its peer (Raft) address; `None` until its address record is applied (a member of a
    /// young cluster, or one the leader knows only from the configuration).
    #[serde(default)]
    pub raft_addr: Option<String>,
    /// Its HTTP address; `None` as `raft_addr`.
    #[serde(default)]
    pub http_addr: Option<String>,
    /// Its gRPC address; `None` as `raft_addr`, and for a member whose record was written
    /// before nodes served gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<String>,
    /// `leader`, `follower`, `candidate`, `learner`, `removed` (the answering node, once it
    /// knows) or `unknown`.
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
    /// Its gRPC address; `None` for a member whose record was written before nodes served
    /// gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<String>,
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
    /// The members with recorded addresses, the leader among them: whom the joiner serves
    /// until its log arrives.
    #[serde(default)]
    pub members: Vec<LeaderInfo>,
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
    /// `index` under the seed's name, for the seed's scripts.
    #[serde(default)]
    pub raft_index: u64,
    /// `term` under the seed's name.
    #[serde(default)]
    pub raft_term: u64,
    /// `keys` under the seed's name.
    #[serde(default)]
    pub key_count: u64,
    /// The file it was written to, on the node.
    pub file: String,
    /// Whether this request wrote it: `false` when nothing was applied since the latest
    /// snapshot, which then already holds the whole applied state and is the one described.
    #[serde(default = "taken_default")]
    pub taken: bool,
}

impl SnapshotInfo {
    /// The answer for the snapshot at `index` and `term` holding `keys` keys, in `file`, with
    /// the seed's names filled in from the same figures.
    pub fn new(index: u64, term: u64, keys: u64, file: String, taken: bool) -> SnapshotInfo {
        SnapshotInfo {
            index,
            term,
            keys,
            raft_index: index,
            raft_term: term,
            key_count: keys,
            file,
            taken,
        }
    }
}

/// A server from before `taken` existed took a snapshot on every successful request.
fn taken_default() -> bool {
    true
}

/// The answer to `POST /sessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRegistered {
    /// The new session's id, for the `X-Raftkv-Client-Id` header of its writes.
    pub client_id: u64,
}

/// The answer to `GET /cluster/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nodes {
    /// Every member, and this node once it knows it was removed.
    pub nodes: Vec<NodeInfo>,
}

/// The answer to `GET /cluster/id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// The cluster this node belongs to (16 hex digits).
    pub cluster_id: String,
    /// The answering node's id.
    pub node_id: NodeId,
}

/// The answer to `GET /health` while the node works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// The space quota over a node's applied state, as `/ready` and `507 quota_exceeded` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaInfo {
    /// The applied state's size, as the quota counts it.
    pub used_bytes: u64,
    /// `storage.quota_bytes`.
    pub quota_bytes: u64,
    /// Whether writes that would grow the state are refused.
    pub exceeded: bool,
}

/// The answer to `GET /status` (and, field for field, `Maintenance.Status` over gRPC): what
/// the answering node is and how far it has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The answering node's id.
    pub node_id: NodeId,
    /// Its cluster (16 hex digits).
    pub cluster_id: String,
    /// `leader`, `follower`, `candidate`, `learner`, `removed` or `unknown`.
    pub role: String,
    /// Its current term.
    pub term: u64,
    /// The highest log index it knows committed.
    pub commit_index: u64,
    /// The highest log index it applied.
    pub applied_index: u64,
    /// The leader it knows; `None` when none.
    #[serde(default)]
    pub leader: Option<NodeId>,
    /// The last index its latest snapshot covers.
    pub snapshot_index: u64,
    /// The size of its applied state, as the space quota counts it.
    pub db_size_bytes: u64,
}

/// The answer to `GET /ready` on a ready node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// `ready`.
    pub status: String,
    /// The cluster this node belongs to (16 hex digits).
    pub cluster_id: String,
    /// The node's current term.
    pub term: u64,
    /// The highest log index it has applied.
    pub applied_index: u64,
    /// The highest commit index it knows of.
    pub commit_index: u64,
    /// The last index its latest snapshot covers.
    pub snapshot_index: u64,
    /// The space quota (a node over it stays ready: it serves reads and deletes).
    pub quota: QuotaInfo,
}

/// The body of `POST /cluster/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The joining node's name (the config file's rules).
    pub node_id: String,
    /// Its peer (Raft) address; also read as `addr`, the seed's name for it.
    #[serde(alias = "addr")]
    pub raft_addr: String,
    /// Its HTTP address; empty when the caller did not give it (the seed's body names only
    /// the Raft address): the member is then recorded without one until it joins for itself
    /// or leads, either of which records it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub http_addr: String,
    /// Its gRPC address (a node that serves gRPC sends it; a joiner of an older version does
    /// not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<String>,
    /// The cluster the caller expects it to join (16 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Sent by a node with a blank data directory asking for itself.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fresh: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The body of `POST /cluster/remove` and `POST /cluster/transfer-leader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRequest {
    /// The node the request is about.
    pub node_id: String,
}

/// The body of every error answer (docs/api.md, "Errors"); some codes add a field, kept in
/// `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A sentence for a person.
    pub error: String,
    /// A stable token (the table in docs/api.md).
    pub code: String,
    /// The fields some codes add (`leader`, `current_version`, `parameter`, `quota`, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
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
