//! The built-in data plane: a weighted HTTP reverse proxy that splits each app's
//! traffic between its stable and canary upstreams, with stickiness, match rules and
//! per-version request, error and latency statistics.
//!
//! Must never depend on the store, the API or the spec crate: the server maps a
//! rollout spec onto the plain [`Route`] type defined here.
//!
//! # Use
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use fledge_proxy::{ProxyConfig, ProxyHandle, Route, UpstreamGroup, serve};
//!
//! let route = Route::stable_only("v1", vec!["127.0.0.1:9001".into()]);
//! let handle = ProxyHandle::new(ProxyConfig::new("shop"), route)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(serve(listener, handle.clone(), async {
//!     let _ = stopped.await;
//! }));
//!
//! // A rollout step: 20% to the canary, from the next request on.
//! let mut route = (*handle.route()).clone();
//! route.canary = Some(UpstreamGroup { version: "v2".into(), endpoints: vec!["127.0.0.1:9002".into()] });
//! route.canary_weight = 20;
//! handle.set_route(route)?;
//!
//! // What the judge reads: cumulative counters per arm.
//! let (stable, canary) = handle.stats_by_role();
//! # let _ = (stable, canary);
//! use fledge_stats::exposition::{Format, Page};
//! let mut page = Page::new(Format::OpenMetrics);
//! handle.write_metrics(&mut page);
//!
//! let _ = stop.send(());
//! server.await??;
//! # Ok(()) }
//! ```
//!
//! # Request path
//!
//! Each client connection (HTTP/1.1 with keep-alive, or h2c) is served by a stack of
//! tower services: `Admit` (refuses CONNECT and oversized bodies) →
//! `Split` (picks the arm from the atomically swapped routing table) → `Record`
//! (counts the outcome against that arm's version; answers 502/504 on upstream
//! failure) → `Forward` (rewrites headers, sends over a pooled keep-alive HTTP/1.1
//! connection or a shared HTTP/2 one, under the response-header timeout). Bodies
//! stream in both directions.
//!
//! An HTTP/1.1 connection, plain or over TLS, is served by fledge's own server loop
//! (the `h1_server` module): it parses heads, frames bodies and keeps the connection
//! alive itself, holding no buffer between requests (emptied buffers wait for the
//! next reads in a bounded store per worker thread, the `spare` module). HTTP/2
//! (h2c, or h2 chosen by ALPN) and any request the loop does not take (HTTP/1.0,
//! chunked uploads, `Expect`, upgrades, malformed or oversized heads) go to hyper's
//! server, which then serves the rest of that connection.
//!
//! # Threads
//!
//! [`serve`] runs on the caller's runtime. [`Workers`] is how the server runs it: a
//! fixed set of threads, each with its own current-thread runtime, all accepting
//! from one listener; a connection, its requests and the upstream connections they
//! borrow stay on the thread that accepted it.
//!
//! # What is counted
//!
//! Per (version, role): requests answered, errors by kind (`upstream_5xx`; and the
//! proxy-made failures `connect` and `reset` → 502, `timeout` → 504), and the time
//! to the response headers on `fledge_stats::LATENCY_BOUNDS_SECONDS`. A client that
//! hangs up, or whose body breaks or is too large, is a client abort: neither a
//! request nor an error. [`ProxyHandle::stats_by_role`] gives the judge's cumulative
//! [`fledge_stats::ArmCounters`]; [`write_metrics`] exposes the counters
//! `fledge_proxy_requests_total`, `fledge_proxy_errors_total{kind}`,
//! `fledge_proxy_client_aborts_total`, `fledge_proxy_upgraded_total`,
//! `fledge_proxy_mirrored_total` and `fledge_proxy_mirror_dropped_total{reason}`,
//! the gauge `fledge_proxy_upgraded_open` and the histogram
//! `fledge_proxy_request_duration_seconds`, labelled `app`, `version`, `role`
//! (`docs/metrics.md` lists them all).
//!
//! # Copies for a dark canary
//!
//! A route with a [`MirrorPolicy`] copies that share of the requests stable serves
//! (of the allowed methods, with bodies up to a limit) to the canary. The user's
//! request never waits for its copy: the copy leaves on a task of its own once the
//! body has streamed to stable, its answer is thrown away, and its outcome is
//! counted as the canary's request, error and latency, so the judge reads it like
//! live traffic. At most `limits.max_mirror_in_flight` copies are in flight; beyond
//! that, copies are dropped and counted (see the `mirror` module).
//!
//! # TLS
//!
//! Given a `rustls::ServerConfig` ([`ProxyHandle::set_tls`]) the listener speaks
//! only TLS: the handshake must finish within `timeouts.tls_handshake` and the
//! first request bytes arrive within `timeouts.client_headers`, as on plain HTTP;
//! ALPN `h2` or `http/1.1` picks the protocol. Requests are counted the same way,
//! and upstreams are told `X-Forwarded-Proto: https` (`proto=https` in
//! `Forwarded`). Plain HTTP sent to a TLS port is answered 400 and closed.
//!
//! # Upgrades
//!
//! WebSocket and any other HTTP/1.1 `Upgrade` pass through to the version the
//! request was routed to, on an upstream connection of its own; after a `101` the
//! proxy tunnels bytes both ways (see the `upgrade` module: what is counted, when a
//! tunnel is closed). h2 extended CONNECT (WebSocket over HTTP/2) is refused like
//! any CONNECT.
//!
//! # Upstream protocols
//!
//! [`ProxyConfig::upstream`] says what the proxy speaks to an app's endpoints:
//! HTTP/1.1 (the default; pooled keep-alive connections, spoken by the proxy's
//! own client side on the client connection's task, see the `h1` module), h2c
//! (HTTP/2 with prior knowledge) or TLS ([`UpstreamTls`]: the given roots, an
//! optional server name, ALPN `h2` or `http/1.1` chosen by each endpoint). An HTTP/2 endpoint gets one
//! multiplexed connection per worker thread, dialled again when the upstream closes
//! it (see the `multiplex` module). Requests are counted, timed out and answered
//! on failure the same way whatever the protocol; a failed TLS handshake (an
//! untrusted or misnamed certificate) is a 502 counted as a `connect` error, its
//! reason logged at warn level (at most once every 10 s per endpoint, with the
//! count of failures held back).
//!
mod admit;
mod body;
mod client_io;
mod config;
mod error;
mod forward;
mod h1;
mod h1_server;
mod mirror;
mod multiplex;
mod pool;
mod record;
mod route;
mod server;
mod spare;
mod split;
mod stats;
mod table;
mod throttle;
mod tls;
mod upgrade;
mod upstream;
mod workers;

pub use body::{BoxError, ClientBodyError, RequestBody, ResponseBody};
pub use config::{Limits, ProxyConfig, Timeouts};
pub use error::ProxyError;
pub use route::{Arm, MatchOn, MatchRule, MirrorPolicy, Route, Stickiness, UpstreamGroup};
pub use server::{LISTEN_BACKLOG, ProxyHandle, bind, serve, write_metrics};
pub use stats::{DropReason, ErrorKind, VersionStats};
pub use tls::{HandshakeError, Replay, read_first_bytes, tls_handshake};
pub use upstream::{UpstreamProtocol, UpstreamTls};
pub use workers::{Serving, Workers};
