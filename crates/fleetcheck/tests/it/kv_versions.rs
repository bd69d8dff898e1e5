//! Service versions and rolling upgrades of the kv scenario on real namespaces with etcd: two
//! "versions" of etcd are wrapper scripts that note which one ran (and what
//! `$FLEETCHECK_VERSION_ETCD` said) in `versions.log` on the node's disk before they exec the
//! host's etcd. A search with upgrades passes and labels both versions; a replay with
//! `--report` shows, through each node's `machines/<id>/versions.log`, that every node ran its
//! own version and an upgraded node the new one, with its data kept.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::{fleetcheck, last_json, require_root, run, temp_dir};

/// The host's etcd, or `None` (skipped, with the reason; a failure under `CI=true`).
fn require_etcd() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("etcd"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("this test needs etcd (scripts/install-deps installs it), and CI=true forbids skipping it");
        }
        eprintln!("skipped: needs etcd (scripts/install-deps installs it)");
    }
    found
}

/// Writes `etcd-a` and `etcd-b` into `dir`: versions "3.4-a" and "3.4-b" of etcd.
fn write_versions(dir: &Path, etcd: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for v in ["a", "b"] {
        let path = dir.join(format!("etcd-{v}"));
        let script = format!(
            "#!/bin/sh\necho \"3.4-{v} $FLEETCHECK_VERSION_ETCD\" >> \"$FLEETCHECK_DATA/versions.log\"\n\
             exec {} \"$@\"\n",
            etcd.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn kv_etcd_nodes_run_their_versions_and_upgrade_on_namespaces() {
    if !require_root() {
        return;
    }
    let Some(etcd) = require_etcd() else {
        return;
    };
    let dir = temp_dir("kv-versions");
    write_versions(&dir, &etcd);
    // Paths relative to the configuration file.
    let config = dir.join("etcd-versions.toml");
    std::fs::write(
        &config,
        r#"
[kv]
faults = ["crash", "upgrade"]

[services.etcd]
versions = [
  { version = "3.4-a", path = "etcd-a" },
  { version = "3.4-b", path = "etcd-b" },
]
"#,
    )
    .unwrap();

    // The search: 3 short cases (seed 5 has crashes, restarts and upgrades).
    let (code, out, err) = run(fleetcheck()
        .args(["run", "kv", "--system", "etcd", "--config"])
        .arg(&config)
        .args(["--tests", "3", "--seed", "5", "--min-size", "4"])
        .args(["--max-size", "8", "--json"]));
    assert_eq!(code, 0, "{out}{err}");
    let j = last_json(&out);
    assert_eq!(j["status"], "passed");
    let labels = &j["labels"];
    for v in ["3.4-a", "3.4-b"] {
        assert!(labels["version of etcd"][v].as_u64() > Some(0), "{labels}");
    }
    assert!(labels["command"]["Upgrade"].as_u64() > Some(0), "{labels}");
    assert!(
        labels["etcd versions in a cluster"]["3.4-a+3.4-b"].as_u64() > Some(0),
        "{labels}"
    );
    assert!(err.contains("version of etcd"), "the table: {err}");

    // A case by hand: a write, then node a upgraded while running; node c crashed, upgraded
    // while down and restarted. Both must still read the write through their own member.
    let versions: Vec<_> = ["a", "b"]
        .iter()
        .map(|v| json!({ "version": format!("3.4-{v}"), "path": dir.join(format!("etcd-{v}")) }))
        .collect();
    let node = |id: &str, ip: &str, version: &str| json!({ "id": id, "ip": ip, "running": true, "paused": false, "versions": { "etcd": version } });
    let gets = |node: &str| {
        let op = json!({ "worker": 0, "node": node, "op": { "Get": 0 } });
        json!({ "name": "Ops", "args": { "ops": [op.clone(), op.clone(), op] } })
    };
    let case = json!({
        "format": "fleetcheck-replay/1",
        "scenario": "kv",
        "seed": 0,
        "context": {
            "backend": "netns",
            "system": "etcd",
            "config": {
                "kv": { "op_timeout_ms": 3000 },
                "services": { "etcd": { "versions": versions } },
            },
        },
        "reason": "",
        "case": {
            "seed": 0,
            "initial": {
                "subnet": { "addr": "172.16.3.0", "prefix": 24 },
                "nodes": [
                    node("aaaaaaaa", "172.16.3.2", "3.4-a"),
                    node("bbbbbbbb", "172.16.3.3", "3.4-b"),
                    node("cccccccc", "172.16.3.4", "3.4-a"),
                ],
                "partitioned": false,
            },
            "commands": [
                { "name": "Ops", "args": { "ops": [
                    { "worker": 0, "node": "aaaaaaaa", "op": { "Put": [0, 1] } },
                ] } },
                { "name": "Upgrade", "args": { "node": "aaaaaaaa", "service": "etcd", "version": "3.4-b" } },
                gets("aaaaaaaa"),
                { "name": "Crash", "args": { "node": "cccccccc" } },
                { "name": "Upgrade", "args": { "node": "cccccccc", "service": "etcd", "version": "3.4-b" } },
                { "name": "Restart", "args": { "node": "cccccccc" } },
                gets("cccccccc"),
            ],
        },
    });
    let file = dir.join("upgrades.json");
    std::fs::write(&file, case.to_string()).unwrap();
    let report = dir.join("report");
    let (code, out, err) = run(fleetcheck()
        .arg("replay")
        .arg(&file)
        .arg("--report")
        .arg(&report)
        .arg("--json"));
    assert_eq!(code, 0, "{out}{err}");
    let j = last_json(&out);
    assert_eq!(j["status"], "passed", "{j}");
    // The printout and the JSON name each node's version.
    assert!(
        err.contains("aaaaaaaa  172.16.3.2       etcd 3.4-a"),
        "{err}"
    );
    assert!(
        err.contains("Upgrade(aaaaaaaa: etcd -> 3.4-b) -> ok"),
        "{err}"
    );
    assert_eq!(
        j["counterexample"]["machines"][1]["versions"]["etcd"], "3.4-b",
        "{j}"
    );
    let steps = j["counterexample"]["steps"].as_array().unwrap();
    for step in [2, 6] {
        assert!(
            steps[step]["output"]
                .as_str()
                .is_some_and(|o| o.contains("Value(Some(1))")),
            "the write survived the upgrade: {}",
            steps[step]
        );
    }
    // Each program that ran noted its version; the variable agreed.
    let ran = |id: &str| {
        let log = std::fs::read_to_string(report.join("machines").join(id).join("versions.log"))
            .unwrap_or_else(|e| panic!("{id}: versions.log: {e}"));
        log.lines()
            .map(|l| {
                let (program, variable) = l.split_once(' ').unwrap();
                assert_eq!(program, variable, "{id}: {log}");
                program.to_string()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(ran("aaaaaaaa"), ["3.4-a", "3.4-b"]);
    assert_eq!(ran("bbbbbbbb"), ["3.4-b"]);
    assert_eq!(ran("cccccccc"), ["3.4-a", "3.4-b"]);
    // The upgraded member restarted from its data directory, not as a new member.
    let log = std::fs::read_to_string(report.join("machines/aaaaaaaa/etcd.log")).unwrap();
    assert!(log.contains("restarting member"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
