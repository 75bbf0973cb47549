//! `fledge wait ROLLOUT|APP [--timeout D] [--for succeeded|paused|stage N]`: block
//! until a rollout that already exists reaches a condition, for a CI pipeline to
//! gate on. `apply --wait` ends the same way.
//!
//! A server that is down for a while (a restart, a 5xx, a 429) does not end the
//! wait: the poll is retried with backoff until the timeout.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use fledge_api::rollout::Rollout;
use fledge_engine::Phase;

use super::apply::outcome_line;
use super::client::{self, ApiClient, ClientArgs, EXIT_ROLLOUT_FAILED, EXIT_TIMED_OUT};
use super::kube::{self, KubeArgs};
use crate::view::follow::{self, Followed, Target};
use crate::view::output::{self, OutputFormat};
use crate::view::render::{self, RolloutView};

/// The exit codes of `wait` and `apply --wait`, for `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  the rollout succeeded (or reached the --for condition)
  1  the rollout failed or was aborted (rolled back), or ended before the --for
     condition could be reached
  2  usage error, or an error the server will not get over (unknown rollout,
     refused token, ...)
  3  timed out: --timeout passed first

Transient errors (server unreachable or restarting, 5xx, 429) are retried with
backoff until the timeout; without --timeout the wait has no end of its own.";

/// Arguments of `fledge wait`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct WaitArgs {
    /// The rollout's id, or an app name (its active or latest rollout, looked up
    /// once when the wait starts).
    #[arg(value_name = "ROLLOUT|APP")]
    pub id: String,

    /// Give up after this long (e.g. `90s`, `10m`) with exit code 3.
    #[arg(long, value_name = "DURATION", value_parser = fledge_spec::duration::parse_arg)]
    pub timeout: Option<Duration>,

    /// What to wait for: `succeeded` (the default), `paused`, or `stage N` (the
    /// rollout is in its N-th stage, counted from 1, or later).
    #[arg(
        long = "for",
        value_name = "CONDITION",
        num_args = 1..=2,
        default_value = "succeeded"
    )]
    pub condition: Vec<String>,

    /// `--kube [-n NAMESPACE]`: wait for a CanaryRollout (by name), with a watch.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// What a wait ends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The rollout succeeded.
    Succeeded,
    /// The rollout is paused.
    Paused,
    /// The rollout is in this stage (1-based) or a later one, or succeeded.
    Stage(usize),
}

// === impl Condition ===

impl Condition {
    /// Reads `--for`'s values: one word, and a number after `stage`.
    pub fn parse(words: &[String]) -> Result<Self, String> {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["succeeded"] => Ok(Self::Succeeded),
            ["paused"] => Ok(Self::Paused),
            ["stage", n] => match n.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Self::Stage(n)),
                _ => Err(format!(
                    "--for stage takes a stage number from 1, found `{n}`"
                )),
            },
            ["stage"] => Err("--for stage needs a stage number: --for stage 2".into()),
            other => Err(format!(
                "--for takes `succeeded`, `paused` or `stage N`, found `{}`",
                other.join(" ")
            )),
        }
    }

    /// Whether `r` is where the wait ends well.
    pub fn holds(self, r: &Rollout) -> bool {
        match self {
            Self::Succeeded => r.phase == Phase::Succeeded,
            Self::Paused => r.phase == Phase::Paused,
            Self::Stage(n) => {
                r.phase == Phase::Succeeded || (r.phase.is_active() && r.stage_index + 1 >= n)
            }
        }
    }

    fn describe(self) -> String {
        match self {
            Self::Succeeded => "succeed".into(),
            Self::Paused => "be paused".into(),
            Self::Stage(n) => format!("reach stage {n}"),
        }
    }
}

/// Runs `fledge wait`.
pub async fn run(client_args: &ClientArgs, args: &WaitArgs) -> anyhow::Result<ExitCode> {
    if args.kube.kube {
        return kube::wait(client_args, args).await;
    }
    let condition = Condition::parse(&args.condition).map_err(anyhow::Error::msg)?;
    let client = client::connect(client_args)?;
    let started = tokio::time::Instant::now();
    // An app name means the rollout it has now; a later rollout of the same app is
    // not this wait's business. A server that is restarting is waited for, within
    // the timeout, like every later read.
    let first = follow::fetch(&client, &args.id, args.timeout.map(|t| started + t)).await?;
    let Some(rollout) = first else {
        return conclude::<Rollout>(
            client_args.format(),
            &args.id,
            condition,
            args.timeout,
            Followed::TimedOut(None),
        );
    };
    if let Condition::Stage(n) = condition
        && n > rollout.stages.len()
    {
        anyhow::bail!(
            "rollout {} has {} stages, so it never reaches stage {n}",
            rollout.id,
            rollout.stages.len()
        );
    }
    let left = args.timeout.map(|t| t.saturating_sub(started.elapsed()));
    wait(&client, client_args, &rollout.id, condition, left).await
}

/// Follows rollout `id` until `condition` holds, it ends, or the timeout passes;
/// prints the outcome and gives the exit code (see [`EXIT_CODES`]).
pub async fn wait(
    client: &ApiClient,
    client_args: &ClientArgs,
    id: &str,
    condition: Condition,
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let reached = |r: &Rollout| condition.holds(r);
    let followed = follow::follow_until(
        client,
        id,
        client_args.format(),
        Target::Stderr,
        &reached,
        deadline,
    )
    .await?;
    conclude(client_args.format(), id, condition, timeout, followed)
}

/// Prints how a wait for rollout `id` ended and gives its exit code (see
/// [`EXIT_CODES`]), whichever world the rollout was followed in.
pub fn conclude<V: RolloutView>(
    format: OutputFormat,
    id: &str,
    condition: Condition,
    timeout: Option<Duration>,
    followed: Followed<V>,
) -> anyhow::Result<ExitCode> {
    let (seen, code) = match followed {
        Followed::Reached(v) if condition.holds(v.rollout()) => {
            let r = v.rollout();
            let line = match condition {
                Condition::Succeeded => outcome_line(&v),
                _ => format!(
                    "rollout {} is {} in stage {}",
                    r.id,
                    r.phase.as_str(),
                    render::stage_label(r)
                ),
            };
            (Some((v, line)), ExitCode::SUCCESS)
        }
        Followed::Reached(v) => {
            let mut line = outcome_line(&v);
            if v.rollout().phase == Phase::Succeeded {
                line.push_str(&format!(" before it could {}", condition.describe()));
            }
            (Some((v, line)), ExitCode::from(EXIT_ROLLOUT_FAILED))
        }
        Followed::TimedOut(last) => {
            let now = last.as_ref().map_or_else(String::new, |v| {
                let r = v.rollout();
                format!(
                    "; it is {} in stage {}",
                    r.phase.as_str(),
                    render::stage_label(r)
                )
            });
            eprintln!(
                "fledge: timed out after {} waiting for rollout {id} to {}{now}",
                humantime::format_duration(timeout.unwrap_or_default()),
                condition.describe()
            );
            (
                last.map(|v| (v, String::new())),
                ExitCode::from(EXIT_TIMED_OUT),
            )
        }
    };
    if let Some((view, line)) = seen {
        match output::render_machine(format, &view)? {
            Some(text) => print!("{text}"),
            None if !line.is_empty() => println!("{line}"),
            None => {}
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn reads_the_for_condition() {
        assert_eq!(
            Condition::parse(&words("succeeded")),
            Ok(Condition::Succeeded)
        );
        assert_eq!(Condition::parse(&words("paused")), Ok(Condition::Paused));
        assert_eq!(Condition::parse(&words("stage 2")), Ok(Condition::Stage(2)));
        assert!(Condition::parse(&words("stage 0")).is_err());
        assert!(
            Condition::parse(&words("stage"))
                .unwrap_err()
                .contains("number")
        );
        assert!(Condition::parse(&words("paused 2")).is_err());
    }
}
