//! HAProxy as a traffic router, through its runtime API.
//!
//! The app's backend holds one stable and one canary server (named in the settings);
//! the router sets their weights to the stable and canary percentages with
//! `set weight <backend>/<server> <n>` and reads them back with `get weight`. One
//! connection per command, in HAProxy's non-interactive mode, over the unix socket or
//! TCP address of a `stats socket ... level admin` line.
//!
//! The weight that grows is set first: the split in between is then always between
//! the old and the new one, and never both 0 (which would answer 503 to everyone, as
//! going from 100% canary back to 0% would if the canary were lowered first).
//!
//! The backend must use a balance algorithm that honours weight changes at run time:
//! `roundrobin` (recommended), `leastconn`, `random(1)`. Not `static-rr` (weights fixed
//! at start) and not hash-based ones (`source`, `uri`, `hdr`), where weights move whole
//! hash ranges. A canary weight of 0 sends every new request to stable; requests
//! already in flight on the canary finish.
//!
//! With `manageAddresses`, [`TrafficRouter::set_endpoints`] also points the two
//! servers at the app's endpoints (`set server ... addr ... port ...`, checked with
//! `show servers state`), so a rollout can bring its own canary endpoint and a
//! promotion can move the stable server to the new version.
//!
//! **Match rules and stickiness.** haproxy.cfg's ACLs can only name the headers and
//! cookies written there, so the settings list them (`matchOn`, `stickyOn`) and the
//! backend carries the lines docs/integrations.md gives; what a rollout changes lives
//! in a map (`map`) that those lines read and that the router replaces at once through
//! the runtime API (`prepare map`, `add map @N`, `commit map @N`, read back with `show
//! map`), never by a reload: `header:<name>=<value>` / `cookie:<name>=<value>` →
//! `canary` or `stable` for each rule, `sticky:<header|cookie>:<name>` → the canary
//! weight, `set-cookie:<name>` → the sticky cookie's attributes. haproxy.cfg hashes
//! the sticky key (`xxh32`) into a bucket 0–99 and sends the user to the canary iff
//! bucket < weight, so a rising weight only moves users to the canary. Without a
//! canary the map is empty and everyone follows the weights (all stable). What the
//! lines cannot express is refused by [`TrafficRouter::supports`].

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use fledge_spec::StickyKey;

use super::{
    AppliedWeights, Desired, Endpoints, EndpointsApplied, RequestKey, RouterError, RoutingRules,
    TrafficRouter,
};

const KIND: &str = "haproxy";
/// HAProxy answers a command in a few bytes; anything longer is not what we asked.
const MAX_RESPONSE: u64 = 64 * 1024;

/// Settings of the HAProxy router (`router: {haproxy: {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HaproxySettings {
    /// Path of the runtime API's unix socket (`stats socket /run/haproxy.sock mode
    /// 600 level admin` in haproxy.cfg). Exactly one of `socket` and `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// `host:port` of the runtime API on TCP (`stats socket ipv4@127.0.0.1:9999 level
    /// admin`). Exactly one of `socket` and `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The backend that serves the app.
    pub backend: String,
    /// The backend's server that runs the stable version.
    #[serde(default = "default_stable")]
    pub stable_server: String,
    /// The backend's server that runs the canary.
    #[serde(default = "default_canary")]
    pub canary_server: String,
    /// How long one runtime API command may take.
    #[serde(default = "default_timeout", with = "fledge_spec::duration::required")]
    pub timeout: Duration,
    /// Whether fledge points the two servers at the app's endpoints (`set server
    /// <backend>/<server> addr <ip> port <port>`): each version must then run at one
    /// `ip:port` (no host names: the runtime API does not resolve them). Off by
    /// default: the addresses in haproxy.cfg are used as they are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manage_addresses: bool,
    /// The map file fledge keeps a rollout's match rules and sticky weight in, as
    /// haproxy.cfg names it (e.g. `/etc/haproxy/fledge-shop.map`; create it empty).
    /// Needed for `match` and `stickiness`; fledge changes it only through the runtime
    /// API (`prepare map`, `add map`, `commit map`), never by reloading HAProxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
    /// The headers and cookies haproxy.cfg looks up in the map for match rules, in the
    /// order of its lines, e.g. `[{header: x-canary}, {cookie: beta}]`. A rollout may
    /// match on these only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_on: Vec<RequestKey>,
    /// The headers and cookies haproxy.cfg can keep users on a version by, e.g.
    /// `[{cookie: fledge}]`. A rollout's `stickiness` may name these only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sticky_on: Vec<RequestKey>,
}

fn default_stable() -> String {
    "stable".to_owned()
}
fn default_canary() -> String {
    "canary".to_owned()
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

/// Where the runtime API listens.
#[derive(Debug, Clone)]
enum Target {
    Unix(PathBuf),
    Tcp(String),
}

/// What the router last made HAProxy serve, which its map follows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Served {
    /// Nothing yet: the map is not checked.
    Unknown,
    /// Stable only: the map is empty.
    StableOnly,
    /// A canary with these rules.
    Canary(RoutingRules),
}

/// Sets an HAProxy backend's stable/canary server weights, and keeps a rollout's
/// match rules and sticky weight in a map that haproxy.cfg's ACLs read.
#[derive(Debug)]
pub struct HaproxyRouter {
    settings: HaproxySettings,
    target: Target,
    served: std::sync::Mutex<Served>,
}

// === impl HaproxyRouter ===

impl HaproxyRouter {
    /// A router for `settings`; checks that exactly one of `socket` and `address` is
    /// set and that the backend and server names are usable in a command.
    pub fn new(settings: HaproxySettings) -> Result<Self, RouterError> {
        let config = |reason: String| RouterError::Config {
            router: KIND,
            reason,
        };
        let target =
            match (&settings.socket, &settings.address) {
                (Some(p), None) => Target::Unix(p.clone()),
                (None, Some(a)) => Target::Tcp(a.clone()),
                _ => return Err(config(
                    "set exactly one of `socket` (a unix socket path) and `address` (host:port)"
                        .into(),
                )),
            };
        for (field, name) in [
            ("backend", &settings.backend),
            ("stableServer", &settings.stable_server),
            ("canaryServer", &settings.canary_server),
        ] {
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ';' || c == '/')
            {
                return Err(config(format!(
                    "{field} `{name}` must be a non-empty name without spaces, `;` or `/`"
                )));
            }
        }
        if settings.stable_server == settings.canary_server {
            return Err(config("stableServer and canaryServer must differ".into()));
        }
        let mut settings = settings;
        if let Some(map) = &settings.map
            && (map.is_empty() || map.contains(|c: char| c.is_whitespace() || c == ';'))
        {
            return Err(config(format!(
                "map `{map}` must be the map file's name as haproxy.cfg writes it, without spaces or `;`"
            )));
        }
        for (field, keys) in [
            ("matchOn", &settings.match_on),
            ("stickyOn", &settings.sticky_on),
        ] {
            if !keys.is_empty() && settings.map.is_none() {
                return Err(config(format!(
                    "{field} needs `map`: the map haproxy.cfg's lines read"
                )));
            }
            for key in keys {
                if !super::is_token(key.name()) {
                    return Err(config(format!(
                        "{field}: {key} is not a header or cookie name"
                    )));
                }
            }
        }
        settings.match_on = settings
            .match_on
            .iter()
            .map(RequestKey::normalized)
            .collect();
        settings.sticky_on = settings
            .sticky_on
            .iter()
            .map(RequestKey::normalized)
            .collect();
        Ok(HaproxyRouter {
            settings,
            target,
            served: std::sync::Mutex::new(Served::Unknown),
        })
    }

    fn served(&self) -> Served {
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn rejected(&self, reason: String) -> RouterError {
        RouterError::Rejected {
            router: KIND,
            target: self.target_text(),
            reason,
        }
    }

    /// The map's entries for `served` at `weight`, in the order they are added: the
    /// match rules in the spec's order (the first rule for a key and value wins), then
    /// the sticky key's weight and cookie attributes. None without a canary.
    fn map_entries(served: &Served, weight: u8) -> Vec<(String, String)> {
        let Served::Canary(rules) = served else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = Vec::new();
        for rule in &rules.matches {
            let Some(key) = RequestKey::of_rule(rule) else {
                continue;
            };
            let entry = match &key {
                RequestKey::Header(n) => format!("header:{n}={}", rule.value),
                RequestKey::Cookie(n) => format!("cookie:{n}={}", rule.value),
            };
            if out.iter().any(|(k, _)| *k == entry) {
                continue;
            }
            let target = match rule.target {
                fledge_spec::Target::Canary => "canary",
                fledge_spec::Target::Stable => "stable",
            };
            out.push((entry, target.to_owned()));
        }
        if let Some(sticky) = &rules.stickiness {
            match sticky.key() {
                Some(StickyKey::Header(name)) => {
                    out.push((
                        format!("sticky:header:{}", name.to_ascii_lowercase()),
                        weight.to_string(),
                    ));
                }
                Some(StickyKey::Cookie { name, ttl }) => {
                    out.push((format!("sticky:cookie:{name}"), weight.to_string()));
                    let max_age = ttl
                        .map(|t| format!("; Max-Age={}", t.as_secs().max(1)))
                        .unwrap_or_default();
                    out.push((
                        format!("set-cookie:{name}"),
                        format!("Path=/{max_age}; HttpOnly; SameSite=Lax"),
                    ));
                }
                None => {}
            }
        }
        out
    }

    /// The map's entries as HAProxy holds them, as `key value` lines.
    pub async fn map_contents(&self) -> Result<Vec<String>, RouterError> {
        let Some(map) = &self.settings.map else {
            return Ok(Vec::new());
        };
        let cmd = format!("show map {map}");
        let answer = self.command(&cmd).await?;
        let mut lines = Vec::new();
        for line in answer.lines().filter(|l| !l.trim().is_empty()) {
            // "0x55d1c8a2e0 key value": the entry's address first.
            match line.split_once(' ') {
                Some((addr, rest)) if addr.starts_with("0x") => lines.push(rest.to_owned()),
                _ => return Err(self.rejected(self.map_complaint(&cmd, answer.trim()))),
            }
        }
        Ok(lines)
    }

    fn map_complaint(&self, cmd: &str, answer: &str) -> String {
        let hint = if answer.contains("Unknown map") {
            " (haproxy.cfg reads no such map: add fledge's lines of docs/integrations.md to the backend, or fix `map`)"
        } else {
            ""
        };
        format!("`{cmd}`: {answer}{hint}")
    }

    /// Replaces the map's entries by `entries` at once: a new version is prepared,
    /// filled and committed, so a request sees either the old rules or the new ones;
    /// then the map is read back.
    async fn write_map(&self, entries: &[(String, String)]) -> Result<(), RouterError> {
        let Some(map) = &self.settings.map else {
            return Ok(());
        };
        let cmd = format!("prepare map {map}");
        let answer = self.command(&cmd).await?;
        // "New version created: 3"
        let version = answer
            .trim()
            .strip_prefix("New version created:")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| self.rejected(self.map_complaint(&cmd, answer.trim())))?;
        for (key, value) in entries {
            let cmd = format!(
                "add map @{version} {map} {} {}",
                cli_arg(key),
                cli_arg(value)
            );
            let answer = self.command(&cmd).await?;
            if !answer.trim().is_empty() {
                return Err(self.rejected(self.map_complaint(&cmd, answer.trim())));
            }
        }
        let cmd = format!("commit map @{version} {map}");
        let answer = self.command(&cmd).await?;
        if !answer.trim().is_empty() {
            return Err(self.rejected(self.map_complaint(&cmd, answer.trim())));
        }
        self.check_map(entries).await
    }

    /// The map holds exactly `entries`.
    async fn check_map(&self, entries: &[(String, String)]) -> Result<(), RouterError> {
        let mut found = self.map_contents().await?;
        let mut wanted: Vec<String> = entries.iter().map(|(k, v)| format!("{k} {v}")).collect();
        found.sort();
        wanted.sort();
        if found != wanted {
            return Err(self.rejected(format!(
                "map {} holds {found:?} instead of {wanted:?} (was HAProxy restarted, or the map changed by hand?)",
                self.settings.map.as_deref().unwrap_or_default()
            )));
        }
        Ok(())
    }

    fn target_text(&self) -> String {
        match &self.target {
            Target::Unix(p) => p.display().to_string(),
            Target::Tcp(a) => a.clone(),
        }
    }

    fn unreachable(&self, reason: String) -> RouterError {
        RouterError::Unreachable {
            router: KIND,
            target: self.target_text(),
            reason,
        }
    }

    /// Sends one command and returns HAProxy's answer.
    pub async fn command(&self, cmd: &str) -> Result<String, RouterError> {
        let exchange = async {
            let mut out = String::new();
            match &self.target {
                Target::Unix(path) => {
                    let mut s = tokio::net::UnixStream::connect(path).await?;
                    s.write_all(format!("{cmd}\n").as_bytes()).await?;
                    s.take(MAX_RESPONSE).read_to_string(&mut out).await?;
                }
                Target::Tcp(addr) => {
                    let mut s = tokio::net::TcpStream::connect(addr.as_str()).await?;
                    s.write_all(format!("{cmd}\n").as_bytes()).await?;
                    s.take(MAX_RESPONSE).read_to_string(&mut out).await?;
                }
            }
            Ok::<_, std::io::Error>(out)
        };
        match tokio::time::timeout(self.settings.timeout, exchange).await {
            Err(_) => Err(self.unreachable(format!(
                "no answer to `{cmd}` within {:?}",
                self.settings.timeout
            ))),
            Ok(Err(e)) => Err(self.unreachable(format!("`{cmd}`: {e}"))),
            Ok(Ok(out)) => Ok(out),
        }
    }

    async fn set(&self, server: &str, weight: u8) -> Result<(), RouterError> {
        let cmd = format!("set weight {}/{server} {weight}", self.settings.backend);
        let answer = self.command(&cmd).await?;
        // Success is an empty answer; anything else is HAProxy's complaint
        // ("No such server.", "Permission denied", "Unknown command").
        let answer = answer.trim();
        if answer.is_empty() {
            Ok(())
        } else {
            Err(RouterError::Rejected {
                router: KIND,
                target: self.target_text(),
                reason: format!("`{cmd}`: {answer}"),
            })
        }
    }

    async fn get(&self, server: &str) -> Result<u32, RouterError> {
        let cmd = format!("get weight {}/{server}", self.settings.backend);
        let answer = self.command(&cmd).await?;
        // "20 (initial 1)"
        answer
            .split_whitespace()
            .next()
            .and_then(|w| w.parse::<u32>().ok())
            .ok_or_else(|| RouterError::Rejected {
                router: KIND,
                target: self.target_text(),
                reason: format!("`{cmd}`: {}", answer.trim()),
            })
    }
}

impl HaproxyRouter {
    /// The `(address, port)` of each server of the backend, from `show servers
    /// state`.
    pub async fn server_addresses(&self) -> Result<Vec<(String, String, String)>, RouterError> {
        let cmd = format!("show servers state {}", self.settings.backend);
        let answer = self.command(&cmd).await?;
        let rejected = |reason: String| RouterError::Rejected {
            router: KIND,
            target: self.target_text(),
            reason: format!("`{cmd}`: {reason}"),
        };
        let header = answer
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .ok_or_else(|| rejected(answer.trim().to_owned()))?;
        let cols: Vec<&str> = header.split_whitespace().collect();
        let col = |name: &str| {
            cols.iter()
                .position(|c| *c == name)
                .ok_or_else(|| rejected(format!("no `{name}` column")))
        };
        let (name, addr, port) = (col("srv_name")?, col("srv_addr")?, col("srv_port")?);
        Ok(answer
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() == cols.len())
            .map(|f| (f[name].to_owned(), f[addr].to_owned(), f[port].to_owned()))
            .collect())
    }

    /// Without `manageAddresses`: every endpoint written as `ip:port` must be where its
    /// server already is (names cannot be compared and are trusted).
    async fn check_unmanaged(&self, endpoints: &Endpoints) -> Result<(), RouterError> {
        let wanted: Vec<(&str, std::net::SocketAddr)> = [
            (self.settings.stable_server.as_str(), &endpoints.stable),
            (self.settings.canary_server.as_str(), &endpoints.canary),
        ]
        .into_iter()
        .filter_map(|(server, list)| match list.as_slice() {
            [one] => one.parse().ok().map(|a| (server, a)),
            _ => None,
        })
        .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let state = self.server_addresses().await?;
        for (server, addr) in wanted {
            let Some((_, ip, port)) = state.iter().find(|(name, _, _)| name == server) else {
                continue;
            };
            if *ip != addr.ip().to_string() || *port != addr.port().to_string() {
                return Err(RouterError::Rejected {
                    router: KIND,
                    target: self.target_text(),
                    reason: format!(
                        "the route puts {server} at {addr}, but {}/{server} is at {ip}:{port}: set manageAddresses: true, or change haproxy.cfg",
                        self.settings.backend
                    ),
                });
            }
        }
        Ok(())
    }

    async fn set_address(&self, server: &str, endpoint: &str) -> Result<(), RouterError> {
        let addr: std::net::SocketAddr = endpoint.parse().map_err(|_| RouterError::Config {
            router: KIND,
            reason: format!(
                "endpoint `{endpoint}` must be ip:port ([ip6]:port): HAProxy's runtime API does not resolve host names"
            ),
        })?;
        let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
        let cmd = format!(
            "set server {}/{server} addr {ip} port {port}",
            self.settings.backend
        );
        let answer = self.command(&cmd).await?;
        // The answer is informational ("IP changed from ...", "no need to change ...");
        // reading the state back is what tells success.
        let state = self.server_addresses().await?;
        match state.iter().find(|(name, _, _)| name == server) {
            Some((_, a, p)) if *a == ip && *p == port => Ok(()),
            found => Err(RouterError::Rejected {
                router: KIND,
                target: self.target_text(),
                reason: format!(
                    "`{cmd}` answered {:?}; the server is now at {}",
                    answer.trim(),
                    found
                        .map(|(_, a, p)| format!("{a}:{p}"))
                        .unwrap_or_else(|| "(no such server)".into())
                ),
            }),
        }
    }
}

/// `arg` as one argument of a runtime API command: the CLI splits on spaces and
/// tabs, ends a command at `;`, and takes `\` as an escape.
fn cli_arg(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    for c in arg.chars() {
        if matches!(c, '\\' | ' ' | '\t' | ';') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl TrafficRouter for HaproxyRouter {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// Match rules on the headers and cookies of `matchOn` (in an order haproxy.cfg's
    /// lines can honour) and stickiness on a key of `stickyOn`, with `map` set; never
    /// `closeUpgradedOnAbort`, nor copies of requests (`mirror`).
    fn supports(&self, rules: &RoutingRules) -> Result<(), RouterError> {
        super::no_mirror(
            KIND,
            rules,
            "HAProxy cannot copy requests to a second backend without an external agent",
        )?;
        super::no_close_upgraded(
            KIND,
            rules,
            "HAProxy keeps upgraded connections (WebSocket) to the canary open after a rollback, and its runtime API can only cut every session of a server, in-flight requests included",
        )?;
        let refuse = |field, reason| super::unsupported(KIND, field, reason);
        let no_map = |what: &str| {
            format!(
                "this router has no `map`: set `map` and `{what}` in its settings and add fledge's lines to the backend in haproxy.cfg (docs/integrations.md, HAProxy)"
            )
        };
        if !rules.matches.is_empty() {
            if self.settings.map.is_none() {
                return refuse("match", no_map("matchOn"));
            }
            let listed = || {
                self.settings
                    .match_on
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut positions = Vec::new();
            for (i, rule) in rules.matches.iter().enumerate() {
                let Some(key) = RequestKey::of_rule(rule) else {
                    return refuse(
                        "match",
                        format!("rule {}: exactly one of header and cookie", i + 1),
                    );
                };
                let Some(at) = self.settings.match_on.iter().position(|k| *k == key) else {
                    return refuse(
                        "match",
                        format!(
                            "haproxy.cfg looks up no {key} (the router's `matchOn` lists {}): add it to `matchOn` and its line to haproxy.cfg",
                            match listed() {
                                l if l.is_empty() => "nothing".to_owned(),
                                l => l,
                            }
                        ),
                    );
                };
                if rule.value.chars().any(char::is_control) {
                    return refuse(
                        "match",
                        format!(
                            "rule {}: HAProxy's runtime API cannot carry control characters in a value",
                            i + 1
                        ),
                    );
                }
                positions.push((at, key, rule.target));
            }
            // A request carrying two keys gets the target of the key haproxy.cfg looks
            // up first; the spec wants its first matching rule.
            for (i, (at_i, key_i, target_i)) in positions.iter().enumerate() {
                for (j, (at_j, key_j, target_j)) in positions.iter().enumerate().skip(i + 1) {
                    if key_i != key_j && target_i != target_j && at_j < at_i {
                        return refuse(
                            "match",
                            format!(
                                "rule {} ({key_i}) comes before rule {} ({key_j}), but haproxy.cfg looks up {key_j} first (the order of `matchOn`), so a request with both would go the other way: reorder the rules, or the lines and `matchOn`",
                                i + 1,
                                j + 1
                            ),
                        );
                    }
                }
            }
        }
        if let Some(sticky) = &rules.stickiness {
            if self.settings.map.is_none() {
                return refuse("stickiness", no_map("stickyOn"));
            }
            let Some(key) = RequestKey::of_stickiness(sticky) else {
                return refuse("stickiness", "exactly one of header and cookie".into());
            };
            if !self.settings.sticky_on.contains(&key) {
                return refuse(
                    "stickiness",
                    format!(
                        "haproxy.cfg keeps users by no {key} (the router's `stickyOn` lists {}): add it to `stickyOn` and its lines to haproxy.cfg",
                        match self
                            .settings
                            .sticky_on
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                        {
                            l if l.is_empty() => "nothing".to_owned(),
                            l => l,
                        }
                    ),
                );
            }
        }
        Ok(())
    }

    /// Remembers the rules (none without a canary), then sets the endpoints and the
    /// weight; the map follows the rules at that weight.
    async fn serve(&self, desired: &Desired) -> Result<AppliedWeights, RouterError> {
        self.supports(&desired.rules)?;
        *self.served.lock().unwrap_or_else(|p| p.into_inner()) = match desired.canary {
            Some(_) => Served::Canary(desired.rules.clone()),
            None => Served::StableOnly,
        };
        self.apply(&desired.endpoints(), desired.weight()).await
    }

    async fn set_weights(&self, canary_weight: u8) -> Result<AppliedWeights, RouterError> {
        let wanted = AppliedWeights::canary(canary_weight);
        // The map first: on an abort the testers and sticky users leave the canary
        // before the weight does; on a rise, sticky users and the split move together.
        if self.settings.map.is_some() {
            self.write_map(&Self::map_entries(&self.served(), wanted.canary))
                .await?;
        }
        let (stable, canary) = (&self.settings.stable_server, &self.settings.canary_server);
        let before = self.get(canary).await?;
        if u32::from(wanted.canary) >= before {
            self.set(canary, wanted.canary).await?;
            self.set(stable, wanted.stable).await?;
        } else {
            self.set(stable, wanted.stable).await?;
            self.set(canary, wanted.canary).await?;
        }
        let found = self.current().await?;
        if found != wanted {
            return Err(RouterError::Mismatch {
                router: KIND,
                target: self.target_text(),
                wanted,
                found,
            });
        }
        tracing::info!(backend = %self.settings.backend, canary = wanted.canary, "haproxy weights set");
        Ok(found)
    }

    async fn current(&self) -> Result<AppliedWeights, RouterError> {
        let stable = self.get(&self.settings.stable_server).await?;
        let canary = self.get(&self.settings.canary_server).await?;
        if stable + canary == 0 {
            return Err(RouterError::Rejected {
                router: KIND,
                target: self.target_text(),
                reason: format!(
                    "both servers of backend {} have weight 0: nothing is served",
                    self.settings.backend
                ),
            });
        }
        let pct = ((canary as f64 * 100.0) / (stable + canary) as f64).round() as u8;
        let found = AppliedWeights::canary(pct);
        // The map must still say what was served (HAProxy reloads it from its file on
        // a restart): otherwise the route is not in place and must be served again.
        let served = self.served();
        if self.settings.map.is_some() && served != Served::Unknown {
            self.check_map(&Self::map_entries(&served, found.canary))
                .await?;
        }
        Ok(found)
    }

    async fn set_endpoints(&self, endpoints: &Endpoints) -> Result<EndpointsApplied, RouterError> {
        if !self.settings.manage_addresses {
            // haproxy.cfg owns the addresses; but a route that puts a version somewhere
            // the server is not must not look applied (after a promotion it would send
            // everyone back to the old version).
            self.check_unmanaged(endpoints).await?;
            return Ok(EndpointsApplied::Unmanaged);
        }
        let one = |what: &str, list: &[String]| match list {
            [] | [_] => Ok(list.first().cloned()),
            many => Err(RouterError::Config {
                router: KIND,
                reason: format!(
                    "{} {what} endpoints, but the backend has one {what} server: list the instances as servers in haproxy.cfg instead",
                    many.len()
                ),
            }),
        };
        let stable = one("stable", &endpoints.stable)?;
        let canary = one("canary", &endpoints.canary)?;
        // A missing canary endpoint leaves that server where it is (its weight is 0).
        if let Some(e) = &stable {
            self.set_address(&self.settings.stable_server, e).await?;
        }
        if let Some(e) = &canary {
            self.set_address(&self.settings.canary_server, e).await?;
        }
        tracing::info!(backend = %self.settings.backend, ?stable, ?canary, "haproxy server addresses set");
        Ok(EndpointsApplied::Applied)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::rule;
    use super::*;

    fn settings() -> HaproxySettings {
        HaproxySettings {
            socket: Some("/nonexistent/fledge-test.sock".into()),
            address: None,
            backend: "be_app".into(),
            stable_server: "stable".into(),
            canary_server: "canary".into(),
            timeout: Duration::from_secs(1),
            manage_addresses: false,
            map: None,
            match_on: vec![],
            sticky_on: vec![],
        }
    }

    fn with_map() -> HaproxyRouter {
        HaproxyRouter::new(HaproxySettings {
            map: Some("/etc/haproxy/fledge-shop.map".into()),
            match_on: vec![
                RequestKey::Header("X-Canary".into()),
                RequestKey::Cookie("beta".into()),
            ],
            sticky_on: vec![RequestKey::Cookie("fledge".into())],
            ..settings()
        })
        .unwrap()
    }

    #[test]
    fn map_entries_follow_the_spec_order_and_the_weight() {
        let rules = RoutingRules {
            matches: vec![
                rule(Some("X-Canary"), None, "a b;c", true),
                rule(None, Some("beta"), "old", false),
                rule(Some("x-canary"), None, "a b;c", false),
            ],
            stickiness: Some(fledge_spec::Stickiness {
                cookie: Some("fledge".into()),
                header: None,
                ttl: Some(Duration::from_secs(60)),
            }),
            close_upgraded_on_abort: false,
            mirror: None,
        };
        let entries = HaproxyRouter::map_entries(&Served::Canary(rules), 30);
        let pairs: Vec<(&str, &str)> = entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("header:x-canary=a b;c", "canary"),
                ("cookie:beta=old", "stable"),
                ("sticky:cookie:fledge", "30"),
                (
                    "set-cookie:fledge",
                    "Path=/; Max-Age=60; HttpOnly; SameSite=Lax"
                ),
            ]
        );
        assert!(HaproxyRouter::map_entries(&Served::StableOnly, 30).is_empty());
        assert_eq!(cli_arg("a b;c\\d\te"), "a\\ b\\;c\\\\d\\\te");
    }

    #[test]
    fn supports_the_keys_haproxy_cfg_reads_in_its_order() {
        let r = with_map();
        let ok = RoutingRules {
            matches: vec![
                rule(Some("x-canary"), None, "1", true),
                rule(None, Some("beta"), "1", false),
            ],
            stickiness: Some(fledge_spec::Stickiness {
                cookie: Some("fledge".into()),
                header: None,
                ttl: None,
            }),
            close_upgraded_on_abort: false,
            mirror: None,
        };
        r.supports(&ok).unwrap();
        let refused = |router: &HaproxyRouter, rules: RoutingRules| match router.supports(&rules) {
            Err(e @ RouterError::Unsupported { .. }) => e.to_string(),
            other => panic!("{other:?}"),
        };
        // Weight only without a map.
        let plain = HaproxyRouter::new(settings()).unwrap();
        let err = refused(&plain, ok);
        assert!(
            err.contains("haproxy") && err.contains("`match`") && err.contains("`map`"),
            "{err}"
        );
        let cases: [(RoutingRules, &[&str]); 3] = [
            // A key haproxy.cfg does not look up.
            (
                RoutingRules {
                    matches: vec![rule(Some("x-beta"), None, "1", true)],
                    ..Default::default()
                },
                &["`match`", "header `x-beta`"],
            ),
            (
                RoutingRules {
                    stickiness: Some(fledge_spec::Stickiness {
                        cookie: None,
                        header: Some("x-user".into()),
                        ttl: None,
                    }),
                    ..Default::default()
                },
                &["`stickiness`", "header `x-user`"],
            ),
            // Two keys to two versions in an order haproxy.cfg cannot honour.
            (
                RoutingRules {
                    matches: vec![
                        rule(None, Some("beta"), "1", false),
                        rule(Some("x-canary"), None, "1", true),
                    ],
                    ..Default::default()
                },
                &["first"],
            ),
        ];
        for (rules, expected) in cases {
            let err = refused(&r, rules);
            assert!(expected.iter().all(|e| err.contains(e)), "{err}");
        }
        // ...but to the same version the order does not matter.
        r.supports(&RoutingRules {
            matches: vec![
                rule(None, Some("beta"), "1", true),
                rule(Some("x-canary"), None, "1", true),
            ],
            ..Default::default()
        })
        .unwrap();
        let err = refused(
            &r,
            RoutingRules {
                matches: vec![rule(Some("x-canary"), None, "a\nb", true)],
                ..Default::default()
            },
        );
        assert!(err.contains("control"), "{err}");
        let err = refused(
            &r,
            RoutingRules {
                close_upgraded_on_abort: true,
                ..Default::default()
            },
        );
        assert!(err.contains("`closeUpgradedOnAbort`"), "{err}");
        let err = refused(&r, super::super::tests::mirrored(0));
        assert!(err.contains("`stages[0].mirror`"), "{err}");
        // matchOn without a map is a settings error.
        assert!(
            HaproxyRouter::new(HaproxySettings {
                match_on: vec![RequestKey::Header("x".into())],
                ..settings()
            })
            .is_err()
        );
    }

    #[test]
    fn settings_must_name_one_target_and_clean_names() {
        assert!(HaproxyRouter::new(settings()).is_ok());
        let mut s = settings();
        s.address = Some("127.0.0.1:1".into());
        assert!(HaproxyRouter::new(s).is_err());
        let mut s = settings();
        s.backend = "be; shutdown sessions".into();
        assert!(HaproxyRouter::new(s).is_err());
        let mut s = settings();
        s.canary_server = "stable".into();
        assert!(HaproxyRouter::new(s).is_err());
    }

    #[test]
    fn deserializes_the_documented_shape() {
        let s: super::super::RouterSettings = serde_json::from_value(serde_json::json!({
            "haproxy": {"socket": "/run/haproxy.sock", "backend": "be_app", "stableServer": "s", "canaryServer": "c"}
        }))
        .unwrap();
        let super::super::RouterSettings::Haproxy(h) = s else {
            panic!("not haproxy")
        };
        assert_eq!(h.stable_server, "s");
        let typed: super::super::RouterSettings = serde_json::from_value(serde_json::json!({
            "type": "haproxy", "socket": "/run/haproxy.sock", "backend": "be_app", "stableServer": "s", "canaryServer": "c"
        }))
        .unwrap();
        assert_eq!(typed, super::super::RouterSettings::Haproxy(h));
        let serde_json::Value::Object(parts) =
            serde_json::json!({"address": "127.0.0.1:9999", "backend": "b"})
        else {
            unreachable!()
        };
        let from_parts = super::super::RouterSettings::from_parts("haproxy", parts).unwrap();
        assert_eq!(from_parts.kind(), "haproxy");
        let err =
            super::super::RouterSettings::from_parts("envoy", Default::default()).unwrap_err();
        assert!(err.contains("unknown router `envoy`"), "{err}");
        let builtin: super::super::RouterSettings =
            serde_json::from_value(serde_json::json!("builtin")).unwrap();
        assert_eq!(builtin, super::super::RouterSettings::Builtin);
        assert!(
            serde_json::from_value::<HaproxySettings>(
                serde_json::json!({"backend": "b", "sockt": "/x"})
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn missing_socket_is_unreachable() {
        let r = HaproxyRouter::new(settings()).unwrap();
        let err = r.set_weights(20).await.unwrap_err();
        assert!(matches!(err, RouterError::Unreachable { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/fledge-test.sock"),
            "{err}"
        );
    }
}
