//! The transactional checker's time against history length and concurrency, on list-append
//! histories simulated from a correct (strict serializable) store: each worker runs one
//! transaction at a time, each takes effect atomically at a random moment between its
//! invocation and completion; 1% end unknown (applied or not), 2% abort. Keys and values from
//! `TxnGen` (3 hot keys, 16 writes per key). A last row plants a stale read in the largest
//! history (it must be caught).
//!
//! Baseline in the same run, on the same histories: the naive all-pairs graph construction —
//! every ordered pair of committed transactions compared for ww / wr / rw (against the same
//! version orders) and real-time order, into an n×n bit matrix, then Kahn's topological sort
//! for a cycle. It runs up to `BASELINE_MAX` transactions (it is quadratic).
//!
//! Run: `cargo bench -p fleetcheck-engine --bench txn`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use fleetcheck_engine::history::Outcome;
use fleetcheck_engine::txn::{
    analyse, Analysis, Isolation, Mop, Txn, TxnGen, TxnGenConfig, TxnHistory,
};
use fleetcheck_engine::Gen;

/// The baseline runs on histories up to this length.
const BASELINE_MAX: usize = 10_000;

/// A strict-serializable list-append history of `n` transactions over `workers` workers.
fn history(n: usize, workers: usize, seed: u64) -> TxnHistory {
    let mut g = Gen::new(seed, 0);
    // (effect time, worker, invoke, complete) per transaction, worker by worker.
    let mut slots: Vec<(u64, usize, u64, u64)> = Vec::with_capacity(n);
    let mut clock = vec![0u64; workers];
    for i in 0..n {
        let w = i % workers;
        let invoke = clock[w] + g.range(0..=200u64);
        let effect = invoke + g.range(10..=1_000u64);
        let complete = effect + g.range(10..=1_000u64);
        clock[w] = complete;
        slots.push((effect, w, invoke, complete));
    }
    slots.sort_unstable();
    let mut tg = TxnGen::new(TxnGenConfig::default());
    let mut lists: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut h = TxnHistory::new();
    for (_, worker, invoke, complete) in slots {
        let planned = tg.next_txn(&mut g);
        let fate = g.range(0..=99u32);
        let applies = match fate {
            0 | 1 => false,
            2 => g.bool(0.5),
            _ => true,
        };
        let mut done = Vec::with_capacity(planned.mops().len());
        let mut staged: Vec<(u64, u64)> = Vec::new();
        for m in planned.mops() {
            match m {
                Mop::Append { key, value } => {
                    staged.push((*key, *value));
                    done.push(m.clone());
                }
                Mop::ReadList { key, .. } => {
                    let mut l = lists.get(key).cloned().unwrap_or_default();
                    l.extend(staged.iter().filter(|(k, _)| k == key).map(|(_, v)| *v));
                    done.push(Mop::read(*key, &l));
                }
                other => done.push(other.clone()),
            }
        }
        if applies {
            for (k, v) in staged {
                lists.entry(k).or_default().push(v);
            }
        }
        let (complete, outcome) = match fate {
            0 | 1 => (Some(complete), Outcome::Fail),
            2 => (None, Outcome::Unknown),
            _ => (Some(complete), Outcome::Ok(Txn::new(done))),
        };
        h.op(worker, planned, invoke, complete, outcome);
    }
    h
}

/// Makes one committed read, half-way in, miss its last element, written by a transaction that
/// had completed before the reader was invoked (a stale read: G-single-realtime at least).
fn plant_stale_read(h: &mut TxnHistory) {
    let mut writer: HashMap<(u64, u64), usize> = HashMap::new();
    for (i, t) in h.operations.iter().enumerate() {
        for m in t.op.mops() {
            if let Some(v) = m.written() {
                writer.insert((m.key(), v), i);
            }
        }
    }
    for i in h.len() / 2..h.len() {
        let Outcome::Ok(done) = &h.operations[i].outcome else {
            continue;
        };
        let touches = |k: u64| done.mops().iter().filter(|m| m.key() == k).count();
        let pick = done.mops().iter().position(|m| match m {
            Mop::ReadList { key, list } if list.len() >= 2 && touches(*key) == 1 => {
                let w = &h.operations[writer[&(*key, list[list.len() - 1])]];
                let last_write = w.op.mops().iter().rev().find(|x| x.key() == *key);
                writer[&(*key, list[list.len() - 2])] != writer[&(*key, list[list.len() - 1])]
                    && w.outcome.ok().is_some()
                    && w.complete.is_some_and(|c| c < h.operations[i].invoke)
                    && last_write.and_then(Mop::written) == Some(list[list.len() - 1])
            }
            _ => false,
        });
        if let Some(j) = pick {
            if let Outcome::Ok(done) = &mut h.operations[i].outcome {
                if let Mop::ReadList { list, .. } = &mut done.0[j] {
                    list.pop();
                }
            }
            return;
        }
    }
    panic!("no read to make stale");
}

/// The naive all-pairs graph: whether it has a cycle, and the number of edges.
fn baseline(h: &TxnHistory) -> (bool, u64) {
    let committed: Vec<usize> = (0..h.len())
        .filter(|&i| h.operations[i].outcome.ok().is_some())
        .collect();
    let n = committed.len();
    // Version orders: the longest read of each key.
    let mut order: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &i in &committed {
        for m in h.operations[i].outcome.ok().expect("ok").mops() {
            if let Mop::ReadList { key, list } = m {
                let e = order.entry(*key).or_default();
                if list.len() > e.len() {
                    *e = list.clone();
                }
            }
        }
    }
    let pos: HashMap<(u64, u64), usize> = order
        .iter()
        .flat_map(|(k, l)| l.iter().enumerate().map(move |(p, v)| ((*k, *v), p)))
        .collect();
    // Per transaction: writes (key, position or usize::MAX if unread), reads (key, length).
    type Summary = (Vec<(u64, usize)>, Vec<(u64, usize)>);
    let summaries: Vec<Summary> = committed
        .iter()
        .map(|&i| {
            let mops = h.operations[i].outcome.ok().expect("ok").mops();
            let writes = mops
                .iter()
                .filter_map(|m| {
                    m.written()
                        .map(|v| (m.key(), *pos.get(&(m.key(), v)).unwrap_or(&usize::MAX)))
                })
                .collect();
            let reads = mops
                .iter()
                .filter_map(|m| match m {
                    Mop::ReadList { key, list } => Some((*key, list.len())),
                    _ => None,
                })
                .collect();
            (writes, reads)
        })
        .collect();
    let words = n.div_ceil(64);
    let mut matrix = vec![0u64; n * words];
    let mut edges = 0u64;
    for a in 0..n {
        let ta = &h.operations[committed[a]];
        for b in 0..n {
            if a == b {
                continue;
            }
            let tb = &h.operations[committed[b]];
            let rt = ta.complete.expect("ok completes") < tb.invoke;
            let (wa, ra) = &summaries[a];
            let (wb, rb) = &summaries[b];
            let ww = wa.iter().any(|&(k, p)| {
                p != usize::MAX && wb.iter().any(|&(k2, p2)| k2 == k && p2 == p + 1)
            });
            let wr = wa.iter().any(|&(k, p)| {
                p != usize::MAX && rb.iter().any(|&(k2, len)| k2 == k && len == p + 1)
            });
            let rw = ra.iter().any(|&(k, len)| {
                wb.iter()
                    .any(|&(k2, p)| k2 == k && (p == len || p == usize::MAX))
            });
            if rt || ww || wr || rw {
                matrix[a * words + b / 64] |= 1 << (b % 64);
                edges += 1;
            }
        }
    }
    // Kahn: a cycle exists iff some node is never freed.
    let mut indegree = vec![0u32; n];
    for a in 0..n {
        for b in 0..n {
            if matrix[a * words + b / 64] >> (b % 64) & 1 == 1 {
                indegree[b] += 1;
            }
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&b| indegree[b] == 0).collect();
    let mut freed = 0;
    while let Some(a) = ready.pop() {
        freed += 1;
        for b in 0..n {
            if matrix[a * words + b / 64] >> (b % 64) & 1 == 1 {
                indegree[b] -= 1;
                if indegree[b] == 0 {
                    ready.push(b);
                }
            }
        }
    }
    (freed < n, edges)
}

/// Runs the checker, repeated until 200 ms have passed (at least once); the mean time.
fn time(h: &TxnHistory) -> (Analysis, Duration) {
    let started = Instant::now();
    let mut runs = 0;
    loop {
        let a = analyse(h).expect("a valid history");
        runs += 1;
        if started.elapsed() >= Duration::from_millis(200) {
            return (a, started.elapsed() / runs);
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn row(name: &str, h: &TxnHistory, workers: usize, expect_valid: bool) {
    let (a, t) = time(h);
    assert_eq!(
        a.satisfies(Isolation::StrictSerializable),
        expect_valid,
        "{name}: {a}"
    );
    let base = if h.len() <= BASELINE_MAX {
        let started = Instant::now();
        let (cycle, edges) = baseline(h);
        let bt = started.elapsed();
        if expect_valid {
            assert!(!cycle, "baseline agrees: no cycle");
        }
        format!("{} ms / {edges} edges", ms(bt))
    } else {
        "-".to_string()
    };
    let kinds: Vec<&str> = a.kinds().iter().map(|k| k.name()).collect();
    println!(
        "{name:<8} {n:>7} {workers:>3} {v:>20} {deps:>8} {rt:>8} {t:>9} {per:>7.2} | {base:>26}",
        n = h.len(),
        v = if kinds.is_empty() {
            "strict-ser".to_string()
        } else {
            kinds.join(",")
        },
        deps = a.dependency_edges,
        rt = a.realtime_edges,
        t = ms(t),
        per = t.as_secs_f64() * 1e6 / h.len() as f64,
    );
}

fn main() {
    let started = Instant::now();
    println!(
        "transactional checker (list-append): time per history (mean of repeats over >= 200 ms)\n\
         1% unknown, 2% aborted; baseline: naive all-pairs graph + topological sort, up to {BASELINE_MAX} txns\n"
    );
    println!(
        "{:<8} {:>7} {:>3} {:>20} {:>8} {:>8} {:>9} {:>7} | {:>26}",
        "history",
        "txns",
        "wrk",
        "verdict",
        "dep edg",
        "rt edg",
        "time ms",
        "us/txn",
        "all-pairs: ms / edges"
    );
    println!("{}", "-".repeat(108));
    for n in [1_000, 10_000, 100_000] {
        for workers in [2, 10, 50] {
            let h = history(n, workers, 7 + n as u64 + workers as u64);
            row("append", &h, workers, true);
        }
    }
    let mut h = history(100_000, 10, 99);
    plant_stale_read(&mut h);
    row("stale", &h, 10, false);
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
}
