//! Choosing a backend by name.

use std::sync::Arc;

use anyhow::anyhow;
use fleetcheck_fabric::fake::{FakeBackend, FakeView};
use fleetcheck_fabric::host::AgentCommand;
use fleetcheck_fabric::netns::{NetnsBackend, NetnsConfig};
use fleetcheck_fabric::qemu::{QemuBackend, QemuConfig};
use fleetcheck_fabric::Backend;

use crate::exit::Fail;

/// A backend this binary knows, as the command line (`--backend`) and replay files
/// (`"backend"` of the context) name it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    /// Linux namespaces.
    #[default]
    Netns,
    /// QEMU VMs.
    Qemu,
    /// In memory.
    Fake,
}

impl BackendName {
    /// Every backend, in the order `fleetcheck list` shows them.
    pub const ALL: [BackendName; 3] = [BackendName::Netns, BackendName::Qemu, BackendName::Fake];

    /// Its name: `netns`, `qemu`, `fake`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendName::Netns => "netns",
            BackendName::Qemu => "qemu",
            BackendName::Fake => "fake",
        }
    }

    /// What its machines are, for `fleetcheck list`.
    pub fn about(self) -> &'static str {
        match self {
            BackendName::Netns => {
                "each machine is a set of Linux namespaces with a cgroup, on a private bridge \
                 (default)"
            }
            BackendName::Qemu => {
                "each machine is a QEMU VM booting its own kernel (machine.kernels), on a private \
                 bridge"
            }
            BackendName::Fake => {
                "in-memory machines: no OS calls, for trying a scenario or a model quickly (it \
                 reads an nft rule dropping ICMP echo requests in a setup command as netns does)"
            }
        }
    }

    /// Whether its machines are real (namespaces or VMs): they need root and host programs.
    pub fn real(self) -> bool {
        self != BackendName::Fake
    }
}

impl std::fmt::Display for BackendName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the netns and qemu backends start the agent: this very binary, as `fleetcheck agent`.
pub fn agent_command() -> Result<AgentCommand, Fail> {
    let exe = std::env::current_exe()
        .map_err(|e| Fail::host(anyhow!("cannot find the fleetcheck binary: {e}")))?;
    Ok(AgentCommand {
        program: exe,
        args: vec!["agent".to_string()],
    })
}

/// The fake's reading of a firewall rule that drops ICMP echo requests (the planted fault of
/// `examples/drop-icmp.toml`): a running machine with a setup command naming both
/// `echo-request` and `drop` answers no ping, as on namespaces, so both arms find the fault.
fn icmp_drop_rule(view: &FakeView<'_>, from: &str, to: std::net::Ipv4Addr) -> Option<bool> {
    let target = view.machine_by_ip(to)?;
    let drops = target
        .setup
        .iter()
        .any(|c| c.contains("echo-request") && c.contains("drop"));
    (drops && view.is_running(from) && view.is_running(&target.id)).then_some(false)
}

/// Whether backend `name` can make every file system `config` asks for (and, for machines
/// that lose unsynced writes, their write cache: FUSE, and ext4 unless they name another):
/// exit code 3 with one sentence if not, before anything is built.
pub fn check_filesystems(
    name: BackendName,
    config: &fleetcheck_scenarios::config::ScenarioConfig,
) -> Result<(), Fail> {
    let volatile = config.machine.lose_unsynced;
    if volatile && name.real() && !std::path::Path::new("/dev/fuse").exists() {
        return Err(Fail::host(anyhow!(
            "machine.lose_unsynced needs FUSE for the machines' write cache and this host has \
             no /dev/fuse (modprobe fuse)"
        )));
    }
    let ext4 = (volatile && config.machine.filesystem.is_empty())
        .then_some(fleetcheck_fabric::FileSystem::Ext4);
    let wanted = config
        .domains()
        .into_iter()
        .flat_map(|d| d.filesystem)
        .chain(ext4)
        .chain(config.kv.filesystem.iter().copied());
    check_these_filesystems(name, wanted)
}

/// Whether backend `name` can make each of `wanted`, as [`check_filesystems`].
pub fn check_these_filesystems(
    name: BackendName,
    wanted: impl IntoIterator<Item = fleetcheck_fabric::FileSystem>,
) -> Result<(), Fail> {
    use fleetcheck_fabric::host::disk;
    if !name.real() {
        return Ok(());
    }
    let mut wanted: Vec<_> = wanted.into_iter().collect();
    wanted.sort();
    wanted.dedup();
    // netns mounts images on loop devices; qemu attaches them to the VM as disks.
    if name == BackendName::Netns
        && !wanted.is_empty()
        && !std::path::Path::new("/dev/loop-control").exists()
    {
        return Err(Fail::host(anyhow!(
            "machine file systems need loop devices and this host has no /dev/loop-control"
        )));
    }
    for fs in wanted {
        if disk::mkfs_path(fs).is_none() {
            return Err(Fail::host(anyhow!(
                "file system {fs} needs {} (apt-get install {}), which this host lacks",
                fs.mkfs(),
                fs.package()
            )));
        }
        if name == BackendName::Netns && !disk::kernel_supports(fs) {
            return Err(Fail::host(anyhow!(
                "file system {fs} is not in this kernel's /proc/filesystems (modprobe {fs})"
            )));
        }
        if name == BackendName::Qemu {
            let kernels = fleetcheck_fabric::qemu::kernels::installed();
            if let Some(k) = kernels.iter().find(|k| !k.has_module(fs.name())) {
                return Err(Fail::host(anyhow!(
                    "file system {fs} needs module {fs} of guest kernel {}, which {} lacks",
                    k.release,
                    k.modules.display()
                )));
            }
        }
    }
    Ok(())
}

/// The agent a VM's initramfs carries: the fabric's own `fleetcheck-agent` where there is one
/// (3 MB in a debug build, against 21 MB of this whole binary, which a VM of 96 MiB cannot
/// unpack), else `agent`'s.
pub fn vm_agent(agent: impl FnOnce() -> Result<AgentCommand, Fail>) -> Result<AgentCommand, Fail> {
    match AgentCommand::locate() {
        Ok(small) => Ok(small),
        Err(_) => agent(),
    }
}

/// Builds the backend `name`, its machines' agent this very binary (`fleetcheck agent`).
pub fn make(name: BackendName) -> Result<Arc<dyn Backend>, Fail> {
    make_with(name, agent_command)
}

/// Builds the backend `name` with the agent `agent` gives (called only for netns and qemu).
pub fn make_with(
    name: BackendName,
    agent: impl FnOnce() -> Result<AgentCommand, Fail>,
) -> Result<Arc<dyn Backend>, Fail> {
    match name {
        BackendName::Netns => {
            let config = NetnsConfig::new(agent()?);
            let backend = NetnsBackend::new(config).map_err(Fail::host)?;
            Ok(Arc::new(backend))
        }
        BackendName::Qemu => {
            let config = QemuConfig::new(vm_agent(agent)?);
            let backend = QemuBackend::new(config).map_err(Fail::host)?;
            Ok(Arc::new(backend))
        }
        BackendName::Fake => Ok(Arc::new(FakeBackend::with_fault(Arc::new(icmp_drop_rule)))),
    }
}
