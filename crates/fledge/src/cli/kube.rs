//! `--kube`: the client commands (`get`, `status`, `wait` and the operator actions)
//! on `CanaryRollout` resources through the kubeconfig, instead of a fledge server.
//!
//! Reads, watches and commands go through `fledge_k8s::client`; what is printed
//! is the server's views ([`crate::view::kube`]), so the output and the exit codes
//! are those of the same command against a server. An action is the
//! `fledge.dev/command` annotation the operator consumes once per id (as
//! `fledge operator command` sends it); the command then waits, a bounded time,
//! for the operator to run it, and prints the rollout as it left it.

use std::pin::pin;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Args;
use fledge_api::rollout::Rollout;
use fledge_k8s::CanaryRollout;
use fledge_k8s::client::{self as kube_client, Cluster};
use futures::StreamExt;
use kube::runtime::watcher::Event;
use tokio::time::Instant;

use super::actions::ActionCommand;
use super::client::ClientArgs;
use super::get::GetArgs;
use super::wait::{self, Condition, WaitArgs};
use crate::view::follow::{self, Followed, LiveView, Target};
use crate::view::kube::{AppView, CanaryView, StatusView};
use crate::view::output::{self, OutputFormat};
use crate::view::render;

/// How long an action waits for the operator to run its command.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// The flags that send a client command to a cluster instead of a server.
#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Work on CanaryRollout resources in the cluster of the kubeconfig
    /// ($KUBECONFIG, else ~/.kube/config, else in-cluster) instead of a fledge
    /// server; ROLLOUT is the resource's name.
    /// (Exclusive of a `--server` on the command line: see [`super::parse`].)
    #[arg(long)]
    pub kube: bool,

    /// The CanaryRollouts' namespace (with --kube). Default: the kubeconfig
    /// context's namespace.
    #[arg(long, short = 'n', value_name = "NAMESPACE", requires = "kube")]
    pub namespace: Option<String>,
}

// === impl KubeArgs ===

impl KubeArgs {
    async fn connect(&self) -> anyhow::Result<Cluster> {
        Ok(Cluster::connect(self.namespace.as_deref()).await?)
    }
}

fn view(cr: &CanaryRollout) -> CanaryView {
    CanaryView::of(cr, SystemTime::now())
}

/// `fledge get [NAME] [--watch] --kube`.
pub async fn get(client_args: &ClientArgs, args: &GetArgs) -> anyhow::Result<ExitCode> {
    let cluster = args.kube.connect().await?;
    let format = client_args.format();
    let Some(name) = &args.id else {
        let views: Vec<CanaryView> = cluster
            .list(false)
            .await?
            .iter()
            .map(view)
            .filter(|v| args.app.as_ref().is_none_or(|app| v.rollout.app == *app))
            .filter(|v| args.phase.is_none_or(|phase| v.rollout.phase == phase))
            .collect();
        match output::render_machine(format, &views)? {
            Some(text) => print!("{text}"),
            None => {
                let rollouts: Vec<Rollout> = views.into_iter().map(|v| v.rollout).collect();
                print!("{}", render::list(&rollouts));
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    let cr = cluster.get(name).await?;
    if args.watch {
        let done = match follow(&cluster, name, format, Target::Stdout, &|_| false, None).await? {
            Followed::Reached(v) => v,
            Followed::TimedOut(_) => unreachable!("a follow without a deadline never times out"),
        };
        if format != OutputFormat::Table {
            print!(
                "{}",
                output::render_machine(format, &done)?.unwrap_or_default()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let v = view(&cr);
    match output::render_machine(format, &v)? {
        Some(text) => print!("{text}"),
        None => print!("{}", v.detail()),
    }
    Ok(ExitCode::SUCCESS)
}

/// `fledge status --kube`: one line per CanaryRollout of the namespace.
pub async fn status(client_args: &ClientArgs, kube: &KubeArgs) -> anyhow::Result<ExitCode> {
    let cluster = kube.connect().await?;
    let mut apps = Vec::new();
    for cr in cluster.list(false).await? {
        let stable = cluster.stable_version(&cr).await;
        apps.push(AppView::of(&view(&cr), stable));
    }
    match output::render_machine(client_args.format(), &StatusView { apps: apps.clone() })? {
        Some(text) => print!("{text}"),
        None => {
            let apps: Vec<_> = apps.into_iter().map(|a| a.app).collect();
            print!("{}", super::status::render(&apps));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `fledge promote|abort|pause|resume|retry NAME --kube`.
pub async fn act(client_args: &ClientArgs, cmd: &ActionCommand) -> anyhow::Result<ExitCode> {
    let (target, kube) = cmd.target();
    let (action, command, past) = cmd.parts();
    let cluster = kube.connect().await?;
    let before = view(&cluster.get(target).await?);
    // The engine says what the phase allows, as the server asks it before acting.
    if !before.rollout.allows(action) {
        anyhow::bail!(
            "CanaryRollout {}/{target} is {}: {action} is not allowed now (allowed: {})",
            cluster.namespace(),
            before.rollout.phase,
            allowed_list(&before.rollout)
        );
    }
    let actor = std::env::var("USER").unwrap_or_else(|_| "operator".to_owned());
    let id = cluster.send(target, command, &actor).await?;
    let done = acknowledged(&cluster, target, &id).await.with_context(|| {
        format!(
            "sent {command} to CanaryRollout {}/{target} (command id {id})",
            cluster.namespace()
        )
    })?;
    let status = done.status.clone().unwrap_or_default();
    let message = status.message.unwrap_or_default();
    // The operator records a command it could not run in the message, and consumes
    // its id all the same (it is not retried).
    if message.contains(": refused: ") {
        anyhow::bail!(
            "the operator refused {command} on CanaryRollout {}/{target}: {message}",
            cluster.namespace()
        );
    }
    let after = view(&done);
    match output::render_machine(client_args.format(), &after)? {
        Some(text) => print!("{text}"),
        None => println!("{}", render::acted(&after.rollout, past)),
    }
    Ok(ExitCode::SUCCESS)
}

fn allowed_list(r: &Rollout) -> String {
    if r.allowed_actions.is_empty() {
        return "none".into();
    }
    let names: Vec<&str> = r.allowed_actions.iter().map(|a| a.as_str()).collect();
    names.join(", ")
}

/// Waits until the status says the operator ran command `id`, and gives the
/// resource then.
async fn acknowledged(cluster: &Cluster, name: &str, id: &str) -> anyhow::Result<CanaryRollout> {
    let deadline = Some(Instant::now() + ACK_TIMEOUT);
    let done = |cr: &CanaryRollout| {
        cr.status
            .as_ref()
            .and_then(|s| s.last_command_id.as_deref())
            == Some(id)
    };
    match follow_resource(cluster, name, deadline, &mut |cr| done(cr)).await? {
        Some(cr) => Ok(cr),
        None => anyhow::bail!(
            "no operator ran it within {}s: is `fledge operator run` running and watching namespace {}? The command stays on the resource and runs when one does",
            ACK_TIMEOUT.as_secs(),
            cluster.namespace()
        ),
    }
}

/// `fledge wait NAME --kube`: the server's wait (same conditions, output and exit
/// codes), following the resource with a watch.
pub async fn wait(client_args: &ClientArgs, args: &WaitArgs) -> anyhow::Result<ExitCode> {
    let condition = Condition::parse(&args.condition).map_err(anyhow::Error::msg)?;
    let cluster = args.kube.connect().await?;
    let first = view(&cluster.get(&args.id).await?);
    if let Condition::Stage(n) = condition
        && n > first.rollout.stages.len()
    {
        anyhow::bail!(
            "rollout {} has {} stages, so it never reaches stage {n}",
            first.rollout.id,
            first.rollout.stages.len()
        );
    }
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let reached = |r: &Rollout| condition.holds(r);
    let followed = follow(
        &cluster,
        &args.id,
        client_args.format(),
        Target::Stderr,
        &reached,
        deadline,
    )
    .await?;
    wait::conclude(
        client_args.format(),
        &args.id,
        condition,
        args.timeout,
        followed,
    )
}

/// Follows CanaryRollout `name` with a watch until `reached` holds for it or it
/// ends, or `deadline` passes, showing the live view (table format only; redrawn
/// every second for the stage clock).
async fn follow(
    cluster: &Cluster,
    name: &str,
    format: OutputFormat,
    target: Target,
    reached: &dyn Fn(&Rollout) -> bool,
    deadline: Option<Instant>,
) -> anyhow::Result<Followed<CanaryView>> {
    let mut live = LiveView::new(target);
    let mut last = None;
    let mut done = |cr: &CanaryRollout| {
        let v = view(cr);
        if format == OutputFormat::Table {
            live.show(&render::live(&v.rollout), &follow::change_key(&v.rollout));
        }
        let end = reached(&v.rollout) || v.rollout.is_terminal();
        last = Some(v);
        end
    };
    let ended = follow_resource(cluster, name, deadline, &mut done).await?;
    Ok(match ended {
        Some(cr) => Followed::Reached(view(&cr)),
        None => Followed::TimedOut(last),
    })
}

/// Watches CanaryRollout `name`, calling `seen` on every state of it (and once a
/// second with the latest, for clocks), until `seen` says done (the resource then)
/// or `deadline` passes (`None`). A dropped watch is re-listed; only errors that
/// will not pass (forbidden, deleted) end it.
async fn follow_resource(
    cluster: &Cluster,
    name: &str,
    deadline: Option<Instant>,
    seen: &mut dyn FnMut(&CanaryRollout) -> bool,
) -> anyhow::Result<Option<CanaryRollout>> {
    let ns = cluster.namespace().to_owned();
    let mut events = pin!(cluster.watch(name));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<CanaryRollout> = None;
    let mut listed = false;
    loop {
        let next = follow::within(deadline, async {
            tokio::select! {
                event = events.next() => Some(event),
                _ = tick.tick() => None,
            }
        })
        .await;
        let Some(next) = next else {
            return Ok(None);
        };
        match next {
            None => {}
            Some(Some(Ok(Event::Apply(cr) | Event::InitApply(cr)))) => {
                listed = true;
                last = Some(cr);
            }
            Some(Some(Ok(Event::Init))) => {
                listed = false;
                continue;
            }
            Some(Some(Ok(Event::InitDone))) if !listed => {
                anyhow::bail!("CanaryRollout {ns}/{name} was deleted")
            }
            Some(Some(Ok(Event::InitDone))) => continue,
            Some(Some(Ok(Event::Delete(_)))) => {
                anyhow::bail!("CanaryRollout {ns}/{name} was deleted")
            }
            Some(Some(Err(e))) if kube_client::is_permanent(&e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("watch CanaryRollout {ns}/{name}"))
                );
            }
            Some(Some(Err(e))) => {
                eprintln!("fledge: watch of CanaryRollout {ns}/{name}: {e}; watching again");
                continue;
            }
            Some(None) => anyhow::bail!("the watch of CanaryRollout {ns}/{name} ended"),
        }
        if let Some(cr) = &last
            && seen(cr)
        {
            return Ok(last);
        }
    }
}
