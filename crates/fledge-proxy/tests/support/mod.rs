//! Loopback fixtures for the proxy's integration tests: small in-process backends
//! that record what reached them, a proxy started on a free port, and a client.

#![allow(dead_code)] // each test binary uses a different subset

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fledge_proxy::{ProxyConfig, ProxyHandle, Route, UpstreamGroup};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;
type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// An empty request or response body.
pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A body holding `text`.
pub fn text(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).map_err(|e| match e {}).boxed()
}

/// A body streaming the chunks `rx` receives, ending when its sender is dropped.
pub fn channel(rx: mpsc::Receiver<Bytes>) -> Body {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(http_body::Frame::data(b)), rx))
    });
    http_body_util::StreamBody::new(stream).boxed()
}

/// Reads raw bytes from `stream` until what has come ends with `end`, failing if
/// the connection closes first or a read takes over 10 s.
pub async fn read_until(stream: &mut TcpStream, end: &str) -> String {
    let mut buf = vec![0u8; 4096];
    let mut got = String::new();
    while !got.ends_with(end) {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    got
}

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub headers: HeaderMap,
    pub uri: http::Uri,
}

/// An in-process HTTP server standing in for one version of the app.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    /// TCP connections accepted.
    pub conns: Arc<AtomicU64>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

// === impl Backend ===

impl Backend {
    /// Answers every request `200 <name>` with an `x-backend: <name>` header.
    pub async fn start(name: &str) -> Backend {
        Self::with_status(name, StatusCode::OK).await
    }

    /// Answers every request with `status`.
    pub async fn with_status(name: &str, status: StatusCode) -> Backend {
        let n = name.to_owned();
        Self::custom(name, move |_req| {
            let n = n.clone();
            async move {
                Response::builder()
                    .status(status)
                    .header("x-backend", n.as_str())
                    .body(text(n))
                    .unwrap()
            }
        })
        .await
    }

    /// Answers with `handler`, still counting and recording every request.
    pub async fn custom<F, Fut>(name: &str, handler: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let conns = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = {
            let hits = hits.clone();
            let seen = seen.clone();
            let handler = Arc::new(handler);
            Arc::new(move |req: Request<Incoming>| {
                hits.fetch_add(1, Ordering::SeqCst);
                seen.lock().unwrap().push(Seen {
                    headers: req.headers().clone(),
                    uri: req.uri().clone(),
                });
                let handler = handler.clone();
                Box::pin(async move { handler(req).await })
            })
        };
        let accepted = conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_owned(),
            addr,
            hits,
            conns,
            seen,
            task,
        }
    }

    /// Answers `answer` after `delay`; the [`Notify`] fires as each request arrives.
    pub async fn slow(name: &str, delay: Duration, answer: &'static str) -> (Backend, Arc<Notify>) {
        let arrived = Arc::new(Notify::new());
        let backend = {
            let arrived = arrived.clone();
            Self::custom(name, move |_req| {
                let arrived = arrived.clone();
                async move {
                    arrived.notify_one();
                    tokio::time::sleep(delay).await;
                    Response::new(text(answer))
                }
            })
            .await
        };
        (backend, arrived)
    }

    /// The backend as an upstream group of version `name`.
    pub fn group(&self) -> UpstreamGroup {
        UpstreamGroup::new(self.name.clone(), vec![self.addr.to_string()])
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn last_seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("backend saw a request")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address on which nothing listens (connections are refused).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A TCP server that accepts connections and never answers.
pub async fn black_hole() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

/// A running proxy on a free loopback port.
pub struct Proxy {
    pub addr: SocketAddr,
    pub handle: ProxyHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), fledge_proxy::ProxyError>>>,
}

// === impl Proxy ===

impl Proxy {
    pub async fn start(route: Route) -> Proxy {
        Self::start_with(ProxyConfig::new("shop"), route).await
    }

    pub async fn start_with(config: ProxyConfig, route: Route) -> Proxy {
        let handle = ProxyHandle::new(config, route).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(fledge_proxy::serve(listener, handle.clone(), async {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            handle,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Triggers shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("proxy stops")
                .unwrap()
                .unwrap();
        }
    }

    /// Starts shutdown without waiting.
    pub fn begin_shutdown(&mut self) -> JoinHandle<Result<(), fledge_proxy::ProxyError>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("not yet shut down")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// A route with both groups at `weight`% to the canary.
pub fn split(stable: &Backend, canary: &Backend, weight: u8) -> Route {
    Route::split(stable.group(), canary.group(), weight)
}

/// A pooled HTTP/1.1 test client.
pub fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An h2c (prior knowledge) test client.
pub fn h2c_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A finished response.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Sends a GET with `headers` and reads the whole response.
pub async fn get(client: &Client<HttpConnector, Body>, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(req.body(empty()).unwrap()),
    )
    .await
    .expect("response within 10 s")
    .expect("request succeeds");
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Polls `cond` every 10 ms until it holds, failing after 10 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
