//! Throughput of the seed's test: `fleetcheck run ping` (100 cases, default sizes) on netns
//! with 1 worker and with the default workers, next to the in-memory fake backend in the same
//! run, and where the netns time goes (summed over workers).
//!
//! `cargo bench -p fleetcheck --bench ping_run` (as root).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetcheck_engine::{run, Abort, Config, Outcome, System};
use fleetcheck_fabric::fake::FakeBackend;
use fleetcheck_fabric::host::AgentCommand;
use fleetcheck_fabric::netns::{NetnsBackend, NetnsConfig};
use fleetcheck_fabric::{Backend, Network};
use fleetcheck_scenarios::cluster::ClusterCmd;
use fleetcheck_scenarios::config::ScenarioConfig;
use fleetcheck_scenarios::ping::{PingCmd, PingModel, PingOutput, PingState, PingSystem};

/// Times every operation of the ping system, by kind.
struct Timed {
    inner: PingSystem,
    spent: Mutex<BTreeMap<&'static str, (u64, Duration)>>,
}

impl Timed {
    fn new(inner: PingSystem) -> Self {
        Self {
            inner,
            spent: Mutex::new(BTreeMap::new()),
        }
    }

    fn add(&self, kind: &'static str, d: Duration) {
        let mut spent = self.spent.lock().unwrap();
        let e = spent.entry(kind).or_default();
        e.0 += 1;
        e.1 += d;
    }
}

impl System<PingModel> for Timed {
    type Instance = Box<dyn Network>;

    fn setup(&self, s: &PingState) -> Result<Box<dyn Network>, Abort> {
        let t = Instant::now();
        let r = self.inner.setup(s);
        self.add("create network", t.elapsed());
        r
    }

    fn run(
        &self,
        net: &mut Box<dyn Network>,
        s: &PingState,
        c: &PingCmd,
    ) -> Result<PingOutput, Abort> {
        let kind = match c {
            PingCmd::Cluster(ClusterCmd::Boot { .. }) => "boot",
            PingCmd::Cluster(ClusterCmd::Shutdown { .. }) => "shutdown",
            PingCmd::Ping { to, .. } if s.machine(to).is_some_and(|m| m.running) => "ping online",
            PingCmd::Ping { .. } => "ping offline (waits the timeout)",
            _ => "fault",
        };
        let t = Instant::now();
        let r = self.inner.run(net, s, c);
        self.add(kind, t.elapsed());
        r
    }

    fn teardown(&self, net: Box<dyn Network>) -> Result<(), Abort> {
        let t = Instant::now();
        let r = self.inner.teardown(net);
        self.add("teardown", t.elapsed());
        r
    }
}

fn one_run(backend: Arc<dyn Backend>, workers: usize, seed: u64) -> (Duration, Timed) {
    let cfg = ScenarioConfig::default();
    let system = Timed::new(PingSystem::new(backend, &cfg));
    let config = Config {
        seed: Some(seed),
        workers,
        ..Config::default()
    };
    let start = Instant::now();
    let report = run(&PingModel::new(cfg), &system, &config, &());
    let wall = start.elapsed();
    assert!(
        matches!(report.outcome, Outcome::Passed),
        "the ping property holds on a correct network, got {}",
        report.outcome.status()
    );
    (wall, system)
}

fn main() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("ping_run: needs root (it builds namespaces)");
        std::process::exit(3);
    }
    let agent = AgentCommand {
        program: env!("CARGO_BIN_EXE_fleetcheck").into(),
        args: vec!["agent".into()],
    };
    let netns: Arc<dyn Backend> = Arc::new(NetnsBackend::new(NetnsConfig::new(agent)).unwrap());
    let fake: Arc<dyn Backend> = Arc::new(FakeBackend::new());
    let default_workers = PingSystem::default_workers();
    let seeds = [1u64, 2, 3];

    println!(
        "fleetcheck run ping: 100 cases of 1..=20 commands, ping timeout 100 ms, seeds {seeds:?}"
    );
    println!();
    println!("| backend | workers | wall per run (s): min / median / max | cases/s |");
    println!("|---------|---------|--------------------------------------|---------|");
    let mut last_timed = None;
    for (name, backend, workers) in [
        ("fake", fake.clone(), default_workers),
        ("netns", netns.clone(), 1),
        ("netns", netns.clone(), default_workers),
    ] {
        let mut walls: Vec<Duration> = Vec::new();
        for seed in seeds {
            let (wall, timed) = one_run(backend.clone(), workers, seed);
            walls.push(wall);
            if name == "netns" && workers == default_workers {
                last_timed = Some(timed);
            }
        }
        walls.sort();
        let median = walls[walls.len() / 2];
        println!(
            "| {name:<7} | {workers:>7} | {:>10.3} / {:>6.3} / {:>6.3}       | {:>7.0} |",
            walls[0].as_secs_f64(),
            median.as_secs_f64(),
            walls[walls.len() - 1].as_secs_f64(),
            100.0 / median.as_secs_f64()
        );
    }
    let timed = last_timed.expect("the netns run with default workers ran");
    let spent = timed.spent.into_inner().unwrap();
    let total: Duration = spent.values().map(|(_, d)| *d).sum();
    println!();
    println!(
        "Where netns time goes (default workers, last seed; summed over workers, {:.2} s in all):",
        total.as_secs_f64()
    );
    println!("| operation | count | total (s) | mean (ms) | share |");
    println!("|-----------|-------|-----------|-----------|-------|");
    let mut rows: Vec<_> = spent.into_iter().collect();
    rows.sort_by_key(|b| std::cmp::Reverse(b.1 .1));
    for (kind, (n, d)) in rows {
        println!(
            "| {kind} | {n} | {:.3} | {:.2} | {:.1}% |",
            d.as_secs_f64(),
            d.as_secs_f64() * 1000.0 / n as f64,
            100.0 * d.as_secs_f64() / total.as_secs_f64()
        );
    }
}
