//! Report folders, the timeline page in a real browser, and JUnit XML: on the fake backend,
//! the in-memory kv store, and (root) real namespaces.

use std::path::Path;

use crate::browser::{assert_rendered_with_failing_step, load, require_chromium};
use crate::{fleetcheck, last_json, require_root, run, temp_dir, write_config};

/// The files every counterexample's report folder has.
const FILES: &[&str] = &[
    "replay.json",
    "counterexample.txt",
    "steps.txt",
    "steps.json",
    "summary.json",
    "summary.txt",
    "timeline.html",
];

fn assert_folder(dir: &Path) -> serde_json::Value {
    for f in FILES {
        assert!(dir.join(f).is_file(), "{} has no {f}", dir.display());
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
            .expect("summary.json is JSON");
    let html = std::fs::read_to_string(dir.join("timeline.html")).unwrap();
    for fetch in ["http://", "https://", "src=\"//", "<link"] {
        assert!(
            !html.contains(fetch) || fetch == "http://" && only_svg_namespace(&html),
            "the page may fetch something ({fetch})"
        );
    }
    summary
}

/// `http://` appears only as the SVG namespace name, which is never fetched.
fn only_svg_namespace(html: &str) -> bool {
    html.matches("http://").count() == html.matches("http://www.w3.org/2000/svg").count()
}

fn junit_case(path: &Path) -> (String, Option<String>, String) {
    let text = std::fs::read_to_string(path).expect("junit written");
    let doc = roxmltree::Document::parse(&text).expect("JUnit XML parses");
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 1, "one test case per property: {text}");
    let case = cases[0];
    let failure = case.children().find(|n| n.has_tag_name("failure"));
    (
        case.attribute("name").unwrap_or_default().to_string(),
        failure.and_then(|f| f.attribute("message").map(String::from)),
        failure
            .and_then(|f| f.text())
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
fn failing_run_on_fake_writes_report_folder_and_junit() {
    let dir = temp_dir("report-fake");
    let config = write_config(
        &dir,
        "[network]\nmachines = { min = 2, max = 3 }\n[machine]\nsetup = [\"fail: planted\"]\n",
    );
    let report = dir.join("report");
    let junit = dir.join("junit.xml");
    let (code, out, err) = run(fleetcheck()
        .args(["run", "ping", "--backend", "fake", "--seed", "3", "--json"])
        .arg("--config")
        .arg(&config)
        .arg("--report")
        .arg(&report)
        .arg("--junit")
        .arg(&junit));
    assert_eq!(code, 1, "{err}");
    let j = last_json(&out);
    assert_eq!(j["report"], report.display().to_string());
    assert!(err.contains("timeline.html"), "{err}");
    let summary = assert_folder(&report);
    assert_eq!(summary["status"], "failed");
    assert_eq!(summary["seed"], 3);
    assert_eq!(summary["final_replay"]["verdict"], "failed at step 1");
    assert!(summary["replay_command"]
        .as_str()
        .unwrap()
        .ends_with("replay.json"));
    let machine = j["counterexample"]["commands"][0]["args"]["machine"]
        .as_str()
        .unwrap();
    let agent = std::fs::read_to_string(report.join(format!("machines/{machine}/agent.log")))
        .expect("the machine's output is kept");
    assert!(agent.contains("planted failure"), "{agent}");

    let (name, message, text) = junit_case(&junit);
    assert_eq!(name, "ping");
    assert!(message.unwrap().contains("planted failure"));
    assert!(
        text.contains("Counterexample") && text.contains("Boot("),
        "{text}"
    );

    // The replay file in the folder replays, and can write a report of its own.
    let again = dir.join("again");
    let (code, _, err) = run(fleetcheck()
        .arg("replay")
        .arg(report.join("replay.json"))
        .arg("--report")
        .arg(&again));
    assert_eq!(code, 1, "{err}");
    assert_eq!(assert_folder(&again)["status"], "failed");

    let Some(browser) = require_chromium() else {
        return;
    };
    let page = load(&browser, &report.join("timeline.html"), "ping-fake-setup");
    assert_rendered_with_failing_step(&page, 1);
}

/// A report folder is one run's: a run with the same seed replaces it whole (nothing of the
/// earlier run's machine logs stays), and of runs writing the same folder at once, one wins
/// whole, leaving no staging folders behind.
#[test]
fn a_report_folder_belongs_to_one_run() {
    let dir = temp_dir("report-owner");
    let config = write_config(
        &dir,
        "[network]\nmachines = { min = 2, max = 3 }\n[machine]\nsetup = [\"fail: planted\"]\n",
    );
    let report = dir.join("report");
    let args = |seed: &str| {
        let mut cmd = fleetcheck();
        cmd.args(["run", "ping", "--backend", "fake", "--seed", seed, "--json"])
            .arg("--config")
            .arg(&config)
            .arg("--report")
            .arg(&report);
        cmd
    };
    let (code, _, err) = run(&mut args("3"));
    assert_eq!(code, 1, "{err}");
    std::fs::create_dir_all(report.join("machines/ghost")).unwrap();
    std::fs::write(report.join("machines/ghost/agent.log"), "an earlier run").unwrap();
    let (code, _, err) = run(&mut args("3"));
    assert_eq!(code, 1, "{err}");
    assert!(
        !report.join("machines/ghost").exists(),
        "an earlier run's machine logs stay in the folder"
    );
    // Four at once, with different seeds: the folder is exactly one of them.
    let children: Vec<_> = ["3", "4", "5", "6"]
        .iter()
        .map(|seed| {
            args(seed)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert_eq!(c.wait().unwrap().code(), Some(1));
    }
    let summary = assert_folder(&report);
    let seed = summary["seed"].as_u64().unwrap();
    let replay: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("replay.json")).unwrap())
            .unwrap();
    assert_eq!(replay["seed"].as_u64(), Some(seed), "a mix of two runs");
    let stray: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".report."))
        .collect();
    assert!(stray.is_empty(), "staging folders left: {stray:?}");
}

#[test]
fn passing_run_writes_summary_and_passing_junit() {
    let dir = temp_dir("report-pass");
    let report = dir.join("report");
    let junit = dir.join("junit.xml");
    let (code, _, err) = run(fleetcheck()
        .args([
            "run",
            "ping",
            "--backend",
            "fake",
            "--seed",
            "1",
            "--tests",
            "5",
        ])
        .arg("--report")
        .arg(&report)
        .arg("--junit")
        .arg(&junit));
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["status"], "passed");
    let (name, failure, _) = junit_case(&junit);
    assert_eq!(name, "ping");
    assert!(failure.is_none());
}

#[test]
fn kv_lost_write_timeline_shows_workers_and_the_unplaceable_operation() {
    let dir = temp_dir("report-kv");
    let report = dir.join("report");
    let junit = dir.join("junit.xml");
    let (code, _, err) = run(fleetcheck()
        .args(["run", "kv", "--system", "memory-lossy", "--seed", "1"])
        .arg("--report")
        .arg(&report)
        .arg("--junit")
        .arg(&junit));
    assert_eq!(code, 1, "{err}");
    let summary = assert_folder(&report);
    assert_eq!(summary["backend"], "memory");
    assert!(
        summary["final_replay"]["history"]["operations"]
            .as_u64()
            .unwrap()
            >= 2
    );
    let history = std::fs::read_to_string(report.join("history.txt")).unwrap();
    assert!(history.contains("could not place"), "{history}");
    let ops: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("history.json")).unwrap())
            .unwrap();
    assert!(ops
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["not_linearizable_here"] == true));
    let (name, message, _) = junit_case(&junit);
    assert_eq!(name, "kv/memory-lossy");
    assert!(message.unwrap().contains("not linearizable"));

    let Some(browser) = require_chromium() else {
        return;
    };
    let page = load(&browser, &report.join("timeline.html"), "kv-memory-lossy");
    assert_rendered_with_failing_step(&page, 3);
    assert!(page.dom.contains(">client worker "), "no worker lane");
    assert!(
        page.dom.contains(r#"class="bar failing-bar""#),
        "the unplaceable operation is not marked"
    );
}

#[test]
fn report_and_junit_paths_that_cannot_be_written_are_input_errors() {
    let dir = temp_dir("report-bad");
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    for flag in ["--report", "--junit"] {
        let (code, out, err) = run(fleetcheck()
            .args([
                "run",
                "ping",
                "--backend",
                "fake",
                "--tests",
                "2",
                "--seed",
                "1",
            ])
            .arg(flag)
            .arg(file.join("below-a-file")));
        assert_eq!(code, 2, "{flag}: {out}{err}");
        assert_eq!(err.trim().lines().count(), 1, "{flag}: {err}");
    }
}

/// The planted fault of `examples/drop-icmp.toml` on the fake backend, which reads the nft
/// rule as netns does: the same minimal case as on namespaces, in milliseconds.
#[test]
fn drop_icmp_on_fake_report_timeline_in_chromium() {
    let dir = temp_dir("report-fake-drop");
    let report = dir.join("report");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/drop-icmp.toml");
    let (code, out, err) = run(fleetcheck()
        .args(["run", "ping", "--backend", "fake", "--seed", "4", "--json"])
        .args(["--config", config, "--report"])
        .arg(&report));
    assert_eq!(code, 1, "{err}");
    let j = last_json(&out);
    let commands = j["counterexample"]["commands"].as_array().unwrap();
    assert_eq!(commands.last().unwrap()["name"], "Ping", "{j}");
    assert_eq!(
        commands.len(),
        j["counterexample"]["machines"].as_array().unwrap().len() + 1,
        "every machine booted, then the ping: {j}"
    );
    assert!(
        j["reason"].as_str().unwrap().contains("did not answer"),
        "{j}"
    );
    let summary = assert_folder(&report);
    assert_eq!(summary["backend"], "fake");
    let Some(browser) = require_chromium() else {
        return;
    };
    let page = load(
        &browser,
        &report.join("timeline.html"),
        "ping-fake-drop-icmp",
    );
    assert_rendered_with_failing_step(&page, commands.len());
    assert!(page.dom.contains(">ping "), "no ping bar");
}

/// The planted fault of `examples/drop-icmp.toml` on real namespaces: the timeline shows the
/// boots, the unanswered ping marked as the failing step, and each machine's agent output.
#[test]
fn drop_icmp_on_netns_report_timeline_in_chromium() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("report-netns");
    let report = dir.join("report");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/drop-icmp.toml");
    let (code, out, err) = run(fleetcheck()
        .args(["run", "ping", "--seed", "4", "--json", "--config", config])
        .arg("--report")
        .arg(&report));
    assert_eq!(code, 1, "{err}");
    let j = last_json(&out);
    let summary = assert_folder(&report);
    assert_eq!(summary["backend"], "netns");
    let steps = j["counterexample"]["commands"].as_array().unwrap().len();
    for m in j["counterexample"]["machines"].as_array().unwrap() {
        let id = m["id"].as_str().unwrap();
        let log = std::fs::read_to_string(report.join(format!("machines/{id}/agent.log")))
            .expect("agent output kept");
        assert!(!log.is_empty(), "empty agent log of {id}");
    }
    let Some(browser) = require_chromium() else {
        return;
    };
    let page = load(
        &browser,
        &report.join("timeline.html"),
        "ping-netns-drop-icmp",
    );
    assert_rendered_with_failing_step(&page, steps);
    assert!(page.dom.contains(">ping "), "no ping bar");
}

/// A kv run on real machines: the committed Redis lost-write case replayed with a report. The
/// folder keeps each node's agent, redis and sentinel logs; the timeline shows the partition
/// band, the client worker's operations and the read that lost the write.
#[test]
fn redis_lost_write_replay_report_on_netns_in_chromium() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("report-redis");
    let report = dir.join("report");
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/redis-lost-write.json"
    );
    let (code, out, err) = run(fleetcheck().args(["replay", file, "--report"]).arg(&report));
    assert_eq!(code, 1, "{out}{err}");
    let summary = assert_folder(&report);
    assert_eq!(summary["system"], "redis");
    assert_eq!(summary["final_replay"]["history"]["operations"], 2);
    for node in ["aaaaaaaa", "bbbbbbbb", "cccccccc"] {
        for log in ["agent.log", "redis.log", "sentinel.log"] {
            let path = report.join(format!("machines/{node}/{log}"));
            assert!(path.is_file(), "no {}", path.display());
        }
    }
    let Some(browser) = require_chromium() else {
        return;
    };
    let page = load(&browser, &report.join("timeline.html"), "kv-redis-netns");
    assert_rendered_with_failing_step(&page, 4);
    assert!(
        page.dom.contains(r#"class="band band-partition""#),
        "no partition band"
    );
    assert!(
        page.dom.contains(r#"class="bar failing-bar""#),
        "the lost read is not marked"
    );
}
