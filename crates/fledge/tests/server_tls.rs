//! TLS on the API and the proxy listeners, through a real server on loopback with a
//! private CA made in the test: HTTPS for the API (and the CLI), a rollout's
//! traffic through the TLS proxy over HTTP/1.1 and HTTP/2 with its stats counted,
//! plain HTTP and silent clients refused without harm, and bad certificate files
//! named in the start-up error.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use fledge_providers::testing::pki::TestPki;
use fledge_server::{RunningServer, StartOptions, start};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_fledge");

/// A manual first stage: the rollout holds 50% until told otherwise.
const SPEC: &str = "\
app: shop
version: v2
stages:
  - traffic: 50
  - traffic: 100
    final: true
";

/// A fake upstream answering `<version> <X-Forwarded-Proto> <Forwarded>`.
async fn upstream(version: &'static str) -> (SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| async move {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        format!(
            "{version} {} {}",
            get("x-forwarded-proto"),
            get("forwarded")
        )
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

struct Harness {
    server: RunningServer,
    pki: TestPki,
    api: SocketAddr,
    proxy: SocketAddr,
    _upstreams: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A server with TLS on the API and on app `shop`'s proxy, handshakes bounded by
    /// `handshake`.
    async fn start(handshake: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(dir.path());
        let (stable, t1) = upstream("v1").await;
        let (canary, t2) = upstream("v2").await;
        let tls = pki.yaml(handshake);
        let yaml = format!(
            "listen: 127.0.0.1:0\n\
             tls: {tls}\n\
             store: \"sqlite://{db}\"\n\
             controller: {{tick: 200ms}}\n\
             apps:\n  - name: shop\n    listen: 127.0.0.1:0\n    tls: {tls}\n    \
             stable: {{version: v1, endpoints: [\"{stable}\"]}}\n    \
             canary: {{endpoints: [\"{canary}\"]}}\n",
            db = dir.path().join("fledge.db").display(),
        );
        let config = fledge_server::config::ServerConfig::parse(&yaml, "tls.yaml").unwrap();
        let server = start(config, StartOptions::default()).await.unwrap();
        let api = server.api_addr();
        let proxy = server.proxy_addr("shop").await.unwrap();
        Self {
            server,
            pki,
            api,
            proxy,
            _upstreams: vec![t1, t2],
            _dir: dir,
        }
    }

    fn api_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.api.port())
    }

    fn proxy_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.proxy.port())
    }

    /// Certificates from another CA, as a renewal would bring, in the harness'
    /// directory.
    fn renewed_pki(&self) -> TestPki {
        let dir = self._dir.path().join("renewed");
        std::fs::create_dir_all(&dir).unwrap();
        TestPki::new(&dir)
    }

    /// GET an API path over HTTPS, as JSON.
    async fn api_json(&self, path: &str) -> Value {
        let resp = self.pki.client().get(self.api_url(path)).send().await;
        resp.unwrap().json().await.unwrap()
    }

    /// The proxy's counters of (stable, canary).
    async fn proxy_counts(&self) -> (u64, u64) {
        let handles = self.server.shared().apps.proxy_handles().await;
        let (stable, canary) = handles[0].stats_by_role();
        (stable.requests, canary.requests)
    }

    /// The API and the proxy both still answer HTTPS.
    async fn assert_still_serving(&self) {
        let client = self.pki.client();
        let health = client.get(self.api_url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let proxied = client.get(self.proxy_url("/")).send().await.unwrap();
        assert_eq!(proxied.status(), StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_proxy_serve_https_and_count_the_rollouts_traffic() {
    let h = Harness::start("10s").await;
    let client = h.pki.client();

    // The API over HTTPS, to a client that trusts the private CA.
    let status = client.get(h.api_url("/status")).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::OK);
    assert_eq!(status.version(), hyper::Version::HTTP_11);
    let created = client
        .post(h.api_url("/rollouts"))
        .header("content-type", "application/yaml")
        .body(SPEC)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    support::wait_for(Duration::from_secs(10), "the 50% stage", || {
        let client = client.clone();
        let url = h.api_url("/rollouts/shop");
        async move {
            let r: Value = support::json_answer(client.get(url)).await?;
            if r["canaryWeight"] == 50 {
                Ok(())
            } else {
                Err(r.to_string())
            }
        }
    })
    .await;

    // HTTP/1.1 through the TLS proxy: both versions answer, each told it was https.
    let proxy_url = h.proxy_url("/cart");
    let mut seen = std::collections::BTreeMap::<String, u64>::new();
    for _ in 0..60 {
        let body = client
            .get(&proxy_url)
            .header("host", "shop.example")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut parts = body.splitn(3, ' ');
        let version = parts.next().unwrap().to_owned();
        assert_eq!(parts.next(), Some("https"), "{body}");
        assert!(
            parts
                .next()
                .unwrap()
                .starts_with("for=127.0.0.1;proto=https;host=\"shop.example\""),
            "{body}"
        );
        *seen.entry(version).or_default() += 1;
    }
    assert!(seen["v1"] > 0 && seen["v2"] > 0, "{seen:?}");
    assert_eq!(h.proxy_counts().await, (seen["v1"], seen["v2"]));

    // HTTP/2 chosen by ALPN: twenty requests on one connection, counted the same.
    let answered = h2_requests(&h, 20).await;
    assert_eq!(answered, 20);
    let (stable, canary) = h.proxy_counts().await;
    assert_eq!(stable + canary, 80);

    // The rollout's view of the traffic is the proxy's.
    let rollout = h.api_json("/rollouts/shop").await;
    assert_eq!(rollout["phase"], "Progressing", "{rollout}");
    h.server.shutdown().await;
}

/// Sends `n` GETs over one TLS connection that negotiated `h2`; returns how many
/// were answered 200 over HTTP/2.
async fn h2_requests(h: &Harness, n: usize) -> usize {
    let tls = tls_connect(&h.pki, h.proxy, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(conn);
    let mut ok = 0;
    for _ in 0..n {
        let req = hyper::Request::builder()
            .uri(format!("https://localhost:{}/h2", h.proxy.port()))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        let version = resp.version();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.windows(5).any(|w| w == b"https"), "{body:?}");
        if status == StatusCode::OK && version == hyper::Version::HTTP_2 {
            ok += 1;
        }
    }
    driver.abort();
    ok
}

/// A TLS connection to `addr`, trusting `pki`'s CA and offering ALPN `alpn`.
async fn tls_connect(
    pki: &TestPki,
    addr: SocketAddr,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(&pki.ca).unwrap();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// Plain HTTP sent to a TLS port is answered 400 (saying to use HTTPS) and closed.
async fn plain_http_reply(addr: SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut reply))
        .await
        .expect("the TLS port closes after its answer")
        .unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

/// How long the server keeps a connection that sends nothing.
async fn silent_client_lifetime(addr: SocketAddr) -> Duration {
    silent_lifetime(TcpStream::connect(addr).await.unwrap()).await
}

/// How long the server keeps `conn` open while the client sends nothing more.
async fn silent_lifetime(mut conn: impl tokio::io::AsyncRead + Unpin) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("a silent client is dropped well before 10s");
    // Closed (0 bytes) or reset: either way, gone.
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_and_silent_clients_are_refused_without_harm() {
    let h = Harness::start("500ms").await;
    for addr in [h.api, h.proxy] {
        let reply = plain_http_reply(addr).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{addr}: {reply}");
        assert!(reply.contains("speaks HTTPS"), "{addr}: {reply}");
    }
    h.assert_still_serving().await;

    // Silent clients on both ports at once: each is dropped after the handshake
    // timeout, and neither blocks the listener meanwhile.
    let (api, proxy, ()) = tokio::join!(
        silent_client_lifetime(h.api),
        silent_client_lifetime(h.proxy),
        h.assert_still_serving(),
    );
    for (port, lived) in [("API", api), ("proxy", proxy)] {
        assert!(
            lived >= Duration::from_millis(400) && lived < Duration::from_secs(5),
            "{port}: a silent client lived {lived:?}"
        );
    }

    // A client that finishes its handshake with the API and then sends nothing is
    // dropped within the same timeout.
    let idle = tls_connect(&h.pki, h.api, b"http/1.1").await;
    let lived = silent_lifetime(idle).await;
    assert!(
        lived < Duration::from_secs(5),
        "an idle TLS client lived {lived:?}"
    );

    // A client that does not trust the CA fails its handshake; the server carries on.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([])
        .build()
        .unwrap();
    assert!(untrusting.get(h.api_url("/healthz")).send().await.is_err());
    h.assert_still_serving().await;
    h.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_trusts_a_private_ca_with_ca_cert() {
    let h = Harness::start("10s").await;
    let server = format!("https://127.0.0.1:{}", h.api.port());
    let run = |args: Vec<String>, env_ca: Option<String>| async move {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(&args)
            .env_remove("FLEDGE_SERVER")
            .env_remove("FLEDGE_TOKEN")
            .env_remove("FLEDGE_CA_CERT")
            .kill_on_drop(true);
        if let Some(ca) = env_ca {
            cmd.env("FLEDGE_CA_CERT", ca);
        }
        tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .expect("the CLI finishes")
            .unwrap()
    };
    let ca = h.pki.ca.display().to_string();

    let ok = run(
        vec![
            "status".into(),
            "--server".into(),
            server.clone(),
            "--ca-cert".into(),
            ca.clone(),
            "-o".into(),
            "json".into(),
        ],
        None,
    )
    .await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let status: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert!(status.is_object(), "{status}");

    let from_env = run(
        vec!["status".into(), "--server".into(), server.clone()],
        Some(ca),
    )
    .await;
    assert!(
        from_env.status.success(),
        "{}",
        String::from_utf8_lossy(&from_env.stderr)
    );

    // Without the CA the server's certificate is not trusted.
    let refused = run(
        vec!["status".into(), "--server".into(), server.clone()],
        None,
    )
    .await;
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("cannot reach the fledge server") && err.contains("--ca-cert"),
        "{err}"
    );

    // A --ca-cert that is not a certificate is named.
    let not_pem = run(
        vec![
            "status".into(),
            "--server".into(),
            server,
            "--ca-cert".into(),
            h.pki.key.display().to_string(),
        ],
        None,
    )
    .await;
    let err = String::from_utf8_lossy(&not_pem.stderr);
    assert!(!not_pem.status.success());
    assert!(
        err.contains("--ca-cert") && err.contains("server.key"),
        "{err}"
    );
    h.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_certificate_changes_with_put_apps_on_the_same_port() {
    let h = Harness::start("10s").await;
    let renewed = h.renewed_pki();
    let app = h.api_json("/apps/shop").await;
    let put = |tls: Value| {
        let mut config = app.clone();
        let fields = config.as_object_mut().unwrap();
        fields.remove("proxyAddr");
        fields.insert("tls".into(), tls);
        h.pki
            .client()
            .put(h.api_url("/apps/shop"))
            .json(&config)
            .send()
    };
    let proxy_url = h.proxy_url("/");

    // A certificate file that is not there: refused, naming it; nothing changes.
    let refused =
        put(serde_json::json!({"cert": "/nonexistent/new.pem", "key": "/nonexistent/new.key"}))
            .await
            .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body = refused.text().await.unwrap();
    assert!(body.contains("/nonexistent/new.pem"), "{body}");
    assert!(h.pki.client().get(&proxy_url).send().await.is_ok());

    // A renewed certificate from another CA: new connections present it.
    let ok = put(serde_json::json!({
        "cert": renewed.cert.display().to_string(),
        "key": renewed.key.display().to_string(),
    }))
    .await
    .unwrap();
    assert_eq!(ok.status(), StatusCode::OK, "{}", ok.text().await.unwrap());
    assert_eq!(h.server.proxy_addr("shop").await, Some(h.proxy));
    assert!(h.pki.client().get(&proxy_url).send().await.is_err());
    let answer = renewed.client().get(&proxy_url).send().await.unwrap();
    assert_eq!(
        answer.text().await.unwrap().split(' ').nth(1),
        Some("https")
    );

    // TLS off: the same port speaks plain HTTP.
    let off = put(Value::Null).await.unwrap();
    assert_eq!(off.status(), StatusCode::OK);
    let plain = support::Http::new(h.proxy).get("/").await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain.text.starts_with("v1 http "), "{}", plain.text);
    h.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificate_files_are_used_after_a_reload() {
    let h = Harness::start("10s").await;
    let renewed = h.renewed_pki();
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let proxy_url = h.proxy_url("/");
    let answers = |pki: &TestPki| {
        let client = pki.client();
        let (api, proxy) = (h.api_url("/healthz"), proxy_url.clone());
        async move {
            (
                client.get(api).send().await.is_ok(),
                client.get(proxy).send().await.is_ok(),
            )
        }
    };

    // Half-way through a rotation (the key not written yet): the reload keeps the
    // working certificate on both listeners.
    std::fs::write(&h.pki.cert, read(&renewed.cert)).unwrap();
    std::fs::write(&h.pki.key, b"").unwrap();
    h.server.reload_certificates().await;
    assert_eq!(answers(&h.pki).await, (true, true));

    // The whole new pair: new connections get it (what SIGHUP, or the file poller
    // within 10 s, does).
    std::fs::write(&h.pki.key, read(&renewed.key)).unwrap();
    h.server.reload_certificates().await;
    assert_eq!(answers(&renewed).await, (true, true));
    assert_eq!(answers(&h.pki).await, (false, false));
    h.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificate_files_stop_the_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let other = TestPki::new(&{
        let d = dir.path().join("other");
        std::fs::create_dir(&d).unwrap();
        d
    });
    let (stable, _t) = upstream("v1").await;
    let config = |api_tls: &str, app_tls: &str| {
        let yaml = format!(
            "listen: 127.0.0.1:0\n{api_tls}store: \"sqlite://{db}\"\n\
             apps:\n  - name: shop\n    listen: 127.0.0.1:0\n{app_tls}    \
             stable: {{version: v1, endpoints: [\"{stable}\"]}}\n",
            db = dir.path().join("fledge.db").display(),
        );
        fledge_server::config::ServerConfig::parse(&yaml, "tls.yaml").unwrap()
    };
    let start_error = |config| async move {
        match start(config, StartOptions::default()).await {
            Ok(server) => {
                server.shutdown().await;
                panic!("the server started");
            }
            Err(e) => format!("{e:#}"),
        }
    };

    let missing = dir.path().join("missing.pem");
    let api_tls = format!(
        "tls: {{cert: \"{}\", key: \"{}\"}}\n",
        missing.display(),
        pki.key.display()
    );
    let e = start_error(config(&api_tls, "")).await;
    assert!(
        e.contains("tls: cannot read the TLS certificate file") && e.contains("missing.pem"),
        "{e}"
    );

    let app_tls = format!(
        "    tls: {{cert: \"{}\", key: \"{}\"}}\n",
        pki.cert.display(),
        other.key.display()
    );
    let e = start_error(config("", &app_tls)).await;
    assert!(
        e.contains("app `shop`: tls: the key in") && e.contains("does not match the certificate"),
        "{e}"
    );
    assert!(e.contains(&other.key.display().to_string()), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_session_cookie_is_secure_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let stable = support::backend("stable", None).await;
    let canary = support::backend("canary", None).await;
    let mut config = support::config(dir.path(), "shop", &stable, &canary);
    config.tls = Some(fledge_server::config::TlsConfig {
        cert: pki.cert.clone(),
        key: pki.key.clone(),
        handshake_timeout: Duration::from_secs(10),
    });
    let server = start(
        config,
        StartOptions {
            env_tokens: Some("ops:admin:ops-token".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let login = pki
        .client()
        .post(format!(
            "https://127.0.0.1:{}/login",
            server.api_addr().port()
        ))
        .json(&serde_json::json!({"token": "ops-token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
    server.shutdown().await;
}

/// A server whose certificate is a self-signed CA certificate (what a bare
/// `openssl req -x509` makes): rustls refuses a CA as the server's own certificate
/// even when it is the `--ca-cert`, and the CLI says what to do instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_explains_a_ca_certificate_used_as_the_servers_own() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("self.pem"), dir.path().join("self.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:0\ntls: {{cert: \"{}\", key: \"{}\"}}\nstore: \"sqlite://{}\"\n",
        cert_path.display(),
        key_path.display(),
        dir.path().join("fledge.db").display(),
    );
    let config = fledge_server::config::ServerConfig::parse(&yaml, "tls.yaml").unwrap();
    let server = start(config, StartOptions::default()).await.unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["status", "--server"])
        .arg(format!("https://127.0.0.1:{}", server.api_addr().port()))
        .arg("--ca-cert")
        .arg(&cert_path)
        .env_remove("FLEDGE_SERVER")
        .env_remove("FLEDGE_TOKEN")
        .env_remove("FLEDGE_CA_CERT")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("the CLI finishes")
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CA certificate as its own") && err.contains("openssl req -x509"),
        "{err}"
    );
    server.shutdown().await;
}
