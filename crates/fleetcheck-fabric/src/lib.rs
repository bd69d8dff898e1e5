//! The fabric of fleetcheck: networks of machines over interchangeable backends.
//!
//! - [`NetworkSpec`], [`MachineSpec`], [`Subnet`]: what to build.
//! - [`Backend`] builds a [`Network`]; a network boots, shuts down and crashes machines, runs
//!   commands in them ([`ExecRequest`] / [`ExecOutput`]) and pings between them.
//! - Faults are network operations too: `pause`/`resume` freeze and thaw a machine,
//!   `partition`, `block` (one-way) and `loss` cut or thin its traffic on the switch until
//!   `heal`; they survive reboots. Both backends implement the same rules ([`FaultError`]).
//! - [`fake::FakeBackend`]: in memory, no OS calls, with planted ping faults, for engine tests.
//! - [`host`]: what every backend uses of the host: runs, the start-up [`host::sweep()`], the
//!   guardian, [`host::cleanup_process_resources`] for signal handlers, machine disks.
//! - [`netns::NetnsBackend`]: real Linux namespaces, a bridge in a private switch namespace and
//!   an [`agent`] as PID 1 of every machine. Needs root.
//! - Machine parameters beyond memory and kernel: [`MachineSpec::filesystem`] (the data
//!   directory lives on a fresh ext4, xfs or btrfs) and [`MachineSpec::services`] (which
//!   [`ServiceVersion`] of each service the machine runs; [`Network::set_service`] replaces one
//!   for a rolling upgrade).
//! - [`qemu::QemuBackend`]: QEMU VMs booting real kernels (the kernel release and memory are real
//!   parameters) from an initramfs fleetcheck builds, the agent as init, the same bridge and
//!   faults as netns, boots restored from snapshots. Needs root, QEMU, busybox and a kernel.
//! - [`load::LoadProbe`]: how late this host is (timer-wait overruns, CPU pressure) while
//!   something timed runs, so a scenario can judge a timeout against a loaded host.
//! - One error type per operation: [`BootError`], [`ShutdownError`], [`ExecError`], ...
//!
//! ```
//! use std::time::Duration;
//! use fleetcheck_fabric::{fake::FakeBackend, Backend, MachineSpec, NetworkSpec};
//!
//! let spec = NetworkSpec {
//!     subnet: "172.16.2.0/24".parse().unwrap(),
//!     machines: ["a", "b"]
//!         .iter()
//!         .enumerate()
//!         .map(|(i, id)| {
//!             MachineSpec::new(*id, format!("172.16.2.{}", i + 1).parse().unwrap(), 128, "6.1")
//!         })
//!         .collect(),
//! };
//! let net = FakeBackend::new().create(&spec).unwrap();
//! assert!(net.boot(&["a", "b"]).iter().all(Result::is_ok));
//! assert!(net.ping("a", "172.16.2.2".parse().unwrap(), Duration::from_secs(1)).unwrap());
//! net.partition(&[vec!["a".into()], vec!["b".into()]]).unwrap();
//! assert!(!net.ping("a", "172.16.2.2".parse().unwrap(), Duration::from_secs(1)).unwrap());
//! net.heal().unwrap();
//! net.pause("b").unwrap();
//! assert!(!net.ping("a", "172.16.2.2".parse().unwrap(), Duration::from_secs(1)).unwrap());
//! net.resume("b").unwrap();
//! net.shutdown("b").unwrap();
//! assert!(!net.ping("a", "172.16.2.2".parse().unwrap(), Duration::from_secs(1)).unwrap());
//! net.teardown().unwrap();
//! ```

pub mod agent;
mod backend;
pub mod corrupt;
mod error;
pub mod fake;
mod faults;
pub mod host;
pub mod load;
pub mod netem;
pub mod netns;
pub mod protocol;
pub mod qemu;
mod spawned;
mod spec;
mod switched;

pub use backend::{Backend, Network};
pub use corrupt::Corruption;
pub use error::{
    BootError, CreateError, ExecError, FaultError, HostError, PingError, ServiceError,
    ShutdownError, SweepError, TeardownError,
};
pub use host::volatile::DiskError;
pub use netem::Netem;
pub use spawned::Spawned;
pub use spec::{
    version_variable, ExecOutput, ExecRequest, FileSystem, MachineSpec, MachineStatus, NetworkSpec,
    ParseFileSystemError, ParseSubnetError, ServiceVersion, SpecError, Subnet, MAX_MACHINES,
};
