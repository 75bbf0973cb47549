//! The demo's scenarios: how the stable and canary backends behave, and the rollout
//! spec applied by default.

use std::time::Duration;

use clap::ValueEnum;

use super::backend::BackendProfile;

/// The rollout spec `fledge demo` applies when no `-f` is given: the repository's
/// `examples/demo.yaml`, so the example people read is the one the demo runs. The
/// backends below are sized against its criteria (`error_rate < 1%`,
/// `latency_p95 < 300ms`); a test checks that they still fit it.
pub const DEFAULT_SPEC: &str = include_str!("../../../../examples/demo.yaml");

/// The spec of `--scenario dark`: `examples/demo-dark.yaml`, the demo's rollout with
/// a dark first stage (every request copied to the canary, users on stable).
pub const DARK_SPEC: &str = include_str!("../../../../examples/demo-dark.yaml");

/// The spec of `--scenario blue-green`: `examples/demo-blue-green.yaml`, the demo's
/// version previewed on copies of every request, then switched to at once.
pub const BLUE_GREEN_SPEC: &str = include_str!("../../../../examples/demo-blue-green.yaml");

/// The spec a scenario applies when no `-f` is given.
pub fn default_spec(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::Dark => DARK_SPEC,
        Scenario::BlueGreen => BLUE_GREEN_SPEC,
        _ => DEFAULT_SPEC,
    }
}

/// The stable version's label in the demo.
pub const STABLE_VERSION: &str = "v1";

/// Median latency of the stable backend: p95 about 120 ms, so that three times
/// slower (p95 about 360 ms) clearly breaks a 300 ms bound.
pub const STABLE_MEDIAN: Duration = Duration::from_millis(80);

/// Spread of every backend's latency (σ of its logarithm): p95 ≈ 1.5 × median.
pub const LATENCY_SIGMA: f64 = 0.25;

/// Error rate of the stable backend, and of a healthy canary.
pub const STABLE_ERROR_RATE: f64 = 0.001;

/// Error rate of the canary in the `errors` scenario.
pub const ERRORS_SCENARIO_RATE: f64 = 0.05;

/// Latency factor of the canary in the `slow` scenario.
pub const SLOW_SCENARIO_FACTOR: f64 = 3.0;

/// What the canary does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// The canary behaves like stable: it is promoted.
    #[default]
    Healthy,
    /// The canary answers 5% of requests with a 500: it is rolled back.
    Errors,
    /// The canary is three times slower (p95 ×3): it is rolled back.
    Slow,
    /// The canary answers 5% of requests with a 500, but starts dark (a copy of
    /// every request, users served by stable): it is rolled back before any user
    /// meets it.
    Dark,
    /// A healthy version rolled out blue/green: previewed on copies of every
    /// request while users stay on stable, then every user switched at once, stable
    /// kept warm for a while, and promoted.
    BlueGreen,
}

/// The two backends of a demo run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The stable version's backend.
    pub stable: BackendProfile,
    /// The canary version's backend.
    pub canary: BackendProfile,
}

/// The backends for `scenario`, with the canary's error rate or median latency
/// overridden when given.
pub fn plan(
    scenario: Scenario,
    canary_version: &str,
    canary_error_rate: Option<f64>,
    canary_latency: Option<Duration>,
) -> Plan {
    let stable = BackendProfile {
        version: STABLE_VERSION.to_string(),
        error_rate: STABLE_ERROR_RATE,
        median_latency: STABLE_MEDIAN,
        latency_sigma: LATENCY_SIGMA,
    };
    let mut canary = BackendProfile {
        version: canary_version.to_string(),
        ..stable
    };
    match scenario {
        Scenario::Healthy | Scenario::BlueGreen => {}
        Scenario::Errors | Scenario::Dark => canary.error_rate = ERRORS_SCENARIO_RATE,
        Scenario::Slow => {
            canary.median_latency = STABLE_MEDIAN.mul_f64(SLOW_SCENARIO_FACTOR);
        }
    }
    if let Some(rate) = canary_error_rate {
        canary.error_rate = rate;
    }
    if let Some(latency) = canary_latency {
        canary.median_latency = latency;
    }
    Plan { stable, canary }
}

/// Parses an error rate: `5%`, `0.5 %` or a fraction like `0.05` (the demo's and
/// the simulator's flags).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, scale) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), 0.01),
        None => (t, 1.0),
    };
    let v: f64 = number
        .parse()
        .map_err(|_| format!("expected a rate like 5% or 0.05, found {text:?}"))?;
    let rate = v * scale;
    if !(0.0..=1.0).contains(&rate) || !rate.is_finite() {
        return Err(format!(
            "a rate must be between 0% and 100%, found {text:?}"
        ));
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The strictest absolute bound of `metric` across the default spec's stages.
    fn default_bound(metric: &fledge_spec::Metric) -> f64 {
        let spec = fledge_spec::parse_spec(DEFAULT_SPEC, "demo.yaml").unwrap();
        spec.stages
            .iter()
            .flat_map(|s| &s.success_criteria)
            .filter(|c| {
                c.metric == *metric
                    && matches!(c.op, fledge_spec::CmpOp::Lt | fledge_spec::CmpOp::Le)
            })
            .filter_map(|c| match c.bound {
                fledge_spec::Bound::Absolute(v) => Some(v),
                _ => None,
            })
            .fold(f64::INFINITY, f64::min)
    }

    #[test]
    fn the_default_spec_is_valid_and_is_not_the_stable_version() {
        let spec = fledge_spec::parse_spec(DEFAULT_SPEC, "demo.yaml").unwrap();
        assert_ne!(spec.version, STABLE_VERSION);
        assert!(spec.stages.iter().any(|s| s.duration.is_some()));
    }

    #[test]
    fn scenarios_break_the_default_criteria_and_only_them() {
        let max_error = default_bound(&fledge_spec::Metric::ErrorRate);
        let p95 = default_bound(&fledge_spec::Metric::Latency { quantile: 0.95 });
        assert!(
            max_error.is_finite() && p95.is_finite(),
            "the demo spec must bound both"
        );
        let p95 = Duration::from_secs_f64(p95);
        let healthy = plan(Scenario::Healthy, "v2", None, None);
        for arm in [&healthy.stable, &healthy.canary] {
            assert!(arm.error_rate < max_error / 5.0);
            assert!(arm.latency_quantile(0.999) < p95, "{arm:?} vs {p95:?}");
        }
        let errors = plan(Scenario::Errors, "v2", None, None);
        assert!(errors.canary.error_rate >= 4.0 * max_error);
        assert!(errors.canary.latency_quantile(0.99) < p95);
        // Slow: decisively over the bound, not just at it (≥ 15% of requests slower).
        let slow = plan(Scenario::Slow, "v2", None, None);
        assert!(slow.canary.error_rate < max_error / 5.0);
        assert!(
            slow.canary.latency_quantile(0.85) > p95,
            "{:?}",
            slow.canary
        );
    }

    #[test]
    fn the_dark_scenario_fails_in_the_dark() {
        let spec = fledge_spec::parse_spec(default_spec(Scenario::Dark), "demo-dark.yaml").unwrap();
        assert_eq!((spec.stages[0].traffic, spec.stages[0].mirror), (0, 100));
        let plain = fledge_spec::parse_spec(DEFAULT_SPEC, "demo.yaml").unwrap();
        assert_eq!(
            spec.stages[1..=2],
            plain.stages[..2],
            "then the demo's own stages"
        );
        let dark = plan(Scenario::Dark, "v2", None, None);
        assert_eq!(dark.canary, plan(Scenario::Errors, "v2", None, None).canary);
    }

    #[test]
    fn the_blue_green_scenario_previews_then_switches_a_healthy_version() {
        let spec = fledge_spec::parse_spec(default_spec(Scenario::BlueGreen), "bg.yaml").unwrap();
        assert_eq!(spec.strategy, fledge_spec::Strategy::BlueGreen);
        let routes: Vec<(u8, u8)> = spec.stages.iter().map(|s| (s.traffic, s.mirror)).collect();
        assert_eq!(routes, [(0, 100), (100, 0)]);
        let plain = fledge_spec::parse_spec(DEFAULT_SPEC, "demo.yaml").unwrap();
        assert_eq!(
            spec.stages[0].success_criteria, plain.stages[0].success_criteria,
            "judged like the demo's canary"
        );
        let bg = plan(Scenario::BlueGreen, "v2", None, None);
        assert_eq!(bg, plan(Scenario::Healthy, "v2", None, None));
    }

    #[test]
    fn flags_override_the_scenario() {
        let p = plan(
            Scenario::Healthy,
            "v9",
            Some(0.2),
            Some(Duration::from_millis(5)),
        );
        assert_eq!(p.canary.version, "v9");
        assert_eq!(p.canary.error_rate, 0.2);
        assert_eq!(p.canary.median_latency, Duration::from_millis(5));
    }

    #[test]
    fn rates_parse_as_percentages_or_fractions() {
        assert_eq!(parse_rate("5%"), Ok(0.05));
        assert_eq!(parse_rate("0.05"), Ok(0.05));
        assert_eq!(parse_rate("0.005"), Ok(0.005));
        assert!(parse_rate("150%").is_err());
        assert!(parse_rate("5").is_err());
        assert!(parse_rate("-1%").is_err());
        assert!(parse_rate("x").is_err());
    }
}
