//! `fledge status`: every app, its stable version, its active rollout and the live
//! health of both versions.

use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::client::{ApiClient, ClientArgs};
use super::get::{format_value, trim_float};
use super::output::{self, Table};

/// Arguments of `fledge status` (none beyond the global flags).
#[derive(Debug, Args)]
pub struct StatusArgs {}

/// Runs `fledge status`.
pub async fn run(client_args: &ClientArgs, _args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let client = ApiClient::from_args(client_args)?;
    let raw = client.status().await?;
    match output::render_machine(client_args.output, &raw)? {
        Some(text) => print!("{text}"),
        None => print!("{}", render(&raw)),
    }
    Ok(ExitCode::SUCCESS)
}

/// One app's row of the status table, read from `GET /status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppStatus {
    /// The app's name.
    pub name: String,
    /// Its stable version.
    pub stable_version: String,
    /// The active (or latest) rollout's id.
    pub rollout_id: Option<String>,
    /// The version being rolled out.
    pub canary_version: Option<String>,
    /// The rollout's phase; `None` when the app has no rollout.
    pub phase: Option<String>,
    /// `2/3`.
    pub stage: Option<String>,
    /// The canary's weight in percent.
    pub weight: Option<f64>,
    /// Live health of the stable version.
    pub stable: ArmHealth,
    /// Live health of the canary version.
    pub canary: ArmHealth,
}

/// Live health of one version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArmHealth {
    /// Requests counted.
    pub requests: Option<u64>,
    /// Errors counted.
    pub errors: Option<u64>,
    /// Error rate as a fraction.
    pub error_rate: Option<f64>,
    /// p95 latency in seconds.
    pub p95_seconds: Option<f64>,
}

/// The first of `paths` (JSON pointers) present and non-null in `v`.
fn pick<'a>(v: &'a Value, paths: &[&str]) -> Option<&'a Value> {
    paths
        .iter()
        .filter_map(|p| v.pointer(p))
        .find(|x| !x.is_null())
}

fn text(v: &Value, paths: &[&str]) -> Option<String> {
    pick(v, paths).map(|x| match x {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn num(v: &Value, paths: &[&str]) -> Option<f64> {
    pick(v, paths).and_then(Value::as_f64)
}

// === impl ArmHealth ===

impl ArmHealth {
    /// Reads one version's health; latencies are in seconds unless the field name
    /// says milliseconds.
    pub fn from_value(v: &Value) -> Self {
        let requests = num(v, &["/requests", "/total", "/count"]).map(|n| n as u64);
        let errors = num(v, &["/errors", "/errorCount"]).map(|n| n as u64);
        let error_rate = num(v, &["/errorRate", "/error_rate"]).or(match (requests, errors) {
            (Some(r), Some(e)) if r > 0 => Some(e as f64 / r as f64),
            _ => None,
        });
        let p95_seconds = num(
            v,
            &[
                "/latencyP95",
                "/latency_p95",
                "/p95",
                "/p95Seconds",
                "/latency/p95",
            ],
        )
        .or_else(|| num(v, &["/p95Ms", "/latencyP95Ms"]).map(|ms| ms / 1000.0));
        Self {
            requests,
            errors,
            error_rate,
            p95_seconds,
        }
    }

    fn error_label(&self) -> String {
        self.error_rate
            .map(|r| format_value(r, "ratio"))
            .unwrap_or_else(|| "-".into())
    }

    fn p95_label(&self) -> String {
        self.p95_seconds
            .map(|s| format_value(s, "seconds"))
            .unwrap_or_else(|| "-".into())
    }
}

// === impl AppStatus ===

impl AppStatus {
    /// Reads one app's entry of `GET /status`.
    pub fn from_value(v: &Value) -> Self {
        let rollout = pick(v, &["/rollout", "/activeRollout", "/active"]).cloned();
        let r = rollout.as_ref().unwrap_or(&Value::Null);
        let stage = match (
            num(r, &["/stageIndex"]),
            num(r, &["/stageCount", "/stages/length"]).or_else(|| {
                r.get("stages")
                    .and_then(Value::as_array)
                    .map(|a| a.len() as f64)
            }),
        ) {
            (Some(i), Some(n)) => Some(format!("{}/{}", i as u64 + 1, n as u64)),
            (Some(i), None) => Some(format!("{}", i as u64 + 1)),
            _ => None,
        };
        // Each version's health sits under its own entry (`stable.health`, `canary`)
        // or under a common `health` object.
        let arm = |paths: &[&str]| {
            pick(v, paths)
                .filter(|x| x.is_object())
                .map(ArmHealth::from_value)
                .unwrap_or_default()
        };
        Self {
            name: text(v, &["/name", "/app"]).unwrap_or_default(),
            stable_version: text(v, &["/stableVersion", "/stable/version"]).unwrap_or_default(),
            rollout_id: text(r, &["/id"]),
            canary_version: text(r, &["/version"]),
            phase: text(r, &["/phase"]),
            stage,
            weight: num(r, &["/canaryWeight", "/weight"])
                .or_else(|| num(v, &["/canaryWeight", "/weight"])),
            stable: arm(&["/stable/health", "/health/stable"]),
            canary: arm(&["/canary/health", "/health/canary", "/canary"]),
        }
    }
}

/// Every app of `GET /status` (a list, or an object with `apps`).
pub fn apps(raw: &Value) -> Vec<AppStatus> {
    let list = match raw {
        Value::Array(a) => a.as_slice(),
        _ => raw
            .get("apps")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]),
    };
    list.iter().map(AppStatus::from_value).collect()
}

/// The status table.
pub fn render(raw: &Value) -> String {
    let apps = apps(raw);
    if apps.is_empty() {
        return "no apps registered\n".to_string();
    }
    let mut t = Table::new([
        "APP",
        "STABLE",
        "ROLLOUT",
        "PHASE",
        "STAGE",
        "WEIGHT",
        "ERRORS STABLE/CANARY",
        "P95 STABLE/CANARY",
    ]);
    for a in apps {
        t.row([
            a.name.clone(),
            a.stable_version.clone(),
            match (&a.canary_version, &a.rollout_id) {
                (Some(v), Some(id)) => format!("{v} ({id})"),
                (Some(v), None) => v.clone(),
                (None, Some(id)) => id.clone(),
                (None, None) => "-".into(),
            },
            a.phase.clone().unwrap_or_else(|| "-".into()),
            a.stage.clone().unwrap_or_else(|| "-".into()),
            a.weight
                .map(|w| format!("{}%", trim_float(w)))
                .unwrap_or_else(|| "-".into()),
            format!("{} / {}", a.stable.error_label(), a.canary.error_label()),
            format!("{} / {}", a.stable.p95_label(), a.canary.p95_label()),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_an_app_with_an_active_rollout() {
        let raw = json!({"apps": [{
            "name": "checkout", "stableVersion": "v1",
            "rollout": {"id": "r1", "version": "v2", "phase": "Progressing",
                        "stageIndex": 1, "stages": [{}, {}, {}], "canaryWeight": 50},
            "health": {"stable": {"requests": 1000, "errors": 1, "latencyP95": 0.012},
                       "canary": {"requests": 1000, "errors": 50, "p95Ms": 40.0}}
        }, {"name": "idle", "stable": {"version": "v9"}}]});
        let text = render(&raw);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains("checkout"), "{text}");
        assert!(lines[1].contains("v2 (r1)"), "{text}");
        assert!(lines[1].contains("2/3"), "{text}");
        assert!(lines[1].contains("50%"), "{text}");
        assert!(lines[1].contains("0.10% / 5.0%"), "{text}");
        assert!(lines[1].contains("12ms / 40ms"), "{text}");
        assert!(lines[2].starts_with("idle"), "{text}");
        assert!(lines[2].contains("v9"), "{text}");
    }

    #[test]
    fn reads_health_under_each_version() {
        let raw = json!({"apps": [{
            "name": "shop", "stable": {"version": "v1", "endpoints": [],
                "health": {"requests": 100, "errors": 2, "errorRate": 0.02, "p95Ms": 61.0}},
            "canary": {"requests": 10, "errors": 0, "errorRate": 0.0, "p95Ms": 250.0},
            "rollout": null
        }]});
        let app = &apps(&raw)[0];
        assert_eq!(app.stable_version, "v1");
        assert_eq!(app.stable.error_rate, Some(0.02));
        assert_eq!(app.canary.p95_seconds, Some(0.25));
        assert_eq!(app.phase, None);
        assert!(render(&raw).contains("2.0% / 0%"));
    }
}
