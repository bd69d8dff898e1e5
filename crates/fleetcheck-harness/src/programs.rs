//! The host programs a scenario's systems run, found before anything is built.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use fleetcheck_scenarios::config::ScenarioConfig;

use crate::exit::Fail;
use crate::scenario::Registered;

/// Where machines look for programs when the host's `PATH` is not set.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The executable file `name` on the host's `PATH`, if there is one.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Exit code 3, naming the package, if `system` of `scenario` needs a program the host lacks.
pub fn check(
    scenario: &dyn Registered,
    system: Option<&str>,
    config: &ScenarioConfig,
) -> Result<(), Fail> {
    let missing = scenario
        .programs(system, config)
        .into_iter()
        .filter(|p| p.needed)
        .map(|p| p.program)
        .find(|p| find(p.name).is_none());
    match missing {
        Some(p) => Err(Fail::host(anyhow!(
            "{}{} needs {} (its {}), which is not on this host's PATH: apt-get install {}",
            scenario.name(),
            system.map(|s| format!(" on {s}")).unwrap_or_default(),
            p.name,
            p.role,
            p.package
        ))),
        None => Ok(()),
    }
}
