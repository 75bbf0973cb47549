//! The two written forms of a provider setting (`router:` and `metrics:`) in
//! `fledge.yaml`, read into one shape.
//!
//! Accepted, for any provider kind:
//!
//! ```yaml
//! router: builtin                                   # the kind alone
//! router: {type: haproxy, backend: be_app, ...}      # `type` plus the settings
//! router: {haproxy: {backend: be_app, ...}}          # the kind as the only key
//! ```
//!
//! The settings are then read by the kind's own type, with `deny_unknown_fields`.
//! Settings are serialized in the `type` form.

use serde_json::{Map, Value};

/// Splits a provider setting into its kind and its settings.
pub(crate) fn split(value: Value, what: &str) -> Result<(String, Map<String, Value>), String> {
    match value {
        Value::String(kind) => Ok((kind, Map::new())),
        Value::Object(mut map) => {
            if let Some(kind) = map.remove("type") {
                let Value::String(kind) = kind else {
                    return Err(format!("{what}: `type` must be a string, found {kind}"));
                };
                return Ok((kind, map));
            }
            if map.len() == 1 {
                let (kind, settings) = map.into_iter().next().expect("one entry");
                return match settings {
                    Value::Object(s) => Ok((kind, s)),
                    Value::Null => Ok((kind, Map::new())),
                    other => Err(format!(
                        "{what}: the settings of `{kind}` must be a map, found {other}"
                    )),
                };
            }
            Err(format!(
                "{what}: expected a kind (`builtin`), a map with `type`, or a map with the kind as its only key; found keys {}",
                map.keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
        other => Err(format!("{what}: expected a kind or a map, found {other}")),
    }
}

/// Deserializes a provider setting in any of its written forms: splits off the kind,
/// then hands kind and settings to `from_parts`.
pub(crate) fn deserialize<'de, D, T>(
    d: D,
    what: &str,
    from_parts: fn(&str, Map<String, Value>) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value = <Value as serde::Deserialize>::deserialize(d)?;
    let (kind, settings) = split(value, what).map_err(serde::de::Error::custom)?;
    from_parts(&kind, settings).map_err(serde::de::Error::custom)
}

/// Reads one kind's settings with its own type.
pub(crate) fn read<T: serde::de::DeserializeOwned>(
    what: &str,
    kind: &str,
    settings: Map<String, Value>,
) -> Result<T, String> {
    serde_json::from_value(Value::Object(settings)).map_err(|e| format!("{what} {kind}: {e}"))
}

/// Writes a kind and its settings in the `type` form.
pub(crate) fn write<T: serde::Serialize>(kind: &str, settings: &T) -> Value {
    let mut map = match serde_json::to_value(settings) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    map.insert("type".to_owned(), Value::String(kind.to_owned()));
    Value::Object(map)
}
