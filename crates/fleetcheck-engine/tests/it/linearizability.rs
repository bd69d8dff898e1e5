//! Histories and the linearizability checker: hand-made histories that are and are not
//! linearizable, `Unknown` and `Fail` operations, partitions, long simulated histories, the
//! recorder under threads, budgets.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fleetcheck_engine::history::{History, Outcome, Recorder};
use fleetcheck_engine::linearizability::{check, check_with, Limits};
use fleetcheck_engine::{
    KvOp, KvRet, KvSpec, Linearizability, RegisterOp, RegisterRet, RegisterSpec, Sequential,
};

use crate::histories::{first_ok_read, kv_history, register_history, Shape};

type Reg = History<RegisterOp<u64>, RegisterRet<u64>>;
type Kv = History<KvOp<u64>, KvRet<u64>>;

const REG: RegisterSpec<u64> = RegisterSpec { initial: 0 };

fn kv() -> KvSpec<u64> {
    KvSpec::new()
}

/// Milliseconds to nanoseconds, so hand-made histories read easily.
const MS: u64 = 1_000_000;

/// Adds a completed register op on `worker` during `a..b` ms.
fn reg(h: &mut Reg, worker: usize, op: RegisterOp<u64>, a: u64, b: u64, ret: RegisterRet<u64>) {
    h.op(worker, op, a * MS, Some(b * MS), Outcome::Ok(ret));
}

fn write(h: &mut Reg, worker: usize, v: u64, a: u64, b: u64) {
    reg(h, worker, RegisterOp::Write(v), a, b, RegisterRet::Done);
}

fn read(h: &mut Reg, worker: usize, v: u64, a: u64, b: u64) {
    reg(h, worker, RegisterOp::Read, a, b, RegisterRet::Value(v));
}

fn kv_op(h: &mut Kv, worker: usize, op: KvOp<u64>, a: u64, b: u64, ret: KvRet<u64>) {
    h.op(worker, op, a * MS, Some(b * MS), Outcome::Ok(ret));
}

fn get(h: &mut Kv, worker: usize, k: u64, v: Option<u64>, a: u64, b: u64) {
    kv_op(h, worker, KvOp::Get(k), a, b, KvRet::Value(v));
}

fn put(h: &mut Kv, worker: usize, k: u64, v: u64, a: u64, b: u64) {
    kv_op(h, worker, KvOp::Put(k, v), a, b, KvRet::Done);
}

/// The failing key and ops of a `NotLinearizable` verdict; panics with the verdict otherwise.
fn violation(result: Linearizability) -> (Option<u64>, Vec<usize>, String) {
    match result {
        Linearizability::NotLinearizable {
            key,
            ops,
            explanation,
        } => (key, ops, explanation),
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn sequential_history_is_linearizable() {
    let mut h = Reg::new();
    read(&mut h, 0, 0, 0, 1);
    write(&mut h, 0, 1, 2, 3);
    read(&mut h, 1, 1, 4, 5);
    write(&mut h, 1, 2, 6, 7);
    read(&mut h, 0, 2, 8, 9);
    assert_eq!(check(&REG, &h), Linearizability::Linearizable);
    // The same with the last read seeing the older value is not.
    h.operations[4].outcome = Outcome::Ok(RegisterRet::Value(1));
    let (key, ops, _) = violation(check(&REG, &h));
    assert_eq!(key, None);
    assert_eq!(ops, vec![0, 1, 2, 3, 4]);
}

#[test]
fn concurrent_writes_read_sees_either_value() {
    for seen in [1, 2] {
        let mut h = Reg::new();
        write(&mut h, 0, 1, 0, 10);
        write(&mut h, 1, 2, 0, 10);
        read(&mut h, 2, seen, 5, 15);
        read(&mut h, 2, seen, 20, 21);
        read(&mut h, 0, seen, 22, 23);
        assert_eq!(check(&REG, &h), Linearizability::Linearizable, "{h}");
    }
    // Once both writes completed, the value cannot flip between two sequential reads.
    let mut h = Reg::new();
    write(&mut h, 0, 1, 0, 10);
    write(&mut h, 1, 2, 0, 10);
    read(&mut h, 2, 1, 20, 21);
    read(&mut h, 2, 2, 22, 23);
    let (_, ops, _) = violation(check(&REG, &h));
    assert_eq!(ops.last(), Some(&3), "the second read cannot be placed");
}

#[test]
fn stale_read_after_completed_write_is_not_linearizable() {
    let mut h = Reg::new();
    write(&mut h, 0, 1, 0, 10);
    read(&mut h, 1, 0, 20, 30);
    let (key, ops, explanation) = violation(check(&REG, &h));
    assert_eq!((key, ops), (None, vec![0, 1]));
    assert!(
        explanation.contains("the model returns Value(1)"),
        "{explanation}"
    );
    // Overlapping the write, the same read is fine.
    h.operations[1].invoke = 5 * MS;
    assert!(check(&REG, &h).is_linearizable());
}

#[test]
fn read_of_a_value_never_written_is_not_linearizable() {
    let mut h = Reg::new();
    write(&mut h, 0, 1, 0, 10);
    write(&mut h, 1, 2, 5, 15);
    read(&mut h, 2, 3, 0, 20);
    let (_, ops, _) = violation(check(&REG, &h));
    assert_eq!(ops.last(), Some(&2));
    h.operations[2].outcome = Outcome::Ok(RegisterRet::Value(2));
    assert!(check(&REG, &h).is_linearizable());
}

#[test]
fn unknown_put_that_took_effect_is_linearizable() {
    let mut h = Kv::new();
    h.op(0, KvOp::Put(1, 5), 0, None, Outcome::Unknown);
    get(&mut h, 1, 1, None, 10, 20);
    get(&mut h, 1, 1, Some(5), 50, 60);
    get(&mut h, 2, 1, Some(5), 70, 80);
    assert_eq!(check(&kv(), &h), Linearizability::Linearizable);
}

#[test]
fn unknown_put_that_never_took_effect_is_linearizable() {
    let mut h = Kv::new();
    h.op(0, KvOp::Put(1, 5), 0, None, Outcome::Unknown);
    get(&mut h, 1, 1, None, 50, 60);
    get(&mut h, 1, 1, None, 70, 80);
    assert_eq!(check(&kv(), &h), Linearizability::Linearizable);
}

#[test]
fn unknown_put_seen_then_unseen_is_not_linearizable() {
    let mut h = Kv::new();
    h.op(0, KvOp::Put(1, 5), 0, None, Outcome::Unknown);
    get(&mut h, 1, 1, Some(5), 50, 60);
    get(&mut h, 1, 1, None, 70, 80);
    let (key, ops, _) = violation(check(&kv(), &h));
    assert_eq!((key, ops), (Some(1), vec![0, 1, 2]));
}

#[test]
fn unknown_put_cannot_take_effect_before_its_invocation() {
    let mut h = Kv::new();
    get(&mut h, 1, 1, Some(5), 0, 10);
    h.op(0, KvOp::Put(1, 5), 20 * MS, None, Outcome::Unknown);
    assert!(check(&kv(), &h).is_violation());
    h.operations[1].invoke = 5 * MS;
    assert!(check(&kv(), &h).is_linearizable());
}

#[test]
fn unknown_ops_return_values_are_not_checked() {
    let mut h = Kv::new();
    put(&mut h, 0, 1, 5, 0, 10);
    // A get that timed out: whatever it carries is ignored (there is nothing to carry).
    h.op(1, KvOp::Get(1), 20 * MS, None, Outcome::Unknown);
    // An unknown CAS that did swap 5 -> 6.
    h.op(
        2,
        KvOp::Cas {
            key: 1,
            expected: Some(5),
            new: 6,
        },
        30 * MS,
        None,
        Outcome::Unknown,
    );
    get(&mut h, 1, 1, Some(6), 40, 50);
    assert!(check(&kv(), &h).is_linearizable());
}

#[test]
fn failed_ops_are_ignored() {
    let mut h = Kv::new();
    put(&mut h, 0, 1, 5, 0, 10);
    h.op(0, KvOp::Put(1, 6), 20 * MS, Some(30 * MS), Outcome::Fail);
    get(&mut h, 1, 1, Some(5), 40, 50);
    assert!(check(&kv(), &h).is_linearizable());
    // Had the failed put taken effect, the read would be allowed; it did not.
    h.operations[2].outcome = Outcome::Ok(KvRet::Value(Some(6)));
    assert!(check(&kv(), &h).is_violation());
    // A history whose only op on a key failed is trivially fine.
    let mut h = Kv::new();
    h.op(0, KvOp::Delete(9), 0, Some(MS), Outcome::Fail);
    assert!(check(&kv(), &h).is_linearizable());
}

#[test]
fn compare_and_set() {
    let cas = |expected: Option<u64>, new| KvOp::Cas {
        key: 7,
        expected,
        new,
    };
    // Two concurrent CASes from absent: exactly one may win.
    let mut h = Kv::new();
    kv_op(&mut h, 0, cas(None, 1), 0, 10, KvRet::Swapped(true));
    kv_op(&mut h, 1, cas(None, 2), 0, 10, KvRet::Swapped(false));
    get(&mut h, 2, 7, Some(1), 20, 30);
    assert!(check(&kv(), &h).is_linearizable());
    // Both winning is not linearizable.
    h.operations[1].outcome = Outcome::Ok(KvRet::Swapped(true));
    assert!(check(&kv(), &h).is_violation());
    // Neither winning is not either.
    h.operations[0].outcome = Outcome::Ok(KvRet::Swapped(false));
    h.operations[1].outcome = Outcome::Ok(KvRet::Swapped(false));
    assert!(check(&kv(), &h).is_violation());
    // A chain: put 1, cas 1 -> 2, cas 1 -> 3 fails, get 2, delete, cas absent -> 4.
    let mut h = Kv::new();
    put(&mut h, 0, 7, 1, 0, 1);
    kv_op(&mut h, 0, cas(Some(1), 2), 2, 3, KvRet::Swapped(true));
    kv_op(&mut h, 1, cas(Some(1), 3), 4, 5, KvRet::Swapped(false));
    get(&mut h, 1, 7, Some(2), 6, 7);
    kv_op(&mut h, 0, KvOp::Delete(7), 8, 9, KvRet::Done);
    kv_op(&mut h, 1, cas(None, 4), 10, 11, KvRet::Swapped(true));
    get(&mut h, 0, 7, Some(4), 12, 13);
    assert!(check(&kv(), &h).is_linearizable());
    h.operations[2].outcome = Outcome::Ok(KvRet::Swapped(true));
    assert!(check(&kv(), &h).is_violation());
    // The register's CAS too.
    let mut h = Reg::new();
    reg(
        &mut h,
        0,
        RegisterOp::Cas(0, 1),
        0,
        10,
        RegisterRet::Swapped(true),
    );
    reg(
        &mut h,
        1,
        RegisterOp::Cas(0, 2),
        5,
        15,
        RegisterRet::Swapped(true),
    );
    assert!(check(&REG, &h).is_violation());
    h.operations[1].op = RegisterOp::Cas(1, 2);
    assert!(check(&REG, &h).is_linearizable());
}

#[test]
fn independent_keys_one_broken_names_that_key() {
    let mut h = Kv::new();
    for k in 1..=3 {
        put(&mut h, 0, k, 10 * k, 0, 10);
        get(&mut h, 1, k, Some(10 * k), 5, 15);
    }
    // Key 2 alone goes back in time.
    get(&mut h, 2, 2, None, 20, 30);
    // A bigger, healthy key 4.
    for i in 0..10 {
        put(&mut h, 0, 4, i, 40 + 2 * i, 41 + 2 * i);
    }
    let (key, ops, explanation) = violation(check(&kv(), &h));
    assert_eq!(key, Some(2));
    assert_eq!(ops, vec![2, 3, 6]);
    assert!(explanation.starts_with("key 2: "), "{explanation}");
    // Checked whole (no partitions), the verdict agrees but names no key.
    struct Whole;
    impl Sequential for Whole {
        type State = BTreeMap<u64, u64>;
        type Op = KvOp<u64>;
        type Ret = KvRet<u64>;
        fn init(&self) -> Self::State {
            BTreeMap::new()
        }
        fn step(&self, s: &Self::State, op: &KvOp<u64>) -> (Self::State, KvRet<u64>) {
            kv().step(s, op)
        }
    }
    let (key, _, _) = violation(check(&Whole, &h));
    assert_eq!(key, None);
    h.operations[6].outcome = Outcome::Ok(KvRet::Value(Some(20)));
    assert!(check(&kv(), &h).is_linearizable());
    assert!(check(&Whole, &h).is_linearizable());
}

fn shape(seed: u64, ops: usize, workers: usize) -> Shape {
    Shape {
        seed,
        ops,
        workers,
        p_unknown: 0.01,
        p_fail: 0.02,
    }
}

#[test]
fn long_simulated_histories_are_linearizable() {
    let started = Instant::now();
    for seed in 0..5 {
        let h = kv_history(shape(seed, 1_000, 8), 4);
        let (ok, fail, unknown) = h.counts();
        assert!(ok > 900 && fail > 0 && unknown > 0, "{ok} {fail} {unknown}");
        let checked = check_with(&kv(), &h, &Limits::default());
        assert_eq!(checked.result, Linearizability::Linearizable, "seed {seed}");
        assert_eq!(checked.partitions, 4);
        let h = register_history(shape(seed, 500, 5));
        assert_eq!(
            check(&REG, &h),
            Linearizability::Linearizable,
            "seed {seed}"
        );
    }
    // Long and sequential-ish: deep search, no recursion.
    let h = register_history(shape(9, 10_000, 2));
    let checked = check_with(&REG, &h, &Limits::default());
    assert_eq!(checked.result, Linearizability::Linearizable);
    assert!(checked.steps < 100_000, "{} steps", checked.steps);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn one_corrupted_read_in_a_long_history_is_found() {
    for seed in 0..5 {
        let mut h = kv_history(shape(seed, 1_000, 8), 4);
        let i = first_ok_read(&h, 500, |op, r| {
            matches!((op, r), (KvOp::Get(_), KvRet::Value(Some(_))))
        })
        .expect("a successful read in the second half");
        let KvOp::Get(k) = h.operations[i].op else {
            unreachable!()
        };
        h.operations[i].outcome = Outcome::Ok(KvRet::Value(Some(1_000_000)));
        let (key, ops, explanation) = violation(check(&kv(), &h));
        assert_eq!(key, Some(k), "seed {seed}");
        assert_eq!(ops.last(), Some(&i), "seed {seed}: {explanation}");

        let mut h = register_history(shape(seed, 500, 5));
        let i = first_ok_read(&h, 250, |op, _| *op == RegisterOp::Read).unwrap();
        h.operations[i].outcome = Outcome::Ok(RegisterRet::Value(1_000_000));
        let (_, ops, _) = violation(check(&REG, &h));
        assert_eq!(ops.last(), Some(&i), "seed {seed}");
    }
}

#[test]
fn budget_and_stop_give_unknown() {
    let h = kv_history(shape(3, 1_000, 8), 4);
    let limits = Limits {
        max_steps: Some(100),
        ..Limits::default()
    };
    let checked = check_with(&kv(), &h, &limits);
    assert!(
        matches!(&checked.result, Linearizability::Unknown { reason } if reason.contains("step budget")),
        "{:?}",
        checked.result
    );
    assert_eq!(checked.steps, 100);
    let stop = || true;
    let limits = Limits {
        stop: Some(&stop),
        ..Limits::default()
    };
    let checked = check_with(&kv(), &h, &limits);
    assert!(
        matches!(&checked.result, Linearizability::Unknown { reason } if reason.contains("stopped")),
        "{:?}",
        checked.result
    );
}

#[test]
fn without_memoisation_the_verdicts_are_the_same() {
    let limits = Limits {
        memoise: false,
        ..Limits::default()
    };
    for seed in 0..20 {
        let mut h = register_history(shape(seed, 60, 3));
        assert!(check_with(&REG, &h, &limits).result.is_linearizable());
        let i = first_ok_read(&h, 30, |op, _| *op == RegisterOp::Read).unwrap();
        h.operations[i].outcome = Outcome::Ok(RegisterRet::Value(1_000_000));
        assert_eq!(check_with(&REG, &h, &limits).result, check(&REG, &h));
    }
}

#[test]
fn malformed_history_is_unknown() {
    let mut h = Reg::new();
    write(&mut h, 0, 1, 10, 5);
    assert!(
        matches!(check(&REG, &h), Linearizability::Unknown { reason } if reason.contains("before its invocation"))
    );
    let mut h = Reg::new();
    h.op(
        0,
        RegisterOp::Read,
        0,
        None,
        Outcome::Ok(RegisterRet::Value(0)),
    );
    assert!(matches!(check(&REG, &h), Linearizability::Unknown { .. }));
}

#[test]
fn history_text_and_json() {
    let mut h = Kv::new();
    put(&mut h, 0, 1, 5, 0, 2);
    h.op(3, KvOp::Get(1), 1_500_000, None, Outcome::Unknown);
    h.op(1, KvOp::Delete(1), 3 * MS, Some(4 * MS), Outcome::Fail);
    let text = h.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "#0    w0       0.000..    2.000 ms  Put(1, 5) -> ok Done",
            "#1    w3       1.500..        ? ms  Get(1) -> unknown",
            "#2    w1       3.000..    4.000 ms  Delete(1) -> fail",
        ]
    );
    assert_eq!(h.workers(), 3);
    assert_eq!(h.counts(), (1, 1, 1));
    let json = serde_json::to_string(&h).unwrap();
    assert_eq!(serde_json::from_str::<Kv>(&json).unwrap(), h);
}

#[test]
fn recorder_from_several_threads() {
    // A correct store: a map behind a mutex, each op applied while the lock is held.
    let store = Mutex::new(BTreeMap::new());
    let recorder = Recorder::new();
    std::thread::scope(|s| {
        for worker in 0..4 {
            let (store, recorder) = (&store, &recorder);
            s.spawn(move || {
                for i in 0..200u64 {
                    let key = (i + worker as u64) % 3;
                    let op = match i % 4 {
                        0 => KvOp::Put(key, 1_000 * worker as u64 + i),
                        1 | 2 => KvOp::Get(key),
                        _ => KvOp::Delete(key),
                    };
                    let ticket = recorder.invoke(worker, op.clone());
                    let ret = {
                        let mut map = store.lock().unwrap();
                        let (next, ret) = kv().step(&map, &op);
                        *map = next;
                        ret
                    };
                    if i == 199 {
                        // The last op of each worker is lost: never completed.
                        drop(ticket);
                    } else if i % 50 == 7 {
                        recorder.complete(ticket, Outcome::Unknown);
                    } else {
                        recorder.complete(ticket, Outcome::Ok(ret));
                    }
                }
            });
        }
    });
    let h: Kv = recorder.finish();
    assert_eq!(h.len(), 800);
    assert_eq!(h.workers(), 4);
    assert_eq!(h.counts(), (800 - 4 - 16, 0, 4 + 16));
    // Indices follow invocation order; each worker's ops follow one another.
    assert!(h.operations.windows(2).all(|w| w[0].invoke <= w[1].invoke));
    for worker in 0..4 {
        let mine: Vec<_> = h.iter().filter(|o| o.worker == worker).collect();
        for w in mine.windows(2) {
            assert!(w[0].complete.is_none_or(|c| c <= w[1].invoke));
        }
    }
    assert_eq!(check(&kv(), &h), Linearizability::Linearizable, "{h}");

    // A store that sometimes answers from a stale snapshot is caught.
    let recorder = Recorder::with_clock({
        let t = std::sync::atomic::AtomicU64::new(0);
        move || t.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    });
    let t = recorder.invoke(0, KvOp::Put(1, 1));
    recorder.complete(t, Outcome::Ok(KvRet::Done));
    let t = recorder.invoke(1, KvOp::Get(1));
    recorder.complete(t, Outcome::Ok(KvRet::Value(None)));
    let h = recorder.finish();
    assert_eq!(h.operations[1].invoke, 2);
    assert!(check(&kv(), &h).is_violation());
}

#[test]
#[ignore = "prints an explanation to read"]
fn show_explanation() {
    let mut h = kv_history(shape(1, 40, 3), 2);
    let i = first_ok_read(&h, 20, |op, r| {
        matches!((op, r), (KvOp::Get(_), KvRet::Value(_)))
    })
    .unwrap();
    h.operations[i].outcome = Outcome::Ok(KvRet::Value(Some(1_000_000)));
    println!("{h}\n{}", check(&kv(), &h));
}
