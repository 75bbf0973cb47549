//! A bounded open-loop load generator for the demo: a fixed request rate over
//! keep-alive connections to one loopback address, for at most a given time.
//!
//! Open loop (requests start on a schedule, not when the previous one ends) is what
//! users do to a service: a slow canary does not slow the arrivals down. A cap on
//! requests in flight keeps a stuck upstream from piling up tasks; requests that
//! would exceed it are counted as skipped, not sent late.
//!
//! Each answer is attributed to the version named in its `x-fledge-demo-version`
//! header; an answer without it came from the proxy itself (a 502 when it could not
//! reach an upstream), and a request with no answer at all is a transport failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fledge_stats::LatencyHistogram;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::backend::VERSION_HEADER;

/// How much load to send, where, and for how long at most.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The address requests go to (the app's proxy).
    pub target: SocketAddr,
    /// Requests per second.
    pub rps: u32,
    /// The generator stops by itself after this long.
    pub max_duration: Duration,
    /// Requests in flight at most.
    pub max_in_flight: usize,
}

/// What users saw from one version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VersionSeen {
    /// Answers from this version.
    pub requests: u64,
    /// Of those, 5xx answers.
    pub errors: u64,
    /// When the first answer from it arrived.
    pub first_at: Option<SystemTime>,
    /// When the last failed answer from it arrived.
    pub last_error_at: Option<SystemTime>,
    /// How long users waited for its answers (request sent to body read).
    pub latency: LatencyHistogram,
}

/// A snapshot of everything the generator counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadSnapshot {
    /// Requests sent.
    pub sent: u64,
    /// Per version, by the response header.
    pub by_version: BTreeMap<String, VersionSeen>,
    /// Answers without a version header (made by the proxy), and of those the 5xx.
    pub proxy_answers: u64,
    /// 5xx answers made by the proxy.
    pub proxy_errors: u64,
    /// Requests that got no answer (connection refused or reset, timeout).
    pub transport_errors: u64,
    /// Requests not sent because too many were in flight.
    pub skipped: u64,
}

// === impl LoadSnapshot ===

impl LoadSnapshot {
    /// What users saw from `version` (zero if it served nothing).
    pub fn version(&self, version: &str) -> VersionSeen {
        self.by_version.get(version).cloned().unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    skipped: AtomicU64,
    transport_errors: AtomicU64,
    proxy_answers: AtomicU64,
    proxy_errors: AtomicU64,
    by_version: Mutex<BTreeMap<String, VersionSeen>>,
}

/// A running load generator.
#[derive(Debug)]
pub struct LoadGenerator {
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

// === impl LoadGenerator ===

impl LoadGenerator {
    /// Starts sending load; it stops by itself after `max_duration`.
    pub fn start(config: LoadConfig) -> anyhow::Result<Self> {
        fledge_api::client::install_crypto_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(config.max_in_flight)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(5))
            .build()?;
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(drive(config, client, counters.clone(), stopped));
        Ok(Self {
            counters,
            stop,
            task,
        })
    }

    /// What has been counted so far.
    pub fn snapshot(&self) -> LoadSnapshot {
        Self::counts(&self.counters)
    }

    fn counts(c: &Counters) -> LoadSnapshot {
        LoadSnapshot {
            sent: c.sent.load(Ordering::Relaxed),
            by_version: c
                .by_version
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            proxy_answers: c.proxy_answers.load(Ordering::Relaxed),
            proxy_errors: c.proxy_errors.load(Ordering::Relaxed),
            transport_errors: c.transport_errors.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
        }
    }

    /// Whether it has stopped (by itself, after its time, or when told to).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops sending, waits for the requests in flight, and returns the final counts.
    pub async fn stop(self) -> LoadSnapshot {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(6), self.task).await;
        Self::counts(&self.counters)
    }
}

/// The schedule: every 10 ms, send the requests due since the last tick (keeping the
/// fraction), until stopped or out of time; then wait for the requests in flight.
async fn drive(
    config: LoadConfig,
    client: reqwest::Client,
    counters: Arc<Counters>,
    mut stopped: watch::Receiver<bool>,
) {
    let url = format!("http://{}/checkout", config.target);
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let start = tokio::time::Instant::now();
    let deadline = start + config.max_duration;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut due = 0.0f64;
    let mut last = start;
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => {}
        }
        let now = tokio::time::Instant::now();
        if *stopped.borrow() || now >= deadline {
            break;
        }
        due += f64::from(config.rps) * (now - last).as_secs_f64();
        last = now;
        while due >= 1.0 {
            due -= 1.0;
            seq += 1;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                counters.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            counters.sent.fetch_add(1, Ordering::Relaxed);
            let request = client.get(format!("{url}?order={seq}"));
            let counters = counters.clone();
            tokio::spawn(async move {
                let outcome = send(request).await;
                record(&counters, outcome);
                drop(permit);
            });
        }
    }
    // Let the requests in flight finish so their answers are counted.
    let _ = tokio::time::timeout(
        Duration::from_secs(6),
        in_flight.acquire_many(config.max_in_flight.max(1) as u32),
    )
    .await;
}

/// How one request ended.
#[derive(Debug)]
enum Outcome {
    /// An answer, with the version that served it (none: the proxy answered).
    Answer {
        version: Option<String>,
        status: u16,
        elapsed: Duration,
    },
    /// No answer.
    Transport,
}

async fn send(request: reqwest::RequestBuilder) -> Outcome {
    let started = tokio::time::Instant::now();
    match request.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let version = resp
                .headers()
                .get(VERSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // Read the body so the connection goes back to the pool.
            match resp.bytes().await {
                Ok(_) => Outcome::Answer {
                    version,
                    status,
                    elapsed: started.elapsed(),
                },
                Err(_) => Outcome::Transport,
            }
        }
        Err(_) => Outcome::Transport,
    }
}

fn record(counters: &Counters, outcome: Outcome) {
    match outcome {
        Outcome::Transport => {
            counters.transport_errors.fetch_add(1, Ordering::Relaxed);
        }
        Outcome::Answer {
            version: None,
            status,
            ..
        } => {
            counters.proxy_answers.fetch_add(1, Ordering::Relaxed);
            if status >= 500 {
                counters.proxy_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        Outcome::Answer {
            version: Some(version),
            status,
            elapsed,
        } => {
            let now = SystemTime::now();
            let mut map = counters
                .by_version
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let seen = map.entry(version).or_default();
            seen.requests += 1;
            seen.first_at.get_or_insert(now);
            seen.latency.record(elapsed.as_secs_f64());
            if status >= 500 {
                seen.errors += 1;
                seen.last_error_at = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::backend::{Backend, BackendProfile};
    use super::*;

    /// Runs a generator until it ends by itself (polled, with a deadline); returns
    /// what it saw.
    async fn run_to_end(config: LoadConfig) -> LoadSnapshot {
        let load = LoadGenerator::start(config).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !load.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(load.is_finished(), "the generator must stop by itself");
        load.stop().await
    }

    #[tokio::test]
    async fn counts_answers_per_version_and_stops_by_itself() {
        let backend = Backend::start(
            BackendProfile {
                version: "v1".into(),
                error_rate: 0.5,
                median_latency: Duration::from_millis(1),
                latency_sigma: 0.0,
            },
            3,
        )
        .await
        .unwrap();
        let snap = run_to_end(LoadConfig {
            target: backend.addr(),
            rps: 200,
            max_duration: Duration::from_millis(500),
            max_in_flight: 32,
        })
        .await;
        let v1 = snap.version("v1");
        assert!(snap.sent > 20, "{snap:?}");
        assert_eq!(v1.requests + snap.transport_errors, snap.sent);
        assert_eq!(v1.requests, backend.counters().requests());
        assert_eq!(v1.errors, backend.counters().errors());
        assert!(v1.errors > 0 && v1.errors < v1.requests, "{v1:?}");
        assert_eq!(v1.latency.total(), v1.requests);
        assert!(v1.latency.quantile(0.5).unwrap() >= 0.001, "{v1:?}");
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn a_closed_port_is_a_transport_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let snap = run_to_end(LoadConfig {
            target: addr,
            rps: 100,
            max_duration: Duration::from_millis(200),
            max_in_flight: 8,
        })
        .await;
        assert!(snap.transport_errors > 0, "{snap:?}");
        assert!(snap.by_version.is_empty(), "{snap:?}");
    }
}
