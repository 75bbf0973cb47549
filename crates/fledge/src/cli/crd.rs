//! `fledge crd`: prints the `CanaryRollout` CustomResourceDefinition (YAML, with its
//! complete OpenAPI schema generated from the Rust types), for `kubectl apply -f -`.

use std::process::ExitCode;

/// Arguments of `fledge crd`.
#[derive(Debug, clap::Args)]
pub struct CrdArgs {}

/// Runs `fledge crd`.
pub fn run(_args: &CrdArgs) -> ExitCode {
    print!("{}", fledge_k8s::crd_yaml());
    ExitCode::SUCCESS
}
