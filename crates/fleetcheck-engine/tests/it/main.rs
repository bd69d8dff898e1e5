//! The engine's integration tests: planted bugs found and shrunk exactly, the four outcomes,
//! determinism, flakiness, statistics and replay;
//! histories and the linearizability checker.

#[path = "../common/histories.rs"]
mod histories;
#[path = "../common/planted.rs"]
mod planted;

mod collections;
mod finish;
mod linearizability;
mod outcomes;
mod planted_bugs;
mod replay;
mod txn;
