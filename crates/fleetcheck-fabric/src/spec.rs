//! Plain data describing networks, machines and commands: what a backend is asked to build and run.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The most machines one network may have: each is a port of one Linux bridge (netns, qemu),
/// and a bridge numbers its ports in 10 bits, port 0 unused (`BR_MAX_PORTS`; the 1024th veth
/// fails with EXFULL).
pub const MAX_MACHINES: usize = 1023;

/// A whole network: one IPv4 subnet on one switch, and the machines plugged into it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NetworkSpec {
    /// The subnet every machine address lies in.
    pub subnet: Subnet,
    /// The machines, in a fixed order; ids are unique.
    pub machines: Vec<MachineSpec>,
}

impl NetworkSpec {
    /// The spec of machine `id`, if the network has one.
    pub fn machine(&self, id: &str) -> Option<&MachineSpec> {
        self.machines.iter().find(|m| m.id == id)
    }

    /// Checks what every backend relies on: unique ids and addresses, addresses inside the
    /// subnet that are neither its network nor its broadcast address.
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut ids = std::collections::BTreeSet::new();
        let mut ips = std::collections::BTreeSet::new();
        if self.subnet.prefix > 30 {
            return Err(SpecError::SubnetTooSmall {
                subnet: self.subnet,
            });
        }
        if self.machines.len() > MAX_MACHINES {
            return Err(SpecError::TooManyMachines {
                count: self.machines.len(),
            });
        }
        for m in &self.machines {
            if m.id.is_empty() || m.id.len() > 64 || m.id.contains(['/', '\0']) {
                return Err(SpecError::BadId { id: m.id.clone() });
            }
            if !ids.insert(m.id.as_str()) {
                return Err(SpecError::DuplicateId { id: m.id.clone() });
            }
            if !ips.insert(m.ip) {
                return Err(SpecError::DuplicateIp { ip: m.ip });
            }
            for (name, v) in &m.services {
                let bad_name =
                    name.is_empty() || name.contains(['/', '\0']) || name == "." || name == "..";
                if bad_name || !v.path.is_absolute() {
                    return Err(SpecError::BadService {
                        machine: m.id.clone(),
                        service: name.clone(),
                    });
                }
            }
            let network = self.subnet.network();
            if !self.subnet.contains(m.ip) || m.ip == network || m.ip == self.subnet.broadcast() {
                return Err(SpecError::IpOutsideSubnet {
                    machine: m.id.clone(),
                    ip: m.ip,
                    subnet: self.subnet,
                });
            }
        }
        Ok(())
    }
}

/// Why a [`NetworkSpec`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("machine id `{id}` is empty, longer than 64 bytes or contains `/`")]
    BadId { id: String },
    #[error("machine id `{id}` is used twice")]
    DuplicateId { id: String },
    #[error("address {ip} is used twice")]
    DuplicateIp { ip: Ipv4Addr },
    #[error("address {ip} of machine {machine} is not a host address of {subnet}")]
    IpOutsideSubnet {
        machine: String,
        ip: Ipv4Addr,
        subnet: Subnet,
    },
    #[error("service `{service}` of machine {machine} needs a plain name and an absolute path")]
    BadService { machine: String, service: String },
    #[error("{count} machines are more than the {MAX_MACHINES} one network can have")]
    TooManyMachines { count: usize },
    #[error("subnet {subnet} has no room for hosts")]
    SubnetTooSmall { subnet: Subnet },
}

/// An IPv4 subnet such as `172.16.2.0/24`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    /// Any address in the subnet; usually its network address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl Subnet {
    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix.min(32)))
        }
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address (host bits one).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `ip` lies in this subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// How many usable host addresses the subnet has (without network and broadcast address;
    /// /31 and /32 count their 2 and 1 addresses).
    pub fn host_count(&self) -> u64 {
        let size = 1u64 << (32 - u32::from(self.prefix.min(32)));
        if size <= 2 {
            size
        } else {
            size - 2
        }
    }

    /// The `n`th host address (0-based), if the subnet has that many.
    pub fn host(&self, n: u64) -> Option<Ipv4Addr> {
        if n >= self.host_count() {
            return None;
        }
        let offset = if self.host_count() > 2 { n + 1 } else { n };
        Some(Ipv4Addr::from(u32::from(self.network()) + offset as u32))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a string is not a subnet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a subnet like 172.16.2.0/24")]
pub struct ParseSubnetError {
    pub input: String,
}

impl FromStr for Subnet {
    type Err = ParseSubnetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseSubnetError {
            input: s.to_owned(),
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        if prefix > 32 {
            return Err(err());
        }
        Ok(Subnet { addr, prefix })
    }
}

/// One machine of a network.
///
/// New fields have defaults (`#[serde(default)]`, [`Default`]), so older replay files still
/// read and a literal can end in `..Default::default()`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MachineSpec {
    /// Unique name within the network; also the machine's hostname.
    pub id: String,
    /// Its address on the network's switch.
    pub ip: Ipv4Addr,
    /// Memory limit in MiB (a cgroup limit on `netns`, guest memory on VM backends).
    pub memory_mb: u32,
    /// Kernel version; `netns` machines share the host kernel and ignore it.
    pub kernel: String,
    /// Shell commands run (`sh -c`) one by one at every boot before the machine counts as ready.
    pub setup: Vec<String>,
    /// The file system of the machine's data directory ([`crate::Network::data_dir`]): a fresh
    /// file system of this type on a disk of its own, made when the network is created, kept
    /// across reboots and crashes, removed with the network. `None`: a plain directory on the
    /// host's file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FileSystem>,
    /// The installed version of each service, by service name. Inside the machine the program
    /// `<name>` on `PATH` is `path` of this version, and `FLEETCHECK_VERSION_<NAME>` (upper
    /// case, other characters `_`) holds `version`. Replaced with
    /// [`crate::Network::set_service`] while the machine is off.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServiceVersion>,
    /// Whether [`crate::Network::power_cut`] loses the writes not yet made durable: the data
    /// directory is on a disk with a volatile write cache (on `netns` a FUSE-served image, see
    /// `host::volatile`), so after a power cut the machine boots with what its file system had
    /// flushed (`fsync`, `fdatasync`, `fsync` of a directory, `sync`). Implies a file system of
    /// its own: [`MachineSpec::filesystem`], or ext4 if that is `None`. `false` (the default):
    /// power cuts are refused, and crashes keep every write, as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lose_unsynced: bool,
    /// Whether its wall clock can be moved ([`crate::Network::set_clock`]): on `qemu` the
    /// guest's clock; on `netns` the clock its programs read through libc, with libfaketime
    /// preloaded into every one of them (Debian's `faketime`; monotonic clocks are left
    /// alone). `false` (the default): clock faults are refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clock: bool,
    /// An observer (a scenario's own client machine) is in no partition: whatever groups
    /// [`crate::Network::partition`] cuts, it still reaches every machine and every machine
    /// reaches it. One-way blocks and loss name machines, and apply to it as to any.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub observer: bool,
}

impl MachineSpec {
    /// A machine with no setup commands, no file system of its own and no services.
    pub fn new(
        id: impl Into<String>,
        ip: Ipv4Addr,
        memory_mb: u32,
        kernel: impl Into<String>,
    ) -> Self {
        MachineSpec {
            id: id.into(),
            ip,
            memory_mb,
            kernel: kernel.into(),
            ..Default::default()
        }
    }

    /// The file system of its own disk, if it has one: [`MachineSpec::filesystem`], or ext4
    /// for a machine that loses unsynced writes.
    pub fn disk_filesystem(&self) -> Option<FileSystem> {
        self.filesystem
            .or(self.lose_unsynced.then_some(FileSystem::Ext4))
    }
}

impl Default for MachineSpec {
    fn default() -> Self {
        MachineSpec {
            id: String::new(),
            ip: Ipv4Addr::UNSPECIFIED,
            memory_mb: 128,
            kernel: String::new(),
            setup: Vec::new(),
            filesystem: None,
            services: BTreeMap::new(),
            lose_unsynced: false,
            clock: false,
            observer: false,
        }
    }
}

/// A file system a machine's data directory can live on.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum FileSystem {
    Ext4,
    Xfs,
    Btrfs,
}

impl FileSystem {
    /// Every supported file system.
    pub const ALL: [FileSystem; 3] = [FileSystem::Ext4, FileSystem::Xfs, FileSystem::Btrfs];

    /// The kernel's name for it (`/proc/filesystems`, `mount -t`).
    pub fn name(self) -> &'static str {
        match self {
            FileSystem::Ext4 => "ext4",
            FileSystem::Xfs => "xfs",
            FileSystem::Btrfs => "btrfs",
        }
    }

    /// The program that makes one (`mkfs.<name>`).
    pub fn mkfs(self) -> &'static str {
        match self {
            FileSystem::Ext4 => "mkfs.ext4",
            FileSystem::Xfs => "mkfs.xfs",
            FileSystem::Btrfs => "mkfs.btrfs",
        }
    }

    /// The Debian package that has [`FileSystem::mkfs`].
    pub fn package(self) -> &'static str {
        match self {
            FileSystem::Ext4 => "e2fsprogs",
            FileSystem::Xfs => "xfsprogs",
            FileSystem::Btrfs => "btrfs-progs",
        }
    }
}

impl fmt::Display for FileSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a string is not a file system fleetcheck can make.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a supported file system (ext4, xfs, btrfs)")]
pub struct ParseFileSystemError {
    pub input: String,
}

impl FromStr for FileSystem {
    type Err = ParseFileSystemError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FileSystem::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| ParseFileSystemError { input: s.into() })
    }
}

/// One installation of a service: its version label and the program that is that version.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceVersion {
    /// What people and models call it, e.g. `"7.0"`.
    pub version: String,
    /// The program (an absolute path on the host; VM backends share it into the guest).
    pub path: PathBuf,
}

/// `FLEETCHECK_VERSION_<NAME>`: the variable that holds the version of service `name` inside
/// a machine.
pub fn version_variable(service: &str) -> String {
    let name: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("FLEETCHECK_VERSION_{name}")
}

/// Power state of a machine.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MachineStatus {
    /// No processes, link down.
    Off,
    /// Agent ready, link up.
    Running,
    /// Every process frozen ([`crate::Network::pause`]): the link stays up but nothing answers.
    Paused,
}

impl MachineStatus {
    /// Whether [`crate::Network::boot`] accepts a machine in this state.
    pub fn can_boot(self) -> bool {
        self == MachineStatus::Off
    }

    /// Whether [`crate::Network::shutdown`] and [`crate::Network::crash`] accept it (a paused
    /// machine can lose power too).
    pub fn can_shutdown(self) -> bool {
        matches!(self, MachineStatus::Running | MachineStatus::Paused)
    }

    /// Whether [`crate::Network::exec`] accepts it; on a paused machine the command starts only
    /// once the machine is resumed.
    pub fn can_exec(self) -> bool {
        matches!(self, MachineStatus::Running | MachineStatus::Paused)
    }

    /// Whether [`crate::Network::pause`] accepts it.
    pub fn can_pause(self) -> bool {
        self == MachineStatus::Running
    }

    /// Whether [`crate::Network::resume`] accepts it.
    pub fn can_resume(self) -> bool {
        self == MachineStatus::Paused
    }
}

impl fmt::Display for MachineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MachineStatus::Off => "off",
            MachineStatus::Running => "running",
            MachineStatus::Paused => "paused",
        })
    }
}

/// A command to run inside a machine.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecRequest {
    /// Program and arguments; the program is looked up in `PATH`.
    pub argv: Vec<String>,
    /// After this long the command's process group is killed and the output has `timed_out`.
    pub timeout: Duration,
}

impl ExecRequest {
    /// The default timeout of [`ExecRequest::shell`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// `sh -c <cmd>` with [`ExecRequest::DEFAULT_TIMEOUT`].
    pub fn shell(cmd: impl Into<String>) -> Self {
        ExecRequest {
            argv: vec!["sh".into(), "-c".into(), cmd.into()],
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// The same request with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// What a command did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code; `None` if killed by a signal.
    pub status: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Whether it was killed because it ran past its timeout.
    pub timed_out: bool,
    /// Set when the machine's out-of-memory killer killed a process while it ran (netns reads
    /// its cgroup's count): the machine's memory limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_killed_mb: Option<u32>,
}

impl ExecOutput {
    /// Exit code 0 and not timed out.
    pub fn success(&self) -> bool {
        self.status == Some(0) && !self.timed_out
    }

    /// stdout as (lossy) UTF-8.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as (lossy) UTF-8.
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// "exit code 3", "signal 9", "timeout", "killed by the out-of-memory killer (memory
    /// limit 96 MiB)": for error messages.
    pub fn describe_status(&self) -> String {
        let killed = self.signal == Some(libc::SIGKILL) || self.status == Some(128 + libc::SIGKILL);
        if let (Some(mb), true) = (self.oom_killed_mb, killed) {
            return format!("killed by the out-of-memory killer (memory limit {mb} MiB)");
        }
        if self.timed_out {
            "timeout".into()
        } else if let Some(code) = self.status {
            format!("exit code {code}")
        } else if let Some(sig) = self.signal {
            format!("signal {sig}")
        } else {
            "unknown status".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_parses_displays_and_counts() {
        let s: Subnet = "172.16.2.0/24".parse().unwrap();
        assert_eq!(s.to_string(), "172.16.2.0/24");
        assert!(s.contains("172.16.2.77".parse().unwrap()));
        assert!(!s.contains("172.16.3.1".parse().unwrap()));
        assert_eq!(s.host_count(), 254);
        assert_eq!(s.host(0), Some("172.16.2.1".parse().unwrap()));
        assert_eq!(s.host(254), None);
        assert!("172.16.2.0".parse::<Subnet>().is_err());
        assert!("172.16.2.0/33".parse::<Subnet>().is_err());
        let all: Subnet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn validate_rejects_duplicates_and_outsiders() {
        let m = |id: &str, ip: &str| MachineSpec::new(id, ip.parse().unwrap(), 64, "");
        let mut spec = NetworkSpec {
            subnet: "10.0.0.0/24".parse().unwrap(),
            machines: vec![m("a", "10.0.0.1"), m("b", "10.0.0.2")],
        };
        assert_eq!(spec.validate(), Ok(()));
        spec.machines.push(m("a", "10.0.0.3"));
        assert!(matches!(
            spec.validate(),
            Err(SpecError::DuplicateId { .. })
        ));
        spec.machines[2] = m("c", "10.0.1.3");
        assert!(matches!(
            spec.validate(),
            Err(SpecError::IpOutsideSubnet { .. })
        ));
        spec.machines[2] = m("c", "10.0.0.255");
        assert!(matches!(
            spec.validate(),
            Err(SpecError::IpOutsideSubnet { .. })
        ));
    }

    #[test]
    fn lose_unsynced_defaults_off_and_implies_ext4() {
        let old: MachineSpec = serde_json::from_str(
            r#"{"id":"a","ip":"10.0.0.1","memory_mb":64,"kernel":"","setup":[]}"#,
        )
        .unwrap();
        assert!(!old.lose_unsynced);
        assert_eq!(old.disk_filesystem(), None);
        assert!(!serde_json::to_string(&old)
            .unwrap()
            .contains("lose_unsynced"));
        let m = MachineSpec {
            lose_unsynced: true,
            ..old.clone()
        };
        assert_eq!(m.disk_filesystem(), Some(FileSystem::Ext4));
        let back: MachineSpec = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        let xfs = MachineSpec {
            filesystem: Some(FileSystem::Xfs),
            ..m
        };
        assert_eq!(xfs.disk_filesystem(), Some(FileSystem::Xfs));
    }

    #[test]
    fn status_questions() {
        assert!(MachineStatus::Off.can_boot());
        assert!(!MachineStatus::Off.can_shutdown());
        assert!(MachineStatus::Running.can_shutdown());
        assert!(!MachineStatus::Running.can_boot());
        assert!(MachineStatus::Running.can_pause());
        assert!(!MachineStatus::Running.can_resume());
        assert!(MachineStatus::Paused.can_resume());
        assert!(MachineStatus::Paused.can_shutdown());
        assert!(MachineStatus::Paused.can_exec());
        assert!(!MachineStatus::Paused.can_boot());
        assert!(!MachineStatus::Paused.can_pause());
        assert!(!MachineStatus::Off.can_exec());
        assert!(!MachineStatus::Off.can_pause());
    }
}
