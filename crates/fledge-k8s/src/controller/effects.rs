//! What a rollout sets off outside the cluster, as in server mode: the spec's hooks at
//! the engine's six points, its notifications and its `onEvent` hooks.
//!
//! Hooks run in tasks of their own, never inside a reconcile: the engine asks for them
//! with `RunHook` once its state is persisted, and their result is fed back as
//! `HookDone` by the next reconcile, which the finished task triggers at once. A
//! gate still waiting after a restart of the operator (or a change of leader) has
//! nobody running its hooks: the reconcile that finds it starts them again, so hooks
//! run at least once, as in server mode. Notifications and `onEvent` hooks are handed
//! over after the status holding their events is written, and are never waited for.
//!
//! Exec hooks would run inside the operator's pod, with its credentials: they are
//! refused unless the operator was started with `--allow-exec-hooks` (a cluster
//! where everyone who may write a CanaryRollout is trusted with the operator's
//! rights).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fledge_engine::{Event, HookPoint as EnginePoint, RolloutState};
use fledge_providers::hooks::{
    DEFAULT_MAX_OUTPUT, HookContext, HookOutcome, HookRunner, RolloutInfo, run_point,
    spawn_on_events,
};
use fledge_providers::notify::{Dispatcher, DispatcherSettings, Notice};
use fledge_spec::{Hook, HookList, RolloutSpec};
use futures::channel::mpsc::UnboundedSender;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use crate::crd::CanaryRollout;
use crate::error::Error;

/// One run of one hook list for one rollout attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct HookJob {
    /// `namespace/name` of the CanaryRollout.
    pub rollout: String,
    /// The version rolled out (a new version is a new rollout).
    pub version: String,
    /// The hook list.
    pub point: EnginePoint,
    /// The attempt that asked for it.
    pub attempt: u32,
}

/// What a finished hook list left for the engine.
#[derive(Debug, Clone)]
pub(super) struct HookResult {
    /// `None` when every hook succeeded, else what failed.
    pub error: Option<String>,
    /// One outcome per hook run (exit code or HTTP status, captured output).
    pub outcomes: Vec<HookOutcome>,
}

#[derive(Debug)]
enum JobState {
    Running,
    Done(HookResult),
    /// The engine took the result. Kept, so a reconcile of a copy of the rollout
    /// older than that status write (the watch not caught up yet) does not run the
    /// gate's hooks again; forgotten with the rollout's version.
    Taken,
}

/// The operator's hook runner, notification sender and running hook lists.
#[derive(Debug)]
pub struct Effects {
    runner: Option<HookRunner>,
    dispatcher: Option<Dispatcher>,
    allow_exec: bool,
    jobs: Arc<Mutex<HashMap<HookJob, JobState>>>,
    wake: Mutex<Option<UnboundedSender<ObjectRef<CanaryRollout>>>>,
}

// === impl Effects ===

impl Effects {
    /// Starts the notification sender (needs a tokio runtime). `allow_exec` lets
    /// specs run exec hooks in the operator's pod.
    pub fn start(allow_exec: bool) -> Self {
        let runner = HookRunner::new(DEFAULT_MAX_OUTPUT)
            .map_err(
                |e| tracing::error!(error = %e, "cannot build the hook runner; hooks will fail"),
            )
            .ok();
        let dispatcher = Dispatcher::start(DispatcherSettings::default())
            .map_err(|e| tracing::error!(error = %e, "cannot start the notification sender; notifications are off"))
            .ok();
        Effects {
            runner,
            dispatcher,
            allow_exec,
            jobs: Arc::default(),
            wake: Mutex::new(None),
        }
    }

    /// Where a finished hook list asks for its rollout to be reconciled (set by the
    /// controller each time it starts).
    pub(super) fn set_wake(&self, wake: UnboundedSender<ObjectRef<CanaryRollout>>) {
        *self.wake.lock().expect("wake lock") = Some(wake);
    }

    /// Refuses what this operator will not run: exec hooks unless allowed.
    pub(super) fn check(&self, spec: &RolloutSpec) -> Result<(), Error> {
        if self.allow_exec {
            return Ok(());
        }
        for list in HookList::ALL {
            let hooks = spec.hooks.list(list);
            if let Some(i) = hooks.iter().position(|h| matches!(h, Hook::Exec(_))) {
                return Err(Error::InvalidSpec(format!(
                    "spec.rollout.hooks.{}[{i}]: exec hooks would run inside the \
                     operator's pod with its credentials; use an http hook, or start the \
                     operator with --allow-exec-hooks if everyone who may write a \
                     CanaryRollout is trusted with them",
                    list.as_str()
                )));
            }
        }
        Ok(())
    }

    /// Starts the hooks of `job` unless they are running or done.
    pub(super) fn start_hooks(
        &self,
        job: HookJob,
        spec: &RolloutSpec,
        rollout: RolloutInfo,
        obj: ObjectRef<CanaryRollout>,
    ) {
        {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            if jobs.contains_key(&job) {
                return;
            }
            // Results of an earlier version of this rollout will never be read.
            jobs.retain(|k, _| k.rollout != job.rollout || k.version == job.version);
            jobs.insert(job.clone(), JobState::Running);
        }
        let ctx = HookContext {
            hook: job.point.list(),
            rollout,
            event: None,
        };
        let hooks = spec.hooks.clone();
        let runner = self.runner.clone();
        let wake = self.wake.lock().expect("wake lock").clone();
        let jobs = self.jobs.clone();
        tokio::spawn(async move {
            let result = match runner {
                Some(runner) => {
                    let outcome = run_point(&runner, &hooks, &ctx).await;
                    HookResult {
                        error: outcome.failure(),
                        outcomes: outcome.outcomes,
                    }
                }
                None => HookResult {
                    error: Some("the hook runner could not be built".to_owned()),
                    outcomes: Vec::new(),
                },
            };
            jobs.lock()
                .expect("jobs lock")
                .insert(job, JobState::Done(result));
            if let Some(wake) = wake {
                let _ = wake.unbounded_send(obj);
            }
        });
    }

    /// A finished hook list of `rollout` (at `version`) whose result the engine has
    /// not taken yet.
    pub(super) fn finished(&self, rollout: &str, version: &str) -> Option<(HookJob, HookResult)> {
        let jobs = self.jobs.lock().expect("jobs lock");
        jobs.iter().find_map(|(k, v)| match v {
            JobState::Done(r) if k.rollout == rollout && k.version == version => {
                Some((k.clone(), r.clone()))
            }
            _ => None,
        })
    }

    /// Marks a result taken by the engine (its status is written).
    pub(super) fn consumed(&self, job: &HookJob) {
        self.jobs
            .lock()
            .expect("jobs lock")
            .insert(job.clone(), JobState::Taken);
    }

    /// Hands `events` (just written to the status) to the spec's notifications and
    /// `onEvent` hooks. Never waits and never fails.
    pub(super) fn announce(&self, spec: &RolloutSpec, rollout: &RolloutInfo, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        if let Some(dispatcher) = self
            .dispatcher
            .as_ref()
            .filter(|_| !spec.notifications.is_empty())
        {
            for e in events {
                let Some(event) = e.kind.notify_event() else {
                    continue;
                };
                dispatcher.notify(
                    &spec.notifications,
                    Notice {
                        event,
                        rollout: rollout.clone(),
                        message: e.message.clone(),
                        actor: Some(e.actor.to_string()),
                        evidence: (!e.evidence.is_empty()).then(|| json!(e.evidence)),
                        at: e.at.to_string(),
                    },
                );
            }
        }
        if let Some(runner) = self
            .runner
            .as_ref()
            .filter(|_| !spec.hooks.on_event.is_empty())
        {
            let events: Vec<Value> = events
                .iter()
                .map(|e| {
                    json!({
                        "kind": kind_name(e),
                        "actor": e.actor.to_string(),
                        "message": e.message,
                        "evidence": e.evidence,
                        "at": e.at.to_string(),
                    })
                })
                .collect();
            spawn_on_events(runner.clone(), &spec.hooks, rollout.clone(), events);
        }
    }
}

/// The rollout's id in hooks and notifications: `namespace/name`.
pub(super) fn rollout_id(obj: &CanaryRollout) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// What the rollout looks like to a hook or a notification, in `state`.
pub(super) fn rollout_info(
    obj: &CanaryRollout,
    spec: &RolloutSpec,
    stable_version: &str,
    state: &RolloutState,
) -> RolloutInfo {
    RolloutInfo {
        id: rollout_id(obj),
        app: spec.app.clone(),
        version: spec.version.clone(),
        stable_version: stable_version.to_owned(),
        phase: state.phase.to_string(),
        stage_index: Some(state.stage_index),
        canary_weight: state.canary_weight,
    }
}

/// The event kind as stored and announced (`Started`, `StageAdvanced`, …).
pub(super) fn kind_name(e: &Event) -> String {
    format!("{:?}", e.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> HookJob {
        HookJob {
            rollout: "shop-ns/shop".into(),
            version: "v2".into(),
            point: EnginePoint::BeforePromotion,
            attempt: 1,
        }
    }

    fn spec() -> RolloutSpec {
        fledge_spec::parse_spec(
            "app: shop\nversion: v2\nstages:\n  - traffic: 100\n    final: true\n",
            "spec",
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_result_is_given_once_and_a_taken_gate_is_not_run_again() {
        let effects = Effects::start(false);
        let obj = ObjectRef::<CanaryRollout>::new("shop").within("shop-ns");
        let info = RolloutInfo::default();
        effects.start_hooks(job(), &spec(), info.clone(), obj.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let (found, result) = loop {
            if let Some(done) = effects.finished("shop-ns/shop", "v2") {
                break done;
            }
            assert!(std::time::Instant::now() < deadline, "no result");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        assert_eq!(found, job());
        assert_eq!(result.error, None, "an empty list passes");
        assert!(
            effects.finished("shop-ns/shop", "v1").is_none(),
            "another version"
        );

        effects.consumed(&found);
        assert!(effects.finished("shop-ns/shop", "v2").is_none());
        // A reconcile of a stale copy still showing the gate starts nothing.
        effects.start_hooks(job(), &spec(), info, obj);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(effects.finished("shop-ns/shop", "v2").is_none());
    }

    #[tokio::test]
    async fn exec_hooks_are_refused_unless_allowed_naming_the_hook() {
        let mut spec = spec();
        spec.hooks.after_rollback = vec![Hook::Exec(fledge_spec::ExecHook {
            command: vec!["true".into()],
            timeout: std::time::Duration::from_secs(1),
        })];
        let refused = Effects::start(false).check(&spec).unwrap_err().to_string();
        assert!(
            refused.contains("spec.rollout.hooks.afterRollback[0]"),
            "{refused}"
        );
        assert!(refused.contains("--allow-exec-hooks"), "{refused}");
        assert!(Effects::start(true).check(&spec).is_ok());
    }
}
