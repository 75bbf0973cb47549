//! `fledge group …`: rollout groups (several apps' rollouts moving in lock step or
//! in order). `fledge apply -f` starts one from a group document; these commands
//! show groups, follow one to its end, and act on a whole group.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use fledge_api::group::Group;
use fledge_api::rollout::Action;
use fledge_engine::group::GroupPhase;
use fledge_spec::GroupOrder;

use super::client::{self, ApiClient, Client, ClientArgs, EXIT_ROLLOUT_FAILED, EXIT_TIMED_OUT};
use crate::view::output;

/// `fledge group`'s subcommands.
#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(subcommand)]
    pub command: GroupCommand,
}

/// What to do with groups.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List groups, newest first.
    List(Client<ListArgs>),
    /// Show one group: its members side by side and its history.
    Get(Client<GroupRef>),
    /// Follow a group until it ends: exit 0 when every member succeeded, 1 when it
    /// failed or was aborted, 3 on --timeout.
    Wait(Client<WaitArgs>),
    /// End the current stage of every active member now (`--full`: an `order` group's
    /// running member goes to 100%).
    Promote(Client<PromoteArgs>),
    /// Abort the group: every member that has not succeeded goes back to stable (and,
    /// with `rollbackSucceeded`, the others too).
    Abort(Client<ActionArgs>),
    /// Pause every active member; no member starts until resumed.
    Pause(Client<ActionArgs>),
    /// Resume a paused group.
    Resume(Client<ActionArgs>),
}

/// Arguments of `fledge group list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only groups still moving or paused.
    #[arg(long)]
    pub active: bool,
    /// At most this many.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

/// A group, by id or by name (the newest of that name).
#[derive(Debug, Args)]
pub struct GroupRef {
    /// The group's id (`gr-…`) or name.
    #[arg(value_name = "GROUP")]
    pub group: String,
}

/// Arguments of `fledge group wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub group: GroupRef,
    /// Give up after this long (e.g. `90s`, `10m`) with exit code 3.
    #[arg(long, value_name = "DURATION", value_parser = fledge_spec::duration::parse_arg)]
    pub timeout: Option<Duration>,
}

/// Arguments of an action on a group.
#[derive(Debug, Args)]
pub struct ActionArgs {
    #[command(flatten)]
    pub group: GroupRef,
    /// Why, recorded in the group's history.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// Arguments of `fledge group promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub action: ActionArgs,
    /// Take the running member of an `order` group to 100% at once.
    #[arg(long)]
    pub full: bool,
}

/// Runs `fledge group …`.
pub async fn run(args: &GroupArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        GroupCommand::List(c) => {
            let api = client::connect(&c.client)?;
            let groups = api.groups(c.args.active, c.args.limit).await?;
            match output::render_machine(c.client.format(), &groups)? {
                Some(text) => print!("{text}"),
                None if groups.is_empty() => println!("no groups"),
                None => {
                    for g in &groups {
                        println!("{}", headline(g));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        GroupCommand::Get(c) => {
            let api = client::connect(&c.client)?;
            let group = api.group(&c.args.group).await?;
            print_group(&c.client, &group)?;
            Ok(ExitCode::SUCCESS)
        }
        GroupCommand::Wait(c) => {
            let api = client::connect(&c.client)?;
            wait(&api, &c.client, &c.args.group.group, c.args.timeout).await
        }
        GroupCommand::Promote(c) => {
            act(&c.client, &c.args.action, Action::Promote, c.args.full).await
        }
        GroupCommand::Abort(c) => act(&c.client, &c.args, Action::Abort, false).await,
        GroupCommand::Pause(c) => act(&c.client, &c.args, Action::Pause, false).await,
        GroupCommand::Resume(c) => act(&c.client, &c.args, Action::Resume, false).await,
    }
}

async fn act(
    client_args: &ClientArgs,
    args: &ActionArgs,
    action: Action,
    full: bool,
) -> anyhow::Result<ExitCode> {
    let api = client::connect(client_args)?;
    let group = api
        .act_on_group(&args.group.group, action, full, args.reason.clone())
        .await?;
    print_group(client_args, &group)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints what `fledge apply` made of a group document, or follows it with `wait`.
pub async fn created(
    api: &ApiClient,
    client_args: &ClientArgs,
    group: &Group,
    follow: Option<Option<Duration>>,
) -> anyhow::Result<ExitCode> {
    let Some(timeout) = follow else {
        print_group(client_args, group)?;
        return Ok(ExitCode::SUCCESS);
    };
    eprintln!("{}; following it until it ends", headline(group));
    wait(api, client_args, &group.id, timeout).await
}

/// Polls the group every second, printing its new history entries, until it ends.
async fn wait(
    api: &ApiClient,
    client_args: &ClientArgs,
    key: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut seen = 0;
    loop {
        let group = match api.group(key).await {
            Ok(g) => g,
            // A server restarting is waited for, within the timeout.
            Err(e) if e.is_transient() => {
                if timeout.is_some_and(|t| started.elapsed() >= t) {
                    return Err(e.into());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for e in group.events.iter().skip(seen) {
            eprintln!("{}  {:<16} {}", e.at, e.kind, e.message);
        }
        seen = group.events.len();
        if !group.phase.is_active() {
            if let Some(text) = output::render_machine(client_args.format(), &group)? {
                print!("{text}");
            } else {
                println!("{}", headline(&group));
            }
            return Ok(if group.phase == GroupPhase::Succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_ROLLOUT_FAILED)
            });
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            eprintln!(
                "group {} is still {} after {:?}",
                group.id,
                group.phase.as_str(),
                started.elapsed()
            );
            return Ok(ExitCode::from(EXIT_TIMED_OUT));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn print_group(client_args: &ClientArgs, group: &Group) -> anyhow::Result<()> {
    if let Some(text) = output::render_machine(client_args.format(), group)? {
        print!("{text}");
        return Ok(());
    }
    print!("{}", render(group));
    Ok(())
}

/// One line: id, name, phase, how it moves, and why it ended.
pub fn headline(group: &Group) -> String {
    let order = match &group.order {
        GroupOrder::Together => "together".to_owned(),
        GroupOrder::Sequence(apps) => format!("in order {}", apps.join(" → ")),
    };
    let members: Vec<String> = group
        .members
        .iter()
        .map(|m| format!("{} {}", m.app, m.version))
        .collect();
    let why = group
        .message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    format!(
        "group {} {} ({}, {order}): {}{why}",
        group.id,
        group.name,
        members.join(", "),
        group.phase.as_str()
    )
}

/// The group as a table of its members and its history.
pub fn render(group: &Group) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{}\n", headline(group));
    let _ = writeln!(
        out,
        "{:<20} {:<12} {:<16} {:<12} {:>5} {:>6}  NOTE",
        "APP", "VERSION", "ROLLOUT", "PHASE", "STAGE", "CANARY"
    );
    for m in &group.members {
        let (id, phase, stage, weight) = match &m.rollout {
            Some(r) => (
                r.id.as_str(),
                r.phase.as_str(),
                format!("{}/{}", r.stage_index + 1, r.stages.len()),
                format!("{}%", r.canary_weight),
            ),
            None => ("-", "not started", "-".to_owned(), "-".to_owned()),
        };
        let mut note = Vec::new();
        if m.waiting_for_group {
            note.push("stage done, waiting for the group".to_owned());
        }
        if let Some(undo) = &m.undo_rollout_id {
            note.push(format!("undone by {undo}"));
        }
        let _ = writeln!(
            out,
            "{:<20} {:<12} {:<16} {:<12} {:>5} {:>6}  {}",
            m.app,
            m.version,
            id,
            phase,
            stage,
            weight,
            note.join("; ")
        );
    }
    if !group.allowed_actions.is_empty() {
        let actions: Vec<&str> = group.allowed_actions.iter().map(|a| a.as_str()).collect();
        let _ = writeln!(out, "actions: {}", actions.join(", "));
    }
    let _ = writeln!(out, "history:");
    for e in &group.events {
        let _ = writeln!(out, "  {}  {:<16} {}", e.at, e.kind, e.message);
    }
    out
}
