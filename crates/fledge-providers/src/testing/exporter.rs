//! A Prometheus exporter the test controls: `http_requests_total` and the
//! `http_request_duration_seconds` histogram per version, in the text exposition
//! format, with counters the test increments (and can reset, as a restart would).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;

use super::TestServer;

/// The exporter's histogram bounds: Prometheus client libraries' defaults.
pub const EXPORTER_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
struct Series {
    by_code: BTreeMap<u16, u64>,
    buckets: [u64; EXPORTER_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A running exporter for one app.
#[derive(Debug)]
pub struct Exporter {
    /// The HTTP server (`GET /metrics`).
    pub server: TestServer,
    app: String,
    recorder: Recorder,
}

/// A handle that counts requests into an [`Exporter`]; cheap to clone into backends.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    series: Arc<Mutex<BTreeMap<String, Series>>>,
}

impl Recorder {
    /// Counts `n` requests of `version` answered with `code` in `seconds` each.
    pub fn record(&self, version: &str, code: u16, seconds: f64, n: u64) {
        let mut all = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = all.entry(version.to_owned()).or_default();
        *s.by_code.entry(code).or_insert(0) += n;
        for (i, le) in EXPORTER_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                s.buckets[i] += n;
            }
        }
        s.count += n;
        s.sum += seconds * n as f64;
    }

    /// Forgets every counter of `version`, as a restarted process would.
    pub fn reset(&self, version: &str) {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(version);
    }
}

impl Exporter {
    /// Starts an exporter for `app` on a free loopback port.
    pub async fn start(app: &str) -> std::io::Result<Exporter> {
        let recorder = Recorder::default();
        let state = recorder.series.clone();
        let app_name = app.to_owned();
        let router = Router::new().route(
            "/metrics",
            get(move || {
                let text = render(&app_name, &state.lock().unwrap_or_else(|p| p.into_inner()));
                async move { text }
            }),
        );
        Ok(Exporter {
            server: TestServer::start(router).await?,
            app: app.to_owned(),
            recorder,
        })
    }

    /// Counts `n` requests of `version` answered with `code` in `seconds` each.
    pub fn record(&self, version: &str, code: u16, seconds: f64, n: u64) {
        self.recorder.record(version, code, seconds, n);
    }

    /// Forgets every counter of `version`, as a restarted process would.
    pub fn reset(&self, version: &str) {
        self.recorder.reset(version);
    }

    /// A handle for backends to count their requests with.
    pub fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }

    /// The app label the exporter uses.
    pub fn app(&self) -> &str {
        &self.app
    }
}

fn render(app: &str, all: &BTreeMap<String, Series>) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP http_requests_total Requests answered.\n# TYPE http_requests_total counter\n",
    );
    for (version, s) in all {
        for (code, n) in &s.by_code {
            let _ = writeln!(
                out,
                "http_requests_total{{app=\"{app}\",version=\"{version}\",code=\"{code}\"}} {n}"
            );
        }
    }
    out.push_str("# HELP http_request_duration_seconds Request latency.\n# TYPE http_request_duration_seconds histogram\n");
    for (version, s) in all {
        for (le, n) in EXPORTER_BUCKETS.iter().zip(s.buckets) {
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{app=\"{app}\",version=\"{version}\",le=\"{le}\"}} {n}"
            );
        }
        let labels = format!("app=\"{app}\",version=\"{version}\"");
        let _ = writeln!(
            out,
            "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            s.count
        );
        let _ = writeln!(
            out,
            "http_request_duration_seconds_sum{{{labels}}} {}",
            s.sum
        );
        let _ = writeln!(
            out,
            "http_request_duration_seconds_count{{{labels}}} {}",
            s.count
        );
    }
    out
}
