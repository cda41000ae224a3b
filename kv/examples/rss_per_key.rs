//! Builds a store of 1,000,000 keys (16-byte keys, 100-byte values) through `apply`, as a
//! node does, and prints the resident memory per key, so the figure in issue 12 (at most
//! 350 bytes of RSS per key for the whole node) can be checked for the state machine alone.
//!
//! Run with `cargo run --release -p kv --example rss_per_key [keys]`. Reads `/proc/self/statm`
//! (Linux only); pages are taken to be `PAGE_BYTES`.

use std::time::Instant;

use kv::{Command, KvConfig, KvStore};

/// Keys written when no count is given on the command line.
const KEYS_DEFAULT: u64 = 1_000_000;

/// Value size, in bytes, as in the workload.
const VALUE_BYTES: usize = 100;

/// Size of a memory page as `/proc/self/statm` counts it (4 KiB on x86-64 and on most
/// aarch64 kernels).
const PAGE_BYTES: u64 = 4096;

fn rss_bytes() -> Result<u64, String> {
    let statm = std::fs::read_to_string("/proc/self/statm")
        .map_err(|e| format!("read /proc/self/statm: {e}"))?;
    let resident = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse::<u64>().ok())
        .ok_or_else(|| format!("unexpected /proc/self/statm: {statm:?}"))?;
    Ok(resident * PAGE_BYTES)
}

/// CPU time (user and system) this process has used, in seconds: unlike wall time it does
/// not grow when other processes share the machine. `/proc/self/stat` counts it in clock
/// ticks of `CLOCK_TICKS_PER_SECOND`.
fn cpu_seconds() -> Result<f64, String> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| format!("read /proc/self/stat: {e}"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("unexpected /proc/self/stat: {stat:?}"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok((user + system) as f64 / CLOCK_TICKS_PER_SECOND),
        _ => Err(format!("unexpected /proc/self/stat: {stat:?}")),
    }
}

/// Clock ticks per second in `/proc/self/stat` (`USER_HZ`, 100 on Linux).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

fn main() -> Result<(), String> {
    let keys = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse::<u64>()
            .map_err(|e| format!("key count {arg:?}: {e}"))?,
        None => KEYS_DEFAULT,
    };
    let before = rss_bytes()?;
    let cpu_started = cpu_seconds()?;
    let started = Instant::now();
    let mut store = KvStore::new(KvConfig::default());
    let value = vec![b'v'; VALUE_BYTES];
    for i in 0..keys {
        // "key-" and twelve digits: 16 bytes, increasing like a growing keyspace. Encoded
        // here, one at a time, as entries reach a node, so no other large buffer is live.
        let entry = Command::put(format!("key-{i:012}"), value.clone()).encode();
        store
            .apply(i + 1, &entry)
            .map_err(|e| format!("apply {i}: {e}"))?;
    }
    let built = started.elapsed();
    let built_cpu = cpu_seconds()? - cpu_started;
    let after = rss_bytes()?;
    let store_bytes = after.saturating_sub(before).max(1);
    let started = Instant::now();
    let view = store.view();
    let view_taken = started.elapsed();
    let kvs: Vec<_> = view.kvs().collect();
    let cpu_started = cpu_seconds()?;
    let rebuilt = KvStore::from_sorted(
        KvConfig::default(),
        view.applied_index(),
        view.revision(),
        kvs.into_iter(),
        view.sessions(),
    )
    .map_err(|e| format!("from_sorted: {e}"))?;
    let rebuilt_cpu = cpu_seconds()? - cpu_started;
    let per_op = |seconds: f64| seconds * 1e9 / keys.max(1) as f64;
    println!(
        "{keys} keys ({VALUE_BYTES}-byte values) encoded and applied in {:.2} s wall, {:.2} s CPU ({:.0} ns CPU per put); data_bytes {}",
        built.as_secs_f64(),
        built_cpu,
        per_op(built_cpu),
        store.data_bytes()
    );
    println!(
        "RSS after building {:.1} MiB ({} bytes/key); the store alone {:.1} MiB ({} bytes/key)",
        after as f64 / (1024.0 * 1024.0),
        after / keys.max(1),
        store_bytes as f64 / (1024.0 * 1024.0),
        store_bytes / keys.max(1)
    );
    println!(
        "from_sorted of {} keys: {:.2} s CPU ({:.0} ns per key)",
        rebuilt.len(),
        rebuilt_cpu,
        per_op(rebuilt_cpu)
    );
    println!(
        "view() of {} keys took {} ns",
        view.len(),
        view_taken.as_nanos()
    );
    Ok(())
}
