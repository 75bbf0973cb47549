//! The proxy's shell: [`ProxyHandle`] (the control plane's grip on one app's proxy)
//! and [`serve`] (the accept loop with slow-loris guards and graceful shutdown).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use fledge_stats::exposition::Page;
use fledge_stats::{ArmCounters, Observation};
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::admit::{Admit, with_handover_flag};
use crate::body::ClientBody;
use crate::client_io::ClientIo;
use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::forward::Forward;
use crate::h1_server;
use crate::mirror::MirrorQueue;
use crate::pool::{PoolConfig, Pools};
use crate::record::Record;
use crate::route::{Arm, Route};
use crate::split::Split;
use crate::stats::{AppMetrics, StatsRegistry, VersionStats};
use crate::table::RouteTable;
use crate::tls::{H2_PREFACE, Replay, read_first_bytes, tls_handshake, version_known};

/// The control plane's handle on one app's proxy: swap its route, read its counters.
///
/// Cheap to clone; every clone drives the same proxy. Reads and route changes never
/// block requests in flight.
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: ProxyConfig,
    /// The route in force, and the counters: shared with the proxy this one
    /// succeeded, or that succeeded it ([`ProxyHandle::succeed`]).
    routes: Arc<ArcSwap<RouteTable>>,
    stats: Arc<StatsRegistry>,
    // Serialises writers so a weight change cannot undo a concurrent route change
    // (shared with a successor, which writes the same route).
    update: Arc<Mutex<()>>,
    pools: Pools,
    /// The slots of copies to the canary in flight, shared by every route.
    mirrors: Arc<MirrorQueue>,
    /// The listener's TLS settings; `None` serves plain HTTP. Read once per new
    /// connection, so a change applies from the next connection on.
    tls: ArcSwapOption<rustls::ServerConfig>,
    /// Set when another process takes the listener over: HTTP/1 responses close
    /// their connections, and a stopping listener waits for its clients to leave.
    closing: Arc<AtomicBool>,
    /// The newest of the proxies that took over from one another in this process
    /// ([`ProxyHandle::hand_off_to`]), shared by all of them: route changes made
    /// through an older one's handle are made through it, and an older one's
    /// upgraded connections, counted in the series they share, outlive its listener.
    newest: Arc<Mutex<Weak<Shared>>>,
}

/// The tower stack that serves one client connection.
type ConnService = Admit<Split<Record<Forward>>>;

// === impl ProxyHandle ===

impl ProxyHandle {
    /// A proxy for `config.app`, routing by `route` until told otherwise.
    pub fn new(config: ProxyConfig, route: Route) -> Result<Self, ProxyError> {
        Self::build(config, route, None)
    }

    /// A proxy with new settings (`config`, for the same app) in `previous`'s place,
    /// on `route`. The two share their counters, so the versions' counts go on from
    /// where they were, and their route: from now on `previous`'s connections route
    /// as this proxy does (with this proxy's upstream pools), a route change through
    /// either applies to both, and an abort closes the canary's upgraded connections
    /// of both. Tell `previous` with [`hand_off_to`](Self::hand_off_to) once this
    /// one serves; should this one not serve after all,
    /// [`set_route`](Self::set_route) on `previous` routes with its own pools again.
    pub fn succeed(previous: &Self, config: ProxyConfig, route: Route) -> Result<Self, ProxyError> {
        Self::build(config, route, Some(&previous.shared))
    }

    fn build(
        config: ProxyConfig,
        route: Route,
        previous: Option<&Shared>,
    ) -> Result<Self, ProxyError> {
        config.validate()?;
        let pools = Pools::new(PoolConfig {
            connect_timeout: config.timeouts.connect,
            idle_timeout: config.timeouts.upstream_idle,
            max_idle: config.limits.max_idle_per_endpoint,
            workers: config.workers,
            protocol: config.upstream.clone(),
        });
        let mirrors = MirrorQueue::new(
            config.limits.max_mirror_in_flight,
            config.timeouts.response_headers,
        );
        let (stats, update) =
            previous.map_or_else(Default::default, |p| (p.stats.clone(), p.update.clone()));
        let writer = update.lock().unwrap_or_else(PoisonError::into_inner);
        let table = Arc::new(RouteTable::compile(route, &stats, &pools, &mirrors)?);
        let routes = match previous {
            Some(p) => {
                p.routes.store(table);
                p.routes.clone()
            }
            None => Arc::new(ArcSwap::new(table)),
        };
        drop(writer);
        let shared = Arc::new_cyclic(|me| Shared {
            config,
            routes,
            stats,
            update,
            pools,
            mirrors,
            tls: ArcSwapOption::empty(),
            closing: Arc::default(),
            newest: previous.map_or_else(|| Arc::new(Mutex::new(me.clone())), |p| p.newest.clone()),
        });
        Ok(Self { shared })
    }

    /// Hands the clients over to another process serving the same listening socket:
    /// from now on every HTTP/1 response closes its connection, so each keep-alive
    /// client reconnects (to whichever process accepts) between two requests, and a
    /// listener stopped after this waits up to `timeouts.drain` for its connections
    /// to end that way before it closes the idle rest. HTTP/2 clients get the usual
    /// GOAWAY when the listener stops.
    pub fn hand_off(&self) {
        self.shared.closing.store(true, Ordering::Relaxed);
    }

    /// Hands the clients over, as [`hand_off`](Self::hand_off) does, to `successor`,
    /// built in this proxy's place by [`succeed`](Self::succeed) and serving now. From
    /// now on a route change made through this handle, or through any older one of
    /// the same app (a grip taken before the change), is made through the
    /// successor, with its pools. This listener's upgraded connections are left
    /// open when it stops: they are counted in the series the successor goes on
    /// with, and end with their clients, their idle timeout, an abort that asks for
    /// it, or the successor's own stop.
    pub fn hand_off_to(&self, successor: &Self) {
        *self
            .shared
            .newest
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(&successor.shared);
        self.hand_off();
    }

    /// The newest proxy of this one's line, if that is another one and it lives.
    fn successor(&self) -> Option<Self> {
        let newest = self.newest().upgrade()?;
        (!Arc::ptr_eq(&newest, &self.shared)).then_some(Self { shared: newest })
    }

    /// Whether a newer proxy of this one's line took over (it may have stopped since).
    fn handed_on(&self) -> bool {
        !std::ptr::eq(self.newest().as_ptr(), Arc::as_ptr(&self.shared))
    }

    fn newest(&self) -> Weak<Shared> {
        self.shared
            .newest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The app this proxy serves.
    pub fn app(&self) -> &str {
        &self.shared.config.app
    }

    /// The settings the proxy was built with.
    pub fn config(&self) -> &ProxyConfig {
        &self.shared.config
    }

    /// Installs a new route. It applies to the next request; requests in flight
    /// finish where they were sent, and no connection is touched.
    pub fn set_route(&self, route: Route) -> Result<(), ProxyError> {
        self.update_route(|r| *r = route)
    }

    /// Changes only the canary weight (0 to 100) of the current route.
    pub fn set_canary_weight(&self, weight: u8) -> Result<(), ProxyError> {
        self.update_route(|r| r.canary_weight = weight)
    }

    /// Applies `change` to the current route and installs the result, as one step
    /// with respect to other writers (a weight change cannot undo a concurrent
    /// route change). Readers never wait.
    pub fn update_route(&self, change: impl FnOnce(&mut Route)) -> Result<(), ProxyError> {
        if let Some(next) = self.successor() {
            return next.update_route(change);
        }
        let _writer = self
            .shared
            .update
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = self.shared.routes.load_full();
        let mut route = (*old.route).clone();
        change(&mut route);
        let s = &self.shared;
        let table = RouteTable::compile(route, &s.stats, &s.pools, &s.mirrors)?;
        tracing::info!(
            app = %s.config.app,
            stable = %table.stable.version,
            canary = table.canary.as_ref().map(|c| c.version.as_str()),
            weight = table.weight,
            mirror = table.mirror.as_ref().map_or(0, |m| m.percent()),
            "route installed"
        );
        let table = Arc::new(table);
        self.shared.routes.store(table.clone());
        close_upgraded_of_left_canary(&old, &table);
        Ok(())
    }

    /// Serves new connections over TLS with `config` (which should offer ALPN `h2`
    /// and `http/1.1`), or over plain HTTP with `None`. Connections already open
    /// keep what they started with.
    pub fn set_tls(&self, config: Option<Arc<rustls::ServerConfig>>) {
        self.shared.tls.store(config);
    }

    /// Whether new connections are served over TLS.
    pub fn serves_tls(&self) -> bool {
        self.shared.tls.load().is_some()
    }

    /// The route currently in force.
    pub fn route(&self) -> Arc<Route> {
        self.shared.routes.load().route.clone()
    }

    /// Cumulative counters of `version`, over both roles (zero if never routed to).
    pub fn stats(&self, version: &str) -> ArmCounters {
        self.shared.stats.by_version(version)
    }

    /// Cumulative counters of the current stable version in the stable role and of
    /// the current canary version in the canary role (zero without a canary).
    pub fn stats_by_role(&self) -> (ArmCounters, ArmCounters) {
        let stable = self.shared.routes.load().stable.stats.snapshot();
        (stable, self.canary_stats().unwrap_or_default())
    }

    /// Cumulative counters of the current canary version in the canary role; `None`
    /// while the route has no canary.
    pub fn canary_stats(&self) -> Option<ArmCounters> {
        let table = self.shared.routes.load();
        table.canary.as_ref().map(|c| c.stats.snapshot())
    }

    /// [`stats_by_role`](Self::stats_by_role) in the judge's shape.
    pub fn observation(&self) -> Observation {
        let (stable, canary) = self.stats_by_role();
        Observation {
            stable,
            canary,
            custom: Default::default(),
        }
    }

    /// The live counters of `version` in `role`, if it has been routed to.
    pub fn version_stats(&self, version: &str, role: Arm) -> Option<Arc<VersionStats>> {
        self.shared.stats.get(version, role)
    }

    /// Writes this app's metric families to `page`. To expose several apps on one
    /// page use [`write_metrics`], which writes each family once.
    pub fn write_metrics(&self, page: &mut Page) {
        write_metrics(std::slice::from_ref(self), page);
    }

    fn connection_service(&self, client_addr: SocketAddr, tls: bool) -> ConnService {
        let s = &self.shared;
        Admit::new(
            s.config.limits.max_request_body_bytes,
            Split::new(
                s.routes.clone(),
                Record::new(Forward::new(&s.config.timeouts, client_addr, tls)),
            ),
        )
    }
}

/// A connection's service stack as hyper's server calls it: the request body hyper
/// reads becomes a [`ClientBody`].
#[derive(Debug, Clone)]
struct FromHyper<S>(S);

impl<S> tower::Service<Request<Incoming>> for FromHyper<S>
where
    S: tower::Service<Request<ClientBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> S::Future {
        self.0.call(req.map(ClientBody::from))
    }
}

/// Closes the old canary's upgraded connections if its route asked for it and the
/// new route names that version no more.
fn close_upgraded_of_left_canary(old: &RouteTable, new: &RouteTable) {
    let Some(canary) = old.canary.as_ref() else {
        return;
    };
    let named = |arm: &crate::table::Side| arm.version == canary.version;
    let still_named = named(&new.stable) || new.canary.as_deref().is_some_and(named);
    if old.route.close_upgraded_on_abort && !still_named {
        let (_, open) = canary.stats.upgraded();
        tracing::info!(version = %canary.version, open, "closing the canary's upgraded connections");
        canary.stats.close_upgraded();
    }
}

/// Writes the metric families of every app in `handles` to `page` (each family
/// declared once). The canary's weight is not among them: the server exports the
/// weight it applied, whatever the router.
pub fn write_metrics(handles: &[ProxyHandle], page: &mut Page) {
    let apps: Vec<AppMetrics<'_>> = handles
        .iter()
        .map(|h| AppMetrics {
            app: &h.shared.config.app,
            registry: &h.shared.stats,
        })
        .collect();
    crate::stats::write_metrics(&apps, page);
}

/// The length of a listener's queue of connections not yet accepted, as asked of
/// the kernel, which caps it at `net.core.somaxconn` (4096 by default since Linux
/// 5.4). A burst of clients larger than the queue is not refused but dropped: each
/// dropped client's connection waits for its SYN to be sent again, a second later.
/// The standard library and tokio ask for 128, fewer than one wrk or one busy
/// front-end opens at once; nginx asks for 511.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with a queue of [`LISTEN_BACKLOG`] connections (and
/// `SO_REUSEADDR`, as `TcpListener::bind` sets). Must be called inside a tokio
/// runtime.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves the app's proxy on `listener` until `shutdown` completes, then stops
/// accepting, lets requests in flight finish for up to `timeouts.drain`, and closes
/// what is left.
///
/// Runs on the caller's tokio runtime: a current-thread runtime gives a one-core
/// proxy, a multi-thread runtime spreads connections over its workers.
pub async fn serve(
    listener: TcpListener,
    handle: ProxyHandle,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let config = handle.config().clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.timeouts.client_headers)
        .max_buf_size(config.limits.max_request_head_bytes)
        .keep_alive(true)
        // One buffer and one `write` per response: for the small heads and bodies
        // of typical API traffic this is cheaper than queueing the body and a
        // `writev` (measured about 1% fewer instructions per request).
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(config.limits.max_request_head_bytes).unwrap_or(u32::MAX),
        )
        .max_concurrent_streams(config.limits.max_h2_streams)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    // Shared: a connection needs hyper's builder only once the own loop hands it
    // over, and a copy of it in every connection's task was 240 bytes each.
    let builder = Arc::new(builder);

    let h1 = h1_server::Settings {
        header_timeout: config.timeouts.client_headers,
        max_head_bytes: config.limits.max_request_head_bytes,
    };
    let graceful = GracefulShutdown::new();
    // Set when the drain begins: a connection that has not yet sent its first bytes
    // (or finished its TLS handshake) is closed then rather than waited for, as an
    // idle keep-alive connection is. (Its graceful watcher, taken at accept, would
    // otherwise hold the drain until the client-headers timeout.)
    let (draining, draining_rx) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let local = listener.local_addr().ok();
    tracing::info!(app = %config.app, listen = ?local, "proxy listening");

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, client_addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors or a connection reset in the backlog:
                        // back off briefly instead of spinning or giving up.
                        tracing::warn!(app = %config.app, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let tls = handle.shared.tls.load_full();
                let mut conn_svc = handle.connection_service(client_addr, tls.is_some());
                let builder = Arc::clone(&builder);
                let watcher = graceful.watcher();
                let draining = draining_rx.clone();
                let first_bytes = config.timeouts.client_headers;
                let handshake = config.timeouts.tls_handshake;
                let closing = handle.shared.closing.clone();
                conns.spawn(with_handover_flag(closing, async move {
                    // The connection, open and with its version known: served by the
                    // own HTTP/1.1 loop first, and by hyper's server from the first
                    // request the loop does not take (or from the start for HTTP/2).
                    let own_loop = match tls {
                        None => {
                            let opening = wait_for_first_bytes(&stream, first_bytes);
                            let Some(Some(h2)) = until_draining(draining.clone(), opening).await else {
                                return;
                            };
                            if h2 {
                                Err(Replay::new(Bytes::new(), ClientIo::Tcp(stream).halves()))
                            } else {
                                Ok(ClientIo::Tcp(stream))
                            }
                        }
                        // Boxed: the handshake's state (over 9 KiB, most of it
                        // rustls') is given back once it is done, and a plain
                        // connection's task is not sized for it.
                        Some(tls) => {
                            let acceptor = TlsAcceptor::from(tls);
                            let opened = Box::pin(until_draining(draining.clone(), async {
                                let mut stream = match tls_handshake(&acceptor, stream, handshake).await {
                                    Ok(s) => s,
                                    Err(e) => {
                                        tracing::debug!(%client_addr, error = %e, "TLS connection refused");
                                        return None;
                                    }
                                };
                                // HTTP/2 by ALPN: its preface is awaited under the
                                // deadline that the own loop keeps for HTTP/1.1 heads.
                                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                                let head = if h2 {
                                    Some(read_first_bytes(&mut stream, first_bytes).await?)
                                } else {
                                    None
                                };
                                Some((Box::new(stream), head))
                            }));
                            let Some(Some((stream, head))) = opened.await else {
                                return;
                            };
                            match head {
                                Some(head) => Err(Replay::new(head, ClientIo::Tls(stream).halves())),
                                None => Ok(ClientIo::Tls(stream)),
                            }
                        }
                    };
                    let io = match own_loop {
                        // The watcher stays held while the own loop serves: the drain
                        // waits for this connection as for hyper's.
                        Ok(io) => match h1_server::serve(io, &mut conn_svc, h1, &draining).await {
                            Ok(h1_server::Ended::Closed) => return,
                            Ok(h1_server::Ended::HandedOver(io)) => io,
                            Err(e) => {
                                tracing::debug!(%client_addr, error = %e, "client connection ended with an error");
                                return;
                            }
                        },
                        Err(io) => io,
                    };
                    let svc = TowerToHyperService::new(FromHyper(conn_svc));
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc).into_owned();
                    if let Err(e) = Box::pin(watcher.watch(conn)).await {
                        tracing::debug!(%client_addr, error = %e, "client connection ended with an error");
                    }
                }));
            }
        }
    }

    drop(listener);
    tracing::info!(app = %config.app, open = conns.len(), "proxy draining");
    let deadline = Instant::now() + config.timeouts.drain;
    if handle.shared.closing.load(Ordering::Relaxed) {
        // Handed over: each client leaves after its next response; the ones still
        // here at half the drain time are idle, and are closed below.
        let linger = tokio::time::sleep(config.timeouts.drain / 2);
        tokio::pin!(linger);
        loop {
            tokio::select! {
                () = &mut linger => break,
                next = conns.join_next() => if next.is_none() { break },
            }
        }
    }
    draining.send_replace(true);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!(app = %config.app, "drain deadline passed; closing remaining connections");
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    // Upgraded connections have no end of their own to wait for; a successor's
    // own stop closes them.
    if !handle.handed_on() {
        handle.shared.stats.close_all_upgraded();
    }
    tracing::info!(app = %config.app, "proxy stopped");
    Ok(())
}

/// `opening` (a connection's first bytes or TLS handshake), or `None` once the
/// listener drains.
async fn until_draining<T>(
    mut draining: tokio::sync::watch::Receiver<bool>,
    opening: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        opened = opening => Some(opened),
        _ = draining.wait_for(|d| *d) => None,
    }
}

/// Waits until the client has sent enough to tell HTTP/1.1 from an h2c preface:
/// whether it is h2c, or `None` if it sent too little in time or closed.
///
/// hyper-util's version sniffing has no deadline of its own, and HTTP/1.1's header
/// timeout starts only after it: without this a client that connects and sends
/// nothing (or an h2 preface a byte at a time) would hold a connection forever.
async fn wait_for_first_bytes(stream: &TcpStream, limit: Duration) -> Option<bool> {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return None,
        };
        if n == 0 {
            return None;
        }
        if version_known(&buf[..n]) {
            return Some(buf[..n] == *H2_PREFACE);
        }
        // A partial h2 preface: peek returns at once while bytes are buffered, so
        // poll gently until the rest arrives or the deadline passes.
        let next = (Instant::now() + Duration::from_millis(10)).min(deadline);
        tokio::time::sleep_until(next).await;
        if Instant::now() >= deadline {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_route_set_through_a_handed_off_proxy_is_its_successors() {
        let route = Route::stable_only("v1", vec!["127.0.0.1:1".to_owned()]);
        let old = ProxyHandle::new(ProxyConfig::new("shop"), route.clone()).unwrap();
        let mut config = ProxyConfig::new("shop");
        config.timeouts.connect = Duration::from_millis(123);
        let new = ProxyHandle::succeed(&old, config, route).unwrap();
        let connect_timeouts = |h: &ProxyHandle| -> Vec<Duration> {
            let table = h.shared.routes.load();
            let pools = table.stable.endpoints();
            pools.iter().map(|p| p.config.connect_timeout).collect()
        };
        assert_eq!(
            connect_timeouts(&old),
            [Duration::from_millis(123)],
            "one route"
        );

        // A writer still holding the old handle, once the successor serves.
        old.hand_off_to(&new);
        let moved = Route::stable_only("v2", vec!["127.0.0.1:2".to_owned()]);
        old.set_route(moved).unwrap();
        assert_eq!(new.route().stable.version, "v2");
        assert_eq!(
            connect_timeouts(&new),
            [Duration::from_millis(123)],
            "compiled with the successor's pools"
        );
        assert!(
            old.version_stats("v2", Arm::Stable).is_some(),
            "one set of counters"
        );

        // A second change: the first handle still reaches the newest proxy, even once
        // the one in between is gone.
        let mut config = ProxyConfig::new("shop");
        config.timeouts.connect = Duration::from_millis(456);
        let newer = ProxyHandle::succeed(&new, config, (*new.route()).clone()).unwrap();
        new.hand_off_to(&newer);
        drop(new);
        old.set_route(Route::stable_only("v3", vec!["127.0.0.1:3".to_owned()]))
            .unwrap();
        assert_eq!(newer.route().stable.version, "v3");
        assert_eq!(connect_timeouts(&newer), [Duration::from_millis(456)]);
    }
}
