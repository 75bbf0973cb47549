//! Checks a deserialized spec for what its types cannot say: names, ordering of
//! stages, criteria against custom metric definitions, exclusive fields, ranges.
//! Every problem is reported, each with the field path and, given the document's
//! node tree, its position.

use crate::criteria::{BUILTIN_METRICS, Criterion, SUGGESTED_METRICS, is_builtin_metric};
use crate::error::SpecIssue;
use crate::parse::{Located, Seg, did_you_mean, path_string};
use std::time::Duration;

use crate::duration;
use crate::raw::Raw;
use crate::types::{
    Hook, INVALID_PERCENT, MetricKind, RolloutSpec, Strategy, Target, percent_from_raw,
};

/// Collects problems with their paths; positions come from the node tree when there
/// is one.
struct Checker<'a> {
    tree: Option<&'a Located>,
    issues: Vec<SpecIssue>,
}

impl Checker<'_> {
    /// Reports a value that deserialization replaced with a placeholder, judging it
    /// again as written in the document (the same function gives the same message
    /// as a strict parse would).
    fn report_placeholder<T>(
        &mut self,
        path: &[Seg],
        judge: impl FnOnce(&Raw) -> Result<T, String>,
        expected: &str,
    ) {
        let message = self
            .tree
            .and_then(|t| t.raw(path))
            .and_then(|raw| judge(&raw).err())
            .unwrap_or_else(|| format!("expected {expected}, found an invalid value"));
        self.report(path, message);
    }

    /// Reports a duration placeholder; true when `d` was one.
    fn check_duration(&mut self, path: &[Seg], d: Duration) -> bool {
        if d == duration::INVALID {
            self.report_placeholder(path, duration::from_raw, duration::EXPECTED);
            true
        } else {
            false
        }
    }

    /// Reports a duration placeholder, or a zero duration where one above zero is
    /// `expected`.
    fn check_nonzero_duration(&mut self, path: &[Seg], d: Duration, expected: &str) {
        if !self.check_duration(path, d) && d.is_zero() {
            self.report(path, format!("expected {expected}, found 0s"));
        }
    }

    fn report(&mut self, path: &[Seg], message: String) {
        let pos = self.tree.and_then(|t| t.pos(path));
        self.issues
            .push(SpecIssue::new(path_string(path), message).at(pos));
    }

    /// Reports at the key of the field rather than its value (for fields whose mere
    /// presence is the problem).
    fn report_key(&mut self, path: &[Seg], message: String) {
        let pos = self
            .tree
            .and_then(|t| t.key_pos(path).or_else(|| t.pos(path)));
        self.issues
            .push(SpecIssue::new(path_string(path), message).at(pos));
    }
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_owned())
}

fn at(base: &[Seg], more: &[Seg]) -> Vec<Seg> {
    let mut p = base.to_vec();
    p.extend_from_slice(more);
    p
}

/// All problems in `spec`, in document order when positions are known.
pub(crate) fn validate(spec: &RolloutSpec, tree: Option<&Located>) -> Vec<SpecIssue> {
    let mut c = Checker {
        tree,
        issues: Vec::new(),
    };
    check_names(&mut c, spec);
    check_stages(&mut c, spec);
    check_metrics(&mut c, spec);
    check_analysis(&mut c, spec);
    check_routing(&mut c, spec);
    check_blue_green(&mut c, spec);
    check_alerts(&mut c, spec);
    check_mirroring(&mut c, spec);
    check_hooks(&mut c, spec);
    let mut issues = c.issues;
    // Stable sort: problems without a position keep their order, after the others.
    issues.sort_by_key(|i| (i.line.is_none(), i.line, i.column));
    issues
}

// === names ===

/// An app name: an RFC 1123 DNS label, because it becomes part of URLs, metric labels
/// and Kubernetes object names.
pub fn check_app_name(name: &str) -> Result<(), String> {
    check_identifier(
        name,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
        "1 to 63 lowercase letters, digits or `-`, starting and ending with a letter or digit",
    )
}

/// A version name: a Kubernetes label value (`v2.3.1`, `2024-06-01_rc1`).
pub fn check_version_name(name: &str) -> Result<(), String> {
    check_identifier(
        name,
        |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'),
        "1 to 63 letters, digits, `.`, `_` or `-`, starting and ending with a letter or digit",
    )
}

fn check_identifier(name: &str, allowed: impl Fn(char) -> bool, rule: &str) -> Result<(), String> {
    let found = if name.is_empty() {
        "an empty name".to_owned()
    } else if name.chars().count() > 63 {
        format!("a name of {} characters", name.chars().count())
    } else if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        format!("`{}` (the character {bad:?} is not allowed)", shorten(name))
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        format!("`{name}`")
    } else {
        return Ok(());
    };
    Err(format!("expected {rule}, found {found}"))
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

fn check_names(c: &mut Checker<'_>, spec: &RolloutSpec) {
    if let Err(e) = check_app_name(&spec.app) {
        c.report(&[key("app")], e);
    }
    if let Err(e) = check_version_name(&spec.version) {
        c.report(&[key("version")], e);
    }
}

// === stages ===

fn check_stages(c: &mut Checker<'_>, spec: &RolloutSpec) {
    let n = spec.stages.len();
    if n == 0 {
        c.report(
            &[key("stages")],
            "expected at least one stage, found none".to_owned(),
        );
        return;
    }
    for (i, stage) in spec.stages.iter().enumerate() {
        let base = [key("stages"), Seg::Index(i)];
        if stage.traffic == INVALID_PERCENT {
            c.report_placeholder(
                &at(&base, &[key("traffic")]),
                percent_from_raw,
                "a number from 0 to 100",
            );
        } else if let Some((j, prev)) = spec.stages[..i]
            .iter()
            .map(|s| s.traffic)
            .enumerate()
            .rfind(|(_, t)| *t != INVALID_PERCENT)
            && stage.traffic < prev
        {
            c.report(
                &at(&base, &[key("traffic")]),
                format!(
                    "expected at least {prev} (traffic never goes down between stages, and stages[{j}] has {prev}), found {}",
                    stage.traffic
                ),
            );
        }
        check_mirror(c, &base, stage);
        if let Some(d) = stage.duration {
            c.check_duration(&at(&base, &[key("duration")]), d);
        }
        let last = i + 1 == n;
        if stage.is_final && !last {
            c.report_key(
                &at(&base, &[key("final")]),
                format!(
                    "expected `final: true` only on the last stage (stages[{}]), found it on stages[{i}]",
                    n - 1
                ),
            );
        }
        if stage.promote && !last {
            c.report_key(
                &at(&base, &[key("promote")]),
                format!(
                    "expected `promote` only on the final stage (stages[{}]): earlier stages advance on their own, found it on stages[{i}]",
                    n - 1
                ),
            );
        }
        for (j, criterion) in stage.success_criteria.iter().enumerate() {
            let path = at(&base, &[key("successCriteria"), Seg::Index(j)]);
            check_criterion(c, spec, &path, criterion);
        }
    }
}

/// A stage's `mirror`: a percentage, and only while some requests stay on stable.
fn check_mirror(c: &mut Checker<'_>, base: &[Seg], stage: &crate::types::Stage) {
    let path = at(base, &[key("mirror")]);
    if stage.mirror == INVALID_PERCENT {
        c.report_placeholder(&path, percent_from_raw, "a number from 0 to 100");
    } else if stage.mirror > 0 && stage.traffic == 100 {
        c.report(
            &path,
            format!(
                "expected no `mirror` in a stage with `traffic: 100` (every request already goes to the canary, none is left on stable to copy), found {}",
                stage.mirror
            ),
        );
    }
}

/// Re-parses a criterion against the spec's metric definitions: the name must exist
/// and the units must suit the metric's dimension.
fn check_criterion(c: &mut Checker<'_>, spec: &RolloutSpec, path: &[Seg], criterion: &Criterion) {
    let resolved = Criterion::parse_with(&criterion.source, |name| {
        spec.metrics.get(name).map(|def| Some(def.dimension()))
    });
    if let Err(e) = resolved {
        let pos = c
            .tree
            .and_then(|t| t.pos_in_scalar(path, e.offset).or_else(|| t.pos(path)));
        let mut message = if spec.metrics.is_empty() {
            e.message.replace(
                ", or a name defined under `metrics:`",
                "; no custom `metrics:` are defined",
            )
        } else {
            e.message
        };
        if let Some(name) = message
            .starts_with("expected a metric")
            .then(|| message.rsplit_once("found `"))
            .flatten()
            .map(|(_, name)| name.trim_end_matches('`').to_owned())
        {
            let known = SUGGESTED_METRICS
                .into_iter()
                .chain(spec.metrics.keys().map(String::as_str));
            // `latency_p100` is a bad quantile, not a typo of another name.
            let bad_quantile = name
                .strip_prefix("latency_p")
                .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()));
            if let Some(guess) = did_you_mean(&name, known).filter(|_| !bad_quantile) {
                message.push_str(&format!(" (did you mean `{guess}`?)"));
            }
        }
        c.issues
            .push(SpecIssue::new(path_string(path), message).at(pos));
    }
}

// === custom metrics ===

fn check_metrics(c: &mut Checker<'_>, spec: &RolloutSpec) {
    for (name, def) in &spec.metrics {
        let base = [key("metrics"), key(name)];
        let valid_name = name.starts_with(|ch: char| ch.is_ascii_lowercase() || ch == '_')
            && name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
        if !valid_name || name.len() > 63 {
            c.report_key(
                &base,
                format!(
                    "expected a metric name of 1 to 63 lowercase letters, digits or `_`, not starting with a digit, found `{}`",
                    shorten(name)
                ),
            );
        } else if is_builtin_metric(name) {
            c.report_key(
                &base,
                format!(
                    "expected a name that is not a built-in metric ({BUILTIN_METRICS}), found `{name}`"
                ),
            );
        }
        for (field, query) in [
            ("query", &def.query),
            ("bad", &def.bad),
            ("total", &def.total),
        ] {
            if let Some(q) = query
                && let Err(msg) = check_placeholders(q)
            {
                c.report(&at(&base, &[key(field)]), msg);
            }
        }
        let blank = |q: &Option<String>| q.as_deref().is_none_or(|q| q.trim().is_empty());
        match def.kind {
            MetricKind::Gauge => {
                if blank(&def.query) {
                    c.report(
                        &base,
                        "expected a `query` for a gauge metric, found none".to_owned(),
                    );
                }
                for field in ["bad", "total"] {
                    let set = if field == "bad" { &def.bad } else { &def.total };
                    if set.is_some() {
                        c.report_key(
                            &at(&base, &[key(field)]),
                            format!(
                                "expected no `{field}` on a gauge metric (it belongs to `kind: ratio`), found one"
                            ),
                        );
                    }
                }
            }
            MetricKind::Ratio => {
                for (field, q) in [("bad", &def.bad), ("total", &def.total)] {
                    if blank(q) {
                        c.report(
                            &base,
                            format!("expected a `{field}` query for a ratio metric, found none"),
                        );
                    }
                }
                if def.query.is_some() {
                    c.report_key(
                        &at(&base, &[key("query")]),
                        "expected `bad` and `total` for a ratio metric, found `query` (it belongs to `kind: gauge`)".to_owned(),
                    );
                }
                if let Some(unit) = def.unit
                    && unit != crate::criteria::Dimension::Ratio
                {
                    c.report(
                        &at(&base, &[key("unit")]),
                        format!(
                            "expected `ratio` (or no unit) for a ratio metric, found `{}`",
                            serde_json::to_value(unit)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default()
                        ),
                    );
                }
            }
        }
    }
}

/// The placeholders a metric source fills in a query.
const PLACEHOLDERS: [&str; 4] = ["app", "version", "arm", "window"];

/// Every `{{name}}` in a query must be one the metric sources know.
fn check_placeholders(query: &str) -> Result<(), String> {
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!(
                "expected `}}}}` to close the placeholder, found the end of the query after `{}`",
                shorten(&rest[start..])
            ));
        };
        let name = after[..end].trim();
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "expected a placeholder {{{{app}}}}, {{{{version}}}}, {{{{arm}}}} or {{{{window}}}}, found `{{{{{name}}}}}`"
            ));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

// === analysis ===

fn check_analysis(c: &mut Checker<'_>, spec: &RolloutSpec) {
    let a = &spec.analysis;
    let base = [key("analysis")];
    c.check_nonzero_duration(
        &at(&base, &[key("interval")]),
        a.interval,
        "an interval of at least 1ms",
    );
    if !(a.alpha > 0.0 && a.alpha < 0.5) {
        c.report(
            &at(&base, &[key("alpha")]),
            format!(
                "expected a false-abort probability between 0 and 0.5 (e.g. 0.05), found {}",
                a.alpha
            ),
        );
    }
    for (field, r) in [
        ("errors", a.tolerance.errors),
        ("latency", a.tolerance.latency),
    ] {
        if !(r.is_finite() && r >= 1.0) {
            c.report(
                &at(&base, &[key("tolerance"), key(field)]),
                format!("expected a ratio of at least 1 (e.g. 1.25), found {r}"),
            );
        }
    }
    if a.max_consecutive_errors == 0 {
        c.report(
            &at(&base, &[key("maxConsecutiveErrors")]),
            "expected at least 1, found 0".to_owned(),
        );
    }
}

// === routing: canary endpoints, match rules, stickiness ===

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let ok = match endpoint.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && !host.contains('/')
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected an address `host:port` (e.g. 127.0.0.1:9002), found `{}`",
            shorten(endpoint)
        ))
    }
}

/// A header or cookie name: an HTTP token.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// Checks fields of which exactly one must be set (`header` or `cookie`), each naming
/// an HTTP token, and returns the one set. Both set is reported at the second
/// field's key, neither at `base`.
fn check_one_token(
    c: &mut Checker<'_>,
    base: &[Seg],
    [(first, a), (second, b)]: [(&'static str, &Option<String>); 2],
) -> Option<&'static str> {
    let (field, name) = match (a, b) {
        (Some(name), None) => (first, name),
        (None, Some(name)) => (second, name),
        (Some(_), Some(_)) => {
            c.report_key(
                &at(base, &[key(second)]),
                format!("expected exactly one of `{first}` and `{second}`, found both"),
            );
            return None;
        }
        (None, None) => {
            c.report(
                base,
                format!("expected exactly one of `{first}` and `{second}`, found neither"),
            );
            return None;
        }
    };
    check_token(c, &at(base, &[key(field)]), field, name);
    Some(field)
}

fn check_token(c: &mut Checker<'_>, path: &[Seg], what: &str, name: &str) {
    if !is_token(name) {
        c.report(
            path,
            format!(
                "expected a {what} name (letters, digits and !#$%&'*+-.^_`|~), found `{}`",
                shorten(name)
            ),
        );
    }
}

fn check_routing(c: &mut Checker<'_>, spec: &RolloutSpec) {
    if let Some(canary) = &spec.canary {
        if canary.endpoints.is_empty() {
            c.report(
                &[key("canary"), key("endpoints")],
                "expected at least one endpoint, found none".to_owned(),
            );
        }
        for (i, e) in canary.endpoints.iter().enumerate() {
            if let Err(msg) = check_endpoint(e) {
                c.report(&[key("canary"), key("endpoints"), Seg::Index(i)], msg);
            }
        }
    }
    for (i, rule) in spec.match_rules.iter().enumerate() {
        let base = [key("match"), Seg::Index(i)];
        check_one_token(
            c,
            &base,
            [("header", &rule.header), ("cookie", &rule.cookie)],
        );
    }
    if let Some(s) = &spec.stickiness {
        let base = [key("stickiness")];
        if let Some(ttl) = s.ttl {
            c.check_duration(&at(&base, &[key("ttl")]), ttl);
        }
        let chosen = check_one_token(c, &base, [("cookie", &s.cookie), ("header", &s.header)]);
        if chosen == Some("header") && s.ttl.is_some() {
            c.report_key(
                &at(&base, &[key("ttl")]),
                "expected `ttl` only with `cookie` (the proxy sets no header), found it with `header`".to_owned(),
            );
        }
    }
}

// === blue/green ===

/// `strategy: blueGreen`: previews at 0%, then one switch to 100% as the last stage,
/// and a way for requests to reach the new version before the switch.
fn check_blue_green(c: &mut Checker<'_>, spec: &RolloutSpec) {
    if spec.strategy != Strategy::BlueGreen || spec.stages.is_empty() {
        return;
    }
    let last = spec.stages.len() - 1;
    for (i, stage) in spec.stages.iter().enumerate() {
        let path = [key("stages"), Seg::Index(i), key("traffic")];
        let expected = if i == last { 100 } else { 0 };
        if stage.traffic != expected && stage.traffic != INVALID_PERCENT {
            let why = if i == last {
                "the last stage of a blueGreen rollout is the switch: every request goes to the new version at once"
            } else {
                "a blueGreen rollout previews the new version with users on stable, then switches in its last stage"
            };
            c.report(
                &path,
                format!("expected {expected} ({why}), found {}", stage.traffic),
            );
        }
    }
    if last == 0 {
        c.report(
            &[key("stages")],
            "expected a preview stage with `traffic: 0` before the switch (a blueGreen rollout judges the new version before any user is sent to it), found only the switch".to_owned(),
        );
    }
    let testers = spec.match_rules.iter().any(|r| r.target == Target::Canary);
    let copies = spec.stages[..last].iter().any(|s| s.mirror > 0);
    if last > 0 && !testers && !copies {
        c.report(
            &[key("stages"), Seg::Index(0)],
            "expected a way for requests to reach the new version during the preview: a `match` rule that sends testers to it (target canary), or `mirror` on a preview stage, found neither".to_owned(),
        );
    }
    if spec.stickiness.is_some() {
        c.report_key(
            &[key("stickiness")],
            "expected no `stickiness` with `strategy: blueGreen` (every user switches at once, so there is no share to keep a user in), found it".to_owned(),
        );
    }
}

// === alerts ===

/// Alert matchers: at least one label each, Prometheus label names, and only the
/// `{{app}}` and `{{version}}` placeholders in values.
fn check_alerts(c: &mut Checker<'_>, spec: &RolloutSpec) {
    for (i, alert) in spec.alerts.iter().enumerate() {
        let base = [key("alerts"), Seg::Index(i), key("match")];
        if alert.labels.is_empty() {
            c.report(
                &base,
                "expected at least one label an alert must have (e.g. `{service: checkout}`), found none".to_owned(),
            );
        }
        for (name, value) in &alert.labels {
            let path = at(&base, &[key(name)]);
            let valid_name = name.starts_with(|ch: char| ch.is_ascii_alphabetic() || ch == '_')
                && name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
            if !valid_name {
                c.report_key(
                    &path,
                    format!(
                        "expected a label name (`[a-zA-Z_][a-zA-Z0-9_]*`), found `{}`",
                        shorten(name)
                    ),
                );
            }
            let unknown = value
                .split("{{")
                .skip(1)
                .filter_map(|rest| rest.split_once("}}").map(|(p, _)| p))
                .find(|p| !matches!(*p, "app" | "version"));
            if let Some(p) = unknown {
                c.report(
                    &path,
                    format!("expected only the placeholders {{{{app}}}} and {{{{version}}}}, found {{{{{p}}}}}"),
                );
            }
        }
    }
}

// === mirroring ===

/// An HTTP method as the spec writes it: an upper-case token. False when reported.
fn check_method(c: &mut Checker<'_>, path: &[Seg], method: &str) -> bool {
    let ok = is_token(method) && !method.chars().any(|ch| ch.is_ascii_lowercase());
    if !ok {
        c.report(
            path,
            format!(
                "expected an upper-case HTTP method such as POST or GET, found `{}`",
                shorten(method)
            ),
        );
    }
    ok
}

fn check_mirroring(c: &mut Checker<'_>, spec: &RolloutSpec) {
    let base = [key("mirroring"), key("methods")];
    if spec.mirroring.methods.is_empty() && spec.first_mirror_stage().is_some() {
        c.report(
            &base,
            "expected at least one method to copy (e.g. [GET, HEAD]), found none".to_owned(),
        );
    }
    for (i, method) in spec.mirroring.methods.iter().enumerate() {
        let path = at(&base, &[Seg::Index(i)]);
        if check_method(c, &path, method) && method == "CONNECT" {
            c.report(
                &path,
                "expected a method the proxy forwards, found `CONNECT` (tunnels are never copied)"
                    .to_owned(),
            );
        }
    }
}

// === hooks and notifications ===

fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !url.contains(char::is_whitespace) => {
            Ok(())
        }
        // The URL may hold a secret (Slack webhooks do): name the problem, not the URL.
        _ => Err(format!(
            "expected an http:// or https:// URL, found {}",
            if url.is_empty() {
                "an empty string".to_owned()
            } else if url.contains("://") {
                "a URL with another scheme or no host".to_owned()
            } else {
                "text that is not a URL".to_owned()
            }
        )),
    }
}

fn check_hooks(c: &mut Checker<'_>, spec: &RolloutSpec) {
    for (list, i, hook) in spec.hooks.iter() {
        let base = [key("hooks"), key(list), Seg::Index(i)];
        match hook {
            Hook::Exec(e) => {
                let path = at(&base, &[key("exec")]);
                if e.command.first().is_none_or(|p| p.trim().is_empty()) {
                    c.report(
                        &at(&path, &[key("command")]),
                        "expected a program and its arguments, e.g. [\"./deploy.sh\", \"canary\"], found no program".to_owned(),
                    );
                }
                c.check_nonzero_duration(
                    &at(&path, &[key("timeout")]),
                    e.timeout,
                    "a timeout above 0s",
                );
            }
            Hook::Http(h) => {
                let path = at(&base, &[key("http")]);
                if let Err(msg) = check_url(&h.url) {
                    c.report(&at(&path, &[key("url")]), msg);
                }
                check_method(c, &at(&path, &[key("method")]), &h.method);
                for name in h.headers.keys() {
                    check_token(c, &at(&path, &[key("headers"), key(name)]), "header", name);
                }
                c.check_nonzero_duration(
                    &at(&path, &[key("timeout")]),
                    h.timeout,
                    "a timeout above 0s",
                );
            }
        }
    }
    for (i, n) in spec.notifications.iter().enumerate() {
        if let Err(msg) = check_url(&n.url) {
            c.report(&[key("notifications"), Seg::Index(i), key("url")], msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        assert!(check_app_name("lemonade-checkout").is_ok());
        assert!(check_app_name("a").is_ok());
        assert!(check_app_name(&"a".repeat(63)).is_ok());
        assert!(check_app_name(&"a".repeat(64)).is_err());
        assert!(check_app_name("Lemonade").is_err());
        assert!(check_app_name("-app").is_err());
        assert!(check_app_name("app-").is_err());
        assert!(check_app_name("my app").is_err());
        assert!(check_app_name("").is_err());
        assert!(check_app_name("app.v2").is_err());
    }

    #[test]
    fn version_names() {
        for ok in ["v2.3.1", "2.3.1", "V2", "2024-06-01_rc1", "abc123"] {
            assert!(check_version_name(ok).is_ok(), "{ok}");
        }
        for bad in ["v2.3.1+build", ".v2", "v2.", "v 2", "", "ü"] {
            assert!(check_version_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_placeholders() {
        assert!(
            check_placeholders("sum(x{app=\"{{app}}\",v=\"{{ version }}\"}[{{window}}])").is_ok()
        );
        assert!(check_placeholders("no placeholders").is_ok());
        let e = check_placeholders("x{v=\"{{ver}}\"}").unwrap_err();
        assert!(e.ends_with("found `{{ver}}`"), "{e}");
        let e = check_placeholders("x{v=\"{{version\"}").unwrap_err();
        assert!(e.starts_with("expected `}}` to close"), "{e}");
    }

    #[test]
    fn endpoints_and_urls() {
        assert!(check_endpoint("127.0.0.1:9002").is_ok());
        assert!(check_endpoint("[::1]:9002").is_ok());
        assert!(check_endpoint("checkout-canary.default.svc:80").is_ok());
        assert!(check_endpoint("127.0.0.1").is_err());
        assert!(check_endpoint("http://x:80").is_err());
        assert!(check_endpoint("x:0").is_err());
        assert!(check_url("https://hooks.slack.com/services/T/B/X").is_ok());
        let e = check_url("ftp://secret@host").unwrap_err();
        assert!(!e.contains("secret"));
    }
}
