//! The sequential judge end to end: a canary that fails 5% of its requests, under
//! loopback load through the real built-in proxy, is rolled back within seconds of its
//! first request, on comparative evidence against the stable version.

mod support;

use std::time::{Duration, Instant};

use fledge_server::{StartOptions, start};
use hyper::StatusCode;
use support::{Http, Load, backend, config, spec, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_at_five_percent_errors_is_rolled_back_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let stable = backend("stable", None).await;
    // Every 20th canary request answers 500: a 5% error rate.
    let canary = backend("canary", Some(20)).await;
    let server = start(
        config(dir.path(), "shop", &stable, &canary),
        StartOptions::default(),
    )
    .await
    .unwrap();
    let api = Http::new(server.api_addr());
    let proxy = server.proxy_addr("shop").await.unwrap();
    let load = Load::start(proxy, 4);

    // A long first stage: only the judge can end it early.
    let stages = "  - traffic: 20\n    duration: 10m\n    successCriteria:\n      - error_rate < stable * 1.25\n  - traffic: 100\n    final: true\n    promote: true\n";
    let body =
        spec("shop", "v2", stages).replace("analysis:\n", "analysis:\n  method: sequential\n");
    let r = api.post_yaml("/rollouts", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();

    let first_canary_request = wait_for(Duration::from_secs(10), "canary traffic", || async {
        if canary.hits() > 0 {
            Ok(Instant::now())
        } else {
            Err("no canary request yet".to_owned())
        }
    })
    .await;
    // "Within seconds": generous for a loaded two-core machine; the figure itself is
    // printed below.
    let failed = wait_for(Duration::from_secs(15), "the rollback", || async {
        let r = api.get(&format!("/rollouts/{id}")).await;
        if r.body["phase"] == "Failed" {
            Ok(r.body)
        } else {
            Err(format!("phase {}", r.body["phase"]))
        }
    })
    .await;
    let detection = first_canary_request.elapsed();
    load.stop().await;

    assert_eq!(failed["canaryWeight"], 0, "{failed}");
    let event = failed["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "Failed")
        .cloned()
        .expect("a Failed event");
    assert_eq!(event["actor"], "engine");
    let evidence = event["evidence"].to_string();
    assert!(
        evidence.contains("error_rate < stable * 1.25"),
        "the evidence names the criterion: {evidence}"
    );
    let served = canary.hits();
    eprintln!(
        "5% canary rolled back {detection:?} after its first request; it served {served} \
         requests, {} of them failed; evidence: {evidence}",
        served / 20
    );

    // Rolled back for good: the canary gets nothing more.
    let client = Http::new(proxy);
    for _ in 0..50 {
        assert_eq!(client.get("/").await.text, "stable");
    }
    assert_eq!(canary.hits(), served);
    server.shutdown().await;
}
