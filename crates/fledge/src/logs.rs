//! How the long-running commands (`serve`, `operator run`, `demo`) log: to stderr,
//! as text or one JSON object per line, filtered by `RUST_LOG`. Colour only when
//! stderr is a terminal and `NO_COLOR` is not set, so that pod logs, files and pipes
//! never hold ANSI escapes.
//!
//! Depends on no other module of the binary.

use std::ffi::OsStr;
use std::io::IsTerminal as _;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per entry.
    Text,
    /// One JSON object per line.
    Json,
}

/// The filter of the long-running commands when `RUST_LOG` is unset: `info`, but
/// only errors from the TLS library. It warns of what a peer got wrong (a client that
/// sends an IP address as its server name, as wrk and `openssl s_client` do, draws
/// one warning per connection), which the operator cannot mend and which would let
/// any client fill the log.
pub const SERVER_FILTER: &str = "info,rustls=error";

/// Installs the process's log subscriber. `default_filter` applies when `RUST_LOG`
/// is unset or invalid.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A subscriber already installed (tests that call in twice) keeps its place.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
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
    fn the_server_filter_parses_and_keeps_info() {
        let filter = EnvFilter::try_new(SERVER_FILTER).unwrap();
        assert_eq!(
            filter.max_level_hint(),
            Some(tracing::level_filters::LevelFilter::INFO)
        );
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
