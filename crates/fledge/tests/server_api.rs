//! The HTTP API against an in-process server: routes answered with `oneshot` where
//! no traffic is needed.

mod support;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use serde_json::Value;
use support::rollout::has_event_by;
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

/// Sends one request with this body and content type to the router.
async fn send(
    router: &axum::Router,
    method: &str,
    path: &str,
    body: &str,
    ct: &str,
) -> (StatusCode, Value) {
    call(router.clone(), req(method, path, body, ct)).await
}

/// `POST /rollouts` with this YAML body.
async fn post_spec(router: &axum::Router, yaml: &str) -> (StatusCode, Value) {
    send(router, "POST", "/rollouts", yaml, "application/yaml").await
}

/// `POST path` with this JSON body.
async fn post_json(router: &axum::Router, path: &str, json: &str) -> (StatusCode, Value) {
    send(router, "POST", path, json, "application/json").await
}

/// `PUT path` with this JSON body.
async fn put_json(router: &axum::Router, path: &str, json: &str) -> (StatusCode, Value) {
    send(router, "PUT", path, json, "application/json").await
}

/// `GET path` from the router.
async fn get(router: &axum::Router, path: &str) -> (StatusCode, Value) {
    send(router, "GET", path, "", "text/plain").await
}

/// `GET path` from the router, which must answer 200; its body.
async fn get_ok(router: &axum::Router, path: &str) -> Value {
    let (status, body) = get(router, path).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

/// The message of an answer in the API's error shape.
fn error_message(body: &Value) -> &str {
    body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
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

    get_ok(&router, "/healthz").await;
    get_ok(&router, "/readyz").await;

    // Unknown routes and methods answer the JSON error shape.
    let (status, body) = get(&router, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = send(&router, "DELETE", "/rollouts", "", "text/plain").await;
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
    let msg = error_message(&body);
    assert!(msg.starts_with("bad.yaml:8:"), "{msg}");
    assert!(msg.contains("stages[0].traffic"), "{msg}");
    assert_eq!(body["error"]["details"][0]["line"], 8);

    // Unknown field: 400 naming it.
    let unknown = format!("{}colour: red\n", spec("shop", "v2", STAGES));
    let (status, body) = post_spec(&router, &unknown).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error_message(&body).contains("colour"), "{body}");

    // Unknown app: 404.
    let (status, body) = post_spec(&router, &spec("nope", "v2", STAGES)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "app_not_found");

    // Oversize body: 413.
    let huge = "x".repeat(2 * 1024 * 1024);
    let (status, body) = post_spec(&router, &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");

    // A good spec: 201 with the rollout; a second one for the same app: 409.
    let (status, created) = post_spec(&router, &spec("shop", "v2", STAGES)).await;
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
    let (status, body) = post_json(&router, "/rollouts", &json_spec.to_string()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "active_rollout");

    // By id and by app name; list with filters.
    let by_app = get_ok(&router, "/rollouts/shop").await;
    assert_eq!(by_app["id"], id.as_str());
    let (_, list) = get(&router, "/rollouts?app=shop&phase=progressing").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let (status, _) = get(&router, "/rollouts?phase=Bogus").await;
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
    let (status, aborted) = post_json(
        &router,
        &format!("/rollouts/{id}/abort"),
        r#"{"reason":"testing"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{aborted}");
    assert_eq!(aborted["phase"], "Aborted");
    assert_eq!(aborted["canaryWeight"], 0);
    assert!(has_event_by(&aborted, "Aborted", "anonymous"), "{aborted}");
    let route = app.applied_route().await.unwrap();
    assert!(route.canary.is_none(), "{route:?}");
    let (status, body) = post_json(&router, &format!("/rollouts/{id}/abort"), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "invalid_phase");

    // Status, apps, metrics, openapi.
    let st = get_ok(&router, "/status").await;
    assert_eq!(st["apps"][0]["stable"]["version"], "v1");
    let (_, apps) = get(&router, "/apps").await;
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
        text.contains("fledge_canary_weight_ratio{app=\"shop\"} 0\n"),
        "{text}"
    );
    let (_, doc) = get(&router, "/openapi.json").await;
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
    let (_, events) = get(&router, &format!("/rollouts/{id}/events")).await;
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
    let app = get_ok(&router, "/apps/shop").await;
    assert!(
        app["proxyAddr"].is_string() && app["routerSync"].is_object(),
        "{app}"
    );

    // The read-only fields GET adds are ignored; the config is unchanged.
    let (status, again) = put_json(&router, "/apps/shop", &app.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["stable"], app["stable"]);
    assert_eq!(again["listen"], app["listen"]);

    // Any other unknown field is still an error that names it.
    let mut typo = app.clone();
    typo["stabel"] = app["stable"].clone();
    let (status, body) = put_json(&router, "/apps/shop", &typo.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error_message(&body).contains("stabel"), "{body}");
    shop.server.shutdown().await;
}

/// The body of a `GET /` sent on `conn`, a keep-alive connection to the proxy.
async fn ask(conn: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    conn.write_all(b"GET / HTTP/1.1\r\nhost: shop\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let read = async {
        loop {
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "the connection closed: {}",
                String::from_utf8_lossy(&reply)
            );
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .expect("a content-length");
                if body.len() >= length {
                    return body.to_owned();
                }
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s")
}

#[tokio::test]
async fn a_refused_app_change_leaves_its_proxy_serving_as_it_was() {
    let shop = Shop::start(None).await;
    let router = shop.router();
    let app = get_ok(&router, "/apps/shop").await;
    let addr = shop.proxy().await;
    // A new connection each time: the restarted listener closed the idle ones.
    let served = || async move { support::Http::new(addr).get("/").await.text };
    assert_eq!(served().await, "stable");
    // One connection kept open across the changes below.
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(ask(&mut kept).await.ends_with("stable"));

    // A new upstream protocol restarts the listener; one that cannot start (its CA
    // file is not there) is refused before the listener is touched: the open
    // connection still serves.
    let mut tls = app.clone();
    tls["upstream"] = serde_json::json!({"protocol": "tls", "tls": {"ca": "/nonexistent/ca.pem"}});
    let (status, body) = put_json(&router, "/apps/shop", &tls.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error_message(&body).contains("ca.pem"), "{body}");
    assert_eq!(shop.proxy().await, addr);
    assert!(ask(&mut kept).await.ends_with("stable"));
    assert_eq!(served().await, "stable");

    // An external router whose settings it refuses: nothing was stopped.
    let mut haproxy = app.clone();
    haproxy["router"] = serde_json::json!({"type": "haproxy"});
    let (status, body) = put_json(&router, "/apps/shop", &haproxy.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(served().await, "stable");
    let again = get_ok(&router, "/apps/shop").await;
    assert_eq!(again["router"], app["router"]);

    // The restarted listener is the one routes go to: a rollout at 100% moves it.
    let (status, body) = post_spec(&router, &spec("shop", "v2", "  - traffic: 100\n")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(served().await, "canary");
    shop.server.shutdown().await;
}
