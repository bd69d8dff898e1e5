//! Generating transactions that conflict, and shrinking sequences of them.
//!
//! [`TxnGen`] draws transactions (through the engine's [`Gen`]) over a small set of *active* hot
//! keys; after a key has taken [`TxnGenConfig::max_writes_per_key`] writes it is retired and a
//! fresh key takes its place, as Elle's generators do: reads stay short, version orders stay
//! recoverable, and conflicts stay likely. Values are unique per key (1, 2, 3, … per key).
//!
//! The shrink helpers ([`drop_transactions`], [`drop_micro_ops`], [`merge_workers`],
//! [`rename_keys`], [`renumber_workers`], and [`shrink_planned`] which offers them all) rewrite a sequence of
//! [`PlannedTxn`]s and keep values unique per key; a scenario's `Model::shrink_command` /
//! `Model::shrink_commands` can return their candidates.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::types::{Key, Mop, Txn, Value};
use crate::gen::Gen;

/// Which data type transactions use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Workload {
    /// `append(key, value)` and whole-list reads.
    ListAppend,
    /// `write(key, value)` and register reads.
    RwRegister,
}

/// How [`TxnGen`] draws transactions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TxnGenConfig {
    /// The data type.
    pub workload: Workload,
    /// How many keys are in use at any time (the hot keys).
    pub active_keys: usize,
    /// Writes a key takes before a fresh key replaces it.
    pub max_writes_per_key: u64,
    /// The fewest micro-operations in a transaction (at least 1).
    pub min_len: usize,
    /// The most micro-operations in a transaction.
    pub max_len: usize,
    /// The chance that a micro-operation is a read.
    pub read_ratio: f64,
}

impl Default for TxnGenConfig {
    /// List-append over 3 hot keys, 16 writes per key, 1 to 4 micro-operations, half reads.
    fn default() -> Self {
        Self {
            workload: Workload::ListAppend,
            active_keys: 3,
            max_writes_per_key: 16,
            min_len: 1,
            max_len: 4,
            read_ratio: 0.5,
        }
    }
}

/// The generator's state across transactions: the active keys, the next fresh key and the
/// writes taken per key (so values stay unique). Serialisable, so it can live in a model state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TxnGen {
    /// How transactions are drawn.
    pub config: TxnGenConfig,
    active: Vec<Key>,
    next_key: Key,
    written: BTreeMap<Key, Value>,
}

impl TxnGen {
    /// A generator whose first active keys are `0..active_keys`.
    pub fn new(config: TxnGenConfig) -> Self {
        let n = config.active_keys.max(1) as Key;
        Self {
            config,
            active: (0..n).collect(),
            next_key: n,
            written: BTreeMap::new(),
        }
    }

    /// One planned transaction (reads empty).
    pub fn next_txn(&mut self, g: &mut Gen) -> Txn {
        let min = self.config.min_len.max(1);
        let len = g.range(min..=self.config.max_len.max(min));
        let mut mops = Vec::with_capacity(len);
        for _ in 0..len {
            let slot = g.range(0..=self.active.len() - 1);
            let key = self.active[slot];
            if g.bool(self.config.read_ratio) {
                mops.push(match self.config.workload {
                    Workload::ListAppend => Mop::read(key, &[]),
                    Workload::RwRegister => Mop::get(key, None),
                });
                continue;
            }
            let count = self.written.entry(key).or_insert(0);
            *count += 1;
            let value = *count;
            mops.push(match self.config.workload {
                Workload::ListAppend => Mop::append(key, value),
                Workload::RwRegister => Mop::write(key, value),
            });
            if value >= self.config.max_writes_per_key {
                self.active[slot] = self.next_key;
                self.next_key += 1;
            }
        }
        Txn(mops)
    }

    /// `n` planned transactions.
    pub fn take(&mut self, g: &mut Gen, n: usize) -> Vec<Txn> {
        (0..n).map(|_| self.next_txn(g)).collect()
    }
}

/// A transaction as a scenario plans it: which worker runs it, and what it asks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlannedTxn {
    /// The worker (client) that runs it.
    pub worker: usize,
    /// What it asks.
    pub txn: Txn,
}

/// Each variant of `seq` with one transaction left out, the last first (later transactions
/// depend on earlier ones less often).
pub fn drop_transactions(seq: &[PlannedTxn]) -> Vec<Vec<PlannedTxn>> {
    (0..seq.len())
        .rev()
        .map(|i| {
            let mut v = seq.to_vec();
            v.remove(i);
            v
        })
        .collect()
}

/// Each variant of `txn` with one micro-operation left out (none for a single one: drop the
/// transaction instead).
pub fn drop_mops(txn: &Txn) -> Vec<Txn> {
    if txn.0.len() <= 1 {
        return Vec::new();
    }
    (0..txn.0.len())
        .map(|i| {
            let mut m = txn.0.clone();
            m.remove(i);
            Txn(m)
        })
        .collect()
}

/// Each variant of `seq` with one micro-operation left out of one transaction.
pub fn drop_micro_ops(seq: &[PlannedTxn]) -> Vec<Vec<PlannedTxn>> {
    let mut out = Vec::new();
    for (i, p) in seq.iter().enumerate() {
        for smaller in drop_mops(&p.txn) {
            let mut v = seq.to_vec();
            v[i].txn = smaller;
            out.push(v);
        }
    }
    out
}

/// Each variant of `seq` with the transactions of one worker given to a lower-numbered one
/// (fewer workers, less concurrency), the two lowest first.
pub fn merge_workers(seq: &[PlannedTxn]) -> Vec<Vec<PlannedTxn>> {
    let workers: BTreeSet<usize> = seq.iter().map(|p| p.worker).collect();
    let workers: Vec<usize> = workers.into_iter().collect();
    let mut out = Vec::new();
    for (j, &from) in workers.iter().enumerate().skip(1) {
        for &into in &workers[..j] {
            out.push(
                seq.iter()
                    .map(|p| PlannedTxn {
                        worker: if p.worker == from { into } else { p.worker },
                        txn: p.txn.clone(),
                    })
                    .collect(),
            );
        }
    }
    out
}

/// `seq` with its workers renumbered `0, 1, …` in order of first appearance, if that changes
/// anything (a tidier counterexample; the same concurrency).
pub fn renumber_workers(seq: &[PlannedTxn]) -> Vec<Vec<PlannedTxn>> {
    let mut map: BTreeMap<usize, usize> = BTreeMap::new();
    for p in seq {
        let next = map.len();
        map.entry(p.worker).or_insert(next);
    }
    if map.iter().all(|(a, b)| a == b) {
        return Vec::new();
    }
    vec![seq
        .iter()
        .map(|p| PlannedTxn {
            worker: map[&p.worker],
            txn: p.txn.clone(),
        })
        .collect()]
}

/// Each variant of `seq` with one key renamed to a smaller key already in use (fewer keys), its
/// written values shifted past the target key's so values stay unique per key.
pub fn rename_keys(seq: &[PlannedTxn]) -> Vec<Vec<PlannedTxn>> {
    let mut max_value: BTreeMap<Key, Value> = BTreeMap::new();
    for p in seq {
        for m in &p.txn.0 {
            let e = max_value.entry(m.key()).or_insert(0);
            *e = (*e).max(m.written().unwrap_or(0));
        }
    }
    let keys: Vec<Key> = max_value.keys().copied().collect();
    let mut out = Vec::new();
    for (j, &from) in keys.iter().enumerate().skip(1) {
        for &into in &keys[..j] {
            let shift = max_value[&into];
            let rename = |m: &Mop| -> Mop {
                if m.key() != from {
                    return m.clone();
                }
                match m {
                    Mop::Append { value, .. } => Mop::append(into, value + shift),
                    Mop::Write { value, .. } => Mop::write(into, value + shift),
                    Mop::ReadList { .. } => Mop::read(into, &[]),
                    Mop::ReadRegister { .. } => Mop::get(into, None),
                }
            };
            out.push(
                seq.iter()
                    .map(|p| PlannedTxn {
                        worker: p.worker,
                        txn: Txn(p.txn.0.iter().map(rename).collect()),
                    })
                    .collect(),
            );
        }
    }
    out
}

/// Every shrink candidate of `seq`, biggest simplification first: drop a transaction, merge two
/// workers, rename a key to a smaller one, drop a micro-operation, renumber the workers.
pub fn shrink_planned(seq: &[PlannedTxn]) -> Vec<Vec<PlannedTxn>> {
    let mut out = drop_transactions(seq);
    out.extend(merge_workers(seq));
    out.extend(rename_keys(seq));
    out.extend(drop_micro_ops(seq));
    out.extend(renumber_workers(seq));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values_unique(txns: &[Txn]) -> bool {
        let mut seen = BTreeSet::new();
        txns.iter()
            .flat_map(|t| t.0.iter())
            .filter_map(|m| m.written().map(|v| (m.key(), v)))
            .all(|kv| seen.insert(kv))
    }

    #[test]
    fn keys_rotate_after_bounded_writes_and_values_are_unique() {
        for workload in [Workload::ListAppend, Workload::RwRegister] {
            let mut tg = TxnGen::new(TxnGenConfig {
                workload,
                max_writes_per_key: 4,
                ..TxnGenConfig::default()
            });
            let txns = tg.take(&mut Gen::new(3, 10), 200);
            assert!(values_unique(&txns));
            let mut writes: BTreeMap<Key, u64> = BTreeMap::new();
            for m in txns.iter().flat_map(|t| t.0.iter()) {
                assert_eq!(m.is_list(), workload == Workload::ListAppend);
                if m.written().is_some() {
                    *writes.entry(m.key()).or_default() += 1;
                }
            }
            assert!(writes.values().all(|&n| n <= 4));
            assert!(writes.len() > 10, "fresh keys replace retired ones");
        }
    }

    #[test]
    fn same_seed_same_transactions() {
        let a = TxnGen::new(TxnGenConfig::default()).take(&mut Gen::new(9, 10), 50);
        let b = TxnGen::new(TxnGenConfig::default()).take(&mut Gen::new(9, 10), 50);
        assert_eq!(a, b);
    }

    #[test]
    fn shrink_candidates_are_smaller_and_keep_values_unique() {
        let seq = vec![
            PlannedTxn {
                worker: 0,
                txn: Txn(vec![Mop::append(1, 1), Mop::read(2, &[])]),
            },
            PlannedTxn {
                worker: 1,
                txn: Txn(vec![Mop::append(2, 1)]),
            },
            PlannedTxn {
                worker: 2,
                txn: Txn(vec![Mop::append(1, 2), Mop::append(2, 2)]),
            },
        ];
        assert_eq!(drop_transactions(&seq).len(), 3);
        assert_eq!(drop_micro_ops(&seq).len(), 4);
        let merged = merge_workers(&seq);
        assert_eq!(merged.len(), 3);
        assert!(merged[0].iter().all(|p| p.worker != 1));
        let renamed = rename_keys(&seq);
        assert_eq!(renamed.len(), 1);
        let txns: Vec<Txn> = renamed[0].iter().map(|p| p.txn.clone()).collect();
        assert!(txns.iter().all(|t| t.keys() == vec![1]));
        assert!(values_unique(&txns));
        assert_eq!(shrink_planned(&seq).len(), 3 + 4 + 3 + 1);
        assert!(renumber_workers(&seq).is_empty());
        let renumbered = renumber_workers(&merged[0]);
        let workers: Vec<usize> = renumbered[0].iter().map(|p| p.worker).collect();
        assert_eq!(workers, [0, 0, 1]);
    }
}
