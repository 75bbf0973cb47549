//! What the HAProxy and nginx rule tests share: the documented configuration blocks,
//! requests with headers and cookies, and the routes a rollout passes through.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use fledge_providers::router::{Desired, RoutingRules, Upstreams};
use fledge_spec::{MatchRule, Stickiness, Target};

/// The integrations page, whose configuration blocks the tests run as they are.
pub const DOC: &str = include_str!("../../../../docs/integrations.md");

/// The fenced `lang` block of the integrations page whose text contains `marker`
/// (its one such block).
pub fn doc_block(lang: &str, marker: &str) -> String {
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in DOC.lines() {
        let trimmed = line.trim();
        match &mut current {
            None if trimmed == format!("```{lang}") => current = Some(String::new()),
            Some(_) if trimmed == "```" => {
                let text = current.take().unwrap_or_default();
                if text.contains(marker) {
                    found.push(text);
                }
            }
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    assert_eq!(
        found.len(),
        1,
        "docs/integrations.md: expected one ```{lang} block with {marker:?}"
    );
    found.remove(0)
}

/// One GET of `url` with `headers` on a fresh connection: the body (the version that
/// answered) and the `Set-Cookie` header, if any.
pub async fn ask(url: &str, headers: &[(&str, &str)]) -> (String, Option<String>) {
    thread_local! {
        // One client per test (each runs its own runtime on its own thread); no idle
        // connection kept, so every request is balanced on its own.
        static CLIENT: reqwest::Client = {
            fledge_providers::tls::ensure_crypto_provider();
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap()
        };
    }
    let mut req = CLIENT.with(|c| c.get(url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    let cookie = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.text().await.unwrap(), cookie)
}

/// A match rule on a header (`cookie: false`) or cookie.
pub fn rule(cookie: bool, name: &str, value: &str, target: Target) -> MatchRule {
    MatchRule {
        header: (!cookie).then(|| name.to_owned()),
        cookie: cookie.then(|| name.to_owned()),
        value: value.to_owned(),
        target,
    }
}

/// Stickiness on a header (`cookie: false`) or cookie.
pub fn sticky(cookie: bool, name: &str, ttl: Option<Duration>) -> Stickiness {
    Stickiness {
        header: (!cookie).then(|| name.to_owned()),
        cookie: cookie.then(|| name.to_owned()),
        ttl,
    }
}

/// The rules both routers are tested with: `x-canary: always` → canary, also for the
/// header value `odd` (characters the router's own syntax would read otherwise),
/// cookie `beta=old` → stable, stickiness on `x-user-id`.
pub fn tested_rules(odd: &str) -> RoutingRules {
    RoutingRules {
        matches: vec![
            rule(false, "X-Canary", "always", Target::Canary),
            rule(false, "x-canary", odd, Target::Canary),
            rule(true, "beta", "old", Target::Stable),
        ],
        stickiness: Some(sticky(false, "x-user-id", None)),
        close_upgraded_on_abort: false,
        mirror: None,
    }
}

/// A rollout's route: `v1` at `stable`, `v2` at `canary` with `weight`% and `rules`.
pub fn rollout(stable: &str, canary: &str, weight: u8, rules: RoutingRules) -> Desired {
    Desired {
        stable: Upstreams::new("v1", vec![stable.to_owned()]),
        canary: Some(Upstreams::new("v2", vec![canary.to_owned()])),
        canary_weight: weight,
        mirror: 0,
        rules,
    }
}

/// Puts each weight of `weights` in place in turn (`serve` serves the route at that
/// weight and waits until it is in force) and sends every sticky user (each a list of
/// headers) two requests at each: a user gets one version per weight, keeps the
/// canary once it has it, and the share on the canary follows the weight. Returns
/// the number of users on the canary at each weight.
pub async fn walk_weights<F, Fut>(
    serve: F,
    url: &str,
    users: &[Vec<(String, String)>],
    weights: &[u8],
) -> Vec<usize>
where
    F: Fn(u8) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut on_canary: BTreeMap<usize, u8> = BTreeMap::new();
    let mut counts = Vec::new();
    for &w in weights {
        serve(w).await;
        let mut n = 0;
        for (i, user) in users.iter().enumerate() {
            let headers: Vec<(&str, &str)> =
                user.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let (first, _) = ask(url, &headers).await;
            let (second, _) = ask(url, &headers).await;
            assert_eq!(first, second, "user {user:?} flapped at {w}%");
            match first.as_str() {
                "v2" => {
                    on_canary.entry(i).or_insert(w);
                    n += 1;
                }
                "v1" => assert!(
                    !on_canary.contains_key(&i),
                    "user {user:?} went back to stable at {w}% after reaching the canary at {}%",
                    on_canary[&i]
                ),
                other => panic!("unexpected answer {other:?}"),
            }
        }
        let (lo, hi) =
            fledge_providers::testing::binomial_bounds(users.len() as u64, f64::from(w) / 100.0);
        assert!(
            (lo..=hi).contains(&(n as u64)),
            "{w}%: {n} of {} sticky users on the canary, expected {lo}..={hi}",
            users.len()
        );
        eprintln!("{w}%: {n} of {} sticky users on the canary", users.len());
        counts.push(n);
    }
    counts
}

/// Requests the split at `url` is judged on.
const SPLIT_REQUESTS: usize = 400;

/// What users see of the header rules both routers are tested with (`x-canary:
/// always` → canary, cookie `beta=old` → stable, stickiness on `x-user-id`) as the
/// weight rises and the rollout is aborted. `serve` serves a route and waits until
/// it is in force; `route` is the rollout at a weight; `stable_only` the abort.
pub async fn header_rules_as_the_weight_rises_and_on_abort<S, Fut>(
    url: &str,
    serve: S,
    route: impl Fn(u8) -> Desired,
    stable_only: Desired,
) where
    S: Fn(Desired) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Sticky users keep their version as the weight rises, and only move to the
    // canary; requests without the key follow the weights.
    let users: Vec<Vec<(String, String)>> = (0..200)
        .map(|i| vec![("x-user-id".to_owned(), format!("user-{i}"))])
        .collect();
    let counts = walk_weights(|w| serve(route(w)), url, &users, &[10, 50, 100]).await;
    assert_eq!(counts[2], users.len());
    serve(route(50)).await;
    let split = fledge_providers::testing::backend::split(url, SPLIT_REQUESTS)
        .await
        .unwrap();
    fledge_providers::testing::assert_canary_share(&split, SPLIT_REQUESTS, 50);
    // A rule to stable beats the weight, even at 100%, and the first rule wins.
    serve(route(100)).await;
    for _ in 0..20 {
        assert_eq!(ask(url, &[("cookie", "beta=old")]).await.0, "v1");
        let sticky_tester = [("cookie", "beta=old"), ("x-user-id", "user-1")];
        assert_eq!(ask(url, &sticky_tester).await.0, "v1");
        let both = [("x-canary", "always"), ("cookie", "beta=old")];
        assert_eq!(ask(url, &both).await.0, "v2");
    }

    // Abort: no canary, everyone on stable, testers and sticky users included.
    serve(stable_only).await;
    for user in users.iter().take(50) {
        assert_eq!(ask(url, &[(&user[0].0, &user[0].1)]).await.0, "v1");
    }
    for _ in 0..20 {
        assert_eq!(ask(url, &[("x-canary", "always")]).await.0, "v1");
    }
}

/// Cookie stickiness (cookie `fledge`, one hour): a new user gets an id in a cookie
/// and keeps its version, once and as the weight rises. `route` is the rollout
/// with that stickiness at a weight.
pub async fn cookie_stickiness<S, Fut>(url: &str, serve: S, route: impl Fn(u8) -> Desired)
where
    S: Fn(Desired) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    serve(route(50)).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (version, cookie) = ask(url, &[]).await;
        let cookie = cookie.expect("a new user gets the sticky cookie");
        assert!(
            cookie.ends_with("; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"),
            "{cookie}"
        );
        let id = cookie.split(';').next().unwrap().to_owned();
        assert!(seen.insert(id.clone()), "the same id twice: {id}");
        for _ in 0..5 {
            let (again, set) = ask(url, &[("cookie", &id)]).await;
            assert_eq!(again, version, "{id}");
            assert_eq!(set, None, "a user with the cookie gets no new one");
        }
    }
    let users: Vec<Vec<(String, String)>> = (0..200)
        .map(|i| vec![("cookie".to_owned(), format!("fledge=c{i:04}"))])
        .collect();
    walk_weights(|w| serve(route(w)), url, &users, &[10, 50, 100]).await;
}

/// The cookie stickiness [`cookie_stickiness`] expects.
pub fn cookie_rules() -> RoutingRules {
    RoutingRules {
        stickiness: Some(sticky(true, "fledge", Some(Duration::from_secs(3600)))),
        ..Default::default()
    }
}
