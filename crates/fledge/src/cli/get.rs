//! `fledge get [ROLLOUT] [--watch]`: the latest rollouts, one rollout, or a live
//! view of one until it ends.

use std::process::ExitCode;

use clap::Args;
use fledge_api::rollout::ListQuery;
use fledge_engine::Phase;

use super::client::{self, ClientArgs};
use crate::view::follow::{self, Target};
use crate::view::output::{self, OutputFormat};
use crate::view::render;

/// Arguments of `fledge get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The rollout's id, or an app name (its active or latest rollout). Without it,
    /// a list of the latest rollouts.
    #[arg(value_name = "ROLLOUT")]
    pub id: Option<String>,

    /// Keep a live view open, redrawn as the rollout moves, until it ends.
    #[arg(long, short = 'w', requires = "id")]
    pub watch: bool,

    /// List only this app's rollouts.
    #[arg(long, conflicts_with = "id")]
    pub app: Option<String>,

    /// List only rollouts in this phase.
    #[arg(long, conflicts_with = "id", value_parser = parse_phase)]
    pub phase: Option<Phase>,
}

/// A phase name, in any case.
fn parse_phase(text: &str) -> Result<Phase, String> {
    Phase::from_name(text).ok_or_else(|| format!("expected {}, found `{text}`", Phase::EXPECTED))
}

/// Runs `fledge get`.
pub async fn run(client_args: &ClientArgs, args: &GetArgs) -> anyhow::Result<ExitCode> {
    let client = client::connect(client_args)?;
    let Some(id) = &args.id else {
        let query = ListQuery {
            app: args.app.clone(),
            phase: args.phase,
            limit: None,
        };
        let rollouts = client.rollouts(&query).await?;
        match output::render_machine(client_args.output, &rollouts)? {
            Some(text) => print!("{text}"),
            None => print!("{}", render::list(&rollouts)),
        }
        return Ok(ExitCode::SUCCESS);
    };
    if args.watch {
        let done = follow::follow(&client, id, client_args.output, Target::Stdout).await?;
        if client_args.output != OutputFormat::Table {
            print!(
                "{}",
                output::render_machine(client_args.output, &done)?.unwrap_or_default()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rollout = client.rollout(id).await?;
    match output::render_machine(client_args.output, &rollout)? {
        Some(text) => print!("{text}"),
        None => print!("{}", render::detail(&rollout)),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_read_in_any_case() {
        assert_eq!(parse_phase("failed"), Ok(Phase::Failed));
        assert_eq!(parse_phase("Progressing"), Ok(Phase::Progressing));
        assert!(parse_phase("done").unwrap_err().contains("found `done`"));
    }
}
