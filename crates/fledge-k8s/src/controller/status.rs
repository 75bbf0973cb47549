//! What a reconcile records: the status (written through the status subresource,
//! with the resourceVersion read), its conditions, and an `events.k8s.io/v1` Event
//! for each engine decision.

use fledge_engine::{Event, EventKind, Phase, RolloutState, Timestamp};
use fledge_spec::RolloutSpec;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::Value;

use super::context::Context;
use super::decide::Plan;
use super::effects::HookResult;
use crate::crd::{CanaryRollout, CanaryRolloutStatus, Condition};
use crate::error::Error;

/// The reporting controller named in Events.
pub const REPORTING_CONTROLLER: &str = "fledge.dev/operator";

/// The engine state the status holds for the spec's version; a new version in the
/// spec starts a new rollout.
pub fn engine_state(
    status: &CanaryRolloutStatus,
    spec: &RolloutSpec,
) -> Result<RolloutState, Error> {
    Ok(match (&status.version, &status.engine_state) {
        (Some(v), Some(s)) if *v == spec.version => serde_json::from_value(s.clone())
            .map_err(|e| Error::Serialize(format!("status.engineState: {e}")))?,
        _ => RolloutState::pending(),
    })
}

/// The status of a rollout whose spec cannot be run: `SpecValid` false, and why.
pub(super) fn invalid(
    obj: &CanaryRollout,
    status: &CanaryRolloutStatus,
    message: &str,
    now: Timestamp,
) -> CanaryRolloutStatus {
    let mut st = status.clone();
    set_condition(
        &mut st.conditions,
        "SpecValid",
        "False",
        "InvalidSpec",
        message,
        now,
    );
    st.message = Some(message.to_owned());
    st.observed_generation = obj.metadata.generation;
    st
}

/// The status of a rollout that waits for its canary Deployment to be ready before
/// any traffic moves to it.
pub(super) fn waiting_for_canary(
    obj: &CanaryRollout,
    status: &CanaryRolloutStatus,
    spec: &RolloutSpec,
    state: &RolloutState,
    now: Timestamp,
) -> Result<CanaryRolloutStatus, Error> {
    let mut st = status.clone();
    st.version = Some(spec.version.clone());
    st.phase = Some(state.phase.to_string());
    st.engine_state = Some(to_json(state)?);
    st.observed_generation = obj.metadata.generation;
    st.message = Some(format!(
        "waiting for the canary Deployment {}-canary to be ready",
        obj.spec.target_ref.name
    ));
    set_condition(&mut st.conditions, "SpecValid", "True", "Valid", "", now);
    Ok(st)
}

/// The status after the engine's step: the new engine state, the weights the
/// router holds (`routed` to the canary), the last decision with its evidence, and
/// the `Ready` condition (true once the stable Deployment runs the new version).
pub(super) fn stepped(
    obj: &CanaryRollout,
    status: &CanaryRolloutStatus,
    spec: &RolloutSpec,
    plan: &Plan,
    routed: u8,
    stable_done: bool,
    now: Timestamp,
) -> Result<CanaryRolloutStatus, Error> {
    let mut st = status.clone();
    st.version = Some(spec.version.clone());
    st.phase = Some(plan.state.phase.to_string());
    st.stage = Some(plan.state.stage_index as i64);
    st.canary_weight = Some(i64::from(routed));
    st.stable_weight = Some(100 - i64::from(routed));
    st.analysis = plan.state.analysis.as_ref().map(to_json).transpose()?;
    st.engine_state = Some(to_json(&plan.state)?);
    st.observed_generation = obj.metadata.generation;
    st.last_command_id = plan.last_command_id.clone();
    st.message = Some(plan.message.clone());
    if let Some(last) = plan.events.iter().rev().find(|e| is_decision(e.kind)) {
        let mut d = to_json(last)?;
        if let Some(extra) = &plan.evidence {
            d["podEvidence"] = extra.clone();
        }
        st.last_decision = Some(d);
    }
    set_condition(&mut st.conditions, "SpecValid", "True", "Valid", "", now);
    let (ready, reason) = match plan.state.phase {
        Phase::Succeeded if stable_done => ("True", "Promoted"),
        Phase::Succeeded => ("False", "PromotingStable"),
        Phase::Failed => ("False", "Failed"),
        Phase::Aborted => ("False", "Aborted"),
        Phase::Paused => ("False", "Paused"),
        _ => ("False", "Progressing"),
    };
    set_condition(
        &mut st.conditions,
        "Ready",
        ready,
        reason,
        &plan.message,
        now,
    );
    Ok(st)
}

fn is_decision(kind: EventKind) -> bool {
    !matches!(kind, EventKind::AnalysisRecovered)
}

/// Writes the whole status through the status subresource (a replace, so nothing
/// the new engine state leaves out survives from the old one), with the
/// resourceVersion read, so a concurrent change makes it fail with 409 rather than
/// be overwritten.
pub(super) async fn write_status(
    client: &kube::Client,
    obj: &CanaryRollout,
    status: &CanaryRolloutStatus,
) -> Result<(), Error> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<CanaryRollout> = Api::namespaced(client.clone(), &ns);
    let mut body = obj.clone();
    body.metadata.managed_fields = None;
    body.status = Some(status.clone());
    api.replace_status(&obj.name_any(), &PostParams::default(), &body)
        .await
        .map_err(|e| {
            Error::kube(
                format!("write status of CanaryRollout {ns}/{}", obj.name_any()),
                e,
            )
        })?;
    Ok(())
}

/// Records an engine event as an `events.k8s.io/v1` Event on the CanaryRollout.
pub(super) async fn record_event(
    ctx: &Context,
    obj: &CanaryRollout,
    event: &Event,
    index: usize,
    now: Timestamp,
) -> Result<(), Error> {
    let warning = matches!(
        event.kind,
        EventKind::Failed | EventKind::Aborted | EventKind::AnalysisError | EventKind::HookFailed
    );
    let kind = serde_json::to_value(event.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    // Unique per decision: the rollout, the time and the event's place in the step.
    let name = format!("{}.{:x}.{index}", obj.name_any(), now.0);
    create_event(
        ctx,
        obj,
        name,
        &upper_first(&kind),
        event_note(event),
        warning,
        now,
    )
    .await
}

/// Records a Warning Event on the CanaryRollout that is not an engine decision
/// (e.g. `FieldConflict`), `note` cut to the 1 kB the API server accepts.
pub(super) async fn record_warning(
    ctx: &Context,
    obj: &CanaryRollout,
    reason: &str,
    note: &str,
    now: Timestamp,
) -> Result<(), Error> {
    let name = format!("{}.{:x}.{}", obj.name_any(), now.0, reason.to_lowercase());
    create_event(ctx, obj, name, reason, cut(note.to_owned()), true, now).await
}

/// Records a `HookRan` Event (Warning when a hook failed) with each hook's target
/// and result, and the failing one's captured error output.
pub(super) async fn record_hooks(
    ctx: &Context,
    obj: &CanaryRollout,
    list: &str,
    result: &HookResult,
    now: Timestamp,
) -> Result<(), Error> {
    let mut note = match &result.error {
        None => format!("{list} hooks succeeded"),
        Some(e) => format!("{list} hooks failed: {e}"),
    };
    for o in &result.outcomes {
        note.push_str(&format!(
            "; {} {}: {}",
            o.kind,
            o.target,
            if o.success { "ok" } else { "failed" }
        ));
        if !o.success && !o.stderr.trim().is_empty() {
            note.push_str(&format!(" ({})", o.stderr.trim()));
        }
    }
    let name = format!("{}.{:x}.hookran", obj.name_any(), now.0);
    let warning = result.error.is_some();
    create_event(ctx, obj, name, "HookRan", cut(note), warning, now).await
}

async fn create_event(
    ctx: &Context,
    obj: &CanaryRollout,
    name: String,
    reason: &str,
    note: String,
    warning: bool,
    now: Timestamp,
) -> Result<(), Error> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<KubeEvent> = Api::namespaced(ctx.client.clone(), &ns);
    let time = k8s_openapi::jiff::Timestamp::from_millisecond(now.0)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let ke = KubeEvent {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(time)),
        action: Some(reason.to_owned()),
        reason: Some(reason.to_owned()),
        note: Some(note),
        type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
        regarding: Some(obj.object_ref(&())),
        reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
        reporting_instance: Some(ctx.identity.clone()),
        ..Default::default()
    };
    api.create(&PostParams::default(), &ke).await.map_err(|e| {
        Error::kube(
            format!("create Event for CanaryRollout {ns}/{}", obj.name_any()),
            e,
        )
    })?;
    Ok(())
}

/// The Event's note: the decision and each criterion's evidence, cut to the 1 kB the
/// API server accepts, on a character boundary.
fn event_note(event: &Event) -> String {
    let mut note = event.message.clone();
    for e in &event.evidence {
        note.push_str("; ");
        note.push_str(&e.summary);
    }
    cut(note)
}

/// The API server refuses notes over 1 kB; cut on a character boundary.
fn cut(mut note: String) -> String {
    if note.len() > 1000 {
        let mut end = 1000;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    note
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, Error> {
    serde_json::to_value(v).map_err(|e| Error::Serialize(e.to_string()))
}

/// Sets a condition, keeping its transition time when its status does not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let time = k8s_openapi::jiff::Timestamp::from_millisecond(now.0)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = time;
        }
        c.status = status.to_owned();
        c.reason = reason.to_owned();
        c.message = message.to_owned();
    } else {
        conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: time,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fledge_engine::Actor;

    #[test]
    fn long_event_notes_are_cut_on_a_character_boundary() {
        let event = Event {
            at: Timestamp::from_millis(0),
            kind: EventKind::Failed,
            actor: Actor::Engine,
            stage_index: Some(0),
            attempt: 1,
            message: "≥".repeat(400),
            evidence: Vec::new(),
        };
        let note = event_note(&event);
        assert!(note.len() <= 1000 && note.len() > 990);
        assert!(note.chars().all(|c| c == '≥'));
    }
}
