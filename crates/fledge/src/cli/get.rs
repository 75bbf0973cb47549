//! `fledge get [ROLLOUT] [--watch]`: the latest rollouts, one rollout, or a live
//! view of one until it ends.

use std::process::ExitCode;

use clap::Args;
use clap::builder::TypedValueParser;
use fledge_api::rollout::ListQuery;
use fledge_engine::Phase;

use super::client::{self, ClientArgs};
use super::kube::{self, KubeArgs};
use crate::view::follow::{self, Target};
use crate::view::output::{self, OutputFormat};
use crate::view::render;

/// Arguments of `fledge get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The rollout's id, or an app name (its active or latest rollout); with
    /// --kube, the CanaryRollout's name. Without it, a list of the latest rollouts
    /// (with --kube, the namespace's CanaryRollouts).
    #[arg(value_name = "ROLLOUT")]
    pub id: Option<String>,

    /// Keep a live view open, redrawn as the rollout moves, until it ends.
    #[arg(long, short = 'w', requires = "id")]
    pub watch: bool,

    /// List only this app's rollouts.
    #[arg(long, conflicts_with = "id")]
    pub app: Option<String>,

    /// List only rollouts in this phase (in any case; completions offer each).
    #[arg(long, conflicts_with = "id", ignore_case = true, value_parser = phase_parser())]
    pub phase: Option<Phase>,

    /// `--kube [-n NAMESPACE]`: CanaryRollouts instead of the server's rollouts.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// The phase names as clap's possible values, so `--help` lists them and shell
/// completions offer them.
fn phase_parser() -> impl TypedValueParser<Value = Phase> {
    clap::builder::PossibleValuesParser::new(Phase::ALL.map(Phase::as_str))
        .map(|name| Phase::from_name(&name).unwrap_or_default())
}

/// Runs `fledge get`.
pub async fn run(client_args: &ClientArgs, args: &GetArgs) -> anyhow::Result<ExitCode> {
    if args.kube.kube {
        return kube::get(client_args, args).await;
    }
    let client = client::connect(client_args)?;
    let Some(id) = &args.id else {
        let query = ListQuery {
            app: args.app.clone(),
            phase: args.phase,
            limit: None,
        };
        let rollouts = client.rollouts(&query).await?;
        match output::render_machine(client_args.format(), &rollouts)? {
            Some(text) => print!("{text}"),
            None => print!("{}", render::list(&rollouts)),
        }
        return Ok(ExitCode::SUCCESS);
    };
    if args.watch {
        let done = follow::follow(&client, id, client_args.format(), Target::Stdout).await?;
        if client_args.format() != OutputFormat::Table {
            print!(
                "{}",
                output::render_machine(client_args.format(), &done)?.unwrap_or_default()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rollout = client.rollout(id).await?;
    match output::render_machine(client_args.format(), &rollout)? {
        Some(text) => print!("{text}"),
        None => print!("{}", render::detail(&rollout)),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        get: GetArgs,
    }

    #[test]
    fn phases_are_read_in_any_case() {
        let phase =
            |text: &str| Probe::try_parse_from(["get", "--phase", text]).map(|p| p.get.phase);
        assert_eq!(phase("failed").unwrap(), Some(Phase::Failed));
        assert_eq!(phase("Progressing").unwrap(), Some(Phase::Progressing));
        assert!(phase("done").unwrap_err().to_string().contains("Succeeded"));
    }
}
