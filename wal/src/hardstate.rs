//! The hard state (Raft's term, vote and commit, as opaque bytes) in a file of two slots.
//!
//! The hard state lives beside the segments rather than inside them so that truncating or
//! compacting the log can never remove its latest copy. The file `hardstate` has two fixed slots
//! of [`HARD_STATE_SLOT_BYTES`]; each save writes a [`RecordKind::HardState`] record carrying a
//! save sequence number into slot 0, syncs, then into slot 1, and syncs again.
//!
//! Invariants: after a save returns, both slots hold it. A crash during a save tears at most one
//! slot, and the other still holds a valid copy (the new one or the previous one, and the previous
//! one only if the save never returned). Bit rot in one slot is survived by the other. On open the
//! valid slot with the higher sequence wins; two damaged slots are corruption.
//!
//! A full disk: a slot *write* that fails for lack of space ([`SaveError::NoSpace`]) leaves the
//! file retryable. Only that slot may now be torn (a short write can land part of it); the other
//! slot was not touched by this save and holds a valid copy (the previous state, or this save's
//! if the failing slot was the second). That slot is marked suspect and the next save writes it
//! *first*, so that at every moment at least one slot is valid and a crash still tears at most
//! one. Opening does the same for a save that a crash cut short: the slot that does not hold
//! the newest copy (damaged, or older) is written first by the next save, so that the copy the
//! node went on from is never the one a crash tears. Every attempt takes a new sequence number, so a slot that an attempt did fill can never
//! tie with a later save. A failed *fsync*, whatever its kind, is not retryable
//! ([`SaveError::Failed`]): after it the kernel may have dropped the dirty pages.

use std::path::{Path, PathBuf};

use tracing::warn;

use crate::error::{Result, WalError};
use crate::fs::{FileHandle, FileSystem};
use crate::record::{self, Decoded, RECORD_OVERHEAD_BYTES, RecordKind};

/// The hard-state file's name inside the WAL directory.
pub const HARD_STATE_FILE_NAME: &str = "hardstate";
/// The size of each of the two slots.
pub const HARD_STATE_SLOT_BYTES: u64 = 4096;
/// The largest hard-state payload: a slot less the record overhead.
pub const HARD_STATE_BYTES_MAX: usize = HARD_STATE_SLOT_BYTES as usize - RECORD_OVERHEAD_BYTES;

/// The open hard-state file and its current contents.
pub(crate) struct HardStateFile<H> {
    file: H,
    path: PathBuf,
    current: Option<Vec<u8>>,
    /// The highest sequence number any save attempt used (see the module docs).
    sequence: u64,
    /// The slot whose last write failed (its bytes are unknown): written first by the next save.
    suspect: Option<u64>,
}

/// Why [`HardStateFile::save`] failed.
#[derive(Debug)]
pub(crate) enum SaveError {
    /// A slot write failed for lack of space; the file is whole and the save may be retried.
    NoSpace(WalError),
    /// Anything else: what the file holds is unknown, or the payload is refused.
    Failed(WalError),
}

impl<H: FileHandle> HardStateFile<H> {
    /// Opens (creating if needed) the hard-state file in `dir` and reads the newest valid copy.
    pub(crate) fn open<F: FileSystem<File = H>>(fs: &F, dir: &Path) -> Result<Self> {
        let path = dir.join(HARD_STATE_FILE_NAME);
        let exists = fs
            .list_files(dir)
            .map_err(|e| WalError::io(dir, e))?
            .iter()
            .any(|n| n == HARD_STATE_FILE_NAME);
        if !exists {
            let file = fs.create_new(&path).map_err(|e| WalError::io(&path, e))?;
            file.set_len(2 * HARD_STATE_SLOT_BYTES)
                .and_then(|()| file.sync_data())
                .map_err(|e| WalError::io(&path, e))?;
            fs.sync_dir(dir).map_err(|e| WalError::io(dir, e))?;
            return Ok(HardStateFile {
                file,
                path,
                current: None,
                sequence: 0,
                suspect: None,
            });
        }
        let file = fs.open(&path).map_err(|e| WalError::io(&path, e))?;
        let len = file.len().map_err(|e| WalError::io(&path, e))?;
        let mut bytes = vec![0u8; (2 * HARD_STATE_SLOT_BYTES) as usize];
        let readable = len.min(2 * HARD_STATE_SLOT_BYTES) as usize;
        file.read_exact_at(&mut bytes[..readable], 0)
            .map_err(|e| WalError::io(&path, e))?;
        let mut best: Option<(u64, Vec<u8>)> = None;
        let mut best_slot = 0;
        // The sequence each slot holds a whole copy of.
        let mut sequences = [None; 2];
        let mut damaged = Vec::new();
        for (slot, sequence) in sequences.iter_mut().enumerate() {
            let start = slot * HARD_STATE_SLOT_BYTES as usize;
            let bytes = &bytes[start..start + HARD_STATE_SLOT_BYTES as usize];
            match record::decode(bytes) {
                Decoded::Record { header, payload } if header.kind == RecordKind::HardState => {
                    *sequence = Some(header.index);
                    if best.as_ref().is_none_or(|(seq, _)| header.index > *seq) {
                        best = Some((header.index, payload.to_vec()));
                        best_slot = slot;
                    }
                }
                _ if bytes.iter().all(|b| *b == 0) => {}
                other => damaged.push((start as u64, format!("{other:?}"))),
            }
        }
        for (offset, what) in &damaged {
            if best.is_some() {
                warn!(file = %path.display(), offset, damage = %what,
                      "one hard-state slot is damaged (a torn save or bit rot); the other slot is used");
            }
        }
        if best.is_none() && damaged.len() == 2 {
            return Err(WalError::corrupt(
                &path,
                damaged[0].0,
                "both hard-state slots are damaged",
            ));
        }
        let (sequence, current) = match best {
            Some((seq, payload)) => (seq, Some(payload)),
            None => (0, None),
        };
        // A save cut short by a crash (or a full disk) leaves one slot without the newest
        // copy, damaged or older: the next save must write that one first, or a crash during
        // it could tear the only slot holding the state this node has gone on from.
        let other = 1 - best_slot;
        let suspect =
            (current.is_some() && sequences[other] != Some(sequence)).then_some(other as u64);
        Ok(HardStateFile {
            file,
            path,
            current,
            sequence,
            suspect,
        })
    }

    /// The newest saved hard state.
    pub(crate) fn current(&self) -> Option<&[u8]> {
        self.current.as_deref()
    }

    /// Saves `payload` durably in both slots; returns the number of fsyncs done. On
    /// [`SaveError::NoSpace`] nothing is taken as saved and the file stays safe to retry
    /// (see the module docs).
    pub(crate) fn save(&mut self, payload: &[u8]) -> Result<u32, SaveError> {
        if payload.len() > HARD_STATE_BYTES_MAX {
            return Err(SaveError::Failed(WalError::PayloadTooLarge {
                len: payload.len() as u64,
                max: HARD_STATE_BYTES_MAX as u64,
            }));
        }
        // A new number for every attempt: a slot a failed attempt filled must lose to any
        // later save, never tie with it.
        self.sequence += 1;
        let mut slot = Vec::with_capacity(HARD_STATE_SLOT_BYTES as usize);
        record::encode(RecordKind::HardState, self.sequence, 0, payload, &mut slot);
        slot.resize(HARD_STATE_SLOT_BYTES as usize, 0);
        // The suspect slot first: while it is rewritten, the other one is the valid copy.
        let first = self.suspect.unwrap_or(0);
        for i in [first, 1 - first] {
            if let Err(e) = self.file.write_all_at(&slot, i * HARD_STATE_SLOT_BYTES) {
                let no_space = crate::fs::is_no_space(&e);
                let err = WalError::io(&self.path, e);
                if no_space {
                    self.suspect = Some(i);
                    return Err(SaveError::NoSpace(err));
                }
                return Err(SaveError::Failed(err));
            }
            self.file
                .sync_data()
                .map_err(|e| SaveError::Failed(WalError::io(&self.path, e)))?;
            if self.suspect == Some(i) {
                self.suspect = None;
            }
        }
        self.current = Some(payload.to_vec());
        Ok(2)
    }
}
