//! The engine's integration tests: planted bugs found and shrunk exactly, the four outcomes,
//! determinism, flakiness, statistics and replay.

#[path = "../common/planted.rs"]
mod planted;

mod outcomes;
mod planted_bugs;
mod replay;
