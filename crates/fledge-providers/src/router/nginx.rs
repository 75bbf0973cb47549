//! nginx as a traffic router: a generated `upstream` block and a reload.
//!
//! The router writes the app's `upstream` block to a file that the nginx
//! configuration includes in its `http` block, with one `server` line per endpoint and
//! weights that give each version its share:
//!
//! ```nginx
//! # Written by fledge; every change is overwritten.
//! # fledge-weights: stable=80 canary=20
//! upstream be_app {
//!     server 127.0.0.1:9001 weight=4;
//!     server 127.0.0.1:9002 weight=1;
//! }
//! ```
//!
//! **Weight 0.** nginx rejects `weight=0`; a version at 0% gets its servers marked
//! `down` instead, which sends it no request at all. Weights are reduced by their
//! greatest common divisor (80/20 is written 4/1), and with several servers per
//! version each server gets an equal part of its version's share.
//!
//! **Atomic writes.** The file is written to a temporary file in the same directory
//! and renamed over the old one, so nginx never reads half a file. When a `test`
//! command is set (e.g. `nginx -t`) it runs before the reload; when it or the reload
//! fails, the previous file is put back, so the file always says what nginx serves, and
//! the router returns an error.
//!
//! **What "applied" means.** `nginx -s reload` returns once the master has been
//! signalled; new workers take over within milliseconds and old ones finish the
//! requests they hold. [`TrafficRouter::current`] reads the weights back from the file
//! (nginx has no API to ask).
//!
//! **Match rules and stickiness.** With `variable` set, the file also defines
//! `<upstream>_stable` and `<upstream>_canary` and a chain of `map`s that puts each
//! request's upstream in `$<variable>` (nginx.conf proxies with `proxy_pass
//! http://$<variable>;`): one map per match rule on `$http_*` / `$cookie_*`, in the
//! spec's order, with the value as an exact case-sensitive regular expression; then
//! the sticky key through `split_clients` with the canary's part first (a user is on
//! the canary iff its hash falls in the first w%, so a rising weight only moves users
//! to the canary); then the weighted upstream. In cookie mode `$<variable>_cookie`
//! holds the `Set-Cookie` for a new user, keyed by `$request_id`. Without a canary the
//! chain is the weighted upstream alone.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use fledge_spec::StickyKey;

use super::{
    AppliedWeights, Desired, Endpoints, EndpointsApplied, RequestKey, RouterError, RoutingRules,
    TrafficRouter,
};

const KIND: &str = "nginx";
const MARKER: &str = "# fledge-weights:";

/// Settings of the nginx router (`router: {nginx: {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NginxSettings {
    /// The file fledge writes the `upstream` block to; nginx.conf includes it inside
    /// `http { ... }`. Its directory must be writable by fledge.
    pub upstream_file: PathBuf,
    /// The name of the `upstream` block (what `proxy_pass http://NAME;` refers to).
    pub upstream: String,
    /// The command (argv, no shell) that makes nginx reload its configuration, e.g.
    /// `[nginx, -s, reload]` or `[systemctl, reload, nginx]`.
    #[serde(default = "default_reload")]
    pub reload: Vec<String>,
    /// A command (argv) that checks the configuration before the reload, e.g.
    /// `[nginx, -t, -q]`. None by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    /// Parameters appended to every `server` line, e.g. `max_fails=3 fail_timeout=10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_params: Option<String>,
    /// Extra directives inside the upstream block, each without its `;`, e.g.
    /// `keepalive 32`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub directives: Vec<String>,
    /// How long the test and reload commands may take.
    #[serde(default = "default_timeout", with = "fledge_spec::duration::required")]
    pub timeout: Duration,
    /// The variable (without `$`) that names each request's upstream, for match rules
    /// and stickiness, e.g. `fledge_shop`: nginx.conf then proxies with `proxy_pass
    /// http://$fledge_shop;` and adds `add_header Set-Cookie $fledge_shop_cookie;`.
    /// Without it the router only splits by weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
}

fn default_reload() -> Vec<String> {
    vec!["nginx".into(), "-s".into(), "reload".into()]
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Writes an nginx upstream with the split's weights and reloads nginx.
#[derive(Debug)]
pub struct NginxRouter {
    settings: NginxSettings,
    /// Where each version runs; changed by `set_endpoints`.
    endpoints: std::sync::Mutex<Endpoints>,
    /// The rules in force (none without a canary); changed by `serve`.
    rules: std::sync::Mutex<RoutingRules>,
    /// Serializes writers: two concurrent writes would race on the temporary file.
    lock: tokio::sync::Mutex<()>,
}

// === impl NginxRouter ===

impl NginxRouter {
    /// A router writing `settings.upstream_file` with the app's `endpoints`.
    pub fn new(settings: NginxSettings, endpoints: Endpoints) -> Result<Self, RouterError> {
        let config = |reason: String| RouterError::Config {
            router: KIND,
            reason,
        };
        if settings.reload.is_empty() {
            return Err(config(
                "reload must be a command, e.g. [nginx, -s, reload]".into(),
            ));
        }
        if settings.test.as_ref().is_some_and(Vec::is_empty) {
            return Err(config(
                "test, when set, must be a command, e.g. [nginx, -t]".into(),
            ));
        }
        let word = |s: &str| {
            !s.is_empty()
                && !s.contains(|c: char| c.is_whitespace() || matches!(c, ';' | '{' | '}' | '#'))
        };
        if !word(&settings.upstream) {
            return Err(config(format!(
                "upstream `{}` is not a valid upstream name",
                settings.upstream
            )));
        }
        check_endpoints(&endpoints)?;
        if let Some(p) = &settings.server_params
            && p.contains([';', '{', '}', '#', '\n'])
        {
            return Err(config(format!(
                "serverParams `{p}` may not contain ; {{ }} # or newlines"
            )));
        }
        for d in &settings.directives {
            if d.contains([';', '{', '}', '#', '\n']) {
                return Err(config(format!(
                    "directive `{d}` may not contain ; {{ }} # or newlines"
                )));
            }
        }
        if let Some(v) = &settings.variable
            && (v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(config(format!(
                "variable `{v}` must be a variable name (letters, digits, `_`) without `$`"
            )));
        }
        Ok(NginxRouter {
            settings,
            rules: std::sync::Mutex::new(RoutingRules::default()),
            endpoints: std::sync::Mutex::new(endpoints),
            lock: tokio::sync::Mutex::new(()),
        })
    }

    fn target(&self) -> String {
        self.settings.upstream_file.display().to_string()
    }

    /// The upstream file cannot be written or read.
    fn unreachable(&self, reason: String) -> RouterError {
        RouterError::Unreachable {
            router: KIND,
            target: self.target(),
            reason,
        }
    }

    fn endpoints(&self) -> Endpoints {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn rules(&self) -> RoutingRules {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The upstream file's content for `weights` with the current endpoints and rules.
    pub fn render(&self, weights: AppliedWeights) -> Result<String, RouterError> {
        self.render_with(weights, &self.endpoints(), &self.rules())
    }

    /// The upstream file's content for `desired` (what [`TrafficRouter::serve`]
    /// would write).
    pub fn render_route(&self, desired: &Desired) -> Result<String, RouterError> {
        let rules = match desired.canary {
            Some(_) => desired.rules.clone(),
            None => RoutingRules::default(),
        };
        self.render_with(
            AppliedWeights::canary(desired.weight()),
            &desired.endpoints(),
            &rules,
        )
    }

    fn render_with(
        &self,
        weights: AppliedWeights,
        endpoints: &Endpoints,
        rules: &RoutingRules,
    ) -> Result<String, RouterError> {
        if weights.canary > 0 && endpoints.canary.is_empty() {
            return Err(RouterError::Config {
                router: KIND,
                reason: format!("{}% to the canary, but it has no endpoint", weights.canary),
            });
        }
        let (ns, nc) = (
            endpoints.stable.len() as u64,
            endpoints.canary.len().max(1) as u64,
        );
        // Each stable server gets s·nc, each canary server c·ns: the versions' totals
        // are then s·ns·nc and c·ns·nc, in the ratio s:c.
        let ws = u64::from(weights.stable) * nc;
        let wc = u64::from(weights.canary) * ns;
        let g = gcd(ws, wc).max(1);
        let params = self.server_params();
        let line = |addr: &str, w: u64| {
            if w == 0 {
                format!("    server {addr} down{params};\n")
            } else {
                format!("    server {addr} weight={}{params};\n", w / g)
            }
        };
        let mut out = format!(
            "# Written by fledge; every change is overwritten.\n{MARKER} stable={} canary={}\nupstream {} {{\n",
            weights.stable, weights.canary, self.settings.upstream
        );
        for e in &endpoints.stable {
            out.push_str(&line(e, ws));
        }
        for e in &endpoints.canary {
            out.push_str(&line(e, wc));
        }
        for d in &self.settings.directives {
            out.push_str(&format!("    {d};\n"));
        }
        out.push_str("}\n");
        if let Some(var) = &self.settings.variable {
            out.push_str(&self.render_rules(var, weights, endpoints, rules));
        }
        Ok(out)
    }

    /// `server_params` as it follows a `server` line's address (empty without any).
    fn server_params(&self) -> String {
        self.settings
            .server_params
            .as_deref()
            .map(|p| format!(" {p}"))
            .unwrap_or_default()
    }

    /// The per-version upstreams and the chain of `map`s that sets `$var` to the
    /// upstream of each request: the first match rule that matches, else the sticky
    /// key's bucket (`split_clients`, canary first so a rising weight only moves users
    /// to the canary), else the weighted upstream. Rules only while there is a canary.
    fn render_rules(
        &self,
        var: &str,
        weights: AppliedWeights,
        endpoints: &Endpoints,
        rules: &RoutingRules,
    ) -> String {
        let name = &self.settings.upstream;
        let params = self.server_params();
        let mut out =
            String::from("\n# Match rules and stickiness: nginx.conf proxies to the upstream in $");
        out.push_str(var);
        out.push_str(".\n");
        let mut group = |suffix: &str, servers: &[String]| {
            out.push_str(&format!("upstream {name}_{suffix} {{\n"));
            for e in servers {
                out.push_str(&format!("    server {e}{params};\n"));
            }
            for d in &self.settings.directives {
                out.push_str(&format!("    {d};\n"));
            }
            out.push_str("}\n");
        };
        group("stable", &endpoints.stable);
        let canary = !endpoints.canary.is_empty();
        if canary {
            group("canary", &endpoints.canary);
        }
        let upstream_of = |t: fledge_spec::Target| match t {
            fledge_spec::Target::Canary => format!("{name}_canary"),
            fledge_spec::Target::Stable => format!("{name}_stable"),
        };
        let (matches, sticky) = if canary {
            (
                rules
                    .matches
                    .iter()
                    .filter_map(|r| Some((RequestKey::of_rule(r)?, r)))
                    .collect::<Vec<_>>(),
                rules.stickiness.as_ref().and_then(|s| s.key()),
            )
        } else {
            (Vec::new(), None)
        };
        // What follows the match rules.
        let rest = match sticky {
            Some(_) => format!("${var}_sticky"),
            None => name.clone(),
        };
        if matches.is_empty() {
            out.push_str(&format!("map \"\" ${var} {{ default {rest}; }}\n"));
        }
        for (i, (key, rule)) in matches.iter().enumerate() {
            let this = if i == 0 {
                var.to_owned()
            } else {
                format!("{var}_m{i}")
            };
            let next = if i + 1 < matches.len() {
                format!("${var}_m{}", i + 1)
            } else {
                rest.clone()
            };
            out.push_str(&format!(
                "map {} ${this} {{\n    \"~^{}$\" {};\n    default {next};\n}}\n",
                nginx_source(key),
                regex_literal(&rule.value),
                upstream_of(rule.target)
            ));
        }
        let split = |key: &str, out_var: &str| {
            let parts = match weights.canary {
                0 => format!("    * {name}_stable;\n"),
                100 => format!("    * {name}_canary;\n"),
                w => format!("    {w}% {name}_canary;\n    * {name}_stable;\n"),
            };
            format!("split_clients \"{key}\" ${out_var} {{\n{parts}}}\n")
        };
        let mut cookie = None;
        match sticky {
            Some(StickyKey::Header(h)) => {
                let source = nginx_source(&RequestKey::Header(h.to_ascii_lowercase()));
                // Requests without the header are routed on their own, by weight.
                out.push_str(&format!(
                    "map {source} ${var}_sticky {{\n    \"\" {name};\n    default ${var}_bucket;\n}}\n"
                ));
                out.push_str(&split(&source, &format!("{var}_bucket")));
            }
            Some(StickyKey::Cookie { name: c, ttl }) => {
                // A request without the cookie is keyed, and its cookie set, by a new
                // random id.
                let source = nginx_source(&RequestKey::Cookie(c.to_owned()));
                out.push_str(&format!(
                    "map {source} ${var}_key {{\n    \"\" $request_id;\n    default {source};\n}}\n"
                ));
                out.push_str(&split(&format!("${var}_key"), &format!("{var}_sticky")));
                let max_age = ttl
                    .map(|t| format!("; Max-Age={}", t.as_secs().max(1)))
                    .unwrap_or_default();
                cookie = Some((
                    source,
                    format!("{c}=$request_id; Path=/{max_age}; HttpOnly; SameSite=Lax"),
                ));
            }
            None => {}
        }
        match cookie {
            Some((source, value)) => out.push_str(&format!(
                "map {source} ${var}_cookie {{\n    \"\" \"{value}\";\n    default \"\";\n}}\n"
            )),
            None => out.push_str(&format!("map \"\" ${var}_cookie {{ default \"\"; }}\n")),
        }
        out
    }

    async fn run(&self, what: &str, argv: &[String]) -> Result<(), RouterError> {
        let rejected = |reason: String| RouterError::Rejected {
            router: KIND,
            target: self.target(),
            reason,
        };
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            rejected(format!(
                "{what} command `{}` cannot start: {e}",
                argv.join(" ")
            ))
        })?;
        match tokio::time::timeout(self.settings.timeout, child.wait_with_output()).await {
            Err(_) => Err(rejected(format!(
                "{what} command `{}` did not finish within {:?}",
                argv.join(" "),
                self.settings.timeout
            ))),
            Ok(Err(e)) => Err(rejected(format!(
                "{what} command `{}`: {e}",
                argv.join(" ")
            ))),
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let stderr: String = stderr.trim().chars().take(500).collect();
                Err(rejected(format!(
                    "{what} command `{}` failed ({}): {stderr}",
                    argv.join(" "),
                    out.status
                )))
            }
        }
    }

    /// The upstream file as it is, if there is one: what a failed reload puts back.
    async fn previous(&self) -> Option<String> {
        tokio::fs::read_to_string(&self.settings.upstream_file)
            .await
            .ok()
    }

    /// Applies `content` and reloads; puts `previous` back if the test or the reload
    /// fails.
    async fn write_and_reload(
        &self,
        content: &str,
        previous: Option<&str>,
    ) -> Result<(), RouterError> {
        let path = &self.settings.upstream_file;
        write_atomically(path, content)
            .await
            .map_err(|e| self.unreachable(format!("cannot write the upstream file: {e}")))?;
        let result = async {
            if let Some(test) = &self.settings.test {
                self.run("test", test).await?;
            }
            self.run("reload", &self.settings.reload).await
        }
        .await;
        if result.is_err() {
            let restored = match previous {
                Some(old) => write_atomically(path, old).await,
                None => tokio::fs::remove_file(path).await,
            };
            if let Err(e) = restored {
                tracing::error!(file = %path.display(), error = %e, "cannot restore the previous upstream file");
            }
        }
        result
    }
}

#[async_trait]
impl TrafficRouter for NginxRouter {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn set_weights(&self, canary_weight: u8) -> Result<AppliedWeights, RouterError> {
        let wanted = AppliedWeights::canary(canary_weight);
        let _guard = self.lock.lock().await;
        let content = self.render(wanted)?;
        let previous = self.previous().await;
        self.write_and_reload(&content, previous.as_deref()).await?;
        tracing::info!(upstream = %self.settings.upstream, canary = wanted.canary, "nginx weights set");
        Ok(wanted)
    }

    /// Match rules on headers named with letters, digits and `-` and cookies named
    /// with letters, digits and `_` (what nginx's `$http_*` and `$cookie_*` can
    /// name), to a non-empty value, and stickiness on either, once `variable` is set;
    /// never `closeUpgradedOnAbort`, nor copies of requests (`mirror`).
    fn supports(&self, rules: &RoutingRules) -> Result<(), RouterError> {
        super::no_mirror(
            KIND,
            rules,
            "nginx's `mirror` holds each client request until its copy is answered, so a slow canary would slow users",
        )?;
        super::no_close_upgraded(
            KIND,
            rules,
            "after a reload nginx's old workers keep upgraded connections (WebSocket) open until they close or worker_shutdown_timeout, whichever version they reach",
        )?;
        let refuse = |field, reason| super::unsupported(KIND, field, reason);
        let no_variable = "this router has no `variable`: set `variable` in its settings and proxy with `proxy_pass http://$VARIABLE;` in nginx.conf (docs/integrations.md, nginx); a static `proxy_pass` cannot see the rules".to_owned();
        for (i, rule) in rules.matches.iter().enumerate() {
            if self.settings.variable.is_none() {
                return refuse("match", no_variable);
            }
            let Some(key) = RequestKey::of_rule(rule) else {
                return refuse(
                    "match",
                    format!("rule {}: exactly one of header and cookie", i + 1),
                );
            };
            if let Some(reason) = unnamable(&key) {
                return refuse("match", format!("rule {}: {reason}", i + 1));
            }
            if rule.value.is_empty() {
                return refuse(
                    "match",
                    format!(
                        "rule {}: nginx cannot tell an empty value from a missing {key}",
                        i + 1
                    ),
                );
            }
        }
        if let Some(sticky) = &rules.stickiness {
            if self.settings.variable.is_none() {
                return refuse("stickiness", no_variable);
            }
            let Some(key) = RequestKey::of_stickiness(sticky) else {
                return refuse("stickiness", "exactly one of header and cookie".into());
            };
            if let Some(reason) = unnamable(&key) {
                return refuse("stickiness", reason);
            }
        }
        Ok(())
    }

    /// One file and one reload for the endpoints, the weight and the rules.
    async fn serve(&self, desired: &Desired) -> Result<AppliedWeights, RouterError> {
        self.supports(&desired.rules)?;
        let rules = match desired.canary {
            Some(_) => desired.rules.clone(),
            None => RoutingRules::default(),
        };
        self.apply_with(&desired.endpoints(), desired.weight(), Some(rules))
            .await
    }

    async fn current(&self) -> Result<AppliedWeights, RouterError> {
        let text = tokio::fs::read_to_string(&self.settings.upstream_file)
            .await
            .map_err(|e| self.unreachable(format!("cannot read the upstream file: {e}")))?;
        parse_marker(&text).ok_or_else(|| RouterError::Rejected {
            router: KIND,
            target: self.target(),
            reason: format!(
                "no `{MARKER} stable=N canary=N` line: the file was not written by fledge"
            ),
        })
    }

    async fn apply(
        &self,
        endpoints: &Endpoints,
        canary_weight: u8,
    ) -> Result<AppliedWeights, RouterError> {
        self.apply_with(endpoints, canary_weight, None).await
    }

    async fn set_endpoints(&self, endpoints: &Endpoints) -> Result<EndpointsApplied, RouterError> {
        check_endpoints(endpoints)?;
        let _guard = self.lock.lock().await;
        let previous = self.previous().await;
        // Keep the split in place; a file fledge has not written yet means 0%.
        let weights = previous
            .as_deref()
            .and_then(parse_marker)
            .unwrap_or(AppliedWeights::canary(0));
        let content = self.render_with(weights, endpoints, &self.rules())?;
        self.write_and_reload(&content, previous.as_deref()).await?;
        *self.endpoints.lock().unwrap_or_else(|p| p.into_inner()) = endpoints.clone();
        tracing::info!(upstream = %self.settings.upstream, "nginx endpoints set");
        Ok(EndpointsApplied::Applied)
    }
}

impl NginxRouter {
    /// Writes `endpoints`, `canary_weight` and `rules` (the rules in force when
    /// `None`) in one file and one reload; remembers them once nginx took them.
    async fn apply_with(
        &self,
        endpoints: &Endpoints,
        canary_weight: u8,
        rules: Option<RoutingRules>,
    ) -> Result<AppliedWeights, RouterError> {
        check_endpoints(endpoints)?;
        let wanted = AppliedWeights::canary(canary_weight);
        let _guard = self.lock.lock().await;
        let rules = rules.unwrap_or_else(|| self.rules());
        let content = self.render_with(wanted, endpoints, &rules)?;
        let previous = self.previous().await;
        self.write_and_reload(&content, previous.as_deref()).await?;
        *self.endpoints.lock().unwrap_or_else(|p| p.into_inner()) = endpoints.clone();
        *self.rules.lock().unwrap_or_else(|p| p.into_inner()) = rules;
        tracing::info!(upstream = %self.settings.upstream, canary = wanted.canary, "nginx route applied");
        Ok(wanted)
    }
}

/// The variable nginx reads `key` from: `$http_x_canary`, `$cookie_beta`.
fn nginx_source(key: &RequestKey) -> String {
    match key {
        RequestKey::Header(h) => format!("$http_{}", h.to_ascii_lowercase().replace('-', "_")),
        RequestKey::Cookie(c) => format!("$cookie_{c}"),
    }
}

/// Why nginx cannot read `key` through a variable, if it cannot.
fn unnamable(key: &RequestKey) -> Option<String> {
    match key {
        RequestKey::Header(h)
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            Some(format!(
                "nginx reads a header as $http_NAME, which only names headers of letters, digits and `-`, not {key}"
            ))
        }
        RequestKey::Cookie(c)
            if c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            Some(format!(
                "nginx reads a cookie as $cookie_NAME, which only names cookies of letters, digits and `_`, not {key}"
            ))
        }
        _ => None,
    }
}

/// `value` as an exact, case-sensitive PCRE literal inside a quoted nginx string:
/// letters and digits as they are, every other byte as `\xHH` (which nginx's
/// parser leaves alone and PCRE reads as that byte).
fn regex_literal(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// Every endpoint must be one `host:port` word: it is written into nginx's syntax.
fn check_endpoints(endpoints: &Endpoints) -> Result<(), RouterError> {
    if endpoints.stable.is_empty() {
        return Err(RouterError::Config {
            router: KIND,
            reason: "the app has no stable endpoint".into(),
        });
    }
    for e in endpoints.stable.iter().chain(&endpoints.canary) {
        if e.is_empty()
            || e.contains(|c: char| c.is_whitespace() || matches!(c, ';' | '{' | '}' | '#'))
        {
            return Err(RouterError::Config {
                router: KIND,
                reason: format!("endpoint `{e}` is not a host:port"),
            });
        }
    }
    Ok(())
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Reads the weights back from the marker line.
fn parse_marker(text: &str) -> Option<AppliedWeights> {
    let line = text.lines().find_map(|l| l.strip_prefix(MARKER))?;
    let mut stable = None;
    let mut canary = None;
    for part in line.split_whitespace() {
        match part.split_once('=') {
            Some(("stable", v)) => stable = v.parse::<u8>().ok(),
            Some(("canary", v)) => canary = v.parse::<u8>().ok(),
            _ => {}
        }
    }
    let (stable, canary) = (stable?, canary?);
    (u16::from(stable) + u16::from(canary) == 100).then_some(AppliedWeights { stable, canary })
}

/// Writes `content` to a temporary file beside `path`, syncs it and renames it over
/// `path`.
async fn write_atomically(path: &Path, content: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the upstream file has no file name"))?;
    let tmp = dir.join(format!(".{}.fledge-tmp", name.to_string_lossy()));
    let mut file = tokio::fs::File::create(&tmp).await?;
    tokio::io::AsyncWriteExt::write_all(&mut file, content.as_bytes()).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, path).await
}

#[cfg(test)]
mod tests {
    use super::super::Upstreams;
    use super::super::tests::rule;
    use super::*;

    fn router(dir: &Path, reload: &[&str], canary: &[&str]) -> NginxRouter {
        NginxRouter::new(
            NginxSettings {
                upstream_file: dir.join("upstream.conf"),
                upstream: "be_app".into(),
                reload: reload.iter().map(|s| s.to_string()).collect(),
                test: None,
                server_params: Some("max_fails=0".into()),
                directives: vec!["keepalive 8".into()],
                timeout: Duration::from_secs(5),
                variable: None,
            },
            Endpoints {
                stable: vec!["127.0.0.1:9001".into(), "127.0.0.1:9003".into()],
                canary: canary.iter().map(|s| s.to_string()).collect(),
            },
        )
        .unwrap()
    }

    fn sticky(
        header: Option<&str>,
        cookie: Option<&str>,
        ttl: Option<Duration>,
    ) -> fledge_spec::Stickiness {
        fledge_spec::Stickiness {
            header: header.map(Into::into),
            cookie: cookie.map(Into::into),
            ttl,
        }
    }

    fn with_variable(dir: &Path) -> NginxRouter {
        let r = router(dir, &["true"], &["127.0.0.1:9002"]);
        NginxRouter::new(
            NginxSettings {
                variable: Some("fledge_app".into()),
                ..r.settings.clone()
            },
            r.endpoints(),
        )
        .unwrap()
    }

    #[test]
    fn rules_render_as_a_chain_of_maps_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let r = with_variable(dir.path());
        let rules = RoutingRules {
            matches: vec![
                rule(Some("X-Canary"), None, "a.b c", true),
                rule(None, Some("pin"), "old", false),
            ],
            stickiness: Some(sticky(None, Some("fid"), Some(Duration::from_secs(3600)))),
            close_upgraded_on_abort: false,
            mirror: None,
        };
        let text = r
            .render_with(AppliedWeights::canary(20), &r.endpoints(), &rules)
            .unwrap();
        for want in [
            "upstream be_app {",
            "upstream be_app_stable {\n    server 127.0.0.1:9001 max_fails=0;\n    server 127.0.0.1:9003 max_fails=0;\n    keepalive 8;\n}",
            "upstream be_app_canary {\n    server 127.0.0.1:9002 max_fails=0;",
            "map $http_x_canary $fledge_app {\n    \"~^a\\x2eb\\x20c$\" be_app_canary;\n    default $fledge_app_m1;\n}",
            "map $cookie_pin $fledge_app_m1 {\n    \"~^old$\" be_app_stable;\n    default $fledge_app_sticky;\n}",
            "map $cookie_fid $fledge_app_key {\n    \"\" $request_id;\n    default $cookie_fid;\n}",
            "split_clients \"$fledge_app_key\" $fledge_app_sticky {\n    20% be_app_canary;\n    * be_app_stable;\n}",
            "\"fid=$request_id; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax\"",
        ] {
            assert!(text.contains(want), "{want}\nnot in\n{text}");
        }
        // A header key: requests without it go by weight; 0% and 100% have no part
        // nginx would refuse.
        let rules = RoutingRules {
            stickiness: Some(sticky(Some("X-User"), None, None)),
            ..Default::default()
        };
        let text = r
            .render_with(AppliedWeights::canary(0), &r.endpoints(), &rules)
            .unwrap();
        assert!(
            text.contains("map \"\" $fledge_app { default $fledge_app_sticky; }"),
            "{text}"
        );
        assert!(text.contains("map $http_x_user $fledge_app_sticky {\n    \"\" be_app;\n    default $fledge_app_bucket;"), "{text}");
        assert!(
            text.contains(
                "split_clients \"$http_x_user\" $fledge_app_bucket {\n    * be_app_stable;\n}"
            ),
            "{text}"
        );
        assert!(
            text.contains("map \"\" $fledge_app_cookie { default \"\"; }"),
            "{text}"
        );
        let text = r
            .render_with(AppliedWeights::canary(100), &r.endpoints(), &rules)
            .unwrap();
        assert!(text.contains("{\n    * be_app_canary;\n}"), "{text}");
        // Without a canary: no rule, every request to the weighted upstream.
        let none = Endpoints {
            stable: vec!["127.0.0.1:9001".into()],
            canary: vec![],
        };
        let text = r
            .render_with(AppliedWeights::canary(0), &none, &rules)
            .unwrap();
        assert!(
            text.contains("map \"\" $fledge_app { default be_app; }"),
            "{text}"
        );
        assert!(
            !text.contains("be_app_canary") && !text.contains("split_clients"),
            "{text}"
        );
        // Without `variable`, the file is what it always was.
        let plain = router(dir.path(), &["true"], &["127.0.0.1:9002"]);
        assert!(
            !plain
                .render(AppliedWeights::canary(20))
                .unwrap()
                .contains("map")
        );
    }

    #[test]
    fn supports_what_nginx_variables_can_name() {
        let dir = tempfile::tempdir().unwrap();
        let r = with_variable(dir.path());
        let plain = router(dir.path(), &["true"], &["127.0.0.1:9002"]);
        let ok = RoutingRules {
            matches: vec![
                rule(Some("X-Canary"), None, "yes", true),
                rule(None, Some("beta_1"), "1", false),
            ],
            stickiness: Some(sticky(Some("x-user-id"), None, None)),
            close_upgraded_on_abort: false,
            mirror: None,
        };
        r.supports(&ok).unwrap();
        let field = |router: &NginxRouter, rules: RoutingRules| match router.supports(&rules) {
            Err(RouterError::Unsupported { field, reason, .. }) => (field, reason),
            other => panic!("{other:?}"),
        };
        let (f, why) = field(&plain, ok.clone());
        assert_eq!(f, "match");
        assert!(why.contains("`variable`"), "{why}");
        let (f, _) = field(
            &plain,
            RoutingRules {
                stickiness: ok.stickiness,
                ..Default::default()
            },
        );
        assert_eq!(f, "stickiness");
        for (rules, want) in [
            (
                RoutingRules {
                    matches: vec![rule(Some("x_canary"), None, "1", true)],
                    ..Default::default()
                },
                "match",
            ),
            (
                RoutingRules {
                    matches: vec![rule(None, Some("user-id"), "1", true)],
                    ..Default::default()
                },
                "match",
            ),
            (
                RoutingRules {
                    matches: vec![rule(Some("x-canary"), None, "", true)],
                    ..Default::default()
                },
                "match",
            ),
            (
                RoutingRules {
                    stickiness: Some(sticky(None, Some("a.b"), None)),
                    ..Default::default()
                },
                "stickiness",
            ),
            (
                RoutingRules {
                    close_upgraded_on_abort: true,
                    ..Default::default()
                },
                "closeUpgradedOnAbort",
            ),
            (super::super::tests::mirrored(1), "stages[1].mirror"),
        ] {
            let (f, why) = field(&r, rules);
            assert_eq!(f, want, "{why}");
        }
        let err = r
            .supports(&RoutingRules {
                close_upgraded_on_abort: true,
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nginx") && err.contains("`closeUpgradedOnAbort`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn weights_alone_keep_the_rules_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let r = with_variable(dir.path());
        let desired = Desired {
            stable: Upstreams::new("v1", vec!["127.0.0.1:9001".into()]),
            canary: Some(Upstreams::new("v2", vec!["127.0.0.1:9002".into()])),
            canary_weight: 10,
            mirror: 0,
            rules: RoutingRules {
                matches: vec![rule(Some("x-canary"), None, "1", true)],
                ..Default::default()
            },
        };
        r.serve(&desired).await.unwrap();
        r.set_weights(50).await.unwrap();
        let text = std::fs::read_to_string(dir.path().join("upstream.conf")).unwrap();
        assert!(text.contains("map $http_x_canary $fledge_app {"), "{text}");
        // Without a canary the rules go.
        r.serve(&Desired::stable_only("v1", vec!["127.0.0.1:9001".into()]))
            .await
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join("upstream.conf")).unwrap();
        assert!(!text.contains("$http_x_canary"), "{text}");
    }

    #[test]
    fn renders_reduced_weights_and_down_for_zero() {
        let dir = tempfile::tempdir().unwrap();
        let r = router(dir.path(), &["true"], &["127.0.0.1:9002"]);
        let text = r.render(AppliedWeights::canary(20)).unwrap();
        // stable 80 over 2 servers, canary 20 over 1: 80·1 : 20·2 = 2 : 1 per server.
        assert!(
            text.contains("server 127.0.0.1:9001 weight=2 max_fails=0;"),
            "{text}"
        );
        assert!(
            text.contains("server 127.0.0.1:9002 weight=1 max_fails=0;"),
            "{text}"
        );
        assert!(text.contains("keepalive 8;"), "{text}");
        let text = r.render(AppliedWeights::canary(0)).unwrap();
        assert!(
            text.contains("server 127.0.0.1:9002 down max_fails=0;"),
            "{text}"
        );
        assert!(text.contains("server 127.0.0.1:9001 weight=1"), "{text}");
        assert_eq!(parse_marker(&text), Some(AppliedWeights::canary(0)));
        let text = r.render(AppliedWeights::canary(100)).unwrap();
        assert!(text.contains("server 127.0.0.1:9001 down"), "{text}");
        let none = router(dir.path(), &["true"], &[]);
        assert!(none.render(AppliedWeights::canary(10)).is_err());
        assert!(none.render(AppliedWeights::canary(0)).is_ok());
    }

    #[tokio::test]
    async fn writes_reloads_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let r = router(dir.path(), &["true"], &["127.0.0.1:9002"]);
        assert_eq!(r.set_weights(30).await.unwrap(), AppliedWeights::canary(30));
        assert_eq!(r.current().await.unwrap(), AppliedWeights::canary(30));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }

    #[tokio::test]
    async fn apply_moves_endpoints_and_weight_in_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let r = router(dir.path(), &["true"], &["127.0.0.1:9002"]);
        r.set_weights(100).await.unwrap();
        // The promoted route: the new version is stable, no canary, weight 0.
        let promoted = Endpoints {
            stable: vec!["127.0.0.1:9002".into()],
            canary: vec![],
        };
        assert_eq!(
            r.apply(&promoted, 0).await.unwrap(),
            AppliedWeights::canary(0)
        );
        let text = std::fs::read_to_string(dir.path().join("upstream.conf")).unwrap();
        assert!(text.contains("server 127.0.0.1:9002 weight=1"), "{text}");
        assert!(!text.contains("9001"), "{text}");
        // set_endpoints alone cannot drop the canary while it takes traffic.
        r.set_weights(0).await.unwrap();
        assert!(r.apply(&promoted, 30).await.is_err());
    }

    #[tokio::test]
    async fn failed_reload_restores_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        router(dir.path(), &["true"], &["127.0.0.1:9002"])
            .set_weights(10)
            .await
            .unwrap();
        let failing = router(
            dir.path(),
            &["sh", "-c", "echo 'emerg: bad' >&2; exit 1"],
            &["127.0.0.1:9002"],
        );
        let err = failing.set_weights(50).await.unwrap_err();
        assert!(matches!(err, RouterError::Rejected { .. }), "{err}");
        assert!(err.to_string().contains("emerg: bad"), "{err}");
        assert_eq!(failing.current().await.unwrap(), AppliedWeights::canary(10));
        let missing = router(dir.path(), &["/nonexistent/nginx"], &["127.0.0.1:9002"]);
        assert!(missing.set_weights(50).await.is_err());
        assert_eq!(missing.current().await.unwrap(), AppliedWeights::canary(10));
    }
}
