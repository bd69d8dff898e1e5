//! fleetcheck's engine against proptest-state-machine, side by side in one process, on the three
//! planted bugs of `tests/common/planted.rs`.
//!
//! Both engines get the same models: proptest's `ReferenceStateMachine`s below draw with the
//! same ranges and frequencies as the fleetcheck `Model`s and reuse their preconditions and
//! next-state functions; one `StateMachineTest` adapter runs the same `System`s (the buggy ones
//! from planted.rs, or the correct ones below) and judges outputs with the same postconditions.
//! Both run 100 cases of 1..=20 commands from a fixed seed, on one thread, with their default
//! shrinking; proptest's forking and failure persistence are off.
//!
//! Run: `cargo bench -p fleetcheck-engine --bench vs_proptest`.

#[path = "../tests/common/planted.rs"]
mod planted;

use std::cell::Cell;
use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fleetcheck_engine::{mix_seed, run, Abort, Case, Config, Model, Outcome, System};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{
    Config as PtConfig, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};

use planted::*;

/// Seeds per model; each seed is one whole run of `CASES` cases on each engine and each system.
const SEEDS: u64 = 100;
/// Passing runs per seed and engine, for steadier timings.
const PASSING_REPEATS: u32 = 5;
/// Cases per run (fleetcheck's default `Config::tests`).
const CASES: u32 = 100;
/// Commands per case (fleetcheck's default `Config::min_size..=max_size`).
const MIN_COMMANDS: usize = 1;
const MAX_COMMANDS: usize = 20;

// ---------------------------------------------------------------------------------------------
// proptest-state-machine reference machines: the generators of planted.rs, written as strategies.
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct RingRef;

impl ReferenceStateMachine for RingRef {
    type State = RingState;
    type Transition = RingCmd;

    fn init_state() -> BoxedStrategy<RingState> {
        (1..=RING_MAX_CAPACITY)
            .prop_map(|capacity| RingState {
                capacity,
                items: Vec::new(),
            })
            .boxed()
    }

    fn transitions(s: &RingState) -> BoxedStrategy<RingCmd> {
        if s.items.len() < s.capacity {
            prop_oneof![
                3 => (0..=99u32).prop_map(RingCmd::Push),
                2 => Just(RingCmd::Pop),
            ]
            .boxed()
        } else {
            Just(RingCmd::Pop).boxed()
        }
    }

    fn apply(s: RingState, c: &RingCmd) -> RingState {
        RingModel.next_state(&s, c)
    }

    fn preconditions(s: &RingState, c: &RingCmd) -> bool {
        RingModel.precondition(s, c)
    }
}

#[derive(Debug)]
struct KvRef;

impl ReferenceStateMachine for KvRef {
    type State = KvState;
    type Transition = KvCmd;

    fn init_state() -> BoxedStrategy<KvState> {
        (1..=3u8)
            .prop_map(|shards| KvState {
                shards,
                map: Default::default(),
            })
            .boxed()
    }

    fn transitions(_: &KvState) -> BoxedStrategy<KvCmd> {
        let key = || 0..KV_KEYS;
        prop_oneof![
            3 => (key(), 0..=9u8).prop_map(|(k, v)| KvCmd::Put(k, v)),
            2 => key().prop_map(KvCmd::Get),
            2 => key().prop_map(KvCmd::Delete),
        ]
        .boxed()
    }

    fn apply(s: KvState, c: &KvCmd) -> KvState {
        KvModel.next_state(&s, c)
    }

    fn preconditions(s: &KvState, c: &KvCmd) -> bool {
        KvModel.precondition(s, c)
    }
}

#[derive(Debug)]
struct NetRef;

fn net_ids(s: &NetState, running: bool) -> Vec<String> {
    s.machines
        .iter()
        .filter(|m| m.running == running)
        .map(|m| m.id.clone())
        .collect()
}

impl ReferenceStateMachine for NetRef {
    type State = NetState;
    type Transition = NetCmd;

    /// One to four machines with distinct addresses. Ids and addresses are identities that
    /// commands refer to, so (as in fleetcheck's `shrink_state`) they are never shrunk.
    fn init_state() -> BoxedStrategy<NetState> {
        let id = vec(b'a'..=b'z', 8)
            .prop_map(|b| String::from_utf8(b).expect("ascii lowercase"))
            .no_shrink();
        let machine = (
            (2..=254u8).no_shrink(),
            id,
            MIN_MEMORY..=MAX_MEMORY,
            select(&KERNELS[..]),
        )
            .prop_map(|(ip, id, memory, kernel)| NetMachine {
                id,
                ip,
                memory,
                kernel: kernel.to_string(),
                running: false,
            });
        vec(machine, 1..=4)
            .prop_filter("distinct addresses", |ms| {
                ms.iter().map(|m| m.ip).collect::<BTreeSet<_>>().len() == ms.len()
            })
            .prop_map(|machines| NetState { machines })
            .boxed()
    }

    fn transitions(s: &NetState) -> BoxedStrategy<NetCmd> {
        let (up, down) = (net_ids(s, true), net_ids(s, false));
        if up.is_empty() {
            return select(down).prop_map(NetCmd::Boot).boxed();
        }
        let shutdown = select(up.clone()).prop_map(NetCmd::Shutdown);
        let ping_up =
            (select(up.clone()), select(up.clone())).prop_map(|(a, b)| NetCmd::Ping(a, b));
        if down.is_empty() {
            return prop_oneof![1 => shutdown, 4 => ping_up].boxed();
        }
        let boot = select(down.clone()).prop_map(NetCmd::Boot);
        let ping_down = (select(up), select(down)).prop_map(|(a, b)| NetCmd::Ping(a, b));
        prop_oneof![2 => boot, 1 => shutdown, 4 => ping_up, 4 => ping_down].boxed()
    }

    fn apply(s: NetState, c: &NetCmd) -> NetState {
        NetModel.next_state(&s, c)
    }

    fn preconditions(s: &NetState, c: &NetCmd) -> bool {
        NetModel.precondition(s, c)
    }
}

// ---------------------------------------------------------------------------------------------
// One StateMachineTest for all three: runs a fleetcheck `System` and checks the model's
// postcondition (which judges against the state *before* the command; proptest hands `apply`
// the state after, so the adapter keeps the one before).
// ---------------------------------------------------------------------------------------------

struct Adapter<R, M, S>(PhantomData<(R, M, S)>);

struct Sut<M: Model, S: System<M>> {
    instance: S::Instance,
    before: M::State,
}

impl<R, M, S> StateMachineTest for Adapter<R, M, S>
where
    R: ReferenceStateMachine<State = M::State, Transition = M::Command>,
    M: Model + Default,
    S: System<M> + Default,
{
    type SystemUnderTest = Sut<M, S>;
    type Reference = R;

    fn init_test(ref_state: &M::State) -> Sut<M, S> {
        Sut {
            instance: S::default()
                .setup(ref_state)
                .expect("the in-memory systems never abort"),
            before: ref_state.clone(),
        }
    }

    fn apply(mut sut: Sut<M, S>, ref_state: &M::State, command: M::Command) -> Sut<M, S> {
        let system = S::default();
        let output = system
            .run(&mut sut.instance, &sut.before, &command)
            .expect("the in-memory systems never abort");
        if let Err(why) = M::default().postcondition(&sut.before, &command, &output) {
            panic!("postcondition failed: {why}");
        }
        let invariant = system
            .invariant(&mut sut.instance, ref_state)
            .expect("the in-memory systems never abort");
        if let Err(why) = invariant {
            panic!("invariant failed: {why}");
        }
        sut.before = ref_state.clone();
        sut
    }

    fn teardown(sut: Sut<M, S>, _: M::State) {
        S::default()
            .teardown(sut.instance)
            .expect("the in-memory systems never abort");
    }
}

// ---------------------------------------------------------------------------------------------
// Correct systems, for the passing runs. They count the commands they run (both engines run
// the same systems, so the count is comparable).
// ---------------------------------------------------------------------------------------------

static COMMANDS_RUN: AtomicU64 = AtomicU64::new(0);

fn count_command() {
    COMMANDS_RUN.fetch_add(1, Ordering::Relaxed);
}

/// A ring buffer that keeps its length instead of deriving it from head and tail.
#[derive(Debug, Default)]
struct CorrectRingSystem;

#[derive(Debug)]
struct CorrectRing {
    slots: Vec<u32>,
    head: usize,
    len: usize,
}

impl System<RingModel> for CorrectRingSystem {
    type Instance = CorrectRing;
    fn setup(&self, s: &RingState) -> Result<CorrectRing, Abort> {
        Ok(CorrectRing {
            slots: vec![0; s.capacity],
            head: 0,
            len: 0,
        })
    }
    fn run(&self, r: &mut CorrectRing, _: &RingState, c: &RingCmd) -> Result<Option<u32>, Abort> {
        count_command();
        let capacity = r.slots.len();
        Ok(match c {
            RingCmd::Push(v) => {
                r.slots[(r.head + r.len) % capacity] = *v;
                r.len += 1;
                None
            }
            RingCmd::Pop if r.len == 0 => None,
            RingCmd::Pop => {
                let v = r.slots[r.head];
                r.head = (r.head + 1) % capacity;
                r.len -= 1;
                Some(v)
            }
        })
    }
    fn teardown(&self, _: CorrectRing) -> Result<(), Abort> {
        Ok(())
    }
}

/// A store with tombstones where a put revives the entry.
#[derive(Debug, Default)]
struct CorrectKvSystem;

impl System<KvModel> for CorrectKvSystem {
    type Instance = Vec<(u8, u8, bool)>;
    fn setup(&self, _: &KvState) -> Result<Self::Instance, Abort> {
        Ok(Vec::new())
    }
    fn run(&self, kv: &mut Self::Instance, _: &KvState, c: &KvCmd) -> Result<Option<u8>, Abort> {
        count_command();
        let entry = kv.iter_mut().find(|e| e.0 == c.key());
        Ok(match (c, entry) {
            (KvCmd::Put(_, v), Some(e)) => {
                *e = (e.0, *v, false);
                None
            }
            (KvCmd::Put(k, v), None) => {
                kv.push((*k, *v, false));
                None
            }
            (KvCmd::Get(_), e) => e.filter(|e| !e.2).map(|e| e.1),
            (KvCmd::Delete(_), e) => {
                if let Some(e) = e {
                    e.2 = true;
                }
                None
            }
        })
    }
    fn teardown(&self, _: Self::Instance) -> Result<(), Abort> {
        Ok(())
    }
}

/// The fake network of planted.rs, except that any two running machines can talk.
#[derive(Debug, Default)]
struct CorrectNetSystem;

impl System<NetModel> for CorrectNetSystem {
    type Instance = NetState;
    fn setup(&self, s: &NetState) -> Result<NetState, Abort> {
        NetSystem.setup(s)
    }
    fn run(&self, net: &mut NetState, s: &NetState, c: &NetCmd) -> Result<bool, Abort> {
        count_command();
        match c {
            NetCmd::Ping(from, to) => Ok([from, to]
                .iter()
                .all(|id| net.get(id).is_some_and(|m| m.running))),
            _ => NetSystem.run(net, s, c),
        }
    }
    fn teardown(&self, net: NetState) -> Result<(), Abort> {
        NetSystem.teardown(net)
    }
}

// ---------------------------------------------------------------------------------------------
// Running one seed on each engine.
// ---------------------------------------------------------------------------------------------

/// What one run of one engine on one seed ended with.
enum RunEnd<M: Model> {
    Passed,
    Failed {
        minimal: Case<M>,
        shrink_runs: u32,
        budget_hit: bool,
    },
    Other(String),
}

fn fleetcheck_run<M: Model + Default, S: System<M> + Default>(seed: u64) -> RunEnd<M> {
    let config = Config {
        seed: Some(seed),
        ..Config::default()
    };
    debug_assert_eq!(
        (config.tests, config.min_size, config.max_size),
        (CASES, MIN_COMMANDS, MAX_COMMANDS)
    );
    let report = run(&M::default(), &S::default(), &config, &());
    match report.outcome {
        Outcome::Passed => RunEnd::Passed,
        Outcome::Failed(f) => RunEnd::Failed {
            minimal: f.minimal,
            shrink_runs: f.shrink.runs,
            budget_hit: f.shrink.budget_exhausted,
        },
        other => RunEnd::Other(other.status().to_string()),
    }
}

thread_local! {
    /// Set while proptest runs a case, whose failures are expected panics: keeps them quiet.
    static EXPECTED_PANIC: Cell<bool> = const { Cell::new(false) };
}

fn proptest_config() -> PtConfig {
    PtConfig {
        cases: CASES,
        failure_persistence: None,
        fork: false,
        timeout: 0,
        ..PtConfig::default()
    }
}

fn proptest_run<R, M, S>(seed: u64) -> RunEnd<M>
where
    R: ReferenceStateMachine<State = M::State, Transition = M::Command>,
    M: Model + Default + 'static,
    M::State: 'static,
    M::Command: 'static,
    S: System<M> + Default,
{
    let config = proptest_config();
    let mut key = [0u8; 32];
    for (i, chunk) in key.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix_seed(seed, i as u64).to_le_bytes());
    }
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    let mut runner = TestRunner::new_with_rng(config.clone(), rng);
    let strategy = R::sequential_strategy(MIN_COMMANDS..=MAX_COMMANDS);
    let calls = Cell::new(0u32);
    let first_failure = Cell::new(None::<u32>);
    let result = runner.run(&strategy, |(initial, commands, seen)| {
        calls.set(calls.get() + 1);
        EXPECTED_PANIC.with(|e| e.set(true));
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            Adapter::<R, M, S>::test_sequential(config.clone(), initial, commands, seen)
        }));
        EXPECTED_PANIC.with(|e| e.set(false));
        outcome.map_err(|payload| {
            if first_failure.get().is_none() {
                first_failure.set(Some(calls.get()));
            }
            let why = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            TestCaseError::fail(why)
        })
    });
    match result {
        Ok(()) => RunEnd::Passed,
        Err(TestError::Fail(_, (initial, commands, _))) => {
            let shrink_runs = calls.get() - first_failure.get().expect("a case failed");
            RunEnd::Failed {
                minimal: Case {
                    seed,
                    initial,
                    commands,
                },
                shrink_runs,
                budget_hit: shrink_runs >= config.max_shrink_iters(),
            }
        }
        Err(TestError::Abort(why)) => RunEnd::Other(format!("aborted: {why}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Accounts and the table.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    passing_time: Duration,
    passing_runs: u32,
    passing_cases: u64,
    passing_commands: u64,
    found: u32,
    shrink_runs: Vec<u32>,
    budget_hits: u32,
    commands: Vec<u32>,
    initial_size: Vec<u32>,
    exact: u32,
    anomalies: Vec<String>,
}

fn mean_max(values: &[u32]) -> String {
    match values.iter().max() {
        None => "-".to_string(),
        Some(max) => {
            let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
            format!("{mean:.1} / {max}")
        }
    }
}

impl Tally {
    fn passing(&mut self, seed: u64, elapsed: Duration, commands: u64, end: RunEnd<impl Model>) {
        self.passing_time += elapsed;
        self.passing_commands += commands;
        match end {
            RunEnd::Passed => {
                self.passing_runs += 1;
                self.passing_cases += u64::from(CASES);
            }
            RunEnd::Failed { minimal, .. } => self.anomalies.push(format!(
                "seed {seed}: the correct system failed: {:?}",
                minimal.commands
            )),
            RunEnd::Other(why) => self.anomalies.push(format!("seed {seed}: {why}")),
        }
    }

    fn failing<M: Model>(
        &mut self,
        seed: u64,
        end: RunEnd<M>,
        is_minimal: fn(&Case<M>) -> bool,
        initial_size: fn(&M::State) -> usize,
    ) {
        match end {
            RunEnd::Passed => {}
            RunEnd::Failed {
                minimal,
                shrink_runs,
                budget_hit,
            } => {
                self.found += 1;
                self.shrink_runs.push(shrink_runs);
                self.budget_hits += u32::from(budget_hit);
                self.commands.push(minimal.commands.len() as u32);
                self.initial_size
                    .push(initial_size(&minimal.initial) as u32);
                self.exact += u32::from(is_minimal(&minimal));
            }
            RunEnd::Other(why) => self.anomalies.push(format!("seed {seed}: {why}")),
        }
    }

    fn row(&self, model: &str, engine: &str, size_name: &str) -> String {
        let secs = self.passing_time.as_secs_f64();
        let cases_per_sec = self.passing_cases as f64 / secs;
        let commands_per_sec = self.passing_commands as f64 / secs;
        let commands_per_case = self.passing_commands as f64 / self.passing_cases as f64;
        format!(
            "| {model:<5} | {engine:<11} | {cases_per_sec:>9.0} | {commands_per_case:>9.1} | {commands_per_sec:>9.0} | {:>3}/{SEEDS:<3} | {:>11} | {:>6} | {:>10} | {:>9} {:<8} | {:>3}/{:<3} |",
            self.found,
            mean_max(&self.shrink_runs),
            self.budget_hits,
            mean_max(&self.commands),
            mean_max(&self.initial_size),
            size_name,
            self.exact,
            self.found,
        )
    }
}

/// Runs every seed on both engines, with the correct and the buggy system, interleaved so
/// that machine noise falls on both alike; returns the two table rows.
fn compare<R, M, Buggy, Correct>(
    name: &str,
    size_name: &str,
    is_minimal: fn(&Case<M>) -> bool,
    initial_size: fn(&M::State) -> usize,
) -> Vec<String>
where
    R: ReferenceStateMachine<State = M::State, Transition = M::Command>,
    M: Model + Default + 'static,
    M::State: 'static,
    M::Command: 'static,
    Buggy: System<M> + Default,
    Correct: System<M> + Default,
{
    let (mut fc, mut pt) = (Tally::default(), Tally::default());
    for seed in 0..SEEDS {
        let timed = |f: &dyn Fn() -> RunEnd<M>| {
            let before = COMMANDS_RUN.load(Ordering::Relaxed);
            let start = Instant::now();
            let end = f();
            let elapsed = start.elapsed();
            (elapsed, COMMANDS_RUN.load(Ordering::Relaxed) - before, end)
        };
        for _ in 0..PASSING_REPEATS {
            let (elapsed, commands, end) = timed(&|| fleetcheck_run::<M, Correct>(seed));
            fc.passing(seed, elapsed, commands, end);
            let (elapsed, commands, end) = timed(&|| proptest_run::<R, M, Correct>(seed));
            pt.passing(seed, elapsed, commands, end);
        }
        fc.failing(
            seed,
            fleetcheck_run::<M, Buggy>(seed),
            is_minimal,
            initial_size,
        );
        pt.failing(
            seed,
            proptest_run::<R, M, Buggy>(seed),
            is_minimal,
            initial_size,
        );
    }
    for (engine, tally) in [("fleetcheck", &fc), ("proptest", &pt)] {
        for anomaly in &tally.anomalies {
            eprintln!("{name} / {engine}: {anomaly}");
        }
    }
    vec![
        fc.row(name, "fleetcheck", size_name),
        pt.row(name, "proptest-sm", size_name),
    ]
}

fn main() {
    let default_hook = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if !EXPECTED_PANIC.with(Cell::get) {
            default_hook(info);
        }
    }));

    let start = Instant::now();
    let mut rows = Vec::new();
    rows.extend(
        compare::<RingRef, RingModel, RingSystem, CorrectRingSystem>(
            "ring",
            "capacity",
            ring_is_minimal,
            |s| s.capacity,
        ),
    );
    rows.extend(compare::<KvRef, KvModel, KvSystem, CorrectKvSystem>(
        "kv",
        "shards",
        kv_is_minimal,
        |s| usize::from(s.shards),
    ));
    rows.extend(compare::<NetRef, NetModel, NetSystem, CorrectNetSystem>(
        "net",
        "machines",
        net_is_minimal,
        |s| s.machines.len(),
    ));

    println!();
    println!(
        "fleetcheck-engine vs proptest-state-machine: {SEEDS} seeds per model, {CASES} cases of \
         {MIN_COMMANDS}..={MAX_COMMANDS} commands per run, one thread"
    );
    println!();
    println!(
        "| model | engine      |   cases/s | cmds/case |    cmds/s |  found  | shrink runs | budget | final cmds | final initial size | exact   |"
    );
    println!(
        "|       |             |  (passing)| (passing) | (passing) |         |  mean / max |  hit   | mean / max |  mean / max        |         |"
    );
    println!(
        "|-------|-------------|-----------|-----------|-----------|---------|-------------|--------|------------|--------------------|---------|"
    );
    for row in rows {
        println!("{row}");
    }
    println!();
    println!(
        "passing: {PASSING_REPEATS} whole runs per seed on the correct systems, wall time with \
         generation; cmds/case: commands executed per case (fleetcheck's sizes grow over a run, \
         proptest's do not)."
    );
    println!(
        "shrink runs: system executions after the first failure (fleetcheck: Failure::shrink.runs; \
         proptest: calls of the test closure). budget hit: fleetcheck max_runs 1000, proptest \
         max_shrink_iters 4 x cases = 400."
    );
    println!(
        "final sizes and exact are over the seeds that found the bug; exact: the unique minimal \
         counterexample of planted.rs."
    );
    println!("total time: {:.1} s", start.elapsed().as_secs_f64());
}
