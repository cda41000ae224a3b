//! The on-disk record format, byte by byte.
//!
//! Every log entry (and every hard-state copy) is one record. All integers are little-endian and
//! the header has a fixed width, so a reader knows how many bytes to expect before it trusts any
//! of them:
//!
//! ```text
//! offset  size  field
//!      0     4  magic            b"RKVR"
//!      4     1  format version   1
//!      5     1  record kind      1 = log entry, 2 = hard state
//!      6     2  reserved         must be zero
//!      8     8  index            u64 (the Raft index; the save sequence for hard state)
//!     16     8  term             u64
//!     24     4  payload length   u32, at most PAYLOAD_BYTES_MAX
//!     28     n  payload          opaque bytes
//!   28+n     4  CRC-32 (IEEE polynomial, crc32fast) of bytes [0, 28+n)
//! ```
//!
//! Invariants: a record that decodes is exactly the record that was encoded (the CRC covers the
//! header and the payload); the payload length is checked against [`PAYLOAD_BYTES_MAX`] before
//! any allocation, so a damaged length field cannot make a reader allocate gigabytes.

/// The four bytes every record starts with.
pub const RECORD_MAGIC: [u8; 4] = *b"RKVR";
/// The record format this code writes and reads.
pub const RECORD_FORMAT_VERSION: u8 = 1;
/// Bytes before the payload.
pub const RECORD_HEADER_BYTES: usize = 28;
/// Bytes after the payload (the CRC).
pub const RECORD_TRAILER_BYTES: usize = 4;
/// Header plus trailer: the size of a record with an empty payload.
pub const RECORD_OVERHEAD_BYTES: usize = RECORD_HEADER_BYTES + RECORD_TRAILER_BYTES;
/// The largest payload a record may carry (64 MiB), checked on write and on read.
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A log entry: `index` and `term` are the entry's.
    Entry = 1,
    /// A copy of the hard state: `index` is the save sequence number, `term` is unused (0).
    HardState = 2,
}

impl RecordKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(RecordKind::Entry),
            2 => Some(RecordKind::HardState),
            _ => None,
        }
    }
}

/// The fixed-width part of a decoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// What the record holds.
    pub kind: RecordKind,
    /// The record's index.
    pub index: u64,
    /// The record's term.
    pub term: u64,
    /// The payload's length in bytes.
    pub payload_len: u32,
}

impl RecordHeader {
    /// The whole record's size on disk.
    pub fn record_bytes(&self) -> usize {
        RECORD_OVERHEAD_BYTES + self.payload_len as usize
    }
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// The first four bytes are not [`RECORD_MAGIC`] (all zeros here usually means preallocated
    /// or never-written space).
    BadMagic,
    /// A format version this code does not know.
    UnknownVersion(u8),
    /// A record kind this code does not know.
    UnknownKind(u8),
    /// The reserved bytes are not zero.
    ReservedNotZero,
    /// The length field claims more than [`PAYLOAD_BYTES_MAX`].
    PayloadTooLarge(u32),
    /// The CRC does not match the bytes.
    ChecksumMismatch {
        /// The CRC stored in the record.
        stored: u32,
        /// The CRC of the bytes as read.
        computed: u32,
    },
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::BadMagic => write!(f, "bad record magic"),
            Invalid::UnknownVersion(v) => write!(f, "unknown record format version {v}"),
            Invalid::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            Invalid::ReservedNotZero => write!(f, "reserved header bytes are not zero"),
            Invalid::PayloadTooLarge(len) => write!(
                f,
                "length field claims {len} bytes, more than the {PAYLOAD_BYTES_MAX}-byte limit"
            ),
            Invalid::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

/// The result of decoding the bytes at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, valid record.
    Record {
        /// Its header.
        header: RecordHeader,
        /// Its payload, borrowed from the buffer.
        payload: &'a [u8],
    },
    /// The buffer ends before the record does; `needed` is the record's full size so far as it
    /// is known (the header size when even the header is cut short).
    Incomplete {
        /// Bytes needed from the start of the buffer.
        needed: usize,
    },
    /// The bytes cannot be a record.
    Invalid(Invalid),
}

/// Appends the encoding of one record to `out`.
///
/// The caller checks the payload size first (`Wal` turns it into a typed error); here it is an
/// invariant.
pub fn encode(kind: RecordKind, index: u64, term: u64, payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        payload.len() <= PAYLOAD_BYTES_MAX,
        "callers check the payload limit before encoding"
    );
    let start = out.len();
    out.reserve(RECORD_OVERHEAD_BYTES + payload.len());
    out.extend_from_slice(&RECORD_MAGIC);
    out.push(RECORD_FORMAT_VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&term.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    // Both sides of the disk are checked: what we are about to write must read back as itself.
    debug_assert!(matches!(
        decode(&out[start..]),
        Decoded::Record { header, .. } if header.index == index && header.term == term
    ));
}

/// Decodes the record at the start of `buf`, never reading past it and never allocating.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < RECORD_HEADER_BYTES {
        // Reject what we can already see before asking for more bytes: a torn header that
        // starts with garbage is invalid, not merely incomplete.
        if buf.len() >= 4 && buf[..4] != RECORD_MAGIC {
            return Decoded::Invalid(Invalid::BadMagic);
        }
        return Decoded::Incomplete {
            needed: RECORD_HEADER_BYTES,
        };
    }
    if buf[..4] != RECORD_MAGIC {
        return Decoded::Invalid(Invalid::BadMagic);
    }
    if buf[4] != RECORD_FORMAT_VERSION {
        return Decoded::Invalid(Invalid::UnknownVersion(buf[4]));
    }
    let Some(kind) = RecordKind::from_byte(buf[5]) else {
        return Decoded::Invalid(Invalid::UnknownKind(buf[5]));
    };
    if buf[6] != 0 || buf[7] != 0 {
        return Decoded::Invalid(Invalid::ReservedNotZero);
    }
    let index = u64_at(buf, 8);
    let term = u64_at(buf, 16);
    let payload_len = u32::from_le_bytes(buf[24..28].try_into().expect("4-byte slice"));
    if payload_len as usize > PAYLOAD_BYTES_MAX {
        return Decoded::Invalid(Invalid::PayloadTooLarge(payload_len));
    }
    let total = RECORD_OVERHEAD_BYTES + payload_len as usize;
    if buf.len() < total {
        return Decoded::Incomplete { needed: total };
    }
    let body_end = RECORD_HEADER_BYTES + payload_len as usize;
    let stored = u32::from_le_bytes(buf[body_end..total].try_into().expect("4-byte slice"));
    let computed = crc32fast::hash(&buf[..body_end]);
    if stored != computed {
        return Decoded::Invalid(Invalid::ChecksumMismatch { stored, computed });
    }
    Decoded::Record {
        header: RecordHeader {
            kind,
            index,
            term,
            payload_len,
        },
        payload: &buf[RECORD_HEADER_BYTES..body_end],
    }
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8-byte slice"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(index: u64, term: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(RecordKind::Entry, index, term, payload, &mut out);
        out
    }

    #[test]
    fn layout_is_the_documented_one() {
        let bytes = encoded(0x0102, 7, b"hi");
        assert_eq!(bytes.len(), RECORD_OVERHEAD_BYTES + 2);
        assert_eq!(&bytes[0..4], b"RKVR");
        assert_eq!(bytes[4], 1, "format version");
        assert_eq!(bytes[5], 1, "kind: entry");
        assert_eq!(&bytes[6..8], &[0, 0], "reserved");
        assert_eq!(&bytes[8..16], &0x0102u64.to_le_bytes());
        assert_eq!(&bytes[16..24], &7u64.to_le_bytes());
        assert_eq!(&bytes[24..28], &2u32.to_le_bytes());
        assert_eq!(&bytes[28..30], b"hi");
        assert_eq!(&bytes[30..34], &crc32fast::hash(&bytes[..30]).to_le_bytes());
    }

    #[test]
    fn a_length_field_claiming_4_gib_is_rejected_without_allocating() {
        let mut bytes = encoded(1, 1, b"x");
        bytes[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&bytes),
            Decoded::Invalid(Invalid::PayloadTooLarge(u32::MAX))
        );
    }

    #[test]
    fn a_cut_short_record_is_incomplete_and_says_how_much_it_needs() {
        let bytes = encoded(1, 1, &[9; 100]);
        assert_eq!(
            decode(&bytes[..10]),
            Decoded::Incomplete {
                needed: RECORD_HEADER_BYTES
            }
        );
        assert_eq!(
            decode(&bytes[..50]),
            Decoded::Incomplete {
                needed: bytes.len()
            }
        );
    }

    #[test]
    fn zeroed_space_is_not_a_record() {
        assert_eq!(decode(&[0; 64]), Decoded::Invalid(Invalid::BadMagic));
    }

    #[test]
    fn unknown_version_kind_and_reserved_bytes_are_rejected() {
        let good = encoded(1, 1, b"x");
        let mut b = good.clone();
        b[4] = 9;
        assert_eq!(decode(&b), Decoded::Invalid(Invalid::UnknownVersion(9)));
        let mut b = good.clone();
        b[5] = 77;
        assert_eq!(decode(&b), Decoded::Invalid(Invalid::UnknownKind(77)));
        let mut b = good;
        b[7] = 1;
        assert_eq!(decode(&b), Decoded::Invalid(Invalid::ReservedNotZero));
    }

    proptest! {
        #[test]
        fn every_encoded_record_decodes_to_itself(
            index in any::<u64>(), term in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let bytes = encoded(index, term, &payload);
            match decode(&bytes) {
                Decoded::Record { header, payload: p } => {
                    prop_assert_eq!(header.index, index);
                    prop_assert_eq!(header.term, term);
                    prop_assert_eq!(header.kind, RecordKind::Entry);
                    prop_assert_eq!(header.record_bytes(), bytes.len());
                    prop_assert_eq!(p, &payload[..]);
                }
                other => prop_assert!(false, "decoded {:?}", other),
            }
        }

        #[test]
        fn any_single_flipped_bit_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..256),
            bit in any::<prop::sample::Index>(),
        ) {
            let mut bytes = encoded(42, 3, &payload);
            let bit = bit.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            let decoded_as_record = matches!(decode(&bytes), Decoded::Record { .. });
            prop_assert!(!decoded_as_record, "a flipped bit went unnoticed");
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode(&bytes);
        }
    }
}
