//! Running a property from `cargo test`: [`check`] searches like `fleetcheck run`, with its
//! knobs from the environment, and panics with the minimal counterexample and the path of its
//! replay file; that file is a regression case, run first next time (as proptest's
//! regression files are). [`agent`] finds the machines' agent, or builds it.
//!
//! ```no_run
//! # use fleetcheck_harness::testing;
//! # fn model() -> fleetcheck_scenarios::ping::PingModel { Default::default() }
//! #[test]
//! fn my_system_keeps_its_promises() {
//!     let model = model();
//!     let system = fleetcheck_scenarios::ping::PingSystem::new(testing::backend(), &model.config);
//!     testing::check("my-system", &model, &system);
//! }
//! ```
//!
//! Environment: `FLEETCHECK_CASES` (default 100), `FLEETCHECK_SEED` (default: from the
//! clock, printed), `FLEETCHECK_MAX_SIZE` (20), `FLEETCHECK_WORKERS` (one per CPU),
//! `FLEETCHECK_BACKEND` (`netns`, `fake`, `qemu`; default netns), `FLEETCHECK_REGRESSIONS`
//! (the regression directory; default `fleetcheck-regressions` in the crate's directory,
//! `$CARGO_MANIFEST_DIR`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fleetcheck_engine::{
    describe_failure, describe_trace, execute, run, Case, Config, Model, Outcome, ReplayFile,
    System, Verdict,
};
use fleetcheck_fabric::host::AgentCommand;
use fleetcheck_fabric::Backend;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backends::BackendName;

/// The knobs of [`check`], from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The engine's configuration.
    pub config: Config,
    /// Where regression cases are kept.
    pub regressions: PathBuf,
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let text = std::env::var(name).ok()?;
    Some(text.trim().parse().unwrap_or_else(|_| {
        panic!("fleetcheck: {name}={text:?} is not a number");
    }))
}

impl Settings {
    /// From `FLEETCHECK_*` (see the module's docs).
    pub fn from_env() -> Self {
        let defaults = Config::default();
        let config = Config {
            tests: env_number("FLEETCHECK_CASES").unwrap_or(defaults.tests),
            seed: env_number("FLEETCHECK_SEED"),
            max_size: env_number("FLEETCHECK_MAX_SIZE").unwrap_or(defaults.max_size),
            workers: env_number("FLEETCHECK_WORKERS").unwrap_or_else(|| crate::run::per_cpu(1)),
            ..defaults
        };
        let regressions = std::env::var_os("FLEETCHECK_REGRESSIONS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
                    .map_or_else(|| PathBuf::from("."), PathBuf::from);
                crate_dir.join("fleetcheck-regressions")
            });
        Self {
            config,
            regressions,
        }
    }
}

/// The regression files of property `name`: `<dir>/<name>-<seed>.json`, in name order.
fn regression_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}-");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "json")
                        && p.file_name()
                            .and_then(|f| f.to_str())
                            .is_some_and(|f| f.starts_with(&prefix))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Checks property `name` of `model` on `system` from a test: first every regression case
/// kept for it, then a search with [`Settings::from_env`]. Panics (failing the test) with the
/// minimal counterexample and its replay file, kept as a regression case; with a distinct
/// message on a flaky failure, an aborted case (the infrastructure's) or a host too loaded to
/// judge, none of which is kept.
pub fn check<M, S>(name: &str, model: &M, system: &S)
where
    M: Model,
    S: System<M>,
    Case<M>: Serialize + DeserializeOwned,
{
    check_with(name, model, system, &Settings::from_env());
}

/// [`check`] with explicit settings.
pub fn check_with<M, S>(name: &str, model: &M, system: &S, settings: &Settings)
where
    M: Model,
    S: System<M>,
    Case<M>: Serialize + DeserializeOwned,
{
    for path in regression_files(&settings.regressions, name) {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("fleetcheck: cannot read {}: {e}", path.display()));
        let file = ReplayFile::<M>::from_json(&text, name)
            .unwrap_or_else(|e| panic!("fleetcheck: {}: {e}", path.display()));
        if let Err(why) = file.case.check(model) {
            panic!("fleetcheck: {}: {why}", path.display());
        }
        let trace = execute(model, system, &file.case);
        if let Verdict::Failed { .. } = trace.verdict {
            panic!(
                "fleetcheck: regression case {} still fails:\n{}",
                path.display(),
                describe_trace(model, &file.case, &trace)
            );
        }
    }
    let report = run(model, system, &settings.config, &());
    let seed = report.seed;
    let again = format!(
        "FLEETCHECK_SEED={seed} FLEETCHECK_CASES={}",
        settings.config.tests
    );
    match report.outcome {
        Outcome::Passed => eprintln!(
            "fleetcheck: {name}: {} cases passed (seed {seed})",
            report.cases_run
        ),
        Outcome::Failed(f) => {
            let file = ReplayFile::new(
                name,
                seed,
                f.minimal.clone(),
                f.reason.clone(),
                serde_json::Value::Null,
            );
            let path = settings.regressions.join(format!("{name}-{seed}.json"));
            let kept = std::fs::create_dir_all(&settings.regressions)
                .and_then(|()| std::fs::write(&path, file.to_json()));
            let kept = match kept {
                Ok(()) => format!(
                    "kept as a regression case, run first from now on: {}",
                    path.display()
                ),
                Err(e) => format!("could not keep it in {}: {e}", path.display()),
            };
            panic!(
                "fleetcheck: {name} FAILED (seed {seed}):\n{}\n{kept}\nthe search again: {again}",
                describe_failure(model, &f)
            );
        }
        Outcome::Flaky(f) => panic!(
            "fleetcheck: {name} FLAKY (seed {seed}): a failure whose minimal case failed again \
             in none of {} re-runs, not a counterexample (not kept): {}\nthe search again: {again}",
            f.reproduce_runs, f.reason
        ),
        Outcome::Aborted {
            message,
            overloaded,
            refused,
            ..
        } => panic!(
            "fleetcheck: {name} {} (seed {seed}): {message}\nthe search again: {again}",
            if overloaded {
                "TOO LOADED to judge"
            } else if refused {
                "REFUSED: what it asks cannot be done here"
            } else {
                "ABORTED: the infrastructure broke"
            }
        ),
        Outcome::GaveUp { discarded, limit } => panic!(
            "fleetcheck: {name} GAVE UP (seed {seed}): {discarded} commands discarded by \
             preconditions, more than {limit}"
        ),
    }
}

/// The machines' agent: `$FLEETCHECK_AGENT` or a `fleetcheck-agent` next to this executable
/// ([`AgentCommand::locate`]); else built, once, with the `cargo` that runs the tests, from
/// the `fleetcheck-fabric` this crate depends on, into a target directory of its own. Panics
/// in one sentence if neither works.
pub fn agent() -> AgentCommand {
    static BUILT: std::sync::OnceLock<Result<AgentCommand, String>> = std::sync::OnceLock::new();
    if let Ok(found) = AgentCommand::locate() {
        return found;
    }
    BUILT
        .get_or_init(build_agent)
        .clone()
        .unwrap_or_else(|why| panic!("fleetcheck: no agent for the machines: {why}"))
}

fn build_agent() -> Result<AgentCommand, String> {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(|d| PathBuf::from(d).join("Cargo.toml"))
        .ok_or("set FLEETCHECK_AGENT to a fleetcheck-agent binary (not run by cargo)")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Beside this executable's target directory (`target/<profile>/deps/<test>`).
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let target = exe
        .ancestors()
        .nth(3)
        .ok_or("cannot tell the target directory")?
        .join("fleetcheck-agent");
    // Offline: the build that made this test fetched every dependency already.
    let out = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--offline",
            "-p",
            "fleetcheck-fabric",
            "--bin",
            "fleetcheck-agent",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .map_err(|e| format!("cannot run cargo to build it: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building it failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(AgentCommand {
        program: target.join("debug/fleetcheck-agent"),
        args: Vec::new(),
    })
}

/// The backend of `FLEETCHECK_BACKEND` (`netns` by default, `fake`, `qemu`), its machines run
/// by [`agent`]. Panics in one sentence if the host cannot run it.
pub fn backend() -> Arc<dyn Backend> {
    let name = match std::env::var("FLEETCHECK_BACKEND").as_deref() {
        Err(_) | Ok("netns") => BackendName::Netns,
        Ok("fake") => BackendName::Fake,
        Ok("qemu") => BackendName::Qemu,
        Ok(other) => panic!("fleetcheck: FLEETCHECK_BACKEND={other:?} is not netns, fake or qemu"),
    };
    crate::backends::make_with(name, || Ok(agent()))
        .unwrap_or_else(|f| panic!("fleetcheck: the {name} backend cannot run here: {f}"))
}
