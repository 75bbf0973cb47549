//! The controller loop: every tick, each active rollout is observed, judged by the
//! pure engine, persisted (with the revision check) and acted on; then every app's
//! traffic is made to match the store.
//!
//! Reconcile, don't remember: the route an app needs is always recomputed from the
//! stored state, so a crash between "decided" and "applied" converges on the next
//! start ([`reapply_all`] runs before the API is ready) or the next tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::Shared;
use super::backends::ObserveQuery;
use super::engine;
use super::rollouts::{persist_fenced, spec_of};
use fledge_store::{RolloutRecord, StoreError};

/// Applies every app's stored route, whether or not it looks applied already. A
/// data plane that cannot be reached is logged and retried by every tick; the store
/// failing is an error (nothing can be trusted without it).
pub async fn reapply_all(shared: &Shared) -> anyhow::Result<()> {
    for app in shared.apps.all().await {
        if let Err(e) = app.reconcile(shared, true).await {
            if e.downcast_ref::<fledge_store::StoreError>().is_some() {
                return Err(e);
            }
            tracing::warn!(app = %app.name, error = %format!("{e:#}"),
                "cannot re-apply the stored route yet; retrying every tick");
        }
    }
    Ok(())
}

/// Runs the loop until `stop`.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let tick = shared.config.controller.tick;
    let mut last_judged: HashMap<String, Instant> = HashMap::new();
    let mut next = tokio::time::Instant::now() + tick;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let started = tokio::time::Instant::now();
        shared
            .metrics
            .observe_tick_lag(started.saturating_duration_since(next));
        tick_once(&shared, &mut last_judged, tick).await;
        shared.metrics.observe_tick_duration(started.elapsed());
        next += tick;
        // After a long stall, do not run a burst of catch-up ticks.
        if next < tokio::time::Instant::now() {
            next = tokio::time::Instant::now() + tick;
        }
    }
}

/// One pass over every active rollout and every app.
pub async fn tick_once(
    shared: &Shared,
    last_judged: &mut HashMap<String, Instant>,
    tick: Duration,
) {
    // Only the replica holding the controller lease judges; every replica keeps its
    // own proxies on the stored route below.
    let active = match shared.leader.fence() {
        Some(_) => shared.store.active_rollouts().await,
        None => Ok(Vec::new()),
    };
    match active {
        Ok(active) => {
            last_judged.retain(|id, _| active.iter().any(|r| &r.id == id));
            for record in active {
                // A gate still waiting with nobody running its hooks (they were
                // lost in a restart) runs again; the queue ignores running ones.
                if let Some((point, attempt)) = engine::pending_gate(&record.state) {
                    shared.hooks.push(super::hooks::HookJob {
                        rollout_id: record.id.clone(),
                        point,
                        attempt,
                    });
                }
                let interval = spec_of(&record)
                    .map(|s| s.analysis.interval)
                    .unwrap_or(tick)
                    .max(tick);
                let due = last_judged
                    .get(&record.id)
                    .is_none_or(|at| at.elapsed() + Duration::from_millis(50) >= interval);
                if !due {
                    continue;
                }
                last_judged.insert(record.id.clone(), Instant::now());
                if let Err(e) = judge(shared, &record).await {
                    tracing::warn!(rollout = %record.id, app = %record.app,
                        error = %format!("{e:#}"), "controller step failed; retrying next tick");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list active rollouts; retrying next tick"),
    }
    for app in shared.apps.all().await {
        if let Err(e) = app.reconcile(shared, false).await {
            tracing::warn!(app = %app.name, error = %format!("{e:#}"), "cannot apply the route; retrying next tick");
        }
    }
}

/// Observes one rollout, runs the engine and persists what changed.
pub async fn judge(shared: &Shared, record: &RolloutRecord) -> anyhow::Result<()> {
    let spec = spec_of(record)?;
    let Some(app) = shared.apps.get(&record.app).await else {
        anyhow::bail!("app `{}` is not registered", record.app);
    };
    let config = app.config().await;
    let query = ObserveQuery {
        app: record.app.clone(),
        stable_version: config.stable.version.clone(),
        canary_version: record.version.clone(),
        window: SystemTime::now()
            .duration_since(record.created_at.to_system_time())
            .unwrap_or_default(),
        custom: fledge_providers::metrics::CustomQuery::from_spec_metrics(&spec.metrics),
    };
    let now = SystemTime::now();
    // Metrics read while the router has not applied the stored weight say nothing
    // about that weight: the engine holds the stage instead of judging it.
    let decision = match app.route_unapplied() {
        Some(reason) => engine::route_unapplied(&spec, &record.state, &reason, now)?,
        None => match app.metrics().await.observe(&query).await {
            Ok(observation) => engine::observe(&spec, &record.state, observation, now)?,
            Err(e) => engine::metrics_unavailable(&spec, &record.state, &format!("{e:#}"), now)?,
        },
    };
    if decision.state == record.state
        && decision.events.is_empty()
        && decision.phase == record.phase
        && !decision.promote
    {
        return Ok(());
    }
    let Some(fence) = shared.leader.fence() else {
        return Ok(());
    };
    match persist_fenced(shared, record, &spec, decision, Some(fence)).await {
        Ok(_) => Ok(()),
        Err(e @ StoreError::Fenced { .. }) => {
            shared.leader.lose(&e.to_string());
            Ok(())
        }
        // An operator's command committed first; judge the new state next tick.
        Err(StoreError::Conflict { .. }) => {
            tracing::debug!(rollout = %record.id, "rollout changed while judging; next tick");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
