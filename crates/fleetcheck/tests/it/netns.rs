//! The binary on real namespaces: the seed's test end to end, a planted fault shrunk, replay,
//! clean-up after success, failure, Ctrl-C and kill -9, side-by-side runs, host untouched.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{fleetcheck, last_json, require_root, run, temp_dir, write_config};

/// Everything of the host's own network that a run must not touch.
fn host_network() -> String {
    let mut all = String::new();
    for args in [
        &["-j", "addr"][..],
        &["-j", "route", "show", "table", "all"],
        &["-j", "-6", "route", "show", "table", "all"],
        &["-j", "rule"],
        &["-j", "link"],
    ] {
        let out = Command::new("ip").args(args).output().expect("ip runs");
        all.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    all
}

/// The run directories (ids) owned by process `pid`.
pub(crate) fn runs_of(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/run/fleetcheck") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("owner"))
                .is_ok_and(|o| o.split_whitespace().next() == Some(&pid.to_string()))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Namespaces, cgroups and the run directory of run `run` that still exist.
pub(crate) fn leftovers(run: &str) -> Vec<PathBuf> {
    let prefix = format!("fleetcheck-{run}");
    let mut found = Vec::new();
    for dir in [
        "/run/netns",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/freezer",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            found.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|e| e.path()),
            );
        }
    }
    let run_dir = PathBuf::from("/run/fleetcheck").join(run);
    if run_dir.exists() {
        found.push(run_dir);
    }
    found
}

/// Waits until `child` has a run with namespaces, and returns the run id.
pub(crate) fn wait_for_namespaces(child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(run) = runs_of(child.id()).pop() {
            let ns_dir = PathBuf::from("/run/fleetcheck").join(&run).join("netns");
            let has_ns = std::fs::read_dir(ns_dir).is_ok_and(|mut d| d.next().is_some());
            if has_ns {
                return run;
            }
        }
        assert!(
            child.try_wait().expect("child status").is_none(),
            "the run ended before it built a network"
        );
        assert!(Instant::now() < deadline, "no namespaces after 20 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn ping_passes_on_namespaces_and_leaves_host_untouched() {
    if !require_root() {
        return;
    }
    let before = host_network();
    let mut cmd = fleetcheck();
    cmd.args(["run", "ping", "--tests", "40", "--seed", "12", "--json"]);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = last_json(&stdout);
    assert_eq!(j["status"], "passed");
    assert_eq!(j["backend"], "netns");
    assert!(j["labels"]["ping target"]["offline"].as_u64().unwrap() > 0);
    assert!(j["labels"]["ping target"]["online"].as_u64().unwrap() > 0);
    assert_eq!(before, host_network(), "the host's network changed");
    assert!(runs_of(pid).is_empty(), "run directory left behind");
}

/// Majorities rings and bridges on real namespaces: every ping the model predicts from the
/// shape's cuts comes out so (nftables blocks, both ways, on the switch).
#[test]
fn rings_and_bridges_cut_what_the_model_says() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("rings");
    let config = write_config(
        &dir,
        "[network]\nmachines = { min = 4, max = 6 }\n[ping]\nfaults = [\"ring\", \"bridge\"]\n",
    );
    let (code, out, err) = run(fleetcheck()
        .args([
            "run", "ping", "--tests", "40", "--seed", "1", "--json", "--config",
        ])
        .arg(&config));
    assert_eq!(code, 0, "{out}{err}");
    let j = last_json(&out);
    let commands = &j["labels"]["command"];
    for name in ["Ring", "Bridge"] {
        assert!(commands[name].as_u64() > Some(3), "{name}: {commands}");
    }
    // Deterministic for the seed: generation does not depend on timing.
    assert!(
        j["labels"]["ping target"]["cut off"].as_u64() >= Some(3),
        "{j}"
    );
}

#[test]
fn icmp_dropping_setup_fails_and_shrinks_then_replays() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("netns-drop");
    let config = write_config(
        &dir,
        r#"[machine]
setup = ["nft add table inet t && nft add chain inet t input '{ type filter hook input priority 0; }' && nft add rule inet t input icmp type echo-request drop"]
"#,
    );
    let replay = dir.join("case.json");
    let (code, out, err) = run(fleetcheck()
        .args(["run", "ping", "--seed", "4", "--json", "--config"])
        .arg(&config)
        .arg("--replay-file")
        .arg(&replay));
    assert_eq!(code, 1, "{err}");
    let j = last_json(&out);
    let cx = &j["counterexample"];
    let machines = cx["machines"].as_array().unwrap();
    let commands = cx["commands"].as_array().unwrap();
    assert!(machines.len() <= 2, "{cx}");
    assert!(
        machines
            .iter()
            .all(|m| m["memory_mb"] == 96 && m["kernel"] == "3.14"),
        "{cx}"
    );
    assert!(commands.len() <= 3, "{cx}");
    assert_eq!(commands.last().unwrap()["name"], "Ping", "{cx}");
    // Every machine is booted once before the ping, nothing else.
    assert_eq!(commands.len(), machines.len() + 1, "{cx}");
    assert!(
        j["reason"].as_str().unwrap().contains("did not answer"),
        "{j}"
    );
    assert_eq!(j["reproduced"], j["reproduce_runs"]);
    assert!(err.contains("Counterexample"), "{err}");

    let (code, out, err) = run(fleetcheck().arg("replay").arg(&replay).arg("--json"));
    assert_eq!(code, 1, "{err}");
    assert_eq!(last_json(&out)["status"], "failed");
}

#[test]
fn two_runs_side_by_side_do_not_collide() {
    if !require_root() {
        return;
    }
    let spawn = |seed: &str| {
        fleetcheck()
            .args(["run", "ping", "--tests", "25", "--seed", seed, "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("1"), spawn("1"));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Issue 14: with three runs at once and more workers than cores, the default ping property
/// reported counterexamples whose minimal case then reproduced 0/3 (late replies on a loaded
/// host). A missing reply on a late host is now checked again with a longer grace, and a
/// failure that does not reproduce is flaky (exit 6): none of the runs may exit 1.
#[test]
fn three_loaded_runs_report_no_false_counterexample() {
    if !require_root() {
        return;
    }
    let spawn = |seed: &str| {
        fleetcheck()
            .args(["run", "ping", "--workers", "16", "--tests", "100", "--json"])
            .args(["--seed", seed])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children: Vec<_> = ["31", "32", "33"].into_iter().map(spawn).collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let code = out.status.code();
        assert!(
            matches!(code, Some(0 | 6 | 7)),
            "exit {code:?}: a correct network must pass, be flaky or too loaded, never a \
             counterexample:\n{stderr}"
        );
        let j = last_json(&stdout);
        let status = j["status"].as_str().unwrap().to_string();
        match code {
            Some(0) => assert_eq!(status, "passed"),
            Some(6) => {
                assert_eq!(status, "flaky");
                assert_eq!(j["reproduced"], 0, "{j}");
                assert!(stderr.contains("This is not a counterexample"), "{stderr}");
                eprintln!("flaky (not a counterexample): {}", j["reason"]);
            }
            _ => {
                assert_eq!(status, "too_loaded");
                eprintln!("too loaded: {}", j["too_loaded"]["message"]);
            }
        }
    }
}

#[test]
fn not_root_exits_3_with_one_sentence() {
    if !require_root() {
        return;
    }
    let (code, out, err) = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_fleetcheck"))
        .args(["run", "ping", "--tests", "1"]));
    assert_eq!(code, 3, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("root"), "{err}");
}

#[test]
fn doctor_reports_a_ready_host() {
    if !require_root() {
        return;
    }
    let (code, out, err) = run(fleetcheck().arg("doctor"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("netns smoke test"), "{out}");
    assert!(!out.contains("MISSING"), "{out}");
}

#[test]
fn fake_and_netns_arms_agree_on_the_same_seed() {
    if !require_root() {
        return;
    }
    let args = ["run", "ping", "--tests", "30", "--seed", "21", "--json"];
    let (code, fake, err) = run(fleetcheck().args(args).args(["--backend", "fake"]));
    assert_eq!(code, 0, "{err}");
    let (code, real, err) = run(fleetcheck().args(args).args(["--backend", "netns"]));
    assert_eq!(code, 0, "{err}");
    let (fake, real) = (last_json(&fake), last_json(&real));
    assert_eq!(fake["status"], real["status"]);
    assert_eq!(
        fake["labels"], real["labels"],
        "same seed, same generated cases"
    );
}

#[test]
fn faults_on_namespaces_follow_the_model_like_the_fake() {
    if !require_root() {
        return;
    }
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/faults.toml");
    let args = [
        "run", "ping", "--tests", "40", "--seed", "3", "--json", "--config", config,
    ];
    let (code, fake, err) = run(fleetcheck().args(args).args(["--backend", "fake"]));
    assert_eq!(code, 0, "{err}");
    let (code, real, err) = run(fleetcheck().args(args).args(["--backend", "netns"]));
    assert_eq!(code, 0, "{err}");
    let (fake, real) = (last_json(&fake), last_json(&real));
    assert_eq!(fake["labels"], real["labels"]);
    let commands = real["labels"]["command"].as_object().unwrap();
    for name in ["Pause", "Resume", "Partition", "Block"] {
        assert!(commands.contains_key(name), "{name}: {commands:?}");
    }
}

#[test]
fn etcd_cluster_under_faults_is_linearizable() {
    if !require_root() {
        return;
    }
    let (code, out, err) = run(fleetcheck().args([
        "run", "kv", "--system", "etcd", "--tests", "6", "--seed", "3", "--json",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let j = last_json(&out);
    assert_eq!(j["status"], "passed");
    assert!(j["labels"]["operation"]["put"].as_u64().unwrap() > 0, "{j}");
}

/// Redis with Sentinel loses an acknowledged write when the primary is cut off from the
/// majority, which promotes a replica, and the partition heals: the canonical case (4 commands
/// on 3 nodes, written down by hand from Redis' documented behaviour) replays as a failure.
/// (The search finds this and other shapes on its own, e.g. `run kv --system redis --seed 11`.)
#[test]
fn redis_loses_an_acknowledged_write_after_failover() {
    if !require_root() {
        return;
    }
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/redis-lost-write.json"
    );
    let (code, out, err) = run(fleetcheck().args(["replay", file, "--json"]));
    assert_eq!(code, 1, "{out}{err}");
    let j = last_json(&out);
    assert_eq!(j["status"], "failed");
    let steps = j["counterexample"]["steps"].as_array().unwrap();
    assert_eq!(
        steps[1]["output"], "[Done]",
        "the write was acknowledged: {j}"
    );
    assert_eq!(steps[3]["output"], "[Value(None)]", "and is gone: {j}");
    assert!(
        err.contains("lost write: `put k0=1` through aaaaaaaa (cut off from the majority)"),
        "the anomaly is named: {err}"
    );
}
