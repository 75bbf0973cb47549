//! Backends that answer every request with the version they run, so a test can count
//! how a router split the traffic.

use std::collections::BTreeMap;

use axum::Router;
use axum::routing::any;

use super::TestServer;

/// Starts a backend on a free loopback port answering `200 <version>` to everything.
pub async fn version_server(version: &str) -> std::io::Result<TestServer> {
    let body = version.to_owned();
    TestServer::start(Router::new().fallback(any(move || {
        let body = body.clone();
        async move { body }
    })))
    .await
}

/// Sends `n` GET requests to `url`, each on a fresh connection (so a proxy balances
/// every one), and counts the answers by body. Gives up on the first transport error.
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
            format!("HTTP {status}")
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    Ok(counts)
}
