//! The HTTP API against an in-process server: routes answered with `oneshot` where
//! no traffic is needed.

mod support;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use serde_json::Value;
use support::{Http, Shop, spec};
use tower::ServiceExt;

const STAGES: &str = "  - traffic: 20\n    duration: 30s\n    successCriteria:\n      - error_rate < 5%\n  - traffic: 100\n    final: true\n    promote: true\n";

async fn call(router: axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

fn req(method: &str, path: &str, body: &str, ct: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ct)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn rollout_lifecycle_errors_and_open_routes() {
    let shop = Shop::start(None).await;
    let router = shop.router();

    let (status, body) = call(router.clone(), req("GET", "/healthz", "", "text/plain")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = call(router.clone(), req("GET", "/readyz", "", "text/plain")).await;
    assert_eq!(status, StatusCode::OK);

    // Unknown routes and methods answer the JSON error shape.
    let (status, body) = call(router.clone(), req("GET", "/nope", "", "text/plain")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = call(router.clone(), req("DELETE", "/rollouts", "", "text/plain")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert!(body["error"]["message"].is_string());

    // A bad spec: 400 with file:line:col.
    let bad = spec("shop", "v2", "  - traffic: 150\n    duration: 1s\n");
    let mut r = req("POST", "/rollouts", &bad, "application/yaml");
    r.headers_mut()
        .insert("x-fledge-origin", "bad.yaml".parse().unwrap());
    let (status, body) = call(router.clone(), r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_spec");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("bad.yaml:8:"), "{msg}");
    assert!(msg.contains("stages[0].traffic"), "{msg}");
    assert_eq!(body["error"]["details"][0]["line"], 8);

    // Unknown field: 400 naming it.
    let unknown = format!("{}colour: red\n", spec("shop", "v2", STAGES));
    let (status, body) = call(
        router.clone(),
        req("POST", "/rollouts", &unknown, "application/yaml"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{body}"
    );

    // Unknown app: 404.
    let (status, body) = call(
        router.clone(),
        req(
            "POST",
            "/rollouts",
            &spec("nope", "v2", STAGES),
            "application/yaml",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "app_not_found");

    // Oversize body: 413.
    let huge = "x".repeat(2 * 1024 * 1024);
    let (status, body) = call(
        router.clone(),
        req("POST", "/rollouts", &huge, "application/yaml"),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");

    // A good spec: 201 with the rollout; a second one for the same app: 409.
    let (status, created) = call(
        router.clone(),
        req(
            "POST",
            "/rollouts",
            &spec("shop", "v2", STAGES),
            "application/yaml",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    for field in [
        "id",
        "app",
        "version",
        "phase",
        "stageIndex",
        "canaryWeight",
        "stages",
        "createdAt",
        "updatedAt",
        "analysis",
        "events",
    ] {
        assert!(created.get(field).is_some(), "missing {field}: {created}");
    }
    assert_eq!(created["phase"], "Progressing");
    assert_eq!(created["canaryWeight"], 20);
    let id = created["id"].as_str().unwrap().to_owned();
    let json_spec = serde_json::json!({
        "app": "shop", "version": "v3", "stages": [{"traffic": 100, "final": true, "promote": true}]
    });
    let (status, body) = call(
        router.clone(),
        req(
            "POST",
            "/rollouts",
            &json_spec.to_string(),
            "application/json",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "active_rollout");

    // By id and by app name; list with filters.
    let (status, by_app) = call(
        router.clone(),
        req("GET", "/rollouts/shop", "", "text/plain"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_app["id"], id.as_str());
    let (_, list) = call(
        router.clone(),
        req(
            "GET",
            "/rollouts?app=shop&phase=progressing",
            "",
            "text/plain",
        ),
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let (status, _) = call(
        router.clone(),
        req("GET", "/rollouts?phase=Bogus", "", "text/plain"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The proxy follows the stored weight.
    let proxy = shop.proxy().await;
    let app = shop.server.shared().apps.get("shop").await.unwrap();
    let route = app.applied_route().await.unwrap();
    assert_eq!(route.canary_weight, 20);
    assert_eq!(route.canary.unwrap().version, "v2");
    let reply = Http::new(proxy).get("/").await;
    assert_eq!(reply.status, StatusCode::OK);

    // Abort: 200, weight 0, the actor recorded; a second abort: 409.
    let (status, aborted) = call(
        router.clone(),
        req(
            "POST",
            &format!("/rollouts/{id}/abort"),
            r#"{"reason":"testing"}"#,
            "application/json",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{aborted}");
    assert_eq!(aborted["phase"], "Aborted");
    assert_eq!(aborted["canaryWeight"], 0);
    let events = aborted["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "Aborted" && e["actor"] == "anonymous"),
        "{aborted}"
    );
    let route = app.applied_route().await.unwrap();
    assert!(route.canary.is_none(), "{route:?}");
    let (status, body) = call(
        router.clone(),
        req(
            "POST",
            &format!("/rollouts/{id}/abort"),
            "",
            "application/json",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "invalid_phase");

    // Status, apps, metrics, openapi.
    let (status, st) = call(router.clone(), req("GET", "/status", "", "text/plain")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(st["apps"][0]["stable"]["version"], "v1");
    let (_, apps) = call(router.clone(), req("GET", "/apps", "", "text/plain")).await;
    assert_eq!(apps[0]["name"], "shop");
    let resp = router
        .clone()
        .oneshot(req("GET", "/metrics", "", "text/plain"))
        .await
        .unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("fledge_rollouts{phase=\"Aborted\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("fledge_canary_weight_percent{app=\"shop\"} 0"),
        "{text}"
    );
    let (_, doc) = call(
        router.clone(),
        req("GET", "/openapi.json", "", "text/plain"),
    )
    .await;
    for path in [
        "/rollouts",
        "/rollouts/{id}",
        "/rollouts/{id}/events",
        "/rollouts/{id}/promote",
        "/rollouts/{id}/abort",
        "/rollouts/{id}/pause",
        "/rollouts/{id}/resume",
        "/rollouts/{id}/retry",
        "/status",
        "/events",
        "/apps",
        "/apps/{app}",
        "/metrics",
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }

    // Events of the rollout, oldest first with gapless seq.
    let (_, events) = call(
        router.clone(),
        req("GET", &format!("/rollouts/{id}/events"), "", "text/plain"),
    )
    .await;
    let seqs: Vec<i64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());

    shop.server.shutdown().await;
}

#[tokio::test]
async fn an_app_read_with_get_can_be_put_back_as_it_is() {
    let shop = Shop::start(None).await;
    let router = shop.router();
    let (status, app) = call(router.clone(), req("GET", "/apps/shop", "", "text/plain")).await;
    assert_eq!(status, StatusCode::OK, "{app}");
    assert!(
        app["proxyAddr"].is_string() && app["routerSync"].is_object(),
        "{app}"
    );

    // The read-only fields GET adds are ignored; the config is unchanged.
    let (status, again) = call(
        router.clone(),
        req("PUT", "/apps/shop", &app.to_string(), "application/json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["stable"], app["stable"]);
    assert_eq!(again["listen"], app["listen"]);

    // Any other unknown field is still an error that names it.
    let mut typo = app.clone();
    typo["stabel"] = app["stable"].clone();
    let (status, body) = call(
        router.clone(),
        req("PUT", "/apps/shop", &typo.to_string(), "application/json"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stabel"),
        "{body}"
    );
    shop.server.shutdown().await;
}
