//! The API's per-client rate limit through a real server on loopback: a client over
//! its burst is answered 429 with `Retry-After` in the API's error shape, another
//! client (another token) is unaffected, health checks are exempt, the refusals are
//! counted in `/metrics`, and the client is served again once it waited as told.

mod support;

use std::time::Duration;

use fledge::server::{StartOptions, start};
use hyper::StatusCode;
use support::{Http, backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_limit_waits_while_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let stable = backend("stable", None).await;
    let canary = backend("canary", None).await;
    let mut config = support::config(dir.path(), "shop", &stable, &canary);
    // One request a second, bursts of three: slow enough that the test's own
    // requests cannot earn a token back between the burst and the refusal.
    config.limits.rate_per_second = 1;
    config.limits.rate_burst = 3;
    let server = start(
        config,
        StartOptions {
            env_tokens: Some("alice:viewer:alice-token,bob:viewer:bob-token".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let http = Http::new(server.api_addr());
    let alice = http.with_token("alice-token");
    let bob = http.with_token("bob-token");

    for _ in 0..3 {
        assert_eq!(alice.get("/status").await.status, StatusCode::OK);
    }
    let refused = alice.get("/status").await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.text
    );
    assert_eq!(
        refused.body["error"]["code"], "rate_limited",
        "{}",
        refused.text
    );
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("token `alice`"), "{message}");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");

    // Another token has its own bucket, whatever alice does.
    assert_eq!(bob.get("/status").await.status, StatusCode::OK);

    // Without a token the client is its address: its 401s count too, and health
    // checks are never refused.
    for _ in 0..3 {
        assert_eq!(http.get("/status").await.status, StatusCode::UNAUTHORIZED);
    }
    let anonymous = http.get("/status").await;
    assert_eq!(anonymous.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        anonymous.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("address 127.0.0.1"),
        "{}",
        anonymous.text
    );
    for path in ["/healthz", "/readyz"] {
        for _ in 0..10 {
            assert_eq!(http.get(path).await.status, StatusCode::OK, "{path}");
        }
    }

    let metrics = bob.get("/metrics").await.text;
    for line in [
        "fledge_api_rate_limited_total{client=\"token\"} 1",
        "fledge_api_rate_limited_total{client=\"address\"} 1",
        "fledge_api_rate_limit_clients 3",
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }

    // A client that waits as told is served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(alice.get("/status").await.status, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_rate_turns_the_limit_off() {
    let dir = tempfile::tempdir().unwrap();
    let stable = backend("stable", None).await;
    let canary = backend("canary", None).await;
    let mut config = support::config(dir.path(), "shop", &stable, &canary);
    config.limits.rate_per_second = 0;
    config.limits.rate_burst = 1;
    let server = start(config, StartOptions::default()).await.unwrap();
    let http = Http::new(server.api_addr());
    for _ in 0..20 {
        assert_eq!(http.get("/status").await.status, StatusCode::OK);
    }
    assert!(
        !http
            .get("/metrics")
            .await
            .text
            .contains("fledge_api_rate_limited_total{")
    );
    server.shutdown().await;
}
