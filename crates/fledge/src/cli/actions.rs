//! `fledge promote|abort|pause|resume|retry ROLLOUT`: the operator actions.
//!
//! `ROLLOUT` is a rollout id or an app name (its active or latest rollout); the
//! server records the caller's identity (from the token) with each action.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use fledge_api::rollout::Action;

use super::client::{self, Client, ClientArgs};
use super::kube::{self, KubeArgs};
use crate::view::{output, render};

/// The operator actions, each a subcommand of its own.
#[derive(Debug, Subcommand)]
pub enum ActionCommand {
    /// End the current stage now (or, with --full, go to 100% and succeed).
    Promote(Client<PromoteArgs>),
    /// Stop the rollout and send all traffic back to the stable version.
    Abort(Client<AbortArgs>),
    /// Hold the rollout in its current stage; criteria are still checked.
    Pause(Client<TargetArgs>),
    /// Continue a paused rollout.
    Resume(Client<TargetArgs>),
    /// Start a failed or aborted rollout again from its first stage.
    Retry(Client<TargetArgs>),
}

/// The rollout an action applies to.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The rollout's id, or an app name (its active or latest rollout).
    #[arg(value_name = "ROLLOUT")]
    pub id: String,
    /// `--kube [-n NAMESPACE]`: act on a CanaryRollout (by name).
    #[command(flatten)]
    pub kube: KubeArgs,
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
    /// `--kube [-n NAMESPACE]`: act on a CanaryRollout (by name).
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Arguments of `fledge abort`.
#[derive(Debug, Args)]
pub struct AbortArgs {
    /// The rollout's id, or an app name.
    #[arg(value_name = "ROLLOUT")]
    pub id: String,
    /// Why, recorded in the rollout's history (not with --kube: the operator's
    /// command annotation carries no reason).
    #[arg(long, value_name = "TEXT", conflicts_with = "kube")]
    pub reason: Option<String>,
    /// `--kube [-n NAMESPACE]`: act on a CanaryRollout (by name).
    #[command(flatten)]
    pub kube: KubeArgs,
}

// === impl ActionCommand ===

impl ActionCommand {
    /// The rollout acted on, and the `--kube` flags.
    pub fn target(&self) -> (&str, &KubeArgs) {
        match self {
            ActionCommand::Promote(a) => (&a.args.id, &a.args.kube),
            ActionCommand::Abort(a) => (&a.args.id, &a.args.kube),
            ActionCommand::Pause(a) | ActionCommand::Resume(a) | ActionCommand::Retry(a) => {
                (&a.args.id, &a.args.kube)
            }
        }
    }

    /// The server, token and output flags.
    pub fn client(&self) -> &ClientArgs {
        match self {
            ActionCommand::Promote(a) => &a.client,
            ActionCommand::Abort(a) => &a.client,
            ActionCommand::Pause(a) | ActionCommand::Resume(a) | ActionCommand::Retry(a) => {
                &a.client
            }
        }
    }

    /// The action, how the `fledge.dev/command` annotation spells it, and its past
    /// tense for the line printed.
    pub fn parts(&self) -> (Action, &'static str, &'static str) {
        match self {
            ActionCommand::Promote(a) if a.args.full => {
                (Action::Promote, "promote-full", "promoted")
            }
            ActionCommand::Promote(_) => (Action::Promote, "promote", "promoted"),
            ActionCommand::Abort(_) => (Action::Abort, "abort", "aborted"),
            ActionCommand::Pause(_) => (Action::Pause, "pause", "paused"),
            ActionCommand::Resume(_) => (Action::Resume, "resume", "resumed"),
            ActionCommand::Retry(_) => (Action::Retry, "retry", "restarted"),
        }
    }
}

/// Runs one operator action.
pub async fn run(cmd: &ActionCommand) -> anyhow::Result<ExitCode> {
    let (id, kube_args) = cmd.target();
    let client_args = cmd.client();
    if kube_args.kube {
        return kube::act(client_args, cmd).await;
    }
    let client = client::connect(client_args)?;
    let (action, _, past) = cmd.parts();
    let (full, reason) = match cmd {
        ActionCommand::Promote(a) => (a.args.full, None),
        ActionCommand::Abort(a) => (false, a.args.reason.clone()),
        _ => (false, None),
    };
    let rollout = client.act(id, action, full, reason).await?;
    match output::render_machine(client_args.format(), &rollout)? {
        Some(text) => print!("{text}"),
        None => println!("{}", render::acted(&rollout, past)),
    }
    Ok(ExitCode::SUCCESS)
}
