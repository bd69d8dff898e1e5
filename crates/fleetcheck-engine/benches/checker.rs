//! The linearizability checker's time against history length and concurrency, on histories
//! simulated from a correct atomic store (`tests/common/histories.rs`): a key-value map over 4
//! keys (checked per key), a single register (no partitions), and histories with one read
//! corrupted (not linearizable). 1% of operations end `Unknown`, 2% `Fail`.
//!
//! Baselines in the same run, on the same histories: the same search without memoisation, and
//! for the map the same model with partitioning turned off (checked whole). Both are capped at
//! `BASELINE_STEPS` model steps; a capped run prints `>cap`.
//!
//! Run: `cargo bench -p fleetcheck-engine --bench checker`.

#[path = "../tests/common/histories.rs"]
mod histories;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fleetcheck_engine::history::{History, Outcome};
use fleetcheck_engine::linearizability::{check_with, Checked, Limits};
use fleetcheck_engine::{
    KvOp, KvRet, KvSpec, Linearizability, RegisterOp, RegisterRet, RegisterSpec, Sequential,
};

use histories::{first_ok_read, kv_history, register_history, Shape};

/// Keys of the map histories.
const KEYS: u64 = 4;
/// Model steps after which a baseline gives up.
const BASELINE_STEPS: u64 = 2_000_000;
/// Baselines run only on histories up to this length (they are the slow side).
const BASELINE_MAX_OPS: usize = 1_000;

/// The map, checked whole: the baseline for partitioning.
struct Whole;

impl Sequential for Whole {
    type State = BTreeMap<u64, u64>;
    type Op = KvOp<u64>;
    type Ret = KvRet<u64>;
    fn init(&self) -> Self::State {
        BTreeMap::new()
    }
    fn step(&self, s: &Self::State, op: &KvOp<u64>) -> (Self::State, KvRet<u64>) {
        KvSpec::new().step(s, op)
    }
}

fn shape(ops: usize, workers: usize) -> Shape {
    Shape {
        seed: 42 + ops as u64 * 31 + workers as u64,
        ops,
        workers,
        p_unknown: 0.01,
        p_fail: 0.02,
    }
}

/// Runs the check, repeated until 50 ms have passed (at least once); the mean time.
fn time<M: Sequential>(
    model: &M,
    h: &History<M::Op, M::Ret>,
    limits: &Limits<'_>,
) -> (Checked, Duration) {
    let started = Instant::now();
    let mut runs = 0;
    loop {
        let checked = check_with(model, h, limits);
        runs += 1;
        if started.elapsed() >= Duration::from_millis(50) {
            return (checked, started.elapsed() / runs);
        }
    }
}

fn verdict(r: &Linearizability) -> &'static str {
    match r {
        Linearizability::Linearizable => "lin",
        Linearizability::NotLinearizable { .. } => "NOT lin",
        Linearizability::Unknown { .. } => "unknown",
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// A baseline column: time and steps, or `>cap` when it gave up.
fn baseline<M: Sequential>(
    model: &M,
    h: &History<M::Op, M::Ret>,
    memoise: bool,
    expect_linearizable: bool,
) -> String {
    if h.len() > BASELINE_MAX_OPS {
        return "-".to_string();
    }
    let limits = Limits {
        max_steps: Some(BASELINE_STEPS),
        memoise,
        ..Limits::default()
    };
    let (checked, t) = time(model, h, &limits);
    match &checked.result {
        Linearizability::Unknown { .. } => format!(">cap ({} ms)", ms(t)),
        r => {
            assert_eq!(r.is_linearizable(), expect_linearizable, "baselines agree");
            format!("{} ms / {}", ms(t), checked.steps)
        }
    }
}

fn row<M: Sequential>(
    name: &str,
    model: &M,
    h: &History<M::Op, M::Ret>,
    workers: usize,
    expect_linearizable: bool,
    whole: Option<&dyn Fn() -> String>,
) {
    let (checked, t) = time(model, h, &Limits::default());
    assert_eq!(
        checked.result.is_linearizable(),
        expect_linearizable,
        "{name}: {}",
        checked.result
    );
    let no_memo = baseline(model, h, false, expect_linearizable);
    let whole = whole.map_or_else(|| "-".to_string(), |f| f());
    println!(
        "{name:<10} {ops:>6} {workers:>3} {v:>8} {steps:>9} {t:>10} {per:>8.2} | {no_memo:>24} | {whole:>24}",
        ops = h.len(),
        v = verdict(&checked.result),
        steps = checked.steps,
        t = ms(t),
        per = t.as_secs_f64() * 1e9 / h.len() as f64 / 1e3,
    );
}

/// Replaces the value of the first successful read in the second half by one never written.
fn corrupt_kv(h: &mut History<KvOp<u64>, KvRet<u64>>) {
    let i = first_ok_read(h, h.len() / 2, |op, r| {
        matches!((op, r), (KvOp::Get(_), KvRet::Value(Some(_))))
    })
    .expect("a read");
    h.operations[i].outcome = Outcome::Ok(KvRet::Value(Some(u64::MAX)));
}

fn corrupt_register(h: &mut History<RegisterOp<u64>, RegisterRet<u64>>) {
    let i = first_ok_read(h, h.len() / 2, |op, _| *op == RegisterOp::Read).expect("a read");
    h.operations[i].outcome = Outcome::Ok(RegisterRet::Value(u64::MAX));
}

fn main() {
    let started = Instant::now();
    let kv = KvSpec::<u64>::new();
    let register = RegisterSpec { initial: 0u64 };
    println!(
        "linearizability checker: time per history (mean of repeats over >= 50 ms), 1% unknown, 2% fail ops\n\
         baselines capped at {BASELINE_STEPS} model steps, run up to {BASELINE_MAX_OPS} ops\n"
    );
    println!(
        "{:<10} {:>6} {:>3} {:>8} {:>9} {:>10} {:>8} | {:>24} | {:>24}",
        "history",
        "ops",
        "wrk",
        "verdict",
        "steps",
        "time ms",
        "us/op",
        "no memo: ms / steps",
        "unpartitioned: ms / steps"
    );
    println!("{}", "-".repeat(116));
    for ops in [100, 1_000, 10_000] {
        for workers in [2, 5, 10] {
            let h = kv_history(shape(ops, workers), KEYS);
            let whole = || baseline(&Whole, &h, true, true);
            row("kv/4 keys", &kv, &h, workers, true, Some(&whole));
        }
    }
    for ops in [100, 1_000, 10_000] {
        for workers in [2, 5, 10] {
            let h = register_history(shape(ops, workers));
            row("register", &register, &h, workers, true, None);
        }
    }
    for ops in [100, 1_000, 10_000] {
        let workers = 5;
        let mut h = kv_history(shape(ops, workers), KEYS);
        corrupt_kv(&mut h);
        let whole = || baseline(&Whole, &h, true, false);
        row("kv/broken", &kv, &h, workers, false, Some(&whole));
        let mut h = register_history(shape(ops, workers));
        corrupt_register(&mut h);
        row("reg/broken", &register, &h, workers, false, None);
    }
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
}
