//! A demo HTTP backend: one version of a service, with a chosen error rate and
//! latency, on a loopback port.
//!
//! Latency is log-normal around a median (real services have a long right tail, and
//! a p95 criterion only means something on a spread-out distribution); errors are
//! independent 500s with a fixed probability. Every answer carries the version in the
//! `x-fledge-demo-version` header, so the load generator can tell which version served
//! it even through the proxy. The randomness is seeded: the same scenario draws the
//! same sequence.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The response header that names the version that served a request.
pub const VERSION_HEADER: &str = "x-fledge-demo-version";

/// How one demo backend behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendProfile {
    /// The version label it reports.
    pub version: String,
    /// Probability that a request fails with a 500, in [0, 1].
    pub error_rate: f64,
    /// Median latency.
    pub median_latency: Duration,
    /// Spread of the log-normal latency (σ of its logarithm); 0 is a fixed latency.
    pub latency_sigma: f64,
}

// === impl BackendProfile ===

impl BackendProfile {
    /// The latency below which a share `q` of requests fall: `median · e^(σ·z_q)`.
    pub fn latency_quantile(&self, q: f64) -> Duration {
        self.median_latency
            .mul_f64((self.latency_sigma * normal_quantile(q)).exp())
    }

    /// Draws one request's outcome: its latency and whether it fails.
    fn draw(&self, rng: &mut SmallRng) -> (Duration, bool) {
        let z = standard_normal(rng);
        let latency = self.median_latency.mul_f64((self.latency_sigma * z).exp());
        let fails = self.error_rate > 0.0 && rng.random::<f64>() < self.error_rate;
        (latency, fails)
    }
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The standard normal quantile, by bisection on the error function's complement
/// (accurate to well below a percent of a latency, which is all a summary needs).
fn normal_quantile(q: f64) -> f64 {
    let q = q.clamp(1e-9, 1.0 - 1e-9);
    let (mut lo, mut hi) = (-10.0f64, 10.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if normal_cdf(mid) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

fn normal_cdf(x: f64) -> f64 {
    // Abramowitz–Stegun 7.1.26 on erf, |error| < 1.5e-7.
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() / std::f64::consts::SQRT_2);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// What a backend has served so far.
#[derive(Debug, Default)]
pub struct BackendCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    first_request: OnceLock<SystemTime>,
}

// === impl BackendCounters ===

impl BackendCounters {
    /// Requests received.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests answered with a 500.
    #[cfg(test)]
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// When the first request arrived.
    pub fn first_request(&self) -> Option<SystemTime> {
        self.first_request.get().copied()
    }
}

#[derive(Debug)]
struct BackendState {
    profile: BackendProfile,
    rng: Mutex<SmallRng>,
    counters: Arc<BackendCounters>,
    version_header: HeaderValue,
}

/// A running demo backend.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    counters: Arc<BackendCounters>,
    profile: BackendProfile,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

// === impl Backend ===

impl Backend {
    /// Starts a backend on a free loopback port; `seed` fixes its random draws.
    pub async fn start(profile: BackendProfile, seed: u64) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(BackendCounters::default());
        let version_header = HeaderValue::from_str(&profile.version).map_err(|_| {
            anyhow::anyhow!(
                "version {:?} cannot be an HTTP header value",
                profile.version
            )
        })?;
        let state = Arc::new(BackendState {
            profile: profile.clone(),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            counters: counters.clone(),
            version_header,
        });
        let app = Router::new().fallback(serve_request).with_state(state);
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "demo backend stopped with an error");
            }
        });
        Ok(Self {
            addr,
            counters,
            profile,
            stop,
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it has served.
    pub fn counters(&self) -> &Arc<BackendCounters> {
        &self.counters
    }

    /// How it behaves.
    pub fn profile(&self) -> &BackendProfile {
        &self.profile
    }

    /// Stops accepting and waits (briefly) for requests in flight.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

async fn serve_request(State(state): State<Arc<BackendState>>) -> Response {
    let (latency, fails) = {
        let mut rng = state.rng.lock().unwrap_or_else(|p| p.into_inner());
        state.profile.draw(&mut rng)
    };
    let _ = state.counters.first_request.set(SystemTime::now());
    state.counters.requests.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(latency).await;
    let (status, body) = if fails {
        state.counters.errors.fetch_add(1, Ordering::Relaxed);
        (StatusCode::INTERNAL_SERVER_ERROR, "demo error\n")
    } else {
        (StatusCode::OK, "ok\n")
    };
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(VERSION_HEADER, state.version_header.clone());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(error_rate: f64, sigma: f64) -> BackendProfile {
        BackendProfile {
            version: "v2".into(),
            error_rate,
            median_latency: Duration::from_millis(40),
            latency_sigma: sigma,
        }
    }

    #[test]
    fn draws_follow_the_profile() {
        let p = profile(0.05, 0.25);
        let mut rng = SmallRng::seed_from_u64(7);
        let n = 20_000;
        let mut errors = 0;
        let mut latencies = Vec::with_capacity(n);
        for _ in 0..n {
            let (l, e) = p.draw(&mut rng);
            errors += usize::from(e);
            latencies.push(l);
        }
        latencies.sort();
        let rate = errors as f64 / n as f64;
        assert!((0.04..0.06).contains(&rate), "error rate {rate}");
        let p95 = latencies[n * 95 / 100].as_secs_f64();
        let expected = p.latency_quantile(0.95).as_secs_f64();
        assert!(
            (p95 / expected - 1.0).abs() < 0.05,
            "p95 {p95} vs {expected}"
        );
    }

    #[test]
    fn quantiles_of_the_normal() {
        assert!((normal_quantile(0.95) - 1.6449).abs() < 1e-3);
        assert!(normal_quantile(0.5).abs() < 1e-6);
        assert_eq!(
            profile(0.0, 0.0).latency_quantile(0.99),
            Duration::from_millis(40)
        );
    }

    #[tokio::test]
    async fn serves_with_its_version_header() {
        let b = Backend::start(profile(1.0, 0.0), 1).await.unwrap();
        fledge_api::client::install_crypto_provider();
        let resp = reqwest::get(format!("http://{}/x", b.addr()))
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
        assert_eq!(resp.headers()[VERSION_HEADER], "v2");
        assert_eq!(b.counters().requests(), 1);
        assert_eq!(b.counters().errors(), 1);
        assert!(b.counters().first_request().is_some());
        b.shutdown().await;
    }
}
