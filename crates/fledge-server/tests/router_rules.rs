//! A rule the app's router cannot express is refused when the rollout is created,
//! with a 400 naming the field and the router, and never dropped afterwards.

mod common;

use axum::http::StatusCode;
use common::{call, serve};
use serde_json::Value;

const SPEC: &str = "app: shop\nversion: v2\nstages:\n  - traffic: 20\n    duration: 30s\n  - traffic: 100\n    final: true\n    promote: true\n";

/// `POST /rollouts` with `spec` as YAML.
async fn create(router: axum::Router, spec: String) -> (StatusCode, Value) {
    call(router, "POST", "/rollouts", "application/yaml", spec).await
}

#[tokio::test]
async fn a_weight_only_router_refuses_what_only_the_proxy_does() {
    let dir = tempfile::tempdir().unwrap();
    // An HAProxy router whose runtime socket is not there: the server starts anyway
    // (the route stays unapplied), and the check needs no data plane.
    let yaml = format!(
        "listen: 127.0.0.1:0\nstore: sqlite://{dir}/fledge.db\napps:\n  - name: shop\n    \
         stable: {{version: v1, endpoints: [\"127.0.0.1:9\"]}}\n    \
         canary: {{endpoints: [\"127.0.0.1:10\"]}}\n    \
         router: {{type: haproxy, socket: {dir}/no.sock, backend: shop}}\n    \
         metrics: {{type: prometheus, url: \"http://127.0.0.1:9\"}}\n",
        dir = dir.path().display()
    );
    let (server, router) = serve(&yaml).await;

    let with_match = format!("{SPEC}match:\n  - header: x-tester\n    value: \"yes\"\n");
    let (status, body) = create(router.clone(), with_match).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_spec");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("haproxy") && message.contains("`match`"),
        "{message}"
    );

    for (field, yaml) in [
        ("stickiness", "stickiness:\n  cookie: user\n"),
        ("closeUpgradedOnAbort", "closeUpgradedOnAbort: true\n"),
    ] {
        let (status, body) = create(router.clone(), format!("{SPEC}{yaml}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "{body}"
        );
    }

    // Without rules the same app takes the rollout.
    let (status, body) = create(router.clone(), SPEC.to_owned()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server.shutdown().await;
}
