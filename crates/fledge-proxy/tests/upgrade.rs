//! WebSocket (and any `Upgrade`) pass-through, end to end between a WebSocket client
//! and WebSocket servers on loopback.

mod support;

use fledge_stats::exposition::{Format, Page};
use std::net::SocketAddr;
use std::time::Duration;

use fledge_proxy::{Arm, ProxyConfig, Route, UpstreamGroup};
use futures::{SinkExt, StreamExt};
use http::StatusCode;
use support::{Backend, Proxy, client, eventually, get};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{WebSocketStream, accept_async, client_async};

/// A WebSocket server that answers each text message `<name>: <message>`.
async fn ws_server(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Text(text) = msg
                        && ws
                            .send(Message::text(format!("{name}: {text}")))
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Stable `v1` and canary `v2`, each a WebSocket server, `weight`% to the canary.
async fn ws_route(weight: u8, close_upgraded_on_abort: bool) -> Route {
    let mut route = Route::split(
        UpstreamGroup::new("v1", vec![ws_server("v1").await.to_string()]),
        UpstreamGroup::new("v2", vec![ws_server("v2").await.to_string()]),
        weight,
    );
    route.close_upgraded_on_abort = close_upgraded_on_abort;
    route
}

type Ws = WebSocketStream<TcpStream>;

async fn connect(proxy: &Proxy) -> Ws {
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let url = format!("ws://{}/chat", proxy.addr);
    let (ws, rsp) = client_async(url, stream).await.expect("upgraded");
    assert_eq!(rsp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// Sends `text` and returns the answer.
async fn say(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::text(text)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an answer in time")
        .expect("the connection is open")
        .expect("a message");
    answer.into_text().unwrap().to_string()
}

/// Whether the connection ends (closed or broken) within a second.
async fn ends(ws: &mut Ws) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ws.next()).await,
        Ok(None | Some(Err(_)))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_reaches_the_chosen_version_and_is_counted() {
    let proxy = Proxy::start(ws_route(100, false).await).await;
    let mut ws = connect(&proxy).await;
    assert_eq!(say(&mut ws, "hello").await, "v2: hello");
    assert_eq!(say(&mut ws, "again").await, "v2: again");

    let canary = proxy.handle.version_stats("v2", Arm::Canary).unwrap();
    assert_eq!(canary.upgraded(), (1, 1));
    // The 101 is one answered request of the canary, not an error.
    let counters = canary.snapshot();
    assert_eq!((counters.requests, counters.errors), (1, 0));
    let mut page = Page::new(Format::OpenMetrics);
    proxy.handle.write_metrics(&mut page);
    let metrics = page.finish();
    assert!(
        metrics
            .contains("fledge_proxy_upgraded_open{app=\"shop\",version=\"v2\",role=\"canary\"} 1")
    );

    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop(ws);
    eventually("the tunnel to close", || canary.upgraded() == (1, 0)).await;
    proxy.shutdown().await;
}

/// Rolls back: the route sends everything to stable `v1` and names no canary.
fn roll_back(proxy: &Proxy) {
    let stable = proxy.handle.route().stable.clone();
    proxy
        .handle
        .set_route(Route::stable_only("v1", stable.endpoints))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_leaves_upgraded_connections_open_unless_asked() {
    // Not asked: the canary's tunnel outlives the rollback; new ones go to stable.
    let proxy = Proxy::start(ws_route(100, false).await).await;
    let mut kept = connect(&proxy).await;
    assert_eq!(say(&mut kept, "a").await, "v2: a");
    roll_back(&proxy);
    assert_eq!(say(&mut kept, "b").await, "v2: b");
    let mut fresh = connect(&proxy).await;
    assert_eq!(say(&mut fresh, "c").await, "v1: c");
    proxy.shutdown().await;

    // Asked: the rollback closes the canary's tunnels, and only those.
    let proxy = Proxy::start(ws_route(50, true).await).await;
    let (mut on_canary, mut on_stable) = (Vec::new(), Vec::new());
    while on_canary.is_empty() || on_stable.is_empty() {
        let mut ws = connect(&proxy).await;
        if say(&mut ws, "x").await.starts_with("v2") {
            on_canary.push(ws);
        } else {
            on_stable.push(ws);
        }
    }
    roll_back(&proxy);
    for ws in &mut on_canary {
        assert!(ends(ws).await, "a canary tunnel is closed on rollback");
    }
    for ws in &mut on_stable {
        assert_eq!(say(ws, "y").await, "v1: y");
    }
    let canary = proxy.handle.version_stats("v2", Arm::Canary).unwrap();
    eventually("the canary tunnels to be gone", || canary.upgraded().1 == 0).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_declines_the_upgrade_answers_as_usual() {
    // A plain HTTP server ignores `Upgrade` and answers 200.
    let plain = Backend::start("v1").await;
    let proxy = Proxy::start(Route::stable_only("v1", vec![plain.addr.to_string()])).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let refused = client_async(format!("ws://{}/chat", proxy.addr), stream).await;
    match refused {
        Err(tungstenite::Error::Http(rsp)) => assert_eq!(rsp.status(), StatusCode::OK),
        other => panic!("expected a plain answer, got {other:?}"),
    }
    // The backend was asked for the upgrade, with the headers that ask for it.
    let seen = plain.last_seen();
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert_eq!(seen.headers["connection"], "upgrade");
    // Ordinary requests are unaffected, and nothing was tunnelled.
    assert_eq!(
        get(&client(), &proxy.url("/"), &[]).await.status,
        StatusCode::OK
    );
    let stats = proxy.handle.version_stats("v1", Arm::Stable).unwrap();
    assert_eq!(stats.upgraded(), (0, 0));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_proxy_closes_its_tunnels() {
    let proxy = Proxy::start(ws_route(0, false).await).await;
    let mut ws = connect(&proxy).await;
    assert_eq!(say(&mut ws, "hi").await, "v1: hi");
    proxy.shutdown().await;
    assert!(ends(&mut ws).await, "the tunnel is closed with the proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_and_a_busy_one_kept() {
    let mut config = ProxyConfig::new("shop");
    config.timeouts.upgraded_idle = Duration::from_millis(400);
    let proxy = Proxy::start_with(config, ws_route(0, false).await).await;
    let mut busy = connect(&proxy).await;
    let mut idle = connect(&proxy).await;
    // Talking every 100 ms for a second keeps one alive past the idle limit.
    for i in 0..10 {
        assert_eq!(say(&mut busy, &i.to_string()).await, format!("v1: {i}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ends(&mut idle).await, "the idle tunnel is closed");
    assert_eq!(say(&mut busy, "still").await, "v1: still");
    proxy.shutdown().await;
}
