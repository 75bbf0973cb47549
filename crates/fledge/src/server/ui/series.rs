//! A short per-app history of live health, so the rollout page can draw its charts
//! over the rollout's whole life even when the page was opened late or reloaded.
//!
//! The recorder listens to the same `status` snapshots that `GET /events` streams
//! (one every two seconds) and keeps, per app, the newest [`KEEP`] points: the
//! canary's weight and, for each version, request rate, error rate and latency
//! quantiles over the health window. It lives in memory only: after a restart the
//! charts start again from the restart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::server::sse::LiveMessage;

/// Points kept per app: two hours at one snapshot every two seconds.
pub const KEEP: usize = 3600;

/// The recorded points of every app.
#[derive(Debug, Clone, Default)]
pub struct Series {
    points: Arc<Mutex<HashMap<String, VecDeque<Value>>>>,
}

// === impl Series ===

impl Series {
    /// Records one `status` snapshot taken at `at_ms` (milliseconds since the epoch).
    pub fn record(&self, status: &Value, at_ms: i64) {
        let Some(apps) = status.get("apps").and_then(Value::as_array) else {
            return;
        };
        let mut all = self.points.lock().unwrap_or_else(|e| e.into_inner());
        for app in apps {
            let Some(name) = app.get("name").and_then(Value::as_str) else {
                continue;
            };
            let rollout = app.get("rollout").filter(|r| !r.is_null());
            let point = json!({
                "t": at_ms,
                "rolloutId": rollout.and_then(|r| r.get("id")).cloned().unwrap_or(Value::Null),
                "phase": rollout.and_then(|r| r.get("phase")).cloned().unwrap_or(Value::Null),
                "canaryWeight": rollout.and_then(|r| r.get("canaryWeight")).cloned().unwrap_or(json!(0)),
                "stable": arm(app.pointer("/stable/health")),
                "canary": arm(app.get("canary")),
            });
            let q = all.entry(name.to_owned()).or_default();
            q.push_back(point);
            while q.len() > KEEP {
                q.pop_front();
            }
        }
    }

    /// The app's points taken at or after `since_ms`, oldest first.
    pub fn since(&self, app: &str, since_ms: i64) -> Vec<Value> {
        let all = self.points.lock().unwrap_or_else(|e| e.into_inner());
        all.get(app)
            .map(|q| {
                q.iter()
                    .filter(|p| p.get("t").and_then(Value::as_i64).unwrap_or(0) >= since_ms)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The part of one version's health that the charts draw.
fn arm(health: Option<&Value>) -> Value {
    match health.filter(|h| !h.is_null()) {
        None => Value::Null,
        Some(h) => json!({
            "requestRate": h.get("requestRate").cloned().unwrap_or(Value::Null),
            "errorRate": h.get("errorRate").cloned().unwrap_or(Value::Null),
            "p50Ms": h.get("p50Ms").cloned().unwrap_or(Value::Null),
            "p95Ms": h.get("p95Ms").cloned().unwrap_or(Value::Null),
            "p99Ms": h.get("p99Ms").cloned().unwrap_or(Value::Null),
            "requests": h.get("requests").cloned().unwrap_or(Value::Null),
        }),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Records every `status` message until the live channel closes (the server stopped).
pub async fn run_recorder(series: Series, mut live: broadcast::Receiver<LiveMessage>) {
    loop {
        match live.recv().await {
            Ok(LiveMessage::Status(status)) => series.record(&status, now_ms()),
            Ok(_) => {}
            // Fell behind: the next snapshot comes in two seconds.
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(weight: u8, canary_err: f64) -> Value {
        json!({"apps": [{
            "name": "shop",
            "stable": {"version": "v1", "health": {"version": "v1", "requestRate": 10.0, "errorRate": 0.0, "p50Ms": 1.0, "p95Ms": 2.0, "p99Ms": 3.0, "requests": 100}},
            "canary": {"version": "v2", "requestRate": 2.0, "errorRate": canary_err, "p50Ms": 1.5, "p95Ms": 2.5, "p99Ms": 3.5, "requests": 20},
            "rollout": {"id": "r1", "phase": "Progressing", "canaryWeight": weight},
        }, {
            "name": "idle", "stable": {"version": "v1", "health": null}, "canary": null, "rollout": null,
        }]})
    }

    #[test]
    fn keeps_points_per_app_in_order_and_bounded() {
        let s = Series::default();
        s.record(&status(20, 0.01), 1_000);
        s.record(&status(50, 0.02), 3_000);
        let shop = s.since("shop", 0);
        assert_eq!(shop.len(), 2);
        assert_eq!(shop[1]["canaryWeight"], 50);
        assert_eq!(shop[1]["canary"]["errorRate"], 0.02);
        assert_eq!(shop[0]["rolloutId"], "r1");
        assert_eq!(s.since("shop", 2_000).len(), 1);
        let idle = s.since("idle", 0);
        assert_eq!(
            (
                idle[0]["canaryWeight"].as_i64(),
                idle[0]["stable"].is_null()
            ),
            (Some(0), true)
        );
        assert!(s.since("nope", 0).is_empty());
        for i in 0..(KEEP as i64 + 10) {
            s.record(&status(20, 0.0), 10_000 + i);
        }
        let shop = s.since("shop", 0);
        assert_eq!(shop.len(), KEEP);
        assert_eq!(shop[0]["t"], 10_010);
    }
}
