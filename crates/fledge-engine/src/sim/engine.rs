//! The rollout engine itself as a simulator controller: every scrape becomes an
//! [`Input::Observe`] for the real [`step`] function, in virtual time, and its
//! actions steer the simulated router. This is what `fledge simulate` measures.

use fledge_spec::RolloutSpec;
use fledge_stats::Observation;

use super::{Control, Controller, Outcome};
use crate::machine::{Action, EngineError, Input, Phase, RolloutState, Timestamp, step};

/// Virtual time zero of a simulated rollout (any fixed instant will do: the engine
/// only looks at differences).
const EPOCH_MS: i64 = 1_700_000_000_000;

/// The rollout state machine driven by simulated observations.
#[derive(Debug, Clone)]
pub struct EngineController<'a> {
    spec: &'a RolloutSpec,
    state: RolloutState,
    weight: f64,
    mirror: f64,
    /// Why the engine refused an input, if it ever did (a bug or a bad spec).
    pub error: Option<EngineError>,
}

impl<'a> EngineController<'a> {
    /// Starts a rollout of `spec` at virtual time 0. Hooks are reported as
    /// succeeded at once.
    pub fn start(spec: &'a RolloutSpec) -> Result<Self, EngineError> {
        let mut c = Self {
            spec,
            state: RolloutState::pending(),
            weight: 0.0,
            mirror: 0.0,
            error: None,
        };
        c.apply(Input::Start, 0.0)?;
        // The simulated counters start at zero with the run: the engine's origin.
        c.apply(Input::Observe(Observation::default()), 0.0)?;
        Ok(c)
    }

    /// The engine's current state.
    pub fn state(&self) -> &RolloutState {
        &self.state
    }

    fn apply(&mut self, input: Input, now_seconds: f64) -> Result<(), EngineError> {
        let now = Timestamp::from_millis(EPOCH_MS + (now_seconds * 1000.0).round() as i64);
        let mut inputs = vec![input];
        // Hooks finish instantly in the simulation; bounded so a hook loop cannot hang.
        for _ in 0..16 {
            let Some(input) = inputs.pop() else { break };
            let s = step(self.spec, &self.state, input, now)?;
            self.state = s.state;
            for a in s.actions {
                match a {
                    Action::SetWeight { canary, mirror } => {
                        self.weight = f64::from(canary) / 100.0;
                        self.mirror = f64::from(mirror) / 100.0;
                    }
                    Action::PromoteCanary => (self.weight, self.mirror) = (1.0, 0.0),
                    Action::RunHook { hook, attempt } => inputs.push(Input::HookDone {
                        hook,
                        attempt,
                        error: None,
                    }),
                }
            }
        }
        Ok(())
    }

    fn outcome(&self) -> Option<Outcome> {
        match self.state.phase {
            Phase::Failed | Phase::Aborted => Some(Outcome::Failed),
            Phase::Succeeded => Some(Outcome::Succeeded),
            Phase::Pending | Phase::Progressing | Phase::Paused => None,
        }
    }
}

impl Controller for EngineController<'_> {
    fn initial_weight(&self) -> f64 {
        self.weight
    }

    fn mirror(&self) -> f64 {
        self.mirror
    }

    fn observe(&mut self, now_seconds: f64, obs: &Observation) -> Control {
        if self.outcome().is_none()
            && let Err(e) = self.apply(Input::Observe(obs.clone()), now_seconds)
        {
            self.error = Some(e);
            return Control {
                weight: self.weight,
                outcome: Some(Outcome::Inconclusive),
            };
        }
        Control {
            weight: self.weight,
            outcome: self.outcome(),
        }
    }
}
