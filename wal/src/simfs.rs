//! A simulated, in-memory disk that can crash.
//!
//! It models what a real disk promises and nothing more:
//! - file data written since the file's last `sync_data` is *unsynced*; on [`SimFs::crash`] each
//!   file keeps its synced bytes plus a seeded-random prefix of its unsynced writes, and the last
//!   kept write may be torn (a prefix of it lands, then garbage);
//! - a created or removed name is durable only after `sync_dir` of its directory; a crash rolls
//!   unsynced names back (new files vanish, removed files come back with their synced bytes);
//! - handles opened before a crash fail afterwards, as a killed process's would;
//! - `sync_data` can be made to fail ([`SimFs::fail_next_syncs`]) to test that a failed fsync is
//!   fatal.
//!
//! Everything random comes from the seed given to [`SimFs::new`], so a crash schedule replays
//! exactly. Directories themselves are always durable (the WAL creates its directory once).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use util::SplitMix64;

use crate::fs::{FileHandle, FileSystem};

/// The simulated disk. Cloning shares the same disk.
#[derive(Clone, Debug)]
pub struct SimFs {
    disk: Arc<Mutex<Disk>>,
}

#[derive(Debug)]
struct Disk {
    /// Bumped by every crash; handles and locks from an older generation are dead.
    generation: u64,
    next_inode: u64,
    inodes: HashMap<u64, Inode>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    rng: SplitMix64,
    failing_syncs: u32,
    /// When set, `sync_data` succeeds without making anything durable.
    lying_syncs: bool,
    syncs: u64,
    /// When set, the most bytes all files together may hold: a write or extension past it
    /// fails as on a full disk.
    capacity: Option<u64>,
    /// Writes still to succeed before the failing ones of [`SimFs::fail_writes_for_space`].
    writes_before_failing: u32,
    /// How many writes then fail for lack of space.
    failing_writes: u32,
}

impl Disk {
    /// Bytes held by every file (what a reader sees now).
    fn used(&self) -> u64 {
        self.inodes.values().map(|i| i.data.len() as u64).sum()
    }

    /// Fails as a full disk does if a file growing from `from` to `to` bytes would pass the
    /// capacity. Called with the file's inode taken out of the disk (see
    /// `SimFile::with_inode`), so `used` counts the other files only.
    fn check_growth(&self, from: usize, to: u64) -> io::Result<()> {
        let Some(capacity) = self.capacity else {
            return Ok(());
        };
        if to > from as u64 && self.used() + to > capacity {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "simulated full disk (ENOSPC)",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Default, Clone)]
struct Inode {
    /// What a reader sees now.
    data: Vec<u8>,
    /// What survives a crash for certain.
    synced: Vec<u8>,
    /// Changes since the last sync, oldest first.
    unsynced: Vec<Change>,
}

#[derive(Debug, Clone)]
enum Change {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

/// What a crash did, for test logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Per file that had unsynced changes: (path, changes kept, changes lost, last write torn).
    pub files: Vec<(PathBuf, usize, usize, bool)>,
}

impl SimFs {
    /// An empty disk whose crashes are decided by `seed`.
    pub fn new(seed: u64) -> Self {
        SimFs {
            disk: Arc::new(Mutex::new(Disk {
                generation: 0,
                next_inode: 1,
                inodes: HashMap::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: BTreeSet::new(),
                locks: BTreeSet::new(),
                rng: SplitMix64::new(seed),
                failing_syncs: 0,
                lying_syncs: false,
                syncs: 0,
                capacity: None,
                writes_before_failing: 0,
                failing_writes: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        // A panic while holding the disk lock can only come from a bug in this module; the data
        // is still consistent enough to inspect, so keep going rather than cascade panics.
        self.disk
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Simulates power loss: keeps synced state, a random prefix of unsynced writes per file
    /// (the last one possibly torn), rolls back unsynced names, releases locks and kills every
    /// open handle.
    pub fn crash(&self) -> CrashReport {
        let mut disk = self.lock();
        let disk = &mut *disk;
        disk.generation += 1;
        disk.locks.clear();
        disk.names = disk.durable_names.clone();
        let live: BTreeSet<u64> = disk.names.values().copied().collect();
        disk.inodes.retain(|ino, _| live.contains(ino));
        let mut report = CrashReport::default();
        let mut inos: Vec<u64> = disk.inodes.keys().copied().collect();
        inos.sort_unstable(); // HashMap order is not deterministic; the seed must decide alone.
        for ino in inos {
            let inode = disk.inodes.get_mut(&ino).expect("ino listed from the map");
            let total = inode.unsynced.len();
            let keep = disk.rng.below(total as u64 + 1) as usize;
            let tear = keep > 0
                && matches!(inode.unsynced[keep - 1], Change::Write { .. })
                && disk.rng.below(2) == 1;
            let mut data = inode.synced.clone();
            for (i, change) in inode.unsynced[..keep].iter().enumerate() {
                match change {
                    Change::SetLen(len) => data.resize(*len as usize, 0),
                    Change::Write { offset, bytes } if tear && i + 1 == keep => {
                        let landed = disk.rng.below(bytes.len() as u64 + 1) as usize;
                        let garbage = disk.rng.below((bytes.len() - landed) as u64 + 1) as usize;
                        let mut torn = bytes[..landed].to_vec();
                        torn.extend((0..garbage).map(|_| disk.rng.next_u64() as u8));
                        write_into(&mut data, *offset, &torn);
                    }
                    Change::Write { offset, bytes } => write_into(&mut data, *offset, bytes),
                }
            }
            if total > 0 {
                let path = disk
                    .names
                    .iter()
                    .find(|(_, i)| **i == ino)
                    .map(|(p, _)| p.clone())
                    .unwrap_or_default();
                report.files.push((path, keep, total - keep, tear));
            }
            inode.data = data.clone();
            inode.synced = data;
            inode.unsynced.clear();
        }
        report.files.sort();
        report
    }

    /// Limits the disk to `capacity` bytes across all files (`None`: unlimited). Writes that
    /// would pass it fail with [`io::ErrorKind::StorageFull`] and write nothing; files already
    /// past it keep their bytes.
    pub fn set_capacity(&self, capacity: Option<u64>) {
        self.lock().capacity = capacity;
    }

    /// Makes writes fail as on a full disk whatever the capacity, as a sparse file's do when
    /// overwriting a hole: after `skip` more successful `write_all_at` calls, the next `count`
    /// fail with [`io::ErrorKind::StorageFull`], each having written the first half of its bytes
    /// (a short write, which may tear what it overwrote).
    pub fn fail_writes_for_space(&self, skip: u32, count: u32) {
        let mut disk = self.lock();
        disk.writes_before_failing = skip;
        disk.failing_writes = count;
    }

    /// Makes the next `count` calls of `sync_data` fail with an I/O error.
    pub fn fail_next_syncs(&self, count: u32) {
        self.lock().failing_syncs = count;
    }

    /// Makes every later `sync_data` report success without making anything durable, like a
    /// disk whose write cache ignores flushes. This breaks the rule "acknowledge only what is
    /// durable" on purpose, so that the simulations can show they catch it.
    pub fn set_lying_syncs(&self, lying: bool) {
        self.lock().lying_syncs = lying;
    }

    /// How many `sync_data` calls succeeded so far.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// The current bytes of the file at `path`, if it exists (for tests and tools).
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let disk = self.lock();
        let ino = disk.names.get(path)?;
        Some(disk.inodes[ino].data.clone())
    }

    /// Flips one bit of a file in place, durably: bit rot, not a crash.
    pub fn flip_bit(&self, path: &Path, byte_offset: u64, bit: u8) -> io::Result<()> {
        let mut disk = self.lock();
        let ino = *disk.names.get(path).ok_or_else(|| not_found(path))?;
        let inode = disk.inodes.get_mut(&ino).expect("named inodes exist");
        let at = byte_offset as usize;
        if at >= inode.data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset past end",
            ));
        }
        inode.data[at] ^= 1 << (bit % 8);
        if at < inode.synced.len() {
            inode.synced[at] ^= 1 << (bit % 8);
        }
        Ok(())
    }
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let start = offset as usize;
    let end = start + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(bytes);
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

fn stale() -> io::Error {
    io::Error::other("simulated disk crashed: this handle belongs to a dead process")
}

/// An open file on a [`SimFs`].
#[derive(Debug)]
pub struct SimFile {
    fs: SimFs,
    inode: u64,
    generation: u64,
}

impl SimFile {
    fn with_inode<T>(
        &self,
        f: impl FnOnce(&mut Inode, &mut Disk) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut guard = self.fs.lock();
        let disk = &mut *guard;
        if disk.generation != self.generation {
            return Err(stale());
        }
        // An unlinked file stays readable through an open handle, as on Unix; its inode is kept
        // until the next crash.
        let mut inode = disk.inodes.remove(&self.inode).ok_or_else(stale)?;
        let result = f(&mut inode, disk);
        disk.inodes.insert(self.inode, inode);
        result
    }
}

impl FileHandle for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with_inode(|inode, _| Ok(inode.data.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with_inode(|inode, _| {
            let start = offset as usize;
            let end = start
                .checked_add(buf.len())
                .filter(|end| *end <= inode.data.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(&inode.data[start..end]);
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with_inode(|inode, disk| {
            if disk.failing_writes > 0 {
                if disk.writes_before_failing > 0 {
                    disk.writes_before_failing -= 1;
                } else {
                    disk.failing_writes -= 1;
                    let half = &buf[..buf.len() / 2];
                    write_into(&mut inode.data, offset, half);
                    inode.unsynced.push(Change::Write {
                        offset,
                        bytes: half.to_vec(),
                    });
                    return Err(io::Error::new(
                        io::ErrorKind::StorageFull,
                        "simulated full disk (ENOSPC) after a short write",
                    ));
                }
            }
            disk.check_growth(inode.data.len(), offset + buf.len() as u64)?;
            write_into(&mut inode.data, offset, buf);
            inode.unsynced.push(Change::Write {
                offset,
                bytes: buf.to_vec(),
            });
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with_inode(|inode, disk| {
            disk.check_growth(inode.data.len(), len)?;
            inode.data.resize(len as usize, 0);
            inode.unsynced.push(Change::SetLen(len));
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with_inode(|inode, disk| {
            if disk.failing_syncs > 0 {
                disk.failing_syncs -= 1;
                return Err(io::Error::other("simulated fsync failure (EIO)"));
            }
            disk.syncs += 1;
            if disk.lying_syncs {
                return Ok(());
            }
            inode.synced = inode.data.clone();
            inode.unsynced.clear();
            Ok(())
        })
    }
}

/// A held lock on a directory of a [`SimFs`].
#[derive(Debug)]
pub struct SimDirLock {
    fs: SimFs,
    dir: PathBuf,
    generation: u64,
}

impl Drop for SimDirLock {
    fn drop(&mut self) {
        let mut disk = self.fs.lock();
        // A crash already released every lock; a lock taken since then is someone else's.
        if disk.generation == self.generation {
            disk.locks.remove(&self.dir);
        }
    }
}

impl FileSystem for SimFs {
    type File = SimFile;
    type DirLock = SimDirLock;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.lock();
        for ancestor in dir.ancestors() {
            disk.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        let disk = self.lock();
        if !disk.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(disk
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn create_new(&self, path: &Path) -> io::Result<SimFile> {
        let mut disk = self.lock();
        let parent = path.parent().unwrap_or(Path::new(""));
        if !disk.dirs.contains(parent) {
            return Err(not_found(parent));
        }
        if disk.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let ino = disk.next_inode;
        disk.next_inode += 1;
        disk.inodes.insert(ino, Inode::default());
        disk.names.insert(path.to_path_buf(), ino);
        Ok(SimFile {
            fs: self.clone(),
            inode: ino,
            generation: disk.generation,
        })
    }

    fn open(&self, path: &Path) -> io::Result<SimFile> {
        let disk = self.lock();
        let ino = *disk.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(SimFile {
            fs: self.clone(),
            inode: ino,
            generation: disk.generation,
        })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.lock();
        disk.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.lock();
        let disk = &mut *disk;
        disk.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, ino) in &disk.names {
            if p.parent() == Some(dir) {
                disk.durable_names.insert(p.clone(), *ino);
            }
        }
        Ok(())
    }

    fn available_space(&self, _dir: &Path) -> io::Result<u64> {
        let disk = self.lock();
        Ok(disk
            .capacity
            .map_or(u64::MAX, |c| c.saturating_sub(disk.used())))
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<SimDirLock> {
        let mut disk = self.lock();
        if !disk.locks.insert(dir.to_path_buf()) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        Ok(SimDirLock {
            fs: self.clone(),
            dir: dir.to_path_buf(),
            generation: disk.generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/d")
    }

    #[test]
    fn synced_data_and_synced_names_survive_a_crash() {
        let fs = SimFs::new(1);
        fs.create_dir_all(&dir()).unwrap();
        let f = fs.create_new(&dir().join("a")).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&dir()).unwrap();
        fs.crash();
        assert_eq!(fs.read(&dir().join("a")).unwrap(), b"hello");
        assert!(f.len().is_err(), "a handle from before the crash is dead");
    }

    #[test]
    fn a_lying_sync_protects_nothing() {
        // Given a disk told to lie, when a file is written, "synced" and the disk crashes,
        // then the write may be lost: over many seeds at least one crash loses it.
        let lost = (0..50).any(|seed| {
            let fs = SimFs::new(seed);
            fs.create_dir_all(&dir()).unwrap();
            let f = fs.create_new(&dir().join("a")).unwrap();
            fs.sync_dir(&dir()).unwrap();
            fs.set_lying_syncs(true);
            f.write_all_at(b"acknowledged", 0).unwrap();
            f.sync_data().unwrap();
            fs.crash();
            fs.read(&dir().join("a")).unwrap() != b"acknowledged"
        });
        assert!(lost, "a lying sync must not make writes durable");
    }

    #[test]
    fn a_file_whose_name_was_never_synced_vanishes() {
        let fs = SimFs::new(2);
        fs.create_dir_all(&dir()).unwrap();
        let f = fs.create_new(&dir().join("a")).unwrap();
        f.write_all_at(b"data", 0).unwrap();
        f.sync_data().unwrap();
        fs.crash();
        assert!(fs.read(&dir().join("a")).is_none());
    }

    #[test]
    fn a_removal_that_was_never_synced_is_undone() {
        let fs = SimFs::new(3);
        fs.create_dir_all(&dir()).unwrap();
        let f = fs.create_new(&dir().join("a")).unwrap();
        f.write_all_at(b"kept", 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&dir()).unwrap();
        fs.remove_file(&dir().join("a")).unwrap();
        fs.crash();
        assert_eq!(fs.read(&dir().join("a")).unwrap(), b"kept");
    }

    #[test]
    fn unsynced_writes_survive_only_as_a_prefix() {
        for seed in 0..200 {
            let fs = SimFs::new(seed);
            fs.create_dir_all(&dir()).unwrap();
            let f = fs.create_new(&dir().join("a")).unwrap();
            fs.sync_dir(&dir()).unwrap();
            f.write_all_at(b"AAAA", 0).unwrap();
            f.sync_data().unwrap();
            f.write_all_at(b"BBBB", 4).unwrap();
            f.write_all_at(b"CCCC", 8).unwrap();
            fs.crash();
            let got = fs.read(&dir().join("a")).unwrap();
            assert!(got.starts_with(b"AAAA"), "seed {seed}: synced bytes kept");
            // Whole writes must be kept in order: C without all of B is impossible.
            if got.len() > 8 {
                assert_eq!(&got[4..8], b"BBBB", "seed {seed}: {got:?}");
            }
        }
    }

    #[test]
    fn the_same_seed_crashes_the_same_way() {
        let run = |seed| {
            let fs = SimFs::new(seed);
            fs.create_dir_all(&dir()).unwrap();
            let f = fs.create_new(&dir().join("a")).unwrap();
            fs.sync_dir(&dir()).unwrap();
            for i in 0..20u8 {
                f.write_all_at(&[i; 16], u64::from(i) * 16).unwrap();
            }
            (fs.crash(), fs.read(&dir().join("a")).unwrap())
        };
        assert_eq!(run(7), run(7));
    }

    #[test]
    fn a_second_lock_on_a_directory_would_block_until_the_first_is_dropped() {
        let fs = SimFs::new(4);
        fs.create_dir_all(&dir()).unwrap();
        let lock = fs.lock_dir(&dir()).unwrap();
        assert_eq!(
            fs.lock_dir(&dir()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(lock);
        fs.lock_dir(&dir()).unwrap();
    }
}
