//! Damage on disk: what recovery truncates (a torn tail of the newest segment) and what it
//! refuses with an error naming the file and byte offset (everything else).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use wal::record::RECORD_OVERHEAD_BYTES;
use wal::segment::{SEGMENT_HEADER_BYTES, segment_file_name};
use wal::{Entry, RealFs, Wal, WalConfig, WalError};

const PAYLOAD_BYTES: usize = 100;
const RECORD_BYTES: u64 = (RECORD_OVERHEAD_BYTES + PAYLOAD_BYTES) as u64;

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 4096,
    }
}

/// Entries per segment with 100-byte payloads and 4 KiB segments: the record that crosses
/// the limit stays in the segment.
fn per_segment() -> u64 {
    (4096 - SEGMENT_HEADER_BYTES).div_ceil(RECORD_BYTES)
}

/// A log of `count` entries with 100-byte payloads, synced and closed.
fn log_with(dir: &Path, count: u64) {
    let mut wal = Wal::open(RealFs, dir, config()).unwrap();
    let entries: Vec<Entry> = (1..=count)
        .map(|index| Entry {
            index,
            term: 1,
            payload: vec![index as u8; PAYLOAD_BYTES],
        })
        .collect();
    wal.append(&entries).unwrap();
    wal.sync().unwrap();
}

fn segment(dir: &Path, first: u64) -> PathBuf {
    dir.join(segment_file_name(first))
}

/// Where entry `index` starts in its segment.
fn offset_of(index: u64) -> u64 {
    let k = (index - 1) % per_segment();
    SEGMENT_HEADER_BYTES + k * RECORD_BYTES
}

fn flip_bit(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x10;
    f.write_all_at(&b, offset).unwrap();
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.write_all_at(bytes, len).unwrap();
}

fn open_err(dir: &Path) -> WalError {
    Wal::open(RealFs, dir, config()).expect_err("recovery must refuse this damage")
}

fn assert_corrupt_at(err: &WalError, file: &Path, offset: u64) {
    match err {
        WalError::Corrupt {
            path, offset: at, ..
        } => {
            assert_eq!(path, file, "{err}");
            assert_eq!(*at, offset, "{err}");
        }
        other => panic!(
            "expected corruption at {}:{offset}, got {other}",
            file.display()
        ),
    }
    let text = err.to_string();
    assert!(
        text.contains(&file.display().to_string()) && text.contains(&offset.to_string()),
        "{text}"
    );
}

#[test]
fn a_flipped_bit_in_the_middle_of_the_newest_segment_is_an_error_not_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 20);
    let seg = segment(dir.path(), 1);
    flip_bit(&seg, offset_of(5) + 40);
    let err = open_err(dir.path());
    assert_corrupt_at(&err, &seg, offset_of(5));
    assert!(err.to_string().contains("valid records follow"), "{err}");
}

#[test]
fn a_flipped_bit_in_an_older_segment_is_an_error_even_in_its_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let n = per_segment();
    log_with(dir.path(), 3 * n);
    let seg = segment(dir.path(), 1);
    flip_bit(&seg, offset_of(n) + 50);
    let err = open_err(dir.path());
    assert_corrupt_at(&err, &seg, offset_of(n));
    assert!(err.to_string().contains("not the newest segment"), "{err}");
}

#[test]
fn a_torn_tail_is_truncated_and_everything_before_it_is_intact() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 20);
    let seg = segment(dir.path(), 1);
    // The last record was half written when the power went.
    set_len(&seg, offset_of(20) + 37);
    let mut wal = Wal::open(RealFs, dir.path(), config()).unwrap();
    assert_eq!(wal.last_index(), 19);
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        offset_of(20),
        "the torn bytes are gone"
    );
    assert_eq!(wal.read(1, 20).unwrap().len(), 19);
    // The log continues where the damage was.
    wal.append(&[Entry {
        index: 20,
        term: 2,
        payload: b"again".to_vec(),
    }])
    .unwrap();
    wal.sync().unwrap();
}

#[test]
fn garbage_after_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 5);
    let seg = segment(dir.path(), 1);
    append_bytes(&seg, &[0xAB; 77]);
    let wal = Wal::open(RealFs, dir.path(), config()).unwrap();
    assert_eq!(wal.last_index(), 5);
}

#[test]
fn zeroed_space_after_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 5);
    let seg = segment(dir.path(), 1);
    append_bytes(&seg, &[0; 4096]);
    let wal = Wal::open(RealFs, dir.path(), config()).unwrap();
    assert_eq!(wal.last_index(), 5);
}

#[test]
fn a_last_record_whose_length_claims_4_gib_is_torn_and_in_the_middle_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 10);
    let seg = segment(dir.path(), 1);
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&u32::MAX.to_le_bytes(), offset_of(10) + 24)
        .unwrap();
    assert_eq!(
        Wal::open(RealFs, dir.path(), config())
            .unwrap()
            .last_index(),
        9
    );

    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 10);
    let seg = segment(dir.path(), 1);
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&u32::MAX.to_le_bytes(), offset_of(4) + 24)
        .unwrap();
    let err = open_err(dir.path());
    assert_corrupt_at(&err, &seg, offset_of(4));
    assert!(err.to_string().contains("limit"), "{err}");
}

#[test]
fn a_newest_segment_with_a_truncated_file_header_is_rewritten_empty() {
    let dir = tempfile::tempdir().unwrap();
    let n = per_segment();
    log_with(dir.path(), n + 1); // the second segment holds entry n + 1
    let seg = segment(dir.path(), n + 1);
    // A crash while the segment was being created (its one record cannot have been synced).
    set_len(&seg, 10);
    let mut wal = Wal::open(RealFs, dir.path(), config()).unwrap();
    assert_eq!(wal.last_index(), n);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), SEGMENT_HEADER_BYTES);
    wal.append(&[Entry {
        index: n + 1,
        term: 1,
        payload: vec![1],
    }])
    .unwrap();
}

#[test]
fn an_older_segment_with_a_truncated_file_header_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let n = per_segment();
    log_with(dir.path(), 3 * n);
    let seg = segment(dir.path(), n + 1);
    set_len(&seg, 10);
    let err = open_err(dir.path());
    assert_corrupt_at(&err, &seg, 0);
    assert!(err.to_string().contains("cut short"), "{err}");
}

#[test]
fn an_empty_newest_segment_file_is_recovered_and_an_empty_older_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let n = per_segment();
    log_with(dir.path(), n);
    // Crash right after the file of the next segment was created.
    std::fs::File::create(segment(dir.path(), n + 1)).unwrap();
    let wal = Wal::open(RealFs, dir.path(), config()).unwrap();
    assert_eq!((wal.last_index(), wal.segment_count()), (n, 2));
    drop(wal);

    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 3 * n);
    set_len(&segment(dir.path(), n + 1), 0);
    assert_corrupt_at(&open_err(dir.path()), &segment(dir.path(), n + 1), 0);
}

#[test]
fn a_missing_segment_is_a_gap_named_by_the_next_file() {
    let dir = tempfile::tempdir().unwrap();
    let n = per_segment();
    log_with(dir.path(), 3 * n);
    std::fs::remove_file(segment(dir.path(), n + 1)).unwrap();
    let err = open_err(dir.path());
    assert_corrupt_at(&err, &segment(dir.path(), 2 * n + 1), 0);
    assert!(err.to_string().contains("gap"), "{err}");
}

#[test]
fn a_valid_record_with_a_repeated_index_is_a_step_back_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 5);
    let seg = segment(dir.path(), 1);
    let mut copy = vec![0u8; RECORD_BYTES as usize];
    std::fs::File::open(&seg)
        .unwrap()
        .read_exact_at(&mut copy, offset_of(5))
        .unwrap();
    append_bytes(&seg, &copy);
    let err = open_err(dir.path());
    assert_corrupt_at(&err, &seg, offset_of(5) + RECORD_BYTES);
    assert!(
        err.to_string().contains("index 5 where 6 was expected"),
        "{err}"
    );
}

#[test]
fn a_segment_whose_header_disagrees_with_its_name_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 3);
    std::fs::rename(segment(dir.path(), 1), segment(dir.path(), 2)).unwrap();
    let err = open_err(dir.path());
    assert!(
        err.is_corruption() && err.to_string().contains("file name says 2"),
        "{err}"
    );
}

#[test]
fn one_damaged_hard_state_slot_is_survived_and_two_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut wal = Wal::open(RealFs, dir.path(), config()).unwrap();
        wal.save_hard_state(b"term=7 vote=2").unwrap();
    }
    let hs = dir.path().join(wal::HARD_STATE_FILE_NAME);
    flip_bit(&hs, 30);
    let wal = Wal::open(RealFs, dir.path(), config()).unwrap();
    assert_eq!(wal.hard_state(), Some(&b"term=7 vote=2"[..]));
    drop(wal);
    flip_bit(&hs, wal::HARD_STATE_SLOT_BYTES + 30);
    let err = open_err(dir.path());
    assert!(
        err.is_corruption() && err.to_string().contains("both hard-state slots"),
        "{err}"
    );
}
