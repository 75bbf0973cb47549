//! The JSON Schema describes the spec: required fields, no unknown fields, criteria
//! and durations as strings, and a description on every field.

use fledge_spec::json_schema;
use serde_json::Value;

#[test]
fn schema_requires_the_seed_fields_and_refuses_others() {
    let schema = json_schema();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["app", "version", "stages"]);
    assert_eq!(schema["additionalProperties"], Value::Bool(false));
    let props = schema["properties"].as_object().unwrap();
    for field in [
        "app",
        "version",
        "strategy",
        "stages",
        "canary",
        "analysis",
        "metrics",
        "match",
        "stickiness",
        "hooks",
        "notifications",
        "errorBudget",
    ] {
        assert!(props.contains_key(field), "no {field}");
    }
    let defs = &schema["$defs"];
    assert_eq!(defs["Criterion"]["type"], "string");
    assert_eq!(defs["Duration"]["type"], "string");
    let stage = &defs["Stage"]["properties"];
    assert_eq!(stage["traffic"]["maximum"], 100);
    assert!(stage.get("successCriteria").is_some() && stage.get("final").is_some());
}

/// Every field documents itself: the `///` text is the reference documentation.
#[test]
fn every_field_has_a_description() {
    let schema = json_schema();
    let mut missing = Vec::new();
    let mut objects: Vec<(String, &Value)> = vec![("RolloutSpec".to_owned(), &schema)];
    for (name, def) in schema["$defs"].as_object().unwrap() {
        objects.push((name.clone(), def));
    }
    // Enum variants (hook kinds, enum values) carry their description on the variant.
    for (name, def) in &objects {
        for v in def["oneOf"].as_array().into_iter().flatten() {
            if v.get("description").is_none() {
                missing.push(format!("{name}: variant {v}"));
            }
        }
    }
    for (name, def) in objects {
        if let Some(props) = def["properties"].as_object() {
            for (field, prop) in props {
                if prop.get("description").is_none() {
                    missing.push(format!("{name}.{field}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}
