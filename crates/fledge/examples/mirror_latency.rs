//! Whether a dark canary slows users down: the driver of `bench/mirror.sh`.
//!
//! It starts two loopback upstreams, runs the real `fledge serve` binary in front of
//! them (app `shop`, the built-in proxy) and sends open-loop load at a fixed rate
//! through the proxy, measuring each user request from its due time to its
//! response headers. In interleaved rounds it measures three conditions:
//!
//! * `stable`: no rollout, stable serves everything;
//! * `mirror`: a rollout held in a stage with `traffic: 0, mirror: 100`, every
//!   request copied to a healthy canary;
//! * `mirror-slow`: the same, with a canary that waits `--slow-ms` before each
//!   answer, so that copies pile up to the per-app limit and are dropped.
//!
//! Per condition it prints the medians over rounds of the users' p50 and p99, the
//! p99's difference from `stable`, and the copies sent and dropped (by reason) as
//! `/metrics` counts them.
//!
//! Usage: `mirror_latency --fledge PATH [--rounds 5] [--seconds 10] [--rps 2000]
//! [--slow-ms 200]`

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use fledge_api::Action;
use fledge_api::client::ApiClient;

use common::{Load, args_or_exit, quantile, serve_shop};

/// The conditions, in the order each round measures them.
const CONDITIONS: [&str; 3] = ["stable", "mirror", "mirror-slow"];

struct Args {
    fledge: PathBuf,
    rounds: usize,
    seconds: u64,
    rps: u32,
    slow_ms: u64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        fledge: PathBuf::new(),
        rounds: 5,
        seconds: 10,
        rps: 2000,
        slow_ms: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--fledge" => a.fledge = value.into(),
            "--rounds" => a.rounds = value.parse().map_err(bad)?,
            "--seconds" => a.seconds = value.parse().map_err(bad)?,
            "--rps" => a.rps = value.parse().map_err(bad)?,
            "--slow-ms" => a.slow_ms = value.parse().map_err(bad)?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.fledge.as_os_str().is_empty() {
        return Err("--fledge PATH (the fledge binary) is required".into());
    }
    if a.rounds == 0 || a.seconds == 0 || a.rps == 0 {
        return Err("--rounds, --seconds and --rps must be above zero".into());
    }
    Ok(a)
}

/// The mirror counters of app `shop`'s canary `version` on a `/metrics` page:
/// `mirrored` and `dropped <reason>`. (One version's series: the proxy keeps a
/// bounded number of them, forgetting old versions.)
fn mirror_counters(metrics: &str, version: &str) -> BTreeMap<String, f64> {
    let labels = format!("app=\"shop\",version=\"{version}\"");
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if !series.contains(&labels) {
            continue;
        }
        let key = if series.starts_with("fledge_proxy_mirrored_total{") {
            "mirrored".to_owned()
        } else if series.starts_with("fledge_proxy_mirror_dropped_total{") {
            let reason = series
                .split("reason=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("?");
            format!("dropped {reason}")
        } else {
            continue;
        };
        *out.entry(key).or_default() += value;
    }
    out
}

async fn counters(http: &reqwest::Client, api: &str, version: &str) -> BTreeMap<String, f64> {
    let page = http
        .get(format!("http://{api}/metrics"))
        .header("accept", "text/plain")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET /metrics answers");
    mirror_counters(&page.text().await.expect("the metrics page reads"), version)
}

/// Starts a rollout of `version` held in the dark: every request copied to the
/// canary, none served by it, until someone promotes or aborts it.
async fn start_dark(api: &ApiClient, version: &str) -> String {
    let spec = format!(
        "app: shop\nversion: {version}\nstages:\n  - traffic: 0\n    mirror: 100\n  \
         - traffic: 100\n    final: true\n    promote: true\n"
    );
    let r = api
        .create_rollout(spec, "application/yaml", Some("mirror-latency.yaml"))
        .await
        .expect("the dark rollout is created");
    // The copies start once the router serves the stage.
    for _ in 0..100 {
        if api
            .rollout(&r.id)
            .await
            .is_ok_and(|r| r.canary_mirror == 100)
        {
            return r.id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rollout {} did not start copying within 5 s", r.id);
}

/// One condition's figures in one round.
struct Sample {
    p50: f64,
    p99: f64,
    requests: usize,
    failed: u64,
    counters: BTreeMap<String, f64>,
}

#[tokio::main]
async fn main() {
    let args = args_or_exit("mirror_latency", args());
    let shop = serve_shop(&args.fledge).await;
    let (api, canary) = (&shop.api, &shop.canary);
    let http = reqwest::Client::new();
    let api_addr = shop.setup.api.to_string();
    let slow = Duration::from_millis(args.slow_ms);

    // Warm-up: the proxy's upstream pools and the load generator's connections.
    let warm = Load::start(shop.setup.proxy, args.rps);
    tokio::time::sleep(Duration::from_secs(2)).await;
    warm.stop().await;

    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    let mut n = 0;
    for round in 1..=args.rounds {
        for condition in CONDITIONS {
            n += 1;
            let version = format!("v2-{n}");
            let rollout = if condition == "stable" {
                None
            } else {
                Some(start_dark(api, &version).await)
            };
            canary.slow(if condition == "mirror-slow" {
                slow
            } else {
                Duration::ZERO
            });
            let before = counters(&http, &api_addr, &version).await;
            let load = Load::recording(shop.setup.proxy, args.rps);
            tokio::time::sleep(Duration::from_secs(args.seconds)).await;
            let failed = load.failed();
            let latencies = load.stop().await;
            let mut delta = counters(&http, &api_addr, &version).await;
            for (k, v) in &mut delta {
                *v -= before.get(k).copied().unwrap_or(0.0);
            }
            if let Some(id) = rollout {
                api.act(
                    &id,
                    Action::Abort,
                    false,
                    Some("benchmark condition over".into()),
                )
                .await
                .expect("the dark rollout aborts");
            }
            canary.slow(Duration::ZERO);
            let s = Sample {
                p50: quantile(&latencies, 0.5),
                p99: quantile(&latencies, 0.99),
                requests: latencies.len(),
                failed,
                counters: delta,
            };
            eprintln!(
                "round {round} {condition:<11} {:>6} requests ({} failed)  p50 {:7.3} ms  p99 {:7.3} ms  {:?}",
                s.requests, s.failed, s.p50, s.p99, s.counters
            );
            samples.entry(condition).or_default().push(s);
        }
    }

    let median = |v: Vec<f64>| quantile(&v, 0.5);
    let p99_of = |c: &str| median(samples[c].iter().map(|s| s.p99).collect());
    let base = p99_of("stable");
    println!(
        "\nUsers' latency through `fledge serve` at {} requests/s (open loop, loopback), \
         {} rounds x {} s per condition, interleaved; medians over rounds. Slow canary: +{} ms.",
        args.rps, args.rounds, args.seconds, args.slow_ms
    );
    println!(
        "\n| condition | p50 ms | p99 ms | p99 - stable p99 ms | within +1 ms | failed (all rounds) | copies sent (all rounds) | copies dropped (all rounds) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for condition in CONDITIONS {
        let rows = &samples[condition];
        let p50 = median(rows.iter().map(|s| s.p50).collect());
        let p99 = p99_of(condition);
        let failed: u64 = rows.iter().map(|s| s.failed).sum();
        let mut sent = 0.0;
        let mut dropped: BTreeMap<&str, f64> = BTreeMap::new();
        for s in rows {
            for (k, v) in &s.counters {
                match k.strip_prefix("dropped ") {
                    Some(reason) if *v > 0.0 => *dropped.entry(reason).or_default() += v,
                    Some(_) => {}
                    None => sent += v,
                }
            }
        }
        let dropped = if dropped.is_empty() {
            "0".to_owned()
        } else {
            dropped
                .iter()
                .map(|(reason, n)| format!("{n:.0} {reason}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let within = if p99 - base <= 1.0 { "yes" } else { "no" };
        println!(
            "| {condition} | {p50:.3} | {p99:.3} | {:+.3} | {within} | {failed} | {sent:.0} | {dropped} |",
            p99 - base
        );
    }
}
