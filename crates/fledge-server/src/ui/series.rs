//! The health history behind the rollout page's charts, kept in the store so that
//! a rollout's charts show its whole life after a restart, or on a page opened
//! long after it ended.
//!
//! The recorder listens to the same `status` snapshots that `GET /events` streams
//! (one every two seconds) and, on the replica that leads the controller, writes
//! one sample per app with an active rollout, all of a snapshot in one store write:
//! the canary's weight and, for each version, request rate, error rate and latency
//! quantiles over the health window. The store keeps each rollout's samples within
//! [`SampleBounds::default`] (older ones of a long rollout are merged with their
//! neighbours) and the recorder deletes those of rollouts that finished more than
//! [`RETENTION`] ago.

use std::sync::Arc;
use std::time::Duration;

use fledge_api::status::{AppStatus, LiveMessage, Status};
use fledge_api::ui::SeriesPoint;
use fledge_store::{Sample, SampleBounds, Timestamp};
use tokio::sync::{broadcast, watch};

use crate::Shared;
use crate::view::phase_of;

/// How long the samples of a finished rollout are kept.
pub const RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// How often the recorder deletes samples past [`RETENTION`].
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Records every `status` snapshot while this replica leads, until `stop`.
pub async fn run_recorder(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut live = shared.live.subscribe();
    let mut pruned_at: Option<i64> = None;
    let mut failing = false;
    loop {
        let status = tokio::select! {
            m = live.recv() => match m {
                Ok(LiveMessage::Status(status)) => status,
                // Fell behind: the next snapshot comes in two seconds.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        // One writer is enough (and the leader's clock is the one that judges).
        if !shared.leader.is_leader() {
            continue;
        }
        let now = shared.clock.now_ms();
        let batch = samples(&status, now);
        if !batch.is_empty() {
            match shared
                .store
                .append_samples(&batch, SampleBounds::default())
                .await
            {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("chart samples are recorded again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot record chart samples; the charts miss these points");
                }
                Err(e) => tracing::debug!(error = %e, "cannot record chart samples"),
            }
        }
        if pruned_at.is_none_or(|at| now - at >= PRUNE_EVERY.as_millis() as i64) {
            pruned_at = Some(now);
            let cut = Timestamp(now - RETENTION.as_millis() as i64);
            match shared.store.prune_samples(cut).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(samples = n, "deleted the chart samples of old rollouts"),
                Err(e) => tracing::warn!(error = %e, "cannot delete old chart samples"),
            }
        }
    }
}

/// One sample per app of `status` with an active rollout, taken at `at_ms`.
pub fn samples(status: &Status, at_ms: i64) -> Vec<Sample> {
    status
        .apps
        .iter()
        .filter_map(|app| sample(app, at_ms))
        .collect()
}

/// The sample of an app's status, if a rollout is active.
fn sample(app: &AppStatus, at_ms: i64) -> Option<Sample> {
    let rollout = app.rollout.as_ref()?;
    Some(Sample {
        rollout_id: rollout.id.clone(),
        at: Timestamp(at_ms),
        snapshots: 1,
        phase: Some(rollout.phase.as_str().to_owned()),
        canary_weight: i64::from(rollout.canary_weight),
        stable: app.stable.health.clone(),
        canary: app.canary.clone(),
    })
}

/// A stored sample as a chart point.
pub fn point(s: &Sample) -> SeriesPoint {
    SeriesPoint {
        t: s.at.0,
        rollout_id: Some(s.rollout_id.clone()),
        phase: s.phase.as_deref().map(phase_of),
        canary_weight: u8::try_from(s.canary_weight.clamp(0, 100)).unwrap_or(0),
        stable: s.stable.clone(),
        canary: s.canary.clone(),
        snapshots: u32::try_from(s.snapshots).unwrap_or(u32::MAX),
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
    fn a_snapshot_gives_one_sample_per_active_rollout_and_reads_back_as_its_point() {
        let status = status(20, 0.01);
        let batch = samples(&status, 1_000);
        assert_eq!(batch.len(), 1, "the idle app has no rollout to chart");
        assert_eq!(
            (batch[0].rollout_id.as_str(), batch[0].canary_weight),
            ("r1", 20)
        );
        // Stored and read back, the sample is the point the status gives.
        assert_eq!(point(&batch[0]), SeriesPoint::of(&status.apps[0], 1_000));
    }
}
