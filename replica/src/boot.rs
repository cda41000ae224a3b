//! How a replica starts, the steps the server and the simulation share: open its store (or
//! create it, founding a cluster or waiting to be added to one), restore the state machine
//! from the kept snapshot, and learn where the peers are before anything is applied (the snapshot's address book, then the member records still
//! in the log, applied or not, newest last: a restart never depends on how far it had
//! applied).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use raft::core::{
    ConfChange, ConfChangeKind, ConfChangeSingle, Entry, EntryPayload, HardState, LogIndex, NodeId,
    StorageError, Term,
};
use raft::node::{
    ClusterId, DurableState, LogStore, SnapshotFiles, SnapshotFilesError, StateMachine, StoreError,
    WalLogStore,
};

use crate::machine::{self, Book, Machine};

/// How a replica's store is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreStart {
    /// The store exists: a restart.
    Existing,
    /// A blank store, made for `cluster`. With `founders`, it founds the cluster with them as
    /// its voters; with none, the replica waits to be added by the cluster's leader.
    New {
        /// The cluster the store belongs to.
        cluster: ClusterId,
        /// The founding voters (empty: a joining replica).
        founders: BTreeSet<NodeId>,
    },
}

/// Opens the replica's store on `wal`, or creates it as `start` says.
pub fn open_store<F: wal::FileSystem>(
    wal: wal::Wal<F>,
    files: Arc<dyn SnapshotFiles>,
    start: &StoreStart,
) -> Result<WalLogStore<F>, StoreError> {
    match start {
        StoreStart::Existing => WalLogStore::open(wal, files),
        StoreStart::New { cluster, founders } => {
            let mut store = WalLogStore::create(wal, files, DurableState::new(*cluster))?;
            if !founders.is_empty() {
                found_cluster(&mut store, founders)?;
            }
            Ok(store)
        }
    }
}

/// A replica's state machine as its store's snapshot left it.
pub struct Restored {
    /// The state machine.
    pub machine: Machine,
    /// Its applied address book, as it changes.
    pub book: tokio::sync::watch::Receiver<Book>,
    /// The size of the snapshot file restored (`None`: the store has no snapshot yet).
    pub snapshot_bytes: Option<u64>,
}

/// A state machine for `store`'s cluster, restored from the snapshot the store records (kept
/// in `files`), if any.
pub fn restored_machine<F: wal::FileSystem>(
    store: &WalLogStore<F>,
    files: &dyn SnapshotFiles,
) -> Result<Restored, SnapshotFilesError> {
    let (mut machine, book) = Machine::new(kv::KvConfig::default(), store.cluster_id());
    let snapshot = store.snapshot_metadata().clone();
    let snapshot_bytes = if snapshot.index > LogIndex::ZERO {
        Some(restore_from_files(&mut machine, files, &snapshot)?)
    } else {
        None
    };
    Ok(Restored {
        machine,
        book,
        snapshot_bytes,
    })
}

/// Restores `machine` at start-up from the snapshot kept at `metadata`: streamed from its file
/// and checked whole, as a snapshot from a leader is. Returns the file's size in bytes.
fn restore_from_files(
    machine: &mut Machine,
    files: &dyn SnapshotFiles,
    metadata: &raft::core::SnapshotMetadata,
) -> Result<u64, SnapshotFilesError> {
    let (mut data, bytes) = files.open(metadata)?;
    let restored = (machine.restorer())(metadata, &mut data)?;
    machine.install(metadata, restored);
    Ok(bytes)
}

/// Writes the founding entry of a new cluster: `founders` as its voters, committed (the
/// server founds clusters of one; the simulation founds several voters at once).
pub fn found_cluster<F: wal::FileSystem>(
    store: &mut WalLogStore<F>,
    founders: &BTreeSet<NodeId>,
) -> Result<(), StoreError> {
    let founding = ConfChange {
        changes: founders
            .iter()
            .map(|&node| ConfChangeSingle {
                kind: ConfChangeKind::AddVoter,
                node,
            })
            .collect(),
    };
    let first = Entry {
        term: Term(1),
        index: LogIndex(1),
        payload: EntryPayload::ConfChange(founding),
    };
    let hard_state = HardState {
        term: Term(1),
        vote: None,
        commit: LogIndex(1),
    };
    store.persist(None, &[first], Some(&hard_state))?;
    store.persist_commit(LogIndex(1))
}

/// The address records the store holds after its snapshot (what [`initial_addresses`]
/// reads).
pub fn address_record_entries<F: wal::FileSystem>(
    store: &WalLogStore<F>,
) -> Result<Vec<Entry>, StorageError> {
    use raft::core::Storage;
    // After the snapshot only: the catch-up tail before it holds records the snapshot's
    // address book already supersedes. Only the address records are decoded: the commands
    // around them are nearly all of a long tail, and the applier reads them anyway.
    let first = store.snapshot_metadata().index.next();
    let last = store.last_index()?;
    store.commands_tagged(first, last.next(), machine::TAG_MEMBER)
}

/// Where a starting node's peers are, before it has applied anything: the address book of
/// the snapshot it restored (`machine`), then the member records in its log, applied or not,
/// newest last.
pub fn initial_addresses(machine: &Machine, log: &[Entry]) -> BTreeMap<NodeId, String> {
    let mut addresses: BTreeMap<NodeId, String> = machine
        .members()
        .iter()
        .map(|(id, m)| (*id, m.raft_addr.clone()))
        .collect();
    for member in machine::members_in_log(log) {
        raft::node::names::register(member.id, &member.name);
        addresses.insert(member.id, member.raft_addr);
    }
    addresses
}
