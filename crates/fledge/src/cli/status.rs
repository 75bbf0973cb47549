//! `fledge status`: every app, its stable version, its active rollout and the live
//! health of both versions.

use std::process::ExitCode;

use clap::Args;
use fledge_api::status::{AppStatus, ArmHealth};

use super::client::{self, ClientArgs};
use super::kube::{self, KubeArgs};
use crate::view::output::{self, Table};

/// Arguments of `fledge status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// `--kube [-n NAMESPACE]`: the namespace's CanaryRollouts instead of the
    /// server's apps.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Runs `fledge status`.
pub async fn run(client_args: &ClientArgs, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    if args.kube.kube {
        return kube::status(client_args, &args.kube).await;
    }
    let client = client::connect(client_args)?;
    let status = client.status().await?;
    match output::render_machine(client_args.format(), &status)? {
        Some(text) => print!("{text}"),
        None => print!("{}", render(&status.apps)),
    }
    Ok(ExitCode::SUCCESS)
}

fn error_label(health: Option<&ArmHealth>) -> String {
    health
        .and_then(|h| h.error_rate)
        .map(output::percent)
        .unwrap_or_else(|| "-".into())
}

fn p95_label(health: Option<&ArmHealth>) -> String {
    health
        .and_then(|h| h.p95_ms)
        .map(|ms| output::latency(ms / 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// The status table.
pub fn render(apps: &[AppStatus]) -> String {
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
        let r = a.rollout.as_ref();
        let stable = a.stable.health.as_ref();
        let canary = a.canary.as_ref();
        t.row([
            a.name.clone(),
            // The version `fledge undo` would go back to, when there is one.
            match a.previous_stable.as_deref() {
                Some(previous) if previous != a.stable.version => {
                    format!("{} (undo: {previous})", a.stable.version)
                }
                _ => a.stable.version.clone(),
            },
            r.map_or_else(|| "-".into(), |r| format!("{} ({})", r.version, r.id)),
            r.map_or_else(|| "-".into(), |r| r.phase.as_str().to_owned()),
            r.map_or_else(
                || "-".into(),
                |r| format!("{}/{}", r.stage_index + 1, r.stage_count),
            ),
            r.map_or_else(|| "-".into(), |r| format!("{}%", r.canary_weight)),
            format!("{} / {}", error_label(stable), error_label(canary)),
            format!("{} / {}", p95_label(stable), p95_label(canary)),
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
        let health = |rate: f64, p95: f64| {
            json!({"version": "v", "requestRate": 10.0, "errorRate": rate, "p50Ms": 1.0,
                   "p95Ms": p95, "p99Ms": p95, "requests": 1000, "errors": 1, "totalRequests": 1000})
        };
        let status: fledge_api::status::Status = serde_json::from_value(json!({"apps": [{
            "name": "checkout", "proxy": null, "windowSeconds": 10.0,
            "stable": {"version": "v1", "endpoints": [], "health": health(0.001, 12.0)},
            "canary": health(0.05, 40.0),
            "rollout": {"id": "r1", "version": "v2", "phase": "Progressing", "stageIndex": 1,
                        "stageCount": 3, "canaryWeight": 50, "updatedAt": "2026-12-02T00:00:00Z"},
        }, {
            "name": "idle", "proxy": null, "windowSeconds": 10.0, "previousStable": "v8",
            "stable": {"version": "v9", "endpoints": [], "health": null},
            "canary": null, "rollout": null,
        }], "controller": {"replica": "a", "leader": true, "epoch": 1}}))
        .unwrap();
        let text = render(&status.apps);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains("checkout"), "{text}");
        assert!(lines[1].contains("v2 (r1)"), "{text}");
        assert!(lines[1].contains("2/3"), "{text}");
        assert!(lines[1].contains("50%"), "{text}");
        assert!(lines[1].contains("0.10% / 5.0%"), "{text}");
        assert!(lines[1].contains("12ms / 40ms"), "{text}");
        assert!(lines[2].starts_with("idle"), "{text}");
        assert!(lines[2].contains("v9 (undo: v8)"), "{text}");
    }
}
