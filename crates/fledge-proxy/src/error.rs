//! The crate's error type: configuration mistakes the caller must fix, and I/O
//! failures of the listener. Per-request failures never surface here; they become
//! 4xx/5xx responses and counters.

use std::io;

/// Why a route could not be installed or the proxy could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A route field holds a value the proxy cannot use; fix the route and retry.
    #[error("invalid route: {field}: {reason}")]
    InvalidRoute {
        /// The field, as a path (`canary.endpoints`).
        field: String,
        /// What was expected and what was found.
        reason: String,
    },
    /// An endpoint is not of the form `host:port`.
    #[error("invalid endpoint {endpoint:?}: {reason} (expected host:port, e.g. 127.0.0.1:9001)")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A proxy setting is out of range.
    #[error("invalid proxy config: {field}: {reason}")]
    InvalidConfig {
        /// The setting.
        field: String,
        /// What was expected and what was found.
        reason: String,
    },
    /// The listener failed in a way that retrying cannot fix.
    #[error("proxy listener for app {app:?} failed: {source}")]
    Listener {
        /// The app whose listener failed.
        app: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}
