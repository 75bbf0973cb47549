//! The OpenAPI document and the router describe the same routes: every operation
//! the document lists is one the server routes (not its "no route" 404, not a 405),
//! and the document is served at `/openapi.json` as generated.

mod common;

use axum::http::StatusCode;
use common::{call, serve};

/// Every route is called with `{}` as a JSON body: enough for any to answer (not 415).
const JSON: &str = "application/json";

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:0\nstore: sqlite://{}/fledge.db\n",
        dir.path().display()
    );
    let (server, router) = serve(&yaml).await;

    let operations = fledge_api::openapi::operations();
    assert!(operations.len() >= 20, "{} operations", operations.len());
    for op in &operations {
        let path = op
            .path
            .replace("{id}", "no-such-rollout")
            .replace("{app}", "no-such-app");
        let (status, body) = call(router.clone(), op.method, &path, JSON, "{}".into()).await;
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

    let (status, served) = call(router.clone(), "get", "/openapi.json", JSON, "{}".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served, fledge_api::openapi::document());
    server.shutdown().await;
}
