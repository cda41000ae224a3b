//! A full disk is waited out, never fatal: an append or a rotation that fails for lack of
//! space leaves the log whole and unpoisoned (at most a prefix of the batch, never a
//! half-written record that could come back at recovery), and appending succeeds once space
//! is freed.

use wal::{Entry, SEGMENT_BYTES_MIN, SimFs, Wal, WalConfig};

const DIR: &str = "/node/wal";

fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to)
        .map(|index| Entry {
            index,
            term,
            payload: vec![index as u8; 300],
        })
        .collect()
}

fn open(fs: &SimFs) -> Wal<SimFs> {
    let config = WalConfig {
        segment_bytes: SEGMENT_BYTES_MIN,
    };
    Wal::open(fs.clone(), DIR, config).unwrap()
}

#[test]
fn an_append_on_a_full_disk_keeps_a_whole_prefix_at_most_and_succeeds_once_space_is_freed() {
    // Given a log holding entries 1..=10, synced, on a disk that then fills up,
    let fs = SimFs::new(11);
    let mut wal = open(&fs);
    wal.append(&entries(1, 10, 1)).unwrap();
    wal.sync().unwrap();
    fs.set_capacity(Some(u64::MAX));
    let used = u64::MAX - wal.available_space().unwrap();
    fs.set_capacity(Some(used + 1000));
    assert_eq!(wal.available_space().unwrap(), 1000);
    // when an append that needs more than is left (and new segments) is made,
    let failed = wal.append(&entries(11, 40, 1)).unwrap_err();
    // then it fails as "no space", keeps at most a whole prefix of the batch, and does not
    // poison the log;
    assert!(failed.is_no_space(), "{failed}");
    assert!(!wal.is_poisoned());
    let kept = wal.last_index();
    assert!((10..40).contains(&kept), "kept up to {kept}");
    assert_eq!(wal.read(1, kept + 1).unwrap(), entries(1, kept, 1).to_vec());
    // a different, shorter append of another term may take its place when space is freed,
    fs.set_capacity(None);
    wal.truncate_suffix(11).unwrap();
    wal.append(&entries(11, 12, 2)).unwrap();
    wal.sync().unwrap();
    // and after a crash the log is exactly what was acknowledged: no record of the failed
    // append comes back after the shorter one.
    drop(wal);
    fs.crash();
    let wal = open(&fs);
    assert_eq!(wal.last_index(), 12);
    assert_eq!(
        wal.read(1, 13).unwrap(),
        [entries(1, 10, 1), entries(11, 12, 2)].concat()
    );
}

#[test]
fn a_rotation_on_a_full_disk_is_retried_by_the_next_append() {
    // Given a log whose active segment is full, on a disk with no byte left,
    let fs = SimFs::new(12);
    let mut wal = open(&fs);
    let mut last = 0;
    while wal.segment_count() == 1 {
        last += 1;
        wal.append(&entries(last, last, 1)).unwrap();
    }
    // (the append that rotated now sits alone in the second segment; fill that one too)
    while wal.segment_count() == 2 {
        last += 1;
        wal.append(&entries(last, last, 1)).unwrap();
    }
    wal.sync().unwrap();
    fs.set_capacity(Some(0));
    let segments = wal.segment_count();
    // when appends keep coming, then each fails as "no space" and no segment is added,
    for _ in 0..3 {
        let failed = wal.append(&entries(last + 1, last + 1, 1)).unwrap_err();
        assert!(failed.is_no_space(), "{failed}");
        assert_eq!(wal.segment_count(), segments);
        assert!(!wal.is_poisoned());
    }
    // and once space is freed the same append rotates and succeeds, and survives a crash.
    fs.set_capacity(None);
    wal.append(&entries(last + 1, last + 1, 1)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    fs.crash();
    let wal = open(&fs);
    assert_eq!(wal.last_index(), last + 1);
    assert_eq!(wal.read(1, last + 2).unwrap(), entries(1, last + 1, 1));
}

/// A hard state big enough that half of its slot's write tears it (a short write of a small
/// one could still hold the whole record).
fn big_state(tag: u8) -> Vec<u8> {
    vec![tag; 3000]
}

#[test]
fn a_hard_state_save_that_finds_no_space_keeps_the_previous_state_and_can_be_retried() {
    // The first slot's write failing, or the second's after the first was synced.
    for (seed, slot_writes_before) in [(13, 0), (14, 1)] {
        // Given a log with hard state "a" saved,
        let fs = SimFs::new(seed);
        let mut wal = open(&fs);
        wal.save_hard_state(&big_state(b'a')).unwrap();
        // when saving "b" finds the disk full (a short write that tears its slot),
        fs.fail_writes_for_space(slot_writes_before, 1);
        let failed = wal.save_hard_state(&big_state(b'b')).unwrap_err();
        // then it fails as "no space", the log is not poisoned and "a" is still the state;
        assert!(failed.is_no_space(), "{failed}");
        assert!(!wal.is_poisoned());
        assert_eq!(wal.hard_state(), Some(&big_state(b'a')[..]));
        // the torn bytes on disk leave one whole slot: reopened, the log has "a", or "b"
        // when the slot written first was whole,
        drop(wal);
        let wal = open(&fs);
        let found = wal.hard_state().unwrap().to_vec();
        let expected = if slot_writes_before == 0 { b'a' } else { b'b' };
        assert_eq!(found, big_state(expected), "slot {slot_writes_before}");
        drop(wal);
        // and a retry saves, for good.
        let mut wal = open(&fs);
        wal.save_hard_state(&big_state(b'b')).unwrap();
        drop(wal);
        fs.crash();
        assert_eq!(open(&fs).hard_state(), Some(&big_state(b'b')[..]));
    }
}

#[test]
fn a_save_after_one_cut_short_writes_the_slot_without_the_newest_copy_first() {
    // Given a log whose hard state "c" is whole in slot 0 only, slot 1 being damaged (a save
    // cut short by a crash), reopened,
    let fs = SimFs::new(15);
    let mut wal = open(&fs);
    wal.save_hard_state(&big_state(b'b')).unwrap();
    fs.fail_writes_for_space(1, 1);
    assert!(wal.save_hard_state(&big_state(b'c')).is_err());
    drop(wal);
    let path = std::path::Path::new(DIR).join(wal::HARD_STATE_FILE_NAME);
    let slot_1 = wal::HARD_STATE_SLOT_BYTES;
    let file = wal::FileSystem::open(&fs, &path).unwrap();
    wal::FileHandle::write_all_at(&file, &[0xee; 64], slot_1).unwrap();
    wal::FileHandle::sync_data(&file).unwrap();
    drop(file);
    let mut wal = open(&fs);
    assert_eq!(wal.hard_state(), Some(&big_state(b'c')[..]));
    // when the next save's first write is torn,
    fs.fail_writes_for_space(0, 1);
    assert!(wal.save_hard_state(&big_state(b'd')).is_err());
    drop(wal);
    // then it tore the damaged slot, not the one holding "c": the log opens with "c" (had
    // slot 0 been written first, both slots would be damaged and the log would not open).
    let wal = Wal::open(
        fs.clone(),
        DIR,
        WalConfig {
            segment_bytes: SEGMENT_BYTES_MIN,
        },
    )
    .expect("one slot is whole");
    assert_eq!(wal.hard_state(), Some(&big_state(b'c')[..]));
}
