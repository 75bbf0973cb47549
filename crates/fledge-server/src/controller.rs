//! The controller loop: every tick, each active rollout is observed, judged by the
//! pure engine, persisted (with the revision check) and acted on; then every app's
//! traffic is made to match the store.
//!
//! Reconcile, don't remember: the route an app needs is always recomputed from the
//! stored state, so a crash between "decided" and "applied" converges on the next
//! start ([`reapply_all`] runs before the API is ready) or the next tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use fledge_spec::RolloutSpec;
use fledge_store::{Fence, RolloutRecord, StateUpdate, StoreError};
use futures::StreamExt as _;

use super::Shared;
use super::engine::{self, Decision};
use super::rollouts::{persist_fenced, spec_of};
use fledge_providers::metrics::ObserveQuery;

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

/// Runs the loop until `stop`: a pass over everything every `controller.tick`, and
/// between ticks a look at the built-in proxies' counters every
/// `controller.evidenceInterval` (see [`judge_live`]).
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let tick = shared.config.controller.tick;
    let look = shared.config.controller.evidence_interval;
    let mut last_judged: HashMap<String, Instant> = HashMap::new();
    let mut live = LiveEvidence::default();
    let mut next = Instant::now() + tick;
    let mut next_look = Instant::now() + look;
    loop {
        let is_tick = tokio::select! {
            _ = tokio::time::sleep_until(next) => true,
            _ = tokio::time::sleep_until(next_look), if !look.is_zero() => false,
            _ = stop.wait_for(|s| *s) => return,
        };
        if !is_tick {
            judge_live(&shared, &mut last_judged, &mut live).await;
            // Looks are cheap and never catch up: the next one is a full interval on.
            next_look = Instant::now() + look;
            continue;
        }
        let started = Instant::now();
        shared
            .metrics
            .observe_tick_lag(started.saturating_duration_since(next));
        live.not_live.clear();
        tick_once(&shared, &mut last_judged, tick).await;
        shared.metrics.observe_tick_duration(started.elapsed());
        next += tick;
        // After a long stall, do not run a burst of catch-up ticks.
        if next < Instant::now() {
            next = Instant::now() + tick;
        }
    }
}

/// How many rollouts are judged at once. Their metric queries overlap: an external
/// source answers in milliseconds, and a thousand of them one after another would
/// take seconds.
const JUDGE_CONCURRENCY: usize = 64;

/// One pass over every active rollout and every app.
pub async fn tick_once(
    shared: &Shared,
    last_judged: &mut HashMap<String, Instant>,
    tick: Duration,
) {
    // Only the replica holding the controller lease judges; every replica keeps its
    // own proxies on the stored route below.
    if let Some(fence) = shared.leader.fence() {
        match shared.store.active_rollouts().await {
            Ok(active) => judge_due(shared, active, last_judged, tick, fence.clone()).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list active rollouts; retrying next tick");
            }
        }
        // Groups move on what their members decided just now.
        super::groups::coordinate_all(shared, &fence).await;
    }
    reconcile_all(shared).await;
}

/// Judges the rollouts whose analysis interval has passed (and re-queues the hooks
/// of gates nobody runs).
async fn judge_due(
    shared: &Shared,
    active: Vec<RolloutRecord>,
    last_judged: &mut HashMap<String, Instant>,
    tick: Duration,
    fence: Fence,
) {
    last_judged.retain(|id, _| active.iter().any(|r| &r.id == id));
    let mut due = Vec::new();
    for record in active {
        // A gate still waiting with nobody running its hooks (they were lost in a
        // restart) runs again; the queue ignores running ones.
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
        let is_due = last_judged
            .get(&record.id)
            .is_none_or(|at| at.elapsed() + Duration::from_millis(50) >= interval);
        if is_due {
            last_judged.insert(record.id.clone(), Instant::now());
            due.push(record);
        }
    }
    judge(shared, due, fence).await;
}

/// Judges `due` concurrently, then writes what they decided: the quiet ones (new
/// evidence, nothing else) together in one transaction, the others one by one with
/// their events, hooks and routes.
async fn judge(shared: &Shared, due: Vec<RolloutRecord>, fence: Fence) {
    let decided: Vec<_> = futures::stream::iter(due)
        .map(|record| async move {
            let outcome = decide(shared, &record).await;
            (record, outcome)
        })
        .buffer_unordered(JUDGE_CONCURRENCY)
        .collect()
        .await;

    let mut quiet = Vec::new();
    for (record, outcome) in decided {
        match outcome {
            Ok(None) => {}
            Ok(Some((_, decision))) if is_quiet(&record, &decision) => quiet.push(StateUpdate {
                id: record.id.clone(),
                expected_revision: record.revision,
                state: decision.state,
            }),
            Ok(Some((spec, decision))) => {
                if let Err(e) = persist_decision(shared, &record, &spec, decision, &fence).await {
                    tracing::warn!(rollout = %record.id, app = %record.app,
                        error = %format!("{e:#}"), "cannot persist the decision; retrying next tick");
                }
            }
            Err(e) => tracing::warn!(rollout = %record.id, app = %record.app,
                error = %format!("{e:#}"), "controller step failed; retrying next tick"),
        }
    }
    write_quiet(shared, &quiet, &fence).await;
}

/// How many new canary requests make a look judge at once, however recent the last
/// judgement.
const LIVE_BATCH: u64 = 32;

/// How long after a judgement a look judges any new canary request.
const LIVE_GAP: Duration = Duration::from_millis(100);

/// What the looks between ticks know of each app with a live canary.
#[derive(Debug, Default)]
pub struct LiveEvidence {
    /// Per app: the canary's request count at its last judgement, and when.
    judged: HashMap<String, (u64, Instant)>,
    /// Apps whose active rollout was found not to be judged live, until the next
    /// tick reads every rollout again.
    not_live: std::collections::HashSet<String>,
}

/// One look between ticks: every app whose canary is served and measured by its own
/// built-in proxy, and whose canary has answered new requests since it was last
/// judged (a batch of [`LIVE_BATCH`], or any after [`LIVE_GAP`]), has its rollout
/// judged now if its stage allows that ([`engine::judged_as_evidence_arrives`]),
/// through the same decide-and-write path as the tick. A failure found this way is
/// written, and the route swapped to stable, within one look of the evidence
/// being in. Only the leader judges.
pub async fn judge_live(
    shared: &Shared,
    last_judged: &mut HashMap<String, Instant>,
    live: &mut LiveEvidence,
) {
    let Some(fence) = shared.leader.fence() else {
        live.judged.clear();
        return;
    };
    let apps = shared.apps.all().await;
    live.judged
        .retain(|name, _| apps.iter().any(|a| &a.name == name));
    let mut due_apps = Vec::new();
    for app in &apps {
        if live.not_live.contains(&app.name) {
            continue;
        }
        let Some(counts) = app.live_canary_counts().await else {
            live.judged.remove(&app.name);
            continue;
        };
        let (judged, at) = live
            .judged
            .entry(app.name.clone())
            .or_insert((counts.requests, Instant::now()));
        // A new canary's counters start over.
        *judged = (*judged).min(counts.requests);
        let new = counts.requests - *judged;
        if new >= LIVE_BATCH || (new > 0 && at.elapsed() >= LIVE_GAP) {
            *judged = counts.requests;
            *at = Instant::now();
            due_apps.push(app.name.clone());
        }
    }
    let mut due = Vec::new();
    for app in due_apps {
        match shared.store.active_rollout_for_app(&app).await {
            Ok(Some(record))
                if spec_of(&record)
                    .is_ok_and(|spec| engine::judged_as_evidence_arrives(&spec, &record.state)) =>
            {
                last_judged.insert(record.id.clone(), Instant::now());
                due.push(record);
            }
            Ok(_) => {
                live.not_live.insert(app);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the rollouts to judge; next look");
                return;
            }
        }
    }
    if !due.is_empty() {
        judge(shared, due, fence).await;
    }
}

/// Observes one rollout and runs the engine; `None` when nothing changed.
async fn decide(
    shared: &Shared,
    record: &RolloutRecord,
) -> anyhow::Result<Option<(RolloutSpec, Decision)>> {
    let spec = spec_of(record)?;
    let Some(app) = shared.apps.get(&record.app).await else {
        anyhow::bail!("app `{}` is not registered", record.app);
    };
    let config = app.config().await;
    let now = shared.clock.now();
    let query = ObserveQuery {
        app: record.app.clone(),
        stable_version: config.stable.version.clone(),
        canary_version: record.version.clone(),
        // A query over less than a second means nothing to a metric system.
        window: now
            .duration_since(record.created_at.to_system_time())
            .unwrap_or_default()
            .max(Duration::from_secs(1)),
        custom: fledge_providers::metrics::CustomQuery::from_spec_metrics(&spec.metrics),
    };
    // Metrics read while the router has not applied the stored weight say nothing
    // about that weight: the engine holds the stage instead of judging it.
    // Alerts the team already has fail the rollout before any metric is read; an
    // Alertmanager that cannot be read holds the rollout like a dead metric source.
    let alerts = match firing_alerts(shared, &spec, record).await {
        Ok(alerts) => alerts,
        Err(error) => {
            let input = engine::Input::MetricsUnavailable { error };
            let decision = engine::feed(&spec, &record.state, input, now)?;
            return Ok(Some((spec, decision)));
        }
    };
    let input = match app.route_unapplied() {
        _ if !alerts.is_empty() => engine::Input::AlertsFiring { alerts },
        Some(error) => engine::Input::RouteUnapplied { error },
        None => match app.metrics().await.observe(&query).await {
            Ok(observation) => engine::Input::Observe(observation),
            Err(e) => engine::Input::MetricsUnavailable {
                error: format!("{e:#}"),
            },
        },
    };
    let decision = engine::feed(&spec, &record.state, input, now)?;
    if decision.state == record.state
        && decision.events.is_empty()
        && decision.phase == record.phase
        && !decision.promote
    {
        return Ok(None);
    }
    Ok(Some((spec, decision)))
}

/// The firing alerts that match the spec's `alerts` (none when it names none);
/// `Err` with the reason when Alertmanager cannot be read.
async fn firing_alerts(
    shared: &Shared,
    spec: &RolloutSpec,
    record: &RolloutRecord,
) -> Result<Vec<fledge_engine::FiringAlert>, String> {
    if spec.alerts.is_empty() {
        return Ok(Vec::new());
    }
    let alertmanager = match &shared.alertmanager {
        Some(Ok(a)) => a,
        Some(Err(e)) => return Err(e.clone()),
        None => return Err("the spec names alerts but the server reads no Alertmanager (`alertmanager:` in its config)".to_owned()),
    };
    let matchers: Vec<_> = spec
        .alerts
        .iter()
        .map(|a| a.resolved(&record.app, &record.version))
        .collect();
    let alerts = alertmanager
        .firing(&matchers)
        .await
        .map_err(|e| e.to_string())?;
    Ok(alerts
        .into_iter()
        .map(|a| fledge_engine::FiringAlert {
            name: a.name,
            labels: a.labels,
            starts_at: a.starts_at,
        })
        .collect())
}

/// Whether a decision only carries new evidence: no event, no hook, no promotion,
/// the same phase and the same traffic. Such a state needs no route change and no
/// notification, so many of them can be written in one transaction.
fn is_quiet(record: &RolloutRecord, decision: &Decision) -> bool {
    decision.events.is_empty()
        && decision.hooks.is_empty()
        && !decision.promote
        && decision.phase == record.phase
        && match (
            engine::summary(&record.state),
            engine::summary(&decision.state),
        ) {
            (Ok(before), Ok(after)) => {
                before.canary_weight == after.canary_weight
                    && before.canary_mirror == after.canary_mirror
                    && before.stage_index == after.stage_index
                    && before.phase == after.phase
            }
            _ => false,
        }
}

/// Writes one eventful decision with the controller's fence.
async fn persist_decision(
    shared: &Shared,
    record: &RolloutRecord,
    spec: &RolloutSpec,
    decision: Decision,
    fence: &Fence,
) -> Result<(), StoreError> {
    match persist_fenced(shared, record, spec, decision, Some(fence.clone())).await {
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
        Err(e) => Err(e),
    }
}

/// Writes the quiet decisions of a tick in one transaction.
async fn write_quiet(shared: &Shared, quiet: &[StateUpdate], fence: &Fence) {
    if quiet.is_empty() {
        return;
    }
    match shared.store.update_states(quiet, Some(fence)).await {
        Ok(results) => {
            for (update, result) in quiet.iter().zip(results) {
                match result {
                    Ok(_) => {}
                    Err(StoreError::Conflict { .. }) => {
                        tracing::debug!(rollout = %update.id, "rollout changed while judging; next tick");
                    }
                    Err(e) => tracing::warn!(rollout = %update.id, error = %e,
                        "cannot write the rollout's evidence; retrying next tick"),
                }
            }
            shared.note_write();
        }
        Err(e @ StoreError::Fenced { .. }) => shared.leader.lose(&e.to_string()),
        Err(e) => tracing::warn!(error = %e, rollouts = quiet.len(),
            "cannot write this tick's evidence; retrying next tick"),
    }
}

/// Makes every app's traffic match the store, from one read of all apps and all
/// active rollouts.
async fn reconcile_all(shared: &Shared) {
    let generation = shared.apps.generation();
    let read = async {
        let apps = shared.store.list_apps().await?;
        let active = shared.store.active_rollouts().await?;
        Ok::<_, StoreError>((apps, active))
    };
    let (records, active) = match read.await {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the apps to apply their routes; retrying next tick");
            return;
        }
    };
    let records: HashMap<&str, &fledge_store::AppRecord> =
        records.iter().map(|r| (r.name.as_str(), r)).collect();
    let active: HashMap<&str, &RolloutRecord> =
        active.iter().map(|r| (r.app.as_str(), r)).collect();
    for app in shared.apps.all().await {
        let name = app.name.as_str();
        if let Err(e) = app
            .reconcile_from(
                shared,
                generation,
                records.get(name).copied(),
                active.get(name).copied(),
            )
            .await
        {
            tracing::warn!(app = %app.name, error = %format!("{e:#}"), "cannot apply the route; retrying next tick");
        }
    }
}

#[cfg(test)]
mod tests;
