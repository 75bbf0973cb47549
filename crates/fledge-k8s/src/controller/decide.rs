//! What one reconcile decides: the spec checked as `fledge apply` checks it, and the
//! one input the engine gets (a start, an operator command, the canary's pod health
//! or its metrics) with the engine's answer.

use std::time::Duration;

use fledge_engine::{
    Action as EngineAction, Actor, Event, EventKind, Input, Outcome, Phase, RolloutState, Step,
    Timestamp, step,
};
use fledge_providers::metrics::{CustomQuery, ObserveQuery};
use fledge_spec::RolloutSpec;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use super::command::{parse_command, pending_command};
use super::context::Context;
use super::effects::{self, HookJob, HookResult};
use crate::crd::{
    ANNOTATION_ACTOR, CanaryRollout, CanaryRolloutStatus, LABEL_ROLE, LABEL_ROLLOUT, RouterSpec,
};
use crate::error::Error;
use crate::router::Router;

/// Everything a reconcile worked out before acting.
pub(super) struct Plan {
    /// The engine state to persist.
    pub state: RolloutState,
    /// The decisions to record as Events, in order.
    pub events: Vec<Event>,
    /// What the engine asks of the world.
    pub actions: Vec<EngineAction>,
    /// The id of the last command run (this one's when it ran or was refused).
    pub last_command_id: Option<String>,
    /// The status message.
    pub message: String,
    /// The failing pods, when they decided.
    pub evidence: Option<Value>,
    /// The hook result fed to the engine, forgotten once the status holds it.
    pub hook_taken: Option<(HookJob, HookResult)>,
}

// === impl Plan ===

impl Plan {
    /// The engine's step, explained by `message`.
    fn stepped(s: Step, last_command_id: Option<String>, message: String) -> Plan {
        Plan {
            state: s.state,
            events: s.events,
            actions: s.actions,
            last_command_id,
            message,
            evidence: None,
            hook_taken: None,
        }
    }

    /// No step: the state stays as it is, and `message` says why.
    fn unchanged(state: RolloutState, last_command_id: Option<String>, message: String) -> Plan {
        Plan {
            state,
            events: Vec::new(),
            actions: Vec::new(),
            last_command_id,
            message,
            evidence: None,
            hook_taken: None,
        }
    }
}

/// Feeds the engine the one input this reconcile has.
pub(super) async fn decide(
    ctx: &Context,
    obj: &CanaryRollout,
    spec: &RolloutSpec,
    status: &CanaryRolloutStatus,
    state: RolloutState,
    stable_version: &str,
    now: Timestamp,
) -> Result<Plan, Error> {
    let last_command_id = status.last_command_id.clone();

    if state.phase == Phase::Pending {
        let s = step(spec, &state, Input::Start, now)?;
        let message = format!("started: canary at {}%", s.state.canary_weight);
        return Ok(Plan::stepped(s, last_command_id, message));
    }

    if let Some((cmd, id)) = pending_command(obj, status) {
        let last_command_id = Some(id);
        let actor = Actor::operator(
            obj.annotations()
                .get(ANNOTATION_ACTOR)
                .cloned()
                .unwrap_or_else(|| "kubectl".to_owned()),
        );
        // A mistyped or refused command is recorded (its id is consumed), not retried
        // forever.
        let stepped = match parse_command(&cmd) {
            Ok(command) => {
                let input = Input::Command {
                    command,
                    actor: actor.clone(),
                };
                step(spec, &state, input, now).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        return Ok(match stepped {
            Ok(s) => {
                let message = format!("{actor} ran {cmd}: now {}", s.state.phase);
                Plan::stepped(s, last_command_id, message)
            }
            Err(e) => {
                let message = format!("{actor} ran {cmd}: refused: {e}");
                Plan::unchanged(state, last_command_id, message)
            }
        });
    }

    // Hooks: a finished list's result is this reconcile's input; a gate still waiting
    // with nobody running its hooks (lost in a restart or a change of leader) runs
    // them again.
    let rollout = effects::rollout_id(obj);
    if let Some((job, result)) = ctx.effects.finished(&rollout, &spec.version) {
        let input = Input::HookDone {
            hook: job.point,
            attempt: job.attempt,
            error: result.error.clone(),
        };
        let s = step(spec, &state, input, now)?;
        let message = format!(
            "{} hooks {}",
            job.point.list_name(),
            match &result.error {
                None => "succeeded".to_owned(),
                Some(e) => format!("failed: {e}"),
            }
        );
        let mut plan = Plan::stepped(s, last_command_id, message);
        plan.hook_taken = Some((job, result));
        return Ok(plan);
    }
    if let Some((point, attempt)) = state.waiting_hooks() {
        let job = HookJob {
            rollout,
            version: spec.version.clone(),
            point,
            attempt,
        };
        let info = effects::rollout_info(obj, spec, stable_version, &state);
        ctx.effects
            .start_hooks(job, spec, info, ObjectRef::from_obj(obj));
    }

    if !matches!(state.phase, Phase::Progressing | Phase::Paused) {
        let message = format!("{} at {}%", state.phase, state.canary_weight);
        return Ok(Plan::unchanged(state, last_command_id, message));
    }

    // Pod health first: a restarting canary fails whatever the metrics say.
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let selector = format!("{LABEL_ROLLOUT}={},{LABEL_ROLE}=canary", obj.name_any());
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube(format!("list Pods {selector}"), e))?;
    let crashes = crash_evidence(&list.items);
    if !crashes.is_empty() {
        let (state, event) = fail_for_pods(&state, &crashes, now);
        let message = event.message.clone();
        return Ok(Plan {
            state,
            events: vec![event],
            actions: vec![EngineAction::SetWeight {
                canary: 0,
                mirror: 0,
            }],
            last_command_id,
            message,
            evidence: Some(json!(crashes)),
            hook_taken: None,
        });
    }

    let input = match &obj.spec.metrics {
        None => Input::Tick,
        Some(m) => {
            let ns = obj.namespace().unwrap_or_default();
            let source = match ctx.metrics.source(&ctx.client, &ns, m).await {
                Ok(source) => source,
                Err(e @ Error::InvalidSpec(_)) => return Err(e),
                // A Secret not there (yet) or unreadable: a failed read, which
                // `analysis.maxConsecutiveErrors` bounds.
                Err(e) => return step_unavailable(spec, &state, last_command_id, &e, now),
            };
            let window = state.started_at.map_or(0, |s| now.millis_since(s));
            let query = ObserveQuery {
                app: spec.app.clone(),
                stable_version: stable_version.to_owned(),
                canary_version: spec.version.clone(),
                window: Duration::from_millis(window),
                custom: CustomQuery::from_spec_metrics(&spec.metrics),
            };
            match source.observe(&query).await {
                Ok(o) => Input::Observe(o),
                Err(e) => Input::MetricsUnavailable {
                    error: e.to_string(),
                },
            }
        }
    };
    let s = step(spec, &state, input, now)?;
    let message = s
        .events
        .last()
        .map(|e| e.message.clone())
        .unwrap_or_else(|| {
            format!(
                "{} at stage {} ({}%)",
                s.state.phase, s.state.stage_index, s.state.canary_weight
            )
        });
    Ok(Plan::stepped(s, last_command_id, message))
}

fn step_unavailable(
    spec: &RolloutSpec,
    state: &RolloutState,
    last_command_id: Option<String>,
    e: &Error,
    now: Timestamp,
) -> Result<Plan, Error> {
    let input = Input::MetricsUnavailable {
        error: e.to_string(),
    };
    let s = step(spec, state, input, now)?;
    let message = format!("metrics unavailable: {e}");
    Ok(Plan::stepped(s, last_command_id, message))
}

/// Restarted or crash-looping containers of the canary's pods, as evidence.
pub fn crash_evidence(pods: &[Pod]) -> Vec<Value> {
    let mut out = Vec::new();
    for pod in pods {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref());
        for c in statuses.into_iter().flatten() {
            let waiting = c
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone());
            let crashloop = waiting.as_deref() == Some("CrashLoopBackOff");
            if c.restart_count > 0 || crashloop {
                out.push(json!({
                    "pod": pod.name_any(),
                    "container": c.name,
                    "restarts": c.restart_count,
                    "reason": waiting.unwrap_or_else(|| "Restarted".to_owned()),
                }));
            }
        }
    }
    out
}

/// The engine has no input for "the canary's pods are failing", so the shell fails
/// the rollout the way the engine fails it on a criterion: phase `Failed`, weight 0,
/// the outcome and a `Failed` event by the engine, with the pods as evidence.
pub fn fail_for_pods(
    state: &RolloutState,
    crashes: &[Value],
    now: Timestamp,
) -> (RolloutState, Event) {
    let described: Vec<String> = crashes
        .iter()
        .map(|c| {
            format!(
                "{}/{} {} ({} restarts)",
                c["pod"].as_str().unwrap_or("?"),
                c["container"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or("?"),
                c["restarts"]
            )
        })
        .collect();
    let reason = format!("canary pods are failing: {}", described.join(", "));
    let mut next = state.clone();
    next.phase = Phase::Failed;
    next.canary_weight = 0;
    next.canary_mirror = 0;
    next.gate = None;
    next.paused_at = None;
    next.outcome = Some(Outcome {
        at: now,
        actor: Actor::Engine,
        reason: reason.clone(),
    });
    let event = Event {
        at: now,
        kind: EventKind::Failed,
        actor: Actor::Engine,
        stage_index: Some(state.stage_index),
        attempt: state.attempt,
        message: reason,
        evidence: Vec::new(),
    };
    (next, event)
}

/// The spec, validated as `fledge apply` validates it, and the router, checked
/// against the match rules it must express.
pub(super) fn checked_spec(obj: &CanaryRollout) -> Result<(RolloutSpec, Router), Error> {
    let text =
        serde_json::to_string(&obj.spec.rollout).map_err(|e| Error::Serialize(e.to_string()))?;
    let spec = fledge_spec::parse_spec(&text, "spec.rollout")
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    if obj.spec.target_ref.containers.is_empty() {
        return Err(Error::InvalidSpec(
            "spec.targetRef.containers: at least one container image expected".into(),
        ));
    }
    let router = Router::from_spec(&obj.spec.router, &spec.match_rules)?;
    router.check_spec(&spec)?;
    Ok((spec, router))
}

/// Whether a router spec names exactly one router (for `fledge` CLI checks).
pub fn router_kind(spec: &RouterSpec) -> Option<&'static str> {
    Router::from_spec(spec, &[]).ok().map(|r| r.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_evidence_names_each_restarted_container() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"containerStatuses": [
                {"name": "ok", "image": "i", "imageID": "", "ready": true, "restartCount": 0},
                {"name": "bad", "image": "i", "imageID": "", "ready": false, "restartCount": 1,
                 "state": {"running": {}}},
            ]},
        }))
        .unwrap();
        let ev = crash_evidence(&[pod]);
        assert_eq!(
            ev,
            vec![json!({"pod": "p", "container": "bad", "restarts": 1, "reason": "Restarted"})]
        );
    }
}
