//! The JSON the API answers for rollouts and events (camelCase, times in RFC 3339).

use fledge_store::{EventRecord, RolloutRecord};
use serde_json::{Value, json};

use super::engine;

/// A rollout as the API shows it; `events` is included when given.
pub fn rollout(record: &RolloutRecord, events: Option<&[EventRecord]>) -> Value {
    let summary = engine::summary(&record.state).ok();
    let stage_index = summary.as_ref().map_or(0, |s| s.stage_index);
    // Once failed or aborted the canary gets nothing, whatever the last stage was.
    let weight = match record.phase.as_str() {
        "Failed" | "Aborted" => 0,
        "Succeeded" => 100,
        _ => summary.as_ref().map_or(0, |s| s.canary_weight),
    };
    let mut out = json!({
        "id": record.id,
        "app": record.app,
        "version": record.version,
        "phase": record.phase,
        "stageIndex": stage_index,
        "canaryWeight": weight,
        "stages": record.spec.get("stages").cloned().unwrap_or(Value::Array(vec![])),
        "canary": record.spec.get("canary").cloned().unwrap_or(Value::Null),
        "createdAt": record.created_at.to_string(),
        "updatedAt": record.updated_at.to_string(),
        "finishedAt": record.finished_at.map(|t| t.to_string()),
        "revision": record.revision,
        "analysis": summary.map(|s| s.analysis).unwrap_or(Value::Null),
    });
    if let Some(events) = events {
        out["events"] = Value::Array(events.iter().map(event).collect());
    }
    out
}

/// One history entry.
pub fn event(e: &EventRecord) -> Value {
    json!({
        "id": e.id,
        "rolloutId": e.rollout_id,
        "app": e.app,
        "seq": e.seq,
        "at": e.at.to_string(),
        "kind": e.kind,
        "actor": e.actor,
        "message": e.message,
        "evidence": e.evidence,
    })
}
