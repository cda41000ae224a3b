//! Segment files: naming, the file header, and the recovery scan of one segment.
//!
//! A segment is named by the index of its first entry, zero-padded to 20 digits so that names
//! sort like numbers (`00000000000000000001.wal`). It starts with a fixed header, then holds
//! entry records (see [`crate::record`]) back to back:
//!
//! ```text
//! offset  size  field
//!      0     8  magic           b"RKVWSEG\0"
//!      8     4  format version  u32 LE, 1
//!     12     8  first index     u64 LE, equal to the index in the file name
//!     20     4  CRC-32 of bytes [0, 20)
//! ```
//!
//! A segment file may be longer than its records: the log reserves space ahead of its writes
//! (see [`crate::PREALLOCATE_BYTES`]), and reserved space reads as zeros. The scan ends at
//! the first byte that is not a valid record; if every byte from there on is zero, that is
//! reserved space, not damage.
//!
//! Invariants checked by the scan: the header is intact and agrees with the file name; entry
//! `k` of the segment has index `first_index + k`; terms never go down. Damage is reported with
//! its byte offset and whether any valid record follows it, which is what decides between "torn
//! tail, truncate it" and "corruption, refuse to open" (see [`crate::Wal::open`]).

use std::path::Path;

use crate::error::{Result, WalError};
use crate::fs::FileHandle;
use crate::record::{self, Decoded, RECORD_MAGIC, RecordKind};

/// The eight bytes every segment file starts with.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RKVWSEG\0";
/// The segment format this code writes and reads.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// The size of the segment file header.
pub const SEGMENT_HEADER_BYTES: u64 = 24;
/// The suffix of segment file names.
pub const SEGMENT_FILE_SUFFIX: &str = ".wal";
/// How much of a segment the recovery scan reads per call: large enough to run at sequential
/// read speed, small enough that recovery's memory does not grow with the segment size.
pub const SCAN_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// The file name of the segment whose first entry has `first_index`.
pub fn segment_file_name(first_index: u64) -> String {
    format!("{first_index:020}{SEGMENT_FILE_SUFFIX}")
}

/// The first index encoded in a segment file name, or `None` if `name` is not one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_FILE_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header bytes of a segment starting at `first_index`.
pub fn encode_header(first_index: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The first index stored in a segment header, or why the header is not valid.
pub fn decode_header(h: &[u8]) -> std::result::Result<u64, String> {
    if h.len() < SEGMENT_HEADER_BYTES as usize {
        return Err(format!(
            "file header cut short: {} of {SEGMENT_HEADER_BYTES} bytes",
            h.len()
        ));
    }
    if h[0..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    let stored = u32::from_le_bytes(h[20..24].try_into().expect("4-byte slice"));
    if stored != crc32fast::hash(&h[..20]) {
        return Err("segment header checksum mismatch".into());
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4-byte slice"));
    if version != SEGMENT_FORMAT_VERSION {
        return Err(format!("unknown segment format version {version}"));
    }
    Ok(u64::from_le_bytes(
        h[12..20].try_into().expect("8-byte slice"),
    ))
}

/// Damage found by a scan: where the valid records stop.
#[derive(Debug, Clone)]
pub struct Damage {
    /// Byte offset of the first byte that is not part of a valid record.
    pub offset: u64,
    /// What is wrong there.
    pub reason: String,
    /// Whether a valid record starts anywhere after `offset`: if so, this is not a torn tail.
    pub valid_record_follows: bool,
}

/// What the recovery scan of one segment found.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Byte offset of each valid entry record; entry `k` has index `first_index + k`.
    pub offsets: Vec<u32>,
    /// `(first index of the run, term)` for each run of equal terms, ascending.
    pub term_runs: Vec<(u64, u64)>,
    /// The end of the last valid record.
    pub valid_len: u64,
    /// The file's length: `valid_len` plus damage, or plus reserved space (all zeros).
    pub file_len: u64,
    /// Set if the file holds bytes after `valid_len` other than reserved space (zeros).
    pub damage: Option<Damage>,
}

/// Reads every record of a segment whose header says `first_index` (already checked by the
/// caller), verifying CRCs and index order. `prev_term` is the term of the entry before the
/// segment (0 if none).
///
/// Returns an error only for damage that no crash can explain (a CRC-valid record with the wrong
/// index, a term that steps back); damage that may be a torn write is returned in
/// [`Scan::damage`] for the caller to judge.
pub fn scan<H: FileHandle>(
    file: &H,
    path: &Path,
    first_index: u64,
    prev_term: u64,
) -> Result<Scan> {
    let file_len = file.len().map_err(|e| WalError::io(path, e))?;
    let mut offsets = Vec::new();
    let mut term_runs: Vec<(u64, u64)> = Vec::new();
    let mut last_term = prev_term;
    let mut next_index = first_index;

    std::thread::scope(|scope| {
        let mut reader = ChunkReader::new(file, path, file_len, scope);
        let mut buf: Vec<u8> = Vec::with_capacity(SCAN_CHUNK_BYTES);
        let mut buf_start = SEGMENT_HEADER_BYTES; // file offset of buf[0]
        let mut pos = 0usize; // position in buf
        let damage = loop {
            let at = buf_start + pos as u64;
            if at == file_len {
                break None;
            }
            match record::decode(&buf[pos..]) {
                Decoded::Record { header, .. } => {
                    if header.kind != RecordKind::Entry {
                        return Err(WalError::corrupt(
                            path,
                            at,
                            format!("a {:?} record inside a segment", header.kind),
                        ));
                    }
                    if header.index != next_index {
                        return Err(WalError::corrupt(
                            path,
                            at,
                            format!(
                                "index {} where {} was expected (a gap or a step back)",
                                header.index, next_index
                            ),
                        ));
                    }
                    if header.term < last_term {
                        return Err(WalError::corrupt(
                            path,
                            at,
                            format!(
                                "entry {} has term {} after term {last_term}",
                                header.index, header.term
                            ),
                        ));
                    }
                    if term_runs.last().is_none_or(|&(_, t)| t != header.term) {
                        term_runs.push((header.index, header.term));
                    }
                    let offset = u32::try_from(at).map_err(|_| {
                        WalError::corrupt(path, at, "segment larger than 4 GiB".to_string())
                    })?;
                    offsets.push(offset);
                    last_term = header.term;
                    next_index += 1;
                    pos += header.record_bytes();
                }
                Decoded::Incomplete { needed } => {
                    let available = file_len - at;
                    if needed as u64 > available {
                        break Some((
                            at,
                            format!(
                                "record cut short: needs {needed} bytes, the file has {available} more"
                            ),
                        ));
                    }
                    // Refill: keep the partial record, read at least what it needs.
                    buf.drain(..pos);
                    buf_start = at;
                    pos = 0;
                    debug_assert_eq!(reader.next, buf_start + buf.len() as u64);
                    while buf.len() < needed {
                        reader.next_chunk(&mut buf)?;
                    }
                }
                Decoded::Invalid(why) => break Some((at, why.to_string())),
            }
        };
        let valid_len = match &damage {
            Some((offset, _)) => *offset,
            None => file_len,
        };
        let damage = match damage {
            None => None,
            // Space reserved ahead of the writes (`FileHandle::allocate`) that no write reached.
            Some((offset, _)) if zeros_only(file, path, offset, file_len)? => None,
            Some((offset, reason)) => Some(Damage {
                offset,
                reason,
                valid_record_follows: valid_record_after(file, path, offset, file_len)?,
            }),
        };
        Ok(Scan {
            offsets,
            term_runs,
            valid_len,
            file_len,
            damage,
        })
    })
}

/// Reads a segment front to back in [`SCAN_CHUNK_BYTES`] chunks for [`scan`]. On a segment of
/// more than one chunk, the next chunk is read on a helper thread while the current one is
/// parsed, so recovery runs at the disk's speed rather than disk plus CPU; a small segment (every
/// segment of the simulated disk in tests) is read on the calling thread.
struct ChunkReader<'scope, 'env, H: FileHandle> {
    file: &'env H,
    path: &'env Path,
    file_len: u64,
    /// File offset of the next byte not yet handed out.
    next: u64,
    scope: &'scope std::thread::Scope<'scope, 'env>,
    ahead: Option<std::thread::ScopedJoinHandle<'scope, std::io::Result<Vec<u8>>>>,
}

impl<'scope, 'env, H: FileHandle> ChunkReader<'scope, 'env, H> {
    fn new(
        file: &'env H,
        path: &'env Path,
        file_len: u64,
        scope: &'scope std::thread::Scope<'scope, 'env>,
    ) -> Self {
        ChunkReader {
            file,
            path,
            file_len,
            next: SEGMENT_HEADER_BYTES.min(file_len),
            scope,
            ahead: None,
        }
    }

    fn read(file: &H, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut chunk = vec![0u8; len];
        file.read_exact_at(&mut chunk, offset)?;
        Ok(chunk)
    }

    /// Appends the next chunk to `buf`; the caller has checked that the file has more bytes.
    fn next_chunk(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        let len = (self.file_len - self.next).min(SCAN_CHUNK_BYTES as u64) as usize;
        debug_assert!(
            len > 0,
            "the scan asks for bytes only when the file has them"
        );
        let chunk = match self.ahead.take() {
            Some(handle) => handle.join().expect("a chunk read does not panic"),
            None => Self::read(self.file, self.next, len),
        }
        .map_err(|e| WalError::io(self.path, e))?;
        debug_assert_eq!(chunk.len(), len);
        self.next += len as u64;
        buf.extend_from_slice(&chunk);
        let after = (self.file_len - self.next).min(SCAN_CHUNK_BYTES as u64) as usize;
        if after > 0 {
            let (file, offset) = (self.file, self.next);
            self.ahead = Some(self.scope.spawn(move || Self::read(file, offset, after)));
        }
        Ok(())
    }
}

/// Whether the bytes `[offset, file_len)` are all zero: space reserved for records that were
/// never written. No record starts with a zero byte (see [`RECORD_MAGIC`]), so zeros are never
/// a torn record, and dropping them loses nothing; the reserved tail is at most one
/// reservation step ([`crate::PREALLOCATE_BYTES`]) on a log this code wrote.
fn zeros_only<H: FileHandle>(file: &H, path: &Path, offset: u64, file_len: u64) -> Result<bool> {
    let mut at = offset;
    let mut chunk = Vec::new();
    while at < file_len {
        let len = (file_len - at).min(SCAN_CHUNK_BYTES as u64) as usize;
        chunk.resize(len, 0);
        file.read_exact_at(&mut chunk, at)
            .map_err(|e| WalError::io(path, e))?;
        if chunk.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += len as u64;
    }
    Ok(true)
}

/// Whether any CRC-valid record starts after `offset`. Only run on damage, so reading the rest of
/// the segment into memory (bounded by the segment size) is acceptable.
fn valid_record_after<H: FileHandle>(
    file: &H,
    path: &Path,
    offset: u64,
    file_len: u64,
) -> Result<bool> {
    let start = offset + 1;
    if start >= file_len {
        return Ok(false);
    }
    let mut rest = vec![0u8; (file_len - start) as usize];
    file.read_exact_at(&mut rest, start)
        .map_err(|e| WalError::io(path, e))?;
    Ok(rest
        .windows(RECORD_MAGIC.len())
        .enumerate()
        .filter(|(_, w)| *w == RECORD_MAGIC)
        .any(|(i, _)| matches!(record::decode(&rest[i..]), Decoded::Record { .. })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_like_their_indexes_and_parse_back() {
        assert_eq!(segment_file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_segment_file_name("00000000000000000001.wal"), Some(1));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert!(segment_file_name(9) < segment_file_name(10));
        for bad in [
            "1.wal",
            "0000000000000000000a.wal",
            "00000000000000000001.log",
            "LOCK",
            "hardstate",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_header_round_trips_and_damage_is_named() {
        let h = encode_header(77);
        assert_eq!(decode_header(&h), Ok(77));
        assert!(decode_header(&h[..10]).unwrap_err().contains("cut short"));
        let mut bad = h;
        bad[13] ^= 1;
        assert!(decode_header(&bad).unwrap_err().contains("checksum"));
        let mut bad = h;
        bad[0] = b'X';
        assert!(decode_header(&bad).unwrap_err().contains("magic"));
    }
}
