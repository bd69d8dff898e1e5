//! Throughput of the kv scenario: etcd clusters under faults on netns (cases per minute, and
//! operations and faults per case), next to the in-memory store in the same run; and the cost
//! of finding and shrinking the planted lost write of the lossy in-memory store. etcd is
//! `run kv --system etcd`, i.e. the scenario file `examples/scenarios/etcd.toml` (the Rust
//! etcd store it replaced ran 28.5 cases/min against the file's 28.1 here); Redis runs both
//! ways, the Rust store beside `examples/scenarios/redis.toml` (parity).
//!
//! `cargo bench -p fleetcheck --bench kv_run` (as root, with etcd-server and etcd-client).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetcheck_engine::{run, Config, Model, Outcome, Report};
use fleetcheck_fabric::host::AgentCommand;
use fleetcheck_fabric::netns::{NetnsBackend, NetnsConfig};
use fleetcheck_fabric::Backend;
use fleetcheck_scenarios::file::store::FileStore;
use fleetcheck_scenarios::kv::memory::MemoryStore;
use fleetcheck_scenarios::kv::redis::RedisStore;
use fleetcheck_scenarios::kv::{AnyStore, KvConfig, KvModel, KvSystem, Store};

fn per_case(report: &Report<KvModel>, group: &str) -> f64 {
    let total: u64 = report.stats.group(group).map_or(0, |g| g.values().sum());
    total as f64 / report.cases_run.max(1) as f64
}

fn faults_per_case(report: &Report<KvModel>) -> f64 {
    let total: u64 = report.stats.group("command").map_or(0, |g| {
        g.iter().filter(|(k, _)| *k != "Ops").map(|(_, v)| v).sum()
    });
    total as f64 / report.cases_run.max(1) as f64
}

fn row<M: Model>(name: &str, report: &Report<M>, wall: Duration, ops: f64, faults: f64) {
    println!(
        "| {name:<22} | {:<6} | {:>5} | {:>8.1} | {:>9.1} | {:>8.1} | {:>11.1} |",
        report.outcome.status(),
        report.cases_run,
        wall.as_secs_f64(),
        report.cases_run as f64 * 60.0 / wall.as_secs_f64(),
        ops,
        faults
    );
}

/// The model and system of `examples/scenarios/<name>` on `backend`.
fn from_scenario_file(name: &str, backend: &Arc<dyn Backend>) -> (KvModel, KvSystem<FileStore>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/scenarios")
        .join(name);
    let file = fleetcheck_scenarios::config::ScenarioConfig::from_file(&path).unwrap();
    let system = KvSystem::new(FileStore::new(backend.clone(), &file, None));
    (KvModel::for_service(&file, None), system)
}

/// Runs `system` and prints its row (for a failure, flaky or not, its throughput until the
/// failure: the shrinking is reported on its own); says how the run ended.
fn row_until_failure<S: Store>(
    name: &str,
    model: &KvModel,
    system: &KvSystem<S>,
    config: &Config,
) -> String {
    let start = Instant::now();
    let report = run(model, system, config, &());
    let wall = start.elapsed();
    let ops = per_case(&report, "operation");
    let faults = faults_per_case(&report);
    let (f, status) = match &report.outcome {
        Outcome::Failed(f) => (f, "failed"),
        Outcome::Flaky(f) => (f, "flaky (did not fail again)"),
        Outcome::Aborted { message, .. } => {
            row(name, &report, wall, ops, faults);
            return format!("{name}: aborted: {message}");
        }
        other => {
            row(name, &report, wall, ops, faults);
            return format!("{name}: {}", other.status());
        }
    };
    let searching = wall.saturating_sub(f.shrink.elapsed);
    row(
        &format!("{name} (until fail)"),
        &report,
        searching,
        ops,
        faults,
    );
    format!(
        "{name}: {status} at case {}; shrunk {} -> {} commands in {} runs, {:.1} s; \
         reproduced {}/{}\n  {}",
        report.cases_run,
        f.original.commands.len(),
        f.minimal.commands.len(),
        f.shrink.runs,
        f.shrink.elapsed.as_secs_f64(),
        f.reproduced,
        f.reproduce_runs,
        f.reason.lines().next().unwrap_or_default()
    )
}

fn main() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("kv_run: needs root (it builds namespaces)");
        std::process::exit(3);
    }
    let agent = AgentCommand {
        program: env!("CARGO_BIN_EXE_fleetcheck").into(),
        args: vec!["agent".into()],
    };
    let netns: Arc<dyn Backend> = Arc::new(NetnsBackend::new(NetnsConfig::new(agent)).unwrap());
    let kv = KvConfig::default();
    let model = KvModel {
        config: kv.clone(),
        ..KvModel::default()
    };
    // Sequences of 12..=16 commands: about 20 client operations and 6 faults per case.
    let config = Config {
        tests: 20,
        min_size: 12,
        max_size: 16,
        seed: Some(7),
        workers: 4,
        ..Config::default()
    };
    println!(
        "kv scenario: {} cases of {}..={} commands, 3-node clusters, {} workers, faults {}",
        config.tests,
        config.min_size,
        config.max_size,
        config.workers,
        kv.faults
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join("/")
    );
    println!();
    println!("| system                 | status | cases | wall (s) | cases/min | ops/case | faults/case |");
    println!("|------------------------|--------|-------|----------|-----------|----------|-------------|");
    let etcd = KvSystem::new(
        AnyStore::for_config(
            "etcd",
            netns.clone(),
            &fleetcheck_scenarios::config::ScenarioConfig::default(),
        )
        .expect("a built-in system"),
    );
    let etcd_outcome = row_until_failure("etcd 3.4 on netns", &model, &etcd, &config);

    let redis = KvSystem::new(RedisStore::new(
        netns.clone(),
        kv.memory_mb,
        Duration::from_millis(kv.op_timeout_ms),
    ));
    let redis_outcome = row_until_failure("redis 7.0", &model, &redis, &config);
    // The same Redis from a scenario file: the same cases.
    let (file_model, from_file) = from_scenario_file("redis.toml", &netns);
    let redis_file_outcome = row_until_failure("redis.toml", &file_model, &from_file, &config);

    let memory = KvSystem::new(MemoryStore::default());
    let start = Instant::now();
    let report = run(&model, &memory, &config, &());
    let wall = start.elapsed();
    row(
        "in-memory (correct)",
        &report,
        wall,
        per_case(&report, "operation"),
        faults_per_case(&report),
    );

    println!();
    for outcome in [etcd_outcome, redis_outcome, redis_file_outcome] {
        println!("{outcome}");
    }
    println!();
    println!("Finding and shrinking the lossy store's lost write (seeds 0..20, 100 cases each):");
    let lossy = KvSystem::new(MemoryStore {
        lose_unreplicated_writes: true,
        ..MemoryStore::default()
    });
    let (mut found, mut runs, mut commands, mut spent) = (0, 0u32, 0usize, Duration::ZERO);
    for seed in 0..20 {
        let report = run(
            &model,
            &lossy,
            &Config {
                seed: Some(seed),
                ..Config::default()
            },
            &(),
        );
        if let Outcome::Failed(f) = report.outcome {
            found += 1;
            runs += f.shrink.runs;
            commands += f.minimal.commands.len();
            spent += f.shrink.elapsed;
        }
    }
    println!(
        "found {found}/20; shrink runs mean {:.1}; minimal commands mean {:.1}; shrink time mean {:.2} ms",
        f64::from(runs) / f64::from(found.max(1)),
        commands as f64 / f64::from(found.max(1)),
        spent.as_secs_f64() * 1000.0 / f64::from(found.max(1))
    );
}
