//! The replicated state machine the node drives: the key-value store plus the cluster's
//! records: the address book (which node id is which name, and where its Raft and HTTP ports
//! are), the removals (which nodes a committed membership change removed, and at which
//! index), and the access records ([`crate::auth`]: users, roles, API keys), all under the
//! cluster's identity.
//!
//! Every log entry the server proposes is a [`Proposal`]: a tag byte, then a `kv` command, a
//! member record or an auth command. The address book is replicated like any write so that every
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
use raft::core::{Configuration, Entry, EntryPayload, LogIndex, NodeId, SnapshotMetadata};
use raft::node::{ClusterId, Restorer, SnapshotFilesError, SnapshotView, StateMachine};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::auth::{AuthCommand, AuthRefusal, AuthState};

/// The tag of a proposal carrying a `kv` command.
const TAG_KV: u8 = 1;
/// The tag of a proposal carrying a member record.
pub(crate) const TAG_MEMBER: u8 = 2;
/// The tag of a proposal carrying an auth command.
const TAG_AUTH: u8 = 3;

/// Where a member of the cluster can be reached.
///
/// Encoded with postcard, which is not self-describing: the gRPC address came last, after
/// records were already in logs and snapshots, so a record without it is the first layout
/// (`MemberInfoV1`) and decodes as such (`MemberInfo::decode`). A leader records its own
/// address anew when its record differs (`duties::leader_duties`), so after an upgrade each
/// member's gRPC address is filled in once it has led, or when it joins again; until then a
/// follower answers a gRPC write for a leader without one `not_leader`, naming it.
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
    /// Its gRPC address; `None` in a record written before nodes served gRPC.
    pub grpc_addr: Option<String>,
}

/// A member record in its first layout, without the gRPC address.
#[derive(Serialize, Deserialize)]
struct MemberInfoV1 {
    id: NodeId,
    name: String,
    raft_addr: String,
    http_addr: String,
}

impl From<MemberInfoV1> for MemberInfo {
    fn from(v1: MemberInfoV1) -> MemberInfo {
        MemberInfo {
            id: v1.id,
            name: v1.name,
            raft_addr: v1.raft_addr,
            http_addr: v1.http_addr,
            grpc_addr: None,
        }
    }
}

impl MemberInfo {
    /// Decodes a member record of either layout. A first-layout record is a strict prefix of
    /// the current one, so reading it as the current layout runs out of bytes and fails,
    /// rather than misreading; an older node reading a current record ignores the trailing
    /// field.
    fn decode(bytes: &[u8]) -> Result<MemberInfo, postcard::Error> {
        postcard::from_bytes::<MemberInfo>(bytes)
            .or_else(|_| postcard::from_bytes::<MemberInfoV1>(bytes).map(MemberInfo::from))
    }

    fn v1(&self) -> MemberInfoV1 {
        MemberInfoV1 {
            id: self.id,
            name: self.name.clone(),
            raft_addr: self.raft_addr.clone(),
            http_addr: self.http_addr.clone(),
        }
    }
}

/// What the server proposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proposal {
    /// An encoded `kv` command.
    Kv(Bytes),
    /// Record (or update) a member's addresses.
    Member(MemberInfo),
    /// Change the access records.
    Auth(AuthCommand),
}

impl Proposal {
    /// The entry bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        match self {
            Proposal::Kv(command) => {
                // Sized up front: the hot path, one allocation and one copy per write.
                out.reserve_exact(1 + command.len());
                out.push(TAG_KV);
                out.extend_from_slice(command);
            }
            Proposal::Member(member) => {
                out.push(TAG_MEMBER);
                out.extend(postcard::to_stdvec(member).expect("a member record always encodes"));
            }
            Proposal::Auth(command) => {
                out.push(TAG_AUTH);
                out.extend(command.encode());
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
    /// An auth command was applied, or refused with nothing changed.
    Auth(Result<(), AuthRefusal>),
    /// The entry was not a proposal this server understands (recorded as applied, no effect).
    Garbage(String),
}

/// The snapshot's payload beside the `kv` data: the cluster's identity and records.
struct SnapshotExtra {
    cluster_id: ClusterId,
    members: Vec<MemberInfo>,
    removed: Vec<(NodeId, LogIndex)>,
    auth: AuthState,
}

/// [`SnapshotExtra`] as encoded: the first layout's fields, then the members' gRPC addresses,
/// then the access records (each added later, so an older payload is a strict prefix and
/// decodes as [`SnapshotExtraV2`] or [`SnapshotExtraV1`]).
#[derive(Serialize, Deserialize)]
struct SnapshotExtraWire {
    cluster_id: ClusterId,
    members: Vec<MemberInfoV1>,
    removed: Vec<(NodeId, LogIndex)>,
    grpc_addrs: Vec<(NodeId, String)>,
    auth: AuthState,
}

/// The second layout of the snapshot's records, without the access records.
#[derive(Serialize, Deserialize)]
struct SnapshotExtraV2 {
    cluster_id: ClusterId,
    members: Vec<MemberInfoV1>,
    removed: Vec<(NodeId, LogIndex)>,
    grpc_addrs: Vec<(NodeId, String)>,
}

/// The first layout of the snapshot's records, without gRPC addresses.
#[derive(Serialize, Deserialize)]
struct SnapshotExtraV1 {
    cluster_id: ClusterId,
    members: Vec<MemberInfoV1>,
    removed: Vec<(NodeId, LogIndex)>,
}

/// Decodes a `T` that uses every byte of `bytes`.
fn exactly<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    match postcard::take_from_bytes::<T>(bytes)? {
        (value, []) => Ok(value),
        _ => Err(postcard::Error::DeserializeBadEncoding),
    }
}

impl SnapshotExtra {
    fn encode(&self) -> Vec<u8> {
        let wire = SnapshotExtraWire {
            cluster_id: self.cluster_id,
            members: self.members.iter().map(MemberInfo::v1).collect(),
            removed: self.removed.clone(),
            grpc_addrs: self
                .members
                .iter()
                .filter_map(|m| m.grpc_addr.clone().map(|a| (m.id, a)))
                .collect(),
            auth: self.auth.clone(),
        };
        postcard::to_stdvec(&wire).expect("members always encode")
    }

    fn decode(bytes: &[u8]) -> Result<SnapshotExtra, postcard::Error> {
        // Each layout is read exactly, every byte used: a newer payload read as an older
        // layout leaves bytes over and is not taken for it, so a damaged or unknown trailing
        // section is an error rather than silently dropped (the access records with it).
        let wire = exactly::<SnapshotExtraWire>(bytes)
            .or_else(|_| {
                exactly::<SnapshotExtraV2>(bytes).map(|v2| SnapshotExtraWire {
                    cluster_id: v2.cluster_id,
                    members: v2.members,
                    removed: v2.removed,
                    grpc_addrs: v2.grpc_addrs,
                    auth: AuthState::default(),
                })
            })
            .or_else(|_| {
                exactly::<SnapshotExtraV1>(bytes).map(|v1| SnapshotExtraWire {
                    cluster_id: v1.cluster_id,
                    members: v1.members,
                    removed: v1.removed,
                    grpc_addrs: Vec::new(),
                    auth: AuthState::default(),
                })
            })?;
        let grpc: BTreeMap<NodeId, String> = wire.grpc_addrs.into_iter().collect();
        Ok(SnapshotExtra {
            cluster_id: wire.cluster_id,
            members: wire
                .members
                .into_iter()
                .map(|v1| {
                    let mut member = MemberInfo::from(v1);
                    member.grpc_addr = grpc.get(&member.id).cloned();
                    member
                })
                .collect(),
            removed: wire.removed,
            auth: wire.auth,
        })
    }
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
    /// The access records, published after every change (requests check credentials against
    /// them without this machine's lock).
    auth: Arc<AuthState>,
    auth_tx: watch::Sender<Arc<AuthState>>,
    /// `kv.data_bytes()`, published after every change for the space quota, which reads it
    /// on every write without this machine's lock.
    data_bytes: Arc<AtomicU64>,
}

impl Machine {
    /// An empty machine of cluster `cluster_id`; the receiver sees the records after every
    /// change.
    pub fn new(config: kv::KvConfig, cluster_id: ClusterId) -> (Machine, watch::Receiver<Book>) {
        let (book_tx, rx) = watch::channel(Book::default());
        let auth = Arc::new(AuthState::default());
        let (auth_tx, _) = watch::channel(Arc::clone(&auth));
        (
            Machine {
                kv: kv::KvStore::new(config),
                cluster_id,
                book: Book::default(),
                configuration: Configuration::default(),
                book_tx,
                auth,
                auth_tx,
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

    /// The access records as applied.
    pub fn auth(&self) -> &Arc<AuthState> {
        &self.auth
    }

    /// A receiver that sees the access records after every change.
    pub fn auth_watch(&self) -> watch::Receiver<Arc<AuthState>> {
        self.auth_tx.subscribe()
    }

    fn publish_auth(&self) {
        self.auth_tx.send_replace(Arc::clone(&self.auth));
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

    /// The cluster records as a snapshot carries them.
    fn records(&self) -> SnapshotExtra {
        SnapshotExtra {
            cluster_id: self.cluster_id,
            members: self.book.members.values().cloned().collect(),
            removed: self
                .book
                .removed
                .iter()
                .map(|(id, at)| (*id, *at))
                .collect(),
            auth: (*self.auth).clone(),
        }
    }
}

/// A point-in-time copy of the machine for a snapshot: the `kv` view (O(1) to take: it shares
/// structure with the live store) and the cluster records, both as of the same applied index.
pub struct MachineView {
    kv: kv::KvView,
    /// The encoded [`SnapshotExtra`], kept in the `kv` snapshot's opaque configuration bytes.
    records: Bytes,
    /// The term of the entry at the view's index: it names the file and the logs.
    term: u64,
}

impl SnapshotView for MachineView {
    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.kv
            .write_snapshot(self.term, &self.records, out)
            .map(drop)
    }
}

/// A machine's state read back from a snapshot, checked, ready to install.
pub struct RestoredState {
    kv: kv::KvStore,
    records: SnapshotExtra,
}

/// Decodes the cluster records the snapshot at `index` carries in its `kv` configuration bytes.
fn decode_records(index: u64, config: &[u8]) -> Result<SnapshotExtra, SnapshotFilesError> {
    SnapshotExtra::decode(config).map_err(|e| {
        SnapshotFilesError::damaged(
            LogIndex(index),
            format!(
                "cluster records: {e} (a snapshot from an older RaftKV version without a \
                 cluster id?)"
            ),
        )
    })
}

/// The node's kind of error for a failed read of the snapshot at `index`: the disk, or the
/// data.
fn read_error(index: LogIndex, e: kv::SnapshotReadError) -> SnapshotFilesError {
    match e {
        kv::SnapshotReadError::Io(source) => {
            SnapshotFilesError::io(format!("reading the snapshot at index {index}"), source)
        }
        damaged => SnapshotFilesError::damaged(index, damaged),
    }
}

/// Reads a snapshot (streamed, checked whole) into a state for `cluster_id` at `index`.
fn read_state(
    data: &mut dyn std::io::Read,
    config: kv::KvConfig,
    cluster_id: ClusterId,
    index: LogIndex,
) -> Result<RestoredState, SnapshotFilesError> {
    let (meta, kv) = kv::read_snapshot(data, config).map_err(|e| read_error(index, e))?;
    let records = decode_records(meta.index, &meta.config)?;
    if records.cluster_id != cluster_id {
        return Err(SnapshotFilesError::WrongCluster {
            index: LogIndex(meta.index),
            theirs: records.cluster_id,
            ours: cluster_id,
        });
    }
    if meta.index != index.0 {
        return Err(SnapshotFilesError::damaged(
            index,
            format!("its data is at index {}", meta.index),
        ));
    }
    Ok(RestoredState { kv, records })
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
                Some((&TAG_MEMBER, rest)) => MemberInfo::decode(rest).ok(),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

impl StateMachine for Machine {
    type Output = Output;
    type View = MachineView;
    type Restored = RestoredState;

    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Output {
        match command.split_first() {
            Some((&TAG_KV, rest)) => {
                let output = Output::Kv(self.kv.apply(index.0, rest));
                self.publish_data_bytes();
                output
            }
            Some((&TAG_MEMBER, rest)) => {
                let _ = self.kv.mark_applied(index.0);
                match MemberInfo::decode(rest) {
                    Ok(member) => {
                        raft::node::names::register(member.id, &member.name);
                        self.book.members.insert(member.id, member);
                        self.publish();
                        Output::Member
                    }
                    Err(e) => Output::Garbage(format!("member record: {e}")),
                }
            }
            Some((&TAG_AUTH, rest)) => {
                let _ = self.kv.mark_applied(index.0);
                match AuthCommand::decode(rest) {
                    Ok(command) => {
                        // Applied to a copy, so that a refusal leaves the records as they were
                        // and readers never see a half-made change.
                        let mut next = (*self.auth).clone();
                        let result = next.apply(index.0, command);
                        if result.is_ok() {
                            self.auth = Arc::new(next);
                            self.publish_auth();
                        }
                        Output::Auth(result)
                    }
                    Err(e) => Output::Garbage(format!("auth command: {e}")),
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

    fn view(&self, metadata: &SnapshotMetadata) -> MachineView {
        debug_assert_eq!(
            self.kv.applied_index(),
            metadata.index.0,
            "a snapshot is of the applied state"
        );
        // The Raft membership is kept by the log store beside the snapshot; the `kv`
        // snapshot's own metadata carries the cluster records instead, and the real term,
        // which names the file and the logs.
        let records = Bytes::from(self.records().encode());
        MachineView {
            kv: self.kv.view(),
            records,
            term: metadata.term.0,
        }
    }

    fn restorer(&self) -> Restorer<RestoredState> {
        let (config, cluster_id) = (self.kv.config(), self.cluster_id);
        Box::new(move |metadata, data| read_state(data, config, cluster_id, metadata.index))
    }

    fn install(&mut self, metadata: &SnapshotMetadata, restored: RestoredState) {
        self.kv = restored.kv;
        for member in &restored.records.members {
            raft::node::names::register(member.id, &member.name);
        }
        self.book = Book {
            members: restored
                .records
                .members
                .into_iter()
                .map(|m| (m.id, m))
                .collect(),
            removed: restored.records.removed.into_iter().collect(),
        };
        self.auth = Arc::new(restored.records.auth);
        self.configuration = metadata.configuration.clone();
        self.publish();
        self.publish_auth();
        self.publish_data_bytes();
    }
}

/// The cluster the snapshot at `index` belongs to, from the records in its `kv`
/// configuration bytes.
pub fn records_cluster(index: u64, config: &[u8]) -> Result<ClusterId, SnapshotFilesError> {
    decode_records(index, config).map(|records| records.cluster_id)
}

/// The cluster records of the snapshot at `index` (its `kv` configuration bytes `config`)
/// rewritten for a new cluster founded from it (`raftkv restore`): under `cluster_id`, with no
/// member addresses and no removals (the new cluster's members are added afresh; its first
/// leader records its own addresses, see `duties::leader_duties`), the access records kept
/// but for the token-signing key, replaced by `signing_key` when there was one: the new
/// cluster must not accept the old cluster's tokens, nor tokens signed by whoever holds the
/// backup file. Returns the cluster the snapshot was taken of, and the new records' bytes.
pub fn records_for_new_cluster(
    index: u64,
    config: &[u8],
    cluster_id: ClusterId,
    signing_key: Bytes,
) -> Result<(ClusterId, Bytes), SnapshotFilesError> {
    let old = decode_records(index, config)?;
    let mut auth = old.auth;
    if auth.signing_key.is_some() {
        auth.signing_key = Some(signing_key);
    }
    let new = SnapshotExtra {
        cluster_id,
        members: Vec::new(),
        removed: Vec::new(),
        auth,
    };
    Ok((old.cluster_id, Bytes::from(new.encode())))
}

/// Checks data claimed to be the snapshot at `index` before it is kept (it may come from the
/// network), streaming it once: structure, checksum, content, and the index inside; returns
/// the cluster it belongs to.
pub fn check_snapshot_data(
    index: LogIndex,
    data: &mut dyn std::io::Read,
) -> Result<ClusterId, SnapshotFilesError> {
    let meta = kv::verify_snapshot(data).map_err(|e| read_error(index, e))?;
    if meta.index != index.0 {
        return Err(SnapshotFilesError::damaged(
            index,
            format!("its data is at index {}", meta.index),
        ));
    }
    Ok(decode_records(meta.index, &meta.config)?.cluster_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: u64, grpc: Option<&str>) -> MemberInfo {
        MemberInfo {
            id: NodeId(n),
            name: format!("n{n}"),
            raft_addr: format!("127.0.0.1:700{n}"),
            http_addr: format!("127.0.0.1:808{n}"),
            grpc_addr: grpc.map(str::to_string),
        }
    }

    #[test]
    fn a_member_record_of_the_first_layout_reads_back_without_a_grpc_address() {
        // Given a record written before nodes served gRPC,
        let old = member(1, None);
        let bytes = postcard::to_stdvec(&old.v1()).expect("encodes");
        // then it decodes, with no gRPC address, and a current record keeps its address.
        assert_eq!(MemberInfo::decode(&bytes).expect("decodes"), old);
        let new = member(2, Some("127.0.0.1:9092"));
        let bytes = postcard::to_stdvec(&new).expect("encodes");
        assert_eq!(MemberInfo::decode(&bytes).expect("decodes"), new);
        // An older node reading the current layout ignores the trailing address.
        let as_v1: MemberInfoV1 = postcard::from_bytes(&bytes).expect("a prefix decodes");
        assert_eq!(MemberInfo::from(as_v1), member(2, None));
    }

    /// Access records with authentication founded: a user `root` and a signing key.
    fn auth_with_root() -> AuthState {
        let mut auth = AuthState::default();
        auth.apply(
            5,
            AuthCommand::Bootstrap {
                user: "root".into(),
                password_hash: "$argon2id$h".into(),
                signing_key: Bytes::from(vec![1; crate::auth::SIGNING_KEY_BYTES]),
            },
        )
        .expect("bootstrapped");
        auth
    }

    #[test]
    fn records_for_a_new_cluster_keep_only_the_access_records() {
        // Given the records of a cluster with members, a removal and a user,
        let auth = auth_with_root();
        let old = SnapshotExtra {
            cluster_id: ClusterId(7),
            members: vec![member(1, Some("127.0.0.1:9091"))],
            removed: vec![(NodeId(3), LogIndex(12))],
            auth: auth.clone(),
        };
        // when they are rewritten for cluster 9,
        let fresh = Bytes::from(vec![2; crate::auth::SIGNING_KEY_BYTES]);
        let (was, bytes) = records_for_new_cluster(20, &old.encode(), ClusterId(9), fresh.clone())
            .expect("rewritten");
        // then they name cluster 9 with no members and no removals, keep the users, and sign
        // tokens with a key of their own (the old cluster's tokens are not accepted).
        assert_eq!(was, ClusterId(7));
        let new = SnapshotExtra::decode(&bytes).expect("decodes");
        assert_eq!(new.cluster_id, ClusterId(9));
        assert!(new.members.is_empty() && new.removed.is_empty());
        assert_eq!(new.auth.signing_key, Some(fresh.clone()));
        let mut kept = new.auth.clone();
        kept.signing_key = auth.signing_key.clone();
        assert_eq!(kept, auth);
        // A cluster that never made a key gets none (one is made when auth is turned on).
        let keyless = SnapshotExtra {
            auth: AuthState::default(),
            ..old
        };
        let (_, bytes) =
            records_for_new_cluster(20, &keyless.encode(), ClusterId(9), fresh).expect("rewritten");
        assert_eq!(
            SnapshotExtra::decode(&bytes)
                .expect("decodes")
                .auth
                .signing_key,
            None
        );
        // Bytes that are not records are refused as damage.
        assert!(records_for_new_cluster(20, b"not records", ClusterId(9), Bytes::new()).is_err());
    }

    #[test]
    fn snapshot_records_of_either_layout_read_back() {
        let extra = SnapshotExtra {
            cluster_id: ClusterId(7),
            members: vec![member(1, Some("127.0.0.1:9091")), member(2, None)],
            removed: vec![(NodeId(3), LogIndex(12))],
            auth: auth_with_root(),
        };
        let decoded = SnapshotExtra::decode(&extra.encode()).expect("decodes");
        assert_eq!(decoded.members, extra.members);
        assert_eq!(decoded.removed, extra.removed);
        assert_eq!(decoded.cluster_id, extra.cluster_id);
        assert_eq!(decoded.auth, extra.auth);
        // Given the second layout (no access records), the same records and auth off.
        let v2 = SnapshotExtraV2 {
            cluster_id: ClusterId(7),
            members: extra.members.iter().map(MemberInfo::v1).collect(),
            removed: extra.removed.clone(),
            grpc_addrs: vec![(NodeId(1), "127.0.0.1:9091".into())],
        };
        let decoded =
            SnapshotExtra::decode(&postcard::to_stdvec(&v2).expect("encodes")).expect("decodes");
        assert_eq!(decoded.members, extra.members);
        assert_eq!(decoded.auth, AuthState::default());
        // A current payload whose access records are cut short is refused, not read as the
        // second layout without them.
        let mut cut = extra.encode();
        cut.truncate(cut.len() - 3);
        assert!(SnapshotExtra::decode(&cut).is_err());
        // Given the first layout (no gRPC addresses), the same records without them.
        let v1 = SnapshotExtraV1 {
            cluster_id: ClusterId(7),
            members: extra.members.iter().map(MemberInfo::v1).collect(),
            removed: extra.removed.clone(),
        };
        let decoded =
            SnapshotExtra::decode(&postcard::to_stdvec(&v1).expect("encodes")).expect("decodes");
        assert_eq!(decoded.members, vec![member(1, None), member(2, None)]);
        assert_eq!(decoded.removed, extra.removed);
    }
}
