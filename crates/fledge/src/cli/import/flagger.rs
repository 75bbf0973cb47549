//! Flagger: a `Canary` (progressive weights, or A/B and blue/green iterations) and
//! the `MetricTemplate`s it names, as a fledge spec.

use std::collections::BTreeMap;

use serde_json::Value;

use super::argo::note_unread;
use super::spec::{self, Converted, GaugeMetric, HeaderRule, Notes, Spec, Stage};

/// Fields of `spec.analysis` the conversion reads; every other one is noted.
const ANALYSIS_FIELDS: [&str; 9] = [
    "interval",
    "maxWeight",
    "stepWeight",
    "stepWeights",
    "iterations",
    "match",
    "mirror",
    "mirrorWeight",
    "metrics",
];

/// Converts one `Canary`. `templates` are the input's `MetricTemplate` objects by
/// name; `version` is the version being rolled out (Flagger has none: it reacts to
/// a change of the target Deployment).
pub fn convert(
    canary: &Value,
    templates: &BTreeMap<String, Value>,
    version: Option<&str>,
) -> Result<Converted, String> {
    let name = spec::object_name(canary)?;
    let version = version.ok_or_else(|| {
        format!(
            "Canary/{name}: no version: Flagger rolls out whatever the target Deployment changes to; \
             give the version being rolled out with --new-version"
        )
    })?;
    let mut notes = Notes::default();
    let spec_obj = &canary["spec"];
    note_unread(
        spec_obj,
        &["targetRef", "analysis", "service"],
        "spec",
        &mut notes,
        |k| match k {
            "provider" => {
                "the router is the server's app config (or the CanaryRollout's spec.router), not part of the spec"
            }
            "skipAnalysis" => {
                "fledge always judges; `fledge promote --full` skips the stages by hand"
            }
            _ => "fledge has no counterpart",
        },
    );
    let analysis = &spec_obj["analysis"];
    note_unread(
        analysis,
        &ANALYSIS_FIELDS,
        "spec.analysis",
        &mut notes,
        |k| match k {
            "threshold" => {
                "fledge fails on statistical evidence (`analysis.alpha`), not after a count of failed checks"
            }
            "webhooks" => {
                "fledge's hooks (beforeRollout, eachStage, beforePromotion, afterRollback) take commands or HTTP calls with their own payload: write them in `hooks`"
            }
            "alerts" => "write the receivers in `notifications`",
            "sessionAffinity" => "write it as `stickiness: {cookie: …}`",
            _ => "fledge has no counterpart",
        },
    );
    let interval = match analysis.get("interval") {
        Some(i) => spec::duration(i).unwrap_or_else(|e| {
            notes.add("spec.analysis.interval", format!("{e}; 1m is used"));
            "1m".to_owned()
        }),
        None => "1m".to_owned(),
    };
    let target = spec_obj["targetRef"]["name"].as_str().unwrap_or(name);
    let context = Context {
        namespace: canary["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default"),
        target,
        service: spec_obj["service"]["name"].as_str().unwrap_or(target),
    };
    let mut out = Spec {
        app: name.to_owned(),
        version: version.to_owned(),
        ..Spec::default()
    };
    let criteria = metrics(analysis, templates, &context, &mut out, &mut notes);
    if let Some(iterations) = analysis["iterations"].as_u64() {
        // A/B testing or blue/green: testers (or copies) for a number of checks,
        // then every user at once.
        out.strategy = Some("blueGreen");
        for (i, rule) in spec::items(&analysis["match"]) {
            header_rules(
                rule,
                &format!("spec.analysis.match[{i}]"),
                &mut out,
                &mut notes,
            );
        }
        let mirror = match analysis["mirror"].as_bool() {
            Some(true) => analysis["mirrorWeight"]
                .as_u64()
                .map_or(100, |w| u8::try_from(w.min(100)).unwrap_or(100)),
            _ => 0,
        };
        if out.match_rules.is_empty() && mirror == 0 {
            notes.add(
                "spec.analysis.iterations",
                "Flagger's blue/green tests the new version through its own Service; a fledge preview needs a `match` rule for testers or `mirror`: add one",
            );
        }
        let secs = fledge_spec::duration::parse(&interval).map_or(60, |d| d.as_secs());
        out.stages = vec![
            Stage {
                traffic: 0,
                mirror,
                duration: Some(spec::seconds(secs.saturating_mul(iterations))),
                success_criteria: criteria,
                ..Stage::default()
            },
            Stage {
                traffic: 100,
                promote: true,
                ..Stage::default()
            },
        ];
    } else {
        for (i, _) in spec::items(&analysis["match"]) {
            notes.add(
                format!("spec.analysis.match[{i}]"),
                "match rules without iterations are ignored by Flagger's progressive mode; left out",
            );
        }
        for weight in weights(analysis, &mut notes) {
            out.stages.push(Stage {
                traffic: weight,
                duration: Some(interval.clone()),
                success_criteria: criteria.clone(),
                ..Stage::default()
            });
        }
        out.stages.push(Stage {
            traffic: 100,
            promote: true,
            ..Stage::default()
        });
    }
    Ok(Converted {
        source: format!("Canary/{name}"),
        spec: out,
        notes: notes.0,
    })
}

/// The canary's weights before promotion: `stepWeights`, or `stepWeight` steps up to
/// `maxWeight` (default 100), below 100.
fn weights(analysis: &Value, notes: &mut Notes) -> Vec<u8> {
    let clamp = |w: u64| u8::try_from(w.min(100)).unwrap_or(100);
    let weights: Vec<u8> = if let Some(list) = analysis["stepWeights"].as_array() {
        list.iter().filter_map(Value::as_u64).map(clamp).collect()
    } else {
        let step = analysis["stepWeight"].as_u64().unwrap_or(10).max(1);
        let max = analysis["maxWeight"].as_u64().unwrap_or(100);
        (1..)
            .map(|k| k * step)
            .take_while(|w| *w <= max)
            .map(clamp)
            .collect()
    };
    let below: Vec<u8> = weights.into_iter().filter(|w| *w < 100).collect();
    if below.is_empty() {
        notes.add(
            "spec.analysis",
            "no weight below 100: the rollout promotes at once",
        );
    }
    below
}

/// Names a MetricTemplate's query may use, and their values for this Canary.
struct Context<'a> {
    namespace: &'a str,
    target: &'a str,
    service: &'a str,
}

/// The criteria of `analysis.metrics`, adding the custom metrics they read to `out`.
fn metrics(
    analysis: &Value,
    templates: &BTreeMap<String, Value>,
    context: &Context<'_>,
    out: &mut Spec,
    notes: &mut Notes,
) -> Vec<String> {
    let mut criteria = Vec::new();
    for (i, metric) in spec::items(&analysis["metrics"]) {
        let field = format!("spec.analysis.metrics[{i}]");
        let source_name = metric["name"].as_str().unwrap_or("metric");
        let range = &metric["thresholdRange"];
        let (min, max) = (range["min"].as_f64(), range["max"].as_f64());
        let builtin = metric["templateRef"].is_null() && metric["query"].is_null();
        // Flagger's two built-in metrics have one bound each: the criterion it maps to,
        // the other side of the range (left out) and why.
        let builtin_bound = match source_name {
            // Percent of requests that did not fail.
            "request-success-rate" if builtin => Some((
                min.map(|m| format!("success_rate >= {m}%")),
                ("max", max),
                "an upper bound on the success rate is left out",
            )),
            // Flagger's request duration is the p99, in milliseconds.
            "request-duration" if builtin => Some((
                max.map(|m| format!("latency_p99 <= {m}ms")),
                ("min", min),
                "a lower bound on the latency is left out",
            )),
            _ => None,
        };
        if let Some((criterion, (side, other), why)) = builtin_bound {
            criteria.extend(criterion);
            if other.is_some() {
                notes.add(format!("{field}.thresholdRange.{side}"), why);
            }
            continue;
        }
        let Some(query) = query(metric, templates, context, &field, out, notes) else {
            continue;
        };
        let name = spec::metric_name(source_name);
        if min.is_none() && max.is_none() {
            notes.add(
                format!("{field}.thresholdRange"),
                "no bound: the metric is left out",
            );
            continue;
        }
        criteria.extend(min.map(|m| format!("{name} >= {m}")));
        criteria.extend(max.map(|m| format!("{name} <= {m}")));
        out.metrics.insert(name, GaugeMetric { query });
    }
    criteria
}

/// A custom metric's PromQL, from its `templateRef` (or inline `query`), with
/// Flagger's variables replaced: `{{ interval }}` by fledge's `{{window}}`, the
/// Canary's namespace, target and service by their values.
fn query(
    metric: &Value,
    templates: &BTreeMap<String, Value>,
    context: &Context<'_>,
    field: &str,
    out: &mut Spec,
    notes: &mut Notes,
) -> Option<String> {
    let text = match metric["templateRef"]["name"].as_str() {
        Some(t) => {
            let Some(template) = templates.get(t) else {
                notes.add(
                    format!("{field}.templateRef"),
                    format!(
                        "MetricTemplate `{t}` is not among the input documents: pass its file too"
                    ),
                );
                return None;
            };
            let provider = template["spec"]["provider"]["type"]
                .as_str()
                .unwrap_or("prometheus");
            if provider != "prometheus" {
                notes.add(
                    format!("MetricTemplate/{t}.spec.provider.type"),
                    format!("provider `{provider}`: only Prometheus queries are carried over"),
                );
                return None;
            }
            if let Some(address) = template["spec"]["provider"]["address"].as_str() {
                out.prometheus_address
                    .get_or_insert_with(|| address.to_owned());
                notes.add(
                    format!("MetricTemplate/{t}.spec.provider.address"),
                    format!("`{address}` is the metric source: set it in the server config (`metrics.prometheus.url`) or the CanaryRollout's spec.metrics.prometheus.address"),
                );
            }
            template["spec"]["query"].as_str()?.to_owned()
        }
        None => metric["query"].as_str()?.to_owned(),
    };
    let mut values: BTreeMap<String, String> = metric["templateVariables"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((format!("variables.{k}"), v.as_str()?.to_owned())))
        .collect();
    values.insert("interval".into(), "{{window}}".into());
    values.insert("namespace".into(), context.namespace.into());
    values.insert("target".into(), context.target.into());
    values.insert("service".into(), context.service.into());
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + end].trim();
        match values.get(name) {
            Some(v) => out.push_str(v),
            None => {
                notes.add(
                    field.to_owned(),
                    format!("the query uses `{{{{ {name} }}}}`, which has no value here; the metric is left out"),
                );
                return None;
            }
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Some(out.trim().to_owned())
}

/// `match: [{headers: {name: {exact: value}}}]` as header rules.
fn header_rules(rule: &Value, field: &str, out: &mut Spec, notes: &mut Notes) {
    for (header, condition) in rule["headers"].as_object().into_iter().flatten() {
        match condition["exact"].as_str() {
            Some(value) => out.match_rules.push(HeaderRule {
                header: header.clone(),
                value: value.to_owned(),
            }),
            None => notes.add(
                format!("{field}.headers.{header}"),
                "only `exact` header matches are carried over (fledge matches a value exactly)",
            ),
        }
    }
    if rule.get("sourceLabels").is_some() || rule.get("uri").is_some() {
        notes.add(field.to_owned(), "only header matches are carried over");
    }
}
