//! The model API: a pure [`Model`] of the system and an effectful [`System`] that runs it.

use std::fmt::{self, Debug};

use serde::{de::DeserializeOwned, Serialize};

use crate::gen::Gen;
use crate::stats::Labels;

/// The verdict of a postcondition or an invariant: `Err` carries the reason it is false.
pub type Check = Result<(), String>;

/// Returns `Ok(())` if `cond` holds, else the reason made by `why`.
///
/// ```
/// use fleetcheck_engine::check;
/// assert!(check(1 + 1 == 2, || "arithmetic".into()).is_ok());
/// assert_eq!(check(false, || "no".into()), Err("no".to_string()));
/// ```
pub fn check(cond: bool, why: impl FnOnce() -> String) -> Check {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}

/// The infrastructure broke (a namespace could not be made, a VM did not start): the case is
/// *aborted*. An abort is reported but never shrunk and never called a counterexample.
///
/// Any error converts into an `Abort` with `?`; the whole source chain is kept in the message.
///
/// [`Abort::overloaded`] is another kind: nothing broke, but the host was too loaded to
/// judge a result that depends on time (a reply that may only have been late). It is reported
/// as *too loaded*, never as a counterexample. [`Abort::refused`] is the third: nothing broke,
/// but what the case asks cannot be done here (a fault this backend cannot apply to this
/// program), which only a run found out; reported as *refused*, like bad input.
#[derive(Clone, PartialEq, Eq)]
pub struct Abort {
    /// The error and its causes, joined with `: `.
    pub message: String,
    /// The host was too loaded to judge (see [`Abort::overloaded`]), rather than broken.
    pub overloaded: bool,
    /// What the case asks cannot be done here (see [`Abort::refused`]), rather than broken.
    pub refused: bool,
}

impl Abort {
    /// An abort with a plain message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            overloaded: false,
            refused: false,
        }
    }

    /// The host was too loaded to judge: e.g. a reply the model requires did not come within
    /// its timeout, nor within a longer grace, while the host itself was measured late.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            overloaded: true,
            refused: false,
        }
    }

    /// What the case asks cannot be done on this backend or with these programs (e.g. a
    /// clock fault for a Go program on netns): the configuration's fault, not the
    /// infrastructure's, found only once the case ran.
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            overloaded: false,
            refused: true,
        }
    }
}

impl<E: std::error::Error> From<E> for Abort {
    fn from(err: E) -> Self {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self {
            message,
            overloaded: false,
            refused: false,
        }
    }
}

impl Debug for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.overloaded {
            write!(f, "Abort(overloaded: {:?})", self.message)
        } else if self.refused {
            write!(f, "Abort(refused: {:?})", self.message)
        } else {
            write!(f, "Abort({:?})", self.message)
        }
    }
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A pure state-machine model of a system: no IO, ever.
///
/// The *state* includes the generated network (machines and their parameters), so shrinking the
/// initial state shrinks the network. Commands name machines (and every other entity) **by id**;
/// preconditions and postconditions receive the *current* model state and look machines up in
/// it, never a copy captured when the command was generated.
pub trait Model: Sync + Debug {
    /// The model state. Its initial value is generated and shrunk; it is serialised in replay files.
    type State: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync;
    /// A command. Serialised in replay files.
    type Command: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync;
    /// What running a command against the real system returns.
    type Output: Debug + Send;

    /// Generates the initial state (the network and everything else that is fixed per case).
    fn initial_state(&self, g: &mut Gen) -> Self::State;

    /// Whether an initial state that did not come from [`Model::initial_state`] (a replay
    /// file's) keeps the rules every generated one keeps (unique ids, addresses inside the
    /// subnet, ...); `Err` says which it breaks, in one sentence. The default accepts all.
    fn check_initial(&self, _state: &Self::State) -> Check {
        Ok(())
    }

    /// Simpler variants of an initial state, most promising (biggest simplification) first:
    /// fewer machines, then simpler parameters. The default offers none.
    fn shrink_state(&self, _state: &Self::State) -> Vec<Self::State> {
        Vec::new()
    }

    /// Generates a command for `state`. `None` (or a command whose precondition is false)
    /// counts as a discard.
    fn command(&self, state: &Self::State, g: &mut Gen) -> Option<Self::Command>;

    /// Simpler variants of one command (e.g. smaller arguments). The default offers none.
    fn shrink_command(&self, _command: &Self::Command) -> Vec<Self::Command> {
        Vec::new()
    }

    /// Whole-sequence rewrites tried while shrinking, simplest first, for what no single
    /// command can change on its own: e.g. renaming key 3 to key 0 in every command that
    /// names it. The default offers none.
    fn shrink_commands(
        &self,
        _initial: &Self::State,
        _commands: &[Self::Command],
    ) -> Vec<Vec<Self::Command>> {
        Vec::new()
    }

    /// Whether `command` may run in `state`. Re-checked on every shrink candidate.
    fn precondition(&self, _state: &Self::State, _command: &Self::Command) -> bool {
        true
    }

    /// The state after `command` ran in `state`.
    fn next_state(&self, state: &Self::State, command: &Self::Command) -> Self::State;

    /// Whether `output` is what the model allows for `command` run in `state` (the state before).
    fn postcondition(
        &self,
        state: &Self::State,
        command: &Self::Command,
        output: &Self::Output,
    ) -> Check;

    /// The relative cost of running `command` (time on the real system). The shrinker prefers
    /// dropping expensive commands. Default 1.
    fn cost(&self, _command: &Self::Command) -> u32 {
        1
    }

    /// A short name for the command, used in statistics. Default: the first word of its `Debug`.
    fn command_name(&self, command: &Self::Command) -> String {
        let debug = format!("{command:?}");
        debug
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Classifies a generated case for the statistics table (e.g. `labels.add("machines", n)`).
    /// Command names and sequence lengths are collected by the runner already.
    fn labels(&self, _initial: &Self::State, _commands: &[Self::Command], _labels: &mut Labels) {}

    /// Describes an initial state for people (the network and its parameters).
    fn describe_state(&self, state: &Self::State) -> String {
        format!("{state:#?}")
    }

    /// The size of an initial state for people, e.g. "3 machines"; the counterexample header
    /// says how shrinking changed it. Default: none.
    fn state_size(&self, _state: &Self::State) -> Option<String> {
        None
    }

    /// A one-line summary of a state, printed after each command of a counterexample.
    fn summarize_state(&self, state: &Self::State) -> String {
        format!("{state:?}")
    }

    /// Describes a command for people.
    fn describe_command(&self, command: &Self::Command) -> String {
        format!("{command:?}")
    }
}

/// The system under test: how a [`Model`]'s commands run for real (or against a fake).
///
/// One `System` value serves every case; [`System::setup`] makes a fresh, isolated instance for
/// each case, and several cases may run at once on different threads.
pub trait System<M: Model>: Sync {
    /// One live instance of the system (e.g. a booted network) for one case.
    type Instance;

    /// Creates an instance for a case that starts in `initial`.
    fn setup(&self, initial: &M::State) -> Result<Self::Instance, Abort>;

    /// Runs `command` in `state` (the model state before it). A postcondition judges the output;
    /// an `Err` means the infrastructure broke and aborts the case.
    fn run(
        &self,
        instance: &mut Self::Instance,
        state: &M::State,
        command: &M::Command,
    ) -> Result<M::Output, Abort>;

    /// An invariant checked after each step against the state after it. Default: none.
    fn invariant(&self, _instance: &mut Self::Instance, _state: &M::State) -> Result<Check, Abort> {
        Ok(Ok(()))
    }

    /// A check after the last step of a case whose every step passed, against the state
    /// after it (e.g. once every fault is healed: the cluster recovers); a failure fails the
    /// case at its last step. Default: none.
    fn finish(&self, _instance: &mut Self::Instance, _state: &M::State) -> Result<Check, Abort> {
        Ok(Ok(()))
    }

    /// Whether [`System::finish`] checks anything: then a prefix of a failing case may fail
    /// at its own end, and the shrinker runs prefixes too.
    fn finishes(&self) -> bool {
        false
    }

    /// Removes the instance. Called after every case, whatever its verdict; an error aborts.
    fn teardown(&self, instance: Self::Instance) -> Result<(), Abort>;
}
