//! The built-in data plane: a weighted HTTP reverse proxy that splits each app's
//! traffic between its stable and canary upstreams, with stickiness, match rules and
//! per-version request, error and latency statistics.
//!
//! Must never depend on the store or the API.
