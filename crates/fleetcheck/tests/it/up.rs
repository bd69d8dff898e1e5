//! `fleetcheck up`: commands piped into the prompt, on the fake backend and on namespaces;
//! everything is removed at `quit`, at the end of the input and on Ctrl-C.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use crate::netns::{leftovers, wait_for_namespaces};
use crate::{fleetcheck, last_json, require_root, run, temp_dir, write_config};

/// Runs `fleetcheck up ARGS` with `input` on stdin; returns (code, stdout, stderr).
pub fn up(args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = fleetcheck()
        .arg("up")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fleetcheck starts");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())
        .expect("input written");
    let out = child.wait_with_output().expect("fleetcheck ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SESSION: &str = "\
state
exec m1 echo hello
ping m1 m2 300
partition m1 | m2
ping m1 m2 300
state
heal
ping m1 m2 300
shutdown m2
ping m1 m2 100
boot m2
crash m2
frobnicate
exec m9 true
help
";

/// The answers the session above gets, on any backend (the input ends without `quit`).
fn assert_session(out: &str) {
    let after = |cmd: &str| {
        out.split(&format!("> {cmd}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no answer to `{cmd}`: {out}"))
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert!(out.contains("m1 ") && out.contains("running"), "{out}");
    assert!(after("exec m1 echo hello").starts_with("hello") || out.contains("[exit code 0]"));
    assert!(
        out.contains("faults applied at this prompt: partition m1 | m2"),
        "{out}"
    );
    assert!(out.matches("reply from m2").count() >= 2, "{out}");
    assert!(
        out.contains("no reply from m2 (172.16.2.3) within 300 ms"),
        "{out}"
    );
    assert!(
        out.contains("no reply from m2 (172.16.2.3) within 100 ms"),
        "{out}"
    );
    assert_eq!(after("boot m2"), "m2 is up");
    assert_eq!(after("crash m2"), "m2 crashed");
    assert!(
        after("frobnicate").starts_with("error: unknown command"),
        "{out}"
    );
    assert!(after("exec m9 true").starts_with("error:"), "{out}");
    assert!(out.contains("partition A,B | C"), "help: {out}");
    assert!(out.ends_with("fleetcheck: network removed\n"), "{out}");
}

#[test]
fn up_on_fake_answers_piped_commands() {
    let (code, out, err) = up(&["--backend", "fake", "--machines", "2"], SESSION);
    assert_eq!(code, 0, "{out}{err}");
    assert_session(&out);
}

/// With `[roles]`, `up` builds each role's most machines, roles in name order, each with its
/// role's preferred file system and versions; `--machines` cannot override the roles' counts.
#[test]
fn up_builds_machines_of_every_role() {
    let dir = temp_dir("up-roles");
    for v in ["1.0", "2.0"] {
        std::fs::write(dir.join(format!("fw-{v}")), "#!/bin/sh\n").expect("service written");
    }
    let config = write_config(
        &dir,
        r#"
[machine]
filesystem = "ext4"

[services.fw]
versions = [
  { version = "1.0", path = "fw-1.0" },
  { version = "2.0", path = "fw-2.0" },
]

[roles.server]
count = { min = 1, max = 2 }
filesystem = ["xfs", "ext4"]
versions = { fw = ["2.0", "1.0"] }

[roles.client]
count = 1
"#,
    );
    let config = config.to_str().unwrap();
    let (code, out, err) = up(&["--backend", "fake", "--config", config], "state\n");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 machine(s)"), "{out}");
    for line in [
        "m1 (client): ext4, fw 1.0\n",
        "m2 (server): xfs, fw 2.0\n",
        "m3 (server): xfs, fw 2.0\n",
    ] {
        assert!(out.contains(line), "no `{}`: {out}", line.trim_end());
    }
    let state = out.split("> state\n").nth(1).expect("an answer to `state`");
    for id in ["m1 ", "m2 ", "m3 "] {
        assert!(state.contains(id), "{id}in {state}");
    }
    assert!(!state.contains("m4 "), "{state}");

    let (code, out, err) = up(
        &["--backend", "fake", "--config", config, "--machines", "2"],
        "quit\n",
    );
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--machines cannot be combined with [roles]"),
        "{err}"
    );
}

#[test]
fn up_refuses_bad_input_in_one_sentence() {
    let dir = temp_dir("up-bad");
    let replay = dir.join("kv.json");
    let (code, _, err) = run(fleetcheck()
        .args([
            "run",
            "kv",
            "--system",
            "memory-lossy",
            "--seed",
            "1",
            "--replay-file",
        ])
        .arg(&replay)
        .arg("--report")
        .arg(dir.join("report")));
    assert_eq!(code, 1, "{err}");
    for (args, needle) in [
        (
            vec!["--backend", "vmware"],
            "invalid value 'vmware' for '--backend",
        ),
        (vec!["--backend", "fake", "--machines", "0"], "--machines"),
        (vec!["--replay", replay.to_str().unwrap()], "no machines"),
        (
            vec!["--replay", replay.to_str().unwrap(), "--machines", "2"],
            "drop --config",
        ),
    ] {
        let (code, out, err) = up(&args, "quit\n");
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// Regression: `--machines` equal to the subnet's host count (254 in a /24) passed the check
/// and panicked, for machines take host addresses from the second one up (253 in a /24).
#[test]
fn up_with_as_many_machines_as_host_addresses_is_refused_not_a_panic() {
    let (code, out, err) = up(&["--backend", "fake", "--machines", "254"], "quit\n");
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--machines must be between 1 and 253"),
        "{err}"
    );
}

#[test]
fn up_on_netns_answers_piped_commands_and_removes_everything() {
    if !require_root() {
        return;
    }
    let (code, out, err) = up(&["--machines", "2"], SESSION);
    assert_eq!(code, 0, "{out}{err}");
    assert_session(&out);
    assert!(out.contains("hello\n[exit code 0]"), "{out}");
}

/// A replay file's network, its commands run up to the failing ping: the drop rule of the
/// planted fault is there to see, and the ping fails by hand too.
#[test]
fn up_from_a_replay_stops_before_the_failing_step() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("up-replay");
    let replay = dir.join("case.json");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/drop-icmp.toml");
    let (code, out, err) = run(fleetcheck()
        .args(["run", "ping", "--seed", "4", "--json", "--config", config])
        .arg("--replay-file")
        .arg(&replay)
        .arg("--report")
        .arg(dir.join("report")));
    assert_eq!(code, 1, "{err}");
    let j = last_json(&out);
    let commands = j["counterexample"]["commands"].as_array().unwrap();
    let last = commands.last().unwrap();
    assert_eq!(last["name"], "Ping");
    let (from, to) = (
        last["args"]["from"].as_str().unwrap(),
        last["args"]["to"].as_str().unwrap(),
    );
    let input = format!("state\nexec {to} nft list ruleset\nping {from} {to} 200\nquit\n");
    let (code, out, err) = up(&["--replay", replay.to_str().unwrap()], &input);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("stopped before step {}", commands.len())),
        "{out}"
    );
    assert!(out.contains("model state: up: "), "{out}");
    assert!(out.contains("echo-request drop"), "{out}");
    assert!(out.contains(&format!("no reply from {to}")), "{out}");
    assert!(out.ends_with("fleetcheck: network removed\n"), "{out}");
}

#[test]
fn ctrl_c_at_the_prompt_removes_everything_and_exits_130() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("up-ctrl-c");
    let config = write_config(&dir, "[network]\nmachines = { min = 1, max = 3 }\n");
    let mut child = fleetcheck()
        .arg("up")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("fleetcheck starts");
    let run_id = wait_for_namespaces(&mut child);
    // SAFETY: kill with a valid pid of our own child and a valid signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    drop(child.stdin.take());
    assert_eq!(status.code(), Some(130));
    assert_eq!(leftovers(&run_id), Vec::<PathBuf>::new());
}
