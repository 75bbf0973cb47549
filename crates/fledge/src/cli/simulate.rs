//! `fledge simulate -f SPEC`: runs the real rollout engine against simulated traffic
//! in virtual time, many seeded times, and reports how it decides.
//!
//! Every run feeds the spec's rollout engine (the same `step` function the server
//! runs) with the cumulative counters of a simulated service: Poisson arrivals,
//! per-request random routing at the engine's weights, Binomial errors and lognormal
//! latencies (see `fledge_engine::sim`); a dark stage (`mirror`) copies its share of
//! stable's requests to the canary, which are judged but never served to users.
//! Printed over all runs: the verdicts, the time from the first canary request (or
//! copy) to the rollback, the canary's failed requests users saw, and,
//! when the canary is as healthy as stable, the false-abort rate with its exact 95%
//! interval. `-o json` prints one JSON object with the same figures.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use fledge_engine::sim::{
    Diurnal, EngineController, LatencyModel, Scenario, Summary, Telemetry, run_many, summarize,
};
use serde_json::{Value, json};

use crate::demo::scenario::parse_rate;
use crate::view::output::{OutputArgs, OutputFormat, Table, render_machine};

/// Arguments of `fledge simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The rollout spec to simulate (YAML or JSON).
    #[arg(short = 'f', long = "file", value_name = "SPEC")]
    pub file: PathBuf,
    /// Mean requests per second over both versions.
    #[arg(long, default_value_t = 1000.0, value_parser = positive)]
    pub rps: f64,
    /// The canary's error rate: `5%` or a fraction (`0.05`).
    #[arg(long, default_value = "0.1%", value_parser = parse_rate)]
    pub canary_error_rate: f64,
    /// The stable version's error rate: `0.1%` or a fraction.
    #[arg(long, default_value = "0.1%", value_parser = parse_rate)]
    pub stable_error_rate: f64,
    /// The stable version's p95 latency.
    #[arg(long, default_value = "250ms", value_parser = fledge_spec::duration::parse_arg)]
    pub stable_p95: Duration,
    /// The canary's latency relative to stable (`2` doubles every quantile).
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub canary_latency_factor: f64,
    /// Spread σ of the lognormal latency (0.5 is typical of web services).
    #[arg(long, default_value_t = 0.5, value_parser = positive)]
    pub latency_sigma: f64,
    /// Number of seeded runs.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub runs: u32,
    /// Seed of the first run (run i uses seed + i).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Virtual time simulated per run, unless the rollout ends sooner.
    #[arg(long, default_value = "1h", value_parser = fledge_spec::duration::parse_arg)]
    pub duration: Duration,
    /// Step of the simulated world (counters advance once per tick).
    #[arg(long, default_value = "1s", value_parser = fledge_spec::duration::parse_arg)]
    pub tick: Duration,
    /// Time between metric reads; default: the spec's `analysis.interval`.
    #[arg(long, value_parser = fledge_spec::duration::parse_arg)]
    pub scrape: Option<Duration>,
    /// Delay between reading the counters and the engine seeing them.
    #[arg(long, default_value = "0s", value_parser = fledge_spec::duration::parse_arg)]
    pub lag: Duration,
    /// Delay between a weight decision and the router applying it.
    #[arg(long, default_value = "0s", value_parser = fledge_spec::duration::parse_arg)]
    pub actuation: Duration,
    /// Stable-only traffic before the canary receives any.
    #[arg(long, default_value = "0s", value_parser = fledge_spec::duration::parse_arg)]
    pub warmup: Duration,
    /// Daily-style swing of the traffic, relative (0.8 = ±80%).
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    pub diurnal_amplitude: f64,
    /// Period of the traffic swing.
    #[arg(long, default_value = "10m", value_parser = fledge_spec::duration::parse_arg)]
    pub diurnal_period: Duration,
    /// The canary's realized share of requests relative to its weight (1.1 turns
    /// 20% into 22%).
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub share_bias: f64,
    /// `-o table|json|yaml`.
    #[command(flatten)]
    pub output: OutputArgs,
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a positive number, found `{s}`")),
    }
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a number from 0 to below 1, found `{s}`")),
    }
}

/// Runs `fledge simulate`.
pub fn run(args: &SimulateArgs) -> ExitCode {
    match simulate(args, args.output.format) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn simulate(args: &SimulateArgs, format: OutputFormat) -> anyhow::Result<()> {
    let name = args.file.display().to_string();
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {name}"))?;
    let spec = fledge_spec::parse_spec_bytes(&bytes, &name).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Starting is deterministic: if it works once it works for every run.
    EngineController::start(&spec).context("the engine cannot start this rollout")?;
    if args.tick.is_zero() {
        bail!("--tick must be more than 0s");
    }
    let scenario = Scenario {
        rps: args.rps,
        diurnal: (args.diurnal_amplitude > 0.0).then(|| Diurnal {
            amplitude: args.diurnal_amplitude,
            period_seconds: args.diurnal_period.as_secs_f64().max(1.0),
        }),
        share_bias: args.share_bias,
        stable_error_rate: args.stable_error_rate,
        canary_error_rate: args.canary_error_rate,
        canary_pod_sigma: 0.0,
        burst: None,
        latency: Some(LatencyModel {
            stable_p95_seconds: args.stable_p95.as_secs_f64().max(1e-4),
            sigma: args.latency_sigma,
            canary_factor: args.canary_latency_factor,
        }),
        telemetry: Telemetry {
            scrape_seconds: args
                .scrape
                .unwrap_or(spec.analysis.interval)
                .as_secs_f64()
                .max(args.tick.as_secs_f64()),
            lag_seconds: args.lag.as_secs_f64(),
            actuation_seconds: args.actuation.as_secs_f64(),
            drop_probability: 0.0,
            canary_restart_seconds: None,
        },
        warmup_seconds: args.warmup.as_secs_f64(),
        duration_seconds: args.duration.as_secs_f64(),
        step_seconds: args.tick.as_secs_f64(),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let results = run_many(
        &scenario,
        || match EngineController::start(&spec) {
            Ok(c) => c,
            // Checked above; start depends on the spec only.
            Err(e) => unreachable!("engine start failed after succeeding once: {e}"),
        },
        args.seed,
        args.runs as usize,
        threads,
    );
    let summary = summarize(&results);
    let healthy =
        args.canary_error_rate <= args.stable_error_rate && args.canary_latency_factor <= 1.0;
    let value = report(&summary, healthy);
    match render_machine(format, &value)? {
        Some(text) => print!("{text}"),
        None => print!("{}", table(args, &spec, &summary, healthy)),
    }
    Ok(())
}

/// The JSON report: `{"runs", "verdicts", "detectionSeconds", "failedRequests",
/// "falseAbortRate"}`, with `null` for what does not apply.
fn report(s: &Summary, healthy: bool) -> Value {
    // Interpolated quantiles carry float noise (431.7999…); 1/1000 is plenty.
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    let detection = match (healthy, s.detection_seconds) {
        (false, Some(d)) => json!({ "p50": r(d.p50), "p95": r(d.p95) }),
        _ => Value::Null,
    };
    let false_abort = if healthy {
        json!({ "value": s.failed.value, "upper95": s.failed.upper95 })
    } else {
        Value::Null
    };
    json!({
        "runs": s.runs,
        "verdicts": s.verdicts,
        "detectionSeconds": detection,
        "failedRequests": { "median": r(s.failed_requests.p50), "p95": r(s.failed_requests.p95) },
        "falseAbortRate": false_abort,
    })
}

fn table(
    args: &SimulateArgs,
    spec: &fledge_spec::RolloutSpec,
    s: &Summary,
    healthy: bool,
) -> String {
    let pct = |x: f64| crate::view::output::percent(x);
    let mut out = format!(
        "{} {}: {} runs of up to {}, {} rps, canary errors {} vs stable {}, canary latency ×{}\n\n",
        spec.app,
        spec.version,
        s.runs,
        fledge_spec::duration::format(args.duration),
        args.rps,
        pct(args.canary_error_rate),
        pct(args.stable_error_rate),
        args.canary_latency_factor,
    );
    let mut t = Table::new(["figure", "value"]);
    let verdicts = s
        .verdicts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    t.row(["verdicts".to_string(), verdicts]);
    if healthy {
        t.row([
            "false aborts".to_string(),
            format!(
                "{} (95% interval {}–{})",
                pct(s.failed.value),
                pct(s.failed.lower95),
                pct(s.failed.upper95)
            ),
        ]);
    } else if let Some(d) = s.detection_seconds {
        t.row([
            "rollback after first canary request".to_string(),
            format!(
                "p50 {}, p95 {} ({} of runs)",
                crate::view::output::short_duration(d.p50),
                crate::view::output::short_duration(d.p95),
                pct(s.failed.value)
            ),
        ]);
    } else {
        t.row([
            "rollback after first canary request".to_string(),
            "never".to_string(),
        ]);
    }
    t.row([
        "failed canary requests users saw".to_string(),
        format!(
            "median {:.0}, p95 {:.0}",
            s.failed_requests.p50, s.failed_requests.p95
        ),
    ]);
    t.row([
        "canary requests served to users".to_string(),
        format!(
            "median {:.0}, p95 {:.0}",
            s.canary_requests.p50, s.canary_requests.p95
        ),
    ]);
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_has_the_documented_shape() {
        use fledge_engine::sim::{Outcome, RunResult};
        let runs: Vec<RunResult> = (0..4)
            .map(|i| RunResult {
                seed: i,
                outcome: if i == 0 {
                    Outcome::Failed
                } else {
                    Outcome::Succeeded
                },
                decision_seconds: Some(10.0),
                canary_requests: 100,
                canary_failed: i,
            })
            .collect();
        let s = summarize(&runs);
        let v = report(&s, true);
        assert_eq!(v["runs"], 4);
        assert_eq!(v["verdicts"]["Failed"], 1);
        assert_eq!(v["verdicts"]["Succeeded"], 3);
        assert_eq!(v["detectionSeconds"], Value::Null);
        assert_eq!(v["falseAbortRate"]["value"], 0.25);
        assert!(v["falseAbortRate"]["upper95"].as_f64().unwrap() > 0.25);
        assert_eq!(v["failedRequests"]["median"], 1.5);
        let v = report(&s, false);
        assert_eq!(v["falseAbortRate"], Value::Null);
        assert_eq!(v["detectionSeconds"]["p50"], 10.0);
    }
}
