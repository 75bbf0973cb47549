//! The control process's side of a separate data plane: one connection to its
//! socket, a request at a time. Finding no data plane there, it starts one (from
//! this binary, in a process group of its own, so it outlives this process); finding
//! one of another build, it starts this build's with `--take-over`, which upgrades
//! it without closing a port. Finding a data plane that lost apps (it was restarted),
//! it starts them again with the routes last applied.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use fledge_proxy::Route;
use fledge_stats::ArmCounters;
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use super::wire::{self, Hello, Reply, Request, Start, exchange};

/// How long one exchange may take before the data plane counts as hung.
const EXCHANGE: Duration = Duration::from_secs(5);
/// How long a data plane just started has to answer on its socket.
const STARTING: Duration = Duration::from_secs(30);

/// A data plane in another process.
#[derive(Debug)]
pub struct Remote {
    socket: PathBuf,
    workers: usize,
    conn: Mutex<Option<UnixStream>>,
    /// What this process asked the data plane to serve, with the route last
    /// applied: started again on a data plane that does not serve it.
    started: std::sync::Mutex<BTreeMap<String, Start>>,
}

impl Remote {
    /// Connects to the data plane on `socket`, starting or upgrading it as needed.
    pub async fn connect(socket: PathBuf, workers: usize) -> anyhow::Result<Self> {
        let remote = Self {
            socket,
            workers,
            conn: Mutex::new(None),
            started: std::sync::Mutex::default(),
        };
        let stream = remote.establish().await?;
        *remote.conn.lock().await = Some(stream);
        Ok(remote)
    }

    /// The data plane's control socket.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    fn started(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Start>> {
        self.started.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves an app as `start` says; the address its listener has.
    pub async fn start(&self, start: Start) -> anyhow::Result<std::net::SocketAddr> {
        self.started().insert(start.app.clone(), start.clone());
        match self.call(&Request::Start(start)).await? {
            Reply::Started { addr } => Ok(addr),
            other => Err(unexpected(&other)),
        }
    }

    /// Stops serving `app`.
    pub async fn stop(&self, app: &str) -> anyhow::Result<()> {
        self.started().remove(app);
        self.call(&Request::Stop {
            app: app.to_owned(),
        })
        .await?;
        Ok(())
    }

    /// Stops every app not in `apps`.
    pub async fn retain(&self, apps: Vec<String>) -> anyhow::Result<()> {
        self.call(&Request::Retain { apps }).await?;
        Ok(())
    }

    /// Serves `route` for `app`.
    pub async fn set_route(&self, app: &str, route: Route) -> anyhow::Result<()> {
        self.call(&Request::Route {
            app: app.to_owned(),
            route: route.clone(),
        })
        .await?;
        if let Some(s) = self.started().get_mut(app) {
            s.route = route;
        }
        Ok(())
    }

    /// The route `app` serves.
    pub async fn route(&self, app: &str) -> anyhow::Result<Route> {
        match self
            .call(&Request::Current {
                app: app.to_owned(),
            })
            .await?
        {
            Reply::Route { route } => Ok(route),
            other => Err(unexpected(&other)),
        }
    }

    /// The cumulative counters of each of `versions`.
    pub async fn counts(&self, app: &str, versions: &[&str]) -> anyhow::Result<Vec<ArmCounters>> {
        let request = Request::Counts {
            app: app.to_owned(),
            versions: versions.iter().map(|v| (*v).to_owned()).collect(),
        };
        match self.call(&request).await? {
            Reply::Counts { counts } if counts.len() == versions.len() => Ok(counts),
            other => Err(unexpected(&other)),
        }
    }

    /// The counters of the canary `app` serves now.
    pub async fn canary_counts(&self, app: &str) -> anyhow::Result<Option<ArmCounters>> {
        match self
            .call(&Request::CanaryCounts {
                app: app.to_owned(),
            })
            .await?
        {
            Reply::Canary { counts } => Ok(counts),
            other => Err(unexpected(&other)),
        }
    }

    /// Reloads the proxies' certificates that changed (all with `force`).
    pub async fn reload_certificates(&self, force: bool) -> anyhow::Result<()> {
        self.call(&Request::ReloadCertificates { force }).await?;
        Ok(())
    }

    /// Every proxy's metric families, in `openmetrics` or Prometheus text format.
    pub async fn metrics(&self, openmetrics: bool) -> anyhow::Result<String> {
        match self.call(&Request::Metrics { openmetrics }).await? {
            Reply::Text { text } => Ok(text),
            other => Err(unexpected(&other)),
        }
    }

    /// Who the data plane is now.
    pub async fn hello(&self) -> anyhow::Result<Hello> {
        match self.call(&Request::Hello { control: true }).await? {
            Reply::Hello(h) => Ok(h),
            other => Err(unexpected(&other)),
        }
    }

    /// One exchange; a broken connection is made again (the data plane started,
    /// upgraded or given back its apps as needed) and the request sent once more.
    async fn call(&self, request: &Request) -> anyhow::Result<Reply> {
        let mut conn = self.conn.lock().await;
        let mut tried = false;
        loop {
            if conn.is_none() {
                *conn = Some(self.establish().await?);
            }
            let Some(stream) = conn.as_mut() else {
                unreachable!()
            };
            match tokio::time::timeout(EXCHANGE, exchange(stream, request)).await {
                Ok(Ok(Reply::Error { message })) => {
                    anyhow::bail!("the data plane refused: {message}")
                }
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(e)) if !tried => {
                    tracing::warn!(error = %format!("{e:#}"), "lost the data plane's socket; connecting again");
                }
                Ok(Err(e)) => {
                    *conn = None;
                    return Err(e);
                }
                Err(_) => {
                    *conn = None;
                    anyhow::bail!("the data plane did not answer within {EXCHANGE:?}");
                }
            }
            *conn = None;
            tried = true;
        }
    }

    /// A connection that has said hello to a data plane of this build serving
    /// every app this process started.
    async fn establish(&self) -> anyhow::Result<UnixStream> {
        let (mut stream, mut hello) = match greet(&self.socket).await {
            Ok(found) => found,
            Err(_) => {
                let mut child = self.spawn(false)?;
                self.wait_for(&mut child, |_| true).await?
            }
        };
        if hello.build != wire::build_id() {
            tracing::info!(pid = hello.pid, old = %hello.build, new = wire::build_id(),
                "the data plane runs another build; upgrading it without closing its ports");
            drop(stream);
            let mut child = self.spawn(true)?;
            (stream, hello) = self
                .wait_for(&mut child, |h| h.build == wire::build_id())
                .await?;
        }
        tracing::info!(
            pid = hello.pid,
            apps = hello.apps.len(),
            "connected to the data plane"
        );
        let missing: Vec<Start> = self
            .started()
            .values()
            .filter(|s| !hello.apps.iter().any(|a| a.app == s.app))
            .cloned()
            .collect();
        for start in missing {
            tracing::warn!(app = %start.app, "the data plane lost the app; starting it again");
            match exchange(&mut stream, &Request::Start(start)).await? {
                Reply::Started { .. } => {}
                other => return Err(unexpected(&other)),
            }
        }
        Ok(stream)
    }

    /// Starts a data-plane process from this binary.
    fn spawn(&self, take_over: bool) -> anyhow::Result<tokio::process::Child> {
        let exe = std::env::current_exe().context("cannot find this program's file")?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("dataplane")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--workers")
            .arg(self.workers.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .process_group(0);
        if take_over {
            cmd.arg("--take-over");
        }
        let child = cmd.spawn().context("cannot start the data-plane process")?;
        tracing::info!(pid = child.id(), take_over, socket = %self.socket.display(),
            "data-plane process started");
        Ok(child)
    }

    /// Waits until a data plane that `ready` accepts answers on the socket, or
    /// until `child` (the one just started) exits without having answered.
    async fn wait_for(
        &self,
        child: &mut tokio::process::Child,
        ready: impl Fn(&Hello) -> bool,
    ) -> anyhow::Result<(UnixStream, Hello)> {
        let deadline = tokio::time::Instant::now() + STARTING;
        let mut last = String::from("nothing listens yet");
        while tokio::time::Instant::now() < deadline {
            match greet(&self.socket).await {
                Ok((stream, hello)) if ready(&hello) => return Ok((stream, hello)),
                Ok((_, hello)) => {
                    last = format!("pid {} still runs build {}", hello.pid, hello.build)
                }
                Err(e) => last = format!("{e:#}"),
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "the data-plane process exited ({status}) before it answered on {} \
                     (its errors are in this server's log)",
                    self.socket.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!(
            "no data plane answered on {} within {STARTING:?} ({last})",
            self.socket.display()
        )
    }
}

fn unexpected(reply: &Reply) -> anyhow::Error {
    anyhow::anyhow!("unexpected answer from the data plane: {reply:?}")
}

/// Connects to `socket` and says hello.
async fn greet(socket: &std::path::Path) -> anyhow::Result<(UnixStream, Hello)> {
    let mut stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    let hello = Request::Hello { control: true };
    match tokio::time::timeout(EXCHANGE, exchange(&mut stream, &hello)).await {
        Ok(Ok(Reply::Hello(hello))) => Ok((stream, hello)),
        Ok(Ok(other)) => Err(unexpected(&other)),
        Ok(Err(e)) => Err(e),
        Err(_) => anyhow::bail!("the data plane did not answer within {EXCHANGE:?}"),
    }
}
