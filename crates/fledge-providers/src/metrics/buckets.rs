//! Maps a foreign latency histogram (Prometheus' cumulative `le` buckets) onto the
//! fixed bucket ladder of `fledge_stats`.
//!
//! A Prometheus bucket `(lo, hi]` holds `C(hi) - C(lo)` requests. When both `lo` and
//! `hi` are bounds of the fledge ladder (the usual case: the ladder holds 1, 1.2, 1.5,
//! 2, 2.5, 3, 4, 5, 6, 7, 8 × 10ⁿ, so Prometheus' default buckets `.005 .01 .025 .05 .1
//! .25 .5 1 2.5 5 10` and most hand-written ones are all on it) the requests are spread
//! over the ladder buckets between them, so "requests slower than `hi`" is exact.
//! Inside a Prometheus bucket nothing is known about where the requests fell: they are
//! spread in proportion to each ladder bucket's width, which is the same linear
//! interpolation `histogram_quantile` does, so quantiles agree with Prometheus' own.
//! A bound that is not on the ladder splits a ladder bucket the same proportional way
//! (an approximation, within one ladder step of ±10%). Requests in the `+Inf` bucket
//! are put in the ladder bucket just above the highest finite bound (they are known to
//! be slower than it, and no more).

use fledge_stats::{LATENCY_BOUNDS_SECONDS, LatencyHistogram, bucket_index};

/// Converts cumulative `(le, count)` pairs (`le` may be `f64::INFINITY`) into a fledge
/// histogram. `sum_seconds` is the histogram's `_sum` when the source has it; without
/// it the sum is estimated from bucket midpoints.
///
/// Counts are rounded to whole requests; a cumulative count that goes down between
/// two bounds (series scraped at slightly different moments) counts as zero for that
/// bucket. An `le` that is NaN or negative is an error.
pub fn from_cumulative(
    buckets: &[(f64, f64)],
    sum_seconds: Option<f64>,
) -> Result<LatencyHistogram, String> {
    let mut sorted: Vec<(f64, f64)> = buckets.to_vec();
    if let Some((le, _)) = sorted.iter().find(|(le, _)| le.is_nan() || *le < 0.0) {
        return Err(format!("bucket bound le={le} is not a non-negative number"));
    }
    if let Some((le, count)) = sorted.iter().find(|(_, c)| !c.is_finite() || *c < 0.0) {
        return Err(format!("bucket le={le} has count {count}"));
    }
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));

    let mut hist = LatencyHistogram::default();
    let overflow = LATENCY_BOUNDS_SECONDS.len();
    let mut lo = 0.0_f64;
    let mut below = 0.0_f64;
    for &(hi, cumulative) in &sorted {
        let n = (cumulative - below).max(0.0).round() as u64;
        below = below.max(cumulative);
        if n > 0 {
            if hi.is_infinite() {
                hist.counts[above(lo).min(overflow)] += n;
            } else {
                spread(&mut hist.counts, lo, hi, n);
            }
        }
        lo = hi;
    }
    hist.sum_seconds = match sum_seconds {
        Some(s) if s.is_finite() && s >= 0.0 => s,
        _ => estimated_sum(&hist),
    };
    Ok(hist)
}

/// The ladder bucket just above `lo`: requests known to be slower than `lo`.
fn above(lo: f64) -> usize {
    let idx = bucket_index(lo);
    match LATENCY_BOUNDS_SECONDS.get(idx) {
        Some(&b) if (b - lo).abs() <= b * 1e-9 => idx + 1,
        _ => idx,
    }
}

/// Spreads `n` requests over the ladder buckets overlapping `(lo, hi]`, in proportion
/// to the overlap, with largest-remainder rounding so the total stays `n`.
fn spread(counts: &mut [u64], lo: f64, hi: f64, n: u64) {
    let first = bucket_index(lo).min(counts.len() - 1);
    let last = bucket_index(hi).min(counts.len() - 1);
    if first == last || hi <= lo {
        counts[last] += n;
        return;
    }
    let ladder_lo = |j: usize| {
        if j == 0 {
            0.0
        } else {
            LATENCY_BOUNDS_SECONDS[j - 1]
        }
    };
    let ladder_hi = |j: usize| {
        LATENCY_BOUNDS_SECONDS
            .get(j)
            .copied()
            .unwrap_or(f64::INFINITY)
    };
    let width = hi - lo;
    let mut shares: Vec<(usize, f64)> = (first..=last)
        .map(|j| {
            let overlap = (hi.min(ladder_hi(j)) - lo.max(ladder_lo(j))).max(0.0);
            (j, n as f64 * overlap / width)
        })
        .collect();
    let mut given = 0u64;
    for (j, share) in &shares {
        let whole = share.floor() as u64;
        counts[*j] += whole;
        given += whole;
    }
    shares.sort_by(|a, b| (b.1 - b.1.floor()).total_cmp(&(a.1 - a.1.floor())));
    for (j, _) in shares.iter().take(n.saturating_sub(given) as usize) {
        counts[*j] += 1;
    }
}

/// Sum of latencies assuming each request sits in the middle of its bucket.
fn estimated_sum(hist: &LatencyHistogram) -> f64 {
    hist.counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let hi = LATENCY_BOUNDS_SECONDS
                .get(i)
                .copied()
                .unwrap_or(LATENCY_BOUNDS_SECONDS[LATENCY_BOUNDS_SECONDS.len() - 1]);
            let lo = if i == 0 {
                0.0
            } else {
                LATENCY_BOUNDS_SECONDS[i - 1].min(hi)
            };
            c as f64 * (lo + hi) / 2.0
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_BUCKETS: [f64; 11] = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];

    #[test]
    fn prometheus_default_bounds_are_exact() {
        // 100 requests ≤ 100ms, 50 in (100ms, 250ms], 30 in (250ms, 500ms], 20 in (0.5s, 1s].
        let counts = [
            10.0, 20.0, 40.0, 70.0, 100.0, 150.0, 180.0, 200.0, 200.0, 200.0, 200.0,
        ];
        let mut cumulative: Vec<(f64, f64)> = DEFAULT_BUCKETS.into_iter().zip(counts).collect();
        cumulative.push((f64::INFINITY, 200.0));
        let h = from_cumulative(&cumulative, Some(42.0)).unwrap();
        assert_eq!(h.total(), 200);
        assert_eq!(h.count_above(0.5), 20);
        assert_eq!(h.count_above(0.25), 50);
        assert_eq!(h.count_above(0.1), 100);
        assert_eq!(h.sum_seconds, 42.0);
    }

    #[test]
    fn quantile_matches_linear_interpolation() {
        // All 1000 requests in (0.1, 0.5]: histogram_quantile(0.5) would say 0.3.
        let h =
            from_cumulative(&[(0.1, 0.0), (0.5, 1000.0), (f64::INFINITY, 1000.0)], None).unwrap();
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 - 0.3).abs() < 0.01, "p50 {p50}");
        let mean = h.mean().unwrap();
        assert!((mean - 0.3).abs() < 0.01, "estimated mean {mean}");
    }

    #[test]
    fn infinite_bucket_lands_just_above_the_last_bound() {
        let h = from_cumulative(&[(1.0, 10.0), (f64::INFINITY, 15.0)], None).unwrap();
        assert_eq!(h.total(), 15);
        assert_eq!(h.count_above(1.0), 5);
        assert_eq!(h.count_above(1.1), 0);
    }

    #[test]
    fn unsorted_and_decreasing_input_is_tolerated() {
        let h = from_cumulative(&[(f64::INFINITY, 10.0), (0.5, 11.0), (0.1, 4.0)], None).unwrap();
        assert_eq!(h.total(), 11);
        assert!(from_cumulative(&[(f64::NAN, 1.0)], None).is_err());
        assert!(from_cumulative(&[(0.1, -1.0)], None).is_err());
    }

    #[test]
    fn off_ladder_bound_stays_within_a_step() {
        // 0.33 is not on the ladder (0.3 and 0.35 are).
        let h = from_cumulative(&[(0.33, 100.0), (f64::INFINITY, 100.0)], None).unwrap();
        assert_eq!(h.total(), 100);
        assert_eq!(h.count_above(0.35), 0);
        assert!(h.count_above(0.3) < 100);
    }

    proptest::proptest! {
        /// Whatever on-ladder bounds a source uses, the total is kept and "slower
        /// than a bound" is exact at every one of them.
        #[test]
        fn on_ladder_bounds_are_exact(
            picks in proptest::collection::btree_set(0usize..LATENCY_BOUNDS_SECONDS.len(), 1..12),
            increments in proptest::collection::vec(0u64..500, 12),
            slow in 0u64..50,
        ) {
            let bounds: Vec<f64> = picks.iter().map(|&i| LATENCY_BOUNDS_SECONDS[i]).collect();
            let mut cumulative = Vec::new();
            let mut c = 0u64;
            for (b, inc) in bounds.iter().zip(&increments) {
                c += inc;
                cumulative.push((*b, c as f64));
            }
            let total = c + slow;
            cumulative.push((f64::INFINITY, total as f64));
            let h = from_cumulative(&cumulative, None).unwrap();
            proptest::prop_assert_eq!(h.total(), total);
            for (b, below) in &cumulative[..cumulative.len() - 1] {
                proptest::prop_assert_eq!(h.count_above(*b), total - *below as u64, "at {}", b);
            }
        }
    }
}
