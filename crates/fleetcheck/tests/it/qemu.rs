//! The binary on the qemu backend: the seed's ping test passes over several kernel versions
//! (visible in the labels), and the planted ICMP-dropping setup shrinks to the same minimal
//! counterexample as on netns (one machine: Boot, Ping), with the first kernel and least memory;
//! the planted version incompatibility shrinks to a pair of VMs on ext4.
//! Needs root, QEMU and two kernels (`scripts/install-deps`); CI=true turns a skip into a failure.

use fleetcheck_fabric::qemu::{kernels, MIN_MEMORY_MB};

use std::process::Command;

use crate::{last_json, require_root, run, temp_dir, write_config};

/// The binary at the lowest priority: TCG guests keep every core busy, and the netns tests
/// running beside these ones time pings in tens of milliseconds.
fn fleetcheck() -> Command {
    let mut cmd = Command::new("nice");
    cmd.args(["-n", "19", env!("CARGO_BIN_EXE_fleetcheck")])
        .current_dir(crate::scratch());
    cmd
}

/// One test with VMs at a time: under TCG a booting VM takes a whole core, and two such tests
/// beside the rest of the suite starve each other's VMs past their boot deadline.
pub(crate) fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static VMS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    VMS.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn require_qemu() -> bool {
    if !require_root() {
        return false;
    }
    let ok = fleetcheck_fabric::qemu::find_qemu().is_some() && kernels::installed().len() >= 2;
    if ok {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("this test needs qemu and two kernels, and CI=true forbids skipping it");
    }
    eprintln!(
        "skipped: needs qemu and two kernels ({})",
        kernels::HOW_TO_INSTALL
    );
    false
}

#[test]
fn qemu_ping_passes_over_several_kernels() {
    if !require_qemu() {
        return;
    }
    let _vms = one_at_a_time();
    let (code, out, err) = run(fleetcheck().args([
        "run",
        "ping",
        "--backend",
        "qemu",
        "--tests",
        "12",
        "--max-size",
        "8",
        "--seed",
        "3",
        "--workers",
        "4",
        "--json",
    ]));
    assert_eq!(code, 0, "{err}");
    let j = last_json(&out);
    assert_eq!(j["status"], "passed", "{j}");
    let kernels = j["labels"]["kernel"].as_object().expect("kernel labels");
    assert!(
        kernels.len() >= 2,
        "machines over several kernels: {kernels:?}"
    );
    let installed: Vec<String> = kernels::installed()
        .into_iter()
        .map(|k| k.release)
        .collect();
    assert!(kernels.keys().all(|k| installed.contains(k)), "{kernels:?}");
}

#[test]
fn qemu_icmp_dropping_setup_shrinks_like_on_netns() {
    if !require_qemu() {
        return;
    }
    let _vms = one_at_a_time();
    let dir = temp_dir("qemu-drop");
    let config = write_config(
        &dir,
        r#"[machine]
setup = ["nft add table inet t && nft add chain inet t input '{ type filter hook input priority 0; }' && nft add rule inet t input icmp type echo-request drop"]
"#,
    );
    let replay = dir.join("case.json");
    let (code, out, err) = run(fleetcheck()
        .args([
            "run",
            "ping",
            "--backend",
            "qemu",
            "--seed",
            "4",
            "--workers",
            "4",
            "--json",
        ])
        .args(["--reproduce", "1", "--config"])
        .arg(&config)
        .arg("--replay-file")
        .arg(&replay));
    assert_eq!(code, 1, "{err}");
    let j = last_json(&out);
    let cx = &j["counterexample"];
    let machines = cx["machines"].as_array().unwrap();
    let commands = cx["commands"].as_array().unwrap();
    let first = &kernels::installed()[0].release;
    assert!(machines.len() <= 2, "{cx}");
    assert!(
        machines
            .iter()
            .all(|m| m["memory_mb"] == MIN_MEMORY_MB && m["kernel"] == first.as_str()),
        "{cx}"
    );
    assert_eq!(commands.last().unwrap()["name"], "Ping", "{cx}");
    assert_eq!(commands.len(), machines.len() + 1, "{cx}");
    let (code, out, err) = run(fleetcheck().arg("replay").arg(&replay).arg("--json"));
    assert_eq!(code, 1, "{err}");
    assert_eq!(last_json(&out)["status"], "failed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The planted version incompatibility of `examples/versions` (fw 2.0 drops pings from 1.0)
/// on VMs whose data directories are on generated file systems: one role per version, so every
/// network mixes them. It is found and shrunk to the two machines with the minimal parameters
/// (ext4, the first kernel, least memory), and each VM's `fw` ran from its own version on its
/// own file system, as its log (read from inside the VM) says.
#[test]
fn qemu_mixed_versions_shrink_to_a_pair_on_ext4() {
    if !require_qemu() {
        return;
    }
    let _vms = one_at_a_time();
    let dir = temp_dir("qemu-versions");
    let versions = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/versions");
    let config = write_config(
        &dir,
        &format!(
            r#"[machine]
filesystem = ["ext4", "xfs", "btrfs"]
setup = ["fw"]

[services.fw]
versions = [
  {{ version = "1.0", path = "{v}/fw-1.0" }},
  {{ version = "2.0", path = "{v}/fw-2.0" }},
]

[roles.old]
count = 1
versions = {{ fw = "1.0" }}

[roles.new]
count = 1
versions = {{ fw = "2.0" }}
"#,
            v = versions.display()
        ),
    );
    let report = dir.join("report");
    let (code, out, err) = run(fleetcheck()
        .args(["run", "ping", "--backend", "qemu", "--seed", "3"])
        .args(["--tests", "20", "--min-size", "3", "--max-size", "8"])
        .args(["--reproduce", "1", "--json", "--config"])
        .arg(&config)
        .arg("--report")
        .arg(&report));
    assert_eq!(code, 1, "{err}");
    let j = last_json(&out);
    let cx = &j["counterexample"];
    let machines = cx["machines"].as_array().unwrap();
    let first = &kernels::installed()[0].release;
    assert_eq!(machines.len(), 2, "{cx}");
    for m in machines {
        assert_eq!(m["filesystem"], "ext4", "{cx}");
        assert_eq!(m["kernel"], first.as_str(), "{cx}");
        assert_eq!(m["memory_mb"], MIN_MEMORY_MB, "{cx}");
        let v = m["versions"]["fw"].as_str().unwrap();
        let id = m["id"].as_str().unwrap();
        // Read from inside the VM: its own disk is not mounted on the host.
        let log = std::fs::read_to_string(report.join("machines").join(id).join("fw.log"))
            .unwrap_or_else(|e| panic!("fw.log of {id}: {e}"));
        assert_eq!(log.trim(), format!("fw {v} started on ext4"), "{id}");
    }
    let mut versions: Vec<&str> = machines
        .iter()
        .map(|m| m["versions"]["fw"].as_str().unwrap())
        .collect();
    versions.sort();
    assert_eq!(versions, ["1.0", "2.0"], "{cx}");
    assert_eq!(cx["commands"].as_array().unwrap().len(), 3, "{cx}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `up --backend qemu` without a configuration boots the first installed kernel (the default
/// kernel labels fitted to the backend, as `run` does) and removes the VM at `quit`.
#[test]
fn qemu_up_boots_an_installed_kernel() {
    if !require_qemu() {
        return;
    }
    let _vms = one_at_a_time();
    let (code, out, err) = crate::up::up(
        &["--backend", "qemu", "--machines", "1"],
        "exec m1 uname -r\nquit\n",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let first = &kernels::installed()[0].release;
    assert!(out.contains(first.as_str()), "{out}\n{err}");
    assert!(out.contains("network removed"), "{out}");
}
