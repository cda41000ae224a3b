//! `kvcli backup save FILE`: a backup downloaded ([`Client::backup`]) into a file that is
//! either whole or absent.
//!
//! Invariants: `FILE` appears only by a rename of a temporary file in the same directory after
//! every byte came, its SHA-256 matched and it was fsynced; the directory is fsynced after the
//! rename. On any failure the temporary file is removed and `FILE`, if it existed, is left as
//! it was. The temporary file is created readable and writable by its owner only
//! ([`BACKUP_FILE_MODE`]), so `FILE` is too, from its first byte: a backup holds the cluster's
//! access records (password and API key hashes) and its token-signing key.
//!
//! The file is written through `tokio::fs`, off the runtime's threads, because
//! [`Client::backup`] is the SDK's and may run on a caller's server runtime.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::rest::backup::BackupInfo;
use tokio::io::{AsyncWriteExt, BufWriter};

use crate::{Client, Error};

/// Buffer between the download and the file.
pub const SAVE_BUFFER_BYTES: usize = 256 * 1024;

/// Permissions of a saved backup (before the umask, which can only take more away): its
/// owner's alone, as for a private key.
pub const BACKUP_FILE_MODE: u32 = 0o600;

/// Why a backup was not saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The download failed (the client's error says how).
    #[error(transparent)]
    Client(#[from] Error),
    /// `FILE` names no file in a directory.
    #[error("{0} is not a file name to save a backup to")]
    BadPath(PathBuf),
    /// Interrupted (Ctrl-C) before the backup was whole: nothing was left behind.
    #[error("interrupted: no backup was saved to {0}")]
    Interrupted(PathBuf),
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
            // Blocking, as a drop cannot await: one unlink, on the failure path only.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Downloads a backup through `client` into `file`, atomically (see the module
/// documentation), waiting up to `wait` for the node to answer (see [`Client::backup`]);
/// returns what it is.
pub async fn save(client: &Client, file: &Path, wait: Duration) -> Result<BackupInfo, SaveError> {
    let name = file
        .file_name()
        .ok_or_else(|| SaveError::BadPath(file.to_path_buf()))?;
    let dir = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| SaveError::Io { what, path, source }
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(BACKUP_FILE_MODE);
    }
    // The temporary name is the process id and the clock's nanoseconds: a file left by a
    // killed run (whose pid a container reuses: kvcli is often pid 1) or a concurrent save
    // into the same directory is never taken over, only stepped around.
    let (temporary, created) = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let mut temp_name = std::ffi::OsString::from(".");
            temp_name.push(name);
            temp_name.push(format!(".part-{}-{nanos:08x}", std::process::id()));
            let path = dir.join(temp_name);
            match tokio::fs::OpenOptions::from(options.clone())
                .open(&path)
                .await
            {
                Ok(created) => break (Temporary { path, kept: false }, created),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 3 => {}
                Err(e) => return Err(io("creating", &path)(e)),
            }
        }
    };
    let mut out = BufWriter::with_capacity(SAVE_BUFFER_BYTES, created);
    // Ctrl-C ends the download here, so the guard removes the partial file (it holds the
    // access records, and a kill would otherwise leave it beside FILE).
    let info = tokio::select! {
        info = client.backup(&mut out, wait) => info?,
        _ = tokio::signal::ctrl_c() => return Err(SaveError::Interrupted(file.to_path_buf())),
    };
    // `Client::backup` flushed it; flushed again because `into_inner` drops what is buffered.
    out.flush().await.map_err(io("writing", &temporary.path))?;
    let created = out.into_inner();
    created
        .sync_all()
        .await
        .map_err(io("fsync", &temporary.path))?;
    drop(created);
    let mut temporary = temporary;
    tokio::fs::rename(&temporary.path, file)
        .await
        .map_err(io("renaming into place", file))?;
    temporary.kept = true;
    let directory = tokio::fs::File::open(&dir)
        .await
        .map_err(io("fsync directory", &dir))?;
    directory
        .sync_all()
        .await
        .map_err(io("fsync directory", &dir))?;
    Ok(info)
}
