//! Rollouts as the API shows them, their history, and what an operator may do to
//! them.

use fledge_engine::{AnalysisReport, Phase};
use fledge_spec::{CanarySpec, Stage, Strategy};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::app::RouterSync;

/// An operator's action on a rollout (`POST /rollouts/{id}/{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// End the current stage now, or (`?full=true`) go to 100% and succeed.
    Promote,
    /// Roll back: all traffic to stable.
    Abort,
    /// Hold the weight and stop the stage clock.
    Pause,
    /// Continue after a pause.
    Resume,
    /// Start a failed or aborted rollout again from stage 0.
    Retry,
}

impl Action {
    /// Every action, in the order a UI shows them.
    pub const ALL: [Action; 5] = [
        Action::Promote,
        Action::Abort,
        Action::Pause,
        Action::Resume,
        Action::Retry,
    ];

    /// The action's name, as in the API path.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::Abort => "abort",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Retry => "retry",
        }
    }

    /// The action named `name` (`promote`, …).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rollout: what it rolls out, where it is, the latest judgement, and what the
/// caller may do now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The rollout's id.
    pub id: String,
    /// The app it changes.
    pub app: String,
    /// The version it rolls out.
    pub version: String,
    /// Where it is in its life.
    pub phase: Phase,
    /// The current stage, 0-based.
    pub stage_index: usize,
    /// The canary's share of requests now, in percent (0 once failed or aborted,
    /// 100 once succeeded).
    pub canary_weight: u8,
    /// The share of stable's requests copied to the canary now, in percent: above 0
    /// in a stage with `mirror` (with `canaryWeight` 0, a dark canary); 0 once the
    /// rollout has ended.
    #[serde(default)]
    pub canary_mirror: u8,
    /// How traffic moves (the spec's `strategy`): `canary`, or `blueGreen`, whose
    /// stages are previews at 0% and a last switch to 100%.
    #[serde(default)]
    pub strategy: Strategy,
    /// The spec's stages.
    pub stages: Vec<Stage>,
    /// Where the canary runs, when the spec says.
    pub canary: Option<CanarySpec>,
    /// When the rollout was created (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
    /// When it last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub updated_at: String,
    /// When it ended (RFC 3339), once it has.
    #[schemars(extend("format" = "date-time"))]
    pub finished_at: Option<String>,
    /// Bumped by every stored change.
    pub revision: i64,
    /// The latest judgement of the current stage, criterion by criterion, with its
    /// evidence.
    pub analysis: Option<AnalysisReport>,
    /// The actions the rollout's phase allows and the caller's role permits, in the
    /// order of [`Action::ALL`]; `retry` only while the version is not already its
    /// app's stable one.
    pub allowed_actions: Vec<Action>,
    /// When the current stage started (its weight was applied; RFC 3339), while
    /// the rollout is moving through its stages.
    #[schemars(extend("format" = "date-time"))]
    pub stage_started_at: Option<String>,
    /// When the current stage will end by itself if nothing holds it (RFC 3339);
    /// absent for a stage that waits for a promote, and while paused.
    #[schemars(extend("format" = "date-time"))]
    pub stage_ends_at: Option<String>,
    /// Milliseconds of the current stage still to run (a paused stage keeps its
    /// remaining time); absent for a stage that waits for a promote.
    pub stage_remaining_ms: Option<u64>,
    /// Whether the app's router serves this rollout's route; only on the app's
    /// newest rollout, in `GET /rollouts/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_sync: Option<RouterSync>,
    /// The history, oldest first; absent from lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Event>>,
}

impl Rollout {
    /// Whether the rollout has ended (`Succeeded`, `Failed` or `Aborted`).
    pub fn is_terminal(&self) -> bool {
        self.phase.is_terminal()
    }

    /// Whether the caller may take `action` now.
    pub fn allows(&self, action: Action) -> bool {
        self.allowed_actions.contains(&action)
    }
}

/// One entry of a rollout's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unique across all rollouts, increasing; the live stream's event id.
    pub id: i64,
    /// The rollout it belongs to.
    pub rollout_id: String,
    /// The rollout's app.
    pub app: String,
    /// 1, 2, … within the rollout, without gaps.
    pub seq: i64,
    /// When it happened (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub at: String,
    /// What happened: `Created`, `StageStarted`, `Analysis`, `Paused`, `Failed`, …
    pub kind: String,
    /// Who decided: `engine`, or the name of the caller's token.
    pub actor: String,
    /// One sentence for people.
    pub message: String,
    /// The values, sample sizes and thresholds a decision compared.
    pub evidence: serde_json::Value,
}

/// The optional body of an action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Why, recorded in the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The query of `POST /apps/{app}/undo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UndoQuery {
    /// Switch all traffic back at once (one stage at 100%), instead of going
    /// through the stages of the app's latest spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<bool>,
}

/// The body of `POST /abort`: the rollout, by its id or by its app (the app's
/// active rollout), and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum AbortRequest {
    /// By id.
    Rollout {
        /// The rollout's id.
        rollout: String,
        /// Why, recorded in the event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// By app.
    App {
        /// The app whose active rollout is aborted.
        app: String,
        /// Why, recorded in the event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// The body of `POST /promote`: the rollout, by its id or by its app (the app's
/// active rollout), and whether to go to 100% at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum PromoteRequest {
    /// By id.
    Rollout {
        /// The rollout's id.
        rollout: String,
        /// Go to 100% and succeed, instead of ending the current stage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        full: Option<bool>,
    },
    /// By app.
    App {
        /// The app whose active rollout is promoted.
        app: String,
        /// Go to 100% and succeed, instead of ending the current stage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        full: Option<bool>,
    },
}

/// The query of `GET /rollouts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this app's rollouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Only rollouts in this phase (its name in any case).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "phase_in_any_case"
    )]
    pub phase: Option<Phase>,
    /// At most this many (100 by default, 1000 at most).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A phase name in any case, as `GET /rollouts?phase=` has always taken it.
fn phase_in_any_case<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Phase>, D::Error> {
    let Some(name) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    Phase::from_name(&name).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "phase: expected one of {}, found `{name}`",
            Phase::EXPECTED
        ))
    })
}

/// The query of `GET /rollouts/{id}/events`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events whose `seq` is larger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
}

/// The query of `POST /rollouts/{id}/promote`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteQuery {
    /// Go to 100% and succeed, instead of ending the current stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<bool>,
}
