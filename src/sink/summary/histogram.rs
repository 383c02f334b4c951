//! The duration histogram: how the summary's percentiles are approximated
//! where the storage has no exact percentile (in memory, in SQLite, and on the
//! default path over [`UsageSink::query`](crate::UsageSink::query)).
//!
//! Durations up to [`EXACT_UP_TO`] µs each have a bin of their own. Above it,
//! bin `k` holds the durations in `(128·γ^(k-1), 128·γ^k]` with γ = 1.01, and
//! stands for the whole number nearest to `128·2γ^k/(γ+1)` (the point within
//! 1/201 of both ends), moved into the bin if it falls out. A reported
//! percentile is within 1/201 + 0.5/128 < 0.9% of the exact one (the bin's
//! width, plus rounding to a whole microsecond), and never above the exact
//! maximum. A bin is a small number, so a summary holds at most a few hundred
//! per bucket in practice (about 1,700 span 128 µs to 1,000 s), whatever the
//! number of records; and SQLite computes the same bin in SQL (`GROUP BY` the
//! bin), so every sink without exact percentiles answers alike.

use std::collections::BTreeMap;

use super::output::DurationStats;

/// Durations up to this many microseconds are counted exactly.
pub(crate) const EXACT_UP_TO: u64 = 128;

/// The ratio of a bin's upper bound to its lower bound, above [`EXACT_UP_TO`].
const GAMMA: f64 = 1.01;

/// The bin of a duration in microseconds.
pub(crate) fn bin(duration_us: u64) -> u32 {
    if duration_us <= EXACT_UP_TO {
        return duration_us as u32;
    }
    let k = ((duration_us as f64 / EXACT_UP_TO as f64).ln() / GAMMA.ln()).ceil();
    // At least 1 past the exact bins, whatever the rounding of `ln`.
    EXACT_UP_TO as u32 + (k as u32).max(1)
}

/// The duration a bin stands for: one within its bounds, within 0.9% of each
/// of them.
pub(crate) fn value(bin: u32) -> u64 {
    let bin = u64::from(bin);
    if bin <= EXACT_UP_TO {
        return bin;
    }
    let k = (bin - EXACT_UP_TO) as i32;
    let base = EXACT_UP_TO as f64;
    let upper = base * GAMMA.powi(k);
    let lower = base * GAMMA.powi(k - 1);
    let mid = (base * 2.0 * GAMMA.powi(k) / (GAMMA + 1.0)).round();
    // The whole numbers in (lower, upper]: `mid` rounded may sit just outside.
    let lo = lower.floor() + 1.0;
    let hi = upper.floor().max(lo);
    let v = mid.clamp(lo, hi);
    if v >= u64::MAX as f64 {
        u64::MAX
    } else {
        v as u64
    }
}

/// Counts per duration bin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Histogram {
    bins: BTreeMap<u32, u64>,
    count: u64,
}

impl Histogram {
    /// Counts one duration.
    #[cfg(test)]
    pub(crate) fn add(&mut self, duration_us: u64) {
        self.add_bin(bin(duration_us), 1);
    }

    /// Counts `n` durations of `bin` (a row of a `GROUP BY` the bin).
    pub(crate) fn add_bin(&mut self, bin: u32, n: u64) {
        *self.bins.entry(bin).or_default() += n;
        self.count += n;
    }

    /// The `percent`th percentile by nearest rank: the value of the
    /// `ceil(percent/100 · n)`th duration in ascending order (the definition of
    /// PostgreSQL's `percentile_disc`), as its bin's value, at most `max`.
    /// `0` when nothing was counted.
    pub(crate) fn percentile(&self, percent: u64, max: u64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = nearest_rank(percent, self.count);
        let mut seen = 0u64;
        for (&bin, &n) in &self.bins {
            seen += n;
            if seen >= rank {
                return value(bin).min(max);
            }
        }
        max
    }

    /// p50, p95, p99 and the exact `max`.
    pub(crate) fn stats(&self, max: u64) -> DurationStats {
        DurationStats {
            p50: self.percentile(50, max),
            p95: self.percentile(95, max),
            p99: self.percentile(99, max),
            max,
        }
    }
}

/// `ceil(percent/100 · n)`, at least 1: the 1-based rank of a percentile.
pub(crate) fn nearest_rank(percent: u64, n: u64) -> u64 {
    let rank = (u128::from(percent) * u128::from(n)).div_ceil(100);
    u64::try_from(rank).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_is_within_the_documented_error_of_its_bin() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut samples: Vec<u64> = (0..=5_000u64).collect();
        samples.extend((0..20_000).map(|_| rng.u64(..10_000_000)));
        samples.extend((0..2_000).map(|_| rng.u64(..)));
        samples.extend([u64::MAX, u64::MAX - 1, 1 << 53]);
        for d in samples {
            let v = value(bin(d));
            let err = (v as f64 - d as f64).abs() / (d.max(1) as f64);
            assert!(err < 0.009, "{d} µs is shown as {v} ({:.4}%)", err * 100.0);
        }
        for d in 0..=EXACT_UP_TO {
            assert_eq!(value(bin(d)), d);
        }
    }

    #[test]
    fn bins_grow_with_durations() {
        let mut last = 0;
        for d in (0..1_000_000u64).step_by(7) {
            let b = bin(d);
            assert!(b >= last, "{d}");
            last = b;
        }
        // 128 µs to 1,000 s in about 1,700 bins.
        assert!(bin(1_000_000_000) < 1_800, "{}", bin(1_000_000_000));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut h = Histogram::default();
        for d in 1..=100 {
            h.add(d);
        }
        assert_eq!(
            h.stats(100),
            DurationStats {
                p50: 50,
                p95: 95,
                p99: 99,
                max: 100
            }
        );
        assert_eq!(nearest_rank(50, 1), 1);
        assert_eq!(nearest_rank(99, 1001), 991);
        assert_eq!(Histogram::default().stats(0), DurationStats::default());
        // Never above the exact maximum.
        let mut h = Histogram::default();
        h.add(1_000_003);
        assert_eq!(
            h.percentile(50, 1_000_003),
            1_000_003.min(value(bin(1_000_003)))
        );
    }
}
