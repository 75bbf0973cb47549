//! `fledge demo`: a whole canary rollout on this machine, in one process that stops
//! by itself.
//!
//! It starts two demo backends on loopback (stable `v1`, and the canary whose
//! behaviour the scenario chooses), the server (a temporary SQLite store, the
//! built-in proxy, the controller, the API and web UI) through
//! [`fledge_server::start`], and a bounded load generator against the proxy; then it
//! applies the rollout spec through the HTTP API like any client, shows the rollout
//! live, and prints the verdict with the time it took to decide and the failed
//! canary requests users saw.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use clap::Args;

use crate::demo::backend::{Backend, BackendProfile};
use crate::demo::load::{LoadConfig, LoadGenerator};
use crate::demo::report::{Frame, Outcome, ProxyCount, Verdict};
use crate::demo::scenario::{self, Scenario};

use super::client::{ApiClient, runtime};
use crate::view::follow::{LiveView, Target};
use crate::view::output::latency;

/// Arguments of `fledge demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// What the canary does: stays healthy, answers 5% errors, or is 3× slower.
    #[arg(long, value_enum, default_value_t = Scenario::Healthy)]
    pub scenario: Scenario,

    /// The canary's error rate (`5%` or `0.05`), instead of the scenario's.
    #[arg(long, value_name = "RATE", value_parser = scenario::parse_rate)]
    pub canary_error_rate: Option<f64>,

    /// The canary's median latency in milliseconds, instead of the scenario's.
    #[arg(long, value_name = "MS")]
    pub canary_latency_ms: Option<u64>,

    /// A rollout spec to apply instead of the built-in one (its `app` becomes the
    /// demo's app).
    #[arg(short = 'f', long = "file", value_name = "SPEC")]
    pub file: Option<PathBuf>,

    /// Requests per second the load generator sends through the proxy.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub rps: u32,

    /// Port of the API and web UI on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub ui_port: u16,

    /// Keep the web UI up after the verdict, until Ctrl-C.
    #[arg(long)]
    pub keep_open: bool,
}

/// Runs `fledge demo`: 0 when the demo ran to a verdict (promoted or rolled back),
/// 1 when it could not.
pub fn run(args: &DemoArgs) -> ExitCode {
    init_logging();
    let Some(runtime) = runtime(&mut tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(demo(args)) {
        Ok(Outcome::Unfinished(_)) => ExitCode::FAILURE,
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Quiet logs unless `RUST_LOG` asks: the demo's own output is the show.
fn init_logging() {
    crate::logs::init(
        crate::logs::LogFormat::Text,
        tracing::level_filters::LevelFilter::ERROR,
    );
}

/// A directory removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("fledge-demo-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create the demo's directory {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server configuration of a demo run, as the YAML a user would write.
fn server_config_yaml(
    ui_port: u16,
    store: &Path,
    app: &str,
    stable: &BackendProfile,
    stable_addr: SocketAddr,
    canary_addr: SocketAddr,
) -> String {
    // Debug formatting quotes and escapes the strings for YAML's double-quoted style.
    format!(
        "listen: 127.0.0.1:{ui_port}\n\
         store: {store:?}\n\
         apps:\n  \
           - name: {app:?}\n    \
             listen: 127.0.0.1:0\n    \
             stable:\n      \
               version: {version:?}\n      \
               endpoints: [\"{stable_addr}\"]\n    \
             canary:\n      \
               endpoints: [\"{canary_addr}\"]\n",
        store = format!("sqlite://{}", store.display()),
        version = stable.version,
    )
}

async fn demo(args: &DemoArgs) -> anyhow::Result<Outcome> {
    // The spec first: a bad file should fail before anything starts.
    let (spec_text, origin) = match &args.file {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the spec file {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (
            scenario::default_spec(args.scenario).to_string(),
            "the built-in demo spec".to_string(),
        ),
    };
    let spec = fledge_spec::parse_spec(&spec_text, &origin).map_err(|e| anyhow::anyhow!("{e}"))?;
    let plan = scenario::plan(
        args.scenario,
        &spec.version,
        args.canary_error_rate,
        args.canary_latency_ms.map(Duration::from_millis),
    );
    anyhow::ensure!(
        spec.version != plan.stable.version,
        "the spec rolls out version {:?}, which is the demo's stable version; use another",
        spec.version
    );
    let stages_time: f64 = spec
        .stages
        .iter()
        .filter_map(|s| s.duration)
        .map(|d| d.as_secs_f64())
        .sum();
    let manual = spec
        .stages
        .iter()
        .any(|s| s.duration.is_none() && !(s.is_final && s.promote));
    // The demo stops by itself: the stages' time plus a margin for the decisions.
    let budget = Duration::from_secs_f64(stages_time + 30.0).min(Duration::from_secs(30 * 60));

    let dir = TempDir::new()?;
    let stable = Backend::start(plan.stable.clone(), 1).await?;
    let canary = Backend::start(plan.canary.clone(), 2).await?;
    let yaml = server_config_yaml(
        args.ui_port,
        &dir.0.join("fledge.db"),
        &spec.app,
        &plan.stable,
        stable.addr(),
        canary.addr(),
    );
    let config = fledge_server::config::ServerConfig::parse(&yaml, "<demo config>")?;
    let server = fledge_server::start(config, fledge_server::StartOptions::default())
        .await
        .context("cannot start the server")?;
    // Ctrl-C stops the demo early, but still through the shutdown below, so that
    // no listener or temporary store is left behind.
    let result = tokio::select! {
        r = drive(args, &spec_text, &spec, &server, &stable, &canary, budget, manual) => r,
        _ = tokio::signal::ctrl_c() => {
            println!("\nInterrupted: stopping the demo.");
            Ok(Outcome::Unfinished("interrupted".to_string()))
        }
    };
    if matches!(result, Ok(Outcome::Promoted | Outcome::RolledBack)) && args.keep_open {
        println!(
            "\nThe web UI stays up at http://{}/ : press Ctrl-C to stop.",
            server.api_addr()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    server.shutdown().await;
    stable.shutdown().await;
    canary.shutdown().await;
    drop(dir);
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    args: &DemoArgs,
    spec_text: &str,
    spec: &fledge_spec::RolloutSpec,
    server: &fledge_server::RunningServer,
    stable: &Backend,
    canary: &Backend,
    budget: Duration,
    manual: bool,
) -> anyhow::Result<Outcome> {
    let app = spec.app.as_str();
    let versions = (
        stable.profile().version.as_str(),
        canary.profile().version.as_str(),
    );
    let proxy_addr = server
        .proxy_addr(app)
        .await
        .with_context(|| format!("the server started no proxy for {app}"))?;
    let api = format!("http://{}", server.api_addr());
    println!(
        "fledge demo: {}",
        describe(args.scenario, stable.profile(), canary.profile())
    );
    println!("  web UI:  {api}/");
    println!(
        "  proxy:   http://{proxy_addr}/  ({app}: {} stable, {} canary)",
        versions.0, versions.1
    );
    println!(
        "  load:    {} requests/s through the proxy, for at most {:.0} s",
        args.rps,
        budget.as_secs_f64() + 3.0
    );
    if manual {
        println!(
            "  note:    a stage of this spec waits for a manual promote: `fledge promote {app} --server {api}`"
        );
    }
    println!();

    let load = LoadGenerator::start(LoadConfig {
        target: proxy_addr,
        rps: args.rps,
        max_duration: budget + Duration::from_secs(3),
        max_in_flight: 512,
    })?;
    // A short warm-up, so that stable has a baseline before the canary gets traffic.
    let warm_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < warm_until && stable.counters().requests() < u64::from(args.rps) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let client = ApiClient::new(&api, None, None)?;
    let content_type = if spec_text.trim_start().starts_with('{') {
        "application/json"
    } else {
        "application/yaml"
    };
    let created = client
        .create_rollout(spec_text.to_string(), content_type, Some("the demo's spec"))
        .await
        .context("the server refused the demo's rollout")?;
    let id = created.id;
    let applied = Instant::now();
    let deadline = applied + budget;
    let mut live = LiveView::new(Target::Stdout);
    let period = Duration::from_millis(if std::io::stdout().is_terminal() {
        250
    } else {
        500
    });

    let (view, decided_at) = loop {
        let view = client.rollout(&id).await?;
        let proxy = proxy_counts(server, app, versions).await;
        let snapshot = load.snapshot();
        let frame = Frame {
            elapsed: applied.elapsed(),
            rollout: &view,
            load: &snapshot,
            versions,
            proxy,
        };
        live.show(&frame.render(), &frame.change_key());
        if view.is_terminal() || Instant::now() >= deadline || load.is_finished() {
            break (view, SystemTime::now());
        }
        tokio::time::sleep(period).await;
    };

    // Requests in flight at the decision still count: stop, then wait for them.
    let snapshot = load.stop().await;
    let proxy = proxy_counts(server, app, versions).await;
    let verdict = Verdict::new(
        &view,
        versions,
        canary.counters().first_request(),
        decided_at,
        &snapshot,
        proxy,
    );
    println!();
    print!("{}", verdict.render());
    println!("  web UI was at {api}/");
    Ok(verdict.outcome)
}

/// What the proxy counted for the stable and canary versions, by version label (so
/// the counts survive the canary's promotion to stable).
async fn proxy_counts(
    server: &fledge_server::RunningServer,
    app: &str,
    (stable, canary): (&str, &str),
) -> (ProxyCount, ProxyCount) {
    let handles = server.shared().apps.proxy_handles().await;
    let Some(handle) = handles.iter().find(|h| h.app() == app) else {
        return Default::default();
    };
    let count = |version: &str| {
        let c = handle.stats(version);
        ProxyCount {
            requests: c.requests,
            errors: c.errors,
        }
    };
    (count(stable), count(canary))
}

fn describe(scenario: Scenario, stable: &BackendProfile, canary: &BackendProfile) -> String {
    let arm = |p: &BackendProfile| {
        format!(
            "{} answers in {} (p95 {}) with {} errors",
            p.version,
            latency(p.median_latency.as_secs_f64()),
            latency(p.latency_quantile(0.95).as_secs_f64()),
            crate::view::output::percent(p.error_rate)
        )
    };
    let name = match scenario {
        Scenario::Healthy => "healthy",
        Scenario::Errors => "errors",
        Scenario::Slow => "slow",
        Scenario::Dark => "dark (users on stable, the canary judged on copies)",
        Scenario::BlueGreen => "blue-green (a preview on copies, then every user at once)",
    };
    format!(
        "scenario {name}: stable {}; canary {}",
        arm(stable),
        arm(canary)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_parses() {
        let stable = scenario::plan(Scenario::Healthy, "v2", None, None).stable;
        let yaml = server_config_yaml(
            0,
            Path::new("/tmp/x y/fledge.db"),
            "demo-shop",
            &stable,
            "127.0.0.1:9001".parse().unwrap(),
            "127.0.0.1:9002".parse().unwrap(),
        );
        let config = fledge_server::config::ServerConfig::parse(&yaml, "test").unwrap();
        assert_eq!(config.apps.len(), 1);
        assert_eq!(config.apps[0].name, "demo-shop");
        assert_eq!(config.store, "sqlite:///tmp/x y/fledge.db");
        assert_eq!(
            config.apps[0].stable.endpoints,
            vec!["127.0.0.1:9001".to_string()]
        );
    }
}
