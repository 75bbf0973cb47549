//! The `fledge` command: CLI, server wiring, HTTP API and web UI.

mod cli;
mod demo;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    cli::run(&args)
}
