//! Over 100 seeds, each planted bug is found and shrunk to its exact minimal counterexample in
//! at least 95.

use fleetcheck_engine::{run, Case, Config, Model, Outcome, System};

use crate::planted::*;

fn exact_minimal_count<M: Model, S: System<M>>(
    model: &M,
    system: &S,
    is_minimal: impl Fn(&Case<M>) -> bool,
) -> (u32, Vec<String>) {
    let mut hits = 0;
    let mut misses = Vec::new();
    for seed in 0..100u64 {
        let config = Config {
            seed: Some(seed),
            ..Config::default()
        };
        let report = run(model, system, &config, &());
        match report.outcome {
            Outcome::Failed(f) if is_minimal(&f.minimal) => {
                assert_eq!(
                    f.reproduced, f.reproduce_runs,
                    "deterministic bug reproduces"
                );
                hits += 1;
            }
            Outcome::Failed(f) => misses.push(format!("seed {seed}: {:?}", f.minimal)),
            other => misses.push(format!("seed {seed}: {}", other.status())),
        }
    }
    (hits, misses)
}

#[test]
fn ring_buffer_wraparound_shrinks_to_exact_minimum() {
    let (hits, misses) = exact_minimal_count(&RingModel, &RingSystem, ring_is_minimal);
    assert!(hits >= 95, "only {hits}/100 exact; misses: {misses:#?}");
}

#[test]
fn kv_delete_put_shrinks_to_exact_minimum() {
    let (hits, misses) = exact_minimal_count(&KvModel, &KvSystem, kv_is_minimal);
    assert!(hits >= 95, "only {hits}/100 exact; misses: {misses:#?}");
}

#[test]
fn network_kernel_pair_shrinks_to_exact_minimum() {
    let (hits, misses) = exact_minimal_count(&NetModel, &NetSystem, net_is_minimal);
    assert!(hits >= 95, "only {hits}/100 exact; misses: {misses:#?}");
}

#[test]
fn network_shrinks_machines_and_parameters() {
    let report = run(
        &NetModel,
        &NetSystem,
        &Config {
            seed: Some(4),
            ..Config::default()
        },
        &(),
    );
    let Outcome::Failed(f) = report.outcome else {
        panic!("expected a failure, got {}", report.outcome.status());
    };
    assert!(f.shrink.runs > 0 && f.shrink.accepted > 0);
    assert!(f.minimal.commands.len() <= f.original.commands.len());
    // The minimal network is smaller or simpler than the generated one.
    assert!(
        f.minimal.initial.machines.len() < f.original.initial.machines.len()
            || f.minimal
                .initial
                .machines
                .iter()
                .all(|m| m.memory == MIN_MEMORY)
    );
}
