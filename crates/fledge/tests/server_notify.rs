//! The spec's notifications, sent by the real server: local HTTP receivers stand in
//! for a webhook and a Slack incoming webhook, and a dead endpoint must not hold the
//! rollout up.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use fledge_providers::testing::TestServer;
use hyper::StatusCode;
use serde_json::Value;
use support::rollout::{create, finished};
use support::{Load, Shop, non_empty, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

/// A receiver keeping every JSON body POSTed to `/hook`.
async fn receiver() -> (TestServer, Arc<Mutex<Vec<Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let server = TestServer::start(axum::Router::new().route(
        "/hook",
        post(move |Json(body): Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                StatusCode::OK
            }
        }),
    ))
    .await
    .unwrap();
    (server, got)
}

/// Waits until the latest notice received is one of `event`; returns it.
async fn last_notice(got: &Mutex<Vec<Value>>, event: &str) -> Value {
    wait_for(LIMIT, &format!("the {event} notice"), || async {
        match got.lock().unwrap().last() {
            Some(n) if n["event"] == event => Ok(n.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

fn events_of(got: &Mutex<Vec<Value>>) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .map(|n| n["event"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_rollout_is_announced_with_its_evidence_and_a_dead_endpoint_blocks_nothing() {
    let (webhook, hooked) = receiver().await;
    let (slack, slacked) = receiver().await;
    // Nothing listens there: its deliveries fail and are retried in the background.
    let dead = fledge_providers::testing::free_port().unwrap();
    // Every 5th canary request fails: 20% errors.
    let shop = Shop::start(Some(5)).await;
    let api = shop.api.clone();
    let load = Load::start(shop.proxy().await, 4);
    let spec = format!(
        "app: shop\nversion: v2\nstrategy: canary\nanalysis:\n  interval: 200ms\n  minRequests: 20\n\
         stages:\n  - traffic: 50\n    duration: 20s\n    successCriteria:\n      - error_rate < 1%\n  - traffic: 100\n    final: true\n    promote: true\n\
         notifications:\n  - kind: webhook\n    url: http://127.0.0.1:{dead}/hook\n\
         \x20 - kind: webhook\n    url: {webhook}/hook\n\
         \x20 - kind: slack\n    url: {slack}/hook\n    events: [failed]\n",
        webhook = webhook.url(),
        slack = slack.url(),
    );
    let started = Instant::now();
    let id = create(&api, &spec).await;
    let failed = finished(&api, &id, LIMIT).await;
    eprintln!("failed {:?} after the start", started.elapsed());
    load.stop().await;
    assert_eq!(failed["phase"], "Failed", "{failed}");

    // The webhook hears every announced event (delivered concurrently, so in any
    // order), the failure included.
    let notices = wait_for(LIMIT, "the failure notice", || async {
        let events = events_of(&hooked);
        if events.contains(&"failed".to_owned()) {
            Ok(hooked.lock().unwrap().clone())
        } else {
            Err(format!("{events:?}"))
        }
    })
    .await;
    let events: Vec<&str> = notices
        .iter()
        .map(|n| n["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"started"), "{events:?}");
    assert!(events.contains(&"stageStarted"), "{events:?}");
    assert_eq!(
        events.iter().filter(|e| **e == "failed").count(),
        1,
        "{events:?}"
    );
    let failure = notices.iter().find(|n| n["event"] == "failed").unwrap();
    assert_eq!(failure["rollout"]["id"], id.as_str(), "{failure}");
    assert_eq!(failure["rollout"]["app"], "shop");
    assert_eq!(failure["rollout"]["version"], "v2");
    assert_eq!(failure["rollout"]["stableVersion"], "v1");
    assert_eq!(failure["rollout"]["phase"], "Failed");
    assert_eq!(failure["rollout"]["canaryWeight"], 0);
    assert_eq!(failure["actor"], "engine");
    assert!(
        failure["message"].as_str().unwrap().contains("error_rate"),
        "{failure}"
    );
    assert!(
        failure["evidence"]["criteria"].is_array(),
        "a failure carries its evidence: {failure}"
    );

    // Slack subscribed to failures only, and gets a Slack message.
    let slack_msgs = wait_for(LIMIT, "the Slack message", || async {
        non_empty(slacked.lock().unwrap().clone())
    })
    .await;
    assert_eq!(slack_msgs.len(), 1, "{slack_msgs:?}");
    let text = slack_msgs[0]["text"].as_str().unwrap();
    assert!(text.contains("shop v2 failed"), "{text}");
    assert!(slack_msgs[0]["blocks"].is_array(), "{slack_msgs:?}");
    shop.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_abort_and_a_promotion_are_announced() {
    let (webhook, hooked) = receiver().await;
    let shop = Shop::start(None).await;
    let api = shop.api.clone();
    let load = Load::start(shop.proxy().await, 4);
    let spec = |stages: &str| {
        format!(
            "app: shop\nversion: v2\nstrategy: canary\nanalysis:\n  interval: 200ms\n  minRequests: 20\n\
             stages:\n{stages}notifications:\n  - kind: webhook\n    url: {}/hook\n    events: [aborted, succeeded]\n",
            webhook.url()
        )
    };

    // Aborted by an operator: announced with the operator as the actor.
    let id = create(
        &api,
        &spec("  - traffic: 20\n    duration: 60s\n  - traffic: 100\n    final: true\n    promote: true\n"),
    )
    .await;
    let r = api.post(&format!("/rollouts/{id}/abort"), None).await;
    assert!(r.status.is_success(), "{}", r.text);
    let aborted = last_notice(&hooked, "aborted").await;
    assert_eq!(aborted["rollout"]["id"], id.as_str());
    assert_ne!(aborted["actor"], "engine", "{aborted}");

    // A healthy canary promoted: announced as succeeded, replacing v1.
    let id = create(
        &api,
        &spec("  - traffic: 50\n    duration: 1s\n    successCriteria:\n      - error_rate < 5%\n  - traffic: 100\n    final: true\n    promote: true\n"),
    )
    .await;
    let done = finished(&api, &id, LIMIT).await;
    load.stop().await;
    assert_eq!(done["phase"], "Succeeded", "{done}");
    let promoted = last_notice(&hooked, "succeeded").await;
    assert_eq!(promoted["rollout"]["id"], id.as_str());
    assert_eq!(promoted["rollout"]["stableVersion"], "v1", "{promoted}");
    // Only the subscribed events were sent.
    assert_eq!(events_of(&hooked), ["aborted", "succeeded"]);
    shop.server.shutdown().await;
}
