//! How the proxy speaks to an app's upstream endpoints: HTTP/1.1 (the default),
//! HTTP/2 with prior knowledge over plain TCP (`h2c`), or TLS, where ALPN lets each
//! endpoint choose `h2` or `http/1.1`.
//!
//! This module holds the settings and the connection set-up; the pooling of the
//! connections is in `pool` (HTTP/1.1, one request per connection at a time) and
//! `multiplex` (HTTP/2, one shared connection per endpoint and worker).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::body::UpstreamBody;
use crate::error::ProxyError;
use crate::forward::ForwardError;

/// The ALPN name of HTTP/2.
/// The upstream connection warnings: at most one every 10 s per endpoint (each
/// says how many were held back since the last), however many requests fail.
fn warnings() -> &'static crate::throttle::Throttle {
    static WARNINGS: std::sync::OnceLock<crate::throttle::Throttle> = std::sync::OnceLock::new();
    WARNINGS.get_or_init(|| crate::throttle::Throttle::new(Duration::from_secs(10)))
}

const ALPN_H2: &[u8] = b"h2";
/// The ALPN name of HTTP/1.1.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The protocol the proxy speaks to every upstream endpoint of an app.
#[derive(Debug, Clone, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over TCP, on pooled keep-alive connections (the default).
    #[default]
    Http1,
    /// HTTP/2 over TCP with prior knowledge (no upgrade dance): one multiplexed
    /// connection per endpoint and worker thread. `Upgrade` requests (WebSocket)
    /// still go over HTTP/1.1, which an h2c server must then also accept.
    H2c,
    /// TLS, offering ALPN `h2` and `http/1.1`: an endpoint that picks `h2` gets one
    /// multiplexed connection per worker thread, one that picks `http/1.1` (or
    /// none) gets pooled HTTP/1.1 connections from then on. `Upgrade` requests
    /// offer only `http/1.1`.
    Tls(UpstreamTls),
}

/// The TLS settings of the connections to an app's upstreams.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Offers `h2` and `http/1.1`.
    negotiate: Arc<rustls::ClientConfig>,
    /// Offers only `http/1.1`.
    http1: Arc<rustls::ClientConfig>,
    /// The name every endpoint's certificate is checked against (and sent as
    /// SNI); each endpoint's own host when `None`.
    server_name: Option<ServerName<'static>>,
}

/// The body of a request sent over HTTP/2: the client's, or none (a request
/// without a body is sent with an empty one, so that it can be sent again).
pub(crate) type H2Body = Either<UpstreamBody, Empty<Bytes>>;

/// A new upstream connection, ready for requests.
pub(crate) enum Dialled {
    Http1(http1::SendRequest<UpstreamBody>),
    H2(http2::SendRequest<H2Body>),
}

// === impl UpstreamProtocol ===

impl UpstreamProtocol {
    /// The protocol's name in logs and errors: `http1`, `h2c` or `tls`.
    pub fn as_str(&self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::Tls(_) => "tls",
        }
    }

    /// The URI scheme of requests sent with this protocol.
    pub(crate) fn scheme(&self) -> http::uri::Scheme {
        match self {
            UpstreamProtocol::Tls(_) => http::uri::Scheme::HTTPS,
            _ => http::uri::Scheme::HTTP,
        }
    }
}

// === impl UpstreamTls ===

impl UpstreamTls {
    /// TLS 1.2 or 1.3 to upstreams whose certificates chain to one of `roots`,
    /// checked against `server_name` when given (also sent as SNI), else against
    /// the host of each endpoint (a name or an IP address).
    pub fn new(
        roots: rustls::RootCertStore,
        server_name: Option<&str>,
    ) -> Result<Self, ProxyError> {
        let invalid = |reason: String| ProxyError::InvalidConfig {
            field: "upstream.tls".into(),
            reason,
        };
        if roots.is_empty() {
            return Err(invalid("no trusted certificate authority".into()));
        }
        let server_name = server_name
            .map(|n| {
                ServerName::try_from(n.to_owned()).map_err(|_| ProxyError::InvalidConfig {
                    field: "upstream.tls.serverName".into(),
                    reason: format!("{n:?} is neither a DNS name nor an IP address"),
                })
            })
            .transpose()?;
        let roots = Arc::new(roots);
        let config = |alpn: &[&[u8]]| -> Result<Arc<rustls::ClientConfig>, ProxyError> {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| invalid(e.to_string()))?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(config))
        };
        Ok(Self {
            negotiate: config(&[ALPN_H2, ALPN_HTTP1])?,
            http1: config(&[ALPN_HTTP1])?,
            server_name,
        })
    }

    /// The TLS handshake with the endpoint whose host is `host`, offering
    /// `h2` too when `h2` is set, within `timeout`.
    async fn handshake(
        &self,
        stream: TcpStream,
        host: &str,
        h2: bool,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, ForwardError> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(bare.to_owned()).map_err(|_| {
                    if let Some(held_back) = warnings().allow(host) {
                        tracing::warn!(host, held_back, "upstream TLS: the endpoint's host is not a valid server name; set upstream.tls.serverName");
                    }
                    ForwardError::Tls
                })?
            }
        };
        let connector = TlsConnector::from(if h2 {
            self.negotiate.clone()
        } else {
            self.http1.clone()
        });
        match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => {
                // Most often a certificate the configured authorities do not
                // vouch for, or one for another name: a setting to fix, so said
                // where an operator looks.
                if let Some(held_back) = warnings().allow(host) {
                    tracing::warn!(host, error = %e, held_back, "upstream TLS handshake failed");
                }
                Err(ForwardError::Tls)
            }
            Err(_) => {
                if let Some(held_back) = warnings().allow(host) {
                    tracing::warn!(
                        host,
                        ?timeout,
                        held_back,
                        "upstream TLS handshake timed out"
                    );
                }
                Err(ForwardError::Tls)
            }
        }
    }
}

/// Sets up a connection on `stream` to `endpoint` (for logs) with `protocol`:
/// HTTP/2 for h2c and for TLS when the endpoint picks `h2` (and `allow_h2` is
/// set), else HTTP/1.1 (with upgrades). The connection's task is spawned on the
/// calling thread's runtime.
pub(crate) async fn establish(
    protocol: &UpstreamProtocol,
    stream: TcpStream,
    endpoint: &http::uri::Authority,
    allow_h2: bool,
    timeout: Duration,
) -> Result<Dialled, ForwardError> {
    match protocol {
        UpstreamProtocol::Http1 => start_on(stream, endpoint, false).await,
        UpstreamProtocol::H2c => start_on(stream, endpoint, allow_h2).await,
        UpstreamProtocol::Tls(tls) => {
            let stream = tls
                .handshake(stream, endpoint.host(), allow_h2, timeout)
                .await?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
            start_on(stream, endpoint, h2).await
        }
    }
}

/// An HTTP/2 connection on `io` when `h2` is set (the preface sent; it pings an
/// idle peer so that a dead one is noticed), else an HTTP/1.1 one, driven by a
/// task of its own on the calling thread's runtime.
async fn start_on<T>(
    io: T,
    endpoint: &http::uri::Authority,
    h2: bool,
) -> Result<Dialled, ForwardError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let endpoint = endpoint.clone();
    if h2 {
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .handshake(io)
            .await
            .map_err(|e| {
                if let Some(held_back) = warnings().allow(endpoint.as_str()) {
                    tracing::warn!(%endpoint, error = %e, held_back, "upstream HTTP/2 handshake failed");
                }
                ForwardError::Connect
            })?;
        tokio::spawn(async move {
            match conn.await {
                Ok(()) => tracing::debug!(%endpoint, "upstream HTTP/2 connection closed"),
                Err(e) => {
                    tracing::debug!(%endpoint, error = %e, "upstream HTTP/2 connection ended with an error");
                }
            }
        });
        return Ok(Dialled::H2(tx));
    }
    let (tx, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|_| ForwardError::Connect)?;
    // With upgrades: the same connection type serves both, and a pooled
    // connection never sees a 101 (only `send_upgrade` sends an `Upgrade`).
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%endpoint, error = %e, "upstream connection ended with an error");
        }
    });
    Ok(Dialled::Http1(tx))
}
