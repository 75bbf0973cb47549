//! Keep-alive HTTP/1.1 connections to upstream endpoints.
//!
//! One [`EndpointPool`] per `host:port`, shared by every routing table that names the
//! endpoint, so a weight change keeps the warm connections. A request takes an idle
//! connection (the most recently used, which is the least likely to have been closed
//! by the upstream's idle timer) or dials a new one; the connection goes back to the
//! pool when the response body has been read to its end, straight from the body
//! wrapper, with no task spawned per request. Plain HTTP/1.1 endpoints are spoken
//! to by the proxy's own client side (the `h1` module), driven by the client's
//! connection task; an endpoint reached over TLS that chose HTTP/1.1 by ALPN goes
//! through hyper's client connection, driven by a task of its own. A request that a pooled connection
//! could not even start sending (the upstream had closed it) is retried once per
//! idle connection and then on a fresh one; a request that was sent is never
//! retried.
//!
//! Each worker thread ([`crate::Workers`]) keeps its own idle connections: a
//! connection's I/O is driven by the runtime that dialled it, so handing it to
//! another thread's request would wake that other thread for every read and write.
//! A thread that is not a worker uses the first worker's list.

use std::cell::Cell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use pin_project_lite::pin_project;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::{BoxError, ClientBodyError, UpstreamBody};
use crate::forward::{ForwardError, strip_hop_by_hop};
use crate::h1;
use crate::multiplex::Multiplexed;
use crate::upstream::{self, Dialled, UpstreamProtocol};

/// Settings shared by every endpoint pool of one proxy.
#[derive(Debug)]
pub(crate) struct PoolConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle: usize,
    /// How many worker threads share the pools: one idle list each.
    pub(crate) workers: usize,
    /// What the endpoints speak.
    pub(crate) protocol: UpstreamProtocol,
}

thread_local! {
    /// The index of the worker this thread is, set by [`crate::Workers`].
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker the calling thread is (0 if it is none).
pub(crate) fn worker_index() -> usize {
    WORKER.with(Cell::get)
}

/// Marks the calling thread as worker `index`.
pub(crate) fn set_worker_index(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The pools of one proxy, by endpoint.
#[derive(Debug)]
pub(crate) struct Pools {
    config: Arc<PoolConfig>,
    by_endpoint: Mutex<HashMap<Authority, Arc<EndpointPool>>>,
}

/// The idle connections to one endpoint.
#[derive(Debug)]
pub(crate) struct EndpointPool {
    pub(crate) authority: Authority,
    pub(crate) config: Arc<PoolConfig>,
    /// One list per worker thread: hyper's connections (TLS endpoints that chose
    /// HTTP/1.1)...
    idle: IdleLists<http1::SendRequest<UpstreamBody>>,
    /// ...and the proxy's own (plain HTTP/1.1 endpoints).
    plain: IdleLists<h1::Conn>,
    /// The shared HTTP/2 connections (h2c and TLS endpoints).
    pub(crate) mux: Multiplexed,
    /// Whether requests go through `send_multiplexed` (h2c and TLS) rather than
    /// straight to the HTTP/1.1 pool.
    pub(crate) multiplexed: bool,
}

/// An exchange with an upstream endpoint, until the response head.
pub(crate) type SendFuture =
    Pin<Box<dyn Future<Output = Result<Response<PooledBody>, ForwardError>> + Send>>;

#[derive(Debug)]
struct Idle<C> {
    conn: C,
    since: Instant,
}

/// The idle connections of one kind, a list per worker thread.
type IdleLists<C> = Box<[Mutex<Vec<Idle<C>>>]>;

/// One idle list per worker thread.
fn per_worker<T>(workers: usize) -> Box<[Mutex<Vec<T>>]> {
    (0..workers.max(1))
        .map(|_| Mutex::new(Vec::new()))
        .collect()
}

/// The calling worker's list of `lists`.
fn of_worker<T>(lists: &[Mutex<Vec<T>>]) -> std::sync::MutexGuard<'_, Vec<T>> {
    lists[worker_index() % lists.len()]
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

// === impl Pools ===

impl Pools {
    pub(crate) fn new(config: PoolConfig) -> Self {
        Self {
            config: Arc::new(config),
            by_endpoint: Mutex::new(HashMap::new()),
        }
    }

    #[cfg(test)]
    pub(crate) fn for_test() -> Self {
        Self::new(PoolConfig {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_idle: 1,
            workers: 1,
            protocol: UpstreamProtocol::Http1,
        })
    }

    /// The pool of `authority`, created if needed. Pools no routing table uses any
    /// more are dropped here, closing their idle connections.
    pub(crate) fn get(&self, authority: &Authority) -> Arc<EndpointPool> {
        let mut map = self
            .by_endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = map.get(authority) {
            return p.clone();
        }
        map.retain(|_, p| Arc::strong_count(p) > 1);
        let pool = Arc::new(EndpointPool {
            authority: authority.clone(),
            config: self.config.clone(),
            idle: per_worker(self.config.workers),
            plain: per_worker(self.config.workers),
            mux: Multiplexed::new(self.config.workers),
            multiplexed: !matches!(self.config.protocol, UpstreamProtocol::Http1),
        });
        map.insert(authority.clone(), pool.clone());
        pool
    }
}

// === impl EndpointPool ===

impl EndpointPool {
    /// Sends `req` the way this endpoint is spoken to: on its shared HTTP/2
    /// connection when multiplexed, else on a pooled HTTP/1.1 one.
    ///
    /// Each way is boxed on its own, so that a plain request in flight holds only
    /// what the HTTP/1.1 exchange needs, not room for a TLS or HTTP/2 connect as
    /// well (over 10 KiB when both were one future). That exchange keeps the request
    /// in a box of its own, and a new connection's dial in another: its future is
    /// about 300 bytes instead of 1.9 KiB, cheap to allocate and to move.
    pub(crate) fn dispatch(self: Arc<Self>, req: Request<UpstreamBody>) -> SendFuture {
        if self.multiplexed {
            Box::pin(self.send_multiplexed(req))
        } else {
            Box::pin(self.send_plain(Box::new(req)))
        }
    }

    /// Sends `req` to a plain HTTP/1.1 endpoint on a pooled or new connection and
    /// waits for the response head, whose hop-by-hop headers it removes.
    async fn send_plain(
        self: Arc<Self>,
        mut req: Box<Request<UpstreamBody>>,
    ) -> Result<Response<PooledBody>, ForwardError> {
        loop {
            let (conn, reused) = match self.checkout_plain() {
                Some(conn) => (conn, true),
                // Boxed: a new connection is the rare case.
                None => (h1::Conn::new(Box::pin(self.dial()).await?), false),
            };
            let h1::Exchanged {
                mut head,
                body,
                conn,
            } = match conn.exchange(req, reused).await {
                Ok(exchanged) => exchanged,
                Err(h1::Failed::NotSent(back)) => {
                    req = back;
                    continue;
                }
                Err(h1::Failed::Error(e)) => return Err(e),
            };
            if body.is_chunked() {
                head.headers_mut().remove(http::header::CONTENT_LENGTH);
            }
            strip_hop_by_hop(head.headers_mut());
            let conn = if body.is_end() {
                self.put_plain(conn, &body);
                None
            } else {
                Some((conn, self.clone()))
            };
            return Ok(head.map(|()| PooledBody::Plain { body, conn }));
        }
    }

    fn checkout_plain(&self) -> Option<h1::Conn> {
        let mut idle = of_worker(&self.plain);
        while let Some(idle) = idle.pop() {
            if idle.since.elapsed() < self.config.idle_timeout && idle.conn.is_usable() {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Keeps `conn`, whose last response `body` was read to its end, if both
    /// sides allow it.
    fn put_plain(&self, mut conn: h1::Conn, body: &h1::Decoder) {
        if !body.keeps_alive() || !conn.idle() {
            return;
        }
        let mut idle = of_worker(&self.plain);
        if idle.len() < self.config.max_idle {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Sends `req` on a pooled or new connection of hyper's (a TLS endpoint that
    /// chose HTTP/1.1) and waits for the response head, whose hop-by-hop headers it
    /// removes.
    pub(crate) async fn send(
        self: Arc<Self>,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, ForwardError> {
        loop {
            let (mut tx, fresh) = match self.checkout() {
                Some(tx) => (tx, false),
                None => (self.connect().await?, true),
            };
            if tx.ready().await.is_err() {
                if fresh {
                    return Err(ForwardError::Reset);
                }
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(mut rsp) => {
                    strip_hop_by_hop(rsp.headers_mut());
                    let conn = if rsp.body().is_end_stream() {
                        self.put(tx);
                        None
                    } else {
                        Some((tx, self.clone()))
                    };
                    return Ok(rsp.map(|inner| PooledBody::Hyper { inner, conn }));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the connection had closed. Safe to resend.
                    Some(r) if !fresh => req = r,
                    _ => return Err(classify(&e.into_error())),
                },
            }
        }
    }

    fn checkout(&self) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut idle = of_worker(&self.idle);
        while let Some(idle) = idle.pop() {
            if !idle.conn.is_closed() && idle.since.elapsed() < self.config.idle_timeout {
                return Some(idle.conn);
            }
        }
        None
    }

    pub(crate) fn put(&self, tx: http1::SendRequest<UpstreamBody>) {
        if tx.is_closed() {
            return;
        }
        let mut idle = of_worker(&self.idle);
        if idle.len() < self.config.max_idle {
            idle.push(Idle {
                conn: tx,
                since: Instant::now(),
            });
        }
    }

    /// Sends an `Upgrade` request on a connection of its own (an upgraded connection
    /// is never pooled) and waits for the response head. On a `101` the response
    /// carries the upstream side of the upgraded connection ([`hyper::upgrade::on`]).
    pub(crate) async fn send_upgrade(
        self: Arc<Self>,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let mut tx = self.connect().await?;
        tx.send_request(req).await.map_err(|e| classify(&e))
    }

    /// A new HTTP/1.1 connection (over TLS if the app's upstreams speak it).
    async fn connect(&self) -> Result<http1::SendRequest<UpstreamBody>, ForwardError> {
        let stream = self.dial().await?;
        let timeout = self.config.connect_timeout;
        match upstream::establish(
            &self.config.protocol,
            stream,
            &self.authority,
            false,
            timeout,
        )
        .await?
        {
            Dialled::Http1(tx) => Ok(tx),
            // Not asked for: `allow_h2` was false.
            Dialled::H2(_) => Err(ForwardError::Connect),
        }
    }

    /// A new TCP connection to the endpoint, within the connect timeout.
    pub(crate) async fn dial(&self) -> Result<TcpStream, ForwardError> {
        let dial = async {
            let mut last = None;
            for addr in tokio::net::lookup_host(self.authority.as_str()).await? {
                match TcpStream::connect(addr).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| io::Error::other("the name resolved to no address")))
        };
        let stream = match tokio::time::timeout(self.config.connect_timeout, dial).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(endpoint = %self.authority, error = %e, "connect failed");
                return Err(ForwardError::Connect);
            }
            Err(_) => {
                tracing::debug!(endpoint = %self.authority, "connect timed out");
                return Err(ForwardError::Connect);
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// Whose fault a failed exchange was: the client's when its body broke, otherwise
/// the upstream connection's.
pub(crate) fn classify(e: &hyper::Error) -> ForwardError {
    let mut cause: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(c) = cause {
        if let Some(body) = c.downcast_ref::<ClientBodyError>() {
            return match body {
                ClientBodyError::TooLarge { .. } => ForwardError::BodyTooLarge,
                ClientBodyError::Read(_) => ForwardError::ClientAborted,
            };
        }
        cause = c.source();
    }
    tracing::debug!(error = %e, "upstream exchange failed");
    ForwardError::Reset
}

pin_project! {
    /// An upstream response body that hands its connection back to the pool once
    /// read to the end. Dropped earlier, the connection is closed instead (its
    /// remaining bytes would have to be drained first).
    #[project = PooledBodyProj]
    #[derive(Debug)]
    pub(crate) enum PooledBody {
        /// Read by the proxy's own client side.
        Plain {
            body: h1::Decoder,
            // Until the body's end: the connection it is read from, and its pool.
            conn: Option<(h1::Conn, Arc<EndpointPool>)>,
        },
        /// Read by hyper's.
        Hyper {
            #[pin]
            inner: Incoming,
            conn: Option<(http1::SendRequest<UpstreamBody>, Arc<EndpointPool>)>,
        },
    }
}

impl PooledBody {
    /// A body whose connection is not to be reused.
    pub(crate) fn unpooled(inner: Incoming) -> Self {
        Self::Hyper { inner, conn: None }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            PooledBodyProj::Plain { body, conn } => {
                let Some((c, _)) = conn.as_mut() else {
                    return Poll::Ready(None);
                };
                let frame = std::task::ready!(body.poll_frame(c, cx));
                match &frame {
                    Some(Err(_)) => *conn = None,
                    _ if body.is_end() => {
                        if let Some((c, pool)) = conn.take() {
                            pool.put_plain(c, body);
                        }
                    }
                    _ => {}
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            PooledBodyProj::Hyper { mut inner, conn } => {
                let frame = std::task::ready!(inner.as_mut().poll_frame(cx));
                let done = match &frame {
                    None => true,
                    Some(Ok(_)) => inner.is_end_stream(),
                    Some(Err(_)) => {
                        conn.take();
                        false
                    }
                };
                if done && let Some((tx, pool)) = conn.take() {
                    pool.put(tx);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PooledBody::Plain { body, .. } => body.is_end(),
            PooledBody::Hyper { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PooledBody::Plain { body, .. } => body.size_hint(),
            PooledBody::Hyper { inner, .. } => inner.size_hint(),
        }
    }
}
