//! Streaming snapshot files: writing, opening, receiving from a peer, and loading at start.
//!
//! Job: put format-3 streams on disk without ever holding a whole snapshot in memory, with
//! the same crash rule as [`SnapshotStore::save`]: a file named `snap-<index>-<term>.snap`
//! is always complete and fsynced, because it only ever appears by a rename after an fsync.
//!
//! Receiving from a peer goes through a `.recv` file: [`SnapshotStore::receive`] creates it
//! (removing older `.recv` files: one reception at a time), [`Receiving::write`] appends the
//! chunks as they arrive, [`Receiving::finish`] fsyncs it and verifies it in one pass
//! ([`verify_snapshot`]), and [`SnapshotStore::keep_received`] renames the verified file into
//! place. A reception that fails verification, or is dropped unfinished, removes its file; one
//! interrupted by a crash is removed by [`SnapshotStore::open`]. So a `.recv` file is never
//! loaded, and a `.snap` file was verified before it got its name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{
    CorruptSnapshot, RECEIVE_SUFFIX, SNAPSHOT_BYTES_MAX, SnapshotError, SnapshotFile, SnapshotMeta,
    SnapshotReadError, SnapshotStore, TEMP_SUFFIX, io_error, read_meta, read_snapshot, sync_dir,
    verify_snapshot,
};
use crate::store::{KvConfig, KvStore};

/// Buffer between a snapshot writer or a peer's chunks and the file (256 KiB): few enough
/// syscalls for a multi-GiB stream, and small beside the state.
pub const FILE_BUFFER_BYTES: usize = 256 * 1024;

/// Bytes a snapshot file takes between two `fdatasync`s while it is written (8 MiB).
///
/// A snapshot of a large state is hundreds of MB. Left to one fsync at the end, the kernel
/// holds all of it dirty and then flushes it at once, and the WAL's fsyncs on the same disk
/// wait behind that flush: write latencies jumped by 100-400 ms once per snapshot. Syncing as
/// it goes keeps each flush small, so a WAL fsync never waits for more than about this much.
pub const SNAPSHOT_SYNC_BYTES: u64 = 8 * 1024 * 1024;

/// A snapshot file being written, synced every [`SNAPSHOT_SYNC_BYTES`].
#[derive(Debug)]
struct SyncingFile {
    file: File,
    unsynced: u64,
    /// `fdatasync`s made so far (what the unit test checks).
    syncs: u64,
}

impl SyncingFile {
    fn new(file: File) -> SyncingFile {
        SyncingFile {
            file,
            unsynced: 0,
            syncs: 0,
        }
    }
}

impl Write for SyncingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.unsynced += written as u64;
        if self.unsynced >= SNAPSHOT_SYNC_BYTES {
            self.file.sync_data()?;
            self.unsynced = 0;
            self.syncs += 1;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The result of [`SnapshotStore::load_newest_with`]: the newest snapshot that verifies,
/// built into a store.
#[derive(Debug)]
pub struct Loaded {
    /// The file loaded.
    pub file: SnapshotFile,
    /// Its Raft position and the caller's configuration bytes.
    pub meta: SnapshotMeta,
    /// The store it holds, every invariant checked.
    pub store: KvStore,
    /// Newer files that failed to verify, newest first, and why.
    pub skipped: Vec<SnapshotError>,
}

/// A snapshot being received from a peer into a `.recv` file (see the module documentation).
/// Dropping it before [`Receiving::finish`] succeeds removes the file.
#[derive(Debug)]
pub struct Receiving {
    out: BufWriter<SyncingFile>,
    path: PathBuf,
    index: u64,
    term: u64,
    bytes: u64,
    verified: bool,
}

impl Receiving {
    /// Appends the next chunk of the stream. A stream longer than [`SNAPSHOT_BYTES_MAX`] is
    /// refused as damage.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), SnapshotError> {
        self.bytes += chunk.len() as u64;
        if self.bytes > SNAPSHOT_BYTES_MAX {
            return Err(SnapshotError::Corrupt {
                path: self.path.clone(),
                source: CorruptSnapshot::TooLarge {
                    max: SNAPSHOT_BYTES_MAX,
                },
            });
        }
        self.out
            .write_all(chunk)
            .map_err(io_error("write", &self.path))
    }

    /// The file this reception writes (what [`SnapshotStore::keep_received`] keeps).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Fsyncs the file, reads it back once with [`verify_snapshot`] and checks that it holds
    /// the index and term it was received as. On success the verified `.recv` file stays
    /// until [`SnapshotStore::keep_received`]; on any failure it is removed.
    pub fn finish(mut self) -> Result<SnapshotMeta, SnapshotError> {
        self.out.flush().map_err(io_error("write", &self.path))?;
        self.out
            .get_ref()
            .file
            .sync_all()
            .map_err(io_error("fsync", &self.path))?;
        let mut file = File::open(&self.path).map_err(io_error("open", &self.path))?;
        let meta = verify_snapshot(&mut file).map_err(|e| read_error(&self.path, e))?;
        if (meta.index, meta.term) != (self.index, self.term) {
            return Err(SnapshotError::NameMismatch {
                path: self.path.clone(),
                index: meta.index,
                term: meta.term,
            });
        }
        self.verified = true;
        tracing::info!(index = self.index, term = self.term, bytes = self.bytes, path = %self.path.display(), "received snapshot verified");
        Ok(meta)
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        if !self.verified {
            // Best effort: a file left behind is removed by the next receive or open.
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl SnapshotStore {
    /// Writes a snapshot by streaming: `write` is handed a buffered writer on a `.tmp` file;
    /// then the file is fsynced, renamed to `snap-<index>-<term>.snap`, the directory
    /// fsynced, and all but the newest [`super::SNAPSHOTS_KEPT`] files deleted. On failure the
    /// temporary file is removed and nothing else changes. Typical use:
    /// `store.write(i, t, |out| view.write_snapshot(t, &config, out).map(drop))`.
    pub fn write(
        &self,
        index: u64,
        term: u64,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<SnapshotFile, SnapshotError> {
        let name = Self::file_name(index, term);
        let path = self.dir.join(&name);
        let temp = self.dir.join(format!("{name}{TEMP_SUFFIX}"));
        let bytes = match write_synced(&temp, write) {
            Ok(bytes) => bytes,
            Err(error) => {
                let _ = fs::remove_file(&temp);
                return Err(error);
            }
        };
        fs::rename(&temp, &path).map_err(io_error("rename", &temp))?;
        sync_dir(&self.dir)?;
        tracing::info!(index, term, bytes, path = %path.display(), "snapshot written");
        self.prune()?;
        Ok(SnapshotFile {
            index,
            term,
            path,
            bytes,
        })
    }

    /// Opens a snapshot file for reading (to stream it to a follower, or to load it);
    /// returns it with its size in bytes.
    pub fn open_snapshot(&self, file: &SnapshotFile) -> Result<(File, u64), SnapshotError> {
        let handle = File::open(&file.path).map_err(io_error("open", &file.path))?;
        let bytes = handle
            .metadata()
            .map_err(io_error("stat", &file.path))?
            .len();
        Ok((handle, bytes))
    }

    /// Reads only the meta (index, term, configuration bytes) of a snapshot file, from its
    /// first bytes (format 3; older formats are read whole).
    pub fn read_meta(&self, file: &SnapshotFile) -> Result<SnapshotMeta, SnapshotError> {
        let (mut handle, _) = self.open_snapshot(file)?;
        read_meta(&mut handle).map_err(|e| read_error(&file.path, e))
    }

    /// Reads, verifies and builds one snapshot file in one streaming pass, and checks that
    /// its contents match its name.
    pub fn load_with(
        &self,
        file: &SnapshotFile,
        config: KvConfig,
    ) -> Result<(SnapshotMeta, KvStore), SnapshotError> {
        let (mut handle, _) = self.open_snapshot(file)?;
        let (meta, store) =
            read_snapshot(&mut handle, config).map_err(|e| read_error(&file.path, e))?;
        if (meta.index, meta.term) != (file.index, file.term) {
            return Err(SnapshotError::NameMismatch {
                path: file.path.clone(),
                index: meta.index,
                term: meta.term,
            });
        }
        Ok((meta, store))
    }

    /// The newest snapshot that verifies, built into a store with `config` (each file read
    /// once, streaming), or `None` if there are no snapshot files. Damaged or inconsistent
    /// newer files are skipped with a warning and listed in [`Loaded::skipped`]; if every file
    /// is damaged this is [`SnapshotError::NoneValid`]. I/O errors are returned at once (they
    /// are not damage, and falling back past them would hide them).
    pub fn load_newest_with(&self, config: KvConfig) -> Result<Option<Loaded>, SnapshotError> {
        let mut skipped = Vec::new();
        for file in self.list()?.into_iter().rev() {
            match self.load_with(&file, config) {
                Ok((meta, store)) => {
                    return Ok(Some(Loaded {
                        file,
                        meta,
                        store,
                        skipped,
                    }));
                }
                Err(
                    error @ (SnapshotError::Corrupt { .. }
                    | SnapshotError::Invalid { .. }
                    | SnapshotError::NameMismatch { .. }),
                ) => {
                    tracing::warn!(%error, "skipping damaged snapshot, trying an older one");
                    skipped.push(error);
                }
                Err(error) => return Err(error),
            }
        }
        if skipped.is_empty() {
            Ok(None)
        } else {
            Err(SnapshotError::NoneValid(skipped))
        }
    }

    /// Starts receiving the snapshot at `index` and `term` from a peer into a file of its own,
    /// `snap-<index>-<term>.snap.<n>.recv` (`n` counts this store's receptions), so that two
    /// receptions of the same snapshot, or a stalled one dropped late, never touch each
    /// other's file: a file that was checked stays exactly as checked until it is kept.
    pub fn receive(&self, index: u64, term: u64) -> Result<Receiving, SnapshotError> {
        let n = self
            .receptions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.join(format!(
            "{}.{n}{RECEIVE_SUFFIX}",
            Self::file_name(index, term)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_error("create", &path))?;
        Ok(Receiving {
            out: BufWriter::with_capacity(FILE_BUFFER_BYTES, SyncingFile::new(file)),
            path,
            index,
            term,
            bytes: 0,
            verified: false,
        })
    }

    /// Renames `received`, the file of the snapshot at `index` and `term` that
    /// [`Receiving::finish`] verified (see [`Receiving::path`]), into place; fsyncs the
    /// directory and prunes old files. Call it only after `finish` succeeded (a reception's
    /// file is otherwise removed, so this then fails with an I/O error naming it).
    pub fn keep_received(
        &self,
        received: &Path,
        index: u64,
        term: u64,
    ) -> Result<SnapshotFile, SnapshotError> {
        let path = self.dir.join(Self::file_name(index, term));
        let bytes = fs::metadata(received)
            .map_err(io_error("stat", received))?
            .len();
        fs::rename(received, &path).map_err(io_error("rename", received))?;
        sync_dir(&self.dir)?;
        tracing::info!(index, term, bytes, path = %path.display(), "received snapshot kept");
        self.prune()?;
        Ok(SnapshotFile {
            index,
            term,
            path,
            bytes,
        })
    }

    /// Removes every reception's file but `keep`: received snapshots that were superseded, or
    /// checked and never kept. The caller decides when none is in use.
    pub fn remove_received_except(&self, keep: Option<&Path>) -> Result<(), SnapshotError> {
        for entry in fs::read_dir(&self.dir).map_err(io_error("read directory", &self.dir))? {
            let path = entry.map_err(io_error("read directory", &self.dir))?.path();
            let is_received = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("snap-") && n.ends_with(RECEIVE_SUFFIX));
            if is_received && Some(path.as_path()) != keep {
                tracing::info!(path = %path.display(), "removing a received snapshot that was not kept");
                match fs::remove_file(&path) {
                    // Its own reception may have removed it meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    other => other.map_err(io_error("remove", &path))?,
                }
            }
        }
        Ok(())
    }
}

/// Writes `temp` through a buffer and fsyncs it; returns its size.
fn write_synced(
    temp: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<u64, SnapshotError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(temp)
        .map_err(io_error("create", temp))?;
    let mut out = BufWriter::with_capacity(FILE_BUFFER_BYTES, SyncingFile::new(file));
    write(&mut out).map_err(io_error("write", temp))?;
    let file = out
        .into_inner()
        .map_err(|e| io_error("write", temp)(e.into_error()))?
        .file;
    file.sync_all().map_err(io_error("fsync", temp))?;
    Ok(file.metadata().map_err(io_error("stat", temp))?.len())
}

/// A read failure of the file at `path` as a [`SnapshotError`].
fn read_error(path: &Path, error: SnapshotReadError) -> SnapshotError {
    match error {
        SnapshotReadError::Io(source) => SnapshotError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        },
        SnapshotReadError::Corrupt(source) => SnapshotError::Corrupt {
            path: path.to_path_buf(),
            source,
        },
        SnapshotReadError::Invariant(source) => SnapshotError::Invalid {
            path: path.to_path_buf(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_snapshot_is_synced_as_it_is_written_not_only_at_the_end() {
        // Given a snapshot file written through the syncing writer in 1 MiB chunks,
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("snap.tmp")).unwrap();
        let mut out = SyncingFile::new(file);
        let chunk = vec![7u8; 1024 * 1024];
        let chunks = 2 * SNAPSHOT_SYNC_BYTES / chunk.len() as u64 + 3;
        // when it writes two and a bit sync intervals,
        for _ in 0..chunks {
            out.write_all(&chunk).unwrap();
        }
        // then it synced twice on the way and holds the rest unsynced for the final fsync.
        assert_eq!(out.syncs, 2);
        assert_eq!(out.unsynced, 3 * chunk.len() as u64);
    }
}
