//! End-to-end tests of the `fleetcheck` binary: on the fake backend, and on real namespaces
//! (root). In CI (`CI=true`) a test that would skip for lack of root fails instead.

mod bad_input;
mod browser;
mod cli;
mod echo_example;
mod export;
mod kv_versions;
mod machine;
mod netns;
mod qemu;
mod report;
mod rust_example;
mod scenario_file;
mod signals;
mod sql;
mod up;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test, run in a scratch directory: a failing run writes its default
/// report folder (`fleetcheck-reports/`) there, not into the source tree.
pub fn fleetcheck() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetcheck"));
    cmd.current_dir(scratch());
    cmd
}

/// The scratch directory the binary runs in.
pub fn scratch() -> PathBuf {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fleetcheck-cwd");
    std::fs::create_dir_all(&scratch).expect("scratch directory");
    scratch
}

/// Runs it and returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("fleetcheck runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Runs it with no input and returns (its pid, exit code, stdout, stderr): the pid names the
/// runs it owned (`netns::runs_of`).
pub fn run_with_pid(mut cmd: Command) -> (u32, i32, String, String) {
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("fleetcheck starts");
    let pid = child.id();
    let out = child.wait_with_output().expect("fleetcheck ends");
    (
        pid,
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JSON object on the last line of stdout.
pub fn last_json(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().expect("stdout has a line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

/// `true` when the test may use root; skips (prints why) when not root, panics in CI.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("this test needs root, and CI=true forbids skipping it");
    }
    eprintln!("skipped: needs root");
    false
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetcheck-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes a config file (a new one each call) into `dir`.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let path = dir.join(format!("fleetcheck-{n}.toml"));
    std::fs::write(&path, text).expect("config written");
    path
}
