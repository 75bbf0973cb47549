//! `fledge apply -f FILE [--wait]`: start a rollout, or a rollout group (a document
//! with `rollouts:`), and optionally follow it to its end.
//!
//! Exit codes are what a CI pipeline keys on: 0 when the rollout succeeded (or was
//! started, without `--wait`), 1 when it failed or was aborted, 2 when the command
//! could not do its job (bad file, spec refused, server unreachable), 3 when
//! `--timeout` passed first ([`super::wait::EXIT_CODES`]).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use fledge_engine::Phase;

use super::client::{self, ClientArgs};
use super::wait::{self, Condition};
use crate::view::output;
use crate::view::render::RolloutView;

/// Arguments of `fledge apply`.
#[derive(Debug, Args)]
#[command(after_help = wait::EXIT_CODES)]
pub struct ApplyArgs {
    /// The rollout spec, YAML or JSON (`-` reads standard input).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,

    /// Follow the rollout until it ends; exit 0 when it succeeds, 1 when it fails or
    /// is aborted.
    #[arg(long)]
    pub wait: bool,

    /// With --wait: give up after this long (e.g. `90s`, `10m`) with exit code 3.
    #[arg(
        long,
        requires = "wait",
        value_name = "DURATION",
        value_parser = fledge_spec::duration::parse_arg
    )]
    pub timeout: Option<std::time::Duration>,
}

/// Runs `fledge apply`.
pub async fn run(client_args: &ClientArgs, args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let (text, origin) = read_spec(&args.file)?;
    let content_type = content_type(&args.file, &text);
    let client = client::connect(client_args)?;
    if fledge_spec::is_group_document(&text) {
        let group = client
            .create_group(text, content_type, Some(&origin))
            .await
            .with_context(|| format!("the server refused the rollout group in {origin}"))?;
        let follow = args.wait.then_some(args.timeout);
        return super::group::created(&client, client_args, &group, follow).await;
    }
    let created = client
        .create_rollout(text, content_type, None)
        .await
        .with_context(|| format!("the server refused the rollout in {origin}"))?;
    if !args.wait {
        match output::render_machine(client_args.format(), &created)? {
            Some(text) => print!("{text}"),
            None => println!(
                "rollout {} created: {} → {} ({})",
                created.id,
                created.app,
                created.version,
                created.phase.as_str()
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "rollout {} created: {} → {}; following it until it ends",
        created.id, created.app, created.version
    );
    wait::wait(
        &client,
        client_args,
        &created.id,
        Condition::Succeeded,
        args.timeout,
    )
    .await
}

/// One line saying how a rollout ended.
pub fn outcome_line(view: &impl RolloutView) -> String {
    let v = view.rollout();
    match v.phase {
        Phase::Succeeded => format!(
            "rollout {} succeeded: {} is now the stable version of {}",
            v.id, v.version, v.app
        ),
        phase => {
            let verb = if phase == Phase::Aborted {
                "was aborted"
            } else {
                "failed"
            };
            match view.decision_message() {
                None => format!("rollout {} {verb}: {} rolled back to stable", v.id, v.app),
                Some(why) => format!(
                    "rollout {} {verb}: {} rolled back to stable ({why})",
                    v.id, v.app
                ),
            }
        }
    }
}

fn read_spec(path: &std::path::Path) -> anyhow::Result<(String, String)> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the spec from standard input")?;
        return Ok((text, "<stdin>".to_string()));
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the spec file {}", path.display()))?;
    Ok((text, path.display().to_string()))
}

/// JSON for `.json` files and for text that starts with `{`; YAML otherwise.
fn content_type(path: &std::path::Path, text: &str) -> &'static str {
    let json_ext = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if json_ext || text.trim_start().starts_with('{') {
        "application/json"
    } else {
        "application/yaml"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn picks_the_content_type() {
        assert_eq!(
            content_type(Path::new("a.json"), "app: x"),
            "application/json"
        );
        assert_eq!(
            content_type(Path::new("-"), " {\"app\":1}"),
            "application/json"
        );
        assert_eq!(
            content_type(Path::new("a.yaml"), "app: x"),
            "application/yaml"
        );
    }
}
