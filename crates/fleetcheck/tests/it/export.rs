//! `fleetcheck export --rust`: the exported test compiles against the libraries and fails the
//! same way as the counterexample. It is built as the test of a scratch package (path
//! dependencies on this workspace's crates, this workspace's lock file, its own target
//! directory under `target/`, reused across runs) with `cargo test --offline`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{fleetcheck, run, temp_dir, write_config};

/// The workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A scratch package whose tests are the exported files; returns cargo's (success, output).
fn cargo_test_exported(name: &str, tests: &[(&str, &str)]) -> (bool, String) {
    let root = workspace();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("exported-{name}"));
    let _ = std::fs::remove_dir_all(dir.join("tests"));
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let krate = |c: &str| format!("{c} = {{ path = {:?} }}\n", root.join("crates").join(c));
    let manifest = format!(
        "[package]\nname = \"exported-{name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [workspace]\n\n[dev-dependencies]\n{}{}{}serde_json = \"1\"\n",
        krate("fleetcheck-engine"),
        krate("fleetcheck-fabric"),
        krate("fleetcheck-scenarios"),
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/lib.rs"), "").unwrap();
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    for (file, source) in tests {
        std::fs::write(dir.join("tests").join(file), source).unwrap();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "test",
            "--offline",
            "--tests",
            "--no-fail-fast",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(root.join("target").join("exported-tests"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn export(replay: &Path, output: &Path) -> String {
    let (code, _, err) = run(fleetcheck()
        .arg("export")
        .arg(replay)
        .arg("--rust")
        .arg("-o")
        .arg(output));
    assert_eq!(code, 0, "{err}");
    std::fs::read_to_string(output).expect("exported")
}

#[test]
fn exported_tests_compile_and_fail_the_same_way() {
    let dir = temp_dir("export");
    // A planted setup failure on the fake backend...
    let config = write_config(
        &dir,
        "[network]\nmachines = { min = 2, max = 3 }\n[machine]\nsetup = [\"fail: planted\"]\n",
    );
    let ping = dir.join("ping.json");
    let (code, _, err) = run(fleetcheck()
        .args([
            "run",
            "ping",
            "--backend",
            "fake",
            "--seed",
            "3",
            "--config",
        ])
        .arg(&config)
        .args(["--report"])
        .arg(dir.join("ping-report"))
        .arg("--replay-file")
        .arg(&ping));
    assert_eq!(code, 1, "{err}");
    // ... and the lost write of the in-memory kv store.
    let kv = dir.join("kv.json");
    let (code, _, err) = run(fleetcheck()
        .args([
            "run",
            "kv",
            "--system",
            "memory-lossy",
            "--seed",
            "1",
            "--report",
        ])
        .arg(dir.join("kv-report"))
        .arg("--replay-file")
        .arg(&kv));
    assert_eq!(code, 1, "{err}");

    let ping_test = export(&ping, &dir.join("ping_regression.rs"));
    let kv_test = export(&kv, &dir.join("kv_regression.rs"));
    // The test replays on the backend the case was found on (here, by `--backend`, qemu).
    let on_qemu = dir.join("ping_qemu_regression.rs");
    let (code, _, err) = run(fleetcheck()
        .arg("export")
        .arg(&ping)
        .args(["--rust", "--backend", "qemu", "-o"])
        .arg(&on_qemu));
    assert_eq!(code, 0, "{err}");
    let qemu_test = std::fs::read_to_string(&on_qemu).unwrap();
    assert!(
        qemu_test.contains("QemuBackend::new(config)")
            && qemu_test.contains(r#""backend": "qemu""#)
            && !qemu_test.contains("NetnsBackend")
            && !qemu_test.contains("FakeBackend"),
        "{qemu_test}"
    );
    assert!(ping_test.contains("FakeBackend::new()"), "{ping_test}");
    assert!(
        ping_test.contains("fn ping_seed_3_regression()"),
        "{ping_test}"
    );
    assert!(
        kv_test.contains("fn kv_memory_lossy_seed_1_regression()"),
        "{kv_test}"
    );

    let (ok, output) = cargo_test_exported(
        "regressions",
        &[
            ("ping_regression.rs", &ping_test),
            ("kv_regression.rs", &kv_test),
        ],
    );
    assert!(!ok, "the exported tests passed: {output}");
    assert!(
        output.contains("test ping_seed_3_regression ... FAILED"),
        "the ping test did not compile or run: {output}"
    );
    assert!(
        output.contains("test kv_memory_lossy_seed_1_regression ... FAILED"),
        "the kv test did not compile or run: {output}"
    );
    // The same way: the same failing step and reason as the counterexample.
    assert!(
        output.contains("Step 1 failed: boot of") && output.contains("planted failure"),
        "{output}"
    );
    assert!(
        output.contains("Step 3 failed: invariant: the history is not linearizable"),
        "{output}"
    );
}

#[test]
fn export_refuses_bad_input_in_one_sentence() {
    let dir = temp_dir("export-bad");
    let missing = dir.join("missing.json");
    for (args, needle) in [
        (vec![missing.to_str().unwrap(), "--rust"], "cannot read"),
        (vec![missing.to_str().unwrap()], "--rust"),
    ] {
        let (code, out, err) = run(fleetcheck().arg("export").args(&args));
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
