//! The records the store keeps, and the requests that change them.
//!
//! The store knows nothing of the engine's types: a rollout's state, its parsed spec,
//! an app's config and an event's evidence are opaque JSON values. The only thing it
//! understands is the phase name, because "one active rollout per app" is enforced by
//! the database.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, StoreError};

/// The rollout phases of the API contract, in lifecycle order.
pub const PHASES: [&str; 6] = [
    "Pending",
    "Progressing",
    "Paused",
    "Succeeded",
    "Failed",
    "Aborted",
];

/// The phases in which a rollout is active; an app has at most one active rollout.
pub const ACTIVE_PHASES: [&str; 3] = ["Pending", "Progressing", "Paused"];

/// Whether `phase` is one of [`ACTIVE_PHASES`].
pub fn is_active_phase(phase: &str) -> bool {
    ACTIVE_PHASES.contains(&phase)
}

/// The phases a rollout group can be in. Active: `Progressing`, `Paused`.
pub const GROUP_PHASES: &[&str] = &["Progressing", "Paused", "Succeeded", "Failed", "Aborted"];

/// Whether a group in `phase` is active (`Progressing` or `Paused`).
pub fn is_active_group_phase(phase: &str) -> bool {
    matches!(phase, "Progressing" | "Paused")
}

pub use fledge_stats::Timestamp;

/// An app as registered with fledge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppRecord {
    /// The app's name, unique.
    pub name: String,
    /// The app's configuration (stable version, endpoints, router, metric source),
    /// as the server serialized it.
    pub config: Value,
    /// When the app was first registered.
    pub created_at: Timestamp,
    /// When the config last changed.
    pub updated_at: Timestamp,
}

/// A new or replaced app config, written by [`Store::put_app`](crate::Store::put_app)
/// or together with a rollout update.
#[derive(Debug, Clone, PartialEq)]
pub struct AppUpdate {
    /// The app's name.
    pub name: String,
    /// Its whole new config.
    pub config: Value,
}

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    /// Unique id: `ro-` and 12 lowercase base-32 characters.
    pub id: String,
    /// The app being released.
    pub app: String,
    /// The canary version.
    pub version: String,
    /// One of [`PHASES`].
    pub phase: String,
    /// The spec exactly as submitted (YAML or JSON text).
    pub spec_text: String,
    /// The parsed spec.
    pub spec: Value,
    /// The engine's serialized state, opaque to the store.
    pub state: Value,
    /// Incremented by every update; the base of optimistic concurrency. Starts at 1.
    pub revision: i64,
    /// When the rollout was created.
    pub created_at: Timestamp,
    /// When it was last updated.
    pub updated_at: Timestamp,
    /// When it last entered a phase that is not active; `None` while active.
    pub finished_at: Option<Timestamp>,
    /// The id of the rollout group it belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// The request to create a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRollout {
    /// The app being released.
    pub app: String,
    /// The canary version.
    pub version: String,
    /// The initial phase, one of [`PHASES`] (normally `Pending`).
    pub phase: String,
    /// The spec exactly as submitted.
    pub spec_text: String,
    /// The parsed spec.
    pub spec: Value,
    /// The engine's initial state.
    pub state: Value,
    /// Events written with the rollout (seq 1, 2, …).
    pub events: Vec<NewEvent>,
    /// The id of an existing rollout group it belongs to, if any.
    pub group: Option<String>,
    /// When set, the write is refused with [`StoreError::Fenced`] unless the lease
    /// still has this epoch.
    pub fence: Option<Fence>,
}

/// A rollout group as stored: several apps' rollouts that move together or in order.
/// The store keeps its document and the coordinator's state as opaque JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRecord {
    /// Unique id: `gr-` and 12 lowercase base-32 characters.
    pub id: String,
    /// The group's name, as in its document.
    pub name: String,
    /// One of [`GROUP_PHASES`].
    pub phase: String,
    /// The group document.
    pub spec: Value,
    /// The coordinator's serialized state, opaque to the store.
    pub state: Value,
    /// Incremented by every update; the base of optimistic concurrency. Starts at 1.
    pub revision: i64,
    /// When the group was created.
    pub created_at: Timestamp,
    /// When it was last updated.
    pub updated_at: Timestamp,
    /// When it last entered a phase that is not active; `None` while active.
    pub finished_at: Option<Timestamp>,
}

/// The request to create a rollout group.
#[derive(Debug, Clone, PartialEq)]
pub struct NewGroup {
    /// The group's name.
    pub name: String,
    /// The initial phase, one of [`GROUP_PHASES`].
    pub phase: String,
    /// The group document.
    pub spec: Value,
    /// The coordinator's initial state.
    pub state: Value,
    /// When set, the write is refused with [`StoreError::Fenced`] unless the lease
    /// still has this epoch.
    pub fence: Option<Fence>,
}

/// One change to a rollout group: its new phase and state.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupUpdate {
    /// The group to change.
    pub id: String,
    /// The revision the caller read; the update fails with [`StoreError::Conflict`]
    /// if the group has moved on since.
    pub expected_revision: i64,
    /// The new phase, one of [`GROUP_PHASES`].
    pub phase: String,
    /// The coordinator's new state.
    pub state: Value,
    /// When set, the write is refused with [`StoreError::Fenced`] unless the lease
    /// still has this epoch.
    pub fence: Option<Fence>,
}

/// One atomic change to a rollout: new phase and state, the events that explain it,
/// and optionally the app's new config (a successful rollout makes the canary the
/// app's stable version in the same transaction).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutUpdate {
    /// The rollout to change.
    pub id: String,
    /// The revision the caller read; the update fails with [`StoreError::Conflict`]
    /// if the rollout has moved on since.
    pub expected_revision: i64,
    /// The new phase, one of [`PHASES`].
    pub phase: String,
    /// The engine's new state.
    pub state: Value,
    /// Events appended to the rollout's history, in order.
    pub events: Vec<NewEvent>,
    /// A new config for an app, written in the same transaction.
    pub app_update: Option<AppUpdate>,
    /// When set, the write is refused with [`StoreError::Fenced`] unless the lease
    /// still has this epoch.
    pub fence: Option<Fence>,
}

/// A rollout's new engine state with no event and no change of phase: the
/// controller's evidence after a quiet tick, written for many rollouts in one
/// transaction by [`Store::update_states`](crate::Store::update_states).
#[derive(Debug, Clone, PartialEq)]
pub struct StateUpdate {
    /// The rollout to change.
    pub id: String,
    /// The revision the caller read; a rollout that has moved on since is left alone
    /// and reported as [`StoreError::Conflict`](crate::StoreError::Conflict).
    pub expected_revision: i64,
    /// The engine's new state.
    pub state: Value,
}

/// An event to append to a rollout's history.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// When it happened; `None` means when it is written.
    pub at: Option<Timestamp>,
    /// What happened, e.g. `StageStarted`, `AnalysisFailed`, `Aborted`.
    pub kind: String,
    /// Who decided: `engine`, or the operator's identity.
    pub actor: String,
    /// One line for people.
    pub message: String,
    /// The values behind the decision (criterion, measurements, sample sizes,
    /// thresholds); `Value::Null` when there is none.
    pub evidence: Value,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// Global, increasing id across all rollouts; live streams resume from it.
    pub id: i64,
    /// The rollout it belongs to.
    pub rollout_id: String,
    /// That rollout's app.
    pub app: String,
    /// Position in the rollout's history: 1, 2, 3, … without gaps.
    pub seq: i64,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub kind: String,
    /// Who decided.
    pub actor: String,
    /// One line for people.
    pub message: String,
    /// The values behind the decision.
    pub evidence: Value,
}

/// Which rollouts [`Store::list_rollouts`](crate::Store::list_rollouts) returns,
/// newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutFilter {
    /// Only this app's rollouts.
    pub app: Option<String>,
    /// Only rollouts in this phase.
    pub phase: Option<String>,
    /// At most this many.
    pub limit: Option<u32>,
}

/// A held leader lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease's name, e.g. `controller`.
    pub name: String,
    /// Who holds it. Must be unique per process (host, pid and a random part), or
    /// two processes would both believe they hold it.
    pub holder: String,
    /// The fencing epoch: grows by one every time the lease changes hands or is
    /// taken again after it expired or was released.
    pub epoch: i64,
    /// When it expires unless renewed, by the clock of the store (the database
    /// server's clock for PostgreSQL, so that skewed nodes agree). Informational: a
    /// holder should renew every third of the TTL by its own monotonic clock, and stop
    /// acting as leader once a TTL has passed since its last successful renewal.
    pub expires_at: Timestamp,
}

/// The token a leader attaches to its writes: they are refused once a newer epoch
/// of the lease exists or the lease was released.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The lease's name.
    pub lease: String,
    /// The epoch the writer holds.
    pub epoch: i64,
}

// === impl Lease ===

impl Lease {
    /// The fencing token for writes made under this lease.
    pub fn fence(&self) -> Fence {
        Fence {
            lease: self.name.clone(),
            epoch: self.epoch,
        }
    }
}

// === impl NewEvent ===

impl NewEvent {
    /// An event that happens when it is written, with no evidence.
    pub fn new(
        kind: impl Into<String>,
        actor: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        NewEvent {
            at: None,
            kind: kind.into(),
            actor: actor.into(),
            message: message.into(),
            evidence: Value::Null,
        }
    }

    /// Attaches evidence.
    pub fn with_evidence(mut self, evidence: Value) -> Self {
        self.evidence = evidence;
        self
    }

    /// Sets when it happened.
    pub fn at(mut self, at: Timestamp) -> Self {
        self.at = Some(at);
        self
    }
}

// === validation shared by the backends ===

/// Refuses an empty or overlong name.
pub(crate) fn check_name(field: &'static str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(StoreError::Invalid {
            field,
            reason: "must not be empty".into(),
        });
    }
    if value.len() > 1024 {
        return Err(StoreError::Invalid {
            field,
            reason: format!("is {} bytes long, the limit is 1024", value.len()),
        });
    }
    Ok(())
}

/// Refuses events without a kind or an actor: the history must say what happened
/// and who decided.
pub(crate) fn check_events(events: &[NewEvent]) -> Result<()> {
    for event in events {
        check_name("event kind", &event.kind)?;
        check_name("event actor", &event.actor)?;
    }
    Ok(())
}

/// Refuses a phase that is not one of [`PHASES`] (a misspelt phase would slip past
/// the one-active-rollout index).
pub(crate) fn check_phase(phase: &str) -> Result<()> {
    check_one_of("phase", &PHASES, phase)
}

/// Refuses a group phase that is not one of [`GROUP_PHASES`].
pub(crate) fn check_group_phase(phase: &str) -> Result<()> {
    check_one_of("group phase", GROUP_PHASES, phase)
}

/// Refuses a `value` of `field` that is not one of `allowed`, naming them all.
fn check_one_of(field: &'static str, allowed: &[&str], value: &str) -> Result<()> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            field,
            reason: format!("expected one of {}, found `{value}`", allowed.join(", ")),
        })
    }
}

/// Refuses a lease duration that is zero or absurdly long.
pub(crate) fn check_ttl(ttl: Duration) -> Result<i64> {
    let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    if ms <= 0 || ms > 86_400_000 {
        return Err(StoreError::Invalid {
            field: "lease ttl",
            reason: format!("expected between 1ms and 24h, found {ttl:?}"),
        });
    }
    Ok(ms)
}

/// A new rollout id: `ro-` and 12 characters of Crockford base 32 (60 random bits).
pub(crate) fn new_rollout_id() -> String {
    new_id("ro-")
}

/// A new group id: `gr-` and 12 characters of Crockford base 32 (60 random bits).
pub(crate) fn new_group_id() -> String {
    new_id("gr-")
}

/// `prefix` and 12 characters of Crockford base 32 (60 random bits).
fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let bits = uuid::Uuid::new_v4().as_u128();
    let mut id = String::with_capacity(prefix.len() + 12);
    id.push_str(prefix);
    for i in 0..12 {
        let idx = ((bits >> (i * 5)) & 0x1f) as usize;
        id.push(char::from(ALPHABET[idx]));
    }
    id
}

/// Serializes a JSON value for a TEXT column.
pub(crate) fn to_json_text(value: &Value) -> String {
    // Serializing a `Value` cannot fail: its map keys are strings.
    value.to_string()
}

/// Parses a JSON TEXT column, naming the value when it is damaged.
pub(crate) fn from_json_text(what: impl FnOnce() -> String, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: what(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_ids_are_short_and_distinct() {
        let a = new_rollout_id();
        let b = new_rollout_id();
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("ro-"));
        assert!(a[3..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        let g = new_group_id();
        assert_eq!(g.len(), 15);
        assert!(g.starts_with("gr-"));
    }

    #[test]
    fn timestamps_print_as_rfc3339() {
        assert_eq!(
            Timestamp(1_700_000_000_123).to_string(),
            "2023-11-14T22:13:20.123Z"
        );
        let now = Timestamp::now();
        assert_eq!(Timestamp::from_system_time(now.to_system_time()), now);
        // Past RFC 3339's last year, as late as it goes; writing never fails.
        assert_eq!(Timestamp(i64::MAX).to_string(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn phases_are_checked() {
        assert!(check_phase("Progressing").is_ok());
        let err = check_phase("progressing").unwrap_err().to_string();
        assert!(err.contains("found `progressing`"), "{err}");
        assert!(check_group_phase("Paused").is_ok());
        let err = check_group_phase("Pending").unwrap_err().to_string();
        assert!(err.contains("invalid group phase"), "{err}");
        assert!(err.contains("found `Pending`"), "{err}");
        assert!(GROUP_PHASES.iter().all(|p| PHASES.contains(p)));
        assert!(is_active_group_phase("Paused") && !is_active_group_phase("Succeeded"));
    }

    #[test]
    fn ttl_is_bounded() {
        assert!(check_ttl(Duration::ZERO).is_err());
        assert_eq!(check_ttl(Duration::from_secs(2)).unwrap(), 2000);
    }
}
