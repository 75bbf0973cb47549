//! The innermost service: rewrites a routed request for its upstream and sends it
//! over a pooled keep-alive connection, under the response-header timeout.
//!
//! The timeout's timer is kept per client connection and re-armed for each request
//! instead of made anew: re-arming a registered tokio timer to a later deadline is
//! one atomic store, where a fresh one is a timer-wheel insertion and removal (each
//! under the driver's lock) per request.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use http::header::{self, Entry, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{HeaderMap, Request, Response, Version};

use crate::body::{RequestBody, UpstreamBody};
use crate::config::Timeouts;
use crate::pool::{PooledBody, SendFuture};
use crate::split::Routed;
use crate::stats::ErrorKind;
use crate::upgrade::{self, ClientUpgrade};

/// Why forwarding failed, and so whose fault it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForwardError {
    /// Could not connect to the endpoint (upstream's fault).
    Connect,
    /// The TLS handshake with the endpoint failed: most often a certificate the
    /// configured authorities do not vouch for, or one for another name (counted
    /// as a connect failure of the upstream).
    Tls,
    /// The upstream connection failed after the request was sent (upstream's fault).
    Reset,
    /// No response headers in time (upstream's fault).
    Timeout,
    /// The client's body went past the size limit (client's fault).
    BodyTooLarge,
    /// The client's body broke off (client's fault).
    ClientAborted,
}

impl ForwardError {
    /// The version's error this failure counts as; `None` for the client's fault.
    pub(crate) fn kind(self) -> Option<ErrorKind> {
        match self {
            ForwardError::Connect | ForwardError::Tls => Some(ErrorKind::Connect),
            ForwardError::Reset => Some(ErrorKind::Reset),
            ForwardError::Timeout => Some(ErrorKind::Timeout),
            ForwardError::BodyTooLarge | ForwardError::ClientAborted => None,
        }
    }
}

/// Forwards routed requests to one endpoint of their arm.
#[derive(Debug, Clone)]
pub(crate) struct Forward {
    timeout: Duration,
    /// How long a tunnel of an upgraded connection may stay idle.
    upgraded_idle: Duration,
    conn: Arc<ConnState>,
}

/// What one client connection's requests share.
#[derive(Debug)]
struct ConnState {
    peer: ClientInfo,
    /// A response-header timer to re-arm; empty while a request uses it (an h2
    /// client's concurrent streams beyond the first make their own).
    timer: Mutex<Option<Pin<Box<Sleep>>>>,
}

/// What the forwarding headers say about one client connection, formatted once per
/// connection rather than once per request.
#[derive(Debug)]
pub(crate) struct ClientInfo {
    /// The client's address as an `X-Forwarded-For` element.
    xff: HeaderValue,
    /// The scheme the client used, for `X-Forwarded-Proto`.
    proto: HeaderValue,
    /// The `for=...;proto=...` part of a `Forwarded` element.
    forwarded: String,
    /// The last `Forwarded` element made, by the Host it names: a connection's
    /// requests nearly always name the same Host, so it is formatted once.
    last_forwarded: Mutex<Option<(Option<HeaderValue>, HeaderValue)>>,
}

// === impl ClientInfo ===

impl ClientInfo {
    /// The forwarding headers of a client at `client_ip`, connected over TLS or not.
    pub(crate) fn new(client_ip: IpAddr, tls: bool) -> Self {
        let ip = client_ip.to_canonical();
        let text = ip.to_string();
        // RFC 7239: an IPv6 node is bracketed and quoted.
        let node = match ip {
            IpAddr::V4(_) => text.clone(),
            IpAddr::V6(_) => format!("\"[{text}]\""),
        };
        let proto = if tls { "https" } else { "http" };
        Self {
            xff: HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("unknown")),
            proto: HeaderValue::from_static(proto),
            forwarded: format!("for={node};proto={proto}"),
            last_forwarded: Mutex::new(None),
        }
    }
}

// === impl Forward ===

impl Forward {
    pub(crate) fn new(timeouts: &Timeouts, client_addr: SocketAddr, tls: bool) -> Self {
        Self {
            timeout: timeouts.response_headers,
            upgraded_idle: timeouts.upgraded_idle,
            conn: Arc::new(ConnState {
                peer: ClientInfo::new(client_addr.ip(), tls),
                timer: Mutex::new(None),
            }),
        }
    }

    /// A timer armed for `now + timeout`: the connection's, or a new one.
    fn arm_timer(&self) -> Pin<Box<Sleep>> {
        let deadline = Instant::now() + self.timeout;
        let spare = self
            .conn
            .timer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match spare {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

/// The upstream exchange, boxed (its state machine is large, and one allocation is
/// cheaper than moving it through every layer's future), raced against the
/// response-header timer, which goes back to the connection when done.
pub(crate) struct ForwardFuture {
    send: SendFuture,
    timer: Option<Pin<Box<Sleep>>>,
    conn: Arc<ConnState>,
}

// === impl ForwardFuture ===

impl Future for ForwardFuture {
    type Output = Result<Response<PooledBody>, ForwardError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The exchange first: an answer that is ready wins over a timer that is too.
        // (Each exchange strips the response's hop-by-hop headers itself: a 101
        // keeps its `Upgrade` and `Connection`.)
        if let Poll::Ready(result) = self.send.as_mut().poll(cx) {
            self.release_timer();
            return Poll::Ready(result);
        }
        let fired = self
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if fired {
            // Not worth keeping: re-arming a fired timer costs a registration.
            self.timer = None;
            return Poll::Ready(Err(ForwardError::Timeout));
        }
        Poll::Pending
    }
}

impl ForwardFuture {
    fn release_timer(&mut self) {
        if let Some(timer) = self.timer.take() {
            let mut slot = self
                .conn
                .timer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(timer);
            }
        }
    }
}

impl Drop for ForwardFuture {
    fn drop(&mut self) {
        self.release_timer();
    }
}

impl std::fmt::Debug for ForwardFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardFuture").finish_non_exhaustive()
    }
}

impl tower::Service<Routed<RequestBody>> for Forward {
    type Response = Response<PooledBody>;
    type Error = ForwardError;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ForwardError>> {
        // Pools dial on demand; there is no readiness to wait for.
        Poll::Ready(Ok(()))
    }

    fn call(
        &mut self,
        Routed {
            arm,
            mut req,
            mirror,
        }: Routed<RequestBody>,
    ) -> ForwardFuture {
        let pool = arm.next_endpoint().clone();
        let send: SendFuture = if upgrade::wanted(&req) {
            let client = ClientUpgrade::take(&mut req);
            let req = rewrite_request(req, &pool.authority, &self.conn.peer);
            Box::pin(client.forward(pool, req, arm.stats.clone(), self.upgraded_idle))
        } else {
            let req =
                rewrite_request(req, &pool.authority, &self.conn.peer).map(UpstreamBody::client);
            let req = match mirror {
                Some(mirror) => mirror.copy(req),
                None => req,
            };
            pool.dispatch(req)
        };
        ForwardFuture {
            timer: Some(self.arm_timer()),
            send,
            conn: self.conn.clone(),
        }
    }
}

/// Turns a client's request into the request sent to `endpoint`: origin-form URI
/// (the request line carries only path and query, as RFC 9112 asks of a request to
/// an origin server), HTTP/1.1, Host preserved (taken from an h2 `:authority`, or
/// the endpoint when the client sent neither), hop-by-hop headers removed, and the
/// client recorded in `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded`.
pub(crate) fn rewrite_request<B>(
    req: Request<B>,
    endpoint: &Authority,
    client: &ClientInfo,
) -> Request<B> {
    let (mut parts, body) = req.into_parts();
    // One pass of name comparisons finds what the steps below depend on. A request
    // nearly always carries a Host and none of the others, and looking each of
    // them up by its hash would cost more than the pass.
    let mut sent_host = None;
    let (mut hop_by_hop, mut has_xff, mut has_xfp) = (false, false, false);
    for (name, value) in &parts.headers {
        if name == header::HOST {
            if sent_host.is_none() {
                sent_host = Some(value.clone());
            }
        } else if name == X_FORWARDED_FOR {
            has_xff = true;
        } else if name == X_FORWARDED_PROTO {
            has_xfp = true;
        } else if is_hop_by_hop(name) {
            hop_by_hop = true;
        }
    }
    let host = sent_host.clone().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let stripped = hop_by_hop && strip_hop_by_hop(&mut parts.headers);
    if stripped {
        // `Connection` may have named any of them.
        has_xff = parts.headers.contains_key(X_FORWARDED_FOR);
        has_xfp = parts.headers.contains_key(X_FORWARDED_PROTO);
    }
    // The client's Host header is already in place unless a `Connection` header
    // named it and it was just stripped.
    if sent_host.is_none() || stripped {
        let upstream_host = host
            .clone()
            .or_else(|| HeaderValue::from_str(endpoint.as_str()).ok());
        if let Some(h) = upstream_host {
            parts.headers.insert(header::HOST, h);
        }
    }
    add_forwarded(&mut parts.headers, client, host, has_xff, has_xfp);

    // Only rebuild the URI when the client sent an absolute form (h2, or an h1
    // request line with a scheme): the common origin-form URI is reused as is.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(pq);
    }
    parts.version = Version::HTTP_11;
    Request::from_parts(parts, body)
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Adds this hop's forwarding fields. `has_xff` and `has_xfp` say whether the
/// request already has `X-Forwarded-For` and `X-Forwarded-Proto`: where it has
/// not, the field is appended, which looks its name up once instead of twice.
fn add_forwarded(
    headers: &mut HeaderMap,
    client: &ClientInfo,
    host: Option<HeaderValue>,
    has_xff: bool,
    has_xfp: bool,
) {
    // X-Forwarded-For: the existing chain, then this hop's client.
    if !has_xff {
        headers.append(X_FORWARDED_FOR, client.xff.clone());
    } else if let Entry::Occupied(mut chain) = headers.entry(X_FORWARDED_FOR) {
        let mut xff = String::new();
        for v in chain.iter() {
            if let Ok(v) = v.to_str() {
                xff.push_str(v);
                xff.push_str(", ");
            }
        }
        xff.push_str(client.xff.to_str().unwrap_or("unknown"));
        if let Ok(v) = HeaderValue::try_from(xff) {
            chain.insert(v);
        }
    }
    // The scheme this hop served: HTTPS on a TLS listener, else plain HTTP.
    if has_xfp {
        headers.insert(X_FORWARDED_PROTO, client.proto.clone());
    } else {
        headers.append(X_FORWARDED_PROTO, client.proto.clone());
    }
    let mut last = client
        .last_forwarded
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some((for_host, fwd)) = last.as_ref()
        && *for_host == host
    {
        headers.append(header::FORWARDED, fwd.clone());
        return;
    }
    let mut fwd = String::with_capacity(client.forwarded.len() + 48);
    fwd.push_str(&client.forwarded);
    if let Some(h) = host.as_ref().and_then(|h| h.to_str().ok())
        && h.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        fwd.push_str(";host=\"");
        fwd.push_str(h);
        fwd.push('"');
    }
    if let Ok(v) = HeaderValue::try_from(fwd) {
        headers.append(header::FORWARDED, v.clone());
        *last = Some((host, v));
    }
}

/// Removes the headers that describe one connection and must not be forwarded
/// (RFC 9110 §7.6.1): those named in `Connection`, and the fixed hop-by-hop list.
/// Says whether there was any to remove.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // Most messages carry none of them: one pass of cheap name comparisons is
    // faster than hashing each of the names below to remove them.
    if !headers.keys().any(is_hop_by_hop) {
        return false;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        KEEP_ALIVE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        PROXY_CONNECTION,
    ] {
        headers.remove(name);
    }
    if headers.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let rest: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in rest {
            headers.remove(name);
        }
    }
    true
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str().starts_with("proxy-")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `req` rewritten for the endpoint at `endpoint`, as sent by a client at `client`.
    fn rewrite(req: Request<()>, endpoint: &str, client: &str, tls: bool) -> Request<()> {
        let ep: Authority = endpoint.parse().unwrap();
        rewrite_request(req, &ep, &ClientInfo::new(client.parse().unwrap(), tls))
    }

    #[test]
    fn hop_by_hop_headers_are_removed_and_end_to_end_kept() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-foo", "bar"),
            ("x-request-id", "42"),
            ("cookie", "a=1"),
        ] {
            h.append(k, v.parse().unwrap());
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["cookie", "x-request-id"]);
    }

    #[test]
    fn request_is_rewritten_for_the_endpoint() {
        let req = Request::builder()
            .uri("/path?q=1")
            .header("host", "shop.example:8000")
            .header("x-forwarded-for", "203.0.113.7")
            .header("connection", "close")
            .body(())
            .unwrap();
        let out = rewrite(req, "127.0.0.1:9001", "192.0.2.1", false);
        assert_eq!(out.uri().to_string(), "/path?q=1");
        assert_eq!(out.headers()["host"], "shop.example:8000");
        assert_eq!(out.headers()["x-forwarded-for"], "203.0.113.7, 192.0.2.1");
        assert_eq!(out.headers()["x-forwarded-proto"], "http");
        assert_eq!(
            out.headers()["forwarded"],
            "for=192.0.2.1;proto=http;host=\"shop.example:8000\""
        );
        assert!(!out.headers().contains_key("connection"));
        assert_eq!(out.version(), Version::HTTP_11);
    }

    #[test]
    fn the_forwarded_element_follows_each_requests_host() {
        let client = ClientInfo::new("192.0.2.1".parse().unwrap(), false);
        let ep: Authority = "127.0.0.1:9001".parse().unwrap();
        let req = |host: &str| {
            Request::builder()
                .uri("/")
                .header("host", host)
                .body(())
                .unwrap()
        };
        for host in ["a.example", "a.example", "b.example", "a.example"] {
            let out = rewrite_request(req(host), &ep, &client);
            assert_eq!(
                out.headers()["forwarded"],
                format!("for=192.0.2.1;proto=http;host=\"{host}\"").as_str()
            );
            assert_eq!(out.headers()["host"], host);
        }
        // A Host the client itself marked hop-by-hop is still sent.
        let named = Request::builder()
            .uri("/")
            .header("host", "c.example")
            .header("connection", "host")
            .body(())
            .unwrap();
        let out = rewrite_request(named, &ep, &client);
        assert_eq!(out.headers()["host"], "c.example");
        // Forwarding fields the client marked hop-by-hop are dropped, and this
        // hop's own put in their place.
        let named = Request::builder()
            .uri("/")
            .header("host", "c.example")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .header("connection", "x-forwarded-for, x-forwarded-proto")
            .body(())
            .unwrap();
        let out = rewrite_request(named, &ep, &client);
        let all = |name: &str| -> Vec<_> { out.headers().get_all(name).iter().collect() };
        assert_eq!(all("x-forwarded-for"), ["192.0.2.1"]);
        assert_eq!(all("x-forwarded-proto"), ["http"]);
    }

    #[test]
    fn h2_authority_becomes_the_host_header() {
        let req = Request::builder()
            .version(Version::HTTP_2)
            .uri("http://shop.example/a")
            .body(())
            .unwrap();
        let out = rewrite(req, "[::1]:9001", "::ffff:10.0.0.1", false);
        assert_eq!(out.headers()["host"], "shop.example");
        assert_eq!(out.uri().to_string(), "/a");
        assert_eq!(out.headers()["x-forwarded-for"], "10.0.0.1");
        let v6 = rewrite(Request::new(()), "[::1]:9001", "2001:db8::1", false);
        assert_eq!(
            v6.headers()["forwarded"],
            "for=\"[2001:db8::1]\";proto=http"
        );
        // No Host and no authority from the client: the endpoint's.
        assert_eq!(v6.headers()["host"], "[::1]:9001");
    }

    #[test]
    fn a_tls_client_is_forwarded_as_https() {
        let req = Request::builder()
            .header("host", "shop.example")
            .header("x-forwarded-proto", "http")
            .body(())
            .unwrap();
        let out = rewrite(req, "127.0.0.1:9001", "192.0.2.1", true);
        // A client's own claim is replaced by what this hop saw.
        assert_eq!(out.headers()["x-forwarded-proto"], "https");
        assert_eq!(
            out.headers()["forwarded"],
            "for=192.0.2.1;proto=https;host=\"shop.example\""
        );
    }
}
