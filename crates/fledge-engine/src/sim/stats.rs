//! Aggregates over simulated runs: detection rate, quantiles of detection time and
//! of failed canary requests, and the false-abort rate with its exact
//! (Clopper–Pearson) confidence interval.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Outcome, RunResult};

/// Two quantiles of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// The median (p50).
    pub p50: f64,
    /// The 95th percentile.
    pub p95: f64,
}

/// A proportion with its two-sided 95% Clopper–Pearson interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proportion {
    /// Events / trials.
    pub value: f64,
    /// Lower end of the 95% interval.
    pub lower95: f64,
    /// Upper end of the 95% interval.
    pub upper95: f64,
    /// Events.
    pub events: u64,
    /// Trials.
    pub trials: u64,
}

/// The aggregate of a batch of runs of one scenario under one controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Number of runs.
    pub runs: usize,
    /// How many runs ended in each outcome, by name.
    pub verdicts: BTreeMap<String, usize>,
    /// Share of runs that failed (were rolled back), with its interval. For a
    /// healthy canary this is the false-abort rate.
    pub failed: Proportion,
    /// Seconds from first canary traffic to the rollback, over the failed runs.
    pub detection_seconds: Option<Spread>,
    /// Failed canary requests per run (until the canary stopped receiving traffic).
    pub failed_requests: Spread,
    /// Canary requests served per run.
    pub canary_requests: Spread,
}

/// `q`-quantile (0–1) with linear interpolation between order statistics (numpy's
/// default), `None` for an empty sample.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

fn spread(values: &[f64]) -> Option<Spread> {
    Some(Spread {
        p50: quantile(values, 0.5)?,
        p95: quantile(values, 0.95)?,
    })
}

/// The `p`-quantile of Beta(a, b), by bisection on the regularized incomplete beta.
pub fn beta_quantile(p: f64, a: f64, b: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        let cdf = statrs::function::beta::checked_beta_reg(a, b, mid).unwrap_or(0.0);
        if cdf < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-13 {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// `events` out of `trials` with the exact two-sided 95% Clopper–Pearson interval.
pub fn clopper_pearson(events: u64, trials: u64) -> Proportion {
    if trials == 0 {
        return Proportion {
            value: 0.0,
            lower95: 0.0,
            upper95: 1.0,
            events,
            trials,
        };
    }
    let (x, n) = (events.min(trials) as f64, trials as f64);
    let lower95 = if x == 0.0 {
        0.0
    } else {
        beta_quantile(0.025, x, n - x + 1.0)
    };
    let upper95 = if x == n {
        1.0
    } else {
        beta_quantile(0.975, x + 1.0, n - x)
    };
    Proportion {
        value: x / n,
        lower95,
        upper95,
        events,
        trials,
    }
}

/// Aggregates `results`.
pub fn summarize(results: &[RunResult]) -> Summary {
    let mut verdicts = BTreeMap::new();
    for r in results {
        *verdicts.entry(r.outcome.as_str().to_string()).or_insert(0) += 1;
    }
    let failed_runs = results
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .count() as u64;
    let detection: Vec<f64> = results
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .filter_map(|r| r.decision_seconds)
        .collect();
    let failed_requests: Vec<f64> = results.iter().map(|r| r.canary_failed as f64).collect();
    let served: Vec<f64> = results.iter().map(|r| r.canary_requests as f64).collect();
    let zero = Spread { p50: 0.0, p95: 0.0 };
    Summary {
        runs: results.len(),
        verdicts,
        failed: clopper_pearson(failed_runs, results.len() as u64),
        detection_seconds: spread(&detection),
        failed_requests: spread(&failed_requests).unwrap_or(zero),
        canary_requests: spread(&served).unwrap_or(zero),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(2.5));
        assert!((quantile(&v, 0.95).unwrap() - 3.85).abs() < 1e-12);
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn clopper_pearson_matches_reference_values() {
        // Computed independently from the binomial tails: the upper end solves
        // P(X ≤ 50; n = 1000, p) = 0.025, the lower one P(X ≥ 50; p) = 0.025.
        let p = clopper_pearson(50, 1000);
        assert!((p.value - 0.05).abs() < 1e-15);
        assert!(
            (p.upper95 - 0.0653904879154915).abs() < 1e-9,
            "{}",
            p.upper95
        );
        assert!(
            (p.lower95 - 0.037335397604625765).abs() < 1e-9,
            "{}",
            p.lower95
        );
        // 0 of n: upper = 1 − 0.025^(1/n).
        let z = clopper_pearson(0, 200);
        assert_eq!(z.lower95, 0.0);
        assert!((z.upper95 - (1.0 - 0.025f64.powf(1.0 / 200.0))).abs() < 1e-9);
        let all = clopper_pearson(10, 10);
        assert_eq!(all.upper95, 1.0);
    }
}
