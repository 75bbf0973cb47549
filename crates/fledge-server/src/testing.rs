//! Fakes for driving the server's controller in-process, under tokio's paused
//! clock: a traffic router that records the routes it is given and fails when told
//! to, a metric source that serves the counters a test scripts, and
//! [`InProcess`], the server's core (store, apps, leader lease, controller) on an
//! in-memory SQLite store with one app wired to both fakes and no socket anywhere.
//!
//! A test under `#[tokio::test(start_paused = true)]` moves time with
//! [`InProcess::run_for`]: each step advances tokio's clock by one controller tick
//! and runs the real tick, so a rollout of minutes takes milliseconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fledge_stats::{ArmCounters, Observation};
use fledge_store::{EventRecord, RolloutRecord};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::apps::route_weight;
use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::engine::Command;
use crate::{ApiError, Authenticator, Principal, Shared, controller, leader, rollouts};
use async_trait::async_trait;
use fledge_providers::metrics::{MetricError, MetricSource, ObserveQuery};
use fledge_providers::router::{
    AppliedWeights, Desired, Endpoints, EndpointsApplied, RouterError, RoutingRules, TrafficRouter,
};

mod store;
pub use store::TestStore;

/// The app [`InProcess`] registers. Its `listen` only satisfies the config's
/// check: the fakes take the place of the built-in proxy, and no port is opened.
pub const APP: &str = "shop";

/// How often [`InProcess`]'s controller ticks (the server's default).
pub const TICK: Duration = Duration::from_secs(1);

const CONFIG: &str = "\
listen: 127.0.0.1:0
store: \"sqlite::memory:\"
apps:
  - name: shop
    listen: 127.0.0.1:0
    stable:
      version: v1
      endpoints: [\"127.0.0.1:9\"]
    canary:
      endpoints: [\"127.0.0.1:10\"]
";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// === FakeRouter ===

/// A [`TrafficRouter`] that records every route applied, and refuses to apply (and
/// to verify) while told to fail.
#[derive(Debug, Default)]
pub struct FakeRouter {
    applied: Mutex<Vec<Desired>>,
    failing: Mutex<Option<String>>,
}

impl FakeRouter {
    /// A router that applies everything.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// From now on, applies and checks fail with `error`.
    pub fn fail(&self, error: &str) {
        *lock(&self.failing) = Some(error.to_owned());
    }

    /// From now on, applies and checks succeed.
    pub fn recover(&self) {
        *lock(&self.failing) = None;
    }

    /// The canary weight of every route applied, oldest first.
    pub fn weights(&self) -> Vec<u8> {
        lock(&self.applied).iter().map(route_weight).collect()
    }

    /// The route applied last.
    pub fn last(&self) -> Option<Desired> {
        lock(&self.applied).last().cloned()
    }

    fn check(&self) -> Result<(), RouterError> {
        match &*lock(&self.failing) {
            Some(error) => Err(RouterError::Unreachable {
                router: "fake",
                target: "the test".to_owned(),
                reason: error.clone(),
            }),
            None => Ok(()),
        }
    }

    fn latest(&self) -> Desired {
        lock(&self.applied)
            .last()
            .cloned()
            .unwrap_or_else(|| Desired::stable_only("none", Vec::new()))
    }

    fn record(&self, desired: Desired) -> AppliedWeights {
        let weight = desired.weight();
        lock(&self.applied).push(desired);
        AppliedWeights::canary(weight)
    }
}

#[async_trait]
impl TrafficRouter for FakeRouter {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn set_weights(&self, canary_weight: u8) -> Result<AppliedWeights, RouterError> {
        self.check()?;
        let mut desired = self.latest();
        desired.canary_weight = canary_weight;
        Ok(self.record(desired))
    }

    async fn current(&self) -> Result<AppliedWeights, RouterError> {
        self.check()?;
        Ok(AppliedWeights::canary(self.latest().weight()))
    }

    async fn set_endpoints(&self, _endpoints: &Endpoints) -> Result<EndpointsApplied, RouterError> {
        self.check()?;
        Ok(EndpointsApplied::Unmanaged)
    }

    /// Like the built-in proxy, every rule.
    fn supports(&self, _rules: &RoutingRules) -> Result<(), RouterError> {
        Ok(())
    }

    async fn serve(&self, desired: &Desired) -> Result<AppliedWeights, RouterError> {
        self.check()?;
        Ok(self.record(desired.clone()))
    }
}

// === FakeMetrics ===

/// What both versions serve between two reads of a [`FakeMetrics`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Serving {
    /// Requests each version serves.
    pub requests: u64,
    /// Of those, the stable version's failures.
    pub stable_errors: u64,
    /// Of those, the canary's failures.
    pub canary_errors: u64,
    /// Every request's latency.
    pub latency: Duration,
}

impl Serving {
    /// Both versions answer every request in 20 ms.
    pub const HEALTHY: Serving = Serving {
        requests: 200,
        stable_errors: 0,
        canary_errors: 0,
        latency: Duration::from_millis(20),
    };

    /// The canary fails a quarter of its requests; stable none.
    pub const FAILING_CANARY: Serving = Serving {
        canary_errors: 50,
        ..Serving::HEALTHY
    };
}

/// A [`MetricSource`] whose cumulative counters grow by the scripted [`Serving`]
/// at every read, or that has no data while told to fail.
#[derive(Debug)]
pub struct FakeMetrics {
    state: Mutex<MetricsState>,
}

#[derive(Debug)]
struct MetricsState {
    serving: Serving,
    counters: Observation,
    failing: Option<String>,
}

impl FakeMetrics {
    /// A source where both versions are healthy.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(MetricsState {
                serving: Serving::HEALTHY,
                counters: Observation::default(),
                failing: None,
            }),
        })
    }

    /// What the versions serve from the next read on.
    pub fn serve(&self, serving: Serving) {
        lock(&self.state).serving = serving;
    }

    /// From now on, reads fail with `error` ("no data").
    pub fn fail(&self, error: &str) {
        lock(&self.state).failing = Some(error.to_owned());
    }
}

fn grow(arm: &mut ArmCounters, requests: u64, errors: u64, latency: Duration) {
    arm.requests += requests;
    arm.errors += errors;
    for _ in 0..requests {
        arm.latency.record(latency.as_secs_f64());
    }
}

#[async_trait]
impl MetricSource for FakeMetrics {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn observe(&self, _query: &ObserveQuery) -> Result<Observation, MetricError> {
        {
            let mut state = lock(&self.state);
            if let Some(error) = &state.failing {
                return Err(MetricError::Unreachable {
                    source_kind: "fake",
                    url: "the test".to_owned(),
                    reason: error.clone(),
                });
            }
            let s = state.serving;
            grow(
                &mut state.counters.stable,
                s.requests,
                s.stable_errors,
                s.latency,
            );
            grow(
                &mut state.counters.canary,
                s.requests,
                s.canary_errors,
                s.latency,
            );
            Ok(state.counters.clone())
        }
    }
}

// === InProcess ===

/// The server's core in this process: the store, the app [`APP`] on a
/// [`FakeRouter`] and a [`FakeMetrics`], the leader lease and the controller's
/// tick, driven by the test. The wall clock follows tokio's.
#[derive(Debug)]
pub struct InProcess {
    /// The state the controller and the API share.
    pub shared: Arc<Shared>,
    /// The app's router.
    pub router: Arc<FakeRouter>,
    /// The app's metric source.
    pub metrics: Arc<FakeMetrics>,
    /// The store, which can be told to refuse writes.
    pub store: Arc<TestStore>,
    last_judged: HashMap<String, Instant>,
    renewed: Instant,
    _stop: watch::Sender<bool>,
}

impl InProcess {
    /// The core on a fresh in-memory store, as `start` wires it: the config's app
    /// registered and started on its stored route, the controller lease taken.
    pub async fn start() -> Self {
        let store = TestStore::in_memory().await;
        let config = ServerConfig::parse(CONFIG, "in-process.yaml").expect("the config parses");
        let auth = Authenticator::new(&[], None).expect("no tokens");
        let (stop, stopping) = watch::channel(false);
        let clock = Clock::tokio(SystemTime::now());
        let (shared, _hook_jobs) = Shared::new(config, store.clone(), clock, auth, None, stopping);
        rollouts::register_config_apps(&shared)
            .await
            .expect("the app registers");
        let router = FakeRouter::new();
        let metrics = FakeMetrics::new();
        let app = shared.config.apps[0].clone();
        shared
            .apps
            .start_app_with(&shared, app, router.clone(), metrics.clone())
            .await
            .expect("the app starts");
        shared
            .leader
            .step(shared.store.as_ref(), &shared.store_health)
            .await;
        assert!(shared.leader.is_leader(), "the only replica leads");
        Self {
            shared,
            router,
            metrics,
            store,
            last_judged: HashMap::new(),
            renewed: Instant::now(),
            _stop: stop,
        }
    }

    /// Registers and starts a second app, `name` (a copy of [`APP`]'s config), on a
    /// router and a metric source of its own, which it returns.
    pub async fn add_app(&self, name: &str) -> (Arc<FakeRouter>, Arc<FakeMetrics>) {
        let mut app = self.shared.config.apps[0].clone();
        app.name = name.to_owned();
        self.shared
            .store
            .put_app(name, &serde_json::to_value(&app).expect("an app is JSON"))
            .await
            .expect("the app registers");
        let (router, metrics) = (FakeRouter::new(), FakeMetrics::new());
        self.shared
            .apps
            .start_app_with(&self.shared, app, router.clone(), metrics.clone())
            .await
            .expect("the app starts");
        (router, metrics)
    }

    /// Starts a rollout group from its document as the operator `alice`.
    pub async fn create_group(&self, document: &str) -> fledge_store::GroupRecord {
        crate::groups::create(&self.shared, document, "group.yaml", &operator())
            .await
            .expect("the group starts")
    }

    /// The group as stored.
    pub async fn group(&self, id: &str) -> fledge_store::GroupRecord {
        crate::groups::get(&self.shared, id)
            .await
            .expect("the group exists")
    }

    /// The group's members' rollouts, oldest first.
    pub async fn members(&self, id: &str) -> Vec<RolloutRecord> {
        self.shared
            .store
            .rollouts_of_group(id)
            .await
            .expect("the store answers")
    }

    /// Starts a rollout of `spec` as the operator `alice`.
    pub async fn create(&self, spec: &str) -> RolloutRecord {
        rollouts::create(&self.shared, spec, "spec.yaml", &operator())
            .await
            .expect("the rollout starts")
    }

    /// An operator's command, as `POST /rollouts/{id}/...` sends it.
    pub async fn command(&self, id: &str, command: Command) -> Result<RolloutRecord, ApiError> {
        rollouts::command(&self.shared, id, command, &operator()).await
    }

    /// One controller tick as the server runs it: the lease renewed when due, then
    /// every active rollout judged and every app's route reconciled.
    pub async fn tick(&mut self) {
        if self.renewed.elapsed() >= leader::RENEW_EVERY {
            self.renewed = Instant::now();
            self.shared
                .leader
                .step(self.shared.store.as_ref(), &self.shared.store_health)
                .await;
        }
        controller::tick_once(&self.shared, &mut self.last_judged, TICK).await;
    }

    /// Advances the clock by `d`, one tick at a time, running each tick.
    pub async fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            tokio::time::advance(TICK).await;
            self.tick().await;
        }
    }

    /// Runs ticks until the rollout `id` satisfies `done`, for at most `limit`
    /// of held time; returns it.
    pub async fn run_until(
        &mut self,
        id: &str,
        limit: Duration,
        done: impl Fn(&RolloutRecord) -> bool,
    ) -> RolloutRecord {
        let end = Instant::now() + limit;
        loop {
            let r = self.rollout(id).await;
            if done(&r) {
                return r;
            }
            assert!(
                Instant::now() < end,
                "not done after {limit:?}: {} {}",
                r.phase,
                r.state
            );
            tokio::time::advance(TICK).await;
            self.tick().await;
        }
    }

    /// The rollout as stored.
    pub async fn rollout(&self, id: &str) -> RolloutRecord {
        self.shared
            .store
            .get_rollout(id)
            .await
            .expect("the store answers")
            .expect("the rollout exists")
    }

    /// The rollout's history.
    pub async fn events(&self, id: &str) -> Vec<EventRecord> {
        self.shared
            .store
            .events(id, 0)
            .await
            .expect("the store answers")
    }

    /// The kinds of the rollout's events, oldest first.
    pub async fn kinds(&self, id: &str) -> Vec<String> {
        self.events(id).await.into_iter().map(|e| e.kind).collect()
    }
}

fn operator() -> Principal {
    Principal {
        name: "alice".to_owned(),
        role: crate::config::Role::Operator,
    }
}
