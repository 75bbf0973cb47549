//! `fledge schema`: prints the JSON Schema of the rollout spec, for editors and CI
//! linters (e.g. a `# yaml-language-server: $schema=` line); `-o yaml` as YAML.

use std::process::ExitCode;

use crate::view::output::{self, OutputArgs, OutputFormat};

/// Arguments of `fledge schema`.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// `-o json|yaml` (the default `table` is JSON too).
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `fledge schema`.
pub fn run(args: &SchemaArgs) -> ExitCode {
    let format = match args.output.format {
        OutputFormat::Table => OutputFormat::Json,
        other => other,
    };
    output::print_or(format, &fledge_spec::json_schema(), String::new)
}
