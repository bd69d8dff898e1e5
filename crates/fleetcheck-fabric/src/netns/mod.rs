//! The `netns` backend: every machine is a set of Linux namespaces with a cgroup, plugged into a
//! bridge that lives in a private switch namespace. Needs root, nothing else.
//!
//! Per network `n<k>` of run `<run>`:
//! - `/run/fleetcheck/<run>/netns/fleetcheck-<run>-n<k>-sw`: the switch namespace with bridge `br0` and one port
//!   `p<i>` per machine (down while the machine is off);
//! - `/run/fleetcheck/<run>/netns/fleetcheck-<run>-n<k>-m<i>[-<id>]`: machine `i`'s namespace with `lo` and `eth0`
//!   (the port's veth peer) carrying the machine's address;
//! - `<memory cgroup>/fleetcheck-<run>/n<k>-m<i>`: its memory limit;
//! - `<v1 freezer>/fleetcheck-<run>/n<k>-m<i>`: its freezer for pause/resume (on cgroup v2 the
//!   memory cgroup's own `cgroup.freeze`);
//! - table `bridge fleetcheck` in the switch namespace: the network faults (partition, block,
//!   loss), present only while some are in force;
//! - `/run/fleetcheck/<run>/n<k>/m<i>.log`: agent and setup output;
//! - `/run/fleetcheck/<run>/n<k>/m<i>.data`: its data directory; with a file system of its own
//!   (`MachineSpec::filesystem`) the image `m<i>.img` on a loop device mounted there inside a
//!   disk namespace only the machine's boots copy ([`crate::host::disk`]);
//! - `/run/fleetcheck/<run>/n<k>/m<i>.bin`: a symlink per service to the version installed,
//!   first on the machine's `PATH`.
//!
//! A boot clones the agent ([`crate::agent`]) as PID 1 of new pid, mount, uts and ipc namespaces,
//! joined to the machine's network namespace and cgroup. A shutdown SIGKILLs it, which kills the
//! whole pid namespace at once. Nothing is ever added to the host's own network namespace.

mod enter;
mod network;
mod spawn;

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, Network};
use crate::error::{CreateError, HostError};
use crate::host::sweep::RunDir;
use crate::host::{AgentCommand, Cgroups, GATE};
use crate::spec::NetworkSpec;

pub use network::{NetnsNetwork, FAKETIME};

/// Settings of the `netns` backend.
#[derive(Clone, Debug)]
pub struct NetnsConfig {
    /// How to start the in-machine agent.
    pub agent: AgentCommand,
    /// How long a boot (agent start plus setup commands) may take.
    pub boot_timeout: Duration,
}

impl NetnsConfig {
    /// Defaults around a given agent command.
    pub fn new(agent: AgentCommand) -> Self {
        NetnsConfig {
            agent,
            boot_timeout: Duration::from_secs(60),
        }
    }

    /// Defaults with [`AgentCommand::locate`].
    pub fn located() -> Result<Self, HostError> {
        Ok(Self::new(AgentCommand::locate()?))
    }
}

/// The `netns` backend; one instance is one run (see [`crate::host::sweep()`]).
#[derive(Debug)]
pub struct NetnsBackend {
    config: NetnsConfig,
    run: Arc<RunDir>,
}

impl NetnsBackend {
    /// Checks the host (root, namespaces, memory cgroup), sweeps what dead runs left behind and
    /// claims a new run id.
    pub fn new(config: NetnsConfig) -> Result<Self, HostError> {
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(HostError::NotRoot { euid });
        }
        for (feature, path) in [
            ("network namespaces", "/proc/self/ns/net"),
            ("pid namespaces", "/proc/self/ns/pid"),
            ("mount namespaces", "/proc/self/ns/mnt"),
            ("uts namespaces", "/proc/self/ns/uts"),
            ("ipc namespaces", "/proc/self/ns/ipc"),
        ] {
            if !std::path::Path::new(path).exists() {
                return Err(HostError::MissingFeature {
                    feature,
                    path: path.into(),
                });
            }
        }
        let run = RunDir::claim(&config.agent)?;
        Ok(NetnsBackend { config, run })
    }

    /// This backend's run id (all its resources are named `fleetcheck-<run id>-...`).
    pub fn run_id(&self) -> &str {
        &self.run.run
    }

    /// The pid of this run's guardian ([`crate::host::guard`]).
    pub fn guardian_pid(&self) -> Option<u32> {
        self.run.guardian_pid()
    }

    /// The memory cgroup hierarchy in use.
    pub fn cgroups(&self) -> &Cgroups {
        &self.run.cgroups
    }

    /// Like [`Backend::create`], returning the concrete network type.
    pub fn create_netns(&self, spec: &NetworkSpec) -> Result<NetnsNetwork, CreateError> {
        let _in_flight = GATE.enter()?;
        network::create(spec, &self.config, &self.run)
    }
}

impl Backend for NetnsBackend {
    fn name(&self) -> &'static str {
        "netns"
    }

    /// `scratch` in the run's directory, which every machine sees at the same path.
    fn scratch_dir(&self) -> Option<std::path::PathBuf> {
        self.run.scratch().ok()
    }

    fn create(&self, spec: &NetworkSpec) -> Result<Box<dyn Network>, CreateError> {
        Ok(Box::new(self.create_netns(spec)?))
    }
}
