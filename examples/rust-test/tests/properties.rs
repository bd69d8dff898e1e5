//! Properties of real systems as `#[test]`s, through `fleetcheck_harness::testing`.

use std::path::PathBuf;

use fleetcheck_harness::testing::{self, Settings};

/// A settings of few cases and a regression directory of the test's own.
fn settings(name: &str, cases: u32, seed: u64) -> Settings {
    let mut s = Settings::from_env();
    s.config.tests = cases;
    s.config.seed = Some(seed);
    s.regressions = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("regressions-{name}"));
    s
}

#[test]
fn etcd_keeps_its_promises() {
    let (model, system) = rust_test::scenario_file("etcd.toml");
    testing::check_with("etcd", &model, &system, &settings("etcd", 8, 3));
}

/// The planted bug fails the test with its minimal counterexample and keeps it; the next run
/// runs that regression case first, and it fails again.
#[test]
fn a_planted_bug_fails_and_is_kept_as_a_regression_case() {
    let (model, system) = rust_test::scenario_file("local-files.toml");
    let s = settings("local-files", 100, 1);
    let _ = std::fs::remove_dir_all(&s.regressions);
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        testing::check_with("local-files", &model, &system, &s)
    }))
    .expect_err("the planted bug is found");
    let text = first.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("local-files FAILED (seed 1)"), "{text}");
    assert!(text.contains("acknowledged write lost"), "{text}");
    assert!(text.contains("kept as a regression case"), "{text}");
    let kept: Vec<_> = std::fs::read_dir(&s.regressions)
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        testing::check_with("local-files", &model, &system, &s)
    }))
    .expect_err("the regression case fails again");
    let text = again.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        text.contains("regression case") && text.contains("still fails"),
        "{text}"
    );
}
