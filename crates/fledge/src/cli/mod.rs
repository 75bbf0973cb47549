//! Command-line interface: one module per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use client::Client;

pub mod actions;
pub mod apply;
pub mod client;
pub mod completion;
pub mod crd;
pub mod dataplane;
pub mod demo;

pub mod get;
pub mod group;
pub mod import;
pub mod kube;
pub mod operator;

pub mod schema;
pub mod serve;
pub mod simulate;
pub mod status;
pub mod token;
pub mod undo;
pub mod validate;
pub mod wait;

/// fledge: progressive delivery (canary releases) in one binary.
#[derive(Debug, Parser)]
#[command(name = "fledge", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a rollout (or a rollout group) from a file; with --wait, follow it to its end.
    Apply(Client<apply::ApplyArgs>),
    /// Every app: stable version, active rollout, live health of both versions.
    Status(Client<status::StatusArgs>),
    /// Show one rollout; with --watch, a live view until it ends.
    Get(Client<get::GetArgs>),
    /// Block until a rollout succeeds (or reaches --for), for a CI pipeline to gate on.
    Wait(Client<wait::WaitArgs>),
    #[command(flatten)]
    Action(actions::ActionCommand),
    /// Start a rollout back to an app's previous stable version.
    Undo(Client<undo::UndoArgs>),
    /// Rollout groups: list, show, follow, promote, abort, pause, resume.
    Group(group::GroupArgs),
    /// Print a shell completion script.
    Completion(completion::CompletionArgs),
    /// Run a whole canary rollout on this machine: backends, load, proxy, judge, UI.
    Demo(demo::DemoArgs),
    /// Run the server: API, controller and one proxy per app.
    Serve(serve::ServeArgs),
    /// Run the proxies in a process of their own that outlives `fledge serve`.
    #[command(name = "dataplane")]
    DataPlane(dataplane::DataPlaneArgs),
    /// Make a new access token and print its config entry.
    Token(token::TokenArgs),
    /// Check rollout spec files without a server.
    Validate(validate::ValidateArgs),
    /// Convert Argo Rollouts `Rollout`s and Flagger `Canary`s into rollout specs.
    Import(import::ImportArgs),
    /// Run the rollout engine against simulated traffic, many seeded times.
    Simulate(simulate::SimulateArgs),
    /// Print the JSON Schema of the rollout spec.
    Schema(schema::SchemaArgs),
    /// The Kubernetes operator: run it, print its manifests, send it commands.
    Operator(operator::OperatorArgs),
    /// Print the CanaryRollout CustomResourceDefinition (YAML).
    Crd(crd::CrdArgs),
}

// === impl Command ===

impl Command {
    /// The `--kube` flags of a client command that takes them.
    fn kube_args(&self) -> Option<&kube::KubeArgs> {
        match self {
            Command::Get(c) => Some(&c.args.kube),
            Command::Status(c) => Some(&c.args.kube),
            Command::Wait(c) => Some(&c.args.kube),
            Command::Action(cmd) => Some(cmd.target().1),
            _ => None,
        }
    }
}

/// The client flags: given to a command that is not a client command, clap's
/// "unexpected argument" is made to say which command refused it and why.
const CLIENT_FLAGS: [&str; 6] = [
    "-o",
    "--output",
    "--server",
    "--token",
    "--token-file",
    "--ca-cert",
];

/// Parses the command line (exiting with clap's message and code 2 on a usage
/// error). `--kube` and `--server` are two worlds, so both on the command line is a
/// usage error; a `FLEDGE_SERVER` from the environment, though, gives way to an
/// explicit `--kube` (clap's own `conflicts_with` would count it as given).
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = command
        .try_get_matches_from_mut(&argv)
        .unwrap_or_else(|e| explain_refused_flag(&mut command, &argv, e).exit());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Only a client command has `--kube`, and with it `--server`.
    let server_given = || {
        matches
            .subcommand()
            .and_then(|(_, sub)| sub.value_source("server"))
            == Some(clap::parser::ValueSource::CommandLine)
    };
    if cli.command.kube_args().is_some_and(|k| k.kube) && server_given() {
        command
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "the argument '--kube' cannot be used with '--server <URL>': \
                 --kube works on the cluster's CanaryRollouts, --server on a fledge server's rollouts",
            )
            .exit();
    }
    cli
}

/// Clap's error, or, for a client flag given to a command without it, one that
/// names the command and the commands that take the flag.
fn explain_refused_flag(
    command: &mut clap::Command,
    argv: &[std::ffi::OsString],
    err: clap::Error,
) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if err.kind() != ErrorKind::UnknownArgument {
        return err;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    let flag = arg.split('=').next().unwrap_or(arg);
    if !CLIENT_FLAGS.contains(&flag) {
        return err;
    }
    let name = command_path(command, argv);
    let message = if name == command.get_name() {
        // Before any command: these flags belong to the command, after it.
        format!(
            "{flag} goes after the command it is for, e.g. `fledge status {flag} …`: \
             only the client commands (apply, status, get, wait, the rollout actions, undo) \
             and, for -o, the commands that print data take it"
        )
    } else if matches!(flag, "-o" | "--output") {
        format!(
            "`{name}` does not take -o/--output: its output has one format only \
             (-o table|json|yaml is for apply, status, get, wait, the rollout actions, undo, \
             validate, import, simulate, token, schema and crd)"
        )
    } else {
        format!(
            "`{name}` does not take {flag}: it talks to no fledge server \
             ({flag} is for the client commands: apply, status, get, wait, promote, \
             abort, pause, resume, retry and undo)"
        )
    };
    command.error(ErrorKind::UnknownArgument, message)
}

/// `fledge` and the subcommands named on the command line, e.g. `fledge operator run`.
fn command_path(command: &clap::Command, argv: &[std::ffi::OsString]) -> String {
    let mut path = vec![command.get_name().to_owned()];
    let mut current = command;
    for word in argv.iter().skip(1).filter_map(|w| w.to_str()) {
        if word.starts_with('-') {
            continue;
        }
        match current.find_subcommand(word) {
            Some(sub) => {
                path.push(sub.get_name().to_owned());
                current = sub;
            }
            None => break,
        }
    }
    path.join(" ")
}

/// Runs one parsed command line and returns the process exit code.
pub fn run(cli: &Cli) -> ExitCode {
    match &cli.command {
        Command::Apply(c) => client::block_on(apply::run(&c.client, &c.args)),
        Command::Status(c) => client::block_on(status::run(&c.client, &c.args)),
        Command::Get(c) => client::block_on(get::run(&c.client, &c.args)),
        Command::Wait(c) => client::block_on(wait::run(&c.client, &c.args)),
        Command::Action(cmd) => client::block_on(actions::run(cmd)),
        Command::Undo(c) => client::block_on(undo::run(&c.client, &c.args)),
        Command::Group(args) => client::block_on(group::run(args)),
        Command::Completion(args) => completion::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Serve(args) => serve::run(args),
        Command::DataPlane(args) => dataplane::run(args),
        Command::Token(args) => token::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Import(args) => import::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Operator(args) => operator::run(args),
        Command::Crd(args) => crd::run(args),
        Command::Simulate(args) => simulate::run(args),
    }
}
