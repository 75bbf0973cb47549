//! Live health of every app's two versions (request rate, error rate, latency
//! quantiles over the last seconds), for `GET /status` and the live event stream.
//!
//! A sampler reads each app's metric source once a second and keeps a short window
//! of cumulative readings; rates are differences across the window.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fledge_stats::ArmCounters;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use fledge_providers::metrics::ObserveQuery;

/// How far back rates look.
pub const WINDOW: Duration = Duration::from_secs(10);
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    stable_version: String,
    canary_version: Option<String>,
    stable: ArmCounters,
    canary: ArmCounters,
}

/// The recent readings of every app.
#[derive(Debug, Default)]
pub struct HealthTracker {
    samples: Mutex<HashMap<String, VecDeque<Sample>>>,
}

pub use fledge_api::status::ArmHealth;

/// Both versions' health.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppHealth {
    /// The stable version.
    pub stable: Option<ArmHealth>,
    /// The canary version, while a rollout is active.
    pub canary: Option<ArmHealth>,
    /// Seconds the rates cover.
    pub window_seconds: f64,
}

fn arm(version: &str, newest: &ArmCounters, oldest: &ArmCounters, secs: f64) -> ArmHealth {
    let d = newest.delta_since(oldest);
    let ms = |q: f64| d.latency.quantile(q).map(|s| s * 1000.0);
    ArmHealth {
        version: version.to_owned(),
        request_rate: if secs > 0.0 {
            d.requests as f64 / secs
        } else {
            0.0
        },
        error_rate: (d.requests > 0).then(|| d.errors as f64 / d.requests as f64),
        p50_ms: ms(0.5),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        requests: d.requests,
        errors: d.errors,
        total_requests: newest.requests,
    }
}

// === impl HealthTracker ===

impl HealthTracker {
    fn record(&self, app: &str, sample: Sample) {
        let mut all = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let q = all.entry(app.to_owned()).or_default();
        // A version change (promotion, new rollout) starts a new window.
        if q.back().is_some_and(|b| {
            b.stable_version != sample.stable_version || b.canary_version != sample.canary_version
        }) {
            q.clear();
        }
        q.push_back(sample);
        while q.len() > 2 && q.front().is_some_and(|f| f.at.elapsed() > WINDOW) {
            q.pop_front();
        }
    }

    /// The app's recent health; empty until two readings exist.
    pub fn app(&self, app: &str) -> AppHealth {
        let all = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let Some(q) = all.get(app) else {
            return AppHealth::default();
        };
        let (Some(oldest), Some(newest)) = (q.front(), q.back()) else {
            return AppHealth::default();
        };
        let secs = newest.at.duration_since(oldest.at).as_secs_f64();
        AppHealth {
            stable: Some(arm(
                &newest.stable_version,
                &newest.stable,
                &oldest.stable,
                secs,
            )),
            canary: newest
                .canary_version
                .as_deref()
                .map(|v| arm(v, &newest.canary, &oldest.canary, secs)),
            window_seconds: secs,
        }
    }

    /// Forgets an app.
    pub fn forget(&self, app: &str) {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app);
    }
}

/// Reads every app's metric source once a second until `stop`.
pub async fn run_sampler(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for app in shared.apps.all().await {
            let config = app.config().await;
            let canary_version = app
                .applied_route()
                .await
                .and_then(|r| r.canary.map(|c| c.version));
            let query = ObserveQuery {
                app: app.name.clone(),
                stable_version: config.stable.version.clone(),
                canary_version: canary_version.clone().unwrap_or_default(),
                window: WINDOW,
                custom: Vec::new(),
            };
            match app.metrics().await.observe(&query).await {
                Ok(obs) => shared.health.record(
                    &app.name,
                    Sample {
                        at: Instant::now(),
                        stable_version: config.stable.version,
                        canary_version,
                        stable: obs.stable,
                        canary: obs.canary,
                    },
                ),
                Err(e) => {
                    tracing::debug!(app = %app.name, error = %format!("{e:#}"), "health sample failed");
                }
            }
        }
    }
}
