//! A real-disk crash test: a child process appends as the Raft node does (a batch per
//! `append`, its fsync run on another thread) and reports every index the log told it was
//! durable; the parent kills it with SIGKILL at a random moment,
//! reopens the directory and requires every reported entry to be there, byte for byte.
//!
//! The child is this same test binary, re-executed with [`CHILD_DIR_ENV`] set: the test
//! [`child_entry_point`] does nothing in a normal run and becomes the appender in the child.
//! SIGKILL leaves the kernel's page cache intact, so this checks the log's own ordering
//! (write, sync, then report) and its recovery of the half-written batch a kill leaves
//! behind; power loss is the model test's job, on `SimFs`.
//!
//! The seed of the kill schedule is printed; `WAL_CRASH_SEED=<n>` replays the same schedule
//! (the kill moments are the same; how far the child got by then is up to the OS).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use util::SplitMix64;
use wal::{Entry, RealFs, Wal, WalConfig};

/// Set in the child's environment to the data directory it appends to.
const CHILD_DIR_ENV: &str = "WAL_CRASH_CHILD_DIR";
/// Set in the child's environment to the term its entries carry (one per round, increasing).
const CHILD_TERM_ENV: &str = "WAL_CRASH_CHILD_TERM";
/// The largest batch the child appends at once (a busy node's `Ready` holds tens of entries).
const CHILD_BATCH_MAX: u64 = 64;
/// Kill-and-reopen rounds per run.
const ROUNDS: u64 = 6;
/// Small segments, so kills land around rotations too.
const SEGMENT_BYTES: u64 = 64 * 1024;
/// The latest a kill may come after the child's first report.
const KILL_AFTER_MAX: Duration = Duration::from_millis(120);

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: SEGMENT_BYTES,
    }
}

/// The payload a child writes for (term, slot in its batch, batch number): self-describing, so
/// the parent can check any entry it finds without having seen the child's report for it.
fn payload(term: u64, thread: u64, seq: u64) -> Vec<u8> {
    let head = format!("term={term} thread={thread} seq={seq};");
    let mut bytes = head.into_bytes();
    // Pad to about 100 bytes, the size the benchmarks use, with bytes derived from the head.
    let fill = (term ^ thread ^ seq) as u8;
    bytes.resize(100, fill);
    bytes
}

fn parse_payload(bytes: &[u8]) -> Option<(u64, u64, u64)> {
    let end = bytes.iter().position(|&b| b == b';')?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut fields = head
        .split(' ')
        .map(|f| f.split_once('=').map(|(_, v)| v.parse::<u64>()));
    let term = fields.next()??.ok()?;
    let thread = fields.next()??.ok()?;
    let seq = fields.next()??.ok()?;
    (payload(term, thread, seq) == bytes).then_some((term, thread, seq))
}

/// The child's work, done the way the Raft node persists: batch after batch (1 to
/// [`CHILD_BATCH_MAX`] entries, like one `Ready`), each written with one `append`, its fsync
/// run on another thread (the node runs it on tokio's blocking pool) and handed back with
/// `finish_sync`; only then a `durable <index> <term> <slot> <batch>` line for each entry.
#[test]
fn child_entry_point() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return; // A normal test run: this test is only the child's entry point.
    };
    let term: u64 = std::env::var(CHILD_TERM_ENV)
        .expect("the parent sets the term with the directory")
        .parse()
        .expect("the parent passes a decimal term");
    let mut wal = Wal::open(RealFs, &dir, config()).expect("the child opens the log");
    let mut sizes = SplitMix64::new(term);
    let mut out = std::io::stdout().lock();
    for batch in 0.. {
        let first = wal.last_index() + 1;
        let size = 1 + sizes.below(CHILD_BATCH_MAX);
        let entries: Vec<Entry> = (0..size)
            .map(|slot| Entry {
                index: first + slot,
                term,
                payload: payload(term, slot, batch),
            })
            .collect();
        wal.append(&entries).expect("append on a healthy disk");
        let pending = wal
            .begin_sync()
            .expect("a healthy log")
            .expect("an appended batch awaits its fsync");
        let upto = pending.upto();
        let outcome = thread::scope(|scope| {
            scope
                .spawn(|| pending.run())
                .join()
                .expect("the fsync thread does not panic")
        });
        let durable = wal
            .finish_sync(upto, outcome)
            .expect("fsync on a healthy disk");
        assert!(durable >= upto);
        for entry in &entries {
            writeln!(
                out,
                "durable {} {term} {} {batch}",
                entry.index,
                entry.index - first
            )
            .expect("stdout is the parent's pipe");
        }
        out.flush().expect("stdout is the parent's pipe");
    }
}

/// Runs one child until killed; returns the reports it printed: index → (term, thread, seq).
fn run_child_until_killed(
    dir: &Path,
    term: u64,
    kill_after: Duration,
) -> BTreeMap<u64, (u64, u64, u64)> {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_entry_point",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_TERM_ENV, term.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child appender");
    let stdout = child.stdout.take().expect("stdout was piped");
    let (first_tx, first_rx) = mpsc::channel::<()>();
    let reader = thread::spawn(move || {
        let mut reports = BTreeMap::new();
        let mut first = Some(first_tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let fields: Vec<&str> = line.split(' ').collect();
            // A line cut by the kill has fewer fields or no newline; BufRead yields it only at
            // EOF, and a short one is ignored here (the child never reported it completely).
            if fields.len() != 5 || fields[0] != "durable" {
                continue;
            }
            let parsed: Option<Vec<u64>> = fields[1..].iter().map(|f| f.parse().ok()).collect();
            let Some(v) = parsed else { continue };
            reports.insert(v[0], (v[1], v[2], v[3]));
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
        }
        reports
    });
    // Kill only once the child is really appending, so every round tests something.
    first_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the child reports its first durable append within 30 s");
    thread::sleep(kill_after);
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    reader.join().expect("the report reader does not panic")
}

#[test]
fn every_index_reported_durable_survives_sigkill() {
    let seed = std::env::var("WAL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("the clock is after 1970")
                .as_nanos() as u64
        });
    println!(
        "kill schedule seed {seed}; replay with WAL_CRASH_SEED={seed} cargo test -p wal --test crash_kill"
    );
    let mut rng = SplitMix64::new(seed);
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("wal");
    let mut all_reported: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for round in 0..ROUNDS {
        let term = round + 1;
        let kill_after = Duration::from_micros(rng.next_u64() % KILL_AFTER_MAX.as_micros() as u64);
        let reports = run_child_until_killed(&dir, term, kill_after);
        assert!(
            !reports.is_empty(),
            "round {round}: the child reported nothing"
        );

        // Given a log whose writer died mid-flight, when it is reopened, then every index any
        // child ever reported durable holds exactly what that child wrote.
        let wal = Wal::open(RealFs, &dir, config()).unwrap_or_else(|e| {
            panic!("round {round} (seed {seed}): reopen after SIGKILL failed: {e}")
        });
        wal.check_invariants().expect("the WAL invariants hold");
        all_reported.extend(reports);
        let (&max_reported, _) = all_reported
            .last_key_value()
            .expect("reports are not empty");
        assert!(
            wal.last_index() >= max_reported,
            "round {round} (seed {seed}): last index {} below the reported durable index {max_reported}",
            wal.last_index()
        );
        let entries = wal
            .read(wal.first_index(), wal.last_index() + 1)
            .expect("read back the recovered log");
        let mut prev_term = 0;
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                wal.first_index() + i as u64,
                "indexes are contiguous"
            );
            // Nothing invented: every recovered entry is one some child wrote, in its round's term.
            let found = parse_payload(&entry.payload).unwrap_or_else(|| {
                panic!(
                    "round {round} (seed {seed}): entry {} holds bytes no child wrote",
                    entry.index
                )
            });
            assert_eq!(
                found.0, entry.term,
                "entry {} term matches its payload",
                entry.index
            );
            assert!(entry.term >= prev_term, "terms never step back");
            prev_term = entry.term;
            if let Some(reported) = all_reported.get(&entry.index) {
                assert_eq!(
                    *reported, found,
                    "round {round} (seed {seed}): entry {} is not what was reported durable",
                    entry.index
                );
            }
        }
        println!(
            "round {round}: killed after {kill_after:?}, {} reports, log {}..={} in {} segments",
            all_reported.len(),
            wal.first_index(),
            wal.last_index(),
            wal.segment_count()
        );
        // Entries past the highest report were written but never acknowledged: the next child
        // appends after them, which is the Raft driver's situation too.
    }
}
