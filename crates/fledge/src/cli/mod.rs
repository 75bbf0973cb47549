//! Command-line interface: one module per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod schema;
pub mod validate;

/// fledge: progressive delivery (canary releases) in one binary.
#[derive(Debug, Parser)]
#[command(name = "fledge", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check rollout spec files without a server.
    Validate(validate::ValidateArgs),
    /// Print the JSON Schema of the rollout spec.
    Schema(schema::SchemaArgs),
}

/// Runs one parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match &cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Schema(args) => schema::run(args),
    }
}
