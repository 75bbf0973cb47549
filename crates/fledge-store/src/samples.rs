//! Chart samples: what the server saw of both versions of an app, every few seconds,
//! while one of its rollouts was active. They outlive the server that recorded them,
//! so a rollout's charts show its whole life after a restart.
//!
//! They are bounded per rollout ([`SampleBounds`]): the newest samples keep full
//! resolution, and once a rollout has more than its cap, the older ones are merged
//! with their neighbours ([`thin`]) into evenly coarser samples. Samples of rollouts
//! that finished long ago are deleted with
//! [`Store::prune_samples`](crate::Store::prune_samples).

use fledge_stats::ArmHealth;

use crate::error::{Result, StoreError};
use crate::model::{Timestamp, check_name, check_phase};

/// One chart sample of a rollout, written by
/// [`Store::append_samples`](crate::Store::append_samples).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The rollout it belongs to.
    pub rollout_id: String,
    /// When it was taken (the end of the span it covers). Unique per rollout.
    pub at: Timestamp,
    /// How many recorded snapshots it stands for: 1, or more once merged.
    pub snapshots: i64,
    /// The rollout's phase then.
    pub phase: Option<String>,
    /// The canary's weight then, 0–100 (the mean over a merged span).
    pub canary_weight: i64,
    /// The stable version's health.
    pub stable: Option<ArmHealth>,
    /// The canary's health.
    pub canary: Option<ArmHealth>,
}

/// How many samples a rollout keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleBounds {
    /// The most samples one rollout keeps.
    pub max_per_rollout: usize,
    /// How many of the newest are never merged.
    pub full_resolution: usize,
}

impl Default for SampleBounds {
    /// 1,200 samples, the newest 600 at full resolution: 20 minutes at one sample
    /// every two seconds, and the rest of any longer rollout in 600 coarser ones.
    fn default() -> Self {
        Self {
            max_per_rollout: 1200,
            full_resolution: 600,
        }
    }
}

// === impl SampleBounds ===

impl SampleBounds {
    /// Refuses bounds that could not be kept.
    pub(crate) fn check(&self) -> Result<()> {
        if self.full_resolution == 0 || self.max_per_rollout < self.full_resolution + 2 {
            return Err(StoreError::Invalid {
                field: "sample bounds",
                reason: format!(
                    "expected at least 1 sample at full resolution and a cap at least 2 above \
                     it, found {} and a cap of {}",
                    self.full_resolution, self.max_per_rollout
                ),
            });
        }
        Ok(())
    }

    /// How many samples the part older than the full-resolution ones is thinned to
    /// once a rollout goes over its cap: half of the room it has, so that thinning
    /// happens once every so many writes rather than on every one.
    pub(crate) fn thinned_len(&self) -> usize {
        ((self.max_per_rollout - self.full_resolution) / 2).max(1)
    }
}

/// Refuses samples that could not be charted.
pub(crate) fn check_samples(samples: &[Sample]) -> Result<()> {
    for s in samples {
        check_name("sample rollout id", &s.rollout_id)?;
        if let Some(phase) = &s.phase {
            check_phase(phase)?;
        }
        let invalid = |field, reason: String| Err(StoreError::Invalid { field, reason });
        if !(0..=100).contains(&s.canary_weight) {
            return invalid(
                "sample canary weight",
                format!("expected 0 to 100, found {}", s.canary_weight),
            );
        }
        if s.snapshots < 1 {
            return invalid(
                "sample snapshots",
                format!("expected at least 1, found {}", s.snapshots),
            );
        }
    }
    Ok(())
}

/// Merges neighbouring samples, oldest first, until at most `target` are left: each
/// step merges the two neighbours that stand for the fewest snapshots together, so
/// the result covers its time evenly however often it is thinned again.
///
/// A merged sample is taken at the later one's time and keeps the later one's
/// phase, versions and counts; its request rate and weight are the means over the
/// snapshots, its error rate and latency quantiles the worst of the two, so that a
/// spike stays visible on a long rollout's chart.
pub fn thin(samples: &mut Vec<Sample>, target: usize) {
    let target = target.max(1);
    while samples.len() > target {
        let i = (0..samples.len() - 1)
            .min_by_key(|&i| samples[i].snapshots + samples[i + 1].snapshots)
            .unwrap_or(0);
        let later = samples.remove(i + 1);
        samples[i] = merge(&samples[i], &later);
    }
}

/// One sample for the span of `a` and the later `b`.
fn merge(a: &Sample, b: &Sample) -> Sample {
    let n = a.snapshots + b.snapshots;
    let mean = |x: f64, y: f64| (x * a.snapshots as f64 + y * b.snapshots as f64) / n as f64;
    let arm = |x: &Option<ArmHealth>, y: &Option<ArmHealth>| match (x, y) {
        (Some(x), Some(y)) => Some(ArmHealth {
            request_rate: mean(x.request_rate, y.request_rate),
            error_rate: worst(x.error_rate, y.error_rate),
            p50_ms: worst(x.p50_ms, y.p50_ms),
            p95_ms: worst(x.p95_ms, y.p95_ms),
            p99_ms: worst(x.p99_ms, y.p99_ms),
            ..y.clone()
        }),
        (x, None) => x.clone(),
        (None, y) => y.clone(),
    };
    Sample {
        rollout_id: b.rollout_id.clone(),
        at: b.at,
        snapshots: n,
        phase: b.phase.clone().or_else(|| a.phase.clone()),
        canary_weight: mean(a.canary_weight as f64, b.canary_weight as f64).round() as i64,
        stable: arm(&a.stable, &b.stable),
        canary: arm(&a.canary, &b.canary),
    }
}

/// The larger of two readings, or the one there is.
fn worst(x: Option<f64>, y: Option<f64>) -> Option<f64> {
    match (x, y) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(rate: f64, err: f64, p95: f64) -> ArmHealth {
        ArmHealth {
            version: "v".into(),
            request_rate: rate,
            error_rate: Some(err),
            p50_ms: Some(1.0),
            p95_ms: Some(p95),
            p99_ms: None,
            requests: 10,
            errors: 1,
            total_requests: 100,
        }
    }

    fn sample(at: i64, weight: i64, err: f64) -> Sample {
        Sample {
            rollout_id: "ro-1".into(),
            at: Timestamp(at),
            snapshots: 1,
            phase: Some("Progressing".into()),
            canary_weight: weight,
            stable: Some(arm(10.0, 0.0, 5.0)),
            canary: Some(arm(2.0, err, 7.0)),
        }
    }

    #[test]
    fn merging_keeps_the_worst_readings_and_the_mean_rates() {
        let mut a = sample(1_000, 20, 0.5);
        a.canary.as_mut().unwrap().p95_ms = Some(90.0);
        let mut b = sample(3_000, 50, 0.01);
        b.snapshots = 3;
        b.canary.as_mut().unwrap().request_rate = 6.0;
        b.stable = None;
        let m = merge(&a, &b);
        assert_eq!(
            (m.at, m.snapshots, m.canary_weight),
            (Timestamp(3_000), 4, 43)
        );
        let canary = m.canary.unwrap();
        assert_eq!(canary.error_rate, Some(0.5));
        assert_eq!((canary.p95_ms, canary.p99_ms), (Some(90.0), None));
        assert_eq!(canary.request_rate, 5.0);
        assert_eq!(m.stable, a.stable, "the arm only one side has is kept");
    }

    #[test]
    fn thinning_covers_time_evenly_however_often_it_runs() {
        let mut kept = Vec::new();
        for i in 0..1_000 {
            kept.push(sample(i * 2_000, 20, 0.0));
            if kept.len() > 40 {
                thin(&mut kept, 20);
            }
        }
        thin(&mut kept, 20);
        assert_eq!(kept.len(), 20);
        assert_eq!(kept.iter().map(|s| s.snapshots).sum::<i64>(), 1_000);
        assert!(kept.windows(2).all(|w| w[0].at < w[1].at));
        // Evenly: no merged sample stands for more than twice the mean share (50),
        // nor for more than three times another's.
        let (min, max) = kept.iter().fold((i64::MAX, 0), |(lo, hi), s| {
            (lo.min(s.snapshots), hi.max(s.snapshots))
        });
        assert!(
            max <= 100 && max <= 3 * min,
            "snapshots per sample from {min} to {max}"
        );
        assert_eq!(kept.last().unwrap().at, Timestamp(999 * 2_000));
    }

    #[test]
    fn a_spike_survives_thinning() {
        let mut kept: Vec<Sample> = (0..100).map(|i| sample(i, 20, 0.0)).collect();
        kept[37].canary.as_mut().unwrap().error_rate = Some(0.9);
        thin(&mut kept, 5);
        let worst = kept
            .iter()
            .filter_map(|s| s.canary.as_ref()?.error_rate)
            .fold(0.0, f64::max);
        assert_eq!(worst, 0.9);
    }

    #[test]
    fn bad_bounds_and_samples_are_refused() {
        let bad = SampleBounds {
            max_per_rollout: 10,
            full_resolution: 9,
        };
        assert!(bad.check().unwrap_err().to_string().contains("cap"));
        assert!(SampleBounds::default().check().is_ok());
        let mut s = sample(1, 101, 0.0);
        let err = check_samples(&[s.clone()]).unwrap_err().to_string();
        assert!(
            err.contains("canary weight") && err.contains("101"),
            "{err}"
        );
        s.canary_weight = 10;
        s.phase = Some("Running".into());
        assert!(
            check_samples(&[s])
                .unwrap_err()
                .to_string()
                .contains("Running")
        );
    }
}
