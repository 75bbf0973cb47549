//! `fledge completion SHELL`: shell completion scripts, generated from the CLI's own
//! definition so they never drift from it.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Arguments of `fledge completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to generate for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Prints the completion script for `shell` on stdout.
pub fn run(args: &CompletionArgs) -> ExitCode {
    let mut cmd = super::Cli::command();
    let name = cmd.get_name().to_string();
    clap_complete::generate(args.shell, &mut cmd, name, &mut std::io::stdout());
    ExitCode::SUCCESS
}
