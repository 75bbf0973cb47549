//! App `shop` routed by a real HAProxy (runtime API on a unix socket) and judged
//! from a real Prometheus scraping the versions' exporter every second, served by an
//! in-process server. HAProxy and Prometheus stop when the world is dropped.

use std::time::Duration;

use fledge_providers::router::HaproxyRouter;
use fledge_providers::testing::TestServer;
use fledge_providers::testing::backend::{Behaviour, MeteredHaproxy};
use fledge_providers::testing::exporter::Exporter;
use fledge_providers::testing::process::{Haproxy, Prometheus};
use fledge_server::{RunningServer, StartOptions, start};

use super::Http;

/// The running pieces, in the order they stop: the server before what it drives.
pub struct World {
    /// The in-process server.
    pub server: RunningServer,
    /// A client of its API.
    pub api: Http,
    /// A client of HAProxy's runtime API, to read what it serves.
    pub router: HaproxyRouter,
    /// HAProxy, with backend `be_shop` holding servers `stable` and `canary`.
    pub haproxy: Haproxy,
    /// Prometheus, scraping the exporter.
    pub prometheus: Prometheus,
    /// The stable version (`v1`).
    pub stable: TestServer,
    /// The canary version (`v2`).
    pub canary: TestServer,
    _exporter: Exporter,
    _dir: tempfile::TempDir,
}

/// Starts the world; the canary fails every `canary_fail_every`-th request when
/// set. `router_options` are extra YAML lines of the app's `router:` block (each
/// indented by six spaces).
pub async fn world(canary_fail_every: Option<u64>, router_options: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let MeteredHaproxy {
        haproxy,
        prometheus,
        stable,
        canary,
        exporter,
    } = MeteredHaproxy::start(
        Behaviour::new(200),
        Behaviour::failing_every(canary_fail_every),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let text = format!(
        "listen: 127.0.0.1:0\nstore: sqlite://{db}\ncontroller:\n  tick: 200ms\napps:\n  - name: shop\n    listen: 127.0.0.1:0\n    stable:\n      version: v1\n      endpoints: [\"{stable}\"]\n    canary:\n      endpoints: [\"{canary}\"]\n    router:\n      type: haproxy\n      socket: {socket}\n      backend: be_shop\n{router_options}    metrics:\n      type: prometheus\n      url: {prometheus}\n",
        db = dir.path().join("fledge.db").display(),
        stable = stable.addr,
        canary = canary.addr,
        socket = haproxy.socket.display(),
        prometheus = prometheus.url,
    );
    let cfg = fledge_server::config::ServerConfig::parse(&text, "test.yaml").unwrap();
    let server = start(cfg, StartOptions::default()).await.unwrap();
    let api = Http::new(server.api_addr());
    let router = haproxy.router().unwrap();
    World {
        server,
        api,
        router,
        haproxy,
        prometheus,
        stable,
        canary,
        _exporter: exporter,
        _dir: dir,
    }
}
