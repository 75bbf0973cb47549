//! How much harm a bad canary does through `fledge serve` before it is rolled back:
//! the driver of `bench/blast-radius.sh`.
//!
//! It starts two loopback upstreams (stable always answers 200; the canary answers
//! 500 to a given share of requests, drawn at random), runs the real `fledge serve`
//! binary in front of them (app `shop`, the built-in proxy), and sends open-loop load
//! at a fixed rate through the proxy. For each cell (canary error rate × rate) it
//! creates rollouts one after another (a canary held at 20% with `error_rate < 1%`
//! and the default analysis) and measures, per run:
//!
//! * time to rollback: from the canary's first request (as the canary upstream saw
//!   it) to the `Failed` decision (its event's time);
//! * failed user requests: the load generator's 5xx answers and errors from the
//!   rollout's creation until every request in flight at the rollback has ended.
//!
//! Beside them it prints what the engine's simulator gives for the same rate,
//! weight and criterion with the server's evidence looks (0.1 s) and with 1-s ticks.
//!
//! Usage: `blast_radius --fledge PATH [--runs 10] [--rps 100,300,1000]
//! [--errors 0.05,1]`

mod common;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, UNIX_EPOCH};

use fledge_api::Action;
use fledge_api::client::ApiClient;
use fledge_engine::Phase;
use fledge_engine::judge::sequential::{SequentialCriterion, SequentialJudge};
use fledge_engine::sim::{JudgeController, Scenario, run_many, summarize};

use common::{Load, Upstream, args_or_exit, quantile, serve_shop};

/// The canary's share of requests during the held stage.
const WEIGHT: u8 = 20;
/// How long one rollout may take to be rolled back before the run counts as missed.
const RUN_LIMIT: Duration = Duration::from_secs(60);

struct Args {
    fledge: PathBuf,
    runs: usize,
    rates: Vec<u32>,
    errors: Vec<f64>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        fledge: PathBuf::new(),
        runs: 10,
        rates: vec![100, 300, 1000],
        errors: vec![0.05, 1.0],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let list = |v: &str| v.split(',').map(str::to_owned).collect::<Vec<_>>();
        match flag.as_str() {
            "--fledge" => a.fledge = value.into(),
            "--runs" => a.runs = value.parse().map_err(|e| format!("--runs: {e}"))?,
            "--rps" => {
                a.rates = list(&value)
                    .iter()
                    .map(|v| v.parse().map_err(|e| format!("--rps {v}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--errors" => {
                a.errors = list(&value)
                    .iter()
                    .map(|v| v.parse().map_err(|e| format!("--errors {v}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.fledge.as_os_str().is_empty() {
        return Err("--fledge PATH (the fledge binary) is required".into());
    }
    Ok(a)
}

/// One rollout until it is rolled back: (seconds from the canary's first request
/// to the `Failed` decision, failed user requests), or `None` when it was not
/// rolled back in time.
async fn run_once(
    api: &ApiClient,
    canary: &Upstream,
    load: &Load,
    version: &str,
) -> Option<(f64, u64)> {
    canary.first_request_ms.store(0, Ordering::Relaxed);
    let spec = format!(
        "app: shop\nversion: {version}\nstages:\n  - traffic: {WEIGHT}\n    duration: 10m\n    \
         successCriteria:\n      - error_rate < 1%\n  - traffic: 100\n    final: true\n    promote: true\n"
    );
    let failed_before = load.failed();
    let created = api
        .create_rollout(spec, "application/yaml", Some("blast-radius.yaml"))
        .await
        .expect("the rollout is created");
    let started = Instant::now();
    let rollout = loop {
        let r = api.rollout(&created.id).await.expect("the rollout reads");
        if !matches!(r.phase, Phase::Progressing | Phase::Pending) {
            break r;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = api.act(&created.id, Action::Abort, false, None).await;
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The requests in flight at the rollback end within the upstreams' answer time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let failed = load.failed() - failed_before;
    let events = api.rollout_events(&rollout.id, 0).await.ok()?;
    let at = events.iter().find(|e| e.kind == "Failed")?.at.clone();
    let decided = humantime::parse_rfc3339(&at).ok()?;
    let decided_ms = decided.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64;
    let first = canary.first_request_ms.load(Ordering::Relaxed);
    (first > 0).then(|| (decided_ms.saturating_sub(first) as f64 / 1000.0, failed))
}

/// The engine simulator's (t50, t95, failed50, failed95) for the same cell, with
/// judgements every `look` seconds.
fn simulated(rps: u32, error_rate: f64, look: f64) -> (f64, f64, f64, f64) {
    let mut s = Scenario::reference();
    s.rps = f64::from(rps);
    s.stable_error_rate = 0.0;
    s.canary_error_rate = error_rate;
    s.duration_seconds = 120.0;
    s.step_seconds = look;
    s.telemetry.scrape_seconds = look;
    let criterion = SequentialCriterion::error_rate_below(0.01);
    let make = || {
        JudgeController::new(
            SequentialJudge::new(vec![criterion.clone()], 0.05).expect("a valid criterion"),
            f64::from(WEIGHT) / 100.0,
        )
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let summary = summarize(&run_many(&s, make, 20_261_203, 500, threads));
    let (t50, t95) = summary
        .detection_seconds
        .map_or((f64::NAN, f64::NAN), |d| (d.p50, d.p95));
    (
        t50,
        t95,
        summary.failed_requests.p50,
        summary.failed_requests.p95,
    )
}

#[tokio::main]
async fn main() {
    let args = args_or_exit("blast_radius", args());
    let shop = serve_shop(&args.fledge).await;
    let (api, canary) = (&shop.api, &shop.canary);
    let proxy = shop.setup.proxy;

    println!(
        "A canary at {WEIGHT}% with `error_rate < 1%` (default analysis) through `fledge serve`; \
         {} runs per row. Time from the canary's first request to the rollback decision; \
         failed = user requests that failed (5xx or error).",
        args.runs
    );
    println!(
        "\n| canary errors | rps | rolled back | time to rollback p50 / p95 (s) | failed requests p50 / p95 | sim 0.1-s looks: t p50 / p95, failed p50 / p95 | sim 1-s ticks: t p50 / p95, failed p50 / p95 |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut n = 0;
    for &error_rate in &args.errors {
        canary.fail(error_rate);
        for &rps in &args.rates {
            let load = Load::start(proxy, rps);
            // Let connections warm up before the first rollout.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut times = Vec::new();
            let mut failed = Vec::new();
            for _ in 0..args.runs {
                n += 1;
                if let Some((t, f)) = run_once(api, canary, &load, &format!("v2-{n}")).await {
                    times.push(t);
                    failed.push(f as f64);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            load.stop().await;
            let live = simulated(rps, error_rate, 0.1);
            let ticks = simulated(rps, error_rate, 1.0);
            println!(
                "| {:.0}% | {rps} | {}/{} | {:.2} / {:.2} | {:.0} / {:.0} | {:.2} / {:.2}, {:.0} / {:.0} | {:.2} / {:.2}, {:.0} / {:.0} |",
                error_rate * 100.0,
                times.len(),
                args.runs,
                quantile(&times, 0.5),
                quantile(&times, 0.95),
                quantile(&failed, 0.5),
                quantile(&failed, 0.95),
                live.0,
                live.1,
                live.2,
                live.3,
                ticks.0,
                ticks.1,
                ticks.2,
                ticks.3,
            );
        }
    }
}
