//! fleetcheck's harness: everything the command line does with a scenario — run, shrink,
//! replay, the report folder with its timeline, JUnit, export, `up`, `doctor`, the signal
//! clean-up — as a library, so that any binary gets it: [`main`] is the whole command line.

pub mod backends;
pub mod cli;
pub mod doctor;
pub mod exit;
pub mod export;
pub mod interrupt;
pub mod programs;
pub mod progress;
pub mod report;
pub mod run;
pub mod up;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit::Fail;

/// The whole `fleetcheck` command line: parses the process's arguments, runs the command,
/// returns its exit code. A binary that is also its own machines' agent (`agent` first).
pub fn main() -> ExitCode {
    // The agent must not parse fleetcheck's options or install handlers: hand over at once.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("agent") {
        return fleetcheck_fabric::agent::main(argv[2..].to_vec());
    }
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
            // One sentence: clap's first line, without its usage block.
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid usage");
            eprintln!(
                "fleetcheck: {} (see fleetcheck --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(exit::USAGE);
        }
    };
    interrupt::install();
    let result = dispatch(&cli);
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
    if let Err(e) = fleetcheck_fabric::netns::sweep() {
        eprintln!(
            "fleetcheck: warning: {:#}",
            anyhow::Error::new(e).context("removing what killed runs left failed")
        );
    }
}

fn dispatch(cli: &Cli) -> Result<u8, Fail> {
    match &cli.command {
        Command::Run(args) => run::run_command(args),
        Command::Replay(args) => run::replay_command(args),
        Command::Up(args) => up::up_command(args),
        Command::Export(args) => export::export_command(args),
        Command::Doctor(args) => doctor::doctor_command(args),
        Command::Sweep => {
            let report = fleetcheck_fabric::netns::sweep().map_err(Fail::host)?;
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
        Command::List => {
            println!("scenarios:");
            for s in fleetcheck_scenarios::SCENARIOS {
                println!("  {s}");
            }
            println!("backends:");
            for (name, what) in backends::BACKENDS {
                println!("  {name:<6} {what}");
            }
            Ok(exit::PASSED)
        }
        Command::Agent { .. } => unreachable!("the agent is dispatched before parsing"),
    }
}
