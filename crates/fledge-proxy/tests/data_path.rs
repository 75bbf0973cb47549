//! Proxying proper: headers, streaming, failures and their accounting, protocol
//! support and shutdown, between loopback backends.

mod support;

use fledge_stats::exposition::{Format, Page};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fledge_proxy::{Arm, ErrorKind, ProxyConfig, Route};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use support::{
    Backend, Proxy, black_hole, client, dead_addr, eventually, get, read_until, split, text,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

const MIB: usize = 1024 * 1024;

/// A request body fed chunk by chunk from a channel.
fn channel_body() -> (mpsc::Sender<Bytes>, support::Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    (tx, support::channel(rx))
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_the_client_recorded() {
    let backend = Backend::custom("v1", |_req| async {
        Response::builder()
            .header("connection", "x-internal")
            .header("x-internal", "1")
            .header("keep-alive", "timeout=5")
            .header("x-app", "kept")
            .body(text("ok"))
            .unwrap()
    })
    .await;
    let proxy = Proxy::start(Route::stable_only("v1", vec![backend.addr.to_string()])).await;

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        b"GET /p?q=1 HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive, x-secret\r\n\
          x-secret: 1\r\nKeep-Alive: timeout=9\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\
          Upgrade: websocket\r\nX-Forwarded-For: 203.0.113.9\r\nx-request-id: 7\r\n\r\n",
    )
    .await
    .unwrap();
    let got = read_until(&mut s, "ok").await;
    let head = got.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{got}");
    assert!(head.contains("x-app: kept"));
    assert!(
        !head.contains("x-internal") && !head.contains("keep-alive: timeout=5"),
        "{got}"
    );

    let seen = backend.last_seen();
    // Origin-form on the upstream's request line.
    assert_eq!(seen.uri.to_string(), "/p?q=1");
    assert_eq!(seen.headers["host"], "shop.example");
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(
        seen.headers["forwarded"],
        "for=127.0.0.1;proto=http;host=\"shop.example\""
    );
    assert_eq!(seen.headers["x-request-id"], "7");
    for gone in [
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone} reached the upstream"
        );
    }
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let backend = Backend::start("v1").await;
    let proxy = Proxy::start(Route::stable_only("v1", vec![backend.addr.to_string()])).await;
    let c = support::h2c_client();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (c, url) = (c.clone(), proxy.url("/h2"));
        tasks.push(tokio::spawn(async move { get(&c, &url, &[]).await }));
    }
    for t in tasks {
        let got = t.await.unwrap();
        assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "v1"));
    }
    // The h2 :authority arrives upstream as the Host header.
    assert_eq!(
        backend.last_seen().headers["host"],
        proxy.addr.to_string().as_str()
    );
    assert_eq!(proxy.handle.stats("v1").requests, 20);
}

#[tokio::test]
async fn after_a_hand_off_http1_responses_close_their_connection() {
    let backend = Backend::start("v1").await;
    let proxy = Proxy::start(Route::stable_only("v1", vec![backend.addr.to_string()])).await;
    let (c, url) = (client(), proxy.url("/"));
    assert!(!get(&c, &url, &[]).await.headers.contains_key("connection"));
    proxy.handle.hand_off();
    // The kept-alive connection's next response is its last.
    assert_eq!(get(&c, &url, &[]).await.headers["connection"], "close");
    // HTTP/2 has no `Connection` header: its clients get a GOAWAY at the stop.
    let got = get(&support::h2c_client(), &url, &[]).await;
    assert_eq!(
        (got.status, got.headers.get("connection")),
        (StatusCode::OK, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_streams_through() {
    let first_bytes = Arc::new(Notify::new());
    let received = Arc::new(AtomicU64::new(0));
    let backend = {
        let (first_bytes, received) = (first_bytes.clone(), received.clone());
        Backend::custom("v1", move |req| {
            let (first_bytes, received) = (first_bytes.clone(), received.clone());
            async move {
                let mut body = req.into_body();
                while let Some(frame) = body.frame().await {
                    let frame = frame.unwrap();
                    if let Some(d) = frame.data_ref()
                        && received.fetch_add(d.len() as u64, Ordering::SeqCst) == 0
                    {
                        first_bytes.notify_one();
                    }
                }
                Response::new(text(received.load(Ordering::SeqCst).to_string()))
            }
        })
        .await
    };
    let proxy = Proxy::start(Route::stable_only("v1", vec![backend.addr.to_string()])).await;
    let (tx, body) = channel_body();
    let req = Request::post(proxy.url("/upload")).body(body).unwrap();
    let c = client();
    let rsp = tokio::spawn(async move { c.request(req).await });

    let chunk = Bytes::from(vec![b'u'; MIB]);
    tx.send(chunk.clone()).await.unwrap();
    // The backend sees the start while 99 MiB are still with the client.
    tokio::time::timeout(Duration::from_secs(10), first_bytes.notified())
        .await
        .expect("the upload streams to the backend");
    for _ in 1..100 {
        tx.send(chunk.clone()).await.unwrap();
    }
    drop(tx);
    let rsp = rsp.await.unwrap().unwrap();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, (100 * MIB).to_string().as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_download_streams_through() {
    let release = Arc::new(Notify::new());
    let backend = {
        let release = release.clone();
        Backend::custom("v1", move |_req| {
            let release = release.clone();
            async move {
                let (tx, rx) = mpsc::channel::<Bytes>(2);
                tokio::spawn(async move {
                    let chunk = Bytes::from(vec![b'd'; MIB]);
                    tx.send(chunk.clone()).await.unwrap();
                    // The rest is produced only once the client has the start.
                    release.notified().await;
                    for _ in 1..100 {
                        if tx.send(chunk.clone()).await.is_err() {
                            return;
                        }
                    }
                });
                Response::new(support::channel(rx))
            }
        })
        .await
    };
    let proxy = Proxy::start(Route::stable_only("v1", vec![backend.addr.to_string()])).await;
    let rsp = client()
        .request(
            Request::get(proxy.url("/big"))
                .body(support::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = rsp.into_body();
    let mut total = 0usize;
    let mut released = false;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("download makes progress")
    {
        total += frame.unwrap().data_ref().map_or(0, |d| d.len());
        if !released && total > 0 {
            release.notify_one();
            released = true;
        }
    }
    assert_eq!(total, 100 * MIB);
    let stats = proxy.handle.stats("v1");
    assert_eq!((stats.requests, stats.errors), (1, 0));
}

#[tokio::test]
async fn a_dead_canary_gets_502_and_an_error_count() {
    let stable = Backend::start("v1").await;
    let mut route = split(&stable, &stable, 100);
    let dead = dead_addr().await.to_string();
    route.canary = Some(fledge_proxy::UpstreamGroup::new("v2", vec![dead]));
    let proxy = Proxy::start(route).await;
    let c = client();
    for _ in 0..5 {
        let got = get(&c, &proxy.url("/"), &[]).await;
        assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    }
    let canary = proxy.handle.version_stats("v2", Arm::Canary).unwrap();
    assert_eq!(canary.errors_of(ErrorKind::Connect), 5);
    let (s, c) = proxy.handle.stats_by_role();
    assert_eq!((c.requests, c.errors), (5, 5));
    assert_eq!(s.requests, 0);
    let mut page = Page::new(Format::OpenMetrics);
    proxy.handle.write_metrics(&mut page);
    let metrics = page.finish();
    assert!(
        metrics.contains(
            "fledge_proxy_errors_total{app=\"shop\",version=\"v2\",role=\"canary\",kind=\"connect\"} 5\n"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_gets_504_after_the_timeout() {
    let (hole, _task) = black_hole().await;
    let mut config = ProxyConfig::new("shop");
    config.timeouts.response_headers = Duration::from_millis(300);
    let proxy = Proxy::start_with(config, Route::stable_only("v1", vec![hole.to_string()])).await;
    let got = get(&client(), &proxy.url("/"), &[]).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    let v1 = proxy.handle.version_stats("v1", Arm::Stable).unwrap();
    assert_eq!(v1.errors_of(ErrorKind::Timeout), 1);
    let snap = v1.snapshot();
    assert_eq!((snap.requests, snap.errors), (1, 1));
    // The latency recorded is the timeout.
    assert_eq!(snap.latency.count_above(0.25), 1);
}

#[tokio::test]
async fn upstream_5xx_is_an_error_of_that_version() {
    let stable = Backend::start("v1").await;
    let canary = Backend::with_status("v2", StatusCode::SERVICE_UNAVAILABLE).await;
    let proxy = Proxy::start(split(&stable, &canary, 100)).await;
    let got = get(&client(), &proxy.url("/"), &[]).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(got.body, "v2");
    let v2 = proxy.handle.version_stats("v2", Arm::Canary).unwrap();
    assert_eq!(v2.errors_of(ErrorKind::Upstream5xx), 1);
    assert_eq!(v2.errors_of(ErrorKind::Connect), 0);
}

#[tokio::test]
async fn a_client_hanging_up_is_not_an_error() {
    let (backend, arrived) = Backend::slow("v1", Duration::from_secs(30), "late").await;
    let proxy = Proxy::start(Route::stable_only("v1", vec![backend.addr.to_string()])).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), arrived.notified())
        .await
        .unwrap();
    drop(s);
    let v1 = proxy.handle.version_stats("v1", Arm::Stable).unwrap();
    eventually("the abort to be counted", || v1.client_aborts() == 1).await;
    let snap = v1.snapshot();
    assert_eq!((snap.requests, snap.errors), (0, 0));
}

#[tokio::test]
async fn oversized_bodies_are_refused_without_blaming_the_version() {
    let backend = Backend::custom("v1", |req| async move {
        let n = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().len())
            .unwrap_or(0);
        Response::new(text(n.to_string()))
    })
    .await;
    let mut config = ProxyConfig::new("shop");
    config.limits.max_request_body_bytes = Some(1024);
    let proxy = Proxy::start_with(
        config,
        Route::stable_only("v1", vec![backend.addr.to_string()]),
    )
    .await;
    let c = client();

    let declared = Request::post(proxy.url("/"))
        .body(text(vec![0u8; 2048]))
        .unwrap();
    let rsp = c.request(declared).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(backend.hits(), 0);

    // Chunked: the limit only shows once the body is under way.
    let (tx, body) = channel_body();
    let req = Request::post(proxy.url("/")).body(body).unwrap();
    let rsp = tokio::spawn({
        let c = c.clone();
        async move { c.request(req).await }
    });
    for _ in 0..4 {
        if tx.send(Bytes::from(vec![0u8; 512])).await.is_err() {
            break;
        }
    }
    drop(tx);
    if let Ok(rsp) = rsp.await.unwrap() {
        // Either refused, or the backend answered early with what it had.
        assert!(rsp.status() == StatusCode::PAYLOAD_TOO_LARGE || rsp.status().is_success());
    }
    let snap = proxy.handle.stats("v1");
    assert_eq!(snap.errors, 0);

    let fits = Request::post(proxy.url("/"))
        .body(text(vec![0u8; 1000]))
        .unwrap();
    let rsp = c.request(fits).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
}

#[tokio::test]
async fn silent_clients_are_disconnected() {
    let backend = Backend::start("v1").await;
    let mut config = ProxyConfig::new("shop");
    config.timeouts.client_headers = Duration::from_millis(200);
    let proxy = Proxy::start_with(
        config,
        Route::stable_only("v1", vec![backend.addr.to_string()]),
    )
    .await;
    for opening in [&b""[..], b"GET / HT", b"PRI * HTTP/2"] {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(opening).await.unwrap();
        let mut buf = [0u8; 256];
        // Closed (EOF, maybe after a 408) well before the 10 s guard.
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "connection opened with {opening:?} stayed open"
        );
    }
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let (backend, arrived) = Backend::slow("v1", Duration::from_millis(300), "done").await;
    let mut proxy = Proxy::start(Route::stable_only("v1", vec![backend.addr.to_string()])).await;
    let url = proxy.url("/");
    let in_flight = tokio::spawn(async move { get(&client(), &url, &[]).await });
    tokio::time::timeout(Duration::from_secs(10), arrived.notified())
        .await
        .unwrap();
    let stopped = proxy.begin_shutdown();
    let got = in_flight.await.unwrap();
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "done"));
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(proxy.addr).await.is_err(),
        "still accepting"
    );
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let backend = Backend::start("v1").await;
    let proxy = Proxy::start(Route::stable_only("v1", vec![backend.addr.to_string()])).await;
    let c = client();
    for _ in 0..50 {
        assert_eq!(get(&c, &proxy.url("/"), &[]).await.status, StatusCode::OK);
    }
    assert_eq!(backend.hits(), 50);
    assert_eq!(backend.conns.load(Ordering::SeqCst), 1);
    // A route change keeps the warm connection.
    proxy.handle.set_canary_weight(0).unwrap();
    get(&c, &proxy.url("/"), &[]).await;
    assert_eq!(backend.conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_upstream_closing_its_connections_costs_no_request() {
    let backend = Backend::custom("v1", |_req| async {
        Response::builder()
            .header("connection", "close")
            .body(text("bye"))
            .unwrap()
    })
    .await;
    let proxy = Proxy::start(Route::stable_only("v1", vec![backend.addr.to_string()])).await;
    let c = client();
    for _ in 0..30 {
        let got = get(&c, &proxy.url("/"), &[]).await;
        assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "bye"));
    }
    assert_eq!(backend.conns.load(Ordering::SeqCst), 30);
    assert_eq!(proxy.handle.stats("v1").errors, 0);
}

/// A raw HTTP/1.1 upstream whose first connection answers one request and then
/// closes, unanswered, as the next one comes: the race of a keep-alive client with
/// a server closing an idle connection. Later connections answer every request.
/// Counts the connections and the requests answered.
async fn closing_at_second_request() -> (std::net::SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let (c, a) = (conns.clone(), answered.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let first = c.fetch_add(1, Ordering::SeqCst) == 0;
            let a = a.clone();
            tokio::spawn(async move {
                let mut served = 0;
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    if first && served == 1 {
                        return; // closes with the request unanswered
                    }
                    if let Some(len) = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                    {
                        let mut body = vec![0u8; len];
                        if s.read_exact(&mut body).await.is_err() {
                            return;
                        }
                    }
                    let rsp = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(rsp.as_bytes()).await.is_err() {
                        return;
                    }
                    served += 1;
                    a.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, conns, answered)
}

#[tokio::test]
async fn a_get_whose_reused_connection_closes_unanswered_is_sent_again() {
    let (addr, conns, answered) = closing_at_second_request().await;
    let proxy = Proxy::start(Route::stable_only("v1", vec![addr.to_string()])).await;
    let c = client();
    for _ in 0..3 {
        let got = get(&c, &proxy.url("/"), &[]).await;
        assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "ok"));
    }
    // The second GET went out on the first connection, which closed, and again on a
    // new one, which also carried the third.
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    assert_eq!(answered.load(Ordering::SeqCst), 3);
    assert_eq!(proxy.handle.stats("v1").errors, 0);
}

#[tokio::test]
async fn a_post_whose_reused_connection_closes_unanswered_is_not_sent_again() {
    let (addr, conns, answered) = closing_at_second_request().await;
    let proxy = Proxy::start(Route::stable_only("v1", vec![addr.to_string()])).await;
    let c = client();
    assert_eq!(get(&c, &proxy.url("/"), &[]).await.status, StatusCode::OK);
    let post = Request::post(proxy.url("/orders"))
        .body(text("one order"))
        .unwrap();
    let rsp = tokio::time::timeout(Duration::from_secs(10), c.request(post))
        .await
        .expect("answered within 10 s")
        .unwrap();
    // A second delivery could place the order twice: the client is told instead.
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    assert_eq!(answered.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_burst_of_clients_larger_than_the_usual_listen_queue_is_queued_not_dropped() {
    // Nothing accepts: every connection waits in the listener's queue. One the queue
    // has no room for would have its SYN dropped and wait a second to try again.
    let listener = fledge_proxy::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let connects = (0..300)
        .map(|_| tokio::time::timeout(Duration::from_millis(700), TcpStream::connect(addr)));
    let connected = futures::future::join_all(connects).await;
    let queued = connected.iter().filter(|c| matches!(c, Ok(Ok(_)))).count();
    assert_eq!(queued, 300);
}
