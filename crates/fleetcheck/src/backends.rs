//! Choosing a backend by name.

use std::sync::Arc;

use anyhow::anyhow;
use fleetcheck_fabric::fake::FakeBackend;
use fleetcheck_fabric::netns::{AgentCommand, NetnsBackend, NetnsConfig};
use fleetcheck_fabric::qemu::{QemuBackend, QemuConfig};
use fleetcheck_fabric::Backend;

use crate::exit::Fail;

/// The backends this binary knows.
pub const BACKENDS: &[(&str, &str)] = &[
    (
        "netns",
        "each machine is a set of Linux namespaces with a cgroup, on a private bridge (default)",
    ),
    (
        "qemu",
        "each machine is a QEMU VM booting its own kernel (machine.kernels), on a private bridge",
    ),
    (
        "fake",
        "in-memory machines: no OS calls, for trying a scenario or a model quickly",
    ),
];

/// How the netns and qemu backends start the agent: this very binary, as `fleetcheck agent`.
pub fn agent_command() -> Result<AgentCommand, Fail> {
    let exe = std::env::current_exe()
        .map_err(|e| Fail::host(anyhow!("cannot find the fleetcheck binary: {e}")))?;
    Ok(AgentCommand {
        program: exe,
        args: vec!["agent".to_string()],
    })
}

/// Builds the backend `name`.
pub fn make(name: &str) -> Result<Arc<dyn Backend>, Fail> {
    match name {
        "netns" => {
            let config = NetnsConfig::new(agent_command()?);
            let backend = NetnsBackend::new(config).map_err(Fail::host)?;
            Ok(Arc::new(backend))
        }
        "qemu" => {
            let config = QemuConfig::new(agent_command()?);
            let backend = QemuBackend::new(config).map_err(Fail::host)?;
            Ok(Arc::new(backend))
        }
        "fake" => Ok(Arc::new(FakeBackend::new())),
        other => Err(Fail::usage(anyhow!(
            "unknown backend `{other}`: choose one of {}",
            BACKENDS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
