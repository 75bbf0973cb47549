//! `fledge schema`: prints the JSON Schema of the rollout spec, for editors and CI
//! linters (e.g. a `# yaml-language-server: $schema=` line).

use std::process::ExitCode;

/// Arguments of `fledge schema`.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {}

/// Runs `fledge schema`.
pub fn run(_args: &SchemaArgs) -> ExitCode {
    match serde_json::to_string_pretty(&fledge_spec::json_schema()) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fledge: cannot print the schema: {e}");
            ExitCode::FAILURE
        }
    }
}
