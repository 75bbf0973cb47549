//! Backends that answer every request with the version they run, so a test can count
//! how a router split the traffic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Instant;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::any;

use super::TestServer;
use super::exporter::Recorder;

/// Starts a backend on a free loopback port answering `200 <version>` to everything.
pub async fn version_server(version: &str) -> std::io::Result<TestServer> {
    let body = version.to_owned();
    TestServer::start(Router::new().fallback(any(move || {
        let body = body.clone();
        async move { body }
    })))
    .await
}

/// What an instrumented backend answers; change it while the test runs.
#[derive(Debug)]
pub struct Behaviour {
    status: AtomicU16,
}

impl Behaviour {
    /// Answering `status` (200 for a healthy version, 500 for a broken one).
    pub fn new(status: u16) -> Arc<Behaviour> {
        Arc::new(Behaviour {
            status: AtomicU16::new(status),
        })
    }

    /// From now on, answer `status`.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

/// Starts a backend answering `<status> <version>` that counts every request into
/// `recorder` (the app's exporter), the way an instrumented service would.
pub async fn instrumented_server(
    version: &str,
    behaviour: Arc<Behaviour>,
    recorder: Recorder,
) -> std::io::Result<TestServer> {
    let version = version.to_owned();
    TestServer::start(Router::new().fallback(any(move || {
        let version = version.clone();
        let behaviour = behaviour.clone();
        let recorder = recorder.clone();
        async move {
            let started = Instant::now();
            let code = behaviour.status.load(Ordering::SeqCst);
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            recorder.record(
                &version,
                status.as_u16(),
                started.elapsed().as_secs_f64(),
                1,
            );
            (status, version)
        }
    })))
    .await
}

/// Sends `n` GET requests to `url`, each on a fresh connection (so a proxy balances
/// every one), and counts the answers by body (`<status> <body>` for a non-2xx
/// answer). Gives up on the first transport error.
pub async fn split(url: &str, n: usize) -> Result<BTreeMap<String, u64>, String> {
    crate::tls::ensure_crypto_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        let key = if status.is_success() {
            body
        } else {
            format!("{} {body}", status.as_u16())
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    Ok(counts)
}
