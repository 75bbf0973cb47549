//! The transitions: [`step`] applies one input to a rollout, and [`reconcile`] gives
//! the actions that make the world match a persisted state.
//!
//! A step runs on a `Machine`, which holds the state being changed and collects
//! the actions and events. The input's own handling lives with its subject (an
//! observation in `analysis`, a command in `command`, a hook result in `hooks`, a
//! router failure in `timing`); here are the dispatch, the life cycle every input
//! can lead to (start, stage entry, roll-back, promotion) and the automatic
//! progression that ends stages once their time has passed healthy.

use fledge_spec::{RolloutSpec, Stage, Strategy};

use super::analysis::{contexts, judge_settings};
use super::timing::{humanize, stage_run_ms};
use super::{
    Action, Actor, Event, EventKind, FiringAlert, Gate, HookPoint, Input, Outcome, Phase,
    RolloutState, Timestamp,
};
use crate::evidence::{AnalysisReport, Evidence};
use crate::judge::CriterionJudge;

// === Step ===

/// The result of one [`step`].
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The new state, to persist before executing `actions`.
    pub state: RolloutState,
    /// What the shell must do, in order.
    pub actions: Vec<Action>,
    /// What to append to the history, in order.
    pub events: Vec<Event>,
}

/// Why an input could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The command (or `start`) is not allowed in the rollout's phase. The API
    /// answers 409.
    #[error("cannot {command} a rollout that is {phase}")]
    NotAllowed {
        /// The rollout's phase.
        phase: Phase,
        /// The refused command, as the CLI spells it (or `start`).
        command: &'static str,
    },
    /// The rollout waits for gating hooks (`beforeRollout` before any traffic moves,
    /// `beforePromotion` before the canary becomes stable), so a promote cannot run
    /// now. The API answers 409.
    #[error("cannot {command}: the {hooks} hooks are still running")]
    HooksPending {
        /// The refused command.
        command: &'static str,
        /// The hook list that runs (`beforeRollout` or `beforePromotion`).
        hooks: &'static str,
    },
    /// The spec has no stages (validation refuses such a spec).
    #[error("the rollout spec has no stages")]
    NoStages,
    /// The rollout is a member of a group moving in lock step, and the group has not
    /// passed its current stage: it may not move ahead alone. The API answers 409.
    #[error("cannot {command}: the rollout's group has not passed stage {stage} yet")]
    HeldByGroup {
        /// The refused command.
        command: &'static str,
        /// The current stage, counted from 1.
        stage: usize,
    },
    /// The persisted state does not fit the spec (it names a stage the spec lacks).
    #[error("the rollout state is at stage {index} but the spec has {count} stages")]
    StageOutOfRange {
        /// The state's stage index.
        index: usize,
        /// The spec's number of stages.
        count: usize,
    },
}

/// The actions that make the world match `state`: the shell runs them after a
/// restart before anything else, and may run them every tick.
pub fn reconcile(state: &RolloutState) -> Vec<Action> {
    match state.phase {
        Phase::Pending => Vec::new(),
        Phase::Progressing | Phase::Paused => vec![Action::SetWeight {
            canary: state.canary_weight,
            mirror: state.canary_mirror,
        }],
        Phase::Succeeded => vec![Action::PromoteCanary],
        Phase::Failed | Phase::Aborted => vec![Action::SetWeight {
            canary: 0,
            mirror: 0,
        }],
    }
}

/// Applies one input to a rollout.
///
/// Pure: the same `(spec, state, input, now)` always gives the same result. Errors
/// leave the rollout unchanged ([`EngineError::NotAllowed`] maps to HTTP 409).
/// Inputs that mean nothing in the phase (an observation of a finished rollout, a
/// stale hook result) give an unchanged state and no actions.
pub fn step(
    spec: &RolloutSpec,
    state: &RolloutState,
    input: Input,
    now: Timestamp,
) -> Result<Step, EngineError> {
    if spec.stages.is_empty() {
        return Err(EngineError::NoStages);
    }
    if state.stage_index >= spec.stages.len() {
        return Err(EngineError::StageOutOfRange {
            index: state.stage_index,
            count: spec.stages.len(),
        });
    }
    let mut m = Machine {
        spec,
        st: state.clone(),
        now,
        actions: Vec::new(),
        events: Vec::new(),
    };
    m.apply(input)?;
    m.expire_gate();
    m.advance_while_ready();
    if !m.st.phase.runs_stages() {
        // An ended rollout has no stage clock to stop.
        m.st.route_unapplied_since = None;
    }
    Ok(Step {
        state: m.st,
        actions: m.actions,
        events: m.events,
    })
}

// === Machine ===

/// One step in progress.
pub(super) struct Machine<'a> {
    /// The rollout's spec.
    pub(super) spec: &'a RolloutSpec,
    /// The state being changed.
    pub(super) st: RolloutState,
    /// The time the caller handed in.
    pub(super) now: Timestamp,
    /// What the shell must do, in order.
    pub(super) actions: Vec<Action>,
    /// What to append to the history, in order.
    pub(super) events: Vec<Event>,
}

// === impl Machine ===

impl Machine<'_> {
    fn apply(&mut self, input: Input) -> Result<(), EngineError> {
        match input {
            // A read of the metrics means the route is applied again.
            Input::Observe(_) | Input::MetricsUnavailable { .. } => self.close_route_window(true),
            // An operator's command starts its own clock (a pause, a new stage) or
            // ends the rollout.
            Input::Command { .. } => self.close_route_window(false),
            Input::Start
            | Input::Tick
            | Input::RouteUnapplied { .. }
            | Input::HookDone { .. }
            | Input::AlertsFiring { .. }
            | Input::GroupHold { .. } => {}
        }
        match input {
            Input::Start => {
                if self.st.phase != Phase::Pending {
                    return Err(EngineError::NotAllowed {
                        phase: self.st.phase,
                        command: "start",
                    });
                }
                self.begin_attempt(Actor::Engine, EventKind::Started);
            }
            Input::Tick => {}
            Input::Observe(obs) => self.observe(obs),
            Input::MetricsUnavailable { error } => self.metrics_unavailable(&error),
            Input::RouteUnapplied { error } => self.route_unapplied(&error),
            Input::HookDone {
                hook,
                attempt,
                error,
            } => self.hook_done(hook, attempt, error),
            Input::AlertsFiring { alerts } => self.alerts_firing(&alerts),
            // A succeeded rollout is final; any other keeps the group's word.
            Input::GroupHold { stage } if self.st.phase != Phase::Succeeded => {
                self.st.group_hold = Some(stage);
            }
            Input::GroupHold { .. } => {}
            Input::Command { command, actor } => self.command(command, actor)?,
        }
        Ok(())
    }

    /// Fails a running rollout on firing alerts, naming each with its labels and
    /// since when it fires.
    fn alerts_firing(&mut self, alerts: &[FiringAlert]) {
        if !matches!(self.st.phase, Phase::Progressing | Phase::Paused) || alerts.is_empty() {
            return;
        }
        let described: Vec<String> = alerts
            .iter()
            .map(|a| {
                let labels: Vec<String> =
                    a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!(
                    "{} firing since {} ({})",
                    a.name,
                    a.starts_at,
                    labels.join(", ")
                )
            })
            .collect();
        let names: Vec<&str> = alerts.iter().map(|a| a.name.as_str()).collect();
        let reason = format!("alert {} firing", names.join(", "));
        let message = format!("rolled back: alert {}", described.join("; "));
        self.roll_back(Phase::Failed, Actor::Engine, reason, message, Vec::new());
    }

    // --- helpers ---

    /// The current stage's spec.
    pub(super) fn stage(&self) -> &Stage {
        &self.spec.stages[self.st.stage_index]
    }

    /// Whether the current stage is the final one.
    pub(super) fn is_last_stage(&self) -> bool {
        self.st.stage_index + 1 == self.spec.stages.len()
    }

    /// `stage 2/3 (50%)`, or `stage 1/3 (0%, mirror 100%)` for a stage that
    /// copies requests; a blue/green rollout's stages are `preview 1/2 (0%)` and
    /// `switch 2/2 (100%)`.
    pub(super) fn stage_label(&self, index: usize) -> String {
        let stage = &self.spec.stages[index];
        let mirror = match stage.mirror {
            0 => String::new(),
            m => format!(", mirror {m}%"),
        };
        let name = match self.spec.strategy {
            Strategy::Canary => "stage",
            Strategy::BlueGreen if stage.traffic == 100 => "switch",
            Strategy::BlueGreen => "preview",
        };
        format!(
            "{name} {}/{} ({}%{mirror})",
            index + 1,
            self.spec.stages.len(),
            stage.traffic
        )
    }

    /// Records a decision at the current stage (none while pending).
    pub(super) fn event(
        &mut self,
        kind: EventKind,
        actor: Actor,
        message: String,
        evidence: Vec<Evidence>,
    ) {
        let stage_index = (self.st.phase != Phase::Pending).then_some(self.st.stage_index);
        self.events.push(Event {
            at: self.now,
            kind,
            actor,
            stage_index,
            attempt: self.st.attempt,
            message,
            evidence,
        });
    }

    /// Sets the canary's share and the share of stable's requests copied to it,
    /// and asks the shell to route them.
    pub(super) fn set_route(&mut self, canary: u8, mirror: u8) {
        self.st.canary_weight = canary;
        self.st.canary_mirror = mirror;
        self.actions.push(Action::SetWeight { canary, mirror });
    }

    // --- life cycle ---

    /// Starts attempt 1 (Start) or the next one (Retry) at stage 0.
    pub(super) fn begin_attempt(&mut self, actor: Actor, kind: EventKind) {
        let st = &mut self.st;
        st.attempt += 1;
        st.phase = Phase::Progressing;
        st.started_at = Some(self.now);
        st.stage_index = 0;
        st.stage_started_at = None;
        st.stage_paused_ms = 0;
        st.stage_canary_requests = 0;
        st.paused_at = None;
        st.route_unapplied_since = None;
        st.gate = None;
        st.judges.clear();
        st.analysis = None;
        st.consecutive_metric_errors = 0;
        st.canary_requests = 0;
        st.canary_failures = 0;
        st.outcome = None;
        // A retry judges only what happens after it: the next observation is a
        // fresh baseline (the last one may be hours old and span the rollback).
        if kind == EventKind::Retried {
            st.last_observation = None;
        }
        let message = match kind {
            EventKind::Retried => format!(
                "attempt {} of {} {} started by {actor}",
                self.st.attempt, self.spec.app, self.spec.version
            ),
            _ => format!(
                "rollout of {} {} started ({} stages)",
                self.spec.app,
                self.spec.version,
                self.spec.stages.len()
            ),
        };
        self.event(kind, actor, message, Vec::new());
        if self.run_hook(HookPoint::BeforeRollout) {
            self.st.gate = Some(Gate::BeforeRollout { since: self.now });
            self.set_route(0, 0);
        } else {
            self.enter_stage(0, None);
        }
    }

    /// Moves to stage `index`: fresh judges (or carried-over sequential ones), its
    /// weight, its hooks.
    pub(super) fn enter_stage(&mut self, index: usize, previous: Option<usize>) {
        self.st.held_by_group = false;
        let spec = self.spec;
        let stage = &spec.stages[index];
        let settings = judge_settings(spec, stage.success_criteria.len());
        let ctxs = contexts(spec, stage, &settings);

        let mut old: Vec<Option<CriterionJudge>> = std::mem::take(&mut self.st.judges)
            .into_iter()
            .map(Some)
            .collect();
        let old_criteria = previous.map_or(&[][..], |p| &spec.stages[p].success_criteria[..]);
        let judges: Vec<CriterionJudge> = ctxs
            .iter()
            .map(|ctx| {
                let carried = old_criteria
                    .iter()
                    .position(|c| c.source == ctx.criterion.source)
                    .and_then(|i| old.get_mut(i).and_then(Option::take));
                match carried {
                    Some(j) => j.into_next_stage(ctx),
                    None => CriterionJudge::new(ctx),
                }
            })
            .collect();
        let report = AnalysisReport {
            at: self.now,
            stage_index: index,
            criteria: judges
                .iter()
                .zip(&ctxs)
                .map(|(j, ctx)| j.assess(ctx))
                .collect(),
        };

        let st = &mut self.st;
        st.stage_index = index;
        st.stage_started_at = Some(self.now);
        st.stage_paused_ms = 0;
        st.stage_canary_requests = 0;
        st.paused_at = (st.phase == Phase::Paused).then_some(self.now);
        // A new weight: whether the router applies it is reported afresh.
        st.route_unapplied_since = None;
        st.judges = judges;
        st.analysis = Some(report);
        self.set_route(stage.traffic, stage.mirror);
        let switch = spec.strategy == Strategy::BlueGreen && stage.traffic == 100;
        let duration = match stage.duration {
            Some(d) if switch => format!(
                "with stable kept warm for {}",
                humanize(d.as_millis() as u64)
            ),
            None if switch && !stage.promote => "with stable kept warm until promoted".to_string(),
            Some(d) => format!("for {}", humanize(d.as_millis() as u64)),
            None if index + 1 == spec.stages.len() && stage.promote => "then promotes".to_string(),
            None => "until promoted".to_string(),
        };
        let copies = match stage.mirror {
            0 => String::new(),
            m => format!(", with copies of {m}% of stable's requests,"),
        };
        let message = format!(
            "{} started: canary at {}%{copies} {duration}",
            self.stage_label(index),
            stage.traffic
        );
        self.event(EventKind::StageStarted, Actor::Engine, message, Vec::new());
        self.run_hook(HookPoint::EachStage { stage_index: index });
    }

    /// Rolls back: weight 0, phase `Failed` or `Aborted`.
    pub(super) fn roll_back(
        &mut self,
        phase: Phase,
        actor: Actor,
        reason: String,
        message: String,
        evidence: Vec<Evidence>,
    ) {
        debug_assert!(phase.is_rolled_back());
        self.st.route_unapplied_since = None;
        self.st.held_by_group = false;
        let kind = if phase == Phase::Aborted {
            EventKind::Aborted
        } else {
            EventKind::Failed
        };
        self.close_pause();
        self.st.phase = phase;
        self.st.gate = None;
        self.st.outcome = Some(Outcome {
            at: self.now,
            actor: actor.clone(),
            reason,
        });
        self.set_route(0, 0);
        self.event(kind, actor, message, evidence);
        if self.st.attempt > 0 {
            // Nothing to clean up after a rollout that never started.
            self.run_hook(HookPoint::AfterRollback);
        }
    }

    /// Fails the rollout automatically, at (or before) its current stage.
    pub(super) fn fail(&mut self, reason: String, evidence: Vec<Evidence>) {
        // Before the first stage's weight is applied (a deploy gate), the rollout is
        // not yet "at" that stage.
        let at = if self.st.stage_started_at.is_some() {
            "at"
        } else {
            "before"
        };
        let message = format!("{reason} {at} {}", self.stage_label(self.st.stage_index));
        self.roll_back(Phase::Failed, Actor::Engine, reason, message, evidence);
    }

    /// Promotes the canary, through the `beforePromotion` gate when there is one.
    pub(super) fn promote_canary(&mut self, actor: Actor, full: bool, evidence: Vec<Evidence>) {
        if self.run_hook(HookPoint::BeforePromotion) {
            self.st.gate = Some(Gate::BeforePromotion {
                requested_by: actor.clone(),
                full,
                since: self.now,
            });
            let message = "promotion waits for the beforePromotion hooks".to_string();
            self.event(EventKind::PromotionGate, actor, message, evidence);
            return;
        }
        self.finish_promotion(actor, evidence);
    }

    /// Makes the canary stable: all traffic to it, then the promotion.
    pub(super) fn finish_promotion(&mut self, actor: Actor, evidence: Vec<Evidence>) {
        self.close_pause();
        self.st.gate = None;
        self.st.phase = Phase::Succeeded;
        // The new version takes all traffic before it is named stable, so a crash
        // between the two actions still leaves users on it.
        self.set_route(100, 0);
        self.actions.push(Action::PromoteCanary);
        let message = format!(
            "{} is the new stable version of {}",
            self.spec.version, self.spec.app
        );
        self.st.outcome = Some(Outcome {
            at: self.now,
            actor: actor.clone(),
            reason: message.clone(),
        });
        self.event(EventKind::Succeeded, actor, message, evidence);
        self.run_hook(HookPoint::AfterPromotion);
    }

    // --- automatic progression ---

    /// Ends stages whose duration has passed healthy, as long as that holds.
    fn advance_while_ready(&mut self) {
        // Each pass enters a later stage or stops, so this ends.
        for _ in 0..=self.spec.stages.len() {
            if self.st.phase != Phase::Progressing || self.st.gate.is_some() {
                return;
            }
            // Nothing moves on while the router has not applied the current weight.
            if self.st.stage_started_at.is_none() || self.st.route_unapplied_since.is_some() {
                return;
            }
            let stage = self.stage();
            let last = self.is_last_stage();
            let Some(required_ms) = stage_run_ms(stage, last) else {
                return;
            };
            if self.st.stage_active_ms(self.now) < required_ms || !self.criteria_allow_advance() {
                return;
            }
            let label = self.stage_label(self.st.stage_index);
            let evidence = self
                .st
                .analysis
                .as_ref()
                .map(|a| a.criteria.clone())
                .unwrap_or_default();
            if !self.st.group_allows_next() {
                // Done, but its group has not passed this stage yet.
                if !self.st.held_by_group {
                    self.st.held_by_group = true;
                    let message = format!("{label} passed; waiting for the rest of its group");
                    self.event(EventKind::StageAdvanced, Actor::Engine, message, evidence);
                }
                return;
            }
            if last {
                self.promote_canary(Actor::Engine, false, evidence);
            } else {
                let ran = stage
                    .duration
                    .map(|d| format!(" ran {}", humanize(d.as_millis() as u64)))
                    .unwrap_or_default();
                let how = if stage.success_criteria.is_empty() {
                    ""
                } else if evidence.iter().all(|e| e.status.is_pass()) {
                    " with every criterion passing"
                } else {
                    // onNoEvidence: advance, and some test has not decided yet.
                    " with no evidence of harm"
                };
                let message = format!("{label}{ran}{how}");
                self.event(EventKind::StageAdvanced, Actor::Engine, message, evidence);
                let from = self.st.stage_index;
                self.enter_stage(from + 1, Some(from));
            }
        }
    }
}
