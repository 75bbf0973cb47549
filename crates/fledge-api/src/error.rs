//! The API's one error shape: `{"error": {"code": "...", "message": "...", "details": [...]}}`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The body of every error the API answers, whatever the route and status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`) and for people (`message`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code: `invalid_spec`, `not_found`, `conflict`,
    /// `invalid_phase`, `rate_limited`, `unauthorized`, `forbidden`, …
    pub code: String,
    /// One or more sentences saying what was wrong and where.
    pub message: String,
    /// Structured details, e.g. each problem of a spec with its line and column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<serde_json::Value>,
}

impl ErrorBody {
    /// An error body with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                details: Vec::new(),
            },
        }
    }
}
