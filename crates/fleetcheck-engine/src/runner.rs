//! The runner: generates cases from one seed, runs them (in parallel when asked), and on the
//! first failure shrinks it and checks how often the minimal case reproduces.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serializer;

use crate::case::{execute, Case, Trace, Verdict};
use crate::gen::{mix_seed, Gen};
use crate::model::{Model, System};
use crate::shrink::{shrink, ShrinkConfig, ShrinkReport};
use crate::stats::{Labels, Stats};

/// How many times one step may draw a command whose precondition is false before the
/// sequence is ended there.
const TRIES_PER_STEP: u32 = 100;

/// The runner's knobs (ScalaCheck's, and more).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Successful cases needed for the property to pass (ScalaCheck's `minSuccessfulTests`).
    pub tests: u32,
    /// Shortest command sequence.
    pub min_size: usize,
    /// Longest command sequence; sizes grow from `min_size` to `max_size` over the run.
    pub max_size: usize,
    /// The seed; `None` picks one from the clock (and the report says which).
    pub seed: Option<u64>,
    /// Cases run at once (each on its own instance of the system).
    pub workers: usize,
    /// Give up when discarded commands exceed this many per successful case wanted.
    pub max_discard_ratio: f64,
    /// The shrinker's budget and k-of-n policy.
    pub shrink: ShrinkConfig,
    /// Extra runs of the minimal case, to report how often it reproduces. A failure whose
    /// minimal case fails again in none of them is [`Outcome::Flaky`], not a counterexample;
    /// with 0 there is no such check.
    pub reproduce_runs: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tests: 100,
            min_size: 1,
            max_size: 20,
            seed: None,
            workers: 1,
            max_discard_ratio: 5.0,
            shrink: ShrinkConfig::default(),
            reproduce_runs: 3,
        }
    }
}

/// A progress event, for progress bars and verbose logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The run started with this seed.
    Started {
        /// The seed in use.
        seed: u64,
        /// Cases to run.
        tests: u32,
    },
    /// Case `index` finished.
    CaseFinished {
        /// The case's index in the run.
        index: u64,
        /// Its number of commands.
        commands: usize,
        /// How it ended.
        verdict: Verdict,
        /// Cases finished so far.
        done: u64,
    },
    /// Shrinking began on a case of this many commands.
    ShrinkStarted {
        /// Commands in the failing case.
        commands: usize,
    },
    /// A shrink candidate was tried.
    ShrinkCandidate {
        /// Candidate runs so far.
        runs: u32,
        /// Whether it failed too and became the current case.
        accepted: bool,
        /// Commands in the current case.
        commands: usize,
        /// The shrinker's pass: `network`, `remove commands`, `rewrite sequence` or
        /// `simplify commands`.
        pass: &'static str,
        /// Candidates tried so far (a candidate may take several runs).
        candidates: u32,
        /// Candidates accepted so far: the shrink steps taken.
        steps: u32,
    },
    /// A re-run of the minimal case finished.
    Reproduced {
        /// The re-run's number (1-based).
        run: u32,
        /// Whether it failed again.
        failed: bool,
    },
}

/// Receives [`Event`]s while a run goes on. `()` ignores them.
pub trait Observer: Sync {
    /// Called for each event, from any worker thread.
    fn event(&self, event: &Event);
}

impl Observer for () {
    fn event(&self, _event: &Event) {}
}

/// A counterexample: the case that failed, its minimal form, and how it was found.
#[derive(Debug)]
pub struct Failure<M: Model> {
    /// The index of the failing case in the run.
    pub index: u64,
    /// The case as generated.
    pub original: Case<M>,
    /// The minimal case.
    pub minimal: Case<M>,
    /// The failing run of the minimal case.
    pub trace: Trace<M>,
    /// Why it failed (the false postcondition or invariant).
    pub reason: String,
    /// The shrinker's accounts.
    pub shrink: ShrinkReport,
    /// How many of the extra runs of the minimal case failed again.
    pub reproduced: u32,
    /// How many extra runs there were.
    pub reproduce_runs: u32,
    /// How many of the extra runs the host was too loaded to judge (counted as not failing).
    pub too_loaded: u32,
}

impl<M: Model> Failure<M> {
    /// Whether the minimal case failed again in none of its extra runs (there were some):
    /// then the failure did not reproduce and is not a counterexample.
    pub fn is_flaky(&self) -> bool {
        self.reproduce_runs > 0 && self.reproduced == 0
    }
}

/// How a run ended: the outcomes stay apart.
#[derive(Debug)]
pub enum Outcome<M: Model> {
    /// Every case passed.
    Passed,
    /// A postcondition or invariant was false: a shrunk counterexample, whose minimal case
    /// failed again in at least one of its extra runs (or there were none).
    Failed(Box<Failure<M>>),
    /// A case failed, but its minimal case failed again in none of its extra runs
    /// ([`Config::reproduce_runs`], at least one): a failure that does not reproduce is
    /// not a counterexample. The record is kept, to look at.
    Flaky(Box<Failure<M>>),
    /// The infrastructure broke: reported, never shrunk, never a counterexample. With
    /// `overloaded`, nothing broke but the host was too loaded to judge the case.
    Aborted {
        /// The index of the aborted case.
        index: u64,
        /// The case.
        case: Box<Case<M>>,
        /// The command index, if a command was running.
        step: Option<usize>,
        /// What broke.
        message: String,
        /// The host was too loaded to judge, rather than broken ([`Abort::overloaded`](crate::Abort::overloaded)).
        overloaded: bool,
        /// What the case asks cannot be done here, rather than broken ([`Abort::refused`](crate::Abort::refused)).
        refused: bool,
    },
    /// Too many commands were discarded by preconditions.
    GaveUp {
        /// Discarded draws.
        discarded: u64,
        /// The limit that was passed.
        limit: u64,
    },
}

impl<M: Model> Outcome<M> {
    /// `passed`, `failed`, `flaky`, `aborted`, `too_loaded` or `gave_up`.
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "failed",
            Outcome::Flaky(_) => "flaky",
            Outcome::Aborted {
                overloaded: true, ..
            } => "too_loaded",
            Outcome::Aborted { refused: true, .. } => "refused",
            Outcome::Aborted { .. } => "aborted",
            Outcome::GaveUp { .. } => "gave_up",
        }
    }
}

/// The result of a run.
#[derive(Debug)]
pub struct Report<M: Model> {
    /// How it ended.
    pub outcome: Outcome<M>,
    /// The seed that reproduces it.
    pub seed: u64,
    /// Cases that ran (not counting shrinking).
    pub cases_run: u64,
    /// Cases that passed.
    pub passed: u64,
    /// Command draws discarded by preconditions.
    pub discarded: u64,
    /// Labels of the cases that ran.
    pub stats: Stats,
    /// Wall time, shrinking included.
    pub elapsed: Duration,
}

/// A generated case with its generation accounts.
#[derive(Debug)]
pub struct Generated<M: Model> {
    /// The case.
    pub case: Case<M>,
    /// Draws discarded while generating it.
    pub discarded: u64,
}

/// The seed of case `index` of a run with seed `seed`.
pub fn case_seed(seed: u64, index: u64) -> u64 {
    mix_seed(seed, index)
}

/// The size bound of case `index` of `tests`: grows linearly from `min` to `max`.
pub fn case_size(min: usize, max: usize, index: u64, tests: u32) -> usize {
    let max = max.max(min);
    let span = (max - min) as u64;
    let denominator = u64::from(tests.saturating_sub(1).max(1));
    min + (span * index.min(denominator) / denominator) as usize
}

/// Generates one case from its seed: the initial state, then commands drawn from the current
/// model state, each checked against its precondition.
pub fn generate<M: Model>(model: &M, seed: u64, min_size: usize, size: usize) -> Generated<M> {
    let mut g = Gen::new(seed, size);
    let initial = model.initial_state(&mut g);
    let length = g.range(min_size.min(size)..=size);
    let mut state = initial.clone();
    let mut commands = Vec::with_capacity(length);
    let mut discarded = 0;
    'steps: for _ in 0..length {
        for _ in 0..TRIES_PER_STEP {
            match model.command(&state, &mut g) {
                Some(command) if model.precondition(&state, &command) => {
                    state = model.next_state(&state, &command);
                    commands.push(command);
                    continue 'steps;
                }
                _ => discarded += 1,
            }
        }
        break;
    }
    Generated {
        case: Case {
            seed,
            initial,
            commands,
        },
        discarded,
    }
}

/// The labels of a case: the model's, plus command names and the sequence length.
pub fn labels_of<M: Model>(model: &M, case: &Case<M>) -> Labels {
    let mut labels = Labels::default();
    labels.add("commands per case", case.commands.len());
    for command in &case.commands {
        labels.add("command", model.command_name(command));
    }
    model.labels(&case.initial, &case.commands, &mut labels);
    labels
}

/// Resolves the seed of a run: the configured one or one from the clock.
pub fn resolve_seed(seed: Option<u64>) -> u64 {
    seed.unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        mix_seed(nanos, u64::from(std::process::id()))
    })
}

/// Runs the property: generates `config.tests` cases from the seed, runs them on `system`
/// with `config.workers` workers, and shrinks the first failure (the one of lowest index, so
/// the result does not depend on scheduling).
pub fn run<M: Model, S: System<M>>(
    model: &M,
    system: &S,
    config: &Config,
    observer: &dyn Observer,
) -> Report<M> {
    let start = Instant::now();
    let seed = resolve_seed(config.seed);
    observer.event(&Event::Started {
        seed,
        tests: config.tests,
    });

    // Generation is pure and cheap next to a run: count the discards up front, so a give-up is
    // known before any machine is booted. Cases are not kept: each is generated again from its
    // seed when it runs, so memory does not grow with `tests` (1e6 cases kept took 2 GB).
    let tests = u64::from(config.tests);
    let case_at = |i: u64| {
        let size = case_size(config.min_size, config.max_size, i, config.tests);
        generate(model, case_seed(seed, i), config.min_size, size)
    };
    let discarded: u64 = (0..tests).map(|i| case_at(i).discarded).sum();
    let limit = (config.max_discard_ratio * f64::from(config.tests)).ceil() as u64;
    if discarded > limit {
        return Report {
            outcome: Outcome::GaveUp { discarded, limit },
            seed,
            cases_run: 0,
            passed: 0,
            discarded,
            stats: Stats::default(),
            elapsed: start.elapsed(),
        };
    }

    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let first_bad = AtomicU64::new(u64::MAX);
    let stop = AtomicBool::new(false);
    let finished: Mutex<BTreeMap<u64, Trace<M>>> = Mutex::new(BTreeMap::new());
    let tally = Mutex::new(Tally::default());
    let worker = || loop {
        let index = next.fetch_add(1, Ordering::SeqCst);
        if index >= tests
            || (stop.load(Ordering::SeqCst) && index > first_bad.load(Ordering::SeqCst))
        {
            break;
        }
        let case = case_at(index).case;
        let trace = execute(model, system, &case);
        let passed = trace.verdict == Verdict::Passed;
        if !passed {
            first_bad.fetch_min(index, Ordering::SeqCst);
            stop.store(true, Ordering::SeqCst);
        }
        let finished_count = done.fetch_add(1, Ordering::SeqCst) + 1;
        observer.event(&Event::CaseFinished {
            index,
            commands: case.commands.len(),
            verdict: trace.verdict.clone(),
            done: finished_count,
        });
        tally
            .lock()
            .expect("no worker panics while holding the lock")
            .finished(index, labels_of(model, &case), passed);
        // Only a case that did not pass is read afterwards.
        if !passed {
            finished
                .lock()
                .expect("no worker panics while holding the lock")
                .insert(index, trace);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..config.workers.max(1) {
            scope.spawn(worker);
        }
        worker();
    });
    let mut finished = finished.into_inner().expect("workers have ended");

    // Everything below the first bad index ran and passed; the tally counted exactly those, so
    // the statistics do not depend on scheduling either.
    let bad = first_bad.load(Ordering::SeqCst);
    let Tally {
        mut stats, counted, ..
    } = tally.into_inner().expect("workers have ended");
    debug_assert_eq!(counted, bad.min(tests));
    let passed = counted;
    let (outcome, cases_run) = if bad == u64::MAX {
        (Outcome::Passed, passed)
    } else {
        let case = case_at(bad).case;
        stats.record(&labels_of(model, &case));
        let trace = finished
            .remove(&bad)
            .expect("the first bad case has a trace");
        let outcome = match trace.verdict.clone() {
            Verdict::Aborted {
                step,
                message,
                overloaded,
                refused,
            } => Outcome::Aborted {
                index: bad,
                case: Box::new(case),
                step,
                message,
                overloaded,
                refused,
            },
            Verdict::Failed { .. } => {
                let mut failure = minimise(model, system, case, trace, config, observer);
                failure.index = bad;
                if failure.is_flaky() {
                    Outcome::Flaky(Box::new(failure))
                } else {
                    Outcome::Failed(Box::new(failure))
                }
            }
            Verdict::Passed => unreachable!("a bad case did not pass"),
        };
        (outcome, passed + 1)
    };
    Report {
        outcome,
        seed,
        cases_run,
        passed,
        discarded,
        stats,
        elapsed: start.elapsed(),
    }
}

/// The labels of finished cases, counted in index order up to the first that did not pass; a
/// case that finished before one of lower index waits in `pending` (a window of about as many
/// cases as workers), so memory does not grow with the number of cases.
#[derive(Default)]
struct Tally {
    stats: Stats,
    /// Cases counted: every index below passed.
    counted: u64,
    /// Finished cases at or above `counted`: their labels and whether they passed.
    pending: BTreeMap<u64, (Labels, bool)>,
    /// A case that did not pass was reached: nothing after it counts.
    stopped: bool,
}

impl Tally {
    fn finished(&mut self, index: u64, labels: Labels, passed: bool) {
        if self.stopped {
            return;
        }
        self.pending.insert(index, (labels, passed));
        while let Some((labels, passed)) = self.pending.remove(&self.counted) {
            if !passed {
                self.stopped = true;
                self.pending.clear();
                return;
            }
            self.stats.record(&labels);
            self.counted += 1;
        }
    }
}

/// Shrinks a failing case and re-runs the minimal one `config.reproduce_runs` times
/// ([`Failure::is_flaky`] says whether it failed again in none of them).
pub fn minimise<M: Model, S: System<M>>(
    model: &M,
    system: &S,
    case: Case<M>,
    trace: Trace<M>,
    config: &Config,
    observer: &dyn Observer,
) -> Failure<M> {
    observer.event(&Event::ShrinkStarted {
        commands: case.commands.len(),
    });
    let shrunk = shrink(model, system, &case, trace, &config.shrink, observer);
    let (mut reproduced, mut too_loaded) = (0, 0);
    for run in 1..=config.reproduce_runs {
        let verdict = execute(model, system, &shrunk.case).verdict;
        let failed = verdict.is_failure();
        reproduced += u32::from(failed);
        too_loaded += u32::from(verdict.is_overloaded());
        observer.event(&Event::Reproduced { run, failed });
    }
    let reason = match &shrunk.trace.verdict {
        Verdict::Failed { reason, .. } => reason.clone(),
        other => format!("{other:?}"),
    };
    Failure {
        index: 0,
        original: case,
        minimal: shrunk.case,
        trace: shrunk.trace,
        reason,
        shrink: shrunk.report,
        reproduced,
        reproduce_runs: config.reproduce_runs,
        too_loaded,
    }
}

/// Serialises a duration as whole milliseconds.
pub(crate) fn ser_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(i: u64) -> Labels {
        let mut l = Labels::default();
        l.add("case", i);
        l
    }

    /// Cases finish out of order; the tally counts exactly those below the first that did not
    /// pass, and keeps no more than the out-of-order window.
    #[test]
    fn the_tally_counts_cases_below_the_first_bad_one_in_any_finishing_order() {
        let mut t = Tally::default();
        for (index, passed) in [
            (1, true),
            (3, false),
            (0, true),
            (4, true),
            (2, true),
            (5, true),
        ] {
            t.finished(index, labels(index), passed);
        }
        assert_eq!(t.counted, 3);
        let counted: Vec<&String> = t.stats.group("case").unwrap().keys().collect();
        assert_eq!(counted, ["0", "1", "2"]);
        assert!(t.pending.is_empty());
    }
}
