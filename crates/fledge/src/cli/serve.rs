//! `fledge serve`: runs the server (API, controller, one proxy per app) until SIGINT
//! or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use anyhow::Context;
use fledge_server::config::ServerConfig;
use fledge_server::{StartOptions, auth::TOKENS_ENV, start};

use super::client::runtime;

/// Arguments of `fledge serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The server's config file (apps, tokens, limits).
    #[arg(
        long,
        short = 'c',
        default_value = "fledge.yaml",
        env = "FLEDGE_CONFIG"
    )]
    pub config: PathBuf,
    /// API address; overrides the config's `listen`.
    #[arg(long, env = "FLEDGE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Store URL (`sqlite://PATH`, `postgres://…`); overrides the config's `store`.
    /// A URL with a password belongs in the environment or in --store-file, not in
    /// argv, where any user of the machine can read it.
    #[arg(long, env = "FLEDGE_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// A file holding the store URL (e.g. a mounted Kubernetes Secret); overrides
    /// the config's `store`, and is overridden by --store/FLEDGE_STORE.
    #[arg(long, env = "FLEDGE_STORE_FILE", value_name = "PATH")]
    pub store_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, env = "FLEDGE_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Serve the API on a non-loopback address without any access token.
    #[arg(long)]
    pub insecure: bool,
}

pub use crate::logs::LogFormat;

/// Runs the server; exit code 1 when it cannot start.
pub fn run(args: &ServeArgs) -> ExitCode {
    crate::logs::init(args.log_format, tracing::level_filters::LevelFilter::INFO);
    let Some(runtime) = runtime(&mut tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        match serve(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // Said once, on stderr: the log goes there too.
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let mut config = ServerConfig::load(&args.config)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(path) = &args.store_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --store-file {}", path.display()))?;
        config.store = text.trim().to_owned();
    }
    if let Some(store) = args.store.clone() {
        config.store = store;
    }
    let opts = StartOptions {
        insecure: args.insecure,
        env_tokens: std::env::var(TOKENS_ENV).ok(),
        ..StartOptions::default()
    };
    let server = start(config, opts).await?;
    server.run_until_signal().await;
    Ok(())
}
