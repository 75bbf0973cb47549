//! One listener served by several worker threads: every request answered and
//! counted, a client's keep-alive requests kept on one upstream connection, and a
//! stop that lets requests in flight finish.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fledge_proxy::{ProxyConfig, ProxyHandle, Route, Serving, Workers};
use http::{Response, StatusCode};
use support::{Backend, client, get, split, text};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Serves `route` for app `shop` with `workers` on a fresh loopback listener;
/// returns the proxy's handle, its address, and the guard that stops it.
fn serve(workers: &Workers, route: Route) -> (ProxyHandle, SocketAddr, Serving) {
    let config = ProxyConfig {
        workers: workers.len(),
        ..ProxyConfig::new("shop")
    };
    let handle = ProxyHandle::new(config, route).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = workers.serve(listener, &handle).unwrap();
    (handle, addr, serving)
}

#[tokio::test]
async fn every_worker_serves_the_listener_and_counts_into_one_place() {
    let workers = Workers::start(2).unwrap();
    assert_eq!(workers.len(), 2);
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let (handle, addr, serving) = serve(&workers, split(&stable, &canary, 20));

    // Many clients at once, each on its own connection, so both workers accept.
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(tokio::spawn(async move {
            let client = client();
            for _ in 0..25 {
                let got = get(&client, &format!("http://{addr}/"), &[]).await;
                assert_eq!(got.status, StatusCode::OK);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }

    let (s, c) = handle.stats_by_role();
    assert_eq!(s.requests + c.requests, 400);
    assert_eq!(stable.hits() + canary.hits(), 400);
    assert!(c.requests > 0 && s.requests > c.requests, "{s:?} {c:?}");
    serving.stop().await.unwrap();
    // The port is free again.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_clients_sequential_requests_reuse_one_upstream_connection() {
    let workers = Workers::start(2).unwrap();
    let backend = Backend::start("v1").await;
    let route = Route::stable_only("v1", vec![backend.addr.to_string()]);
    let (_handle, addr, serving) = serve(&workers, route);

    let client = client();
    for _ in 0..50 {
        assert_eq!(
            get(&client, &format!("http://{addr}/"), &[]).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(backend.hits(), 50);
    assert_eq!(
        backend.conns.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one client connection, one worker, one upstream connection"
    );
    serving.stop().await.unwrap();
}

#[tokio::test]
async fn stop_lets_a_request_in_flight_finish() {
    let workers = Workers::start(2).unwrap();
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (e, r) = (entered.clone(), release.clone());
    let backend = Backend::custom("v1", move |_req| {
        let (e, r) = (e.clone(), r.clone());
        async move {
            e.notify_one();
            r.notified().await;
            Response::new(text("late"))
        }
    })
    .await;
    let route = Route::stable_only("v1", vec![backend.addr.to_string()]);
    let (_handle, addr, serving) = serve(&workers, route);

    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    entered.notified().await;
    let stopping = tokio::spawn(serving.stop());
    // New connections are refused once the workers have let go of the port.
    tokio::time::timeout(Duration::from_secs(10), async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the listener closes");
    assert!(
        !stopping.is_finished(),
        "stop waits for the request in flight"
    );
    release.notify_one();
    let answer = support::read_until(&mut conn, "late").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("stop returns once drained")
        .unwrap()
        .unwrap();
}

#[test]
fn zero_workers_is_a_config_error() {
    let config = ProxyConfig {
        workers: 0,
        ..ProxyConfig::new("shop")
    };
    let route = Route::stable_only("v1", vec!["127.0.0.1:1".into()]);
    let err = ProxyHandle::new(config, route).unwrap_err();
    assert!(err.to_string().contains("workers"), "{err}");
}
