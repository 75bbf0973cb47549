//! OpenAPI v3 schemas as Kubernetes uses them: making the generated CRD schema
//! structural, checking that it is, and validating objects against a CRD's
//! `openAPIV3Schema` (the subset the Istio, SMI, Gateway API and fledge CRDs use).
//!
//! The validator is what lets the tests refuse an object the real API server would
//! refuse, without an API server.

use schemars::Schema;
use serde_json::{Map, Value, json};

/// A schema for a field whose content is free-form JSON kept as written.
pub fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> Schema {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
        .try_into()
        .expect("an object is a schema")
}

/// Rewrites what schemars emits into what Kubernetes accepts: `type: [T, "null"]`
/// becomes `type: T, nullable: true`; `const` becomes a one-value `enum`; keywords
/// Kubernetes does not know (`$schema`, `title`, `examples`) go.
pub fn make_structural(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    for key in ["$schema", "title", "examples", "readOnly", "writeOnly"] {
        obj.remove(key);
    }
    if let Some(Value::Array(types)) = obj.get("type").cloned() {
        let non_null: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
        if non_null.len() == 1 {
            obj.insert("type".into(), non_null[0].clone());
            if types.len() == 2 {
                obj.insert("nullable".into(), Value::Bool(true));
            }
        }
    }
    if let Some(c) = obj.remove("const") {
        obj.insert("enum".into(), Value::Array(vec![c]));
    }
    // An enum that allows null is written with `nullable`, and null is not a value of it.
    if let Some(Value::Array(values)) = obj.get_mut("enum")
        && values.iter().any(Value::is_null)
    {
        values.retain(|v| !v.is_null());
        obj.insert("nullable".into(), Value::Bool(true));
    }
    for key in ["properties", "patternProperties"] {
        if let Some(Value::Object(props)) = obj.get_mut(key) {
            props.values_mut().for_each(make_structural);
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(sub) = obj.get_mut(key)
            && sub.is_object()
        {
            make_structural(sub);
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(subs)) = obj.get_mut(key) {
            subs.iter_mut().for_each(make_structural);
        }
    }
}

/// Why a schema is not structural (Kubernetes' rules, the parts a generator can get
/// wrong): every node with properties, items or additionalProperties has a `type`; no
/// `$ref`; inside `oneOf`/`anyOf`/`allOf`/`not` no `type`, `description`, `default`,
/// `nullable` or `additionalProperties`, and every property named there is also
/// declared outside. Empty when structural.
pub fn structural_problems(schema: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    check_structural(schema, "", false, &mut problems);
    problems
}

fn check_structural(schema: &Value, path: &str, in_junctor: bool, problems: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        problems.push(format!("{path}: a schema must be an object"));
        return;
    };
    if obj.contains_key("$ref") {
        problems.push(format!("{path}: $ref is not allowed"));
    }
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if in_junctor {
        for key in [
            "type",
            "description",
            "default",
            "nullable",
            "additionalProperties",
        ] {
            if obj.contains_key(key) {
                problems.push(format!(
                    "{path}: `{key}` is not allowed inside oneOf/anyOf/allOf/not"
                ));
            }
        }
    } else if !obj.contains_key("type") && !preserve && !int_or_string {
        problems.push(format!("{path}: no `type`"));
    }
    let declared: Vec<&String> = obj
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().collect())
        .unwrap_or_default();
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (name, sub) in props {
            check_structural(sub, &format!("{path}.{name}"), in_junctor, problems);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}[]"), in_junctor, problems);
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        check_structural(extra, &format!("{path}.*"), in_junctor, problems);
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(subs)) = obj.get(key) {
            for (i, sub) in subs.iter().enumerate() {
                let sub_path = format!("{path}.{key}[{i}]");
                check_structural(sub, &sub_path, true, problems);
                if let Some(Value::Object(props)) = sub.get("properties") {
                    for name in props.keys() {
                        if !in_junctor && !declared.contains(&name) {
                            problems.push(format!(
                                "{sub_path}: property `{name}` is not declared outside {key}"
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// Validates `value` against an OpenAPI v3 `schema` as the API server would (type,
/// properties, required, items, enum, minimum/maximum, minItems/maxItems,
/// minLength/maxLength, pattern (simple anchored forms), additionalProperties,
/// nullable, x-kubernetes-int-or-string, x-kubernetes-preserve-unknown-fields, oneOf,
/// anyOf, allOf, not). Unknown fields are errors, as with a structural schema that
/// does not preserve them (the server would prune them silently: a field fledge
/// writes that is dropped is a bug). Returns every problem with its JSON path.
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    // The API server handles the object's type and metadata itself; a CRD schema
    // only declares them when it restricts them.
    let mut value = value.clone();
    if let Some(fields) = value.as_object_mut() {
        for key in ["apiVersion", "kind", "metadata"] {
            if schema["properties"].get(key).is_none() {
                fields.remove(key);
            }
        }
    }
    validate_at(schema, &value, "", &mut problems);
    problems
}

fn validate_at(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        return;
    };
    let flag = |key: &str| s.get(key) == Some(&Value::Bool(true));
    // The bound of `key` (`minItems`, …) that the count `n` is under, or over.
    let under = |key: &str, n: u64| s.get(key).and_then(Value::as_u64).filter(|&min| n < min);
    let over = |key: &str, n: u64| s.get(key).and_then(Value::as_u64).filter(|&max| n > max);
    if value.is_null() {
        if !flag("nullable") {
            out.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    let int_or_string = flag("x-kubernetes-int-or-string");
    if int_or_string {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            out.push(format!(
                "{path}: expected an integer or a string, found {value}"
            ));
        }
    } else if let Some(ty) = s.get("type").and_then(Value::as_str) {
        let ok = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            out.push(format!("{path}: expected {ty}, found {value}"));
            return;
        }
    }
    if let Some(Value::Array(allowed)) = s.get("enum")
        && !allowed.contains(value)
    {
        out.push(format!(
            "{path}: {value} is not one of {}",
            Value::Array(allowed.clone())
        ));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            let exclusive = flag("exclusiveMinimum");
            if n < min || (exclusive && n == min) {
                out.push(format!("{path}: {n} is below the minimum {min}"));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            let exclusive = flag("exclusiveMaximum");
            if n > max || (exclusive && n == max) {
                out.push(format!("{path}: {n} is above the maximum {max}"));
            }
        }
    }
    if let Some(text) = value.as_str() {
        let len = text.chars().count() as u64;
        if let Some(min) = under("minLength", len) {
            out.push(format!("{path}: `{text}` is shorter than {min}"));
        }
        if let Some(max) = over("maxLength", len) {
            out.push(format!("{path}: `{text}` is longer than {max}"));
        }
        if let Some(pattern) = s.get("pattern").and_then(Value::as_str)
            && let Some(false) = crate::pattern::matches(pattern, text)
        {
            out.push(format!(
                "{path}: `{text}` does not match the pattern {pattern}"
            ));
        }
    }
    if let Some(items) = value.as_array() {
        let n = items.len() as u64;
        if let Some(min) = under("minItems", n) {
            out.push(format!("{path}: {n} items, at least {min} expected"));
        }
        if let Some(max) = over("maxItems", n) {
            out.push(format!("{path}: {n} items, at most {max} allowed"));
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate_at(item_schema, item, &format!("{path}[{i}]"), out);
            }
        }
    }
    if let Some(fields) = value.as_object() {
        validate_object(s, fields, path, out);
    }
    validate_junctors(s, value, path, out);
}

fn validate_object(
    s: &Map<String, Value>,
    fields: &Map<String, Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    if let Some(Value::Array(required)) = s.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(name) {
                out.push(format!("{path}: required field `{name}` is missing"));
            }
        }
    }
    if let Some(n) = s.get("maxProperties").and_then(Value::as_u64)
        && fields.len() as u64 > n
    {
        out.push(format!("{path}: more than {n} properties"));
    }
    let props = s.get("properties").and_then(Value::as_object);
    let preserve = s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let extra = s.get("additionalProperties");
    for (name, field) in fields {
        let field_path = format!("{path}.{name}");
        if let Some(sub) = props.and_then(|p| p.get(name)) {
            validate_at(sub, field, &field_path, out);
        } else if let Some(sub) = extra.filter(|e| e.is_object()) {
            validate_at(sub, field, &field_path, out);
        } else if extra == Some(&Value::Bool(true)) || preserve {
        } else if props.is_some() || extra == Some(&Value::Bool(false)) {
            out.push(format!("{field_path}: unknown field"));
        }
    }
}

fn validate_junctors(s: &Map<String, Value>, value: &Value, path: &str, out: &mut Vec<String>) {
    // Inside a junctor, the outer schema declares the properties: a branch only
    // constrains, so unknown-field checks are off there.
    let branch_ok = |branch: &Value| {
        let mut errs = Vec::new();
        validate_at(&relax(branch), value, path, &mut errs);
        errs.is_empty()
    };
    if let Some(Value::Array(branches)) = s.get("oneOf") {
        let passing = branches.iter().filter(|b| branch_ok(b)).count();
        if passing != 1 {
            out.push(format!(
                "{path}: must match exactly one of oneOf, matches {passing}"
            ));
        }
    }
    if let Some(Value::Array(branches)) = s.get("anyOf")
        && !branches.iter().any(branch_ok)
    {
        out.push(format!("{path}: matches none of anyOf"));
    }
    if let Some(Value::Array(branches)) = s.get("allOf") {
        for b in branches {
            if !branch_ok(b) {
                out.push(format!("{path}: fails an allOf branch {b}"));
            }
        }
    }
    if let Some(not) = s.get("not")
        && branch_ok(not)
    {
        out.push(format!("{path}: matches a `not` schema"));
    }
}

/// A junctor branch with unknown fields allowed, since its properties are only the
/// ones it constrains.
fn relax(branch: &Value) -> Value {
    let mut b = branch.clone();
    if let Some(obj) = b.as_object_mut()
        && !obj.contains_key("additionalProperties")
    {
        obj.insert(
            "x-kubernetes-preserve-unknown-fields".into(),
            Value::Bool(true),
        );
    }
    b
}
