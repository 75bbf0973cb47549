//! `serde(with)` helpers for durations written like `500ms`, `5s` or `1m30s` in the
//! server configuration.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Deserializes a duration from its human form (`500ms`, `5s`, `2m`).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "expected a duration like 500ms, 5s or 2m, found `{text}` ({e})"
        ))
    })
}

/// Serializes a duration in its human form.
pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*value).to_string())
}
