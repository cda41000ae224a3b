//! `raftkv restore --from FILE --data-dir DIR`: prepares a blank data directory from a backup
//! (`GET /admin/backup`, `kvcli backup save`) so that a node started on it founds a new
//! cluster holding the backup's data, as `etcdutl snapshot restore` does for etcd.
//!
//! What it writes is what the node itself would hold right after installing the backup as a
//! snapshot from a leader, so the node's ordinary restart path starts it:
//! - `snapshots/snap-<index>-<term>.snap`: the backup's keys, revisions, versions and client
//!   sessions as they are, with its cluster records rewritten for the new cluster
//!   ([`replica::machine::records_for_new_cluster`]: a fresh cluster id, no member addresses,
//!   no removals, the users, roles and API keys kept, a new token-signing key);
//! - `wal/hardstate`: the snapshot's index and term, the configuration {this node} as the only
//!   voter, the backup's term with no vote, the snapshot's index as committed, and the new
//!   cluster id; `wal/`: an empty log starting after the snapshot's index.
//!
//! Started, the node is its cluster's only voter, so it elects itself at once (a term above the
//! backup's) and, as leader, records its own addresses. Other nodes join it with `--join-addr`
//! as usual.
//!
//! The new cluster's log starts [`RESTORE_INDEX_BUMP`] indexes past the backup's (as etcd's
//! `--bump-revision`): every new write's revision is far above any the old cluster handed out
//! after the backup, and so are new client-session ids (a session's id is the index that
//! registered it). The jump also expires every client session of the backup: a session is the
//! old cluster's promise of exactly-once, which the new cluster cannot keep for writes made
//! after the backup, so its clients register again rather than have a retry matched against
//! another client's session. Keys keep their revisions and versions.
//!
//! Invariants: nothing is written unless the data directory is blank ([`data_dir::inspect`])
//! and the whole backup verified (magic, format, checksum, structure, every invariant of the
//! state, and cluster records that decode); a restore that fails after it began writing
//! removes what it wrote ([`data_dir::CreatedGuard`]); the directory is read back as a node
//! opens it before the restore reports success.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft::core::{Configuration, HardState, LogIndex, NodeId, SnapshotMetadata, Term};
use raft::node::{ClusterId, DurableState, SnapshotFiles, WalLogStore};

use crate::config::Config;
use crate::server::data_dir::{self, CreatedGuard, DataDirError, Found, SNAPSHOTS_DIR, WAL_DIR};
use crate::server::snapshots::KvSnapshotFiles;

/// How many indexes past the backup's the restored cluster's log starts (as etcd's
/// `--bump-revision`, and its suggested size): far more than a cluster writes between a
/// backup and its restore, so no new revision or session id repeats one the old cluster handed
/// out after the backup; above the sessions' idle limit
/// ([`kv::session::SESSION_IDLE_INDEXES_DEFAULT`]), so the backup's sessions expire.
pub const RESTORE_INDEX_BUMP: u64 = 1_000_000_000;

/// What a restore prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The data directory written.
    pub data_dir: PathBuf,
    /// The node that will start on it, the new cluster's only voter.
    pub node_id: String,
    /// The new cluster's id.
    pub cluster_id: ClusterId,
    /// The cluster the backup was taken of.
    pub from_cluster: ClusterId,
    /// The backup's index: its latest applied entry.
    pub index: u64,
    /// The restored node's applied index, [`RESTORE_INDEX_BUMP`] past the backup's: its log
    /// starts after it, and every new write's revision is above it.
    pub start_index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
    /// Keys restored.
    pub keys: u64,
}

/// Why a restore was refused or failed. Each leaves the data directory as it was.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The backup file cannot be read (not damage: the file or the disk).
    #[error("cannot read the backup {path}: {source}")]
    Read {
        /// The backup file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not a RaftKV backup at all.
    #[error("{path} is not a RaftKV backup: {reason}")]
    NotABackup {
        /// The file.
        path: PathBuf,
        /// What it lacks.
        reason: String,
    },
    /// The file is a backup, damaged or cut short.
    #[error(
        "the backup {path} is damaged or incomplete and was not restored ({source}); save a new backup with kvcli backup save"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What the snapshot reader found.
        source: kv::SnapshotReadError,
    },
    /// The data directory holds a node's data already.
    #[error(
        "the data directory {dir} already holds a node's data; a restore writes only into an empty directory (move this one aside, or give another --data-dir)"
    )]
    NotBlank {
        /// The data directory.
        dir: PathBuf,
    },
    /// The data directory holds a damaged or partial node, or cannot be read.
    #[error("{0}")]
    DataDir(#[from] DataDirError),
    /// Writing the restored node failed; what was written is removed.
    #[error(
        "writing the restored node into {dir} failed, and what was written is removed: {reason}"
    )]
    Write {
        /// The data directory.
        dir: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Restores the backup `from` into the (blank) data directory `config.storage.data_dir`, for the
/// node `config.raft.node_id`, with `config.wal.segment_size` segments.
pub fn restore(from: &Path, config: &Config) -> Result<Restored, RestoreError> {
    let dir = config.storage.data_dir.clone();
    match data_dir::inspect(&dir)? {
        Found::Blank => {}
        Found::Member => return Err(RestoreError::NotBlank { dir }),
    }
    let mut backup = read_backup(from)?;
    let cluster_id = ClusterId::random();
    let signing_key = crate::auth::new_signing_key().map_err(|e| RestoreError::Write {
        dir: dir.clone(),
        reason: format!(
            "making the new cluster's token-signing key: {}",
            e.message()
        ),
    })?;
    let (from_cluster, records) = replica::machine::records_for_new_cluster(
        backup.meta.index,
        &backup.meta.config,
        cluster_id,
        signing_key,
    )
    .map_err(|e| RestoreError::NotABackup {
        path: from.to_path_buf(),
        reason: e.to_string(),
    })?;
    let me = raft::node::driver::node_id_for_name(&config.raft.node_id);
    let start_index = backup
        .meta
        .index
        .checked_add(RESTORE_INDEX_BUMP)
        .ok_or_else(|| RestoreError::NotABackup {
            path: from.to_path_buf(),
            reason: format!(
                "its index {} leaves no room for a new log after it",
                backup.meta.index
            ),
        })?;
    // The jump is an applied index with no entry, as a no-op would be; it expires the
    // backup's sessions (see the module's documentation).
    backup
        .store
        .mark_applied(start_index)
        .expect("invariant: the start index is above the backup's applied index");
    let plan = Plan {
        dir: &dir,
        me,
        cluster_id,
        index: start_index,
        term: backup.meta.term,
        records: &records,
        segment_bytes: config.wal.segment_size,
    };
    let keys = backup.store.len() as u64;
    let guard = CreatedGuard::before_creating(&dir);
    let write_failed = |reason: String| RestoreError::Write {
        dir: dir.clone(),
        reason,
    };
    write(&plan, &backup.store).map_err(write_failed)?;
    // The state is written: free it before the check reads it all back.
    drop(backup);
    check_opens(&plan).map_err(write_failed)?;
    guard.disarm();
    Ok(Restored {
        data_dir: dir.clone(),
        node_id: config.raft.node_id.clone(),
        cluster_id,
        from_cluster,
        index: start_index - RESTORE_INDEX_BUMP,
        start_index,
        term: plan.term,
        keys,
    })
}

/// A backup read whole and checked.
struct Backup {
    meta: kv::SnapshotMeta,
    store: kv::KvStore,
}

/// Reads the backup at `path` in one streamed pass, checking all of it as a node checks a
/// snapshot from a leader, and builds the state.
fn read_backup(path: &Path) -> Result<Backup, RestoreError> {
    let mut file = std::fs::File::open(path).map_err(|source| RestoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (meta, store) = match kv::read_snapshot(&mut file, kv::KvConfig::default()) {
        Ok(read) => read,
        Err(kv::SnapshotReadError::Io(source)) => {
            return Err(RestoreError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
        Err(kv::SnapshotReadError::Corrupt(
            kv::CorruptSnapshot::BadMagic | kv::CorruptSnapshot::UnsupportedVersion { .. },
        )) => {
            return Err(RestoreError::NotABackup {
                path: path.to_path_buf(),
                reason: "it does not begin as a RaftKV snapshot of a format this binary reads"
                    .to_string(),
            });
        }
        Err(source) => {
            return Err(RestoreError::Damaged {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if meta.index == 0 {
        return Err(RestoreError::NotABackup {
            path: path.to_path_buf(),
            reason: "it holds no applied state (index 0)".to_string(),
        });
    }
    Ok(Backup { meta, store })
}

/// What the restored directory holds.
struct Plan<'a> {
    dir: &'a Path,
    me: NodeId,
    cluster_id: ClusterId,
    index: u64,
    term: u64,
    /// The new cluster's records, the snapshot's configuration bytes.
    records: &'a [u8],
    segment_bytes: u64,
}

impl Plan<'_> {
    /// The durable state a node holds right after installing the backup as a snapshot.
    fn durable_state(&self) -> DurableState {
        DurableState {
            hard_state: HardState {
                term: Term(self.term),
                vote: None,
                commit: LogIndex(self.index),
            },
            snapshot: SnapshotMetadata {
                index: LogIndex(self.index),
                term: Term(self.term),
                configuration: Configuration::with_voters([self.me]),
            },
            cluster_id: self.cluster_id,
        }
    }

    fn snapshot_files(&self) -> Result<Arc<dyn SnapshotFiles>, String> {
        let files = KvSnapshotFiles::open(self.dir.join(SNAPSHOTS_DIR), self.cluster_id)
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(files))
    }

    fn wal(&self) -> Result<wal::Wal<wal::RealFs>, String> {
        wal::Wal::open(
            wal::RealFs,
            self.dir.join(WAL_DIR),
            wal::WalConfig {
                segment_bytes: self.segment_bytes,
            },
        )
        .map_err(|e| e.to_string())
    }
}

/// Writes the snapshot file (read back and checked), then the log store around it: the order
/// a node keeps (a snapshot's data is durable before the state that names it).
fn write(plan: &Plan<'_>, store: &kv::KvStore) -> Result<(), String> {
    std::fs::create_dir_all(plan.dir)
        .map_err(|e| format!("creating {}: {e}", plan.dir.display()))?;
    let snapshots =
        kv::SnapshotStore::open(plan.dir.join(SNAPSHOTS_DIR)).map_err(|e| e.to_string())?;
    let view = store.view();
    let file = snapshots
        .write(plan.index, plan.term, |out| {
            view.write_snapshot(plan.term, plan.records, out).map(drop)
        })
        .map_err(|e| e.to_string())?;
    // The other side of the disk: the file must read back as what was meant.
    let (mut written, _) = snapshots.open_snapshot(&file).map_err(|e| e.to_string())?;
    let meta = kv::verify_snapshot(&mut written).map_err(|e| {
        format!(
            "the snapshot written to {} does not verify: {e}",
            file.path.display()
        )
    })?;
    if (meta.index, meta.term) != (plan.index, plan.term) || meta.config.as_ref() != plan.records {
        return Err(format!(
            "the snapshot written to {} does not read back as written",
            file.path.display()
        ));
    }
    let created = WalLogStore::create(plan.wal()?, plan.snapshot_files()?, plan.durable_state())
        .map_err(|e| e.to_string())?;
    drop(created);
    std::fs::File::open(plan.dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("fsync {}: {e}", plan.dir.display()))
}

/// Opens the directory as a restarting node does (its log store, then its state machine from
/// the snapshot) and checks it is the new cluster's, with this node its only voter.
fn check_opens(plan: &Plan<'_>) -> Result<(), String> {
    let files = plan.snapshot_files()?;
    let store = WalLogStore::open(plan.wal()?, Arc::clone(&files)).map_err(|e| e.to_string())?;
    let restored = replica::boot::restored_machine(&store, files.as_ref())
        .map_err(|e| format!("the restored snapshot does not load: {e}"))?;
    let initial = raft::core::Storage::initial_state(&store).map_err(|e| e.to_string())?;
    let wanted = plan.durable_state();
    if store.cluster_id() != plan.cluster_id
        || initial.hard_state != wanted.hard_state
        || initial.snapshot_metadata != wanted.snapshot
        || restored.machine.kv.applied_index() != plan.index
    {
        return Err(format!(
            "the directory does not open as the restored node (cluster {}, {:?}, {:?}, applied {})",
            store.cluster_id(),
            initial.hard_state,
            initial.snapshot_metadata,
            restored.machine.kv.applied_index()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv::Command;

    /// A backup file as a node would serve it: a store with a session, keys written twice,
    /// and the records of cluster 7 with a member and a removal.
    fn backup_file(dir: &Path) -> PathBuf {
        let mut store = kv::KvStore::new(kv::KvConfig::default());
        store
            .apply(1, &Command::RegisterSession.encode())
            .expect("register");
        store
            .apply(2, &Command::put("a", "1").encode())
            .expect("put");
        store
            .apply(3, &Command::put("a", "2").encode())
            .expect("put");
        store
            .apply(4, &Command::put("b", "3").encode())
            .expect("put");
        let (_, records) = replica::machine::records_for_new_cluster(
            4,
            &records_of_cluster_seven(),
            ClusterId(7),
            bytes::Bytes::new(),
        )
        .expect("records");
        let path = dir.join("backup.snap");
        let mut out = std::fs::File::create(&path).expect("created");
        store
            .view()
            .write_snapshot(2, &records, &mut out)
            .expect("written");
        path
    }

    /// Records of a cluster, made the way a node makes them: from an empty machine's view.
    fn records_of_cluster_seven() -> Vec<u8> {
        let (machine, _) = replica::machine::Machine::new(kv::KvConfig::default(), ClusterId(7));
        let mut bytes = Vec::new();
        use raft::node::{SnapshotView, StateMachine};
        machine
            .view(&SnapshotMetadata::default())
            .write_to(&mut bytes)
            .expect("written");
        kv::read_meta(&mut bytes.as_slice())
            .expect("meta")
            .config
            .to_vec()
    }

    fn config_for(dir: &Path) -> Config {
        let mut config = Config::default();
        config.storage.data_dir = dir.to_path_buf();
        config.raft.node_id = "restored".to_string();
        config
    }

    #[test]
    fn a_backup_restores_into_a_blank_directory_as_a_new_cluster_of_one() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let backup = backup_file(root.path());
        let config = config_for(&root.path().join("data"));
        // Given a blank directory, when the backup is restored into it,
        let restored = restore(&backup, &config).expect("restored");
        // then it is a new cluster's, at the backup's index and term, with its keys, its log
        // starting well past the backup's index,
        assert_eq!((restored.index, restored.term, restored.keys), (4, 2, 2));
        assert_eq!(restored.start_index, 4 + RESTORE_INDEX_BUMP);
        assert_eq!(restored.from_cluster, ClusterId(7));
        assert_ne!(restored.cluster_id, ClusterId(7));
        assert_eq!(
            data_dir::inspect(&config.storage.data_dir).expect("inspected"),
            Found::Member
        );
        // and a node opening it finds its keys with their revisions and versions.
        let plan_files = KvSnapshotFiles::open(
            config.storage.data_dir.join(SNAPSHOTS_DIR),
            restored.cluster_id,
        )
        .expect("files");
        let files: Arc<dyn SnapshotFiles> = Arc::new(plan_files);
        let wal = wal::Wal::open(
            wal::RealFs,
            config.storage.data_dir.join(WAL_DIR),
            wal::WalConfig {
                segment_bytes: config.wal.segment_size,
            },
        )
        .expect("wal");
        let store = WalLogStore::open(wal, Arc::clone(&files)).expect("opens");
        let machine = replica::boot::restored_machine(&store, files.as_ref())
            .expect("loads")
            .machine;
        let a = machine.kv.get(b"a").expect("a is there");
        assert_eq!(
            (a.value.as_ref(), a.mod_revision, a.version),
            (&b"2"[..], 3, 2)
        );
        assert!(machine.members().is_empty() && machine.removed().is_empty());
        assert_eq!(machine.cluster_id(), restored.cluster_id);
        // The backup's client session is not carried over: its clients register anew.
        assert_eq!(machine.kv.applied_index(), restored.start_index);
        assert!(machine.kv.sessions().is_empty());
    }

    #[test]
    fn a_damaged_truncated_or_foreign_file_is_refused_and_the_directory_left_blank() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let backup = backup_file(root.path());
        let bytes = std::fs::read(&backup).expect("read");
        let config = config_for(&root.path().join("data"));
        let cases: [(&str, Vec<u8>); 3] = [
            ("flipped", {
                let mut b = bytes.clone();
                let middle = b.len() / 2;
                b[middle] ^= 0x01;
                b
            }),
            ("truncated", bytes[..bytes.len() - 7].to_vec()),
            ("foreign", b"hello, this is not a backup at all".to_vec()),
        ];
        for (name, content) in cases {
            let path = root.path().join(name);
            std::fs::write(&path, content).expect("written");
            let e = restore(&path, &config).expect_err(name);
            match name {
                "foreign" => assert!(matches!(e, RestoreError::NotABackup { .. }), "{e}"),
                _ => assert!(matches!(e, RestoreError::Damaged { .. }), "{name}: {e}"),
            }
            assert!(!config.storage.data_dir.exists(), "{name}: nothing written");
        }
    }

    #[test]
    fn a_directory_with_a_node_is_refused() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let backup = backup_file(root.path());
        let config = config_for(&root.path().join("data"));
        restore(&backup, &config).expect("restored");
        let e = restore(&backup, &config).expect_err("refused");
        assert!(matches!(e, RestoreError::NotBlank { .. }), "{e}");
    }
}
