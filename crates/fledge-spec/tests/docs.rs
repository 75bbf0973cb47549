//! docs/spec.md cannot drift from the code: every field of the JSON Schema has a row
//! in its tables, with its default or "required"; every enum value is named; and the
//! examples of the spec docs (fenced blocks marked `yaml rollout`, `yaml
//! canaryrollout`, `text criteria` and `text criteria-invalid`) are what the real
//! parser says they are.

use std::collections::{BTreeMap, BTreeSet};

use fledge_spec::{Criterion, json_schema, parse_spec};
use serde_json::Value;

const DOC: &str = include_str!("../../../docs/spec.md");

/// The docs whose examples are checked.
const EXAMPLES: [(&str, &str); 3] = [
    ("docs/spec.md", DOC),
    ("docs/groups.md", include_str!("../../../docs/groups.md")),
    (
        "docs/from-argo-and-flagger.md",
        include_str!("../../../docs/from-argo-and-flagger.md"),
    ),
];

/// One property of an object in the schema.
#[derive(Debug)]
struct Field {
    /// The definition it belongs to; `None` for the top level.
    owner: Option<String>,
    name: String,
    default: Option<Value>,
    required: bool,
}

impl Field {
    fn label(&self) -> String {
        format!(
            "{}.{}",
            self.owner.as_deref().unwrap_or("RolloutSpec"),
            self.name
        )
    }
}

/// The objects of the schema that have properties: the root, every definition, and
/// the `oneOf` variants of a definition (a hook's `exec` and `http`), each with its
/// definition's name and whether its `required` means required fields (a variant's
/// only says which variant it is).
fn objects(schema: &Value) -> Vec<(Option<String>, &Value, bool)> {
    let mut objects = vec![(None, schema, true)];
    for (name, def) in schema["$defs"].as_object().expect("the schema has $defs") {
        objects.push((Some(name.clone()), def, true));
        for variant in def["oneOf"].as_array().into_iter().flatten() {
            objects.push((Some(name.clone()), variant, false));
        }
    }
    objects
}

fn schema_fields(schema: &Value) -> Vec<Field> {
    let mut fields = Vec::new();
    for (owner, object, own_required) in objects(schema) {
        let required: Vec<&str> = object["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for (name, property) in object["properties"].as_object().into_iter().flatten() {
            fields.push(Field {
                owner: owner.clone(),
                name: name.clone(),
                default: property.get("default").cloned(),
                required: own_required && required.contains(&name.as_str()),
            });
        }
    }
    fields
}

/// The definitions a property's schema refers to, however deep (items, maps, anyOf).
fn refs(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/$defs/"))
            {
                out.insert(name.to_owned());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// For each definition, the names of the properties on any path from the top level
/// down to it: `Tolerance` is under `analysis` and `tolerance`, `ExecHook` under
/// `hooks`, `beforeRollout` (and the other lists) and `exec`.
fn ancestors(schema: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut links = Vec::new();
    for (owner, object, _) in objects(schema) {
        for (name, property) in object["properties"].as_object().into_iter().flatten() {
            let mut targets = BTreeSet::new();
            refs(property, &mut targets);
            for target in targets {
                links.push((owner.clone(), name.clone(), target));
            }
        }
    }
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    loop {
        let before = found.clone();
        for (owner, property, target) in &links {
            let mut names = owner
                .as_ref()
                .and_then(|o| before.get(o))
                .cloned()
                .unwrap_or_default();
            names.insert(property.clone());
            found.entry(target.clone()).or_default().extend(names);
        }
        if found == before {
            return found;
        }
    }
}

/// The doc's table rows, each with the path in its first cell as segments:
/// `stages[].traffic` is `["stages", "traffic"]`.
fn table_rows() -> Vec<(Vec<&'static str>, &'static str)> {
    DOC.lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|line| {
            let first = line.split('|').nth(1)?.trim().trim_matches('`');
            let path = first.split('.').map(|s| s.trim_end_matches("[]")).collect();
            Some((path, line))
        })
        .collect()
}

/// The text a scalar default is written as in the doc.
fn default_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A field is documented by a row whose path ends with its name and passes through
/// one of its definition's ancestors (`http.url`, not `notifications[].url`, documents
/// the URL of an HTTP hook); a top-level field by a row of its bare name.
#[test]
fn every_schema_field_has_a_row_with_its_default() {
    let schema = json_schema();
    let ancestors = ancestors(&schema);
    let rows = table_rows();
    let mut problems = Vec::new();
    for field in schema_fields(&schema) {
        let candidates: Vec<&str> = rows
            .iter()
            .filter(|(path, _)| match (path.split_last(), &field.owner) {
                (Some((last, [])), None) => *last == field.name,
                (Some((last, before)), Some(owner)) => {
                    *last == field.name
                        && before
                            .iter()
                            .any(|s| ancestors.get(owner).is_some_and(|a| a.contains(*s)))
                }
                _ => false,
            })
            .map(|(_, line)| *line)
            .collect();
        if candidates.is_empty() {
            problems.push(format!("{}: no table row", field.label()));
            continue;
        }
        if field.required && !candidates.iter().any(|r| r.contains("required")) {
            problems.push(format!(
                "{}: required, but its row does not say so",
                field.label()
            ));
        }
        if let Some(text) = field.default.as_ref().and_then(default_text) {
            let written = format!("`{text}`");
            if !candidates.iter().any(|r| r.contains(&written)) {
                problems.push(format!(
                    "{}: its row does not give its default {written}",
                    field.label()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "docs/spec.md: {problems:#?}");
}

#[test]
fn every_enum_value_is_named() {
    let schema = json_schema();
    let mut missing = Vec::new();
    for (name, def) in schema["$defs"].as_object().expect("$defs") {
        for variant in def["oneOf"].as_array().into_iter().flatten() {
            if let Some(value) = variant["const"].as_str()
                && !DOC.contains(&format!("`{value}`"))
            {
                missing.push(format!("{name}: `{value}`"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/spec.md never names {missing:?}");
}

/// The fenced blocks of the example docs whose info string is exactly `info` (at
/// least one), each with the origin to name in messages.
fn fenced(info: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    for (name, doc) in EXAMPLES {
        // While inside a fence: its first line, and whether it is one of ours.
        let mut inside: Option<(usize, bool)> = None;
        let mut text = String::new();
        for (i, line) in doc.lines().enumerate() {
            match (line.strip_prefix("```"), inside) {
                (Some(rest), None) => {
                    inside = Some((i + 2, rest.trim() == info));
                    text.clear();
                }
                (Some(_), Some((first, wanted))) => {
                    if wanted {
                        let origin = format!("{name} (block at line {first})");
                        blocks.push((origin, std::mem::take(&mut text)));
                    }
                    inside = None;
                }
                (None, Some(_)) => {
                    text.push_str(line);
                    text.push('\n');
                }
                (None, None) => {}
            }
        }
    }
    assert!(!blocks.is_empty(), "no `{info}` block in the docs");
    blocks
}

#[test]
fn rollout_examples_are_valid_specs() {
    for (origin, text) in fenced("yaml rollout") {
        parse_spec(&text, &origin).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn group_examples_are_valid_groups() {
    for (origin, text) in fenced("yaml group") {
        fledge_spec::parse_group(&text, &origin).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A CanaryRollout example's `spec.rollout` is validated as the operator validates
/// it: serialized to JSON and read by the spec parser.
#[test]
fn canaryrollout_examples_hold_valid_specs() {
    for (origin, text) in fenced("yaml canaryrollout") {
        let object: Value =
            fledge_spec::from_yaml_str(&text, &origin).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(object["apiVersion"], "fledge.dev/v1alpha1", "{origin}");
        assert_eq!(object["kind"], "CanaryRollout", "{origin}");
        let rollout = serde_json::to_string(&object["spec"]["rollout"]).expect("JSON");
        parse_spec(&rollout, &format!("{origin}: spec.rollout")).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The criteria of a `text criteria…` block: one a line, `#` starts a comment.
fn criteria(info: &str) -> Vec<String> {
    fenced(info)
        .iter()
        .flat_map(|(_, text)| text.lines())
        .map(|l| l.split('#').next().unwrap_or_default().trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn criteria_examples_parse_and_counter_examples_do_not() {
    for text in criteria("text criteria") {
        if let Err(e) = Criterion::parse(&text) {
            panic!("`{text}` is shown as valid but: {e}");
        }
    }
    for text in criteria("text criteria-invalid") {
        if let Ok(c) = Criterion::parse(&text) {
            panic!("`{text}` is shown as refused but parses as {c:?}");
        }
    }
}
