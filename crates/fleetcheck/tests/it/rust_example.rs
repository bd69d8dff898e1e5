//! `examples/rust-test`: a crate outside the workspace tests real systems from `cargo test`
//! through `fleetcheck_harness::testing` — etcd passes; a planted bug fails the test with its
//! minimal counterexample, kept as a regression case that fails first next time — its agent
//! found or built by the helper, not by hand.

use std::path::Path;
use std::process::Command;

use crate::{require_root, run};

#[test]
fn an_outside_crate_tests_real_systems_from_cargo_test() {
    if !require_root() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = root.join("examples/rust-test");
    std::fs::copy(root.join("Cargo.lock"), example.join("Cargo.lock")).unwrap();
    // The echo example's target directory: the same dependencies, built once.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("echo-scenario");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let (code, out, err) = run(Command::new(cargo)
        .args(["test", "--offline", "--manifest-path"])
        .arg(example.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("FLEETCHECK_AGENT"));
    assert_eq!(code, 0, "{out}{err}");
    for test in [
        "test etcd_keeps_its_promises ... ok",
        "test a_planted_bug_fails_and_is_kept_as_a_regression_case ... ok",
    ] {
        assert!(out.contains(test), "{out}{err}");
    }
}
