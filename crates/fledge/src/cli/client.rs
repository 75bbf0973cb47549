//! The flags every command that talks to a server shares, and how such a command
//! ends: the client itself is `fledge_api::client`, typed by the API's own types.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

pub use fledge_api::client::{ApiClient, ClientError};

use crate::view::output::OutputFormat;

/// The default API address (DESIGN.md, "CLI").
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Exit code when the rollout a command followed failed or was aborted.
pub const EXIT_ROLLOUT_FAILED: u8 = 1;
/// Exit code for usage errors, unreachable servers and requests the server refused.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when a wait's `--timeout` passed before the rollout got there.
pub const EXIT_TIMED_OUT: u8 = 3;

/// Flags every client command shares.
#[derive(Clone, Args)]
pub struct ClientArgs {
    /// Address of the fledge API server.
    #[arg(
        long,
        global = true,
        env = "FLEDGE_SERVER",
        default_value = DEFAULT_SERVER,
        value_name = "URL"
    )]
    pub server: String,

    /// Bearer token for the API (sent as `Authorization: Bearer`, never printed).
    #[arg(
        long,
        global = true,
        env = "FLEDGE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// PEM file with a CA certificate (or several) to trust for an `https://`
    /// server, in addition to the system's roots: e.g. the private CA that signed
    /// the server's certificate.
    #[arg(long, global = true, env = "FLEDGE_CA_CERT", value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,

    /// Output format: aligned tables for people, JSON or YAML for scripts.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,
}

// The token must never reach a log or a panic message, so Debug is written by hand.
impl fmt::Debug for ClientArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientArgs")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .field("output", &self.output)
            .finish()
    }
}

/// A client for the server named by the global flags.
pub fn connect(args: &ClientArgs) -> Result<ApiClient, ClientError> {
    ApiClient::new(&args.server, args.token.clone(), args.ca_cert.as_deref())
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
