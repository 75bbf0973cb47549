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

    // A stage that copies requests to the canary: HAProxy cannot.
    refuses_copies(&router, "shop", "haproxy").await;

    // Without rules the same app takes the rollout.
    let (status, body) = create(router.clone(), SPEC.to_owned()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server.shutdown().await;
}

/// A rollout of `app` whose first stage copies requests to the canary is refused
/// with a 400 naming the field and `router`.
async fn refuses_copies(router: &axum::Router, app: &str, kind: &str) {
    let dark = SPEC
        .replace("app: shop", &format!("app: {app}"))
        .replace("  - traffic: 20\n", "  - traffic: 0\n    mirror: 100\n");
    let (status, body) = create(router.clone(), dark).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_spec", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    let wanted = format!("the {kind} router cannot express `stages[0].mirror`");
    assert!(message.contains(&wanted), "{message}");
}

/// Creates a rollout of `app` with the rules in `rules` (YAML lines); the status and
/// the error message, if any.
async fn create_for(router: &axum::Router, app: &str, rules: &str) -> (StatusCode, String) {
    let spec = format!(
        "{}{rules}",
        SPEC.replace("app: shop", &format!("app: {app}"))
    );
    let (status, body) = create(router.clone(), spec).await;
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if status == StatusCode::BAD_REQUEST {
        assert_eq!(body["error"]["code"], "invalid_spec", "{body}");
    }
    (status, message)
}

#[tokio::test]
async fn haproxy_and_nginx_take_the_rules_they_can_serve_and_refuse_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let app = |name: &str, router: String| {
        format!(
            "  - name: {name}\n    \
             stable: {{version: v1, endpoints: [\"127.0.0.1:9\"]}}\n    \
             canary: {{endpoints: [\"127.0.0.1:10\"]}}\n    \
             router: {router}\n    \
             metrics: {{type: prometheus, url: \"http://127.0.0.1:9\"}}\n"
        )
    };
    let yaml = format!(
        "listen: 127.0.0.1:0\nstore: sqlite://{d}/fledge.db\napps:\n{}{}{}",
        // HAProxy with the map and the keys haproxy.cfg reads (its socket is not
        // there: the check needs no data plane).
        app(
            "hx",
            format!(
                "{{type: haproxy, socket: {d}/no.sock, backend: hx, map: /etc/haproxy/hx.map, \
                 matchOn: [{{header: x-canary}}, {{cookie: beta}}], stickyOn: [{{cookie: fledge}}]}}"
            )
        ),
        // nginx without `variable`: weights only.
        app(
            "nx-plain",
            format!(
                "{{type: nginx, upstreamFile: {d}/plain.conf, upstream: plain, reload: [\"true\"]}}"
            )
        ),
        app(
            "nx",
            format!(
                "{{type: nginx, upstreamFile: {d}/nx.conf, upstream: nx, reload: [\"true\"], variable: fledge_nx}}"
            )
        ),
    );
    let (server, router) = serve(&yaml).await;

    let header = |name: &str| format!("match:\n  - header: {name}\n    value: \"yes\"\n");
    for (app, rules, field, words) in [
        ("hx", header("x-beta"), "`match`", vec!["haproxy", "header `x-beta`", "matchOn"]),
        (
            "hx",
            "match:\n  - cookie: beta\n    value: \"1\"\n    target: stable\n  - header: x-canary\n    value: \"1\"\n".to_owned(),
            "`match`",
            vec!["haproxy", "first"],
        ),
        ("hx", "stickiness:\n  header: x-user\n".to_owned(), "`stickiness`", vec!["haproxy", "stickyOn"]),
        ("hx", "closeUpgradedOnAbort: true\n".to_owned(), "`closeUpgradedOnAbort`", vec!["haproxy"]),
        ("nx-plain", header("x-canary"), "`match`", vec!["nginx", "`variable`"]),
        ("nx-plain", "stickiness:\n  cookie: fledge\n".to_owned(), "`stickiness`", vec!["nginx"]),
        ("nx", header("x_canary"), "`match`", vec!["nginx", "$http_"]),
        ("nx", "stickiness:\n  cookie: user-id\n".to_owned(), "`stickiness`", vec!["nginx", "$cookie_"]),
        ("nx", "closeUpgradedOnAbort: true\n".to_owned(), "`closeUpgradedOnAbort`", vec!["nginx"]),
    ] {
        let (status, message) = create_for(&router, app, &rules).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{app} {rules}: {message}");
        assert!(message.contains(field), "{app} {rules}: {message}");
        for w in words {
            assert!(message.contains(w), "{app} {rules}: {w:?} not in {message}");
        }
    }

    // No nginx copies requests, with or without `variable`.
    for app in ["nx-plain", "nx"] {
        refuses_copies(&router, app, "nginx").await;
    }

    // What each can express is taken.
    let hx = "match:\n  - header: X-Canary\n    value: always\n  - cookie: beta\n    value: old\n    \
              target: stable\nstickiness:\n  cookie: fledge\n  ttl: 1h\n";
    let (status, message) = create_for(&router, "hx", hx).await;
    assert_eq!(status, StatusCode::CREATED, "{message}");
    let nx = "match:\n  - header: X-Canary\n    value: always\n  - cookie: beta_1\n    value: old\n    \
              target: stable\nstickiness:\n  header: x-user-id\n";
    let (status, message) = create_for(&router, "nx", nx).await;
    assert_eq!(status, StatusCode::CREATED, "{message}");
    // ...and served: the rules reach nginx's file, not only the check.
    let file = dir.path().join("nx.conf");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains("map $http_x_canary $fledge_nx {")
            && text.contains("split_clients \"$http_x_user_id\"")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rules never written:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}
