//! Scenarios of the streamed snapshot format (version 3) and of the streaming snapshot store:
//! round trips from a view while the store keeps applying, damage and truncation refused with
//! typed errors, bounded lengths, old formats still loading, and receiving from a peer
//! through a `.recv` file that is verified before it is kept.

use std::fs;
use std::io::{self, Read};

use bytes::Bytes;
use kv::snapshot::{SNAPSHOT_CONFIG_BYTES_MAX, SNAPSHOT_TRAILER_BYTES};
use kv::{
    Command, CorruptSnapshot, InvariantError, KvConfig, KvStore, Session, SessionConfig, Snapshot,
    SnapshotError, SnapshotReadError, SnapshotStore, read_meta, read_snapshot, verify_snapshot,
};
use proptest::prelude::*;

const CONFIG: &[u8] = b"cluster records";

/// A store with a session that has written (so a cached response is in the snapshot), a
/// deleted key and a value of 1,000 bytes; applied index 6, revision 5.
fn sample_store() -> KvStore {
    let mut s = KvStore::new(KvConfig::default());
    s.apply(1, &Command::RegisterSession.encode())
        .expect("register");
    let session = Session {
        client_id: 1,
        sequence: 1,
    };
    s.apply(2, &Command::put("a", "1").with_session(session).encode())
        .expect("put");
    s.apply(3, &Command::put("b", vec![7u8; 1000]).encode())
        .expect("put");
    s.apply(4, &Command::delete("a").encode()).expect("delete");
    s.apply(5, &Command::put("c", "3").encode()).expect("put");
    s.mark_applied(6).expect("mark");
    s
}

/// The format-3 bytes of `store` at term 2.
fn v3_bytes(store: &KvStore) -> Vec<u8> {
    let mut out = Vec::new();
    let written = store
        .view()
        .write_snapshot(2, CONFIG, &mut out)
        .expect("writes to a Vec");
    assert_eq!(written, out.len() as u64, "the count is what was written");
    out
}

/// Replaces the trailer of a format-3 file so that it matches the (edited) bytes before it.
fn reseal(bytes: &mut Vec<u8>) {
    let body = bytes.len() - SNAPSHOT_TRAILER_BYTES;
    bytes.truncate(body);
    let crc = crc32fast::hash(bytes);
    bytes.extend_from_slice(&(body as u64).to_le_bytes());
    bytes.extend_from_slice(&crc.to_le_bytes());
}

fn corrupt(result: Result<impl std::fmt::Debug, SnapshotReadError>) -> CorruptSnapshot {
    match result {
        Err(SnapshotReadError::Corrupt(c)) => c,
        other => panic!("expected damage, got {other:?}"),
    }
}

#[test]
fn a_view_written_while_the_store_keeps_applying_reads_back_as_the_state_at_its_index() {
    // Given a store and a view taken at index 6
    let mut store = sample_store();
    let view = store.view();
    let expected = view.to_store();
    // When the store keeps applying before and while the view is written
    store
        .apply(7, &Command::put("d", "late").encode())
        .expect("put");
    store.apply(8, &Command::delete("b").encode()).expect("del");
    let mut bytes = Vec::new();
    view.write_snapshot(2, CONFIG, &mut bytes).expect("write");
    store
        .apply(9, &Command::put("e", "later").encode())
        .expect("put");
    // Then the snapshot reads back as the state at index 6, with its meta
    let (meta, restored) = read_snapshot(&mut &bytes[..], store.config()).expect("reads");
    assert_eq!((meta.index, meta.term, &meta.config[..]), (6, 2, CONFIG));
    assert_eq!(restored, expected);
    assert_eq!(restored.get(b"d"), None);
    assert!(restored.get(b"b").is_some());
    assert_eq!(restored.sessions().len(), 1);
    // and it verifies, and its meta alone reads the same
    assert_eq!(verify_snapshot(&mut &bytes[..]).expect("verifies"), meta);
    assert_eq!(read_meta(&mut &bytes[..]).expect("meta"), meta);
}

#[test]
fn an_empty_store_round_trips() {
    let store = KvStore::new(KvConfig::default());
    let bytes = v3_bytes(&store);
    let (meta, restored) = read_snapshot(&mut &bytes[..], store.config()).expect("reads");
    assert_eq!((meta.index, restored), (0, store));
}

#[test]
fn every_truncation_is_refused_as_damage() {
    // Given a small format-3 file
    let bytes = v3_bytes(&sample_store());
    // When it is cut anywhere
    for len in 0..bytes.len() {
        let cut = &bytes[..len];
        // Then reading and verifying refuse it as damage, not as an I/O error
        let read = corrupt(read_snapshot(&mut &cut[..], KvConfig::default()));
        let verified = corrupt(verify_snapshot(&mut &cut[..]));
        assert_eq!(read, verified, "cut at {len}");
        assert!(
            matches!(
                read,
                CorruptSnapshot::Truncated { .. } | CorruptSnapshot::LengthMismatch { .. }
            ),
            "cut at {len}: {read:?}"
        );
    }
}

#[test]
fn bytes_after_the_trailer_are_refused() {
    let mut bytes = v3_bytes(&sample_store());
    let end = bytes.len() as u64;
    bytes.push(0);
    assert_eq!(
        corrupt(verify_snapshot(&mut &bytes[..])),
        CorruptSnapshot::TrailingBytes { offset: end }
    );
}

proptest! {
    #[test]
    fn any_bit_flip_is_refused_as_damage(offset in any::<prop::sample::Index>(), bit in 0u8..8) {
        // Given a small format-3 file with one bit flipped anywhere
        let mut bytes = v3_bytes(&sample_store());
        let at = offset.index(bytes.len());
        bytes[at] ^= 1 << bit;
        // Then reading and verifying refuse it as damage (never as an inconsistency)
        let read = read_snapshot(&mut &bytes[..], KvConfig::default());
        prop_assert!(matches!(read, Err(SnapshotReadError::Corrupt(_))), "flip at {at}: {read:?}");
        let verified = verify_snapshot(&mut &bytes[..]);
        prop_assert!(matches!(verified, Err(SnapshotReadError::Corrupt(_))), "flip at {at}: {verified:?}");
        // and so does the whole-buffer decoder
        prop_assert!(Snapshot::decode(&bytes).is_err());
    }

    #[test]
    fn random_stores_round_trip(
        entries in proptest::collection::btree_map(
            proptest::collection::vec(any::<u8>(), 1..40),
            proptest::collection::vec(any::<u8>(), 0..300),
            0..60,
        ),
        trickle in 1usize..50,
    ) {
        // Given a store built from random keys and values
        let mut store = KvStore::new(KvConfig::default());
        store.apply(1, &Command::RegisterSession.encode()).expect("register");
        for (i, (key, value)) in entries.into_iter().enumerate() {
            store.apply(i as u64 + 2, &Command::put(key, value).encode()).expect("put");
        }
        // When it is written and read back, whole or a few bytes per read (so that records
        // straddle the reader's chunks)
        let bytes = v3_bytes(&store);
        let (_, restored) = read_snapshot(&mut &bytes[..], store.config()).expect("reads");
        let mut trickle = Trickle { bytes: &bytes, per_read: trickle };
        let (_, trickled) = read_snapshot(&mut trickle, store.config()).expect("reads");
        // Then it is the same store
        prop_assert_eq!(&restored, &store);
        prop_assert_eq!(&trickled, &store);
    }
}

#[test]
fn a_huge_length_prefix_is_refused_before_anything_is_allocated() {
    let bytes = v3_bytes(&sample_store());
    // Given a config length of 4 GiB at offset 28 and nothing after it
    let mut huge_config = bytes[..32].to_vec();
    huge_config[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
    // Then it is refused by its bound, not by reading (a read would say Truncated)
    assert_eq!(
        corrupt(read_meta(&mut &huge_config[..])),
        CorruptSnapshot::LengthOutOfBounds {
            field: "config",
            length: u64::from(u32::MAX),
            max: SNAPSHOT_CONFIG_BYTES_MAX as u64,
            offset: 28,
        }
    );

    // Given a value length of 2^40 in the first key-value, with the stream ending there
    let key_count_at = key_count_offset(&bytes);
    let first_kv = key_count_at + 8;
    let key_len = usize::from(bytes[first_kv]);
    let value_len_at = first_kv + 1 + key_len;
    let mut huge_value = bytes[..value_len_at].to_vec();
    huge_value.extend_from_slice(&leb128(1 << 40));
    // Then it is refused by the value bound
    let error = corrupt(read_snapshot(&mut &huge_value[..], KvConfig::default()));
    assert!(
        matches!(error, CorruptSnapshot::LengthOutOfBounds { field: "value", length, .. } if length == 1 << 40),
        "{error:?}"
    );

    // Given a session count of 4 billion
    let sessions_at = 32 + CONFIG.len() + 8;
    let mut many_sessions = bytes[..sessions_at + 4].to_vec();
    many_sessions[sessions_at..].copy_from_slice(&u32::MAX.to_le_bytes());
    let error = corrupt(verify_snapshot(&mut &many_sessions[..]));
    assert!(
        matches!(
            error,
            CorruptSnapshot::LengthOutOfBounds {
                field: "session count",
                ..
            }
        ),
        "{error:?}"
    );

    // Given a key count above what any file may hold, it is refused by its bound
    let mut many_keys = bytes.clone();
    many_keys[key_count_at..key_count_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let error = corrupt(verify_snapshot(&mut &many_keys[..]));
    assert!(
        matches!(
            error,
            CorruptSnapshot::LengthOutOfBounds {
                field: "key count",
                ..
            }
        ),
        "{error:?}"
    );
    // and a large count within the bound makes the reader read what is there and stop
    many_keys[key_count_at..key_count_at + 8].copy_from_slice(&(1u64 << 30).to_le_bytes());
    let error = corrupt(verify_snapshot(&mut &many_keys[..]));
    assert!(
        matches!(error, CorruptSnapshot::Truncated { .. }),
        "{error:?}"
    );
}

/// The offset of the key count in a file written by [`v3_bytes`] of [`sample_store`]: after
/// the config, the revision, the session count and the one session record.
fn key_count_offset(bytes: &[u8]) -> usize {
    let sessions_at = 32 + CONFIG.len() + 8;
    let record_len_at = sessions_at + 4;
    let record_len =
        u32::from_le_bytes(bytes[record_len_at..record_len_at + 4].try_into().unwrap());
    record_len_at + 4 + record_len as usize
}

fn leb128(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

#[test]
fn a_consistent_looking_file_whose_content_breaks_an_invariant_is_refused_as_such() {
    // Given a file whose revision is lowered to 1 (below its keys' mod revisions), resealed
    // so that its checksum matches
    let mut bytes = v3_bytes(&sample_store());
    let revision_at = 32 + CONFIG.len();
    bytes[revision_at..revision_at + 8].copy_from_slice(&1u64.to_le_bytes());
    reseal(&mut bytes);
    // Then it is refused as inconsistent, not as damage, by reading and by verifying
    let read = read_snapshot(&mut &bytes[..], KvConfig::default());
    assert!(
        matches!(
            read,
            Err(SnapshotReadError::Invariant(
                InvariantError::Revisions { .. }
            ))
        ),
        "{read:?}"
    );
    let verified = verify_snapshot(&mut &bytes[..]);
    assert!(
        matches!(
            verified,
            Err(SnapshotReadError::Invariant(
                InvariantError::Revisions { .. }
            ))
        ),
        "{verified:?}"
    );
}

#[test]
fn a_replica_with_a_tighter_session_bound_refuses_what_verify_accepts() {
    // Given a snapshot with two sessions
    let mut store = sample_store();
    store
        .apply(7, &Command::RegisterSession.encode())
        .expect("register");
    let bytes = v3_bytes(&store);
    // When a replica allowing one session reads it
    let tight = KvConfig {
        sessions: SessionConfig {
            sessions_max: 1,
            idle_indexes_max: 10,
        },
    };
    let read = read_snapshot(&mut &bytes[..], tight);
    // Then it is an invariant breach; the configuration-free check accepts the file
    assert!(
        matches!(
            read,
            Err(SnapshotReadError::Invariant(InvariantError::Sessions(_)))
        ),
        "{read:?}"
    );
    assert_eq!(verify_snapshot(&mut &bytes[..]).expect("verifies").index, 7);
}

/// A reader that hands out at most `per_read` bytes per read.
struct Trickle<'a> {
    bytes: &'a [u8],
    per_read: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.per_read).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

/// A reader that serves the first `limit` bytes of `bytes` and fails every read after them.
struct FailsAfter<'a> {
    bytes: &'a [u8],
    pos: usize,
    limit: usize,
}

impl Read for FailsAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.limit {
            return Err(io::Error::other("read past the allowed prefix"));
        }
        let n = buf.len().min(self.limit - self.pos);
        buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn read_meta_reads_only_the_first_bytes() {
    // Given a snapshot behind a reader that fails after the header and meta
    let bytes = v3_bytes(&sample_store());
    let meta_bytes = 32 + CONFIG.len();
    let mut reader = FailsAfter {
        bytes: &bytes,
        pos: 0,
        limit: meta_bytes,
    };
    // When the meta is read
    let meta = read_meta(&mut reader).expect("the meta is in the first bytes");
    // Then it is the snapshot's
    assert_eq!((meta.index, meta.term, &meta.config[..]), (6, 2, CONFIG));
    // and a full read through the same kind of reader fails as I/O, not as damage
    let mut reader = FailsAfter {
        bytes: &bytes,
        pos: 0,
        limit: meta_bytes,
    };
    let read = read_snapshot(&mut reader, KvConfig::default());
    assert!(matches!(read, Err(SnapshotReadError::Io(_))), "{read:?}");
}

#[test]
fn format_2_and_format_1_files_still_load() {
    // Given the whole-file encoding of today's release (format 2)
    let store = sample_store();
    let v2 = store.snapshot(2, Bytes::from_static(CONFIG)).encode();
    assert_eq!(v2[8..12], 2u32.to_le_bytes());
    // Then it is read, verified and its meta read by the streaming functions
    let (meta, restored) = read_snapshot(&mut &v2[..], store.config()).expect("format 2");
    assert_eq!((meta.index, meta.term, &restored), (6, 2, &store));
    assert_eq!(verify_snapshot(&mut &v2[..]).expect("verifies"), meta);
    assert_eq!(read_meta(&mut &v2[..]).expect("meta"), meta);

    // Given a format-1 file (a store whose session has not written encodes the same in
    // formats 1 and 2; only the version differs)
    let mut store = KvStore::new(KvConfig::default());
    store
        .apply(1, &Command::RegisterSession.encode())
        .expect("register");
    store
        .apply(2, &Command::put("k", "v").encode())
        .expect("put");
    let mut v1 = store.snapshot(1, Bytes::new()).encode();
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = {
        let mut h = crc32fast::Hasher::new();
        h.update(&v1[8..20]);
        h.update(&v1[24..]);
        h.finalize()
    };
    v1[20..24].copy_from_slice(&crc.to_le_bytes());
    // Then it loads too
    let (_, restored) = read_snapshot(&mut &v1[..], store.config()).expect("format 1");
    assert_eq!(restored, store);
    // and damage in an old file is still damage
    let mut damaged = v2.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x10;
    assert!(matches!(
        corrupt(read_snapshot(&mut &damaged[..], KvConfig::default())),
        CorruptSnapshot::ChecksumMismatch { .. }
    ));
}

#[test]
fn the_whole_buffer_decoder_reads_format_3_for_callers_not_yet_streaming() {
    let store = sample_store();
    let bytes = v3_bytes(&store);
    let snapshot = Snapshot::decode(&bytes).expect("decodes");
    assert_eq!(snapshot, store.snapshot(2, Bytes::from_static(CONFIG)));
}

#[test]
fn write_streams_into_place_and_load_newest_falls_back_past_damage() {
    // Given a store directory and four snapshots written by streaming
    let dir = tempfile::tempdir().expect("tempdir");
    let files = SnapshotStore::open(dir.path()).expect("open");
    let mut store = sample_store();
    let mut written = Vec::new();
    for index in 7..=10u64 {
        store
            .apply(index, &Command::put(format!("k{index}"), "v").encode())
            .expect("put");
        let view = store.view();
        let file = files
            .write(index, 3, |out| {
                view.write_snapshot(3, CONFIG, out).map(drop)
            })
            .expect("write");
        assert_eq!(file.bytes, fs::metadata(&file.path).expect("stat").len());
        written.push((file, view.to_store()));
    }
    // Then the newest three are kept, and the newest loads
    let listed = files.list().expect("list");
    assert_eq!(
        listed.iter().map(|f| f.index).collect::<Vec<_>>(),
        [8, 9, 10]
    );
    assert_eq!(listed[2], written[3].0);
    let loaded = files
        .load_newest_with(KvConfig::default())
        .expect("load")
        .expect("some");
    assert_eq!((loaded.file.index, &loaded.store), (10, &written[3].1));
    assert_eq!(loaded.meta.config, CONFIG);
    assert!(loaded.skipped.is_empty());
    assert_eq!(files.read_meta(&loaded.file).expect("meta"), loaded.meta);

    // When the newest is damaged in the middle
    let newest = &written[3].0;
    let mut bytes = fs::read(&newest.path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&newest.path, &bytes).expect("write");
    // Then loading falls back to the one before, and reports the damaged one
    let loaded = files
        .load_newest_with(KvConfig::default())
        .expect("falls back")
        .expect("some");
    assert_eq!((loaded.file.index, &loaded.store), (9, &written[2].1));
    assert_eq!(loaded.skipped.len(), 1);
    let message = loaded.skipped[0].to_string();
    assert!(
        message.contains("damaged") && message.contains(&SnapshotStore::file_name(10, 3)),
        "{message}"
    );
}

#[test]
fn a_failed_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = SnapshotStore::open(dir.path()).expect("open");
    let error = files
        .write(5, 1, |out| {
            out.write_all(b"half a snapshot")?;
            Err(io::Error::other("the view's writer failed"))
        })
        .expect_err("the writer's error is returned");
    assert!(
        matches!(error, SnapshotError::Io { op: "write", .. }),
        "{error}"
    );
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[test]
fn a_received_snapshot_is_verified_then_kept() {
    // Given a snapshot streamed by a leader in chunks
    let dir = tempfile::tempdir().expect("tempdir");
    let files = SnapshotStore::open(dir.path()).expect("open");
    let store = sample_store();
    let bytes = v3_bytes(&store);
    let mut receiving = files.receive(6, 2).expect("receive");
    for chunk in bytes.chunks(7) {
        receiving.write(chunk).expect("chunk");
    }
    assert_eq!(receiving.bytes(), bytes.len() as u64);
    // When it is finished
    let path = receiving.path().to_path_buf();
    let meta = receiving.finish().expect("verifies");
    assert_eq!((meta.index, meta.term), (6, 2));
    // Then it is not a snapshot until it is kept
    assert!(files.list().expect("list").is_empty());
    let kept = files.keep_received(&path, 6, 2).expect("keep");
    assert_eq!(kept.bytes, bytes.len() as u64);
    assert_eq!(files.list().expect("list"), std::slice::from_ref(&kept));
    let (_, loaded) = files.load_with(&kept, store.config()).expect("loads");
    assert_eq!(loaded, store);
    // and only the snapshot file is in the directory
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 1);
}

#[test]
fn a_damaged_received_snapshot_is_refused_and_never_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = SnapshotStore::open(dir.path()).expect("open");
    let mut bytes = v3_bytes(&sample_store());
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    // Given a damaged stream
    let mut receiving = files.receive(6, 2).expect("receive");
    receiving.write(&bytes).expect("write");
    let path = receiving.path().to_path_buf();
    // When it is finished, it is refused as damage and its file removed
    let error = receiving.finish().expect_err("damage is found");
    assert!(matches!(error, SnapshotError::Corrupt { .. }), "{error}");
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
    // Then it cannot be kept
    assert!(matches!(
        files.keep_received(&path, 6, 2),
        Err(SnapshotError::Io { op: "stat", .. })
    ));
    assert!(files.list().expect("list").is_empty());
}

#[test]
fn a_received_snapshot_must_hold_what_it_was_received_as() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = SnapshotStore::open(dir.path()).expect("open");
    let bytes = v3_bytes(&sample_store());
    let mut receiving = files.receive(9, 2).expect("receive");
    receiving.write(&bytes).expect("write");
    let error = receiving.finish().expect_err("index 6 is not 9");
    assert!(
        matches!(
            error,
            SnapshotError::NameMismatch {
                index: 6,
                term: 2,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[test]
fn unfinished_receptions_and_writes_are_cleaned_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = SnapshotStore::open(dir.path()).expect("open");
    let bytes = v3_bytes(&sample_store());

    // A reception dropped half-way removes its file
    let mut receiving = files.receive(6, 2).expect("receive");
    receiving.write(&bytes[..10]).expect("write");
    drop(receiving);
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);

    // Two receptions of the same snapshot write files of their own: dropping the first, late,
    // leaves the second's whole; and the caller removes every reception's file but the one
    // it keeps.
    let mut first = files.receive(6, 2).expect("receive");
    let mut second = files.receive(6, 2).expect("receive");
    assert_ne!(first.path(), second.path());
    first.write(&bytes[..10]).expect("write");
    second.write(&bytes).expect("write");
    let kept_path = second.path().to_path_buf();
    second.finish().expect("verifies");
    drop(first);
    assert!(kept_path.exists());
    let stale = dir
        .path()
        .join(format!("{}.9.recv", SnapshotStore::file_name(4, 1)));
    fs::write(&stale, b"half").expect("write");
    files
        .remove_received_except(Some(&kept_path))
        .expect("removes");
    assert!(!stale.exists() && kept_path.exists());
    files.remove_received_except(None).expect("removes");
    assert!(!kept_path.exists());
    let receiving = files.receive(6, 2).expect("receive");
    // A crash (forgotten, not dropped) leaves its .recv file, and a crashed save its .tmp
    std::mem::forget(receiving);
    let temp = dir
        .path()
        .join(format!("{}.tmp", SnapshotStore::file_name(7, 2)));
    fs::write(&temp, b"half").expect("write");
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 2);
    // Opening the store removes both
    let reopened = SnapshotStore::open(dir.path()).expect("reopen");
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
    assert!(
        reopened
            .load_newest_with(KvConfig::default())
            .expect("empty")
            .is_none()
    );
}

#[test]
fn a_verified_reception_survives_until_kept_but_not_a_restart() {
    // A verified .recv file not yet kept when the node stops is not a snapshot: at restart it
    // is removed (the leader sends the snapshot again).
    let dir = tempfile::tempdir().expect("tempdir");
    let files = SnapshotStore::open(dir.path()).expect("open");
    let mut receiving = files.receive(6, 2).expect("receive");
    receiving.write(&v3_bytes(&sample_store())).expect("write");
    let path = receiving.path().to_path_buf();
    receiving.finish().expect("verifies");
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 1);
    let files = SnapshotStore::open(dir.path()).expect("reopen");
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
    assert!(files.keep_received(&path, 6, 2).is_err());
}

#[test]
fn an_upgraded_node_starts_from_the_files_of_the_previous_release() {
    // Given a directory holding a format-2 file saved by the previous release
    let dir = tempfile::tempdir().expect("tempdir");
    let files = SnapshotStore::open(dir.path()).expect("open");
    let store = sample_store();
    let old = files
        .save(&store.snapshot(2, Bytes::from_static(CONFIG)))
        .expect("save");
    // When the node starts
    let loaded = files
        .load_newest_with(store.config())
        .expect("load")
        .expect("some");
    // Then it has that state, and its next snapshot (format 3) is the newest
    assert_eq!((loaded.file, &loaded.store), (old, &store));
    let mut store = loaded.store;
    store
        .apply(7, &Command::put("new", "v").encode())
        .expect("put");
    let view = store.view();
    files
        .write(7, 2, |out| view.write_snapshot(2, CONFIG, out).map(drop))
        .expect("write");
    let loaded = files
        .load_newest_with(store.config())
        .expect("load")
        .expect("some");
    assert_eq!((loaded.meta.index, &loaded.store), (7, &store));
}
