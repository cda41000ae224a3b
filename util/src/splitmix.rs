//! SplitMix64 (Steele, Lea and Flood, 2014): the seeded generator behind every random choice
//! RaftKV makes where a run must replay from its seed: election jitter in the Raft core, crash
//! schedules of the simulated disk, faults and workloads of the simulations and Jepsen-style
//! runs, forged frames in the hostile-peer tests.
//!
//! Why not the `rand` crate: the pure core may not depend on it, only a handful of draws are
//! needed, and the sequence must be the same for one seed on every platform and in every
//! version, which a crate we do not control cannot promise.
//!
//! Invariant: the same seed gives the same sequence of draws, forever; the draws of
//! [`SplitMix64::below`], [`SplitMix64::fork`], [`SplitMix64::shuffle`] and the other helpers
//! are fixed functions of [`SplitMix64::next_u64`]. Seeds recorded in docs and tests depend on
//! it; `the_first_draws_of_a_seed_never_change` pins them.

use std::time::Duration;

/// What the state advances by at each draw: 2^64 divided by the golden ratio, odd, so that the
/// state visits every 64-bit value once per period.
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The two odd multipliers of SplitMix64's output mix (Stafford's "Mix13"), for code that
/// builds another bijection from them (`kvcli`'s write-new key scrambler).
pub const MIX_MULTIPLIERS: [u64; 2] = [0xBF58_476D_1CE4_E5B9, 0x94D0_49BB_1331_11EB];

/// A SplitMix64 generator: 64 bits of state, a period of 2^64. Cheap to clone, which copies
/// the position in the sequence.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose draws depend only on `seed`. `SplitMix64::new(x).next_u64()` is also
    /// a bijection of `x` that sends neighbours far apart (a hash of a counter or a seed).
    #[inline]
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(MIX_MULTIPLIERS[0]);
        z = (z ^ (z >> 27)).wrapping_mul(MIX_MULTIPLIERS[1]);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`. The modulo bias, below `bound / 2^64`, is irrelevant for the
    /// small bounds drawn here.
    ///
    /// # Panics
    /// If `bound` is zero: `0..0` holds no number, and asking for one is a caller's bug.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0): the range 0..0 is empty");
        self.next_u64() % bound
    }

    /// An index into a slice of `len` elements.
    ///
    /// # Panics
    /// If `len` is zero (see [`SplitMix64::below`]).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// A number in `[0, 1)`, from the draw's top 53 bits (every such `f64` equally likely).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A whole number of milliseconds in `[low, high]` (just `low` when `high` is below it).
    pub fn duration_between(&mut self, low: Duration, high: Duration) -> Duration {
        let low_ms = low.as_millis() as u64;
        let high_ms = (high.as_millis() as u64).max(low_ms);
        Duration::from_millis(low_ms + self.below(high_ms - low_ms + 1))
    }

    /// Shuffles `items` in place (Fisher-Yates), every order equally likely.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }

    /// An independent generator for a sub-task (one client, the fault schedule), named by
    /// `stream`, so that adding draws to one sub-task does not shift the draws of another.
    /// Takes one draw from `self`.
    pub fn fork(&mut self, stream: u64) -> SplitMix64 {
        SplitMix64::new(self.next_u64() ^ stream.wrapping_mul(GOLDEN_GAMMA))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_draws_of_a_seed_never_change() {
        // Given the seeds that recorded runs were made with, when drawn from, then the draws are
        // those of every copy this generator replaced (seed 0's are the published SplitMix64
        // reference values).
        let mut zero = SplitMix64::new(0);
        assert_eq!(zero.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(zero.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(zero.next_u64(), 0x06c4_5d18_8009_454f);
        assert_eq!(SplitMix64::new(u64::MAX).next_u64(), 0xe4d9_7177_1b65_2c20);
        let mut eleven = SplitMix64::new(11);
        let draws: Vec<u64> = (0..8).map(|_| eleven.below(10)).collect();
        assert_eq!(draws, [3, 5, 9, 0, 8, 2, 6, 8]);
    }

    #[test]
    fn the_helpers_draw_what_they_always_drew() {
        let mut parent = SplitMix64::new(11);
        let mut child = parent.fork(0xfa17);
        assert_eq!(child.next_u64(), 0xb76f_2252_37f4_5e16);
        assert_eq!(parent.next_u64(), 0x432a_5cd2_7a6b_13a1);

        let mut items = [1, 2, 3, 4, 5, 6, 7, 8];
        SplitMix64::new(7).shuffle(&mut items);
        assert_eq!(items, [2, 5, 6, 3, 7, 1, 4, 8]);

        let mut rng = SplitMix64::new(7);
        let (low, high) = (Duration::from_millis(100), Duration::from_millis(2000));
        let waits: Vec<u128> = (0..4)
            .map(|_| rng.duration_between(low, high).as_millis())
            .collect();
        assert_eq!(waits, [1799, 1031, 480, 1683]);

        let mut rng = SplitMix64::new(7);
        let coins: Vec<bool> = (0..8).map(|_| rng.chance(40)).collect();
        assert_eq!(coins, [false, true, false, true, false, true, false, false]);
        assert_eq!(SplitMix64::new(3).index(5), 3);
    }

    #[test]
    fn draws_stay_in_range_and_a_shuffle_keeps_every_item() {
        let mut rng = SplitMix64::new(1);
        for bound in 1..200 {
            assert!(rng.below(bound) < bound);
        }
        let (low, high) = (Duration::from_millis(5), Duration::from_millis(9));
        for _ in 0..100 {
            let d = rng.duration_between(low, high);
            assert!(low <= d && d <= high, "{d:?}");
        }
        assert_eq!(rng.duration_between(high, low), high);
        let mut items: Vec<u32> = (0..50).collect();
        rng.shuffle(&mut items);
        assert_ne!(
            items,
            (0..50).collect::<Vec<_>>(),
            "50 items rarely stay in order"
        );
        items.sort_unstable();
        assert_eq!(items, (0..50).collect::<Vec<_>>());
    }

    #[test]
    #[should_panic(expected = "below(0)")]
    fn drawing_below_zero_is_a_bug() {
        SplitMix64::new(1).below(0);
    }
}
