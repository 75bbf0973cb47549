//! `fledge crd`: prints the `CanaryRollout` CustomResourceDefinition (YAML, with its
//! complete OpenAPI schema generated from the Rust types), for `kubectl apply -f -`;
//! `-o json` as JSON.

use std::process::ExitCode;

use crate::view::output::{self, OutputArgs, OutputFormat};

/// Arguments of `fledge crd`.
#[derive(Debug, clap::Args)]
pub struct CrdArgs {
    /// `-o json|yaml` (the default `table` is YAML too).
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `fledge crd`.
pub fn run(args: &CrdArgs) -> ExitCode {
    match args.output.format {
        // The manifests' own YAML writer, as `fledge operator manifests` prints it.
        OutputFormat::Table | OutputFormat::Yaml => {
            print!("{}", fledge_k8s::crd_yaml());
            ExitCode::SUCCESS
        }
        OutputFormat::Json => output::print_or(OutputFormat::Json, &fledge_k8s::crd(), String::new),
    }
}
