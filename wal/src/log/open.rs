//! Opening a log: creating and locking its directory, and recovering its segments. Recovery
//! checks every record; it truncates a torn tail of the newest segment (bad or cut-short
//! bytes after which no valid record follows) and refuses anything else that is damaged,
//! naming the file and offset. Invariant: what recovery keeps is contiguous, checksummed and
//! on disk, so all of it counts as durable; a new segment's name is durable before any record
//! in it is reported durable.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{info, warn};

use super::{Segment, Wal, WalConfig};
use crate::error::{Result, WalError};
use crate::fs::{FileHandle, FileSystem};
use crate::hardstate::HardStateFile;
use crate::metrics::WalMetrics;
use crate::segment::{self, SEGMENT_HEADER_BYTES};

impl<F: FileSystem> Wal<F> {
    /// Opens the log in `dir` (creating it if needed), locks the directory and recovers.
    ///
    /// Recovery reads every segment and checks every CRC. A torn tail of the *last* segment (bad
    /// or cut-short bytes after which no valid record follows) is truncated and logged. Anything
    /// else (a bad record followed by valid ones, a gap or step back in indexes, a damaged
    /// segment that is not the last) is [`WalError::Corrupt`], naming the file and offset.
    pub fn open(fs: F, dir: impl Into<PathBuf>, config: WalConfig) -> Result<Self> {
        config.validate()?;
        let dir = dir.into();
        fs.create_dir_all(&dir).map_err(|e| WalError::io(&dir, e))?;
        let lock = fs.lock_dir(&dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                WalError::Locked { dir: dir.clone() }
            } else {
                WalError::io(&dir, e)
            }
        })?;
        let hard_state = HardStateFile::open(&fs, &dir)?;
        let mut wal = Wal {
            fs,
            dir,
            config,
            _lock: lock,
            segments: Vec::new(),
            term_runs: Vec::new(),
            hard_state,
            durable_index: 0,
            poisoned: None,
            preallocate: true,
            metrics: Arc::new(WalMetrics::default()),
            scratch: Vec::new(),
        };
        wal.recover()?;
        wal.publish_gauges();
        if let Err(broken) = wal.check_invariants() {
            // Recovery reports damage on disk as errors; what it built must hold.
            panic!(
                "WAL invariant violated after recovering {}: {broken}",
                wal.dir.display()
            );
        }
        info!(dir = %wal.dir.display(), first_index = wal.first_index(), last_index = wal.last_index(),
              segments = wal.segments.len(), "WAL opened");
        Ok(wal)
    }

    fn recover(&mut self) -> Result<()> {
        let mut firsts = Vec::new();
        for name in self
            .fs
            .list_files(&self.dir)
            .map_err(|e| WalError::io(&self.dir, e))?
        {
            if let Some(first) = segment::parse_segment_file_name(&name) {
                firsts.push(first);
            } else if name.ends_with(segment::SEGMENT_FILE_SUFFIX) {
                return Err(WalError::corrupt(
                    self.dir.join(&name),
                    0,
                    "a .wal file whose name is not a 20-digit first index",
                ));
            }
        }
        firsts.sort_unstable();
        if firsts.is_empty() {
            self.create_segment(1)?;
            return Ok(());
        }
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            self.recover_segment(first, i + 1 == count)?;
        }
        // Everything that survived recovery counts as durable from here on (a node then
        // acknowledges it), so it must be on disk and not only in the page cache: a killed
        // process leaves its last unsynced appends there, and a power loss after they were
        // acknowledged would lose them. Sealed segments were synced in full before the next
        // began; the newest one, and the directory that names it, are synced here.
        let newest = self
            .segments
            .last()
            .expect("invariant: recovery keeps every segment it found, at least one");
        newest
            .file
            .sync_data()
            .map_err(|e| WalError::io(&newest.path, e))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| WalError::io(&self.dir, e))?;
        self.durable_index = self.last_index();
        Ok(())
    }

    fn recover_segment(&mut self, first_index: u64, is_last: bool) -> Result<()> {
        let path = self.dir.join(segment::segment_file_name(first_index));
        if first_index == 0 {
            return Err(WalError::corrupt(&path, 0, "segment named for index 0"));
        }
        if let Some(prev) = self.segments.last()
            && first_index != prev.last_index() + 1
        {
            return Err(WalError::corrupt(
                &path,
                0,
                format!(
                    "gap between segments: the previous one ends at index {}, this one starts at {first_index}",
                    prev.last_index()
                ),
            ));
        }
        let file = self.fs.open(&path).map_err(|e| WalError::io(&path, e))?;
        let file_len = file.len().map_err(|e| WalError::io(&path, e))?;
        let mut header = vec![0u8; file_len.min(SEGMENT_HEADER_BYTES) as usize];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| WalError::io(&path, e))?;
        match segment::decode_header(&header) {
            Ok(stored) if stored == first_index => {}
            Ok(stored) => {
                return Err(WalError::corrupt(
                    &path,
                    12,
                    format!("header says first index {stored}, the file name says {first_index}"),
                ));
            }
            // A crash while the segment was being created: nothing after the header can have
            // been synced, because a record is only synced after its segment's header.
            Err(why) if is_last && file_len <= SEGMENT_HEADER_BYTES => {
                warn!(file = %path.display(), problem = %why,
                      "WAL recovery: the newest segment's header was torn by a crash; rewriting it");
                file.set_len(0)
                    .and_then(|()| file.write_all_at(&segment::encode_header(first_index), 0))
                    .and_then(|()| file.sync_data())
                    .map_err(|e| WalError::io(&path, e))?;
                self.segments.push(Segment::empty(first_index, path, file));
                return Ok(());
            }
            Err(why) => return Err(WalError::corrupt(&path, 0, why)),
        }

        let prev_term = self.term_runs.last().map_or(0, |&(_, t)| t);
        let scan = segment::scan(&file, &path, first_index, prev_term)?;
        if let Some(damage) = &scan.damage {
            if !is_last || damage.valid_record_follows {
                let reason = if damage.valid_record_follows {
                    format!(
                        "{}; valid records follow, so this is not a torn write",
                        damage.reason
                    )
                } else {
                    format!("{}; this is not the newest segment", damage.reason)
                };
                return Err(WalError::corrupt(&path, damage.offset, reason));
            }
            warn!(file = %path.display(), offset = damage.offset, problem = %damage.reason,
                  dropped_bytes = scan.file_len - damage.offset,
                  "WAL recovery: truncating a torn tail left by a crash");
            file.set_len(damage.offset)
                .and_then(|()| file.sync_data())
                .map_err(|e| WalError::io(&path, e))?;
        }
        let allocated = if scan.damage.is_some() {
            scan.valid_len
        } else {
            scan.file_len
        };
        for &(index, term) in &scan.term_runs {
            if self.term_runs.last().is_none_or(|&(_, t)| t != term) {
                self.term_runs.push((index, term));
            }
        }
        self.segments.push(Segment {
            first_index,
            path,
            file: Arc::new(file),
            offsets: scan.offsets,
            len: scan.valid_len,
            allocated,
        });
        Ok(())
    }

    /// Creates, durably, an empty segment starting at `first_index` and makes it active.
    pub(super) fn create_segment(&mut self, first_index: u64) -> Result<()> {
        let path = self.dir.join(segment::segment_file_name(first_index));
        let file = self
            .fs
            .create_new(&path)
            .map_err(|e| WalError::io(&path, e))?;
        if let Err(e) = file.write_all_at(&segment::encode_header(first_index), 0) {
            // Not kept: a retry creates the file anew (and recovery would refuse a segment
            // without its header). Its name was never synced, so no crash can depend on it.
            drop(file);
            let _ = self.fs.remove_file(&path);
            return Err(WalError::io(&path, e));
        }
        // The name must be durable before any record in the file is reported durable.
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| WalError::io(&self.dir, e))?;
        self.segments.push(Segment::empty(first_index, path, file));
        Ok(())
    }
}
