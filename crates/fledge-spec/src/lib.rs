//! Rollout spec: the types of a canary rollout, their YAML/JSON parser with source
//! locations, validation, the success-criteria language and the JSON Schema.
//!
//! Must never depend on tokio or do any I/O beyond what its caller hands it.
//!
//! * [`parse_spec`] reads and validates a spec: YAML, or JSON when the first
//!   non-blank character is `{`. Every problem comes back in a [`SpecError`] that
//!   displays as `file:line:col: field: expected …, found …`, one line per problem,
//!   and exposes the same as structured [`SpecIssue`]s for the HTTP API.
//! * [`from_yaml_str`] reads any other document (the server's `fledge.yaml`) with
//!   the same errors; [`from_yaml_str_located`] also returns positions for the
//!   caller's own checks.
//! * [`criteria`] is the `<metric> <op> <value>` language, [`duration`] the strict
//!   `5m`/`1h30m` durations, [`json_schema`] the schema behind `fledge schema`.
//!
//! Decisions worth knowing (each is also documented where it applies):
//! * documents over [`MAX_INPUT_BYTES`] (1 MiB) are refused before parsing;
//! * an app name is a DNS label (lowercase); a version is a Kubernetes label value
//!   (`v2.3.1`, upper case allowed);
//! * a bare number for a ratio metric is a fraction (`error_rate < 0.005`), so
//!   `error_rate < 5` is an error that suggests `5%`; latencies need a unit;
//! * the last stage is the final one; `final: true` elsewhere is an error, and so
//!   is `promote` on a stage that is not final;
//! * traffic is a whole percentage and never goes down from one stage to the next;
//! * `mirror` (copies of stable's requests to the canary) is a whole percentage,
//!   refused in a stage with `traffic: 100`, where nothing is left to copy.

pub mod criteria;
pub mod duration;
mod error;
pub mod group;
mod parse;
mod raw;
mod types;
mod validate;

pub use criteria::{
    Bound, CmpOp, Criterion, CriterionError, Dimension, Metric, Unit, is_builtin_metric,
};
pub use error::{SpecError, SpecIssue};
pub use group::{
    GroupOrder, GroupSpec, check_document_bytes, group_json_schema, is_group_document, parse_group,
};
pub use parse::{Located, MAX_INPUT_BYTES, from_yaml_str, from_yaml_str_located};
pub use types::*;
pub use validate::{check_app_name, check_version_name};

/// Parses and validates a rollout spec (YAML, or JSON when it starts with `{`).
/// `origin` names the text in error messages, e.g. the file name.
pub fn parse_spec(text: &str, origin: &str) -> Result<RolloutSpec, SpecError> {
    let (spec, tree) = raw::with_lenient(|| parse::read_document::<RolloutSpec>(text, origin))?;
    let issues = validate::validate(&spec, tree.as_ref());
    SpecError::unless_empty(origin, issues).map(|()| spec)
}

/// [`parse_spec`] on raw bytes: checks the size limit, then that the text is UTF-8.
pub fn parse_spec_bytes(bytes: &[u8], origin: &str) -> Result<RolloutSpec, SpecError> {
    parse_spec(parse::decode(bytes, origin)?, origin)
}

/// [`from_yaml_str`] on raw bytes: checks the size limit, then that the text is UTF-8.
pub fn from_yaml_slice<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    origin: &str,
) -> Result<T, SpecError> {
    from_yaml_str(parse::decode(bytes, origin)?, origin)
}

/// The JSON Schema of [`RolloutSpec`].
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RolloutSpec))
        .expect("a JSON Schema is always representable as JSON")
}
