//! Concurrent histories: what several client workers asked a system to do, when, and what came
//! back (Jepsen's model). A [`Recorder`] collects them while workers run; [`History`] is the
//! result, checked afterwards against a sequential model by
//! [`linearizability::check`](crate::linearizability::check).
//!
//! Times are nanoseconds since the start of the case. An operation's interval must contain the
//! moment it really took effect: take the invocation time *before* sending the request and the
//! completion time *after* the response arrived ([`Recorder`] does exactly that if `invoke` and
//! `complete` are called around the request).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome<R> {
    /// It completed, took effect (exactly once) and returned this.
    Ok(R),
    /// It definitely did not take effect (the system refused it, e.g. a precondition error).
    Fail,
    /// Nobody knows (timeout, connection lost, crash): it may have taken effect at any time after
    /// its invocation, or never; what it would have returned is unconstrained.
    Unknown,
}

impl<R> Outcome<R> {
    /// The returned value of an `Ok` outcome.
    pub fn ok(&self) -> Option<&R> {
        match self {
            Outcome::Ok(r) => Some(r),
            Outcome::Fail | Outcome::Unknown => None,
        }
    }

    /// Whether it is [`Outcome::Fail`].
    pub fn is_fail(&self) -> bool {
        matches!(self, Outcome::Fail)
    }

    /// Whether it is [`Outcome::Unknown`].
    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown)
    }
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation<O, R> {
    /// The client worker that issued it.
    pub worker: usize,
    /// What was asked.
    pub op: O,
    /// When it was invoked (ns since the start of the case).
    pub invoke: u64,
    /// When its response arrived (ns); `None` for an [`Outcome::Unknown`] operation, which may
    /// take effect arbitrarily late.
    pub complete: Option<u64>,
    /// How it ended.
    pub outcome: Outcome<R>,
}

/// Operations issued concurrently by several workers, in invocation order when made by a
/// [`Recorder`] (any order is accepted by the checker).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History<O, R> {
    /// The operations; indices into this vector name them everywhere (`#3` in text).
    pub operations: Vec<Operation<O, R>>,
}

impl<O, R> Default for History<O, R> {
    fn default() -> Self {
        Self {
            operations: Vec::new(),
        }
    }
}

impl<O, R> History<O, R> {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an operation (for hand-made histories and tests).
    pub fn push(&mut self, operation: Operation<O, R>) -> &mut Self {
        self.operations.push(operation);
        self
    }

    /// Adds an operation from its parts, times in nanoseconds (for hand-made histories).
    pub fn op(
        &mut self,
        worker: usize,
        op: O,
        invoke: u64,
        complete: Option<u64>,
        outcome: Outcome<R>,
    ) -> &mut Self {
        self.push(Operation {
            worker,
            op,
            invoke,
            complete,
            outcome,
        })
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// Whether there are no operations.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// The operations in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Operation<O, R>> {
        self.operations.iter()
    }

    /// The number of distinct workers.
    pub fn workers(&self) -> usize {
        let mut seen: Vec<usize> = self.operations.iter().map(|o| o.worker).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }

    /// How many operations ended `Ok`, `Fail` and `Unknown`.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.operations
            .iter()
            .fold((0, 0, 0), |(ok, fail, unknown), o| match o.outcome {
                Outcome::Ok(_) => (ok + 1, fail, unknown),
                Outcome::Fail => (ok, fail + 1, unknown),
                Outcome::Unknown => (ok, fail, unknown + 1),
            })
    }

    /// The first operation that no real execution could have produced: an `Ok` or `Fail`
    /// operation without a completion time, or one that completes before it is invoked.
    pub fn validate(&self) -> Result<(), String> {
        for (i, o) in self.operations.iter().enumerate() {
            match (o.complete, &o.outcome) {
                (_, Outcome::Unknown) => {}
                (None, _) => {
                    return Err(format!("operation #{i} ended but has no completion time"))
                }
                (Some(c), _) if c < o.invoke => {
                    return Err(format!(
                        "operation #{i} completes at {c} ns, before its invocation at {} ns",
                        o.invoke
                    ))
                }
                (Some(_), _) => {}
            }
        }
        Ok(())
    }
}

impl<O: fmt::Debug, R: fmt::Debug> History<O, R> {
    /// The lines of the operations at `indices`, in that order (see [`Operation`]'s `Display`).
    pub fn render(&self, indices: &[usize]) -> String {
        let mut out = String::new();
        for &i in indices {
            out.push_str(&format!("#{i:<4} {}\n", self.operations[i]));
        }
        out
    }
}

/// One line per operation: `#index worker invoke..complete ms op -> outcome`.
impl<O: fmt::Debug, R: fmt::Debug> fmt::Display for History<O, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, o) in self.operations.iter().enumerate() {
            writeln!(f, "#{i:<4} {o}")?;
        }
        Ok(())
    }
}

/// `w2    1.250..   3.000 ms  Put(1, 7) -> ok Done`; an unknown completion shows as `?`.
impl<O: fmt::Debug, R: fmt::Debug> fmt::Display for Operation<O, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |ns: u64| ns as f64 / 1e6;
        write!(f, "w{:<3} {:>9.3}..", self.worker, ms(self.invoke))?;
        match (self.complete, &self.outcome) {
            (Some(c), Outcome::Ok(_) | Outcome::Fail) => write!(f, "{:>9.3} ms", ms(c))?,
            _ => write!(f, "{:>9} ms", "?")?,
        }
        write!(f, "  {:?} -> ", self.op)?;
        match &self.outcome {
            Outcome::Ok(r) => write!(f, "ok {r:?}"),
            Outcome::Fail => write!(f, "fail"),
            Outcome::Unknown => write!(f, "unknown"),
        }
    }
}

/// Distinguishes recorders so a ticket cannot complete another recorder's operation.
static NEXT_RECORDER: AtomicU64 = AtomicU64::new(0);

/// A pending operation: returned by [`Recorder::invoke`], consumed by [`Recorder::complete`].
/// Dropping it leaves the operation [`Outcome::Unknown`].
#[derive(Debug)]
#[must_use = "complete the operation with Recorder::complete, or it counts as Unknown"]
pub struct Ticket {
    recorder: u64,
    index: usize,
}

impl Ticket {
    /// The operation's index in the finished history.
    pub fn index(&self) -> usize {
        self.index
    }
}

/// Where a recorder's timestamps come from.
enum Clock {
    /// Nanoseconds since the recorder was made.
    Instant(Instant),
    /// The caller's monotonic clock, in nanoseconds.
    Custom(Box<dyn Fn() -> u64 + Send + Sync>),
}

/// Records a history from several threads: a worker calls [`invoke`](Recorder::invoke) just
/// before sending a request and [`complete`](Recorder::complete) just after its response.
/// Timestamps are taken under the recorder's lock, so indices follow invocation order.
///
/// ```
/// use fleetcheck_engine::history::{Outcome, Recorder};
///
/// let recorder = Recorder::<&str, u32>::new();
/// std::thread::scope(|s| {
///     for worker in 0..3 {
///         let recorder = &recorder;
///         s.spawn(move || {
///             let ticket = recorder.invoke(worker, "incr");
///             recorder.complete(ticket, Outcome::Ok(1));
///         });
///     }
/// });
/// let history = recorder.finish();
/// assert_eq!(history.len(), 3);
/// ```
pub struct Recorder<O, R> {
    id: u64,
    clock: Clock,
    operations: Mutex<Vec<Operation<O, R>>>,
}

impl<O, R> fmt::Debug for Recorder<O, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.operations.lock().map(|o| o.len()).unwrap_or(0);
        f.debug_struct("Recorder")
            .field("id", &self.id)
            .field("operations", &len)
            .finish_non_exhaustive()
    }
}

impl<O, R> Default for Recorder<O, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<O, R> Recorder<O, R> {
    /// A recorder whose time zero is now (`std::time::Instant`).
    pub fn new() -> Self {
        Self::with(Clock::Instant(Instant::now()))
    }

    /// A recorder reading the caller's monotonic clock (nanoseconds since the start of the case).
    pub fn with_clock(clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self::with(Clock::Custom(Box::new(clock)))
    }

    fn with(clock: Clock) -> Self {
        Self {
            id: NEXT_RECORDER.fetch_add(1, Ordering::Relaxed),
            clock,
            operations: Mutex::new(Vec::new()),
        }
    }

    fn now(&self) -> u64 {
        match &self.clock {
            Clock::Instant(start) => u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Clock::Custom(clock) => clock(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Operation<O, R>>> {
        // A worker that panicked while holding the lock left the vector consistent: every
        // mutation below is a single push or field assignment.
        self.operations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `worker` invokes `op` now; it stays [`Outcome::Unknown`] until completed.
    pub fn invoke(&self, worker: usize, op: O) -> Ticket {
        let mut operations = self.lock();
        let invoke = self.now();
        operations.push(Operation {
            worker,
            op,
            invoke,
            complete: None,
            outcome: Outcome::Unknown,
        });
        Ticket {
            recorder: self.id,
            index: operations.len() - 1,
        }
    }

    /// Records that the ticket's operation ended now with `outcome`. An `Unknown` outcome keeps
    /// no completion time: the operation may still take effect later.
    pub fn complete(&self, ticket: Ticket, outcome: Outcome<R>) {
        assert_eq!(
            ticket.recorder, self.id,
            "Recorder::complete called with another recorder's ticket"
        );
        let mut operations = self.lock();
        let now = self.now();
        let operation = &mut operations[ticket.index];
        operation.complete = (!outcome.is_unknown()).then_some(now);
        operation.outcome = outcome;
    }

    /// A copy of what has been recorded so far (for a recorder shared through an `Arc`).
    pub fn history(&self) -> History<O, R>
    where
        O: Clone,
        R: Clone,
    {
        History {
            operations: self.lock().clone(),
        }
    }

    /// The recorded history; operations never completed are [`Outcome::Unknown`].
    pub fn finish(self) -> History<O, R> {
        History {
            operations: self
                .operations
                .into_inner()
                .unwrap_or_else(|e| e.into_inner()),
        }
    }
}
