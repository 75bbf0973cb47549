//! Choosing stable or canary for each request, and the [`Split`] service that does it.
//!
//! Order of precedence: with no canary everything goes to stable; otherwise the first
//! match rule that matches wins; otherwise a sticky key (header or cookie) hashed
//! into [0, 100) goes to the canary iff the hash is below the weight; otherwise a
//! fresh uniform draw does the same.
//!
//! The draw is wyrand, a 64-bit generator in a thread-local cell: two multiplies, no
//! lock, no shared cache line, and it passes the usual statistical batteries. It is
//! seeded per thread from the std `RandomState` (OS entropy), so the choice does not
//! depend on anything about the request or its outcome: the judge may treat the two
//! arms as random samples of the same traffic. A counter-based weighted round-robin
//! would be cheaper still but is periodic, which correlates with periodic clients.

use std::cell::Cell;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request, Response};
use pin_project_lite::pin_project;

use crate::mirror::Mirror;
use crate::route::Arm;
use crate::table::{Key, RouteTable, Side};

/// A request with the arm it was routed to, and where to copy it, if anywhere.
#[derive(Debug)]
pub(crate) struct Routed<B> {
    pub(crate) arm: Arc<Side>,
    pub(crate) req: Request<B>,
    pub(crate) mirror: Option<Arc<Mirror>>,
}

/// The outcome of [`choose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    pub(crate) role: Arm,
    /// A fresh sticky id to hand the client in a cookie.
    pub(crate) assign_cookie: Option<String>,
}

/// Decides where a request with `headers` goes under `table`; `rand` supplies
/// uniform 64-bit draws (injected so tests are deterministic).
pub(crate) fn choose(
    table: &RouteTable,
    headers: &HeaderMap,
    mut rand: impl FnMut() -> u64,
) -> Choice {
    let mut assign_cookie = None;
    let sticky_key: Option<String> = match &table.sticky {
        None => None,
        Some(key) => match read_key(key, headers) {
            Some(v) => Some(v.to_owned()),
            None => match key {
                Key::Cookie(_) => {
                    let id = format!("{:016x}{:016x}", rand(), rand());
                    assign_cookie = Some(id.clone());
                    Some(id)
                }
                Key::Header(_) => None,
            },
        },
    };
    if table.canary.is_none() {
        return Choice {
            role: Arm::Stable,
            assign_cookie,
        };
    }
    for rule in &table.rules {
        if read_key(&rule.key, headers) == Some(rule.value.as_str()) {
            return Choice {
                role: rule.target,
                assign_cookie,
            };
        }
    }
    let bucket = match &sticky_key {
        Some(k) => sticky_bucket(k.as_bytes()),
        None => percent(rand()),
    };
    let role = if bucket < table.weight {
        Arm::Canary
    } else {
        Arm::Stable
    };
    Choice {
        role,
        assign_cookie,
    }
}

fn read_key<'h>(key: &Key, headers: &'h HeaderMap) -> Option<&'h str> {
    match key {
        Key::Header(name) => headers.get(name).and_then(|v| v.to_str().ok()),
        Key::Cookie(name) => cookie(headers, name),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// Maps a uniform 64-bit draw onto 0..100 without modulo bias worth the name
/// (Lemire's multiply-shift; the bias is 100 / 2^64).
pub(crate) fn percent(r: u64) -> u8 {
    ((u128::from(r) * 100) >> 64) as u8
}

/// The bucket in [0, 100) of a sticky key: FNV-1a, then the murmur3 finaliser to
/// spread FNV's weak low bits. Fixed constants, so a user keeps their bucket across
/// restarts and replicas; a user is on the canary iff bucket < weight, so raising the
/// weight only ever moves users from stable to canary.
pub(crate) fn sticky_bucket(key: &[u8]) -> u8 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    percent(h)
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(
        std::hash::RandomState::new().hash_one(std::thread::current().id()),
    );
}

/// One uniform 64-bit draw from this thread's wyrand generator.
pub(crate) fn next_u64() -> u64 {
    RNG.with(|state| {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// Routes each request to the stable or canary arm of the current table, and sets
/// the sticky cookie on the response when it assigned one.
#[derive(Debug, Clone)]
pub(crate) struct Split<S> {
    routes: Arc<ArcSwap<RouteTable>>,
    inner: S,
}

// === impl Split ===

impl<S> Split<S> {
    pub(crate) fn new(routes: Arc<ArcSwap<RouteTable>>, inner: S) -> Self {
        Self { routes, inner }
    }
}

impl<S, B, RB> tower::Service<Request<B>> for Split<S>
where
    S: tower::Service<Routed<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = SplitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // One lock-free load per request; the guard is dropped before the upstream
        // call, so a route swap never waits for slow requests.
        let table = self.routes.load();
        let choice = choose(&table, req.headers(), next_u64);
        let arm = table.arm(choice.role).clone();
        // Only requests stable serves are copied: the canary has the others.
        let mirror = match &table.mirror {
            Some(m) if choice.role == Arm::Stable && m.wants(&req, next_u64()) => Some(m.clone()),
            _ => None,
        };
        let set_cookie = match (&choice.assign_cookie, &table.sticky) {
            (Some(id), Some(Key::Cookie(name))) => HeaderValue::try_from(format!(
                "{name}={id}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"
            ))
            .ok(),
            _ => None,
        };
        drop(table);
        SplitFuture {
            inner: self.inner.call(Routed { arm, req, mirror }),
            set_cookie,
        }
    }
}

pin_project! {
    /// Adds the sticky cookie, when one was assigned, to the response.
    #[derive(Debug)]
    pub(crate) struct SplitFuture<F> {
        #[pin]
        inner: F,
        set_cookie: Option<HeaderValue>,
    }
}

impl<F, RB, E> Future for SplitFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut rsp = std::task::ready!(this.inner.poll(cx))?;
        if let Some(v) = this.set_cookie.take() {
            rsp.headers_mut().append(SET_COOKIE, v);
        }
        Poll::Ready(Ok(rsp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{MatchRule, Route, Stickiness, UpstreamGroup};
    use crate::stats::StatsRegistry;

    fn table(weight: u8, sticky: Option<Stickiness>, rules: Vec<MatchRule>) -> RouteTable {
        let route = Route {
            stickiness: sticky,
            match_rules: rules,
            ..Route::split(
                UpstreamGroup::new("v1", vec!["127.0.0.1:1".into()]),
                UpstreamGroup::new("v2", vec!["127.0.0.1:2".into()]),
                weight,
            )
        };
        RouteTable::compile(
            route,
            &StatsRegistry::default(),
            &crate::pool::Pools::for_test(),
            &crate::mirror::MirrorQueue::for_test(),
        )
        .unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn weight_bounds_are_exact() {
        let none = HeaderMap::new();
        for r in [0, 1, u64::MAX / 2, u64::MAX] {
            assert_eq!(
                choose(&table(0, None, vec![]), &none, || r).role,
                Arm::Stable
            );
            assert_eq!(
                choose(&table(100, None, vec![]), &none, || r).role,
                Arm::Canary
            );
        }
    }

    #[test]
    fn draws_split_uniformly() {
        let t = table(20, None, vec![]);
        let n = 100_000u32;
        let canary = (0..n)
            .filter(|_| choose(&t, &HeaderMap::new(), next_u64).role == Arm::Canary)
            .count() as f64;
        let (p, n) = (0.2, f64::from(n));
        let sigma = (n * p * (1.0 - p)).sqrt();
        assert!((canary - n * p).abs() < 4.5 * sigma, "{canary} of {n}");
    }

    #[test]
    fn sticky_users_only_move_towards_the_canary_as_weight_rises() {
        let sticky = Some(Stickiness::Header {
            name: "x-user".into(),
        });
        let tables: Vec<_> = (0..=100)
            .map(|w| table(w, sticky.clone(), vec![]))
            .collect();
        let mut on_canary_at = [0usize; 101];
        for user in 0..2000 {
            let h = headers(&[("x-user", &format!("user-{user}"))]);
            let mut was_canary = false;
            for (w, t) in tables.iter().enumerate() {
                let canary = choose(t, &h, || unreachable!()).role == Arm::Canary;
                assert!(!was_canary || canary, "user-{user} left the canary at {w}%");
                was_canary = canary;
                on_canary_at[w] += usize::from(canary);
            }
        }
        assert_eq!(on_canary_at[0], 0);
        assert_eq!(on_canary_at[100], 2000);
        // Buckets are uniform enough that 50% holds roughly half the users.
        assert!(
            (900..1100).contains(&on_canary_at[50]),
            "{}",
            on_canary_at[50]
        );
    }

    #[test]
    fn sticky_bucket_is_stable_across_runs() {
        // Fixed values: a change here moves real users between versions.
        assert_eq!(sticky_bucket(b""), sticky_bucket(b""));
        let known: Vec<u8> = ["alice", "bob", "carol"]
            .iter()
            .map(|k| sticky_bucket(k.as_bytes()))
            .collect();
        assert_eq!(
            known,
            [
                known_bucket("alice"),
                known_bucket("bob"),
                known_bucket("carol")
            ]
        );
    }

    /// An independent restatement of the hash, so the test pins the algorithm.
    fn known_bucket(k: &str) -> u8 {
        let mut h = 14695981039346656037u64;
        for b in k.bytes() {
            h = (h ^ b as u64).wrapping_mul(1099511628211);
        }
        for m in [0xff51afd7ed558ccdu64, 0xc4ceb9fe1a85ec53] {
            h ^= h >> 33;
            h = h.wrapping_mul(m);
        }
        h ^= h >> 33;
        ((h as u128 * 100) >> 64) as u8
    }

    #[test]
    fn cookie_mode_assigns_an_id_only_when_missing() {
        let t = table(50, Some(Stickiness::Cookie { name: "fid".into() }), vec![]);
        let c = choose(&t, &HeaderMap::new(), || 7);
        assert_eq!(
            c.assign_cookie.as_deref(),
            Some("00000000000000070000000000000007")
        );
        let h = headers(&[("cookie", "a=1; fid=abc; b=2")]);
        let c = choose(&t, &h, || unreachable!());
        assert_eq!(c.assign_cookie, None);
        let expected = if sticky_bucket(b"abc") < 50 {
            Arm::Canary
        } else {
            Arm::Stable
        };
        assert_eq!(c.role, expected);
    }

    #[test]
    fn match_rules_pin_both_ways_and_only_during_a_rollout() {
        let rules = vec![
            MatchRule::header("X-Canary", "always", Arm::Canary),
            MatchRule::cookie("pin", "stable", Arm::Stable),
        ];
        let to_canary = headers(&[("x-canary", "always")]);
        let to_stable = headers(&[("cookie", "pin=stable")]);
        assert_eq!(
            choose(&table(0, None, rules.clone()), &to_canary, || 0).role,
            Arm::Canary
        );
        assert_eq!(
            choose(&table(100, None, rules.clone()), &to_stable, || 0).role,
            Arm::Stable
        );
        let wrong_value = headers(&[("x-canary", "never")]);
        assert_eq!(
            choose(&table(0, None, rules.clone()), &wrong_value, || 0).role,
            Arm::Stable
        );

        let mut no_rollout = table(0, None, rules);
        no_rollout.canary = None;
        assert_eq!(choose(&no_rollout, &to_canary, || 0).role, Arm::Stable);
    }

    #[tokio::test]
    async fn split_layer_routes_and_sets_the_cookie() {
        use tower::{Service, ServiceExt};
        let t = table(100, Some(Stickiness::Cookie { name: "fid".into() }), vec![]);
        let routes = Arc::new(ArcSwap::from_pointee(t));
        let (mock, mut handle) = tower_test::mock::pair::<Routed<()>, Response<()>>();
        let mut split = Split::new(routes.clone(), mock);

        let rsp = tokio::spawn({
            let mut split = split.clone();
            async move { split.ready().await.unwrap().call(Request::new(())).await }
        });
        let (routed, send) = handle.next_request().await.unwrap();
        assert_eq!(routed.arm.role, Arm::Canary);
        assert_eq!(routed.arm.version, "v2");
        send.send_response(Response::new(()));
        let rsp = rsp.await.unwrap().unwrap();
        let cookie = rsp.headers()[SET_COOKIE].to_str().unwrap();
        assert!(cookie.starts_with("fid="), "{cookie}");
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Lax")
                && cookie.contains("Path=/")
        );

        // A new table applies to the next request.
        routes.store(Arc::new(table(0, None, vec![])));
        let fut =
            tokio::spawn(async move { split.ready().await.unwrap().call(Request::new(())).await });
        let (routed, send) = handle.next_request().await.unwrap();
        assert_eq!(routed.arm.role, Arm::Stable);
        send.send_response(Response::new(()));
        assert!(
            !fut.await
                .unwrap()
                .unwrap()
                .headers()
                .contains_key(SET_COOKIE)
        );
    }
}
