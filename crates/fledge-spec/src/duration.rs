//! Durations in specs: `500ms`, `10s`, `5m`, `1h30m`.
//!
//! humantime alone is too lenient for a spec (it takes `5 minutes` and `1 hour 2 mins`),
//! so the text is first checked against a strict grammar, one or more `<integer><unit>`
//! terms with no spaces and units `ms`, `s`, `m`, `h`, `d`, and only then handed to
//! humantime. Formatting writes the same compact form, so a formatted duration always
//! parses back to the same value.
//!
//! This is the one duration grammar of fledge: a field read with serde uses
//! `#[serde(with = "fledge_spec::duration::required")]` (or [`optional`]), a
//! command-line flag [`parse_arg`], and anything else [`parse`] and [`format()`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserializer, Serializer};

use crate::raw::{self, Raw};

/// What a duration must look like, for error messages.
pub const EXPECTED: &str = "a duration like 500ms, 30s, 5m or 1h30m";

/// The longest duration anything takes: 100 years of 365 days. Nothing a rollout
/// or a server waits for comes near it, and under it every point a duration leads
/// to (a stage's end, a deadline) is a time the API can write.
pub const MAX: Duration = Duration::from_secs(36_500 * 86_400);

/// Parses a spec duration. The error says what was expected and what was found.
pub fn parse(text: &str) -> Result<Duration, String> {
    if !is_well_formed(text) {
        return Err(format!("expected {EXPECTED}, found `{text}`"));
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("expected {EXPECTED}, found `{text}` ({e})"))?;
    if d > MAX {
        return Err(format!(
            "expected a duration of at most {} (100 years), found `{text}`",
            format(MAX)
        ));
    }
    Ok(d)
}

/// [`parse`] for command-line options, so that a flag takes exactly what a spec
/// takes: `#[arg(value_parser = fledge_spec::duration::parse_arg)]`.
pub fn parse_arg(s: &str) -> Result<Duration, String> {
    parse(s)
}

/// `(<digits>(ms|s|m|h|d))+` with no sign, no spaces and no fractions.
fn is_well_formed(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 12 {
            return false;
        }
        let rest = &text[i..];
        let unit_len = if rest.starts_with("ms") {
            2
        } else if rest.starts_with(['s', 'm', 'h', 'd']) {
            1
        } else {
            return false;
        };
        i += unit_len;
    }
    true
}

/// Formats a duration in the compact form [`parse`] accepts (`1h30m`, `500ms`, `0s`).
pub fn format(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = total_ms;
    for (unit, ms) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if rest >= ms {
            let _ = write!(out, "{}{unit}", rest / ms);
            rest %= ms;
        }
    }
    if rest > 0 {
        let _ = write!(out, "{rest}ms");
    }
    out
}

/// Stands in for a duration that did not parse while `parse_spec` collects every
/// problem; validation always refuses it.
pub(crate) const INVALID: Duration = Duration::MAX;

/// Judges a duration as written. A bare number is refused with a hint, because `300`
/// could mean seconds or milliseconds and a spec should not make the reader guess.
pub(crate) fn from_raw(raw: &Raw) -> Result<Duration, String> {
    match raw {
        Raw::Text(text) => parse(text),
        Raw::Number(n) if n.bytes().all(|b| b.is_ascii_digit()) => Err(format!(
            "expected {EXPECTED}, found the bare number {n} (add a unit, e.g. {n}s)"
        )),
        other => Err(format!("expected {EXPECTED}, found {}", other.describe())),
    }
}

/// serde `with` module for a required [`Duration`] field written as text.
pub mod required {
    use super::*;

    /// Writes the compact text form.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// Reads the text form; any other type or shape is an error naming what was found.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        raw::judged(d, from_raw, INVALID)
    }
}

/// serde `with` module for an optional [`Duration`] field written as text.
pub mod optional {
    use super::*;

    /// Writes the compact text form (callers skip `None`).
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format(*d)),
            None => s.serialize_none(),
        }
    }

    /// Reads the text form, or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        raw::judged(
            d,
            |raw| match raw {
                Raw::Null => Ok(None),
                raw => from_raw(raw).map(Some),
            },
            Some(INVALID),
        )
    }
}

/// JSON Schema of a duration string, for `#[schemars(schema_with)]`.
pub fn schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": "^([0-9]+(ms|s|m|h|d))+$",
        "description": "A duration: one or more <integer><unit> terms, units ms, s, m, h, d (e.g. 500ms, 30s, 5m, 1h30m)."
    })
}

/// Marker type whose schema is [`schema`]; lets `Option<Duration>` fields share it.
#[derive(Debug)]
pub struct DurationSchema;

impl JsonSchema for DurationSchema {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_compact_forms() {
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_loose_forms() {
        for bad in [
            "5 minutes",
            "-1s",
            "5",
            "",
            "1.5s",
            "5 m",
            "m",
            "5x",
            "1h 30m",
            " 5s",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("expected a duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_longer_than_a_century_are_refused() {
        assert_eq!(parse("36500d"), Ok(MAX));
        assert_eq!(format(MAX), "36500d");
        for long in ["36500d1ms", "36501d", "876001h", "999999999999d"] {
            let err = parse(long).unwrap_err();
            assert!(err.contains("at most 36500d (100 years)"), "{long}: {err}");
        }
    }

    #[test]
    fn arguments_take_the_spec_grammar() {
        assert_eq!(parse_arg("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_arg("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["5 minutes", "300", "1.5s", ""] {
            assert_eq!(parse_arg(bad), parse(bad), "{bad}");
            assert!(parse_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn format_round_trips() {
        for ms in [
            0u64, 1, 999, 1000, 61_000, 5_400_000, 86_400_001, 90_061_001,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
    }
}
