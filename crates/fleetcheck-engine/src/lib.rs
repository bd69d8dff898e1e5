//! fleetcheck's engine: model-based property testing for slow, effectful systems such as
//! networks of real machines. Pure: no OS calls, no async runtime.
//!
//! - [`Model`]: a pure state machine — initial state (the generated network), command
//!   generator, precondition, next state, postcondition, and shrinking hints.
//! - [`System`]: how commands run for real (or against a fake) — setup, run, invariant, teardown.
//! - [`Gen`]: every random choice of a case, from one `u64` seed.
//! - [`run`] with a [`Config`]: generates cases, runs them on several workers, shrinks the first
//!   failure ([`shrink`]) and returns a [`Report`] whose [`Outcome`] is passed, failed,
//!   aborted or gave up.
//! - [`txn`]: transactional isolation checking (Elle-like): list-append and rw-register
//!   histories, their anomalies (G0 … G2-item, lost update, …) and the strongest model kept.
//! - [`Stats`]: labels of generated cases as a table; [`ReplayFile`]: a failing case as JSON.
//! - [`History`] of concurrent operations (recorded by workers through a [`Recorder`]) and
//!   [`linearizability::check`] against a [`Sequential`] model such as [`KvSpec`] or
//!   [`RegisterSpec`]: a [`Linearizability`] verdict.
//!
//! ```
//! use fleetcheck_engine::{check, run, Abort, Check, Config, Gen, Model, Outcome, System};
//!
//! /// A counter that may count up to `limit`.
//! #[derive(Debug)]
//! struct Counter;
//! #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! struct State { limit: u32, value: u32 }
//! #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! enum Cmd { Incr, Get }
//!
//! impl Model for Counter {
//!     type State = State;
//!     type Command = Cmd;
//!     type Output = u32;
//!     fn initial_state(&self, g: &mut Gen) -> State { State { limit: g.range(1..=5), value: 0 } }
//!     fn command(&self, s: &State, g: &mut Gen) -> Option<Cmd> {
//!         Some(if g.bool(0.5) && s.value < s.limit { Cmd::Incr } else { Cmd::Get })
//!     }
//!     fn precondition(&self, s: &State, c: &Cmd) -> bool { *c == Cmd::Get || s.value < s.limit }
//!     fn next_state(&self, s: &State, c: &Cmd) -> State {
//!         State { value: s.value + u32::from(*c == Cmd::Incr), ..s.clone() }
//!     }
//!     fn postcondition(&self, s: &State, c: &Cmd, out: &u32) -> Check {
//!         match c { Cmd::Get => check(*out == s.value, || format!("got {out}")), Cmd::Incr => Ok(()) }
//!     }
//! }
//!
//! /// The real thing: a plain integer.
//! struct RealCounter;
//! impl System<Counter> for RealCounter {
//!     type Instance = u32;
//!     fn setup(&self, _: &State) -> Result<u32, Abort> { Ok(0) }
//!     fn run(&self, n: &mut u32, _: &State, c: &Cmd) -> Result<u32, Abort> {
//!         if *c == Cmd::Incr { *n += 1 }
//!         Ok(*n)
//!     }
//!     fn teardown(&self, _: u32) -> Result<(), Abort> { Ok(()) }
//! }
//!
//! let report = run(&Counter, &RealCounter, &Config { seed: Some(1), ..Config::default() }, &());
//! assert!(matches!(report.outcome, Outcome::Passed));
//! ```

mod case;
pub mod collections;
mod display;
mod gen;
pub mod history;
pub mod linearizability;
mod model;
mod replay;
mod runner;
mod shrink;
mod stats;
pub mod txn;

pub use case::{execute, Case, Step, Trace, Verdict};
pub use display::{describe_failure, describe_trace};
pub use gen::{mix_seed, Gen, GenInt};
pub use history::{History, Operation, Recorder, Ticket};
pub use linearizability::{
    KvOp, KvRet, KvSpec, Linearizability, RegisterOp, RegisterRet, RegisterSpec, Sequential,
};
pub use model::{check, Abort, Check, Model, System};
pub use replay::{ReplayError, ReplayFile, REPLAY_FORMAT};
pub use runner::{
    case_seed, case_size, generate, labels_of, minimise, resolve_seed, run, Config, Event, Failure,
    Generated, Observer, Outcome, Report,
};
pub use shrink::{shrink, ShrinkConfig, ShrinkReport, Shrunk};
pub use stats::{Labels, Stats};
