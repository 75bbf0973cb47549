//! The flags every command that talks to a server shares, and how such a command
//! ends: the client itself is `fledge_api::client`, typed by the API's own types.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

pub use fledge_api::client::ApiClient;

use crate::view::output::{OutputArgs, OutputFormat};

/// The default API address (DESIGN.md, "CLI").
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Exit code when the rollout a command followed failed or was aborted.
pub const EXIT_ROLLOUT_FAILED: u8 = 1;
/// Exit code for usage errors, unreachable servers and requests the server refused.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when a wait's `--timeout` passed before the rollout got there.
pub const EXIT_TIMED_OUT: u8 = 3;

/// A client command's own arguments, with the flags every client command shares.
/// Only client commands take these: `serve`, `demo` and the offline commands have
/// no server to talk to.
#[derive(Debug, Args)]
pub struct Client<A: Args> {
    #[command(flatten)]
    pub args: A,
    /// Server address, token and output format.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Flags every client command shares.
#[derive(Clone, Args)]
pub struct ClientArgs {
    /// Address of the fledge API server.
    #[arg(
        long,
        env = "FLEDGE_SERVER",
        default_value = DEFAULT_SERVER,
        value_name = "URL"
    )]
    pub server: String,

    /// Bearer token for the API (sent as `Authorization: Bearer`, never printed).
    /// Prefer FLEDGE_TOKEN or --token-file: a token in argv is visible to every
    /// user of the machine.
    #[arg(
        long,
        env = "FLEDGE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// A file holding the bearer token (e.g. a mounted secret); surrounding
    /// whitespace is ignored. --token and FLEDGE_TOKEN win over it.
    #[arg(long, env = "FLEDGE_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// PEM file with a CA certificate (or several) to trust for an `https://`
    /// server, in addition to the system's roots: e.g. the private CA that signed
    /// the server's certificate.
    #[arg(long, env = "FLEDGE_CA_CERT", value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,

    /// `-o table|json|yaml`.
    #[command(flatten)]
    pub output: OutputArgs,
}

// The token must never reach a log or a panic message, so Debug is written by hand.
impl fmt::Debug for ClientArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientArgs")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("ca_cert", &self.ca_cert)
            .field("output", &self.output)
            .finish()
    }
}

// === impl ClientArgs ===

impl ClientArgs {
    /// The output format chosen with `-o`.
    pub fn format(&self) -> OutputFormat {
        self.output.format
    }

    /// The bearer token: `--token`/FLEDGE_TOKEN, else the content of
    /// `--token-file`/FLEDGE_TOKEN_FILE.
    fn bearer(&self) -> anyhow::Result<Option<String>> {
        if let Some(token) = &self.token {
            return Ok(Some(token.clone()));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --token-file {}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            anyhow::bail!(
                "--token-file {}: expected a token, found an empty file",
                path.display()
            );
        }
        Ok(Some(token.to_owned()))
    }
}

/// A client for the server named by the client flags.
pub fn connect(args: &ClientArgs) -> anyhow::Result<ApiClient> {
    Ok(ApiClient::new(
        &args.server,
        args.bearer()?,
        args.ca_cert.as_deref(),
    )?)
}

/// Prints an error of a client command to stderr and gives its exit code: a refused
/// request, an unreachable server and a usage error all end with [`EXIT_USAGE`],
/// since the command could not do its job.
pub fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    ExitCode::from(EXIT_USAGE)
}

/// A runtime from `builder` with all drivers on; `None`, said on stderr, when the
/// system refuses one.
pub fn runtime(builder: &mut tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .inspect_err(|e| eprintln!("error: cannot start the async runtime: {e}"))
        .ok()
}

/// Runs an async client command on a fresh current-thread runtime.
pub fn block_on<F>(fut: F) -> ExitCode
where
    F: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let Some(runtime) = runtime(&mut tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(fut) {
        Ok(code) => code,
        Err(err) => fail(&err),
    }
}
