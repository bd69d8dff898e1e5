//! `fleetcheck run` and `fleetcheck replay`.

use std::fmt::Write as _;
use std::path::Path;

use std::time::Duration;

use anyhow::{anyhow, Context};
use fleetcheck_engine::{
    describe_failure, describe_trace, execute, run, Config, Model, Outcome, ReplayFile, Report,
    ShrinkConfig, Verdict,
};
use fleetcheck_scenarios::config::ScenarioConfig;
use serde_json::{json, Value};

use crate::backends::{self, BackendName};
use crate::cli::{ReplayArgs, RunArgs};
use crate::exit::{self, Fail};
use crate::progress::Progress;
use crate::report::capture::final_replay;
use crate::report::{self, junit, CaseReport, Summary};
use crate::scenario::{self, Registered, Scenario};

/// Where people read the text report: stdout, or stderr when stdout carries JSON.
fn emit(json: bool, text: &str) {
    if json {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
}

fn load_config(path: Option<&Path>, sets: &[String]) -> Result<ScenarioConfig, Fail> {
    let config = match path {
        Some(p) => ScenarioConfig::from_file_with(p, sets).map_err(Fail::usage)?,
        None => ScenarioConfig::default_with(sets).map_err(Fail::usage)?,
    };
    if let Some(s) = &config.scenario {
        return Err(Fail::usage(anyhow!(
            "the configuration is the scenario file of `{}`: run it as `fleetcheck run FILE`",
            s.name
        )));
    }
    Ok(config)
}

fn check_run_args(args: &RunArgs) -> Result<(), Fail> {
    let bad = |m: String| Err(Fail::usage(anyhow!(m)));
    if args.tests == 0 {
        return bad("--tests must be at least 1".into());
    }
    if args.min_size > args.max_size {
        return bad(format!(
            "--min-size ({}) is greater than --max-size ({})",
            args.min_size, args.max_size
        ));
    }
    if args.max_size > 10_000 {
        return bad(format!("--max-size {} is more than 10000", args.max_size));
    }
    if !(args.max_discard_ratio >= 0.0 && args.max_discard_ratio.is_finite()) {
        return bad(format!(
            "--max-discard-ratio must be a finite number of at least 0, not {}",
            args.max_discard_ratio
        ));
    }
    if args.workers == Some(0) {
        return bad("--workers must be at least 1".into());
    }
    if args.shrink_require == 0 || args.shrink_require > args.shrink_attempts {
        return bad(format!(
            "--shrink-require ({}) must be between 1 and --shrink-attempts ({})",
            args.shrink_require, args.shrink_attempts
        ));
    }
    Ok(())
}

/// What a search runs on: the scenario's configuration fitted to the backend, the system
/// chosen, the backend, what the run is reported to be on and the replay file's context.
#[derive(Debug)]
pub struct RunSetup {
    /// The scenario configuration.
    pub config: ScenarioConfig,
    /// The system under test, for scenarios that have a choice.
    pub system: Option<String>,
    /// The backend.
    pub backend: std::sync::Arc<dyn fleetcheck_fabric::Backend>,
    /// The backend's name, or `memory` for a system that runs in memory.
    pub on: String,
    /// The replay file's context: backend, system and configuration.
    pub context: ReplayContext,
}

/// A replay file's `context`: what its case was found on and under, so that it replays the
/// same way. Files that leave a part out mean the default: netns, the scenario's first system,
/// the default configuration.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReplayContext {
    /// The backend it was found on.
    #[serde(default)]
    pub backend: BackendName,
    /// The system under test, for scenarios that have a choice.
    #[serde(default)]
    pub system: Option<String>,
    /// The scenario configuration.
    #[serde(default)]
    pub config: ScenarioConfig,
}

impl ReplayContext {
    /// As the replay file's JSON holds it.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a context serialises")
    }
}

/// `n` per CPU (2 CPUs assumed where the count is unknown): scenarios' default worker counts.
pub fn per_cpu(n: usize) -> usize {
    std::thread::available_parallelism().map_or(2, |cpus| cpus.get()) * n
}

/// `fleetcheck run SCENARIO`.
pub fn run_command(args: &RunArgs, registry: &[Box<dyn Registered>]) -> Result<u8, Fail> {
    let (entry, mut scenario_config) = if crate::file::is_file(&args.scenario) {
        if args.config.is_some() {
            return Err(Fail::usage(anyhow!(
                "a scenario file is its own configuration: drop --config (change a key with \
                 --set KEY=VALUE)"
            )));
        }
        check_run_args(args)?;
        crate::file::load(Path::new(&args.scenario), &args.set)?
    } else {
        let entry = scenario::find(registry, &args.scenario)?;
        check_run_args(args)?;
        (entry, load_config(args.config.as_deref(), &args.set)?)
    };
    let system_name = system_of(entry, args.system.as_deref())?;
    check_outputs(
        args.report.as_deref(),
        args.junit.as_deref(),
        args.replay_file.as_deref(),
    )?;
    backends::check_filesystems(args.common.backend, &scenario_config)?;
    crate::programs::check(entry, system_name.as_deref(), &scenario_config)?;
    let backend = backends::make(args.common.backend)?;
    fit_to_backend(&mut scenario_config, backend.as_ref())?;
    if entry.on_machines(system_name.as_deref()) {
        entry.check_fits(&scenario_config, backend.as_ref(), system_name.as_deref())?;
    }
    let config = Config {
        tests: args.tests,
        min_size: args.min_size,
        max_size: args.max_size,
        seed: args.seed,
        workers: args
            .workers
            .or(backend.default_workers())
            .unwrap_or_else(|| entry.default_workers(system_name.as_deref())),
        shrink: ShrinkConfig {
            max_runs: args.shrink_runs,
            max_time: Duration::from_secs(args.shrink_time),
            attempts: args.shrink_attempts,
            required: args.shrink_require,
        },
        reproduce_runs: args.reproduce,
        max_discard_ratio: args.max_discard_ratio,
    };
    let context = ReplayContext {
        backend: args.common.backend,
        system: system_name.clone(),
        config: scenario_config.clone(),
    };
    let on = if entry.on_machines(system_name.as_deref()) {
        backend.name().to_string()
    } else {
        "memory".to_string()
    };
    let setup = RunSetup {
        config: scenario_config,
        system: system_name,
        backend,
        on,
        context,
    };
    entry.search(args, &config, setup)
}

/// Refuses, before any case runs, a report folder, JUnit file or replay file that cannot be
/// written (a file that is a directory, a folder that cannot be made).
fn check_outputs(
    report_dir: Option<&Path>,
    junit: Option<&Path>,
    replay_file: Option<&Path>,
) -> Result<(), Fail> {
    if let Some(dir) = report_dir {
        report::create_dir(dir)?;
    }
    for (what, file) in [("the JUnit file", junit), ("the replay file", replay_file)] {
        let Some(file) = file else { continue };
        if file.is_dir() {
            return Err(Fail::usage(anyhow!(
                "{} is a directory, not a place for {what}",
                file.display()
            )));
        }
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {} for {what}", dir.display()))
                .map_err(Fail::usage)?;
        }
    }
    Ok(())
}

/// Checks, before anything is built, that one case of the configuration's machine domains
/// fits the host (see [`check_vms_fit`]).
pub fn check_machines_fit(
    config: &ScenarioConfig,
    backend: &dyn fleetcheck_fabric::Backend,
) -> Result<(), Fail> {
    let most = config
        .domains()
        .iter()
        .map(|d| d.memory_mb.max)
        .max()
        .unwrap_or(0);
    check_vms_fit(
        backend,
        config.machine_count().max,
        most,
        "machine.memory_mb",
    )
}

/// On qemu every machine is a VM that may use all of its memory, so a case of `machines` VMs
/// of `memory` MiB (configured as `key`) that together may need more than the host's memory
/// is refused.
pub fn check_vms_fit(
    backend: &dyn fleetcheck_fabric::Backend,
    machines: u32,
    memory: u32,
    key: &str,
) -> Result<(), Fail> {
    if backend.name() != "qemu" {
        return Ok(());
    }
    let need = u64::from(machines) * u64::from(memory);
    if let Some(have) = host_memory_mb() {
        if need > have {
            return Err(Fail::usage(anyhow!(
                "one case may run {machines} VMs of {memory} MiB ({key}), {need} MiB in all, \
                 but this host has {have} MiB of memory"
            )));
        }
    }
    Ok(())
}

/// The host's memory in MiB (`MemTotal` of /proc/meminfo).
fn host_memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// On a backend whose machines boot their own kernels: without a `machine.kernels` in the
/// configuration, the generator picks among the installed kernels (the first preferred when
/// shrinking); a configured kernel that is not installed is a usage error. Likewise the default
/// memory range starts at the backend's floor; a configured one below it is a usage error.
pub fn fit_to_backend(
    config: &mut ScenarioConfig,
    backend: &dyn fleetcheck_fabric::Backend,
) -> Result<(), Fail> {
    let floor = backend.min_memory_mb();
    let memory = &mut config.machine.memory_mb;
    if memory.min < floor {
        let default = fleetcheck_scenarios::config::MachineConfig::default().memory_mb;
        if *memory != default {
            return Err(Fail::usage(anyhow!(
                "machine.memory_mb.min is {} MiB but the {} backend needs at least {floor} MiB",
                memory.min,
                backend.name()
            )));
        }
        memory.min = floor;
        memory.max = memory.max.max(floor);
    }
    let Some(installed) = backend.kernels() else {
        return Ok(());
    };
    let default = fleetcheck_scenarios::config::MachineConfig::default().kernels;
    if config.machine.kernels == default {
        config.machine.kernels = installed;
        return Ok(());
    }
    if let Some(k) = config
        .machine
        .kernels
        .iter()
        .find(|k| !installed.contains(k))
    {
        return Err(Fail::usage(anyhow!(
            "machine.kernels names {k}, which the {} backend cannot boot (installed: {})",
            backend.name(),
            installed.join(", ")
        )));
    }
    Ok(())
}

/// The system a scenario runs against, for those that offer a choice (the first is the
/// default).
fn system_of(entry: &dyn Registered, system: Option<&str>) -> Result<Option<String>, Fail> {
    let systems = entry.systems();
    match (systems.first(), system) {
        (Some(default), None) => Ok(Some(default.to_string())),
        (Some(_), Some(s)) if systems.contains(&s) => Ok(Some(s.into())),
        (Some(_), Some(other)) => Err(Fail::usage(anyhow!(
            "unknown system `{other}` for {}: choose one of {}",
            entry.name(),
            systems.join(", ")
        ))),
        (None, None) => Ok(None),
        (None, Some(_)) => Err(Fail::usage(anyhow!(
            "scenario `{}` has no --system choice",
            entry.name()
        ))),
    }
}

pub(crate) fn search<T: Scenario>(
    scenario: &T,
    model: &T::Model,
    system: &T::System,
    args: &RunArgs,
    config: &Config,
    on: &str,
    context: ReplayContext,
) -> Result<u8, Fail> {
    emit(
        args.common.json,
        &format!(
            "fleetcheck: running {} on {on} with {} workers, {} cases of {}..={} commands\n",
            args.scenario, config.workers, config.tests, config.min_size, config.max_size
        ),
    );
    let progress = Progress::new(args.common.verbose);
    let report = run(model, system, config, &progress);
    progress.finish();
    crate::interrupt::exit_if_interrupted();
    finish_run(scenario, model, system, args, &report, context, on)
}

/// The command line that runs the same cases again.
fn rerun_line(args: &RunArgs, seed: u64) -> String {
    let mut line = format!(
        "fleetcheck run {} --seed {seed} --tests {} --min-size {} --max-size {} --backend {}",
        args.scenario, args.tests, args.min_size, args.max_size, args.common.backend
    );
    if let Some(s) = &args.system {
        let _ = write!(line, " --system {s}");
    }
    if let Some(c) = &args.config {
        let _ = write!(line, " --config {}", c.display());
    }
    for set in &args.set {
        let _ = write!(line, " --set '{set}'");
    }
    line
}

/// The property's name in reports: the scenario, and the system for those that have one.
fn property_name(scenario: &str, system: Option<&str>) -> String {
    match system {
        Some(s) => format!("{scenario}/{s}"),
        None => scenario.to_string(),
    }
}

fn finish_run<T: Scenario>(
    scenario: &T,
    model: &T::Model,
    system: &T::System,
    args: &RunArgs,
    report: &Report<T::Model>,
    context: ReplayContext,
    on: &str,
) -> Result<u8, Fail> {
    let json = args.common.json;
    let mut text = String::new();
    let mut extra = json!({});
    let secs = report.elapsed.as_secs_f64();
    let system_name = context.system.clone();
    // The scenario's own name (a scenario file's `[scenario] name`, not its path).
    let name = Scenario::name(scenario);
    let mut summary = Summary {
        status: report.outcome.status().to_string(),
        scenario: name.to_string(),
        system: system_name.clone(),
        backend: on.to_string(),
        seed: report.seed,
        reason: None,
        replay_command: None,
        rerun: Some(rerun_line(args, report.seed)),
        search: json!({
            "cases_run": report.cases_run,
            "passed": report.passed,
            "discarded": report.discarded,
            "elapsed_ms": report.elapsed.as_millis() as u64,
        }),
    };
    let mut junit_result = junit::Result::Passed;
    let mut wrote_report = false;
    let code = match &report.outcome {
        Outcome::Passed => {
            let _ = writeln!(
                text,
                "OK: {} cases passed in {secs:.2} s (seed {}, {} commands discarded)",
                report.passed, report.seed, report.discarded
            );
            exit::PASSED
        }
        Outcome::Failed(f) | Outcome::Flaky(f) => {
            let flaky = matches!(report.outcome, Outcome::Flaky(_));
            let dir = args
                .report
                .clone()
                .unwrap_or_else(|| report::default_dir(name, report.seed));
            let path = args
                .replay_file
                .clone()
                .unwrap_or_else(|| dir.join("replay.json"));
            let file = ReplayFile::<T::Model>::new(
                name,
                report.seed,
                f.minimal.clone(),
                f.reason.clone(),
                context.to_value(),
            );
            let replay_json = file.to_json();
            write_replay(&path, &replay_json)?;
            let counterexample = describe_failure(model, f);
            if flaky {
                let _ = writeln!(
                    text,
                    "FLAKY: case {} failed after {} passed cases in {secs:.2} s (seed {}), but its \
                     minimal case failed again in none of {} re-runs{}.\n\
                     This is not a counterexample. Look at the case below and its report; run \
                     `fleetcheck replay` on it a few times, on a quieter host or with fewer \
                     --workers, or raise --reproduce.\n",
                    f.index,
                    report.passed,
                    report.seed,
                    f.reproduce_runs,
                    match f.too_loaded {
                        0 => String::new(),
                        n => format!(" ({n} of them too loaded to judge)"),
                    }
                );
            } else {
                let _ = writeln!(
                    text,
                    "FAILED: counterexample after {} passed cases in {secs:.2} s (seed {})\n",
                    report.passed, report.seed
                );
            }
            text.push_str(&counterexample);

            // One more run of the minimal case, keeping its logs, history and timings.
            let (trace, capture) = final_replay(model, system, &f.minimal);
            crate::interrupt::exit_if_interrupted();
            summary.reason = Some(f.reason.clone());
            summary.replay_command = Some(format!("fleetcheck replay {}", path.display()));
            if let Value::Object(o) = &mut summary.search {
                o.insert("failing_case".into(), json!(f.index));
                o.insert("original_commands".into(), json!(f.original.commands.len()));
                o.insert("minimal_commands".into(), json!(f.minimal.commands.len()));
                o.insert(
                    "failing_step".into(),
                    json!(match &f.trace.verdict {
                        Verdict::Failed { step, .. } => Some(step + 1),
                        _ => None,
                    }),
                );
                o.insert("shrink_runs".into(), json!(f.shrink.runs));
                o.insert(
                    "shrink_ms".into(),
                    json!(f.shrink.elapsed.as_millis() as u64),
                );
                o.insert(
                    "reproduced".into(),
                    json!(format!("{}/{}", f.reproduced, f.reproduce_runs)),
                );
            }
            let final_text = format!(
                "{counterexample}\nFinal replay for the report ({}):\n{}",
                if trace.verdict.is_failure() {
                    "failed again"
                } else {
                    "did not fail this time"
                },
                describe_trace(model, &f.minimal, &trace)
            );
            let timeline = report::write_case(CaseReport {
                dir: &dir,
                model,
                case: &f.minimal,
                trace: &trace,
                capture: &capture,
                replay_json: &replay_json,
                text: &final_text,
                summary: summary.clone(),
            })?;
            wrote_report = true;
            junit_result = if flaky {
                junit::Result::Error {
                    kind: "flaky",
                    message: format!(
                        "flaky: reproduced 0/{}, not a counterexample: {}",
                        f.reproduce_runs, f.reason
                    ),
                    text: counterexample.clone(),
                }
            } else {
                junit::Result::Failed {
                    message: f.reason.clone(),
                    text: counterexample.clone(),
                }
            };
            let _ = writeln!(
                text,
                "\nReplay this case:   fleetcheck replay {}",
                path.display()
            );
            let _ = writeln!(
                text,
                "Re-run the search:  {}",
                rerun_line(args, report.seed)
            );
            let _ = writeln!(
                text,
                "Report:             {} (timeline: {})",
                dir.display(),
                timeline.display()
            );
            extra = json!({
                "counterexample": counterexample_json(model, scenario.machines(&f.minimal.initial), &f.minimal.initial, &f.minimal.commands, &f.trace),
                "reason": f.reason,
                "failing_case": f.index,
                "original": {
                    "commands": f.original.commands.len(),
                    "initial_state": f.original.initial,
                },
                "shrink": f.shrink,
                "reproduced": f.reproduced,
                "reproduce_runs": f.reproduce_runs,
                "reproduce_too_loaded": f.too_loaded,
                "replay_file": path,
                "rerun": rerun_line(args, report.seed),
                "report": dir,
                "timeline": timeline,
            });
            if flaky {
                exit::FLAKY
            } else {
                exit::FAILED
            }
        }
        Outcome::Aborted {
            index,
            case,
            step,
            message,
            overloaded,
            refused,
        } => {
            let at = step.map_or(String::new(), |s| format!(" at step {}", s + 1));
            let rerun = rerun_line(args, report.seed);
            let commands = case.commands.len();
            // (its JSON key, its JUnit kind, the reason's word, what happened, what to do, the
            // exit code): never a counterexample, never shrunk.
            let (key, kind, word, happened, advice, code) = if *overloaded {
                (
                    "too_loaded",
                    "too_loaded",
                    "too loaded to judge",
                    format!("TOO LOADED: the host was too loaded to judge case {index}{at}"),
                    format!(
                        "This is not a counterexample; it was not shrunk. Run it on a quieter \
                         host, with fewer --workers, or with a longer [ping] timeout_ms.\n\
                         Re-run: {rerun}"
                    ),
                    exit::TOO_LOADED,
                )
            } else if *refused {
                (
                    "refused",
                    "refused",
                    "refused",
                    format!("REFUSED: case {index}{at} asked for what cannot be done here"),
                    "This is not a counterexample; nothing broke. Change the configuration (or \
                     the backend) and run again."
                        .to_string(),
                    exit::USAGE,
                )
            } else {
                (
                    "abort",
                    "aborted",
                    "aborted",
                    format!("ABORTED: case {index} broke the infrastructure{at}"),
                    format!(
                        "This is not a counterexample; it was not shrunk. The case had \
                         {commands} commands.\nRe-run: {rerun}"
                    ),
                    exit::ABORTED,
                )
            };
            let _ = writeln!(text, "{happened}: {message}\n{advice}");
            extra = json!({ key: { "case": index, "step": step, "message": message } });
            summary.reason = Some(format!("{word}{at}: {message}"));
            let (_, said) = happened.split_once(": ").unwrap_or(("", &happened));
            junit_result = junit::Result::Error {
                kind,
                message: format!("{word}{at}: {message}"),
                text: format!("{said} ({commands} commands): {message}"),
            };
            code
        }
        Outcome::GaveUp { discarded, limit } => {
            let _ = writeln!(
                text,
                "GAVE UP: preconditions discarded {discarded} generated commands (limit {limit})"
            );
            let why = format!(
                "gave up: preconditions discarded {discarded} generated commands (limit {limit})"
            );
            summary.reason = Some(why.clone());
            junit_result = junit::Result::Error {
                kind: "gave_up",
                message: why.clone(),
                text: why,
            };
            exit::GAVE_UP
        }
    };
    if !report.stats.is_empty() {
        let _ = writeln!(text, "\nWhat was generated ({} cases):", report.cases_run);
        text.push_str(&report.stats.table());
    }
    if let (Some(dir), false) = (&args.report, wrote_report) {
        report::write_summary(dir, &summary, None)?;
        let _ = writeln!(text, "\nReport: {}", dir.display());
        merge(&mut extra, json!({ "report": dir }));
    }
    if let Some(path) = &args.junit {
        let mut stdout = format!(
            "seed {}\nre-run: {}\n",
            report.seed,
            rerun_line(args, report.seed)
        );
        if let Some(r) = &summary.replay_command {
            let _ = writeln!(stdout, "replay: {r}");
        }
        let case = junit::TestCase {
            name: property_name(name, system_name.as_deref()),
            classname: format!("fleetcheck.{on}"),
            time: report.elapsed,
            result: junit_result,
            stdout,
        };
        junit::write(path, "fleetcheck", &[case])?;
    }
    emit(json, &text);
    if json {
        let mut out = json!({
            "status": report.outcome.status(),
            "scenario": name,
            "backend": args.common.backend,
            "tests": report.cases_run,
            "passed": report.passed,
            "discarded": report.discarded,
            "seed": report.seed,
            "elapsed_ms": report.elapsed.as_millis() as u64,
            "labels": report.stats,
        });
        merge(&mut out, extra);
        println!("{out}");
    }
    Ok(code)
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

/// `machines` (with their parameters), `commands` (name and arguments) and each step's output.
fn counterexample_json<M: Model>(
    model: &M,
    machines: Value,
    initial: &M::State,
    commands: &[M::Command],
    trace: &fleetcheck_engine::Trace<M>,
) -> Value {
    let state = serde_json::to_value(initial).unwrap_or(Value::Null);
    let steps: Vec<Value> = trace
        .steps
        .iter()
        .map(|s| {
            json!({
                "command": model.describe_command(&s.command),
                "output": s.output,
                "state_after": model.summarize_state(&s.state_after),
            })
        })
        .collect();
    json!({
        "machines": machines,
        "initial_state": state,
        "commands": commands,
        "steps": steps,
    })
}

fn write_replay(path: &Path, text: &str) -> Result<(), Fail> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {}", dir.display()))
            .map_err(Fail::usage)?;
    }
    std::fs::write(path, text)
        .with_context(|| format!("cannot write the replay file {}", path.display()))
        .map_err(Fail::usage)
}

/// A replay file, read and checked, with the backend it runs on.
#[derive(Debug)]
pub struct OpenedReplay {
    /// The file's text.
    pub text: String,
    /// Its scenario (a known one).
    pub scenario: String,
    /// The system, for scenarios that have a choice.
    pub system: Option<String>,
    /// The scenario configuration the case was found with.
    pub config: ScenarioConfig,
    /// The backend's name.
    pub backend_name: BackendName,
    /// The backend.
    pub backend: std::sync::Arc<dyn fleetcheck_fabric::Backend>,
    /// The backend's name, or `memory` for a system that runs in memory.
    pub on: String,
}

impl OpenedReplay {
    /// A usage error about this file.
    pub fn bad(file: &Path, e: &dyn std::fmt::Display) -> Fail {
        Fail::usage(anyhow!("{}: {e}", file.display()))
    }
}

/// Reads the replay file `file`; `backend` overrides the one the case was found on.
pub fn open_replay<'r>(
    file: &Path,
    backend: Option<BackendName>,
    registry: &'r [Box<dyn Registered>],
) -> Result<(OpenedReplay, &'r dyn Registered), Fail> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {}", file.display()))
        .map_err(Fail::usage)?;
    let bad = |e: &dyn std::fmt::Display| OpenedReplay::bad(file, e);
    // The name is read before any model is chosen; any model type reads it.
    let scenario = ReplayFile::<fleetcheck_scenarios::ping::PingModel>::scenario_of(&text)
        .map_err(|e| bad(&e))?;
    let context: Value = serde_json::from_str::<Value>(&text)
        .map_err(|e| bad(&e))?
        .get("context")
        .cloned()
        .unwrap_or(Value::Null);
    let context: ReplayContext = match context {
        Value::Null => ReplayContext::default(),
        c => serde_json::from_value(c).map_err(|e| bad(&format!("bad context: {e}")))?,
    };
    let ReplayContext {
        backend: found_on,
        system,
        config,
    } = context;
    config.validate().map_err(|e| bad(&e))?;
    // A scenario file's case carries the whole file in its configuration.
    let entry = match crate::file::scenario_of(&config) {
        Some(file) if file.name() == scenario => file,
        _ => scenario::find(registry, &scenario)?,
    };
    let backend_name = backend.unwrap_or(found_on);
    backends::check_filesystems(backend_name, &config)?;
    let system = entry
        .systems()
        .first()
        .map(|default| system.unwrap_or_else(|| default.to_string()));
    if let Some(s) = system.as_deref().filter(|s| !entry.systems().contains(s)) {
        return Err(bad(&format!("unknown system `{s}`")));
    }
    crate::programs::check(entry, system.as_deref(), &config)?;
    let backend = backends::make(backend_name)?;
    let on = if entry.on_machines(system.as_deref()) {
        backend_name.to_string()
    } else {
        "memory".to_string()
    };
    let opened = OpenedReplay {
        text,
        scenario,
        system,
        config,
        backend_name,
        backend,
        on,
    };
    // The case must be one the model could have generated, before anything runs.
    entry.check_replay(&opened).map_err(|e| bad(&e))?;
    Ok((opened, entry))
}

/// `fleetcheck replay FILE`.
pub fn replay_command(args: &ReplayArgs, registry: &[Box<dyn Registered>]) -> Result<u8, Fail> {
    let (r, entry) = open_replay(&args.file, args.backend, registry)?;
    check_outputs(args.report.as_deref(), args.junit.as_deref(), None)?;
    entry.replay(&r, args)
}

pub(crate) fn replay_case<T: Scenario>(
    scenario: &T,
    model: &T::Model,
    system: &T::System,
    file: &ReplayFile<T::Model>,
    args: &ReplayArgs,
    backend: &str,
) -> Result<u8, Fail> {
    if let Err(why) = file.case.check(model) {
        return Err(Fail::usage(anyhow!("{}: {why}", args.file.display())));
    }
    let (trace, capture) = if args.report.is_some() {
        final_replay(model, system, &file.case)
    } else {
        (execute(model, system, &file.case), Default::default())
    };
    crate::interrupt::exit_if_interrupted();
    let (status, code) = match &trace.verdict {
        Verdict::Passed => ("passed", exit::PASSED),
        Verdict::Failed { .. } => ("failed", exit::FAILED),
        Verdict::Aborted {
            overloaded: true, ..
        } => ("too_loaded", exit::TOO_LOADED),
        Verdict::Aborted { refused: true, .. } => ("refused", exit::USAGE),
        Verdict::Aborted { .. } => ("aborted", exit::ABORTED),
    };
    let mut text = format!(
        "fleetcheck: replaying {} ({} scenario, seed {}) on {backend}\n",
        args.file.display(),
        file.scenario,
        file.seed
    );
    let described = describe_trace(model, &file.case, &trace);
    text.push_str(&described);
    let _ = writeln!(
        text,
        "{}",
        match code {
            exit::FAILED => "FAILED again: the counterexample reproduces",
            exit::PASSED => "PASSED: the case did not fail this time",
            exit::TOO_LOADED => "TOO LOADED: the host was too loaded to judge (not a failure)",
            exit::USAGE => "REFUSED: the case asks for what cannot be done here (not a failure)",
            _ => "ABORTED: the infrastructure broke",
        }
    );
    let system_name = file
        .context
        .get("system")
        .and_then(Value::as_str)
        .map(String::from);
    let reason = match &trace.verdict {
        Verdict::Passed => None,
        Verdict::Failed { reason, .. } => Some(reason.clone()),
        Verdict::Aborted {
            message,
            overloaded: true,
            ..
        } => Some(format!("too loaded to judge: {message}")),
        Verdict::Aborted {
            message,
            refused: true,
            ..
        } => Some(format!("refused: {message}")),
        Verdict::Aborted { message, .. } => Some(format!("aborted: {message}")),
    };
    let replay_command = format!("fleetcheck replay {}", args.file.display());
    if let Some(dir) = &args.report {
        let timeline = report::write_case(CaseReport {
            dir,
            model,
            case: &file.case,
            trace: &trace,
            capture: &capture,
            replay_json: &file.to_json(),
            text: &described,
            summary: Summary {
                status: status.to_string(),
                scenario: file.scenario.clone(),
                system: system_name.clone(),
                backend: backend.to_string(),
                seed: file.seed,
                reason: reason.clone(),
                replay_command: Some(replay_command.clone()),
                rerun: None,
                search: Value::Null,
            },
        })?;
        let _ = writeln!(
            text,
            "Report: {} (timeline: {})",
            dir.display(),
            timeline.display()
        );
    }
    if let Some(path) = &args.junit {
        let result = match &trace.verdict {
            Verdict::Passed => junit::Result::Passed,
            Verdict::Failed { reason, .. } => junit::Result::Failed {
                message: reason.clone(),
                text: described.clone(),
            },
            Verdict::Aborted {
                message,
                overloaded,
                refused,
                ..
            } => junit::Result::Error {
                kind: if *overloaded {
                    "too_loaded"
                } else if *refused {
                    "refused"
                } else {
                    "aborted"
                },
                message: message.clone(),
                text: described.clone(),
            },
        };
        let case = junit::TestCase {
            name: property_name(&file.scenario, system_name.as_deref()),
            classname: format!("fleetcheck.{backend}"),
            time: trace.elapsed,
            result,
            stdout: format!("seed {}\nreplay: {replay_command}\n", file.seed),
        };
        junit::write(path, "fleetcheck replay", &[case])?;
    }
    emit(args.json, &text);
    if args.json {
        let out = json!({
            "status": status,
            "scenario": file.scenario,
            "backend": backend,
            "seed": file.seed,
            "elapsed_ms": trace.elapsed.as_millis() as u64,
            "verdict": trace.verdict,
            "counterexample": counterexample_json(model, scenario.machines(&file.case.initial), &file.case.initial, &file.case.commands, &trace),
            "report": args.report,
        });
        println!("{out}");
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcheck_fabric::{Backend, CreateError, Network, NetworkSpec};

    /// A backend that boots its own kernels, like qemu, without booting anything.
    #[derive(Debug)]
    struct Kernels;

    impl Backend for Kernels {
        fn name(&self) -> &'static str {
            "vm"
        }
        fn kernels(&self) -> Option<Vec<String>> {
            Some(vec!["6.1.0-47-amd64".into(), "6.12.117+deb12-amd64".into()])
        }
        fn min_memory_mb(&self) -> u32 {
            128
        }
        fn create(&self, _: &NetworkSpec) -> Result<Box<dyn Network>, CreateError> {
            Err(CreateError::BackendGone)
        }
    }

    #[test]
    fn default_kernels_and_memory_fit_a_vm_backend() {
        let mut config = ScenarioConfig::default();
        fit_to_backend(&mut config, &Kernels).unwrap();
        assert_eq!(
            config.machine.kernels,
            ["6.1.0-47-amd64", "6.12.117+deb12-amd64"]
        );
        assert_eq!(config.machine.memory_mb.min, 128);
        assert_eq!(
            config.machine.memory_mb.max,
            ScenarioConfig::default().machine.memory_mb.max
        );
    }

    #[test]
    fn configured_kernels_and_memory_must_fit_a_vm_backend() {
        let mut config = ScenarioConfig::default();
        config.machine.kernels = vec!["6.12.117+deb12-amd64".into()];
        config.machine.memory_mb.max = 512;
        config.machine.memory_mb.min = 200;
        fit_to_backend(&mut config, &Kernels).unwrap();
        assert_eq!(config.machine.kernels, ["6.12.117+deb12-amd64"]);

        config.machine.kernels = vec!["3.14".into()];
        let e = fit_to_backend(&mut config, &Kernels).unwrap_err();
        assert_eq!(e.code, exit::USAGE);
        assert!(e.error.to_string().contains("3.14"), "{}", e.error);

        let mut config = ScenarioConfig::default();
        config.machine.memory_mb.min = 64;
        let e = fit_to_backend(&mut config, &Kernels).unwrap_err();
        assert!(
            e.error.to_string().contains("at least 128 MiB"),
            "{}",
            e.error
        );
    }

    #[test]
    fn a_backend_without_kernels_keeps_the_configuration() {
        let mut config = ScenarioConfig::default();
        let backend = fleetcheck_fabric::fake::FakeBackend::new();
        fit_to_backend(&mut config, &backend).unwrap();
        assert_eq!(config, ScenarioConfig::default());
    }
}
