//! HTTP/2 to upstreams: one multiplexed connection per endpoint and worker thread,
//! shared by every request that worker sends there.
//!
//! A request takes the worker's live connection, or dials one; concurrent requests
//! that find none wait for the one dial instead of each opening their own, and when
//! that dial fails they all fail at once (a 502) rather than dialling again in
//! turn. A connection the upstream closed (GOAWAY, an error, a failed keep-alive
//! ping) is noticed by the next request, which dials a new one. A request is sent
//! again, on a new connection, when the closing connection could not even start
//! sending it, or when it has no body and the upstream refused its stream
//! unprocessed (a graceful GOAWAY that does not cover it, as nginx sends after
//! `keepalive_requests`, or `REFUSED_STREAM`; RFC 9113 §8.7): up to five times.
//! Any other request that was sent is never resent.
//!
//! Over TLS the endpoint chooses by ALPN: when it picks `http/1.1` the endpoint is
//! served by the HTTP/1.1 pool (`pool`) from then on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{HeaderMap, Method, Request, Response, Version};
use http_body::Body as _;
use http_body_util::{Either, Empty};
use hyper::client::conn::http2;
use tokio::time::Instant;

use crate::body::UpstreamBody;
use crate::forward::{ForwardError, strip_hop_by_hop};
use crate::pool::{EndpointPool, PooledBody, classify, worker_index};
use crate::upstream::{self, Dialled, H2Body};

/// The shared HTTP/2 connections of one endpoint: one slot per worker thread.
#[derive(Debug)]
pub(crate) struct Multiplexed {
    slots: Box<[Slot]>,
    /// Over TLS, the endpoint chose HTTP/1.1: send through the HTTP/1.1 pool.
    http1: AtomicBool,
}

#[derive(Debug, Default)]
struct Slot {
    state: Mutex<State>,
    /// Held while dialling, so that one dial serves every waiting request.
    dialling: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// The live connection and its generation.
    conn: Option<(http2::SendRequest<H2Body>, u64)>,
    generation: u64,
    /// When the last dial failed, and how.
    failed: Option<(Instant, ForwardError)>,
}

/// How many times one request is sent again after its connection refused it
/// unprocessed (each time on a new connection).
const MAX_RESENDS: usize = 5;

/// What a request is sent on.
enum Conn {
    H2(http2::SendRequest<H2Body>, u64),
    /// The endpoint speaks HTTP/1.1; the new connection is in the pool.
    Http1,
}

// === impl Multiplexed ===

impl Multiplexed {
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            slots: (0..workers.max(1)).map(|_| Slot::default()).collect(),
            http1: AtomicBool::new(false),
        }
    }

    fn slot(&self) -> &Slot {
        &self.slots[worker_index() % self.slots.len()]
    }
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live connection, if there is one.
    fn live(&self) -> Option<Conn> {
        let mut state = self.state();
        match &state.conn {
            Some((tx, generation)) if !tx.is_closed() => Some(Conn::H2(tx.clone(), *generation)),
            Some(_) => {
                state.conn = None;
                None
            }
            None => None,
        }
    }

    /// Drops connection `generation` if it is still the slot's.
    fn forget(&self, generation: u64) {
        let mut state = self.state();
        if state.conn.as_ref().is_some_and(|(_, g)| *g == generation) {
            state.conn = None;
        }
    }
}

// === impl EndpointPool ===

impl EndpointPool {
    /// Sends `req` (an HTTP/1.1 request as `rewrite_request` made it) on the
    /// worker's shared HTTP/2 connection, or through the HTTP/1.1 pool if the
    /// endpoint chose HTTP/1.1, and waits for the response head.
    pub(crate) async fn send_multiplexed(
        self: Arc<Self>,
        req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, ForwardError> {
        let started = Instant::now();
        // A request without a body goes with an empty one, its head kept: should the
        // upstream refuse its stream unprocessed, it is sent again. (The client's
        // empty body is kept for the HTTP/1.1 pool, should it come to that.)
        let (parts, body) = req.into_parts();
        let (mut next, mut spare, head) = if body.is_end_stream() {
            let head = Head::of(&parts);
            let req = Request::from_parts(parts, Either::Right(Empty::new()));
            (req, Some(body), Some(head))
        } else {
            (Request::from_parts(parts, Either::Left(body)), None, None)
        };
        let mut resends = 0;
        loop {
            let conn = if self.mux.http1.load(Ordering::Relaxed) {
                Conn::Http1
            } else {
                self.shared_conn(started).await?
            };
            let (mut tx, generation) = match conn {
                Conn::H2(tx, generation) => (tx, generation),
                Conn::Http1 => return self.send(for_http1(next, &mut spare)?).await,
            };
            let h2 = into_h2(next, &self.config.protocol.scheme(), &self.authority);
            let mut e = match tx.try_send_request(h2).await {
                Ok(mut rsp) => {
                    strip_hop_by_hop(rsp.headers_mut());
                    // The client side answers in its own version.
                    *rsp.version_mut() = Version::HTTP_11;
                    return Ok(rsp.map(PooledBody::unpooled));
                }
                Err(e) => e,
            };
            // Never sent (the connection was closing), or refused unprocessed: safe
            // to send again, on a new connection.
            let again = match e.take_message() {
                Some(back) => Some(into_http1(back)),
                None => head
                    .as_ref()
                    .filter(|_| refused_unprocessed(e.error()))
                    .map(Head::request),
            };
            match again {
                Some(req) if resends < MAX_RESENDS => {
                    tracing::debug!(endpoint = %self.authority, "upstream HTTP/2 connection closing; sending again on a new one");
                    self.mux.slot().forget(generation);
                    next = req;
                    resends += 1;
                }
                _ => return Err(classify(&e.into_error())),
            }
        }
    }

    /// The worker's live HTTP/2 connection to the endpoint, dialled if needed. A
    /// request that started waiting before a dial failed gets that dial's error.
    async fn shared_conn(&self, started: Instant) -> Result<Conn, ForwardError> {
        let slot = self.mux.slot();
        if let Some(conn) = slot.live() {
            return Ok(conn);
        }
        let _dialling = slot.dialling.lock().await;
        if let Some(conn) = slot.live() {
            return Ok(conn);
        }
        if let Some((at, e)) = slot.state().failed
            && at >= started
        {
            return Err(e);
        }
        let dialled = match self.dial().await {
            Ok(stream) => {
                upstream::establish(
                    &self.config.protocol,
                    stream,
                    &self.authority,
                    true,
                    self.config.connect_timeout,
                )
                .await
            }
            Err(e) => Err(e),
        };
        let mut state = slot.state();
        match dialled {
            Ok(Dialled::H2(tx)) => {
                state.generation += 1;
                state.conn = Some((tx.clone(), state.generation));
                state.failed = None;
                Ok(Conn::H2(tx, state.generation))
            }
            Ok(Dialled::Http1(tx)) => {
                drop(state);
                tracing::info!(endpoint = %self.authority, "upstream chose HTTP/1.1 by ALPN");
                self.mux.http1.store(true, Ordering::Relaxed);
                self.put(tx);
                Ok(Conn::Http1)
            }
            Err(e) => {
                state.failed = Some((Instant::now(), e));
                Err(e)
            }
        }
    }
}

/// The head of a request without a body, kept to send it again.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Head {
    fn of(parts: &http::request::Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        }
    }

    fn request(&self) -> Request<H2Body> {
        let mut req = Request::new(Either::Right(Empty::new()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Whether the upstream refused the stream without processing it: a graceful
/// GOAWAY that did not cover it, or a `REFUSED_STREAM` reset (RFC 9113 §8.7).
fn refused_unprocessed(e: &hyper::Error) -> bool {
    let Some(h2) = std::error::Error::source(e).and_then(|c| c.downcast_ref::<h2::Error>()) else {
        return false;
    };
    let reason = h2.reason();
    (h2.is_go_away() && h2.is_remote() && reason == Some(h2::Reason::NO_ERROR))
        || (h2.is_reset() && reason == Some(h2::Reason::REFUSED_STREAM))
}

/// The request for the HTTP/1.1 pool: the client's body back in place of the
/// empty one (`spare`).
fn for_http1(
    req: Request<H2Body>,
    spare: &mut Option<UpstreamBody>,
) -> Result<Request<UpstreamBody>, ForwardError> {
    let (parts, body) = into_http1(req).into_parts();
    let body = match body {
        Either::Left(body) => body,
        Either::Right(_) => spare.take().ok_or(ForwardError::Reset)?,
    };
    Ok(Request::from_parts(parts, body))
}

/// The HTTP/2 form of a request `rewrite_request` made: the absolute URI gives
/// `:scheme` and `:authority`, which takes the place of the `Host` header (RFC 9113
/// §8.3.1; some servers, nginx among them, refuse a request carrying both).
fn into_h2<B>(req: Request<B>, scheme: &http::uri::Scheme, endpoint: &Authority) -> Request<B> {
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .headers
        .remove(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        // A Host that is no authority: the endpoint's.
        .unwrap_or_else(|| endpoint.clone());
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme(scheme.clone())
        .authority(authority)
        .path_and_query(pq);
    if let Ok(uri) = uri.build() {
        parts.uri = uri;
    }
    parts.version = Version::HTTP_2;
    Request::from_parts(parts, body)
}

/// Back from [`into_h2`]: the origin-form HTTP/1.1 request with its `Host`.
fn into_http1<B>(req: Request<B>) -> Request<B> {
    let (mut parts, body) = req.into_parts();
    if let Some(host) = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(header::HOST, host);
    }
    if let Some(pq) = parts.uri.path_and_query() {
        parts.uri = Uri::from(pq.clone());
    }
    parts.version = Version::HTTP_11;
    Request::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, host: &str) -> Request<()> {
        Request::builder()
            .uri(uri)
            .header("host", host)
            .body(())
            .unwrap()
    }

    #[test]
    fn the_h2_request_names_scheme_and_authority() {
        let endpoint: Authority = "127.0.0.1:9001".parse().unwrap();
        let req = request("/a?b=1", "shop.example");
        let out = into_h2(req, &http::uri::Scheme::HTTPS, &endpoint);
        assert_eq!(out.uri().to_string(), "https://shop.example/a?b=1");
        assert!(!out.headers().contains_key("host"));
        assert_eq!(out.version(), Version::HTTP_2);
        let back = into_http1(out);
        assert_eq!(back.uri().to_string(), "/a?b=1");
        assert_eq!(back.headers()["host"], "shop.example");
        assert_eq!(back.version(), Version::HTTP_11);

        // A Host that is no authority: the endpoint's.
        let odd = request("/", "a b");
        let out = into_h2(odd, &http::uri::Scheme::HTTP, &endpoint);
        assert_eq!(out.uri().to_string(), "http://127.0.0.1:9001/");
    }
}
