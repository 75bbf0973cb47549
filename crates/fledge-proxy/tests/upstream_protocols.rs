//! HTTP/2 and TLS to upstreams, against a real nginx on loopback: h2c with prior
//! knowledge, h2 over TLS chosen by ALPN, HTTP/1.1 over TLS, and the failures an
//! operator meets (an untrusted certificate, a wrong name, a dead upstream).
//!
//! nginx answers every request with what it saw: the protocol, the scheme, the
//! host, the path and the number of the connection it came on.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use fledge_providers::testing::free_port;
use fledge_providers::testing::pki::TestPki;
use fledge_providers::testing::process::{Nginx, Program, temp_dir};
use fledge_proxy::{Arm, ErrorKind, ProxyConfig, Route, UpstreamProtocol, UpstreamTls};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use support::{Got, Proxy, client, get, h2c_client, text};

/// The answer of every nginx server below.
const ECHO: &str = "default_type text/plain;\n\
    location /fail { return 503 \"down\\n\"; }\n\
    location / { return 200 \"$server_protocol $scheme $host $request_uri conn=$connection len=$content_length\\n\"; }\n";

/// nginx with four servers: h2c, h2c closing each connection after three
/// requests (GOAWAY), TLS offering h2 and HTTP/1.1, and TLS with HTTP/1.1 only.
struct Upstreams {
    _nginx: Program,
    pki: TestPki,
    h2c: SocketAddr,
    h2c_goaway: SocketAddr,
    tls_h2: SocketAddr,
    tls_http1: SocketAddr,
}

impl Upstreams {
    async fn start() -> Upstreams {
        let dir = temp_dir("nginx").unwrap();
        let pki = TestPki::new(dir.path());
        let addr = || SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
        let (h2c, h2c_goaway, tls_h2, tls_http1) = (addr(), addr(), addr(), addr());
        let tls = format!(
            "ssl_certificate {};\nssl_certificate_key {};\n",
            pki.cert.display(),
            pki.key.display()
        );
        let servers = format!(
            "server {{ listen {h2c} http2;\n{ECHO} }}\n\
             server {{ listen {h2c_goaway} http2; keepalive_requests 3;\n{ECHO} }}\n\
             server {{ listen {tls_h2} ssl http2;\n{tls}{ECHO} }}\n\
             server {{ listen {tls_http1} ssl;\n{tls}{ECHO} }}\n"
        );
        let nginx = Nginx::serve(dir, &servers, tls_http1).await.unwrap();
        Upstreams {
            _nginx: nginx,
            pki,
            h2c,
            h2c_goaway,
            tls_h2,
            tls_http1,
        }
    }
}

/// A proxy for app `shop` whose stable version `v1` is `endpoint`, spoken to with
/// `protocol`.
async fn proxy(endpoint: SocketAddr, protocol: UpstreamProtocol) -> Proxy {
    let config = ProxyConfig {
        upstream: protocol,
        ..ProxyConfig::new("shop")
    };
    Proxy::start_with(config, Route::stable_only("v1", vec![endpoint.to_string()])).await
}

/// TLS to upstreams trusting only the CA in `ca`.
fn tls(ca: &Path, server_name: Option<&str>) -> UpstreamProtocol {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    UpstreamProtocol::Tls(UpstreamTls::new(roots, server_name).unwrap())
}

/// The connection number nginx reported.
fn conn_of(got: &Got) -> String {
    got.body
        .split_whitespace()
        .find_map(|w| w.strip_prefix("conn="))
        .unwrap_or_else(|| panic!("no connection number in {:?}", got.body))
        .to_owned()
}

/// Counted requests and errors of `v1`.
fn counted(p: &Proxy) -> (u64, u64) {
    let c = p.handle.stats("v1");
    (c.requests, c.errors)
}

#[tokio::test]
#[ignore = "needs nginx: run scripts/test"]
async fn h2c_upstream_gets_http2_on_one_shared_connection() {
    let up = Upstreams::start().await;
    let p = proxy(up.h2c, UpstreamProtocol::H2c).await;
    let url = p.url("/a?b=1");
    let http1 = client();
    let gets = (0..20).map(|_| get(&http1, &url, &[("host", "shop.example")]));
    let answers = futures::future::join_all(gets).await;
    for got in &answers {
        assert_eq!(got.status, StatusCode::OK, "{got:?}");
        assert!(
            got.body.starts_with("HTTP/2.0 http shop.example /a?b=1 "),
            "{got:?}"
        );
    }
    // Concurrent requests shared one upstream connection.
    let first = conn_of(&answers[0]);
    assert!(answers.iter().all(|g| conn_of(g) == first), "{answers:?}");
    // An h2 client's :authority is the upstream's too.
    let got = get(&h2c_client(), &p.url("/h2"), &[]).await;
    assert!(
        got.body.starts_with("HTTP/2.0 http 127.0.0.1 /h2"),
        "{got:?}"
    );

    // A request body streams up; an upstream 5xx is the version's error.
    let body = "x".repeat(100_000);
    let req = Request::post(p.url("/upload"))
        .body(text(body.clone()))
        .unwrap();
    let rsp = http1.request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let answer = rsp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&answer).contains("len=100000"),
        "{answer:?}"
    );
    assert_eq!(
        get(&http1, &p.url("/fail"), &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(counted(&p), (23, 1));
    let stats = p.handle.version_stats("v1", Arm::Stable).unwrap();
    assert_eq!(stats.errors_of(ErrorKind::Upstream5xx), 1);
}

#[tokio::test]
#[ignore = "needs nginx: run scripts/test"]
async fn h2c_upstream_that_closes_its_connections_is_redialled() {
    let up = Upstreams::start().await;
    let p = proxy(up.h2c_goaway, UpstreamProtocol::H2c).await;
    let http1 = client();
    let mut conns = Vec::new();
    for i in 0..10 {
        let got = get(&http1, &p.url(&format!("/{i}")), &[]).await;
        assert_eq!(got.status, StatusCode::OK, "request {i}: {got:?}");
        conns.push(conn_of(&got));
    }
    conns.dedup();
    // nginx said GOAWAY after every third request; each time a new connection.
    assert!(conns.len() >= 4, "{conns:?}");
    assert_eq!(counted(&p), (10, 0));

    // Concurrent requests: those a GOAWAY refused were never processed, and are
    // sent again on the next connection (three per connection here: up to four
    // connections in turn).
    let url = p.url("/many");
    let answers = futures::future::join_all((0..12).map(|_| get(&http1, &url, &[]))).await;
    let failed: Vec<_> = answers
        .iter()
        .filter(|g| g.status != StatusCode::OK)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(counted(&p), (22, 0));
}

#[tokio::test]
#[ignore = "needs nginx: run scripts/test"]
async fn tls_upstreams_choose_h2_or_http1_by_alpn() {
    let up = Upstreams::start().await;
    let h2 = proxy(up.tls_h2, tls(&up.pki.ca, None)).await;
    let http1 = proxy(up.tls_http1, tls(&up.pki.ca, None)).await;
    let c = client();
    let mut conns = Vec::new();
    for _ in 0..3 {
        let got = get(&c, &h2.url("/x"), &[("host", "shop.example")]).await;
        assert!(
            got.body.starts_with("HTTP/2.0 https shop.example /x"),
            "{got:?}"
        );
        let got = get(&c, &http1.url("/y"), &[("host", "shop.example")]).await;
        assert!(
            got.body.starts_with("HTTP/1.1 https shop.example /y"),
            "{got:?}"
        );
        conns.push(conn_of(&got));
    }
    // HTTP/1.1 over TLS is pooled like plain HTTP/1.1.
    conns.dedup();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(counted(&h2), (3, 0));
    assert_eq!(counted(&http1), (3, 0));

    // The certificate names 127.0.0.1 and localhost: a name override that is one
    // of them works, another fails.
    let named = proxy(up.tls_h2, tls(&up.pki.ca, Some("localhost"))).await;
    assert_eq!(get(&c, &named.url("/"), &[]).await.status, StatusCode::OK);
}

#[tokio::test]
#[ignore = "needs nginx: run scripts/test"]
async fn an_untrusted_or_misnamed_upstream_certificate_is_a_502() {
    let up = Upstreams::start().await;
    let other = temp_dir("pki").unwrap();
    let stranger = TestPki::new(other.path());
    let c = client();
    for (what, protocol) in [
        ("unknown CA", tls(&stranger.ca, None)),
        ("wrong name", tls(&up.pki.ca, Some("other.example"))),
    ] {
        let p = proxy(up.tls_h2, protocol).await;
        for _ in 0..2 {
            let got = get(&c, &p.url("/"), &[]).await;
            assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{what}: {got:?}");
            assert_eq!(
                got.body, "fledge: upstream TLS handshake failed\n",
                "{what}"
            );
        }
        let stats = p.handle.version_stats("v1", Arm::Stable).unwrap();
        assert_eq!(stats.errors_of(ErrorKind::Connect), 2, "{what}");
        assert_eq!(counted(&p), (2, 2), "{what}");
    }
}

#[tokio::test]
async fn a_dead_h2c_upstream_is_a_502_for_every_waiting_request() {
    let dead = support::dead_addr().await;
    let p = proxy(dead, UpstreamProtocol::H2c).await;
    let c = client();
    let url = p.url("/");
    let answers = futures::future::join_all((0..10).map(|_| get(&c, &url, &[]))).await;
    for got in answers {
        assert_eq!(got.status, StatusCode::BAD_GATEWAY);
        assert_eq!(got.body, "fledge: upstream unavailable\n");
    }
    let stats = p.handle.version_stats("v1", Arm::Stable).unwrap();
    assert_eq!(stats.errors_of(ErrorKind::Connect), 10);
}
