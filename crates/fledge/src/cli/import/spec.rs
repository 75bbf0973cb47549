//! The spec an import builds: a fledge rollout spec in the order people read it,
//! with what could not be carried over beside it.

use std::collections::BTreeMap;

use serde::Serialize;

/// A rollout spec as an import writes it: only the fields the source gave, in the
/// order of `docs/spec.md`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub app: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<&'static str>,
    #[serde(rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_rules: Vec<HeaderRule>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, GaugeMetric>,
    pub stages: Vec<Stage>,
    /// The Prometheus the source's queries were written for, if it said: the
    /// metric source of a CanaryRollout (not part of the spec).
    #[serde(skip)]
    pub prometheus_address: Option<String>,
}

/// A `match` rule sending requests with a header to the new version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeaderRule {
    pub header: String,
    pub value: String,
}

/// A custom gauge metric read with a query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GaugeMetric {
    pub query: String,
}

/// One stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    pub traffic: u8,
    #[serde(skip_serializing_if = "is_zero")]
    pub mirror: u8,
    /// None: the stage waits for a manual promote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub success_criteria: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub promote: bool,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

/// Something in the source that the spec does not carry, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    /// Where, as a path into the source object (`spec.strategy.canary.steps[2]`).
    pub field: String,
    /// Why it is not carried over, and what to do instead.
    pub reason: String,
}

/// One source object converted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Converted {
    /// `Kind/name` of the source object.
    pub source: String,
    /// The spec, before validation.
    pub spec: Spec,
    /// What was left behind.
    pub notes: Vec<Note>,
}

/// Collects notes while converting one object.
#[derive(Debug, Default)]
pub struct Notes(pub Vec<Note>);

impl Notes {
    /// Adds a note, once: a template used twice is noted once.
    pub fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        let note = Note {
            field: field.into(),
            reason: reason.into(),
        };
        if !self.0.contains(&note) {
            self.0.push(note);
        }
    }
}

/// A metric name fledge accepts (`[a-z_][a-z0-9_]*`, not a built-in one) made from a
/// source's metric name: `success-rate` → `success_rate_query` (built-in), `404s
/// percentage` → `m_404s_percentage`.
pub fn metric_name(source: &str) -> String {
    let mut name: String = source
        .trim()
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "m_");
    }
    if fledge_spec::is_builtin_metric(&name) {
        name.push_str("_query");
    }
    name
}

/// A duration as the spec writes it, from a number of seconds or a text such as
/// `30s`, `5m`, `1h` (Argo Rollouts and Flagger write both).
pub fn duration(value: &serde_json::Value) -> Result<String, String> {
    match value {
        serde_json::Value::Number(n) => n
            .as_u64()
            .map(seconds)
            .ok_or_else(|| format!("expected a whole number of seconds, found {n}")),
        serde_json::Value::String(s) => match s.parse::<u64>() {
            Ok(secs) => Ok(seconds(secs)),
            Err(_) => fledge_spec::duration::parse(s).map(fledge_spec::duration::format),
        },
        other => Err(format!("expected a duration, found {other}")),
    }
}

/// An object's `metadata.name`, which every object converted must have.
pub fn object_name(object: &serde_json::Value) -> Result<&str, String> {
    object["metadata"]["name"]
        .as_str()
        .ok_or_else(|| "metadata.name: missing".to_owned())
}

/// The elements of a list field, with their indexes; none when it is absent or not
/// a list.
pub fn items(list: &serde_json::Value) -> impl Iterator<Item = (usize, &serde_json::Value)> {
    list.as_array().into_iter().flatten().enumerate()
}

/// `secs` seconds as the spec writes a duration (`90` → `1m30s`).
pub fn seconds(secs: u64) -> String {
    fledge_spec::duration::format(std::time::Duration::from_secs(secs))
}

/// A comparison of one value with a number, as fledge's criteria write it, from an
/// expression such as `result[0] >= 0.95`; `negate` turns a failure condition into
/// the success criterion it implies (`result[0] > 5` fails → `<= 5` passes).
pub fn comparison(expr: &str, metric: &str, negate: bool) -> Result<String, String> {
    let compact: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    let subject = ["result[0]", "result"]
        .into_iter()
        .find(|s| compact.starts_with(s))
        .ok_or_else(|| {
            format!("`{expr}`: only a comparison of `result[0]` (or `result`) with a number is carried over")
        })?;
    let rest = &compact[subject.len()..];
    let (op, number) = [">=", "<=", "==", "!=", ">", "<"]
        .into_iter()
        .find_map(|op| rest.strip_prefix(op).map(|n| (op, n)))
        .ok_or_else(|| format!("`{expr}`: no comparison operator after `{subject}`"))?;
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{expr}`: `{number}` is not a plain number (conditions with `&&`, `||`, `len()` or functions are not carried over)"))?;
    let op = match (op, negate) {
        ("==" | "!=", _) => {
            return Err(format!(
                "`{expr}`: an equality cannot be judged on a measured value; write a bound"
            ));
        }
        (op, false) => op,
        (">=", true) => "<",
        (">", true) => "<=",
        ("<=", true) => ">",
        (_, true) => ">=",
    };
    Ok(format!("{metric} {op} {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_become_valid_custom_names() {
        assert_eq!(metric_name("success-rate"), "success_rate_query");
        assert_eq!(metric_name("404s percentage"), "m_404s_percentage");
        assert_eq!(metric_name("queue_depth"), "queue_depth");
    }

    #[test]
    fn durations_from_seconds_or_text() {
        assert_eq!(duration(&serde_json::json!(90)).unwrap(), "1m30s");
        assert_eq!(duration(&serde_json::json!("10")).unwrap(), "10s");
        assert_eq!(duration(&serde_json::json!("1h")).unwrap(), "1h");
        assert!(duration(&serde_json::json!("soon")).is_err());
    }

    #[test]
    fn conditions_become_criteria() {
        assert_eq!(
            comparison("result[0] >= 0.95", "rate", false).unwrap(),
            "rate >= 0.95"
        );
        assert_eq!(comparison("result > 5", "errs", true).unwrap(), "errs <= 5");
        assert!(comparison("len(result) == 0 || result[0] < 1", "x", false).is_err());
        assert!(comparison("result[0] == 1", "x", false).is_err());
    }
}
