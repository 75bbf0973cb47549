//! The CanaryRollout controller: one idempotent [`reconcile`] per object and an
//! [`error_policy`], run by `kube::runtime::Controller`.
//!
//! Each reconcile reads the world, feeds the engine exactly one input, persists the
//! new engine state in the status subresource (with the resourceVersion it read, so a
//! concurrent writer makes it fail with 409 and it runs again on the fresh object),
//! then makes the world match the persisted state: the canary Deployment, the
//! router's objects, the stable Deployment on promotion, and Kubernetes Events for
//! the engine's decisions. "Persist, then act" means a crash between the two is healed
//! by the next reconcile, which re-applies everything from the status.
//!
//! * `context`: what every reconcile shares (client, clock, metric sources);
//! * `decide`: the checked spec and the engine's one input and answer;
//! * `command`: the `fledge.dev/command` annotation, sent and read;
//! * `effects`: hooks, notifications and `onEvent` hooks, as in server mode;
//! * `status`: the status, its conditions and the Events;
//! * `apply`: the Deployments and the router's objects.

mod apply;
mod command;
mod context;
mod decide;
mod effects;
mod status;

use std::sync::Arc;
use std::time::Duration;

use fledge_engine::Phase;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tracing::{info, warn};

use crate::crd::{CanaryRollout, LABEL_ROLLOUT};
use crate::error::Error;

pub use apply::{canary_deployment, deployment_ready, promoted_stable, target_version};
pub use command::{COMMANDS, parse_command, send_command};
pub use context::{Clock, Context, MetricsFactory, SourceFactory, SystemClock};
pub use decide::{crash_evidence, fail_for_pods, router_kind};
pub use effects::Effects;
pub use status::{REPORTING_CONTROLLER, engine_state, set_condition};

/// Runs the controller until `shutdown` resolves, on the CanaryRollouts of
/// `namespace`, or of every namespace when `None`.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (rollouts, deployments): (Api<CanaryRollout>, Api<Deployment>) = match &namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    // A finished hook list asks for its rollout to be reconciled at once.
    let (wake, woken) = futures::channel::mpsc::unbounded();
    ctx.effects.set_wake(wake);
    Controller::new(rollouts, watcher::Config::default())
        .reconcile_on(woken)
        .owns(
            deployments,
            watcher::Config::default().labels(LABEL_ROLLOUT),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async {
            ctx.telemetry.reconciled(res.is_ok());
            match res {
                Ok((obj, _)) => tracing::debug!(rollout = %obj.name, "reconciled"),
                Err(e) => warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

/// How long to wait after an error: a conflict is retried at once (the object
/// changed; the fresh one is read), an invalid spec waits for an edit, a field
/// someone else set waits for them (and is reported again every 30 s), anything
/// else is retried after a few seconds.
#[allow(clippy::needless_pass_by_value)] // the signature `Controller::run` requires
pub fn error_policy(obj: Arc<CanaryRollout>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(rollout = %obj.name_any(), error = %err, "reconcile error");
    match err {
        Error::Conflict(_) => Action::requeue(Duration::from_millis(200)),
        Error::InvalidSpec(_) => Action::await_change(),
        Error::FieldConflict { .. } => Action::requeue(Duration::from_secs(30)),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

/// Brings one CanaryRollout a step forward and the world in line with it.
pub async fn reconcile(obj: Arc<CanaryRollout>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_else(|| "default".to_owned());
    let name = obj.name_any();
    let now = ctx.clock.now();
    let status = obj.status.clone().unwrap_or_default();

    let checked = decide::checked_spec(&obj).and_then(|(spec, router)| {
        ctx.effects.check(&spec)?;
        Ok((spec, router))
    });
    let (spec, router) = match checked {
        Ok(ok) => ok,
        Err(Error::InvalidSpec(message)) => {
            let st = status::invalid(&obj, &status, &message, now);
            status::write_status(&ctx.client, &obj, &st).await?;
            return Err(Error::InvalidSpec(message));
        }
        Err(e) => return Err(e),
    };

    let target = apply::target(&ctx.client, &obj).await?;
    let stable_version = apply::target_version(&target);
    let state = status::engine_state(&status, &spec)?;

    // The canary must be up before any traffic moves to it: at the start, and before
    // a retry of a rolled-back rollout (whose canary was scaled to zero), which is
    // consumed only once the canary is ready.
    let retry_pending = state.phase.is_rolled_back()
        && command::pending_command(&obj, &status).is_some_and(|(cmd, _)| cmd.trim() == "retry");
    if state.phase == Phase::Pending || retry_pending {
        let canary = canary_deployment(&obj, &target, &spec, true)?;
        let applied = match apply::apply_deployment(
            &ctx.client,
            &ns,
            &canary,
            apply::Ownership::Shared,
        )
        .await
        {
            Err(e @ Error::FieldConflict { .. }) => {
                status::record_warning(&ctx, &obj, "FieldConflict", &e.to_string(), now).await?;
                return Err(e);
            }
            other => other?,
        };
        if !deployment_ready(&applied) {
            let st = status::waiting_for_canary(&obj, &status, &spec, &state, now)?;
            status::write_status(&ctx.client, &obj, &st).await?;
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
    }

    let plan = decide::decide(&ctx, &obj, &spec, &status, state, &stable_version, now).await?;

    // Persist, then act.
    let stable_done =
        plan.state.phase == Phase::Succeeded && apply::stable_promoted(&target, &obj, &spec);
    let routed = apply::routed_weight(&plan.state, stable_done);
    let st = status::stepped(&obj, &status, &spec, &plan, routed, stable_done, now)?;
    status::write_status(&ctx.client, &obj, &st).await?;
    ctx.telemetry
        .rollout(&ns, &name, &plan.state.phase.to_string(), routed);
    if let Some((job, result)) = &plan.hook_taken {
        ctx.effects.consumed(job);
        ctx.telemetry
            .hooks_ran(job.point.list_name(), result.error.is_none());
        status::record_hooks(&ctx, &obj, job.point.list_name(), result, now).await?;
    }

    // The world follows the persisted state.
    let followed = apply::follow(
        &ctx.client,
        &obj,
        &target,
        &spec,
        &router,
        &plan,
        stable_done,
    )
    .await;
    match &followed {
        Err(e @ Error::FieldConflict { .. }) => {
            status::record_warning(&ctx, &obj, "FieldConflict", &e.to_string(), now).await?;
        }
        Err(_) => return followed.map(|()| Action::await_change()),
        Ok(()) => {}
    }
    // Hooks, notifications and `onEvent` hooks, now that the status holds the step.
    let info = effects::rollout_info(&obj, &spec, &stable_version, &plan.state);
    for action in &plan.actions {
        if let fledge_engine::Action::RunHook { hook, attempt } = action {
            let job = effects::HookJob {
                rollout: info.id.clone(),
                version: spec.version.clone(),
                point: *hook,
                attempt: *attempt,
            };
            ctx.effects
                .start_hooks(job, &spec, info.clone(), ObjectRef::from_obj(&*obj));
        }
    }
    ctx.effects.announce(&spec, &info, &plan.events);
    for (i, event) in plan.events.iter().enumerate() {
        ctx.telemetry.decided(&effects::kind_name(event));
        status::record_event(&ctx, &obj, event, i, now).await?;
    }
    followed?;
    info!(rollout = %name, phase = %plan.state.phase, weight = routed, "reconciled");

    Ok(match plan.state.phase {
        Phase::Progressing | Phase::Paused => {
            Action::requeue(spec.analysis.interval.max(Duration::from_secs(1)))
        }
        Phase::Succeeded if !stable_done => Action::requeue(Duration::from_secs(5)),
        _ => Action::requeue(Duration::from_secs(300)),
    })
}
