//! What the benchmark drivers (`blast_radius`, `soak`, `mirror_latency`) share:
//! loopback upstreams, open-loop load through a proxy, and the real `fledge serve`
//! as a child process with app `shop` on its built-in proxy.

// Each driver uses a part of this module; what one of them leaves unused is not dead.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fledge_api::client::ApiClient;

/// Requests in flight at most; beyond it the load generator counts a failure.
pub const MAX_IN_FLIGHT: usize = 512;

/// The parsed command line, or the error on stderr and exit status 2.
pub fn args_or_exit<T>(program: &str, args: Result<T, String>) -> T {
    args.unwrap_or_else(|e| {
        eprintln!("{program}: {e}");
        std::process::exit(2);
    })
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `q` quantile of `values` (nearest rank); NaN when there are none.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
}

// === impl Upstream ===

/// An upstream answering with its name, failing (500) a share of its requests,
/// after a delay when it is made slow.
pub struct Upstream {
    pub addr: SocketAddr,
    /// The error share in millionths (changed between runs).
    pub error_ppm: Arc<AtomicU64>,
    /// Milliseconds it waits before answering (changed between runs).
    pub delay_ms: Arc<AtomicU64>,
    /// When it was first asked, in ms since the epoch (0: not yet).
    pub first_request_ms: Arc<AtomicU64>,
}

impl Upstream {
    /// Fails `share` (0 to 1) of the requests from now on.
    pub fn fail(&self, share: f64) {
        self.error_ppm
            .store((share * 1e6).round() as u64, Ordering::Relaxed);
    }

    /// Waits `delay` before each answer from now on (zero: answers at once).
    pub fn slow(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

pub async fn upstream(name: &'static str) -> Upstream {
    let error_ppm = Arc::new(AtomicU64::new(0));
    let delay_ms = Arc::new(AtomicU64::new(0));
    let first = Arc::new(AtomicU64::new(0));
    let (ppm, delay, seen) = (error_ppm.clone(), delay_ms.clone(), first.clone());
    let app = axum::Router::new().fallback(move || {
        let (ppm, delay, seen) = (ppm.clone(), delay.clone(), seen.clone());
        async move {
            let _ = seen.compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
            let wait = delay.load(Ordering::Relaxed);
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            let fail = rand::random::<f64>() * 1e6 < ppm.load(Ordering::Relaxed) as f64;
            let status = if fail {
                axum::http::StatusCode::INTERNAL_SERVER_ERROR
            } else {
                axum::http::StatusCode::OK
            };
            Ok::<_, Infallible>((status, name))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Upstream {
        addr,
        error_ppm,
        delay_ms,
        first_request_ms: first,
    }
}

// === impl Load ===

/// Open-loop load: one request every `1/rps` s, whatever the answers take.
pub struct Load {
    /// Each answered request's latency in ms, from its due time to its response
    /// headers, when recorded ([`Load::recording`]).
    latencies: Option<Arc<Mutex<Vec<f64>>>>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// Failed requests that an upstream answered 500 (the proxy's own answers are
    /// 502, 503 and 504): the harm a bad canary did, as opposed to the proxy's.
    upstream_errors: Arc<AtomicU64>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub fn start(proxy: SocketAddr, rps: u32) -> Load {
        Self::run(proxy, rps, None)
    }

    /// Like [`Load::start`], also recording each answered request's latency for
    /// [`Load::stop`] to return.
    pub fn recording(proxy: SocketAddr, rps: u32) -> Load {
        Self::run(proxy, rps, Some(Arc::default()))
    }

    fn run(proxy: SocketAddr, rps: u32, latencies: Option<Arc<Mutex<Vec<f64>>>>) -> Load {
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let upstream_errors = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let url = format!("http://{proxy}/");
        let counters = (sent.clone(), failed.clone(), upstream_errors.clone());
        let record = latencies.clone();
        let task = tokio::spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
            let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rps)));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stopped.changed() => break,
                }
                counters.0.fetch_add(1, Ordering::Relaxed);
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    counters.1.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let (client, url, counters) = (client.clone(), url.clone(), counters.clone());
                let record = record.clone();
                let due = Instant::now();
                tokio::spawn(async move {
                    let status = client.get(&url).send().await.map(|r| r.status()).ok();
                    if let (Some(record), Some(_)) = (&record, status) {
                        let ms = due.elapsed().as_secs_f64() * 1000.0;
                        record.lock().unwrap().push(ms);
                    }
                    if !status.is_some_and(|s| s.is_success()) {
                        counters.1.fetch_add(1, Ordering::Relaxed);
                    }
                    if status == Some(reqwest::StatusCode::INTERNAL_SERVER_ERROR) {
                        counters.2.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(slot);
                });
            }
            // Let the requests in flight end.
            let _ = slots.acquire_many(MAX_IN_FLIGHT as u32).await;
        });
        Load {
            latencies,
            sent,
            failed,
            upstream_errors,
            stop,
            task,
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Requests that failed so far (not 2xx, or no answer).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Failed requests so far that an upstream answered 500.
    pub fn upstream_errors(&self) -> u64 {
        self.upstream_errors.load(Ordering::Relaxed)
    }

    /// Stops sending, waits for the requests in flight, and returns the latencies
    /// recorded (none unless started with [`Load::recording`]).
    pub async fn stop(self) -> Vec<f64> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.latencies
            .map(|l| std::mem::take(&mut *l.lock().unwrap()))
            .unwrap_or_default()
    }
}

// === impl Server ===

/// `fledge serve`, killed when dropped.
pub struct Server(Child);

impl Server {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Stops the server with SIGTERM (a graceful stop) and waits up to `grace` for
    /// it to exit, then kills it. Whether it exited by itself in time.
    pub async fn terminate(mut self, grace: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Kills the server (SIGKILL: no chance to clean up) and reaps it.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where `fledge serve` listens and keeps its state, and the upstreams of app `shop`.
pub struct Setup {
    pub api: SocketAddr,
    pub proxy: SocketAddr,
    /// The store URL (`sqlite://…` or `postgres://…`).
    pub store: String,
    pub stable: SocketAddr,
    pub canary: SocketAddr,
}

impl Setup {
    /// Runs `fledge serve` with this setup (config and log in `dir`; the log is
    /// appended to, so that restarts keep the earlier lives' lines) and waits until
    /// its API answers.
    pub async fn serve(&self, fledge: &Path, dir: &Path) -> (Server, ApiClient) {
        let config = dir.join("fledge.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: {api}\nstore: {store}\napps:\n  - name: shop\n    listen: {proxy}\n    \
                 stable:\n      version: v1\n      endpoints: [\"{stable}\"]\n    canary:\n      \
                 endpoints: [\"{canary}\"]\n",
                api = self.api,
                store = self.store,
                proxy = self.proxy,
                stable = self.stable,
                canary = self.canary,
            ),
        )
        .unwrap();
        let log_path = dir.join("fledge.log");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new(fledge)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", fledge.display()));
        let server = Server(child);
        let client = ApiClient::new(&self.api.to_string(), None, None).unwrap();
        let started = Instant::now();
        while client.status().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "fledge serve did not start; see {}",
                log_path.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (server, client)
    }
}

/// A new setup on free loopback ports with an SQLite store in `dir`.
pub fn sqlite_setup(dir: &Path, stable: SocketAddr, canary: SocketAddr) -> Setup {
    Setup {
        api: free_port(),
        proxy: free_port(),
        store: format!("sqlite://{}", sqlite_path(dir).display()),
        stable,
        canary,
    }
}

/// The SQLite database file of [`sqlite_setup`].
pub fn sqlite_path(dir: &Path) -> PathBuf {
    dir.join("fledge.db")
}

/// App `shop` on a running `fledge serve`, between two fresh loopback upstreams.
pub struct Shop {
    pub stable: Upstream,
    pub canary: Upstream,
    pub setup: Setup,
    /// Stops the server when dropped.
    pub server: Server,
    pub api: ApiClient,
    /// The server's files; removed when dropped, after the server has stopped.
    _dir: tempfile::TempDir,
}

/// Runs `fledge` (the binary) as `serve` for app `shop` between upstreams named
/// `stable` and `canary`, with an SQLite store and its files in a temporary
/// directory of its own.
pub async fn serve_shop(fledge: &Path) -> Shop {
    let dir = tempfile::tempdir().unwrap();
    let stable = upstream("stable").await;
    let canary = upstream("canary").await;
    let setup = sqlite_setup(dir.path(), stable.addr, canary.addr);
    let (server, api) = setup.serve(fledge, dir.path()).await;
    Shop {
        stable,
        canary,
        setup,
        server,
        api,
        _dir: dir,
    }
}
