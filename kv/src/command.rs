//! Commands (what is proposed to Raft) and responses (what apply returns).
//!
//! Job: define the bytes that go into a Raft log entry for the state machine and the result of
//! applying them, with a stable, versioned encoding so that logs and snapshots written by an
//! older binary stay readable by a newer one.
//!
//! Encoding: one format byte ([`COMMAND_FORMAT_VERSION`]) followed by the postcard encoding of
//! a [`Command`]. Compatibility rules for later versions: enum variants are only ever appended
//! (postcard encodes the variant index), never reordered or removed; a change that cannot be
//! expressed that way bumps the format byte and keeps a decoder for every older byte.
//!
//! Invariants: [`decode`] never panics and never allocates more than its input allows; it
//! refuses inputs over [`COMMAND_BYTES_MAX`] before parsing; `decode(encode(c)) == c`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::limits::{
    KEY_BYTES_MAX, VALUE_BYTES_MAX, ValidationError, validate_key, validate_prefix, validate_value,
};

/// The format byte that starts every encoded command written by this version.
pub const COMMAND_FORMAT_VERSION: u8 = 1;

/// Room for the format byte, enum tags, varint lengths, session and flags of one command.
pub const COMMAND_OVERHEAD_BYTES_MAX: usize = 128;

/// Largest encoded command accepted by [`decode`], in bytes.
///
/// The biggest valid command is a compare-and-swap carrying a key, an expected value and a new
/// value, each at its limit; anything longer cannot be valid and is refused before parsing.
pub const COMMAND_BYTES_MAX: usize =
    KEY_BYTES_MAX + 2 * VALUE_BYTES_MAX + COMMAND_OVERHEAD_BYTES_MAX;

/// The smallest session id and sequence number a client may send. Ids are log indexes, which
/// start at 1; sequence numbers start at 1 so that 0 (an unset field) is never taken for one.
pub const SESSION_NUMBER_MIN: u64 = 1;

/// The largest session id and sequence number a client may send: `u64::MAX` is kept out, so
/// that a session always has a next sequence number.
///
/// The API layer refuses numbers outside [`SESSION_NUMBER_MIN`]..=this before proposing;
/// apply does not, so that entries logged before the check existed apply as they did.
pub const SESSION_NUMBER_MAX: u64 = u64::MAX - 1;

/// A client session: the identity that makes a write exactly-once.
///
/// `client_id` is handed out by [`Command::RegisterSession`] (it is the log index of the
/// registration). `sequence` numbers a client's writes; each new write uses a larger number
/// than the last, and a retry of the same write reuses its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Session {
    /// The session's id, as returned by [`Outcome::SessionRegistered`].
    pub client_id: u64,
    /// The write's sequence number within the session.
    pub sequence: u64,
}

/// What a compare-and-swap compares against the key's current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    /// The key must exist and hold exactly this value.
    Value(Bytes),
    /// The key's version must equal this; version 0 means the key must not exist.
    Version(u64),
}

/// What a compare-and-swap does when the comparison holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CasAction {
    /// Store this value under the key.
    Put(Bytes),
    /// Delete the key.
    Delete,
}

/// A write on the key space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Store `value` under `key`, creating the key or replacing its value.
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// Return the previous key-value (if any) in the response.
        prev_kv: bool,
    },
    /// Delete `key`; deleting a missing key succeeds and deletes nothing.
    Delete {
        /// The key.
        key: Bytes,
        /// Return the deleted key-value (if any) in the response.
        prev_kv: bool,
    },
    /// Delete every key that starts with `prefix` (the empty prefix deletes every key).
    DeletePrefix {
        /// The prefix.
        prefix: Bytes,
    },
    /// Apply `action` to `key` only if `compare` holds.
    CompareAndSwap {
        /// The key.
        key: Bytes,
        /// The condition on the key's current state.
        compare: Compare,
        /// What to do when the condition holds.
        action: CasAction,
    },
}

/// A write, optionally made exactly-once by a client session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// The session and sequence number, or `None` for an at-least-once write.
    pub session: Option<Session>,
    /// The operation.
    pub op: WriteOp,
}

/// One state-machine command: the payload of a normal Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Does nothing but advance the applied index (useful as a barrier).
    Noop,
    /// Opens a client session; its id is the log index of this command.
    RegisterSession,
    /// A write on the key space.
    Write(Write),
}

impl Command {
    /// A `Put` without a session and without `prev_kv`.
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Command::Write(Write {
            session: None,
            op: WriteOp::Put {
                key: key.into(),
                value: value.into(),
                prev_kv: false,
            },
        })
    }

    /// A `Delete` without a session and without `prev_kv`.
    pub fn delete(key: impl Into<Bytes>) -> Self {
        Command::Write(Write {
            session: None,
            op: WriteOp::Delete {
                key: key.into(),
                prev_kv: false,
            },
        })
    }

    /// A `DeletePrefix` without a session.
    pub fn delete_prefix(prefix: impl Into<Bytes>) -> Self {
        Command::Write(Write {
            session: None,
            op: WriteOp::DeletePrefix {
                prefix: prefix.into(),
            },
        })
    }

    /// A `CompareAndSwap` without a session.
    pub fn compare_and_swap(key: impl Into<Bytes>, compare: Compare, action: CasAction) -> Self {
        Command::Write(Write {
            session: None,
            op: WriteOp::CompareAndSwap {
                key: key.into(),
                compare,
                action,
            },
        })
    }

    /// The same command carrying `session` (a no-op for commands that are not writes).
    pub fn with_session(self, session: Session) -> Self {
        match self {
            Command::Write(write) => Command::Write(Write {
                session: Some(session),
                op: write.op,
            }),
            other => other,
        }
    }

    /// Checks every key, value and prefix in the command against the limits in
    /// [`crate::limits`]. The API layer calls this before proposing; apply calls it again.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Command::Noop | Command::RegisterSession => Ok(()),
            Command::Write(write) => write.op.validate(),
        }
    }

    /// Encodes the command for a log entry: the format byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        // Sized up front: grown from empty, a put's encoding took about four reallocations,
        // each a copy (a profile of the leader at 64 writers counted 3.7 per put).
        let mut out = Vec::with_capacity(self.encoded_bytes_hint());
        out.push(COMMAND_FORMAT_VERSION);
        // Serializing plain enums, structs and byte strings into a Vec cannot fail.
        postcard::to_extend(self, out).expect("invariant: postcard encodes a Command into a Vec")
    }

    /// At least the length of [`Command::encode`]'s output, nearly always: its byte strings,
    /// plus room for the format byte, the tags, the varint lengths and numbers (at most 10
    /// bytes each) and the session. Only a capacity: an underestimate costs a reallocation.
    fn encoded_bytes_hint(&self) -> usize {
        /// Room for everything but the byte strings.
        const FIXED_BYTES: usize = 64;
        let strings = match self {
            Command::Noop | Command::RegisterSession => 0,
            Command::Write(write) => match &write.op {
                WriteOp::Put { key, value, .. } => key.len() + value.len(),
                WriteOp::Delete { key, .. } => key.len(),
                WriteOp::DeletePrefix { prefix } => prefix.len(),
                WriteOp::CompareAndSwap {
                    key,
                    compare,
                    action,
                } => {
                    let compared = match compare {
                        Compare::Value(value) => value.len(),
                        Compare::Version(_) => 0,
                    };
                    let stored = match action {
                        CasAction::Put(value) => value.len(),
                        CasAction::Delete => 0,
                    };
                    key.len() + compared + stored
                }
            },
        };
        FIXED_BYTES + strings
    }
}

impl WriteOp {
    /// Checks the operation's key, value and prefix against the limits.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            WriteOp::Put { key, value, .. } => {
                validate_key(key)?;
                validate_value(value)
            }
            WriteOp::Delete { key, .. } => validate_key(key),
            WriteOp::DeletePrefix { prefix } => validate_prefix(prefix),
            WriteOp::CompareAndSwap {
                key,
                compare,
                action,
            } => {
                validate_key(key)?;
                if let Compare::Value(expected) = compare {
                    validate_value(expected)?;
                }
                if let CasAction::Put(value) = action {
                    validate_value(value)?;
                }
                Ok(())
            }
        }
    }
}

/// FNV-1a, 64-bit: a hash with a fixed definition, so every replica and every version computes
/// the same fingerprint (std's `DefaultHasher` promises neither).
struct Fnv64(u64);

impl Fnv64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Fnv64(Self::OFFSET_BASIS)
    }

    fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
        self
    }

    /// A length-prefixed field, so that `("ab", "c")` and `("a", "bc")` differ.
    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes(&(bytes.len() as u64).to_le_bytes()).bytes(bytes)
    }
}

impl WriteOp {
    /// A 64-bit fingerprint of the operation, kept with a session's cached response so that a
    /// sequence number reused for a different write is told apart from a retry of the same
    /// one.
    ///
    /// Part of the replicated state (it is in snapshots): its definition must never change.
    /// Each variant hashes a tag byte, then its fields, each byte string length-prefixed.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Fnv64::new();
        match self {
            WriteOp::Put {
                key,
                value,
                prev_kv,
            } => h
                .bytes(&[0])
                .field(key)
                .field(value)
                .bytes(&[u8::from(*prev_kv)]),
            WriteOp::Delete { key, prev_kv } => {
                h.bytes(&[1]).field(key).bytes(&[u8::from(*prev_kv)])
            }
            WriteOp::DeletePrefix { prefix } => h.bytes(&[2]).field(prefix),
            WriteOp::CompareAndSwap {
                key,
                compare,
                action,
            } => {
                h.bytes(&[3]).field(key);
                match compare {
                    Compare::Value(expected) => h.bytes(&[0]).field(expected),
                    Compare::Version(version) => h.bytes(&[1]).bytes(&version.to_le_bytes()),
                };
                match action {
                    CasAction::Put(value) => h.bytes(&[0]).field(value),
                    CasAction::Delete => h.bytes(&[1]),
                }
            }
        };
        h.0
    }
}

/// Why bytes could not be decoded into a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes: not even a format byte.
    #[error("command is empty")]
    Empty,
    /// Longer than [`COMMAND_BYTES_MAX`].
    #[error("command is {bytes} bytes, the limit is {max} bytes")]
    TooLarge {
        /// Size of the refused command.
        bytes: u64,
        /// The limit, [`COMMAND_BYTES_MAX`].
        max: u64,
    },
    /// A format byte this binary does not know (written by a newer version, or garbage).
    #[error(
        "unknown command format version {version} (this binary reads version {COMMAND_FORMAT_VERSION})"
    )]
    UnknownVersion {
        /// The format byte found.
        version: u8,
    },
    /// The body is not a valid postcard `Command`.
    #[error("command body is malformed")]
    Malformed,
    /// A valid command followed by extra bytes.
    #[error("{bytes} unexpected bytes after the command")]
    TrailingBytes {
        /// How many bytes were left over.
        bytes: u64,
    },
}

/// Decodes a log entry's payload into a [`Command`]. Never panics.
///
/// This checks the encoding only; [`Command::validate`] checks the limits.
pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
    if bytes.len() > COMMAND_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            bytes: bytes.len() as u64,
            max: COMMAND_BYTES_MAX as u64,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    match version {
        COMMAND_FORMAT_VERSION => {
            let (command, rest) = postcard::take_from_bytes::<Command>(body).map_err(|error| {
                tracing::debug!(%error, "command body does not decode");
                DecodeError::Malformed
            })?;
            if !rest.is_empty() {
                return Err(DecodeError::TrailingBytes {
                    bytes: rest.len() as u64,
                });
            }
            Ok(command)
        }
        other => Err(DecodeError::UnknownVersion { version: other }),
    }
}

/// A key with its value and etcd-style metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// Log index of the write that created the key (since its last deletion).
    pub create_revision: u64,
    /// Log index of the write that last modified the key.
    pub mod_revision: u64,
    /// Number of writes to the key since it was created; 1 right after creation.
    pub version: u64,
}

/// What a successfully applied command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A [`Command::Noop`] was applied.
    Noop {
        /// The store's revision (unchanged by a no-op).
        revision: u64,
    },
    /// A session was opened.
    SessionRegistered {
        /// The new session's id (the log index of the registration).
        client_id: u64,
    },
    /// A put was applied.
    Put {
        /// The revision of the write (its log index).
        revision: u64,
        /// The previous key-value, when `prev_kv` was asked for and the key existed.
        prev: Option<KeyValue>,
    },
    /// A delete was applied.
    Delete {
        /// The write's log index if a key was deleted, else the unchanged store revision.
        revision: u64,
        /// 1 if the key existed, else 0.
        deleted: u64,
        /// The deleted key-value, when `prev_kv` was asked for and the key existed.
        prev: Option<KeyValue>,
    },
    /// A prefix delete was applied.
    DeletePrefix {
        /// The write's log index if any key was deleted, else the unchanged store revision.
        revision: u64,
        /// How many keys were deleted.
        deleted: u64,
    },
    /// A compare-and-swap was evaluated.
    CompareAndSwap {
        /// Whether the comparison held and the action was applied.
        succeeded: bool,
        /// The write's log index on success, else the unchanged store revision.
        revision: u64,
        /// The key's version now: after the action on success (0 if deleted), the current
        /// version on failure (0 if the key does not exist).
        version: u64,
        /// The key's mod revision now (0 if the key does not exist).
        mod_revision: u64,
    },
}

/// Why a command was not applied. Part of the replicated result: every replica returns the
/// same error for the same entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    /// The entry's bytes are not a command (the index is still recorded as applied).
    #[error("undecodable command: {0}")]
    Decode(#[from] DecodeError),
    /// The command breaks a size limit.
    #[error("invalid command: {0}")]
    Invalid(#[from] ValidationError),
    /// The session does not exist: never registered, expired after being idle, or evicted.
    /// The client must register a new session; the write was not applied.
    #[error("client session {client_id} is unknown or expired; register a new session")]
    SessionExpired {
        /// The session id the write carried.
        client_id: u64,
    },
    /// The sequence number is older than the session's latest write, whose response is no
    /// longer cached; the write was not applied.
    #[error(
        "sequence {sequence} of client session {client_id} is stale: the latest is {last_sequence}"
    )]
    StaleSequence {
        /// The session id.
        client_id: u64,
        /// The sequence number the write carried.
        sequence: u64,
        /// The session's latest sequence number.
        last_sequence: u64,
    },
    /// The index is not above the applied index (a driver bug); nothing changed.
    #[error("index {index} is not above the applied index {applied_index}")]
    IndexNotIncreasing {
        /// The index passed to apply.
        index: u64,
        /// The store's applied index.
        applied_index: u64,
    },
    /// The sequence number is the session's latest, but the write is not the one that used
    /// it: answering with the cached response would tell the client a write it never sent
    /// was done. Nothing was applied; the client must use a new sequence number.
    ///
    /// (Appended after the others: postcard encodes the variant index, and responses are kept
    /// in snapshots.)
    #[error(
        "sequence {sequence} of client session {client_id} was already used for a different write; use a new sequence number"
    )]
    SequenceReused {
        /// The session id.
        client_id: u64,
        /// The reused sequence number.
        sequence: u64,
    },
}

/// The result of applying one log entry.
pub type Response = Result<Outcome, ApplyError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Command> {
        vec![
            Command::Noop,
            Command::RegisterSession,
            Command::put("a", "1"),
            Command::delete("a").with_session(Session {
                client_id: 7,
                sequence: 9,
            }),
            Command::delete_prefix(""),
            Command::compare_and_swap("k", Compare::Version(0), CasAction::Put(Bytes::from("v"))),
            Command::compare_and_swap("k", Compare::Value(Bytes::from("v")), CasAction::Delete),
        ]
    }

    #[test]
    fn roundtrip() {
        for command in samples() {
            let bytes = command.encode();
            assert_eq!(bytes[0], COMMAND_FORMAT_VERSION);
            assert_eq!(decode(&bytes), Ok(command));
        }
    }

    #[test]
    fn the_size_hint_covers_the_encoding_even_with_the_widest_numbers() {
        // Given commands with the largest session numbers and sequence, and long strings,
        let widest = Session {
            client_id: u64::MAX,
            sequence: u64::MAX,
        };
        let long = Bytes::from(vec![b'x'; 70_000]);
        let mut commands = samples();
        commands.extend([
            Command::put(long.clone(), long.clone()).with_session(widest),
            Command::compare_and_swap(
                long.clone(),
                Compare::Value(long.clone()),
                CasAction::Put(long.clone()),
            )
            .with_session(widest),
            Command::compare_and_swap("k", Compare::Version(u64::MAX), CasAction::Delete)
                .with_session(widest),
        ]);
        for command in commands {
            // when each is encoded, then it fits the capacity it was given: no reallocation.
            assert!(
                command.encode().len() <= command.encoded_bytes_hint(),
                "{command:?}"
            );
        }
    }

    /// The version-1 encoding is frozen: logs written today must decode tomorrow.
    #[test]
    fn version_1_encoding_is_stable() {
        assert_eq!(Command::Noop.encode(), vec![1, 0]);
        assert_eq!(Command::RegisterSession.encode(), vec![1, 1]);
        // Write, session Some(1, 2), Put, key "k", value "v", prev_kv false.
        assert_eq!(
            Command::put("k", "v")
                .with_session(Session {
                    client_id: 1,
                    sequence: 2
                })
                .encode(),
            vec![1, 2, 1, 1, 2, 0, 1, b'k', 1, b'v', 0]
        );
    }

    /// The fingerprint is replicated state: these values are frozen like the encoding.
    #[test]
    fn fingerprints_are_stable_and_tell_writes_apart() {
        let put = |k: &str, v: &str| WriteOp::Put {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
            prev_kv: true,
        };
        assert_eq!(put("k", "v").fingerprint(), put("k", "v").fingerprint());
        assert_ne!(put("k", "v").fingerprint(), put("k", "w").fingerprint());
        // Field boundaries count: ("ab", "c") is not ("a", "bc").
        assert_ne!(put("ab", "c").fingerprint(), put("a", "bc").fingerprint());
        let delete = WriteOp::Delete {
            key: Bytes::from("k"),
            prev_kv: true,
        };
        assert_ne!(delete.fingerprint(), put("k", "").fingerprint());
        assert_eq!(
            WriteOp::DeletePrefix {
                prefix: Bytes::new()
            }
            .fingerprint(),
            FROZEN_EMPTY_PREFIX_FINGERPRINT
        );
    }

    /// FNV-1a 64 of the bytes [2, 0, 0, 0, 0, 0, 0, 0, 0] (tag, then a zero length), computed
    /// apart from this code.
    const FROZEN_EMPTY_PREFIX_FINGERPRINT: u64 = 0x0cd9_2cf5_4dc6_15e5;

    #[test]
    fn decode_errors() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            decode(&[9, 0]),
            Err(DecodeError::UnknownVersion { version: 9 })
        );
        assert_eq!(decode(&[1]), Err(DecodeError::Malformed));
        assert_eq!(decode(&[1, 200]), Err(DecodeError::Malformed));
        assert_eq!(
            decode(&[1, 0, 0]),
            Err(DecodeError::TrailingBytes { bytes: 1 })
        );
        // A length prefix far beyond the input must fail cleanly, not allocate.
        assert_eq!(
            decode(&[1, 2, 0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(DecodeError::Malformed)
        );
        let huge = vec![0u8; COMMAND_BYTES_MAX + 1];
        assert!(matches!(decode(&huge), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn validate_checks_every_field() {
        let big = Bytes::from(vec![0u8; VALUE_BYTES_MAX + 1]);
        let long_key = Bytes::from(vec![b'k'; KEY_BYTES_MAX + 1]);
        assert!(Command::put("k", big.clone()).validate().is_err());
        assert!(Command::put(long_key.clone(), "v").validate().is_err());
        assert!(Command::put("", "v").validate().is_err());
        assert!(Command::delete(long_key.clone()).validate().is_err());
        assert!(Command::delete_prefix(long_key).validate().is_err());
        assert!(
            Command::compare_and_swap("k", Compare::Value(big.clone()), CasAction::Delete)
                .validate()
                .is_err()
        );
        assert!(
            Command::compare_and_swap("k", Compare::Version(1), CasAction::Put(big))
                .validate()
                .is_err()
        );
        for command in samples() {
            assert_eq!(command.validate(), Ok(()));
        }
    }

    #[test]
    fn largest_valid_command_fits_the_limit() {
        let value = Bytes::from(vec![0xffu8; VALUE_BYTES_MAX]);
        let command = Command::compare_and_swap(
            vec![0xffu8; KEY_BYTES_MAX],
            Compare::Value(value.clone()),
            CasAction::Put(value),
        )
        .with_session(Session {
            client_id: u64::MAX,
            sequence: u64::MAX,
        });
        let bytes = command.encode();
        assert!(bytes.len() <= COMMAND_BYTES_MAX);
        assert_eq!(decode(&bytes), Ok(command));
    }
}
