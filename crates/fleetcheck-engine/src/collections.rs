//! Checkers of the set, queue and counter workloads: what a system promises about a collection
//! that it did not promise about a register, judged from a concurrent [`History`] (Jepsen's
//! set, queue and counter checkers, by their definitions; written here).
//!
//! - **Set** ([`check_set`]): every acknowledged add is in the final read (a read that began
//!   after every add ended); no read holds a value that was never added, or whose every add
//!   failed, or that was first added after the read ended. An add whose outcome is unknown may
//!   be there or not.
//! - **Queue** ([`check_queue`]): every acknowledged enqueue is taken out (by a dequeue or a
//!   drain) once the history has a final drain; nothing is taken out that was never enqueued,
//!   and no value more often than it was enqueued (acknowledged or unknown).
//! - **Counter** ([`check_counter`]): every read lies between the sum of the increments
//!   acknowledged before it began and the sum of those (acknowledged or unknown) begun before
//!   it ended.
//!
//! - **Queue order** ([`check_queue_order`], for queues that promise it, [`QueueOrder`]): of
//!   two acknowledged enqueues, the one that ended before the other began comes out of a
//!   drain first; per producer, only where both came from the same client worker (a queue
//!   that keeps each producer's order, not the order between producers).
//!
//! Losses are judged only when `final_read` says the history is complete (its last read or
//! drain came after every fault was healed): before that, a value missing from a read may
//! only be late, which a system that promises eventual delivery is allowed. What a read could
//! not have seen (invented, duplicated, counted twice) is judged always.
//!
//! Each returns `Err` with one paragraph that names the operations (`#index`) and their times.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::history::{History, Operation, Outcome};

/// An operation on a set of numbers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SetOp {
    /// Adds a value; returns [`SetRet::Done`].
    Add(u64),
    /// Reads the whole set; returns [`SetRet::Values`].
    Read,
}

/// What a [`SetOp`] returns.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SetRet {
    /// An add happened.
    Done,
    /// What a read saw.
    Values(Vec<u64>),
}

/// An operation on a queue of numbers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QueueOp {
    /// Puts a value in; returns [`QueueRet::Done`].
    Enqueue(u64),
    /// Takes one value out; returns [`QueueRet::Item`] (`None`: the queue was empty).
    Dequeue,
    /// Takes every value out; returns [`QueueRet::Items`]. A drain that begins after every
    /// enqueue ended is the final one: after it nothing acknowledged may be missing.
    Drain,
}

/// What a [`QueueOp`] returns.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QueueRet {
    /// An enqueue happened.
    Done,
    /// What a dequeue took.
    Item(Option<u64>),
    /// What a drain took.
    Items(Vec<u64>),
}

/// An operation on a counter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CounterOp {
    /// Adds an amount; returns [`CounterRet::Done`].
    Incr(u64),
    /// Reads the counter; returns [`CounterRet::Value`].
    Read,
}

/// What a [`CounterOp`] returns.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CounterRet {
    /// An increment happened.
    Done,
    /// What a read saw.
    Value(u64),
}

fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

fn ended(o: &Operation<impl Sized, impl Sized>) -> String {
    o.complete.map_or_else(|| "never".into(), ms)
}

/// Whether operation `a` surely ended before `b` began.
fn before<O, R, P, S>(a: &Operation<O, R>, b: &Operation<P, S>) -> bool {
    a.complete.is_some_and(|end| end < b.invoke)
}

/// Whether `read` began after every one of `writes` began and every one that ended ended (an
/// unknown one may take effect at any time: it never rules a read out).
fn after_all<O, R>(writes: &[&Operation<O, R>], read: &Operation<O, R>) -> bool {
    writes
        .iter()
        .all(|w| w.invoke < read.invoke && w.complete.is_none_or(|end| end < read.invoke))
}

/// A short list of values for a message: up to eight, then how many more.
fn listed(values: &[u64]) -> String {
    let mut out: Vec<String> = values.iter().take(8).map(u64::to_string).collect();
    if values.len() > 8 {
        out.push(format!("and {} more", values.len() - 8));
    }
    out.join(", ")
}

/// What the writes of a value were: the indices of its writes that were acknowledged, and of
/// those that may have happened (acknowledged or unknown), with the first invocation.
#[derive(Default)]
struct Writes {
    acked: Vec<usize>,
    attempted: Vec<usize>,
}

fn writes<O, R>(
    history: &History<O, R>,
    value_of: impl Fn(&O) -> Option<u64>,
) -> BTreeMap<u64, Writes> {
    let mut by_value: BTreeMap<u64, Writes> = BTreeMap::new();
    for (i, o) in history.iter().enumerate() {
        let Some(v) = value_of(&o.op) else { continue };
        let w = by_value.entry(v).or_default();
        match o.outcome {
            Outcome::Ok(_) => {
                w.acked.push(i);
                w.attempted.push(i);
            }
            Outcome::Unknown => w.attempted.push(i),
            Outcome::Fail => {}
        }
    }
    by_value
}

/// A value a read holds that no write explains: none may have happened, or every one began
/// after the read ended.
fn unexplained<O, R>(
    history: &History<O, R>,
    by_value: &BTreeMap<u64, Writes>,
    read: &Operation<O, R>,
    value: u64,
) -> Option<&'static str> {
    let Some(w) = by_value.get(&value).filter(|w| !w.attempted.is_empty()) else {
        return Some("never added (or every add of it failed)");
    };
    let end = read.complete.unwrap_or(u64::MAX);
    let begun = w
        .attempted
        .iter()
        .any(|&i| history.operations[i].invoke < end);
    (!begun).then_some("added only after the read ended")
}

/// Checks a history of a set: see the module's docs.
pub fn check_set(history: &History<SetOp, SetRet>, final_read: bool) -> Result<(), String> {
    let by_value = writes(history, |op| match op {
        SetOp::Add(v) => Some(*v),
        SetOp::Read => None,
    });
    let reads: Vec<(usize, &Operation<SetOp, SetRet>, &Vec<u64>)> = history
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match &o.outcome {
            Outcome::Ok(SetRet::Values(values)) => Some((i, o, values)),
            _ => None,
        })
        .collect();
    for (i, read, values) in &reads {
        for &v in values.iter() {
            if let Some(why) = unexplained(history, &by_value, read, v) {
                return Err(format!(
                    "read #{i} (ended {}) holds {v}, which was {why}",
                    ended(read)
                ));
            }
        }
    }
    let adds: Vec<&Operation<SetOp, SetRet>> = history
        .iter()
        .filter(|o| matches!(o.op, SetOp::Add(_)))
        .collect();
    // The final read: the last that began after every add that may have happened ended.
    let last = reads
        .iter()
        .rev()
        .find(|(_, read, _)| final_read && after_all(&adds, read));
    let Some((at, read, values)) = last else {
        return Ok(());
    };
    let lost: Vec<(u64, usize)> = by_value
        .iter()
        .filter(|(v, _)| !values.contains(v))
        .filter_map(|(v, w)| w.acked.first().map(|&i| (*v, i)))
        .collect();
    if lost.is_empty() {
        return Ok(());
    }
    let (v, i) = lost[0];
    let mut why = format!(
        "{} acknowledged add{} lost: add {v} (#{i}) was acknowledged at {}, yet the final read \
         #{at}, begun at {}, holds {} value{}",
        lost.len(),
        if lost.len() == 1 { "" } else { "s" },
        ended(&history.operations[i]),
        ms(read.invoke),
        values.len(),
        if values.len() == 1 { "" } else { "s" },
    );
    if lost.len() > 1 {
        let all: Vec<u64> = lost.iter().map(|(v, _)| *v).collect();
        let _ = write!(why, " (lost: {})", listed(&all));
    }
    Err(why)
}

/// Checks a history of a queue: see the module's docs.
pub fn check_queue(history: &History<QueueOp, QueueRet>, final_read: bool) -> Result<(), String> {
    let by_value = writes(history, |op| match op {
        QueueOp::Enqueue(v) => Some(*v),
        QueueOp::Dequeue | QueueOp::Drain => None,
    });
    // Every value taken out, with the operation that took it.
    let mut taken: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, o) in history.iter().enumerate() {
        let values: &[u64] = match &o.outcome {
            Outcome::Ok(QueueRet::Item(Some(v))) => std::slice::from_ref(v),
            Outcome::Ok(QueueRet::Items(values)) => values,
            _ => continue,
        };
        for &v in values {
            if let Some(why) = unexplained(history, &by_value, o, v) {
                let why = why.replace("added", "enqueued").replace("add ", "enqueue ");
                return Err(format!(
                    "#{i} (ended {}) took {v} out, which was {why}",
                    ended(o)
                ));
            }
            taken.entry(v).or_default().push(i);
        }
    }
    for (v, by) in &taken {
        let attempted = by_value.get(v).map_or(0, |w| w.attempted.len());
        if by.len() > attempted {
            let ops: Vec<String> = by.iter().map(|i| format!("#{i}")).collect();
            return Err(format!(
                "{v} was enqueued {attempted} time{} but taken out {} times (by {}): delivered \
                 twice",
                if attempted == 1 { "" } else { "s" },
                by.len(),
                ops.join(", ")
            ));
        }
    }
    let enqueues: Vec<&Operation<QueueOp, QueueRet>> = history
        .iter()
        .filter(|o| matches!(o.op, QueueOp::Enqueue(_)))
        .collect();
    let drain = history.iter().enumerate().rev().find(|(_, o)| {
        final_read
            && matches!(o.outcome, Outcome::Ok(QueueRet::Items(_)))
            && after_all(&enqueues, o)
    });
    let Some((at, drain)) = drain else {
        return Ok(());
    };
    let lost: Vec<(u64, usize)> = by_value
        .iter()
        .filter(|(v, w)| taken.get(v).map_or(0, Vec::len) < w.acked.len())
        .filter_map(|(v, w)| w.acked.first().map(|&i| (*v, i)))
        .collect();
    // What a dequeue or drain without an answer took is not known: a drain may have taken
    // anything, a dequeue one value.
    let untold = |op: &QueueOp| {
        history
            .iter()
            .filter(|o| o.op == *op && o.outcome.is_unknown())
            .count()
    };
    if lost.len() <= untold(&QueueOp::Dequeue) || untold(&QueueOp::Drain) > 0 {
        return Ok(());
    }
    let (v, i) = lost[0];
    let mut why = format!(
        "{} acknowledged enqueue{} lost: enqueue {v} (#{i}) was acknowledged at {}, yet neither \
         a dequeue nor the final drain #{at}, begun at {}, took it out",
        lost.len(),
        if lost.len() == 1 { "" } else { "s" },
        ended(&history.operations[i]),
        ms(drain.invoke),
    );
    if lost.len() > 1 {
        let all: Vec<u64> = lost.iter().map(|(v, _)| *v).collect();
        let _ = write!(why, " (lost: {})", listed(&all));
    }
    Err(why)
}

/// The order a queue promises to give its values back in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueOrder {
    /// None: values may come out in any order.
    #[default]
    Any,
    /// First in, first out: of two acknowledged enqueues, the one that ended before the other
    /// began comes out first.
    RealTime,
    /// Each producer's (client worker's) values come out in the order it enqueued them; the
    /// values of different producers in any order.
    PerProducer,
}

impl QueueOrder {
    /// Whether it promises anything.
    pub fn promised(self) -> bool {
        self != QueueOrder::Any
    }

    /// Whether it promises nothing (for `skip_serializing_if`).
    pub fn is_any(&self) -> bool {
        *self == QueueOrder::Any
    }
}

/// In configuration files: `false` (any order), `true` (real-time order) or `"per-producer"`.
impl Serialize for QueueOrder {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            QueueOrder::Any => s.serialize_bool(false),
            QueueOrder::RealTime => s.serialize_bool(true),
            QueueOrder::PerProducer => s.serialize_str("per-producer"),
        }
    }
}

impl<'de> Deserialize<'de> for QueueOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Flag(bool),
            Name(String),
        }
        match Given::deserialize(d)? {
            Given::Flag(false) => Ok(QueueOrder::Any),
            Given::Flag(true) => Ok(QueueOrder::RealTime),
            Given::Name(n) if n == "per-producer" => Ok(QueueOrder::PerProducer),
            Given::Name(n) => Err(serde::de::Error::custom(format!(
                "`{n}` is not a queue order: true (first in, first out), false or \
                 \"per-producer\""
            ))),
        }
    }
}

/// Checks that every drain of a queue's history gives acknowledged values in the order they
/// were enqueued, where that order is known (one enqueue ended before the other began; with
/// [`QueueOrder::PerProducer`], both by the same worker). [`QueueOrder::Any`] checks nothing.
pub fn check_queue_order(
    history: &History<QueueOp, QueueRet>,
    order: QueueOrder,
) -> Result<(), String> {
    if !order.promised() {
        return Ok(());
    }
    let ordered = |a: &Operation<QueueOp, QueueRet>, b: &Operation<QueueOp, QueueRet>| {
        before(a, b) && (order == QueueOrder::RealTime || a.worker == b.worker)
    };
    let acked: Vec<(usize, &Operation<QueueOp, QueueRet>, u64)> = history
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match (&o.op, &o.outcome) {
            (QueueOp::Enqueue(v), Outcome::Ok(_)) => Some((i, o, *v)),
            _ => None,
        })
        .collect();
    for (at, drain) in history.iter().enumerate() {
        let Outcome::Ok(QueueRet::Items(items)) = &drain.outcome else {
            continue;
        };
        let position = |v: u64| items.iter().position(|&x| x == v);
        for (i, a, va) in &acked {
            for (j, b, vb) in &acked {
                let (Some(pa), Some(pb)) = (position(*va), position(*vb)) else {
                    continue;
                };
                if ordered(a, b) && pb < pa {
                    let whose = if order == QueueOrder::PerProducer {
                        format!(", both by worker {}", a.worker)
                    } else {
                        String::new()
                    };
                    return Err(format!(
                        "drain #{at} took {vb} (enqueued by #{j}, begun {}) before {va} \
                         (enqueued by #{i}, acknowledged {}, before #{j} began{whose}): out \
                         of order",
                        ms(b.invoke),
                        ended(a)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks a history of a counter: see the module's docs.
pub fn check_counter(
    history: &History<CounterOp, CounterRet>,
    final_read: bool,
) -> Result<(), String> {
    let incrs: Vec<(&Operation<CounterOp, CounterRet>, u64)> = history
        .iter()
        .filter_map(|o| match o.op {
            CounterOp::Incr(n) if !o.outcome.is_fail() => Some((o, n)),
            _ => None,
        })
        .collect();
    for (i, read) in history.iter().enumerate() {
        let Outcome::Ok(CounterRet::Value(value)) = read.outcome else {
            continue;
        };
        let end = read.complete.unwrap_or(u64::MAX);
        let lower: u64 = incrs
            .iter()
            .filter(|(o, _)| matches!(o.outcome, Outcome::Ok(_)) && before(o, read))
            .map(|(_, n)| n)
            .sum();
        let upper: u64 = incrs
            .iter()
            .filter(|(o, _)| o.invoke < end)
            .map(|(_, n)| n)
            .sum();
        if final_read && value < lower {
            return Err(format!(
                "read #{i} (begun {}) saw {value}, but increments acknowledged before it began \
                 add up to {lower}: an acknowledged increment was lost",
                ms(read.invoke)
            ));
        }
        if value > upper {
            return Err(format!(
                "read #{i} (ended {}) saw {value}, but every increment begun before it ended \
                 adds up to only {upper}: an increment counted more than once",
                ended(read)
            ));
        }
    }
    Ok(())
}
