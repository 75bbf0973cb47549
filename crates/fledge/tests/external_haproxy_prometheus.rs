//! Whole rollouts through the real server whose app is routed by a real HAProxy (its
//! runtime API on a unix socket) and judged from a real Prometheus scraping the two
//! versions' exporter every second. Load goes through HAProxy's frontend; the test
//! reads HAProxy's own weights and addresses at the end.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fledge_providers::router::HaproxyRouter;
use fledge_providers::testing::process::Prometheus;
use serde_json::Value;
use support::haproxy::{World, world};
use support::rollout::{create, event, finished};
use support::{Http, Load, json_answer, wait_for};

const LIMIT: Duration = Duration::from_secs(60);

/// The world these tests share: HAProxy may move the stable server's address.
async fn haproxy_world(canary_fail_every: Option<u64>) -> World {
    world(canary_fail_every, "      manageAddresses: true\n").await
}

fn spec(stages: &str) -> String {
    format!(
        "app: shop\nversion: v2\nstrategy: canary\nanalysis:\n  interval: 1s\n  minRequests: 20\n  maxConsecutiveErrors: 10\nstages:\n{stages}"
    )
}

/// Waits until Prometheus has scraped requests of `version`: the stable version has a
/// history before any rollout, as it would in production.
async fn scraped(prometheus: &Prometheus, version: &str) {
    fledge_providers::tls::ensure_crypto_provider();
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/query", prometheus.url);
    let query = format!("sum(http_requests_total{{app=\"shop\",version=\"{version}\"}})");
    wait_for(LIMIT, "Prometheus to scrape the stable version", || async {
        let body: Value = json_answer(client.get(&url).query(&[("query", query.as_str())])).await?;
        match body["data"]["result"].as_array() {
            Some(r) if !r.is_empty() => Ok(()),
            _ => Err(body.to_string()),
        }
    })
    .await;
}

/// HAProxy's `get weight` of one server: the number before `(initial N)`.
async fn weight(router: &HaproxyRouter, server: &str) -> u32 {
    let answer = router
        .command(&format!("get weight be_shop/{server}"))
        .await
        .unwrap();
    answer
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("`get weight be_shop/{server}` answered {answer:?}"))
}

async fn address(router: &HaproxyRouter, server: &str) -> String {
    let servers = router.server_addresses().await.unwrap();
    let (_, ip, port) = servers
        .iter()
        .find(|(name, _, _)| name == server)
        .unwrap_or_else(|| panic!("no server {server}: {servers:?}"));
    format!("{ip}:{port}")
}

/// Bodies of `n` requests through HAProxy's frontend, each on a fresh connection.
async fn bodies(frontend: SocketAddr, n: usize) -> Vec<String> {
    let client = Http::new(frontend);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(client.get("/").await.text);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs haproxy and prometheus: run scripts/test"]
async fn healthy_canary_behind_haproxy_is_promoted_from_prometheus_metrics() {
    let w = haproxy_world(None).await;
    let load = Load::start(w.haproxy.frontend, 4);
    scraped(&w.prometheus, "v1").await;
    let stages = "  - traffic: 20\n    duration: 3s\n    successCriteria:\n      - error_rate < 5%\n  - traffic: 50\n    duration: 3s\n    successCriteria:\n      - error_rate < 5%\n  - traffic: 100\n    final: true\n    promote: true\n";
    let started = Instant::now();
    let id = create(&w.api, &spec(stages)).await;

    // The router really moves HAProxy's weights during the rollout.
    wait_for(LIMIT, "HAProxy to send 20% to the canary", || async {
        match weight(&w.router, "canary").await {
            0 => Err("canary weight 0".to_owned()),
            n => Ok(n),
        }
    })
    .await;

    let done = finished(&w.api, &id, LIMIT).await;
    eprintln!("succeeded {:?} after the start", started.elapsed());
    load.stop().await;
    assert_eq!(done["phase"], "Succeeded", "{done}");

    // Promotion: HAProxy's stable server now runs the new version and takes every
    // request; the canary server is drained.
    wait_for(LIMIT, "HAProxy's stable server to point at v2", || async {
        let at = address(&w.router, "stable").await;
        let weights = (
            weight(&w.router, "stable").await,
            weight(&w.router, "canary").await,
        );
        if at == w.canary.addr.to_string() && weights == (100, 0) {
            Ok(())
        } else {
            Err(format!("stable at {at}, weights {weights:?}"))
        }
    })
    .await;
    // HAProxy keeps the idle server-side connections it opened to the stable
    // server's old address after `set server addr`, and reuses some of them for a
    // while: the old version can still answer a share of requests just after the
    // switch. Require 50 answers in a row from v2 within the deadline, and report how
    // long the old version kept answering.
    let switched = Instant::now();
    wait_for(
        LIMIT,
        "50 answers in a row from v2 through HAProxy",
        || async {
            let answers = bodies(w.haproxy.frontend, 50).await;
            if answers.iter().all(|b| b == "v2") {
                Ok(())
            } else {
                Err(format!("{answers:?}"))
            }
        },
    )
    .await;
    eprintln!(
        "old version drained {:?} after the switch",
        switched.elapsed()
    );
    let apps = w.api.get("/apps").await.body;
    assert_eq!(apps[0]["stable"]["version"], "v2", "{apps}");
    assert_ne!(w.stable.addr, w.canary.addr);
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs haproxy and prometheus: run scripts/test"]
async fn failing_canary_behind_haproxy_is_rolled_back_from_prometheus_metrics() {
    let stages = "  - traffic: 50\n    duration: 30s\n    successCriteria:\n      - error_rate < 5%\n  - traffic: 100\n    final: true\n    promote: true\n";
    rolled_back(&spec(stages), "error_rate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs haproxy and prometheus: run scripts/test"]
async fn failing_canary_is_rolled_back_on_a_custom_promql_ratio() {
    // The spec's own metric, evaluated by Prometheus: the share of 5xx answers.
    let metrics = "metrics:\n  server_errors:\n    kind: ratio\n    bad: sum(http_requests_total{app=\"{{app}}\",version=\"{{version}}\",code=~\"5..\"})\n    total: sum(http_requests_total{app=\"{{app}}\",version=\"{{version}}\"})\n";
    let stages = "  - traffic: 50\n    duration: 30s\n    successCriteria:\n      - server_errors < 5%\n  - traffic: 100\n    final: true\n    promote: true\n";
    rolled_back(&format!("{}{metrics}", spec(stages)), "server_errors").await;
}

/// A canary failing every third request, judged by `spec` (whose failing criterion is
/// on `metric`), is rolled back and drained in HAProxy.
async fn rolled_back(spec: &str, metric: &str) {
    // Every 3rd canary request fails: a 33% error rate.
    let w = haproxy_world(Some(3)).await;
    let load = Load::start(w.haproxy.frontend, 4);
    scraped(&w.prometheus, "v1").await;
    let started = Instant::now();
    let id = create(&w.api, spec).await;
    let failed = finished(&w.api, &id, LIMIT).await;
    eprintln!("rolled back {:?} after the start", started.elapsed());
    load.stop().await;
    assert_eq!(failed["phase"], "Failed", "{failed}");
    assert_eq!(failed["canaryWeight"], 0, "{failed}");
    let ev = event(&failed, "Failed").clone();
    assert!(!ev["evidence"].is_null(), "{ev}");
    // Judged from the canary's errors in Prometheus, not from missing data.
    let message = ev["message"].as_str().unwrap();
    assert!(message.contains(metric), "{ev}");
    assert!(!message.contains("unavailable"), "{ev}");

    // HAProxy itself: the canary server at weight 0, stable where it was.
    wait_for(LIMIT, "HAProxy to drain the canary", || async {
        match weight(&w.router, "canary").await {
            0 => Ok(()),
            n => Err(format!("canary weight {n}")),
        }
    })
    .await;
    assert_eq!(weight(&w.router, "stable").await, 100);
    assert_eq!(
        address(&w.router, "stable").await,
        w.stable.addr.to_string()
    );
    let answers = bodies(w.haproxy.frontend, 50).await;
    assert!(answers.iter().all(|b| b == "v1"), "{answers:?}");
    w.server.shutdown().await;
}
