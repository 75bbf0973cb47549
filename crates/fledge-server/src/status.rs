//! The body of `GET /status` (also the live stream's `status` messages): every app
//! with its stable version, its active rollout, the live health of both versions
//! and what the caller may do to it, and the snapshot `GET /status` is answered from.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use fledge_api::app::Role;
use fledge_api::status::{
    AppAction, AppStatus, ControllerStatus, RolloutBrief, StableStatus, Status,
};
use fledge_engine::Phase;
use fledge_store::{PHASES, RolloutRecord};

use super::error::ApiError;
use super::metrics::{RolloutMetrics, Scrape};
use super::{Shared, engine, rollouts, view};

/// Every app's active rollout, by app: one query however many apps there are.
async fn active_by_app(shared: &Shared) -> Result<HashMap<String, RolloutRecord>, ApiError> {
    Ok(shared
        .store
        .active_rollouts()
        .await
        .map_err(rollouts::store_error)?
        .into_iter()
        .map(|r| (r.app.clone(), r))
        .collect())
}

/// The body of `GET /status`: every app with its stable version, its active rollout
/// and the live health of both versions, and the actions an operator may take on
/// it ([`narrow`] takes them away from viewers).
pub async fn status_json(shared: &Shared) -> Result<Status, ApiError> {
    let active = active_by_app(shared).await?;
    let now = shared.clock.now();
    let stables = view::Stables::read(shared).await;
    let mut apps = Vec::new();
    for app in shared.apps.all().await {
        let config = app.config().await;
        let health = shared.health.app(&app.name);
        let rollout = active
            .get(&app.name)
            .map(|r| RolloutBrief::of(&view::rollout(r, None, Role::Viewer, now, &stables)));
        let previous_stable = config.previous_stable.as_ref().map(|p| p.version.clone());
        // What `rollouts::undo` refuses with 409: nothing to go back to, or a
        // rollout under way.
        let allowed_actions = if config.undo_target().is_some() && rollout.is_none() {
            vec![AppAction::Undo]
        } else {
            Vec::new()
        };
        apps.push(AppStatus {
            name: app.name.clone(),
            proxy: app.proxy_addr().await.map(|a| a.to_string()),
            stable: StableStatus {
                version: config.stable.version.clone(),
                endpoints: config.stable.endpoints.clone(),
                health: health.stable,
            },
            canary: health.canary,
            rollout,
            previous_stable,
            allowed_actions,
            window_seconds: health.window_seconds,
        });
    }
    Ok(Status {
        apps,
        controller: ControllerStatus {
            replica: shared.leader.holder().to_owned(),
            leader: shared.leader.is_leader(),
            epoch: shared.leader.epoch(),
        },
    })
}

/// Narrows `status` to what `role` may see: the actions on apps are operators'
/// (the rollout briefs carry none).
pub fn narrow(status: &mut Status, role: Role) {
    if role < Role::Operator {
        for app in &mut status.apps {
            app.allowed_actions.clear();
        }
    }
}

/// What `/metrics` reads from the store: rollouts by phase, and each app's active
/// rollout, else its latest one (so that a failed rollout stays visible, with the
/// evidence that failed it, until the app's next rollout).
pub async fn metrics_scrape(shared: &Shared) -> Result<Scrape, ApiError> {
    // Counted by the store: a scrape costs the same after ten thousand rollouts.
    let counts = shared
        .store
        .count_rollouts_by_phase()
        .await
        .map_err(rollouts::store_error)?;
    let rollouts_by_phase = PHASES
        .iter()
        .map(|&phase| {
            let n = counts.iter().find(|(p, _)| p == phase).map_or(0, |c| c.1);
            (phase, i64::try_from(n).unwrap_or(i64::MAX))
        })
        .collect();
    let mut active = active_by_app(shared).await?;
    let mut rollouts = Vec::new();
    for app in shared.apps.all().await {
        let record = match active.remove(&app.name) {
            Some(r) => r,
            None => match shared.store.latest_rollout_for_app(&app.name).await {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => return Err(rollouts::store_error(e)),
            },
        };
        let Ok(summary) = engine::summary(&record.state) else {
            continue;
        };
        let phase = view::phase_of(&record.phase);
        let stage_started_at = summary
            .stage_started_at
            .filter(|_| matches!(phase, Phase::Progressing | Phase::Paused))
            .map(|t| t.0 as f64 / 1000.0);
        rollouts.push(RolloutMetrics {
            app: record.app,
            id: record.id,
            stable: app.config().await.stable.version,
            canary: record.version,
            phase,
            stage_index: summary.stage_index,
            stage_started_at,
            criteria: summary.analysis.map(|a| a.criteria).unwrap_or_default(),
        });
    }
    Ok(Scrape {
        rollouts_by_phase,
        rollouts,
    })
}

/// `GET /status` served from a snapshot: rebuilt when this replica has written
/// anything since (see [`Shared::note_write`]) or when it is [`STATUS_MAX_AGE`] old
/// (the live health moves on by itself, and another replica's writes are seen
/// through the store). However many clients poll, the store is read about once a
/// controller tick, and concurrent requests wait for one rebuild.
#[derive(Debug, Default)]
pub struct StatusSnapshot {
    built: tokio::sync::Mutex<Option<Built>>,
}

/// One rebuild of the snapshot: the JSON for operators and for viewers.
#[derive(Debug)]
struct Built {
    writes: u64,
    at: tokio::time::Instant,
    operator: Bytes,
    viewer: Bytes,
}

/// The oldest a `GET /status` answer may be.
pub const STATUS_MAX_AGE: Duration = Duration::from_secs(1);

impl StatusSnapshot {
    /// The current status as `role` sees it, as JSON bytes.
    pub async fn get(&self, shared: &Shared, role: Role) -> Result<Bytes, ApiError> {
        let mut built = self.built.lock().await;
        let writes = shared.writes();
        let fresh = built
            .take()
            .filter(|b| b.writes == writes && b.at.elapsed() < STATUS_MAX_AGE);
        let b = match fresh {
            Some(b) => b,
            None => {
                let mut status = status_json(shared).await?;
                let json = |s: &Status| Bytes::from(serde_json::to_vec(s).unwrap_or_default());
                let operator = json(&status);
                narrow(&mut status, Role::Viewer);
                Built {
                    writes,
                    at: tokio::time::Instant::now(),
                    operator,
                    viewer: json(&status),
                }
            }
        };
        let body = if role >= Role::Operator {
            b.operator.clone()
        } else {
            b.viewer.clone()
        };
        *built = Some(b);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use fledge_api::status::{AppAction, AppStatus, ControllerStatus, StableStatus, Status};

    use super::narrow;
    use crate::config::Role;

    fn status() -> Status {
        Status {
            apps: vec![AppStatus {
                name: "shop".into(),
                proxy: None,
                stable: StableStatus {
                    version: "v2".into(),
                    endpoints: Vec::new(),
                    health: None,
                },
                canary: None,
                rollout: None,
                previous_stable: Some("v1".into()),
                allowed_actions: vec![AppAction::Undo],
                window_seconds: 10.0,
            }],
            controller: ControllerStatus {
                replica: "r".into(),
                leader: true,
                epoch: None,
            },
        }
    }

    #[test]
    fn only_operators_and_admins_are_offered_the_actions_on_apps() {
        for (role, offered) in [
            (Role::Viewer, vec![]),
            (Role::Operator, vec![AppAction::Undo]),
            (Role::Admin, vec![AppAction::Undo]),
        ] {
            let mut s = status();
            narrow(&mut s, role);
            assert_eq!(s.apps[0].allowed_actions, offered, "{role}");
            // What an undo goes back to is no secret.
            assert_eq!(s.apps[0].previous_stable.as_deref(), Some("v1"), "{role}");
        }
    }
}
