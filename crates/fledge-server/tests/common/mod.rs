//! Helpers for the server's integration tests: a server started from a config in
//! YAML, and requests through its router with no socket.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fledge_server::config::ServerConfig;
use fledge_server::{RunningServer, StartOptions, api, start};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Starts a server with the config `yaml`; returns it with its API's router.
pub async fn serve(yaml: &str) -> (RunningServer, axum::Router) {
    let config = ServerConfig::parse(yaml, "test.yaml").unwrap();
    let server = start(config, StartOptions::default()).await.unwrap();
    let router = api::router(server.shared().clone());
    (server, router)
}

/// Sends `method path` with a body of `content_type`; returns the status and the
/// JSON answer (`null` when the answer is not JSON, or is an event stream, which
/// never ends by itself: its status says it is routed).
pub async fn call(
    router: axum::Router,
    method: &str,
    path: &str,
    content_type: &str,
    body: String,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method.to_ascii_uppercase().as_str())
        .uri(path)
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let streams = response
        .headers()
        .get("content-type")
        .is_some_and(|ct| ct.as_bytes().starts_with(b"text/event-stream"));
    if streams {
        return (status, Value::Null);
    }
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
