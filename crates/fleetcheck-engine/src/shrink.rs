//! The shrinker: minimises a failing case's command sequence *and* its initial state (the
//! network), re-checking preconditions on every candidate, within a budget of runs and time.
//!
//! Each candidate costs a real run, so the order of attempts matters:
//! 1. the network first (fewer machines removes every command that names them at once),
//! 2. then chunks of commands, largest first (ddmin), and within one chunk size the most
//!    expensive chunk first,
//! 3. then whole-sequence rewrites and single-command simplifications from the model.
//!
//! Candidates are normalised (commands whose precondition no longer holds are dropped) and
//! cut after the failing step; a candidate already tried is never run again.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::case::{execute, Case, Trace, Verdict};
use crate::model::{Model, System};
use crate::runner::{Event, Observer};

/// The shrinker's budget and flakiness policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShrinkConfig {
    /// At most this many candidate runs (each attempt of each candidate counts).
    pub max_runs: u32,
    /// At most this much time.
    pub max_time: Duration,
    /// Runs allowed per candidate (`n` of k-of-n).
    pub attempts: u32,
    /// Failures among those runs needed to accept a candidate (`k` of k-of-n).
    pub required: u32,
}

/// The defaults of the library and of the command line (`--shrink-runs`, `--shrink-time`):
/// real cases take seconds each, so a few hundred runs or five minutes is what a person waits.
impl Default for ShrinkConfig {
    fn default() -> Self {
        Self {
            max_runs: 500,
            max_time: Duration::from_secs(300),
            attempts: 1,
            required: 1,
        }
    }
}

/// What the shrinker spent and achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShrinkReport {
    /// Runs of candidates (the expensive part).
    pub runs: u32,
    /// Distinct candidates tried.
    pub candidates: u32,
    /// Candidates accepted (each made the case smaller or simpler).
    pub accepted: u32,
    /// Candidates skipped because they had been tried before.
    pub cache_hits: u32,
    /// Candidates skipped because they are a prefix of a failing run, which passed.
    pub skipped: u32,
    /// Candidate runs that aborted (infrastructure), counted as not failing.
    pub aborted: u32,
    /// Candidate runs the host was too loaded to judge, counted as not failing.
    pub too_loaded: u32,
    /// Whether the budget ran out before a fixed point.
    pub budget_exhausted: bool,
    /// Time spent.
    #[serde(serialize_with = "crate::runner::ser_millis")]
    pub elapsed: Duration,
}

/// The minimal case found, its trace, and the shrinker's accounts.
#[derive(Debug)]
pub struct Shrunk<M: Model> {
    /// The minimal failing case.
    pub case: Case<M>,
    /// Its failing run.
    pub trace: Trace<M>,
    /// What it cost.
    pub report: ShrinkReport,
}

struct Shrinker<'a, M: Model, S: System<M>> {
    model: &'a M,
    system: &'a S,
    config: &'a ShrinkConfig,
    observer: &'a dyn Observer,
    tried: HashSet<String>,
    report: ShrinkReport,
    start: Instant,
    current: Case<M>,
    trace: Trace<M>,
    /// The pass under way, for progress events.
    pass: &'static str,
}

/// Shrinks `case`, which failed with `trace`, to a minimal failing case.
pub fn shrink<M: Model, S: System<M>>(
    model: &M,
    system: &S,
    case: &Case<M>,
    trace: Trace<M>,
    config: &ShrinkConfig,
    observer: &dyn Observer,
) -> Shrunk<M> {
    let mut shrinker = Shrinker {
        model,
        system,
        config,
        observer,
        tried: HashSet::new(),
        report: ShrinkReport::default(),
        start: Instant::now(),
        current: cut(case.clone(), &trace.verdict),
        trace,
        pass: "network",
    };
    shrinker.tried.insert(key(&shrinker.current));
    shrinker.run();
    shrinker.report.elapsed = shrinker.start.elapsed();
    Shrunk {
        case: shrinker.current,
        trace: shrinker.trace,
        report: shrinker.report,
    }
}

/// Keeps the commands up to and including the failing step.
fn cut<M: Model>(mut case: Case<M>, verdict: &Verdict) -> Case<M> {
    if let Verdict::Failed { step, .. } = verdict {
        case.commands.truncate(step + 1);
    }
    case
}

fn key<M: Model>(case: &Case<M>) -> String {
    serde_json::to_string(&(&case.initial, &case.commands))
        .expect("model states and commands serialise to JSON")
}

impl<M: Model, S: System<M>> Shrinker<'_, M, S> {
    fn out_of_budget(&mut self) -> bool {
        if self.report.runs >= self.config.max_runs || self.start.elapsed() >= self.config.max_time
        {
            self.report.budget_exhausted = true;
        }
        self.report.budget_exhausted
    }

    /// Whether `candidate` is a strict prefix of the current case. Its run cannot fail: the
    /// current case's failing run already ran that prefix with every check holding (unless
    /// the system checks the end of a case: [`System::finishes`]).
    fn is_passing_prefix(&self, candidate: &Case<M>) -> bool {
        !self.system.finishes()
            && candidate.initial == self.current.initial
            && candidate.commands.len() < self.current.commands.len()
            && self.current.commands[..candidate.commands.len()] == candidate.commands[..]
    }

    /// Runs a candidate (normalised first); on failure makes it the current case.
    fn attempt(&mut self, candidate: Case<M>) -> bool {
        let candidate = candidate.normalized(self.model);
        if self.is_passing_prefix(&candidate) {
            self.report.skipped += 1;
            return false;
        }
        if !self.tried.insert(key(&candidate)) {
            self.report.cache_hits += 1;
            return false;
        }
        self.report.candidates += 1;
        let (attempts, required) = (self.config.attempts.max(1), self.config.required.max(1));
        let mut failures = 0;
        let mut failing_trace = None;
        for done in 0..attempts {
            if failures + (attempts - done) < required || self.out_of_budget() {
                break;
            }
            self.report.runs += 1;
            let trace = execute(self.model, self.system, &candidate);
            match trace.verdict {
                Verdict::Failed { .. } => {
                    failures += 1;
                    failing_trace.get_or_insert(trace);
                }
                Verdict::Aborted {
                    overloaded: true, ..
                } => self.report.too_loaded += 1,
                Verdict::Aborted { .. } => self.report.aborted += 1,
                Verdict::Passed => {}
            }
            if failures >= required {
                break;
            }
        }
        let accepted = failures >= required;
        if accepted {
            let trace = failing_trace.expect("a failure was recorded");
            self.current = cut(candidate, &trace.verdict);
            self.tried.insert(key(&self.current));
            self.trace = trace;
            self.report.accepted += 1;
        }
        self.observer.event(&Event::ShrinkCandidate {
            runs: self.report.runs,
            accepted,
            commands: self.current.commands.len(),
            pass: self.pass,
            candidates: self.report.candidates,
            steps: self.report.accepted,
        });
        accepted
    }

    fn run(&mut self) {
        loop {
            let mut progress = false;
            progress |= self.shrink_network();
            progress |= self.remove_chunks();
            progress |= self.rewrite_sequence();
            progress |= self.simplify_commands();
            if !progress || self.out_of_budget() {
                break;
            }
        }
    }

    /// Whether a candidate still holds the failing step (the current case's last command).
    /// A candidate without it can only fail at a step that passed before, which is rare, so
    /// such candidates are tried last.
    fn keeps_failing_step(&self, candidate: &Case<M>) -> bool {
        let last = self.current.commands.last();
        last.is_none() || candidate.commands.last() == last
    }

    /// Tries the candidates `make` builds from the current case, in order. After an accepted
    /// one it builds them again from the new current case and goes on from the same position
    /// instead of starting over: what was rejected before it is very likely rejected again, and
    /// the outer fixed-point loop catches what is not.
    fn try_in_order(&mut self, make: impl Fn(&Self) -> Vec<Case<M>>) -> bool {
        let mut progress = false;
        let mut position = 0;
        'restart: while !self.out_of_budget() {
            for (index, candidate) in make(self).into_iter().enumerate().skip(position) {
                if self.attempt(candidate) {
                    progress = true;
                    position = index;
                    continue 'restart;
                }
                if self.out_of_budget() {
                    break 'restart;
                }
            }
            break;
        }
        progress
    }

    /// The model's simpler initial states, those that keep the failing step first.
    fn shrink_network(&mut self) -> bool {
        self.pass = "network";
        self.try_in_order(|this| {
            let mut candidates: Vec<Case<M>> = this
                .model
                .shrink_state(&this.current.initial)
                .into_iter()
                .map(|initial| {
                    Case {
                        seed: this.current.seed,
                        initial,
                        commands: this.current.commands.clone(),
                    }
                    .normalized(this.model)
                })
                .collect();
            // Stable: the model's order within each group.
            candidates.sort_by_key(|c| !this.keeps_failing_step(c));
            candidates
        })
    }

    /// ddmin-style removal: chunks of half the sequence, then a quarter, ... down to single
    /// commands; within a size, the costliest chunk first.
    fn remove_chunks(&mut self) -> bool {
        self.pass = "remove commands";
        let mut progress = false;
        let mut size = self.current.commands.len().div_ceil(2).max(1);
        loop {
            let len = self.current.commands.len();
            if len == 0 || self.out_of_budget() {
                break;
            }
            let size_now = size.min(len);
            let mut chunks: Vec<(u64, usize)> = (0..len)
                .step_by(size_now)
                .map(|start| {
                    let end = (start + size_now).min(len);
                    let cost = self.current.commands[start..end]
                        .iter()
                        .map(|c| u64::from(self.model.cost(c)))
                        .sum();
                    (cost, start)
                })
                .collect();
            // The chunk holding the failing step last (without it a candidate rarely fails);
            // otherwise costliest first, and among equals the later chunk first, which keeps
            // the prefix (and so the state the failure depends on) intact.
            let last_start = (len - 1) / size_now * size_now;
            chunks.sort_by(|a, b| {
                (a.1 == last_start)
                    .cmp(&(b.1 == last_start))
                    .then(b.0.cmp(&a.0))
                    .then(b.1.cmp(&a.1))
            });
            let mut accepted = false;
            for (_, start) in chunks {
                let end = (start + size_now).min(len);
                let mut commands = self.current.commands.clone();
                commands.drain(start..end);
                let candidate = Case {
                    seed: self.current.seed,
                    initial: self.current.initial.clone(),
                    commands,
                };
                if self.attempt(candidate) {
                    accepted = true;
                    break;
                }
                if self.out_of_budget() {
                    return progress;
                }
            }
            if accepted {
                progress = true;
                continue; // same size again, on the smaller sequence
            }
            if size_now <= 1 {
                break;
            }
            size = size_now.div_ceil(2);
        }
        progress
    }

    /// The model's whole-sequence rewrites.
    fn rewrite_sequence(&mut self) -> bool {
        self.pass = "rewrite sequence";
        self.try_in_order(|this| {
            this.model
                .shrink_commands(&this.current.initial, &this.current.commands)
                .into_iter()
                .map(|commands| Case {
                    seed: this.current.seed,
                    initial: this.current.initial.clone(),
                    commands,
                })
                .collect()
        })
    }

    fn simplify_commands(&mut self) -> bool {
        self.pass = "simplify commands";
        let mut progress = false;
        let mut index = 0;
        while index < self.current.commands.len() && !self.out_of_budget() {
            let mut changed = false;
            for simpler in self.model.shrink_command(&self.current.commands[index]) {
                let mut commands = self.current.commands.clone();
                commands[index] = simpler;
                let candidate = Case {
                    seed: self.current.seed,
                    initial: self.current.initial.clone(),
                    commands,
                };
                if self.attempt(candidate) {
                    changed = true;
                    break;
                }
                if self.out_of_budget() {
                    return progress;
                }
            }
            if changed {
                progress = true; // try the same position again: it may simplify further
            } else {
                index += 1;
            }
        }
        progress
    }
}
