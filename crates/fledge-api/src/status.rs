//! `GET /status` (every app, its rollout and the live health of both versions), the
//! health endpoints, and the messages of the live stream `GET /events`.

use fledge_engine::Phase;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rollout::{Event, Rollout};

// Declared in `fledge-stats`, below both the API and the store, so that what
// `GET /status` serves and what the store keeps for the charts are one type.
pub use fledge_stats::ArmHealth;

/// The body of `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Every registered app.
    pub apps: Vec<AppStatus>,
    /// The replica that answered.
    pub controller: ControllerStatus,
}

/// One app in `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    /// The app's name.
    pub name: String,
    /// The address of its built-in proxy, if it has one.
    pub proxy: Option<String>,
    /// Its stable version.
    pub stable: StableStatus,
    /// The canary's recent health, while a rollout is active.
    pub canary: Option<ArmHealth>,
    /// The active rollout, if any.
    pub rollout: Option<RolloutBrief>,
    /// The version that was stable before `stable` (`previousStable` in
    /// `GET /apps/{app}`): where an undo goes back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_stable: Option<String>,
    /// What the caller may do to the app itself now (its rollout's actions are the
    /// rollout's `allowedActions`).
    #[serde(default)]
    pub allowed_actions: Vec<AppAction>,
    /// Seconds the health figures cover.
    pub window_seconds: f64,
}

/// An action on an app as a whole, as `allowedActions` in `GET /status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppAction {
    /// `POST /apps/{app}/undo`: a rollout back to the previous stable version;
    /// allowed while the app has one and no active rollout, to operators.
    Undo,
}

/// The stable version of an app in `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StableStatus {
    /// Its version label.
    pub version: String,
    /// Its upstream addresses.
    pub endpoints: Vec<String>,
    /// Its recent health, once the metric source has answered.
    pub health: Option<ArmHealth>,
}

/// The active rollout of an app, in brief.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutBrief {
    /// The rollout's id.
    pub id: String,
    /// The version it rolls out.
    pub version: String,
    /// Where it is in its life.
    pub phase: Phase,
    /// The current stage, 0-based.
    pub stage_index: usize,
    /// How many stages the spec has.
    pub stage_count: usize,
    /// The canary's share of requests now, in percent.
    pub canary_weight: u8,
    /// When it last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub updated_at: String,
}

impl RolloutBrief {
    /// The brief form of a rollout.
    pub fn of(rollout: &Rollout) -> Self {
        Self {
            id: rollout.id.clone(),
            version: rollout.version.clone(),
            phase: rollout.phase,
            stage_index: rollout.stage_index,
            stage_count: rollout.stages.len(),
            canary_weight: rollout.canary_weight,
            updated_at: rollout.updated_at.clone(),
        }
    }
}

/// The replica that answered `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControllerStatus {
    /// This replica's name in the controller lease.
    pub replica: String,
    /// Whether it leads the controller (runs rollouts and hooks).
    pub leader: bool,
    /// The lease's fencing epoch, while this replica leads.
    pub epoch: Option<i64>,
}

/// The body of `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// `ok` (alive) or `ready`.
    pub status: String,
}

/// One message of the live stream `GET /events`; the SSE event name is the
/// variant's name and the data is its JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", content = "data", rename_all = "lowercase")]
pub enum LiveMessage {
    /// A rollout changed: its new view (without events).
    Rollout(Box<Rollout>),
    /// A new history entry; its `id` is the SSE event id.
    Event(Event),
    /// A snapshot of every app (the body of `GET /status`), every two seconds.
    Status(Status),
}

impl LiveMessage {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            LiveMessage::Rollout(_) => "rollout",
            LiveMessage::Event(_) => "event",
            LiveMessage::Status(_) => "status",
        }
    }

    /// The SSE data: the JSON of the payload.
    pub fn data(&self) -> String {
        let json = match self {
            LiveMessage::Rollout(r) => serde_json::to_string(r),
            LiveMessage::Event(e) => serde_json::to_string(e),
            LiveMessage::Status(s) => serde_json::to_string(s),
        };
        json.unwrap_or_default()
    }

    /// Reads a message back from its SSE event name and data.
    pub fn parse(name: &str, data: &str) -> Result<Self, String> {
        let bad = |e: serde_json::Error| format!("live event `{name}`: {e}");
        match name {
            "rollout" => serde_json::from_str(data)
                .map(LiveMessage::Rollout)
                .map_err(bad),
            "event" => serde_json::from_str(data)
                .map(LiveMessage::Event)
                .map_err(bad),
            "status" => serde_json::from_str(data)
                .map(LiveMessage::Status)
                .map_err(bad),
            other => Err(format!("unknown live event `{other}`")),
        }
    }
}
