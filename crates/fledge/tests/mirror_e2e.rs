//! Dark canaries end to end, through `fledge serve`'s API and the real built-in
//! proxy on loopback: a stage with `traffic: 0, mirror: 100` serves every user from
//! stable and judges the canary on copies of their requests.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::rollout::{create, event, stages_started, until, until_phase};
use support::{Http, Load, Shop, spec, wait_for};

/// A dark first stage long enough that only the judge can end it early.
const DARK_THEN_LIVE: &str = "  - traffic: 0\n    mirror: 100\n    duration: 10m\n    successCriteria:\n      - error_rate < 1%\n  - traffic: 50\n    duration: 3s\n  - traffic: 100\n    final: true\n    promote: true\n";

/// The value of the proxy's `series` (a full series name with its labels) in the
/// server's exposition.
async fn metric(api: &Http, series: &str) -> u64 {
    let page = api.get("/metrics").await.text;
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dark_canary_failing_five_percent_of_its_copies_is_rolled_back_unseen() {
    // Every 20th request the canary gets answers 500: 5% of the copies fail.
    let shop = Shop::start(Some(20)).await;
    let api = shop.api.clone();
    let load = Load::start(shop.proxy().await, 4);

    let id = create(&api, &spec("shop", "v2", DARK_THEN_LIVE)).await;
    let dark = until(&api, &id, Duration::from_secs(10), "the dark stage", |r| {
        r["phase"] == "Progressing"
    })
    .await;
    assert_eq!(
        (dark["canaryWeight"].as_u64(), dark["canaryMirror"].as_u64()),
        (Some(0), Some(100)),
        "{dark}"
    );

    let failed = until_phase(&api, &id, Duration::from_secs(30), "Failed").await;
    let (sent, user_failures) = (load.sent.clone(), load.failed.clone());
    load.stop().await;
    assert_eq!(failed["stageIndex"], 0, "failed in the dark: {failed}");
    assert_eq!(failed["canaryMirror"], 0, "{failed}");
    let evidence = event(&failed, "Failed")["evidence"].to_string();
    assert!(evidence.contains("error_rate < 1%"), "{evidence}");

    // Users never met the canary: every answer they got was stable's.
    let (sent, user_failures) = (
        sent.load(Ordering::SeqCst),
        user_failures.load(Ordering::SeqCst),
    );
    assert!(sent > 0);
    assert_eq!(
        user_failures, 0,
        "users saw failures: {user_failures} of {sent}"
    );
    assert!(
        shop.stable.hits() >= sent,
        "stable answered every user request"
    );
    let copies = shop.canary.hits();
    let labels = "{app=\"shop\",version=\"v2\",role=\"canary\"}";
    let mirrored = metric(&api, &format!("fledge_proxy_mirrored_total{labels}")).await;
    assert!(
        copies > 0 && mirrored >= copies,
        "{copies} copies, {mirrored} counted"
    );
    let dropped = metric(
        &api,
        "fledge_proxy_mirror_dropped_total{app=\"shop\",version=\"v2\",role=\"canary\",reason=\"queue_full\"}",
    )
    .await;
    eprintln!(
        "dark canary failed after {copies} copies ({} failed) of {sent} user requests, \
         {dropped} copies dropped, 0 user-facing failures; evidence: {evidence}",
        copies / 20
    );

    // Rolled back: no more copies.
    shop.assert_only_stable_serves(50).await;
    shop.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healthy_dark_canary_goes_live_and_is_promoted() {
    let shop = Shop::start(None).await;
    let api = shop.api.clone();
    let load = Load::start(shop.proxy().await, 2);
    // A short dark stage this time: it ends once its time and requests are in.
    let stages = DARK_THEN_LIVE.replace("duration: 10m", "duration: 2s");
    let id = create(&api, &spec("shop", "v2", &stages)).await;

    // Dark: copies reach the canary while users see only stable.
    wait_for(Duration::from_secs(10), "copies at the canary", || async {
        match shop.canary.hits() {
            0 => Err("no copy yet".to_owned()),
            n => Ok(n),
        }
    })
    .await;
    let client = Http::new(shop.proxy().await);
    let live = until(&api, &id, Duration::from_secs(30), "the live stage", |r| {
        r["stageIndex"] == 1 || r["phase"] != "Progressing"
    })
    .await;
    assert_eq!(
        (live["canaryWeight"].as_u64(), live["canaryMirror"].as_u64()),
        (Some(50), Some(0)),
        "{live}"
    );
    // Live: users now reach the canary.
    wait_for(
        Duration::from_secs(10),
        "a user served by the canary",
        || async {
            match client.get("/").await.text.as_str() {
                "canary" => Ok(()),
                other => Err(format!("answered by {other}")),
            }
        },
    )
    .await;
    let done = until_phase(&api, &id, Duration::from_secs(30), "Succeeded").await;
    let user_failures = load.failed.clone();
    load.stop().await;
    assert_eq!(done["canaryWeight"], 100, "{done}");
    assert_eq!(
        user_failures.load(Ordering::SeqCst),
        0,
        "users saw failures"
    );
    let started = stages_started(&done);
    assert!(
        started[0].starts_with("stage 1/3 (0%, mirror 100%) started"),
        "{started:?}"
    );
    shop.server.shutdown().await;
}
