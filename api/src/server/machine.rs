//! The replicated state machine the node drives: the key-value store plus the cluster's
//! records: the address book (which node id is which name, and where its Raft and HTTP ports
//! are) and the removals (which nodes a committed membership change removed, and at which
//! index), all under the cluster's identity.
//!
//! Every log entry the server proposes is a [`Proposal`]: a tag byte, then either a `kv`
//! command or a member record. The address book is replicated like any write so that every
//! node, and every node that restarts from a snapshot, knows where its peers are; a restarting
//! node also reads the member records still in its log, applied or not (see
//! [`members_in_log`]), so it never depends on how far it had applied.
//!
//! Invariants: the machine's applied index is the `kv` store's; a member record and a
//! membership change are applied on every replica at the same index, so all replicas hold the
//! same records; a snapshot carries the cluster id and is restored only into a machine of the
//! same cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use raft::core::{Configuration, Entry, EntryPayload, LogIndex, NodeId, Snapshot};
use raft::node::{ClusterId, StateMachine};
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

/// The snapshot's payload beside the `kv` data: the cluster's identity and records.
#[derive(Serialize, Deserialize)]
struct SnapshotExtra {
    cluster_id: ClusterId,
    members: Vec<MemberInfo>,
    removed: Vec<(NodeId, LogIndex)>,
}

/// The cluster records as applied, published after every change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Book {
    /// Where each member can be reached.
    pub members: BTreeMap<NodeId, MemberInfo>,
    /// Nodes a committed membership change removed, with the index of that change; a node
    /// added back leaves this set.
    pub removed: BTreeMap<NodeId, LogIndex>,
}

/// The key-value store and the cluster records.
pub struct Machine {
    /// The key-value state.
    pub kv: kv::KvStore,
    cluster_id: ClusterId,
    book: Book,
    /// The membership as of the applied index (to see who a change removed).
    configuration: Configuration,
    book_tx: watch::Sender<Book>,
    /// `kv.data_bytes()`, published after every change for the space quota, which reads it
    /// on every write without this machine's lock.
    data_bytes: Arc<AtomicU64>,
}

impl Machine {
    /// An empty machine of cluster `cluster_id`; the receiver sees the records after every
    /// change.
    pub fn new(config: kv::KvConfig, cluster_id: ClusterId) -> (Machine, watch::Receiver<Book>) {
        let (book_tx, rx) = watch::channel(Book::default());
        (
            Machine {
                kv: kv::KvStore::new(config),
                cluster_id,
                book: Book::default(),
                configuration: Configuration::default(),
                book_tx,
                data_bytes: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// The address book.
    pub fn members(&self) -> &BTreeMap<NodeId, MemberInfo> {
        &self.book.members
    }

    /// The nodes removed by committed membership changes, and when.
    pub fn removed(&self) -> &BTreeMap<NodeId, LogIndex> {
        &self.book.removed
    }

    /// The cluster this machine's state belongs to.
    pub fn cluster_id(&self) -> ClusterId {
        self.cluster_id
    }

    /// The state's size ([`kv::KvStore::data_bytes`]), kept current after every apply and
    /// restore: what the space quota (`http::quota`) reads.
    pub fn data_bytes_gauge(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.data_bytes)
    }

    fn publish_data_bytes(&self) {
        self.data_bytes
            .store(self.kv.data_bytes(), Ordering::Release);
    }

    fn publish(&self) {
        self.book_tx.send_replace(self.book.clone());
    }

    /// Decodes a snapshot's data into a `kv` snapshot and the cluster records, checking both.
    fn decode(data: &[u8]) -> Result<(kv::Snapshot, SnapshotExtra), String> {
        let snapshot = kv::Snapshot::decode(data).map_err(|e| e.to_string())?;
        let extra: SnapshotExtra = postcard::from_bytes(&snapshot.meta.config).map_err(|e| {
            format!("cluster records: {e} (a snapshot from an older RaftKV version without a cluster id?)")
        })?;
        Ok((snapshot, extra))
    }
}

/// The member records in `entries` (a log read back at start), oldest first: the addresses a
/// restarting node must know before it has applied anything. Raft's membership rule makes a
/// configuration entry count as soon as it is in the log; the addresses that go with it are
/// taken the same way.
pub fn members_in_log(entries: &[Entry]) -> Vec<MemberInfo> {
    entries
        .iter()
        .filter_map(|entry| match &entry.payload {
            EntryPayload::Normal(data) => match data.split_first() {
                Some((&TAG_MEMBER, rest)) => postcard::from_bytes::<MemberInfo>(rest).ok(),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

impl StateMachine for Machine {
    type Output = Output;

    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Output {
        match command.split_first() {
            Some((&TAG_KV, rest)) => {
                let output = Output::Kv(self.kv.apply(index.0, rest));
                self.publish_data_bytes();
                output
            }
            Some((&TAG_MEMBER, rest)) => {
                let _ = self.kv.mark_applied(index.0);
                match postcard::from_bytes::<MemberInfo>(rest) {
                    Ok(member) => {
                        raft::node::names::register(member.id, &member.name);
                        self.book.members.insert(member.id, member);
                        self.publish();
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

    fn apply_conf_change(&mut self, index: LogIndex, configuration: &Configuration) {
        let _ = self.kv.mark_applied(index.0);
        for gone in self.configuration.members() {
            if !configuration.contains(gone) {
                self.book.removed.insert(gone, index);
            }
        }
        for present in configuration.members() {
            self.book.removed.remove(&present);
        }
        self.configuration = configuration.clone();
        self.publish();
    }

    fn snapshot_data(&self, term: raft::core::Term) -> Bytes {
        let extra = SnapshotExtra {
            cluster_id: self.cluster_id,
            members: self.book.members.values().cloned().collect(),
            removed: self
                .book
                .removed
                .iter()
                .map(|(id, at)| (*id, *at))
                .collect(),
        };
        // The Raft membership is kept by the log store beside the snapshot; the `kv`
        // snapshot's own metadata carries the address book instead, and the real term, which
        // names the file and the logs.
        let config = Bytes::from(postcard::to_stdvec(&extra).expect("members always encode"));
        Bytes::from(self.kv.snapshot(term.0, config).encode())
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let (kv_snapshot, extra) = Machine::decode(&snapshot.data)?;
        if extra.cluster_id != self.cluster_id {
            return Err(format!(
                "the snapshot at index {} belongs to cluster {}, this node to cluster {}",
                snapshot.metadata.index.0, extra.cluster_id, self.cluster_id
            ));
        }
        if kv_snapshot.meta.index != snapshot.metadata.index.0 {
            return Err(format!(
                "snapshot data is at index {} but its metadata says {}",
                kv_snapshot.meta.index, snapshot.metadata.index.0
            ));
        }
        self.kv = kv::KvStore::restore(kv_snapshot, self.kv.config()).map_err(|e| e.to_string())?;
        for member in &extra.members {
            raft::node::names::register(member.id, &member.name);
        }
        self.book = Book {
            members: extra.members.into_iter().map(|m| (m.id, m)).collect(),
            removed: extra.removed.into_iter().collect(),
        };
        self.configuration = snapshot.metadata.configuration.clone();
        self.publish();
        self.publish_data_bytes();
        Ok(())
    }
}

/// Checks snapshot data before it is kept (it may come from the network); returns its index
/// and the cluster it belongs to.
pub fn verify_snapshot_data(data: &[u8]) -> Result<(u64, ClusterId), String> {
    Machine::decode(data).map(|(s, extra)| (s.meta.index, extra.cluster_id))
}
