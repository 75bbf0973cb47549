//! Who acts on a rollout, and what an operator may ask of it: the [`Command`]s, the
//! phases that allow each (also offered to clients as
//! [`RolloutState::allowed_commands`]), and what each does to the rollout.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::step::Machine;
use super::{EngineError, EventKind, Phase, RolloutState};

// === Actor ===

/// Who made a decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "camelCase")]
pub enum Actor {
    /// The engine itself (judge, durations, budgets).
    Engine,
    /// An operator, by identity (token name, user).
    Operator(String),
}

impl Actor {
    /// An operator by name.
    pub fn operator(name: impl Into<String>) -> Self {
        Actor::Operator(name.into())
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Engine => f.write_str("engine"),
            Actor::Operator(name) => f.write_str(name),
        }
    }
}

// === Command ===

/// An operator's action on a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "camelCase")]
pub enum Command {
    /// End the current stage now (`full: false`), or jump to 100% and make the canary
    /// stable (`full: true`). Allowed while `Progressing` or `Paused`.
    Promote {
        /// `promote --full`.
        #[serde(default)]
        full: bool,
    },
    /// Roll back now: the canary gets 0%. Allowed while `Pending`, `Progressing` or
    /// `Paused`.
    Abort {
        /// Why, in the operator's words.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Hold the current stage. Allowed while `Progressing`.
    Pause,
    /// Continue after a pause. Allowed while `Paused`.
    Resume,
    /// Start again from stage 0. Allowed while `Failed` or `Aborted`.
    Retry,
}

impl Command {
    /// The command's name as the CLI spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Promote { full: false } => "promote",
            Command::Promote { full: true } => "promote --full",
            Command::Abort { .. } => "abort",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Retry => "retry",
        }
    }

    /// Whether the command is allowed in `phase` (a pending promotion gate aside).
    pub fn allowed_in(&self, phase: Phase) -> bool {
        use Phase::*;
        match self {
            Command::Promote { .. } => matches!(phase, Progressing | Paused),
            Command::Abort { .. } => matches!(phase, Pending | Progressing | Paused),
            Command::Pause => phase == Progressing,
            Command::Resume => phase == Paused,
            Command::Retry => matches!(phase, Failed | Aborted),
        }
    }
}

// === impl RolloutState ===

impl RolloutState {
    /// The operator commands [`step`](super::step) would accept now, for the UI and
    /// CLI to offer (`promote` here stands for both `promote` and `promote --full`).
    pub fn allowed_commands(&self) -> Vec<&'static str> {
        let all = [
            Command::Promote { full: false },
            Command::Abort { reason: None },
            Command::Pause,
            Command::Resume,
            Command::Retry,
        ];
        all.iter()
            .filter(|c| c.allowed_in(self.phase))
            .filter(|c| {
                !(matches!(c, Command::Promote { .. })
                    && (self.gate.is_some() || !self.group_allows_next()))
            })
            .map(Command::name)
            .collect()
    }
}

// === impl Machine ===

impl Machine<'_> {
    /// Applies an operator's command, or refuses it leaving the rollout unchanged.
    pub(super) fn command(&mut self, command: Command, actor: Actor) -> Result<(), EngineError> {
        let phase = self.st.phase;
        if !command.allowed_in(phase) {
            return Err(EngineError::NotAllowed {
                phase,
                command: command.name(),
            });
        }
        if let (Some(gate), Command::Promote { .. }) = (&self.st.gate, &command) {
            // Promoting past a beforeRollout gate would send traffic to a canary that
            // may not be deployed; a second promotion while one waits is meaningless.
            return Err(EngineError::HooksPending {
                command: command.name(),
                hooks: gate.hook().list_name(),
            });
        }
        if matches!(command, Command::Promote { .. }) && !self.st.group_allows_next() {
            return Err(EngineError::HeldByGroup {
                command: command.name(),
                stage: self.st.stage_index + 1,
            });
        }
        // A member of a group never jumps ahead of it: `--full` moves it one stage.
        let command = match command {
            Command::Promote { full: true } if self.st.group_hold.is_some() => {
                Command::Promote { full: false }
            }
            other => other,
        };
        match command {
            Command::Promote { full: true } => {
                let message = format!("{actor} promoted the canary fully (100%)");
                self.event(EventKind::Promoted, actor.clone(), message, Vec::new());
                self.promote_canary(actor, true, Vec::new());
            }
            Command::Promote { full: false } => {
                let label = self.stage_label(self.st.stage_index);
                if self.is_last_stage() {
                    let message = format!("{actor} ended {label}, the final stage");
                    self.event(EventKind::Promoted, actor.clone(), message, Vec::new());
                    self.promote_canary(actor, false, Vec::new());
                } else {
                    let message = format!("{actor} ended {label} early");
                    self.event(EventKind::Promoted, actor, message, Vec::new());
                    let from = self.st.stage_index;
                    self.enter_stage(from + 1, Some(from));
                }
            }
            Command::Abort { reason } => {
                let why = reason
                    .filter(|r| !r.trim().is_empty())
                    .unwrap_or_else(|| "no reason given".to_string());
                let message = if phase == Phase::Pending {
                    format!("{actor} aborted the rollout before it started: {why}")
                } else {
                    format!(
                        "{actor} aborted the rollout at {}: {why}",
                        self.stage_label(self.st.stage_index)
                    )
                };
                self.roll_back(Phase::Aborted, actor, why, message, Vec::new());
            }
            Command::Pause => {
                self.st.phase = Phase::Paused;
                self.st.paused_at = Some(self.now);
                let message = format!(
                    "{actor} paused the rollout at {}",
                    self.stage_label(self.st.stage_index)
                );
                self.event(EventKind::Paused, actor, message, Vec::new());
            }
            Command::Resume => {
                self.close_pause();
                self.st.phase = Phase::Progressing;
                let message = format!(
                    "{actor} resumed the rollout at {}",
                    self.stage_label(self.st.stage_index)
                );
                self.event(EventKind::Resumed, actor, message, Vec::new());
            }
            Command::Retry => self.begin_attempt(actor, EventKind::Retried),
        }
        Ok(())
    }
}
