//! The replicated state machine the node drives: the key-value store plus the cluster's
//! address book (which node id is which name, and where its Raft and HTTP ports are).
//!
//! Every log entry the server proposes is a [`Proposal`]: a tag byte, then either a `kv`
//! command or a member record. The address book is replicated like any write so that every
//! node, and every node that restarts from a snapshot, knows where its peers are.
//!
//! Invariants: the machine's applied index is the `kv` store's; a member record is applied on
//! every replica at the same index, so all replicas hold the same address book.

use std::collections::BTreeMap;

use bytes::Bytes;
use raft::core::{LogIndex, NodeId, Snapshot};
use raft::node::StateMachine;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The tag of a proposal carrying a `kv` command.
const TAG_KV: u8 = 1;
/// The tag of a proposal carrying a member record.
const TAG_MEMBER: u8 = 2;

/// Where a member of the cluster can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The Raft id (derived from the name).
    pub id: NodeId,
    /// The name the operator gave it (`raft.node_id`).
    pub name: String,
    /// Its Raft address.
    pub raft_addr: String,
    /// Its HTTP address.
    pub http_addr: String,
}

/// What the server proposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proposal {
    /// An encoded `kv` command.
    Kv(Bytes),
    /// Record (or update) a member's addresses.
    Member(MemberInfo),
}

impl Proposal {
    /// The entry bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        match self {
            Proposal::Kv(command) => {
                out.push(TAG_KV);
                out.extend_from_slice(command);
            }
            Proposal::Member(member) => {
                out.push(TAG_MEMBER);
                out.extend(postcard::to_stdvec(member).expect("a member record always encodes"));
            }
        }
        Bytes::from(out)
    }
}

/// What applying a proposal answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// The `kv` store's answer.
    Kv(kv::Response),
    /// A member record was stored.
    Member,
    /// The entry was not a proposal this server understands (recorded as applied, no effect).
    Garbage(String),
}

/// The snapshot's payload beside the `kv` data: the address book.
#[derive(Serialize, Deserialize)]
struct SnapshotExtra {
    members: Vec<MemberInfo>,
}

/// The key-value store and the address book.
pub struct Machine {
    /// The key-value state.
    pub kv: kv::KvStore,
    members: BTreeMap<NodeId, MemberInfo>,
    members_tx: watch::Sender<BTreeMap<NodeId, MemberInfo>>,
}

impl Machine {
    /// An empty machine; the receiver sees the address book after every change.
    pub fn new(config: kv::KvConfig) -> (Machine, watch::Receiver<BTreeMap<NodeId, MemberInfo>>) {
        let (members_tx, rx) = watch::channel(BTreeMap::new());
        (
            Machine {
                kv: kv::KvStore::new(config),
                members: BTreeMap::new(),
                members_tx,
            },
            rx,
        )
    }

    /// The address book.
    pub fn members(&self) -> &BTreeMap<NodeId, MemberInfo> {
        &self.members
    }

    fn publish_members(&self) {
        self.members_tx.send_replace(self.members.clone());
    }

    /// Decodes a snapshot's data into a `kv` snapshot and the address book, checking both.
    fn decode(data: &[u8]) -> Result<(kv::Snapshot, Vec<MemberInfo>), String> {
        let snapshot = kv::Snapshot::decode(data).map_err(|e| e.to_string())?;
        let extra: SnapshotExtra = postcard::from_bytes(&snapshot.meta.config)
            .map_err(|e| format!("address book: {e}"))?;
        Ok((snapshot, extra.members))
    }
}

impl StateMachine for Machine {
    type Output = Output;

    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Output {
        match command.split_first() {
            Some((&TAG_KV, rest)) => Output::Kv(self.kv.apply(index.0, rest)),
            Some((&TAG_MEMBER, rest)) => {
                let _ = self.kv.mark_applied(index.0);
                match postcard::from_bytes::<MemberInfo>(rest) {
                    Ok(member) => {
                        self.members.insert(member.id, member);
                        self.publish_members();
                        Output::Member
                    }
                    Err(e) => Output::Garbage(format!("member record: {e}")),
                }
            }
            _ => {
                let _ = self.kv.mark_applied(index.0);
                Output::Garbage("unknown proposal tag".into())
            }
        }
    }

    fn apply_empty(&mut self, index: LogIndex) {
        let _ = self.kv.mark_applied(index.0);
    }

    fn snapshot_data(&self) -> Bytes {
        let extra = SnapshotExtra {
            members: self.members.values().cloned().collect(),
        };
        // The Raft term and membership are kept by the log store beside the snapshot; the
        // `kv` snapshot's own metadata carries the address book instead.
        let config = Bytes::from(postcard::to_stdvec(&extra).expect("members always encode"));
        Bytes::from(self.kv.snapshot(0, config).encode())
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let (kv_snapshot, members) = Machine::decode(&snapshot.data)?;
        if kv_snapshot.meta.index != snapshot.metadata.index.0 {
            return Err(format!(
                "snapshot data is at index {} but its metadata says {}",
                kv_snapshot.meta.index, snapshot.metadata.index.0
            ));
        }
        self.kv = kv::KvStore::restore(kv_snapshot, self.kv.config()).map_err(|e| e.to_string())?;
        self.members = members.into_iter().map(|m| (m.id, m)).collect();
        self.publish_members();
        Ok(())
    }
}

/// Checks snapshot data before it is kept (it may come from the network).
pub fn verify_snapshot_data(data: &[u8]) -> Result<u64, String> {
    Machine::decode(data).map(|(s, _)| s.meta.index)
}
