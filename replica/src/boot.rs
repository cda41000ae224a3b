//! How a replica starts, the steps the server and the simulation share: found a cluster in a
//! blank store, restore the state machine from the kept snapshot, and learn where the peers
//! are before anything is applied (the snapshot's address book, then the member records still
//! in the log, applied or not, newest last: a restart never depends on how far it had
//! applied).

use std::collections::BTreeMap;

use raft::core::{
    ConfChange, ConfChangeKind, Entry, EntryPayload, HardState, LogIndex, NodeId, StorageError,
    Term,
};
use raft::node::{
    LogStore, SnapshotFiles, SnapshotFilesError, StateMachine, StoreError, WalLogStore,
};

use crate::machine::{self, Machine};

/// Restores `machine` at start-up from the snapshot kept at `metadata`: streamed from its file
/// and checked whole, as a snapshot from a leader is. Returns the file's size in bytes. Public
/// so that the simulation starts its nodes with the server's own code.
pub fn restore_from_files(
    machine: &mut Machine,
    files: &dyn SnapshotFiles,
    metadata: &raft::core::SnapshotMetadata,
) -> Result<u64, SnapshotFilesError> {
    let (mut data, bytes) = files.open(metadata)?;
    let restored = (machine.restorer())(metadata, &mut data)?;
    machine.install(metadata, restored);
    Ok(bytes)
}

/// Writes the founding entry of a new cluster of one: `id` as its only voter, committed.
/// Public so that the simulation founds its clusters with the server's own code.
pub fn found_cluster<F: wal::FileSystem>(
    store: &mut WalLogStore<F>,
    id: NodeId,
) -> Result<(), StoreError> {
    let first = Entry {
        term: Term(1),
        index: LogIndex(1),
        payload: EntryPayload::ConfChange(ConfChange::single(ConfChangeKind::AddVoter, id)),
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
/// reads). Public so that the simulation starts its nodes with the server's own code.
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
