//! Whether `fledge serve` can run for hours without growing: the driver of
//! `bench/soak.sh`.
//!
//! It starts two loopback upstreams, runs the real `fledge serve` binary in front of
//! them (app `shop`, the built-in proxy), sends open-loop load through the proxy at a
//! steady rate, and for the whole run:
//!
//! * creates rollouts back to back, each a new version, in a fixed mix: healthy ones
//!   (the canary never fails) that go through two short stages and are promoted,
//!   failing ones (the canary fails 20% of its requests) that are rolled back, and
//!   healthy ones that an operator aborts a few seconds in;
//! * restarts the server every `--restart-every` on the same store and ports, with
//!   SIGTERM, and with SIGKILL every `--kill-every`-th time;
//! * probes `GET /rollouts?limit=20` and `GET /status` five times a second each,
//!   and scrapes `/metrics` every five seconds;
//! * every `--sample` prints a row: the server's RSS and open descriptors (from
//!   `/proc`), the store's size, the API's p99 per endpoint, and the proxy's requests
//!   and failures in the interval.
//!
//! Then it judges, and exits 1 when something grows without bound:
//!
//! * RSS (its anonymous part, where a leak shows) and descriptors: one slope fitted
//!   over the samples of the run's second half that are past a server's warm-up,
//!   with an intercept per server lifetime (a restart resets what a leak
//!   accumulated, so a slope across lifetimes means nothing). The slope is Sen's
//!   (the median of the pairwise slopes), so one odd sample does not decide. It fails when the 90% interval of the slope lies wholly above the
//!   bound (`RSS_BOUND_MIB_PER_HOUR`, `FDS_BOUND_PER_HOUR`): a noisy machine widens
//!   the interval instead of failing the run, a real leak shows however noisy.
//! * The store: fledge keeps every rollout's history, so the store grows with the
//!   rollouts by design. What must stay bounded is the growth per rollout: the slope
//!   of the store's size over the rollouts ended, in the run's second half (across
//!   restarts: the store outlives them), judged against `STORE_BOUND_KIB_PER_ROLLOUT`
//!   the same way.
//! * API p99: the median of the per-interval p99s in the run's last quarter must stay
//!   under `P99_FACTOR` times that of its second quarter, or under `P99_FLOOR_MS`.
//!
//! Usage: `soak --fledge PATH [--duration 10m] [--rps 300] [--sample 10s]
//! [--restart-every D] [--kill-every 3] [--store sqlite|postgres://…] [--dir DIR]
//! [--csv PATH]`

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fledge_api::Action;
use fledge_api::client::{ApiClient, ClientError};
use fledge_api::rollout::ListQuery;
use fledge_engine::Phase;
use reqwest::StatusCode;

use common::{
    Load, Server, Setup, Upstream, args_or_exit, free_port, quantile, sqlite_path, upstream,
};

/// RSS growth within a server's lifetime, per hour, beyond which the soak fails.
const RSS_BOUND_MIB_PER_HOUR: f64 = 32.0;
/// Open descriptors gained within a server's lifetime, per hour, beyond which the
/// soak fails.
const FDS_BOUND_PER_HOUR: f64 = 60.0;
/// Store growth per rollout ended beyond which the soak fails.
const STORE_BOUND_KIB_PER_ROLLOUT: f64 = 256.0;
/// How much slower the API's p99 may get from the run's second quarter to its last.
const P99_FACTOR: f64 = 4.0;
/// An API p99 under this is never a failure, however it compares.
const P99_FLOOR_MS: f64 = 100.0;
/// How long after its start a server's samples are not judged (pools, caches and
/// the allocator fill up), at most: a third of a lifetime when lifetimes are short.
const WARMUP: Duration = Duration::from_secs(60);
/// How long a SIGTERM may take before the server is killed (in-flight API requests
/// get 10 s).
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long one rollout may take before the driver aborts it and counts it stuck.
const ROLLOUT_LIMIT: Duration = Duration::from_secs(300);
/// How often each probed endpoint is asked (well under the per-client rate limit,
/// with the rollouts' own polling).
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// How many rollouts `GET /rollouts` is asked for. A listing costs memory and time
/// with its length up to its page size (100 by default), which a short run would be
/// still filling when judged: a page that fills within the warm-up leaves what grows
/// without bound to show.
const LIST_PAGE: u32 = 20;
/// How often `/metrics` is scraped, as Prometheus would.
const SCRAPE_EVERY: Duration = Duration::from_secs(5);
/// The aborted kind is aborted this long after its creation.
const ABORT_AFTER: Duration = Duration::from_secs(3);
/// The share of requests a failing canary fails.
const FAILING_SHARE: f64 = 0.2;

struct Args {
    fledge: PathBuf,
    duration: Duration,
    rps: u32,
    sample: Duration,
    restart_every: Option<Duration>,
    kill_every: u32,
    store: Option<String>,
    dir: Option<PathBuf>,
    csv: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        fledge: PathBuf::new(),
        duration: Duration::from_secs(600),
        rps: 300,
        sample: Duration::from_secs(10),
        restart_every: None,
        kill_every: 3,
        store: None,
        dir: None,
        csv: None,
    };
    let duration = |flag: &str, v: &str| {
        humantime::parse_duration(v).map_err(|e| format!("{flag} {v}: {e} (e.g. 10m, 2h)"))
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--fledge" => a.fledge = value.into(),
            "--duration" => a.duration = duration(&flag, &value)?,
            "--rps" => a.rps = value.parse().map_err(|e| format!("--rps {value}: {e}"))?,
            "--sample" => a.sample = duration(&flag, &value)?,
            "--restart-every" => a.restart_every = Some(duration(&flag, &value)?),
            "--kill-every" => {
                a.kill_every = value
                    .parse()
                    .map_err(|e| format!("--kill-every {value}: {e}"))?
            }
            "--store" if value == "sqlite" => a.store = None,
            "--store" if value.starts_with("postgres") => a.store = Some(value),
            "--store" => return Err(format!("--store: sqlite or a postgres:// URL, not {value}")),
            "--dir" => a.dir = Some(value.into()),
            "--csv" => a.csv = Some(value.into()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.fledge.as_os_str().is_empty() {
        return Err("--fledge PATH (the fledge binary) is required".into());
    }
    if a.rps == 0 || a.sample.is_zero() || a.duration < 4 * a.sample {
        return Err("--rps above 0, and --duration at least four --sample intervals".into());
    }
    Ok(a)
}

// === impl Store ===

/// Where `fledge serve` keeps its state, and how big it is.
enum Store {
    Sqlite(PathBuf),
    Postgres(sqlx::PgPool),
}

impl Store {
    /// The size in bytes (the SQLite database with its WAL and shared-memory files,
    /// or `pg_database_size`), and the part of it that is SQLite's WAL.
    async fn size(&self) -> (Option<u64>, Option<u64>) {
        match self {
            Store::Sqlite(db) => {
                let len = |suffix: &str| {
                    let mut path = db.clone().into_os_string();
                    path.push(suffix);
                    std::fs::metadata(path).map_or(0, |m| m.len())
                };
                let wal = len("-wal");
                (Some(len("") + wal + len("-shm")), Some(wal))
            }
            Store::Postgres(pool) => {
                let size =
                    sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
                        .fetch_one(pool)
                        .await
                        .ok()
                        .map(|n| n as u64);
                (size, None)
            }
        }
    }
}

/// The server's resident memory in KiB, from `/proc/PID/status`: all of it
/// (`VmRSS`), and its anonymous part (`RssAnon`: the heap and stacks, where a leak
/// shows, without the binary's and the store's file pages the kernel maps in and out).
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("RssAnon:")?))
}

/// The server's open file descriptors, from `/proc/PID/fd`.
fn fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

// === impl Kind ===

/// What a rollout of the mix is meant to do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The canary never fails: two short stages, then promoted.
    Healthy,
    /// The canary fails `FAILING_SHARE` of its requests: rolled back.
    Failing,
    /// The canary never fails; an operator aborts it in its first stage.
    Aborted,
}

/// The mix, repeated for the whole run.
const MIX: [Kind; 4] = [Kind::Healthy, Kind::Failing, Kind::Healthy, Kind::Aborted];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Healthy => "healthy",
            Kind::Failing => "failing",
            Kind::Aborted => "aborted",
        }
    }

    fn expected(self) -> Phase {
        match self {
            Kind::Healthy => Phase::Succeeded,
            Kind::Failing => Phase::Failed,
            Kind::Aborted => Phase::Aborted,
        }
    }

    fn spec(self, version: &str) -> String {
        // The aborted kind's first stage outlasts its abort.
        let first = if self == Kind::Aborted { "10m" } else { "5s" };
        format!(
            "app: shop\nversion: {version}\nstages:\n  - traffic: 10\n    duration: {first}\n    \
             successCriteria:\n      - error_rate < 1%\n  - traffic: 50\n    duration: 5s\n    \
             successCriteria:\n      - error_rate < 1%\n  - traffic: 100\n    final: true\n    \
             promote: true\n"
        )
    }
}

// === impl Live ===

/// What the driver's tasks share while the run goes on.
#[derive(Default)]
struct Live {
    /// The server's pid; 0 while it is being restarted.
    pid: AtomicU32,
    /// Which server lifetime this is (0: the first).
    life: AtomicU32,
    /// Milliseconds since the run's start at which the current lifetime became ready.
    ready_at_ms: AtomicU64,
    /// Whether a restart began since the last sample.
    restarted: AtomicBool,
    stop: AtomicBool,
    /// Rollouts ended so far.
    ended: AtomicU64,
    /// Why the run had to stop early.
    fatal: Mutex<Option<String>>,
    probes: Mutex<Probes>,
}

/// API latencies (ms) since the last sample.
#[derive(Default)]
struct Probes {
    rollouts: Vec<f64>,
    status: Vec<f64>,
    errors: u64,
}

/// How the rollouts ended.
#[derive(Default)]
struct Tally {
    /// Per kind of `MIX`: (ended as expected, ended otherwise, not ended in time).
    by_kind: [(u64, u64, u64); 3],
    unexpected: Vec<String>,
}

impl Tally {
    fn slot(&mut self, kind: Kind) -> &mut (u64, u64, u64) {
        &mut self.by_kind[kind as usize]
    }
}

/// Creates a rollout of `spec`, through restarts: a create whose answer was lost
/// may have been written, so the app's newest rollout is looked at before trying
/// again; an active rollout left over by a stuck run is aborted.
async fn create(api: &ApiClient, spec: &str, version: &str, live: &Live) -> Option<String> {
    let newest = ListQuery {
        app: Some("shop".into()),
        limit: Some(1),
        ..ListQuery::default()
    };
    loop {
        if live.stop.load(Ordering::Relaxed) {
            return None;
        }
        match api
            .create_rollout(spec.to_owned(), "application/yaml", Some("soak.yaml"))
            .await
        {
            Ok(r) => return Some(r.id),
            // 409: the previous rollout is still active (see below).
            Err(ClientError::Api { status, .. }) if status == StatusCode::CONFLICT => {}
            Err(e) if !e.is_transient() => {
                *live.fatal.lock().unwrap() = Some(format!("the soak's rollout was refused: {e}"));
                live.stop.store(true, Ordering::Relaxed);
                return None;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(r) = api
            .rollouts(&newest)
            .await
            .ok()
            .and_then(|l| l.into_iter().next())
        {
            if r.version == version {
                return Some(r.id);
            }
            if r.phase.is_active() {
                let _ = api.act(&r.id, Action::Abort, false, None).await;
            }
        }
    }
}

/// One rollout of `kind` to its end: its final phase, or `None` when it did not
/// end within `ROLLOUT_LIMIT` (or the run ended first).
async fn run_rollout(
    api: &ApiClient,
    canary: &Upstream,
    kind: Kind,
    version: &str,
    live: &Live,
) -> Option<Phase> {
    canary.fail(if kind == Kind::Failing {
        FAILING_SHARE
    } else {
        0.0
    });
    let id = create(api, &kind.spec(version), version, live).await?;
    let started = Instant::now();
    let mut abort_sent = false;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if live.stop.load(Ordering::Relaxed) {
            return None;
        }
        // Errors are the server being restarted: ask again.
        if let Ok(r) = api.rollout(&id).await
            && r.phase.is_terminal()
        {
            return Some(r.phase);
        }
        if kind == Kind::Aborted && !abort_sent && started.elapsed() > ABORT_AFTER {
            let reason = Some("soak: an operator's abort".to_owned());
            abort_sent = match api.act(&id, Action::Abort, false, reason).await {
                Ok(_) => true,
                Err(e) => !e.is_transient(),
            };
        }
        if started.elapsed() > ROLLOUT_LIMIT {
            let _ = api.act(&id, Action::Abort, false, None).await;
            return None;
        }
    }
}

/// Rollouts back to back until the run ends.
async fn rollouts(api: ApiClient, canary: Upstream, live: Arc<Live>) -> Tally {
    let mut tally = Tally::default();
    for n in 2.. {
        if live.stop.load(Ordering::Relaxed) {
            break;
        }
        let kind = MIX[n % MIX.len()];
        let version = format!("v{n}");
        let ended = run_rollout(&api, &canary, kind, &version, &live).await;
        if live.stop.load(Ordering::Relaxed) && ended.is_none() {
            break;
        }
        live.ended.fetch_add(1, Ordering::Relaxed);
        let slot = tally.slot(kind);
        match ended {
            Some(phase) if phase == kind.expected() => slot.0 += 1,
            Some(phase) => {
                slot.1 += 1;
                tally.unexpected.push(format!(
                    "{version} ({}) ended {}",
                    kind.name(),
                    phase.as_str()
                ));
            }
            None => {
                slot.2 += 1;
                tally.unexpected.push(format!(
                    "{version} ({}) had not ended after {}s",
                    kind.name(),
                    ROLLOUT_LIMIT.as_secs()
                ));
            }
        }
    }
    tally
}

/// Asks `GET /rollouts` and `GET /status` every `PROBE_EVERY`, and scrapes
/// `metrics` every `SCRAPE_EVERY` (its failures counted with the API's), until the
/// run ends.
async fn probe(api: ApiClient, metrics: String, live: Arc<Live>) {
    let mut every = tokio::time::interval(PROBE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let scraper = reqwest::Client::new();
    let mut scraped = Instant::now();
    let page = ListQuery {
        limit: Some(LIST_PAGE),
        ..ListQuery::default()
    };
    while !live.stop.load(Ordering::Relaxed) {
        every.tick().await;
        if scraped.elapsed() >= SCRAPE_EVERY {
            scraped = Instant::now();
            let ok = match scraper.get(&metrics).send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            live.probes.lock().unwrap().errors += u64::from(!ok);
        }
        let started = Instant::now();
        let listed = api.rollouts(&page).await.is_ok();
        let listed_ms = started.elapsed().as_secs_f64() * 1e3;
        let started = Instant::now();
        let status = api.status().await.is_ok();
        let status_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut probes = live.probes.lock().unwrap();
        if listed {
            probes.rollouts.push(listed_ms);
        }
        if status {
            probes.status.push(status_ms);
        }
        probes.errors += u64::from(!listed) + u64::from(!status);
    }
}

/// How the restarts went.
#[derive(Default)]
struct Restarts {
    terms: u32,
    kills: u32,
    /// SIGTERMs the server did not obey within `STOP_GRACE`.
    slow_stops: u32,
    /// Seconds from the signal to the new server's API answering.
    downtime: Vec<f64>,
}

/// What restarting the server takes.
struct Restarter {
    setup: Setup,
    fledge: PathBuf,
    dir: PathBuf,
    every: Duration,
    /// Every this many restarts, SIGKILL instead of SIGTERM (0: never).
    kill_every: u32,
    /// The run's start.
    start: Instant,
}

impl Restarter {
    /// Starts the first server.
    async fn serve(&self, live: &Live) -> (Server, ApiClient) {
        let (server, api) = self.setup.serve(&self.fledge, &self.dir).await;
        live.ready_at_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        live.pid.store(server.pid(), Ordering::Relaxed);
        (server, api)
    }

    /// Restarts `server` every `every` until the run ends; gives back the last
    /// server, still running.
    async fn run(self, mut server: Server, live: Arc<Live>) -> (Server, Restarts) {
        let mut r = Restarts::default();
        let mut next = Instant::now() + self.every;
        for n in 1.. {
            while Instant::now() < next {
                if live.stop.load(Ordering::Relaxed) {
                    return (server, r);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            live.restarted.store(true, Ordering::Relaxed);
            live.pid.store(0, Ordering::Relaxed);
            let signalled = Instant::now();
            if self.kill_every > 0 && n % self.kill_every == 0 {
                r.kills += 1;
                server.kill();
            } else {
                r.terms += 1;
                if !server.terminate(STOP_GRACE).await {
                    r.slow_stops += 1;
                }
            }
            live.life.fetch_add(1, Ordering::Relaxed);
            server = self.serve(&live).await.0;
            r.downtime.push(signalled.elapsed().as_secs_f64());
            next = Instant::now() + self.every;
        }
        unreachable!()
    }
}

/// One row of the table.
struct Sample {
    /// Seconds since the run's start.
    t: f64,
    life: u32,
    /// Seconds since the current server became ready.
    age: f64,
    rss_kib: Option<u64>,
    /// The anonymous part of `rss_kib`.
    anon_kib: Option<u64>,
    fds: Option<u64>,
    store: Option<u64>,
    /// The part of `store` that is SQLite's WAL.
    wal: Option<u64>,
    p99_rollouts: f64,
    p99_status: f64,
    probes: usize,
    api_errors: u64,
    sent: u64,
    failed: u64,
    upstream_errors: u64,
    ended: u64,
    restarted: bool,
}

const HEADER: &str = "| t (s) | life | RSS (MiB) | of which anon | fds | store (MiB) | of which WAL | p99 GET /rollouts (ms) | p99 GET /status (ms) | API errors | proxy requests | failed | of which canary 500s | rollouts ended |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn show<T>(value: Option<T>, f: impl Fn(T) -> String) -> String {
    value.map_or("-".into(), f)
}

impl Sample {
    fn row(&self) -> String {
        format!(
            "| {:.0} | {}{} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
            self.t,
            self.life,
            if self.restarted { " (restarted)" } else { "" },
            show(self.rss_kib, |k| format!("{:.1}", mib(k))),
            show(self.anon_kib, |k| format!("{:.1}", mib(k))),
            show(self.fds, |n| n.to_string()),
            show(self.store, |b| format!("{:.2}", b as f64 / 1048576.0)),
            show(self.wal, |b| format!("{:.2}", b as f64 / 1048576.0)),
            self.p99_rollouts,
            self.p99_status,
            self.api_errors,
            self.sent,
            self.failed,
            self.upstream_errors,
            self.ended,
        )
    }

    fn csv(&self) -> String {
        let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        format!(
            "{:.1},{},{:.1},{},{},{},{},{},{:.2},{:.2},{},{},{},{},{},{},{}",
            self.t,
            self.life,
            self.age,
            opt(self.rss_kib),
            opt(self.anon_kib),
            opt(self.fds),
            opt(self.store),
            opt(self.wal),
            self.p99_rollouts,
            self.p99_status,
            self.probes,
            self.api_errors,
            self.sent,
            self.failed,
            self.upstream_errors,
            self.ended,
            self.restarted,
        )
    }
}

const CSV_HEADER: &str = "t_s,life,age_s,rss_kib,anon_kib,fds,store_bytes,wal_bytes,p99_rollouts_ms,p99_status_ms,probes,api_errors,proxy_requests,proxy_failed,canary_500s,rollouts_ended,restarted";

// === the verdicts ===

/// A slope and its 90% interval.
struct Fit {
    slope: f64,
    low: f64,
    high: f64,
    n: usize,
}

/// The two-sided 90% quantile of the standard normal distribution.
const Z90: f64 = 1.645;

/// The slope of y over x common to all groups, each group with an intercept of its
/// own, and its 90% interval; `None` with too few points (groups of fewer than three
/// points are left out).
///
/// The slope is Sen's: the median of the slopes between every two points of a group
/// (the seasonal estimator of Hirsch, Slack and Smith, with a server's lifetime as
/// the season), so one odd sample (a burst of connections at a restart, a page-cache
/// swing) moves it by one rank, not by its size. The interval is the one of Kendall's
/// statistic summed over the groups, with the correction for tied values: when every
/// value is the same, slope and interval are zero.
fn fit(groups: &[Vec<(f64, f64)>]) -> Option<Fit> {
    let groups: Vec<_> = groups.iter().filter(|g| g.len() >= 3).collect();
    let n: usize = groups.iter().map(|g| g.len()).sum();
    let mut slopes = Vec::new();
    let mut variance = 0.0;
    for g in &groups {
        for (i, a) in g.iter().enumerate() {
            for b in &g[i + 1..] {
                if b.0 != a.0 {
                    slopes.push((b.1 - a.1) / (b.0 - a.0));
                }
            }
        }
        let m = g.len() as f64;
        let mut values: Vec<f64> = g.iter().map(|p| p.1).collect();
        values.sort_by(f64::total_cmp);
        let ties: f64 = values
            .chunk_by(|a, b| a == b)
            .map(|t| t.len() as f64)
            .map(|t| t * (t - 1.0) * (2.0 * t + 5.0))
            .sum();
        variance += (m * (m - 1.0) * (2.0 * m + 5.0) - ties) / 18.0;
    }
    if slopes.len() < 3 {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let pairs = slopes.len() as f64;
    let c = Z90 * variance.sqrt();
    // 1-based ranks (N - C)/2 and (N + C)/2 + 1, clamped to the slopes there are.
    let at = |rank: f64| slopes[(rank.round().max(1.0) as usize - 1).min(slopes.len() - 1)];
    Some(Fit {
        slope: quantile(&slopes, 0.5),
        low: at((pairs - c) / 2.0),
        high: at((pairs + c) / 2.0 + 1.0),
        n,
    })
}

/// Prints one verdict: whether `fit` (scaled by `scale` into `unit`) shows growth
/// above `bound`. True when it passes.
fn verdict(what: &str, fit: Option<Fit>, scale: f64, unit: &str, bound: f64) -> bool {
    let Some(f) = fit else {
        println!("- {what}: FAIL, too few samples to judge (run longer, or restart less often)");
        return false;
    };
    let ok = f.low * scale <= bound;
    println!(
        "- {what}: {:+.2} {unit} (90% interval {:+.2} to {:+.2}; {} samples), bound {bound} {unit}: {}",
        f.slope * scale,
        f.low * scale,
        f.high * scale,
        f.n,
        if ok { "ok" } else { "FAIL, it grows" }
    );
    ok
}

/// The samples of the run's second half past their server's warm-up, per lifetime,
/// as (t, value).
fn judged(
    samples: &[Sample],
    half: f64,
    warmup: f64,
    value: impl Fn(&Sample) -> Option<u64>,
) -> Vec<Vec<(f64, f64)>> {
    let mut lives: Vec<(u32, Vec<(f64, f64)>)> = Vec::new();
    for s in samples.iter().filter(|s| s.t >= half && s.age >= warmup) {
        let Some(v) = value(s) else { continue };
        match lives.last_mut() {
            Some((life, points)) if *life == s.life => points.push((s.t, v as f64)),
            _ => lives.push((s.life, vec![(s.t, v as f64)])),
        }
    }
    lives.into_iter().map(|(_, points)| points).collect()
}

/// The median of the per-interval p99s of the samples in `[from, to)` of the run.
fn p99_median(samples: &[Sample], from: f64, to: f64, p99: impl Fn(&Sample) -> f64) -> f64 {
    let v: Vec<f64> = samples
        .iter()
        .filter(|s| s.t >= from && s.t < to && s.probes >= 10)
        .map(p99)
        .collect();
    quantile(&v, 0.5)
}

#[tokio::main]
async fn main() {
    let args = args_or_exit("soak", args());
    std::process::exit(if run(args).await { 0 } else { 1 });
}

async fn run(args: Args) -> bool {
    fledge_api::client::install_crypto_provider();
    let temp = tempfile::tempdir().unwrap();
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir).unwrap();
    let every = args
        .restart_every
        .unwrap_or((args.duration / 4).clamp(Duration::from_secs(60), Duration::from_secs(900)));
    let warmup = WARMUP.min(every / 3).as_secs_f64();
    let stable = upstream("stable").await;
    let canary = upstream("canary").await;
    let (store, store_url) = match &args.store {
        None => {
            let db = sqlite_path(&dir);
            let url = format!("sqlite://{}", db.display());
            (Store::Sqlite(db), url)
        }
        Some(url) => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at the --store URL: {e}"));
            (Store::Postgres(pool), url.clone())
        }
    };
    let setup = Setup {
        api: free_port(),
        proxy: free_port(),
        store: store_url,
        stable: stable.addr,
        canary: canary.addr,
    };
    let proxy = setup.proxy;
    let metrics = format!("http://{}/metrics", setup.api);
    let restarter = Restarter {
        setup,
        fledge: args.fledge.clone(),
        dir: dir.clone(),
        every,
        kill_every: args.kill_every,
        start: Instant::now(),
    };
    let start = restarter.start;
    let live = Arc::new(Live::default());
    let (server, api) = restarter.serve(&live).await;
    let load = Load::start(proxy, args.rps);

    println!(
        "Soak: `fledge serve` ({} store) for {}s under {} rps through its proxy on {proxy}; \
         rollouts back to back (healthy, failing, healthy, aborted); a restart every {}s \
         (with SIGKILL each {} restarts, else SIGTERM); a row every {}s. Logs in {}.\n",
        if args.store.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        args.duration.as_secs(),
        args.rps,
        every.as_secs(),
        args.kill_every,
        args.sample.as_secs(),
        dir.display(),
    );
    println!("{HEADER}");
    let mut csv = args.csv.as_ref().map(|p| {
        let mut f = std::fs::File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        writeln!(f, "{CSV_HEADER}").unwrap();
        f
    });

    let rollouts = tokio::spawn(rollouts(api.clone(), canary, live.clone()));
    let probes = tokio::spawn(probe(api.clone(), metrics, live.clone()));
    let restarts = tokio::spawn(restarter.run(server, live.clone()));

    let mut samples: Vec<Sample> = Vec::new();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + args.sample, args.sample);
    let (mut sent, mut failed, mut upstream_errors) = (0, 0, 0);
    loop {
        tick.tick().await;
        if restarts.is_finished() {
            println!(
                "\nsoak: the server could not be restarted; see {}",
                dir.display()
            );
            return false;
        }
        if let Some(why) = live.fatal.lock().unwrap().as_ref() {
            println!("\nsoak: {why}");
            break;
        }
        let pid = live.pid.load(Ordering::Relaxed);
        let probes = std::mem::take(&mut *live.probes.lock().unwrap());
        let t = start.elapsed().as_secs_f64();
        let (store_bytes, wal) = store.size().await;
        let rss = (pid != 0).then(|| rss_kib(pid)).flatten();
        let s = Sample {
            t,
            life: live.life.load(Ordering::Relaxed),
            age: t - live.ready_at_ms.load(Ordering::Relaxed) as f64 / 1e3,
            rss_kib: rss.map(|r| r.0),
            anon_kib: rss.map(|r| r.1),
            fds: (pid != 0).then(|| fds(pid)).flatten(),
            store: store_bytes,
            wal,
            p99_rollouts: quantile(&probes.rollouts, 0.99),
            p99_status: quantile(&probes.status, 0.99),
            probes: probes.rollouts.len().min(probes.status.len()),
            api_errors: probes.errors,
            sent: load.sent() - sent,
            failed: load.failed() - failed,
            upstream_errors: load.upstream_errors() - upstream_errors,
            ended: live.ended.load(Ordering::Relaxed),
            restarted: live.restarted.swap(false, Ordering::Relaxed),
        };
        (sent, failed, upstream_errors) = (load.sent(), load.failed(), load.upstream_errors());
        println!("{}", s.row());
        if let Some(f) = csv.as_mut() {
            writeln!(f, "{}", s.csv()).unwrap();
        }
        samples.push(s);
        if start.elapsed() >= args.duration {
            break;
        }
    }

    live.stop.store(true, Ordering::Relaxed);
    let tally = rollouts.await.expect("the rollout loop ends");
    probes.await.expect("the probes end");
    load.stop().await;
    let (server, restarts) = restarts.await.expect("the restarts end");
    let last_stop_in_time = server.terminate(STOP_GRACE).await;

    let fatal = live.fatal.lock().unwrap().is_some();
    summarize(
        &samples,
        &tally,
        &restarts,
        last_stop_in_time,
        args.duration,
        warmup,
    ) && !fatal
}

/// Prints the summary and the verdicts; true when the run passes.
fn summarize(
    samples: &[Sample],
    tally: &Tally,
    restarts: &Restarts,
    last_stop_in_time: bool,
    duration: Duration,
    warmup: f64,
) -> bool {
    let d = duration.as_secs_f64();
    println!("\n## Summary\n");
    println!(
        "- restarts: {} with SIGTERM ({} not stopped within {}s, then killed), {} with SIGKILL; \
         down from the signal to the API answering: median {:.1}s, max {:.1}s",
        restarts.terms,
        restarts.slow_stops,
        STOP_GRACE.as_secs(),
        restarts.kills,
        quantile(&restarts.downtime, 0.5),
        quantile(&restarts.downtime, 1.0),
    );
    if !last_stop_in_time {
        println!(
            "- the last server did not stop within {}s of SIGTERM",
            STOP_GRACE.as_secs()
        );
    }
    for kind in [Kind::Healthy, Kind::Failing, Kind::Aborted] {
        let (ok, other, stuck) = tally.by_kind[kind as usize];
        println!(
            "- {} rollouts: {ok} ended {}, {other} otherwise, {stuck} not in time",
            kind.name(),
            kind.expected().as_str()
        );
    }
    for u in tally.unexpected.iter().take(10) {
        println!("  - {u}");
    }
    let total = |f: fn(&Sample) -> u64, restarted: bool| -> u64 {
        samples
            .iter()
            .filter(|s| s.restarted == restarted)
            .map(f)
            .sum()
    };
    println!(
        "- proxy: {} requests; failed: {} in intervals with a restart, {} in the others \
         (of which {} were a failing canary's 500s)",
        total(|s| s.sent, true) + total(|s| s.sent, false),
        total(|s| s.failed, true),
        total(|s| s.failed, false),
        total(|s| s.upstream_errors, false),
    );
    let first = samples
        .iter()
        .find(|s| s.age >= warmup && s.rss_kib.is_some());
    let last = samples.iter().rev().find(|s| s.rss_kib.is_some());
    if let (Some(a), Some(b)) = (first, last) {
        println!(
            "- from t={:.0}s (first sample past warm-up) to t={:.0}s: RSS {:.1} → {:.1} MiB, \
             fds {} → {}, store {:.2} → {:.2} MiB",
            a.t,
            b.t,
            mib(a.rss_kib.unwrap_or(0)),
            mib(b.rss_kib.unwrap_or(0)),
            show(a.fds, |n| n.to_string()),
            show(b.fds, |n| n.to_string()),
            a.store.unwrap_or(0) as f64 / 1048576.0,
            b.store.unwrap_or(0) as f64 / 1048576.0,
        );
    }
    let range = |f: fn(&Sample) -> Option<u64>| {
        let v: Vec<u64> = samples.iter().filter_map(f).collect();
        (
            v.iter().min().copied().unwrap_or(0),
            v.iter().max().copied().unwrap_or(0),
        )
    };
    let (rss_lo, rss_hi) = range(|s| s.rss_kib);
    let (fd_lo, fd_hi) = range(|s| s.fds);
    let (_, wal_hi) = range(|s| s.wal);
    println!(
        "- over the whole run: RSS {:.1} to {:.1} MiB, fds {fd_lo} to {fd_hi}{}",
        mib(rss_lo),
        mib(rss_hi),
        if samples.iter().any(|s| s.wal.is_some()) {
            format!(", SQLite WAL at most {:.2} MiB", wal_hi as f64 / 1048576.0)
        } else {
            String::new()
        }
    );

    println!(
        "\n## Verdicts (second half of the run, t ≥ {:.0}s; each server past {:.0}s of warm-up)\n",
        d / 2.0,
        warmup
    );
    let rss = fit(&judged(samples, d / 2.0, warmup, |s| s.anon_kib));
    let fd = fit(&judged(samples, d / 2.0, warmup, |s| s.fds));
    let ok_rss = verdict(
        "anonymous RSS within a server's lifetime",
        rss,
        3600.0 / 1024.0,
        "MiB/h",
        RSS_BOUND_MIB_PER_HOUR,
    );
    let ok_fds = verdict(
        "open fds within a server's lifetime",
        fd,
        3600.0,
        "fds/h",
        FDS_BOUND_PER_HOUR,
    );
    let store_points: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t >= d / 2.0)
        .filter_map(|s| Some((s.ended as f64, s.store? as f64)))
        .collect();
    let store_per_hour = fit(&[samples
        .iter()
        .filter(|s| s.t >= d / 2.0)
        .filter_map(|s| Some((s.t, s.store? as f64)))
        .collect()]);
    let ok_store = verdict(
        "store per rollout ended",
        fit(&[store_points]),
        1.0 / 1024.0,
        "KiB/rollout",
        STORE_BOUND_KIB_PER_ROLLOUT,
    );
    if let Some(f) = store_per_hour {
        println!(
            "  (over time: {:+.1} MiB/h; the store keeps every rollout's history)",
            f.slope * 3600.0 / 1048576.0
        );
    }
    let mut ok_p99 = true;
    for (name, p99) in [
        (
            "GET /rollouts",
            (|s: &Sample| s.p99_rollouts) as fn(&Sample) -> f64,
        ),
        ("GET /status", |s: &Sample| s.p99_status),
    ] {
        let early = p99_median(samples, d / 4.0, d / 2.0, p99);
        let late = p99_median(samples, d * 0.75, f64::INFINITY, p99);
        // No late intervals (NaN) leave nothing to judge.
        let ok = late.is_nan() || late <= (early * P99_FACTOR).max(P99_FLOOR_MS);
        println!(
            "- {name} p99 (median of the intervals): {early:.1} ms in the second quarter, \
             {late:.1} ms in the last; bound: {P99_FACTOR}× or {P99_FLOOR_MS} ms: {}",
            if ok { "ok" } else { "FAIL, it grows" }
        );
        ok_p99 &= ok;
    }
    let ended = samples.last().map_or(0, |s| s.ended);
    if ended == 0 {
        println!("- no rollout ended: FAIL");
    }
    let pass = ok_rss && ok_fds && ok_store && ok_p99 && ended > 0;
    println!("\n{}", if pass { "PASS" } else { "FAIL" });
    pass
}
