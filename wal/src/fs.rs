//! The file-system seam: every byte the WAL reads or writes goes through [`FileSystem`].
//!
//! Two implementations exist: [`RealFs`] (std files, `fdatasync`, directory fsync, an advisory
//! lock) and [`crate::SimFs`] (an in-memory disk that can crash). The trait is deliberately small
//! and positional (`read_exact_at` / `write_all_at`), so that the simulated disk can model exactly
//! what survives a crash, and so that a file handle can be shared (`&self` everywhere) between a
//! writer and readers.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The file operations the WAL needs.
pub trait FileSystem: Clone + Send + Sync + 'static {
    /// An open file.
    type File: FileHandle;
    /// Proof that a directory is locked; dropping it releases the lock.
    type DirLock: Send + Sync + 'static;

    /// Creates `dir` and its parents if they do not exist.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names (not paths) of the regular files directly in `dir`.
    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new, empty file, failing if it exists. Its name is durable only after
    /// [`FileSystem::sync_dir`].
    fn create_new(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Removes a file. The removal is durable only after [`FileSystem::sync_dir`].
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the creations and removals of names in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `dir` without waiting; an error of kind
    /// [`io::ErrorKind::WouldBlock`] means someone else holds it.
    fn lock_dir(&self, dir: &Path) -> io::Result<Self::DirLock>;
    /// Bytes an unprivileged writer may still allocate on the file system that holds `dir`
    /// (`statvfs`'s available blocks). The default, for a disk that never fills (the simulated
    /// one), is unlimited.
    fn available_space(&self, dir: &Path) -> io::Result<u64> {
        let _ = dir;
        Ok(u64::MAX)
    }
}

/// Whether `e` says the disk (or the user's quota) is full: an error a writer may wait out
/// and retry once space is freed, unlike a failed fsync.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// An open file. All methods take `&self` so a handle can be shared behind an `Arc`.
#[expect(
    clippy::len_without_is_empty,
    reason = "a fallible length of a file on disk; an `is_empty` would add nothing"
)]
pub trait FileHandle: Send + Sync + 'static {
    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`, failing with [`io::ErrorKind::UnexpectedEof`] past the end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data (and the metadata needed to read it back, such as its length)
    /// durable: `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// Reserves blocks so that the file is at least `len` bytes long, the new bytes reading as
    /// zeros; on failure the file is cut back to its length where that can be done. The WAL
    /// writes into space reserved ahead, so that an `fdatasync` after an append need not also
    /// write a new file length, new blocks or the inode (measured on ext4, 3.7 KB appends,
    /// fsync p50: 0.19 ms for an append that grows the file or lands in `fallocate`d space,
    /// 0.13 ms for one into written zeros). The default does nothing: a file system where
    /// reserving would not pay (the simulated disk) keeps its files exactly as long as their
    /// data.
    fn allocate(&self, len: u64) -> io::Result<()> {
        let _ = len;
        Ok(())
    }
}

/// The name of the lock file a [`RealFs`] directory lock holds.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// The operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

/// A held lock on a directory (an exclusive `flock` on its `LOCK` file).
#[derive(Debug)]
pub struct RealDirLock {
    // The lock lives as long as the open file description; std releases it on close.
    _file: File,
    _path: PathBuf,
}

impl FileSystem for RealFs {
    type File = File;
    type DirLock = RealDirLock;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn create_new(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    }

    fn open(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).open(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn available_space(&self, dir: &Path) -> io::Result<u64> {
        fs4::available_space(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<RealDirLock> {
        let path = dir.join(LOCK_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        // std's inherent `try_lock` (Rust 1.89) is an exclusive flock; fs2/fs4's trait methods of
        // the same name would be shadowed by it anyway (see ../shared/deps.md).
        file.try_lock().map_err(|err| match err {
            std::fs::TryLockError::WouldBlock => io::Error::from(io::ErrorKind::WouldBlock),
            std::fs::TryLockError::Error(err) => err,
        })?;
        Ok(RealDirLock {
            _file: file,
            _path: path,
        })
    }
}

impl FileHandle for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        // Zeros written, not `fallocate`d: ext4 keeps fallocated blocks as "unwritten" extents,
        // and the first write into each turns it into a written one, a change to the inode that
        // the next `fdatasync` must write too (measured here: every WAL fsync wrote the inode).
        // Written blocks need no such change, so an append's `fdatasync` writes only its data;
        // the zeros themselves go out with the first `fdatasync` after them, in the same
        // request as the records beside them.
        let start = self.metadata()?.len();
        let mut at = start;
        while at < len {
            let n = (len - at).min(ZEROS.len() as u64) as usize;
            if let Err(e) = FileExt::write_all_at(self, &ZEROS[..n], at) {
                // Whatever part of the zeros landed is cut again, so that the file is as long
                // as the log believes it is. The write's error is the one to report: if the cut
                // fails too, the file ends in zeros, which recovery reads as reserved space.
                let _ = File::set_len(self, start);
                return Err(e);
            }
            at += n as u64;
        }
        Ok(())
    }
}

/// The zeros [`FileHandle::allocate`] writes, a block at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
