//! The `fleetcheck` command line: the harness's, over the built-in scenarios.

fn main() -> std::process::ExitCode {
    fleetcheck_harness::main(fleetcheck_harness::builtin::registry())
}
