//! Protocol upgrades (WebSocket, and any protocol a `101 Switching Protocols`
//! answer switches to) passed through to the upstream.
//!
//! An HTTP/1.1 request with `Upgrade` and `Connection: upgrade` is routed like any
//! other (weight, match rules, stickiness), then sent on an upstream connection of
//! its own with both headers kept. If the upstream answers `101`, the client gets the
//! `101` and, once both sides have switched, a tunnel copies bytes each way until
//! either side closes. Any other answer is an ordinary response.
//!
//! The `101` is counted as one request of the version that took it, with its time to
//! the response head; the tunnel is counted in `fledge_proxy_upgraded_total` and
//! `fledge_proxy_upgraded_open`. A tunnel outlives route changes (like a request in
//! flight) unless the route asked to close the canary's upgraded connections when
//! the canary leaves it ([`crate::Route::close_upgraded_on_abort`]); every tunnel
//! closes when the proxy stops, and any tunnel idle for `timeouts.upgraded_idle`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::body::{RequestBody, UpstreamBody};
use crate::forward::{ForwardError, strip_hop_by_hop};
use crate::pool::{EndpointPool, PooledBody};
use crate::stats::{UpgradedGuard, VersionStats};

/// Bytes buffered per direction of a tunnel.
const TUNNEL_BUFFER: usize = 16 * 1024;

/// Whether `req` asks to switch protocols: HTTP/1.1 with an `Upgrade` header that
/// its `Connection` header names (RFC 9110 §7.8).
pub(crate) fn wanted<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// The `Upgrade` header's values, which [`strip_hop_by_hop`] removes.
fn protocols(headers: &HeaderMap) -> Vec<HeaderValue> {
    headers.get_all(header::UPGRADE).iter().cloned().collect()
}

/// Puts `Upgrade: protocols` and `Connection: upgrade` back on a message whose
/// hop-by-hop headers were removed.
fn restore(headers: &mut HeaderMap, protocols: Vec<HeaderValue>) {
    for p in protocols {
        headers.append(header::UPGRADE, p);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// What an upgrade request keeps from the client before it is rewritten for the
/// upstream: the client's side of the upgrade and the protocols it asked for.
pub(crate) struct ClientUpgrade {
    on_upgrade: OnUpgrade,
    protocols: Vec<HeaderValue>,
}

impl ClientUpgrade {
    /// Takes the upgrade out of `req` (before its hop-by-hop headers are removed).
    pub(crate) fn take<B>(req: &mut Request<B>) -> Self {
        Self {
            protocols: protocols(req.headers()),
            on_upgrade: hyper::upgrade::on(req),
        }
    }

    /// Sends the rewritten `req` with its upgrade headers to `pool` on a connection
    /// of its own; on a `101`, starts the tunnel counted in `stats`.
    pub(crate) async fn forward(
        self,
        pool: Arc<EndpointPool>,
        mut req: Request<RequestBody>,
        stats: Arc<VersionStats>,
        idle: Duration,
    ) -> Result<Response<PooledBody>, ForwardError> {
        restore(req.headers_mut(), self.protocols);
        let mut rsp = pool.send_upgrade(req.map(UpstreamBody::client)).await?;
        let switched = rsp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let chosen = protocols(rsp.headers());
        let upstream = switched.then(|| hyper::upgrade::on(&mut rsp));
        strip_hop_by_hop(rsp.headers_mut());
        if let Some(upstream) = upstream {
            restore(rsp.headers_mut(), chosen);
            let (guard, close) = stats.open_upgraded();
            tokio::spawn(tunnel(self.on_upgrade, upstream, idle, guard, close));
        }
        Ok(rsp.map(PooledBody::unpooled))
    }
}

/// Copies bytes both ways between the client and the upstream once both have
/// switched, until either closes, an error, `idle` without a byte either way, or
/// the close signal.
async fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle: Duration,
    _open: UpgradedGuard,
    mut close: tokio::sync::watch::Receiver<u64>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let start = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    // Every byte either way passes through the client's side.
    let mut client = Watched {
        io: TokioIo::new(client),
        start,
        activity: activity.clone(),
    };
    let mut upstream = TokioIo::new(upstream);
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        TUNNEL_BUFFER,
        TUNNEL_BUFFER,
    );
    let mut copy = std::pin::pin!(copy);
    let mut deadline = start + idle;
    loop {
        tokio::select! {
            copied = &mut copy => {
                match copied {
                    Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
                    Err(e) => tracing::debug!(error = %e, "upgraded connection failed"),
                }
                return;
            }
            _ = close.changed() => {
                tracing::debug!("upgraded connection closed by the proxy");
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                let last = start + Duration::from_millis(activity.load(Ordering::Relaxed));
                if last + idle <= Instant::now() {
                    tracing::debug!(?idle, "idle upgraded connection closed");
                    return;
                }
                deadline = last + idle;
            }
        }
    }
}

pin_project! {
    /// An I/O object that notes when bytes last moved through it, in milliseconds
    /// since `start`.
    struct Watched<T> {
        #[pin]
        io: T,
        start: Instant,
        activity: Arc<AtomicU64>,
    }
}

/// Notes that bytes moved now.
fn touch(start: &Instant, activity: &AtomicU64) {
    let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    activity.store(ms, Ordering::Relaxed);
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = self.project();
        let polled = this.io.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            touch(this.start, this.activity);
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.io.poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            touch(this.start, this.activity);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn an_upgrade_needs_both_headers_on_http_1_1() {
        let ws = [
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
        ];
        assert!(wanted(&request(Version::HTTP_11, &ws)));
        assert!(!wanted(&request(Version::HTTP_10, &ws)));
        assert!(!wanted(&request(Version::HTTP_2, &ws)));
        assert!(!wanted(&request(
            Version::HTTP_11,
            &[("upgrade", "websocket")]
        )));
        assert!(!wanted(&request(
            Version::HTTP_11,
            &[("connection", "upgrade")]
        )));
    }

    #[test]
    fn restored_headers_name_only_the_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("upgrade, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        let kept = protocols(&h);
        strip_hop_by_hop(&mut h);
        restore(&mut h, kept);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert!(!h.contains_key("x-secret"));
    }
}
