//! fleetcheck's harness: everything the command line does with a scenario — run, shrink,
//! replay, the report folder with its timeline, JUnit, export, `up`, `doctor`, the signal
//! clean-up — as a library, so that any binary gets it: [`main`] is the whole command line.

pub mod backends;
pub mod builtin;
pub mod cli;
pub mod doctor;
pub mod exit;
pub mod export;
pub mod file;
pub mod interrupt;
pub mod programs;
pub mod progress;
pub mod report;
pub mod run;
pub mod scenario;
pub mod testing;
pub mod up;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit::Fail;

pub use scenario::{Registered, Registry, Scenario};

/// Serves as the machines' agent when the process was started as one (`BINARY agent ...`, as
/// the netns and qemu backends start [`backends::agent_command`]): then the agent's exit
/// code, else `None`. [`main`] does it first; a binary of its own may call it first thing.
pub fn agent_if_asked() -> Option<ExitCode> {
    let argv: Vec<String> = std::env::args().collect();
    (argv.get(1).map(String::as_str) == Some("agent"))
        .then(|| fleetcheck_fabric::agent::main(argv[2..].to_vec()))
}

/// The whole `fleetcheck` command line over the scenarios of `registry`: parses the process's
/// arguments, runs the command, returns its exit code. The binary is also its machines' agent.
pub fn main(registry: Registry) -> ExitCode {
    // The agent must not parse fleetcheck's options or install handlers: hand over at once.
    if let Some(code) = agent_if_asked() {
        return code;
    }
    let argv: Vec<String> = std::env::args().collect();
    sweep_at_start(argv.get(1).map(String::as_str));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::from(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        exit::USAGE
                    } else {
                        exit::PASSED
                    },
                );
            }
            // One sentence: clap's first line (and the values it accepts), without its usage
            // block.
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid usage");
            let values = rendered
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("[possible values:"))
                .map(|l| format!(" {l}"))
                .unwrap_or_default();
            eprintln!(
                "fleetcheck: {}{values} (see fleetcheck --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(exit::USAGE);
        }
    };
    interrupt::install();
    let result = dispatch(&cli, &registry);
    interrupt::exit_if_interrupted();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(fail) => {
            eprintln!("fleetcheck: {fail}");
            ExitCode::from(fail.code)
        }
    }
}

/// Every command that may build machines first removes what killed runs left (as root; others
/// cannot have made anything), before it even parses its options, so that whatever a run
/// ends with, the host it leaves is clean. `command` is the first argument.
fn sweep_at_start(command: Option<&str>) {
    let builds = matches!(command, Some("run" | "replay" | "up" | "doctor"));
    // SAFETY: geteuid cannot fail.
    if !builds || unsafe { libc::geteuid() } != 0 {
        return;
    }
    if let Err(e) = fleetcheck_fabric::host::sweep() {
        eprintln!(
            "fleetcheck: warning: {:#}",
            anyhow::Error::new(e).context("removing what killed runs left failed")
        );
    }
}

fn dispatch(cli: &Cli, registry: &[Box<dyn Registered>]) -> Result<u8, Fail> {
    match &cli.command {
        Command::Run(args) => run::run_command(args, registry),
        Command::Replay(args) => run::replay_command(args, registry),
        Command::Up(args) => up::up_command(args, registry),
        Command::Export(args) => export::export_command(args, registry),
        Command::Doctor(args) => doctor::doctor_command(args, registry),
        Command::Sweep => {
            let report = fleetcheck_fabric::host::sweep().map_err(Fail::host)?;
            println!(
                "removed {} dead run(s): {} process(es), {} namespace(s), {} cgroup(s), {} loop device(s)",
                report.runs.len(),
                report.processes,
                report.namespaces,
                report.cgroups,
                report.loops
            );
            Ok(exit::PASSED)
        }
        Command::New { name, workload } => {
            let path = file::write_skeleton(name, workload)?;
            println!(
                "wrote {}: edit its services and client, then `fleetcheck run {}`",
                path.display(),
                path.display()
            );
            Ok(exit::PASSED)
        }
        Command::List => {
            println!("scenarios:");
            for s in registry {
                println!("  {:<6} {}", s.name(), s.about());
                if !s.systems().is_empty() {
                    println!("         --system {}", s.systems().join(", "));
                }
            }
            println!(
                "  FILE.toml  a scenario file: your own system (`fleetcheck new NAME` writes one)"
            );
            println!("backends:");
            for b in backends::BackendName::ALL {
                println!("  {:<6} {}", b.as_str(), b.about());
            }
            Ok(exit::PASSED)
        }
        Command::Agent { .. } => unreachable!("the agent is dispatched before parsing"),
    }
}
