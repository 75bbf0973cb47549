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

use fledge_api::status::{LiveMessage, Status};
use fledge_api::ui::SeriesPoint;
use tokio::sync::broadcast;

/// Points kept per app: two hours at one snapshot every two seconds.
pub const KEEP: usize = 3600;

/// The recorded points of every app.
#[derive(Debug, Clone, Default)]
pub struct Series {
    points: Arc<Mutex<HashMap<String, VecDeque<SeriesPoint>>>>,
}

// === impl Series ===

impl Series {
    /// Records one `status` snapshot taken at `at_ms` (milliseconds since the epoch).
    pub fn record(&self, status: &Status, at_ms: i64) {
        let mut all = self.points.lock().unwrap_or_else(|e| e.into_inner());
        for app in &status.apps {
            let q = all.entry(app.name.clone()).or_default();
            q.push_back(SeriesPoint::of(app, at_ms));
            while q.len() > KEEP {
                q.pop_front();
            }
        }
    }

    /// The app's points taken at or after `since_ms`, oldest first.
    pub fn since(&self, app: &str, since_ms: i64) -> Vec<SeriesPoint> {
        let all = self.points.lock().unwrap_or_else(|e| e.into_inner());
        all.get(app)
            .map(|q| q.iter().filter(|p| p.t >= since_ms).cloned().collect())
            .unwrap_or_default()
    }
}

/// Records every `status` message until the live channel closes (the server stopped).
pub async fn run_recorder(
    series: Series,
    clock: crate::clock::Clock,
    mut live: broadcast::Receiver<LiveMessage>,
) {
    loop {
        match live.recv().await {
            Ok(LiveMessage::Status(status)) => series.record(&status, clock.now_ms()),
            Ok(_) => {}
            // Fell behind: the next snapshot comes in two seconds.
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn status(weight: u8, canary_err: f64) -> Status {
        let health = |version: &str, rate: f64, err: f64, requests: u64| {
            json!({"version": version, "requestRate": rate, "errorRate": err, "p50Ms": 1.0,
                   "p95Ms": 2.0, "p99Ms": 3.0, "requests": requests, "errors": 0, "totalRequests": requests})
        };
        serde_json::from_value(json!({
            "apps": [{
                "name": "shop", "proxy": null, "windowSeconds": 10.0,
                "stable": {"version": "v1", "endpoints": ["127.0.0.1:1"], "health": health("v1", 10.0, 0.0, 100)},
                "canary": health("v2", 2.0, canary_err, 20),
                "rollout": {"id": "r1", "version": "v2", "phase": "Progressing", "stageIndex": 0,
                            "stageCount": 2, "canaryWeight": weight, "updatedAt": "2026-12-02T00:00:00Z"},
            }, {
                "name": "idle", "proxy": null, "windowSeconds": 10.0,
                "stable": {"version": "v1", "endpoints": ["127.0.0.1:1"], "health": null},
                "canary": null, "rollout": null,
            }],
            "controller": {"replica": "r", "leader": true, "epoch": 1},
        }))
        .unwrap()
    }

    #[test]
    fn keeps_points_per_app_in_order_and_bounded() {
        let s = Series::default();
        s.record(&status(20, 0.01), 1_000);
        s.record(&status(50, 0.02), 3_000);
        let shop = s.since("shop", 0);
        assert_eq!(shop.len(), 2);
        assert_eq!(shop[1].canary_weight, 50);
        assert_eq!(shop[1].canary.as_ref().unwrap().error_rate, Some(0.02));
        assert_eq!(shop[0].rollout_id.as_deref(), Some("r1"));
        assert_eq!(s.since("shop", 2_000).len(), 1);
        let idle = s.since("idle", 0);
        assert_eq!((idle[0].canary_weight, idle[0].stable.is_none()), (0, true));
        assert!(s.since("nope", 0).is_empty());
        for i in 0..(KEEP as i64 + 10) {
            s.record(&status(20, 0.0), 10_000 + i);
        }
        let shop = s.since("shop", 0);
        assert_eq!(shop.len(), KEEP);
        assert_eq!(shop[0].t, 10_010);
    }
}
