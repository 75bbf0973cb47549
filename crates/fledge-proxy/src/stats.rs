//! Per-version request, error and latency counters, and their metric families.
//!
//! The hot path touches only atomics of one [`VersionStats`], which the routing table
//! resolves once when a route is installed: no map lookup and no lock per request.
//! Every metric name the proxy exports is defined in this module.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fledge_stats::exposition::{Kind, Page};
use fledge_stats::{ArmCounters, LATENCY_BOUNDS_SECONDS, LatencyHistogram, bucket_index};

use crate::route::Arm;

// Family names: counters without `_total`, which their samples carry.
const REQUESTS: &str = "fledge_proxy_requests";
const ERRORS: &str = "fledge_proxy_errors";
const CLIENT_ABORTS: &str = "fledge_proxy_client_aborts";
const DURATION: &str = "fledge_proxy_request_duration_seconds";
const UPGRADED: &str = "fledge_proxy_upgraded";
const UPGRADED_OPEN: &str = "fledge_proxy_upgraded_open";
const MIRRORED: &str = "fledge_proxy_mirrored";
const MIRROR_DROPPED: &str = "fledge_proxy_mirror_dropped";

/// Most (version, role) series one app keeps; beyond it the oldest series no longer
/// routed to is dropped, so a long-lived proxy's label set stays bounded.
const MAX_SERIES_PER_APP: usize = 16;

/// Why a request counted as failed. Each is a label value of
/// `fledge_proxy_errors_total{kind}`; every kind counts as an error for the judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The upstream answered with a 5xx status of its own.
    Upstream5xx,
    /// The proxy could not connect to the endpoint (refused, unreachable, connect
    /// timeout, a failed TLS handshake); the client got a 502 made by the proxy.
    Connect,
    /// The connection failed after the request was sent (reset, closed before or
    /// while sending the response); the client got a 502 or a cut-off body.
    Reset,
    /// No response headers within the response timeout; the client got a 504.
    Timeout,
}

impl ErrorKind {
    const ALL: [ErrorKind; 4] = [
        ErrorKind::Upstream5xx,
        ErrorKind::Connect,
        ErrorKind::Reset,
        ErrorKind::Timeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Upstream5xx => "upstream_5xx",
            ErrorKind::Connect => "connect",
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a copy of a request was not sent to the canary. Each is a label value of
/// `fledge_proxy_mirror_dropped_total{reason}`; none is the canary's fault, so
/// none is a request or an error for the judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Every slot for copies in flight was taken (the canary is slow or down).
    QueueFull,
    /// The request body was over `mirroring.maxBodyBytes`.
    BodyTooLarge,
    /// The request body was not read to its end (the client broke it off, or
    /// stable answered without reading it).
    BodyIncomplete,
}

impl DropReason {
    const ALL: [DropReason; 3] = [
        DropReason::QueueFull,
        DropReason::BodyTooLarge,
        DropReason::BodyIncomplete,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::BodyTooLarge => "body_too_large",
            DropReason::BodyIncomplete => "body_incomplete",
        }
    }
}

/// The live counters of one version in one role. Cheap to update from any thread.
#[derive(Debug)]
pub struct VersionStats {
    requests: AtomicU64,
    errors: [AtomicU64; 4],
    client_aborts: AtomicU64,
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
    /// Upgraded connections (WebSocket and other `Upgrade` protocols) opened so far.
    upgraded: AtomicU64,
    /// Upgraded connections open now.
    upgraded_open: AtomicU64,
    /// Copies of requests sent to this version (each also counted as a request
    /// once answered).
    mirrored: AtomicU64,
    /// Copies meant for this version that were not sent, by [`DropReason`].
    mirror_dropped: [AtomicU64; 3],
    /// Bumped to close every upgraded connection open to this version in this role.
    close_upgraded: tokio::sync::watch::Sender<u64>,
}

// === impl VersionStats ===

impl Default for VersionStats {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            errors: Default::default(),
            client_aborts: AtomicU64::new(0),
            buckets: (0..=LATENCY_BOUNDS_SECONDS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_nanos: AtomicU64::new(0),
            upgraded: AtomicU64::new(0),
            upgraded_open: AtomicU64::new(0),
            mirrored: AtomicU64::new(0),
            mirror_dropped: Default::default(),
            close_upgraded: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl VersionStats {
    /// Counts one request that got an answer (from the upstream or, on failure, from
    /// the proxy) after `elapsed`, failed with `error` if any.
    pub fn record(&self, elapsed: Duration, error: Option<ErrorKind>) {
        let secs = elapsed.as_secs_f64();
        self.buckets[bucket_index(secs)].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        // Requests before errors, paired with `snapshot` reading errors first
        // (acquire), so a reader never sees more errors than requests.
        self.requests.fetch_add(1, Ordering::Release);
        if let Some(kind) = error {
            self.errors[kind.index()].fetch_add(1, Ordering::Release);
        }
    }

    /// Counts a failure discovered after the request was counted (the upstream cut
    /// the response body off).
    pub fn record_late_error(&self, kind: ErrorKind) {
        self.errors[kind.index()].fetch_add(1, Ordering::Release);
    }

    /// Counts a request the client abandoned or botched (hung up, sent a broken or
    /// oversized body). These are not the version's fault: neither a request nor an
    /// error for the judge.
    pub fn record_client_abort(&self) {
        self.client_aborts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a copy of a request sent to this version.
    pub(crate) fn record_mirrored(&self) {
        self.mirrored.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a copy meant for this version that was not sent.
    pub(crate) fn record_mirror_dropped(&self, reason: DropReason) {
        self.mirror_dropped[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Copies sent to this version so far, and copies dropped for `reason`.
    pub fn mirrored(&self) -> u64 {
        self.mirrored.load(Ordering::Relaxed)
    }

    /// Copies meant for this version dropped for `reason` so far.
    pub fn mirror_dropped(&self, reason: DropReason) -> u64 {
        self.mirror_dropped[reason as usize].load(Ordering::Relaxed)
    }

    /// Counts an upgraded connection opened, until the returned guard is dropped,
    /// and gives the signal that [`close_upgraded`](Self::close_upgraded) sends.
    pub(crate) fn open_upgraded(
        self: &Arc<Self>,
    ) -> (UpgradedGuard, tokio::sync::watch::Receiver<u64>) {
        self.upgraded.fetch_add(1, Ordering::Relaxed);
        self.upgraded_open.fetch_add(1, Ordering::Relaxed);
        let close = self.close_upgraded.subscribe();
        (UpgradedGuard(self.clone()), close)
    }

    /// Closes every upgraded connection open to this version in this role now.
    pub(crate) fn close_upgraded(&self) {
        self.close_upgraded.send_modify(|n| *n += 1);
    }

    /// Upgraded connections opened so far, and open now.
    pub fn upgraded(&self) -> (u64, u64) {
        (
            self.upgraded.load(Ordering::Relaxed),
            self.upgraded_open.load(Ordering::Relaxed),
        )
    }

    /// Errors of one kind so far.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors[kind.index()].load(Ordering::Acquire)
    }

    /// Client aborts so far.
    pub fn client_aborts(&self) -> u64 {
        self.client_aborts.load(Ordering::Relaxed)
    }

    /// The cumulative counters in the judge's shape.
    pub fn snapshot(&self) -> ArmCounters {
        let errors = self.errors.iter().map(|e| e.load(Ordering::Acquire)).sum();
        let requests = self.requests.load(Ordering::Acquire);
        ArmCounters {
            requests,
            errors,
            latency: LatencyHistogram {
                counts: self
                    .buckets
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect(),
                sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            },
        }
    }
}

/// The counters of one app, keyed by (version, role), created on demand when a
/// route naming a new version is installed. Only route changes and readers lock it.
#[derive(Debug, Default)]
pub(crate) struct StatsRegistry {
    series: Mutex<Vec<Series>>,
}

#[derive(Debug)]
struct Series {
    version: String,
    role: Arm,
    stats: Arc<VersionStats>,
}

// === impl StatsRegistry ===

impl StatsRegistry {
    /// The counters of `version` in `role`, creating them if needed.
    pub(crate) fn get_or_create(&self, version: &str, role: Arm) -> Arc<VersionStats> {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = series
            .iter()
            .find(|s| s.version == version && s.role == role)
        {
            return s.stats.clone();
        }
        if series.len() >= MAX_SERIES_PER_APP {
            // Only the registry holds counters no table routes to any more.
            if let Some(pos) = series.iter().position(|s| Arc::strong_count(&s.stats) == 1) {
                series.remove(pos);
            }
        }
        let stats = Arc::new(VersionStats::default());
        series.push(Series {
            version: version.to_owned(),
            role,
            stats: stats.clone(),
        });
        stats
    }

    /// The counters of `version` in `role`, if it has ever been routed to.
    pub(crate) fn get(&self, version: &str, role: Arm) -> Option<Arc<VersionStats>> {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        series
            .iter()
            .find(|s| s.version == version && s.role == role)
            .map(|s| s.stats.clone())
    }

    /// `version`'s counters summed over both roles (a promoted canary keeps its
    /// canary-time counts under `role="canary"`).
    pub(crate) fn by_version(&self, version: &str) -> ArmCounters {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = ArmCounters::default();
        for s in series.iter().filter(|s| s.version == version) {
            let snap = s.stats.snapshot();
            total.requests += snap.requests;
            total.errors += snap.errors;
            total.latency.merge(&snap.latency);
        }
        total
    }

    /// Closes every upgraded connection of every version and role.
    pub(crate) fn close_all_upgraded(&self) {
        self.each(|_, _, s| s.close_upgraded());
    }

    fn each(&self, mut f: impl FnMut(&str, Arm, &VersionStats)) {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        for s in series.iter() {
            f(&s.version, s.role, &s.stats);
        }
    }
}

/// Keeps one upgraded connection counted as open.
#[derive(Debug)]
pub(crate) struct UpgradedGuard(Arc<VersionStats>);

impl Drop for UpgradedGuard {
    fn drop(&mut self) {
        self.0.upgraded_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One app's view for the exposition: its name and registry.
pub(crate) struct AppMetrics<'a> {
    pub(crate) app: &'a str,
    pub(crate) registry: &'a StatsRegistry,
}

/// Writes the proxy's metric families for several apps; each family appears once,
/// with one series per app, version and role.
pub(crate) fn write_metrics(apps: &[AppMetrics<'_>], page: &mut Page) {
    simple_family(
        page,
        apps,
        (REQUESTS, Kind::Counter),
        "Requests answered, by version and role.",
        |s| s.requests.load(Ordering::Relaxed),
    );
    labelled_counter(
        page,
        apps,
        ERRORS,
        "Failed requests: upstream 5xx, or failures to connect, reset or time out talking to the upstream.",
        ("kind", &ErrorKind::ALL.map(|k| (k.as_str(), k))),
        VersionStats::errors_of,
    );
    let plain: [PlainFamily; 4] = [
        (
            CLIENT_ABORTS,
            Kind::Counter,
            "Requests the client abandoned or botched; not counted as requests or errors.",
            VersionStats::client_aborts,
        ),
        (
            UPGRADED,
            Kind::Counter,
            "Connections upgraded to another protocol (WebSocket) and tunnelled, by version and role.",
            |s| s.upgraded().0,
        ),
        (
            UPGRADED_OPEN,
            Kind::Gauge,
            "Upgraded connections open now.",
            |s| s.upgraded().1,
        ),
        (
            MIRRORED,
            Kind::Counter,
            "Copies of stable's requests sent to the canary (a dark canary); their answers count as requests of the version.",
            VersionStats::mirrored,
        ),
    ];
    for (name, kind, help, value) in plain {
        simple_family(page, apps, (name, kind), help, value);
    }
    labelled_counter(
        page,
        apps,
        MIRROR_DROPPED,
        "Copies of requests not sent to the canary: no free slot (queue_full), a body over the limit (body_too_large), or a body not read to its end (body_incomplete).",
        ("reason", &DropReason::ALL.map(|r| (r.as_str(), r))),
        VersionStats::mirror_dropped,
    );
    let mut duration = page.family(
        DURATION,
        Kind::Histogram,
        "Time from receiving the request to sending the response headers.",
    );
    for a in apps {
        a.registry.each(|version, role, s| {
            let counts: Vec<u64> = s
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
            let sum = s.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let labels = [
                ("app", a.app),
                ("version", version),
                ("role", role.as_str()),
            ];
            duration.histogram(&labels, LATENCY_BOUNDS_SECONDS, &counts, sum);
        });
    }
}

/// A family with one plain value per app, version and role: its name, kind and help,
/// and how a version's value is read.
type PlainFamily = (&'static str, Kind, &'static str, fn(&VersionStats) -> u64);

/// A counter family with one series per app, version, role and value of one more
/// label: `(label, [(value, key)])`, each series read by `value(stats, key)`.
fn labelled_counter<K: Copy>(
    page: &mut Page,
    apps: &[AppMetrics<'_>],
    name: &str,
    help: &str,
    (label, keys): (&str, &[(&str, K)]),
    value: impl Fn(&VersionStats, K) -> u64,
) {
    let mut family = page.family(name, Kind::Counter, help);
    for a in apps {
        a.registry.each(|version, role, s| {
            for &(text, key) in keys {
                let labels = [
                    ("app", a.app),
                    ("version", version),
                    ("role", role.as_str()),
                    (label, text),
                ];
                family.sample(&labels, value(s, key));
            }
        });
    }
}

/// A family with one plain value per app, version and role.
fn simple_family(
    page: &mut Page,
    apps: &[AppMetrics<'_>],
    (name, kind): (&str, Kind),
    help: &str,
    value: impl Fn(&VersionStats) -> u64,
) {
    let mut family = page.family(name, kind, help);
    for a in apps {
        a.registry.each(|version, role, s| {
            family.sample(
                &[
                    ("app", a.app),
                    ("version", version),
                    ("role", role.as_str()),
                ],
                value(s),
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fledge_stats::exposition::Format;

    #[test]
    fn snapshot_counts_requests_errors_and_latency() {
        let s = VersionStats::default();
        s.record(Duration::from_millis(3), None);
        s.record(Duration::from_millis(500), Some(ErrorKind::Upstream5xx));
        s.record(Duration::from_millis(1), Some(ErrorKind::Connect));
        s.record_late_error(ErrorKind::Reset);
        s.record_client_abort();
        let snap = s.snapshot();
        assert_eq!(snap.requests, 3);
        assert_eq!(snap.errors, 3);
        assert_eq!(snap.latency.total(), 3);
        assert_eq!(snap.latency.count_above(0.4), 1);
        assert!((snap.latency.sum_seconds - 0.504).abs() < 1e-9);
        assert_eq!(s.client_aborts(), 1);
    }

    #[test]
    fn registry_bounds_the_series_it_keeps() {
        let r = StatsRegistry::default();
        let keep = r.get_or_create("v0", Arm::Stable);
        for i in 1..40 {
            drop(r.get_or_create(&format!("v{i}"), Arm::Canary));
        }
        let n = r.series.lock().unwrap().len();
        assert!(n <= MAX_SERIES_PER_APP, "{n} series");
        assert!(Arc::ptr_eq(&keep, &r.get_or_create("v0", Arm::Stable)));
    }

    #[test]
    fn exposition_has_cumulative_buckets_and_escaped_labels() {
        let r = StatsRegistry::default();
        let s = r.get_or_create("v\"1", Arm::Canary);
        s.record(Duration::from_millis(2), None);
        s.record(Duration::from_millis(20), Some(ErrorKind::Timeout));
        let mut page = Page::new(Format::OpenMetrics);
        write_metrics(
            &[AppMetrics {
                app: "shop",
                registry: &r,
            }],
            &mut page,
        );
        let out = page.finish();
        let l = "app=\"shop\",version=\"v\\\"1\",role=\"canary\"";
        assert!(out.contains(&format!("fledge_proxy_requests_total{{{l}}} 2\n")));
        assert!(out.contains(&format!(
            "fledge_proxy_errors_total{{{l},kind=\"timeout\"}} 1\n"
        )));
        assert!(out.contains(&format!(
            "fledge_proxy_request_duration_seconds_bucket{{{l},le=\"0.002\"}} 1\n"
        )));
        assert!(out.contains(&format!(
            "fledge_proxy_request_duration_seconds_bucket{{{l},le=\"0.02\"}} 2\n"
        )));
        assert!(out.contains(&format!(
            "fledge_proxy_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} 2\n"
        )));
        assert!(out.contains(&format!(
            "fledge_proxy_request_duration_seconds_count{{{l}}} 2\n"
        )));
        assert_eq!(
            out.matches("# TYPE fledge_proxy_requests counter").count(),
            1
        );
    }
}
