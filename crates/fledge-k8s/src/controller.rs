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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fledge_engine::{
    Action as EngineAction, Actor, Command, Event, EventKind, Input, Outcome, Phase, RolloutState,
    Timestamp, step,
};
use fledge_providers::metrics::{
    CustomQuery, MetricSource, ObserveQuery, PrometheusSettings, PrometheusSource,
};
use fledge_spec::RolloutSpec;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::crd::{
    ANNOTATION_ACTOR, ANNOTATION_COMMAND, ANNOTATION_COMMAND_ID, CanaryRollout,
    CanaryRolloutStatus, Condition, FIELD_MANAGER, LABEL_ROLE, LABEL_ROLLOUT, LABEL_VERSION,
    MetricsSpec, RouterSpec,
};
use crate::error::Error;
use crate::router::{self, RouteState, Router};

/// The reporting controller named in Events.
pub const REPORTING_CONTROLLER: &str = "fledge.dev/operator";

/// The wall clock, injected so tests choose the time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Timestamp::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// Makes the metric source a CanaryRollout names (tests hand in a fake).
pub trait MetricsFactory: Send + Sync + std::fmt::Debug {
    /// The source for `spec`.
    fn source(&self, spec: &MetricsSpec) -> Result<Arc<dyn MetricSource>, Error>;
}

/// Builds [`PrometheusSource`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrometheusFactory;

impl MetricsFactory for PrometheusFactory {
    fn source(&self, spec: &MetricsSpec) -> Result<Arc<dyn MetricSource>, Error> {
        let p = &spec.prometheus;
        let mut settings = PrometheusSettings::new(p.address.clone());
        if let Some(q) = &p.requests {
            settings.requests = q.clone();
        }
        if let Some(q) = &p.errors {
            settings.errors = q.clone();
        }
        if let Some(q) = &p.latency_buckets {
            settings.latency_buckets = q.clone();
        }
        if let Some(q) = &p.latency_sum {
            settings.latency_sum = q.clone();
        }
        let source = PrometheusSource::new(settings)
            .map_err(|e| Error::InvalidSpec(format!("spec.metrics.prometheus: {e}")))?;
        Ok(Arc::new(source))
    }
}

/// What every reconcile shares.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Metric sources.
    pub metrics: Arc<dyn MetricsFactory>,
    /// This replica's identity (pod name), in Events.
    pub identity: String,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("clock", &self.clock)
            .field("metrics", &self.metrics)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let rollouts: Api<CanaryRollout> = Api::all(ctx.client.clone());
    let deployments: Api<Deployment> = Api::all(ctx.client.clone());
    Controller::new(rollouts, watcher::Config::default())
        .owns(
            deployments,
            watcher::Config::default().labels(LABEL_ROLLOUT),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(rollout = %obj.name, "reconciled"),
                Err(e) => warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

/// How long to wait after an error: a conflict is retried at once (the object
/// changed; the fresh one is read), an invalid spec waits for an edit, anything else
/// is retried after a few seconds.
#[allow(clippy::needless_pass_by_value)] // the signature `Controller::run` requires
pub fn error_policy(obj: Arc<CanaryRollout>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(rollout = %obj.name_any(), error = %err, "reconcile error");
    match err {
        Error::Conflict(_) => Action::requeue(Duration::from_millis(200)),
        Error::InvalidSpec(_) => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

/// Everything a reconcile worked out before acting.
struct Plan {
    state: RolloutState,
    events: Vec<Event>,
    actions: Vec<EngineAction>,
    last_command_id: Option<String>,
    message: String,
    evidence: Option<Value>,
}

/// Brings one CanaryRollout a step forward and the world in line with it.
pub async fn reconcile(obj: Arc<CanaryRollout>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_else(|| "default".to_owned());
    let name = obj.name_any();
    let now = ctx.clock.now();
    let status = obj.status.clone().unwrap_or_default();

    let (spec, router) = match checked_spec(&obj) {
        Ok(ok) => ok,
        Err(Error::InvalidSpec(message)) => {
            let mut st = status.clone();
            set_condition(
                &mut st.conditions,
                "SpecValid",
                "False",
                "InvalidSpec",
                &message,
                now,
            );
            st.message = Some(message.clone());
            st.observed_generation = obj.metadata.generation;
            write_status(&ctx.client, &obj, &st).await?;
            return Err(Error::InvalidSpec(message));
        }
        Err(e) => return Err(e),
    };

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let target_name = &obj.spec.target_ref.name;
    let target = deployments
        .get_opt(target_name)
        .await
        .map_err(|e| Error::kube(format!("get Deployment {ns}/{target_name}"), e))?
        .ok_or_else(|| Error::Missing {
            what: format!("Deployment {ns}/{target_name}"),
        })?;
    let stable_version = target_version(&target);

    // A new version in the spec starts a new rollout.
    let state = match (&status.version, &status.engine_state) {
        (Some(v), Some(s)) if *v == spec.version => serde_json::from_value(s.clone())
            .map_err(|e| Error::Serialize(format!("status.engineState: {e}")))?,
        _ => RolloutState::pending(),
    };

    // The canary must be up before any traffic moves to it: at the start, and before
    // a retry of a rolled-back rollout (whose canary was scaled to zero), which is
    // consumed only once the canary is ready.
    let retry_pending = state.phase.is_rolled_back()
        && pending_command(&obj, &status).is_some_and(|(cmd, _)| cmd.trim() == "retry");
    if state.phase == Phase::Pending || retry_pending {
        let canary = canary_deployment(&obj, &target, &spec, true)?;
        let applied = apply_deployment(&ctx.client, &ns, &canary).await?;
        if !deployment_ready(&applied) {
            let mut st = status.clone();
            st.version = Some(spec.version.clone());
            st.phase = Some(state.phase.to_string());
            st.engine_state = Some(to_json(&state)?);
            st.observed_generation = obj.metadata.generation;
            st.message = Some(format!(
                "waiting for the canary Deployment {}-canary to be ready",
                target_name
            ));
            set_condition(&mut st.conditions, "SpecValid", "True", "Valid", "", now);
            write_status(&ctx.client, &obj, &st).await?;
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
    }

    let plan = decide(&ctx, &obj, &spec, &status, state, &stable_version, now).await?;

    // Persist, then act.
    let stable_done = plan.state.phase == Phase::Succeeded && stable_promoted(&target, &obj, &spec);
    let mut st = status.clone();
    st.version = Some(spec.version.clone());
    st.phase = Some(plan.state.phase.to_string());
    st.stage = Some(plan.state.stage_index as i64);
    let routed = routed_weight(&plan.state, stable_done);
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
    write_status(&ctx.client, &obj, &st).await?;

    // The world follows the persisted state.
    let active = plan.state.phase.is_active();
    let canary = canary_deployment(&obj, &target, &spec, active)?;
    if plan.state.phase != Phase::Succeeded || stable_done {
        apply_deployment(&ctx.client, &ns, &canary).await?;
    }
    if plan.state.phase == Phase::Succeeded || plan.actions.contains(&EngineAction::PromoteCanary) {
        apply_deployment(&ctx.client, &ns, &promoted_stable(&obj, &target, &spec)).await?;
    }
    let matches = if active {
        router::request_matches(&spec.match_rules)
    } else {
        Vec::new()
    };
    let route = RouteState {
        canary_weight: routed,
        matches,
    };
    let ingress = match &router {
        Router::NginxIngress(r) => {
            let api: Api<Ingress> = Api::namespaced(ctx.client.clone(), &ns);
            Some(
                api.get(&r.ingress)
                    .await
                    .map_err(|e| Error::kube(format!("get Ingress {ns}/{}", r.ingress), e))?,
            )
        }
        _ => None,
    };
    for desired in router::desired_objects(&router, &ns, &name, &route, ingress.as_ref())? {
        router::apply(&ctx.client, &desired).await?;
    }
    for (i, event) in plan.events.iter().enumerate() {
        record_event(&ctx, &obj, event, i, now).await?;
    }
    info!(rollout = %name, phase = %plan.state.phase, weight = routed, "reconciled");

    Ok(match plan.state.phase {
        Phase::Progressing | Phase::Paused => {
            Action::requeue(spec.analysis.interval.max(Duration::from_secs(1)))
        }
        Phase::Succeeded if !stable_done => Action::requeue(Duration::from_secs(5)),
        _ => Action::requeue(Duration::from_secs(300)),
    })
}

/// The canary weight the router holds: the engine's, except that a succeeded
/// rollout keeps the canary serving until the stable Deployment runs the new
/// version, and then routes everything to stable.
fn routed_weight(state: &RolloutState, stable_done: bool) -> u8 {
    match state.phase {
        Phase::Succeeded if stable_done => 0,
        Phase::Succeeded => 100,
        Phase::Failed | Phase::Aborted | Phase::Pending => 0,
        _ => state.canary_weight,
    }
}

fn is_decision(kind: EventKind) -> bool {
    !matches!(kind, EventKind::AnalysisRecovered)
}

/// Feeds the engine the one input this reconcile has.
async fn decide(
    ctx: &Context,
    obj: &CanaryRollout,
    spec: &RolloutSpec,
    status: &CanaryRolloutStatus,
    state: RolloutState,
    stable_version: &str,
    now: Timestamp,
) -> Result<Plan, Error> {
    let annotations = obj.annotations();
    let pending_command = pending_command(obj, status);
    let plan = |state: RolloutState, events: Vec<Event>, actions, message: String, evidence| Plan {
        state,
        events,
        actions,
        last_command_id: status.last_command_id.clone(),
        message,
        evidence,
    };

    if state.phase == Phase::Pending {
        let s = step(spec, &state, Input::Start, now)?;
        let message = format!("started: canary at {}%", s.state.canary_weight);
        return Ok(plan(s.state, s.events, s.actions, message, None));
    }

    if let Some((cmd, id)) = pending_command {
        let last_command_id = Some(id);
        let actor = Actor::operator(
            annotations
                .get(ANNOTATION_ACTOR)
                .cloned()
                .unwrap_or_else(|| "kubectl".to_owned()),
        );
        let command = match parse_command(&cmd) {
            Ok(command) => command,
            Err(e) => {
                // A mistyped command is refused and recorded, not retried forever.
                let message = format!("{actor} ran {cmd}: refused: {e}");
                return Ok(Plan {
                    state,
                    events: Vec::new(),
                    actions: Vec::new(),
                    last_command_id,
                    message,
                    evidence: None,
                });
            }
        };
        return Ok(
            match step(
                spec,
                &state,
                Input::Command {
                    command,
                    actor: actor.clone(),
                },
                now,
            ) {
                Ok(s) => {
                    let message = format!("{actor} ran {cmd}: now {}", s.state.phase);
                    Plan {
                        state: s.state,
                        events: s.events,
                        actions: s.actions,
                        last_command_id,
                        message,
                        evidence: None,
                    }
                }
                Err(e) => {
                    let message = format!("{actor} ran {cmd}: refused: {e}");
                    Plan {
                        state,
                        events: Vec::new(),
                        actions: Vec::new(),
                        last_command_id,
                        message,
                        evidence: None,
                    }
                }
            },
        );
    }

    if !matches!(state.phase, Phase::Progressing | Phase::Paused) {
        let message = format!("{} at {}%", state.phase, state.canary_weight);
        return Ok(plan(state, Vec::new(), Vec::new(), message, None));
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
        return Ok(plan(
            state,
            vec![event],
            vec![EngineAction::SetWeight { canary: 0 }],
            message,
            Some(json!(crashes)),
        ));
    }

    let input = match &obj.spec.metrics {
        None => Input::Tick,
        Some(m) => {
            let source = ctx.metrics.source(m)?;
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
    Ok(plan(s.state, s.events, s.actions, message, None))
}

/// The command in the annotations (text, id) when its id was not processed yet.
fn pending_command(obj: &CanaryRollout, status: &CanaryRolloutStatus) -> Option<(String, String)> {
    let annotations = obj.annotations();
    match (
        annotations.get(ANNOTATION_COMMAND),
        annotations.get(ANNOTATION_COMMAND_ID),
    ) {
        (Some(cmd), Some(id)) if Some(id) != status.last_command_id.as_ref() => {
            Some((cmd.clone(), id.clone()))
        }
        _ => None,
    }
}

/// An operator command as the `fledge.dev/command` annotation spells it.
pub fn parse_command(text: &str) -> Result<Command, Error> {
    Ok(match text.trim() {
        "promote" => Command::Promote { full: false },
        "promote-full" => Command::Promote { full: true },
        "abort" => Command::Abort { reason: None },
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "retry" => Command::Retry,
        other => {
            return Err(Error::InvalidCommand(format!(
                "expected promote, promote-full, abort, pause, resume or retry, found `{other}`"
            )));
        }
    })
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
fn checked_spec(obj: &CanaryRollout) -> Result<(RolloutSpec, Router), Error> {
    let text =
        serde_json::to_string(&obj.spec.rollout).map_err(|e| Error::Serialize(e.to_string()))?;
    let spec = fledge_spec::parse_spec(&text, "spec.rollout")
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    if !spec.hooks.is_empty() || !spec.notifications.is_empty() {
        return Err(Error::InvalidSpec(
            "spec.rollout: hooks and notifications are not run by the operator yet; remove them"
                .into(),
        ));
    }
    if obj.spec.target_ref.containers.is_empty() {
        return Err(Error::InvalidSpec(
            "spec.targetRef.containers: at least one container image expected".into(),
        ));
    }
    let router = Router::from_spec(&obj.spec.router, &spec.match_rules)?;
    Ok((spec, router))
}

/// Whether a router spec names exactly one router (for `fledge` CLI checks).
pub fn router_kind(spec: &RouterSpec) -> Option<&'static str> {
    Router::from_spec(spec, &[]).ok().map(|r| r.kind())
}

fn target_version(target: &Deployment) -> String {
    target
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(LABEL_VERSION).cloned())
        .unwrap_or_else(|| "stable".to_owned())
}

fn owner(obj: &CanaryRollout) -> Option<OwnerReference> {
    obj.controller_owner_ref(&())
}

/// The canary Deployment: the target's pod template with the new images and the
/// `fledge.dev/role: canary` and `fledge.dev/version` labels, `replicas` pods when
/// `running` and none otherwise.
pub fn canary_deployment(
    obj: &CanaryRollout,
    target: &Deployment,
    spec: &RolloutSpec,
    running: bool,
) -> Result<Value, Error> {
    let name = obj.name_any();
    let target_name = target.name_any();
    let tspec = target
        .spec
        .clone()
        .ok_or_else(|| Error::InvalidSpec(format!("Deployment {target_name} has no spec")))?;
    let mut selector = tspec.selector.clone();
    let labels = selector.match_labels.get_or_insert_with(BTreeMap::new);
    if labels.get(LABEL_ROLE).map(String::as_str) != Some("stable") {
        return Err(Error::InvalidSpec(format!(
            "Deployment {target_name}: its selector must include `{LABEL_ROLE}: stable`, so the canary's pods (`{LABEL_ROLE}: canary`) are never the stable Deployment's"
        )));
    }
    labels.insert(LABEL_ROLE.into(), "canary".into());
    labels.insert(LABEL_ROLLOUT.into(), name.clone());
    let mut template = tspec.template;
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    let tl = meta.labels.get_or_insert_with(BTreeMap::new);
    tl.insert(LABEL_ROLE.into(), "canary".into());
    tl.insert(LABEL_ROLLOUT.into(), name.clone());
    tl.insert(LABEL_VERSION.into(), spec.version.clone());
    let pod = template
        .spec
        .as_mut()
        .ok_or_else(|| Error::InvalidSpec(format!("Deployment {target_name} has no pod spec")))?;
    for wanted in &obj.spec.target_ref.containers {
        let c = pod
            .containers
            .iter_mut()
            .find(|c| c.name == wanted.name)
            .ok_or_else(|| {
                Error::InvalidSpec(format!(
                    "spec.targetRef.containers: Deployment {target_name} has no container `{}`",
                    wanted.name
                ))
            })?;
        c.image = Some(wanted.image.clone());
    }
    let replicas = if running {
        obj.spec.target_ref.canary_replicas.unwrap_or(1)
    } else {
        0
    };
    let mut owners = Vec::new();
    owners.extend(owner(obj));
    Ok(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": format!("{target_name}-canary"),
            "namespace": obj.namespace(),
            "labels": {LABEL_ROLLOUT: name, LABEL_ROLE: "canary"},
            "ownerReferences": owners,
        },
        "spec": {
            "replicas": replicas,
            "selector": router::to_value(&selector)?,
            "template": router::to_value(&template)?,
        },
    }))
}

/// The fields of the stable Deployment that promotion sets: the new images and the
/// version label of its pod template. Applied server-side, only these fields change.
pub fn promoted_stable(obj: &CanaryRollout, target: &Deployment, spec: &RolloutSpec) -> Value {
    let containers: Vec<Value> = obj
        .spec
        .target_ref
        .containers
        .iter()
        .map(|c| json!({"name": c.name, "image": c.image}))
        .collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": target.name_any(), "namespace": obj.namespace()},
        "spec": {
            "template": {
                "metadata": {"labels": {LABEL_VERSION: spec.version}},
                "spec": {"containers": containers},
            },
        },
    })
}

/// Whether the stable Deployment runs the new images on every pod.
fn stable_promoted(target: &Deployment, obj: &CanaryRollout, spec: &RolloutSpec) -> bool {
    let Some(tspec) = &target.spec else {
        return false;
    };
    let on_new = obj.spec.target_ref.containers.iter().all(|want| {
        tspec.template.spec.as_ref().is_some_and(|p| {
            p.containers
                .iter()
                .any(|c| c.name == want.name && c.image.as_deref() == Some(&want.image))
        })
    }) && target_version(target) == spec.version;
    on_new && deployment_ready(target)
}

/// Whether a Deployment has rolled out: observed, every replica updated and available.
pub fn deployment_ready(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = &d.status else { return false };
    st.observed_generation >= d.metadata.generation
        && st.updated_replicas.unwrap_or(0) >= want
        && st.available_replicas.unwrap_or(0) >= want
        && st.replicas.unwrap_or(0) == want
}

async fn apply_deployment(
    client: &kube::Client,
    ns: &str,
    body: &Value,
) -> Result<Deployment, Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map_err(|e| Error::kube(format!("apply Deployment {ns}/{name}"), e))
}

/// Writes the status through the status subresource, with the resourceVersion read,
/// so a concurrent change makes it fail with 409 rather than be overwritten.
async fn write_status(
    client: &kube::Client,
    obj: &CanaryRollout,
    status: &CanaryRolloutStatus,
) -> Result<(), Error> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<CanaryRollout> = Api::namespaced(client.clone(), &ns);
    let body = json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": obj.name_any(), "resourceVersion": obj.resource_version()},
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&body),
    )
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
async fn record_event(
    ctx: &Context,
    obj: &CanaryRollout,
    event: &Event,
    index: usize,
    now: Timestamp,
) -> Result<(), Error> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<KubeEvent> = Api::namespaced(ctx.client.clone(), &ns);
    let warning = matches!(
        event.kind,
        EventKind::Failed | EventKind::Aborted | EventKind::AnalysisError | EventKind::HookFailed
    );
    let kind = serde_json::to_value(event.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let reason = upper_first(&kind);
    let note = event_note(event);
    let time = k8s_openapi::jiff::Timestamp::from_millisecond(now.0)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let ke = KubeEvent {
        metadata: ObjectMeta {
            // Unique per decision: the rollout, the time and the event's place in
            // the step.
            name: Some(format!("{}.{:x}.{index}", obj.name_any(), now.0)),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(time)),
        action: Some(reason.clone()),
        reason: Some(reason),
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
    // The API server refuses notes over 1 kB; cut on a character boundary.
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

/// Sends an operator command by annotating the CanaryRollout: the controller runs it
/// once (per id) and records the id in the status.
pub async fn send_command(
    client: &kube::Client,
    ns: &str,
    name: &str,
    command: &str,
    actor: &str,
    id: &str,
) -> Result<(), Error> {
    parse_command(command)?;
    let api: Api<CanaryRollout> = Api::namespaced(client.clone(), ns);
    let body = json!({"metadata": {"annotations": {
        ANNOTATION_COMMAND: command,
        ANNOTATION_COMMAND_ID: id,
        ANNOTATION_ACTOR: actor,
    }}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(|e| Error::kube(format!("annotate CanaryRollout {ns}/{name}"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
