//! Rollout spec: the types of a canary rollout, their YAML/JSON parser with source
//! locations, validation, the success-criteria language and the JSON Schema.
//!
//! Must never depend on tokio or do any I/O beyond what its caller hands it.

pub mod criteria;
pub mod duration;
mod error;
mod parse;
mod types;
mod validate;

pub use criteria::{Bound, CmpOp, Criterion, CriterionError, Dimension, Metric, Unit};
pub use error::{SpecError, SpecIssue};
pub use parse::{Located, MAX_INPUT_BYTES, from_yaml_str, from_yaml_str_located};
pub use types::*;
pub use validate::{check_app_name, check_version_name};

/// Parses and validates a rollout spec (YAML, or JSON when it starts with `{`).
/// `origin` names the text in error messages, e.g. the file name.
pub fn parse_spec(text: &str, origin: &str) -> Result<RolloutSpec, SpecError> {
    let (spec, tree) =
        criteria::with_lenient_criteria(|| parse::read_document::<RolloutSpec>(text, origin))?;
    let issues = validate::validate(&spec, tree.as_ref());
    if issues.is_empty() {
        Ok(spec)
    } else {
        Err(SpecError {
            origin: origin.to_owned(),
            issues,
        })
    }
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
