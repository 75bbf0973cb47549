//! The server's configuration file (`fledge.yaml`): the API address, the store, the
//! registered apps with their stable and canary upstreams, the access tokens and the
//! limits.
//!
//! The shape is a stable contract (see DESIGN.md, "Server configuration"): fields are
//! only ever added, never renamed. Unknown fields are errors that name their location.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

pub use fledge_api::app::{
    AppConfig, AppTimeouts, BUILTIN, CanaryConfig, ProviderConfig, Role, StableConfig, TlsConfig,
    UpstreamConfig, UpstreamProtocol, UpstreamTlsConfig, validate_endpoint,
};

/// The default API and web UI address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default store: a SQLite file next to where the server runs.
pub const DEFAULT_STORE: &str = "sqlite://fledge.db";

/// The whole server configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerConfig {
    /// Address of the HTTP API and web UI, `127.0.0.1:8080` by default. Any address
    /// other than loopback requires access tokens (or `--insecure`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serve the API and web UI over HTTPS with this certificate (plain HTTP when
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Where rollouts, events and apps are kept: `sqlite://PATH` (the default is
    /// `sqlite://fledge.db`) or `postgres://user@host/db`.
    #[serde(default = "default_store")]
    pub store: String,
    /// The apps whose traffic fledge shifts. More can be registered at run time with
    /// `PUT /apps/{app}`.
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// Who may call the API, and with which role.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Request size and time limits of the API.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// How often the controller looks at every active rollout.
    #[serde(default)]
    pub controller: ControllerConfig,
    /// The built-in proxy's threads.
    #[serde(default)]
    pub proxy: ProxyThreadsConfig,
    /// The Alertmanager whose firing alerts fail the rollouts that name them
    /// (a spec's `alerts`). Default: none, and a spec with `alerts` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<fledge_providers::alerts::AlertmanagerSettings>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls: None,
            store: default_store(),
            apps: Vec::new(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            controller: ControllerConfig::default(),
            proxy: ProxyThreadsConfig::default(),
            alertmanager: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("the default address parses")
}

fn default_store() -> String {
    DEFAULT_STORE.to_owned()
}

/// Access control.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthConfig {
    /// Bearer tokens, stored as the SHA-256 of the token (`fledge token` prints one).
    /// More can be given in the `FLEDGE_TOKENS` environment variable. With no token
    /// at all the API is open, which `serve` only allows on loopback.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// One access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenConfig {
    /// Who holds the token; recorded as the actor of every action taken with it.
    pub name: String,
    /// What the token may do: `viewer` (read), `operator` (also promote, abort,
    /// pause, resume, retry, start rollouts) or `admin` (also register apps).
    pub role: Role,
    /// The lowercase hex SHA-256 of the token. The token itself is never stored.
    pub sha256: String,
}

/// Request limits of the API.
///
/// The rate limit is a token bucket per client: a client is the name of the token a
/// request carries (bearer token or web UI session), or its source address (IPv6:
/// the /64) when it carries no valid one. `/healthz` and `/readyz` are exempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsConfig {
    /// Largest accepted request body, in bytes (1 MiB by default); larger bodies
    /// are answered 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How long one API request may take before it is answered 408 (30s by
    /// default). The event stream is exempt.
    #[serde(
        default = "default_request_timeout",
        with = "fledge_spec::duration::required"
    )]
    pub request_timeout: Duration,
    /// API requests per second one client may make, sustained (50 by default);
    /// beyond it requests are answered 429 with `Retry-After`. 0 turns rate
    /// limiting off.
    #[serde(default = "default_rate_per_second")]
    pub rate_per_second: u32,
    /// How many requests one client may make at once above the sustained rate (100
    /// by default): the size of its bucket, full when it starts.
    #[serde(default = "default_rate_burst")]
    pub rate_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            request_timeout: default_request_timeout(),
            rate_per_second: default_rate_per_second(),
            rate_burst: default_rate_burst(),
        }
    }
}

fn default_rate_per_second() -> u32 {
    50
}

fn default_rate_burst() -> u32 {
    100
}

fn default_max_body() -> usize {
    1024 * 1024
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Controller settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControllerConfig {
    /// How often every active rollout is looked at (1s by default). A rollout's
    /// `analysis.interval` can only make its own judgements less frequent.
    #[serde(default = "default_tick", with = "fledge_spec::duration::required")]
    pub tick: Duration,
    /// How often the built-in proxies' counters are looked at for new evidence (50ms
    /// by default; `0s` turns it off). A rollout whose metrics come from its app's
    /// built-in proxy, and whose stage is judged only by anytime-valid sequential
    /// tests, is judged as its canary's requests are counted (after a batch of
    /// requests, or on the next look once 100ms have passed) instead of once per
    /// `analysis.interval`: a bad canary is rolled back within a look of the
    /// evidence being in. The tick stays the backstop.
    #[serde(
        default = "default_evidence_interval",
        with = "fledge_spec::duration::required"
    )]
    pub evidence_interval: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            tick: default_tick(),
            evidence_interval: default_evidence_interval(),
        }
    }
}

/// The built-in proxy's threads, shared by every app's listener.
///
/// Each worker is an OS thread with its own event loop that accepts client
/// connections from every proxy listener and serves each one to its end, over
/// upstream connections of its own: a request never hops between threads. The API
/// and the controller run on other threads. A worker costs one thread, its event
/// loop and its idle upstream connections (up to 256 per upstream endpoint); more
/// workers than cores only add switching.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyThreadsConfig {
    /// How many worker threads (1 to 256); one per core when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Run the proxies in a data-plane process of their own, reached on this Unix
    /// socket, that keeps serving while `fledge serve` crashes, restarts or is
    /// upgraded (docs/server.md, "A data plane of its own"). Absent: the proxies
    /// run inside `fledge serve` and stop with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_plane: Option<DataPlaneConfig>,
}

/// `proxy.dataPlane`: where the separate data-plane process listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataPlaneConfig {
    /// Its control socket, created by the data plane with mode 0600 (a relative
    /// path is taken from the config file's directory).
    pub socket: PathBuf,
}

/// Most proxy worker threads a config may ask for.
pub const MAX_PROXY_WORKERS: usize = 256;

impl ProxyThreadsConfig {
    /// The number of workers to start: the configured one, or one per core.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

fn default_tick() -> Duration {
    Duration::from_secs(1)
}

fn default_evidence_interval() -> Duration {
    Duration::from_millis(50)
}

// === impl ServerConfig ===

impl ServerConfig {
    /// Reads and checks a configuration file. Errors name the file, line and column.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        if let Some(plane) = config.proxy.data_plane.as_mut()
            && plane.socket.is_relative()
        {
            // The data plane may be started from another directory.
            let dir = path.parent().unwrap_or(Path::new(""));
            plane.socket = std::path::absolute(dir.join(&plane.socket))
                .with_context(|| format!("{}: proxy.dataPlane.socket", path.display()))?;
        }
        Ok(config)
    }

    /// Parses and checks configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Self> {
        let config: ServerConfig = parse_yaml(text, origin)?;
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(config)
    }

    /// Checks what the types alone cannot: unique, well-formed app names, endpoints
    /// and listeners; well-formed token hashes.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        let mut listeners = BTreeMap::new();
        for (i, app) in self.apps.iter().enumerate() {
            app.validate()
                .map_err(|e| format!("apps[{i}] ({}): {e}", app.name))?;
            if !names.insert(app.name.as_str()) {
                return Err(format!(
                    "apps[{i}].name: `{}` is registered twice",
                    app.name
                ));
            }
            // Port 0 asks the system for a free port, so it never collides.
            if let Some(listen) = app.listen.filter(|l| l.port() != 0) {
                if listen == self.listen {
                    return Err(format!(
                        "apps[{i}].listen: {listen} is also the API's address"
                    ));
                }
                if let Some(other) = listeners.insert(listen, app.name.as_str()) {
                    return Err(format!(
                        "apps[{i}].listen: {listen} is already the listener of `{other}`"
                    ));
                }
            }
        }
        if let Some(plane) = &self.proxy.data_plane {
            // The longest path a Unix socket address holds, with its NUL.
            let len = plane.socket.as_os_str().len();
            if len == 0 || len > 107 {
                return Err(format!(
                    "proxy.dataPlane.socket: a Unix socket path must be 1 to 107 bytes long, found {len}"
                ));
            }
        }
        for (i, token) in self.auth.tokens.iter().enumerate() {
            if token.name.trim().is_empty() {
                return Err(format!("auth.tokens[{i}].name: must not be empty"));
            }
            if token.sha256.len() != 64 || !token.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "auth.tokens[{i}].sha256: expected 64 hex digits (the SHA-256 of the \
                     token, as `fledge token` prints it), found {} characters",
                    token.sha256.len()
                ));
            }
        }
        if let Some(tls) = &self.tls {
            tls.validate().map_err(|e| format!("tls.{e}"))?;
        }
        if self.limits.rate_per_second > 0 && self.limits.rate_burst == 0 {
            return Err(
                "limits.rateBurst: must be at least 1 (set limits.ratePerSecond to 0 to turn \
                 rate limiting off)"
                    .to_owned(),
            );
        }
        if self.limits.max_body_bytes == 0 {
            return Err("limits.maxBodyBytes: must be at least 1".to_owned());
        }
        if self.controller.tick.is_zero() {
            return Err("controller.tick: must be longer than 0s".to_owned());
        }
        let evidence = self.controller.evidence_interval;
        if !evidence.is_zero() && evidence >= self.controller.tick {
            return Err(format!(
                "controller.evidenceInterval: must be shorter than controller.tick ({}), \
                 or 0s to turn judging as evidence arrives off",
                fledge_spec::duration::format(self.controller.tick)
            ));
        }
        if let Some(n) = self.proxy.workers
            && !(1..=MAX_PROXY_WORKERS).contains(&n)
        {
            return Err(format!(
                "proxy.workers: must be from 1 to {MAX_PROXY_WORKERS}, found {n}"
            ));
        }
        Ok(())
    }
}

/// Reads an app's stored config.
///
/// Servers before the one duration grammar stored some durations of provider
/// settings the way humantime writes them (`1s 500ms`); those are read as the
/// compact form (`1s500ms`) so that an upgrade loses no app.
pub fn app_from_record(record: &fledge_store::AppRecord) -> anyhow::Result<AppConfig> {
    let mut config = record.config.clone();
    compact_spaced_durations(&mut config);
    serde_json::from_value(config).map_err(|e| {
        anyhow::anyhow!(
            "the stored config of app `{}` cannot be read: {e}",
            record.name
        )
    })
}

/// Rewrites every string of `<integer><unit>` terms separated by single spaces
/// (`1m 30s`) into the compact form (`1m30s`); other strings stay as they are.
fn compact_spaced_durations(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) if text.contains(' ') => {
            let compact = text.replace(' ', "");
            if fledge_spec::duration::parse(&compact).is_ok()
                && text
                    .split(' ')
                    .all(|term| fledge_spec::duration::parse(term).is_ok())
            {
                *text = compact;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(compact_spaced_durations),
        serde_json::Value::Object(map) => map.values_mut().for_each(compact_spaced_durations),
        _ => {}
    }
}

/// The configuration is read by the same parser as rollout specs, so its errors have
/// the same shape: file, line, column, field, expected and found.
fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> anyhow::Result<T> {
    fledge_spec::from_yaml_str(text, origin).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_apps_with_spaced_durations_still_load() {
        let record = fledge_store::AppRecord {
            name: "shop".into(),
            config: serde_json::json!({
                "name": "shop",
                "stable": {"version": "v1", "endpoints": ["127.0.0.1:9001"]},
                "router": {"type": "haproxy", "socket": "/run/haproxy.sock",
                           "backend": "shop", "timeout": "1s 500ms"},
                "metrics": {"type": "prometheus", "url": "http://127.0.0.1:9090",
                            "timeout": "2s"},
            }),
            created_at: fledge_store::Timestamp(0),
            updated_at: fledge_store::Timestamp(0),
        };
        let app = app_from_record(&record).unwrap();
        let ProviderConfig::Detailed { settings, .. } = &app.router else {
            panic!("{:?}", app.router);
        };
        assert_eq!(settings["timeout"], "1s500ms");
        // Text that is not a duration is left alone, and a bad one is still an error.
        let mut other = serde_json::json!({"a": "two words", "b": ["1m 30s"]});
        compact_spaced_durations(&mut other);
        assert_eq!(other, serde_json::json!({"a": "two words", "b": ["1m30s"]}));
    }

    const EXAMPLE: &str = r#"
listen: 127.0.0.1:8080
store: sqlite://fledge.db
apps:
  - name: lemonade-checkout
    listen: 127.0.0.1:8000
    stable:
      version: v2.3.0
      endpoints: ["127.0.0.1:9001"]
    canary:
      endpoints: ["127.0.0.1:9002"]
    router: builtin
    metrics: builtin
"#;

    /// Why `text` (as file `f.yaml`) is not a config.
    fn parse_error(text: &str) -> String {
        ServerConfig::parse(text, "f.yaml").unwrap_err().to_string()
    }

    /// The example with HAProxy as the router and the app field `field`.
    fn with_haproxy(field: &str) -> String {
        EXAMPLE.replace(
            "router: builtin",
            &format!("router: {{type: haproxy, socket: /run/haproxy.sock}}\n    {field}"),
        )
    }

    /// Asserts that `text` is refused with an error that mentions `expected`.
    fn assert_refused(text: &str, expected: &str) {
        let err = parse_error(text);
        assert!(err.contains(expected), "{err}");
    }

    #[test]
    fn design_example_parses() {
        let c = ServerConfig::parse(EXAMPLE, "fledge.yaml").unwrap();
        assert_eq!(c.apps.len(), 1);
        let app = &c.apps[0];
        assert_eq!(app.stable.version, "v2.3.0");
        assert_eq!(app.canary_endpoints(), ["127.0.0.1:9002"]);
        assert!(app.router.is_builtin());
        assert_eq!(c.limits.max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn unknown_field_is_an_error_with_its_location() {
        let text = EXAMPLE.replace("router: builtin", "routr: builtin");
        let err = ServerConfig::parse(&text, "fledge.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("fledge.yaml:12:5: apps[0].routr"), "{err}");
        assert!(err.contains("did you mean `router`"), "{err}");
    }

    #[test]
    fn duplicate_app_and_bad_hash_are_rejected() {
        let twice = format!("{EXAMPLE}{}", &EXAMPLE[EXAMPLE.find("  - name").unwrap()..]);
        let err = parse_error(&twice);
        assert!(err.contains("twice") || err.contains("listener"), "{err}");

        let text =
            format!("{EXAMPLE}auth:\n  tokens:\n    - {{name: ci, role: operator, sha256: abc}}\n");
        assert_refused(&text, "auth.tokens[0].sha256");
    }

    #[test]
    fn app_names_and_versions_follow_the_spec_rules() {
        // A name no spec can name, or a stable version no undo could go back to.
        let upper = EXAMPLE.replace("name: lemonade-checkout", "name: Lemonade_Checkout");
        assert_refused(
            &upper,
            "apps[0] (Lemonade_Checkout): name: expected 1 to 63 lowercase",
        );
        let plus = EXAMPLE.replace("version: v2.3.0", "version: v2.3.0+build.7");
        assert_refused(&plus, "stable.version: expected 1 to 63 letters");
        let previous = format!(
            "{EXAMPLE}    previousStable: {{version: \"-v1\", endpoints: [\"127.0.0.1:9001\"]}}\n"
        );
        assert_refused(
            &previous,
            "previousStable.version: expected 1 to 63 letters",
        );
    }

    #[test]
    fn detailed_provider_keeps_its_settings() {
        let text = EXAMPLE.replace(
            "router: builtin",
            "router: {type: haproxy, socket: /run/haproxy.sock}",
        );
        let c = ServerConfig::parse(&text, "f.yaml").unwrap();
        assert_eq!(c.apps[0].router.kind(), "haproxy");
    }

    #[test]
    fn app_timeouts_parse_default_and_are_checked() {
        let c = ServerConfig::parse(EXAMPLE, "f.yaml").unwrap();
        assert_eq!(c.apps[0].timeouts, AppTimeouts::default());
        assert_eq!(
            crate::builtin::proxy_timeouts(&c.apps[0].timeouts)
                .response_headers
                .as_secs(),
            30
        );

        let text = format!("{EXAMPLE}    timeouts: {{connect: 500ms, response: 5s}}\n");
        let c = ServerConfig::parse(&text, "f.yaml").unwrap();
        let t = c.apps[0].timeouts;
        assert_eq!(t.connect, Duration::from_millis(500));
        assert_eq!(t.response, Duration::from_secs(5));
        assert_eq!(t.client_headers, Duration::from_secs(10));
        // Stored as JSON in the store, and read back the same.
        let json = serde_json::to_value(&c.apps[0]).unwrap();
        assert_eq!(json["timeouts"]["response"], "5s");
        let back: AppConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, c.apps[0]);

        let text = format!("{EXAMPLE}    timeouts: {{response: 0s}}\n");
        assert_refused(&text, "apps[0] (lemonade-checkout): timeouts.response");

        let text = format!("{EXAMPLE}    timeouts: {{respons: 5s}}\n");
        assert_refused(&text, "timeouts.respons");

        assert_refused(
            &with_haproxy("timeouts: {response: 5s}"),
            "only the built-in proxy",
        );
    }

    #[test]
    fn tls_and_rate_limits_parse_with_defaults() {
        let text = format!(
            "{}tls: {{cert: api.crt, key: api.key}}\nlimits: {{ratePerSecond: 5}}\n",
            EXAMPLE.replace(
                "    router: builtin",
                "    tls: {cert: shop.pem, key: shop.key, handshakeTimeout: 2s}\n    router: builtin"
            )
        );
        let c = ServerConfig::parse(&text, "f.yaml").unwrap();
        let api = c.tls.as_ref().unwrap();
        assert_eq!(api.cert, Path::new("api.crt"));
        assert_eq!(api.handshake_timeout, Duration::from_secs(10));
        let app = c.apps[0].tls.as_ref().unwrap();
        assert_eq!(app.key, Path::new("shop.key"));
        assert_eq!(app.handshake_timeout, Duration::from_secs(2));
        assert_eq!((c.limits.rate_per_second, c.limits.rate_burst), (5, 100));
        assert_eq!(ServerConfig::default().limits.rate_per_second, 50);
    }

    #[test]
    fn bad_tls_and_rate_settings_are_rejected() {
        let external = EXAMPLE.replace(
            "    router: builtin",
            "    tls: {cert: a.pem, key: a.key}\n    router: {type: haproxy, socket: /s}",
        );
        assert_refused(
            &external,
            "apps[0] (lemonade-checkout): tls: only the built-in",
        );

        let zero = format!("{EXAMPLE}tls: {{cert: a.pem, key: a.key, handshakeTimeout: 0s}}\n");
        assert_refused(&zero, "tls.handshakeTimeout");

        let no_burst = format!("{EXAMPLE}limits: {{rateBurst: 0}}\n");
        assert_refused(&no_burst, "limits.rateBurst");
        // Off entirely: no burst needed.
        let off = format!("{EXAMPLE}limits: {{ratePerSecond: 0, rateBurst: 0}}\n");
        assert!(ServerConfig::parse(&off, "f.yaml").is_ok());
    }

    #[test]
    fn proxy_workers_default_to_the_cores_and_are_bounded() {
        let default = ServerConfig::parse(EXAMPLE, "f.yaml").unwrap();
        assert_eq!(default.proxy.workers, None);
        assert!(default.proxy.worker_count() >= 1);

        let two = ServerConfig::parse(&format!("{EXAMPLE}proxy: {{workers: 2}}\n"), "f.yaml");
        assert_eq!(two.unwrap().proxy.worker_count(), 2);

        for bad in ["0", "257"] {
            let text = format!("{EXAMPLE}proxy: {{workers: {bad}}}\n");
            let err = ServerConfig::parse(&text, "f.yaml")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("proxy.workers: must be from 1 to 256"),
                "{err}"
            );
        }
    }

    #[test]
    fn upstream_protocols_parse_and_are_checked() {
        let default = ServerConfig::parse(EXAMPLE, "f.yaml").unwrap();
        assert_eq!(default.apps[0].upstream.protocol, UpstreamProtocol::Http1);
        assert!(
            !serde_json::to_value(&default.apps[0])
                .unwrap()
                .as_object()
                .unwrap()
                .contains_key("upstream"),
            "the default is not stored"
        );

        let h2c = format!("{EXAMPLE}    upstream: {{protocol: h2c}}\n");
        let c = ServerConfig::parse(&h2c, "f.yaml").unwrap();
        assert_eq!(c.apps[0].upstream.protocol, UpstreamProtocol::H2c);

        let tls = format!(
            "{EXAMPLE}    upstream:\n      protocol: tls\n      tls: {{ca: /etc/fledge/ca.pem, serverName: shop.internal}}\n"
        );
        let c = ServerConfig::parse(&tls, "f.yaml").unwrap();
        let up = &c.apps[0].upstream;
        assert_eq!(up.protocol, UpstreamProtocol::Tls);
        let t = up.tls.as_ref().unwrap();
        assert_eq!(t.ca.as_deref(), Some(Path::new("/etc/fledge/ca.pem")));
        assert_eq!(t.server_name.as_deref(), Some("shop.internal"));
        // Stored as JSON in the store, and read back the same.
        let json = serde_json::to_value(&c.apps[0]).unwrap();
        assert_eq!(json["upstream"]["tls"]["serverName"], "shop.internal");
        let back: AppConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, c.apps[0]);

        assert_refused(
            &format!("{EXAMPLE}    upstream: {{protocol: h3}}\n"),
            "apps[0].upstream.protocol",
        );
        assert_refused(
            &format!("{EXAMPLE}    upstream: {{protocol: h2c, tls: {{ca: a.pem}}}}\n"),
            "apps[0] (lemonade-checkout): upstream.tls: only used with `protocol: tls`, found protocol `h2c`",
        );
        assert_refused(
            &format!("{EXAMPLE}    upstream: {{protocol: tls, tls: {{serverName: \"a b\"}}}}\n"),
            "upstream.tls.serverName: expected a DNS name or an IP address, found `a b`",
        );
        assert_refused(
            &format!("{EXAMPLE}    upstream: {{protocol: tls, tls: {{ca: \"\"}}}}\n"),
            "upstream.tls.ca: must name a PEM file",
        );
        assert_refused(
            &format!("{EXAMPLE}    upstream: {{protocol: tls, tls: {{sni: x}}}}\n"),
            "apps[0].upstream.tls.sni",
        );
        assert_refused(
            &with_haproxy("upstream: {protocol: h2c}"),
            "upstream: only the built-in proxy uses it",
        );
    }

    #[test]
    fn the_upstream_ca_file_is_read_and_a_bad_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["shop.internal".to_owned()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let config = |ca: &Path, name: Option<&str>| UpstreamConfig {
            protocol: UpstreamProtocol::Tls,
            tls: Some(UpstreamTlsConfig {
                ca: Some(ca.to_owned()),
                server_name: name.map(str::to_owned),
            }),
        };
        let protocol = crate::builtin::upstream_protocol(&config(&ca, Some("shop.internal")));
        assert_eq!(protocol.unwrap().as_str(), "tls");

        let missing = dir.path().join("missing.pem");
        let err = crate::builtin::upstream_protocol(&config(&missing, None)).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("upstream.tls.ca") && text.contains("missing.pem"),
            "{text}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = crate::builtin::upstream_protocol(&config(&empty, None)).unwrap_err();
        assert!(
            format!("{err:#}").contains("holds no certificate"),
            "{err:#}"
        );

        let h2c = UpstreamConfig {
            protocol: UpstreamProtocol::H2c,
            tls: None,
        };
        assert_eq!(
            crate::builtin::upstream_protocol(&h2c).unwrap().as_str(),
            "h2c"
        );
    }
}
