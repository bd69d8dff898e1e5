//! Random concurrent histories of a *correct* atomic store, shared by the linearizability tests
//! and the `checker` benchmark: every generated history is linearizable by construction.
//!
//! Workers invoke operations at random times; each in-flight operation takes effect atomically
//! on the store at a random moment inside its interval (that is the linearization point) and
//! completes later. Some end `Fail` without effect, some `Unknown` with or without effect.

#![allow(dead_code)] // each includer uses a part

use fleetcheck_engine::history::{History, Operation, Outcome};
use fleetcheck_engine::{
    Gen, KvOp, KvRet, KvSpec, RegisterOp, RegisterRet, RegisterSpec, Sequential,
};

/// The shape of a simulated history.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub seed: u64,
    /// Operations in total.
    pub ops: usize,
    /// Client workers issuing them concurrently.
    pub workers: usize,
    /// Probability that an operation ends `Unknown` (half of those took effect).
    pub p_unknown: f64,
    /// Probability that an operation ends `Fail` (without effect).
    pub p_fail: f64,
}

enum Slot<R> {
    Idle,
    /// The operation's index and, once it took effect, what it returned.
    InFlight(usize, Option<R>),
}

/// Simulates `shape.ops` operations drawn by `draw` (given the operation's index, unique) on a
/// correct store specified by `model`.
pub fn simulate<M>(
    model: &M,
    shape: Shape,
    mut draw: impl FnMut(&mut Gen, usize) -> M::Op,
) -> History<M::Op, M::Ret>
where
    M: Sequential,
    M::Op: Clone,
    M::Ret: Clone,
{
    let mut g = Gen::new(shape.seed, shape.ops);
    let mut state = model.init();
    let mut history = History::new();
    let mut slots: Vec<Slot<M::Ret>> = (0..shape.workers).map(|_| Slot::Idle).collect();
    let mut t: u64 = 0;
    loop {
        let busy = slots
            .iter()
            .filter(|s| matches!(s, Slot::InFlight(..)))
            .count();
        if history.len() == shape.ops && busy == 0 {
            return history;
        }
        t += g.range(1..=1_000u64);
        let w = g.range(0..=shape.workers - 1);
        let end = |h: &mut History<M::Op, M::Ret>, i: usize, outcome: Outcome<M::Ret>| {
            let o: &mut Operation<M::Op, M::Ret> = &mut h.operations[i];
            o.complete = (!outcome.is_unknown()).then_some(t);
            o.outcome = outcome;
        };
        slots[w] = match std::mem::replace(&mut slots[w], Slot::Idle) {
            Slot::Idle if history.len() < shape.ops => {
                let i = history.len();
                let op = draw(&mut g, i);
                history.op(w, op, t, None, Outcome::Unknown);
                Slot::InFlight(i, None)
            }
            Slot::Idle => Slot::Idle,
            Slot::InFlight(i, None) => {
                if g.bool(shape.p_fail) {
                    end(&mut history, i, Outcome::Fail);
                    Slot::Idle
                } else if g.bool(shape.p_unknown / 2.0) {
                    end(&mut history, i, Outcome::Unknown);
                    Slot::Idle
                } else {
                    let (next, ret) = model.step(&state, &history.operations[i].op);
                    state = next;
                    Slot::InFlight(i, Some(ret))
                }
            }
            Slot::InFlight(i, Some(ret)) => {
                let outcome = if g.bool(shape.p_unknown / 2.0) {
                    Outcome::Unknown
                } else {
                    Outcome::Ok(ret)
                };
                end(&mut history, i, outcome);
                Slot::Idle
            }
        };
    }
}

/// A key-value history over `keys` keys: gets, puts of unique values, deletes and CASes.
pub fn kv_history(shape: Shape, keys: u64) -> History<KvOp<u64>, KvRet<u64>> {
    simulate(&KvSpec::new(), shape, |g, i| {
        let key = g.range(0..=keys - 1);
        match g.range(0..=9u32) {
            0..=3 => KvOp::Get(key),
            4..=6 => KvOp::Put(key, i as u64),
            7 => KvOp::Delete(key),
            _ => KvOp::Cas {
                key,
                // Some recent value or absent: some succeed, some do not.
                expected: g
                    .bool(0.8)
                    .then(|| (i as u64).saturating_sub(g.range(1..=8))),
                new: i as u64,
            },
        }
    })
}

/// A single-register history: reads, writes of unique values, CASes.
pub fn register_history(shape: Shape) -> History<RegisterOp<u64>, RegisterRet<u64>> {
    simulate(&RegisterSpec { initial: 0 }, shape, |g, i| {
        match g.range(0..=9u32) {
            0..=4 => RegisterOp::Read,
            5..=8 => RegisterOp::Write(i as u64 + 1),
            _ => RegisterOp::Cas((i as u64).saturating_sub(g.range(0..=6)), i as u64 + 1),
        }
    })
}

/// Index of the first `Ok` read (a `Get` or `Read` that returned a value) at or after `from`.
pub fn first_ok_read<O, R>(
    history: &History<O, R>,
    from: usize,
    is_read: impl Fn(&O, &R) -> bool,
) -> Option<usize> {
    (from..history.len()).find(|&i| {
        let o = &history.operations[i];
        o.outcome.ok().is_some_and(|r| is_read(&o.op, r))
    })
}
