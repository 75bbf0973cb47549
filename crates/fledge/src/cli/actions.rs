//! `fledge promote|abort|pause|resume|retry ROLLOUT`: the operator actions.
//!
//! `ROLLOUT` is a rollout id or an app name (its active or latest rollout); the
//! server records the caller's identity (from the token) with each action.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use fledge_api::rollout::Action;

use super::client::{self, ClientArgs};
use crate::view::{output, render};

/// The operator actions, each a subcommand of its own.
#[derive(Debug, Subcommand)]
pub enum ActionCommand {
    /// End the current stage now (or, with --full, go to 100% and succeed).
    Promote(PromoteArgs),
    /// Stop the rollout and send all traffic back to the stable version.
    Abort(AbortArgs),
    /// Hold the rollout in its current stage; criteria are still checked.
    Pause(TargetArgs),
    /// Continue a paused rollout.
    Resume(TargetArgs),
    /// Start a failed or aborted rollout again from its first stage.
    Retry(TargetArgs),
}

/// The rollout an action applies to.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The rollout's id, or an app name (its active or latest rollout).
    #[arg(value_name = "ROLLOUT")]
    pub id: String,
}

/// Arguments of `fledge promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The rollout's id, or an app name.
    #[arg(value_name = "ROLLOUT")]
    pub id: String,
    /// Skip the remaining stages: 100% to the canary, which becomes stable.
    #[arg(long)]
    pub full: bool,
}

/// Arguments of `fledge abort`.
#[derive(Debug, Args)]
pub struct AbortArgs {
    /// The rollout's id, or an app name.
    #[arg(value_name = "ROLLOUT")]
    pub id: String,
    /// Why, recorded in the rollout's history.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// Runs one operator action.
pub async fn run(client_args: &ClientArgs, cmd: &ActionCommand) -> anyhow::Result<ExitCode> {
    let client = client::connect(client_args)?;
    let (id, action, past) = match cmd {
        ActionCommand::Promote(a) => (&a.id, Action::Promote, "promoted"),
        ActionCommand::Abort(a) => (&a.id, Action::Abort, "aborted"),
        ActionCommand::Pause(a) => (&a.id, Action::Pause, "paused"),
        ActionCommand::Resume(a) => (&a.id, Action::Resume, "resumed"),
        ActionCommand::Retry(a) => (&a.id, Action::Retry, "restarted"),
    };
    let (full, reason) = match cmd {
        ActionCommand::Promote(a) => (a.full, None),
        ActionCommand::Abort(a) => (false, a.reason.clone()),
        _ => (false, None),
    };
    let rollout = client.act(id, action, full, reason).await?;
    match output::render_machine(client_args.output, &rollout)? {
        Some(text) => print!("{text}"),
        None => println!("{}", render::acted(&rollout, past)),
    }
    Ok(ExitCode::SUCCESS)
}
