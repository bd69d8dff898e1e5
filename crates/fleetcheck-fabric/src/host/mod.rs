//! Host plumbing every backend uses: the run (its directory, guardian and the start-up sweep),
//! named network namespaces and the rtnetlink client that wires them, cgroups, the agent
//! channel's host end, nftables fault rules on a switch, machine disk images and namespaces,
//! the creation gate, and thin syscall wrappers. Nothing here knows which backend calls it.
//!
//! - `sweep`: [`RUN_ROOT`], run directories (`RunDir`) and [`sweep()`];
//! - [`guard`]: the run's guardian, which removes what a killed run left;
//! - `ns`, `netlink`: named network namespaces and a batched rtnetlink client;
//! - `cgroup`: memory, pids and freezer cgroups ([`Cgroups`], [`Freezer`], [`PIDS_MAX`]);
//! - `conn`: the host end of an agent's channel (exec, ping);
//! - `switch`: a network's switch namespace with its bridge and fault table; `nft` renders and
//!   applies that table;
//! - [`disk`]: machine file system images, loop devices, disk namespaces; [`volatile`]: the
//!   FUSE disk with a volatile write cache under machines that lose unsynced writes;
//! - `gate`, `live`: the creation gate and the live networks and runs of this process, which
//!   [`cleanup_process_resources`] removes on a signal;
//! - `sys`: syscall wrappers;
//! - `elf`: whether a program's clock can be moved by a preloaded library.

pub(crate) mod cgroup;
pub(crate) mod conn;
pub mod disk;
pub(crate) mod elf;
pub(crate) mod gate;
pub mod guard;
mod live;
pub(crate) mod netlink;
pub(crate) mod nft;
pub(crate) mod ns;
pub(crate) mod sweep;
pub(crate) mod switch;
pub(crate) mod sys;
pub mod volatile;

use std::path::PathBuf;

use crate::error::HostError;

pub use cgroup::{Cgroups, Freezer, PIDS_MAX};
pub use live::cleanup_process_resources;
pub(crate) use live::{register_network, unregister_network, Live, GATE};
pub use sweep::{sweep, SweepReport, RUN_ROOT};

/// How to start the agent: `program args... --channel-fd 3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl AgentCommand {
    /// `$FLEETCHECK_AGENT`, else a `fleetcheck-agent` next to the current executable or in its
    /// parent directory (test binaries live in `target/<profile>/deps`).
    pub fn locate() -> Result<Self, HostError> {
        if let Some(p) = std::env::var_os("FLEETCHECK_AGENT") {
            return Ok(AgentCommand {
                program: p.into(),
                args: Vec::new(),
            });
        }
        let mut searched = Vec::new();
        if let Ok(exe) = std::env::current_exe() {
            let mut dir = exe.parent();
            for _ in 0..2 {
                let Some(d) = dir else { break };
                let candidate = d.join("fleetcheck-agent");
                if candidate.is_file() {
                    return Ok(AgentCommand {
                        program: candidate,
                        args: Vec::new(),
                    });
                }
                searched.push(candidate);
                dir = d.parent();
            }
        }
        Err(HostError::AgentNotFound { searched })
    }
}
