//! The host programs a scenario's systems run, found before anything is built.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use fleetcheck_scenarios::config::ScenarioConfig;
use fleetcheck_scenarios::kv::{self, Program};

use crate::exit::Fail;

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

/// The programs of store `system` the host must have under `config`: all of
/// [`kv::programs`], but the server's only when `[services.<name>]` lists no versions of it.
pub fn needed(system: &str, config: &ScenarioConfig) -> Vec<Program> {
    let versioned = kv::service_of(system).filter(|s| config.services.contains_key(*s));
    kv::programs(system)
        .iter()
        .filter(|p| Some(p.name) != versioned)
        .copied()
        .collect()
}

/// Exit code 3, naming the package, if store `system` needs a program the host lacks.
pub fn check(system: Option<&str>, config: &ScenarioConfig) -> Result<(), Fail> {
    let Some(system) = system else {
        return Ok(());
    };
    match needed(system, config).into_iter().find(|p| find(p.name).is_none()) {
        Some(p) => Err(Fail::host(anyhow!(
            "kv on {system} needs {} (its {}), which is not on this host's PATH: apt-get install {}",
            p.name,
            p.role,
            p.package
        ))),
        None => Ok(()),
    }
}
