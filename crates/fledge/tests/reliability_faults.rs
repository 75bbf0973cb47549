//! Faults around a running rollout, against an in-process server: a metric source
//! that is down or answers garbage must never let the canary advance, and must fail
//! the rollout after `analysis.maxConsecutiveErrors` reads; afterwards the canary
//! gets no more traffic.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use fledge::server::{StartOptions, start};
use hyper::StatusCode;
use serde_json::Value;
use support::{Backend, Http, backend, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

/// A fake Prometheus that answers every query with `body` and `status`.
async fn fake_prometheus(status: StatusCode, body: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || async move { (status, body) });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn server_config(
    dir: &std::path::Path,
    stable: &Backend,
    canary: &Backend,
    prometheus: SocketAddr,
) -> fledge::config::ServerConfig {
    let text = format!(
        "listen: 127.0.0.1:0\nstore: sqlite://{db}\ncontroller:\n  tick: 200ms\napps:\n  - name: shop\n    listen: 127.0.0.1:0\n    stable:\n      version: v1\n      endpoints: [\"{s}\"]\n    canary:\n      endpoints: [\"{c}\"]\n    metrics:\n      type: prometheus\n      url: http://{prometheus}\n",
        db = dir.join("fledge.db").display(),
        s = stable.endpoint(),
        c = canary.endpoint(),
    );
    fledge::config::ServerConfig::parse(&text, "faults.yaml").expect("config parses")
}

const SPEC: &str = "app: shop\nversion: v2\nanalysis:\n  interval: 200ms\n  maxConsecutiveErrors: 3\nstages:\n  - traffic: 10\n    duration: 1s\n    successCriteria:\n      - error_rate < 5%\n  - traffic: 50\n    duration: 1s\n  - traffic: 100\n    final: true\n    promote: true\n";

/// Runs a rollout judged from `prometheus` and expects it to fail without ever
/// leaving its first stage; returns the final rollout.
async fn rollout_fails_on(prometheus: SocketAddr) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let stable = backend("stable", None).await;
    let canary = backend("canary", None).await;
    let server = start(
        server_config(dir.path(), &stable, &canary, prometheus),
        StartOptions::default(),
    )
    .await
    .unwrap();
    let api = Http::new(server.api_addr());
    let proxy = server.proxy_addr("shop").await.unwrap();
    let load = support::Load::start(proxy, 2);
    let r = api.post_yaml("/rollouts", SPEC).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let failed = wait_for(LIMIT, "Failed", || async {
        let r = api.get(&format!("/rollouts/{id}")).await.body;
        // Never past the first stage on missing data.
        assert!(
            r["stageIndex"].as_i64().unwrap_or(0) == 0,
            "advanced without metrics: {r}"
        );
        if r["phase"] == "Failed" {
            Ok(r)
        } else {
            Err(r["phase"].to_string())
        }
    })
    .await;
    let kinds: Vec<&str> = failed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"AnalysisError"), "{kinds:?}");
    assert!(!kinds.contains(&"StageAdvanced"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"Failed"), "{kinds:?}");
    // The canary is out of the route: no request reaches it any more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dark = canary.hits();
    let sent = load.sent.load(std::sync::atomic::Ordering::SeqCst);
    wait_for(LIMIT, "more load", || async {
        let n = load.sent.load(std::sync::atomic::Ordering::SeqCst);
        if n > sent + 100 {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
    assert_eq!(canary.hits(), dark, "the canary got traffic after failing");
    load.stop().await;
    let app = api.get("/apps/shop").await.body;
    assert_eq!(app["stable"]["version"], "v1");
    server.shutdown().await;
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_source_down_fails_the_rollout() {
    let failed = rollout_fails_on(closed_port()).await;
    let message = failed["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "AnalysisError")
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .unwrap();
    assert!(!message.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_source_answering_garbage_fails_the_rollout() {
    rollout_fails_on(fake_prometheus(StatusCode::OK, "<html>not prometheus</html>").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_source_answering_nan_or_errors_fails_the_rollout() {
    rollout_fails_on(
        fake_prometheus(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"error","errorType":"unavailable","error":"overloaded"}"#,
        )
        .await,
    )
    .await;
}
