//! The API's per-client rate limit through a real server on loopback: a client over
//! its burst is answered 429 with `Retry-After` in the API's error shape, another
//! client (another token) is unaffected, health checks are exempt, the refusals are
//! counted in `/metrics`, and the client is served again once it waited as told.

mod support;

use std::time::Duration;

use fledge_server::{RunningServer, StartOptions, start};
use hyper::StatusCode;
use support::{Backend, Http, backend};

/// A running server whose clients get `rate` requests a second in bursts of
/// `burst`, and what it needs kept alive.
struct Limited {
    server: RunningServer,
    _upstreams: (Backend, Backend),
    _dir: tempfile::TempDir,
}

async fn limited(rate: u32, burst: u32, env_tokens: Option<&str>) -> Limited {
    let dir = tempfile::tempdir().unwrap();
    let stable = backend("stable", None).await;
    let canary = backend("canary", None).await;
    let mut config = support::config(dir.path(), "shop", &stable, &canary);
    config.limits.rate_per_second = rate;
    config.limits.rate_burst = burst;
    let opts = StartOptions {
        env_tokens: env_tokens.map(str::to_owned),
        ..Default::default()
    };
    Limited {
        server: start(config, opts).await.unwrap(),
        _upstreams: (stable, canary),
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_limit_waits_while_others_carry_on() {
    // One request a second, bursts of three: slow enough that the test's own
    // requests cannot earn a token back between the burst and the refusal.
    let shop = limited(1, 3, Some("alice:viewer:alice-token,bob:viewer:bob-token")).await;
    let http = Http::new(shop.server.api_addr());
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

    // That a client which waits as told is served again is checked with a held
    // clock: fledge-server's `a_client_that_waits_as_told_is_served_again`.
    shop.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_rate_turns_the_limit_off() {
    let shop = limited(0, 1, None).await;
    let http = Http::new(shop.server.api_addr());
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
    shop.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_waits_out_a_rate_limit_refusal() {
    let shop = limited(1, 1, None).await;
    let status = || {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_fledge"));
        cmd.args(["status", "-o", "json", "--server"])
            .arg(format!("http://{}", shop.server.api_addr()))
            .env_remove("FLEDGE_SERVER")
            .env_remove("FLEDGE_TOKEN")
            .kill_on_drop(true);
        async move {
            tokio::time::timeout(Duration::from_secs(30), cmd.output())
                .await
                .expect("the CLI finishes")
                .unwrap()
        }
    };
    // The first takes the only token; the second is refused once, waits the
    // second it is told to, and is served.
    let first = status().await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = status().await;
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{err}");
    assert!(
        err.contains("rate limiting this client; retrying in 1s"),
        "{err}"
    );
    shop.server.shutdown().await;
}
