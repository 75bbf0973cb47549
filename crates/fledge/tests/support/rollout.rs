//! Creating a rollout through the API and waiting on what it becomes; reading
//! rollouts and groups as the API answers them.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::Value;

use super::{Http, wait_for};

/// Creates a rollout from a YAML spec, asserting `201 Created`; returns its id.
pub async fn create(api: &Http, yaml: &str) -> String {
    let r = api.post_yaml("/rollouts", yaml).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

/// The rollout as `GET /rollouts/{id}` returns it (whatever the status).
pub async fn get(api: &Http, id: &str) -> Value {
    api.get(&format!("/rollouts/{id}")).await.body
}

/// Waits up to `limit` until the rollout satisfies `pred`; returns it then.
pub async fn until(
    api: &Http,
    id: &str,
    limit: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(limit, what, || async {
        let r = get(api, id).await;
        if pred(&r) {
            Ok(r)
        } else {
            Err(format!(
                "phase {} stage {} weight {}",
                r["phase"], r["stageIndex"], r["canaryWeight"]
            ))
        }
    })
    .await
}

/// Waits up to `limit` until the rollout is in `phase`.
pub async fn until_phase(api: &Http, id: &str, limit: Duration, phase: &str) -> Value {
    until(api, id, limit, phase, |r| r["phase"] == phase).await
}

/// Waits up to `limit` until the rollout has ended (neither pending nor progressing).
pub async fn finished(api: &Http, id: &str, limit: Duration) -> Value {
    until(api, id, limit, "the rollout to finish", |r| {
        r["phase"] != "Progressing" && r["phase"] != "Pending"
    })
    .await
}

/// The kinds of the rollout's (or the group's) events, in order.
pub fn kinds(rollout: &Value) -> Vec<&str> {
    rollout["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect()
}

/// The messages of the rollout's `StageStarted` events, in order.
pub fn stages_started(rollout: &Value) -> Vec<&str> {
    rollout["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "StageStarted")
        .filter_map(|e| e["message"].as_str())
        .collect()
}

/// The rollout's first event of `kind`; panics naming the history if there is none.
pub fn event<'a>(rollout: &'a Value, kind: &str) -> &'a Value {
    rollout["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event in {}", rollout["events"]))
}

/// The member of `app` in the group; panics naming the group if it has none.
pub fn member_of<'a>(group: &'a Value, app: &str) -> &'a Value {
    group["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["app"] == app)
        .unwrap_or_else(|| panic!("no member {app} in {group}"))
}

/// Whether the rollout has an event of `kind` that `actor` took.
pub fn has_event_by(rollout: &Value, kind: &str, actor: &str) -> bool {
    rollout["events"].as_array().is_some_and(|events| {
        events
            .iter()
            .any(|e| e["kind"] == kind && e["actor"] == actor)
    })
}

/// Waits up to 40 s until the server has recorded at least `at_least` chart points
/// of the rollout with the canary's health in them (one every two seconds under
/// load); returns all its points then.
pub async fn chart_points(api: &Http, id: &str, at_least: usize) -> Vec<Value> {
    let path = format!("/ui/api/series?rollout={id}");
    wait_for(
        Duration::from_secs(40),
        "chart points of the rollout",
        || async {
            let reply = api.get(&path).await;
            let points = reply.body["points"].as_array().cloned().unwrap_or_default();
            let measured = points.iter().filter(|p| p["canary"].is_object()).count();
            if measured >= at_least {
                Ok(points)
            } else {
                Err(reply.text)
            }
        },
    )
    .await
}

/// Checks a finished rollout's history: seqs 1..n, times in order, one `Created`,
/// one `Started`, each stage started once in order, and one terminal event, last.
pub fn history_is_whole(r: &Value, terminal: &str) {
    let events = r["events"].as_array().unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(seqs, expected, "event seqs have gaps or duplicates");
    let times: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "history out of order: {times:?}"
    );
    let kinds = kinds(r);
    let count = |k: &str| kinds.iter().filter(|x| **x == k).count();
    assert_eq!(kinds.first(), Some(&"Created"), "{kinds:?}");
    assert_eq!(count("Created"), 1, "{kinds:?}");
    assert_eq!(count("Started"), 1, "{kinds:?}");
    assert_eq!(kinds.last(), Some(&terminal), "{kinds:?}");
    let terminals = ["Succeeded", "Failed", "Aborted"];
    assert_eq!(
        kinds.iter().filter(|k| terminals.contains(k)).count(),
        1,
        "exactly one terminal event: {kinds:?}"
    );
    // Each stage starts once, in order: the messages name the stage.
    let starts = stages_started(r);
    let mut unique = starts.clone();
    unique.dedup();
    assert_eq!(unique, starts, "a stage started twice in a row: {starts:?}");
}
