//! The command line on the in-memory backend: options, JSON, exit codes, bad input.

use crate::{fleetcheck, last_json, run, temp_dir, write_config};

#[test]
fn run_ping_on_fake_passes_with_json_report() {
    let (code, out, err) =
        run(fleetcheck().args(["run", "ping", "--backend", "fake", "--seed", "5", "--json"]));
    assert_eq!(code, 0, "{err}");
    let j = last_json(&out);
    assert_eq!(j["status"], "passed");
    assert_eq!(j["tests"], 100);
    assert_eq!(j["seed"], 5);
    assert!(j["elapsed_ms"].is_u64());
    let machines = j["labels"]["machines"].as_object().expect("machine labels");
    assert_eq!(
        machines.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        100
    );
    assert!(j["labels"]["command"]["Ping"].as_u64().unwrap() > 0);
    assert!(
        err.contains("What was generated"),
        "text report on stderr: {err}"
    );
}

#[test]
fn same_seed_same_statistics() {
    let args = [
        "run",
        "ping",
        "--backend",
        "fake",
        "--seed",
        "77",
        "--json",
        "--tests",
        "30",
    ];
    let (_, a, _) = run(fleetcheck().args(args));
    let (_, b, _) = run(fleetcheck().args(args).args(["--workers", "1"]));
    assert_eq!(last_json(&a)["labels"], last_json(&b)["labels"]);
}

#[test]
fn planted_setup_failure_is_a_shrunk_counterexample() {
    let dir = temp_dir("fake-fail");
    let config = write_config(
        &dir,
        "[network]\nmachines = { min = 1, max = 4 }\n[machine]\nsetup = [\"fail: planted\"]\n",
    );
    let replay = dir.join("case.json");
    let (code, out, err) = run(fleetcheck()
        .args([
            "run",
            "ping",
            "--backend",
            "fake",
            "--seed",
            "3",
            "--json",
            "--config",
        ])
        .arg(&config)
        .arg("--replay-file")
        .arg(&replay));
    assert_eq!(code, 1, "{err}");
    let j = last_json(&out);
    assert_eq!(j["status"], "failed");
    let cx = &j["counterexample"];
    assert_eq!(cx["machines"].as_array().unwrap().len(), 1, "{cx}");
    assert_eq!(cx["commands"].as_array().unwrap().len(), 1, "{cx}");
    assert_eq!(cx["commands"][0]["name"], "Boot");
    assert_eq!(cx["machines"][0]["memory_mb"], 96);
    assert_eq!(cx["machines"][0]["kernel"], "3.14");
    assert!(
        j["reason"].as_str().unwrap().contains("planted failure"),
        "{j}"
    );
    assert!(err.contains("fleetcheck replay"), "{err}");

    let (code, out, _) = run(fleetcheck().arg("replay").arg(&replay).arg("--json"));
    assert_eq!(code, 1, "the failure reproduces");
    assert_eq!(last_json(&out)["status"], "failed");
}

#[test]
fn bad_input_is_one_sentence_and_exit_2() {
    let dir = temp_dir("bad-input");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["run".into(), "pong".into()], "unknown scenario"),
        (
            vec![
                "run".into(),
                "ping".into(),
                "--backend".into(),
                "vmware".into(),
            ],
            "invalid value 'vmware' for '--backend",
        ),
        (
            vec!["run".into(), "ping".into(), "--tests".into(), "x".into()],
            "invalid value",
        ),
        (
            vec![
                "run".into(),
                "ping".into(),
                "--min-size".into(),
                "9".into(),
                "--max-size".into(),
                "3".into(),
            ],
            "greater than",
        ),
        (vec!["frobnicate".into()], "unrecognized subcommand"),
        (
            vec![
                "run".into(),
                "ping".into(),
                "--config".into(),
                write_config(&dir, "[network]\nmachines = { min = 1, max = 300 }\n")
                    .display()
                    .to_string(),
            ],
            "usable addresses",
        ),
        (
            vec![
                "run".into(),
                "ping".into(),
                "--config".into(),
                dir.join("missing.toml").display().to_string(),
            ],
            "cannot read",
        ),
        (
            vec![
                "replay".into(),
                write_config(&dir, "{\"format\": 3}").display().to_string(),
            ],
            "replay file",
        ),
    ];
    for (args, needle) in cases {
        let (code, out, err) = run(fleetcheck().args(&args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed {out}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?} gave more than a line: {err}"
        );
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn malformed_config_names_the_line() {
    let dir = temp_dir("malformed");
    let config = write_config(&dir, "[network]\nmachines = { min = 1, max = }\n");
    let (code, _, err) = run(fleetcheck()
        .args(["run", "ping", "--backend", "fake", "--config"])
        .arg(&config));
    assert_eq!(code, 2);
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn list_and_help_document_scenarios_backends_and_exit_codes() {
    let (code, out, _) = run(fleetcheck().arg("list"));
    assert_eq!(code, 0);
    assert!(out.contains("ping") && out.contains("netns") && out.contains("fake"));
    let (code, out, _) = run(fleetcheck().arg("--help"));
    assert_eq!(code, 0);
    assert!(out.contains("Exit codes:") && out.contains("counterexample found"));
}

#[test]
fn kv_lost_write_on_memory_store_is_shrunk_and_replays() {
    let dir = temp_dir("kv-lossy");
    let replay = dir.join("kv.json");
    let (code, out, err) = run(fleetcheck()
        .args([
            "run",
            "kv",
            "--system",
            "memory-lossy",
            "--seed",
            "1",
            "--json",
            "--replay-file",
        ])
        .arg(&replay));
    assert_eq!(code, 1, "{err}");
    let j = last_json(&out);
    assert!(
        j["reason"].as_str().unwrap().contains("not linearizable"),
        "{j}"
    );
    let commands = j["counterexample"]["commands"].as_array().unwrap();
    assert_eq!(commands.len(), 3, "{j}");
    assert_eq!(commands[1]["name"], "Crash");
    let (code, out, _) = run(fleetcheck().arg("replay").arg(&replay).arg("--json"));
    assert_eq!(code, 1);
    assert_eq!(last_json(&out)["status"], "failed");
    let (code, _, err) = run(fleetcheck().args(["run", "kv", "--system", "zookeeper"]));
    assert_eq!(code, 2);
    assert!(err.contains("unknown system"), "{err}");
}

/// The live line shows cases, the shrinker's pass and step, candidates and elapsed time on a
/// terminal (`script` gives the run one), and nothing when the output is not a terminal.
#[test]
fn progress_line_on_a_terminal_only() {
    let args = "run kv --system memory-lossy --seed 1 --report";
    let dir = temp_dir("progress");
    let (_, _, err) = run(fleetcheck().args(args.split(' ')).arg(dir.join("piped")));
    assert!(!err.contains("cases"), "progress while piped: {err}");
    assert!(!err.contains('\u{1b}'), "escape codes while piped: {err}");

    let has_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("this test needs `script` (util-linux), and CI=true forbids skipping it");
        }
        eprintln!("skipped: needs `script` (util-linux)");
        return;
    }
    let line = format!(
        "{} {args} {}",
        env!("CARGO_BIN_EXE_fleetcheck"),
        dir.join("tty").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("COLUMNS", "200")
        .output()
        .expect("script runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/100 cases"), "no live line: {text}");
    assert!(text.contains("shrinking, "), "no shrink progress: {text}");
    assert!(text.contains("candidates ("), "no candidate count: {text}");
    assert!(text.contains("[00:00:0"), "no elapsed time: {text}");
}
