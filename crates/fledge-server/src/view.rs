//! The API's view of stored rollouts and events: the store's records as the wire
//! types of `fledge_api`, with what the engine says may be done now and when the
//! current stage ends, so that no client has to work it out.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use fledge_api::app::Role;
use fledge_api::rollout::{Action, Event, Rollout};
use fledge_engine::Phase;
use fledge_store::{EventRecord, RolloutRecord, Timestamp};

use super::{Shared, engine};

/// Each app's stable version, read once for a batch of views: a rollout whose
/// version has become its app's stable one (another rollout promoted it) cannot
/// be retried, so `retry` is not among its allowed actions.
#[derive(Debug, Default)]
pub struct Stables(HashMap<String, String>);

impl Stables {
    /// The stable version of every app registered now.
    pub async fn read(shared: &Shared) -> Self {
        let mut stables = HashMap::new();
        for app in shared.apps.all().await {
            stables.insert(app.name.clone(), app.config().await.stable.version);
        }
        Self(stables)
    }

    /// The stable version of `app` alone, for a view of one of its rollouts.
    pub async fn of(shared: &Shared, app: &str) -> Self {
        let mut stables = HashMap::new();
        if let Some(registered) = shared.apps.get(app).await {
            stables.insert(app.to_owned(), registered.config().await.stable.version);
        }
        Self(stables)
    }

    /// Whether `version` is `app`'s stable version.
    pub fn is_stable(&self, app: &str, version: &str) -> bool {
        self.0.get(app).is_some_and(|v| v == version)
    }
}

/// A rollout as `role` sees it at `now`; `events` is included when given.
pub fn rollout(
    record: &RolloutRecord,
    events: Option<&[EventRecord]>,
    role: Role,
    now: SystemTime,
    stables: &Stables,
) -> Rollout {
    let summary = engine::summary(&record.state).ok();
    let spec = engine::spec_of(record).ok();
    let phase = phase_of(&record.phase);
    // Once failed or aborted the canary gets nothing, whatever the last stage was.
    let canary_weight = match phase {
        Phase::Failed | Phase::Aborted => 0,
        Phase::Succeeded => 100,
        _ => summary.as_ref().map_or(0, |s| s.canary_weight),
    };
    // The engine copies nothing once a rollout has ended.
    let canary_mirror = summary.as_ref().map_or(0, |s| s.canary_mirror);
    let allowed_actions = match &summary {
        Some(s) if role >= Role::Operator => s
            .allowed_commands
            .iter()
            .filter_map(|name| Action::from_name(name))
            // The check `POST /rollouts/{id}/retry` makes (409 `already_stable`).
            .filter(|a| *a != Action::Retry || !stables.is_stable(&record.app, &record.version))
            .collect(),
        _ => Vec::new(),
    };
    let remaining = spec
        .as_ref()
        .and_then(|spec| engine::stage_remaining_ms(spec, &record.state, now));
    let running = summary.as_ref().is_some_and(|s| s.stage_clock_running);
    let stage_ends_at = remaining
        .filter(|_| running)
        .map(|ms| rfc3339(now + Duration::from_millis(ms)));
    let stage_started_at = summary
        .as_ref()
        .filter(|_| matches!(phase, Phase::Progressing | Phase::Paused))
        .and_then(|s| s.stage_started_at)
        .map(|t| t.to_string());
    Rollout {
        id: record.id.clone(),
        app: record.app.clone(),
        version: record.version.clone(),
        phase,
        stage_index: summary.as_ref().map_or(0, |s| s.stage_index),
        canary_weight,
        canary_mirror,
        strategy: spec.as_ref().map(|s| s.strategy).unwrap_or_default(),
        stages: spec.as_ref().map(|s| s.stages.clone()).unwrap_or_default(),
        canary: spec.and_then(|s| s.canary),
        created_at: record.created_at.to_string(),
        updated_at: record.updated_at.to_string(),
        finished_at: record.finished_at.map(|t| t.to_string()),
        revision: record.revision,
        analysis: summary.and_then(|s| s.analysis),
        allowed_actions,
        stage_started_at,
        stage_ends_at,
        stage_remaining_ms: remaining,
        router_sync: None,
        events: events.map(|events| events.iter().map(event).collect()),
    }
}

/// One history entry.
pub fn event(e: &EventRecord) -> Event {
    Event {
        id: e.id,
        rollout_id: e.rollout_id.clone(),
        app: e.app.clone(),
        seq: e.seq,
        at: e.at.to_string(),
        kind: e.kind.clone(),
        actor: e.actor.clone(),
        message: e.message.clone(),
        evidence: e.evidence.clone(),
    }
}

/// A stored phase name as the engine's phase (`Pending` for a name it does not
/// know, which only a newer server could have written).
pub fn phase_of(name: &str) -> Phase {
    Phase::from_name(name).unwrap_or_default()
}

fn rfc3339(t: SystemTime) -> String {
    Timestamp::from_system_time(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::InProcess;

    #[tokio::test(start_paused = true)]
    async fn the_longest_stage_ends_at_a_time_the_api_can_write() {
        let h = InProcess::start().await;
        let r = h
            .create("app: shop\nversion: v2\nstages:\n  - traffic: 10\n    duration: 36500d\n  - traffic: 100\n")
            .await;
        let view = rollout(
            &r,
            None,
            Role::Operator,
            h.shared.clock.now(),
            &Stables::default(),
        );
        let started = engine::summary(&r.state).unwrap().stage_started_at;
        let started = started.expect("a running stage has a start");
        // The stage has run all along: it ends a century after it started.
        let in_a_century = started
            .saturating_add(Duration::from_secs(36_500 * 86_400))
            .to_string();
        assert_eq!(view.stage_ends_at.as_deref(), Some(in_a_century.as_str()));
        assert!(
            view.stage_remaining_ms
                .is_some_and(|ms| ms > 3_000_000_000_000)
        );
    }
}
