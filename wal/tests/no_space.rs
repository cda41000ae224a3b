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
