//! The command line.

use crate::backends::BackendName;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::exit;

/// Property-based, model-based testing of whole networks of real machines.
#[derive(Debug, Parser)]
#[command(name = "fleetcheck", version, after_help = exit::HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate networks and command sequences, run them, shrink any failure.
    Run(RunArgs),
    /// Run the case in a replay file again, exactly.
    Replay(ReplayArgs),
    /// Write a counterexample as a standalone regression test (a Rust #[test]).
    Export(ExportArgs),
    /// Boot a network and run commands in it from a prompt (stdin); torn down on exit.
    Up(UpArgs),
    /// Check that this host can run a backend; one line per check.
    Doctor(DoctorArgs),
    /// Remove what killed runs left behind (also done at the start of every run).
    Sweep,
    /// List the built-in scenarios and backends.
    List,
    /// Write NAME.toml, a scenario file for your own system that runs as it is.
    New {
        /// The scenario's name (letters, digits, `-`).
        name: String,
        /// Its workload: kv, set, queue or counter.
        #[arg(long, default_value = "kv")]
        workload: String,
    },
    /// The in-machine agent (started by the netns backend as PID 1 of a machine).
    #[command(hide = true)]
    Agent {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct Common {
    /// Backend that builds the machines: `netns` (Linux namespaces), `qemu` (VMs) or `fake`
    /// (in memory).
    #[arg(long, value_enum, default_value_t, value_name = "NAME")]
    pub backend: BackendName,
    /// More output: -v prints each case, -vv also each shrink candidate.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print one JSON object as the last line of stdout (the text report goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// The engine's defaults: the library and the command line have one set.
fn defaults() -> fleetcheck_engine::Config {
    fleetcheck_engine::Config::default()
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The scenario to run (see `fleetcheck list`), or a scenario file (`FILE.toml`).
    pub scenario: String,
    /// Sets KEY (dotted, e.g. `network.machines.max`) of the configuration or scenario file
    /// to VALUE (TOML: `5`, `[3, 3]`, `"xfs"`; anything else is a string); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The system under test, for scenarios that have a choice (kv: etcd, redis,
    /// memory, memory-lossy) [default: etcd].
    #[arg(long, value_name = "NAME")]
    pub system: Option<String>,
    /// Successful cases needed for the property to pass.
    #[arg(long, default_value_t = defaults().tests, value_name = "N")]
    pub tests: u32,
    /// Shortest command sequence.
    #[arg(long, default_value_t = defaults().min_size, value_name = "N")]
    pub min_size: usize,
    /// Longest command sequence (sizes grow towards it over the run).
    #[arg(long, default_value_t = defaults().max_size, value_name = "N")]
    pub max_size: usize,
    /// Seed of the run (random if not given; printed either way).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Cases run at once, each on its own network [default: 4 per CPU].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Scenario configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to write the replay file of a counterexample (it also goes into the report
    /// folder) [default: <report folder>/replay.json].
    #[arg(long, value_name = "FILE")]
    pub replay_file: Option<PathBuf>,
    /// Write a report folder here: replay file, counterexample, each machine's output, the
    /// history, a summary and timeline.html [default on failure:
    /// fleetcheck-reports/<scenario>-<seed>].
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Write JUnit XML here: one test case per property, the counterexample in its failure.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Give up when preconditions discard more than this many generated commands per case.
    #[arg(long, default_value_t = defaults().max_discard_ratio, value_name = "R")]
    pub max_discard_ratio: f64,
    /// Most candidate runs the shrinker may spend.
    #[arg(long, default_value_t = defaults().shrink.max_runs, value_name = "N")]
    pub shrink_runs: u32,
    /// Most seconds the shrinker may spend.
    #[arg(long, default_value_t = defaults().shrink.max_time.as_secs(), value_name = "SECS")]
    pub shrink_time: u64,
    /// Runs per shrink candidate; a candidate counts as failing if --shrink-require of them fail.
    #[arg(long, default_value_t = defaults().shrink.attempts, value_name = "N")]
    pub shrink_attempts: u32,
    /// Failures among --shrink-attempts runs needed to accept a shrink candidate.
    #[arg(long, default_value_t = defaults().shrink.required, value_name = "K")]
    pub shrink_require: u32,
    /// Extra runs of the minimal case, to tell how often it reproduces.
    #[arg(long, default_value_t = defaults().reproduce_runs, value_name = "N")]
    pub reproduce: u32,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A replay file written by `fleetcheck run`.
    pub file: PathBuf,
    /// Backend to replay on [default: the one the case was found on].
    #[arg(long, value_enum, value_name = "NAME")]
    pub backend: Option<BackendName>,
    /// More output.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Write a report folder of this run here (logs, history, summary, timeline.html).
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Write JUnit XML of this replay here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Backend to check.
    #[arg(long, value_enum, default_value_t, value_name = "NAME")]
    pub backend: BackendName,
    /// Also check what this configuration file needs: its file systems and service versions.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Scenario configuration file (TOML): subnet, memory, kernels, setup commands, roles.
    /// Each machine gets its role's preferred values: least memory, first kernel, file system
    /// and version of each service. With [roles], each role gets its count.max machines,
    /// numbered m1, m2, ... in role name order.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How many machines (m1, m2, ...) [default: the configuration's most]; not with [roles]
    /// in the configuration, whose counts decide.
    #[arg(long, value_name = "N")]
    pub machines: Option<u32>,
    /// Build the network of a replay file and run its commands up to the failing step.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Backend that builds the machines [default: netns, or the replay file's].
    #[arg(long, value_enum, value_name = "NAME")]
    pub backend: Option<BackendName>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A replay file written by `fleetcheck run`.
    pub file: PathBuf,
    /// Export a Rust #[test] that replays exactly this case through the libraries.
    #[arg(long)]
    pub rust: bool,
    /// Where to write it [default: stdout].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The test function's name [default: <scenario>_seed_<seed>_regression].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Backend the test replays on [default: the one the case was found on].
    #[arg(long, value_enum, value_name = "NAME")]
    pub backend: Option<BackendName>,
}
