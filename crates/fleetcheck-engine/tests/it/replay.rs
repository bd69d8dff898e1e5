//! Replay files: a failing case written as JSON runs again exactly.

use fleetcheck_engine::{
    describe_failure, execute, run, Config, Outcome, ReplayError, ReplayFile, Verdict,
};

use crate::planted::*;

#[test]
fn replay_file_round_trips_and_replays_the_same_failure() {
    let report = run(
        &NetModel,
        &NetSystem,
        &Config {
            seed: Some(11),
            ..Config::default()
        },
        &(),
    );
    let Outcome::Failed(f) = report.outcome else {
        panic!("expected failed");
    };
    let file = ReplayFile::<NetModel>::new(
        "net",
        report.seed,
        f.minimal.clone(),
        f.reason.clone(),
        serde_json::json!({"backend": "fake"}),
    );
    let text = file.to_json();
    let back = ReplayFile::<NetModel>::from_json(&text, "net").expect("parses");
    assert_eq!(back.case, f.minimal);
    assert_eq!(back.seed, 11);
    let trace = execute(&NetModel, &NetSystem, &back.case);
    assert_eq!(trace.verdict, f.trace.verdict);
    assert!(matches!(trace.verdict, Verdict::Failed { .. }));

    assert!(matches!(
        ReplayFile::<NetModel>::from_json(&text, "ring"),
        Err(ReplayError::WrongScenario { .. })
    ));
    assert!(matches!(
        ReplayFile::<NetModel>::from_json("{", "net"),
        Err(ReplayError::Malformed(_))
    ));
    assert_eq!(ReplayFile::<NetModel>::scenario_of(&text).unwrap(), "net");
}

#[test]
fn counterexample_text_shows_network_commands_results_and_states() {
    let report = run(
        &NetModel,
        &NetSystem,
        &Config {
            seed: Some(2),
            ..Config::default()
        },
        &(),
    );
    let Outcome::Failed(f) = report.outcome else {
        panic!("expected failed");
    };
    let text = describe_failure(&NetModel, &f);
    assert!(text.contains("Initial state:"), "{text}");
    assert!(text.contains("kernel"), "{text}");
    assert!(text.contains("Ping("), "{text}");
    assert!(text.contains("-> false"), "{text}");
    assert!(text.contains("state:"), "{text}");
    assert!(text.contains("✗"), "{text}");
    assert!(text.contains("failed: ping to"), "{text}");
}
