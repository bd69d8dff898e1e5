//! The outcomes (flaky and too loaded among them), determinism across seeds and workers, flakiness, budgets, statistics.

use std::sync::atomic::{AtomicU32, Ordering};

use fleetcheck_engine::{
    execute, run, Abort, Case, Config, Event, Gen, Model, Observer, Outcome, ShrinkConfig, System,
    Verdict,
};

use crate::planted::*;

fn config(seed: u64) -> Config {
    Config {
        seed: Some(seed),
        ..Config::default()
    }
}

/// A correct network: every ping to a running machine is answered.
#[derive(Debug)]
struct HonestNet;
impl System<NetModel> for HonestNet {
    type Instance = NetState;
    fn setup(&self, s: &NetState) -> Result<NetState, Abort> {
        Ok(s.clone())
    }
    fn run(&self, net: &mut NetState, _: &NetState, c: &NetCmd) -> Result<bool, Abort> {
        *net = NetModel.next_state(net, c);
        Ok(match c {
            NetCmd::Ping(f, t) => net.get(f).unwrap().running && net.get(t).unwrap().running,
            _ => true,
        })
    }
    fn teardown(&self, _: NetState) -> Result<(), Abort> {
        Ok(())
    }
}

#[test]
fn correct_system_passes_all_cases_with_statistics() {
    let report = run(&NetModel, &HonestNet, &config(1), &());
    assert!(matches!(report.outcome, Outcome::Passed));
    assert_eq!(report.passed, 100);
    assert_eq!(report.cases_run, 100);
    let machines: u64 = report.stats.group("machines").unwrap().values().sum();
    assert_eq!(machines, 100);
    let commands = report.stats.group("command").unwrap();
    assert!(commands.contains_key("Boot") && commands.contains_key("Ping"));
    assert!(report.stats.table().contains("kernel"));
}

#[test]
fn postcondition_reads_the_current_state_not_a_generation_copy() {
    // The seed's bug: Ping carried copies of its machines taken at generation time. Here the
    // ping after the shutdown must expect no reply, and removing the shutdown (as shrinking
    // does) must flip that expectation.
    let mut g = Gen::new(0, 0);
    let mut initial = NetModel.initial_state(&mut g);
    while initial.machines.len() < 2 {
        initial = NetModel.initial_state(&mut g);
    }
    let (a, b) = (
        initial.machines[0].id.clone(),
        initial.machines[1].id.clone(),
    );
    let with_shutdown = Case::<NetModel> {
        seed: 0,
        initial: initial.clone(),
        commands: vec![
            NetCmd::Boot(a.clone()),
            NetCmd::Boot(b.clone()),
            NetCmd::Shutdown(b.clone()),
            NetCmd::Ping(a.clone(), b.clone()),
        ],
    };
    assert_eq!(
        execute(&NetModel, &HonestNet, &with_shutdown).verdict,
        Verdict::Passed
    );
    let mut without = with_shutdown.clone();
    without.commands.remove(2);
    assert_eq!(
        execute(&NetModel, &HonestNet, &without).verdict,
        Verdict::Passed
    );
}

#[test]
fn same_seed_same_cases_and_counterexample() {
    for model_seed in [3, 17] {
        let a = run(&NetModel, &NetSystem, &config(model_seed), &());
        let b = run(&NetModel, &NetSystem, &config(model_seed), &());
        let (Outcome::Failed(fa), Outcome::Failed(fb)) = (a.outcome, b.outcome) else {
            panic!("both runs fail");
        };
        assert_eq!(fa.original, fb.original);
        assert_eq!(fa.minimal, fb.minimal);
        assert_eq!(fa.index, fb.index);
        assert_eq!(a.stats, b.stats);
    }
}

#[test]
fn workers_do_not_change_the_result() {
    for seed in 0..10 {
        let one = run(&NetModel, &NetSystem, &config(seed), &());
        let four = run(
            &NetModel,
            &NetSystem,
            &Config {
                workers: 4,
                ..config(seed)
            },
            &(),
        );
        assert_eq!(one.outcome.status(), four.outcome.status());
        assert_eq!(one.stats, four.stats);
        if let (Outcome::Failed(a), Outcome::Failed(b)) = (one.outcome, four.outcome) {
            assert_eq!(a.index, b.index);
            assert_eq!(a.minimal, b.minimal);
        }
    }
}

/// Aborts (infrastructure failure) on the first ping.
#[derive(Debug)]
struct BrokenInfra;
impl System<NetModel> for BrokenInfra {
    type Instance = ();
    fn setup(&self, _: &NetState) -> Result<(), Abort> {
        Ok(())
    }
    fn run(&self, _: &mut (), _: &NetState, c: &NetCmd) -> Result<bool, Abort> {
        match c {
            NetCmd::Ping(..) => Err(Abort::new("bridge vanished")),
            _ => Ok(true),
        }
    }
    fn teardown(&self, _: ()) -> Result<(), Abort> {
        Ok(())
    }
}

#[test]
fn infrastructure_failure_aborts_and_is_never_shrunk() {
    let report = run(&NetModel, &BrokenInfra, &config(2), &());
    let Outcome::Aborted { message, step, .. } = report.outcome else {
        panic!("expected aborted, got {}", report.outcome.status());
    };
    assert_eq!(message, "bridge vanished");
    assert!(step.is_some());
}

/// Fails teardown after every case.
#[derive(Debug)]
struct LeakyTeardown;
impl System<RingModel> for LeakyTeardown {
    type Instance = Ring;
    fn setup(&self, s: &RingState) -> Result<Ring, Abort> {
        Ok(Ring::new(s.capacity))
    }
    fn run(&self, r: &mut Ring, s: &RingState, c: &RingCmd) -> Result<Option<u32>, Abort> {
        RingSystem.run(r, s, c)
    }
    fn teardown(&self, _: Ring) -> Result<(), Abort> {
        Err(Abort::new("namespace busy"))
    }
}

#[test]
fn teardown_failure_aborts() {
    let report = run(&RingModel, &LeakyTeardown, &config(0), &());
    assert_eq!(report.outcome.status(), "aborted");
}

/// A model whose generator never finds an enabled command.
#[derive(Debug)]
struct Stuck;
impl Model for Stuck {
    type State = u8;
    type Command = u8;
    type Output = ();
    fn initial_state(&self, _: &mut Gen) -> u8 {
        0
    }
    fn command(&self, _: &u8, g: &mut Gen) -> Option<u8> {
        Some(g.range(0..=9))
    }
    fn precondition(&self, _: &u8, _: &u8) -> bool {
        false
    }
    fn next_state(&self, s: &u8, _: &u8) -> u8 {
        *s
    }
    fn postcondition(&self, _: &u8, _: &u8, _: &()) -> fleetcheck_engine::Check {
        Ok(())
    }
}
impl System<Stuck> for () {
    type Instance = ();
    fn setup(&self, _: &u8) -> Result<(), Abort> {
        Ok(())
    }
    fn run(&self, _: &mut (), _: &u8, _: &u8) -> Result<(), Abort> {
        Ok(())
    }
    fn teardown(&self, _: ()) -> Result<(), Abort> {
        Ok(())
    }
}

#[test]
fn too_many_rejections_gives_up() {
    let report = run(&Stuck, &(), &config(0), &());
    let Outcome::GaveUp { discarded, limit } = report.outcome else {
        panic!("expected gave up, got {}", report.outcome.status());
    };
    assert!(discarded > limit);
    assert_eq!(report.cases_run, 0);
}

/// The ring bug, but only every other run shows it.
#[derive(Debug, Default)]
struct FlakyRing {
    runs: AtomicU32,
}
impl System<RingModel> for FlakyRing {
    type Instance = (Ring, bool);
    fn setup(&self, s: &RingState) -> Result<(Ring, bool), Abort> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        Ok((Ring::new(s.capacity), n.is_multiple_of(2)))
    }
    fn run(&self, r: &mut (Ring, bool), s: &RingState, c: &RingCmd) -> Result<Option<u32>, Abort> {
        let out = RingSystem.run(&mut r.0, s, c)?;
        // When not flaky this run, answer as the model would.
        if !r.1 {
            if let RingCmd::Pop = c {
                return Ok(s.items.first().copied());
            }
        }
        Ok(out)
    }
    fn teardown(&self, _: (Ring, bool)) -> Result<(), Abort> {
        Ok(())
    }
}

#[test]
fn flaky_failure_reports_reproduction_rate_and_shrinks_with_k_of_n() {
    let cfg = Config {
        reproduce_runs: 10,
        shrink: ShrinkConfig {
            attempts: 3,
            required: 1,
            ..ShrinkConfig::default()
        },
        ..config(5)
    };
    let report = run(&RingModel, &FlakyRing::default(), &cfg, &());
    let Outcome::Failed(f) = report.outcome else {
        panic!("expected failed, got {}", report.outcome.status());
    };
    assert_eq!(f.reproduce_runs, 10);
    assert_eq!(f.reproduced, 5, "every other run fails");
    assert!(ring_is_minimal(&f.minimal), "{:?}", f.minimal);
}

/// A correct network whose first `bad` runs of a case with a ping to a running machine get
/// no reply (as under a loaded host); every run after that answers.
#[derive(Debug)]
struct LateOnce {
    bad: u32,
    runs: AtomicU32,
}
impl System<NetModel> for LateOnce {
    type Instance = (NetState, bool);
    fn setup(&self, s: &NetState) -> Result<(NetState, bool), Abort> {
        Ok((s.clone(), false))
    }
    fn run(&self, n: &mut (NetState, bool), s: &NetState, c: &NetCmd) -> Result<bool, Abort> {
        let answer = HonestNet.run(&mut n.0, s, c)?;
        if matches!(c, NetCmd::Ping(..)) && answer && !n.1 {
            n.1 = true;
            if self.runs.fetch_add(1, Ordering::SeqCst) < self.bad {
                return Ok(false);
            }
        }
        Ok(answer)
    }
    fn teardown(&self, _: (NetState, bool)) -> Result<(), Abort> {
        Ok(())
    }
}

#[test]
fn a_failure_that_never_reproduces_is_flaky_not_failed() {
    let report = run(
        &NetModel,
        &LateOnce {
            bad: 1,
            runs: AtomicU32::new(0),
        },
        &config(1),
        &(),
    );
    assert_eq!(report.outcome.status(), "flaky");
    let Outcome::Flaky(f) = report.outcome else {
        panic!("expected flaky");
    };
    assert_eq!((f.reproduced, f.reproduce_runs), (0, 3));
    assert!(f.is_flaky());
    let text = fleetcheck_engine::describe_failure(&NetModel, &f);
    assert!(
        text.starts_with("Failure that did not reproduce, not a counterexample"),
        "{text}"
    );
}

#[test]
fn a_failure_that_reproduces_once_is_a_counterexample_with_its_count() {
    // Fails in the search and in every shrink candidate and reproduction but the last two.
    let system = LateOnce {
        bad: u32::MAX,
        runs: AtomicU32::new(0),
    };
    let first = run(&NetModel, &system, &config(1), &());
    let Outcome::Failed(f) = first.outcome else {
        panic!("expected failed, got {}", first.outcome.status());
    };
    let used = system.runs.load(Ordering::SeqCst);
    // The same search again, with the last two reproductions answering.
    let system = LateOnce {
        bad: used - 2,
        runs: AtomicU32::new(0),
    };
    let second = run(&NetModel, &system, &config(1), &());
    let Outcome::Failed(g) = second.outcome else {
        panic!("expected failed, got {}", second.outcome.status());
    };
    assert_eq!((f.reproduced, g.reproduced, g.reproduce_runs), (3, 1, 3));
    assert!(!g.is_flaky());
    assert!(fleetcheck_engine::describe_failure(&NetModel, &g).contains("reproduced 1/3"));
}

#[test]
fn without_reproduction_runs_a_failure_stays_a_counterexample() {
    let report = run(
        &NetModel,
        &LateOnce {
            bad: 1,
            runs: AtomicU32::new(0),
        },
        &Config {
            reproduce_runs: 0,
            ..config(1)
        },
        &(),
    );
    assert_eq!(report.outcome.status(), "failed");
}

/// The host is too loaded to judge the first ping of every case.
#[derive(Debug)]
struct Overloaded;
impl System<NetModel> for Overloaded {
    type Instance = ();
    fn setup(&self, _: &NetState) -> Result<(), Abort> {
        Ok(())
    }
    fn run(&self, _: &mut (), _: &NetState, c: &NetCmd) -> Result<bool, Abort> {
        match c {
            NetCmd::Ping(..) => Err(Abort::overloaded("no reply; the host was 80 ms late")),
            _ => Ok(true),
        }
    }
    fn teardown(&self, _: ()) -> Result<(), Abort> {
        Ok(())
    }
}

#[test]
fn a_host_too_loaded_to_judge_is_its_own_abort() {
    let report = run(&NetModel, &Overloaded, &config(2), &());
    assert_eq!(report.outcome.status(), "too_loaded");
    let Outcome::Aborted {
        overloaded: true,
        message,
        step: Some(_),
        ..
    } = report.outcome
    else {
        panic!("expected too loaded");
    };
    assert_eq!(message, "no reply; the host was 80 ms late");
    // And a plain abort is not one.
    let report = run(&NetModel, &BrokenInfra, &config(2), &());
    assert!(matches!(
        report.outcome,
        Outcome::Aborted {
            overloaded: false,
            ..
        }
    ));
}

#[test]
fn shrink_budget_is_respected() {
    let cfg = Config {
        shrink: ShrinkConfig {
            max_runs: 3,
            ..ShrinkConfig::default()
        },
        ..config(0)
    };
    let report = run(&NetModel, &NetSystem, &cfg, &());
    let Outcome::Failed(f) = report.outcome else {
        panic!("expected failed");
    };
    assert!(f.shrink.runs <= 3);
    assert!(f.shrink.budget_exhausted);
}

/// Counts the real runs, to check that no candidate is run twice.
#[derive(Debug, Default)]
struct CountingNet {
    setups: AtomicU32,
}
impl System<NetModel> for CountingNet {
    type Instance = NetState;
    fn setup(&self, s: &NetState) -> Result<NetState, Abort> {
        self.setups.fetch_add(1, Ordering::SeqCst);
        NetSystem.setup(s)
    }
    fn run(&self, n: &mut NetState, s: &NetState, c: &NetCmd) -> Result<bool, Abort> {
        NetSystem.run(n, s, c)
    }
    fn teardown(&self, n: NetState) -> Result<(), Abort> {
        NetSystem.teardown(n)
    }
}

#[derive(Debug, Default)]
struct Events(std::sync::Mutex<Vec<Event>>);
impl Observer for Events {
    fn event(&self, e: &Event) {
        self.0.lock().unwrap().push(e.clone());
    }
}

#[test]
fn shrink_runs_are_counted_and_reported() {
    let system = CountingNet::default();
    let events = Events::default();
    let report = run(
        &NetModel,
        &system,
        &Config {
            reproduce_runs: 0,
            ..config(7)
        },
        &events,
    );
    let Outcome::Failed(f) = report.outcome else {
        panic!("expected failed");
    };
    let setups = system.setups.load(Ordering::SeqCst);
    assert_eq!(
        u64::from(setups),
        report.cases_run + u64::from(f.shrink.runs)
    );
    assert_eq!(
        f.shrink.candidates, f.shrink.runs,
        "one attempt per candidate"
    );
    let events = events.0.into_inner().unwrap();
    let candidates = events
        .iter()
        .filter(|e| matches!(e, Event::ShrinkCandidate { .. }))
        .count();
    assert_eq!(candidates as u32, f.shrink.candidates);
    assert!(matches!(events[0], Event::Started { seed: 7, .. }));
}
