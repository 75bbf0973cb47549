//! `fledge dataplane`: the proxies in a process of their own. It serves the routes
//! its control process hands it over a Unix socket, and goes on serving the last
//! ones while no control process is there (crashed, restarting or upgrading).
//!
//! Started with `--take-over`, it upgrades a running data plane without closing a
//! port: it asks the old process for its apps and listening sockets, serves them,
//! moves the control socket over to itself, and tells the old process, which then
//! stops accepting and lets its clients move over (each HTTP/1 connection closes
//! after its next response) before it exits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use anyhow::Context as _;
use fledge_proxy::Workers;
use fledge_stats::exposition::{Format, Page};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, watch};

use super::fds;
use super::wire::{self, Hello, Reply, Request, Serving, Start, exchange};
use crate::builtin::BuiltinProxy;

/// How a data-plane process runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The control socket (created mode 0600).
    pub socket: PathBuf,
    /// Proxy worker threads.
    pub workers: usize,
    /// Take the apps and ports of the data plane now serving `socket`.
    pub take_over: bool,
}

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Running,
    /// Stop every proxy (draining) and remove the socket.
    Stop,
    /// Another process serves the ports now: let the clients move over.
    HandedOver,
}

struct Plane {
    workers: Workers,
    apps: Mutex<BTreeMap<String, App>>,
    /// Raised by each control process's `Hello`: only the newest may change things.
    epoch: AtomicU64,
    /// How many control connections are open.
    controls: AtomicUsize,
    /// Set while a new process takes over: nothing may change until it has.
    handing_over: AtomicBool,
    exit: watch::Sender<Exit>,
}

struct App {
    start: Start,
    proxy: BuiltinProxy,
}

/// Runs the data plane until `Shutdown`, SIGTERM or SIGINT (every proxy drains) or
/// until a newer process has taken over.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let workers = Workers::start(opts.workers)
        .map_err(|e| anyhow::anyhow!("cannot start the proxy's worker threads: {e}"))?;
    let plane = Arc::new(Plane {
        workers,
        apps: Mutex::default(),
        epoch: AtomicU64::new(0),
        controls: AtomicUsize::new(0),
        handing_over: AtomicBool::new(false),
        exit: watch::Sender::new(Exit::Running),
    });
    let old = if opts.take_over {
        Some(take_over(&plane, &opts.socket).await?)
    } else {
        refuse_if_served(&opts.socket).await?;
        None
    };
    let listener = bind_socket(&opts.socket)?;
    let inode = std::fs::metadata(&opts.socket)?.ino();
    std::fs::write(pid_path(&opts.socket), format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write {}", pid_path(&opts.socket).display()))?;
    if let Some(mut old) = old {
        // The ports and the socket are ours: the old process may go.
        wire::write_frame(&mut old, &Request::TakenOver).await?;
        let _ = wire::read_frame::<Reply>(&mut old).await;
    }
    tracing::info!(socket = %opts.socket.display(), pid = std::process::id(),
        workers = plane.workers.len(), build = wire::build_id(), "data plane serving");

    let mut exit = plane.exit.subscribe();
    let signal = crate::signals::stop_requested();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => { plane.exit.send_replace(Exit::Stop); }
            _ = exit.changed() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { tokio::spawn(serve_control(plane.clone(), stream)); }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
        if *exit.borrow() != Exit::Running {
            break;
        }
    }
    let how = *exit.borrow();
    drop(listener);
    let apps = std::mem::take(&mut *plane.apps.lock().await);
    let stops = apps.into_values().map(|app| async move {
        if how == Exit::HandedOver {
            app.proxy.hand_off().await;
        } else {
            app.proxy.stop().await;
        }
    });
    futures::future::join_all(stops).await;
    // A newer process owns the path now unless it is still the file this one made.
    if how == Exit::Stop && std::fs::metadata(&opts.socket).is_ok_and(|m| m.ino() == inode) {
        let _ = std::fs::remove_file(&opts.socket);
        let _ = std::fs::remove_file(pid_path(&opts.socket));
    }
    tracing::info!(handed_over = how == Exit::HandedOver, "data plane stopped");
    Ok(())
}

/// Where the data plane serving `socket` writes its process id.
pub fn pid_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".pid");
    PathBuf::from(name)
}

/// Waits until process `pid` has exited (a zombie not yet reaped counts as exited:
/// its sockets are closed). Read from `/proc`; where there is none, returns at once.
pub async fn exited(pid: u32) {
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    if !Path::new("/proc/self/stat").exists() {
        return;
    }
    loop {
        let Ok(text) = std::fs::read_to_string(&stat) else {
            return;
        };
        // "pid (comm) S ...": the state follows the last ')' (comm may hold one).
        let state = text
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if matches!(state, None | Some('Z' | 'X')) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Fails when a live data plane answers on `socket`; removes a stale socket file.
async fn refuse_if_served(socket: &Path) -> anyhow::Result<()> {
    if let Ok(mut stream) = UnixStream::connect(socket).await {
        let hello = Request::Hello { control: false };
        let asked = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            exchange(&mut stream, &hello),
        );
        let pid = match asked.await {
            Ok(Ok(Reply::Hello(h))) => h.pid.to_string(),
            _ => "unknown, not answering".to_owned(),
        };
        anyhow::bail!(
            "a data plane (pid {pid}) already serves {}; upgrade it with `fledge dataplane \
             --take-over` or stop it first",
            socket.display()
        );
    }
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove the stale socket {}", socket.display()))
        }
        _ => Ok(()),
    }
}

/// Binds the control socket readable and writable by this user only: whoever can
/// connect can move traffic. Bound under a temporary name and renamed into place,
/// so a connecting control process finds either the old data plane or this one.
fn bind_socket(socket: &Path) -> anyhow::Result<UnixListener> {
    let mut tmp = socket.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).with_context(|| format!("cannot listen on {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, socket)
        .with_context(|| format!("cannot move the control socket to {}", socket.display()))?;
    Ok(listener)
}

/// Takes the apps and listening sockets of the data plane serving `socket`, and
/// serves them; returns the connection to the old process, to tell it when to go.
async fn take_over(plane: &Plane, socket: &Path) -> anyhow::Result<UnixStream> {
    let mut stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("no data plane to take over at {}", socket.display()))?;
    let apps = match exchange(&mut stream, &Request::Handover).await? {
        Reply::Handover { apps } => apps,
        Reply::Error { message } => anyhow::bail!("the data plane refused the handover: {message}"),
        other => anyhow::bail!("unexpected answer to a handover: {other:?}"),
    };
    let std_stream = stream.into_std()?;
    std_stream.set_nonblocking(false)?;
    let count = apps.len();
    let (std_stream, sockets) = tokio::task::spawn_blocking(move || {
        let sockets = if count == 0 {
            Vec::new()
        } else {
            fds::receive(&std_stream, count)?
        };
        Ok::<_, std::io::Error>((std_stream, sockets))
    })
    .await??;
    let mut served = plane.apps.lock().await;
    for (start, fd) in apps.into_iter().zip(sockets) {
        let listener = std::net::TcpListener::from(fd);
        let proxy = BuiltinProxy::adopt(
            &plane.workers,
            &start.app,
            listener,
            &start.settings,
            &start.route,
        )?;
        tracing::info!(app = %start.app, addr = %proxy.addr(), "listener taken over");
        served.insert(start.app.clone(), App { start, proxy });
    }
    std_stream.set_nonblocking(true)?;
    Ok(UnixStream::from_std(std_stream)?)
}

/// Serves one control connection, a request at a time.
async fn serve_control(plane: Arc<Plane>, mut stream: UnixStream) {
    /// Counts a control connection in `Plane::controls` while it is open.
    struct Control(Arc<Plane>);
    impl Control {
        fn new(plane: Arc<Plane>) -> Self {
            plane.controls.fetch_add(1, Ordering::SeqCst);
            Self(plane)
        }
    }
    impl Drop for Control {
        fn drop(&mut self) {
            self.0.controls.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let mut control = None;
    let mut epoch = 0;
    let mut exit = plane.exit.subscribe();
    loop {
        // Once taken over (or stopping), every control connection closes at once,
        // so a control process reconnects to the new data plane on the same path
        // instead of waiting for this one to drain.
        let read = tokio::select! {
            read = wire::read_frame::<Request>(&mut stream) => read,
            _ = exit.wait_for(|e| *e != Exit::Running) => return,
        };
        let request = match read {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "bad request on the control socket");
                let _ = wire::write_frame(&mut stream, &refused(e)).await;
                return;
            }
        };
        if matches!(request, Request::Handover) {
            hand_over(&plane, stream).await;
            return;
        }
        if let Request::Hello { control: true } = request {
            epoch = plane.epoch.fetch_add(1, Ordering::SeqCst) + 1;
            control.get_or_insert_with(|| Control::new(plane.clone()));
        }
        let reply = match answer(&plane, epoch, request).await {
            Ok(reply) => reply,
            Err(e) => refused(format!("{e:#}")),
        };
        if wire::write_frame(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}

fn refused(e: impl std::fmt::Display) -> Reply {
    Reply::Error {
        message: e.to_string(),
    }
}

async fn answer(plane: &Plane, epoch: u64, request: Request) -> anyhow::Result<Reply> {
    let changes = !matches!(
        request,
        Request::Hello { .. }
            | Request::Shutdown
            | Request::Current { .. }
            | Request::Counts { .. }
            | Request::CanaryCounts { .. }
            | Request::Metrics { .. }
    );
    if changes {
        let newest = plane.epoch.load(Ordering::SeqCst);
        anyhow::ensure!(
            epoch != 0,
            "only a control process that said hello changes routes"
        );
        anyhow::ensure!(
            epoch == newest,
            "superseded: a newer control process is connected to this data plane"
        );
        anyhow::ensure!(
            !plane.handing_over.load(Ordering::SeqCst),
            "a new data-plane process is taking over; try again in a moment"
        );
    }
    let app_of =
        |apps: &BTreeMap<String, App>, app: &str| -> anyhow::Result<fledge_proxy::ProxyHandle> {
            apps.get(app)
                .map(|a| a.proxy.handle().clone())
                .with_context(|| format!("the data plane serves no app `{app}`"))
        };
    Ok(match request {
        Request::Hello { .. } => {
            let apps = plane.apps.lock().await;
            Reply::Hello(Hello {
                pid: std::process::id(),
                build: wire::build_id().to_owned(),
                workers: plane.workers.len(),
                apps: apps
                    .values()
                    .map(|a| Serving {
                        app: a.start.app.clone(),
                        addr: a.proxy.addr(),
                    })
                    .collect(),
                controlled: plane.controls.load(Ordering::SeqCst) > 0,
            })
        }
        Request::Start(start) => {
            let addr = start_app(plane, start).await?;
            Reply::Started { addr }
        }
        Request::Route { app, route } => {
            let mut apps = plane.apps.lock().await;
            let handle = app_of(&apps, &app)?;
            handle.set_route(route.clone())?;
            if let Some(a) = apps.get_mut(&app) {
                a.start.route = route;
            }
            Reply::Done
        }
        Request::Current { app } => {
            let handle = app_of(&*plane.apps.lock().await, &app)?;
            Reply::Route {
                route: (*handle.route()).clone(),
            }
        }
        Request::Counts { app, versions } => {
            let handle = app_of(&*plane.apps.lock().await, &app)?;
            Reply::Counts {
                counts: versions.iter().map(|v| handle.stats(v)).collect(),
            }
        }
        Request::CanaryCounts { app } => {
            let handle = app_of(&*plane.apps.lock().await, &app)?;
            Reply::Canary {
                counts: handle.canary_stats(),
            }
        }
        Request::ReloadCertificates { force } => {
            for (name, app) in plane.apps.lock().await.iter() {
                match app.proxy.reload_certificate(name, force) {
                    Ok(true) => tracing::info!(app = %name, "proxy certificate reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(app = %name, error = %format!("{e:#}"),
                        "cannot reload the proxy certificate; keeping the current one"),
                }
            }
            Reply::Done
        }
        Request::Metrics { openmetrics } => {
            let handles: Vec<_> = plane
                .apps
                .lock()
                .await
                .values()
                .map(|a| a.proxy.handle().clone())
                .collect();
            let mut page = Page::new(if openmetrics {
                Format::OpenMetrics
            } else {
                Format::PrometheusText
            });
            fledge_proxy::write_metrics(&handles, &mut page);
            Reply::Text {
                text: page.families(),
            }
        }
        Request::Stop { app } => {
            let removed = plane.apps.lock().await.remove(&app);
            if let Some(a) = removed {
                a.proxy.stop().await;
            }
            Reply::Done
        }
        Request::Retain { apps } => {
            let gone: Vec<App> = {
                let mut served = plane.apps.lock().await;
                let names: Vec<String> = served
                    .keys()
                    .filter(|k| !apps.contains(k))
                    .cloned()
                    .collect();
                names.iter().filter_map(|n| served.remove(n)).collect()
            };
            for app in gone {
                tracing::info!(app = %app.start.app, "app no longer configured; its proxy stops");
                app.proxy.stop().await;
            }
            Reply::Done
        }
        Request::Shutdown => {
            plane.exit.send_replace(Exit::Stop);
            Reply::Done
        }
        Request::Handover | Request::TakenOver => {
            anyhow::bail!("only a data-plane process hands over or takes over")
        }
    })
}

/// Serves `start`: keeps a running listener whose address and settings are the
/// ones asked for (a new certificate is taken without closing it), else binds
/// anew; a listener on the same address is closed first and its bound address
/// kept (port 0 stays the port it got).
async fn start_app(plane: &Plane, start: Start) -> anyhow::Result<SocketAddr> {
    let mut apps = plane.apps.lock().await;
    if let Some(app) = apps.get_mut(&start.app)
        && app.start.listen == start.listen
    {
        let same_but_tls = crate::builtin::ProxySettings {
            tls: start.settings.tls.clone(),
            ..app.start.settings.clone()
        };
        if same_but_tls == start.settings {
            app.proxy.handle().set_route(start.route.clone())?;
            if app.start.settings.tls != start.settings.tls {
                app.proxy.set_tls(&start.app, start.settings.tls.as_ref())?;
            }
            app.start = start;
            return Ok(app.proxy.addr());
        }
    }
    let proxy = match apps.remove(&start.app) {
        // A new address: bound before the old one closes, which keeps serving if
        // the new one cannot start.
        Some(old) if start.listen != old.start.listen && start.listen != old.proxy.addr() => {
            match begin(plane, start.listen, &start).await {
                Ok(proxy) => {
                    old.proxy.stop().await;
                    proxy
                }
                Err(e) => {
                    apps.insert(start.app.clone(), old);
                    return Err(e);
                }
            }
        }
        // New settings on the same address: a new listener on the same socket, and
        // the old one as it was if the new one cannot start.
        Some(old) => {
            match old
                .proxy
                .restart(&plane.workers, &start.app, &start.settings, &start.route)
            {
                Ok(proxy) => proxy,
                Err((e, proxy)) => {
                    let old = App {
                        start: old.start,
                        proxy,
                    };
                    apps.insert(start.app.clone(), old);
                    return Err(e);
                }
            }
        }
        None => begin(plane, start.listen, &start).await?,
    };
    let addr = proxy.addr();
    apps.insert(start.app.clone(), App { start, proxy });
    Ok(addr)
}

/// Starts `start`'s proxy on `listen`.
async fn begin(plane: &Plane, listen: SocketAddr, start: &Start) -> anyhow::Result<BuiltinProxy> {
    BuiltinProxy::start(
        &plane.workers,
        &start.app,
        listen,
        &start.settings,
        &start.route,
    )
    .await
}

/// Gives a new data-plane process every app and its listening socket, then waits
/// for it to say it serves them; keeps serving (and changing) as before if it
/// never does.
async fn hand_over(plane: &Arc<Plane>, stream: UnixStream) {
    plane.handing_over.store(true, Ordering::SeqCst);
    let result = async {
        let apps = plane.apps.lock().await;
        let starts: Vec<Start> = apps
            .values()
            .map(|a| Start {
                route: (*a.proxy.handle().route()).clone(),
                ..a.start.clone()
            })
            .collect();
        let sockets = apps
            .values()
            .map(|a| a.proxy.socket())
            .collect::<std::io::Result<Vec<_>>>()?;
        drop(apps);
        let mut stream = stream;
        wire::write_frame(&mut stream, &Reply::Handover { apps: starts }).await?;
        let std_stream = stream.into_std()?;
        std_stream.set_nonblocking(false)?;
        let std_stream = tokio::task::spawn_blocking(move || {
            let fds: Vec<_> = sockets.iter().map(|s| s.as_fd()).collect();
            if !fds.is_empty() {
                fds::send(&std_stream, &fds)?;
            }
            Ok::<_, std::io::Error>(std_stream)
        })
        .await
        .map_err(std::io::Error::other)??;
        std_stream.set_nonblocking(true)?;
        let mut stream = UnixStream::from_std(std_stream)?;
        match wire::read_frame::<Request>(&mut stream).await? {
            Some(Request::TakenOver) => {
                let _ = wire::write_frame(&mut stream, &Reply::Done).await;
                Ok(())
            }
            other => Err(anyhow::anyhow!(
                "the new data plane did not take over ({other:?})"
            )),
        }
    }
    .await;
    match result {
        Ok(()) => {
            tracing::info!("a new data plane took over; letting the clients move over");
            plane.exit.send_replace(Exit::HandedOver);
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "handover failed; serving on");
            plane.handing_over.store(false, Ordering::SeqCst);
        }
    }
}
