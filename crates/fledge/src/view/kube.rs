//! CanaryRollouts as the CLI shows them with `--kube`: the same views as the
//! server's rollouts ([`Rollout`], [`AppStatus`]), filled from the resource's spec
//! and the engine state its status holds, so that tables, `-o json|yaml` and exit
//! codes read the same in both worlds.
//!
//! What the engine state decides (allowed actions, the stage clock) is asked of the
//! engine, as the server does. A field a cluster has no counterpart for is left out
//! of the machine output rather than made up: a rollout's `revision` (a stored
//! rollout's change counter) and its `events` (the history; the status keeps only
//! the last decision, shown as `lastDecision`), and in `status` the built-in
//! proxy's address, its health window and the live health of both versions.

use std::time::SystemTime;

use fledge_api::rollout::{Action, Rollout};
use fledge_api::status::{AppStatus, RolloutBrief, StableStatus};
use fledge_engine::{Phase, RolloutState, Timestamp};
use fledge_k8s::{CanaryRollout, CanaryRolloutStatus};
use kube::ResourceExt;
use serde::Serialize;
use serde_json::Value;

use super::render::{self, RolloutView};

/// One CanaryRollout: the API's view of its rollout, and what only the resource
/// says (its namespace, the operator's message and last decision).
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryView {
    /// The resource's namespace.
    pub namespace: String,
    /// The rollout, as the API would show it; its `id` is the resource's name.
    pub rollout: Rollout,
    /// The operator's summary (`status.message`).
    pub message: Option<String>,
    /// The latest decision with its evidence (`status.lastDecision`).
    pub last_decision: Option<Value>,
}

// === impl CanaryView ===

impl CanaryView {
    /// The view of `cr` at `now` (the stage clock's remaining time is counted from
    /// it, as the server counts from its own clock).
    pub fn of(cr: &CanaryRollout, now: SystemTime) -> CanaryView {
        let spec = &cr.spec.rollout;
        let status = cr.status.clone().unwrap_or_default();
        // The status is about the spec's version only: a new version is a new
        // rollout, pending until the operator starts it.
        let current = status.version.as_deref() == Some(spec.version.as_str());
        let state = fledge_k8s::controller::engine_state(&status, spec)
            .unwrap_or_else(|_| summary_state(&status));
        let phase = state.phase;
        let now_ms = Timestamp::from_system_time(now);
        let remaining = state.stage_remaining_ms(spec, now_ms);
        let running = phase == Phase::Progressing && state.route_unapplied_since.is_none();
        let rollout = Rollout {
            id: cr.name_any(),
            app: spec.app.clone(),
            version: spec.version.clone(),
            phase,
            stage_index: state.stage_index,
            canary_weight: match phase {
                Phase::Failed | Phase::Aborted => 0,
                Phase::Succeeded => 100,
                _ => state.canary_weight,
            },
            canary_mirror: state.canary_mirror,
            strategy: spec.strategy,
            stages: spec.stages.clone(),
            canary: spec.canary.clone(),
            created_at: cr
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            updated_at: last_write(cr).unwrap_or_default(),
            finished_at: state
                .outcome
                .as_ref()
                .filter(|_| phase.is_terminal())
                .map(|o| o.at.to_string()),
            revision: 0,
            analysis: state.analysis.clone(),
            allowed_actions: state
                .allowed_commands()
                .into_iter()
                .filter_map(Action::from_name)
                .collect(),
            stage_started_at: state
                .stage_started_at
                .filter(|_| matches!(phase, Phase::Progressing | Phase::Paused))
                .map(|t| t.to_string()),
            stage_ends_at: remaining
                .filter(|_| running)
                .map(|ms| now_ms.plus_millis(ms).to_string()),
            stage_remaining_ms: remaining,
            router_sync: None,
            events: None,
        };
        CanaryView {
            namespace: cr.namespace().unwrap_or_default(),
            rollout,
            message: status.message.clone().filter(|_| current),
            last_decision: status.last_decision.filter(|_| current),
        }
    }

    /// The text of the last decision, with who took it.
    fn decision_line(&self) -> Option<String> {
        let d = self.last_decision.as_ref()?;
        let message = d["message"].as_str().filter(|m| !m.is_empty())?;
        Some(match d["actor"].as_str() {
            Some(actor) => super::render::by_whom(message, actor),
            None => message.to_owned(),
        })
    }

    /// The one-shot rendering of `fledge get NAME --kube`: the server's detail,
    /// then the operator's message and last decision.
    pub fn detail(&self) -> String {
        let mut out = render::detail(&self.rollout);
        if let Some(message) = &self.message {
            out.push_str(&format!("\nMessage: {message}\n"));
        }
        if let Some(line) = self.decision_line() {
            out.push_str(&format!("Last decision: {line}\n"));
        }
        out
    }
}

impl RolloutView for CanaryView {
    fn rollout(&self) -> &Rollout {
        &self.rollout
    }

    fn decision_message(&self) -> Option<String> {
        let d = self.last_decision.as_ref()?;
        d["message"]
            .as_str()
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
    }
}

impl Serialize for CanaryView {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_json::to_value(&self.rollout).map_err(serde::ser::Error::custom)?;
        if let Value::Object(map) = &mut value {
            map.remove("revision");
            map.insert("namespace".into(), self.namespace.clone().into());
            if let Some(m) = &self.message {
                map.insert("message".into(), m.clone().into());
            }
            if let Some(d) = &self.last_decision {
                map.insert("lastDecision".into(), d.clone());
            }
        }
        value.serialize(serializer)
    }
}

/// The state the status's own fields tell (phase, stage, weight), for a status
/// whose `engineState` cannot be read: better the operator's summary than a
/// rollout shown as not started.
fn summary_state(status: &CanaryRolloutStatus) -> RolloutState {
    RolloutState {
        phase: status
            .phase
            .as_deref()
            .and_then(Phase::from_name)
            .unwrap_or_default(),
        stage_index: status
            .stage
            .and_then(|s| usize::try_from(s).ok())
            .unwrap_or(0),
        canary_weight: status
            .canary_weight
            .and_then(|w| u8::try_from(w).ok())
            .unwrap_or(0),
        ..RolloutState::default()
    }
}

/// When the resource was last written (its spec, annotations or status): the
/// latest time among its managed fields, else its creation.
fn last_write(cr: &CanaryRollout) -> Option<String> {
    let meta = &cr.metadata;
    meta.managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.time.as_ref())
        .map(|t| t.0)
        .max()
        .or(meta.creation_timestamp.as_ref().map(|t| t.0))
        .map(|t| t.to_string())
}

// === status ===

/// One CanaryRollout in `fledge status --kube`: its app, the version its stable
/// Deployment runs (when it could be read) and its rollout in brief.
#[derive(Debug, Clone, PartialEq)]
pub struct AppView {
    /// The resource's namespace.
    pub namespace: String,
    /// The app, as the table shows it; `stable.version` is `-` when unknown.
    pub app: AppStatus,
    /// Whether the stable version was read.
    pub stable_known: bool,
}

// === impl AppView ===

impl AppView {
    /// The status line of `view`, whose stable Deployment runs `stable`.
    pub fn of(view: &CanaryView, stable: Option<String>) -> AppView {
        AppView {
            namespace: view.namespace.clone(),
            stable_known: stable.is_some(),
            app: AppStatus {
                name: view.rollout.app.clone(),
                proxy: None,
                stable: StableStatus {
                    version: stable.unwrap_or_else(|| "-".into()),
                    endpoints: Vec::new(),
                    health: None,
                },
                canary: None,
                rollout: Some(RolloutBrief::of(&view.rollout)),
                previous_stable: None,
                allowed_actions: Vec::new(),
                window_seconds: 0.0,
            },
        }
    }
}

impl Serialize for AppView {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_json::to_value(&self.app).map_err(serde::ser::Error::custom)?;
        if let Value::Object(map) = &mut value {
            for key in ["proxy", "canary", "windowSeconds"] {
                map.remove(key);
            }
            if self.stable_known {
                map.insert(
                    "stable".into(),
                    serde_json::json!({"version": self.app.stable.version}),
                );
            } else {
                map.remove("stable");
            }
            map.insert("namespace".into(), self.namespace.clone().into());
        }
        value.serialize(serializer)
    }
}

/// The body `fledge status --kube -o json|yaml` prints: `{"apps": [...]}`, as the
/// server's `GET /status` without its `controller` (the operator's replicas are
/// not the CLI's to see).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusView {
    /// One entry per CanaryRollout.
    pub apps: Vec<AppView>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use fledge_engine::{Actor, Input, step};
    use serde_json::json;

    const SPEC: &str = "\
app: shop
version: v2
stages:
  - traffic: 20
    duration: 10s
  - traffic: 50
  - traffic: 100
    final: true
    promote: true
";

    fn spec() -> fledge_spec::RolloutSpec {
        fledge_spec::parse_spec(SPEC, "test.yaml").unwrap()
    }

    /// A CanaryRollout of [`SPEC`] whose status holds `state` and `extra` fields.
    #[allow(clippy::needless_pass_by_value)] // literals at every call site
    fn resource(state: Option<&RolloutState>, extra: Value) -> CanaryRollout {
        let mut status = json!({
            "version": "v2",
            "phase": state.map(|s| s.phase.to_string()),
            "engineState": state,
        });
        for (k, v) in extra.as_object().unwrap() {
            status[k] = v.clone();
        }
        serde_json::from_value(json!({
            "apiVersion": "fledge.dev/v1alpha1", "kind": "CanaryRollout",
            "metadata": {
                "name": "shop-canary", "namespace": "web",
                "creationTimestamp": "2026-01-02T03:04:05Z",
                "managedFields": [
                    {"manager": "kubectl", "operation": "Update", "time": "2026-01-02T03:04:05Z"},
                    {"manager": "fledge", "operation": "Update", "subresource": "status",
                     "time": "2026-01-02T03:05:00Z"},
                ],
            },
            "spec": {
                "rollout": serde_json::to_value(spec()).unwrap(),
                "targetRef": {"name": "shop", "containers": [{"name": "app", "image": "shop:v2"}]},
                "router": {"smi": {"trafficSplit": {"name": "shop"}, "rootService": "shop",
                           "stableService": "shop-stable", "canaryService": "shop-canary"}},
            },
            "status": status,
        }))
        .unwrap()
    }

    fn at(ms: i64) -> SystemTime {
        Timestamp(ms).to_system_time()
    }

    fn started(now: i64) -> RolloutState {
        step(
            &spec(),
            &RolloutState::pending(),
            Input::Start,
            Timestamp::from_millis(now),
        )
        .unwrap()
        .state
    }

    #[test]
    fn a_progressing_resource_reads_as_the_apis_rollout() {
        let state = started(1_000_000);
        let view = CanaryView::of(
            &resource(Some(&state), json!({"message": "started: canary at 20%"})),
            at(1_004_000),
        );
        let r = &view.rollout;
        assert_eq!(r.id, "shop-canary");
        assert_eq!((r.app.as_str(), r.version.as_str()), ("shop", "v2"));
        assert_eq!(r.phase, Phase::Progressing);
        assert_eq!((r.stage_index, r.canary_weight), (0, 20));
        assert_eq!(r.stages.len(), 3);
        assert_eq!(r.stage_remaining_ms, Some(6_000), "10 s stage, 4 s in");
        assert_eq!(
            r.stage_started_at.as_deref(),
            Some("1970-01-01T00:16:40.000Z")
        );
        assert_eq!(r.stage_ends_at.as_deref(), Some("1970-01-01T00:16:50.000Z"));
        assert_eq!(
            r.allowed_actions,
            [Action::Promote, Action::Abort, Action::Pause]
        );
        assert_eq!(r.created_at, "2026-01-02T03:04:05Z");
        assert_eq!(r.updated_at, "2026-01-02T03:05:00Z", "the latest write");
        assert_eq!(r.finished_at, None);
        assert_eq!(render::stage_label(r), "1/3");
        assert_eq!(view.namespace, "web");
        assert_eq!(view.message.as_deref(), Some("started: canary at 20%"));
    }

    #[test]
    fn a_rolled_back_resource_has_no_canary_weight_and_says_why() {
        let mut state = started(0);
        state = step(
            &spec(),
            &state,
            Input::Command {
                command: fledge_engine::Command::Abort { reason: None },
                actor: Actor::operator("alice"),
            },
            Timestamp::from_millis(2_000),
        )
        .unwrap()
        .state;
        let decision = json!({"at": 2000, "kind": "aborted", "actor": "alice",
                              "attempt": 1, "message": "aborted by alice"});
        let view = CanaryView::of(
            &resource(
                Some(&state),
                json!({"lastDecision": decision, "canaryWeight": 0}),
            ),
            at(5_000),
        );
        let r = &view.rollout;
        assert_eq!(r.phase, Phase::Aborted);
        assert_eq!(r.canary_weight, 0);
        assert_eq!(r.allowed_actions, [Action::Retry]);
        assert_eq!(r.finished_at.as_deref(), Some("1970-01-01T00:00:02.000Z"));
        assert_eq!(
            (r.stage_remaining_ms, r.stage_ends_at.as_ref()),
            (None, None)
        );
        assert_eq!(view.decision_message().as_deref(), Some("aborted by alice"));
        assert!(
            view.detail().contains("Last decision: aborted by alice\n"),
            "{}",
            view.detail()
        );
    }

    #[test]
    fn a_resource_not_yet_reconciled_is_pending() {
        let view = CanaryView::of(&resource(None, json!({})), at(0));
        assert_eq!(view.rollout.phase, Phase::Pending);
        assert_eq!(view.rollout.canary_weight, 0);
        assert_eq!(view.rollout.allowed_actions, [Action::Abort]);

        // A status about the previous version is not this rollout's.
        let old = started(0);
        let mut cr = resource(Some(&old), json!({"message": "v1 is done"}));
        cr.status.as_mut().unwrap().version = Some("v1".into());
        let view = CanaryView::of(&cr, at(0));
        assert_eq!(view.rollout.phase, Phase::Pending);
        assert_eq!(view.message, None);
    }

    #[test]
    fn an_unreadable_engine_state_falls_back_to_the_status_summary() {
        let cr = resource(
            None,
            json!({"phase": "Succeeded", "stage": 2, "canaryWeight": 100,
                   "engineState": {"phase": "Succeeded", "outcome": {"actor": {"kind": "engine", "name": "x"}}}}),
        );
        let view = CanaryView::of(&cr, at(0));
        assert_eq!(view.rollout.phase, Phase::Succeeded);
        assert_eq!(
            (view.rollout.stage_index, view.rollout.canary_weight),
            (2, 100)
        );
        assert!(view.rollout.allowed_actions.is_empty());
    }

    #[test]
    fn machine_output_leaves_out_what_a_cluster_has_no_counterpart_for() {
        let state = started(0);
        let view = CanaryView::of(&resource(Some(&state), json!({})), at(1_000));
        let json = serde_json::to_value(&view).unwrap();
        assert!(json.get("revision").is_none(), "{json}");
        assert!(json.get("events").is_none(), "{json}");
        assert_eq!(json["namespace"], "web");
        assert_eq!(json["id"], "shop-canary");
        assert_eq!(json["phase"], "Progressing");
        assert_eq!(json["canaryWeight"], 20);
        assert_eq!(json["stageIndex"], 0);

        let app = AppView::of(&view, Some("v1".into()));
        let json = serde_json::to_value(StatusView { apps: vec![app] }).unwrap();
        let app = &json["apps"][0];
        assert_eq!(app["name"], "shop");
        assert_eq!(app["stable"], json!({"version": "v1"}));
        assert_eq!(app["rollout"]["id"], "shop-canary");
        assert_eq!(app["rollout"]["canaryWeight"], 20);
        for absent in ["proxy", "canary", "windowSeconds"] {
            assert!(app.get(absent).is_none(), "{absent}: {app}");
        }
        let unknown = serde_json::to_value(AppView::of(&view, None)).unwrap();
        assert!(unknown.get("stable").is_none(), "{unknown}");
    }
}
