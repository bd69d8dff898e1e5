//! The sql scenario on real namespaces with PostgreSQL 15: serializable passes with faults,
//! repeatable read claimed as serializable shows write skew (G2-item) shrunk to two
//! transactions, read committed claimed as snapshot isolation shows an anomaly snapshot
//! isolation forbids; their replay files fail again.

use std::path::Path;

use crate::{fleetcheck, last_json, require_root, run, temp_dir, write_config};

/// Whether PostgreSQL 15 is installed; skips (with the reason) when not, fails under `CI=true`.
fn require_postgres() -> bool {
    if !require_root() {
        return false;
    }
    let found = ["postgres", "psql", "initdb", "pg_isready", "pg_basebackup"]
        .iter()
        .all(|p| Path::new("/usr/lib/postgresql/15/bin").join(p).exists());
    if found {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("this test needs postgresql-15 (scripts/install-deps installs it), and CI=true forbids skipping it");
    }
    eprintln!("skipped: needs postgresql-15 (scripts/install-deps installs it)");
    false
}

/// The transactions of a counterexample's batches.
fn txns(cx: &serde_json::Value) -> Vec<serde_json::Value> {
    cx["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "Txns")
        .flat_map(|c| c["args"]["txns"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn sql_serializable_passes_with_faults() {
    if !require_postgres() {
        return;
    }
    let dir = temp_dir("sql-serializable");
    let config = write_config(
        &dir,
        "[sql]\nisolation = \"serializable\"\nnodes = 2\nfaults = [\"crash\", \"pause\", \"partition\", \"block\"]\n",
    );
    let (code, out, err) = run(fleetcheck()
        .args([
            "run",
            "sql",
            "--tests",
            "30",
            "--seed",
            "1",
            "--max-size",
            "10",
        ])
        .args(["--workers", "4", "--json", "--config"])
        .arg(&config));
    assert_eq!(code, 0, "{err}");
    let j = last_json(&out);
    assert_eq!(j["passed"], 30, "{j}");
    let commands = &j["labels"]["command"];
    assert!(commands["Txns"].as_u64() >= Some(30), "{j}");
    for fault in ["Crash", "Restart", "Pause", "Block"] {
        assert!(commands[fault].as_u64() > Some(0), "{fault}: {j}");
    }
    assert!(err.contains("serializable"), "{err}");
}

#[test]
fn sql_refuses_other_backends_and_bad_sections() {
    let (code, _, err) = run(fleetcheck().args(["run", "sql", "--backend", "fake"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("netns backend only"), "{err}");
    let dir = temp_dir("sql-bad");
    for (text, needle) in [
        ("[sql]\nnodes = 3\n", "sql.nodes is 3"),
        (
            "[sql]\nisolation = [\"snapshot\"]\n",
            "sql.isolation names `snapshot`",
        ),
        (
            "[sql]\nclaim = \"linearizable\"\n",
            "sql.claim is `linearizable`",
        ),
    ] {
        let config = write_config(&dir, text);
        let (code, _, err) = run(fleetcheck().args(["run", "sql", "--config"]).arg(&config));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(needle), "{text}: {err}");
    }
}

/// Small batches over few keys: conflicts come sooner, and shrinking has less to remove.
const SMALL: &str = "workers = 2\nkeys = 2\ntxns_per_worker = 2\n";

/// Runs `sql` with `config` until it fails; the JSON, after checking the replay file fails
/// again on replay (the anomaly depends on timing: up to three replays).
fn find_and_replay(name: &str, config: &str, seed: &str) -> serde_json::Value {
    let dir = temp_dir(name);
    let config = write_config(&dir, config);
    let replay = dir.join("case.json");
    let (code, out, err) = run(fleetcheck()
        .args([
            "run",
            "sql",
            // It stops at the first failure; the anomalies need two transactions to overlap,
            // which on a quiet host is rarer.
            "--tests",
            "200",
            "--seed",
            seed,
            "--max-size",
            "4",
        ])
        .args(["--workers", "4", "--json", "--config"])
        .arg(&config)
        // A candidate fails if one of three runs does, and the minimal case is a
        // counterexample if one of 10 re-runs fails again: the anomalies need two transactions
        // to overlap, which a loaded host (CI runs the whole suite at once) often prevents.
        .args(["--shrink-attempts", "3", "--reproduce", "10"])
        .arg("--replay-file")
        .arg(&replay));
    assert_eq!(code, 1, "{err}");
    let j = last_json(&out);
    let shown: Vec<String> = txns(&j["counterexample"])
        .iter()
        .map(|t| t.to_string())
        .collect();
    eprintln!(
        "{name}: shrunk to {} in {}; {}",
        shown.join(", "),
        j["shrink"],
        j["reason"]
    );
    // A replay fails 2–3 times in 3 on a quiet host (the two transactions must overlap
    // again), less often beside the rest of the suite: up to 6 tries.
    let failed_again = (0..6).any(|_| {
        let (code, _, _) = run(fleetcheck().arg("replay").arg(&replay));
        code == 1
    });
    assert!(failed_again, "the replay file never failed again: {j}");
    j
}

#[test]
fn sql_repeatable_read_claimed_serializable_is_write_skew_of_two_transactions() {
    if !require_postgres() {
        return;
    }
    let j = find_and_replay(
        "sql-rr",
        &format!("[sql]\nisolation = \"repeatable read\"\nclaim = \"serializable\"\nfaults = [\"crash\"]\n{SMALL}"),
        "1",
    );
    let reason = j["reason"].as_str().unwrap();
    assert!(reason.contains("G2-item"), "{j}");
    assert!(
        reason.contains("strongest model satisfied: snapshot-isolation"),
        "{j}"
    );
    assert_eq!(txns(&j["counterexample"]).len(), 2, "{j}");
}

#[test]
fn sql_read_committed_claimed_snapshot_isolation_is_caught() {
    if !require_postgres() {
        return;
    }
    let j = find_and_replay(
        "sql-rc",
        &format!("[sql]\nisolation = \"read committed\"\nclaim = \"snapshot isolation\"\nfaults = [\"crash\"]\n{SMALL}"),
        "1",
    );
    let reason = j["reason"].as_str().unwrap();
    assert!(
        ["G-single", "lost-update"]
            .iter()
            .any(|k| reason.contains(k)),
        "an anomaly snapshot isolation forbids: {j}"
    );
    assert!(txns(&j["counterexample"]).len() <= 3, "{j}");
}
