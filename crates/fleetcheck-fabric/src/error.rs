//! One error type per operation. Variants tell "asked for something the state does not allow"
//! (`UnknownMachine`, `WrongStatus`) from "the OS or the agent failed" (everything else).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::spec::{MachineStatus, SpecError};

/// The host cannot run a backend at all: missing privilege or kernel support.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the netns backend needs root (effective uid is {euid})")]
    NotRoot { euid: u32 },
    #[error("the kernel lacks {feature} (no {path})")]
    MissingFeature {
        feature: &'static str,
        path: PathBuf,
    },
    #[error("no cgroup hierarchy with the memory controller (neither {v1} nor {v2})")]
    NoMemoryCgroup { v1: PathBuf, v2: PathBuf },
    #[error("failed to start the run's guardian ({program} --guard)")]
    Guardian {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to prepare run directory {path}")]
    RunDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to build the VMs' read-only view of the host at {path}")]
    Share {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no fleetcheck-agent found (looked at {searched:?}; set FLEETCHECK_AGENT)")]
    AgentNotFound { searched: Vec<PathBuf> },
    #[error("start-up sweep failed")]
    Sweep(#[source] SweepError),
    #[error("the {backend} backend needs root (effective uid is {euid})")]
    NotRootFor { backend: &'static str, euid: u32 },
    #[error("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")]
    QemuMissing,
    #[error("no kernel for VMs is installed (no /boot/vmlinuz-<release> with /lib/modules/<release>, nothing in {private}): {how}")]
    NoKernels { private: PathBuf, how: &'static str },
    #[error("failed to build the initramfs of kernel {release}")]
    Initramfs {
        release: String,
        #[source]
        source: crate::qemu::InitramfsError,
    },
}

/// The start-up sweep could not look at or remove a leftover of a dead run.
#[derive(Debug, thiserror::Error)]
#[error("failed to remove {what} left by dead run {run}")]
pub struct SweepError {
    pub run: String,
    pub what: String,
    #[source]
    pub source: io::Error,
}

/// A network could not be created; everything created so far was removed again.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("invalid network spec")]
    InvalidSpec(#[source] SpecError),
    #[error("failed to create network namespace {name}")]
    Namespace {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("machine {machine} wants file system {filesystem}, whose kernel modules kernel {release} lacks or that could not be prepared")]
    DiskModules {
        machine: String,
        filesystem: crate::spec::FileSystem,
        release: String,
        #[source]
        source: crate::qemu::InitramfsError,
    },
    #[error("failed to prepare the disk of machine {machine}")]
    Disk {
        machine: String,
        #[source]
        source: io::Error,
    },
    #[error("netlink request failed: {what}")]
    Netlink {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to set up cgroup {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the backend was shut down")]
    BackendGone,
    #[error(
        "machine {machine} wants kernel {kernel}, which is not installed (installed: {installed})"
    )]
    UnknownKernel {
        machine: String,
        kernel: String,
        installed: String,
    },
    #[error("failed to build the initramfs of kernel {release}")]
    Initramfs {
        release: String,
        #[source]
        source: crate::qemu::InitramfsError,
    },
    #[error("machine {machine} has {memory_mb} MiB but this backend needs at least {min} MiB")]
    TooLittleMemory {
        machine: String,
        memory_mb: u32,
        min: u32,
    },
    #[error("machine {machine}'s clock may be moved, which on netns needs libfaketime ({path}): apt-get install faketime")]
    NoFaketime { machine: String, path: &'static str },
    #[error("failed to create {path}")]
    RunFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A machine did not boot; it is `Off` again.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("no machine {machine} in this network")]
    UnknownMachine { machine: String },
    #[error("machine {machine} cannot boot while {status}")]
    WrongStatus {
        machine: String,
        status: MachineStatus,
    },
    #[error("machine {machine} is named twice in one boot")]
    Duplicate { machine: String },
    #[error("failed to start the agent of machine {machine}")]
    Spawn {
        machine: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to bring the link of machine {machine} up")]
    Link {
        machine: String,
        #[source]
        source: io::Error,
    },
    #[error("setup command `{command}` of machine {machine} exited with {status}: {stderr}")]
    SetupFailed {
        machine: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("failed to start qemu for machine {machine}")]
    Qemu {
        machine: String,
        #[source]
        source: io::Error,
    },
    #[error("the agent of machine {machine} went away during boot: {detail}")]
    AgentLost { machine: String, detail: String },
    #[error("machine {machine} was not ready after {after:?}")]
    Timeout { machine: String, after: Duration },
    #[error("setup command `{command}` of machine {machine} was still running at the boot deadline of {after:?}")]
    SetupTimeout {
        machine: String,
        command: String,
        after: Duration,
    },
}

/// A machine could not be shut down or crashed.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error("no machine {machine} in this network")]
    UnknownMachine { machine: String },
    #[error("machine {machine} cannot shut down while {status}")]
    WrongStatus {
        machine: String,
        status: MachineStatus,
    },
    #[error("failed to kill the agent of machine {machine}")]
    Kill {
        machine: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to bring the link of machine {machine} down")]
    Link {
        machine: String,
        #[source]
        source: io::Error,
    },
}

/// A command could not be run (a command that ran and failed is an `Ok` [`crate::ExecOutput`]).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("no machine {machine} in this network")]
    UnknownMachine { machine: String },
    #[error("machine {machine} cannot run commands while {status}")]
    WrongStatus {
        machine: String,
        status: MachineStatus,
    },
    #[error("empty command for machine {machine}")]
    EmptyCommand { machine: String },
    #[error("machine {machine} could not start `{program}`: {message}")]
    Spawn {
        machine: String,
        program: String,
        message: String,
    },
    #[error("the agent of machine {machine} went away")]
    AgentLost { machine: String },
    #[error("the agent of machine {machine} did not answer within {after:?}")]
    NoAnswer { machine: String, after: Duration },
    #[error("failed to send a request to the agent of machine {machine}")]
    Channel {
        machine: String,
        #[source]
        source: io::Error,
    },
}

/// A ping could not be attempted (an unanswered ping is `Ok(false)`).
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("no machine {machine} in this network")]
    UnknownMachine { machine: String },
    #[error("machine {machine} failed to ping: {message}")]
    Agent { machine: String, message: String },
    #[error("the agent of machine {machine} went away")]
    AgentLost { machine: String },
    #[error("the agent of machine {machine} did not answer within {after:?}")]
    NoAnswer { machine: String, after: Duration },
    #[error("failed to send a request to the agent of machine {machine}")]
    Channel {
        machine: String,
        #[source]
        source: io::Error,
    },
}

/// Some resources of a network could not be removed (the others were).
#[derive(Debug, thiserror::Error)]
#[error("failed to remove {what} ({more} more failures)")]
pub struct TeardownError {
    pub what: String,
    pub more: usize,
    #[source]
    pub source: io::Error,
}

/// A fault (pause, resume, partition, block, loss, heal) could not be applied; the faults in
/// force are those before the call.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("no machine {machine} in this network")]
    UnknownMachine { machine: String },
    #[error("machine {machine} cannot {operation} while {status}")]
    WrongStatus {
        machine: String,
        status: MachineStatus,
        operation: &'static str,
    },
    #[error("machine {machine} is named in more than one partition group")]
    RepeatedInPartition { machine: String },
    #[error("machine {machine} cannot be blocked from itself")]
    SameMachine { machine: String },
    #[error("loss of {percent}% is more than 100%")]
    BadPercent { percent: u8 },
    #[error("nft not found: apt-get install nftables")]
    NftMissing,
    #[error("failed to run nft in the switch namespace")]
    NftSpawn(#[source] io::Error),
    #[error("nft rejected the fault rules ({status}): {stderr}")]
    NftRejected { status: String, stderr: String },
    #[error("no freezer for machine {machine} (neither a v1 freezer hierarchy nor cgroup.freeze)")]
    NoFreezer { machine: String },
    #[error("failed to use the freezer cgroup {path} of machine {machine}")]
    Freezer {
        machine: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the freezer of machine {machine} did not reach {state} within {after:?}")]
    FreezerTimeout {
        machine: String,
        state: &'static str,
        after: Duration,
    },
    #[error("the network was torn down")]
    TornDown,
    #[error("failed to send {signal} to qemu of machine {machine}")]
    Signal {
        machine: String,
        signal: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("machine {machine} has no disk layer of fleetcheck's: power cuts and disk errors need `lose_unsynced` in its spec")]
    NotVolatile { machine: String },
    #[error("the {backend} backend cannot make disks fail")]
    NoDiskErrors { backend: &'static str },
    #[error("failed to power machine {machine} off")]
    PowerOff {
        machine: String,
        #[source]
        source: ShutdownError,
    },
    #[error("{backend} cannot delay, duplicate, reorder or corrupt packets: {why}")]
    NoNetem {
        backend: &'static str,
        why: &'static str,
    },
    #[error("netem rejects {netem} (shares are 1 to 100 %, delays at most a minute, jitter at most the delay)")]
    BadNetem { netem: crate::Netem },
    #[error("failed to set netem on machine {machine}: {why}")]
    Netem { machine: String, why: String },
    #[error("machine {machine}'s clock cannot be moved: clock faults need `clock` in its spec ([machine] clock = true)")]
    NoClock { machine: String },
    #[error("the clock fault cannot move the clock {program} on machine {machine} reads: it is {why}; run this scenario on the qemu backend, whose guests have clocks of their own")]
    ClockOutOfReach {
        machine: String,
        program: String,
        why: &'static str,
    },
    #[error("failed to move machine {machine}'s clock")]
    Clock {
        machine: String,
        #[source]
        source: io::Error,
    },
    #[error("the host cannot reach machine {machine}'s data directory to corrupt it (the fake backend has no files)")]
    NoCorruption { machine: String },
    #[error("failed to corrupt a file of machine {machine}'s data directory")]
    Corrupt {
        machine: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "failed to bring back the durable state of machine {machine}'s disk, or to make it fail"
    )]
    Disk {
        machine: String,
        #[source]
        source: io::Error,
    },
}

impl FaultError {
    /// Whether the backend refuses what was asked (it cannot do it here: netem on netns, a
    /// clock fault for a Go program, a disk layer the machine does not have), rather than
    /// failing at it.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            FaultError::NoNetem { .. }
                | FaultError::NoClock { .. }
                | FaultError::ClockOutOfReach { .. }
                | FaultError::NoCorruption { .. }
                | FaultError::NoDiskErrors { .. }
                | FaultError::NotVolatile { .. }
        )
    }
}

/// A machine's service version could not be replaced.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no machine {machine} in this network")]
    UnknownMachine { machine: String },
    #[error("machine {machine} is {status}; replace a service version while it is off")]
    WrongStatus {
        machine: String,
        status: MachineStatus,
    },
    #[error("service `{service}` of machine {machine} needs a plain name and an absolute path")]
    BadService { machine: String, service: String },
    #[error("this backend cannot replace service versions")]
    Unsupported,
    #[error("failed to install {service} on machine {machine}")]
    Install {
        machine: String,
        service: String,
        #[source]
        source: io::Error,
    },
}
