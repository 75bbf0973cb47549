//! Helpers for the server's integration tests: fake upstream services, a plain HTTP
//! client, a bounded load loop, and polling with a deadline.
#![allow(dead_code)]

pub mod haproxy;
pub mod load;
pub mod postgres;
pub mod process;
pub mod rollout;
pub mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::task::JoinHandle;

/// A fake upstream: answers `200 <name>`, or `500` for every `fail_every`-th request.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests it received.
    pub hits: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Backend {
    /// `host:port`, as a config endpoint.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a fake upstream on a free loopback port.
pub async fn backend(name: &'static str, fail_every: Option<u64>) -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            match fail_every {
                Some(k) if n.is_multiple_of(k) => (StatusCode::INTERNAL_SERVER_ERROR, "boom"),
                _ => (StatusCode::OK, name),
            }
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Backend { addr, hits, task }
}

/// A small HTTP/1 client.
#[derive(Debug, Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
}

/// A response: status and body (JSON when it parses, else a string).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The body.
    pub body: Value,
    /// The raw body text.
    pub text: String,
    /// The response headers.
    pub headers: hyper::HeaderMap,
}

impl Http {
    /// A client of `http://addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
            token: None,
        }
    }

    /// The server's base URL, `http://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The same client sending a bearer token.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// Sends one request.
    pub async fn send(&self, method: Method, path: &str, body: Option<(&str, &str)>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some((ct, text)) => {
                req = req.header("content-type", ct);
                Full::new(Bytes::from(text.to_owned()))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = tokio::time::timeout(
            Duration::from_secs(20),
            self.client.request(req.body(body).unwrap()),
        )
        .await
        .expect("request timed out")
        .expect("request failed");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        Reply {
            status,
            body,
            text,
            headers,
        }
    }

    /// GET, answering `None` when the server cannot be reached.
    pub async fn try_get(&self, path: &str) -> Option<StatusCode> {
        let req = Request::builder()
            .uri(format!("{}{path}", self.base))
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.client.request(req).await.ok().map(|r| r.status())
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    /// POST with a JSON body (or none).
    pub async fn post(&self, path: &str, json: Option<&str>) -> Reply {
        self.send(Method::POST, path, json.map(|j| ("application/json", j)))
            .await
    }

    /// PUT a JSON body.
    pub async fn put(&self, path: &str, json: &str) -> Reply {
        self.send(Method::PUT, path, Some(("application/json", json)))
            .await
    }

    /// POST a YAML spec.
    pub async fn post_yaml(&self, path: &str, yaml: &str) -> Reply {
        self.send(Method::POST, path, Some(("application/yaml", yaml)))
            .await
    }
}

/// Sends requests to `addr` in a loop until stopped (each bounded by a timeout), and
/// counts them, answered or not, and those that failed.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
    /// Requests sent.
    pub sent: Arc<AtomicU64>,
    /// Requests that got no 2xx answer (an error status, no answer, or none in time).
    pub failed: Arc<AtomicU64>,
}

impl Load {
    /// Starts `concurrency` loops against `http://addr/`.
    pub fn start(addr: SocketAddr, concurrency: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let stop = stop.clone();
            let sent = sent.clone();
            let failed = failed.clone();
            let http = Http::new(addr);
            tasks.push(tokio::spawn(async move {
                // Bounded: at most ten minutes even if nobody stops it.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
                while !stop.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
                    // A proxy that is down (a fault test) is not the load's failure.
                    let answer =
                        tokio::time::timeout(Duration::from_secs(5), http.try_get("/")).await;
                    sent.fetch_add(1, Ordering::SeqCst);
                    if !matches!(answer, Ok(Some(status)) if status.is_success()) {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }));
        }
        let task = tokio::spawn(async move {
            for t in tasks {
                let _ = t.await;
            }
        });
        Self {
            stop,
            task: Some(task),
            sent,
            failed,
        }
    }

    /// Stops the loops and waits for them.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Polls `f` every 100 ms until it returns `Ok`, or gives up after `limit` with the
/// last value seen.
pub async fn poll<T, F, Fut>(limit: Duration, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = match f().await {
            Ok(v) => return Ok(v),
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends a request and reads its JSON answer; a failure as text, for [`wait_for`].
pub async fn json_answer(request: reqwest::RequestBuilder) -> Result<Value, String> {
    request
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())
}

/// Polls `f` every 100 ms until it returns `Ok`, or panics after `limit` with
/// `what` and the last value seen.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    poll(limit, f).await.unwrap_or_else(|last| {
        panic!("timed out after {limit:?} waiting for {what}; last seen: {last}")
    })
}

/// `Ok` with `items` once there are some, for [`wait_for`].
pub fn non_empty<T>(items: Vec<T>) -> Result<Vec<T>, String> {
    if items.is_empty() {
        Err("none yet".to_owned())
    } else {
        Ok(items)
    }
}

/// The canary weight the server last applied to `app`'s router, in percent, from a
/// `/metrics` page (`fledge_canary_weight_ratio`, 0 to 1).
pub fn applied_weight_percent(metrics: &str, app: &str) -> Option<f64> {
    let series = format!("fledge_canary_weight_ratio{{app=\"{app}\"}} ");
    let ratio: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))?
        .parse()
        .ok()?;
    Some((ratio * 100.0).round())
}

/// A server config with one app on free ports, in a temporary SQLite store.
pub fn config(
    dir: &std::path::Path,
    app: &str,
    stable: &Backend,
    canary: &Backend,
) -> fledge_server::config::ServerConfig {
    let text = format!(
        r#"
listen: 127.0.0.1:0
store: sqlite://{db}
controller:
  tick: 200ms
apps:
  - name: {app}
    listen: 127.0.0.1:0
    stable:
      version: v1
      endpoints: ["{stable}"]
    canary:
      endpoints: ["{canary}"]
"#,
        db = dir.join("fledge.db").display(),
        stable = stable.endpoint(),
        canary = canary.endpoint(),
    );
    fledge_server::config::ServerConfig::parse(&text, "test.yaml").expect("test config parses")
}

/// A rollout spec for `app` with the given stages (YAML list items), judged every
/// 200 ms.
pub fn spec(app: &str, version: &str, stages: &str) -> String {
    format!(
        "app: {app}\nversion: {version}\nstrategy: canary\nanalysis:\n  interval: 200ms\n  minRequests: 20\nstages:\n{stages}"
    )
}

/// App `shop` (stable `v1`) between two fake upstreams, on an in-process server
/// with a SQLite store in a temporary directory.
pub struct Shop {
    /// The running server.
    pub server: fledge_server::RunningServer,
    /// A client of its API.
    pub api: Http,
    /// The stable upstream.
    pub stable: Backend,
    /// The canary upstream.
    pub canary: Backend,
    /// The directory holding the store.
    pub dir: tempfile::TempDir,
}

impl Shop {
    /// Starts the server; the canary fails every `canary_fail_every`-th request
    /// when set.
    pub async fn start(canary_fail_every: Option<u64>) -> Shop {
        Self::start_with(canary_fail_every, |_| {}, Default::default()).await
    }

    /// Starts the server from [`config`] changed by `edit`, with `options`.
    pub async fn start_with(
        canary_fail_every: Option<u64>,
        edit: impl FnOnce(&mut fledge_server::config::ServerConfig),
        options: fledge_server::StartOptions,
    ) -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let stable = backend("stable", None).await;
        let canary = backend("canary", canary_fail_every).await;
        let mut cfg = config(dir.path(), "shop", &stable, &canary);
        edit(&mut cfg);
        let server = fledge_server::start(cfg, options)
            .await
            .expect("the server starts");
        let api = Http::new(server.api_addr());
        Shop {
            server,
            api,
            stable,
            canary,
            dir,
        }
    }

    /// The API as a router, for `oneshot` requests without a socket.
    pub fn router(&self) -> axum::Router {
        fledge_server::api::router(self.server.shared().clone())
    }

    /// Sends `n` requests through the proxy and asserts that stable answered every
    /// one and none reached the canary: what a rolled-back rollout owes its users.
    pub async fn assert_only_stable_serves(&self, n: usize) {
        let hits = self.canary.hits();
        let client = Http::new(self.proxy().await);
        for _ in 0..n {
            assert_eq!(client.get("/").await.text, "stable");
        }
        assert_eq!(
            self.canary.hits(),
            hits,
            "no request reaches a rolled-back canary"
        );
    }

    /// Where app `shop`'s proxy listens.
    pub async fn proxy(&self) -> SocketAddr {
        self.server
            .proxy_addr("shop")
            .await
            .expect("shop has a proxy")
    }
}
