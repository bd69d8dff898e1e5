//! The `qemu` backend: every machine is a QEMU VM (microvm machine type) booting a real kernel
//! of its own, chosen by `MachineSpec::kernel`, with `MachineSpec::memory_mb` of guest memory.
//! Needs root, `qemu-system-x86_64`, busybox and at least one kernel ([`kernels`]).
//!
//! - No root disk image: the VM boots a kernel and an initramfs fleetcheck builds itself and
//!   caches ([`initramfs`]: busybox, the agent with its libraries, the kernel's virtio modules).
//!   The host's root is shared read-only over virtio-9p; the guest binds its `/usr`, `/etc`, ...
//! - A machine with a file system of its own (`MachineSpec::filesystem`) gets a virtio-blk
//!   disk: an image made like netns's, mounted by the guest at its data directory. Service
//!   versions are host programs the guest links through the share.
//! - The agent is init (PID 1) of the guest ([`crate::agent::guest`]) and talks the same
//!   [`crate::protocol`] as on netns over a virtio-serial port.
//! - Network: like netns, a switch namespace with bridge `br0` and no uplink; each VM's NIC is a
//!   tap `p<i>` (`p<i>r<n>` after reboots) on it, created in the switch namespace and owned by
//!   QEMU alone, so it vanishes with QEMU. Faults are the same nftables rules on the bridge;
//!   pause is SIGSTOP of QEMU (plus the same "paused" rules), resume SIGCONT.
//! - Shutdown and crash are power cuts: SIGKILL to QEMU.
//! - Boot from a snapshot ([`snapshot`]): the first cold boot of a kind of machine (kernel,
//!   memory, initramfs, QEMU and accelerator) saves the VM when its agent says `Booted`, before
//!   it took any identity; later boots restore that file (`-incoming`) and send Init, so the
//!   restored VM becomes its own machine (address, MAC, hostname, setup).
//! - Acceleration ([`choose_accel`]): KVM if a short probe boot really reaches the kernel,
//!   else TCG, said once.
//! - Clean-up: per network `/run/fleetcheck/<run>/n<k>/` holds each VM's log, sockets and
//!   pidfile (`m<i>.qemu.pid`: pid and start time); teardown, drop and Ctrl-C
//!   ([`crate::host::cleanup_process_resources`]) kill QEMU; the start-up sweep kills QEMU of dead runs by
//!   their pidfiles.

mod initramfs;
pub mod kernels;
mod network;
mod share;
mod snapshot;
mod vm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{Backend, Network};
use crate::error::{CreateError, HostError};
use crate::host::sweep::RunDir;
use crate::host::{AgentCommand, GATE};
use crate::protocol::GuestDisk;
use crate::spec::{FileSystem, NetworkSpec};

pub use initramfs::{find_busybox, InitramfsError, GUEST_MODULES};
pub use kernels::Kernel;
pub use network::BootRecord;
pub use network::QemuNetwork;
pub use vm::find_qemu;
pub(crate) use vm::pidfile_alive;

/// The least guest memory, MiB: a Debian kernel keeps about 60 MiB for itself and needs room
/// to unpack the initramfs (below about 112 MiB it panics, "deadlocked on memory").
pub const MIN_MEMORY_MB: u32 = 128;

/// Kernel names that mean "the first installed kernel".
pub const DEFAULT_KERNELS: &[&str] = &["", "host"];

/// Which accelerator QEMU uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Accel {
    /// Hardware virtualisation (`/dev/kvm`).
    Kvm,
    /// QEMU's binary translator: slow, works everywhere.
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The accelerator chosen and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

/// Settings of the `qemu` backend.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// The agent, copied into the initramfs and started there with `--guest` added.
    pub agent: AgentCommand,
    /// How long a boot (QEMU start, kernel, setup commands) may take.
    pub boot_timeout: Duration,
    /// Force an accelerator instead of probing.
    pub accel: Option<Accel>,
    /// Save and restore snapshots of booted machines.
    pub snapshots: bool,
    /// Initramfs and snapshot cache: `$FLEETCHECK_CACHE` or `/var/cache/fleetcheck`.
    pub cache_dir: PathBuf,
    /// Niceness of the QEMU processes (0: as this process). Tests raise it so VMs under TCG
    /// do not starve timing-sensitive work beside them.
    pub nice: i32,
}

impl QemuConfig {
    /// Defaults around a given agent command.
    pub fn new(agent: AgentCommand) -> Self {
        QemuConfig {
            agent,
            boot_timeout: Duration::from_secs(60),
            accel: None,
            snapshots: true,
            cache_dir: default_cache_dir(),
            nice: 0,
        }
    }

    /// Defaults with [`AgentCommand::locate`].
    pub fn located() -> Result<Self, HostError> {
        Ok(Self::new(AgentCommand::locate()?))
    }
}

/// `$FLEETCHECK_CACHE` or `/var/cache/fleetcheck`.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("FLEETCHECK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/fleetcheck"))
}

/// The `qemu` backend; one instance is one run (see [`crate::host::sweep()`]).
#[derive(Debug)]
pub struct QemuBackend {
    config: QemuConfig,
    qemu: PathBuf,
    run: Arc<RunDir>,
    accel: AccelChoice,
    kernels: Vec<Kernel>,
    /// Initramfs per kernel release, built on first use.
    initramfs: Mutex<BTreeMap<String, PathBuf>>,
    /// What a VM with a file system of its own loads, per kernel release and file system,
    /// prepared on first use.
    disks: Mutex<BTreeMap<(String, FileSystem), GuestDisk>>,
    snapshots: Arc<snapshot::Snapshots>,
    /// What the VMs see of the host ([`share`]).
    share: Arc<share::Share>,
}

impl QemuBackend {
    /// Checks the host (root, QEMU, busybox, kernels), sweeps what dead runs left, chooses the
    /// accelerator and claims a new run id.
    pub fn new(config: QemuConfig) -> Result<Self, HostError> {
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(HostError::NotRootFor {
                backend: "qemu",
                euid,
            });
        }
        let qemu = find_qemu().ok_or(HostError::QemuMissing)?;
        let kernels = kernels::installed();
        if kernels.is_empty() {
            return Err(HostError::NoKernels {
                private: kernels::private_dir(),
                how: kernels::HOW_TO_INSTALL,
            });
        }
        if !Path::new("/dev/net/tun").exists() {
            return Err(HostError::MissingFeature {
                feature: "tap devices",
                path: "/dev/net/tun".into(),
            });
        }
        let run = RunDir::claim(&config.agent)?;
        let share_at = run.path.join("share");
        let modules: Vec<(String, PathBuf)> = kernels
            .iter()
            .map(|k| (k.release.clone(), k.modules.clone()))
            .collect();
        let share = share::Share::build(
            &share_at,
            &modules,
            &[kernels::private_dir(), config.cache_dir.clone()],
        )
        .map_err(|source| HostError::Share {
            path: share_at.clone(),
            source,
        })?;
        let mut config = config;
        // Snapshots are compressed with zstd: without it, every boot is cold.
        config.snapshots &= find_program("zstd").is_some();
        let mut backend = QemuBackend {
            snapshots: Arc::new(snapshot::Snapshots::new(config.cache_dir.join("snapshots"))),
            config,
            qemu,
            run,
            accel: AccelChoice {
                accel: Accel::Tcg,
                reason: String::new(),
            },
            kernels,
            initramfs: Mutex::new(BTreeMap::new()),
            disks: Mutex::new(BTreeMap::new()),
            share: Arc::new(share),
        };
        backend.accel = match backend.config.accel {
            Some(accel) => AccelChoice {
                accel,
                reason: "configured".into(),
            },
            None => {
                let kernel = backend.kernels[0].clone();
                let initramfs =
                    backend
                        .initramfs_for(&kernel)
                        .map_err(|source| HostError::Initramfs {
                            release: kernel.release.clone(),
                            source,
                        })?;
                choose_accel(
                    &backend.qemu,
                    &kernel,
                    &initramfs,
                    &backend.config.cache_dir,
                )
            }
        };
        Ok(backend)
    }

    /// This backend's run id.
    pub fn run_id(&self) -> &str {
        &self.run.run
    }

    /// The accelerator in use and why.
    pub fn accel(&self) -> &AccelChoice {
        &self.accel
    }

    /// The kernels machines may name, oldest first.
    pub fn installed_kernels(&self) -> &[Kernel] {
        &self.kernels
    }

    fn initramfs_for(&self, kernel: &Kernel) -> Result<PathBuf, InitramfsError> {
        let mut built = self.initramfs.lock().unwrap_or_else(|e| e.into_inner());
        // Another process's cache pruning may have removed it meanwhile: then build it again.
        if let Some(p) = built.get(&kernel.release).filter(|p| p.is_file()) {
            return Ok(p.clone());
        }
        let path = initramfs::build(&self.config.cache_dir, kernel, &self.config.agent)?;
        built.insert(kernel.release.clone(), path.clone());
        Ok(path)
    }

    /// The modules a VM of `kernel` loads for a disk of file system `fs` (see
    /// [`initramfs::unpacked_modules`]), prepared once per backend.
    fn disk_for(&self, kernel: &Kernel, fs: FileSystem) -> Result<GuestDisk, InitramfsError> {
        let mut prepared = self.disks.lock().unwrap_or_else(|e| e.into_inner());
        let key = (kernel.release.clone(), fs);
        if let Some(d) = prepared.get(&key) {
            return Ok(d.clone());
        }
        let wanted: Vec<&str> = initramfs::DISK_MODULES
            .iter()
            .copied()
            .chain([fs.name()])
            .collect();
        let modules = initramfs::unpacked_modules(&self.config.cache_dir, kernel, &wanted)?;
        let disk = GuestDisk {
            volatile: false,
            fstype: fs.name().into(),
            modules: modules
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
        };
        prepared.insert(key, disk.clone());
        Ok(disk)
    }

    /// Like [`Backend::create`], returning the concrete network type.
    pub fn create_qemu(&self, spec: &NetworkSpec) -> Result<QemuNetwork, CreateError> {
        spec.validate().map_err(CreateError::InvalidSpec)?;
        let _in_flight = GATE.enter()?;
        let mut hardware = Vec::with_capacity(spec.machines.len());
        let mut disks = Vec::with_capacity(spec.machines.len());
        for m in &spec.machines {
            if m.memory_mb < MIN_MEMORY_MB {
                return Err(CreateError::TooLittleMemory {
                    machine: m.id.clone(),
                    memory_mb: m.memory_mb,
                    min: MIN_MEMORY_MB,
                });
            }
            // "host" (what backends without own kernels are given) means the preferred one.
            let kernel = self
                .kernels
                .iter()
                .find(|k| k.release == m.kernel || (DEFAULT_KERNELS.contains(&m.kernel.as_str())))
                .ok_or_else(|| CreateError::UnknownKernel {
                    machine: m.id.clone(),
                    kernel: m.kernel.clone(),
                    installed: self
                        .kernels
                        .iter()
                        .map(|k| k.release.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let initramfs =
                self.initramfs_for(kernel)
                    .map_err(|source| CreateError::Initramfs {
                        release: kernel.release.clone(),
                        source,
                    })?;
            let image = kernels::uncompressed(kernel, &self.config.cache_dir)
                .unwrap_or_else(|| kernel.image.clone());
            hardware.push(vm::Hardware {
                qemu: self.qemu.clone(),
                accel: self.accel.accel,
                kernel_image: image,
                initramfs,
                memory_mb: m.memory_mb,
                cmdline: vm::cmdline(),
                modules: kernel.modules.clone(),
                share: self.share.path(),
                nice: self.config.nice,
                disk: m.disk_filesystem().is_some(),
            });
            disks.push(match m.disk_filesystem() {
                None => None,
                Some(fs) => {
                    Some(
                        self.disk_for(kernel, fs)
                            .map_err(|source| CreateError::DiskModules {
                                machine: m.id.clone(),
                                filesystem: fs,
                                release: kernel.release.clone(),
                                source,
                            })?,
                    )
                }
            });
        }
        network::create(
            spec,
            hardware,
            disks,
            &self.config,
            &self.run,
            self.config.snapshots.then(|| self.snapshots.clone()),
            self.share.clone(),
        )
    }
}

impl Backend for QemuBackend {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn kernels(&self) -> Option<Vec<String>> {
        Some(self.kernels.iter().map(|k| k.release.clone()).collect())
    }

    fn min_memory_mb(&self) -> u32 {
        MIN_MEMORY_MB
    }

    fn default_workers(&self) -> Option<usize> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Some(match self.accel.accel {
            Accel::Kvm => 2 * cpus,
            Accel::Tcg => cpus,
        })
    }

    fn create(&self, spec: &NetworkSpec) -> Result<Box<dyn Network>, CreateError> {
        Ok(Box::new(self.create_qemu(spec)?))
    }
}

/// `program` on `PATH` or in /usr/bin.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/bin".into());
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

impl QemuBackend {
    /// Whether this backend saves and restores snapshots (configured, and zstd exists).
    pub fn snapshots_enabled(&self) -> bool {
        self.config.snapshots
    }
}

/// How long the KVM probe waits for the kernel's first words.
const KVM_PROBE: Duration = Duration::from_secs(3);

/// KVM if `/dev/kvm` opens and a probe VM (the real kernel and initramfs) prints the kernel's
/// banner on its serial console within [`KVM_PROBE`]; TCG otherwise. Some hosts (nested,
/// paravirtual KVM) have a `/dev/kvm` that hangs guests after the real-mode stage: only a boot
/// tells. The answer is kept in `<cache>/accel` for this boot of the host and QEMU binary, and
/// a fall-back to TCG is said once per process on stderr.
pub fn choose_accel(qemu: &Path, kernel: &Kernel, initramfs: &Path, cache: &Path) -> AccelChoice {
    static SAID: std::sync::Once = std::sync::Once::new();
    let choice = probe_cached(qemu, kernel, initramfs, cache);
    if choice.accel == Accel::Tcg {
        SAID.call_once(|| eprintln!("fleetcheck: qemu uses TCG (slow): {}", choice.reason));
    }
    choice
}

fn probe_cached(qemu: &Path, kernel: &Kernel, initramfs: &Path, cache: &Path) -> AccelChoice {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return AccelChoice {
            accel: Accel::Tcg,
            reason: "/dev/kvm cannot be opened".into(),
        };
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let qemu_mtime = std::fs::metadata(qemu)
        .and_then(|m| m.modified())
        .map(|t| format!("{t:?}"))
        .unwrap_or_default();
    let key = format!("{} {} {}", boot_id.trim(), qemu.display(), qemu_mtime);
    let file = cache.join("accel");
    if let Ok(text) = std::fs::read_to_string(&file) {
        let mut lines = text.lines();
        if lines.next() == Some(key.as_str()) {
            let accel = match lines.next() {
                Some("kvm") => Some(Accel::Kvm),
                Some("tcg") => Some(Accel::Tcg),
                _ => None,
            };
            if let Some(accel) = accel {
                return AccelChoice {
                    accel,
                    reason: lines.next().unwrap_or("").to_string() + " (probed earlier this boot)",
                };
            }
        }
    }
    let choice = probe_kvm(qemu, kernel, initramfs);
    let _ = std::fs::create_dir_all(cache);
    let _ = std::fs::write(
        &file,
        format!("{key}\n{}\n{}\n", choice.accel, choice.reason),
    );
    choice
}

fn probe_kvm(qemu: &Path, kernel: &Kernel, initramfs: &Path) -> AccelChoice {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let started = Instant::now();
    let spawned = Command::new(qemu)
        .args([
            "-M",
            "microvm,isa-serial=on",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "128",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-serial",
            "stdio",
            "-kernel",
        ])
        .arg(&kernel.image)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 rdinit=/fc/bin/true"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return AccelChoice {
                accel: Accel::Tcg,
                reason: format!("the KVM probe could not start qemu: {e}"),
            }
        }
    };
    let mut out = child.stdout.take().expect("stdout is piped");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&out);
    let mut seen = Vec::new();
    let banner = b"Linux version";
    let mut ok = false;
    while started.elapsed() < KVM_PROBE {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let left = KVM_PROBE.saturating_sub(started.elapsed()).as_millis() as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, left.max(1)) };
        if rc <= 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        if seen.windows(banner.len()).any(|w| w == banner) {
            ok = true;
            break;
        }
    }
    let _ = child.kill();
    let status = child.wait();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if ok {
        AccelChoice {
            accel: Accel::Kvm,
            reason: format!(
                "a KVM probe VM printed its kernel banner after {} ms",
                started.elapsed().as_millis()
            ),
        }
    } else {
        let why = err.lines().next().map(str::to_string).unwrap_or_else(|| {
            format!(
                "it printed nothing within {KVM_PROBE:?} ({})",
                status.map(|s| s.to_string()).unwrap_or_default()
            )
        });
        AccelChoice {
            accel: Accel::Tcg,
            reason: format!("/dev/kvm exists but a KVM probe VM did not boot: {why}"),
        }
    }
}
