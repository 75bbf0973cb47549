//! Per-client rate limiting of the API: one token bucket per client, refilled at
//! `limits.ratePerSecond` up to `limits.rateBurst`.
//!
//! A client is the name of the token a request carries (a bearer token or a web UI
//! session), or, when it carries no valid one, its source address (for IPv6 the
//! /64, which one host usually owns whole). Requests over the limit are answered
//! 429 with `Retry-After` and counted in `fledge_api_rate_limited_total`.
//!
//! The table of buckets is bounded ([`MAX_CLIENTS`]): a bucket that has refilled
//! completely says nothing a fresh one would not, so it is dropped first; if a
//! flood of addresses still fills the table, the clients seen least recently go.
//! `/healthz` and `/readyz` are exempt: load balancers and orchestrators probe them
//! often, from one address, and must never be told to back off.
//!
//! [`RateLimiter`] takes the time as an argument, so its tests need no clock.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::Shared;
use super::error::ApiError;
use super::tls::PreparedListener;
use crate::config::LimitsConfig;

/// Most clients whose buckets are kept at once.
pub const MAX_CLIENTS: usize = 10_000;

/// Who a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The name of a valid token (or of a signed-in UI session's token).
    Token(String),
    /// A source address without a valid token (IPv6 cut to its /64).
    Addr(IpAddr),
}

// === impl ClientKey ===

impl ClientKey {
    /// The key of an unauthenticated client at `ip`.
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let net = u128::from(v6) & !((1u128 << 64) - 1);
                ClientKey::Addr(IpAddr::V6(Ipv6Addr::from(net)))
            }
            v4 => ClientKey::Addr(v4),
        }
    }

    /// The kind of key, a bounded metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientKey::Token(_) => "token",
            ClientKey::Addr(_) => "address",
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::Token(name) => write!(f, "token `{name}`"),
            ClientKey::Addr(IpAddr::V6(net)) => write!(f, "address {net}/64"),
            ClientKey::Addr(ip) => write!(f, "address {ip}"),
        }
    }
}

/// One client's bucket: `tokens` as of `updated`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The buckets of every recent client.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_clients: usize,
    buckets: Mutex<HashMap<ClientKey, Bucket>>,
}

// === impl RateLimiter ===

impl RateLimiter {
    /// The limiter `limits` asks for; `None` when rate limiting is off.
    pub fn from_limits(limits: &LimitsConfig) -> Option<Self> {
        (limits.rate_per_second > 0 && limits.rate_burst > 0)
            .then(|| Self::new(limits.rate_per_second, limits.rate_burst, MAX_CLIENTS))
    }

    /// `rate_per_second` requests a second sustained, `burst` at once, for at most
    /// `max_clients` clients at a time. Both rates must be at least 1.
    pub fn new(rate_per_second: u32, burst: u32, max_clients: usize) -> Self {
        Self {
            rate: f64::from(rate_per_second.max(1)),
            burst: f64::from(burst.max(1)),
            max_clients: max_clients.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `client`'s bucket at `now`; when it is empty, says how
    /// long until the next request would be allowed.
    pub fn check(&self, client: &ClientKey, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(client) && buckets.len() >= self.max_clients {
            self.make_room(&mut buckets, now);
        }
        let bucket = buckets.entry(client.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }

    /// How many clients have a bucket.
    pub fn clients(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        // A clock read before an earlier one (another thread's) adds nothing.
        if now > bucket.updated {
            let elapsed = (now - bucket.updated).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
            bucket.updated = now;
        }
    }

    /// Frees at least one slot: drops every full bucket (a fresh one is the same),
    /// and if that frees less than an eighth of the table, the eighth seen least
    /// recently, so that a flood of new clients pays for a sweep only now and then.
    fn make_room(&self, buckets: &mut HashMap<ClientKey, Bucket>, now: Instant) {
        let full_after = Duration::from_secs_f64(self.burst / self.rate);
        buckets.retain(|_, b| now.saturating_duration_since(b.updated) < full_after);
        let target = self.max_clients - self.max_clients.div_ceil(8);
        if buckets.len() > target {
            let mut seen: Vec<Instant> = buckets.values().map(|b| b.updated).collect();
            let cut = buckets.len() - target;
            let (_, nth, _) = seen.select_nth_unstable(cut - 1);
            let oldest_kept = *nth;
            buckets.retain(|_, b| b.updated > oldest_kept);
        }
    }
}

/// The source address of an API connection, as the rate limiter reads it
/// (`axum::serve(…, router.into_make_service_with_connect_info::<PeerAddr>())`),
/// for plain and TLS listeners alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl<Io> Connected<IncomingStream<'_, PreparedListener<Io>>> for PeerAddr
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    fn connect_info(stream: IncomingStream<'_, PreparedListener<Io>>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// Middleware: counts the request against its client's bucket, or answers 429.
pub async fn limit(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let Some(limiter) = shared.rate_limiter.as_ref() else {
        return next.run(request).await;
    };
    if matches!(request.uri().path(), "/healthz" | "/readyz") {
        return next.run(request).await;
    }
    let client = match shared.auth.identify(request.headers()) {
        Some(name) => ClientKey::Token(name),
        None => {
            let ip = request
                .extensions()
                .get::<ConnectInfo<PeerAddr>>()
                .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.0.ip());
            ClientKey::from_ip(ip)
        }
    };
    match limiter.check(&client, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            shared.metrics.count_rate_limited(client.kind());
            tracing::debug!(%client, path = %request.uri().path(), "API request over the rate limit");
            too_many_requests(&client, &shared.config.limits, wait)
        }
    }
}

/// The 429 answer, with `Retry-After` in whole seconds (at least 1).
fn too_many_requests(client: &ClientKey, limits: &LimitsConfig, wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "too many requests from {client}: the limit is {} a second, bursts of {} \
             (limits.ratePerSecond, limits.rateBurst); retry in {secs}s",
            limits.rate_per_second, limits.rate_burst
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that `limiter` lets `key` make `n` requests at `now`.
    fn assert_allows(limiter: &RateLimiter, key: &ClientKey, n: usize, now: Instant) {
        for i in 0..n {
            assert!(
                limiter.check(key, now).is_ok(),
                "request {i} of {n} refused"
            );
        }
    }

    fn ip(text: &str) -> ClientKey {
        ClientKey::from_ip(text.parse().unwrap())
    }

    #[test]
    fn a_burst_is_allowed_then_the_sustained_rate() {
        let limiter = RateLimiter::new(10, 5, 100);
        let t0 = Instant::now();
        let alice = ClientKey::Token("alice".into());
        assert_allows(&limiter, &alice, 5, t0);
        let wait = limiter.check(&alice, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // 100 ms later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert!(limiter.check(&alice, t1).is_ok());
        assert!(limiter.check(&alice, t1).is_err());
        // After a long pause the bucket holds the burst again, not more.
        let t2 = t1 + Duration::from_secs(60);
        assert_allows(&limiter, &alice, 5, t2);
        assert!(limiter.check(&alice, t2).is_err());
    }

    #[test]
    fn refusals_do_not_use_up_tokens() {
        let limiter = RateLimiter::new(1, 1, 100);
        let t0 = Instant::now();
        let c = ip("192.0.2.1");
        assert!(limiter.check(&c, t0).is_ok());
        for ms in [0, 200, 400, 600, 800] {
            assert!(limiter.check(&c, t0 + Duration::from_millis(ms)).is_err());
        }
        let wait = limiter
            .check(&c, t0 + Duration::from_millis(900))
            .unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(limiter.check(&c, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn clients_have_their_own_buckets() {
        let limiter = RateLimiter::new(1, 2, 100);
        let t0 = Instant::now();
        let (a, b) = (ip("192.0.2.1"), ClientKey::Token("ci".into()));
        assert!(limiter.check(&a, t0).is_ok());
        assert!(limiter.check(&a, t0).is_ok());
        assert!(limiter.check(&a, t0).is_err());
        assert!(limiter.check(&b, t0).is_ok());
        assert!(limiter.check(&b, t0).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(ip("2001:db8::1"), ip("2001:db8::ffff:1"));
        assert_ne!(ip("2001:db8::1"), ip("2001:db8:0:1::1"));
        // An IPv4-mapped address is the IPv4 client.
        assert_eq!(ip("::ffff:192.0.2.1"), ip("192.0.2.1"));
        assert_eq!(ip("2001:db8::1").to_string(), "address 2001:db8::/64");
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_addresses() {
        let limiter = RateLimiter::new(1, 10, 64);
        let t0 = Instant::now();
        let victim = ClientKey::Token("ops".into());
        assert_allows(&limiter, &victim, 10, t0);
        for i in 0..10_000u32 {
            let t = t0 + Duration::from_micros(u64::from(i));
            let _ = limiter.check(&ClientKey::Addr(IpAddr::from(i.to_be_bytes())), t);
            assert!(limiter.clients() <= 64, "{} clients", limiter.clients());
        }
    }

    #[test]
    fn full_buckets_are_dropped_before_recent_ones() {
        let limiter = RateLimiter::new(1, 2, 4);
        let t0 = Instant::now();
        let busy = ClientKey::Token("busy".into());
        // Three clients come once and go; `busy` empties its bucket later.
        for i in 0..3u8 {
            limiter
                .check(&ClientKey::Addr(IpAddr::from([192, 0, 2, i])), t0)
                .unwrap();
        }
        let t1 = t0 + Duration::from_secs(5);
        limiter.check(&busy, t1).unwrap();
        limiter.check(&busy, t1).unwrap();
        // A fifth client needs room: the full (idle) buckets go, `busy`'s stays,
        // still empty.
        limiter.check(&ip("198.51.100.1"), t1).unwrap();
        assert_eq!(limiter.clients(), 2);
        assert!(limiter.check(&busy, t1).is_err());
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        let limits = LimitsConfig::default();
        let client = ip("192.0.2.9");
        for (wait, expected) in [(20, "1"), (1000, "1"), (1001, "2")] {
            let r = too_many_requests(&client, &limits, Duration::from_millis(wait));
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(r.headers()[header::RETRY_AFTER], expected);
        }
    }

    /// Through the served API, with tokio's clock held: a client refused with
    /// `Retry-After: N` is served once N seconds have passed, and not before.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_waits_as_told_is_served_again() {
        use axum::body::Body;
        use tower::ServiceExt as _;

        let config = crate::config::ServerConfig::parse(
            "listen: 127.0.0.1:0\nstore: unused\nlimits:\n  ratePerSecond: 1\n  rateBurst: 2\n",
            "limits.yaml",
        )
        .unwrap();
        let (_stop, stopping) = tokio::sync::watch::channel(false);
        let (shared, _hooks) = Shared::new(
            config,
            crate::testing::TestStore::in_memory().await,
            crate::clock::Clock::default(),
            crate::Authenticator::new(&[], None).unwrap(),
            None,
            stopping,
        );
        let api = crate::api::served_router(shared);
        let get = || async {
            let request = Request::get("/apps").body(Body::empty()).unwrap();
            api.clone().oneshot(request).await.unwrap()
        };
        for _ in 0..2 {
            assert_eq!(get().await.status(), StatusCode::OK);
        }
        let refused = get().await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = refused.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(retry_after, 1);

        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(get().await.status(), StatusCode::TOO_MANY_REQUESTS);
        tokio::time::advance(Duration::from_secs(retry_after)).await;
        assert_eq!(get().await.status(), StatusCode::OK);
    }
}
