//! Any body through `POST /rollouts` of an in-process server (the axum router, called
//! with `oneshot`): never a panic, never a 5xx, always the JSON error shape.
//! The first byte picks the content type, the rest is the body.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    // Kept (not leaked) for the whole fuzzing process, so that LeakSanitizer sees
    // the server's state as reachable.
    _server: fledge_server::RunningServer,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "listen: 127.0.0.1:0\nstore: sqlite://{}\napps:\n  - name: shop\n    listen: 127.0.0.1:0\n    stable:\n      version: v1\n      endpoints: [\"127.0.0.1:9\"]\n    canary:\n      endpoints: [\"127.0.0.1:9\"]\n",
            dir.path().join("fledge.db").display()
        );
        let config = fledge_server::config::ServerConfig::parse(&text, "fuzz.yaml").unwrap();
        let server = runtime
            .block_on(fledge_server::start(config, fledge_server::StartOptions::default()))
            .unwrap();
        let router = fledge_server::api::router(server.shared().clone());
        Harness { runtime, router, _server: server, _dir: dir }
    })
}

const TYPES: [&str; 5] = [
    "application/yaml",
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let h = harness();
    let mut request = axum::http::Request::builder().method("POST").uri("/rollouts");
    let ct = TYPES[usize::from(pick) % TYPES.len()];
    if !ct.is_empty() {
        request = request.header("content-type", ct);
    }
    let request = request.body(Body::from(body.to_vec())).unwrap();
    let (status, bytes) = h.runtime.block_on(async {
        let resp = h.router.clone().oneshot(request).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    });
    assert!(!status.is_server_error(), "{status} for {body:?}: {}", String::from_utf8_lossy(&bytes));
    if !status.is_success() {
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{status}: not JSON: {}", String::from_utf8_lossy(&bytes)));
        assert!(json["error"]["message"].is_string(), "{status}: {json}");
        assert!(json["error"]["code"].is_string(), "{status}: {json}");
    }
});
