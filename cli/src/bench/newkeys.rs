//! Keys for the growing-keyspace workload (`--workload write-new`): every write a key that no
//! earlier write of the run used, spread over the keyspace rather than appended at one end.
//!
//! Layout of a key: [`NEW_KEY_MARK`], the run tag in [`RUN_TAG_HEX_DIGITS`] lowercase hex
//! digits, then the scrambled counter in hex, zero-padded to fill `key_size` bytes
//! (`n1f3a9c0004b7e21d5` has run tag `1f3a9c`).
//!
//! Invariants:
//! - within a run, counter `i` maps to one key and distinct counters to distinct keys: the
//!   scramble is a bijection on `bits` bits and every counter below [`NewKeys::capacity`]
//!   fits in them;
//! - keys of two runs differ in the run tag, so runs with distinct tags never overwrite each
//!   other's keys; a run's keys are exactly those under [`NewKeys::prefix`];
//! - consecutive counters land far apart in byte order, so a run inserts all over its
//!   range instead of at one hot end.

use std::hash::{BuildHasher, Hasher};

use bytes::Bytes;
use util::splitmix::MIX_MULTIPLIERS;

/// First byte of every key of the write-new workload, so its keys never meet the fixed
/// keyspace's (`k...`).
pub const NEW_KEY_MARK: u8 = b'n';
/// Hex digits of the run tag: 2^24 tags, so two random runs collide about once in 16
/// million.
pub const RUN_TAG_HEX_DIGITS: usize = 6;
/// Largest run tag.
pub const RUN_TAG_MAX: u32 = (1 << (4 * RUN_TAG_HEX_DIGITS)) - 1;
/// Fewest hex digits left for the counter: 2^32 keys per run, more than any run reaches.
pub const COUNTER_HEX_DIGITS_MIN: usize = 8;
/// The shortest key the workload can make.
pub const NEW_KEY_BYTES_MIN: usize = 1 + RUN_TAG_HEX_DIGITS + COUNTER_HEX_DIGITS_MIN;

/// Makes the keys of one write-new run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKeys {
    prefix: String,
    digits: usize,
    bits: u32,
}

impl NewKeys {
    /// Keys of `key_size` bytes for the run tagged `run_tag`; `None` when `key_size` is under
    /// [`NEW_KEY_BYTES_MIN`] or `run_tag` over [`RUN_TAG_MAX`].
    pub fn new(run_tag: u32, key_size: usize) -> Option<NewKeys> {
        if key_size < NEW_KEY_BYTES_MIN || run_tag > RUN_TAG_MAX {
            return None;
        }
        let digits = key_size - 1 - RUN_TAG_HEX_DIGITS;
        let bits = u32::try_from(digits.min(16) * 4).expect("invariant: at most 64");
        Some(NewKeys {
            prefix: format!(
                "{}{run_tag:0w$x}",
                NEW_KEY_MARK as char,
                w = RUN_TAG_HEX_DIGITS
            ),
            digits,
            bits,
        })
    }

    /// What every key of the run starts with: the mark and the run tag.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many distinct keys the run can make (counters `0..capacity`).
    pub fn capacity(&self) -> u64 {
        if self.bits >= 64 {
            u64::MAX
        } else {
            1 << self.bits
        }
    }

    /// The key of counter `counter` (which must be below [`NewKeys::capacity`] to be unique).
    pub fn key(&self, counter: u64) -> Bytes {
        let scrambled = scramble(counter, self.bits);
        Bytes::from(format!(
            "{}{scrambled:0digits$x}",
            self.prefix,
            digits = self.digits
        ))
    }
}

/// A bijection on the integers below 2^bits (bits in 2..=64) that sends neighbours far
/// apart: multiplications by odd constants and right xorshifts, each invertible modulo
/// 2^bits (the multipliers are SplitMix64's output mix).
fn scramble(x: u64, bits: u32) -> u64 {
    let mask = if bits >= 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    };
    let shift = bits / 2;
    let mut x = x & mask;
    x = x.wrapping_mul(MIX_MULTIPLIERS[0]) & mask;
    x ^= x >> shift;
    x = x.wrapping_mul(MIX_MULTIPLIERS[1]) & mask;
    x ^= x >> shift;
    x
}

/// A run tag that differs between runs: from the process's random hasher keys (std seeds
/// them from the OS), the clock and the pid.
pub fn random_run_tag() -> u32 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    u32::try_from(hasher.finish() & u64::from(RUN_TAG_MAX)).expect("invariant: masked to 24 bits")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_scramble_is_a_bijection() {
        // Given every integer of a small width, when scrambled, then no two collide and
        // each stays in range.
        for bits in [2, 5, 12, 16] {
            let outputs: HashSet<u64> = (0..1u64 << bits).map(|x| scramble(x, bits)).collect();
            assert_eq!(outputs.len(), 1 << bits, "bits {bits}");
            assert!(outputs.iter().all(|&y| y < 1 << bits));
        }
    }

    #[test]
    fn keys_have_the_asked_size_the_run_prefix_and_are_distinct() {
        // Given the default 16-byte keys, then each key is 16 bytes under the run's prefix,
        // and a million consecutive counters give a million keys.
        let keys = NewKeys::new(0x1f3a9c, 16).expect("valid");
        assert_eq!(keys.prefix(), "n1f3a9c");
        assert_eq!(keys.capacity(), 1 << 36);
        let mut seen = HashSet::new();
        for counter in 0..1_000_000 {
            let key = keys.key(counter);
            assert_eq!(key.len(), 16);
            assert!(key.starts_with(b"n1f3a9c"));
            assert!(seen.insert(key), "counter {counter} repeats a key");
        }
        // another run's keys never meet this one's
        let other = NewKeys::new(0x1f3a9d, 16).expect("valid");
        assert!((0..1000).all(|c| !seen.contains(&other.key(c))));
    }

    #[test]
    fn consecutive_counters_spread_over_the_keyspace() {
        // Given the first 1,600 counters, then the first hex digit after the prefix takes all
        // sixteen values about equally: the run is not appending at one end.
        let keys = NewKeys::new(7, 16).expect("valid");
        let mut hits = [0u32; 16];
        for counter in 0..1600 {
            let key = keys.key(counter);
            let digit = (key[1 + RUN_TAG_HEX_DIGITS] as char)
                .to_digit(16)
                .expect("hex");
            hits[digit as usize] += 1;
        }
        assert!(hits.iter().all(|&h| (60..140).contains(&h)), "{hits:?}");
    }

    #[test]
    fn long_keys_pad_and_short_keys_or_big_tags_are_refused() {
        let keys = NewKeys::new(1, 40).expect("valid");
        assert_eq!(keys.key(3).len(), 40);
        assert_eq!(keys.capacity(), u64::MAX);
        assert_eq!(NewKeys::new(1, NEW_KEY_BYTES_MIN - 1), None);
        assert!(NewKeys::new(1, NEW_KEY_BYTES_MIN).is_some());
        assert_eq!(NewKeys::new(RUN_TAG_MAX + 1, 16), None);
        assert!(random_run_tag() <= RUN_TAG_MAX);
    }
}
