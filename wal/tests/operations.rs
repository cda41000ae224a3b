//! Scenarios for the log's operations: append, read, rotation, reopen, truncation, compaction,
//! reset, hard state, locking, fsyncs run on another thread, and fsync failure.

use std::path::Path;

use wal::{Entry, FileSystem, RealFs, SimFs, Wal, WalConfig, WalError};

/// The payload entry `index` carries in these tests, so reads can be checked against it.
fn payload(index: u64) -> Vec<u8> {
    format!("entry-{index}-{}", "x".repeat((index % 97) as usize)).into_bytes()
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range
        .map(|index| Entry {
            index,
            term,
            payload: payload(index),
        })
        .collect()
}

fn small_segments() -> WalConfig {
    WalConfig {
        segment_bytes: 4096,
    }
}

fn assert_holds(wal: &Wal<impl FileSystem>, lo: u64, hi: u64) {
    let got = wal.read(lo, hi + 1).expect("read back");
    assert_eq!(got.len() as u64, hi + 1 - lo);
    for (e, index) in got.iter().zip(lo..) {
        assert_eq!(e.index, index);
        assert_eq!(e.payload, payload(index), "payload of entry {index}");
    }
}

#[test]
fn given_a_fresh_directory_the_log_starts_empty_at_index_1() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(RealFs, dir.path(), WalConfig::default()).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (1, 0));
    assert!(wal.is_empty());
    assert_eq!(wal.hard_state(), None);
    assert!(dir.path().join("00000000000000000001.wal").exists());
}

#[test]
fn appended_entries_read_back_and_survive_a_reopen_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut wal = Wal::open(RealFs, dir.path(), small_segments()).unwrap();
        for chunk in 0..20u64 {
            let lo = chunk * 50 + 1;
            wal.append(&entries(lo..=lo + 49, 1 + chunk / 5)).unwrap();
        }
        assert_eq!(wal.sync().unwrap(), 1000);
        assert!(wal.segment_count() > 5, "4 KiB segments must rotate");
        wal.check_invariants().expect("the WAL invariants hold");
    }
    let wal = Wal::open(RealFs, dir.path(), small_segments()).unwrap();
    wal.check_invariants().expect("the WAL invariants hold");
    assert_eq!(
        (wal.first_index(), wal.last_index(), wal.durable_index()),
        (1, 1000, 1000)
    );
    assert_holds(&wal, 1, 1000);
    assert_eq!(wal.term(1), Some(1));
    assert_eq!(wal.term(1000), Some(4));
    assert_eq!(wal.term(1001), None);
}

#[test]
fn a_read_longer_than_a_scan_window_comes_back_whole_and_in_order() {
    // Given one large segment holding 3 MiB of small entries, then one entry larger than a
    // scan window, then more small ones,
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(
        RealFs,
        dir.path(),
        WalConfig {
            segment_bytes: 64 * 1024 * 1024,
        },
    )
    .unwrap();
    let window = wal::SCAN_WINDOW_BYTES as usize;
    let big = |index: u64| vec![(index % 251) as u8; if index == 3001 { window + 7 } else { 1024 }];
    let all: Vec<Entry> = (1..=3100)
        .map(|index| Entry {
            index,
            term: 1,
            payload: big(index),
        })
        .collect();
    wal.append(&all).unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.segment_count(), 1);
    // when the whole range is read, or read with a byte limit, or scanned and stopped early,
    // then every entry comes back once, in order, and a limit stops where it says.
    assert_eq!(wal.read(1, 3101).unwrap(), all);
    assert_eq!(wal.read(2990, 3010).unwrap(), all[2989..3009].to_vec());
    let limited = wal.read_limited(1, 3101, 10 * 1024).unwrap();
    assert_eq!(limited, all[..10].to_vec());
    assert_eq!(
        wal.read_limited(3001, 3101, 1).unwrap(),
        all[3000..3001].to_vec()
    );
    let mut seen = Vec::new();
    wal.scan(1000, 3101, |index, _, _| {
        seen.push(index);
        if index == 1500 {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(seen, (1000..=1500).collect::<Vec<u64>>());
}

#[test]
fn an_append_that_does_not_continue_the_log_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(RealFs, dir.path(), WalConfig::default()).unwrap();
    wal.append(&entries(1..=3, 2)).unwrap();
    let gap = wal.append(&entries(5..=6, 2)).unwrap_err();
    assert!(
        gap.to_string().contains("index 5 where 4 was expected"),
        "{gap}"
    );
    let older_term = wal.append(&entries(4..=4, 1)).unwrap_err();
    assert!(
        older_term.to_string().contains("terms never go down"),
        "{older_term}"
    );
    // A batch that is bad in its middle writes none of its entries.
    let mut batch = entries(4..=6, 2);
    batch[2].index = 9;
    assert!(wal.append(&batch).is_err());
    assert_eq!(wal.last_index(), 3);
    let too_big = vec![Entry {
        index: 4,
        term: 2,
        payload: vec![0; wal::PAYLOAD_BYTES_MAX + 1],
    }];
    assert!(matches!(
        wal.append(&too_big),
        Err(WalError::PayloadTooLarge { .. })
    ));
}

#[test]
fn read_limited_stops_at_the_byte_budget_but_always_returns_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(RealFs, dir.path(), WalConfig::default()).unwrap();
    wal.append(&entries(1..=10, 1)).unwrap();
    let one = wal.read_limited(1, 11, 1).unwrap();
    assert_eq!(one.len(), 1);
    let some = wal
        .read_limited(1, 11, (payload(1).len() + payload(2).len()) as u64)
        .unwrap();
    assert_eq!(some.len(), 2);
    assert!(wal.read(0, 3).is_err(), "index 0 is before the log");
    assert!(wal.read(5, 12).is_err(), "past the end");
    assert!(wal.read(4, 4).unwrap().is_empty());
}

#[test]
fn truncate_suffix_removes_the_conflicting_entries_durably_even_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut wal = Wal::open(RealFs, dir.path(), small_segments()).unwrap();
        wal.append(&entries(1..=600, 1)).unwrap();
        wal.sync().unwrap();
        let before = wal.segment_count();
        wal.truncate_suffix(150).unwrap();
        assert!(wal.segment_count() < before);
        assert_eq!(wal.last_index(), 149);
        assert_eq!(wal.durable_index(), 149);
        // Raft then writes the new leader's entries at the same indexes.
        wal.append(&entries(150..=160, 2)).unwrap();
        wal.sync().unwrap();
        wal.check_invariants().expect("the WAL invariants hold");
    }
    let wal = Wal::open(RealFs, dir.path(), small_segments()).unwrap();
    assert_eq!(wal.last_index(), 160);
    assert_eq!(wal.term(149), Some(1));
    assert_eq!(wal.term(150), Some(2));
    assert_holds(&wal, 1, 160);
}

#[test]
fn truncating_everything_leaves_an_empty_log_that_continues_at_the_same_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(RealFs, dir.path(), small_segments()).unwrap();
    wal.append(&entries(1..=100, 1)).unwrap();
    wal.truncate_suffix(1).unwrap();
    assert!(wal.is_empty());
    wal.append(&entries(1..=2, 3)).unwrap();
    assert_eq!(wal.term(1), Some(3));
    assert!(wal.truncate_suffix(0).is_err());
    wal.truncate_suffix(50).unwrap(); // past the end: nothing to do
    assert_eq!(wal.last_index(), 2);
}

#[test]
fn compact_prefix_removes_only_whole_segments_below_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(RealFs, dir.path(), small_segments()).unwrap();
    wal.append(&entries(1..=1000, 1)).unwrap();
    wal.sync().unwrap();
    let segments = wal.segment_count();
    let removed = wal.compact_prefix(500).unwrap();
    assert!(removed > 0 && removed < segments);
    assert!(wal.first_index() <= 501, "entry 501 is still needed");
    assert!(wal.first_index() > 1);
    assert_holds(&wal, wal.first_index(), 1000);
    wal.check_invariants().expect("the WAL invariants hold");
    // Compacting past the end never removes the active segment.
    wal.compact_prefix(5000).unwrap();
    assert_eq!(wal.segment_count(), 1);
    assert_eq!(wal.last_index(), 1000);
    drop(wal);
    let wal = Wal::open(RealFs, dir.path(), small_segments()).unwrap();
    assert_holds(&wal, wal.first_index(), 1000);
}

#[test]
fn reset_discards_the_log_and_restarts_it_after_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut wal = Wal::open(RealFs, dir.path(), small_segments()).unwrap();
        wal.append(&entries(1..=300, 1)).unwrap();
        wal.reset(5001).unwrap();
        assert!(wal.is_empty());
        assert_eq!(wal.first_index(), 5001);
        wal.append(&entries(5001..=5002, 4)).unwrap();
        wal.sync().unwrap();
    }
    let wal = Wal::open(RealFs, dir.path(), small_segments()).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (5001, 5002));
    assert_eq!(wal.segment_count(), 1);
}

#[test]
fn the_hard_state_survives_reopen_truncation_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut wal = Wal::open(RealFs, dir.path(), small_segments()).unwrap();
        wal.save_hard_state(b"term=1 vote=none").unwrap();
        wal.append(&entries(1..=500, 1)).unwrap();
        wal.save_hard_state(b"term=2 vote=3").unwrap();
        wal.truncate_suffix(10).unwrap();
        wal.compact_prefix(9).unwrap();
        wal.reset(100).unwrap();
    }
    let mut wal = Wal::open(RealFs, dir.path(), small_segments()).unwrap();
    assert_eq!(wal.hard_state(), Some(&b"term=2 vote=3"[..]));
    let too_big = vec![0u8; wal::HARD_STATE_BYTES_MAX + 1];
    assert!(matches!(
        wal.save_hard_state(&too_big),
        Err(WalError::PayloadTooLarge { .. })
    ));
    assert_eq!(wal.hard_state(), Some(&b"term=2 vote=3"[..]));
}

#[test]
fn a_second_open_of_the_same_directory_gets_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Wal::open(RealFs, dir.path(), WalConfig::default()).unwrap();
    let err = Wal::open(RealFs, dir.path(), WalConfig::default()).unwrap_err();
    assert!(matches!(err, WalError::Locked { .. }));
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn out_of_range_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Wal::open(RealFs, dir.path(), WalConfig { segment_bytes: 10 }).unwrap_err();
    assert!(err.to_string().contains("segment_bytes"), "{err}");
}

#[test]
fn a_failed_fsync_poisons_the_log_and_is_never_retried() {
    let fs = SimFs::new(1);
    let dir = Path::new("/data/wal");
    let mut wal = Wal::open(fs.clone(), dir, WalConfig::default()).unwrap();
    wal.append(&entries(1..=3, 1)).unwrap();
    fs.fail_next_syncs(1);
    let err = wal.sync().unwrap_err();
    assert!(matches!(err, WalError::Poisoned(_)), "{err}");
    assert!(!err.is_no_space(), "{err}");
    assert_eq!(wal.durable_index(), 0);
    // The next sync would succeed on the disk, but the log must not pretend the data is safe.
    assert!(matches!(wal.sync(), Err(WalError::Poisoned(_))));
    assert!(matches!(
        wal.append(&entries(4..=4, 1)),
        Err(WalError::Poisoned(_))
    ));
}

#[test]
fn an_fsync_run_on_another_thread_counts_only_once_its_outcome_is_handed_back() {
    // Given a log with three entries appended and none durable,
    let fs = SimFs::new(2);
    let mut wal = Wal::open(fs.clone(), "/d", WalConfig::default()).unwrap();
    wal.append(&entries(1..=3, 1)).unwrap();
    // when its fsync is taken out and run on another thread,
    let pending = wal
        .begin_sync()
        .unwrap()
        .expect("three entries await their fsync");
    assert_eq!(pending.upto(), 3);
    let upto = pending.upto();
    let outcome = std::thread::spawn(move || pending.run()).join().unwrap();
    // then nothing counts as durable until the outcome is handed back,
    assert_eq!(wal.durable_index(), 0);
    assert_eq!(wal.finish_sync(upto, outcome).unwrap(), 3);
    assert_eq!(wal.durable_index(), 3);
    // One fsync made three records durable, and the metrics say so.
    let metrics = wal.metrics().snapshot();
    assert_eq!(
        (metrics.batch_records.count, metrics.batch_records.sum),
        (1, 3)
    );
    // and with everything durable there is no fsync left to take out.
    assert!(wal.begin_sync().unwrap().is_none());
    // The entries survive a crash: the fsync reached the disk.
    drop(wal);
    let _ = fs.crash();
    let wal = Wal::open(fs, "/d", WalConfig::default()).unwrap();
    assert_eq!(wal.last_index(), 3);
}

#[test]
fn a_failed_fsync_run_on_another_thread_poisons_the_log_like_a_failed_sync() {
    let fs = SimFs::new(4);
    let mut wal = Wal::open(fs.clone(), "/d", WalConfig::default()).unwrap();
    wal.append(&entries(1..=2, 1)).unwrap();
    fs.fail_next_syncs(1);
    let pending = wal
        .begin_sync()
        .unwrap()
        .expect("two entries await their fsync");
    let upto = pending.upto();
    let outcome = std::thread::spawn(move || pending.run()).join().unwrap();
    assert!(outcome.is_err());
    let err = wal.finish_sync(upto, outcome).unwrap_err();
    assert!(matches!(err, WalError::Poisoned(_)), "{err}");
    assert_eq!(wal.durable_index(), 0);
    assert!(matches!(wal.begin_sync(), Err(WalError::Poisoned(_))));
    assert!(matches!(
        wal.append(&entries(3..=3, 1)),
        Err(WalError::Poisoned(_))
    ));
}

#[test]
fn a_segment_larger_than_one_scan_chunk_recovers_whole_and_loses_only_its_torn_tail() {
    // Given one segment of about 10 MiB, read back in several chunks on reopen (the read-ahead
    // path of recovery),
    let dir = tempfile::tempdir().unwrap();
    let big = |index: u64| vec![(index % 251) as u8; 1000];
    let count = 10_000u64;
    {
        let mut wal = Wal::open(RealFs, dir.path(), WalConfig::default()).unwrap();
        let batch: Vec<Entry> = (1..=count)
            .map(|index| Entry {
                index,
                term: 1 + index / 3000,
                payload: big(index),
            })
            .collect();
        wal.append(&batch).unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.segment_count(), 1);
    }
    let check = |last: u64| {
        let wal = Wal::open(RealFs, dir.path(), WalConfig::default()).unwrap();
        assert_eq!(wal.last_index(), last);
        for e in wal.read(1, last + 1).unwrap() {
            assert_eq!(e.payload, big(e.index), "entry {}", e.index);
            assert_eq!(e.term, 1 + e.index / 3000);
        }
    };
    // when it is reopened, then every entry is there;
    check(count);
    // and when the last record is cut short, then only that record is lost.
    let seg = dir.path().join("00000000000000000001.wal");
    let len = std::fs::metadata(&seg).unwrap().len();
    assert!(len > 2 * wal::segment::SCAN_CHUNK_BYTES as u64);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    check(count - 1);
}

/// A log on the real file system with entries 1..=10 appended and synced: its directory, its
/// one segment's path, and the log.
fn real_log_with_ten_entries() -> (tempfile::TempDir, std::path::PathBuf, Wal<RealFs>) {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("00000000000000000001.wal");
    let mut wal = Wal::open(RealFs, dir.path(), WalConfig::default()).unwrap();
    wal.append(&entries(1..=10, 1)).unwrap();
    wal.sync().unwrap();
    (dir, seg, wal)
}

#[test]
fn space_is_reserved_ahead_of_appends_and_a_reserved_tail_left_by_a_crash_is_not_damage() {
    // Given a log on the real file system with a few entries appended and synced,
    let (dir, seg, wal) = real_log_with_ten_entries();
    // then the active segment holds reserved space past its records while the log is open,
    let open_len = std::fs::metadata(&seg).unwrap().len();
    assert!(
        open_len >= wal::PREALLOCATE_BYTES,
        "reserved up to {open_len}"
    );
    // and a log closed in order ends with its last record again.
    drop(wal);
    let data_len = std::fs::metadata(&seg).unwrap().len();
    assert!(data_len < open_len);

    // When a crash leaves the reserved tail in place (zeros after the last record),
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    file.set_len(data_len + 100_000).unwrap();
    drop(file);
    // then recovery keeps every entry and keeps appending after the last one.
    let mut wal = Wal::open(RealFs, dir.path(), WalConfig::default()).unwrap();
    assert_eq!(wal.last_index(), 10);
    assert_holds(&wal, 1, 10);
    wal.append(&entries(11..=12, 1)).unwrap();
    wal.sync().unwrap();
    drop(wal);

    // When a record was torn inside reserved space (its first bytes written, zeros after),
    let data_len = std::fs::metadata(&seg).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    file.set_len(data_len + 100_000).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"RKVR\x01", data_len).unwrap();
    drop(file);
    // then only the torn record is dropped, and the log goes on from there.
    let mut wal = Wal::open(RealFs, dir.path(), WalConfig::default()).unwrap();
    assert_eq!(wal.last_index(), 12);
    assert_holds(&wal, 1, 12);
    wal.append(&entries(13..=13, 2)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(RealFs, dir.path(), WalConfig::default()).unwrap();
    assert_holds(&wal, 1, 13);
}

/// Where the first hole at or after `offset` in `path` starts (`SEEK_HOLE`; the file's end
/// when there is none). ext4 reports `fallocate`d blocks that nothing has written yet as a
/// hole, and written blocks, zeros or not, as data. Asked in-process: a child process (such as
/// `filefrag`) would hold a copy of every descriptor of the test binary while it starts, the
/// other tests' directory locks among them, and make their reopens fail as `Locked`.
fn first_hole_at_or_after(path: &Path, offset: u64) -> u64 {
    let file = std::fs::File::open(path).unwrap();
    rustix::fs::seek(&file, rustix::fs::SeekFrom::Hole(offset)).unwrap()
}

#[test]
fn reserved_space_is_written_zeros_so_an_appends_fsync_writes_no_extent_change() {
    // Given a log on the real file system whose active segment has space reserved ahead,
    let (dir, seg, mut wal) = real_log_with_ten_entries();
    let len = std::fs::metadata(&seg).unwrap().len();
    assert!(len >= wal::PREALLOCATE_BYTES);
    // then all of it has been written, none of it only fallocated: on ext4 the first write into
    // a fallocated block changes the inode, which every append's fdatasync would then have to
    // write as well. (Asked before anything reads the file: read pages count as data.)
    assert_eq!(
        first_hole_at_or_after(&seg, 0),
        len,
        "a hole (space never written) in {}",
        seg.display()
    );
    // and its far end reads as zeros.
    let reserved = std::fs::read(&seg).unwrap();
    let tail = &reserved[reserved.len() - wal::PREALLOCATE_BYTES as usize / 2..];
    assert!(tail.iter().all(|&b| b == 0));
    // When more entries land in the reserved space, the log reads them all back after a reopen.
    wal.append(&entries(11..=200, 1)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(RealFs, dir.path(), WalConfig::default()).unwrap();
    assert_holds(&wal, 1, 200);
}

#[test]
fn a_sealed_segment_gives_back_its_reserved_space() {
    // Given small segments, when the log rotates several times,
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(RealFs, dir.path(), small_segments()).unwrap();
    for lo in (1..=400).step_by(20) {
        wal.append(&entries(lo..=lo + 19, 1)).unwrap();
        wal.sync().unwrap();
    }
    assert!(wal.segment_count() > 2);
    // then each sealed segment is exactly as long as its records: reopening finds no tail.
    let mut names = RealFs.list_files(dir.path()).unwrap();
    names.retain(|n| n.ends_with(".wal"));
    names.sort();
    let active = names.pop().unwrap();
    for name in &names {
        let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(len <= 4096 + 200, "{name} is {len} bytes");
    }
    drop(wal);
    let wal = Wal::open(RealFs, dir.path(), small_segments()).unwrap();
    assert_holds(&wal, 1, 400);
    assert!(dir.path().join(active).exists());
}

/// A killed process leaves its last appends in the page cache, unsynced. The reopened log
/// counts whatever it finds as durable (a node then acknowledges it), so the reopen must put
/// it on disk: a power loss after the reopen loses none of it.
#[test]
fn entries_a_killed_process_never_synced_are_synced_by_the_reopen_that_counts_them_durable() {
    for seed in 0..16 {
        // Given a log whose process appended entries 1..=40, synced only 1..=10, and was
        // killed (its handles gone, the disk's cache intact),
        let fs = SimFs::new(seed);
        {
            let mut wal = Wal::open(fs.clone(), "/w", WalConfig::default()).unwrap();
            wal.append(&entries(1..=10, 1)).unwrap();
            wal.sync().unwrap();
            wal.append(&entries(11..=40, 1)).unwrap();
        }
        // when the log is reopened, it counts all forty durable,
        {
            let wal = Wal::open(fs.clone(), "/w", WalConfig::default()).unwrap();
            assert_eq!((wal.last_index(), wal.durable_index()), (40, 40));
        }
        // then the power fails, and all forty are still there.
        fs.crash();
        let wal = Wal::open(fs, "/w", WalConfig::default()).unwrap();
        assert_eq!(wal.last_index(), 40, "seed {seed}");
        assert_holds(&wal, 1, 40);
    }
}
