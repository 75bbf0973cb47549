//! `fledge promote|abort|pause|resume|retry ROLLOUT`: the operator actions.
//!
//! `ROLLOUT` is a rollout id or an app name (its active or latest rollout); the
//! server records the caller's identity (from the token) with each action.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{ApiClient, ClientArgs};
use super::get::Rollout;
use super::output;

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
    let client = ApiClient::from_args(client_args)?;
    let (id, verb, past) = match cmd {
        ActionCommand::Promote(a) => (&a.id, "promote", "promoted"),
        ActionCommand::Abort(a) => (&a.id, "abort", "aborted"),
        ActionCommand::Pause(a) => (&a.id, "pause", "paused"),
        ActionCommand::Resume(a) => (&a.id, "resume", "resumed"),
        ActionCommand::Retry(a) => (&a.id, "retry", "restarted"),
    };
    let (query, body): (Vec<(&str, &str)>, _) = match cmd {
        ActionCommand::Promote(PromoteArgs { full: true, .. }) => (vec![("full", "true")], None),
        ActionCommand::Abort(AbortArgs {
            reason: Some(reason),
            ..
        }) => (Vec::new(), Some(json!({ "reason": reason }))),
        _ => (Vec::new(), None),
    };
    let raw = client.action(id, verb, &query, body).await?;
    match output::render_machine(client_args.output, &raw)? {
        Some(text) => print!("{text}"),
        None => {
            let r = Rollout::from_value(raw);
            let name = if r.view.id.is_empty() {
                id.clone()
            } else {
                r.view.id.clone()
            };
            if r.view.phase.is_empty() {
                println!("rollout {name} {past}");
            } else {
                println!(
                    "rollout {name} {past}: {} stage {} weight {}",
                    r.view.phase,
                    r.view.stage_label(),
                    r.view.weight_label()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
