//! `fledge undo APP [--now]`: a rollout back to the app's previous stable version
//! (`POST /apps/{app}/undo`), through the stages of the app's latest spec or all at
//! once, judged and recorded like any rollout.

use std::process::ExitCode;

use clap::Args;

use super::client::{self, ClientArgs};
use crate::view::{output, render};

/// Arguments of `fledge undo`.
#[derive(Debug, Args)]
pub struct UndoArgs {
    /// The app to take back to the version that was stable before its current one.
    #[arg(value_name = "APP")]
    pub app: String,
    /// Switch all traffic back at once instead of going through the stages of the
    /// app's latest spec.
    #[arg(long)]
    pub now: bool,
    /// Why, recorded in the new rollout's history.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// Runs `fledge undo`.
pub async fn run(client_args: &ClientArgs, args: &UndoArgs) -> anyhow::Result<ExitCode> {
    let client = client::connect(client_args)?;
    let rollout = client
        .undo(&args.app, args.now, args.reason.clone())
        .await?;
    match output::render_machine(client_args.format(), &rollout)? {
        Some(text) => print!("{text}"),
        None => println!(
            "{} (follow it with `fledge get {} --watch`)",
            render::acted(&rollout, &format!("started back to {}", rollout.version)),
            rollout.id
        ),
    }
    Ok(ExitCode::SUCCESS)
}
