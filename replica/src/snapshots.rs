//! Snapshot files for the node, over the `kv` crate's [`kv::SnapshotStore`]: checksummed files
//! written in one streamed pass to a temporary name, fsynced, renamed, the newest three kept.
//!
//! A snapshot's data is a whole `kv` snapshot file, so what the leader streams is exactly what
//! the follower keeps. A follower streams it into a `.recv` file, which is checked whole (the
//! `kv` format's checksum and every invariant, and that it belongs to this node's cluster) when
//! it ends; only then does the node hear of it, and the log store keeps it when it persists the
//! snapshot. The Raft metadata (term and membership) is kept by the log store; here a snapshot
//! is found by its index.
//!
//! Nothing here holds the state in memory: snapshots are written from a view, sent from the
//! file and received into one.

use std::io::Read;
use std::sync::{Arc, Mutex};

use raft::core::{LogIndex, SnapshotMetadata};
use raft::node::{ClusterId, SnapshotFiles, SnapshotFilesError, SnapshotSink, SnapshotView};

use super::machine::records_cluster;

/// A snapshot received and checked, waiting to be kept: its index, term and file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checked {
    index: u64,
    term: u64,
    path: std::path::PathBuf,
}

/// The most checked receptions waiting to be kept at once: the one the node is taking, and one
/// newer (a leader that took a newer snapshot meanwhile). An older one is removed with its
/// file, so a peer cannot fill the disk with checked snapshots the node never takes.
const CHECKED_WAITING_MAX: usize = 2;

/// The checked receptions waiting to be kept, oldest first. Shared with the receptions in
/// progress; the file operations on them happen under this lock, so that a file is never
/// removed while it is being kept.
type Received = Arc<Mutex<Vec<Checked>>>;

/// The buffer between a snapshot file and its reader (the transport's chunks, or a restore):
/// few syscalls for a multi-GiB file, small beside the state.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// How much nicer than the node's other threads the snapshot writer runs (added to the
/// process's nice value, up to 19). It writes a view of the state while the node goes on: it
/// may take longer when the machine is busy, never the writes' CPU.
pub const SNAPSHOT_WRITER_NICENESS: i32 = 10;

/// Raises the calling thread's nice value by `by` (on Linux, `setpriority` on the calling
/// thread affects that thread only). A refusal only costs the priority: logged, not an error.
fn lower_this_threads_priority(by: i32) {
    let result = rustix::process::getpriority_process(None)
        .and_then(|now| rustix::process::setpriority_process(None, (now + by).min(19)));
    if let Err(error) = result {
        tracing::debug!(%error, "the snapshot writer runs at the node's priority");
    }
}

const RECEIVED_LOCK: &str = "the received-snapshot lock is never held across a panic";

/// The node's kind of error for a `kv` snapshot store error about the snapshot at `index`: the
/// disk stays the disk; anything about the content is damage.
fn files_error(index: u64, e: kv::SnapshotError) -> SnapshotFilesError {
    match e {
        kv::SnapshotError::Io { op, path, source } => {
            SnapshotFilesError::io(format!("{op} {}", path.display()), source)
        }
        damaged => SnapshotFilesError::damaged(LogIndex(index), damaged),
    }
}

/// The node's snapshot directory, holding snapshots of one cluster only.
pub struct KvSnapshotFiles {
    store: kv::SnapshotStore,
    cluster_id: ClusterId,
    received: Received,
}

impl KvSnapshotFiles {
    /// Opens (creating) the directory for the snapshots of cluster `cluster_id`.
    pub fn open(dir: std::path::PathBuf, cluster_id: ClusterId) -> Result<Self, kv::SnapshotError> {
        let store = kv::SnapshotStore::open(dir)?;
        Ok(KvSnapshotFiles {
            store,
            cluster_id,
            received: Arc::default(),
        })
    }

    /// The kept file of the snapshot at `index` (named by its index and term; a file an older
    /// version named with term 0 is found by its index too).
    fn file(&self, metadata: &SnapshotMetadata) -> Result<kv::SnapshotFile, SnapshotFilesError> {
        let index = metadata.index.0;
        self.store
            .list()
            .map_err(|e| files_error(index, e))?
            .into_iter()
            .find(|f| f.index == index)
            .ok_or(SnapshotFilesError::Missing {
                state: "kept",
                index: metadata.index,
                term: metadata.term,
            })
    }
}

/// A snapshot being received from a peer into the snapshot directory.
struct Receiving {
    file: kv::Receiving,
    /// The index announced for it, for errors.
    index: u64,
    cluster_id: ClusterId,
    received: Received,
}

impl SnapshotSink for Receiving {
    fn write(&mut self, chunk: &[u8]) -> Result<(), SnapshotFilesError> {
        self.file
            .write(chunk)
            .map_err(|e| files_error(self.index, e))
    }

    fn finish(self: Box<Self>) -> Result<(), SnapshotFilesError> {
        let Receiving {
            file,
            index,
            cluster_id,
            received,
        } = *self;
        let path = file.path().to_path_buf();
        // Checked whole here: checksum, structure and every invariant of the `kv` state.
        let meta = file.finish().map_err(|e| files_error(index, e))?;
        let cluster = records_cluster(meta.index, &meta.config)?;
        if cluster != cluster_id {
            let _ = std::fs::remove_file(&path);
            return Err(SnapshotFilesError::WrongCluster {
                index: LogIndex(meta.index),
                theirs: cluster,
                ours: cluster_id,
            });
        }
        let mut waiting = received.lock().expect(RECEIVED_LOCK);
        if waiting
            .iter()
            .any(|c| (c.index, c.term) == (meta.index, meta.term))
        {
            // The same snapshot, checked twice: the first copy is the one kept.
            let _ = std::fs::remove_file(&path);
            return Ok(());
        }
        waiting.push(Checked {
            index: meta.index,
            term: meta.term,
            path,
        });
        while waiting.len() > CHECKED_WAITING_MAX {
            let oldest = waiting.remove(0);
            let _ = std::fs::remove_file(&oldest.path);
        }
        Ok(())
    }
}

impl SnapshotFiles for KvSnapshotFiles {
    fn write(
        &self,
        metadata: &SnapshotMetadata,
        view: &dyn SnapshotView,
    ) -> Result<u64, SnapshotFilesError> {
        // On a thread of its own at a lower CPU priority: encoding a large state takes a core
        // for seconds, and on a small machine that core is the one serving the writes.
        std::thread::scope(|scope| {
            let writer = std::thread::Builder::new()
                .name("snapshot-writer".into())
                .spawn_scoped(scope, || {
                    lower_this_threads_priority(SNAPSHOT_WRITER_NICENESS);
                    self.store
                        .write(metadata.index.0, metadata.term.0, |out| view.write_to(out))
                        .map(|file| file.bytes)
                        .map_err(|e| files_error(metadata.index.0, e))
                })
                .map_err(|e| SnapshotFilesError::io("starting the snapshot writer thread", e))?;
            writer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn open(
        &self,
        metadata: &SnapshotMetadata,
    ) -> Result<(Box<dyn Read + Send>, u64), SnapshotFilesError> {
        let file = self.file(metadata)?;
        let (handle, bytes) = self
            .store
            .open_snapshot(&file)
            .map_err(|e| files_error(file.index, e))?;
        Ok((
            Box::new(std::io::BufReader::with_capacity(READ_BUFFER_BYTES, handle)),
            bytes,
        ))
    }

    fn receive(
        &self,
        metadata: &SnapshotMetadata,
        _bytes: u64,
    ) -> Result<Box<dyn SnapshotSink>, SnapshotFilesError> {
        let (index, term) = (metadata.index.0, metadata.term.0);
        if self.has_received(metadata) || self.is_kept(index, term)? {
            // The leader sent it again (its retry timer runs from when it asked): the copy
            // in hand is the one the node takes.
            return Err(SnapshotFilesError::AlreadyReceived {
                index: metadata.index,
                term: metadata.term,
            });
        }
        let file = self
            .store
            .receive(index, term)
            .map_err(|e| files_error(index, e))?;
        Ok(Box::new(Receiving {
            file,
            index,
            cluster_id: self.cluster_id,
            received: Arc::clone(&self.received),
        }))
    }

    fn has_received(&self, metadata: &SnapshotMetadata) -> bool {
        self.received
            .lock()
            .expect(RECEIVED_LOCK)
            .iter()
            .any(|c| (c.index, c.term) == (metadata.index.0, metadata.term.0))
    }

    fn keep_received(&self, metadata: &SnapshotMetadata) -> Result<(), SnapshotFilesError> {
        let (index, term) = (metadata.index.0, metadata.term.0);
        let mut waiting = self.received.lock().expect(RECEIVED_LOCK);
        let position = waiting
            .iter()
            .position(|c| (c.index, c.term) == (index, term));
        match position {
            Some(position) => {
                let checked = waiting.remove(position);
                self.store
                    .keep_received(&checked.path, index, term)
                    .map_err(|e| files_error(index, e))?;
            }
            // Kept by an earlier try whose persist failed after it.
            None if self.is_kept(index, term)? => {}
            None => {
                return Err(SnapshotFilesError::Missing {
                    state: "received",
                    index: metadata.index,
                    term: metadata.term,
                });
            }
        }
        // Checked receptions this one supersedes will never be kept.
        waiting.retain(|c| {
            let superseded = c.index <= index;
            if superseded {
                let _ = std::fs::remove_file(&c.path);
            }
            !superseded
        });
        Ok(())
    }
}

impl KvSnapshotFiles {
    /// Whether the snapshot at `index` and `term` is kept already.
    fn is_kept(&self, index: u64, term: u64) -> Result<bool, SnapshotFilesError> {
        Ok(self
            .store
            .list()
            .map_err(|e| files_error(index, e))?
            .into_iter()
            .any(|f| (f.index, f.term) == (index, term)))
    }
}

#[cfg(test)]
mod tests {
    use raft::core::{Configuration, LogIndex, Term};
    use raft::node::StateMachine;

    use super::*;
    use crate::machine::Machine;

    const CLUSTER: ClusterId = ClusterId(7);

    #[test]
    fn the_snapshot_writer_lowers_only_its_own_threads_priority() {
        // Given this thread's nice value,
        let ours = rustix::process::getpriority_process(None).unwrap();
        // when another thread lowers its own priority,
        let theirs = std::thread::spawn(|| {
            lower_this_threads_priority(SNAPSHOT_WRITER_NICENESS);
            rustix::process::getpriority_process(None).unwrap()
        })
        .join()
        .unwrap();
        // then that thread runs nicer and this one is untouched.
        assert_eq!(theirs, (ours + SNAPSHOT_WRITER_NICENESS).min(19));
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), ours);
    }

    /// The data of a snapshot of an empty machine of `CLUSTER` at `index`, term 1.
    fn snapshot_data(index: u64) -> (SnapshotMetadata, Vec<u8>) {
        let (mut machine, _book) = Machine::new(kv::KvConfig::default(), CLUSTER);
        machine.apply_empty(LogIndex(index));
        let metadata = SnapshotMetadata {
            index: LogIndex(index),
            term: Term(1),
            configuration: Configuration::default(),
        };
        let mut data = Vec::new();
        machine
            .view(&metadata)
            .write_to(&mut data)
            .expect("written to memory");
        (metadata, data)
    }

    fn receive_whole(
        files: &KvSnapshotFiles,
        index: u64,
    ) -> Result<SnapshotMetadata, SnapshotFilesError> {
        let (metadata, data) = snapshot_data(index);
        let mut sink = files.receive(&metadata, data.len() as u64)?;
        sink.write(&data)?;
        sink.finish()?;
        Ok(metadata)
    }

    fn files_in_dir(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).expect("a directory").count()
    }

    #[test]
    fn a_snapshot_sent_again_while_the_first_copy_waits_is_refused_and_the_copy_kept() {
        // Given a node that received and checked the snapshot at 5, not yet kept,
        let dir = tempfile::tempdir().expect("a temporary directory");
        let files = KvSnapshotFiles::open(dir.path().to_path_buf(), CLUSTER).expect("opens");
        let five = receive_whole(&files, 5).expect("received");
        assert!(files.has_received(&five));
        // when the leader sends the same snapshot again (its retry timer fired meanwhile),
        // then the second reception is refused before it touches the first copy,
        let again = receive_whole(&files, 5);
        assert!(
            matches!(again, Err(SnapshotFilesError::AlreadyReceived { .. })),
            "{again:?}"
        );
        assert!(files.has_received(&five));
        // and keeping it (as the log store does when it persists it) keeps the checked copy,
        files.keep_received(&five).expect("kept");
        assert!(!files.has_received(&five));
        let (mut data, _) = files.open(&five).expect("opens");
        let restored =
            (Machine::new(kv::KvConfig::default(), CLUSTER).0.restorer())(&five, &mut data);
        assert!(restored.is_ok());
        // which a retried persist keeps again without error, and a new copy is refused.
        files.keep_received(&five).expect("kept already");
        assert!(receive_whole(&files, 5).is_err());
    }

    #[test]
    fn keeping_a_snapshot_removes_the_checked_copies_it_supersedes() {
        // Given checked receptions at 5 and 6 waiting, the node keeps 6,
        let dir = tempfile::tempdir().expect("a temporary directory");
        let files = KvSnapshotFiles::open(dir.path().to_path_buf(), CLUSTER).expect("opens");
        let five = receive_whole(&files, 5).expect("received");
        let six = receive_whole(&files, 6).expect("received");
        files.keep_received(&six).expect("kept");
        // then the copy at 5 is gone with its file: one snapshot file is left.
        assert!(!files.has_received(&five));
        assert!(files.keep_received(&five).is_err());
        assert_eq!(files_in_dir(dir.path()), 1);
    }

    #[test]
    fn a_reception_says_whether_the_data_is_damaged_or_of_another_cluster() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let files = KvSnapshotFiles::open(dir.path().to_path_buf(), CLUSTER).expect("opens");
        // Given a snapshot whose bytes were damaged in transit,
        let (metadata, mut data) = snapshot_data(5);
        let middle = data.len() / 2;
        data[middle] ^= 0xff;
        let mut sink = files.receive(&metadata, data.len() as u64).expect("starts");
        sink.write(&data).expect("written");
        // then it is refused as damage, naming its index, and not taken.
        match sink.finish() {
            Err(SnapshotFilesError::Damaged { index, .. }) => assert_eq!(index, LogIndex(5)),
            other => panic!("expected damage, got {other:?}"),
        }
        assert!(!files.has_received(&metadata));
        // Given an intact snapshot of another cluster,
        let other = KvSnapshotFiles::open(dir.path().join("other"), ClusterId(CLUSTER.0 + 1))
            .expect("opens");
        let refused = receive_whole(&other, 6);
        // then it is refused naming both clusters.
        match refused {
            Err(SnapshotFilesError::WrongCluster { theirs, ours, .. }) => {
                assert_eq!((theirs, ours), (CLUSTER, ClusterId(CLUSTER.0 + 1)));
            }
            other => panic!("expected a cluster mismatch, got {other:?}"),
        }
    }

    #[test]
    fn checked_copies_never_kept_are_bounded() {
        // Given a peer that streams snapshot after snapshot that the node never takes,
        let dir = tempfile::tempdir().expect("a temporary directory");
        let files = KvSnapshotFiles::open(dir.path().to_path_buf(), CLUSTER).expect("opens");
        for index in 1..=5 {
            receive_whole(&files, index).expect("received");
        }
        // then only the newest few wait, with their files.
        assert_eq!(files_in_dir(dir.path()), CHECKED_WAITING_MAX);
    }
}
