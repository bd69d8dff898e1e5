//! The checker: from a [`TxnHistory`] to an [`Analysis`] (inference of version orders, the
//! non-cycle anomalies, the dependency graph, cycles and their classes) and [`check`] against a
//! claimed [`Isolation`].

use std::collections::{BTreeMap, HashMap, HashSet};

use super::graph::{DepGraph, DepWhy};
use super::types::{effective, Key, Mop, TxnHistory, Value};
use super::verdict::{show, Analysis, Anomaly, AnomalyKind, Isolation, Violation};
use crate::history::Outcome;

/// Checks `history` against the model a scenario claims: `Ok` with the whole analysis if the
/// history satisfies `claimed`, else the anomalies it forbids (or why the history is invalid).
pub fn check(history: &TxnHistory, claimed: Isolation) -> Result<Analysis, Violation> {
    let analysis = analyse(history).map_err(Violation::Invalid)?;
    let forbidden: Vec<Anomaly> = analysis
        .anomalies
        .iter()
        .filter(|a| claimed.forbids(a.kind))
        .cloned()
        .collect();
    if forbidden.is_empty() {
        Ok(analysis)
    } else {
        Err(Violation::Anomalies {
            claimed,
            anomalies: forbidden,
            strongest: analysis.strongest,
        })
    }
}

/// Where a written value came from.
#[derive(Clone, Copy, Debug)]
struct Writer {
    txn: u32,
    /// Whether it is the transaction's last write to that key.
    last: bool,
}

/// A read that saw the state before its transaction touched the key (or after its own appends,
/// for lists), kept for the edges.
#[derive(Clone, Debug)]
struct ExternalRead {
    txn: u32,
    key: Key,
    /// The list read (list-append) or `[v]` / `[]` for a register read of `v` / nil.
    seen: Vec<Value>,
    list: bool,
}

/// The analysis of a history: every anomaly and the strongest models it satisfies. `Err` says in
/// one sentence why the history is not a valid recording (see [`Violation::Invalid`]).
pub fn analyse(history: &TxnHistory) -> Result<Analysis, String> {
    history.validate()?;
    let n = history.len();
    if n >= u32::MAX as usize / 2 {
        return Err(format!(
            "{n} transactions are more than the checker indexes"
        ));
    }
    let mut key_is_list: HashMap<Key, bool> = HashMap::new();
    let mut writers: HashMap<(Key, Value), Writer> = HashMap::new();
    let mut writers_of: BTreeMap<Key, Vec<(u32, Value)>> = BTreeMap::new();
    for (i, t) in history.iter().enumerate() {
        if let Outcome::Ok(done) = &t.outcome {
            let same = done.0.len() == t.op.0.len()
                && done
                    .0
                    .iter()
                    .zip(&t.op.0)
                    .all(|(a, b)| a.planned() == b.planned());
            if !same {
                return Err(format!(
                    "T{i} completed as {done} but was planned as {}: not the same micro-operations",
                    t.op
                ));
            }
        }
        let mops = &effective(t).0;
        for (j, m) in mops.iter().enumerate() {
            let k = m.key();
            if *key_is_list.entry(k).or_insert(m.is_list()) != m.is_list() {
                return Err(format!(
                    "key {k} is used both as a list and as a register (T{i})"
                ));
            }
            if let Some(v) = m.written() {
                let last = !mops[j + 1..]
                    .iter()
                    .any(|later| later.key() == k && later.written().is_some());
                let w = Writer {
                    txn: i as u32,
                    last,
                };
                if writers.insert((k, v), w).is_some() {
                    return Err(format!(
                        "value {v} is written to key {k} twice (again by T{i})"
                    ));
                }
                writers_of.entry(k).or_default().push((i as u32, v));
            }
        }
    }

    let mut found = Found::new(history);
    let mut external: Vec<ExternalRead> = Vec::new();
    // Lost-update candidates: (key, version read before writing) -> transactions.
    let mut lost: BTreeMap<(Key, Option<Value>), Vec<u32>> = BTreeMap::new();
    for (i, t) in history.iter().enumerate() {
        let Outcome::Ok(done) = &t.outcome else {
            continue;
        };
        internal_reads(i as u32, &done.0, &mut found, &mut external, &mut lost);
    }
    for ((key, version), txns) in &lost {
        if txns.len() >= 2 {
            let names: Vec<String> = txns.iter().map(|t| format!("T{t}")).collect();
            found.push(
                AnomalyKind::LostUpdate,
                txns.iter().map(|&t| t as usize).collect(),
                format!(
                    "{} all read key {key} at version {} and all wrote key {key}, so each overwrote a version the others never saw",
                    names.join(", "),
                    show(*version)
                ),
            );
        }
    }

    // Which transactions are in the graph: committed, or unknown but observed by a read.
    let mut in_graph: Vec<bool> = history
        .iter()
        .map(|t| matches!(t.outcome, Outcome::Ok(_)))
        .collect();
    let failed = |t: u32| history.operations[t as usize].outcome.is_fail();
    let mut reported: HashSet<(u32, Key, Value)> = HashSet::new();
    for r in &external {
        for &v in &r.seen {
            match writers.get(&(r.key, v)) {
                None => {
                    if reported.insert((r.txn, r.key, v)) {
                        found.push(
                            AnomalyKind::GarbageRead,
                            vec![r.txn as usize],
                            format!(
                                "T{} read {v} at key {} but no transaction wrote {v} there",
                                r.txn, r.key
                            ),
                        );
                    }
                }
                Some(w) if failed(w.txn) => {
                    if reported.insert((r.txn, r.key, v)) {
                        found.push(
                            AnomalyKind::G1a,
                            vec![w.txn as usize, r.txn as usize],
                            format!(
                                "T{} read {v} at key {}, written by T{}, which aborted",
                                r.txn, r.key, w.txn
                            ),
                        );
                    }
                }
                Some(w) => in_graph[w.txn as usize] = true,
            }
        }
        if let Some(&v) = r.seen.last() {
            if let Some(w) = writers.get(&(r.key, v)) {
                if !w.last && w.txn != r.txn && !failed(w.txn) {
                    found.push(
                        AnomalyKind::G1b,
                        vec![w.txn as usize, r.txn as usize],
                        format!(
                            "T{} read key {} at {v}, an intermediate version: T{} wrote {v} and then wrote key {} again",
                            r.txn, r.key, w.txn, r.key
                        ),
                    );
                }
            }
        }
    }

    // Version orders of the lists: the longest read; every read must be a prefix of it.
    let mut longest: HashMap<Key, usize> = HashMap::new();
    for (idx, r) in external.iter().enumerate() {
        if !r.list {
            continue;
        }
        let e = longest.entry(r.key).or_insert(idx);
        if r.seen.len() > external[*e].seen.len() {
            *e = idx;
        }
    }
    let mut incompatible_keys: HashSet<Key> = HashSet::new();
    let mut compatible: Vec<bool> = vec![true; external.len()];
    for (idx, r) in external.iter().enumerate() {
        if !r.list {
            continue;
        }
        let l = &external[longest[&r.key]];
        if !l.seen.starts_with(&r.seen) {
            compatible[idx] = false;
            if incompatible_keys.insert(r.key) {
                found.push(
                    AnomalyKind::IncompatibleOrder,
                    vec![l.txn as usize, r.txn as usize],
                    format!(
                        "T{} read key {} as {} and T{} read it as {}: neither is a prefix of the other",
                        l.txn,
                        r.key,
                        list_text(&l.seen),
                        r.txn,
                        list_text(&r.seen)
                    ),
                );
            }
        }
    }

    // Committed appends that no read saw: no place in the version order, but after all of it.
    let placed: HashSet<(Key, Value)> = longest
        .iter()
        .flat_map(|(k, &idx)| external[idx].seen.iter().map(move |v| (*k, *v)))
        .collect();
    let mut unplaced: HashMap<Key, Vec<(u32, Value)>> = HashMap::new();
    for (k, ws) in &writers_of {
        if !key_is_list[k] || !longest.contains_key(k) {
            continue;
        }
        for &(w, v) in ws {
            if in_graph[w as usize] && !placed.contains(&(*k, v)) {
                unplaced.entry(*k).or_default().push((w, v));
            }
        }
    }
    let mut graph = DepGraph::new(n);
    let graph_writer = |k: Key, v: Value, in_graph: &[bool]| -> Option<u32> {
        writers
            .get(&(k, v))
            .map(|w| w.txn)
            .filter(|&t| in_graph[t as usize])
    };
    // ww: consecutive elements of each list's version order.
    let mut keys: Vec<&Key> = longest.keys().collect();
    keys.sort_unstable();
    for key in keys {
        let order = &external[longest[key]].seen;
        for pair in order.windows(2) {
            let (a, b) = (
                graph_writer(*key, pair[0], &in_graph),
                graph_writer(*key, pair[1], &in_graph),
            );
            if let (Some(a), Some(b)) = (a, b) {
                if a != b {
                    graph.ww(a, b, DepWhy::new(*key, Some(pair[0]), Some(pair[1]), true));
                }
            }
        }
    }
    for (idx, r) in external.iter().enumerate() {
        // wr: the writer of the latest version the read saw that is not its own.
        let theirs = r
            .seen
            .iter()
            .rev()
            .find(|&&v| writers.get(&(r.key, v)).is_none_or(|w| w.txn != r.txn));
        if let Some(&v) = theirs {
            if let Some(w) = graph_writer(r.key, v, &in_graph) {
                graph.wr(w, r.txn, DepWhy::new(r.key, Some(v), None, r.list));
            }
        }
        // rw: the writer(s) of the versions after the one read.
        if r.list {
            if !compatible[idx] {
                continue;
            }
            let order = &external[longest[&r.key]].seen;
            if let Some(&next) = order.get(r.seen.len()) {
                if let Some(w) = graph_writer(r.key, next, &in_graph) {
                    if w != r.txn {
                        let why = DepWhy::new(r.key, r.seen.last().copied(), Some(next), true);
                        graph.rw(r.txn, w, why);
                    }
                }
            }
            // Lists only grow: a committed append no read saw came after every version read.
            for &(w, v) in unplaced.get(&r.key).map_or(&[][..], Vec::as_slice) {
                if w != r.txn {
                    graph.rw(
                        r.txn,
                        w,
                        DepWhy::new(r.key, r.seen.last().copied(), Some(v), true),
                    );
                }
            }
        } else if r.seen.is_empty() {
            // A register read as nil read its initial version, older than every write.
            for &(w, v) in writers_of.get(&r.key).map_or(&[][..], Vec::as_slice) {
                if w != r.txn && in_graph[w as usize] {
                    graph.rw(r.txn, w, DepWhy::new(r.key, None, Some(v), false));
                }
            }
        }
    }
    graph.realtime(history, &in_graph);
    let committed = in_graph.iter().filter(|&&b| b).count();
    let (dependency_edges, realtime_edges) = graph.edge_counts();
    let cycles = graph.cycles(history);
    let mut anomalies = found.anomalies;
    anomalies.extend(cycles);
    let strongest = strongest(&anomalies);
    Ok(Analysis {
        anomalies,
        strongest,
        committed,
        dependency_edges,
        realtime_edges,
    })
}

/// The maximal models of [`Isolation::ALL`] that no anomaly rules out.
fn strongest(anomalies: &[Anomaly]) -> Vec<Isolation> {
    let satisfied: Vec<Isolation> = Isolation::ALL
        .into_iter()
        .filter(|m| anomalies.iter().all(|a| !m.forbids(a.kind)))
        .collect();
    satisfied
        .iter()
        .copied()
        .filter(|m| !satisfied.iter().any(|o| o != m && o.implies(*m)))
        .collect()
}

fn list_text(l: &[Value]) -> String {
    let items: Vec<String> = l.iter().map(Value::to_string).collect();
    format!("[{}]", items.join(" "))
}

/// Non-cycle anomalies found so far, with the history to list their transactions.
struct Found<'h> {
    history: &'h TxnHistory,
    anomalies: Vec<Anomaly>,
}

impl<'h> Found<'h> {
    fn new(history: &'h TxnHistory) -> Self {
        Self {
            history,
            anomalies: Vec::new(),
        }
    }

    fn push(&mut self, kind: AnomalyKind, txns: Vec<usize>, explanation: String) {
        let listing = txns
            .iter()
            .map(|&t| format!("T{t} {}", self.history.operations[t]))
            .collect();
        self.anomalies.push(Anomaly {
            kind,
            txns,
            cycle: Vec::new(),
            listing,
            explanation,
        });
    }
}

/// What one transaction knows of a key it touched.
struct Local {
    key: Key,
    /// The key's state as the transaction last saw it (after a read and its own writes since).
    known: Option<Vec<Value>>,
    /// Its own writes to the key since its last read (all of them if it has not read it).
    own: Vec<Value>,
    /// Whether it has written the key.
    wrote: bool,
    /// The version its first read saw, if it read before writing (a lost-update candidate).
    read_before_write: Option<Option<Value>>,
}

/// Internal consistency of one committed transaction, and the reads that depend on others.
fn internal_reads(
    txn: u32,
    mops: &[Mop],
    found: &mut Found<'_>,
    external: &mut Vec<ExternalRead>,
    lost: &mut BTreeMap<(Key, Option<Value>), Vec<u32>>,
) {
    let mut locals: Vec<Local> = Vec::new();
    for m in mops {
        let key = m.key();
        let at = match locals.iter().position(|l| l.key == key) {
            Some(at) => at,
            None => {
                locals.push(Local {
                    key,
                    known: None,
                    own: Vec::new(),
                    wrote: false,
                    read_before_write: None,
                });
                locals.len() - 1
            }
        };
        let l = &mut locals[at];
        match m {
            Mop::Append { value, .. } => {
                l.own.push(*value);
                if let Some(k) = &mut l.known {
                    k.push(*value);
                }
                l.wrote = true;
            }
            Mop::Write { value, .. } => {
                l.known = Some(vec![*value]);
                l.wrote = true;
            }
            Mop::ReadList { list, .. } => {
                let mut sorted = list.clone();
                sorted.sort_unstable();
                if let Some(d) = sorted.windows(2).find(|w| w[0] == w[1]) {
                    found.push(
                        AnomalyKind::DuplicateElements,
                        vec![txn as usize],
                        format!(
                            "T{txn} read key {key} as {} with {} in it twice",
                            list_text(list),
                            d[0]
                        ),
                    );
                }
                let consistent = match &l.known {
                    Some(k) => k == list,
                    None => list.ends_with(&l.own),
                };
                if !consistent {
                    let expected = match &l.known {
                        Some(k) => {
                            format!("{} (its earlier read and its own appends)", list_text(k))
                        }
                        None => format!("a list ending in its own appends {}", list_text(&l.own)),
                    };
                    found.push(
                        AnomalyKind::Internal,
                        vec![txn as usize],
                        format!(
                            "T{txn} read key {key} as {} but must have seen {expected}",
                            list_text(list)
                        ),
                    );
                }
                if l.known.is_none() {
                    external.push(ExternalRead {
                        txn,
                        key,
                        seen: list.clone(),
                        list: true,
                    });
                    if !l.wrote {
                        l.read_before_write = Some(list.last().copied());
                    }
                }
                l.known = Some(list.clone());
                l.own.clear();
            }
            Mop::ReadRegister { value, .. } => {
                let seen: Vec<Value> = value.iter().copied().collect();
                match &l.known {
                    Some(k) if *k != seen => found.push(
                        AnomalyKind::Internal,
                        vec![txn as usize],
                        format!(
                            "T{txn} read key {key} as {} but its own earlier read or write left it at {}",
                            show(*value),
                            show(k.first().copied())
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        external.push(ExternalRead {
                            txn,
                            key,
                            seen: seen.clone(),
                            list: false,
                        });
                        l.read_before_write = Some(*value);
                    }
                }
                l.known = Some(seen);
            }
        }
    }
    for l in &locals {
        if let (true, Some(version)) = (l.wrote, l.read_before_write) {
            lost.entry((l.key, version)).or_default().push(txn);
        }
    }
}
