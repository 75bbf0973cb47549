//! Settings of one app's proxy listener that do not change during a rollout.

use std::time::Duration;

use crate::error::ProxyError;
use crate::upstream::UpstreamProtocol;

/// Per-app proxy settings. `ProxyConfig::new(app)` gives sensible defaults.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The app's name, used as the `app` label of every metric.
    pub app: String,
    /// How long each phase of a request may take.
    pub timeouts: Timeouts,
    /// Size limits that protect the proxy from abusive clients.
    pub limits: Limits,
    /// How many worker threads serve the proxy (default 1). Each keeps its own
    /// upstream connections; give the number of the [`Workers`](crate::Workers)
    /// that will serve it.
    pub workers: usize,
    /// What the proxy speaks to the app's upstream endpoints (default HTTP/1.1).
    pub upstream: UpstreamProtocol,
}

/// Timeouts, each with a default chosen for interactive HTTP services.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Establishing a TCP connection to an upstream endpoint (default 2 s). When it
    /// expires the client gets a 502 and the version an error.
    pub connect: Duration,
    /// From sending the request upstream to receiving the response headers (default
    /// 30 s). When it expires the client gets a 504 and the version an error. It
    /// includes streaming the request body, so raise it for apps that take slow
    /// large uploads. The response body then streams without a deadline.
    pub response_headers: Duration,
    /// How long a client may take to send a request's headers, and to send its first
    /// bytes on a new connection (default 10 s): the slow-loris guard.
    pub client_headers: Duration,
    /// On a TLS listener, how long a new connection may take to finish its
    /// handshake (default 10 s); the first request bytes then get
    /// `client_headers` more.
    pub tls_handshake: Duration,
    /// How long an idle pooled upstream connection is reused (default 4 s). Kept
    /// below the shortest common server keep-alive timeout (Node.js closes idle
    /// connections after 5 s): reusing a connection the upstream is closing at that
    /// moment fails the request with a 502 that would count against the version.
    pub upstream_idle: Duration,
    /// How long an upgraded connection (WebSocket) may pass no byte either way
    /// before the proxy closes it (default 1 h). It also bounds a tunnel one side
    /// has half-closed while the other never does.
    pub upgraded_idle: Duration,
    /// On shutdown, how long in-flight requests may take to finish before their
    /// connections are closed (default 10 s).
    pub drain: Duration,
}

/// Size limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (request line and headers) in bytes (default 64 KiB,
    /// at least 8 KiB). Larger heads get a 431 (HTTP/1.1) or a stream reset (h2).
    pub max_request_head_bytes: usize,
    /// Largest request body in bytes (default 1 GiB; `None` for no limit). A
    /// declared larger `Content-Length` gets a 413 before anything is sent upstream;
    /// a chunked body that grows past it is cut off and answered 413.
    pub max_request_body_bytes: Option<u64>,
    /// Most idle pooled connections kept per upstream endpoint and worker thread
    /// (default 256).
    pub max_idle_per_endpoint: usize,
    /// Most concurrent HTTP/2 streams per client connection (default 256).
    pub max_h2_streams: u32,
    /// Most copies of requests to the canary in flight at once, over all of the
    /// app's connections (default 256; see [`Route::mirror`](crate::Route)). A copy
    /// that finds them all in flight is dropped and counted, never queued: a slow
    /// canary must not hold the proxy's memory or slow stable's answers.
    pub max_mirror_in_flight: usize,
}

// === impl ProxyConfig ===

impl ProxyConfig {
    /// Default settings for `app`.
    pub fn new(app: impl Into<String>) -> Self {
        Self {
            app: app.into(),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            workers: 1,
            upstream: UpstreamProtocol::Http1,
        }
    }

    /// Checks the values hyper would otherwise reject with a panic.
    pub(crate) fn validate(&self) -> Result<(), ProxyError> {
        if self.limits.max_request_head_bytes < 8192 {
            return Err(ProxyError::InvalidConfig {
                field: "limits.max_request_head_bytes".into(),
                reason: format!(
                    "must be at least 8192, found {}",
                    self.limits.max_request_head_bytes
                ),
            });
        }
        if u32::try_from(self.limits.max_request_head_bytes).is_err() {
            return Err(ProxyError::InvalidConfig {
                field: "limits.max_request_head_bytes".into(),
                reason: "must fit in 32 bits".into(),
            });
        }
        if self.workers == 0 {
            return Err(ProxyError::InvalidConfig {
                field: "workers".into(),
                reason: "must be at least 1".into(),
            });
        }
        let zero = [
            ("timeouts.connect", self.timeouts.connect),
            ("timeouts.response_headers", self.timeouts.response_headers),
            ("timeouts.client_headers", self.timeouts.client_headers),
            ("timeouts.tls_handshake", self.timeouts.tls_handshake),
            ("timeouts.upgraded_idle", self.timeouts.upgraded_idle),
        ];
        for (field, d) in zero {
            if d.is_zero() {
                return Err(ProxyError::InvalidConfig {
                    field: field.into(),
                    reason: "must be greater than zero".into(),
                });
            }
        }
        Ok(())
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            response_headers: Duration::from_secs(30),
            client_headers: Duration::from_secs(10),
            tls_handshake: Duration::from_secs(10),
            upstream_idle: Duration::from_secs(4),
            upgraded_idle: Duration::from_secs(3600),
            drain: Duration::from_secs(10),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_head_bytes: 64 * 1024,
            max_request_body_bytes: Some(1 << 30),
            max_idle_per_endpoint: 256,
            max_h2_streams: 256,
            max_mirror_in_flight: 256,
        }
    }
}
