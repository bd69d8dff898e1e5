//! The two traits every backend implements.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::error::{
    BootError, CreateError, ExecError, FaultError, PingError, ServiceError, ShutdownError,
    TeardownError,
};
use crate::spawned::Spawned;
use crate::spec::{ExecOutput, ExecRequest, MachineStatus, NetworkSpec, ServiceVersion};

/// Extra time the host waits for an agent's answer beyond the request's own timeout (an exec
/// on a paused machine fails with `NoAnswer` once this much more has passed).
pub(crate) const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// A way to build networks of machines (in memory, Linux namespaces, VMs, ...).
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Short name, e.g. `"fake"` or `"netns"`.
    fn name(&self) -> &'static str;
    /// The kernel releases this backend can boot, the preferred (for shrinking) first; `None`
    /// when machines do not run their own kernel and `MachineSpec::kernel` is only a label.
    fn kernels(&self) -> Option<Vec<String>> {
        None
    }
    /// The least memory (MiB) a machine of this backend can boot with (a VM's kernel needs
    /// room for itself and its initramfs); 0 when there is no such floor.
    fn min_memory_mb(&self) -> u32 {
        0
    }
    /// How many cases should run at once when the user does not say; `None`: the scenario's
    /// default. (A TCG VM takes a whole core while it boots: more cases than cores starve
    /// each other's machines, and their pings time out.)
    fn default_workers(&self) -> Option<usize> {
        None
    }
    /// A directory of the run's own on the host that every machine of every network of this
    /// backend sees at the same path (for what a run prepares once and its cases share, such
    /// as a database's initial files), created on first use and removed with the run on every
    /// exit; `None` where machines do not see the host's files (the fake, VMs).
    fn scratch_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// Builds the network with every machine `Off`.
    fn create(&self, spec: &NetworkSpec) -> Result<Box<dyn Network>, CreateError>;
}

/// A built network. All methods take `&self` and may be called from several threads.
///
/// Network faults (partition, block, loss) sit on the switch, not in the machines: they survive
/// a machine's reboot and last until [`Network::heal`].
pub trait Network: Send + Sync {
    /// The spec it was built from.
    fn spec(&self) -> &NetworkSpec;
    /// Current status of machine `id`, `None` if there is no such machine.
    fn status(&self, id: &str) -> Option<MachineStatus>;
    /// Boots the machines in parallel; result `i` belongs to `ids[i]` and arrives when that
    /// machine's agent reported ready (setup commands done) or failed. A machine whose boot
    /// failed is `Off` again.
    fn boot(&self, ids: &[&str]) -> Vec<Result<(), BootError>>;
    /// Power cut: every process of the machine dies at once, its link goes down.
    fn shutdown(&self, id: &str) -> Result<(), ShutdownError>;
    /// A crash; on `netns` the same as [`Network::shutdown`]: every write the machine's
    /// programs made is kept (on `netns` the host's page cache has it).
    fn crash(&self, id: &str) -> Result<(), ShutdownError>;
    /// Power loss of machines `ids` at once (a coordinated power cut when several): each must
    /// be known, lose unsynced writes ([`crate::MachineSpec::lose_unsynced`]) and be running
    /// or paused (checked in that order over all of them), else nothing changes. Every process dies as in [`Network::crash`], and each disk keeps
    /// only what its file system had flushed, which is all the next boot sees. An id named
    /// twice counts once. On `qemu` the disk keeps what the guest flushed.
    fn power_cut(&self, ids: &[&str]) -> Result<(), FaultError>;
    /// Machine `id`'s disk fails from now on as `error` says (EIO on writes, flushes or reads,
    /// or ENOSPC on writes), until it is called with `None`; the machine must have the disk
    /// layer of [`crate::MachineSpec::lose_unsynced`]. What the machine's file system makes of
    /// it (an aborted journal, a read-only remount) lasts until it is mounted again at its
    /// next boot, as on a real disk. The default (backends that cannot): an error.
    fn disk_error(
        &self,
        _id: &str,
        _error: Option<crate::host::volatile::DiskError>,
    ) -> Result<(), FaultError> {
        Err(FaultError::NoDiskErrors { backend: "this" })
    }
    /// Sets (`Some`) or removes (`None`) a netem link fault on machine `id`'s outgoing
    /// packets ([`crate::Netem`]): delay, duplication, reordering, corruption. The machine must
    /// be running; the fault goes with its power (a boot starts without it), and
    /// [`Network::heal`] leaves it (remove it with `None`). Only backends whose kernels have
    /// netem: qemu's guests. The default: refused.
    fn netem(&self, id: &str, netem: Option<crate::Netem>) -> Result<(), FaultError> {
        let _ = (id, netem);
        Err(FaultError::NoNetem {
            backend: "this backend",
            why: "it has no netem",
        })
    }
    /// Sets machine `id`'s wall clock `offset_s` seconds from the host's (0: the host's again);
    /// the machine must be running and have [`crate::MachineSpec::clock`]. Its programs see
    /// the new time within a second; an offset lasts until the machine loses power (its next
    /// boot reads the host's clock). On `netns` it is refused while a program of the machine
    /// reads the clock without libc (statically linked, Go). The default: refused.
    fn set_clock(&self, id: &str, offset_s: i64) -> Result<(), FaultError> {
        let _ = offset_s;
        Err(FaultError::NoClock { machine: id.into() })
    }
    /// Corrupts one file of machine `id`'s data directory, which must be off (see
    /// [`crate::corrupt`]: `how`, the file and the place chosen by `pick`): what was done, or
    /// `None` when it has no file to corrupt. On qemu a file system of the machine's own is
    /// mounted on the host for it (in a mount namespace of its own). The default (the fake,
    /// whose machines have no files): refused.
    fn corrupt(
        &self,
        id: &str,
        how: crate::Corruption,
        pick: u64,
    ) -> Result<Option<String>, FaultError> {
        let _ = (how, pick);
        check_off(self, id, "have its data corrupted")?;
        Err(FaultError::NoCorruption { machine: id.into() })
    }
    /// Runs a command inside a running machine and waits for it.
    fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecOutput, ExecError>;
    /// Starts `sh -c command` inside running machine `id` and leaves it running, its standard
    /// input and output piped to the caller and its standard error appended to `<name>` in
    /// the machine's data directory: a long-lived client. It dies with the machine (its
    /// output ends), freezes with it; [`Spawned::end`] or a drop ends it early. On qemu its
    /// input and output travel as lines over the agent's channel (text: bytes that are not
    /// UTF-8 are replaced). The default (backends that cannot): [`ExecError::Spawn`].
    fn spawn(&self, id: &str, command: &str, _stderr_log: &str) -> Result<Spawned, ExecError> {
        Err(ExecError::Spawn {
            machine: id.to_string(),
            program: command.to_string(),
            message: "this backend cannot keep a process with pipes in a machine (netns and \
                      qemu can)"
                .to_string(),
        })
    }
    /// Sends ICMP echo requests from inside `from` to `to` until a reply arrives (`true`) or
    /// `timeout` passes (`false`). A machine that is `Off` gets no reply: `Ok(false)`.
    fn ping(&self, from: &str, to: Ipv4Addr, timeout: Duration) -> Result<bool, PingError>;
    /// Freezes every process of running machine `id`. Its link stays up, but it answers
    /// nothing: pings to it time out, pings from it are `Ok(false)` at once, an exec waits
    /// until [`Network::resume`] (or its own timeout plus a margin). Shutdown and crash still work.
    fn pause(&self, id: &str) -> Result<(), FaultError>;
    /// Thaws paused machine `id`; it answers again.
    fn resume(&self, id: &str) -> Result<(), FaultError>;
    /// Machines in different groups can no longer exchange packets (either way); machines
    /// named in no group form one more group. Adds to the faults in force until [`Network::heal`].
    fn partition(&self, groups: &[Vec<String>]) -> Result<(), FaultError>;
    /// One-way: packets from `from` to `to` are dropped; those from `to` to `from` still pass.
    fn block(&self, from: &str, to: &str) -> Result<(), FaultError>;
    /// Drops `percent` (0..=100, chosen at random per packet) of the packets to and from
    /// machine `id`; replaces its earlier loss, and 0 removes it.
    fn loss(&self, id: &str, percent: u8) -> Result<(), FaultError>;
    /// Removes every partition, block and loss (not pauses).
    fn heal(&self) -> Result<(), FaultError>;
    /// Captured agent and setup command output of machine `id`, over all its boots.
    fn logs(&self, id: &str) -> String;
    /// Machine `id`'s disk: a directory, visible at this path inside the machine, that keeps
    /// its contents across reboots and crashes and is removed with the network. `None` where
    /// the backend has no such disk (the fake).
    fn data_dir(&self, _id: &str) -> Option<std::path::PathBuf> {
        None
    }
    /// Where the host reads machine `id`'s data directory. The same path as
    /// [`Network::data_dir`] unless the machine has a file system of its own
    /// ([`crate::MachineSpec::filesystem`]), which is mounted only inside the machine: then a
    /// path through which the host sees that file system (on `netns` `/proc/<pid>/fd/<n>`),
    /// or `None` if the host cannot see it.
    fn data_dir_on_host(&self, id: &str) -> Option<std::path::PathBuf> {
        self.data_dir(id)
    }
    /// The service versions machine `id` runs now: its spec's, as replaced by
    /// [`Network::set_service`].
    fn services(&self, id: &str) -> Option<std::collections::BTreeMap<String, ServiceVersion>> {
        self.spec().machine(id).map(|m| m.services.clone())
    }
    /// Installs `version` of `service` on machine `id`, which must be off: from its next boot
    /// on it runs that version (a rolling upgrade: shut down, replace, boot; its data directory
    /// is kept). A service it did not have is added.
    fn set_service(
        &self,
        _id: &str,
        _service: &str,
        _version: &ServiceVersion,
    ) -> Result<(), ServiceError> {
        Err(ServiceError::Unsupported)
    }
    /// Removes everything the network consists of. Dropping the network does the same on a
    /// best-effort basis.
    fn teardown(self: Box<Self>) -> Result<(), TeardownError>;
}

/// The variables every program of a machine sees besides the backend's own: `FLEETCHECK_DATA`
/// (its data directory) and one `FLEETCHECK_VERSION_<NAME>` per service.
pub(crate) fn machine_env(
    data: &std::path::Path,
    services: &std::collections::BTreeMap<String, ServiceVersion>,
) -> Vec<(String, String)> {
    std::iter::once(("FLEETCHECK_DATA".to_string(), data.display().to_string()))
        .chain(
            services
                .iter()
                .map(|(name, v)| (crate::spec::version_variable(name), v.version.clone())),
        )
        .collect()
}

/// A machine's installed service versions: what [`Network::services`] reports and
/// [`Network::set_service`] replaces (netns and qemu alike).
#[derive(Debug, Default)]
pub(crate) struct Installed(std::sync::Mutex<std::collections::BTreeMap<String, ServiceVersion>>);

impl Installed {
    pub(crate) fn new(initial: std::collections::BTreeMap<String, ServiceVersion>) -> Self {
        Self(std::sync::Mutex::new(initial))
    }

    /// The versions installed now.
    pub(crate) fn get(&self) -> std::collections::BTreeMap<String, ServiceVersion> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Installs `version` of `service` on machine `id` (which is `status`, perhaps `booting`;
    /// see [`check_set_service`]): `install` puts the new set in place, then the record changes.
    pub(crate) fn set(
        &self,
        id: &str,
        (status, booting): (MachineStatus, bool),
        service: &str,
        version: &ServiceVersion,
        install: impl FnOnce(&std::collections::BTreeMap<String, ServiceVersion>) -> std::io::Result<()>,
    ) -> Result<(), ServiceError> {
        check_set_service(id, status, booting, service, version)?;
        let mut installed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = installed.clone();
        next.insert(service.to_string(), version.clone());
        install(&next).map_err(|source| ServiceError::Install {
            machine: id.into(),
            service: service.into(),
            source,
        })?;
        *installed = next;
        Ok(())
    }
}

/// Whether [`Network::set_service`] may install `version` of `service` on machine `id`, which
/// is `status` and perhaps `booting`: only while off, a plain name, an absolute path.
pub(crate) fn check_set_service(
    id: &str,
    status: MachineStatus,
    booting: bool,
    service: &str,
    version: &ServiceVersion,
) -> Result<(), ServiceError> {
    if status != MachineStatus::Off || booting {
        return Err(ServiceError::WrongStatus {
            machine: id.into(),
            status: if booting {
                MachineStatus::Running
            } else {
                status
            },
        });
    }
    if service.is_empty()
        || service.contains(['/', '\0'])
        || service.starts_with('.')
        || !version.path.is_absolute()
    {
        return Err(ServiceError::BadService {
            machine: id.into(),
            service: service.into(),
        });
    }
    Ok(())
}

/// Boots `ids` in parallel, one thread each, with `boot_one`; result `i` belongs to `ids[i]`. An
/// id named twice fails the second time with [`BootError::Duplicate`] without booting.
pub(crate) fn boot_in_parallel(
    ids: &[&str],
    boot_one: impl Fn(&str) -> Result<(), BootError> + Sync,
) -> Vec<Result<(), BootError>> {
    let boot_one = &boot_one;
    std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let dup = ids[..i].contains(id);
                s.spawn(move || {
                    if dup {
                        return Err(BootError::Duplicate {
                            machine: (*id).into(),
                        });
                    }
                    boot_one(id)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("boot threads do not panic"))
            .collect()
    })
}

/// Machine `id` of `net` is known and off (else the error saying why it cannot `operation`).
pub(crate) fn check_off<N: Network + ?Sized>(
    net: &N,
    id: &str,
    operation: &'static str,
) -> Result<(), FaultError> {
    match net.status(id) {
        None => Err(FaultError::UnknownMachine { machine: id.into() }),
        Some(MachineStatus::Off) => Ok(()),
        Some(status) => Err(FaultError::WrongStatus {
            machine: id.into(),
            status,
            operation,
        }),
    }
}
