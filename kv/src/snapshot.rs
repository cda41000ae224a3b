//! Snapshots of the state machine: the byte formats and the on-disk store.
//!
//! Job: capture the whole replicated state (map, sessions, applied index and revision) plus
//! the Raft metadata that goes with it (the term of the applied index and the cluster
//! configuration, which this crate keeps as opaque bytes), turn it into bytes that detect
//! damage, and keep the last few on disk so the WAL can be compacted behind them.
//!
//! Format 3 (written): streamed, see [`mod@format`] for its layout. A [`crate::KvView`] is written
//! with [`crate::KvView::write_snapshot`] in one forward pass, and read back with
//! [`read_snapshot`] (building the store), [`verify_snapshot`] (checking only) or
//! [`read_meta`] (the first bytes only), each in one forward pass with bounded memory.
//! [`SnapshotStore::write`] and [`SnapshotStore::receive`] put such streams on disk.
//!
//! Formats 1 and 2 (read only; [`Snapshot::encode`] still writes format 2 for the callers
//! and tests that hold a whole [`Snapshot`]), all integers little-endian:
//!
//! ```text
//! offset  size  field
//!      0     8  magic  b"RKVSNAP\0"
//!      8     4  format version (SNAPSHOT_FORMAT_VERSION)
//!     12     8  body length in bytes
//!     20     4  CRC-32 (crc32fast, IEEE) of bytes 8..20 and of the body
//!     24     n  body: postcard of the snapshot
//! ```
//!
//! Version 1 is version 2 but for sessions' cached responses, which had no write fingerprint;
//! it is restored with no fingerprints.
//!
//! A format-1 or 2 file is accepted only if the magic, version, length (equal to the rest of the file) and
//! checksum all match (checked in that order) and the body decodes with no bytes left over; the content is then
//! re-checked by [`KvStore::restore`] with [`KvStore::check_invariants`].
//!
//! On disk ([`SnapshotStore`]): files are named `snap-<index>-<term>.snap` (20-digit,
//! zero-padded, so names sort by index); a snapshot is written to a `.tmp` file, fsynced,
//! renamed into place and the directory fsynced, so a crash leaves either the whole new file
//! or none of it. After each save only the newest [`SNAPSHOTS_KEPT`] are kept. A snapshot
//! received from a peer streams into a `.recv` file, is verified there, and is renamed into
//! place only when the caller keeps it (see [`files`]). Leftover `.tmp` and `.recv` files are
//! removed when the store is opened.
//!
//! Recovery ([`SnapshotStore::load_newest_with`]) takes the newest snapshot that verifies. A
//! damaged newer file is reported (a `warn` log and in [`Loaded::skipped`]) and the next
//! older one is tried; damaged files are left in place for the operator. Falling back is only
//! correct if the log still holds every entry after the older snapshot's index: the caller
//! must check that (and refuse to start otherwise). Compacting the WAL only up to the
//! *oldest* kept snapshot keeps that true.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::command::KeyValue;
use crate::session::SessionRecord;
use crate::store::{Entry, InvariantError, KvConfig, KvStore};

pub mod files;
pub mod format;

pub use files::{Loaded, Receiving, SNAPSHOT_SYNC_BYTES};
pub use format::{
    SNAPSHOT_CONFIG_BYTES_MAX, SNAPSHOT_SESSION_BYTES_MAX, SNAPSHOT_SESSIONS_MAX,
    SNAPSHOT_TRAILER_BYTES, SnapshotReadError, SnapshotSummary, read_meta, read_snapshot,
    verify_snapshot, verify_snapshot_summary,
};

/// The first eight bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RKVSNAP\0";

/// The snapshot format this binary writes: 3, streamed ([`mod@format`]). Version 2 added each
/// session's fingerprint of its latest write ([`crate::session::CachedResponse::fingerprint`]).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 3;

/// The last whole-file (postcard) format, which [`Snapshot::encode`] still writes.
pub const SNAPSHOT_FORMAT_VERSION_WHOLE: u32 = 2;

/// The oldest snapshot format this binary still reads: version 1 files (and transfers from a
/// node of the previous release) decode with no fingerprints.
pub const SNAPSHOT_FORMAT_VERSION_MIN: u32 = 1;

/// Size of the fixed header before the body of formats 1 and 2, in bytes.
pub const SNAPSHOT_HEADER_BYTES: usize = 24;

/// How many snapshot files [`SnapshotStore::save`] keeps (the newest ones).
pub const SNAPSHOTS_KEPT: usize = 3;

/// Largest snapshot accepted when loading or receiving, in bytes (64 GiB): a length field
/// above this, or a stream that goes on past it, is damage, not data.
pub const SNAPSHOT_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;

const TEMP_SUFFIX: &str = ".tmp";

/// Suffix of a snapshot being received from a peer ([`SnapshotStore::receive`]).
const RECEIVE_SUFFIX: &str = ".recv";

/// The Raft position a snapshot stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log index included in the snapshot (the store's applied index).
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
    /// The Raft cluster configuration as of `index`, opaque to this crate.
    pub config: Bytes,
}

/// A complete, self-contained copy of the state machine at one index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The Raft position and configuration.
    pub meta: SnapshotMeta,
    /// The store revision (index of the latest write to the map).
    pub revision: u64,
    /// Every key-value, in strictly increasing key order.
    pub kvs: Vec<KeyValue>,
    /// Every live client session, in client-id order.
    pub sessions: Vec<SessionRecord>,
}

/// Why snapshot bytes were refused: the file or transfer is damaged or foreign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptSnapshot {
    /// Shorter than the header.
    #[error("{bytes} bytes is shorter than the {SNAPSHOT_HEADER_BYTES}-byte header")]
    TooShort {
        /// Size found.
        bytes: u64,
    },
    /// The magic bytes are wrong: not a snapshot.
    #[error("bad magic: not a RaftKV snapshot")]
    BadMagic,
    /// A format version this binary does not read.
    #[error(
        "unsupported snapshot format version {version} (this binary reads {SNAPSHOT_FORMAT_VERSION_MIN} to {SNAPSHOT_FORMAT_VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// The length field disagrees with the bytes present (truncated or extended).
    #[error("header says {expected} body bytes, found {actual}")]
    LengthMismatch {
        /// Body length in the header.
        expected: u64,
        /// Body bytes present.
        actual: u64,
    },
    /// The checksum does not match.
    #[error("checksum mismatch: header {expected:#010x}, computed {actual:#010x}")]
    ChecksumMismatch {
        /// Checksum in the header.
        expected: u32,
        /// Checksum of the bytes present.
        actual: u32,
    },
    /// The checksum matched but the body is not a snapshot (a writer bug).
    #[error("body does not decode as a snapshot")]
    Malformed,
    /// The stream ended before the snapshot did (format 3).
    #[error("truncated: the stream ends at byte {offset}, inside the snapshot")]
    Truncated {
        /// Bytes read before the end.
        offset: u64,
    },
    /// A length or count is above its bound; nothing was allocated for it (format 3).
    #[error("{field} length {length} at byte {offset} is above the bound of {max}")]
    LengthOutOfBounds {
        /// What the length is of.
        field: &'static str,
        /// The length found.
        length: u64,
        /// Its bound.
        max: u64,
        /// Where the length field starts.
        offset: u64,
    },
    /// A record does not decode (a bad varint or session record) (format 3).
    #[error("malformed {what} at byte {offset}")]
    BadRecord {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: u64,
    },
    /// Bytes follow the trailer (format 3).
    #[error("unexpected bytes after the trailer at byte {offset}")]
    TrailingBytes {
        /// Where the trailer ends.
        offset: u64,
    },
    /// The stream goes on past [`SNAPSHOT_BYTES_MAX`].
    #[error("longer than the {max}-byte limit")]
    TooLarge {
        /// The limit, [`SNAPSHOT_BYTES_MAX`].
        max: u64,
    },
}

/// Why a snapshot could not be saved, listed or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is damaged.
    #[error("snapshot {path} is damaged: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: CorruptSnapshot,
    },
    /// The file verifies, but its content breaks an invariant (a writer bug or a hostile
    /// peer).
    #[error("snapshot {path} is inconsistent: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The broken invariant.
        source: InvariantError,
    },
    /// The file's name does not match the index and term inside it.
    #[error("snapshot {path} holds index {index} term {term}, not what its name says")]
    NameMismatch {
        /// The file.
        path: PathBuf,
        /// Index inside.
        index: u64,
        /// Term inside.
        term: u64,
    },
    /// No snapshot file verified (the list holds every damaged one found, newest first).
    #[error("no snapshot file verifies: {}", join_errors(.0))]
    NoneValid(Vec<SnapshotError>),
}

impl Snapshot {
    /// Encodes the snapshot whole, in format 2 (the streamed format 3 is written from a
    /// [`crate::KvView`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; SNAPSHOT_HEADER_BYTES];
        out = postcard::to_extend(self, out)
            .expect("invariant: postcard encodes a Snapshot into a Vec");
        let body_bytes = (out.len() - SNAPSHOT_HEADER_BYTES) as u64;
        out[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
        out[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION_WHOLE.to_le_bytes());
        out[12..20].copy_from_slice(&body_bytes.to_le_bytes());
        let crc = checksum(&out[8..20], &out[SNAPSHOT_HEADER_BYTES..]);
        out[20..24].copy_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(
            Snapshot::decode(&out).as_ref(),
            Ok(self),
            "a snapshot reads back as written"
        );
        out
    }

    /// Verifies and decodes snapshot bytes of any format this binary reads (header, length,
    /// checksum, body). Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, CorruptSnapshot> {
        if bytes.starts_with(&SNAPSHOT_MAGIC)
            && bytes.get(8..12) == Some(&SNAPSHOT_FORMAT_VERSION.to_le_bytes()[..])
        {
            return format::decode_streamed(bytes);
        }
        let header = bytes
            .get(..SNAPSHOT_HEADER_BYTES)
            .ok_or(CorruptSnapshot::TooShort {
                bytes: bytes.len() as u64,
            })?;
        if header[0..8] != SNAPSHOT_MAGIC {
            return Err(CorruptSnapshot::BadMagic);
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("invariant: 4 bytes"));
        let expected = u64::from_le_bytes(header[12..20].try_into().expect("invariant: 8 bytes"));
        let stored_crc = u32::from_le_bytes(header[20..24].try_into().expect("invariant: 4 bytes"));
        if !(SNAPSHOT_FORMAT_VERSION_MIN..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
            return Err(CorruptSnapshot::UnsupportedVersion { version });
        }
        debug_assert!(
            version <= SNAPSHOT_FORMAT_VERSION_WHOLE,
            "format 3 is decoded above"
        );
        let body = &bytes[SNAPSHOT_HEADER_BYTES..];
        if expected != body.len() as u64 {
            return Err(CorruptSnapshot::LengthMismatch {
                expected,
                actual: body.len() as u64,
            });
        }
        let actual = checksum(&header[8..20], body);
        if actual != stored_crc {
            return Err(CorruptSnapshot::ChecksumMismatch {
                expected: stored_crc,
                actual,
            });
        }
        if version == 1 {
            return match postcard::take_from_bytes::<v1::Snapshot>(body) {
                Ok((snapshot, [])) => Ok(snapshot.into()),
                Ok(_) | Err(_) => Err(CorruptSnapshot::Malformed),
            };
        }
        match postcard::take_from_bytes::<Snapshot>(body) {
            Ok((snapshot, [])) => Ok(snapshot),
            Ok(_) | Err(_) => Err(CorruptSnapshot::Malformed),
        }
    }
}

/// Format 1, read only: sessions kept their latest response without a fingerprint.
mod v1 {
    use serde::{Deserialize, Serialize};

    use crate::command::{KeyValue, Response};
    use crate::session::{CachedResponse, SessionRecord};

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub(super) struct Snapshot {
        pub(super) meta: super::SnapshotMeta,
        pub(super) revision: u64,
        pub(super) kvs: Vec<KeyValue>,
        pub(super) sessions: Vec<Session>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub(super) struct Session {
        pub(super) client_id: u64,
        pub(super) last_used_index: u64,
        pub(super) last: Option<Cached>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub(super) struct Cached {
        pub(super) sequence: u64,
        pub(super) response: Response,
    }

    impl From<Snapshot> for super::Snapshot {
        fn from(old: Snapshot) -> Self {
            super::Snapshot {
                meta: old.meta,
                revision: old.revision,
                kvs: old.kvs,
                sessions: old
                    .sessions
                    .into_iter()
                    .map(|s| SessionRecord {
                        client_id: s.client_id,
                        last_used_index: s.last_used_index,
                        last: s.last.map(|c| CachedResponse {
                            sequence: c.sequence,
                            fingerprint: None,
                            response: c.response,
                        }),
                    })
                    .collect(),
            }
        }
    }
}

fn checksum(header_fields: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header_fields);
    hasher.update(body);
    hasher.finalize()
}

impl KvStore {
    /// Captures the whole state at the applied index. `term` is the term of the entry at
    /// [`KvStore::applied_index`] and `config` the Raft configuration as of that index; both
    /// are carried along unchanged. Cost: one pass over the map, copying every key and value.
    pub fn snapshot(&self, term: u64, config: Bytes) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index: self.applied_index,
                term,
                config,
            },
            revision: self.revision,
            kvs: self.map.iter().map(Entry::to_key_value).collect(),
            sessions: self.sessions.records(),
        }
    }

    /// Rebuilds a store from a snapshot, with this replica's configuration, and checks every
    /// invariant (a snapshot may come from the network: it is input like any other). The
    /// session bound must be at least the number of sessions in the snapshot.
    pub fn restore(snapshot: Snapshot, config: KvConfig) -> Result<KvStore, InvariantError> {
        KvStore::from_sorted(
            config,
            snapshot.meta.index,
            snapshot.revision,
            snapshot.kvs.into_iter(),
            snapshot.sessions,
        )
    }
}

/// A snapshot file in a [`SnapshotStore`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotFile {
    /// The snapshot's index (from the file name).
    pub index: u64,
    /// The snapshot's term (from the file name).
    pub term: u64,
    /// The file's path.
    pub path: PathBuf,
    /// The file's size in bytes.
    pub bytes: u64,
}

/// The snapshot files of one node: a directory of `snap-<index>-<term>.snap` files.
///
/// One writer at a time: the node's snapshot task owns it (saves and pruning are not
/// coordinated between processes or threads).
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    /// Receptions started, which name their files apart.
    pub(crate) receptions: std::sync::atomic::AtomicU64,
}

impl SnapshotStore {
    /// Opens (creating if needed) the snapshot directory and removes leftover `.tmp` files of
    /// saves and `.recv` files of receptions interrupted by a crash (a received snapshot not
    /// yet kept is fetched again from the leader).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, SnapshotError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
        let store = SnapshotStore {
            dir,
            receptions: std::sync::atomic::AtomicU64::new(0),
        };
        for entry in fs::read_dir(&store.dir).map_err(io_error("read directory", &store.dir))? {
            let path = entry
                .map_err(io_error("read directory", &store.dir))?
                .path();
            let is_temp = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("snap-") && (n.ends_with(TEMP_SUFFIX) || n.ends_with(RECEIVE_SUFFIX))
            });
            if is_temp {
                tracing::info!(path = %path.display(), "removing unfinished snapshot file");
                fs::remove_file(&path).map_err(io_error("remove", &path))?;
            }
        }
        Ok(store)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file name of the snapshot at `index` and `term`.
    pub fn file_name(index: u64, term: u64) -> String {
        format!("snap-{index:020}-{term:020}.snap")
    }

    /// The kept snapshot file at `index` in `dir`, whatever term its name carries (a
    /// snapshot an older version wrote has term 0 there), if it is there. Files being written
    /// or received are not kept ones and are never returned.
    pub fn file_at(dir: &Path, index: u64) -> io::Result<Option<PathBuf>> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let named = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(Self::parse_name);
            if named.is_some_and(|(at, _)| at == index) {
                return Ok(Some(path));
            }
        }
        Ok(None)
    }

    fn parse_name(name: &str) -> Option<(u64, u64)> {
        let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
        let (index, term) = rest.split_once('-')?;
        if index.len() != 20 || term.len() != 20 {
            return None;
        }
        Some((index.parse().ok()?, term.parse().ok()?))
    }

    /// The snapshot files present, oldest (lowest index) first. Other files are ignored.
    pub fn list(&self) -> Result<Vec<SnapshotFile>, SnapshotError> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error("read directory", &self.dir))? {
            let entry = entry.map_err(io_error("read directory", &self.dir))?;
            let path = entry.path();
            let parsed = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(Self::parse_name);
            if let Some((index, term)) = parsed {
                let bytes = entry.metadata().map_err(io_error("stat", &path))?.len();
                files.push(SnapshotFile {
                    index,
                    term,
                    path,
                    bytes,
                });
            }
        }
        files.sort();
        Ok(files)
    }

    /// Writes `snapshot` durably (temp file, fsync, rename, directory fsync), then deletes all
    /// but the newest [`SNAPSHOTS_KEPT`] files.
    pub fn save(&self, snapshot: &Snapshot) -> Result<SnapshotFile, SnapshotError> {
        self.save_encoded(snapshot.meta.index, snapshot.meta.term, &snapshot.encode())
    }

    /// Verifies snapshot bytes received whole (e.g. from the leader) and saves them like
    /// [`SnapshotStore::save`]. Returns the file and the decoded snapshot.
    pub fn save_received(&self, bytes: &[u8]) -> Result<(SnapshotFile, Snapshot), SnapshotError> {
        let snapshot = Snapshot::decode(bytes).map_err(|source| SnapshotError::Corrupt {
            path: PathBuf::from("<received>"),
            source,
        })?;
        let file = self.save_encoded(snapshot.meta.index, snapshot.meta.term, bytes)?;
        Ok((file, snapshot))
    }

    fn save_encoded(
        &self,
        index: u64,
        term: u64,
        bytes: &[u8],
    ) -> Result<SnapshotFile, SnapshotError> {
        let name = Self::file_name(index, term);
        let path = self.dir.join(&name);
        let temp = self.dir.join(format!("{name}{TEMP_SUFFIX}"));
        {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&temp)
                .map_err(io_error("create", &temp))?;
            file.write_all(bytes).map_err(io_error("write", &temp))?;
            file.sync_all().map_err(io_error("fsync", &temp))?;
        }
        fs::rename(&temp, &path).map_err(io_error("rename", &temp))?;
        sync_dir(&self.dir)?;
        tracing::info!(index, term, bytes = bytes.len(), path = %path.display(), "snapshot saved");
        self.prune()?;
        Ok(SnapshotFile {
            index,
            term,
            path,
            bytes: bytes.len() as u64,
        })
    }

    fn prune(&self) -> Result<(), SnapshotError> {
        let files = self.list()?;
        let excess = files.len().saturating_sub(SNAPSHOTS_KEPT);
        for file in &files[..excess] {
            match fs::remove_file(&file.path) {
                // Two prunes (the node's own snapshot and a kept one from the leader) may race
                // for the same old file: gone is what both wanted.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other.map_err(io_error("remove", &file.path))?,
            }
            tracing::info!(index = file.index, path = %file.path.display(), "old snapshot removed");
        }
        if excess > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

fn join_errors(errors: &[SnapshotError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync directory", dir))
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Session};

    fn sample_store() -> KvStore {
        let mut s = KvStore::new(KvConfig::default());
        s.apply(1, &Command::RegisterSession.encode())
            .expect("register");
        s.apply(
            2,
            &Command::put("a", "1")
                .with_session(Session {
                    client_id: 1,
                    sequence: 1,
                })
                .encode(),
        )
        .expect("put");
        s.apply(3, &Command::put("b", vec![7u8; 1000]).encode())
            .expect("put");
        s.apply(4, &Command::delete("a").encode()).expect("delete");
        s.apply(5, &Command::put("c", "3").encode()).expect("put");
        s
    }

    #[test]
    fn the_file_of_an_index_is_found_by_its_name_and_others_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = SnapshotStore::file_name(12, 3);
        fs::write(dir.path().join(&name), b"x").expect("written");
        fs::write(dir.path().join(format!("{name}{TEMP_SUFFIX}")), b"x").expect("written");
        fs::write(dir.path().join(SnapshotStore::file_name(120, 3)), b"x").expect("written");
        let legacy = SnapshotStore::file_name(7, 0);
        fs::write(dir.path().join(&legacy), b"x").expect("written");
        let at = |index| SnapshotStore::file_at(dir.path(), index).expect("listed");
        assert_eq!(at(12), Some(dir.path().join(name)));
        assert_eq!(at(7), Some(dir.path().join(legacy)));
        assert_eq!(at(1), None);
    }

    #[test]
    fn roundtrip_and_restore() {
        let s = sample_store();
        let snap = s.snapshot(2, Bytes::from_static(b"conf"));
        let bytes = snap.encode();
        let decoded = Snapshot::decode(&bytes).expect("decodes");
        assert_eq!(decoded, snap);
        let restored = KvStore::restore(decoded, s.config()).expect("restores");
        assert_eq!(restored, s);
    }

    /// A snapshot file of format `version` around `body`.
    fn with_header(version: u32, body: &[u8]) -> Vec<u8> {
        let mut out = SNAPSHOT_MAGIC.to_vec();
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        let crc = checksum(&out[8..20], body);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_format_1_snapshot_still_restores_with_no_fingerprints() {
        // Given a store whose session has a cached response, written in format 1
        let s = sample_store();
        let current = s.snapshot(2, Bytes::from_static(b"conf"));
        let old = v1::Snapshot {
            meta: current.meta.clone(),
            revision: current.revision,
            kvs: current.kvs.clone(),
            sessions: current
                .sessions
                .iter()
                .map(|r| v1::Session {
                    client_id: r.client_id,
                    last_used_index: r.last_used_index,
                    last: r.last.as_ref().map(|c| v1::Cached {
                        sequence: c.sequence,
                        response: c.response.clone(),
                    }),
                })
                .collect(),
        };
        let body = postcard::to_stdvec(&old).expect("encode format 1");
        // When it is decoded
        let decoded = Snapshot::decode(&with_header(1, &body)).expect("format 1 decodes");
        // Then everything but the fingerprints is as written, and it restores
        let mut expected = current;
        for record in &mut expected.sessions {
            if let Some(last) = &mut record.last {
                assert!(last.fingerprint.is_some(), "format 2 keeps fingerprints");
                last.fingerprint = None;
            }
        }
        assert_eq!(decoded, expected);
        KvStore::restore(decoded, s.config()).expect("restores");
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let bytes = sample_store().snapshot(1, Bytes::new()).encode();
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x01;
            assert!(
                Snapshot::decode(&damaged).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
        for len in 0..bytes.len() {
            assert!(
                Snapshot::decode(&bytes[..len]).is_err(),
                "truncation to {len} went unnoticed"
            );
        }
    }

    #[test]
    fn decode_errors_are_specific() {
        let bytes = sample_store().snapshot(1, Bytes::new()).encode();
        assert_eq!(
            Snapshot::decode(&bytes[..5]),
            Err(CorruptSnapshot::TooShort { bytes: 5 })
        );
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(Snapshot::decode(&bad), Err(CorruptSnapshot::BadMagic));
        let mut bad = bytes.clone();
        bad.push(0);
        assert!(matches!(
            Snapshot::decode(&bad),
            Err(CorruptSnapshot::LengthMismatch { .. })
        ));
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            Snapshot::decode(&bad),
            Err(CorruptSnapshot::ChecksumMismatch { .. })
        ));
        // A future version with a valid checksum is refused as unsupported, not as damage.
        let next = SNAPSHOT_FORMAT_VERSION + 1;
        let future = with_header(next, &bytes[SNAPSHOT_HEADER_BYTES..]);
        assert_eq!(
            Snapshot::decode(&future),
            Err(CorruptSnapshot::UnsupportedVersion { version: next })
        );
        // A checksummed body that is not a snapshot.
        let mut junk = bytes[..SNAPSHOT_HEADER_BYTES].to_vec();
        junk.extend_from_slice(&[0xff; 4]);
        junk[12..20].copy_from_slice(&4u64.to_le_bytes());
        let crc = checksum(&junk[8..20], &junk[SNAPSHOT_HEADER_BYTES..]);
        junk[20..24].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Snapshot::decode(&junk), Err(CorruptSnapshot::Malformed));
    }

    #[test]
    fn restore_refuses_inconsistent_content() {
        let s = sample_store();
        let mut snap = s.snapshot(1, Bytes::new());
        snap.kvs.swap(0, 1);
        assert!(matches!(
            KvStore::restore(snap, s.config()),
            Err(InvariantError::KeysNotSorted { .. })
        ));
        let mut snap = s.snapshot(1, Bytes::new());
        snap.kvs[0].mod_revision = 99;
        assert!(matches!(
            KvStore::restore(snap, s.config()),
            Err(InvariantError::Revisions { .. })
        ));
        let mut snap = s.snapshot(1, Bytes::new());
        snap.revision = 100;
        assert!(matches!(
            KvStore::restore(snap, s.config()),
            Err(InvariantError::RevisionAboveApplied { .. })
        ));
        let snap = s.snapshot(1, Bytes::new());
        let tight = KvConfig {
            sessions: crate::SessionConfig {
                sessions_max: 1,
                idle_indexes_max: 10,
            },
        };
        let mut two_sessions = snap.clone();
        two_sessions.sessions.push(SessionRecord {
            client_id: 5,
            last_used_index: 5,
            last: None,
        });
        assert!(matches!(
            KvStore::restore(two_sessions, tight),
            Err(InvariantError::Sessions(_))
        ));
    }

    #[test]
    fn store_saves_keeps_three_and_loads_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path().join("snap")).expect("open");
        assert!(
            store
                .load_newest_with(KvConfig::default())
                .expect("empty is fine")
                .is_none()
        );
        let mut kv = KvStore::new(KvConfig::default());
        for index in 1..=5u64 {
            kv.apply(index, &Command::put(format!("k{index}"), "v").encode())
                .expect("put");
            let file = store
                .save(&kv.snapshot(7, Bytes::from_static(b"cfg")))
                .expect("save");
            assert_eq!((file.index, file.term), (index, 7));
        }
        let files = store.list().expect("list");
        assert_eq!(
            files.iter().map(|f| f.index).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        let recovered = store
            .load_newest_with(kv.config())
            .expect("load")
            .expect("some");
        assert_eq!(recovered.file.index, 5);
        assert!(recovered.skipped.is_empty());
        assert_eq!(recovered.store, kv);
    }

    #[test]
    fn damaged_newest_falls_back_with_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("open");
        let mut kv = KvStore::new(KvConfig::default());
        kv.apply(1, &Command::put("a", "1").encode()).expect("put");
        store.save(&kv.snapshot(1, Bytes::new())).expect("save");
        kv.apply(2, &Command::put("b", "2").encode()).expect("put");
        let newest = store.save(&kv.snapshot(1, Bytes::new())).expect("save");

        let mut bytes = fs::read(&newest.path).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        fs::write(&newest.path, &bytes).expect("write");

        let error = store
            .load_with(&newest, kv.config())
            .expect_err("damage is detected");
        let message = error.to_string();
        assert!(
            message.contains("damaged") && message.contains("checksum"),
            "{message}"
        );
        assert!(
            message.contains(&SnapshotStore::file_name(2, 1)),
            "{message}"
        );

        let recovered = store
            .load_newest_with(kv.config())
            .expect("falls back")
            .expect("some");
        assert_eq!(recovered.file.index, 1);
        assert_eq!(recovered.skipped.len(), 1);

        // With the older one damaged too, nothing verifies: an error, not an empty store.
        let older = &store.list().expect("list")[0];
        fs::write(&older.path, b"not a snapshot").expect("write");
        assert!(
            matches!(store.load_newest_with(kv.config()), Err(SnapshotError::NoneValid(errors)) if errors.len() == 2)
        );
    }

    #[test]
    fn name_must_match_content_and_temp_files_are_cleaned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("open");
        let kv = sample_store();
        let file = store.save(&kv.snapshot(3, Bytes::new())).expect("save");
        let renamed = dir.path().join(SnapshotStore::file_name(99, 3));
        fs::rename(&file.path, &renamed).expect("rename");
        let listed = store.list().expect("list");
        assert!(matches!(
            store.load_with(&listed[0], kv.config()),
            Err(SnapshotError::NameMismatch { index: 5, .. })
        ));

        let temp = dir
            .path()
            .join(format!("{}{TEMP_SUFFIX}", SnapshotStore::file_name(6, 3)));
        fs::write(&temp, b"half").expect("write");
        fs::write(dir.path().join("unrelated.txt"), b"x").expect("write");
        let store = SnapshotStore::open(dir.path()).expect("reopen");
        assert!(!temp.exists());
        assert_eq!(store.list().expect("list").len(), 1);
    }

    #[test]
    fn save_received_verifies_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("open");
        let snap = sample_store().snapshot(4, Bytes::from_static(b"c"));
        let mut bytes = snap.encode();
        let (file, decoded) = store.save_received(&bytes).expect("valid bytes are saved");
        assert_eq!((file.index, decoded), (5, snap));
        bytes[30] ^= 1;
        assert!(matches!(
            store.save_received(&bytes),
            Err(SnapshotError::Corrupt { .. })
        ));
        assert_eq!(store.list().expect("list").len(), 1);
    }
}
