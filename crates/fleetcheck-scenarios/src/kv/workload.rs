//! Workloads: what client workers ask a store, and how the history of it is judged.
//!
//! The kv scenario's own workload is [`Workload::Kv`] (put, get, delete, compare-and-set,
//! checked for linearizability). A scenario file may choose a collection instead:
//! [`Workload::Set`] (add, read), [`Workload::Queue`] (enqueue, dequeue, and a final drain) or
//! [`Workload::Counter`] (incr, read), judged by the engine's [`collections`] checkers after
//! every step, and at the end of the case by a final read once every fault is healed (the
//! only point where a missing value is a loss and not a read that came too early).
//!
//! A recorded operation is a [`Call`] answered by an [`Answer`]; the kv workload's are
//! [`Call::Kv`] / [`Answer::Kv`], so the JSON of kv cases is what it always was.

use std::collections::BTreeSet;
use std::fmt;

use fleetcheck_engine::collections::{
    self, CounterOp, CounterRet, QueueOp, QueueRet, SetOp, SetRet,
};
use fleetcheck_engine::history::Outcome;
use fleetcheck_engine::{History, KvOp, KvRet, Operation};
use serde::{Deserialize, Serialize};

use super::{describe_op, Op, Ret};

/// A scenario's workload: its operations and how a history of them is judged
/// (`[scenario] workload`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Keys and values: put, get, delete and compare-and-set, checked for linearizability.
    #[default]
    Kv,
    /// A set per key: `add` values, `read` the whole set; every acknowledged add must be in
    /// the final read, nothing read may be invented.
    Set,
    /// One queue: `enqueue` values, `dequeue` one, `drain` all at the end; nothing
    /// acknowledged lost, nothing delivered twice or invented.
    Queue,
    /// A counter per key: `incr` by small amounts, `read`; every read within what the
    /// acknowledged and unknown increments allow.
    Counter,
}

impl Workload {
    /// Every workload.
    pub const ALL: [Workload; 4] = [
        Workload::Kv,
        Workload::Set,
        Workload::Queue,
        Workload::Counter,
    ];

    /// The workload named `name` in `[scenario] workload`, if one is.
    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    /// Its name in `[scenario] workload`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Kv => "kv",
            Workload::Set => "set",
            Workload::Queue => "queue",
            Workload::Counter => "counter",
        }
    }

    /// Its operations, every one generated unless `[kv] ops` names fewer.
    pub fn kinds(self) -> &'static [OpKind] {
        match self {
            Workload::Kv => &[OpKind::Put, OpKind::Get, OpKind::Delete, OpKind::Cas],
            Workload::Set => &[OpKind::Add, OpKind::Read],
            Workload::Queue => &[OpKind::Enqueue, OpKind::Dequeue],
            Workload::Counter => &[OpKind::Incr, OpKind::Read],
        }
    }

    /// Whether a case ends with a final read (after every fault is healed).
    pub fn reads_at_the_end(self) -> bool {
        self != Workload::Kv
    }

    /// The final reads of a case whose operations were `history`: one `read` of each key
    /// written for sets and counters, one `drain` of the queue if anything was enqueued.
    pub fn final_calls(self, history: &History<Call, Answer>) -> Vec<Call> {
        let keys: BTreeSet<u64> = history.iter().filter_map(|o| o.op.key()).collect();
        match self {
            Workload::Kv => Vec::new(),
            Workload::Set | Workload::Counter => keys.into_iter().map(Call::Read).collect(),
            Workload::Queue if history.is_empty() => Vec::new(),
            Workload::Queue => vec![Call::Drain],
        }
    }

    /// Judges `history` (every operation of the case so far; `final_read`: it ends with the
    /// final reads, so losses are judged too; `ordered`: the order a queue promises): the kv
    /// workload's linearizability is checked elsewhere (it needs a budget and names
    /// anomalies); the collections by the engine's checkers, key by key.
    pub fn check(
        self,
        history: &History<Call, Answer>,
        final_read: bool,
        ordered: collections::QueueOrder,
    ) -> Result<(), String> {
        let keys: BTreeSet<u64> = history.iter().filter_map(|o| o.op.key()).collect();
        match self {
            Workload::Kv => Ok(()),
            Workload::Set => keys.into_iter().try_for_each(|k| {
                let h = project(history, |c, a| set_op(k, c, a));
                collections::check_set(&h, final_read).map_err(|why| format!("set k{k}: {why}"))
            }),
            Workload::Counter => keys.into_iter().try_for_each(|k| {
                let h = project(history, |c, a| counter_op(k, c, a));
                collections::check_counter(&h, final_read)
                    .map_err(|why| format!("counter k{k}: {why}"))
            }),
            Workload::Queue => {
                let h = project(history, queue_op);
                collections::check_queue(&h, final_read)
                    .and_then(|()| collections::check_queue_order(&h, ordered))
                    .map_err(|why| format!("queue: {why}"))
            }
        }
    }
}

/// A kind of client operation (`[kv] ops`), of one workload or two (`read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// kv: `put`.
    Put,
    /// kv: `get`.
    Get,
    /// kv: `delete`.
    Delete,
    /// kv: `cas` (compare-and-set).
    Cas,
    /// set: `add`.
    Add,
    /// queue: `enqueue`.
    Enqueue,
    /// counter: `incr`.
    Incr,
    /// set, counter: `read`.
    Read,
    /// queue: `dequeue`.
    Dequeue,
}

impl OpKind {
    /// Every kind, in the order they are drawn in.
    pub const ALL: [OpKind; 9] = [
        OpKind::Put,
        OpKind::Get,
        OpKind::Delete,
        OpKind::Cas,
        OpKind::Add,
        OpKind::Enqueue,
        OpKind::Incr,
        OpKind::Read,
        OpKind::Dequeue,
    ];

    /// Its name in `[kv] ops` and `[client]`.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Get => "get",
            OpKind::Delete => "delete",
            OpKind::Cas => "cas",
            OpKind::Add => "add",
            OpKind::Enqueue => "enqueue",
            OpKind::Incr => "incr",
            OpKind::Read => "read",
            OpKind::Dequeue => "dequeue",
        }
    }

    /// How often it is drawn against the others: writes and kv reads 3, the rest 1.
    pub fn weight(self) -> u32 {
        match self {
            OpKind::Put | OpKind::Get | OpKind::Add | OpKind::Enqueue | OpKind::Incr => 3,
            OpKind::Delete | OpKind::Cas | OpKind::Read | OpKind::Dequeue => 1,
        }
    }
}

/// `[kv] ops`: names of [`OpKind`]s, at least one, each once, in the order they are drawn.
pub(crate) fn op_kinds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<OpKind>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    let mut kinds = Vec::new();
    for name in &names {
        let kind = OpKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let all: Vec<&str> = OpKind::ALL.iter().map(|k| k.name()).collect();
                serde::de::Error::custom(format!(
                    "kv.ops names `{name}`, which is not one of {}",
                    all.join(", ")
                ))
            })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return Err(serde::de::Error::custom(
            "kv.ops must name at least one operation",
        ));
    }
    // Drawn in the fixed order, whatever the order listed.
    kinds.sort();
    Ok(kinds)
}

/// One client operation of any workload.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Call {
    /// set: adds a value (the second) to the set at a key (the first).
    Add(u64, u64),
    /// set, counter: reads the set or the counter at a key.
    Read(u64),
    /// queue: puts a value in.
    Enqueue(u64),
    /// queue: takes one value out.
    Dequeue,
    /// queue: takes every value out (the final read).
    Drain,
    /// counter: adds an amount (the second) to the counter at a key (the first).
    Incr(u64, u64),
    /// The kv workload's operations.
    #[serde(untagged)]
    Kv(Op),
}

impl Call {
    /// The key it touches (`None` for the queue's, which has one).
    pub fn key(&self) -> Option<u64> {
        match self {
            Call::Add(k, _) | Call::Read(k) | Call::Incr(k, _) => Some(*k),
            Call::Kv(KvOp::Put(k, _) | KvOp::Get(k) | KvOp::Delete(k)) => Some(*k),
            Call::Kv(KvOp::Cas { key, .. }) => Some(*key),
            Call::Enqueue(_) | Call::Dequeue | Call::Drain => None,
        }
    }

    /// Whether it only reads: a failed read changed nothing, a write without an answer may
    /// have happened.
    pub fn reads(&self) -> bool {
        matches!(
            self,
            Call::Read(_) | Call::Kv(KvOp::Get(_)) | Call::Dequeue | Call::Drain
        )
    }

    /// Its name in `[kv] ops`, `[client]` and the client protocol.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Add(..) => "add",
            Call::Read(_) => "read",
            Call::Enqueue(_) => "enqueue",
            Call::Dequeue => "dequeue",
            Call::Drain => "drain",
            Call::Incr(..) => "incr",
            Call::Kv(KvOp::Put(..)) => "put",
            Call::Kv(KvOp::Get(_)) => "get",
            Call::Kv(KvOp::Delete(_)) => "delete",
            Call::Kv(KvOp::Cas { .. }) => "cas",
        }
    }
}

impl From<Op> for Call {
    fn from(op: Op) -> Self {
        Call::Kv(op)
    }
}

/// `add k0 17`, `read k1`, `enq 5`, `deq`, `drain`, `incr k0 +3`, and the kv workload's
/// (`put k1=7`): as counterexamples, histories and timelines print a call.
impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Add(k, v) => write!(f, "add k{k} {v}"),
            Call::Read(k) => write!(f, "read k{k}"),
            Call::Enqueue(v) => write!(f, "enq {v}"),
            Call::Dequeue => f.write_str("deq"),
            Call::Drain => f.write_str("drain"),
            Call::Incr(k, n) => write!(f, "incr k{k} +{n}"),
            Call::Kv(op) => f.write_str(&describe_op(op)),
        }
    }
}

/// What a [`Call`] returned.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Answer {
    /// A set's read, a queue's drain: the values, in the order the store gave them.
    Values(Vec<u64>),
    /// A counter's read.
    Count(u64),
    /// A dequeue: the value taken out (`None`: the queue was empty).
    Item(Option<u64>),
    /// An add, enqueue or incr happened; or the kv workload's answers.
    #[serde(untagged)]
    Kv(Ret),
}

/// `Done`, `Value(Some(3))`, `[1, 2]`, `=5`, `Item(7)`: as batches' outputs print an answer.
impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Values(values) => write!(f, "{values:?}"),
            Answer::Count(n) => write!(f, "={n}"),
            Answer::Item(Some(v)) => write!(f, "Item({v})"),
            Answer::Item(None) => f.write_str("Empty"),
            Answer::Kv(ret) => write!(f, "{ret:?}"),
        }
    }
}

/// An answer as histories and timelines print it: `done`, `7`, `absent`, `swapped`, `not
/// swapped`, `[3, 5]`, `=12`, `empty`.
pub fn describe_answer(answer: &Answer) -> String {
    match answer {
        Answer::Kv(KvRet::Done) => "done".into(),
        Answer::Kv(KvRet::Value(Some(v))) | Answer::Item(Some(v)) => v.to_string(),
        Answer::Kv(KvRet::Value(None)) => "absent".into(),
        Answer::Item(None) => "empty".into(),
        Answer::Kv(KvRet::Swapped(true)) => "swapped".into(),
        Answer::Kv(KvRet::Swapped(false)) => "not swapped".into(),
        Answer::Values(values) => format!("{values:?}"),
        Answer::Count(n) => format!("={n}"),
    }
}

impl Answer {
    /// The answer of a write that happened.
    pub const DONE: Answer = Answer::Kv(KvRet::Done);
}

/// The operations of `history` that `map` keeps, as another workload's operations (same
/// workers and times).
fn project<O, R>(
    history: &History<Call, Answer>,
    map: impl Fn(&Call, Option<&Answer>) -> Option<(O, Option<R>)>,
) -> History<O, R> {
    let mut out = History::new();
    for o in history.iter() {
        let Some((op, ret)) = map(&o.op, o.outcome.ok()) else {
            continue;
        };
        let outcome = match (&o.outcome, ret) {
            (Outcome::Ok(_), Some(ret)) => Outcome::Ok(ret),
            // An answer of the wrong shape is no answer (the store's parsing refuses those).
            (Outcome::Ok(_), None) | (Outcome::Unknown, _) => Outcome::Unknown,
            (Outcome::Fail, _) => Outcome::Fail,
        };
        // An operation without an answer may take effect at any time after it began.
        let complete = o.complete.filter(|_| !outcome.is_unknown());
        out.push(Operation {
            worker: o.worker,
            op,
            invoke: o.invoke,
            complete,
            outcome,
        });
    }
    out
}

fn set_op(key: u64, call: &Call, answer: Option<&Answer>) -> Option<(SetOp, Option<SetRet>)> {
    match call {
        Call::Add(k, v) if *k == key => Some((SetOp::Add(*v), Some(SetRet::Done))),
        Call::Read(k) if *k == key => Some((
            SetOp::Read,
            match answer {
                Some(Answer::Values(values)) => Some(SetRet::Values(values.clone())),
                _ => None,
            },
        )),
        _ => None,
    }
}

fn counter_op(
    key: u64,
    call: &Call,
    answer: Option<&Answer>,
) -> Option<(CounterOp, Option<CounterRet>)> {
    match call {
        Call::Incr(k, n) if *k == key => Some((CounterOp::Incr(*n), Some(CounterRet::Done))),
        Call::Read(k) if *k == key => Some((
            CounterOp::Read,
            match answer {
                Some(Answer::Count(n)) => Some(CounterRet::Value(*n)),
                _ => None,
            },
        )),
        _ => None,
    }
}

fn queue_op(call: &Call, answer: Option<&Answer>) -> Option<(QueueOp, Option<QueueRet>)> {
    match call {
        Call::Enqueue(v) => Some((QueueOp::Enqueue(*v), Some(QueueRet::Done))),
        Call::Dequeue => Some((
            QueueOp::Dequeue,
            match answer {
                Some(Answer::Item(v)) => Some(QueueRet::Item(*v)),
                _ => None,
            },
        )),
        Call::Drain => Some((
            QueueOp::Drain,
            match answer {
                Some(Answer::Values(values)) => Some(QueueRet::Items(values.clone())),
                _ => None,
            },
        )),
        _ => None,
    }
}

/// The kv workload's operations of `history`, as the linearizability checker takes them.
pub fn kv_history(history: &History<Call, Answer>) -> History<Op, Ret> {
    project(history, |call, answer| match call {
        Call::Kv(op) => Some((
            op.clone(),
            match answer {
                Some(Answer::Kv(ret)) => Some(ret.clone()),
                _ => None,
            },
        )),
        _ => None,
    })
}
