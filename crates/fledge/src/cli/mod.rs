//! Command-line interface: one module per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod actions;
pub mod apply;
pub mod client;
pub mod completion;
pub mod crd;
pub mod demo;

pub mod get;
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

    /// Server address, token and output format of the client commands.
    #[command(flatten)]
    pub client: client::ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a rollout from a spec file; with --wait, follow it to its end.
    Apply(apply::ApplyArgs),
    /// Every app: stable version, active rollout, live health of both versions.
    Status(status::StatusArgs),
    /// Show one rollout; with --watch, a live view until it ends.
    Get(get::GetArgs),
    /// Block until a rollout succeeds (or reaches --for), for a CI pipeline to gate on.
    Wait(wait::WaitArgs),
    #[command(flatten)]
    Action(actions::ActionCommand),
    /// Start a rollout back to an app's previous stable version.
    Undo(undo::UndoArgs),
    /// Print a shell completion script.
    Completion(completion::CompletionArgs),
    /// Run a whole canary rollout on this machine: backends, load, proxy, judge, UI.
    Demo(demo::DemoArgs),
    /// Run the server: API, controller and one proxy per app.
    Serve(serve::ServeArgs),
    /// Make a new access token and print its config entry.
    Token(token::TokenArgs),
    /// Check rollout spec files without a server.
    Validate(validate::ValidateArgs),
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
            Command::Get(a) => Some(&a.kube),
            Command::Status(a) => Some(&a.kube),
            Command::Wait(a) => Some(&a.kube),
            Command::Action(cmd) => Some(cmd.target().1),
            _ => None,
        }
    }
}

/// Parses the command line (exiting with clap's message and code 2 on a usage
/// error). `--kube` and `--server` are two worlds, so both on the command line is a
/// usage error; a `FLEDGE_SERVER` from the environment, though, gives way to an
/// explicit `--kube` (clap's own `conflicts_with` would count it as given).
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    let matches = command.get_matches_mut();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let server_given =
        matches.value_source("server") == Some(clap::parser::ValueSource::CommandLine);
    if server_given && cli.command.kube_args().is_some_and(|k| k.kube) {
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

/// The name of a command that prints no API data, so `-o json|yaml` means nothing
/// to it; `None` for the commands that honour `-o`.
fn ignores_output(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Completion(_) => "completion",
        Command::Demo(_) => "demo",
        Command::Serve(_) => "serve",
        Command::Token(_) => "token",
        Command::Validate(_) => "validate",
        Command::Schema(_) => "schema",
        Command::Operator(_) => "operator",
        Command::Crd(_) => "crd",
        Command::Apply(_)
        | Command::Status(_)
        | Command::Get(_)
        | Command::Wait(_)
        | Command::Action(_)
        | Command::Undo(_)
        | Command::Simulate(_) => return None,
    })
}

/// Runs one parsed command line and returns the process exit code.
pub fn run(cli: &Cli) -> ExitCode {
    if cli.client.output != crate::view::output::OutputFormat::Table
        && let Some(name) = ignores_output(&cli.command)
    {
        return client::fail(&anyhow::anyhow!(
            "`fledge {name}` does not take -o/--output: it prints its own fixed format \
             (-o json|yaml is for apply, status, get, wait, the rollout actions and simulate)"
        ));
    }
    match &cli.command {
        Command::Apply(args) => client::block_on(apply::run(&cli.client, args)),
        Command::Status(args) => client::block_on(status::run(&cli.client, args)),
        Command::Get(args) => client::block_on(get::run(&cli.client, args)),
        Command::Wait(args) => client::block_on(wait::run(&cli.client, args)),
        Command::Action(cmd) => client::block_on(actions::run(&cli.client, cmd)),
        Command::Undo(args) => client::block_on(undo::run(&cli.client, args)),
        Command::Completion(args) => completion::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Token(args) => token::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Operator(args) => operator::run(args),
        Command::Crd(args) => crd::run(args),
        Command::Simulate(args) => simulate::run(args, cli.client.output),
    }
}
