//! Runs the spec's hooks (exec and HTTP, through `fledge_providers::hooks`) when the
//! engine asks for them, and feeds the result back to the engine as `HookDone`.
//!
//! Hooks run in their own tasks so a slow hook never holds up the controller or an
//! operator's request. A gate that is still waiting after a restart (the process
//! died while its hooks ran) is found by the controller and run again: hooks run at
//! least once.

use std::sync::{Arc, OnceLock};

use fledge_providers::hooks::{
    DEFAULT_MAX_OUTPUT, HookContext, HookRunner, RolloutInfo, run_point, spawn_on_events,
};
use fledge_spec::RolloutSpec;
use fledge_store::{NewEvent, StoreError};
use tokio::sync::mpsc;

use super::Shared;
use super::engine::{self as adapter};
use super::rollouts::{MAX_ATTEMPTS, persist_fenced, spec_of};

pub use crate::hook_queue::{HookJob, HookQueue};

/// The hook runner the `onEvent` hooks share, built on first use; `None` when it
/// cannot be built (said once in the log).
fn event_runner() -> Option<&'static HookRunner> {
    static RUNNER: OnceLock<Option<HookRunner>> = OnceLock::new();
    RUNNER
        .get_or_init(|| match HookRunner::new(DEFAULT_MAX_OUTPUT) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the hook runner; onEvent hooks will not run");
                None
            }
        })
        .as_ref()
}

/// Runs the spec's `onEvent` hooks for each of `events` (just written to the
/// rollout), in order, in a task of their own: the write that made the events never
/// waits for them, and a failure is logged (with the hook's captured output), not
/// acted on. `written` stands in for the time of an event that carries none. Runs
/// on the replica that wrote the events, at most once per event.
pub fn on_events(
    hooks: &fledge_spec::Hooks,
    rollout: RolloutInfo,
    events: Vec<NewEvent>,
    written: fledge_store::Timestamp,
) {
    let Some(runner) = event_runner() else {
        return;
    };
    let events = events
        .into_iter()
        .map(|event| {
            serde_json::json!({
                "kind": event.kind,
                "actor": event.actor,
                "message": event.message,
                "evidence": event.evidence,
                "at": event.at.unwrap_or(written).to_string(),
            })
        })
        .collect();
    spawn_on_events(runner.clone(), hooks, rollout, events);
}

/// Runs queued jobs until the queue closes.
pub async fn run_worker(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<HookJob>) {
    let runner = match HookRunner::new(DEFAULT_MAX_OUTPUT) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the hook runner; hooks will fail");
            None
        }
    };
    while let Some(job) = rx.recv().await {
        // Hooks run where rollouts are judged: on the replica holding the controller
        // lease. Elsewhere (a command sent to a follower) the leader finds the gate
        // waiting at its next tick and runs them, so they never run twice at once.
        if !shared.leader.is_leader() {
            tracing::debug!(rollout = %job.rollout_id, hook = job.point.list_name(),
                "not the leader; the leading replica runs these hooks");
            continue;
        }
        if !shared.hooks.claim(&job) {
            continue;
        }
        let shared = shared.clone();
        let runner = runner.clone();
        tokio::spawn(async move {
            if let Err(e) = run_job(&shared, runner.as_ref(), &job).await {
                tracing::warn!(rollout = %job.rollout_id, hook = job.point.list_name(),
                    error = %format!("{e:#}"), "hook result not recorded; retried on the next tick if it gates");
            }
            shared.hooks.release(&job);
        });
    }
}

async fn run_job(
    shared: &Shared,
    runner: Option<&HookRunner>,
    job: &HookJob,
) -> anyhow::Result<()> {
    let Some(record) = shared.store.get_rollout(&job.rollout_id).await? else {
        return Ok(());
    };
    let spec = spec_of(&record)?;
    // A hook is never told of a rollout whose state the engine cannot read.
    adapter::summary(&record.state)?;
    let stable_version = match shared.apps.get(&record.app).await {
        Some(app) => app.config().await.stable.version,
        None => String::new(),
    };
    let ctx = HookContext {
        hook: job.point.list(),
        rollout: super::notify::rollout_info(&record, &stable_version),
        event: None,
    };
    let (error, evidence) = match runner {
        Some(runner) => {
            let outcome = run_point(runner, &spec.hooks, &ctx).await;
            let error = outcome.failure();
            (
                error,
                serde_json::to_value(&outcome.outcomes).unwrap_or_default(),
            )
        }
        None => (
            Some("the hook runner could not be built".to_owned()),
            serde_json::Value::Null,
        ),
    };
    report(shared, job, &spec, error, evidence).await
}

/// Feeds `HookDone` to the engine, re-reading on conflicts.
async fn report(
    shared: &Shared,
    job: &HookJob,
    _spec: &RolloutSpec,
    error: Option<String>,
    evidence: serde_json::Value,
) -> anyhow::Result<()> {
    for _ in 0..MAX_ATTEMPTS {
        let Some(record) = shared.store.get_rollout(&job.rollout_id).await? else {
            return Ok(());
        };
        let spec = spec_of(&record)?;
        let mut decision = adapter::hook_done(
            &spec,
            &record.state,
            job.point,
            job.attempt,
            error.clone(),
            shared.clock.now(),
        )?;
        decision.events.insert(
            0,
            NewEvent::new(
                "HookRan",
                "hooks",
                format!(
                    "{} hooks {}",
                    job.point.list_name(),
                    if error.is_none() {
                        "succeeded"
                    } else {
                        "failed"
                    }
                ),
            )
            .with_evidence(evidence.clone())
            .at(shared.timestamp()),
        );
        // Fenced like every controller write: a replica that lost the lease while
        // its hooks ran cannot overwrite what the new leader decided.
        let Some(fence) = shared.leader.fence() else {
            anyhow::bail!(
                "this replica lost the controller lease; the leader runs the hooks again"
            );
        };
        match persist_fenced(shared, &record, &spec, decision, Some(fence)).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e @ StoreError::Fenced { .. }) => {
                shared.leader.lose(&e.to_string());
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("the rollout kept changing")
}
