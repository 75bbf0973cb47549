//! Backends that answer every request with the version they run, so a test can count
//! how a router split the traffic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::any;

use super::TestServer;
use super::exporter::{Exporter, Recorder};
use super::process::{Haproxy, Prometheus};

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
    /// Every `k`-th request fails with a 500 whatever `status` says.
    fail_every: Option<u64>,
    seen: AtomicU64,
}

impl Behaviour {
    /// Answering `status` (200 for a healthy version, 500 for a broken one).
    pub fn new(status: u16) -> Arc<Behaviour> {
        Behaviour::with(status, None)
    }

    /// Answering 200, or 500 to every `k`-th request when `fail_every` is `Some(k)`:
    /// a version failing a steady share of its requests.
    pub fn failing_every(fail_every: Option<u64>) -> Arc<Behaviour> {
        Behaviour::with(200, fail_every)
    }

    fn with(status: u16, fail_every: Option<u64>) -> Arc<Behaviour> {
        Arc::new(Behaviour {
            status: AtomicU16::new(status),
            fail_every,
            seen: AtomicU64::new(0),
        })
    }

    /// From now on, answer `status`.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// The status of the next answer.
    fn answer(&self) -> StatusCode {
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        match self.fail_every {
            Some(k) if n.is_multiple_of(k) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::from_u16(self.status.load(Ordering::SeqCst))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        }
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
            let status = behaviour.answer();
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

/// App `shop`'s two versions, each instrumented into one exporter that a real
/// Prometheus scrapes, behind a real HAProxy (backend `be_shop` with servers `stable`
/// and `canary`, the canary at weight 0). The fields stop in the order they are
/// declared: HAProxy and Prometheus before the backends and exporter they use.
#[derive(Debug)]
pub struct MeteredHaproxy {
    /// HAProxy in front of both versions.
    pub haproxy: Haproxy,
    /// Prometheus, scraping the exporter.
    pub prometheus: Prometheus,
    /// The stable version, `v1`.
    pub stable: TestServer,
    /// The canary version, `v2`.
    pub canary: TestServer,
    /// The exporter both versions count into.
    pub exporter: Exporter,
}

impl MeteredHaproxy {
    /// Starts the versions answering as `stable` and `canary` say, HAProxy, and a
    /// Prometheus scraping every `scrape_interval`.
    pub async fn start(
        stable: Arc<Behaviour>,
        canary: Arc<Behaviour>,
        scrape_interval: Duration,
    ) -> Result<MeteredHaproxy, String> {
        let exporter = Exporter::start("shop").await.map_err(|e| e.to_string())?;
        let stable = instrumented_server("v1", stable, exporter.recorder())
            .await
            .map_err(|e| e.to_string())?;
        let canary = instrumented_server("v2", canary, exporter.recorder())
            .await
            .map_err(|e| e.to_string())?;
        let haproxy = Haproxy::start("be_shop", stable.addr, canary.addr, 0).await?;
        let prometheus = Prometheus::start(&[exporter.server.addr], scrape_interval).await?;
        Ok(MeteredHaproxy {
            haproxy,
            prometheus,
            stable,
            canary,
            exporter,
        })
    }
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
