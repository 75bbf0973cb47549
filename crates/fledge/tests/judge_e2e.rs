//! The sequential judge end to end: a canary that fails 5% of its requests, under
//! loopback load through the real built-in proxy, is rolled back within seconds of its
//! first request, on comparative evidence against the stable version.

mod support;

use std::time::{Duration, Instant};

use support::rollout::{create, event, until_phase};
use support::{Load, Shop, spec, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_at_five_percent_errors_is_rolled_back_within_seconds() {
    // Every 20th canary request answers 500: a 5% error rate.
    let shop = Shop::start(Some(20)).await;
    let api = shop.api.clone();
    let proxy = shop.proxy().await;
    let load = Load::start(proxy, 4);

    // A long first stage: only the judge can end it early.
    let stages = "  - traffic: 20\n    duration: 10m\n    successCriteria:\n      - error_rate < stable * 1.25\n  - traffic: 100\n    final: true\n    promote: true\n";
    let body =
        spec("shop", "v2", stages).replace("analysis:\n", "analysis:\n  method: sequential\n");
    let id = create(&api, &body).await;

    let first_canary_request = wait_for(Duration::from_secs(10), "canary traffic", || async {
        if shop.canary.hits() > 0 {
            Ok(Instant::now())
        } else {
            Err("no canary request yet".to_owned())
        }
    })
    .await;
    // "Within seconds": generous for a loaded two-core machine; the figure itself is
    // printed below.
    let failed = until_phase(&api, &id, Duration::from_secs(15), "Failed").await;
    let detection = first_canary_request.elapsed();
    load.stop().await;

    assert_eq!(failed["canaryWeight"], 0, "{failed}");
    let event = event(&failed, "Failed").clone();
    assert_eq!(event["actor"], "engine");
    let evidence = event["evidence"].to_string();
    assert!(
        evidence.contains("error_rate < stable * 1.25"),
        "the evidence names the criterion: {evidence}"
    );
    let served = shop.canary.hits();
    eprintln!(
        "5% canary rolled back {detection:?} after its first request; it served {served} \
         requests, {} of them failed; evidence: {evidence}",
        served / 20
    );

    // Rolled back for good: the canary gets nothing more.
    shop.assert_only_stable_serves(50).await;
    shop.server.shutdown().await;
}

/// A rollout judged once an hour by the controller's tick is still rolled back
/// within seconds: the built-in proxy's counters are judged as they grow, not on the
/// analysis interval (which the sequential judge does not need).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_canary_is_judged_as_its_requests_are_counted() {
    // Every other canary request answers 500.
    let shop = Shop::start(Some(2)).await;
    let load = Load::start(shop.proxy().await, 2);
    let stages = "  - traffic: 20\n    duration: 10m\n    successCriteria:\n      - error_rate < 1%\n  - traffic: 100\n    final: true\n    promote: true\n";
    let body = spec("shop", "v2", stages).replace("interval: 200ms", "interval: 1h");
    let id = create(&shop.api, &body).await;
    let failed = until_phase(&shop.api, &id, Duration::from_secs(15), "Failed").await;
    load.stop().await;
    assert_eq!(failed["canaryWeight"], 0, "{failed}");
    assert_eq!(event(&failed, "Failed")["actor"], "engine", "{failed}");
    shop.server.shutdown().await;
}
