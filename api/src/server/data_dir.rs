//! The data directory before anything is opened: what it holds decides whether the node
//! restarts, may become a new member, or must refuse to start; and a start that fails after it
//! began to fill a blank directory puts it back as it was.
//!
//! Layout: `wal/` (segments `*.wal` and the `hardstate` file, see the `wal` crate) and
//! `snapshots/` (`snap-*.snap`, see `kv::SnapshotStore`).
//!
//! Invariant: a directory that holds any trace of a member (a hard state, a segment, a
//! snapshot) is never taken for a blank one; a partial trace (snapshots without a log, a hard
//! state without segments) is refused, because starting from it would forget acknowledged
//! writes.

use std::path::{Path, PathBuf};

/// The WAL's directory inside the data directory.
pub const WAL_DIR: &str = "wal";
/// The snapshots' directory inside the data directory.
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// What a data directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing of a node's (it may not exist yet, or hold unrelated files).
    Blank,
    /// A node's write-ahead log: restart from it (the log store checks it further).
    Member,
}

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory (or a file in it) cannot be read.
    #[error("cannot read the data directory {path}: {source}")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// Snapshots without the write-ahead log they belong to.
    #[error(
        "the data directory {dir} holds snapshots ({snapshot}) but no write-ahead log ({wal} is missing or empty): the hard state (term, vote) and the entries after the snapshot are gone, so this is not a fresh node. Restore the directory from a backup, or remove this node from its cluster, move the directory aside and add it back with --join-addr"
    )]
    SnapshotsWithoutWal {
        /// The data directory.
        dir: PathBuf,
        /// One snapshot file found.
        snapshot: PathBuf,
        /// The missing log directory.
        wal: PathBuf,
    },
    /// Segments without the hard state (term, vote, commit) that goes with them.
    #[error(
        "the write-ahead log in {wal} has segments but no hard state ({path} is missing): this node's term and vote are lost, so it must not start as if fresh. Restore the data directory from a backup, or remove this node from its cluster, move the directory aside and add it back with --join-addr"
    )]
    HardStateMissing {
        /// The log directory.
        wal: PathBuf,
        /// The missing file.
        path: PathBuf,
    },
    /// A hard state without any segment: the log itself is gone.
    #[error(
        "the write-ahead log in {wal} has a hard state but no segment files (*.wal): the log was deleted. Restore the directory from a backup, or remove this node from its cluster, move the directory aside and add it back with --join-addr"
    )]
    SegmentsMissing {
        /// The log directory.
        wal: PathBuf,
    },
}

fn list(dir: &Path) -> Result<Vec<String>, DataDirError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|source| DataDirError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            Ok(names)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(DataDirError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Looks at `data_dir` without changing anything.
pub fn inspect(data_dir: &Path) -> Result<Found, DataDirError> {
    let wal = data_dir.join(WAL_DIR);
    let wal_files = list(&wal)?;
    let has_hard_state = wal_files.iter().any(|n| n == wal::HARD_STATE_FILE_NAME);
    let has_segments = wal_files.iter().any(|n| n.ends_with(".wal"));
    let snapshots = data_dir.join(SNAPSHOTS_DIR);
    let snapshot = list(&snapshots)?
        .into_iter()
        .find(|n| n.starts_with("snap-") && n.ends_with(".snap"));
    match (has_hard_state, has_segments, snapshot) {
        (false, false, None) => Ok(Found::Blank),
        (false, false, Some(snapshot)) => Err(DataDirError::SnapshotsWithoutWal {
            dir: data_dir.to_path_buf(),
            snapshot: snapshots.join(snapshot),
            wal,
        }),
        (true, false, _) => Err(DataDirError::SegmentsMissing { wal }),
        // Refused here, before opening the log would create a blank hard-state file.
        (false, true, _) => Err(DataDirError::HardStateMissing {
            path: wal.join(wal::HARD_STATE_FILE_NAME),
            wal,
        }),
        (true, true, _) => Ok(Found::Member),
    }
}

/// Removes what a failed start created in a blank data directory, so that the next start
/// finds it as the operator left it (a node that could not bind its port must not have founded
/// a cluster on disk). Disarmed once the start succeeds.
pub struct CreatedGuard {
    /// Directories that did not exist: removed whole.
    created_dirs: Vec<PathBuf>,
    /// Directories that existed, with what they held: anything new in them is removed.
    existing_dirs: Vec<(PathBuf, Vec<String>)>,
    armed: bool,
}

impl CreatedGuard {
    /// Notes what the data directory and its subdirectories hold before the start writes
    /// anything; what is new is removed again if the guard is dropped armed.
    pub fn before_creating(data_dir: &Path) -> CreatedGuard {
        let mut guard = CreatedGuard {
            created_dirs: Vec::new(),
            existing_dirs: Vec::new(),
            armed: true,
        };
        if !data_dir.exists() {
            guard.created_dirs.push(data_dir.to_path_buf());
            return guard;
        }
        for sub in [WAL_DIR, SNAPSHOTS_DIR] {
            let path = data_dir.join(sub);
            match list(&path) {
                Ok(names) if path.exists() => guard.existing_dirs.push((path, names)),
                _ => guard.created_dirs.push(path),
            }
        }
        guard
    }

    /// The start succeeded: keep everything.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

fn remove(path: &Path) {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    if let Err(e) = removed
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove what a failed start created");
    }
}

impl Drop for CreatedGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for path in &self.created_dirs {
            remove(path);
        }
        for (dir, before) in &self.existing_dirs {
            for name in list(dir).unwrap_or_default() {
                if !before.contains(&name) {
                    remove(&dir.join(name));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn a_missing_or_unrelated_directory_is_blank_and_a_log_is_a_member() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(inspect(&root.path().join("nope")).unwrap(), Found::Blank);
        touch(&root.path().join("lost+found/x"));
        assert_eq!(inspect(root.path()).unwrap(), Found::Blank);
        touch(&root.path().join("wal/00000000000000000001.wal"));
        let e = inspect(root.path()).unwrap_err().to_string();
        assert!(
            e.contains("hardstate") && e.contains("no hard state"),
            "{e}"
        );
        touch(&root.path().join("wal/hardstate"));
        assert_eq!(inspect(root.path()).unwrap(), Found::Member);
    }

    #[test]
    fn snapshots_without_a_log_or_a_hard_state_without_segments_are_refused() {
        let root = tempfile::tempdir().unwrap();
        touch(
            &root
                .path()
                .join("snapshots/snap-00000000000000000009-00000000000000000002.snap"),
        );
        let e = inspect(root.path()).unwrap_err().to_string();
        assert!(
            e.contains("no write-ahead log") && e.contains("snap-0000"),
            "{e}"
        );
        touch(&root.path().join("wal/hardstate"));
        let e = inspect(root.path()).unwrap_err().to_string();
        assert!(e.contains("no segment files"), "{e}");
    }

    #[test]
    fn a_failed_start_removes_only_what_it_created() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        let guard = CreatedGuard::before_creating(&dir);
        touch(&dir.join("wal/hardstate"));
        drop(guard);
        assert!(!dir.exists(), "the directory it created is gone");

        std::fs::create_dir_all(dir.join(SNAPSHOTS_DIR)).unwrap();
        touch(&dir.join("operator-notes.txt"));
        let guard = CreatedGuard::before_creating(&dir);
        touch(&dir.join("wal/hardstate"));
        drop(guard);
        assert!(!dir.join(WAL_DIR).exists());
        assert!(dir.join(SNAPSHOTS_DIR).exists() && dir.join("operator-notes.txt").exists());

        std::fs::create_dir_all(dir.join(WAL_DIR)).unwrap();
        touch(&dir.join("wal/LOCK"));
        let guard = CreatedGuard::before_creating(&dir);
        touch(&dir.join("wal/hardstate"));
        drop(guard);
        assert!(dir.join("wal/LOCK").exists() && !dir.join("wal/hardstate").exists());

        let guard = CreatedGuard::before_creating(&dir);
        touch(&dir.join("wal/hardstate"));
        guard.disarm();
        assert!(dir.join("wal/hardstate").exists());
    }
}
