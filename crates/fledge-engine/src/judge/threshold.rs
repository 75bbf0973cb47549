//! The threshold judge: the criterion's value over the stage's window (every count
//! accumulated since the stage started), compared with its bound once both arms it
//! needs hold `analysis.minRequests` requests.
//!
//! This is the classic check (what Argo Rollouts and Flagger do, but evaluated every
//! tick on the whole window rather than once per interval on the last interval). It
//! has no false-alarm control of its own: a canary right at the threshold passes or
//! fails by chance. The sequential judge exists for that; this one is exact,
//! explainable and cheap.
//!
//! Sample rules:
//! * rates and latencies of an arm need `minRequests` requests of that arm in the
//!   window; a relative bound needs them on both arms;
//! * `request_rate` needs no minimum count (a low rate *is* the measurement), only a
//!   window of at least one tick;
//! * custom metrics are evaluated by their source, which owns their sample size: they
//!   need a value in the latest observation (stale values are never judged).
//!
//! A relative bound that collapses onto stable's own value (`stable * 1.2` when
//! stable has no errors at all) is compared non-strictly, so a canary exactly as good
//! as stable passes `<` rather than failing on `0 < 0`.

use fledge_spec::{Bound, CmpOp, Metric};
use fledge_stats::{ArmCounters, CustomValue};
use serde::{Deserialize, Serialize};

use super::{CriterionContext, MAX_COUNT, TickDelta};
use crate::evidence::{ArmSample, CriterionStatus, Evidence, JudgeMethod, ValueUnit, format_count};

/// The threshold judge's state: both arms' counters over the stage's window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdJudge {
    /// The canary's increase since the stage started.
    pub canary: ArmCounters,
    /// The stable version's increase over the same window.
    pub stable: ArmCounters,
    /// Milliseconds of observations in the window.
    pub window_ms: u64,
    /// A custom metric's value in the latest observation (custom criteria only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomValue>,
}

// === impl ThresholdJudge ===

impl ThresholdJudge {
    /// Adds one tick to the window and judges the window.
    pub fn update(&mut self, ctx: &CriterionContext<'_>, delta: &TickDelta) -> Evidence {
        accumulate(&mut self.canary, &delta.canary);
        accumulate(&mut self.stable, &delta.stable);
        self.window_ms = self.window_ms.saturating_add(delta.window_ms);
        if let Metric::Custom(name) = &ctx.criterion.metric {
            self.custom = delta.custom.get(name).copied();
        }
        self.assess(ctx)
    }

    /// Judges the window as it stands.
    pub fn assess(&self, ctx: &CriterionContext<'_>) -> Evidence {
        let criterion = ctx.criterion;
        let min = ctx.settings.min_requests;
        let relative = criterion.bound.is_relative();
        let custom = self.custom.filter(|c| c.canary.is_finite());
        let canary = self.sample(&criterion.metric, &self.canary, custom.map(|c| c.canary));
        let stable = self.sample(
            &criterion.metric,
            &self.stable,
            custom.and_then(|c| c.stable).filter(|v| v.is_finite()),
        );

        let missing = self
            .missing(&criterion.metric, "canary", &canary, min)
            .or_else(|| {
                relative
                    .then(|| self.missing(&criterion.metric, "stable", &stable, min))
                    .flatten()
            });
        let threshold = criterion
            .bound
            .threshold(stable.value)
            .filter(|t| t.is_finite());

        let (status, summary) = match (missing, canary.value, threshold) {
            (None, Some(value), Some(bound)) => {
                // `error_rate < stable * 1.2` against a stable arm with no errors
                // collapses the bound onto stable's own value (0), and a strict `<`
                // would then fail a canary exactly as good as stable. A relative bound
                // that collapsed is compared non-strictly: "no worse than stable".
                let collapsed =
                    relative && stable.value.is_some_and(|s| compare(CmpOp::Eq, s, bound));
                let op = match criterion.op {
                    CmpOp::Lt if collapsed => CmpOp::Le,
                    CmpOp::Gt if collapsed => CmpOp::Ge,
                    op => op,
                };
                let holds = compare(op, value, bound);
                let status = if holds {
                    CriterionStatus::Pass
                } else {
                    CriterionStatus::Fail
                };
                let symbol = if holds { shown(op) } else { negated(op) };
                let mut text = format!(
                    "{} {} (n={}) {symbol} {}",
                    criterion.metric,
                    ctx.unit.format(value),
                    format_count(canary.requests),
                    ctx.unit.format(bound),
                );
                if relative {
                    text.push_str(&format!(
                        " ({}; stable {} (n={}))",
                        relative_text(criterion.bound, ctx.unit),
                        stable
                            .value
                            .map_or_else(String::new, |v| ctx.unit.format(v)),
                        format_count(stable.requests),
                    ));
                }
                (status, text)
            }
            (Some(why), _, _) => (
                CriterionStatus::NotEnoughData,
                format!("{}: not enough data ({why})", criterion.metric),
            ),
            (None, _, _) => (
                CriterionStatus::NotEnoughData,
                format!("{}: not enough data (no value)", criterion.metric),
            ),
        };

        let looked_at_stable = relative || self.stable.requests > 0;
        Evidence {
            criterion: criterion.source.clone(),
            metric: criterion.metric.to_string(),
            method: JudgeMethod::Threshold,
            status,
            unit: ctx.unit,
            canary,
            stable: looked_at_stable.then_some(stable),
            threshold,
            min_requests: min,
            sequential: None,
            summary,
        }
    }

    /// The metric's value on one arm over the window.
    fn sample(&self, metric: &Metric, arm: &ArmCounters, custom: Option<f64>) -> ArmSample {
        let n = arm.requests;
        let ratio = |k: u64| (n > 0).then(|| k.min(n) as f64 / n as f64);
        let (value, bad) = match metric {
            Metric::ErrorRate => (ratio(arm.errors), Some(arm.errors)),
            Metric::SuccessRate => (ratio(arm.errors).map(|e| 1.0 - e), Some(arm.errors)),
            Metric::Latency { quantile } => (arm.latency.quantile(*quantile), None),
            Metric::LatencyMean => (arm.latency.mean().filter(|m| m.is_finite()), None),
            Metric::RequestRate => (
                (self.window_ms > 0).then(|| n as f64 * 1000.0 / self.window_ms as f64),
                None,
            ),
            Metric::Custom(_) => (custom, None),
        };
        ArmSample {
            value,
            requests: n,
            bad,
        }
    }

    /// Why an arm's sample cannot be judged yet, if it cannot.
    fn missing(&self, metric: &Metric, arm: &str, s: &ArmSample, min: u64) -> Option<String> {
        match metric {
            Metric::RequestRate if self.window_ms == 0 => Some("no complete tick yet".into()),
            Metric::RequestRate => None,
            Metric::Custom(name) if s.value.is_none() => Some(format!(
                "no {arm} value for {name} in the latest observation"
            )),
            Metric::Custom(_) => None,
            _ if s.requests < min => Some(format!(
                "{arm} n={} of {} needed",
                format_count(s.requests),
                format_count(min)
            )),
            _ if s.value.is_none() => Some(format!("no {arm} latency histogram")),
            _ => None,
        }
    }
}

/// Adds a tick to the window, clamped to [`MAX_COUNT`] so that no sum over the
/// window can overflow.
fn accumulate(total: &mut ArmCounters, delta: &ArmCounters) {
    let add = |a: u64, b: u64| a.saturating_add(b).min(MAX_COUNT);
    total.requests = add(total.requests, delta.requests);
    total.errors = add(total.errors, delta.errors).min(total.requests);
    let h = &mut total.latency;
    if h.counts.len() < delta.latency.counts.len() {
        h.counts.resize(delta.latency.counts.len(), 0);
    }
    for (a, b) in h.counts.iter_mut().zip(&delta.latency.counts) {
        *a = add(*a, *b);
    }
    let sum = h.sum_seconds + delta.latency.sum_seconds;
    h.sum_seconds = if sum.is_finite() { sum } else { h.sum_seconds };
}

/// `value <op> bound`, with equality up to rounding: values are computed from counts
/// and histograms, so `==` on raw floats would hinge on the last bit.
fn compare(op: CmpOp, value: f64, bound: f64) -> bool {
    let scale = value.abs().max(bound.abs()).max(1.0);
    let equal = (value - bound).abs() <= 1e-9 * scale;
    match op {
        CmpOp::Lt => value < bound && !equal,
        CmpOp::Le => value < bound || equal,
        CmpOp::Gt => value > bound && !equal,
        CmpOp::Ge => value > bound || equal,
        CmpOp::Eq => equal,
        CmpOp::Ne => !equal,
    }
}

/// The operator as shown when the criterion holds.
fn shown(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Lt => "<",
        CmpOp::Le => "≤",
        CmpOp::Gt => ">",
        CmpOp::Ge => "≥",
        CmpOp::Eq => "=",
        CmpOp::Ne => "≠",
    }
}

/// The operator that held instead, when the criterion does not.
fn negated(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Lt => "≥",
        CmpOp::Le => ">",
        CmpOp::Gt => "≤",
        CmpOp::Ge => "<",
        CmpOp::Eq => "≠",
        CmpOp::Ne => "=",
    }
}

fn relative_text(bound: Bound, unit: ValueUnit) -> String {
    match bound {
        Bound::Absolute(v) => unit.format(v),
        Bound::StableTimes(k) => format!("stable × {k}"),
        Bound::StablePlus(d) if d < 0.0 => format!("stable − {}", unit.format(-d)),
        Bound::StablePlus(d) => format!("stable + {}", unit.format(d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::JudgeSettings;
    use fledge_spec::Criterion;
    use fledge_stats::LatencyHistogram;

    fn settings(min: u64) -> JudgeSettings {
        JudgeSettings {
            min_requests: min,
            ..JudgeSettings::default()
        }
    }

    fn arm(requests: u64, errors: u64, latency_ms: &[(f64, u64)]) -> ArmCounters {
        let mut latency = LatencyHistogram::default();
        for &(ms, count) in latency_ms {
            for _ in 0..count {
                latency.record(ms / 1000.0);
            }
        }
        ArmCounters {
            requests,
            errors,
            latency,
        }
    }

    /// An arm's counts, without latencies.
    fn counts(requests: u64, errors: u64) -> ArmCounters {
        arm(requests, errors, &[])
    }

    /// A second of traffic on the canary and none on stable.
    fn canary_only(canary: ArmCounters) -> TickDelta {
        tick(canary, ArmCounters::default())
    }

    fn tick(canary: ArmCounters, stable: ArmCounters) -> TickDelta {
        TickDelta {
            window_ms: 1000,
            canary,
            stable,
            ..TickDelta::default()
        }
    }

    fn judge(text: &str, min: u64, ticks: &[TickDelta]) -> Evidence {
        let c = Criterion::parse(text).unwrap();
        let s = settings(min);
        let ctx = CriterionContext {
            criterion: &c,
            unit: c.metric.dimension().into(),
            settings: &s,
        };
        let mut j = ThresholdJudge::default();
        let mut last = j.assess(&ctx);
        for t in ticks {
            last = j.update(&ctx, t);
        }
        last
    }

    #[test]
    fn error_rate_fails_with_a_readable_summary() {
        let e = judge(
            "error_rate < 0.5%",
            100,
            &[tick(counts(1204, 58), counts(5000, 5))],
        );
        assert_eq!(e.status, CriterionStatus::Fail);
        assert_eq!(e.summary, "error_rate 4.82% (n=1,204) ≥ 0.5%");
        assert_eq!(e.canary.requests, 1204);
        assert_eq!(e.canary.bad, Some(58));
        assert_eq!(e.threshold, Some(0.005));
        assert_eq!(e.criterion, "error_rate < 0.5%");
    }

    #[test]
    fn error_rate_passes_once_the_window_is_big_enough() {
        let criterion = "error_rate < 0.5%";
        let small = judge(criterion, 100, &[canary_only(counts(99, 0))]);
        assert_eq!(small.status, CriterionStatus::NotEnoughData);
        assert_eq!(
            small.summary,
            "error_rate: not enough data (canary n=99 of 100 needed)"
        );
        let enough = judge(
            criterion,
            100,
            &[canary_only(counts(99, 0)), canary_only(counts(1, 0))],
        );
        assert_eq!(enough.status, CriterionStatus::Pass);
        assert_eq!(enough.canary.value, Some(0.0));
    }

    #[test]
    fn an_error_burst_below_the_minimum_sample_is_not_a_failure() {
        let e = judge(
            "error_rate < 0.5%",
            100,
            &[tick(counts(10, 10), counts(40, 0))],
        );
        assert_eq!(e.status, CriterionStatus::NotEnoughData);
    }

    #[test]
    fn the_window_accumulates_across_ticks() {
        // 3 errors in 1000 requests over two ticks: 0.3% < 0.5%.
        let e = judge(
            "error_rate < 0.5%",
            100,
            &[canary_only(counts(500, 3)), canary_only(counts(500, 0))],
        );
        assert_eq!(e.status, CriterionStatus::Pass);
        assert_eq!(e.canary.value, Some(0.003));
        assert_eq!(e.summary, "error_rate 0.3% (n=1,000) < 0.5%");
    }

    #[test]
    fn success_rate_is_the_complement() {
        let e = judge("success_rate >= 99%", 10, &[canary_only(counts(100, 2))]);
        assert_eq!(e.status, CriterionStatus::Fail);
        assert_eq!(e.canary.value, Some(0.98));
        assert_eq!(e.summary, "success_rate 98% (n=100) < 99%");
    }

    #[test]
    fn latency_quantile_comes_from_the_histogram() {
        let criterion = "latency_p95 < 500ms";
        // 90 fast (100 ms), 10 slow (900 ms): p95 is in the slow bucket.
        let slow = judge(
            criterion,
            100,
            &[canary_only(arm(100, 0, &[(100.0, 90), (900.0, 10)]))],
        );
        assert_eq!(slow.status, CriterionStatus::Fail);
        let v = slow.canary.value.unwrap();
        assert!(v > 0.5 && v <= 0.9, "p95 {v}");
        let fast = judge(
            criterion,
            100,
            &[canary_only(arm(100, 0, &[(100.0, 99), (900.0, 1)]))],
        );
        assert_eq!(fast.status, CriterionStatus::Pass);
        assert!(fast.summary.starts_with("latency_p95 "), "{}", fast.summary);
        assert!(
            fast.summary.ends_with("ms (n=100) < 500 ms"),
            "{}",
            fast.summary
        );
    }

    #[test]
    fn requests_without_a_histogram_are_not_a_latency() {
        let e = judge("latency_p95 < 500ms", 10, &[canary_only(counts(100, 0))]);
        assert_eq!(e.status, CriterionStatus::NotEnoughData);
    }

    #[test]
    fn latency_mean() {
        let e = judge(
            "latency_mean <= 200ms",
            10,
            &[canary_only(arm(20, 0, &[(100.0, 10), (300.0, 10)]))],
        );
        assert_eq!(e.status, CriterionStatus::Pass);
        assert!((e.canary.value.unwrap() - 0.2).abs() < 1e-9);
    }

    #[test]
    fn relative_bound_compares_with_stable_in_the_same_window() {
        let canary = arm(200, 0, &[(600.0, 200)]);
        let stable = arm(1000, 0, &[(450.0, 1000)]);
        let e = judge("latency_p95 < stable * 1.2", 100, &[tick(canary, stable)]);
        // 600 ms ≥ 1.2 × ~450 ms.
        assert_eq!(e.status, CriterionStatus::Fail);
        let s = e.stable.as_ref().unwrap();
        assert_eq!(s.requests, 1000);
        let t = e.threshold.unwrap();
        assert!((t - 1.2 * s.value.unwrap()).abs() < 1e-12);
        assert!(e.summary.contains("stable × 1.2"), "{}", e.summary);
    }

    #[test]
    fn relative_bound_needs_enough_stable_data() {
        let criterion = "error_rate <= stable + 0.1%";
        let e = judge(criterion, 100, &[tick(counts(500, 50), counts(50, 0))]);
        assert_eq!(e.status, CriterionStatus::NotEnoughData);
        assert!(e.summary.contains("stable n=50 of 100"), "{}", e.summary);
        let e = judge(criterion, 100, &[tick(counts(1000, 2), counts(4000, 4))]);
        // 0.2% ≤ 0.1% + 0.1%.
        assert_eq!(e.status, CriterionStatus::Pass, "{}", e.summary);
    }

    #[test]
    fn a_relative_bound_collapsed_on_a_perfect_stable_is_not_strict() {
        let criterion = "error_rate < stable * 1.2";
        // Neither arm has errors: the canary is exactly as good as stable.
        let e = judge(criterion, 100, &[tick(counts(500, 0), counts(2000, 0))]);
        assert_eq!(e.status, CriterionStatus::Pass, "{}", e.summary);
        assert!(
            e.summary.starts_with("error_rate 0% (n=500) ≤ 0%"),
            "{}",
            e.summary
        );
        // Any canary error is worse than a perfect stable.
        let e = judge(criterion, 100, &[tick(counts(500, 1), counts(2000, 0))]);
        assert_eq!(e.status, CriterionStatus::Fail, "{}", e.summary);
        // A bound that did not collapse stays strict.
        let e = judge(criterion, 100, &[tick(counts(1000, 12), counts(1000, 10))]);
        assert_eq!(e.status, CriterionStatus::Fail, "{}", e.summary);
    }

    #[test]
    fn request_rate_is_per_second_of_window() {
        let e = judge(
            "request_rate > 5rps",
            1_000_000,
            &[canary_only(counts(4, 0)), canary_only(counts(4, 0))],
        );
        // 8 requests over 2 s = 4 rps: fails regardless of minRequests.
        assert_eq!(e.status, CriterionStatus::Fail);
        assert_eq!(e.canary.value, Some(4.0));
    }

    #[test]
    fn custom_metric_needs_a_fresh_value() {
        let c = Criterion::parse("checkout_success >= 0.97").unwrap();
        let s = settings(100);
        let ctx = CriterionContext {
            criterion: &c,
            unit: ValueUnit::Plain,
            settings: &s,
        };
        let mut j = ThresholdJudge::default();
        let mut t = canary_only(counts(0, 0));
        t.custom.insert(
            "checkout_success".into(),
            CustomValue {
                canary: 0.99,
                stable: None,
            },
        );
        assert_eq!(j.update(&ctx, &t).status, CriterionStatus::Pass);
        t.custom.clear();
        assert_eq!(j.update(&ctx, &t).status, CriterionStatus::NotEnoughData);
        t.custom.insert(
            "checkout_success".into(),
            CustomValue {
                canary: 0.9,
                stable: None,
            },
        );
        assert_eq!(j.update(&ctx, &t).status, CriterionStatus::Fail);
    }

    #[test]
    fn equality_tolerates_rounding() {
        assert!(compare(CmpOp::Le, 0.1 + 0.2, 0.3));
        assert!(!compare(CmpOp::Lt, 0.1 + 0.2, 0.3));
        assert!(compare(CmpOp::Eq, 0.1 + 0.2, 0.3));
        assert!(compare(CmpOp::Ne, 0.31, 0.3));
    }
}
