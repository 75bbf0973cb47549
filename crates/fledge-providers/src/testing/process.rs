//! Real programs started by tests: Prometheus, HAProxy and nginx, each on 127.0.0.1
//! with its own temporary directory and free ports, stopped when dropped.
//!
//! Errors are strings meant for a test's failure message: they say which program,
//! what went wrong, and the end of its log.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::free_port;

/// How long a program may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Finds `name` on `PATH` or in the sbin directories Debian installs daemons into.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn require(name: &str) -> Result<PathBuf, String> {
    find_program(name).ok_or_else(|| format!("needs {name}: run scripts/test (it installs it)"))
}

/// A child process with its log, stopped (TERM, then KILL) when dropped.
#[derive(Debug)]
pub struct Program {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    /// The program's private directory (configuration, data, sockets, logs).
    pub dir: TempDir,
}

impl Program {
    /// Starts `cmd` with stdout and stderr going to `<dir>/<name>.log`.
    pub fn spawn(name: &str, cmd: Command, dir: TempDir) -> Result<Program, String> {
        let log = dir.path().join(format!("{name}.log"));
        std::fs::File::create(&log).map_err(|e| format!("{name}: log file: {e}"))?;
        let mut program = Program {
            name: name.to_owned(),
            child: None,
            log,
            dir,
        };
        program.respawn(cmd)?;
        Ok(program)
    }

    /// Starts `cmd` again in the same directory, after the previous process ended
    /// (see [`Program::stop`] and [`Program::kill`]); its log is appended to.
    pub fn respawn(&mut self, mut cmd: Command) -> Result<(), String> {
        self.stop();
        let name = &self.name;
        let out = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{name}: log file: {e}"))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{name}: log file: {e}"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{name}: cannot start {cmd:?}: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the process at once (SIGKILL), as a crash would: it cleans nothing up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of the program's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until `ready` says yes, failing early when the process exits.
    pub async fn wait_ready<F, Fut>(&mut self, mut ready: F) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if !self.is_running() {
                return Err(format!(
                    "{} exited at start:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            if ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} not ready within {START_TIMEOUT:?}:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL after 5 s. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Graceful first, so nginx's master takes its workers down with it.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn tcp_accepts(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

/// A fresh private directory for program `name`, removed when dropped.
pub fn temp_dir(name: &str) -> Result<TempDir, String> {
    tempfile::Builder::new()
        .prefix(&format!("fledge-{name}-"))
        .tempdir()
        .map_err(|e| format!("{name}: temp dir: {e}"))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

// === Prometheus ===

/// A real Prometheus scraping loopback targets every `scrape_interval`.
#[derive(Debug)]
pub struct Prometheus {
    /// The running process.
    pub program: Program,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Prometheus {
    /// Starts `/usr/bin/prometheus` with a temporary config scraping `targets`
    /// (each `host:port` serving `/metrics`) and waits until it is ready.
    pub async fn start(
        targets: &[SocketAddr],
        scrape_interval: Duration,
    ) -> Result<Prometheus, String> {
        Self::start_alerting(targets, scrape_interval, None).await
    }

    /// [`Prometheus::start`] that also evaluates the alerting `rules` (a rule file's
    /// text) every scrape interval and sends what fires to `alertmanager`.
    pub async fn start_alerting(
        targets: &[SocketAddr],
        scrape_interval: Duration,
        alerting: Option<(&str, &Alertmanager)>,
    ) -> Result<Prometheus, String> {
        let bin = require("prometheus")?;
        let dir = temp_dir("prometheus")?;
        let port = free_port().map_err(|e| e.to_string())?;
        let interval = format!("{}ms", scrape_interval.as_millis().max(100));
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let mut config = format!(
            "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n\
             scrape_configs:\n  - job_name: fledge-test\n    scrape_interval: {interval}\n    scrape_timeout: {interval}\n\
             \x20   static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        if let Some((rules, alertmanager)) = alerting {
            write(&dir.path().join("rules.yml"), rules)?;
            config.push_str(&format!(
                "rule_files: [rules.yml]\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{}\"]\n",
                alertmanager.addr
            ));
        }
        let (program, url) = start_prometheus_like(
            "prometheus",
            bin,
            dir,
            port,
            &config,
            &["--storage.tsdb.path=data"],
        )
        .await?;
        Ok(Prometheus { program, url })
    }

    /// Stops Prometheus (the URL then refuses connections).
    pub fn stop(&mut self) {
        self.program.stop();
    }
}

/// Starts a program of the Prometheus family (`--config.file`,
/// `--web.listen-address`, `/-/ready`) in `dir` with `config` and `args`, on
/// `127.0.0.1:port`, and waits until it is ready; returns it and its base URL.
async fn start_prometheus_like(
    name: &str,
    bin: PathBuf,
    dir: TempDir,
    port: u16,
    config: &str,
    args: &[&str],
) -> Result<(Program, String), String> {
    let config_path = dir.path().join(format!("{name}.yml"));
    write(&config_path, config)?;
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config_path.display()))
        .args(args)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .current_dir(dir.path());
    let mut program = Program::spawn(name, cmd, dir)?;
    let url = format!("http://127.0.0.1:{port}");
    let ready_url = format!("{url}/-/ready");
    crate::tls::ensure_crypto_provider();
    let client = reqwest::Client::new();
    program
        .wait_ready(|| {
            let req = client.get(&ready_url).send();
            async move { req.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await?;
    Ok((program, url))
}

// === Alertmanager ===

/// A real Alertmanager (Debian's `prometheus-alertmanager`), alone (no cluster), with
/// one receiver that sends nowhere: the tests read its API.
#[derive(Debug)]
pub struct Alertmanager {
    /// The running process.
    pub program: Program,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Alertmanager {
    /// Starts Alertmanager on a free loopback port and waits until it is ready.
    pub async fn start() -> Result<Alertmanager, String> {
        let bin = require("prometheus-alertmanager").or_else(|_| require("alertmanager"))?;
        let dir = temp_dir("alertmanager")?;
        let port = free_port().map_err(|e| e.to_string())?;
        let config = "route:\n  receiver: nowhere\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: nowhere\n";
        // Alone: no gossip port to bind or peers to wait for.
        let (program, url) = start_prometheus_like(
            "alertmanager",
            bin,
            dir,
            port,
            config,
            &["--storage.path=data", "--cluster.listen-address="],
        )
        .await?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Ok(Alertmanager { program, addr, url })
    }
}

// === HAProxy ===

/// A real HAProxy with one frontend and a `stable`/`canary` backend, its runtime API on
/// a unix socket and on a TCP port.
#[derive(Debug)]
pub struct Haproxy {
    /// The running process.
    pub program: Program,
    /// Where the frontend listens.
    pub frontend: SocketAddr,
    /// The runtime API's unix socket (`level admin`).
    pub socket: PathBuf,
    /// The runtime API's TCP address (`level admin`).
    pub admin_address: SocketAddr,
    /// The backend's name.
    pub backend: String,
    stable: SocketAddr,
    canary: SocketAddr,
    bin: PathBuf,
    /// A whole `backend` section used instead of the generated one.
    section: Option<String>,
}

impl Haproxy {
    /// Starts `haproxy` like [`Haproxy::start`], with `section` (a whole `backend
    /// <backend>` section, e.g. the one docs/integrations.md documents, with its
    /// servers' addresses and files filled in) as the backend.
    pub async fn start_with(backend: &str, section: &str) -> Result<Haproxy, String> {
        Self::launch(
            backend,
            ([127, 0, 0, 1], 1).into(),
            ([127, 0, 0, 1], 1).into(),
            0,
            Some(section.to_owned()),
        )
        .await
    }

    /// Starts `haproxy` in the foreground in front of `stable` and `canary` (servers
    /// named `stable` and `canary` in backend `backend`, `balance roundrobin`), with
    /// the canary at weight `canary_weight` and stable at `100 - canary_weight`.
    pub async fn start(
        backend: &str,
        stable: SocketAddr,
        canary: SocketAddr,
        canary_weight: u8,
    ) -> Result<Haproxy, String> {
        Self::launch(backend, stable, canary, canary_weight, None).await
    }

    async fn launch(
        backend: &str,
        stable: SocketAddr,
        canary: SocketAddr,
        canary_weight: u8,
        section: Option<String>,
    ) -> Result<Haproxy, String> {
        let bin = require("haproxy")?;
        let dir = temp_dir("haproxy")?;
        let port = free_port().map_err(|e| e.to_string())?;
        let admin_port = free_port().map_err(|e| e.to_string())?;
        // Started by `restart` below, once the config is written.
        let mut haproxy = Haproxy {
            program: Program {
                name: "haproxy".to_owned(),
                child: None,
                log: dir.path().join("haproxy.log"),
                dir,
            },
            frontend: ([127, 0, 0, 1], port).into(),
            socket: PathBuf::new(),
            admin_address: ([127, 0, 0, 1], admin_port).into(),
            backend: backend.to_owned(),
            stable,
            canary,
            bin,
            section,
        };
        haproxy.socket = haproxy.program.dir.path().join("admin.sock");
        std::fs::File::create(&haproxy.program.log)
            .map_err(|e| format!("haproxy: log file: {e}"))?;
        haproxy.restart(canary_weight).await?;
        Ok(haproxy)
    }

    /// Router settings for this HAProxy's backend and its `stable` and `canary`
    /// servers, through the runtime API's unix socket.
    pub fn settings(&self, manage_addresses: bool) -> crate::router::HaproxySettings {
        crate::router::HaproxySettings {
            socket: Some(self.socket.clone()),
            address: None,
            backend: self.backend.clone(),
            stable_server: "stable".into(),
            canary_server: "canary".into(),
            timeout: Duration::from_secs(2),
            manage_addresses,
            map: None,
            match_on: Vec::new(),
            sticky_on: Vec::new(),
        }
    }

    /// A client of the runtime API (over the unix socket) for backend `backend`'s
    /// `stable` and `canary` servers, to read what HAProxy serves.
    pub fn router(&self) -> Result<crate::router::HaproxyRouter, String> {
        crate::router::HaproxyRouter::new(self.settings(true))
            .map_err(|e| format!("haproxy: runtime API client: {e}"))
    }

    /// Stops HAProxy if it runs, then starts it again on the same frontend, runtime
    /// socket and admin port, from a configuration with the canary at
    /// `canary_weight` (as an operator's restart from its config file would).
    pub async fn restart(&mut self, canary_weight: u8) -> Result<(), String> {
        self.program.stop();
        let config = format!(
            "global\n\
             \x20   stats socket {sock} mode 600 level admin\n\
             \x20   stats socket ipv4@{admin} level admin\n\
             \x20   stats timeout 30s\n\
             defaults\n\
             \x20   mode http\n\
             \x20   timeout connect 2s\n\
             \x20   timeout client 10s\n\
             \x20   timeout server 10s\n\
             frontend fe_app\n\
             \x20   bind {frontend}\n\
             \x20   default_backend {backend}\n\
             {section}",
            sock = self.socket.display(),
            admin = self.admin_address,
            frontend = self.frontend,
            backend = self.backend,
            section = match &self.section {
                Some(section) => section.clone(),
                None => format!(
                    "backend {backend}\n\
                     \x20   balance roundrobin\n\
                     \x20   server stable {stable} weight {sw}\n\
                     \x20   server canary {canary} weight {cw}\n",
                    backend = self.backend,
                    stable = self.stable,
                    canary = self.canary,
                    sw = 100 - canary_weight.min(100),
                    cw = canary_weight.min(100),
                ),
            },
        );
        let config_path = self.program.dir.path().join("haproxy.cfg");
        write(&config_path, &config)?;
        let mut check = Command::new(&self.bin);
        check.args(["-c", "-q", "-f"]).arg(&config_path);
        let out = check.output().map_err(|e| format!("haproxy -c: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "haproxy rejects the test config: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-db")
            .arg("-f")
            .arg(&config_path)
            .current_dir(self.program.dir.path());
        self.program.respawn(cmd)?;
        let (sock, frontend, admin) = (self.socket.clone(), self.frontend, self.admin_address);
        self.program
            .wait_ready(|| {
                let sock = sock.clone();
                async move { sock.exists() && tcp_accepts(frontend).await && tcp_accepts(admin).await }
            })
            .await
    }
}

// === nginx ===

/// A real nginx whose one server proxies to an `upstream` block read from an include
/// file (the file an [`NginxRouter`](crate::router::NginxRouter) writes).
#[derive(Debug)]
pub struct Nginx {
    /// The running master process.
    pub program: Program,
    /// Where the server listens.
    pub listen: SocketAddr,
    /// The included upstream file.
    pub upstream_file: PathBuf,
    /// The upstream's name.
    pub upstream: String,
    /// The main configuration file.
    pub conf: PathBuf,
    /// The nginx binary.
    pub bin: PathBuf,
}

impl Nginx {
    /// Starts nginx (master + one worker, in the foreground) with `upstream_content`
    /// as the initial upstream file, which must define `upstream <upstream>`.
    pub async fn start(upstream: &str, upstream_content: &str) -> Result<Nginx, String> {
        let location = format!("proxy_pass http://{upstream}; proxy_next_upstream off;");
        Self::start_with(upstream, upstream_content, &location).await
    }

    /// Starts nginx like [`Nginx::start`], with `location` (directives, e.g. the ones
    /// docs/integrations.md documents) as the body of its one `location /`.
    pub async fn start_with(
        upstream: &str,
        upstream_content: &str,
        location: &str,
    ) -> Result<Nginx, String> {
        let bin = require("nginx")?;
        let dir = temp_dir("nginx")?;
        let port = free_port().map_err(|e| e.to_string())?;
        let d = dir.path();
        let upstream_file = d.join("upstream.conf");
        write(&upstream_file, upstream_content)?;
        let servers = format!(
            "include {up};\n\
             server {{\n\
             \x20   listen 127.0.0.1:{port};\n\
             \x20   location / {{ {location} }}\n\
             }}\n",
            up = upstream_file.display(),
        );
        let listen: SocketAddr = ([127, 0, 0, 1], port).into();
        let conf_path = d.join("nginx.conf");
        let program = Self::spawn(&bin, dir, &servers, listen).await?;
        Ok(Nginx {
            program,
            listen,
            upstream_file,
            upstream: upstream.to_owned(),
            conf: conf_path,
            bin,
        })
    }

    /// nginx (master + one worker, in the foreground) whose `http` block holds
    /// `servers` (`server { … }` blocks and what they need), ready once it accepts
    /// connections on `ready`. Files the servers read (certificates) can be
    /// written into `dir` first.
    pub async fn serve(dir: TempDir, servers: &str, ready: SocketAddr) -> Result<Program, String> {
        let bin = require("nginx")?;
        Self::spawn(&bin, dir, servers, ready).await
    }

    async fn spawn(
        bin: &Path,
        dir: TempDir,
        servers: &str,
        ready: SocketAddr,
    ) -> Result<Program, String> {
        let d = dir.path();
        std::fs::create_dir_all(d.join("tmp")).map_err(|e| e.to_string())?;
        // As root, nginx would run its workers as `nobody`, who cannot enter the
        // private temporary directory.
        let user = match std::fs::metadata("/proc/self") {
            Ok(m) if m.uid() == 0 => "user root;\n",
            _ => "",
        };
        let conf = format!(
            "{user}worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             access_log off;\n\
             client_body_temp_path {d}/tmp/body;\n\
             proxy_temp_path {d}/tmp/proxy;\n\
             {servers}\n\
             }}\n",
            d = d.display(),
        );
        let conf_path = d.join("nginx.conf");
        write(&conf_path, &conf)?;
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(d)
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .current_dir(d);
        let mut program = Program::spawn("nginx", cmd, dir)?;
        program.wait_ready(|| tcp_accepts(ready)).await?;
        Ok(program)
    }

    fn command(&self, extra: &[&str]) -> Vec<String> {
        let d = self.program.dir.path();
        let mut argv = vec![
            self.bin.display().to_string(),
            "-p".into(),
            d.display().to_string(),
            "-e".into(),
            d.join("error.log").display().to_string(),
            "-c".into(),
            self.conf.display().to_string(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv
    }

    /// `nginx -p DIR -c CONF -s reload` for this instance.
    pub fn reload_command(&self) -> Vec<String> {
        self.command(&["-s", "reload"])
    }

    /// `nginx -p DIR -c CONF -t -q` for this instance.
    pub fn test_command(&self) -> Vec<String> {
        self.command(&["-t", "-q"])
    }

    /// The pids of the master's worker processes, and whether each is still serving
    /// (not "shutting down" after a reload).
    pub fn workers(&self) -> Vec<(u32, bool)> {
        let Some(master) = self.program.pid() else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| {
                        let rest = stat.rsplit_once(')')?.1;
                        rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                    })
                    == Some(master)
            })
            .map(|pid| {
                let title =
                    std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                (pid, !title.contains("shutting down"))
            })
            .collect()
    }

    /// Waits until a reload has taken effect: every serving worker is new (none of
    /// `before`) and no old worker is left. Take `before` from [`Nginx::workers`]
    /// before the reload.
    pub async fn wait_reloaded(&self, before: &[(u32, bool)]) -> Result<(), String> {
        let done = super::wait_for(START_TIMEOUT, || async {
            let now = self.workers();
            let fresh = !now.is_empty()
                && now
                    .iter()
                    .all(|(pid, serving)| *serving && !before.iter().any(|(old, _)| old == pid));
            fresh.then_some(())
        })
        .await;
        done.ok_or_else(|| {
            format!(
                "nginx did not finish reloading; workers now {:?}",
                self.workers()
            )
        })
    }

    /// The end of nginx's error log.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.program.dir.path().join("error.log")).unwrap_or_default()
    }
}
