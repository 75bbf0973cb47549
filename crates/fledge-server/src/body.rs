//! Reading request bodies: the size limit as a JSON 413, and bodies that must be one
//! JSON object.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::Value;

use super::error::ApiError;

/// Reads a body, turning the size limit into a JSON 413.
pub(crate) fn body(bytes: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    bytes.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the server's limit (limits.maxBodyBytes)",
            )
        } else {
            ApiError::bad_request("invalid_body", e.body_text())
        }
    })
}

/// Reads a body that must be one JSON object. serde would also read a struct from
/// an array of its fields in order (`["why"]` as `{"reason": "why"}`), which no
/// client means and the API's description does not allow.
pub(crate) fn json_object(bytes: &[u8]) -> Result<Value, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if !value.is_object() {
        let found = match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        return Err(format!("expected a JSON object, found {found}"));
    }
    Ok(value)
}

/// Reads a body that must be one JSON object as a `T` (see [`json_object`]).
pub(crate) fn from_json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_value(json_object(bytes)?).map_err(|e| e.to_string())
}
