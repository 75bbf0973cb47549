//! The server's own metrics on `GET /metrics`, with bounded labels: the phase, the
//! decision kind, the command, the app, and for each app's latest rollout its id,
//! versions and criteria (one rollout per app at a time).
//!
//! Metric names live here and nowhere else (the proxy's are in `fledge-proxy`);
//! `docs/metrics.md` describes each family, and a test checks that it names every
//! family served.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use fledge_engine::{CriterionStatus, Evidence};
use fledge_stats::exposition::{Kind, Page};

/// Upper bounds, in seconds, of the controller-tick histograms: a tick normally takes
/// milliseconds and starts on time; seconds mean the store or a metric source stalls
/// the loop.
pub const TICK_BOUNDS_SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The server's metrics that live in memory (what `/metrics` reads from the store
/// comes in a [`Scrape`]).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    decisions: BTreeMap<String, u64>,
    commands: BTreeMap<String, u64>,
    weights: BTreeMap<String, u8>,
    router_in_sync: BTreeMap<String, bool>,
    router_failures: BTreeMap<String, u64>,
    tick_lag: Histogram,
    tick_duration: Histogram,
    leader_epoch: Option<i64>,
    rate_limited: BTreeMap<&'static str, u64>,
    rate_limit_clients: u64,
}

/// Counts of observations per bucket of [`TICK_BOUNDS_SECONDS`] (the last one above
/// every bound), and their sum.
#[derive(Debug)]
struct Histogram {
    counts: [u64; TICK_BOUNDS_SECONDS.len() + 1],
    sum: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: [0; TICK_BOUNDS_SECONDS.len() + 1],
            sum: 0.0,
        }
    }
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        self.counts[TICK_BOUNDS_SECONDS.partition_point(|&b| b < secs)] += 1;
        self.sum += secs;
    }
}

/// What `/metrics` reads from the store when it is scraped.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Rollouts in the store, by phase.
    pub rollouts_by_phase: Vec<(&'static str, i64)>,
    /// Each app's active rollout, else its latest one.
    pub rollouts: Vec<RolloutMetrics>,
}

/// One rollout as `/metrics` shows it.
#[derive(Debug, Clone)]
pub struct RolloutMetrics {
    /// The app.
    pub app: String,
    /// The rollout's id.
    pub id: String,
    /// The app's stable version.
    pub stable: String,
    /// The version being released.
    pub canary: String,
    /// The rollout's phase.
    pub phase: fledge_engine::Phase,
    /// The current stage, 0-based.
    pub stage_index: usize,
    /// When the current stage started, Unix seconds, while it runs.
    pub stage_started_at: Option<f64>,
    /// The latest evidence on each criterion of the current stage.
    pub criteria: Vec<Evidence>,
}

const CRITERION_STATUSES: [(CriterionStatus, &str); 4] = [
    (CriterionStatus::Pass, "pass"),
    (CriterionStatus::Fail, "fail"),
    (CriterionStatus::NotEnoughData, "not_enough_data"),
    (CriterionStatus::Undecided, "undecided"),
];

// === impl Metrics ===

impl Metrics {
    /// No metric recorded yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records whether this replica leads, and with which lease epoch.
    pub fn set_leader(&self, epoch: Option<i64>) {
        self.with(|m| m.leader_epoch = epoch);
    }

    /// Counts one request refused by the rate limit; `kind` is `token` or `address`.
    pub fn count_rate_limited(&self, kind: &'static str) {
        self.with(|m| *m.rate_limited.entry(kind).or_default() += 1);
    }

    /// Records how many clients the rate limiter keeps a bucket for.
    pub fn set_rate_limit_clients(&self, n: usize) {
        self.with(|m| m.rate_limit_clients = u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// Counts one recorded event.
    pub fn count_decision(&self, kind: &str) {
        self.with(|m| *m.decisions.entry(bounded(kind)).or_default() += 1);
    }

    /// Counts one applied operator command.
    pub fn count_command(&self, command: &str) {
        self.with(|m| *m.commands.entry(bounded(command)).or_default() += 1);
    }

    /// Records the weight applied to an app's canary (0–100).
    pub fn set_weight(&self, app: &str, weight: u8) {
        self.with(|m| m.weights.insert(app.to_owned(), weight));
    }

    /// Records whether an app's router applied its route, and counts a failure.
    pub fn set_router_sync(&self, app: &str, in_sync: bool, failed: bool) {
        self.with(|m| {
            m.router_in_sync.insert(app.to_owned(), in_sync);
            *m.router_failures.entry(app.to_owned()).or_default() += u64::from(failed);
        });
    }

    /// Records how late a tick started.
    pub fn observe_tick_lag(&self, lag: Duration) {
        self.with(|m| m.tick_lag.observe(lag));
    }

    /// Records how long a tick took.
    pub fn observe_tick_duration(&self, d: Duration) {
        self.with(|m| m.tick_duration.observe(d));
    }

    /// Writes the server's families to `page`: those kept in memory, then those of
    /// `scrape`.
    pub fn write(&self, page: &mut Page, scrape: &Scrape) {
        page.family(
            "fledge_build",
            Kind::Info,
            "The running server's version, as a label",
        )
        .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1u64);
        page.family(
            "fledge_rollouts",
            Kind::Gauge,
            "Rollouts in the store, by phase",
        )
        .labelled("phase", scrape.rollouts_by_phase.iter().copied());
        self.with(|m| m.write(page));
        write_rollouts(page, &scrape.rollouts);
    }
}

impl Inner {
    fn write(&self, page: &mut Page) {
        counters(
            page,
            ("fledge_decisions", "kind"),
            "Rollout events recorded, by kind (StageAdvanced, Failed, Promoted, ...)",
            &self.decisions,
        );
        counters(
            page,
            ("fledge_commands", "command"),
            "Operator commands applied to rollouts, by command",
            &self.commands,
        );
        page.family(
            "fledge_canary_weight_ratio",
            Kind::Gauge,
            "The canary's share of the app's requests the router was last told to apply, 0 to 1",
        )
        .labelled(
            "app",
            self.weights.iter().map(|(a, w)| (a, f64::from(*w) / 100.0)),
        );
        page.family(
            "fledge_router_in_sync",
            Kind::Gauge,
            "1 when the app's router serves the route the store asks for, 0 while it fails to apply it",
        )
        .labelled(
            "app",
            self.router_in_sync.iter().map(|(a, ok)| (a, u64::from(*ok))),
        );
        counters(
            page,
            ("fledge_router_apply_failures", "app"),
            "Failed attempts to apply an app's route to its router",
            &self.router_failures,
        );
        for (name, help, h) in [
            (
                "fledge_controller_tick_lag_seconds",
                "How late each controller tick started",
                &self.tick_lag,
            ),
            (
                "fledge_controller_tick_duration_seconds",
                "How long each controller tick took",
                &self.tick_duration,
            ),
        ] {
            page.family(name, Kind::Histogram, help).histogram(
                &[],
                &TICK_BOUNDS_SECONDS,
                &h.counts,
                h.sum,
            );
        }
        page.family(
            "fledge_controller_leader",
            Kind::Gauge,
            "1 while this replica holds the controller lease and judges rollouts, else 0",
        )
        .sample(&[], u64::from(self.leader_epoch.is_some()));
        page.family(
            "fledge_controller_lease_epoch",
            Kind::Gauge,
            "The fencing epoch of the controller lease this replica holds (0: none)",
        )
        .sample(&[], self.leader_epoch.unwrap_or(0));
        counters(
            page,
            ("fledge_api_rate_limited", "client"),
            "API requests refused with 429 by the per-client rate limit, by client kind (token or address)",
            &self.rate_limited,
        );
        page.family(
            "fledge_api_rate_limit_clients",
            Kind::Gauge,
            "Clients whose rate-limit bucket the API currently keeps",
        )
        .sample(&[], self.rate_limit_clients);
    }
}

/// A counter family with one label.
fn counters<K: AsRef<str>>(
    page: &mut Page,
    (name, label): (&str, &str),
    help: &str,
    values: &BTreeMap<K, u64>,
) {
    page.family(name, Kind::Counter, help)
        .labelled(label, values.iter().map(|(k, n)| (k, *n)));
}

/// The per-rollout families: what a dashboard or an alert needs to follow a rollout
/// from `/metrics` alone.
fn write_rollouts(page: &mut Page, rollouts: &[RolloutMetrics]) {
    let mut info = page.family(
        "fledge_rollout",
        Kind::Info,
        "Each app's current (else latest) rollout: its id and the two versions",
    );
    for r in rollouts {
        info.sample(
            &[
                ("app", &r.app),
                ("rollout", &r.id),
                ("stable", &r.stable),
                ("canary", &r.canary),
            ],
            1u64,
        );
    }
    let mut phase = page.family(
        "fledge_rollout_phase",
        Kind::Gauge,
        "1 for the rollout's current phase, 0 for each other phase",
    );
    for r in rollouts {
        for p in fledge_engine::Phase::ALL {
            let labels = [("app", &*r.app), ("rollout", &r.id), ("phase", p.as_str())];
            phase.sample(&labels, u64::from(p == r.phase));
        }
    }
    let mut stage = page.family(
        "fledge_rollout_stage",
        Kind::Gauge,
        "The rollout's current stage, 0-based",
    );
    for r in rollouts {
        let stage_index = u64::try_from(r.stage_index).unwrap_or(u64::MAX);
        stage.sample(&[("app", &r.app), ("rollout", &r.id)], stage_index);
    }
    let mut started = page.family(
        "fledge_rollout_stage_started_timestamp_seconds",
        Kind::Gauge,
        "When the rollout's current stage started (Unix seconds), while it is progressing or paused",
    );
    for r in rollouts {
        if let Some(at) = r.stage_started_at {
            started.sample(&[("app", &r.app), ("rollout", &r.id)], at);
        }
    }
    write_criteria(page, rollouts);
}

/// The latest evidence per criterion of each rollout's current stage.
fn write_criteria(page: &mut Page, rollouts: &[RolloutMetrics]) {
    // Two identical criteria in one stage would be one series twice: keep the first.
    let criteria: Vec<(&RolloutMetrics, &Evidence)> = rollouts
        .iter()
        .flat_map(|r| {
            let mut seen = std::collections::HashSet::new();
            r.criteria
                .iter()
                .filter(move |e| seen.insert(e.criterion.clone()))
                .map(move |e| (r, e))
        })
        .collect();
    let mut value = page.family(
        "fledge_criterion_value",
        Kind::Gauge,
        "A criterion's metric as last measured over the judged window, by arm (canary, stable); \
         ratios 0 to 1, times in seconds, rates per second",
    );
    for (r, e) in &criteria {
        let arms = [("canary", Some(&e.canary)), ("stable", e.stable.as_ref())];
        for (arm, sample) in arms {
            if let Some(v) = sample.and_then(|s| s.value) {
                value.sample(&criterion_labels(r, e, Some(("arm", arm))), v);
            }
        }
    }
    let mut limit = page.family(
        "fledge_criterion_limit",
        Kind::Gauge,
        "The bound a criterion's canary value was last compared with (a relative bound resolved \
         against stable), in the unit of fledge_criterion_value",
    );
    for (r, e) in &criteria {
        if let Some(t) = e.threshold {
            limit.sample(&criterion_labels(r, e, None), t);
        }
    }
    let mut status = page.family(
        "fledge_criterion_status",
        Kind::Gauge,
        "1 for a criterion's latest verdict (pass, fail, not_enough_data, undecided), 0 for the others",
    );
    for (r, e) in &criteria {
        for (s, name) in CRITERION_STATUSES {
            let labels = criterion_labels(r, e, Some(("status", name)));
            status.sample(&labels, u64::from(e.status == s));
        }
    }
}

/// A criterion's labels, and one more.
fn criterion_labels<'a>(
    r: &'a RolloutMetrics,
    e: &'a Evidence,
    extra: Option<(&'a str, &'a str)>,
) -> Vec<(&'a str, &'a str)> {
    let mut labels = vec![
        ("app", r.app.as_str()),
        ("rollout", r.id.as_str()),
        ("metric", e.metric.as_str()),
        ("criterion", e.criterion.as_str()),
    ];
    labels.extend(extra);
    labels
}

/// Event kinds come from the engine and the server, a small fixed set; anything
/// unexpected is folded into one label value so the series count stays bounded.
fn bounded(kind: &str) -> String {
    if kind.len() <= 48 && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        kind.to_owned()
    } else {
        "other".to_owned()
    }
}
