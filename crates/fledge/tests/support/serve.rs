//! The built `fledge serve` binary as a child process: app `shop` between two
//! loopback backends, its config written to a temporary directory, its API on a free
//! port, killed and reaped when the guard is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use hyper::StatusCode;

use super::process::ChildGuard;
use super::{Backend, Http, wait_for};

/// How long the server may take to answer `/readyz`.
const READY: Duration = Duration::from_secs(30);

/// A `fledge serve` process, restartable on the same config and store.
#[derive(Debug)]
pub struct Serve {
    /// A client of its API.
    pub api: Http,
    /// Where app `shop`'s proxy listens, when the config names a port.
    pub proxy: Option<SocketAddr>,
    /// How many times it was started.
    pub starts: usize,
    config: PathBuf,
    /// The `fledge` binary it runs.
    program: PathBuf,
    name: String,
    dir: PathBuf,
    child: Option<ChildGuard>,
}

/// [`Serve::sqlite`] between fresh `stable` and `canary` backends, with its files in a
/// temporary directory of its own: what a test that kills and restarts the server
/// needs. Dropped, it stops the server, then the backends, then removes the files.
#[derive(Debug)]
pub struct ServedShop {
    /// The server.
    pub server: Serve,
    /// A client of its API.
    pub api: Http,
    /// Where app `shop`'s proxy listens (the same port across restarts).
    pub proxy: SocketAddr,
    /// The stable version's backend.
    pub stable: Backend,
    /// The canary's backend.
    pub canary: Backend,
    /// The server's config and SQLite store.
    pub dir: tempfile::TempDir,
}

impl ServedShop {
    /// Starts it, every `canary_fail_every`th canary request failing (none with
    /// `None`); waits until the server is ready.
    pub async fn start(canary_fail_every: Option<u64>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stable = super::backend("stable", None).await;
        let canary = super::backend("canary", canary_fail_every).await;
        let server = Serve::sqlite(dir.path(), &stable, &canary).await;
        Self {
            api: server.api.clone(),
            proxy: server.proxy.expect("Serve::sqlite names the proxy's port"),
            server,
            stable,
            canary,
            dir,
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

impl Serve {
    /// Starts a server on a SQLite file in `dir`, with the proxy on a free port it
    /// keeps across restarts; waits until it is ready.
    pub async fn sqlite(dir: &Path, stable: &Backend, canary: &Backend) -> Serve {
        let store = format!("sqlite://{}", dir.join("fledge.db").display());
        Self::start(dir, "serve", &store, Some(free_addr()), stable, canary).await
    }

    /// Starts replica `name` on the shared `store`, its proxy on a port of its own
    /// choosing; waits until it is ready.
    pub async fn replica(
        dir: &Path,
        name: &str,
        store: &str,
        stable: &Backend,
        canary: &Backend,
    ) -> Serve {
        Self::start(dir, name, store, None, stable, canary).await
    }

    async fn start(
        dir: &Path,
        name: &str,
        store: &str,
        proxy: Option<SocketAddr>,
        stable: &Backend,
        canary: &Backend,
    ) -> Serve {
        let api = free_addr();
        let listen = proxy.map_or("127.0.0.1:0".to_owned(), |p| p.to_string());
        let text = format!(
            "listen: {api}\nstore: {store}\ncontroller:\n  tick: 200ms\napps:\n  - name: shop\n    listen: {listen}\n    stable:\n      version: v1\n      endpoints: [\"{s}\"]\n    canary:\n      endpoints: [\"{c}\"]\n",
            s = stable.endpoint(),
            c = canary.endpoint(),
        );
        let mut serve = Self::with_config(dir, name, api, &text).await;
        serve.proxy = proxy;
        serve
    }

    /// Starts a server on the config file `text` (written to `<dir>/<name>.yaml`),
    /// whose API listens on `api`; waits until it is ready.
    pub async fn with_config(dir: &Path, name: &str, api: SocketAddr, text: &str) -> Serve {
        Self::run_program(
            Path::new(env!("CARGO_BIN_EXE_fledge")),
            dir,
            name,
            api,
            text,
        )
        .await
    }

    /// [`with_config`](Self::with_config) with the `fledge` binary at `program`.
    pub async fn run_program(
        program: &Path,
        dir: &Path,
        name: &str,
        api: SocketAddr,
        text: &str,
    ) -> Serve {
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, text).unwrap();
        let mut serve = Serve {
            api: Http::new(api),
            proxy: None,
            starts: 0,
            config,
            program: program.to_owned(),
            name: name.to_owned(),
            dir: dir.to_owned(),
            child: None,
        };
        serve.restart().await;
        serve
    }

    /// Starts the process again (after [`Serve::kill9`]) and waits until it is
    /// ready; each start logs to a file of its own.
    pub async fn restart(&mut self) {
        self.kill9();
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).unwrap();
        let mut cmd = Command::new(&self.program);
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(ChildGuard::spawn(cmd, false).expect("the fledge binary starts"));
        self.ready().await;
    }

    /// Waits until `/readyz` answers 200, failing at once if the process exits.
    pub async fn ready(&mut self) {
        let api = self.api.clone();
        wait_for(READY, "readyz", || {
            let exited = self.child.as_mut().and_then(ChildGuard::try_wait);
            let api = api.clone();
            async move {
                if let Some(status) = exited {
                    panic!("fledge serve exited ({status}) before it was ready");
                }
                match tokio::time::timeout(Duration::from_secs(2), api.try_get("/readyz")).await {
                    Ok(Some(StatusCode::OK)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await
    }

    /// SIGKILL: no chance to flush, drain or release anything.
    pub fn kill9(&mut self) {
        self.child = None;
    }

    /// SIGKILL to this process alone: what it started itself (a data-plane
    /// process) lives on.
    pub fn kill9_alone(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.signal("-KILL");
            while child.try_wait().is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Whether the process runs (it may be stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `signal` (`-STOP`, `-CONT`, …) to the process.
    pub fn signal(&self, signal: &str) {
        self.child.as_ref().expect("running").signal(signal);
    }

    /// SIGTERM, and the exit status within `limit`.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        child
            .terminate(limit)
            .await
            .unwrap_or_else(|| panic!("fledge serve still runs {limit:?} after SIGTERM"))
    }

    /// What the current process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}-{}.log", self.name, self.starts))
    }
}
