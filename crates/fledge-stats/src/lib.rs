//! What the judge sees of the world: cumulative per-version counters.
//!
//! This crate is the one shared vocabulary of the data plane (which counts), the metric
//! sources (which read counts from elsewhere) and the judge (which decides on them).
//! It must never depend on tokio, I/O or any other fledge crate.
//!
//! Every data source (the built-in proxy, Prometheus, Datadog, the simulator) is turned
//! into the same shape: monotonically increasing request and error counters and a
//! cumulative latency histogram per arm. The judge differences consecutive
//! observations itself, so a source only has to report totals; a counter that goes
//! down is a reset (a restarted process) and is handled the way Prometheus does.
//!
//! The same counters go out again on `/metrics`: [`exposition`] writes the server's,
//! the proxy's and the operator's metric families in OpenMetrics or the Prometheus
//! text format (pure text, no I/O), so the formats' rules live in one place.
//!
//! [`Arm`] (stable or canary) and [`Timestamp`] are the words every crate uses for
//! a side of a rollout and a point in time.
//!
//! What the counters say over the last seconds, [`ArmHealth`], is the one type the API
//! serves and the store keeps for the charts. Its JSON Schema is behind the `schema`
//! feature (the API enables it), so the crates that only count stay free of `schemars`.

pub mod exposition;
mod health;
mod time;

pub use health::ArmHealth;
pub use time::Timestamp;

use serde::{Deserialize, Serialize};

/// One side of a rollout: the version serving production, or the new one. A
/// request, a counter and a metric query each belong to one; `stable` and `canary`
/// in metric labels, query templates and the data plane's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    /// The version currently serving production traffic.
    Stable,
    /// The new version being rolled out.
    Canary,
}

impl Arm {
    /// `stable` or `canary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Stable => "stable",
            Arm::Canary => "canary",
        }
    }
}

impl std::fmt::Display for Arm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Upper bounds, in seconds, of the latency buckets every fledge histogram uses.
///
/// The ladder has 20 steps per decade from 100 µs to 100 s and contains every round
/// figure an operator is likely to write in a criterion (1, 1.2, 1.5, 2, 2.5, 3, 4, 5,
/// 6, 7, 8, 9 × 10ⁿ and more), so "requests slower than 500 ms" is an exact count,
/// not an interpolation. Quantiles are interpolated inside a bucket, within ±6%.
pub const LATENCY_BOUNDS_SECONDS: &[f64] = &LADDER;

const MANTISSAS: [f64; 20] = [
    1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0, 2.2, 2.5, 2.8, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0,
    8.0,
];
const DECADES: usize = 6; // 1e-4 s ..= 1e2 s
const LADDER_LEN: usize = MANTISSAS.len() * DECADES + 1;
const LADDER: [f64; LADDER_LEN] = ladder();

const fn ladder() -> [f64; LADDER_LEN] {
    let mut out = [0.0; LADDER_LEN];
    let mut scale = 1e-4;
    let mut d = 0;
    while d < DECADES {
        let mut m = 0;
        while m < MANTISSAS.len() {
            out[d * MANTISSAS.len() + m] = MANTISSAS[m] * scale;
            m += 1;
        }
        scale *= 10.0;
        d += 1;
    }
    out[LADDER_LEN - 1] = 100.0;
    out
}

/// Index of the bucket a latency of `seconds` falls into: the first bound `>= seconds`,
/// or `LATENCY_BOUNDS_SECONDS.len()` for the overflow (+Inf) bucket.
pub fn bucket_index(seconds: f64) -> usize {
    LATENCY_BOUNDS_SECONDS.partition_point(|&b| b < seconds * (1.0 - 1e-12))
}

/// A cumulative latency histogram: `counts[i]` requests took at most
/// `LATENCY_BOUNDS_SECONDS[i]` and more than the previous bound; the last entry
/// (index `LATENCY_BOUNDS_SECONDS.len()`) counts the requests slower than every bound.
/// Counts are not cumulative across buckets (each bucket holds its own count); they
/// are cumulative over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// Per-bucket request counts, `LATENCY_BOUNDS_SECONDS.len() + 1` entries.
    pub counts: Vec<u64>,
    /// Sum of all observed latencies, in seconds (for the mean).
    pub sum_seconds: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: vec![0; LATENCY_BOUNDS_SECONDS.len() + 1],
            sum_seconds: 0.0,
        }
    }
}

impl LatencyHistogram {
    /// Records one request that took `seconds`.
    pub fn record(&mut self, seconds: f64) {
        self.counts[bucket_index(seconds)] += 1;
        self.sum_seconds += seconds;
    }

    /// Total number of requests in the histogram.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Number of requests strictly slower than the bucket bound `>= seconds`
    /// (exact when `seconds` is on the ladder).
    pub fn count_above(&self, seconds: f64) -> u64 {
        let idx = bucket_index(seconds);
        self.counts.iter().skip(idx + 1).sum()
    }

    /// The `q` quantile (0 < q < 1) in seconds, interpolated linearly inside its
    /// bucket; `None` when the histogram is empty. Requests in the overflow bucket
    /// are reported at the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if (seen + c) as f64 >= rank {
                let Some(&hi) = LATENCY_BOUNDS_SECONDS.get(i) else {
                    return LATENCY_BOUNDS_SECONDS.last().copied();
                };
                let lo = if i == 0 {
                    0.0
                } else {
                    LATENCY_BOUNDS_SECONDS[i - 1]
                };
                let frac = ((rank - seen as f64) / c as f64).clamp(0.0, 1.0);
                return Some(lo + (hi - lo) * frac);
            }
            seen += c;
        }
        LATENCY_BOUNDS_SECONDS.last().copied()
    }

    /// Mean latency in seconds; `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        let n = self.total();
        (n > 0).then(|| self.sum_seconds / n as f64)
    }

    /// `self - earlier`, bucket by bucket; when any bucket went down the source was
    /// reset, and (as Prometheus' `increase` does) `self` itself is the increase.
    pub fn delta_since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        let reset = self.counts.len() != earlier.counts.len()
            || self
                .counts
                .iter()
                .zip(&earlier.counts)
                .any(|(now, before)| now < before);
        if reset {
            return self.clone();
        }
        LatencyHistogram {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a - b)
                .collect(),
            sum_seconds: (self.sum_seconds - earlier.sum_seconds).max(0.0),
        }
    }

    /// Adds another histogram's counts into this one.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_seconds += other.sum_seconds;
    }
}

/// Cumulative counters of one arm (the stable or the canary version).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmCounters {
    /// Requests answered (or failed) since the source started counting.
    pub requests: u64,
    /// Of those, the failed ones: 5xx from the upstream, or failure to reach it.
    pub errors: u64,
    /// Latency of every counted request.
    pub latency: LatencyHistogram,
}

impl ArmCounters {
    /// The increase since `earlier`, with Prometheus-style reset handling: a counter
    /// that went down restarted from zero, so its current value is the increase.
    pub fn delta_since(&self, earlier: &ArmCounters) -> ArmCounters {
        let reset = self.requests < earlier.requests || self.errors < earlier.errors;
        if reset {
            return self.clone();
        }
        ArmCounters {
            requests: self.requests - earlier.requests,
            errors: self.errors - earlier.errors,
            latency: self.latency.delta_since(&earlier.latency),
        }
    }
}

/// One reading of both arms, taken at the same moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The stable version's cumulative counters.
    pub stable: ArmCounters,
    /// The canary version's cumulative counters.
    pub canary: ArmCounters,
    /// Custom metrics defined in the spec, by name: their current value for the
    /// canary (and, when the source can tell, for stable), already evaluated by the
    /// metric source. Absent means "no data".
    #[serde(default)]
    pub custom: std::collections::BTreeMap<String, CustomValue>,
}

/// The value of one custom metric in an observation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CustomValue {
    /// The canary's value.
    pub canary: f64,
    /// The stable version's value, when the source reports one.
    pub stable: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_is_increasing_and_holds_round_figures() {
        assert!(LATENCY_BOUNDS_SECONDS.windows(2).all(|w| w[0] < w[1]));
        for ms in [
            1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 300.0, 450.0, 500.0, 1000.0,
        ] {
            let s = ms / 1000.0;
            let i = bucket_index(s);
            assert!(
                (LATENCY_BOUNDS_SECONDS[i] - s).abs() < 1e-12,
                "{ms} ms is not on the ladder"
            );
        }
    }

    #[test]
    fn count_above_is_exact_on_a_bound() {
        let mut h = LatencyHistogram::default();
        for ms in [100.0, 499.0, 500.0, 501.0, 900.0] {
            h.record(ms / 1000.0);
        }
        assert_eq!(h.count_above(0.5), 2);
        assert_eq!(h.total(), 5);
    }

    #[test]
    fn quantile_is_within_a_bucket() {
        let mut h = LatencyHistogram::default();
        for i in 1..=1000 {
            h.record(i as f64 / 1000.0);
        }
        let p95 = h.quantile(0.95).unwrap();
        assert!((p95 - 0.95).abs() / 0.95 < 0.07, "p95 {p95}");
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
    }

    #[test]
    fn reset_counts_the_new_value_as_the_increase() {
        let before = ArmCounters {
            requests: 100,
            errors: 5,
            ..Default::default()
        };
        let after = ArmCounters {
            requests: 7,
            errors: 1,
            ..Default::default()
        };
        assert_eq!(after.delta_since(&before).requests, 7);
        let later = ArmCounters {
            requests: 110,
            errors: 6,
            ..Default::default()
        };
        let d = later.delta_since(&before);
        assert_eq!((d.requests, d.errors), (10, 1));
    }
}
