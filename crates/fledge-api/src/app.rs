//! The apps the server routes: the body of `PUT /apps/{app}`, the items of
//! `GET /apps` and the `apps:` of the server's configuration file, and the roles
//! that tokens carry.
//!
//! The shape is a stable contract (DESIGN.md, "Server configuration"): fields are
//! only ever added, never renamed. Unknown fields are errors that name their location.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One app: a service with a stable version, where a canary version may run, and how
/// its traffic is split and measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppConfig {
    /// The app's name, as rollout specs write it in `app:`: a DNS label (1–63 of
    /// `a-z`, `0-9`, `-`, starting and ending with a letter or digit).
    #[schemars(length(min = 1, max = 63), regex(pattern = fledge_spec::DNS_LABEL_PATTERN))]
    pub name: String,
    /// Address of the built-in proxy's listener for this app (clients send their
    /// requests here). Required when `router` is `builtin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Serve the app's proxy listener over HTTPS (HTTP/2 and HTTP/1.1) with this
    /// certificate; only with the built-in router. Plain HTTP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// The version that serves all traffic when no rollout is active.
    pub stable: StableConfig,
    /// The version that was stable before `stable` last changed (by a promoted
    /// rollout or a `PUT /apps/{app}`): where `POST /apps/{app}/undo` goes back to.
    /// The server keeps it up to date; a body or a config that leaves it out keeps
    /// the stored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_stable: Option<StableConfig>,
    /// Where a new version runs, unless its rollout spec says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryConfig>,
    /// What splits the traffic: `builtin` (the default) or an external router with
    /// its settings.
    #[serde(default)]
    pub router: ProviderConfig,
    /// Where the per-version metrics come from: `builtin` (the default: the built-in
    /// proxy's own counters) or an external metric source with its settings.
    #[serde(default)]
    pub metrics: ProviderConfig,
    /// How long the built-in proxy waits on this app's upstreams and clients. Only
    /// the built-in router uses them; external routers have their own.
    #[serde(default, skip_serializing_if = "AppTimeouts::is_default")]
    pub timeouts: AppTimeouts,
    /// What the built-in proxy speaks to the app's upstream endpoints: HTTP/1.1 by
    /// default, HTTP/2 (`h2c`), or TLS. Only the built-in router uses it.
    #[serde(default, skip_serializing_if = "UpstreamConfig::is_default")]
    pub upstream: UpstreamConfig,
}

/// How the built-in proxy connects to an app's upstream endpoints (every endpoint
/// of the stable and the canary version alike).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpstreamConfig {
    /// `http1` (the default): HTTP/1.1 over TCP, on pooled keep-alive connections.
    /// `h2c`: HTTP/2 over TCP with prior knowledge, one multiplexed connection per
    /// endpoint and proxy thread. `tls`: TLS, each endpoint choosing HTTP/2 or
    /// HTTP/1.1 by ALPN.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// With `protocol: tls`: which certificates to trust and which name to check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsConfig>,
}

/// The protocol the built-in proxy speaks to an app's upstreams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over TCP.
    #[default]
    Http1,
    /// HTTP/2 over TCP with prior knowledge (no upgrade from HTTP/1.1).
    H2c,
    /// TLS 1.2 or 1.3, offering ALPN `h2` and `http/1.1`.
    Tls,
}

/// How the built-in proxy checks the certificates of an app's upstreams.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpstreamTlsConfig {
    /// PEM file with the certificate authorities the upstreams' certificates must
    /// chain to (only those are trusted); the system's trusted roots when absent.
    /// A relative path is relative to the directory the server runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// The name the upstreams' certificates must carry, also sent as SNI; the
    /// host of each endpoint (a DNS name or an IP address) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

// === impl UpstreamConfig ===

impl UpstreamConfig {
    /// Whether this is the default: HTTP/1.1.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks what can be checked without reading the CA file.
    pub fn validate(&self) -> Result<(), String> {
        let Some(tls) = &self.tls else {
            return Ok(());
        };
        if self.protocol != UpstreamProtocol::Tls {
            return Err(format!(
                "upstream.tls: only used with `protocol: tls`, found protocol `{}`",
                self.protocol.as_str()
            ));
        }
        if tls.ca.as_ref().is_some_and(|ca| ca.as_os_str().is_empty()) {
            return Err(
                "upstream.tls.ca: must name a PEM file (leave it out to trust the system's roots)"
                    .to_owned(),
            );
        }
        if let Some(name) = &tls.server_name
            && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            return Err(format!(
                "upstream.tls.serverName: expected a DNS name or an IP address, found `{name}`"
            ));
        }
        Ok(())
    }
}

impl UpstreamProtocol {
    /// The protocol's name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::Tls => "tls",
        }
    }
}

/// The built-in proxy's timeouts for one app. An upstream that does not answer in
/// time fails the request (502 for `connect`, 504 for `response`), and the failure
/// counts against that upstream's version: a canary that hangs is judged as failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppTimeouts {
    /// Establishing a TCP connection to an upstream endpoint (2s by default); the
    /// client then gets a 502.
    #[serde(
        default = "default_connect_timeout",
        with = "fledge_spec::duration::required"
    )]
    #[schemars(schema_with = "fledge_spec::duration::schema")]
    pub connect: Duration,
    /// From sending a request upstream to receiving its response headers (30s by
    /// default); the client then gets a 504. It includes sending the request body.
    #[serde(
        default = "default_response_timeout",
        with = "fledge_spec::duration::required"
    )]
    #[schemars(schema_with = "fledge_spec::duration::schema")]
    pub response: Duration,
    /// How long a client may take to send a request's headers (10s by default): the
    /// slow-client guard.
    #[serde(
        default = "default_client_headers_timeout",
        with = "fledge_spec::duration::required"
    )]
    #[schemars(schema_with = "fledge_spec::duration::schema")]
    pub client_headers: Duration,
    /// How long an upgraded connection (WebSocket) may pass no byte either way
    /// before the proxy closes it (1h by default).
    #[serde(
        default = "default_upgraded_idle_timeout",
        with = "fledge_spec::duration::required"
    )]
    #[schemars(schema_with = "fledge_spec::duration::schema")]
    pub upgraded_idle: Duration,
}

impl Default for AppTimeouts {
    fn default() -> Self {
        Self {
            connect: default_connect_timeout(),
            response: default_response_timeout(),
            client_headers: default_client_headers_timeout(),
            upgraded_idle: default_upgraded_idle_timeout(),
        }
    }
}

/// The longest timeout an app may set: beyond it a hung upstream would hold a
/// client and a connection for longer than any interactive service needs.
const MAX_PROXY_TIMEOUT: Duration = Duration::from_secs(3600);

impl AppTimeouts {
    /// Whether every timeout has its default value.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Each timeout is above zero and at most an hour.
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("connect", self.connect),
            ("response", self.response),
            ("clientHeaders", self.client_headers),
            ("upgradedIdle", self.upgraded_idle),
        ] {
            if value.is_zero() || value > MAX_PROXY_TIMEOUT {
                return Err(format!(
                    "timeouts.{field}: expected a duration above 0s and at most 1h, found {}",
                    fledge_spec::duration::format(value)
                ));
            }
        }
        Ok(())
    }
}

/// The built-in proxy's defaults (a test in the server checks they are the proxy's).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CLIENT_HEADERS_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_UPGRADED_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

fn default_upgraded_idle_timeout() -> Duration {
    DEFAULT_UPGRADED_IDLE_TIMEOUT
}

fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

fn default_response_timeout() -> Duration {
    DEFAULT_RESPONSE_TIMEOUT
}

fn default_client_headers_timeout() -> Duration {
    DEFAULT_CLIENT_HEADERS_TIMEOUT
}

/// The stable version of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StableConfig {
    /// Its version label, e.g. `v2.3.0`, named as a rollout spec names a version
    /// (1–63 of `A-Z`, `a-z`, `0-9`, `.`, `_`, `-`, starting and ending with a letter
    /// or digit), since an undo rolls back to it.
    #[schemars(length(min = 1, max = 63), regex(pattern = fledge_spec::VERSION_PATTERN))]
    pub version: String,
    /// Its upstream addresses, `host:port`; at least one.
    #[schemars(length(min = 1))]
    pub endpoints: Vec<String>,
}

/// Where a canary version runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CanaryConfig {
    /// Its upstream addresses, `host:port`.
    pub endpoints: Vec<String>,
}

/// A certificate for a listener, which then speaks only TLS 1.2 or 1.3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    /// PEM file with the server certificate first, then any intermediate
    /// certificates of its chain. A relative path is relative to the directory the
    /// server runs in.
    pub cert: PathBuf,
    /// PEM file with the certificate's private key: PKCS#8, PKCS#1 (RSA) or SEC1
    /// (EC); RSA, ECDSA P-256/P-384 and Ed25519 keys are supported.
    pub key: PathBuf,
    /// How long a new connection may take to finish the TLS handshake before it is
    /// closed (10s by default): a client that connects and sends nothing does not
    /// hold the connection longer. On the API the first request must also have
    /// begun by then.
    #[serde(
        default = "default_handshake_timeout",
        with = "fledge_spec::duration::required"
    )]
    #[schemars(schema_with = "fledge_spec::duration::schema")]
    pub handshake_timeout: Duration,
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

// === impl TlsConfig ===

impl TlsConfig {
    /// Checks what can be checked without reading the files.
    pub fn validate(&self) -> Result<(), String> {
        if self.cert.as_os_str().is_empty() {
            return Err("cert: must name a PEM file".to_owned());
        }
        if self.key.as_os_str().is_empty() {
            return Err("key: must name a PEM file".to_owned());
        }
        if self.handshake_timeout.is_zero() {
            return Err("handshakeTimeout: must be longer than 0s".to_owned());
        }
        Ok(())
    }
}

/// A traffic router or metric source: either just its kind (`builtin`, `haproxy`,
/// `prometheus`, …) or a map with `type` and the provider's own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ProviderConfig {
    /// Only the kind, with default settings.
    Kind(String),
    /// The kind and its settings.
    Detailed {
        /// The kind of provider.
        #[serde(rename = "type")]
        kind: String,
        /// The provider's settings, checked by the provider itself.
        #[serde(flatten)]
        settings: BTreeMap<String, serde_json::Value>,
    },
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig::Kind(BUILTIN.to_owned())
    }
}

/// The name of the built-in router and metric source.
pub const BUILTIN: &str = "builtin";

impl ProviderConfig {
    /// The provider's kind, e.g. `builtin`.
    pub fn kind(&self) -> &str {
        match self {
            ProviderConfig::Kind(k) => k,
            ProviderConfig::Detailed { kind, .. } => kind,
        }
    }

    /// Whether this is the built-in proxy (router) or its counters (metrics).
    pub fn is_builtin(&self) -> bool {
        self.kind() == BUILTIN
    }
}

/// A role; each one may do everything the previous one may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May read rollouts, apps, status, events and metrics.
    Viewer,
    /// May also start rollouts and promote, abort, pause, resume or retry them.
    Operator,
    /// May also register and change apps.
    Admin,
}

impl Role {
    /// The role's name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "expected a role (viewer, operator or admin), found `{other}`"
            )),
        }
    }
}

// === impl StableConfig ===

impl StableConfig {
    /// Checks a stable version's fields, named under `field`.
    fn validate(&self, field: &str) -> Result<(), String> {
        fledge_spec::check_version_name(&self.version)
            .map_err(|e| format!("{field}.version: {e}"))?;
        if self.endpoints.is_empty() {
            return Err(format!(
                "{field}.endpoints: at least one endpoint is needed"
            ));
        }
        for e in &self.endpoints {
            validate_endpoint(e).map_err(|m| format!("{field}.endpoints: {m}"))?;
        }
        Ok(())
    }
}

// === impl AppConfig ===

impl AppConfig {
    /// Where an undo goes back to: `previousStable`, unless it is the stable version
    /// now (a `PUT` may name the same version for both), which leaves nothing to undo.
    pub fn undo_target(&self) -> Option<&StableConfig> {
        self.previous_stable
            .as_ref()
            .filter(|p| p.version != self.stable.version)
    }

    /// Takes `previousStable` from the stored config of the same app when this one
    /// does not name it: the stored stable version if this config changes it, else
    /// the stored previous one.
    pub fn keep_previous_stable(&mut self, stored: &AppConfig) {
        if self.previous_stable.is_none() {
            self.previous_stable = if self.stable == stored.stable {
                stored.previous_stable.clone()
            } else {
                Some(stored.stable.clone())
            };
        }
    }

    /// Checks one app's fields.
    pub fn validate(&self) -> Result<(), String> {
        fledge_spec::check_app_name(&self.name).map_err(|e| format!("name: {e}"))?;
        self.stable.validate("stable")?;
        if let Some(previous) = &self.previous_stable {
            previous.validate("previousStable")?;
        }
        if let Some(canary) = &self.canary {
            for e in &canary.endpoints {
                validate_endpoint(e).map_err(|m| format!("canary.endpoints: {m}"))?;
            }
        }
        if self.router.is_builtin() && self.listen.is_none() {
            return Err(
                "listen: the built-in router needs a listener address for the app's proxy"
                    .to_owned(),
            );
        }
        self.timeouts.validate()?;
        if !self.router.is_builtin() && !self.timeouts.is_default() {
            return Err(format!(
                "timeouts: only the built-in proxy uses them; set the timeouts of router `{}` \
                 in its own configuration",
                self.router.kind()
            ));
        }
        if let Some(tls) = &self.tls {
            if !self.router.is_builtin() {
                return Err(format!(
                    "tls: only the built-in proxy's listener serves TLS; with router `{}` \
                     configure TLS in that router",
                    self.router.kind()
                ));
            }
            tls.validate().map_err(|e| format!("tls.{e}"))?;
        }
        if !self.upstream.is_default() && !self.router.is_builtin() {
            return Err(format!(
                "upstream: only the built-in proxy uses it; with router `{}` configure the \
                 upstream protocol in that router",
                self.router.kind()
            ));
        }
        self.upstream.validate()?;
        Ok(())
    }

    /// The canary endpoints configured for the app, if any.
    pub fn canary_endpoints(&self) -> &[String] {
        self.canary.as_ref().map_or(&[], |c| c.endpoints.as_slice())
    }
}

/// An upstream endpoint is `host:port` (an optional `http://` is accepted).
pub fn validate_endpoint(endpoint: &str) -> Result<(), String> {
    let bare = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    let Some((host, port)) = bare.rsplit_once(':') else {
        return Err(format!("expected host:port, found `{endpoint}`"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("expected host:port, found `{endpoint}`"));
    }
    Ok(())
}

/// An app as `GET /apps` and `PUT /apps/{app}` answer it: its configuration and
/// what the server reports beside it. A body read from `GET` can be sent back to
/// `PUT` as it is; the read-only fields are then ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct App {
    /// The app's configuration.
    #[serde(flatten)]
    pub config: AppConfig,
    /// The address the app's built-in proxy listens on (read only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_addr: Option<String>,
    /// Whether the app's router serves the route the store asks for (read only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_sync: Option<RouterSync>,
}

impl App {
    /// The fields `GET` adds to the configuration, which `PUT` ignores.
    pub const STATUS_FIELDS: [&'static str; 2] = ["proxyAddr", "routerSync"];
}

/// The body of `PUT /apps/{app}`, as a schema only: an [`App`] whose `name` may be
/// left out (the path's is taken), and without fields of its own (an unknown field
/// is refused, as in the configuration file).
#[derive(Debug, Clone, Copy)]
pub struct AppRequest;

impl JsonSchema for AppRequest {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AppRequest".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = App::json_schema(generator);
        if let Some(required) = schema
            .get_mut("required")
            .and_then(serde_json::Value::as_array_mut)
        {
            required.retain(|field| field != "name");
        }
        schema.insert("additionalProperties".to_owned(), false.into());
        schema.insert(
            "description".to_owned(),
            "An app to register: what `GET /apps/{app}` answers, with `name` optional (the \
             path's) and the read-only fields ignored."
                .into(),
        );
        schema
    }
}

/// Whether an app's router serves the route the store asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouterSync {
    /// The router's kind (`builtin`, `haproxy`, …).
    pub router: String,
    /// The last apply succeeded: the router serves `desiredWeight`.
    pub in_sync: bool,
    /// The canary weight the stored state asks for.
    pub desired_weight: u8,
    /// The canary weight the router last accepted; `None` before its first success.
    pub applied_weight: Option<u8>,
    /// Failed applies since the last success.
    pub consecutive_failures: u32,
    /// Why the last apply failed, while out of sync.
    pub last_error: Option<String>,
    /// When the router first failed to apply the current route (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub out_of_sync_since: Option<String>,
}
