//! The in-machine agent of the fleetcheck `netns` backend; see `fleetcheck_fabric::agent`.

fn main() -> std::process::ExitCode {
    fleetcheck_fabric::agent::main(std::env::args().skip(1).collect())
}
