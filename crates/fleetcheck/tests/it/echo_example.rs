//! `examples/echo-scenario`: a scenario crate outside the workspace registers its own scenario
//! (a TCP echo service on each machine, version 2 dropping every third connection) with the
//! harness, and gets run, shrinking, replay, the report folder with its timeline and JUnit, on
//! the fake backend and on netns. It is built with this workspace's lock file, offline, in a
//! target directory of its own under this one's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{last_json, require_root, run, temp_dir};

/// The example's binary, built once.
fn echo_scenario() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let example = root.join("examples/echo-scenario");
        std::fs::copy(root.join("Cargo.lock"), example.join("Cargo.lock")).unwrap();
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("echo-scenario");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--offline", "--manifest-path"])
            .arg(example.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "the example does not build:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("debug/echo-scenario")
    })
}

/// Runs the echo scenario on `backend`: it must find the planted fault, shrink it to one
/// machine of version 2 booted and sent three messages, write the report folder and JUnit,
/// and the replay must fail again the same way.
fn finds_shrinks_reports_and_replays(backend: &str) {
    let dir = temp_dir(&format!("echo-{backend}"));
    let report = dir.join("report");
    let junit = dir.join("junit.xml");
    let (code, out, err) = run(Command::new(echo_scenario())
        .current_dir(&dir)
        .args(["run", "echo", "--seed", "1", "--tests", "100", "--json"])
        .args(["--backend", backend])
        .arg("--report")
        .arg(&report)
        .arg("--junit")
        .arg(&junit));
    assert_eq!(code, 1, "{out}{err}");
    let j = last_json(&out);
    let commands = j["counterexample"]["commands"].as_array().unwrap();
    assert_eq!(commands.len(), 4, "boot and three sends: {commands:?}");
    let machines = j["counterexample"]["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 1, "{machines:?}");
    assert_eq!(machines[0]["version"], 2);
    for file in ["replay.json", "steps.json", "summary.json", "timeline.html"] {
        assert!(report.join(file).is_file(), "no {file} in the report");
    }
    let page = std::fs::read_to_string(report.join("timeline.html")).unwrap();
    assert!(page.contains("send "), "the timeline has no send step");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("JUnit is XML");
    let case = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase"))
        .unwrap();
    assert_eq!(case.attribute("name"), Some("echo"));
    assert!(case.children().any(|n| n.has_tag_name("failure")), "{xml}");

    let replayed = dir.join("replayed");
    let (code, out, err) = run(Command::new(echo_scenario())
        .current_dir(&dir)
        .arg("replay")
        .arg(report.join("replay.json"))
        .arg("--report")
        .arg(&replayed));
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("FAILED again"), "{out}");
    assert!(replayed.join("timeline.html").is_file());
    if backend == "netns" {
        // The service's own log, kept by the report from the machine's disk.
        let log = std::fs::read_to_string(replayed.join("machines/m1/echo.log")).unwrap();
        assert!(log.contains("dropped"), "{log}");
    }
}

#[test]
fn echo_example_on_fake() {
    finds_shrinks_reports_and_replays("fake");
}

#[test]
fn echo_example_on_netns() {
    if !require_root() {
        return;
    }
    finds_shrinks_reports_and_replays("netns");
}
