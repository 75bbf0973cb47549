//! Whole rollouts through the real server: fake upstreams on loopback, the built-in
//! proxy, the controller and the store, with short stages and polling deadlines.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use fledge_server::{StartOptions, start};
use hyper::StatusCode;
use support::rollout::{create, event, finished, kinds, until, until_phase};
use support::{Http, Load, Shop, backend, config, spec, wait_for};

/// The stable version of the first app, as `GET /apps` reports it.
async fn stable_version(api: &Http) -> serde_json::Value {
    api.get("/apps").await.body[0]["stable"]["version"].clone()
}

/// A shop (every `canary_fail_every`-th canary request failing, if set) with its
/// proxy's address, under `concurrency` connections of user load.
async fn shop_under_load(
    canary_fail_every: Option<u64>,
    concurrency: usize,
) -> (Shop, SocketAddr, Load) {
    let shop = Shop::start(canary_fail_every).await;
    let proxy = shop.proxy().await;
    let load = Load::start(proxy, concurrency);
    (shop, proxy, load)
}

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthy_canary_walks_every_stage_and_becomes_stable() {
    let (w, proxy, load) = shop_under_load(None, 4).await;
    let stages = "  - traffic: 20\n    duration: 1s\n    successCriteria:\n      - error_rate < 5%\n  - traffic: 50\n    duration: 1s\n    successCriteria:\n      - error_rate < 5%\n  - traffic: 100\n    final: true\n    promote: true\n";
    let id = create(&w.api, &spec("shop", "v2", stages)).await;
    let done = finished(&w.api, &id, LIMIT).await;
    load.stop().await;
    assert_eq!(done["phase"], "Succeeded", "{done}");
    let k = kinds(&done);
    assert_eq!(
        k.iter().filter(|k| **k == "StageStarted").count(),
        3,
        "{k:?}"
    );
    assert!(k.contains(&"Succeeded"), "{k:?}");

    // The canary is the new stable, in the store and in the proxy.
    let apps = w.api.get("/apps").await.body;
    assert_eq!(apps[0]["stable"]["version"], "v2", "{apps}");
    assert_eq!(
        apps[0]["stable"]["endpoints"][0],
        w.canary.endpoint().as_str()
    );
    let before = w.canary.hits();
    let stable_before = w.stable.hits();
    let client = Http::new(proxy);
    for _ in 0..20 {
        assert_eq!(client.get("/").await.text, "canary");
    }
    assert_eq!(w.canary.hits(), before + 20);
    assert_eq!(w.stable.hits(), stable_before);
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_canary_is_rolled_back_and_gets_no_more_traffic() {
    // Every 5th canary request fails: a 20% error rate.
    let (w, _, load) = shop_under_load(Some(5), 4).await;
    let stages = "  - traffic: 50\n    duration: 20s\n    successCriteria:\n      - error_rate < 1%\n  - traffic: 100\n    final: true\n    promote: true\n";
    let started = std::time::Instant::now();
    let id = create(&w.api, &spec("shop", "v2", stages)).await;
    let failed = finished(&w.api, &id, LIMIT).await;
    // Reported, not asserted: timing depends on the machine.
    eprintln!("rolled back {:?} after the start", started.elapsed());
    load.stop().await;
    assert_eq!(failed["phase"], "Failed", "{failed}");
    assert_eq!(failed["canaryWeight"], 0);
    let ev = event(&failed, "Failed").clone();
    assert_eq!(ev["actor"], "engine");
    assert!(
        !ev["evidence"].is_null(),
        "a failure carries its evidence: {ev}"
    );

    w.assert_only_stable_serves(100).await;
    assert_eq!(stable_version(&w.api).await, "v1");
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manual_promote_full_promote_pause_resume_abort_retry() {
    let (w, _, load) = shop_under_load(None, 2).await;
    // Stage 0 waits for a manual promote (no duration).
    let stages = "  - traffic: 10\n  - traffic: 30\n    duration: 2s\n  - traffic: 60\n  - traffic: 100\n    final: true\n    promote: true\n";
    let id = create(&w.api, &spec("shop", "v2", stages)).await;
    let r = w.api.get(&format!("/rollouts/{id}")).await.body;
    assert_eq!(
        (r["stageIndex"].as_u64(), r["canaryWeight"].as_u64()),
        (Some(0), Some(10))
    );

    // Promote ends stage 0 now.
    let r = w.api.post(&format!("/rollouts/{id}/promote"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["stageIndex"], 1);
    assert_eq!(r.body["canaryWeight"], 30);

    // Pause and resume. That the 2 s stage does not end while paused, nor right
    // after the resume, is checked with a held clock: fledge-server's
    // `paused_time_does_not_count_towards_the_stage`.
    let r = w.api.post(&format!("/rollouts/{id}/pause"), None).await;
    assert_eq!(r.body["phase"], "Paused", "{}", r.text);
    let r = w.api.get(&format!("/rollouts/{id}")).await.body;
    assert_eq!(
        (r["phase"].as_str(), r["stageIndex"].as_u64()),
        (Some("Paused"), Some(1))
    );
    let r = w.api.post(&format!("/rollouts/{id}/resume"), None).await;
    assert_eq!(r.body["phase"], "Progressing", "{}", r.text);
    // Then the stage ends on its own and stage 2 waits for a promote.
    until(&w.api, &id, LIMIT, "stage 2", |r| r["stageIndex"] == 2).await;

    // Abort, then retry from stage 0.
    let r = w
        .api
        .post(
            &format!("/rollouts/{id}/abort"),
            Some(r#"{"reason":"smoke"}"#),
        )
        .await;
    assert_eq!(r.body["phase"], "Aborted", "{}", r.text);
    assert_eq!(r.body["canaryWeight"], 0);
    let r = w.api.post("/rollouts/shop/retry", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["phase"], "Progressing");
    assert_eq!(r.body["stageIndex"], 0);
    assert_eq!(r.body["canaryWeight"], 10);

    // Promote --full: straight to Succeeded.
    let r = w.api.post("/rollouts/shop/promote?full=true", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["phase"], "Succeeded");
    load.stop().await;
    let k = kinds(&r.body);
    for kind in [
        "Promoted",
        "Paused",
        "Resumed",
        "Aborted",
        "Retried",
        "Succeeded",
    ] {
        assert!(k.contains(&kind), "missing {kind} in {k:?}");
    }
    assert_eq!(stable_version(&w.api).await, "v2");
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_abort_and_promote_never_promote_an_aborted_canary() {
    let w = Shop::start(None).await;
    let stages = "  - traffic: 20\n  - traffic: 100\n    final: true\n    promote: true\n";
    for round in 0..6 {
        let version = format!("v{}", round + 2);
        let id = create(&w.api, &spec("shop", &version, stages)).await;
        let stable_before = stable_version(&w.api).await;
        let abort_path = format!("/rollouts/{id}/abort");
        let promote_path = format!("/rollouts/{id}/promote?full=true");
        let (a, p) = tokio::join!(
            w.api.post(&abort_path, None),
            w.api.post(&promote_path, None)
        );
        let r = w.api.get(&format!("/rollouts/{id}")).await.body;
        let stable_after = stable_version(&w.api).await;
        match (a.status, p.status) {
            (StatusCode::OK, StatusCode::CONFLICT) => {
                assert_eq!(r["phase"], "Aborted");
                assert_eq!(
                    stable_after, stable_before,
                    "an aborted canary was promoted"
                );
            }
            (StatusCode::CONFLICT, StatusCode::OK) => {
                assert_eq!(r["phase"], "Succeeded");
                assert_eq!(stable_after, version.as_str());
            }
            other => panic!(
                "exactly one must win, got {other:?}: {} / {}",
                a.text, p.text
            ),
        }
    }
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_and_roles() {
    use fledge_server::auth::{sha256, to_hex};
    use fledge_server::config::{Role, TokenConfig};
    let w = Shop::start_with(
        None,
        |c| {
            c.auth.tokens = vec![
                TokenConfig {
                    name: "vera".into(),
                    role: Role::Viewer,
                    sha256: to_hex(&sha256(b"viewer-token")),
                },
                TokenConfig {
                    name: "otto".into(),
                    role: Role::Operator,
                    sha256: to_hex(&sha256(b"operator-token")),
                },
            ];
        },
        Default::default(),
    )
    .await;
    let viewer = w.api.with_token("viewer-token");
    let operator = w.api.with_token("operator-token");
    let stages = "  - traffic: 20\n  - traffic: 100\n    final: true\n    promote: true\n";

    let r = w.api.get("/rollouts").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "unauthorized");
    assert_eq!(
        w.api.with_token("wrong").get("/status").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(w.api.get("/healthz").await.status, StatusCode::OK);

    let r = viewer
        .post_yaml("/rollouts", &spec("shop", "v2", stages))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let id = create(&operator, &spec("shop", "v2", stages)).await;
    assert_eq!(
        viewer.get(&format!("/rollouts/{id}")).await.status,
        StatusCode::OK
    );
    let r = viewer.post(&format!("/rollouts/{id}/abort"), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"]["code"], "forbidden");
    let r = operator
        .put(
            "/apps/other",
            r#"{"listen":"127.0.0.1:0","stable":{"version":"v1","endpoints":["127.0.0.1:1"]}}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = operator.post(&format!("/rollouts/{id}/abort"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let aborted = event(&r.body, "Aborted").clone();
    assert_eq!(aborted["actor"], "otto");
    w.server.shutdown().await;
}

#[tokio::test]
async fn refuses_an_open_api_on_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let stable = backend("stable", None).await;
    let canary = backend("canary", None).await;
    let mut cfg = config(dir.path(), "shop", &stable, &canary);
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let err = start(cfg, StartOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("--insecure"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_events_status_health_and_app_registration() {
    use http_body_util::BodyExt;
    let w = Shop::start(None).await;
    let proxy = w.proxy().await;

    // The live stream: a status snapshot first, then the rollout's events.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<axum::body::Bytes>>();
    let req = hyper::Request::get(format!("http://{}/events", w.server.api_addr()))
        .body(Default::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let load = Load::start(proxy, 2);
    let stages = "  - traffic: 50\n  - traffic: 100\n    final: true\n    promote: true\n";
    let id = create(&w.api, &spec("shop", "v2", stages)).await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !(seen.contains("event: status")
        && seen.contains("event: event")
        && seen.contains("event: rollout")
        && seen.contains(&id))
    {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("live events arrive")
            .unwrap()
            .unwrap();
        if let Some(data) = frame.data_ref() {
            seen.push_str(&String::from_utf8_lossy(data));
        }
    }

    // Status: live health of both versions while traffic flows.
    let status = wait_for(LIMIT, "both versions' health", || async {
        let s = w.api.get("/status").await.body;
        let app = &s["apps"][0];
        let ok = app["stable"]["health"]["requestRate"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
            && app["canary"]["requestRate"].as_f64().unwrap_or(0.0) > 0.0
            && app["canary"]["p95Ms"].is_number();
        if ok { Ok(s) } else { Err(s.to_string()) }
    })
    .await;
    assert_eq!(status["apps"][0]["rollout"]["canaryWeight"], 50);
    load.stop().await;

    // Metrics carry the proxy's per-version counters.
    let metrics = w.api.get("/metrics").await.text;
    assert!(
        metrics.contains("fledge_canary_weight_ratio{app=\"shop\"} 0.5\n"),
        "{metrics}"
    );
    assert!(metrics.contains("v2"), "{metrics}");

    // PUT /apps/{app} registers a new app and starts its proxy.
    let other = backend("other", None).await;
    let body = format!(
        r#"{{"listen":"127.0.0.1:0","stable":{{"version":"v9","endpoints":["{}"]}}}}"#,
        other.endpoint()
    );
    let r = w.api.put("/apps/other", &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let addr: SocketAddr = r.body["proxyAddr"].as_str().unwrap().parse().unwrap();
    assert_eq!(Http::new(addr).get("/").await.text, "other");
    // Changing the stable version of an app with an active rollout: 409.
    let r = w
        .api
        .put(
            "/apps/shop",
            &format!(
                r#"{{"listen":"{proxy}","stable":{{"version":"v7","endpoints":["{}"]}}}}"#,
                w.stable.endpoint()
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hooks_gate_the_rollout() {
    let w = Shop::start(None).await;
    let stages = "  - traffic: 20\n  - traffic: 100\n    final: true\n    promote: true\n";
    // A passing beforeRollout hook lets the first stage start.
    let ok = format!(
        "{}hooks:\n  beforeRollout:\n    - exec:\n        command: [\"true\"]\n",
        spec("shop", "v2", stages)
    );
    let id = create(&w.api, &ok).await;
    let r = until(&w.api, &id, LIMIT, "stage 0 at 20%", |r| {
        r["canaryWeight"] == 20
    })
    .await;
    assert!(kinds(&r).contains(&"HookRan"), "{r}");
    let r = w.api.post(&format!("/rollouts/{id}/abort"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // A failing one fails the rollout before any traffic moves.
    let bad = format!(
        "{}hooks:\n  beforeRollout:\n    - exec:\n        command: [\"false\"]\n",
        spec("shop", "v3", stages)
    );
    let id = create(&w.api, &bad).await;
    let r = until_phase(&w.api, &id, LIMIT, "Failed").await;
    assert_eq!(r["canaryWeight"], 0);
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_event_hooks_see_every_event() {
    let w = Shop::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    // The hook gets the event as JSON on its standard input; one line per event.
    let yaml = format!(
        "{}hooks:\n  onEvent:\n    - exec:\n        command: [\"sh\", \"-c\", \"cat >> {}; echo >> {}\"]\n",
        spec(
            "shop",
            "v2",
            "  - traffic: 20\n  - traffic: 100\n    final: true\n    promote: true\n"
        ),
        log.display(),
        log.display()
    );
    let id = create(&w.api, &yaml).await;
    until(&w.api, &id, LIMIT, "stage 0 at 20%", |r| {
        r["canaryWeight"] == 20
    })
    .await;
    let r = w.api.post(&format!("/rollouts/{id}/abort"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let seen = |kind: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| {
                v["hook"] == "onEvent"
                    && v["rollout"]["id"] == id.as_str()
                    && v["event"]["kind"] == kind
                    && v["event"]["at"].is_string()
            })
    };
    let deadline = std::time::Instant::now() + LIMIT;
    while !(seen("Started") && seen("StageStarted") && seen("Aborted")) {
        assert!(
            std::time::Instant::now() < deadline,
            "onEvent saw: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undo_goes_back_to_the_previous_stable_version() {
    let w = Shop::start(None).await;
    let proxy = w.proxy().await;
    let client = Http::new(proxy);

    // Nothing was promoted yet: nothing to undo.
    let r = w.api.post("/apps/shop/undo", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "nothing_to_undo", "{}", r.text);
    let r = w.api.post("/apps/nope/undo", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    let stages =
        "  - traffic: 50\n    duration: 1s\n  - traffic: 100\n    final: true\n    promote: true\n";
    let id = create(&w.api, &spec("shop", "v2", stages)).await;
    until_phase(&w.api, &id, LIMIT, "Succeeded").await;
    let app = &w.api.get("/apps").await.body[0];
    assert_eq!(app["stable"]["version"], "v2", "{app}");
    assert_eq!(app["previousStable"]["version"], "v1", "{app}");
    assert_eq!(
        app["previousStable"]["endpoints"][0],
        w.stable.endpoint().as_str(),
        "{app}"
    );

    // Undo through the latest spec's stages: a rollout of v1 like any other.
    let r = w
        .api
        .post("/apps/shop/undo", Some(r#"{"reason":"bad release"}"#))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["version"], "v1", "{}", r.text);
    assert_eq!(r.body["canaryWeight"], 50, "{}", r.text);
    let created = event(&r.body, "Created").clone();
    assert!(
        created["message"]
            .as_str()
            .is_some_and(|m| m.contains("undo: back from v2 to v1: bad release")),
        "{created}"
    );
    let back = r.body["id"].as_str().unwrap().to_owned();
    until_phase(&w.api, &back, LIMIT, "Succeeded").await;
    let app = &w.api.get("/apps").await.body[0];
    assert_eq!(app["stable"]["version"], "v1", "{app}");
    assert_eq!(app["previousStable"]["version"], "v2", "{app}");
    for _ in 0..10 {
        assert_eq!(client.get("/").await.text, "stable");
    }

    // And with `now`, all at once: back to v2 in one step.
    let r = w.api.post("/apps/shop/undo?now=true", None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["phase"], "Succeeded", "{}", r.text);
    assert_eq!(stable_version(&w.api).await, "v2");
    for _ in 0..10 {
        assert_eq!(client.get("/").await.text, "canary");
    }

    // An app whose previous version is named as its stable one has nothing to undo.
    let mut app = w.api.get("/apps/shop").await.body;
    app["previousStable"] = app["stable"].clone();
    let r = w.api.put("/apps/shop", &app.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = w.api.post("/apps/shop/undo", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "nothing_to_undo", "{}", r.text);
    w.server.shutdown().await;
}

/// What `GET /status` says `http`'s caller may do to app `shop`, and the version
/// an undo would go back to.
async fn shop_offers(http: &Http) -> (serde_json::Value, serde_json::Value) {
    let r = http.get("/status").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let app = &r.body["apps"][0];
    (app["allowedActions"].clone(), app["previousStable"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_offers_undo_to_operators_while_there_is_one_to_do() {
    let opts = StartOptions {
        env_tokens: Some("ops:operator:op-token-1,watch:viewer:view-token-1".into()),
        ..Default::default()
    };
    let w = Shop::start_with(None, |_| {}, opts).await;
    let operator = w.api.with_token("op-token-1");
    let viewer = w.api.with_token("view-token-1");
    let none = serde_json::json!([]);
    let undo = serde_json::json!(["undo"]);

    // Nothing promoted yet: nothing to undo.
    assert_eq!(
        shop_offers(&operator).await,
        (none.clone(), serde_json::Value::Null)
    );

    // Promoted: an operator may undo back to v1; a viewer sees v1 but may not.
    let stages = "  - traffic: 50
  - traffic: 100
    final: true
";
    let id = create(&operator, &spec("shop", "v2", stages)).await;
    assert_eq!(shop_offers(&operator).await.0, none, "a rollout is active");
    let r = operator
        .post(&format!("/rollouts/{id}/promote?full=true"), None)
        .await;
    assert_eq!(r.body["phase"], "Succeeded", "{}", r.text);
    assert_eq!(shop_offers(&operator).await, (undo.clone(), "v1".into()));
    assert_eq!(shop_offers(&viewer).await, (none.clone(), "v1".into()));

    // While the undo runs, no second one.
    let r = operator.post("/apps/shop/undo", None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["phase"], "Progressing", "{}", r.text);
    assert_eq!(shop_offers(&operator).await, (none, "v1".into()));
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promote_and_abort_take_the_rollout_in_the_body() {
    let w = Shop::start(None).await;
    let stages =
        "  - traffic: 10\n  - traffic: 50\n  - traffic: 100\n    final: true\n    promote: true\n";
    let id = create(&w.api, &spec("shop", "v2", stages)).await;

    for bad in [
        "{}",
        r#"{"rollout":"x","app":"shop"}"#,
        r#"{"app":"shop","full":"yes"}"#,
    ] {
        let r = w.api.post("/promote", Some(bad)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "invalid_body", "{}", r.text);
    }
    let r = w
        .api
        .post("/promote", Some(&format!(r#"{{"rollout":"{id}"}}"#)))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["stageIndex"], 1, "{}", r.text);
    let r = w
        .api
        .post("/abort", Some(r#"{"app":"shop","reason":"by name"}"#))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["phase"], "Aborted", "{}", r.text);
    let r = w.api.post("/abort", Some(r#"{"rollout":"ro-none"}"#)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    w.server.shutdown().await;
}
