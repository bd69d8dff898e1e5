//! Test cases and running one against a system.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::{Model, System};

/// One test case: an initial state (the network) and a command sequence.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Case<M: Model> {
    /// The seed this case was generated from (kept for the record; the case itself is explicit).
    pub seed: u64,
    /// The generated initial state.
    pub initial: M::State,
    /// The commands, in order.
    pub commands: Vec<M::Command>,
}

// Derives would demand `M: Clone` and friends; only the associated types need them.
impl<M: Model> Clone for Case<M> {
    fn clone(&self) -> Self {
        Self {
            seed: self.seed,
            initial: self.initial.clone(),
            commands: self.commands.clone(),
        }
    }
}

impl<M: Model> PartialEq for Case<M> {
    fn eq(&self, other: &Self) -> bool {
        self.seed == other.seed && self.initial == other.initial && self.commands == other.commands
    }
}

impl<M: Model> std::fmt::Debug for Case<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("seed", &self.seed)
            .field("initial", &self.initial)
            .field("commands", &self.commands)
            .finish()
    }
}

impl<M: Model> Clone for Step<M> {
    fn clone(&self) -> Self {
        Self {
            command: self.command.clone(),
            output: self.output.clone(),
            state_after: self.state_after.clone(),
            started: self.started,
            elapsed: self.elapsed,
        }
    }
}

impl<M: Model> std::fmt::Debug for Step<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("command", &self.command)
            .field("output", &self.output)
            .field("state_after", &self.state_after)
            .finish_non_exhaustive()
    }
}

impl<M: Model> Clone for Trace<M> {
    fn clone(&self) -> Self {
        Self {
            steps: self.steps.clone(),
            verdict: self.verdict.clone(),
            started_at: self.started_at,
            setup: self.setup,
            teardown: self.teardown,
            elapsed: self.elapsed,
        }
    }
}

impl<M: Model> std::fmt::Debug for Trace<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("steps", &self.steps)
            .field("verdict", &self.verdict)
            .finish_non_exhaustive()
    }
}

impl<M: Model> Case<M> {
    /// Drops every command whose precondition is false when the model is replayed from the
    /// initial state, and returns the commands that remain (the states are recomputed, so
    /// commands naming a machine that shrinking removed fall away).
    pub fn normalized(&self, model: &M) -> Case<M> {
        let mut state = self.initial.clone();
        let mut kept = Vec::with_capacity(self.commands.len());
        for command in &self.commands {
            if model.precondition(&state, command) {
                state = model.next_state(&state, command);
                kept.push(command.clone());
            }
        }
        Case {
            seed: self.seed,
            initial: self.initial.clone(),
            commands: kept,
        }
    }

    /// Whether every precondition holds when the model is replayed from the initial state.
    pub fn is_valid(&self, model: &M) -> bool {
        let mut state = self.initial.clone();
        for command in &self.commands {
            if !model.precondition(&state, command) {
                return false;
            }
            state = model.next_state(&state, command);
        }
        true
    }

    /// Whether the case could have been generated: its initial state keeps the model's rules
    /// ([`Model::check_initial`]) and every command's precondition holds; `Err` says why not.
    pub fn check(&self, model: &M) -> Result<(), String> {
        model
            .check_initial(&self.initial)
            .map_err(|why| format!("the initial state {why}"))?;
        if !self.is_valid(model) {
            return Err("a command's precondition does not hold in the replayed case".into());
        }
        Ok(())
    }

    /// The total cost of the commands, by [`Model::cost`].
    pub fn cost(&self, model: &M) -> u64 {
        self.commands.iter().map(|c| u64::from(model.cost(c))).sum()
    }
}

/// How one run of a case ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Every postcondition and invariant held.
    Passed,
    /// A postcondition or invariant was false at `step` (0-based command index).
    Failed {
        /// The index of the failing command.
        step: usize,
        /// Why the check was false.
        reason: String,
    },
    /// The infrastructure broke at `step` (`None`: during setup or teardown), or, with
    /// `overloaded`, the host was too loaded to judge it ([`Abort::overloaded`](crate::Abort)).
    Aborted {
        /// The index of the command that was running, if any.
        step: Option<usize>,
        /// What broke.
        message: String,
        /// Nothing broke: the host was too loaded to judge a timed result.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        overloaded: bool,
        /// Nothing broke: what the case asks cannot be done here ([`Abort::refused`](crate::Abort::refused)).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        refused: bool,
    },
}

impl Verdict {
    /// Whether the verdict is a failure (a counterexample).
    pub fn is_failure(&self) -> bool {
        matches!(self, Verdict::Failed { .. })
    }

    /// Whether the host was too loaded to judge the run.
    pub fn is_overloaded(&self) -> bool {
        matches!(
            self,
            Verdict::Aborted {
                overloaded: true,
                ..
            }
        )
    }
}

/// One executed command with its output and the model state after it.
pub struct Step<M: Model> {
    /// The command.
    pub command: M::Command,
    /// The output, as its `Debug` text (`None` if the run aborted before an output).
    pub output: Option<String>,
    /// The model state after the command.
    pub state_after: M::State,
    /// When the command started, from the start of the case.
    pub started: Duration,
    /// How long it took.
    pub elapsed: Duration,
}

/// The record of running a case: its steps and its verdict.
pub struct Trace<M: Model> {
    /// The steps that ran (up to and including a failing one).
    pub steps: Vec<Step<M>>,
    /// How the run ended.
    pub verdict: Verdict,
    /// When the run began: time zero of [`Step::started`]. Reports align other clocks of
    /// the same run (e.g. a [`History`](crate::History)'s) to it.
    pub started_at: Instant,
    /// How long [`System::setup`] took (the network was built before the first command).
    pub setup: Duration,
    /// How long [`System::teardown`] took (it ended the run).
    pub teardown: Duration,
    /// Wall time of the whole run, setup and teardown included.
    pub elapsed: Duration,
}

/// Runs `case` once against a fresh instance of `system`: setup, each command with its
/// postcondition and invariant, [`System::finish`] if every step passed, then teardown
/// (always, whatever happened).
pub fn execute<M: Model, S: System<M>>(model: &M, system: &S, case: &Case<M>) -> Trace<M> {
    let start = Instant::now();
    let mut steps = Vec::with_capacity(case.commands.len());
    let mut instance = match system.setup(&case.initial) {
        Ok(i) => i,
        Err(abort) => {
            return Trace {
                steps,
                verdict: Verdict::Aborted {
                    step: None,
                    message: format!("setup: {abort}"),
                    overloaded: abort.overloaded,
                    refused: abort.refused,
                },
                started_at: start,
                setup: start.elapsed(),
                teardown: Duration::ZERO,
                elapsed: start.elapsed(),
            }
        }
    };
    let setup = start.elapsed();
    let mut state = case.initial.clone();
    let mut verdict = Verdict::Passed;
    for (index, command) in case.commands.iter().enumerate() {
        if !model.precondition(&state, command) {
            // Cases are normalised before they run; a command that is not enabled is skipped.
            continue;
        }
        let began = Instant::now();
        let result = system.run(&mut instance, &state, command);
        let elapsed = began.elapsed();
        let next = model.next_state(&state, command);
        let (output, step_verdict) = match result {
            Err(abort) => (
                None,
                Some(Verdict::Aborted {
                    step: Some(index),
                    message: abort.message,
                    overloaded: abort.overloaded,
                    refused: abort.refused,
                }),
            ),
            Ok(out) => {
                let checked = model.postcondition(&state, command, &out);
                let text = format!("{out:?}");
                match checked {
                    Err(reason) => (
                        Some(text),
                        Some(Verdict::Failed {
                            step: index,
                            reason,
                        }),
                    ),
                    Ok(()) => match system.invariant(&mut instance, &next) {
                        Ok(Ok(())) => (Some(text), None),
                        Ok(Err(reason)) => (
                            Some(text),
                            Some(Verdict::Failed {
                                step: index,
                                reason: format!("invariant: {reason}"),
                            }),
                        ),
                        Err(abort) => (
                            Some(text),
                            Some(Verdict::Aborted {
                                step: Some(index),
                                message: format!("invariant: {abort}"),
                                overloaded: abort.overloaded,
                                refused: abort.refused,
                            }),
                        ),
                    },
                }
            }
        };
        steps.push(Step {
            command: command.clone(),
            output,
            state_after: next.clone(),
            started: began - start,
            elapsed,
        });
        state = next;
        if let Some(v) = step_verdict {
            verdict = v;
            break;
        }
    }
    if matches!(verdict, Verdict::Passed) && !steps.is_empty() {
        let last = steps.len() - 1;
        match system.finish(&mut instance, &state) {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                verdict = Verdict::Failed {
                    step: last,
                    reason: format!("at the end: {reason}"),
                }
            }
            Err(abort) => {
                verdict = Verdict::Aborted {
                    step: None,
                    message: format!("at the end: {abort}"),
                    overloaded: abort.overloaded,
                    refused: abort.refused,
                }
            }
        }
    }
    let teardown_began = Instant::now();
    let torn_down = system.teardown(instance);
    let teardown = teardown_began.elapsed();
    if let Err(abort) = torn_down {
        // A teardown failure is the infrastructure's, and it outranks a failure: a case whose
        // network could not be removed cannot be trusted as a counterexample.
        verdict = Verdict::Aborted {
            step: None,
            message: format!("teardown: {abort}"),
            overloaded: false,
            refused: false,
        };
    }
    Trace {
        steps,
        verdict,
        started_at: start,
        setup,
        teardown,
        elapsed: start.elapsed(),
    }
}
