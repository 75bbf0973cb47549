//! `fledge dataplane`: the built-in proxies in a process of their own, which
//! `fledge serve` starts (config `proxy.dataPlane`) and which outlives it; also how
//! to upgrade it in place, see it, or stop it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use fledge_server::dataplane::{process, wire};

use crate::logs::LogFormat;

/// Arguments of `fledge dataplane`.
#[derive(Debug, Args)]
pub struct DataPlaneArgs {
    /// The control socket (`proxy.dataPlane.socket` of the server's config).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// Proxy worker threads (1 to 256); one per core when absent.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
    /// Upgrade the data plane serving the socket: take its ports and routes over
    /// without closing a connection, then let it drain and exit.
    #[arg(long, conflicts_with_all = ["stop", "status"])]
    pub take_over: bool,
    /// Stop the data plane serving the socket: its proxies drain and close; returns
    /// once the process has exited.
    #[arg(long, conflicts_with = "status")]
    pub stop: bool,
    /// Print who serves the socket and what (JSON).
    #[arg(long)]
    pub status: bool,
    /// Log format.
    #[arg(long, value_enum, env = "FLEDGE_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// Runs the data plane (or one of `--stop`, `--status`); exit code 1 on failure.
pub fn run(args: &DataPlaneArgs) -> ExitCode {
    crate::logs::init(args.log_format, tracing::level_filters::LevelFilter::INFO);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if args.stop || args.status {
            return ask(args).await;
        }
        process::run(process::Options {
            socket: args.socket.clone(),
            workers: args.workers.map_or_else(
                || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
                usize::from,
            ),
            take_over: args.take_over,
        })
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn ask(args: &DataPlaneArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut stream = tokio::net::UnixStream::connect(&args.socket)
        .await
        .with_context(|| format!("no data plane answers on {}", args.socket.display()))?;
    let hello = match wire::exchange(&mut stream, &wire::Request::Hello { control: false }).await? {
        wire::Reply::Hello(hello) => hello,
        other => anyhow::bail!("unexpected answer: {other:?}"),
    };
    if args.status {
        use std::io::Write as _;
        // A closed pipe (`| head`) is not an error of the data plane's.
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(&hello)?
        );
        return Ok(());
    }
    if hello.controlled {
        eprintln!(
            "warning: a `fledge serve` is connected to data plane {}; it starts a new one on \
             {} at once (stop the server first to stop serving)",
            hello.pid,
            args.socket.display()
        );
    }
    match wire::exchange(&mut stream, &wire::Request::Shutdown).await? {
        wire::Reply::Done => {
            eprintln!("data plane {} is stopping; its proxies drain", hello.pid);
            // Returns once it is gone, so that what follows (a new data plane, the
            // ports reused, the binary replaced) does not race its drain. Each app's
            // `timeouts.drain` bounds how long that takes.
            let mut waited = 0u64;
            let gone = process::exited(hello.pid);
            tokio::pin!(gone);
            loop {
                match tokio::time::timeout(std::time::Duration::from_secs(10), &mut gone).await {
                    Ok(()) => break,
                    Err(_) => {
                        waited += 10;
                        eprintln!("data plane {} still draining after {waited} s", hello.pid);
                    }
                }
            }
            eprintln!("data plane {} stopped", hello.pid);
            Ok(())
        }
        wire::Reply::Error { message } => anyhow::bail!("the data plane refused: {message}"),
        other => anyhow::bail!("unexpected answer: {other:?}"),
    }
}
