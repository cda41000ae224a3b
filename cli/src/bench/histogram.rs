//! A fixed-size, log-linear latency histogram in the manner of HdrHistogram.
//!
//! Job: record millions of latencies in constant memory and answer percentiles with a
//! bounded relative error.
//!
//! Layout: values below 2^[`SIGNIFICANT_BITS`] (128 ns) each have their own bucket; above,
//! every power of two `[2^e, 2^(e+1))` is split into 128 equal buckets, so a bucket's width is
//! at most 1/128 of its values (relative error under 0.8 %). Values are nanoseconds, clamped
//! to [`VALUE_MAX_NS`] (about 68.7 s, longer than any request timeout); the exact minimum,
//! maximum and sum are kept beside the buckets.
//!
//! Memory: [`BUCKETS`] × 8 bytes = 30 KiB per histogram, whatever the number of samples.
//! The load generator keeps one per worker and merges them at the end.
//!
//! Invariants: `count == counts.iter().sum()`; every recorded value `v` lies in
//! `[low(index(v)), high(index(v))]`; a reported percentile is never above the exact
//! maximum and never more than one bucket width above the true value.

/// Bits of precision per power of two: 2^7 = 128 sub-buckets.
pub const SIGNIFICANT_BITS: u32 = 7;
const SUB_BUCKETS: usize = 1 << SIGNIFICANT_BITS;
/// Largest power of two tracked: values of 2^36 ns (about 68.7 s) and more are clamped.
pub const VALUE_MAX_LOG2: u32 = 36;
/// The largest value tracked, in nanoseconds; larger values are recorded as this.
pub const VALUE_MAX_NS: u64 = (1 << VALUE_MAX_LOG2) - 1;
/// Number of buckets.
pub const BUCKETS: usize = (VALUE_MAX_LOG2 - SIGNIFICANT_BITS + 1) as usize * SUB_BUCKETS;

/// A latency histogram of nanosecond values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u64,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

fn index_of(value: u64) -> usize {
    if value < SUB_BUCKETS as u64 {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // ≥ SIGNIFICANT_BITS
    let shift = exponent - SIGNIFICANT_BITS;
    let mantissa = (value >> shift) as usize; // in [128, 256)
    (shift as usize + 1) * SUB_BUCKETS + (mantissa - SUB_BUCKETS)
}

/// The largest value that falls in bucket `index`.
fn high_of(index: usize) -> u64 {
    if index < SUB_BUCKETS {
        return index as u64;
    }
    let shift = (index / SUB_BUCKETS - 1) as u32;
    let mantissa = (index % SUB_BUCKETS + SUB_BUCKETS) as u64;
    let low = mantissa << shift;
    low + (1u64 << shift) - 1
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Records one value in nanoseconds (clamped to [`VALUE_MAX_NS`]).
    pub fn record(&mut self, value_ns: u64) {
        let value = value_ns.min(VALUE_MAX_NS);
        self.counts[index_of(value)] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The smallest value, exactly; `None` when empty.
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    /// The largest value, exactly; `None` when empty.
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// The mean, exactly (up to the clamping); `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The value at `percentile` (0 < p ≤ 100): the smallest bucket bound such that at
    /// least p % of the values are at or below it, capped at the exact maximum. `None` when
    /// empty.
    pub fn percentile(&self, percentile: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        // Integer arithmetic in parts per million: in floating point, 99.9 % of 1000 is
        // 999.000...1, whose ceiling would skip a value.
        let ppm = (percentile.clamp(0.0, 100.0) * 10_000.0).round() as u128;
        let rank = (u128::from(self.count) * ppm).div_ceil(1_000_000);
        let rank = u64::try_from(rank).unwrap_or(u64::MAX).clamp(1, self.count);
        let mut seen = 0;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(high_of(index).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_contain_their_values() {
        assert_eq!(index_of(VALUE_MAX_NS), BUCKETS - 1);
        for index in 1..BUCKETS {
            assert_eq!(
                index_of(high_of(index - 1) + 1),
                index,
                "gap before {index}"
            );
        }
        let mut v = 1u64;
        while v < VALUE_MAX_NS {
            let high = high_of(index_of(v));
            assert!(high >= v);
            // the bucket is at most 1/128 of its values wide
            assert!((high - v) * 128 <= v.max(128), "{v} {high}");
            v = v * 3 / 2 + 1;
        }
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 0..100 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(49));
        assert_eq!(h.percentile(99.0), Some(98));
        assert_eq!(h.percentile(100.0), Some(99));
        assert_eq!(h.min(), Some(0));
        assert_eq!(h.mean(), Some(49.5));
    }

    #[test]
    fn percentiles_are_within_the_relative_error() {
        let mut h = Histogram::new();
        // 1 µs .. 100 ms in 1 µs steps, in a scrambled order
        let n = 100_000u64;
        for i in 0..n {
            let j = (i * 7919) % n;
            h.record((j + 1) * 1_000);
        }
        for (p, exact) in [
            (50.0, 50_000_000u64),
            (95.0, 95_000_000),
            (99.0, 99_000_000),
            (99.9, 99_900_000),
        ] {
            let got = h.percentile(p).expect("not empty");
            assert!(got >= exact, "p{p}: {got} < {exact}");
            assert!(
                (got - exact) as f64 <= exact as f64 / 128.0,
                "p{p}: {got} vs {exact}"
            );
        }
        assert_eq!(h.percentile(100.0), Some(100_000_000));
        assert_eq!(h.max(), Some(100_000_000));
    }

    #[test]
    fn one_slow_request_in_a_thousand_shows_at_p99_9_not_p99() {
        let mut h = Histogram::new();
        for _ in 0..999 {
            h.record(1_000_000);
        }
        h.record(500_000_000);
        assert!(h.percentile(99.0).expect("not empty") < 1_010_000);
        assert!(h.percentile(99.9).expect("not empty") < 1_010_000);
        assert_eq!(h.percentile(99.95), Some(500_000_000));
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for v in (0..5_000u64).map(|i| i * i) {
            if v % 3 == 0 {
                a.record(v)
            } else {
                b.record(v)
            }
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
    }

    #[test]
    fn empty_and_clamped() {
        let h = Histogram::new();
        assert_eq!(
            (h.percentile(50.0), h.min(), h.max(), h.mean()),
            (None, None, None, None)
        );
        let mut h = Histogram::new();
        h.record(u64::MAX);
        assert_eq!(h.max(), Some(VALUE_MAX_NS));
        assert_eq!(h.percentile(50.0), Some(VALUE_MAX_NS));
    }
}
