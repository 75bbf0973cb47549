//! How the long-running commands (`serve`, `operator run`, `demo`) log: to stderr,
//! as text or one JSON object per line, filtered by `RUST_LOG`. Colour only when
//! stderr is a terminal and `NO_COLOR` is not set, so that pod logs, files and pipes
//! never hold ANSI escapes.
//!
//! Depends on no other module of the binary.

use std::ffi::OsStr;
use std::io::IsTerminal as _;

use clap::ValueEnum;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per entry.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the process's log subscriber: `RUST_LOG`'s filter when it is set and
/// valid, else [`default_filter`] at `level`.
pub fn init(format: LogFormat, level: LevelFilter) {
    let (env, default) = match EnvFilter::try_from_default_env() {
        Ok(env) => (Some(env), None),
        Err(_) => (None, Some(default_filter(level))),
    };
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(env).with(default);
    // A subscriber already installed (tests that call in twice) keeps its place.
    let _ = match format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json()).try_init(),
    };
}

/// The filter when `RUST_LOG` is unset: `level`, but only errors from the TLS
/// library. It warns of what a peer got wrong (a client that sends an IP address as
/// its server name, as wrk and `openssl s_client` do, draws one warning per
/// connection), which the operator cannot mend and which would let any client fill
/// the log. Built, not parsed: parsing a per-target directive compiles a regular
/// expression, whose code then stays resident (about 0.3 MiB).
fn default_filter(level: LevelFilter) -> Targets {
    Targets::new()
        .with_default(level)
        .with_target("rustls", LevelFilter::ERROR)
}

/// Whether to colour: on a terminal, unless `NO_COLOR` is set to a non-empty value
/// (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<&OsStr>) -> bool {
    terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filter_keeps_the_level_but_only_errors_of_tls() {
        use tracing::Level;
        let filter = default_filter(LevelFilter::INFO);
        assert!(filter.would_enable("fledge_server::access", &Level::INFO));
        assert!(!filter.would_enable("fledge_server", &Level::DEBUG));
        assert!(!filter.would_enable("rustls::msgs::handshake", &Level::WARN));
        assert!(filter.would_enable("rustls::conn", &Level::ERROR));
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new("1"))));
    }
}
