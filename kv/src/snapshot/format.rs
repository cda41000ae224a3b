//! Snapshot format version 3: written in one forward pass, read and verified in one forward
//! pass, with memory bounded by the largest single record (not by the size of the state).
//!
//! Layout (fixed-size integers little-endian; `varint` is unsigned LEB128, at most 10 bytes,
//! in its shortest form):
//!
//! ```text
//! offset  size  field
//!      0     8  magic b"RKVSNAP\0"
//!      8     4  format version, 3 (u32)
//!     12     8  index: the last log index in the snapshot (u64)
//!     20     8  term of the entry at index (u64)
//!     28     4  config length c (u32, at most SNAPSHOT_CONFIG_BYTES_MAX)
//!     32     c  config: opaque to this crate (the server keeps its cluster records here)
//!            8  revision (u64)
//!            4  session count s (u32, at most SNAPSHOT_SESSIONS_MAX)
//!        s × (  record length r (u32, at most SNAPSHOT_SESSION_BYTES_MAX),
//!               r bytes: postcard of a SessionRecord )         in client-id order
//!            8  key count k (u64)
//!        k × (  varint key length (at most KEY_BYTES_MAX), key,
//!               varint value length (at most VALUE_BYTES_MAX), value,
//!               varint create_revision, varint mod_revision, varint version )
//!                                                              in strictly increasing key order
//!            8  body length b: the number of bytes before this field (u64)
//!            4  CRC-32 (crc32fast, IEEE) of those b bytes (u32)
//! ```
//!
//! The meta (index, term, config) sits at fixed offsets so a node reads its cluster records
//! from the first bytes of a file ([`read_meta`]). Sessions, which are bounded, come before the
//! keys, so a reader has them when it starts building the map. The checksum is in a trailer,
//! not the header, so that the writer never seeks back: a snapshot streams straight from a
//! point-in-time view to a file or a socket.
//!
//! Reading is one pass: every length is checked against its bound *before* anything is
//! allocated for it, so garbage cannot make a reader allocate more than one value's worth,
//! and a stream longer than [`SNAPSHOT_BYTES_MAX`] is refused. Damage is reported as
//! [`CorruptSnapshot`], distinct from I/O errors and from content that verifies but breaks an
//! invariant (a writer bug or a hostile peer): when both are present, damage wins, because
//! nothing the reader found before the checksum was checked can be trusted.

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};

use super::{
    CorruptSnapshot, SNAPSHOT_BYTES_MAX, SNAPSHOT_FORMAT_VERSION, SNAPSHOT_FORMAT_VERSION_MIN,
    SNAPSHOT_MAGIC, Snapshot, SnapshotMeta,
};
use crate::command::KeyValue;
use crate::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX, ValidationError};
use crate::session::{SessionConfig, SessionRecord, SessionTable};
use crate::store::{InvariantError, KvConfig, KvStore};
use crate::view::KvView;

/// Largest config section accepted (16 MiB). The server's cluster records (members, their
/// addresses, removed ids) take a few KiB; anything near this bound is damage.
pub const SNAPSHOT_CONFIG_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Most sessions a snapshot may hold (1,000,000): a hundred times the default
/// [`crate::SESSIONS_MAX_DEFAULT`], so any sane `sessions_max` fits.
pub const SNAPSHOT_SESSIONS_MAX: usize = 1_000_000;

/// Largest encoded session record (one key and one value at their limits plus 4 KiB for the
/// rest): a cached response holds at most one previous key-value.
pub const SNAPSHOT_SESSION_BYTES_MAX: usize = KEY_BYTES_MAX + VALUE_BYTES_MAX + 4096;

/// Size of the trailer (body length and CRC-32), in bytes.
pub const SNAPSHOT_TRAILER_BYTES: usize = 12;

/// Bytes before the config section: magic, version, index, term, config length.
const META_FIXED_BYTES: usize = 32;

/// Size of the writer's staging buffer and of the reader's buffer (64 KiB): large enough that
/// a syscall and a CRC update cover many small records, small enough to be noise in memory.
const STREAM_CHUNK_BYTES: usize = 64 * 1024;

/// Buffer of [`read_meta`]: the fixed fields and a typical config in one read, so that it
/// reads little beyond the meta.
const META_READ_BUFFER_BYTES: usize = 4096;

/// Longest LEB128 encoding of a u64.
const VARINT_BYTES_MAX: usize = 10;

/// Why a snapshot could not be read: I/O, damage, or content that breaks an invariant.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotReadError {
    /// Reading the source failed (not damage: the same bytes may read fine later).
    #[error("reading the snapshot failed: {0}")]
    Io(#[source] io::Error),
    /// The bytes are damaged, truncated or foreign.
    #[error("snapshot is damaged: {0}")]
    Corrupt(#[from] CorruptSnapshot),
    /// The bytes verify, but their content is inconsistent (a writer bug or a hostile peer).
    #[error("snapshot verifies but its content is inconsistent: {0}")]
    Invariant(#[from] InvariantError),
}

impl KvView {
    /// Writes the snapshot of this view, in format 3, in one forward pass; returns the bytes
    /// written. `term` is the term of the entry at [`KvView::applied_index`] and `config` the
    /// caller's opaque configuration bytes as of that index. The view is not copied: memory is
    /// bounded by one 64 KiB chunk plus the largest value. `out` is flushed at the end.
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] (writing nothing a reader would refuse) if
    /// `config` or a session is above its bound.
    pub fn write_snapshot(&self, term: u64, config: &[u8], out: &mut dyn Write) -> io::Result<u64> {
        let header = Header {
            index: self.applied_index(),
            term,
            config,
            revision: self.revision(),
        };
        // Borrowed from the tree's entries: nothing is copied per key on the way out.
        let records = self.map.iter().map(|entry| {
            let (revisions, value) = entry.meta_and_value();
            (entry.key_bytes(), value, revisions)
        });
        write_streamed(&header, &self.sessions(), self.len() as u64, records, out)
    }
}

/// The fields written before the sessions.
struct Header<'a> {
    index: u64,
    term: u64,
    config: &'a [u8],
    revision: u64,
}

fn write_streamed<'k>(
    header: &Header<'_>,
    sessions: &[SessionRecord],
    key_count: u64,
    kvs: impl Iterator<Item = (&'k [u8], &'k [u8], [u64; 3])>,
    out: &mut dyn Write,
) -> io::Result<u64> {
    if header.config.len() > SNAPSHOT_CONFIG_BYTES_MAX {
        return Err(refused(format!(
            "config is {} bytes, the snapshot limit is {SNAPSHOT_CONFIG_BYTES_MAX}",
            header.config.len()
        )));
    }
    if sessions.len() > SNAPSHOT_SESSIONS_MAX {
        return Err(refused(format!(
            "{} sessions, the snapshot limit is {SNAPSHOT_SESSIONS_MAX}",
            sessions.len()
        )));
    }
    let mut sink = Sink::new(out);
    sink.put(&SNAPSHOT_MAGIC)?;
    sink.put(&SNAPSHOT_FORMAT_VERSION.to_le_bytes())?;
    sink.put(&header.index.to_le_bytes())?;
    sink.put(&header.term.to_le_bytes())?;
    sink.put(&len_u32(header.config.len()).to_le_bytes())?;
    sink.put(header.config)?;
    sink.put(&header.revision.to_le_bytes())?;
    sink.put(&len_u32(sessions.len()).to_le_bytes())?;
    let mut record = Vec::new();
    for session in sessions {
        record.clear();
        record = postcard::to_extend(session, record)
            .map_err(|e| refused(format!("session {}: {e}", session.client_id)))?;
        if record.len() > SNAPSHOT_SESSION_BYTES_MAX {
            return Err(refused(format!(
                "session {} is {} bytes, the snapshot limit is {SNAPSHOT_SESSION_BYTES_MAX}",
                session.client_id,
                record.len()
            )));
        }
        sink.put(&len_u32(record.len()).to_le_bytes())?;
        sink.put(&record)?;
    }
    sink.put(&key_count.to_le_bytes())?;
    let mut written_keys = 0u64;
    for (key, value, [create_revision, mod_revision, version]) in kvs {
        if key.len() > KEY_BYTES_MAX || value.len() > VALUE_BYTES_MAX {
            return Err(refused(format!(
                "key {:?} or its value is above the size limits",
                bytes::Bytes::copy_from_slice(key)
            )));
        }
        sink.varint(key.len() as u64);
        sink.put(key)?;
        sink.varint(value.len() as u64);
        sink.put(value)?;
        sink.varint(create_revision);
        sink.varint(mod_revision);
        sink.varint(version);
        written_keys += 1;
    }
    if written_keys != key_count {
        // A view's length and its iterator disagree: a bug, and the file would not verify.
        return Err(io::Error::other(format!(
            "the view said {key_count} keys but yielded {written_keys}"
        )));
    }
    sink.finish()
}

/// Sizes below the bounds checked by the caller, which are far below `u32::MAX`.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("invariant: lengths are checked against bounds below u32::MAX")
}

fn refused(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// The writer's side: stages bytes in a chunk, checksums and writes whole chunks.
struct Sink<'a> {
    out: &'a mut dyn Write,
    chunk: Vec<u8>,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl<'a> Sink<'a> {
    fn new(out: &'a mut dyn Write) -> Self {
        Sink {
            out,
            chunk: Vec::with_capacity(STREAM_CHUNK_BYTES),
            hasher: crc32fast::Hasher::new(),
            written: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.chunk.extend_from_slice(bytes);
        if self.chunk.len() >= STREAM_CHUNK_BYTES {
            self.drain()?;
        }
        Ok(())
    }

    /// Stages a varint; the next `put` drains (at most 10 bytes past a chunk).
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.chunk.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.chunk.push(value as u8);
    }

    fn drain(&mut self) -> io::Result<()> {
        self.hasher.update(&self.chunk);
        self.out.write_all(&self.chunk)?;
        self.written += self.chunk.len() as u64;
        self.chunk.clear();
        Ok(())
    }

    fn finish(mut self) -> io::Result<u64> {
        self.drain()?;
        let body_bytes = self.written;
        let crc = self.hasher.clone().finalize();
        self.out.write_all(&body_bytes.to_le_bytes())?;
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.flush()?;
        Ok(body_bytes + SNAPSHOT_TRAILER_BYTES as u64)
    }
}

/// Reads a snapshot from `r` in one pass and builds the store with
/// [`KvStore::from_sorted`]. The trailer is checked at the end: nothing built is returned
/// unless everything verifies. Formats 1 and 2 (whole-file postcard) are read whole into
/// memory, decoded and restored, so that an upgraded node starts from its old files.
///
/// The key-values handed to `from_sorted` are mostly slices of the reader's 64 KiB chunks:
/// a store that keeps them as they are keeps those chunks alive (the tree copies them).
pub fn read_snapshot(
    r: &mut dyn Read,
    config: KvConfig,
) -> Result<(SnapshotMeta, KvStore), SnapshotReadError> {
    let (src, meta) = match open(Source::new(r, STREAM_CHUNK_BYTES))? {
        Opened::Whole(snapshot) => {
            let store = KvStore::from_sorted(
                config,
                snapshot.meta.index,
                snapshot.revision,
                snapshot.kvs.into_iter(),
                snapshot.sessions,
            )?;
            return Ok((snapshot.meta, store));
        }
        Opened::Streamed { src, meta } => (src, meta),
    };
    let mut body = Body::start(src, meta)?;
    let sessions = body.sessions.clone();
    let (index, revision) = (body.meta.index, body.revision);
    let mut failure = None;
    let built = KvStore::from_sorted(
        config,
        index,
        revision,
        std::iter::from_fn(|| match body.next_kv() {
            Ok(kv) => kv,
            Err(error) => {
                failure = Some(error);
                None
            }
        }),
        sessions,
    );
    if let Some(error) = failure {
        return Err(error);
    }
    // from_sorted stops at the first inconsistency; the rest must still be read to tell
    // damage (checksum) from a consistent-looking writer bug.
    while body.next_kv()?.is_some() {}
    let meta = body.finish()?;
    Ok((meta, built?))
}

/// Runs every check of [`read_snapshot`] (structure, bounds, trailer, and the invariants that
/// do not depend on a replica's configuration) without building the map: a snapshot received
/// from a peer is checked before it is kept. Memory is bounded by one record. Formats 1 and 2
/// are decoded whole and restored to be checked.
pub fn verify_snapshot(r: &mut dyn Read) -> Result<SnapshotMeta, SnapshotReadError> {
    verify_snapshot_summary(r).map(|summary| summary.meta)
}

/// What a verified snapshot holds, counted while [`verify_snapshot_summary`] checked it: what
/// an operator is shown of a backup without building the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// Its Raft position and the caller's configuration bytes.
    pub meta: SnapshotMeta,
    /// The store's revision.
    pub revision: u64,
    /// How many keys it holds.
    pub keys: u64,
    /// How many client sessions it holds.
    pub sessions: u64,
}

/// [`verify_snapshot`], also counting what the snapshot holds.
pub fn verify_snapshot_summary(r: &mut dyn Read) -> Result<SnapshotSummary, SnapshotReadError> {
    match open(Source::new(r, STREAM_CHUNK_BYTES))? {
        Opened::Whole(snapshot) => {
            let (keys, sessions) = (snapshot.kvs.len() as u64, snapshot.sessions.len() as u64);
            KvStore::from_sorted(
                unbounded_config(),
                snapshot.meta.index,
                snapshot.revision,
                snapshot.kvs.into_iter(),
                snapshot.sessions,
            )?;
            Ok(SnapshotSummary {
                meta: snapshot.meta,
                revision: snapshot.revision,
                keys,
                sessions,
            })
        }
        Opened::Streamed { src, meta } => {
            let mut body = Body::start(src, meta)?;
            let (revision, sessions) = (body.revision, body.sessions.len() as u64);
            let mut keys = 0u64;
            while body.skip_kv()? {
                keys += 1;
            }
            Ok(SnapshotSummary {
                meta: body.finish()?,
                revision,
                keys,
                sessions,
            })
        }
    }
}

/// Reads only the header and the meta (index, term, config) from the first bytes of a
/// snapshot; nothing after them is read or checked (the checksum is at the end). Formats 1
/// and 2 keep their checksum in front of everything, so they are read and verified whole.
pub fn read_meta(r: &mut dyn Read) -> Result<SnapshotMeta, SnapshotReadError> {
    match open(Source::new(r, META_READ_BUFFER_BYTES))? {
        Opened::Whole(snapshot) => Ok(snapshot.meta),
        Opened::Streamed { meta, .. } => Ok(meta),
    }
}

/// Decodes a whole format-3 snapshot held in memory (for [`Snapshot::decode`]). Content
/// invariants are left to [`KvStore::restore`], as for the older formats.
pub(super) fn decode_streamed(bytes: &[u8]) -> Result<Snapshot, CorruptSnapshot> {
    let as_corrupt = |error: SnapshotReadError| match error {
        SnapshotReadError::Corrupt(corrupt) => corrupt,
        // A slice has no I/O errors, and invariants are not checked here.
        SnapshotReadError::Io(_) | SnapshotReadError::Invariant(_) => CorruptSnapshot::Malformed,
    };
    let (src, meta) = match open(Source::new(bytes, STREAM_CHUNK_BYTES)).map_err(as_corrupt)? {
        Opened::Whole(snapshot) => return Ok(snapshot),
        Opened::Streamed { src, meta } => (src, meta),
    };
    let mut body = Body::start(src, meta).map_err(as_corrupt)?;
    let mut kvs = Vec::new();
    while let Some(kv) = body.next_kv().map_err(as_corrupt)? {
        kvs.push(kv);
    }
    let revision = body.revision;
    let sessions = std::mem::take(&mut body.sessions);
    body.invariant = None;
    let meta = body.finish().map_err(as_corrupt)?;
    Ok(Snapshot {
        meta,
        revision,
        kvs,
        sessions,
    })
}

/// A configuration under which only config-independent invariants can fail.
fn unbounded_config() -> KvConfig {
    KvConfig {
        sessions: SessionConfig {
            sessions_max: usize::MAX,
            idle_indexes_max: u64::MAX,
        },
    }
}

/// A snapshot after its header and meta.
enum Opened<R> {
    /// Format 1 or 2, read and verified whole.
    Whole(Snapshot),
    /// Format 3: the source is positioned after the meta.
    Streamed { src: Source<R>, meta: SnapshotMeta },
}

fn open<R: Read>(mut src: Source<R>) -> Result<Opened<R>, SnapshotReadError> {
    let mut magic = [0u8; 8];
    src.read_exact(&mut magic)?;
    if magic != SNAPSHOT_MAGIC {
        return Err(CorruptSnapshot::BadMagic.into());
    }
    let version = src.u32()?;
    if !(SNAPSHOT_FORMAT_VERSION_MIN..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
        return Err(CorruptSnapshot::UnsupportedVersion { version }.into());
    }
    if version < SNAPSHOT_FORMAT_VERSION {
        let mut whole = magic.to_vec();
        whole.extend_from_slice(&version.to_le_bytes());
        src.read_to_end(&mut whole)?;
        return Ok(Opened::Whole(Snapshot::decode(&whole)?));
    }
    let index = src.u64()?;
    let term = src.u64()?;
    debug_assert_eq!(src.offset(), META_FIXED_BYTES as u64 - 4);
    let config_len = src.length_u32("config", SNAPSHOT_CONFIG_BYTES_MAX)?;
    let config = Bytes::from(src.bytes(config_len)?);
    Ok(Opened::Streamed {
        src,
        meta: SnapshotMeta {
            index,
            term,
            config,
        },
    })
}

/// The rest of a format-3 snapshot: sessions, then key-values one at a time, then the trailer.
struct Body<R> {
    src: Source<R>,
    meta: SnapshotMeta,
    revision: u64,
    sessions: Vec<SessionRecord>,
    keys_left: u64,
    /// The last key read, to check the order without keeping the key alive.
    previous_key: Option<Vec<u8>>,
    /// Scratch for the key [`Body::skip_kv`] reads, reused from key to key.
    scratch_key: Vec<u8>,
    /// The first invariant breach found; reported only once the trailer verifies.
    invariant: Option<InvariantError>,
}

impl<R: Read> Body<R> {
    fn start(mut src: Source<R>, meta: SnapshotMeta) -> Result<Self, SnapshotReadError> {
        let revision = src.u64()?;
        let session_count = src.length_u32("session count", SNAPSHOT_SESSIONS_MAX)?;
        // Capacity grows with what is actually read, not with what a count claims.
        let mut sessions = Vec::with_capacity(session_count.min(1024));
        for _ in 0..session_count {
            let length = src.length_u32("session record", SNAPSHOT_SESSION_BYTES_MAX)?;
            let offset = src.offset();
            let record = src.bytes(length)?;
            match postcard::take_from_bytes::<SessionRecord>(&record) {
                Ok((session, [])) => sessions.push(session),
                Ok(_) | Err(_) => {
                    return Err(CorruptSnapshot::BadRecord {
                        what: "session record",
                        offset,
                    }
                    .into());
                }
            }
        }
        let count_offset = src.offset();
        let keys_left = src.u64()?;
        // Every key-value takes at least one byte.
        if keys_left > SNAPSHOT_BYTES_MAX {
            return Err(CorruptSnapshot::LengthOutOfBounds {
                field: "key count",
                length: keys_left,
                max: SNAPSHOT_BYTES_MAX,
                offset: count_offset,
            }
            .into());
        }
        let invariant = if revision > meta.index {
            Some(InvariantError::RevisionAboveApplied {
                revision,
                applied_index: meta.index,
            })
        } else {
            SessionTable::from_records(unbounded_config().sessions, sessions.clone())
                .check_invariants(meta.index)
                .err()
                .map(InvariantError::from)
        };
        Ok(Body {
            src,
            meta,
            revision,
            sessions,
            keys_left,
            previous_key: None,
            scratch_key: Vec::new(),
            invariant,
        })
    }

    /// The next key-value, or `None` after the last one.
    fn next_kv(&mut self) -> Result<Option<KeyValue>, SnapshotReadError> {
        if self.keys_left == 0 {
            return Ok(None);
        }
        self.keys_left -= 1;
        let key_len = self.src.length_varint("key", KEY_BYTES_MAX)?;
        let key = self.src.shared(key_len)?;
        let value_len = self.src.length_varint("value", VALUE_BYTES_MAX)?;
        let value = self.src.shared(value_len)?;
        let kv = KeyValue {
            key,
            value,
            create_revision: self.src.varint("create revision")?,
            mod_revision: self.src.varint("mod revision")?,
            version: self.src.varint("version")?,
        };
        self.checked(&kv.key, [kv.create_revision, kv.mod_revision, kv.version]);
        Ok(Some(kv))
    }

    /// Reads and checks the next key-value like [`Body::next_kv`] without keeping it (no
    /// allocation per key); `false` after the last one.
    fn skip_kv(&mut self) -> Result<bool, SnapshotReadError> {
        if self.keys_left == 0 {
            return Ok(false);
        }
        self.keys_left -= 1;
        let key_len = self.src.length_varint("key", KEY_BYTES_MAX)?;
        let mut key = std::mem::take(&mut self.scratch_key);
        key.resize(key_len, 0);
        self.src.read_exact(&mut key)?;
        let value_len = self.src.length_varint("value", VALUE_BYTES_MAX)?;
        self.src.skip(value_len)?;
        let revisions = [
            self.src.varint("create revision")?,
            self.src.varint("mod revision")?,
            self.src.varint("version")?,
        ];
        self.checked(&key, revisions);
        self.scratch_key = key;
        Ok(true)
    }

    /// Records the first invariant breach of this key-value, and the key for the order check.
    fn checked(&mut self, key: &[u8], revisions: [u64; 3]) {
        if self.invariant.is_none() {
            self.invariant = self.check(key, revisions).err();
        }
        let previous = self.previous_key.get_or_insert_with(Vec::new);
        previous.clear();
        previous.extend_from_slice(key);
    }

    /// The per-key invariants of [`KvStore::check_invariants`], and the key order.
    fn check(&self, key: &[u8], revisions: [u64; 3]) -> Result<(), InvariantError> {
        let [create_revision, mod_revision, version] = revisions;
        if key.is_empty() {
            return Err(InvariantError::Limit {
                key: Bytes::new(),
                error: ValidationError::EmptyKey,
            });
        }
        if self
            .previous_key
            .as_deref()
            .is_some_and(|previous| previous >= key)
        {
            return Err(InvariantError::KeysNotSorted {
                key: Bytes::copy_from_slice(key),
            });
        }
        let ordered = 1 <= create_revision
            && create_revision <= mod_revision
            && mod_revision <= self.revision
            && version >= 1;
        if !ordered {
            return Err(InvariantError::Revisions {
                key: Bytes::copy_from_slice(key),
                create_revision,
                mod_revision,
                version,
                revision: self.revision,
                applied_index: self.meta.index,
            });
        }
        Ok(())
    }

    /// Checks the trailer and that nothing follows it; then reports an invariant breach
    /// found on the way, if any.
    fn finish(mut self) -> Result<SnapshotMeta, SnapshotReadError> {
        debug_assert_eq!(self.keys_left, 0, "finish is called after the last key");
        let body_bytes = self.src.offset();
        let computed = self.src.seal();
        let stored_bytes = self.src.u64()?;
        let stored_crc = self.src.u32()?;
        if stored_bytes != body_bytes {
            return Err(CorruptSnapshot::LengthMismatch {
                expected: stored_bytes,
                actual: body_bytes,
            }
            .into());
        }
        if stored_crc != computed {
            return Err(CorruptSnapshot::ChecksumMismatch {
                expected: stored_crc,
                actual: computed,
            }
            .into());
        }
        if !self.src.at_end()? {
            return Err(CorruptSnapshot::TrailingBytes {
                offset: self.src.offset(),
            }
            .into());
        }
        match self.invariant {
            Some(error) => Err(error.into()),
            None => Ok(self.meta),
        }
    }
}

/// A buffered reader that checksums what it hands out (in whole buffers, for speed) until it
/// is sealed, counts the offset, and turns an early end into [`CorruptSnapshot::Truncated`].
///
/// Each buffer is a fresh shared chunk, so keys and values that lie inside one are handed out
/// as slices of it, with no allocation per key: the store copies them into its own entries,
/// and a chunk is freed when its last slice is.
struct Source<R> {
    inner: R,
    /// Size of each chunk read.
    capacity: usize,
    buf: Bytes,
    /// Next byte to hand out.
    pos: usize,
    /// End of the valid bytes in `buf`.
    end: usize,
    /// `buf[..hashed]` has been fed to the hasher.
    hashed: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    hasher: crc32fast::Hasher,
    /// Once sealed (at the trailer), bytes are no longer checksummed.
    sealed: bool,
}

impl<R: Read> Source<R> {
    fn new(inner: R, capacity: usize) -> Self {
        Source {
            inner,
            capacity,
            buf: Bytes::new(),
            pos: 0,
            end: 0,
            hashed: 0,
            base: 0,
            hasher: crc32fast::Hasher::new(),
            sealed: false,
        }
    }

    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Refills the (fully consumed) buffer; `false` at the end of the stream.
    fn refill(&mut self) -> Result<bool, SnapshotReadError> {
        debug_assert_eq!(self.pos, self.end, "only an empty buffer is refilled");
        if !self.sealed {
            self.hasher.update(&self.buf[self.hashed..self.end]);
        }
        self.base += self.end as u64;
        (self.pos, self.end, self.hashed) = (0, 0, 0);
        if self.base > SNAPSHOT_BYTES_MAX {
            return Err(CorruptSnapshot::TooLarge {
                max: SNAPSHOT_BYTES_MAX,
            }
            .into());
        }
        let mut chunk = BytesMut::zeroed(self.capacity);
        loop {
            match self.inner.read(&mut chunk) {
                Ok(n) => {
                    chunk.truncate(n);
                    self.buf = chunk.freeze();
                    self.end = n;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SnapshotReadError::Io(e)),
            }
        }
    }

    fn read_exact(&mut self, out: &mut [u8]) -> Result<(), SnapshotReadError> {
        let mut filled = 0;
        while filled < out.len() {
            if self.pos == self.end && !self.refill()? {
                return Err(CorruptSnapshot::Truncated {
                    offset: self.offset(),
                }
                .into());
            }
            let n = (self.end - self.pos).min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            filled += n;
        }
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, SnapshotReadError> {
        if self.pos < self.end {
            self.pos += 1;
            return Ok(self.buf[self.pos - 1]);
        }
        let mut one = [0u8; 1];
        self.read_exact(&mut one)?;
        Ok(one[0])
    }

    fn u32(&mut self) -> Result<u32, SnapshotReadError> {
        let mut raw = [0u8; 4];
        self.read_exact(&mut raw)?;
        Ok(u32::from_le_bytes(raw))
    }

    fn u64(&mut self) -> Result<u64, SnapshotReadError> {
        let mut raw = [0u8; 8];
        self.read_exact(&mut raw)?;
        Ok(u64::from_le_bytes(raw))
    }

    /// An unsigned LEB128 number in its shortest form.
    fn varint(&mut self, what: &'static str) -> Result<u64, SnapshotReadError> {
        let offset = self.offset();
        let mut value = 0u64;
        for i in 0..VARINT_BYTES_MAX {
            let byte = self.byte()?;
            // The tenth byte may only hold the top bit of a u64; a final zero byte would be
            // a longer encoding of a shorter number.
            let overflows = i == VARINT_BYTES_MAX - 1 && byte > 1;
            let overlong = i > 0 && byte == 0;
            if overflows || overlong {
                break;
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CorruptSnapshot::BadRecord { what, offset }.into())
    }

    fn bounded(
        field: &'static str,
        length: u64,
        max: usize,
        offset: u64,
    ) -> Result<usize, SnapshotReadError> {
        match usize::try_from(length) {
            Ok(length) if length <= max => Ok(length),
            _ => Err(CorruptSnapshot::LengthOutOfBounds {
                field,
                length,
                max: max as u64,
                offset,
            }
            .into()),
        }
    }

    fn length_u32(&mut self, field: &'static str, max: usize) -> Result<usize, SnapshotReadError> {
        let offset = self.offset();
        let length = self.u32()?;
        Self::bounded(field, length.into(), max, offset)
    }

    fn length_varint(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<usize, SnapshotReadError> {
        let offset = self.offset();
        let length = self.varint(field)?;
        Self::bounded(field, length, max, offset)
    }

    /// Consumes `len` bytes (checksummed like any others) without copying them.
    fn skip(&mut self, mut len: usize) -> Result<(), SnapshotReadError> {
        while len > 0 {
            if self.pos == self.end && !self.refill()? {
                return Err(CorruptSnapshot::Truncated {
                    offset: self.offset(),
                }
                .into());
            }
            let n = (self.end - self.pos).min(len);
            self.pos += n;
            len -= n;
        }
        Ok(())
    }

    /// `len` bytes, a slice of the current chunk when they lie inside it; the caller has
    /// bounded `len`.
    fn shared(&mut self, len: usize) -> Result<Bytes, SnapshotReadError> {
        if self.end - self.pos >= len {
            self.pos += len;
            return Ok(self.buf.slice(self.pos - len..self.pos));
        }
        self.bytes(len).map(Bytes::from)
    }

    /// `len` bytes; the caller has bounded `len`.
    fn bytes(&mut self, len: usize) -> Result<Vec<u8>, SnapshotReadError> {
        let mut out = vec![0u8; len];
        self.read_exact(&mut out)?;
        Ok(out)
    }

    /// Everything left, up to [`SNAPSHOT_BYTES_MAX`] in all (formats 1 and 2).
    fn read_to_end(&mut self, out: &mut Vec<u8>) -> Result<(), SnapshotReadError> {
        loop {
            out.extend_from_slice(&self.buf[self.pos..self.end]);
            self.pos = self.end;
            if !self.refill()? {
                return Ok(());
            }
        }
    }

    /// Stops checksumming; returns the CRC-32 of every byte handed out so far.
    fn seal(&mut self) -> u32 {
        self.hasher.update(&self.buf[self.hashed..self.pos]);
        self.hashed = self.pos;
        self.sealed = true;
        self.hasher.clone().finalize()
    }

    fn at_end(&mut self) -> Result<bool, SnapshotReadError> {
        if self.pos < self.end {
            return Ok(false);
        }
        Ok(!self.refill()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_of(bytes: &[u8]) -> Result<u64, SnapshotReadError> {
        Source::new(bytes, STREAM_CHUNK_BYTES).varint("test")
    }

    #[test]
    fn a_summary_counts_the_keys_and_sessions_it_verified() {
        // Given a store with a session and three keys, written as a snapshot,
        let mut store = KvStore::new(KvConfig::default());
        store
            .apply(1, &crate::Command::RegisterSession.encode())
            .expect("register");
        for (index, key) in [(2, "a"), (3, "b"), (4, "c")] {
            store
                .apply(index, &crate::Command::put(key, "v").encode())
                .expect("put");
        }
        let mut bytes = Vec::new();
        store
            .view()
            .write_snapshot(2, b"cfg", &mut bytes)
            .expect("written");
        // then its summary counts them, with the meta and revision,
        let summary = verify_snapshot_summary(&mut bytes.as_slice()).expect("verifies");
        assert_eq!(
            (summary.keys, summary.sessions, summary.revision),
            (3, 1, 4)
        );
        assert_eq!((summary.meta.index, summary.meta.term), (4, 2));
        // and one flipped byte in the keys is damage, not a summary.
        let middle = bytes.len() - 20;
        bytes[middle] ^= 0x40;
        assert!(verify_snapshot_summary(&mut bytes.as_slice()).is_err());
    }

    #[test]
    fn varints_read_back_as_written_at_every_width() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            let mut sink = Sink::new(&mut out);
            sink.varint(value);
            let staged = sink.chunk.clone();
            assert!(staged.len() <= VARINT_BYTES_MAX);
            assert_eq!(varint_of(&staged).expect("reads"), value, "{staged:?}");
        }
    }

    #[test]
    fn a_varint_in_a_longer_form_or_past_u64_is_malformed() {
        let bad_record = |bytes: &[u8]| {
            matches!(
                varint_of(bytes),
                Err(SnapshotReadError::Corrupt(CorruptSnapshot::BadRecord {
                    what: "test",
                    offset: 0
                }))
            )
        };
        // Given 0 written as two bytes, it is refused (one number, one encoding)
        assert!(bad_record(&[0x80, 0x00]));
        // Given a tenth byte above 1, the number would not fit in 64 bits
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert!(bad_record(&too_big));
        // Given eleven continuation bytes, it is refused after ten
        assert!(bad_record(&[0xff; 11]));
        // Given a varint cut short, it is a truncation
        assert!(matches!(
            varint_of(&[0x80]),
            Err(SnapshotReadError::Corrupt(CorruptSnapshot::Truncated {
                offset: 1
            }))
        ));
    }
}
