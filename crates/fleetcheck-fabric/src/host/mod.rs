//! Host plumbing every backend uses: the run (its directory, guardian and the start-up sweep),
//! named network namespaces and the rtnetlink client that wires them, cgroups, the agent
//! channel's host end, nftables fault rules on a switch, machine disk images and namespaces,
//! the creation gate, and thin syscall wrappers. Nothing here knows which backend calls it.
//!
//! - [`sweep`](mod@sweep): [`RUN_ROOT`], run directories (`RunDir`) and [`sweep()`](sweep::sweep);
//! - [`guard`]: the run's guardian, which removes what a killed run left;
//! - `ns`, `netlink`: named network namespaces and a batched rtnetlink client;
//! - `cgroup`: memory, pids and freezer cgroups ([`Cgroups`], [`Freezer`], [`PIDS_MAX`]);
//! - `conn`: the host end of an agent's channel (exec, ping);
//! - `switch`: a network's switch namespace with its bridge and fault table; `nft` renders and
//!   applies that table;
//! - [`disk`]: machine file system images, loop devices, disk namespaces;
//! - `gate`: the creation gate closed on Ctrl-C;
//! - `sys`: syscall wrappers.

pub(crate) mod cgroup;
pub(crate) mod conn;
pub mod disk;
pub(crate) mod gate;
pub mod guard;
pub(crate) mod netlink;
pub(crate) mod nft;
pub(crate) mod ns;
pub mod sweep;
pub(crate) mod switch;
pub(crate) mod sys;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use crate::error::HostError;

pub use cgroup::{Cgroups, Freezer, PIDS_MAX};
pub use sweep::{sweep, SweepReport, RUN_ROOT};

use sweep::RunDir;

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

static RUNS: Mutex<Vec<Weak<RunDir>>> = Mutex::new(Vec::new());

fn register_run(run: &Arc<RunDir>) {
    let mut runs = RUNS.lock().unwrap_or_else(|e| e.into_inner());
    runs.retain(|w| w.strong_count() > 0);
    runs.push(Arc::downgrade(run));
}

/// Removes every live run directory of this process (after its networks are down).
pub(crate) fn remove_runs() {
    let runs: Vec<Arc<RunDir>> = RUNS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for run in runs {
        run.remove();
    }
}
