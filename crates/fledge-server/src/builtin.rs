//! The built-in proxy's listeners: one per app, started from the app's settings
//! (timeouts, TLS, upstream protocol) on a route mapped from what the app must
//! serve. It is the one router that serves every routing rule of a spec (match
//! rules, stickiness and copies of requests to the canary). The `dataplane` module
//! makes it a `TrafficRouter` and a `MetricSource` (the traits of
//! `fledge_providers`, which every other router and metric source implements too),
//! in this process or in a data-plane process of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use fledge_providers::router::{Desired, Upstreams};
use fledge_proxy::{
    Arm, MatchOn, MatchRule, MirrorPolicy, ProxyConfig, ProxyHandle, Route, Serving, Stickiness,
    UpstreamGroup, Workers,
};

use fledge_spec::{StickyKey, Target};

use super::tls::ListenerCert;
use crate::config::{AppTimeouts, TlsConfig, UpstreamConfig, UpstreamProtocol};

/// One app's running proxy listener.
#[derive(Debug)]
pub struct BuiltinProxy {
    handle: ProxyHandle,
    cert: Option<Arc<ListenerCert>>,
    addr: SocketAddr,
    serving: Serving,
    /// The listening socket, kept to hand over to another process.
    socket: std::net::TcpListener,
}

/// What a proxy listener is started with besides its address and route: the app's
/// timeouts, TLS listener settings and upstream protocol (see `config::AppConfig`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxySettings {
    pub timeouts: AppTimeouts,
    pub tls: Option<TlsConfig>,
    pub upstream: UpstreamConfig,
}

impl ProxySettings {
    /// An app's proxy settings.
    pub fn of(app: &crate::config::AppConfig) -> Self {
        Self {
            timeouts: app.timeouts,
            tls: app.tls.clone(),
            upstream: app.upstream.clone(),
        }
    }
}

/// The handle (on `route`) and certificate of a listener about to start, in
/// `previous`'s place if given (`ProxyHandle::succeed`); a bad certificate or CA
/// file fails here, before any socket or route is touched.
fn prepare(
    workers: &Workers,
    app: &str,
    settings: &ProxySettings,
    route: &Route,
    previous: Option<&ProxyHandle>,
) -> anyhow::Result<(ProxyHandle, Option<Arc<ListenerCert>>)> {
    let mut config = ProxyConfig {
        timeouts: proxy_timeouts(&settings.timeouts),
        workers: workers.len(),
        upstream: upstream_protocol(&settings.upstream)
            .map_err(|e| anyhow::anyhow!("app `{app}`: {e:#}"))?,
        ..ProxyConfig::new(app)
    };
    if let Some(t) = &settings.tls {
        config.timeouts.tls_handshake = t.handshake_timeout;
    }
    let cert = settings
        .tls
        .as_ref()
        .map(|t| load_cert(app, t))
        .transpose()?;
    let handle = match previous {
        Some(previous) => ProxyHandle::succeed(previous, config, route.clone()),
        None => ProxyHandle::new(config, route.clone()),
    }
    .map_err(|e| anyhow::anyhow!("app `{app}`: {e}"))?;
    handle.set_tls(cert.as_ref().map(|c| c.config()));
    Ok((handle, cert))
}

// === impl BuiltinProxy ===

impl BuiltinProxy {
    /// Binds `listen` and starts proxying with `route` on `workers`, waiting on
    /// upstreams and clients as long as `timeouts` allow, over TLS when `tls` names
    /// a certificate (whose files are read first, so a bad one binds nothing), and
    /// speaking to the upstreams as `upstream` says (its CA file read first too).
    pub async fn start(
        workers: &Workers,
        app: &str,
        listen: SocketAddr,
        settings: &ProxySettings,
        route: &Route,
    ) -> anyhow::Result<Self> {
        let (handle, cert) = prepare(workers, app, settings, route, None)?;
        let listener = fledge_proxy::bind(listen)
            .map_err(|e| anyhow::anyhow!("app `{app}`: cannot listen on {listen}: {e}"))?;
        Self::serve(workers, app, listener.into_std()?, handle, cert)
    }

    /// Starts proxying on a listening socket bound elsewhere (another process's,
    /// handed over), like [`start`](Self::start) otherwise.
    pub fn adopt(
        workers: &Workers,
        app: &str,
        listener: std::net::TcpListener,
        settings: &ProxySettings,
        route: &Route,
    ) -> anyhow::Result<Self> {
        let (handle, cert) = prepare(workers, app, settings, route, None)?;
        Self::serve(workers, app, listener, handle, cert)
    }

    fn serve(
        workers: &Workers,
        app: &str,
        listener: std::net::TcpListener,
        handle: ProxyHandle,
        cert: Option<Arc<ListenerCert>>,
    ) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let socket = listener.try_clone()?;
        let serving = workers
            .serve(listener, &handle)
            .map_err(|e| anyhow::anyhow!("app `{app}`: cannot serve {addr}: {e}"))?;
        tracing::info!(app, %addr, tls = handle.serves_tls(), "proxy listening");
        Ok(Self {
            handle,
            cert,
            addr,
            serving,
            socket,
        })
    }

    /// Serves new connections with `tls` (plain HTTP with `None`); open ones keep
    /// theirs. The handshake timeout stays the one the listener started with.
    pub fn set_tls(&mut self, app: &str, tls: Option<&TlsConfig>) -> anyhow::Result<()> {
        let cert = tls.map(|t| load_cert(app, t)).transpose()?;
        self.handle.set_tls(cert.as_ref().map(|c| c.config()));
        self.cert = cert;
        tracing::info!(
            app,
            tls = self.handle.serves_tls(),
            "proxy TLS settings changed"
        );
        Ok(())
    }

    /// Reads the certificate files again if they changed (always with `force`) and
    /// serves new connections with the result; `Ok(true)` when that happened. An
    /// error keeps the current certificate.
    pub fn reload_certificate(&self, app: &str, force: bool) -> anyhow::Result<bool> {
        let Some(cert) = &self.cert else {
            return Ok(false);
        };
        let reloaded = cert
            .reload(force)
            .map_err(|e| anyhow::anyhow!("app `{app}`: tls: {e:#}"))?;
        if reloaded {
            self.handle.set_tls(Some(cert.config()));
        }
        Ok(reloaded)
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's handle (route and statistics).
    pub fn handle(&self) -> &ProxyHandle {
        &self.handle
    }

    /// A copy of the listening socket, to hand to another process.
    pub fn socket(&self) -> std::io::Result<std::net::TcpListener> {
        self.socket.try_clone()
    }

    /// Stops accepting, lets in-flight requests drain, and waits for the listener.
    pub async fn stop(self) {
        close(self.serving, self.socket).await;
    }

    /// Serves `route` with new `settings` (timeouts, upstream protocol, TLS) in this
    /// listener's place, on the same listening socket: the port never closes, so no
    /// connection is refused or reset while the settings change. Connections
    /// accepted from now on get the new settings. The ones accepted before keep the
    /// old client-side settings and move over as clients do to a new data plane
    /// ([`hand_off`](Self::hand_off)): each HTTP/1 connection closes after its next
    /// response, the idle rest at half the drain time; that drain goes on in a task
    /// of its own (on the caller's runtime) after this returns. Meanwhile their
    /// requests go by the new route and upstream settings. The counters go on (the
    /// two listeners share them), and upgraded connections (WebSockets) stay open.
    /// The new settings' files are read first, so a bad one leaves this listener
    /// serving untouched, and comes back with the error.
    pub fn restart(
        self,
        workers: &Workers,
        app: &str,
        settings: &ProxySettings,
        route: &Route,
    ) -> Result<Self, (anyhow::Error, Self)> {
        // Both accept for a moment; whichever takes a connection serves it.
        let socket = match self.socket.try_clone() {
            Ok(socket) => socket,
            Err(e) => {
                return Err((
                    anyhow::anyhow!("app `{app}`: cannot copy the listening socket: {e}"),
                    self,
                ));
            }
        };
        let route_before = self.handle.route();
        let (handle, cert) = match prepare(workers, app, settings, route, Some(&self.handle)) {
            Ok(prepared) => prepared,
            Err(e) => return Err((e, self)),
        };
        let new = match Self::serve(workers, app, socket, handle, cert) {
            Ok(new) => new,
            Err(e) => {
                // Back to this listener's own pools.
                if let Err(back) = self.handle.set_route((*route_before).clone()) {
                    tracing::error!(app, error = %back, "cannot route as before");
                }
                return Err((e, self));
            }
        };
        self.handle.hand_off_to(&new.handle);
        let app = app.to_owned();
        tokio::spawn(async move {
            self.stop().await;
            tracing::debug!(app, "the listener with the old settings has drained");
        });
        Ok(new)
    }

    /// Stops accepting once another listener (a new data plane's, or one with new
    /// settings) serves the same socket, and lets the clients move over: each
    /// HTTP/1 connection closes after its next response, and the idle rest close at
    /// half the drain time (`ProxyHandle::hand_off`).
    pub async fn hand_off(self) {
        self.handle.hand_off();
        self.stop().await;
    }
}

/// Lets go of a listener's socket, stops accepting on it and drains it.
async fn close(serving: Serving, socket: std::net::TcpListener) {
    drop(socket);
    if let Err(e) = serving.stop().await {
        tracing::error!(error = %e, "proxy listener failed");
    }
}

/// The proxy's certificate: both HTTP versions offered by ALPN.
fn load_cert(app: &str, tls: &TlsConfig) -> anyhow::Result<Arc<ListenerCert>> {
    ListenerCert::load(tls, &[super::tls::ALPN_H2, super::tls::ALPN_HTTP1])
        .map(Arc::new)
        .map_err(|e| anyhow::anyhow!("app `{app}`: tls: {e:#}"))
}

/// What the proxy speaks to the upstreams: TLS trusts the CA file's certificates,
/// or the system's roots when there is none.
pub fn upstream_protocol(
    upstream: &UpstreamConfig,
) -> anyhow::Result<fledge_proxy::UpstreamProtocol> {
    let tls = match upstream.protocol {
        UpstreamProtocol::Http1 => return Ok(fledge_proxy::UpstreamProtocol::Http1),
        UpstreamProtocol::H2c => return Ok(fledge_proxy::UpstreamProtocol::H2c),
        UpstreamProtocol::Tls => upstream.tls.clone().unwrap_or_default(),
    };
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        Some(ca) => {
            for cert in super::tls::read_chain(ca).context("upstream.tls.ca")? {
                roots.add(cert).map_err(|e| {
                    anyhow::anyhow!(
                        "upstream.tls.ca: {} holds a certificate rustls cannot use: {e}",
                        ca.display()
                    )
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "a system root certificate could not be read");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                anyhow::bail!(
                    "upstream.tls: no system root certificate found (install the \
                     ca-certificates package, or name a PEM file in upstream.tls.ca)"
                );
            }
        }
    }
    let tls = fledge_proxy::UpstreamTls::new(roots, tls.server_name.as_deref())?;
    Ok(fledge_proxy::UpstreamProtocol::Tls(tls))
}

/// The proxy's route for what an app must serve: the spec's rules in the proxy's
/// own terms (a match rule without exactly one of header and cookie, which the spec
/// refuses, is left out).
pub fn proxy_route(desired: &Desired) -> Route {
    let group = |u: &Upstreams| UpstreamGroup {
        version: u.version.clone(),
        endpoints: u.endpoints.clone(),
    };
    let stickiness = desired
        .rules
        .stickiness
        .as_ref()
        .and_then(|s| match s.key()? {
            StickyKey::Cookie { name, .. } => Some(Stickiness::Cookie {
                name: name.to_owned(),
            }),
            StickyKey::Header(name) => Some(Stickiness::Header {
                name: name.to_owned(),
            }),
        });
    let match_rules = desired
        .rules
        .matches
        .iter()
        .filter_map(|m| {
            let on = match (&m.header, &m.cookie) {
                (Some(h), None) => MatchOn::Header { name: h.clone() },
                (None, Some(c)) => MatchOn::Cookie { name: c.clone() },
                _ => return None,
            };
            Some(MatchRule {
                on,
                value: m.value.clone(),
                target: match m.target {
                    Target::Canary => Arm::Canary,
                    Target::Stable => Arm::Stable,
                },
            })
        })
        .collect();
    Route {
        stable: group(&desired.stable),
        canary: desired.canary.as_ref().map(group),
        canary_weight: desired.canary_weight.min(100),
        stickiness,
        match_rules,
        close_upgraded_on_abort: desired.rules.close_upgraded_on_abort,
        mirror: desired
            .rules
            .mirror
            .as_ref()
            .filter(|_| desired.mirror > 0)
            .map(|m| MirrorPolicy {
                percent: desired.mirror.min(100),
                methods: m.mirroring.methods.clone(),
                max_body_bytes: m.mirroring.max_body_bytes,
            }),
    }
}

/// The proxy's timeouts with an app's values (the rest keep the proxy's defaults).
pub fn proxy_timeouts(app: &AppTimeouts) -> fledge_proxy::Timeouts {
    fledge_proxy::Timeouts {
        connect: app.connect,
        response_headers: app.response,
        client_headers: app.client_headers,
        upgraded_idle: app.upgraded_idle,
        ..fledge_proxy::Timeouts::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An upstream answering `fast` at once and `slow` (on `/slow`) after a second,
    /// saying on `arrived` when a slow request has come in.
    async fn upstream() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let (tx, arrived) = tokio::sync::mpsc::unbounded_channel();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route(
                "/slow",
                axum::routing::get(move || async move {
                    let _ = tx.send(());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    "slow"
                }),
            )
            .fallback(|| async { "fast" });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, arrived)
    }

    /// App `shop`'s proxy on one worker, with the default settings, routing every
    /// request to `upstream` as version `v1`.
    async fn start_to(upstream: SocketAddr) -> (Workers, Route, BuiltinProxy) {
        let workers = Workers::start(1).unwrap();
        let route = Route::stable_only("v1", vec![upstream.to_string()]);
        let any_port = "127.0.0.1:0".parse().unwrap();
        let proxy = BuiltinProxy::start(&workers, "shop", any_port, &defaults(), &route)
            .await
            .unwrap();
        (workers, route, proxy)
    }

    fn defaults() -> ProxySettings {
        ProxySettings {
            timeouts: AppTimeouts::default(),
            tls: None,
            upstream: UpstreamConfig::default(),
        }
    }

    /// The default settings with a response timeout of 300 ms.
    fn shorter_response() -> ProxySettings {
        let mut settings = defaults();
        settings.timeouts.response = Duration::from_millis(300);
        settings
    }

    /// One request on its own connection: the whole answer, or `None` when the
    /// connection is refused or cut.
    pub(crate) async fn get(addr: SocketAddr, path: &str) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let head = format!("GET {path} HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.ok()?;
        Some(answer)
    }

    /// One request on a kept-alive connection: the answer's head and body.
    async fn ask(stream: &mut tokio::net::TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: shop\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0; 1024];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "cut before a whole answer");
            answer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&answer).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .expect("a content-length")
                    .parse()
                    .unwrap();
                if body.len() >= length {
                    return text;
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_settings_take_the_listening_socket_over_without_refusing_a_connection() {
        let (upstream, mut arrived) = upstream().await;
        let (workers, route, proxy) = start_to(upstream).await;
        let addr = proxy.addr();
        // A keep-alive client, and a request in flight while the settings change.
        let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(ask(&mut kept).await.ends_with("fast"));
        let slow = tokio::spawn(get(addr, "/slow"));
        arrived.recv().await.unwrap();

        let proxy = proxy
            .restart(&workers, "shop", &shorter_response(), &route)
            .unwrap();
        assert_eq!(proxy.addr(), addr);
        assert!(
            !slow.is_finished(),
            "the restart does not wait for the drain"
        );
        // The new listener serves the port at once, with the new settings...
        let fast = tokio::time::timeout(Duration::from_secs(5), get(addr, "/"))
            .await
            .expect("answered in time")
            .expect("a connection during the restart is accepted");
        assert!(
            fast.starts_with("HTTP/1.1 200") && fast.ends_with("fast"),
            "{fast}"
        );
        let cut_short = get(addr, "/slow").await.expect("answered");
        assert!(
            cut_short.starts_with("HTTP/1.1 504"),
            "the new response timeout: {cut_short}"
        );
        // ... while the old one lets its clients go: the kept connection is answered
        // once more and closed, and the request in flight ends as the old settings
        // allow.
        let last = ask(&mut kept).await;
        assert!(
            last.contains("connection: close") && last.ends_with("fast"),
            "{last}"
        );
        let mut rest = Vec::new();
        assert_eq!(kept.read_to_end(&mut rest).await.unwrap(), 0, "closed");
        let slow = slow
            .await
            .unwrap()
            .expect("the request in flight is answered");
        assert!(
            slow.starts_with("HTTP/1.1 200") && slow.ends_with("slow"),
            "{slow}"
        );
        assert!(get(addr, "/").await.unwrap().ends_with("fast"));
        proxy.stop().await;
    }

    /// An upstream that answers each request on a connection of its own: `fast`,
    /// or for `upgrade: echo` a `101` and then every byte back.
    async fn echo_upstream() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut stream).await else {
                        return;
                    };
                    if !head.contains("upgrade: echo") {
                        let fast = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nfast";
                        let _ = stream.write_all(fast).await;
                        return;
                    }
                    let switch = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n";
                    let _ = stream.write_all(switch).await;
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// A message head read byte by byte (nothing after it), or `None` if the stream
    /// ends first.
    async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
        let mut head = Vec::new();
        let mut byte = [0; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.ok()?;
            head.push(byte[0]);
        }
        String::from_utf8(head).ok()
    }

    /// Sends `ping` on an upgraded connection: whether it came back.
    async fn echoes(stream: &mut tokio::net::TcpStream) -> bool {
        if stream.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut back = [0; 4];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back)).await,
            Ok(Ok(4))
        ) && &back == b"ping"
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_settings_keep_the_counts_and_the_open_websockets() {
        let upstream = echo_upstream().await;
        let (workers, route, proxy) = start_to(upstream).await;
        let addr = proxy.addr();
        for _ in 0..2 {
            assert!(get(addr, "/").await.unwrap().ends_with("fast"));
        }
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(
                b"GET /ws HTTP/1.1\r\nhost: shop\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
            )
            .await
            .unwrap();
        let head = read_head(&mut socket).await.expect("an answer");
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(echoes(&mut socket).await);

        let old = proxy.handle().clone();
        let proxy = proxy
            .restart(&workers, "shop", &shorter_response(), &route)
            .unwrap();
        assert!(get(addr, "/").await.unwrap().ends_with("fast"));
        // A route change reaches the connections the old listener still has.
        proxy
            .handle()
            .update_route(|r| r.close_upgraded_on_abort = true)
            .unwrap();
        assert!(old.route().close_upgraded_on_abort);
        // The old listener, with no request left, stops at once; the WebSocket it
        // upgraded stays open beyond that.
        for _ in 0..10 {
            assert!(
                echoes(&mut socket).await,
                "the upgraded connection stays open"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let counted = proxy.handle().stats("v1");
        assert_eq!((counted.requests, counted.errors), (4, 0), "counts go on");
        let ws = proxy
            .handle()
            .version_stats("v1", fledge_proxy::Arm::Stable)
            .unwrap();
        assert_eq!(ws.upgraded(), (1, 1), "still counted as open");

        // The new listener's stop closes it.
        proxy.stop().await;
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "closed by the stop");
        assert_eq!(ws.upgraded(), (1, 0));
    }

    #[test]
    fn the_proxy_route_carries_the_specs_rules() {
        let spec = fledge_spec::parse_spec(
            "app: shop\nversion: v2\nstages:\n  - traffic: 10\n    mirror: 30\n  - traffic: 100\n    final: true\n\
             match:\n  - header: x-tester\n    value: \"yes\"\n\
             stickiness:\n  cookie: user\ncloseUpgradedOnAbort: true\n\
             mirroring:\n  methods: [GET]\n",
            "spec",
        )
        .unwrap();
        let desired = Desired {
            stable: Upstreams::new("v1", vec!["127.0.0.1:9001".into()]),
            canary: Some(Upstreams::new("v2", vec!["127.0.0.1:9002".into()])),
            canary_weight: 10,
            mirror: 30,
            rules: crate::routes::rules_of(&spec),
        };
        let route = proxy_route(&desired);
        assert_eq!(route.canary_weight, 10);
        assert_eq!(
            route.mirror,
            Some(MirrorPolicy {
                percent: 30,
                methods: vec!["GET".into()],
                max_body_bytes: 65_536,
            })
        );
        let later = Desired {
            mirror: 0,
            ..desired
        };
        assert_eq!(proxy_route(&later).mirror, None, "a stage without copies");
        assert_eq!(route.match_rules.len(), 1);
        assert_eq!(
            route.stickiness,
            Some(Stickiness::Cookie {
                name: "user".into()
            })
        );
        assert!(route.close_upgraded_on_abort);
        assert!(
            !proxy_route(&Desired::stable_only("v1", vec!["127.0.0.1:9001".into()]))
                .close_upgraded_on_abort
        );
    }
}
