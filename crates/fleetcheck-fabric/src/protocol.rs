//! The agent protocol: newline-delimited JSON over an inherited socketpair.
//!
//! A guest agent (inside a VM, see [`crate::qemu`]) first says [`AgentMsg::Booted`]: its kernel
//! is up and it waits for its identity (the VM may be snapshotted at this point and restored
//! as another machine). The host sends [`HostMsg::Init`] once, the agent answers [`AgentMsg::Ready`] or
//! [`AgentMsg::SetupFailed`]; after `Ready` the host sends [`HostMsg::Request`]s, each with an id
//! unique per boot, and the agent answers each with one [`AgentMsg::Response`] carrying that id,
//! in any order (requests are served concurrently). A [`Request::Spawn`] leaves a program
//! running whose standard input and output then flow as lines under the request's id
//! ([`HostMsg::Input`], [`AgentMsg::Output`]). When the host's end closes, the agent exits.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::spec::ExecOutput;

/// Host to agent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum HostMsg {
    /// First message: become this machine, run these setup commands, report.
    Init {
        hostname: String,
        setup: Vec<String>,
        setup_timeout_ms: u64,
        /// Inside a VM: the network identity and shared host files to take before setup.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guest: Option<Box<GuestInit>>,
    },
    /// A request to answer with a [`AgentMsg::Response`] of the same id.
    Request { id: u64, request: Request },
    /// A line (with its newline) for the standard input of the program
    /// [`Request::Spawn`] `id` started.
    Input { id: u64, line: String },
    /// The end of that program's standard input.
    CloseInput { id: u64 },
    /// Kill that program's process group.
    End { id: u64 },
}

/// What a guest agent configures itself before the setup commands (on `netns` the host does it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GuestInit {
    /// Address of `eth0`.
    pub ip: Ipv4Addr,
    /// Prefix length of the network.
    pub prefix: u8,
    /// Hardware address of `eth0`, like `02:fc:ac:10:02:01` (set explicitly: a VM restored from
    /// a snapshot carries the snapshotted machine's address).
    pub mac: String,
    /// virtio-9p mount tag of the host's root directory, mounted read-only at `/host`, whose
    /// `/usr`, `/etc` (and the merged `/bin`, `/lib`, ...) are bound over the initramfs.
    pub share: Option<String>,
    /// Host path of the kernel's `lib/modules/<release>` directory, bound (through the share)
    /// at `/lib/modules/<release>` so `modprobe` finds the guest kernel's modules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<String>,
    /// The host's wall clock (ms since the epoch) when it sent Init: a VM restored from a
    /// snapshot wakes up with the snapshot's clock.
    #[serde(default)]
    pub now_unix_ms: u64,
    /// Fresh random bytes (hex) for the guest's random pool: VMs restored from one snapshot
    /// would otherwise draw the same "random" numbers (TCP sequence numbers, election
    /// timeouts, ids).
    #[serde(default)]
    pub entropy: String,
    /// The machine's disk: virtio-9p tag `data`, mounted read-write at this path (the same
    /// path as on the host, see `Network::data_dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// The machine's own file system ([`crate::MachineSpec::filesystem`]), mounted at
    /// `data_dir` instead of the 9p share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<GuestDisk>,
    /// Services by name: the host path of the program of the version installed, which the
    /// agent links (through `/host`) into a directory first on `PATH`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, String>,
    /// Variables every setup command and exec sees (`FLEETCHECK_DATA`,
    /// `FLEETCHECK_VERSION_<NAME>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
}

/// A VM's disk of its own: the virtio-blk device with serial [`DISK_SERIAL`], holding a fresh
/// file system the host made.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GuestDisk {
    /// Its type, as `mount -t` names it.
    pub fstype: String,
    /// Host paths of the (uncompressed) kernel modules to load first, dependencies first: the
    /// block driver and the file system. Loaded after Init, so a snapshot taken before it
    /// never read another machine's disk.
    pub modules: Vec<String>,
    /// The disk loses unsynced writes on a power cut (`MachineSpec::lose_unsynced`): mounted
    /// as on netns ([`crate::host::disk::mount_options`]).
    #[serde(default)]
    pub volatile: bool,
}

/// Serial number of a VM's own disk (its virtio-blk device).
pub const DISK_SERIAL: &str = "fleetcheck-data";

/// Requests an agent serves.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Request {
    /// Run argv, kill its process group after the timeout.
    Exec { argv: Vec<String>, timeout_ms: u64 },
    /// Send ICMP echo requests to `dst` until a reply arrives or the timeout passes.
    Ping { dst: Ipv4Addr, timeout_ms: u64 },
    /// Start `sh -c command` (its own process group) and leave it running: answered with
    /// [`Response::Spawned`] once it runs; its standard output comes as [`AgentMsg::Output`]
    /// lines and [`AgentMsg::Ended`] under the request's id, its input as [`HostMsg::Input`];
    /// its standard error is appended to the file `stderr_log`.
    Spawn { command: String, stderr_log: String },
}

/// Agent to host.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum AgentMsg {
    /// Guest agents only: the kernel is up and the agent waits for [`HostMsg::Init`].
    Booted,
    /// Setup done, serving requests.
    Ready,
    /// A setup command failed; the agent exits after sending this.
    SetupFailed {
        command: String,
        status: String,
        stderr: String,
    },
    /// The answer to request `id`.
    Response { id: u64, response: Response },
    /// A line (with its newline, if it had one) the program of [`Request::Spawn`] `id`
    /// wrote on its standard output; bytes that are not UTF-8 are replaced.
    Output { id: u64, line: String },
    /// That program's standard output closed: it ended (or closed it).
    Ended { id: u64 },
}

/// Answers to [`Request`]s.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Response {
    Exec(ExecOutput),
    Ping(bool),
    /// The program of a [`Request::Spawn`] runs.
    Spawned,
    /// The program could not be started (not found, not executable, ...).
    SpawnFailed {
        message: String,
    },
    /// Anything else that went wrong inside the agent.
    Error {
        message: String,
    },
}

/// Encodes one message as a line.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).expect("protocol messages always serialize");
    line.push(b'\n');
    line
}
