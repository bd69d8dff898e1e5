//! A linearizability checker: could the operations of a concurrent [`History`] have taken effect
//! one at a time, each at some instant between its invocation and its completion, in an order
//! that a sequential model ([`Sequential`]) accepts?
//!
//! The search is Wing & Gong's, as refined by Lowe and used by Porcupine: events (invocations
//! and completions) sorted by time in a linked list; repeatedly take the first operation whose
//! invocation comes before every pending completion, step the model, and if its return matches,
//! "lift" it out of the list and go on; reaching a completion of an operation not yet placed
//! means backtracking. Visited (set of placed operations as a bitset, model state) pairs are
//! memoised, so each configuration is expanded once. The search is a loop with an explicit
//! stack: long histories do not grow the call stack.
//!
//! - `Fail` operations are dropped: they did not happen.
//! - `Unknown` operations may be placed at any point after their invocation, or never; their
//!   return value is not checked.
//! - Operations whose [`Sequential::partition`] keys differ commute and are checked separately
//!   (P-compositionality), smallest partition first; the first failing one is reported.
//! - A budget of model steps (and a caller's stop flag, e.g. a deadline) turns a search that
//!   runs too long into [`Linearizability::Unknown`].

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Debug};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::gen::mix_seed;
use crate::history::{History, Outcome};

/// A sequential specification: the single-copy, one-at-a-time behaviour a concurrent system
/// should be indistinguishable from.
pub trait Sequential {
    /// The model's state; hashed to memoise visited configurations.
    type State: Clone + Eq + Hash + Debug;
    /// An operation.
    type Op: Debug;
    /// What an operation returns.
    type Ret: PartialEq + Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `op` to `state`: the next state and what `op` returns.
    fn step(&self, state: &Self::State, op: &Self::Op) -> (Self::State, Self::Ret);

    /// An independence key: operations with different keys commute and touch disjoint parts of
    /// the state, so each key is checked on its own (from [`init`](Sequential::init)). If any
    /// operation of a history has no key (`None`, the default), the history is checked whole.
    fn partition(&self, op: &Self::Op) -> Option<u64> {
        let _ = op;
        None
    }
}

/// The verdict of [`check`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Linearizability {
    /// Some order of the operations explains every return value.
    Linearizable,
    /// No order does.
    NotLinearizable {
        /// The partition key of the failing part (`None`: the history was checked whole).
        key: Option<u64>,
        /// History indices: the longest linearizable prefix the search found, in linearization
        /// order, then the operation that could not be placed after it.
        ops: Vec<usize>,
        /// The same for people: the prefix, the state after it, and why the last op failed.
        explanation: String,
    },
    /// The budget ran out (or the caller stopped the search), or the history is malformed.
    Unknown {
        /// Why there is no answer.
        reason: String,
    },
}

impl Linearizability {
    /// Whether the verdict is [`Linearizability::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Linearizability::Linearizable)
    }

    /// Whether the verdict is [`Linearizability::NotLinearizable`].
    pub fn is_violation(&self) -> bool {
        matches!(self, Linearizability::NotLinearizable { .. })
    }
}

impl fmt::Display for Linearizability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Linearizability::Linearizable => write!(f, "linearizable"),
            Linearizability::NotLinearizable { explanation, .. } => {
                write!(f, "not linearizable: {explanation}")
            }
            Linearizability::Unknown { reason } => write!(f, "unknown: {reason}"),
        }
    }
}

/// Limits of one [`check_with`] call. Pure: the engine reads no clock; a deadline is the
/// caller's `stop` closure.
pub struct Limits<'a> {
    /// At most this many model steps over all partitions (`None`: unbounded).
    pub max_steps: Option<u64>,
    /// Polled every 1024 steps; `true` stops the search with `Unknown` (e.g. a deadline passed).
    pub stop: Option<&'a dyn Fn() -> bool>,
    /// Memoise visited (placed ops, state) pairs. Always on in real use; off only to measure
    /// what it buys (the search stays correct but may take exponential time).
    pub memoise: bool,
}

/// The step budget of [`check`] and of `Limits::default()`.
pub const DEFAULT_MAX_STEPS: u64 = 10_000_000;

impl Default for Limits<'_> {
    fn default() -> Self {
        Self {
            max_steps: Some(DEFAULT_MAX_STEPS),
            stop: None,
            memoise: true,
        }
    }
}

impl Debug for Limits<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("max_steps", &self.max_steps)
            .field("stop", &self.stop.is_some())
            .field("memoise", &self.memoise)
            .finish()
    }
}

/// A verdict with what it cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The verdict.
    pub result: Linearizability,
    /// Model steps taken, over all partitions checked.
    pub steps: u64,
    /// Partitions of the history (after dropping `Fail` operations).
    pub partitions: usize,
}

/// Checks `history` against `model` with [`Limits::default`] (at most [`DEFAULT_MAX_STEPS`]).
///
/// ```
/// use fleetcheck_engine::history::{History, Outcome};
/// use fleetcheck_engine::linearizability::check;
/// use fleetcheck_engine::{RegisterOp, RegisterRet, RegisterSpec};
///
/// let mut h = History::new();
/// // w0 writes 1 during 0..10 ns; w1 reads during 5..15 ns and sees it: linearizable.
/// h.op(0, RegisterOp::Write(1), 0, Some(10), Outcome::Ok(RegisterRet::Done))
///     .op(1, RegisterOp::Read, 5, Some(15), Outcome::Ok(RegisterRet::Value(1)))
///     // w1 then reads 0 after the write completed: a stale read.
///     .op(1, RegisterOp::Read, 20, Some(30), Outcome::Ok(RegisterRet::Value(0)));
/// assert!(check(&RegisterSpec { initial: 0 }, &h).is_violation());
/// ```
pub fn check<M: Sequential>(model: &M, history: &History<M::Op, M::Ret>) -> Linearizability {
    check_with(model, history, &Limits::default()).result
}

/// Checks `history` against `model` within `limits`, and says what it cost.
pub fn check_with<M: Sequential>(
    model: &M,
    history: &History<M::Op, M::Ret>,
    limits: &Limits<'_>,
) -> Checked {
    if let Err(e) = history.validate() {
        return Checked {
            result: Linearizability::Unknown {
                reason: format!("invalid history: {e}"),
            },
            steps: 0,
            partitions: 0,
        };
    }
    let mut parts = partitions(model, history);
    // Smallest first: cheap verdicts before expensive ones, and the first failure found is in
    // the smallest failing partition.
    parts.sort_by_key(|(key, entries)| (entries.len(), *key));
    let mut search = Search {
        model,
        limits,
        steps: 0,
    };
    for (done, (key, entries)) in parts.iter().enumerate() {
        let what = match key {
            Some(k) => format!("key {k}"),
            None => "the history".to_string(),
        };
        let result = match search.run(entries) {
            Placed::All => continue,
            Placed::Stuck(dead) => Linearizability::NotLinearizable {
                key: *key,
                ops: dead
                    .order
                    .iter()
                    .chain([&dead.blocked])
                    .map(|&e| entries[e].index)
                    .collect(),
                explanation: explain(model, history, &what, entries, &dead),
            },
            Placed::Stopped(why) => Linearizability::Unknown {
                reason: format!(
                    "{why} after {} model steps, on {what} ({} ops); {done} of {} partitions \
                     were linearizable",
                    search.steps,
                    entries.len(),
                    parts.len()
                ),
            },
        };
        return Checked {
            result,
            steps: search.steps,
            partitions: parts.len(),
        };
    }
    Checked {
        result: Linearizability::Linearizable,
        steps: search.steps,
        partitions: parts.len(),
    }
}

/// An operation as the search sees it.
struct Entry<'h, M: Sequential> {
    /// Its index in the history.
    index: usize,
    op: &'h M::Op,
    /// `None` for an `Unknown` operation: not checked, no completion.
    ret: Option<&'h M::Ret>,
    invoke: u64,
    complete: u64,
}

type Partition<'h, M> = (Option<u64>, Vec<Entry<'h, M>>);

/// The history without `Fail` operations, split by partition key (whole if any key is `None`);
/// partitions holding no `Ok` operation are trivially linearizable and left out.
fn partitions<'h, M: Sequential>(
    model: &M,
    history: &'h History<M::Op, M::Ret>,
) -> Vec<Partition<'h, M>> {
    let entries = history
        .iter()
        .enumerate()
        .filter(|(_, o)| !o.outcome.is_fail())
        .map(|(index, o)| Entry {
            index,
            op: &o.op,
            ret: o.outcome.ok(),
            invoke: o.invoke,
            complete: match o.outcome {
                Outcome::Ok(_) => o.complete.expect("validated: Ok operations complete"),
                Outcome::Fail | Outcome::Unknown => u64::MAX,
            },
        });
    let keys: Vec<Option<u64>> = history.iter().map(|o| model.partition(&o.op)).collect();
    let split = keys
        .iter()
        .zip(history.iter())
        .all(|(k, o)| k.is_some() || o.outcome.is_fail());
    let mut by_key: BTreeMap<Option<u64>, Vec<Entry<'h, M>>> = BTreeMap::new();
    for entry in entries {
        let key = if split { keys[entry.index] } else { None };
        by_key.entry(key).or_default().push(entry);
    }
    by_key
        .into_iter()
        .filter(|(_, entries)| entries.iter().any(|e| e.ret.is_some()))
        .collect()
}

/// How the search of one partition ended.
enum Placed<S> {
    All,
    Stuck(DeadEnd<S>),
    Stopped(&'static str),
}

/// The deepest point the search reached: entries placed (in order), the state after them, and
/// the completed entry that could not be placed next.
struct DeadEnd<S> {
    order: Vec<usize>,
    state: S,
    blocked: usize,
}

/// The search state shared by the partitions of one check (the step budget is global).
struct Search<'a, 'l, M> {
    model: &'a M,
    limits: &'a Limits<'l>,
    steps: u64,
}

/// A node of the event list: an entry's invocation or completion. Node `events.len()` is the
/// list's head sentinel (the list is circular).
#[derive(Clone, Copy)]
struct Event {
    entry: usize,
    call: bool,
}

impl<M: Sequential> Search<'_, '_, M> {
    fn run(&mut self, entries: &[Entry<'_, M>]) -> Placed<M::State> {
        // Events sorted by time; at equal times invocations first, so that operations touching
        // at an instant count as concurrent (the permissive reading).
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * entries.len());
        for (i, e) in entries.iter().enumerate() {
            events.push((e.invoke, false, i));
            if e.ret.is_some() {
                events.push((e.complete, true, i));
            }
        }
        events.sort_unstable();
        let events: Vec<Event> = events
            .into_iter()
            .map(|(_, is_return, entry)| Event {
                entry,
                call: !is_return,
            })
            .collect();
        let head = events.len();
        let mut next: Vec<usize> = (1..=head).chain([0]).collect();
        let mut prev: Vec<usize> = [head].into_iter().chain(0..head).collect();
        let mut call_node = vec![0; entries.len()];
        let mut return_node = vec![None; entries.len()];
        for (node, ev) in events.iter().enumerate() {
            if ev.call {
                call_node[ev.entry] = node;
            } else {
                return_node[ev.entry] = Some(node);
            }
        }
        let unlink = |next: &mut [usize], prev: &mut [usize], n: usize| {
            next[prev[n]] = next[n];
            prev[next[n]] = prev[n];
        };
        let relink = |next: &mut [usize], prev: &mut [usize], n: usize| {
            next[prev[n]] = n;
            prev[next[n]] = n;
        };

        let mut state = self.model.init();
        let mut placed = Bits::new(entries.len());
        let mut seen = Seen::<M::State>::default();
        let mut unplaced_ok = entries.iter().filter(|e| e.ret.is_some()).count();
        // Placed entries and the state before each.
        let mut stack: Vec<(usize, M::State)> = Vec::new();
        let mut deepest: Option<DeadEnd<M::State>> = None;
        let mut node = next[head];
        loop {
            if unplaced_ok == 0 {
                // Unknown operations still unplaced never took effect (or did at the end).
                return Placed::All;
            }
            let ev = if node == head {
                None // unreachable: an unplaced Ok entry's completion comes first
            } else {
                Some(events[node])
            };
            if let Some(Event { entry, call: true }) = ev {
                if let Some(why) = self.tick() {
                    return Placed::Stopped(why);
                }
                let e = &entries[entry];
                let (after, ret) = self.model.step(&state, e.op);
                if e.ret.is_none_or(|want| *want == ret) {
                    placed.set(entry);
                    if !self.limits.memoise || seen.insert(&placed, &after) {
                        stack.push((entry, std::mem::replace(&mut state, after)));
                        unlink(&mut next, &mut prev, call_node[entry]);
                        if let Some(r) = return_node[entry] {
                            unlink(&mut next, &mut prev, r);
                            unplaced_ok -= 1;
                        }
                        node = next[head];
                        continue;
                    }
                    placed.clear(entry);
                }
                node = next[node];
                continue;
            }
            // The completion of an entry not placed yet: every candidate before it was tried.
            if let Some(Event { entry, .. }) = ev {
                if deepest.as_ref().is_none_or(|d| stack.len() > d.order.len()) {
                    deepest = Some(DeadEnd {
                        order: stack.iter().map(|(e, _)| *e).collect(),
                        state: state.clone(),
                        blocked: entry,
                    });
                }
            }
            let Some((entry, before)) = stack.pop() else {
                return Placed::Stuck(deepest.expect("a dead end was reached"));
            };
            state = before;
            placed.clear(entry);
            if let Some(r) = return_node[entry] {
                relink(&mut next, &mut prev, r);
                unplaced_ok += 1;
            }
            relink(&mut next, &mut prev, call_node[entry]);
            node = next[call_node[entry]];
        }
    }

    /// Counts a model step; `Some(reason)` when the budget is spent.
    fn tick(&mut self) -> Option<&'static str> {
        if self.limits.max_steps.is_some_and(|max| self.steps >= max) {
            return Some("step budget spent");
        }
        self.steps += 1;
        if self.steps.is_multiple_of(1024) && self.limits.stop.is_some_and(|stop| stop()) {
            return Some("stopped by the caller");
        }
        None
    }
}

/// Seeds the per-entry random values of [`Bits`]' hash.
const ZOBRIST_SEED: u64 = 0x0005_EED0_FB17;

/// A set of entries with an incrementally maintained (Zobrist) hash.
struct Bits {
    words: Vec<u64>,
    hash: u64,
}

impl Bits {
    fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
            hash: 0,
        }
    }

    fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
        self.hash ^= mix_seed(ZOBRIST_SEED, i as u64);
    }

    fn clear(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
        self.hash ^= mix_seed(ZOBRIST_SEED, i as u64);
    }
}

/// Keys that are already hashes: no need to hash them again.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Visited (placed set, state) configurations, bucketed by a combined hash.
struct Seen<S> {
    buckets: HashMap<u64, Bucket<S>, BuildHasherDefault<PassThrough>>,
}

/// The placed sets (as bitset words) and states sharing one hash.
type Bucket<S> = Vec<(Box<[u64]>, S)>;

impl<S> Default for Seen<S> {
    fn default() -> Self {
        Self {
            buckets: HashMap::default(),
        }
    }
}

impl<S: Clone + Eq + Hash> Seen<S> {
    /// Whether the configuration is new (then it is remembered).
    fn insert(&mut self, placed: &Bits, state: &S) -> bool {
        let mut h = DefaultHasher::new();
        state.hash(&mut h);
        let key = placed.hash ^ h.finish();
        let bucket = self.buckets.entry(key).or_default();
        if bucket
            .iter()
            .any(|(words, s)| **words == *placed.words && s == state)
        {
            return false;
        }
        bucket.push((placed.words.clone().into_boxed_slice(), state.clone()));
        true
    }
}

/// The text of a [`Linearizability::NotLinearizable`] verdict.
fn explain<M: Sequential>(
    model: &M,
    history: &History<M::Op, M::Ret>,
    what: &str,
    entries: &[Entry<'_, M>],
    dead: &DeadEnd<M::State>,
) -> String {
    let order: Vec<usize> = dead.order.iter().map(|&e| entries[e].index).collect();
    let blocked = &entries[dead.blocked];
    let (_, would) = model.step(&dead.state, blocked.op);
    let why = if blocked.ret.is_some_and(|r| *r != would) {
        format!("from that state the model returns {would:?}")
    } else {
        "every way of placing it there leads to a dead end later".to_string()
    };
    format!(
        "{what}: no order of its {n} operations explains their results\n\
         longest linearizable prefix found ({p} ops, in linearization order):\n{prefix}\
         state after it: {state:?}\n\
         then this operation must take effect before it completes, but cannot:\n{line}\
         ({why})",
        n = entries.len(),
        p = order.len(),
        prefix = history.render(&order),
        state = dead.state,
        line = history.render(&[blocked.index]),
    )
}

// ---------------------------------------------------------------------------------------------
// Ready models.
// ---------------------------------------------------------------------------------------------

/// A key-value map with `u64` keys, partitioned by key: see [`KvOp`].
pub struct KvSpec<V>(PhantomData<fn() -> V>);

impl<V> KvSpec<V> {
    /// The specification of an initially empty map.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<V> Default for KvSpec<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> Debug for KvSpec<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KvSpec")
    }
}

/// An operation on a key-value map.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvOp<V> {
    /// Sets the key; returns [`KvRet::Done`].
    Put(u64, V),
    /// Reads the key; returns [`KvRet::Value`].
    Get(u64),
    /// Removes the key; returns [`KvRet::Done`].
    Delete(u64),
    /// Sets the key to `new` if its value is `expected` (`None`: absent); returns
    /// [`KvRet::Swapped`].
    Cas {
        /// The key.
        key: u64,
        /// The value it must have.
        expected: Option<V>,
        /// The value it gets.
        new: V,
    },
}

/// What a [`KvOp`] returns.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvRet<V> {
    /// A `Put` or `Delete` happened.
    Done,
    /// What a `Get` read.
    Value(Option<V>),
    /// Whether a `Cas` swapped.
    Swapped(bool),
}

impl<V: Clone + Eq + Hash + Debug> Sequential for KvSpec<V> {
    type State = BTreeMap<u64, V>;
    type Op = KvOp<V>;
    type Ret = KvRet<V>;

    fn init(&self) -> Self::State {
        BTreeMap::new()
    }

    fn step(&self, state: &Self::State, op: &KvOp<V>) -> (Self::State, KvRet<V>) {
        match op {
            KvOp::Get(k) => (state.clone(), KvRet::Value(state.get(k).cloned())),
            KvOp::Put(k, v) => {
                let mut s = state.clone();
                s.insert(*k, v.clone());
                (s, KvRet::Done)
            }
            KvOp::Delete(k) => {
                let mut s = state.clone();
                s.remove(k);
                (s, KvRet::Done)
            }
            KvOp::Cas { key, expected, new } => {
                if state.get(key) == expected.as_ref() {
                    let mut s = state.clone();
                    s.insert(*key, new.clone());
                    (s, KvRet::Swapped(true))
                } else {
                    (state.clone(), KvRet::Swapped(false))
                }
            }
        }
    }

    fn partition(&self, op: &KvOp<V>) -> Option<u64> {
        Some(match op {
            KvOp::Put(k, _) | KvOp::Get(k) | KvOp::Delete(k) | KvOp::Cas { key: k, .. } => *k,
        })
    }
}

/// A single read/write/compare-and-set register holding `initial` at first: see [`RegisterOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterSpec<V> {
    /// The value before any write.
    pub initial: V,
}

/// An operation on a register.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegisterOp<V> {
    /// Sets the value; returns [`RegisterRet::Done`].
    Write(V),
    /// Reads the value; returns [`RegisterRet::Value`].
    Read,
    /// Sets the value to the second if it is the first; returns [`RegisterRet::Swapped`].
    Cas(V, V),
}

/// What a [`RegisterOp`] returns.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegisterRet<V> {
    /// A write happened.
    Done,
    /// What a read saw.
    Value(V),
    /// Whether a compare-and-set swapped.
    Swapped(bool),
}

impl<V: Clone + Eq + Hash + Debug> Sequential for RegisterSpec<V> {
    type State = V;
    type Op = RegisterOp<V>;
    type Ret = RegisterRet<V>;

    fn init(&self) -> V {
        self.initial.clone()
    }

    fn step(&self, state: &V, op: &RegisterOp<V>) -> (V, RegisterRet<V>) {
        match op {
            RegisterOp::Write(v) => (v.clone(), RegisterRet::Done),
            RegisterOp::Read => (state.clone(), RegisterRet::Value(state.clone())),
            RegisterOp::Cas(expected, new) if expected == state => {
                (new.clone(), RegisterRet::Swapped(true))
            }
            RegisterOp::Cas(..) => (state.clone(), RegisterRet::Swapped(false)),
        }
    }
}
