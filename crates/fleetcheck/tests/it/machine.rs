//! Machine parameters end to end on real namespaces: `examples/mixed-versions.toml` (data
//! directories on ext4, xfs or btrfs, service `fw` in versions 1.0 and 2.0, rolling upgrades)
//! finds the planted incompatibility of fw 2.0 and shrinks it to a pair of machines with the
//! preferred parameters, printed in the counterexample; nothing is left mounted or attached.
//! A file system whose mkfs the host lacks is refused (exit code 3) before anything is made.

use std::path::Path;
use std::process::Command;

use fleetcheck_fabric::host::disk;

use crate::netns::runs_of;
use crate::{fleetcheck, last_json, require_root, run, temp_dir, write_config};

/// Loop devices of fleetcheck runs whose run directory is gone (none may exist).
fn orphan_loops() -> Vec<String> {
    disk::loops_under(Path::new("/run/fleetcheck"))
        .into_iter()
        .filter_map(|d| {
            let file = disk::backing_file(&d)?;
            let file = file.to_string_lossy().replace(" (deleted)", "");
            let run = Path::new(&file).iter().nth(3)?.to_owned();
            (!Path::new("/run/fleetcheck").join(run).exists()).then_some(file)
        })
        .collect()
}

#[test]
fn machine_mixed_versions_shrink_to_a_pair_with_preferred_parameters() {
    if !require_root() {
        return;
    }
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/mixed-versions.toml"
    );
    let dir = temp_dir("mixed-versions");
    let replay = dir.join("case.json");
    let (code, out, err) = run(fleetcheck()
        .args(["run", "ping", "--seed", "1", "--json", "--config", config])
        .arg("--replay-file")
        .arg(&replay));
    assert_eq!(code, 1, "{err}");
    let j = last_json(&out);
    let cx = &j["counterexample"];
    let machines = cx["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 2, "{cx}");
    for m in machines {
        assert_eq!(m["filesystem"], "ext4", "{cx}");
        assert_eq!(
            (m["memory_mb"].as_u64(), m["kernel"].as_str()),
            (Some(96), Some("3.14"))
        );
    }
    let commands = cx["commands"].as_array().unwrap();
    let versions: Vec<&str> = machines
        .iter()
        .filter_map(|m| m["versions"]["fw"].as_str())
        .collect();
    let upgraded = commands
        .iter()
        .any(|c| c["name"] == "Upgrade" && c["args"]["version"] == "2.0");
    assert!(versions.contains(&"2.0") || upgraded, "{cx}");
    assert!(versions.contains(&"1.0"), "{cx}");
    assert!(commands.len() <= 4, "{cx}");
    assert_eq!(commands.last().unwrap()["name"], "Ping", "{cx}");
    // The counterexample prints each machine's parameters, the statistics their combinations.
    assert!(
        err.contains("parameters") && err.contains("ext4 fw=1.0"),
        "{err}"
    );
    let labels = &j["labels"];
    assert!(
        labels["machine parameters"]["btrfs fw=2.0"].as_u64() > Some(0),
        "{labels}"
    );
    assert!(
        labels["fw versions in a network"]["1.0+2.0"].as_u64() > Some(0),
        "{labels}"
    );
    assert!(labels["filesystem"]["xfs"].as_u64() > Some(0), "{labels}");
    // The report kept the service's log from the machine's own file system.
    let report = j["report"].as_str().unwrap();
    let logs: Vec<String> = std::fs::read_dir(
        Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("fleetcheck-cwd")
            .join(report)
            .join("machines"),
    )
    .unwrap()
    .flatten()
    .filter_map(|m| std::fs::read_to_string(m.path().join("fw.log")).ok())
    .collect();
    assert!(
        logs.iter().any(|l| l.contains("started on ext4")),
        "{logs:?}"
    );
    assert_eq!(orphan_loops(), Vec::<String>::new());

    let (code, out, err) = run(fleetcheck().arg("replay").arg(&replay).arg("--json"));
    assert_eq!(code, 1, "{err}");
    assert_eq!(last_json(&out)["status"], "failed");
    assert_eq!(orphan_loops(), Vec::<String>::new());
}

#[test]
fn machine_doctor_reports_file_systems_and_versions() {
    if !require_root() {
        return;
    }
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/mixed-versions.toml"
    );
    let (code, out, err) = run(fleetcheck().args(["doctor", "--config", config]));
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        "file system ext4: ",
        "file system xfs: ",
        "file system btrfs: ",
        "service fw version 1.0: ",
        "service fw version 2.0: ",
        "machine file systems: ext4, xfs, btrfs made, mounted inside machines",
    ] {
        assert!(out.contains(needle), "{needle} not in {out}");
    }
}

/// Hides every `mkfs` from the command it runs, in a mount namespace of its own (`unshare
/// --mount`, private propagation: the host sees none of these mounts). Debian's /sbin is
/// /usr/sbin, so an empty tmpfs over /usr/sbin and a `PATH` without sbin leave no `mkfs.*`.
/// The tripwire: an empty tmpfs over /sys/fs/cgroup, so that the netns backend, should it be
/// built, stops at its cgroup check with another message, before its sweep or run directory:
/// the test then fails and nothing of the host's (or of parallel tests') is touched.
const WITHOUT_MKFS: &str = "\
set -eu
mount -t tmpfs -o ro,mode=0755 fleetcheck-no-mkfs /usr/sbin
mount -t tmpfs -o ro,mode=0755 fleetcheck-no-cgroups /sys/fs/cgroup
export PATH=/usr/bin:/bin
exec \"$@\"
";

#[test]
fn machine_missing_mkfs_exits_3_in_one_sentence_before_creating_anything() {
    if !require_root() {
        return;
    }
    // Without loop devices the same check refuses every file system, with another sentence.
    if !Path::new("/dev/loop-control").exists() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("this test needs /dev/loop-control, and CI=true forbids skipping it");
        }
        eprintln!("skipped: needs loop devices (/dev/loop-control)");
        return;
    }
    let dir = temp_dir("missing-mkfs");
    let config = write_config(&dir, "[machine]\nfilesystem = [\"xfs\"]\n");
    // `run` checks every file system of the configuration, `up` those of its machines.
    for command in [&["run", "ping", "--backend", "netns"][..], &["up"]] {
        // unshare and sh exec, so the child's pid is fleetcheck's.
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                WITHOUT_MKFS,
                "sh",
            ])
            .arg(env!("CARGO_BIN_EXE_fleetcheck"))
            .args(command)
            .arg("--config")
            .arg(&config)
            .current_dir(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) starts");
        let pid = child.id();
        let out = child.wait_with_output().expect("fleetcheck ends");
        let (code, stdout, err) = (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(code, 3, "{command:?}: {stdout}{err}");
        assert_eq!(err.trim().lines().count(), 1, "{command:?}: {err}");
        assert!(
            err.contains("mkfs.xfs") && err.contains("xfsprogs"),
            "{command:?}: {err}"
        );
        assert!(stdout.is_empty(), "{command:?}: {stdout}");
        assert_eq!(runs_of(pid), Vec::<String>::new());
    }
    assert!(!dir.join("fleetcheck-reports").exists());
}
