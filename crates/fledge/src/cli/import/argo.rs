//! Argo Rollouts: a `Rollout` (canary steps or blue-green) and the
//! `AnalysisTemplate`s it names, as a fledge spec.

use std::collections::BTreeMap;

use serde_json::Value;

use super::spec::{self, Converted, GaugeMetric, HeaderRule, Notes, Spec, Stage};

/// Converts one `Rollout`. `templates` are the input's `AnalysisTemplate` and
/// `ClusterAnalysisTemplate` objects by name; `version` overrides the image tag.
pub fn convert(
    rollout: &Value,
    templates: &BTreeMap<String, Value>,
    version: Option<&str>,
) -> Result<Converted, String> {
    let name = spec::object_name(rollout)?;
    let mut notes = Notes::default();
    let version = match version {
        Some(v) => v.to_owned(),
        None => image_tag(&rollout["spec"]).ok_or_else(|| {
            format!(
                "Rollout/{name}: no version: spec.template's first container has no image tag \
                 (or the Rollout uses workloadRef); give it with --new-version"
            )
        })?,
    };
    let mut out = Spec {
        app: name.to_owned(),
        version,
        ..Spec::default()
    };
    let strategy = &rollout["spec"]["strategy"];
    if strategy["canary"].is_object() {
        canary(&strategy["canary"], templates, &mut out, &mut notes);
    } else if strategy["blueGreen"].is_object() {
        blue_green(&strategy["blueGreen"], templates, &mut out, &mut notes);
    } else {
        return Err(format!(
            "Rollout/{name}: spec.strategy: expected `canary` or `blueGreen`, found neither"
        ));
    }
    Ok(Converted {
        source: format!("Rollout/{name}"),
        spec: out,
        notes: notes.0,
    })
}

/// The tag of the pod template's first image (`registry/app:v2.3.1` → `v2.3.1`).
fn image_tag(spec: &Value) -> Option<String> {
    let image = spec["template"]["spec"]["containers"][0]["image"].as_str()?;
    let image = image.split('@').next()?;
    let (_, tag) = image.rsplit_once(':')?;
    (!tag.contains('/') && fledge_spec::check_version_name(tag).is_ok()).then(|| tag.to_owned())
}

/// Fields of `strategy.canary` the conversion reads; every other one is noted.
const CANARY_FIELDS: [&str; 4] = ["steps", "analysis", "canaryService", "stableService"];

fn canary(canary: &Value, templates: &BTreeMap<String, Value>, out: &mut Spec, notes: &mut Notes) {
    let base = "spec.strategy.canary";
    note_unread(canary, &CANARY_FIELDS, base, notes, |k| match k {
        "trafficRouting" => {
            "the router is the server's app config (or the CanaryRollout's spec.router), not part of the spec"
        }
        _ => "fledge has no counterpart",
    });
    for service in ["canaryService", "stableService"] {
        if canary[service].is_string() {
            notes.add(
                format!("{base}.{service}"),
                "the versions' endpoints are the server's app config (or the CanaryRollout's router), not part of the spec",
            );
        }
    }
    // Each step's stage, for the background analysis's `startingStep`.
    let mut stage_of_step = Vec::new();
    let mut open = false;
    let mut weight = 0u8;
    for (i, step) in spec::items(&canary["steps"]) {
        let field = format!("{base}.steps[{i}]");
        if let Some(w) = step["setWeight"].as_u64() {
            weight = u8::try_from(w.min(100)).unwrap_or(100);
            if open {
                // No pause since the last weight: Argo moves on at once.
                close(out, Some("0s".to_owned()));
            }
            out.stages.push(Stage {
                traffic: weight,
                ..Stage::default()
            });
            open = true;
        } else if let Some(pause) = step.get("pause") {
            open_stage(out, &mut open, weight);
            let duration = match pause.get("duration") {
                None => None,
                Some(d) => match spec::duration(d) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        notes.add(
                            format!("{field}.pause.duration"),
                            format!("{e}; the stage waits for a manual promote instead"),
                        );
                        None
                    }
                },
            };
            close(out, duration);
            open = false;
        } else if step["analysis"].is_object() {
            open_stage(out, &mut open, weight);
            let criteria = analysis(
                &step["analysis"],
                templates,
                &format!("{field}.analysis"),
                out,
                notes,
            );
            if let Some(stage) = out.stages.last_mut() {
                stage.success_criteria.extend(criteria);
            }
        } else if let Some(routes) = step["setHeaderRoute"]["match"].as_array() {
            for (j, m) in routes.iter().enumerate() {
                match (m["headerName"].as_str(), m["headerValue"]["exact"].as_str()) {
                    (Some(header), Some(value)) => out.match_rules.push(HeaderRule {
                        header: header.to_owned(),
                        value: value.to_owned(),
                    }),
                    _ => notes.add(
                        format!("{field}.setHeaderRoute.match[{j}]"),
                        "only `exact` header values are carried over",
                    ),
                }
            }
            notes.add(
                field,
                "setHeaderRoute: the header rule applies for the whole rollout in fledge (`match`), not from this step on",
            );
        } else {
            let kind = step
                .as_object()
                .and_then(|o| o.keys().next().cloned())
                .unwrap_or_default();
            notes.add(
                field,
                format!("step `{kind}`: fledge has no counterpart; the step is left out"),
            );
        }
        stage_of_step.push(out.stages.len().saturating_sub(1));
    }
    if open {
        // The last weight had no pause: Argo promotes at once after it.
        close(out, Some("0s".to_owned()));
    }
    // Argo promotes fully after the last step; a pause with no duration at 100%
    // waits for a manual promote, as a final stage without `promote` does.
    match out.stages.last_mut() {
        Some(last) if last.traffic == 100 => last.promote = last.duration.is_some(),
        _ => out.stages.push(Stage {
            traffic: 100,
            promote: true,
            ..Stage::default()
        }),
    }
    if canary["analysis"].is_object() {
        let field = format!("{base}.analysis");
        let criteria = analysis(&canary["analysis"], templates, &field, out, notes);
        let from = canary["analysis"]["startingStep"]
            .as_u64()
            .and_then(|s| stage_of_step.get(usize::try_from(s).ok()?).copied())
            .unwrap_or(0);
        for stage in &mut out.stages[from..] {
            stage.success_criteria.extend(criteria.iter().cloned());
        }
    }
}

/// Opens a stage at `weight` for the steps that follow, unless one is open.
fn open_stage(out: &mut Spec, open: &mut bool, weight: u8) {
    if !*open {
        out.stages.push(Stage {
            traffic: weight,
            ..Stage::default()
        });
        *open = true;
    }
}

/// Closes the last stage with `duration` (none: manual promote).
fn close(out: &mut Spec, duration: Option<String>) {
    if let Some(stage) = out.stages.last_mut() {
        stage.duration = duration;
    }
}

/// Fields of `strategy.blueGreen` the conversion reads.
const BLUE_GREEN_FIELDS: [&str; 7] = [
    "activeService",
    "previewService",
    "autoPromotionEnabled",
    "autoPromotionSeconds",
    "scaleDownDelaySeconds",
    "prePromotionAnalysis",
    "postPromotionAnalysis",
];

fn blue_green(bg: &Value, templates: &BTreeMap<String, Value>, out: &mut Spec, notes: &mut Notes) {
    let base = "spec.strategy.blueGreen";
    out.strategy = Some("blueGreen");
    note_unread(
        bg,
        &BLUE_GREEN_FIELDS,
        base,
        notes,
        |_| "fledge has no counterpart",
    );
    notes.add(
        format!("{base}.previewService"),
        "fledge previews through a `match` rule that sends testers to the new version, or `mirror` on the preview stage: add one (e.g. `match: [{header: x-preview, value: \"1\"}]`)",
    );
    let auto = bg["autoPromotionEnabled"].as_bool().unwrap_or(true);
    let preview_duration = match (auto, bg.get("autoPromotionSeconds")) {
        (false, _) => None,
        (true, Some(s)) => spec::duration(s).ok(),
        (true, None) => Some("0s".to_owned()),
    };
    let mut criteria = |key: &str| {
        if bg[key].is_object() {
            analysis(&bg[key], templates, &format!("{base}.{key}"), out, notes)
        } else {
            Vec::new()
        }
    };
    let preview = Stage {
        traffic: 0,
        duration: preview_duration,
        success_criteria: criteria("prePromotionAnalysis"),
        ..Stage::default()
    };
    let delay = bg
        .get("scaleDownDelaySeconds")
        .and_then(|s| spec::duration(s).ok())
        .unwrap_or_else(|| "30s".to_owned());
    let switch = Stage {
        traffic: 100,
        duration: Some(delay),
        promote: true,
        success_criteria: criteria("postPromotionAnalysis"),
        ..Stage::default()
    };
    out.stages = vec![preview, switch];
}

/// The criteria of an analysis (`templates` with `args`), adding the metrics they
/// read to `out`.
fn analysis(
    analysis: &Value,
    templates: &BTreeMap<String, Value>,
    field: &str,
    out: &mut Spec,
    notes: &mut Notes,
) -> Vec<String> {
    let mut args = BTreeMap::new();
    for (i, arg) in spec::items(&analysis["args"]) {
        match (arg["name"].as_str(), arg["value"].as_str()) {
            (Some(name), Some(value)) => {
                args.insert(name.to_owned(), value.to_owned());
            }
            (Some(_), None) => notes.add(
                format!("{field}.args[{i}]"),
                "`valueFrom` (a value read from the cluster) cannot be resolved offline; queries that use it are left out",
            ),
            _ => {}
        }
    }
    let mut criteria = Vec::new();
    for (i, t) in spec::items(&analysis["templates"]) {
        let tfield = format!("{field}.templates[{i}]");
        let Some(name) = t["templateName"].as_str() else {
            notes.add(tfield, "no templateName");
            continue;
        };
        let Some(template) = templates.get(name) else {
            notes.add(
                tfield,
                format!(
                    "AnalysisTemplate `{name}` is not among the input documents: pass its file too"
                ),
            );
            continue;
        };
        // The template's own defaults, then the Rollout's values.
        let mut values: BTreeMap<String, String> = template["spec"]["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| {
                Some((
                    a["name"].as_str()?.to_owned(),
                    a["value"].as_str()?.to_owned(),
                ))
            })
            .collect();
        values.extend(args.clone());
        for (j, metric) in spec::items(&template["spec"]["metrics"]) {
            let mfield = format!("AnalysisTemplate/{name}.spec.metrics[{j}]");
            if let Some(c) = template_metric(metric, &values, &mfield, out, notes) {
                criteria.push(c);
            }
        }
    }
    criteria
}

/// Metric fields that decide *when* Argo judges, which fledge decides itself.
const TIMING_FIELDS: [&str; 6] = [
    "interval",
    "count",
    "failureLimit",
    "inconclusiveLimit",
    "consecutiveErrorLimit",
    "initialDelay",
];

/// One template metric as a custom metric and its criterion.
fn template_metric(
    metric: &Value,
    args: &BTreeMap<String, String>,
    field: &str,
    out: &mut Spec,
    notes: &mut Notes,
) -> Option<String> {
    let source_name = metric["name"].as_str().unwrap_or("metric");
    let Some(prometheus) = metric["provider"]["prometheus"].as_object() else {
        let provider = metric["provider"]
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_default();
        notes.add(
            format!("{field}.provider"),
            format!("provider `{provider}`: only Prometheus queries are carried over"),
        );
        return None;
    };
    for key in TIMING_FIELDS.iter().filter(|k| metric.get(**k).is_some()) {
        notes.add(
            format!("{field}.{key}"),
            "fledge judges every `analysis.interval` with anytime-valid tests and fails on evidence, not after a count of failed measurements",
        );
    }
    if let Some(address) = prometheus.get("address").and_then(Value::as_str) {
        out.prometheus_address
            .get_or_insert_with(|| address.to_owned());
        notes.add(
            format!("{field}.provider.prometheus.address"),
            format!("`{address}` is the metric source: set it in the server config (`metrics.prometheus.url`) or the CanaryRollout's spec.metrics.prometheus.address"),
        );
    }
    let mut query = prometheus.get("query").and_then(Value::as_str)?.to_owned();
    for (name, value) in args {
        query = query.replace(&format!("{{{{args.{name}}}}}"), value);
    }
    if query.contains("{{") {
        notes.add(
            format!("{field}.provider.prometheus.query"),
            "it uses an argument with no value in the input (or another placeholder); the metric is left out",
        );
        return None;
    }
    let name = spec::metric_name(source_name);
    let condition = match (
        metric["successCondition"].as_str(),
        metric["failureCondition"].as_str(),
    ) {
        (Some(c), _) => spec::comparison(c, &name, false),
        (None, Some(c)) => spec::comparison(c, &name, true),
        (None, None) => Err("no successCondition or failureCondition".to_owned()),
    };
    match condition {
        Ok(criterion) => {
            out.metrics.insert(name, GaugeMetric { query });
            Some(criterion)
        }
        Err(e) => {
            notes.add(field.to_owned(), format!("{e}; the metric is left out"));
            None
        }
    }
}

/// Notes each field of `object` that is not in `read`.
pub(super) fn note_unread(
    object: &Value,
    read: &[&str],
    base: &str,
    notes: &mut Notes,
    why: impl Fn(&str) -> &'static str,
) {
    for key in object.as_object().into_iter().flat_map(|o| o.keys()) {
        if !read.contains(&key.as_str()) {
            notes.add(format!("{base}.{key}"), why(key));
        }
    }
}
