//! `fledge operator`: the Kubernetes operator (`run`), its install manifests
//! (`manifests`), and operator commands on a CanaryRollout (`command`), which the
//! controller consumes from the `fledge.dev/command` annotations.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context as _;
use fledge_k8s::telemetry::Telemetry;

/// Arguments of `fledge operator`.
#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    #[command(subcommand)]
    pub command: OperatorCommand,
}

/// What `fledge operator` does.
#[derive(Debug, clap::Subcommand)]
pub enum OperatorCommand {
    /// Run the operator: reconcile CanaryRollouts while this replica holds the
    /// leader Lease (kubeconfig or in-cluster credentials).
    Run(RunArgs),
    /// Send a command to a CanaryRollout: promote, promote-full, abort, pause,
    /// resume or retry.
    Command(CommandArgs),
    /// Print (or write to a directory) the install manifests: CRD, RBAC, operator
    /// Deployment and a sample CanaryRollout.
    Manifests(ManifestsArgs),
}

/// Arguments of `fledge operator run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Namespace of the leader Lease.
    #[arg(long, env = "FLEDGE_LEASE_NAMESPACE", default_value = "fledge-system")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "fledge-operator")]
    pub lease_name: String,
    /// How long the Lease holds without renewal (another replica takes over after).
    #[arg(long, default_value = "15s", value_parser = fledge_spec::duration::parse_arg)]
    pub lease_duration: Duration,
    /// This replica's identity in the Lease and in Events. Default: $POD_NAME, else
    /// the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Reconcile only the CanaryRollouts of this namespace. Default: every
    /// namespace.
    #[arg(long, env = "FLEDGE_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Log format.
    #[arg(long, value_enum, env = "FLEDGE_LOG_FORMAT", default_value = "text")]
    pub log_format: crate::logs::LogFormat,
    /// Let CanaryRollouts run exec hooks. They run inside the operator's pod, with its
    /// credentials: only for clusters where everyone who may write a CanaryRollout is
    /// trusted with them. Without it such specs are refused; http hooks always run.
    #[arg(long, env = "FLEDGE_ALLOW_EXEC_HOOKS")]
    pub allow_exec_hooks: bool,
    /// Where to serve `/metrics` (OpenMetrics), `/healthz` (the process answers) and
    /// `/readyz` (the API server answered the last Lease call in time), without
    /// authentication: keep it on the pod network. `off` serves nothing.
    #[arg(long, env = "FLEDGE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
}

/// Arguments of `fledge operator command`.
#[derive(Debug, clap::Args)]
pub struct CommandArgs {
    /// The CanaryRollout's name.
    pub name: String,
    /// What to do (the shell completions offer each).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(fledge_k8s::controller::COMMANDS))]
    pub action: String,
    /// The CanaryRollout's namespace. Default: the kubeconfig's.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Who asks, recorded with the decision. Default: $USER.
    #[arg(long, env = "USER", default_value = "operator")]
    pub actor: String,
}

/// Arguments of `fledge operator manifests`.
#[derive(Debug, clap::Args)]
pub struct ManifestsArgs {
    /// Write one file per manifest into this directory instead of printing them.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `fledge operator`.
pub fn run(args: &OperatorArgs) -> ExitCode {
    // kube and reqwest both link rustls: choose ring before any TLS is made.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match &args.command {
        OperatorCommand::Manifests(m) => report(manifests(m)),
        OperatorCommand::Run(r) => {
            report(runtime(true).and_then(|rt| rt.block_on(run_operator(r))))
        }
        OperatorCommand::Command(c) => {
            report(runtime(false).and_then(|rt| rt.block_on(command(c))))
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(multi: bool) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn manifests(args: &ManifestsArgs) -> anyhow::Result<()> {
    let files = fledge_k8s::manifests::files();
    match &args.out {
        None => files.iter().for_each(|(_, text)| print!("{text}")),
        Some(dir) => {
            for (name, text) in files {
                let path = dir.join(name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("create {}", parent.display()))?;
                }
                std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

async fn run_operator(args: &RunArgs) -> anyhow::Result<()> {
    crate::logs::init(args.log_format, tracing::level_filters::LevelFilter::INFO);
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("fledge-operator-{}", std::process::id()));
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (no in-cluster config or kubeconfig)")?;
    let opts = fledge_k8s::operator::OperatorOptions {
        identity,
        lease_namespace: args.lease_namespace.clone(),
        lease_name: args.lease_name.clone(),
        lease_duration: args.lease_duration,
        namespace: args.namespace.clone(),
        allow_exec_hooks: args.allow_exec_hooks,
        telemetry: Arc::new(Telemetry::new()),
    };
    if args.listen != "off" {
        // Ready while the API server answered within two lease durations (a
        // follower renews as often as the leader).
        let within = args.lease_duration * 2;
        serve_probes(&args.listen, opts.telemetry.clone(), within).await?;
    }
    fledge_k8s::operator::run(client, opts, stop_signal())
        .await
        .context("operator stopped")
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listen` in a task of its own.
async fn serve_probes(
    listen: &str,
    telemetry: Arc<Telemetry>,
    within: Duration,
) -> anyhow::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    use fledge_stats::exposition::Format;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("--listen {listen}: cannot listen"))?;
    let addr = listener.local_addr().context("--listen: local address")?;
    let metrics = telemetry.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
                let format = Format::negotiate(accept);
                let text = metrics.encode(format);
                async move { ([(header::CONTENT_TYPE, format.content_type())], text) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = telemetry.ready(within);
                async move {
                    if ready {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the Kubernetes API server has not answered recently\n",
                        )
                    }
                }
            }),
        );
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics and probe listener stopped");
        }
    });
    Ok(())
}

/// SIGTERM (what Kubernetes sends a pod it stops) or SIGINT: the operator then
/// stops reconciling and releases its Lease before it exits.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn command(args: &CommandArgs) -> anyhow::Result<()> {
    fledge_k8s::controller::parse_command(&args.action)?;
    let config = kube::Config::infer()
        .await
        .context("cannot find a kubeconfig")?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("cannot build a Kubernetes client")?;
    let id = format!(
        "{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        std::process::id()
    );
    fledge_k8s::controller::send_command(
        &client,
        &namespace,
        &args.name,
        &args.action,
        &args.actor,
        &id,
    )
    .await?;
    println!(
        "sent {} to CanaryRollout {namespace}/{} (command id {id})",
        args.action, args.name
    );
    Ok(())
}
