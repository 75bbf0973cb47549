//! Rollout spec: the types of a canary rollout, their YAML/JSON parser with source
//! locations, validation, the success-criteria language and the JSON Schema.
//!
//! Must never depend on tokio or do any I/O beyond what its caller hands it.

pub mod criteria;
pub mod duration;
mod error;
mod parse;
mod types;

pub use criteria::{Bound, CmpOp, Criterion, CriterionError, Dimension, Metric, Unit};
pub use error::{SpecError, SpecIssue};
pub use parse::{MAX_INPUT_BYTES, from_yaml_str};
pub use types::*;

/// Parses and validates a rollout spec (YAML, or JSON when it starts with `{`).
/// `origin` names the text in error messages, e.g. the file name.
pub fn parse_spec(text: &str, origin: &str) -> Result<RolloutSpec, SpecError> {
    let (spec, _tree) = parse::read_document::<RolloutSpec>(text, origin)?;
    Ok(spec)
}

/// The JSON Schema of [`RolloutSpec`].
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RolloutSpec))
        .expect("a JSON Schema is always representable as JSON")
}
