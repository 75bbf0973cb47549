//! Rollout spec: the types of a canary rollout, their YAML/JSON parser with source
//! locations, validation, the success-criteria language and the JSON Schema.
//!
//! Must never depend on tokio or do any I/O beyond what its caller hands it.
