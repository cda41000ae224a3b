//! `kvcli backup save FILE`: a backup downloaded ([`Client::backup`]) into a file that is
//! either whole or absent.
//!
//! Invariant: `FILE` appears only by a rename of a temporary file in the same directory after
//! every byte came, its SHA-256 matched and it was fsynced; the directory is fsynced after the
//! rename. On any failure the temporary file is removed and `FILE`, if it existed, is left as
//! it was.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use proto::rest::backup::BackupInfo;

use crate::{Client, Error};

/// Buffer between the download and the file.
pub const SAVE_BUFFER_BYTES: usize = 256 * 1024;

/// Why a backup was not saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The download failed (the client's error says how).
    #[error(transparent)]
    Client(#[from] Error),
    /// `FILE` names no file in a directory.
    #[error("{0} is not a file name to save a backup to")]
    BadPath(PathBuf),
    /// The local file system refused.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// Removes the temporary file unless it was renamed into place.
struct Temporary {
    path: PathBuf,
    kept: bool,
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Downloads a backup through `client` into `file`, atomically (see the module
/// documentation); returns what it is.
pub async fn save(client: &Client, file: &Path) -> Result<BackupInfo, SaveError> {
    let name = file
        .file_name()
        .ok_or_else(|| SaveError::BadPath(file.to_path_buf()))?;
    let dir = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".part-{}", std::process::id()));
    let temporary = Temporary {
        path: dir.join(temp_name),
        kept: false,
    };
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| SaveError::Io { what, path, source }
    };
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary.path)
        .map_err(io("creating", &temporary.path))?;
    let mut out = BufWriter::with_capacity(SAVE_BUFFER_BYTES, created);
    let info = client.backup(&mut out).await?;
    let created = out
        .into_inner()
        .map_err(|e| io("writing", &temporary.path)(e.into_error()))?;
    created.sync_all().map_err(io("fsync", &temporary.path))?;
    drop(created);
    let mut temporary = temporary;
    std::fs::rename(&temporary.path, file).map_err(io("renaming into place", file))?;
    temporary.kept = true;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", &dir))?;
    Ok(info)
}
