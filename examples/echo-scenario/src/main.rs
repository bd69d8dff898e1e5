//! `echo-scenario`: fleetcheck's command line with one more scenario, `echo`, defined here.
//!
//! Each machine runs a TCP echo service (this very binary, `echo-scenario serve`), started by
//! the machine's setup command at every boot. Each machine's service has a version, 1 or 2;
//! the planted fault: version 2 drops every third connection without answering. The model
//! says every message to a running machine comes back, so fleetcheck finds the fault, shrinks
//! it to one machine of version 2 and three messages, and writes its report.
//!
//! The binary is also its machines' agent (the harness's [`fleetcheck_harness::main`] serves
//! `agent`), and the fake backend, whose machines run no programs, gets the same service as
//! an object in this process.

mod echo;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => echo::serve(&args[2..]),
        Some("send") => echo::send(&args[2..]),
        _ => {
            let mut registry = fleetcheck_harness::builtin::registry();
            registry.push(Box::new(echo::Echo));
            fleetcheck_harness::main(registry)
        }
    }
}
