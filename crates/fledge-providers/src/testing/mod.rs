//! Test support, behind the `testing` feature: in-process HTTP servers (fake APIs,
//! backends that say which version they are, a Prometheus exporter whose counters the
//! test controls) and start/stop helpers for the real programs fledge drives
//! (Prometheus, HAProxy, nginx), each on 127.0.0.1 with a temporary directory and free
//! ports, killed when dropped.
//!
//! The server's end-to-end tests use these too, so they are a public API of the crate
//! (under the feature), documented like any other.

pub mod backend;
pub mod exporter;
pub mod pki;
pub mod process;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// An axum app served on a loopback port until dropped.
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Serves `app` on 127.0.0.1 on a free port.
    pub async fn start(app: axum::Router) -> std::io::Result<TestServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "test server stopped");
            }
        });
        Ok(TestServer { addr, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server on loopback that accepts every request and never answers it, to test
/// timeouts.
pub async fn never_answering() -> std::io::Result<TestServer> {
    TestServer::start(axum::Router::new().fallback(std::future::pending::<()>)).await
}

/// A server on loopback that answers every request to `path` with `status` and the
/// JSON `body`: an API's error answers, for the sources' error handling.
pub async fn answering(
    path: &str,
    status: axum::http::StatusCode,
    body: serde_json::Value,
) -> std::io::Result<TestServer> {
    let app = axum::Router::new().route(
        path,
        axum::routing::any(move || async move { (status, axum::Json(body)) }),
    );
    TestServer::start(app).await
}

/// The text of request header `name` as a fake server sees it; empty when the header
/// is missing or not text.
pub fn header_text<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// A fake API's answers by query, from the `(query, answer)` pairs a test lists.
pub fn answers_by_query(
    answers: Vec<(&str, serde_json::Value)>,
) -> std::collections::HashMap<String, serde_json::Value> {
    answers
        .into_iter()
        .map(|(q, v)| (q.to_owned(), v))
        .collect()
}

/// What `source` observes when asked [`shop_query`] for canary `v2` without custom
/// metrics; panics when it fails.
pub async fn shop_observation(
    source: &dyn crate::metrics::MetricSource,
) -> fledge_stats::Observation {
    match source.observe(&shop_query("v2", Vec::new())).await {
        Ok(o) => o,
        Err(e) => panic!("expected an observation, failed with {e}"),
    }
}

/// The error `source` fails with when asked [`shop_query`] for canary `v2` without
/// custom metrics; panics when it succeeds.
pub async fn shop_error(source: &dyn crate::metrics::MetricSource) -> crate::metrics::MetricError {
    match source.observe(&shop_query("v2", Vec::new())).await {
        Ok(o) => panic!("expected an error, observed {o:?}"),
        Err(e) => e,
    }
}

/// Asserts the `(requests, errors)` that `obs` holds for each arm.
pub fn assert_counts(obs: &fledge_stats::Observation, stable: (u64, u64), canary: (u64, u64)) {
    assert_eq!((obs.stable.requests, obs.stable.errors), stable, "stable");
    assert_eq!((obs.canary.requests, obs.canary.errors), canary, "canary");
}

/// Asserts that `obs` holds custom metric `name` with exactly these values.
pub fn assert_custom(
    obs: &fledge_stats::Observation,
    name: &str,
    canary: f64,
    stable: Option<f64>,
) {
    let expected = fledge_stats::CustomValue { canary, stable };
    assert_eq!(
        obs.custom.get(name),
        Some(&expected),
        "custom metric `{name}`"
    );
}

/// Asserts how a counting source reads series that are not there, asked
/// [`shop_query`] for canary `v2`. `no_errors` answers both versions' requests and
/// no error series: the canary has `canary_requests` requests and zero errors.
/// `no_canary` answers no requests for the canary: the observation fails with
/// `NoData` naming `canary_requests_query`.
pub async fn assert_missing_series(
    no_errors: &dyn crate::metrics::MetricSource,
    canary_requests: u64,
    no_canary: &dyn crate::metrics::MetricSource,
    canary_requests_query: &str,
) {
    let obs = shop_observation(no_errors).await;
    assert_eq!(
        (obs.canary.requests, obs.canary.errors),
        (canary_requests, 0)
    );
    let err = shop_error(no_canary).await;
    assert!(
        matches!(
            err,
            crate::metrics::MetricError::NoData { ref query, .. } if query == canary_requests_query
        ),
        "{err}"
    );
}

/// A port that was free a moment ago on 127.0.0.1 (for programs that must be told a
/// port rather than handed a socket).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes. For waiting
/// on real external processes only.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The interval `[lo, hi]` that holds the number of successes in `n` draws with
/// success probability `p` except with probability about 1e-6 (normal approximation
/// with z = 5, widened by one for the discreteness).
pub fn binomial_bounds(n: u64, p: f64) -> (u64, u64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let lo = (mean - 5.0 * sd - 1.0).floor().max(0.0) as u64;
    let hi = (mean + 5.0 * sd + 1.0).ceil().min(n as f64) as u64;
    (lo, hi)
}

/// Asserts that `counts` (requests per answering version, from
/// [`backend::split`]) gives the canary `v2` its `weight` percent of `n` requests,
/// within [`binomial_bounds`].
pub fn assert_canary_share(counts: &std::collections::BTreeMap<String, u64>, n: usize, weight: u8) {
    let got = counts.get("v2").copied().unwrap_or(0);
    let (lo, hi) = binomial_bounds(n as u64, f64::from(weight) / 100.0);
    assert!(
        (lo..=hi).contains(&got),
        "{weight}%: canary got {got} of {n}, expected {lo}..={hi}; {counts:?}"
    );
}

/// Polls `source` every 100 ms until its observation satisfies `done`, for up to 20 s
/// (a real Prometheus shows new counters after its next scrape).
pub async fn observe_until(
    source: &dyn crate::metrics::MetricSource,
    q: &crate::metrics::ObserveQuery,
    done: impl Fn(&fledge_stats::Observation) -> bool,
) -> fledge_stats::Observation {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match source.observe(q).await {
            Ok(o) if done(&o) => return o,
            other if Instant::now() >= deadline => {
                panic!("the metric source never showed the expected counters; last: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What a rollout of app `shop` from `v1` to `canary` asks a metric source after a
/// minute, with the `custom` metrics.
pub fn shop_query(
    canary: &str,
    custom: Vec<crate::metrics::CustomQuery>,
) -> crate::metrics::ObserveQuery {
    crate::metrics::ObserveQuery {
        app: "shop".into(),
        stable_version: "v1".into(),
        canary_version: canary.into(),
        window: Duration::from_secs(60),
        custom,
    }
}
