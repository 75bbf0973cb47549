//! The OpenAPI document and the router describe the same routes: every operation
//! the document lists is one the server routes (not its "no route" 404, not a 405),
//! and the document is served at `/openapi.json` as generated.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fledge_server::config::ServerConfig;
use fledge_server::{StartOptions, api, start};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

async fn call(router: axum::Router, method: &str, path: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method.to_ascii_uppercase().as_str())
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let streams = response
        .headers()
        .get("content-type")
        .is_some_and(|ct| ct.as_bytes().starts_with(b"text/event-stream"));
    if streams {
        // The live stream never ends by itself: its status says it is routed.
        return (status, Value::Null);
    }
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:0\nstore: sqlite://{}/fledge.db\n",
        dir.path().display()
    );
    let config = ServerConfig::parse(&yaml, "test.yaml").unwrap();
    let server = start(config, StartOptions::default()).await.unwrap();
    let router = api::router(server.shared().clone());

    let operations = fledge_api::openapi::operations();
    assert!(operations.len() >= 20, "{} operations", operations.len());
    for op in &operations {
        let path = op
            .path
            .replace("{id}", "no-such-rollout")
            .replace("{app}", "no-such-app");
        let (status, body) = call(router.clone(), op.method, &path).await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && !message.starts_with("no route for"),
            "{} {} is documented but not routed: {status} {body}",
            op.method,
            op.path
        );
        let documented = op.responses.iter().any(|(s, _, _)| *s == status.as_u16())
            || [400, 401, 403, 408, 413, 429, 503].contains(&status.as_u16());
        assert!(
            documented,
            "{} {} answered {status}, which the document does not list: {body}",
            op.method, op.path
        );
    }

    let (status, served) = call(router.clone(), "get", "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served, fledge_api::openapi::document());
    server.shutdown().await;
}
