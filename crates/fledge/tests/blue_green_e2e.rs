//! Blue/green end to end, through the server's API and the real built-in proxy on
//! loopback: a preview only testers reach, one switch of every user under load, the
//! old version kept warm for the switch stage and switched back to on an abort.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::rollout::{create, stages_started, until, until_phase};
use support::{Http, Load, Shop, spec, wait_for};

/// Testers send this header to reach the preview.
const PREVIEW: (&str, &str) = ("x-preview", "1");

/// A blue/green spec: a preview that waits for a manual promote (the switch), then
/// the switch stage, kept warm for `delay`.
fn blue_green(delay: &str) -> String {
    let stages = format!(
        "  - traffic: 0\n    successCriteria:\n      - error_rate < 1%\n  - traffic: 100\n    duration: {delay}\n    successCriteria:\n      - error_rate < 1%\n    promote: true\n"
    );
    spec("shop", "v2", &stages).replace(
        "strategy: canary\n",
        &format!(
            "strategy: blueGreen\nmatch:\n  - header: {}\n    value: \"{}\"\n",
            PREVIEW.0, PREVIEW.1
        ),
    )
}

/// One request through the proxy, as a tester (with the preview header) or not:
/// which version answered.
async fn answered_by(proxy: std::net::SocketAddr, tester: bool) -> String {
    let mut req = reqwest::Client::new().get(format!("http://{proxy}/"));
    if tester {
        req = req.header(PREVIEW.0, PREVIEW.1);
    }
    let resp = req.send().await.expect("the proxy answers");
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.text().await.unwrap()
}

/// Starts a blue/green rollout under load and checks the preview: testers reach the
/// new version, users (the load) never do. Returns the rollout's id.
async fn preview_seen_only_by_testers(shop: &Shop, delay: &str) -> String {
    let api = &shop.api;
    let proxy = shop.proxy().await;
    let id = create(api, &blue_green(delay)).await;
    let preview = until(api, &id, Duration::from_secs(10), "the preview", |r| {
        r["phase"] == "Progressing"
    })
    .await;
    assert_eq!(
        (
            preview["stageIndex"].as_u64(),
            preview["canaryWeight"].as_u64()
        ),
        (Some(0), Some(0)),
        "{preview}"
    );
    let before = shop.canary.hits();
    for _ in 0..30 {
        assert_eq!(answered_by(proxy, true).await, "canary", "a tester");
        assert_eq!(answered_by(proxy, false).await, "stable", "a user");
    }
    // The load's users were on stable all along: only the testers' requests reached
    // the preview.
    assert_eq!(
        shop.canary.hits() - before,
        30,
        "only testers reach the preview"
    );
    id
}

/// Promotes the preview (the switch) and waits until users are served by the new
/// version.
async fn switch(shop: &Shop, id: &str) {
    let api = &shop.api;
    let reply = api.post(&format!("/rollouts/{id}/promote"), None).await;
    assert!(reply.status.is_success(), "{}", reply.text);
    let switched = until(api, id, Duration::from_secs(10), "the switch", |r| {
        r["stageIndex"] == 1
    })
    .await;
    assert_eq!(switched["canaryWeight"], 100, "{switched}");
    let proxy = shop.proxy().await;
    wait_for(
        Duration::from_secs(10),
        "users on the new version",
        || async {
            match answered_by(proxy, false).await.as_str() {
                "canary" => Ok(()),
                other => Err(format!("answered by {other}")),
            }
        },
    )
    .await;
    // All at once: no user is left on the old version after the switch.
    for _ in 0..30 {
        assert_eq!(answered_by(proxy, false).await, "canary");
    }
}

/// A shop under the users' load whose blue/green rollout (stable kept warm for
/// `delay` after the switch) was previewed by testers only and then switched.
async fn switched_under_load(delay: &str) -> (Shop, Load, String) {
    let shop = Shop::start(None).await;
    let load = Load::start(shop.proxy().await, 4);
    let id = preview_seen_only_by_testers(&shop, delay).await;
    switch(&shop, &id).await;
    (shop, load, id)
}

/// Stops the users' load and checks that none of their requests failed; returns how
/// many they sent.
async fn none_failed(load: Load) -> u64 {
    let (sent, failed) = (load.sent.clone(), load.failed.clone());
    load.stop().await;
    let (sent, failed) = (sent.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert!(sent > 100, "{sent} requests");
    assert_eq!(failed, 0, "{failed} of {sent} user requests failed");
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_previewed_version_takes_all_traffic_at_once_and_is_promoted() {
    let (shop, load, id) = switched_under_load("2s").await;
    let done = until_phase(&shop.api, &id, Duration::from_secs(30), "Succeeded").await;
    let sent = none_failed(load).await;
    let started = stages_started(&done);
    assert_eq!(started.len(), 2, "{started:?}");
    assert!(started[0].starts_with("preview 1/2 (0%)"), "{started:?}");
    assert!(
        started[1]
            .starts_with("switch 2/2 (100%) started: canary at 100% with stable kept warm for 2s"),
        "{started:?}"
    );
    // The new version is stable now, and serves everyone.
    let client = Http::new(shop.proxy().await);
    assert_eq!(client.get("/").await.text, "canary");
    let app = shop.api.get("/apps/shop").await.body;
    assert_eq!(app["stable"]["version"], "v2", "{app}");
    eprintln!("blue/green promoted: {sent} user requests, none failed");
    shop.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abort_during_the_delay_switches_everyone_back_with_no_failed_request() {
    let (shop, load, id) = switched_under_load("10m").await;
    let reply = shop
        .api
        .post(
            &format!("/rollouts/{id}/abort"),
            Some(r#"{"reason":"checkout errors after the switch"}"#),
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);
    let aborted = until_phase(&shop.api, &id, Duration::from_secs(10), "Aborted").await;
    assert_eq!(aborted["canaryWeight"], 0, "{aborted}");
    // Back on the old version, which was kept warm: every user, at once.
    shop.assert_only_stable_serves(50).await;
    let sent = none_failed(load).await;
    eprintln!("blue/green switched back: {sent} user requests, none failed");
    shop.server.shutdown().await;
}
