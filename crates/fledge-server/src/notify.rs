//! Sends the spec's `notifications:` (webhook, Slack) when the engine's events are
//! written: the rollout started, a stage began, it was paused or resumed, promoted,
//! failed, aborted or retried.
//!
//! Delivery belongs to `fledge_providers::notify::Dispatcher`, a background task with
//! a bounded queue and bounded retries: handing it a notice never waits on the
//! network, so a slow or dead endpoint can neither hold a rollout up nor fail it.
//! A notice is handed over only after its event is stored, so nothing is announced
//! that did not happen; a process that dies in between loses that notice (delivery is
//! at most once).

use fledge_providers::hooks::RolloutInfo;
use fledge_providers::notify::{Dispatcher, DispatcherSettings, Notice};
use fledge_spec::{NotifyEvent, RolloutSpec};
use fledge_store::{NewEvent, RolloutRecord, Timestamp};
use serde_json::Value;

use super::Shared;
use super::engine as adapter;

/// The server's notification sender; `None` inside when it could not be started (the
/// reason is logged once and rollouts go on without notifications).
#[derive(Debug, Clone)]
pub struct Notifications {
    dispatcher: Option<Dispatcher>,
}

// === impl Notifications ===

impl Notifications {
    /// Starts the background sender on the current tokio runtime.
    pub fn start() -> Self {
        Self::with_settings(DispatcherSettings::default())
    }

    /// [`start`](Self::start) with explicit queue, retry and timeout settings.
    pub fn with_settings(settings: DispatcherSettings) -> Self {
        let dispatcher = match Dispatcher::start(settings) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the notification sender; notifications are off");
                None
            }
        };
        Self { dispatcher }
    }

    /// Hands the notices for the `events` just written to `record` (the rollout as
    /// stored after the write) to the sender. Never waits and never fails.
    pub fn written(
        &self,
        record: &RolloutRecord,
        spec: &RolloutSpec,
        stable_version: &str,
        events: &[NewEvent],
    ) {
        let Some(dispatcher) = &self.dispatcher else {
            return;
        };
        if spec.notifications.is_empty() {
            return;
        }
        let rollout = rollout_info(record, stable_version);
        for notice in notices(&rollout, events, record.updated_at) {
            dispatcher.notify(&spec.notifications, notice);
        }
    }

    /// Waits up to `timeout` for every queued notice to be delivered or given up on;
    /// `true` when the queue emptied. For an orderly shutdown.
    pub async fn flush(&self, timeout: std::time::Duration) -> bool {
        match &self.dispatcher {
            Some(d) => d.flush(timeout).await,
            None => true,
        }
    }
}

/// What a rollout looks like to a notification or a hook, as stored in `record`.
pub fn rollout_info(record: &RolloutRecord, stable_version: &str) -> RolloutInfo {
    let (stage_index, canary_weight) = match adapter::summary(&record.state) {
        Ok(s) => (Some(s.stage_index), s.canary_weight),
        Err(_) => (None, 0),
    };
    RolloutInfo {
        id: record.id.clone(),
        app: record.app.clone(),
        version: record.version.clone(),
        stable_version: stable_version.to_owned(),
        phase: record.phase.clone(),
        stage_index,
        canary_weight,
    }
}

/// The events of one write, taken before it (with the stable version they replace),
/// announced and handed to the spec's `onEvent` hooks once the write is stored.
#[derive(Debug)]
pub struct Pending {
    /// The events notifications announce (only when the spec has notifications).
    events: Vec<NewEvent>,
    /// Every event (only when the spec has `onEvent` hooks).
    for_hooks: Vec<NewEvent>,
    stable_version: String,
}

// === impl Pending ===

impl Pending {
    /// Takes the announced events among `events` about to be written to `record`,
    /// and the app's stable version as it is before the write (a promotion changes
    /// it). Cheap when nothing is announced.
    pub async fn before_write(
        shared: &Shared,
        record: &RolloutRecord,
        spec: &RolloutSpec,
        events: &[NewEvent],
    ) -> Self {
        let for_hooks = if spec.hooks.on_event.is_empty() {
            Vec::new()
        } else {
            events.to_vec()
        };
        let events: Vec<NewEvent> = if spec.notifications.is_empty() {
            Vec::new()
        } else {
            events
                .iter()
                .filter(|e| notify_event(&e.kind).is_some())
                .cloned()
                .collect()
        };
        let stable_version = if events.is_empty() && for_hooks.is_empty() {
            String::new()
        } else {
            match shared.apps.get(&record.app).await {
                Some(app) => app.config().await.stable.version,
                None => String::new(),
            }
        };
        Self {
            events,
            for_hooks,
            stable_version,
        }
    }

    /// Hands the notices to the server's sender, and the events to the spec's
    /// `onEvent` hooks, now that `record` (as stored after the write) holds them.
    pub fn written(self, shared: &Shared, record: &RolloutRecord, spec: &RolloutSpec) {
        if !self.events.is_empty() {
            shared
                .notifications
                .written(record, spec, &self.stable_version, &self.events);
        }
        if !self.for_hooks.is_empty() {
            let rollout = rollout_info(record, &self.stable_version);
            super::hooks::on_events(&spec.hooks, rollout, self.for_hooks, record.updated_at);
        }
    }
}

/// The announced event an engine event kind (as stored: `Started`, `Failed`, …)
/// stands for; `None` for kinds nobody subscribes to (analysis errors, gates, …).
pub fn notify_event(kind: &str) -> Option<NotifyEvent> {
    Some(match kind {
        "Started" => NotifyEvent::Started,
        "StageStarted" => NotifyEvent::StageStarted,
        "Paused" => NotifyEvent::Paused,
        "Resumed" => NotifyEvent::Resumed,
        "Succeeded" => NotifyEvent::Succeeded,
        "Failed" => NotifyEvent::Failed,
        "Aborted" => NotifyEvent::Aborted,
        "Retried" => NotifyEvent::Retried,
        _ => return None,
    })
}

/// The notices for `events` of `rollout`, in order; `written` stands in for the time
/// of an event that carries none.
pub fn notices(rollout: &RolloutInfo, events: &[NewEvent], written: Timestamp) -> Vec<Notice> {
    events
        .iter()
        .filter_map(|e| {
            let event = notify_event(&e.kind)?;
            Some(Notice {
                event,
                rollout: rollout.clone(),
                message: e.message.clone(),
                actor: Some(e.actor.clone()),
                evidence: match &e.evidence {
                    Value::Null => None,
                    v => Some(v.clone()),
                },
                at: e.at.unwrap_or(written).to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RolloutInfo {
        RolloutInfo {
            id: "ro-1".into(),
            app: "shop".into(),
            version: "v2".into(),
            stable_version: "v1".into(),
            phase: "Failed".into(),
            stage_index: Some(0),
            canary_weight: 0,
        }
    }

    #[test]
    fn only_announced_kinds_become_notices_with_their_evidence() {
        let events = vec![
            NewEvent::new("AnalysisError", "engine", "no data"),
            NewEvent::new("Failed", "engine", "error_rate 20% > 1%")
                .with_evidence(serde_json::json!({"criteria": [{"metric": "error_rate"}]}))
                .at(Timestamp(1_700_000_000_123)),
            NewEvent::new("Aborted", "alice", "aborted"),
        ];
        let got = notices(&info(), &events, Timestamp(1_700_000_001_000));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].event, NotifyEvent::Failed);
        assert_eq!(got[0].at, "2023-11-14T22:13:20.123Z");
        assert_eq!(
            got[0].evidence.as_ref().unwrap()["criteria"][0]["metric"],
            "error_rate"
        );
        assert_eq!(got[1].event, NotifyEvent::Aborted);
        assert_eq!(got[1].actor.as_deref(), Some("alice"));
        assert_eq!(got[1].evidence, None);
        assert_eq!(got[1].at, "2023-11-14T22:13:21.000Z");
    }

    #[test]
    fn every_subscribable_kind_is_known() {
        for kind in [
            "Started",
            "StageStarted",
            "Paused",
            "Resumed",
            "Succeeded",
            "Failed",
            "Aborted",
            "Retried",
        ] {
            assert!(notify_event(kind).is_some(), "{kind}");
        }
        assert_eq!(notify_event("PromotionGate"), None);
    }
}
