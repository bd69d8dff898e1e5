//! A network of QEMU machines: creation, boot (cold or from a snapshot), SIGSTOP/SIGCONT for
//! pause and resume, killing QEMU. What it shares with netns (status rules, power cuts, pause
//! bookkeeping, the `Network` operations, the teardown sequence) is in [`crate::switched`].

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::share::Share;
use super::snapshot::{Claim, Snapshots};
use super::vm::{self, Hardware, Qmp, Start, Vm, VmPaths, SHARE_TAG};
use super::QemuConfig;
use crate::error::{BootError, CreateError, FaultError};
use crate::host::conn::AgentConn;
use crate::host::disk::{self, Served};
use crate::host::netlink::Req;
use crate::host::ns;
use crate::host::sweep::RunDir;
use crate::host::switch::{self, mac_of, Switch};
use crate::host::sys;
use crate::protocol::{AgentMsg, GuestDisk, GuestInit, HostMsg};
use crate::spec::{NetworkSpec, ServiceVersion};
use crate::switched::{self, BootFailure, Handle, Net, Switched};

static NEXT_NET: AtomicU64 = AtomicU64::new(0);

/// How long restoring a snapshot may take until the VM runs.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(15);

/// Waits until QEMU (reached on its QMP socket `qmp`) reports its VM running.
fn wait_running(qmp: &std::path::Path, until: Instant) -> io::Result<()> {
    // QEMU creates its QMP socket after the agent's chardev has connected.
    let mut pause = Duration::from_millis(1);
    let mut qmp = loop {
        match Qmp::connect(qmp, RESTORE_TIMEOUT) {
            Ok(q) => break q,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && Instant::now() < until =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    };
    let mut pause = Duration::from_millis(1);
    loop {
        let status = qmp.execute("query-status", None)?;
        match status.get("status").and_then(|s| s.as_str()) {
            Some("running") => return Ok(()),
            Some("inmigrate") | Some("prelaunch") | Some("restore-vm") => {}
            other => {
                return Err(io::Error::other(format!(
                    "the restored vm is {} instead of running",
                    other.unwrap_or("in an unknown state")
                )))
            }
        }
        if Instant::now() >= until {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the restored vm did not start running",
            ));
        }
        // Polls QEMU's own state with a deadline; QMP has no event for "incoming done" here.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// How long a volatile disk's FUSE server may take to end once QEMU and this process let go.
const SERVER_END: Duration = Duration::from_secs(5);

/// How long a snapshot may take to write.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a QEMU machine has beyond what every switched machine has.
pub(crate) struct Own {
    hw: Hardware,
    /// Its own file system, when its spec names one (image `paths.image`).
    disk: Option<GuestDisk>,
    paths: VmPaths,
    /// The running QEMU; its pid is also in `pid` for teardown without the lock.
    vm: Mutex<Option<Vm>>,
    /// For a machine that loses unsynced writes: the FUSE file over its image that QEMU uses
    /// as the disk (`host::volatile`), and its server; replaced after each power cut.
    volatile: Mutex<Option<(OwnedFd, Served)>>,
    pid: AtomicI32,
    /// Boots started so far (names the tap: `p<i>`, then `p<i>r<n>`).
    boots: AtomicU64,
}

type Machine = switched::Machine<Own>;

/// Everything a network owns; shared with the process registry for Ctrl-C cleanup.
pub struct NetShared {
    net: Net<Own>,
    config: QemuConfig,
    snapshots: Option<Arc<Snapshots>>,
    /// What the VMs see of the host; service programs' directories are added as booted.
    share: Arc<Share>,
    /// How each boot went, for benchmarks and tests: (machine index, from snapshot, time).
    boot_log: Mutex<Vec<BootRecord>>,
}

/// How one boot went.
#[derive(Clone, Debug, PartialEq)]
pub struct BootRecord {
    pub machine: String,
    /// Restored from a snapshot rather than booted cold.
    pub restored: bool,
    /// From the start of the boot to the agent's Ready.
    pub elapsed: Duration,
}

/// The public handle; dropping it tears the network down.
pub struct QemuNetwork {
    shared: Arc<NetShared>,
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn create(
    spec: &NetworkSpec,
    hardware: Vec<Hardware>,
    disks: Vec<Option<GuestDisk>>,
    config: &QemuConfig,
    run: &Arc<RunDir>,
    snapshots: Option<Arc<Snapshots>>,
    share: Arc<Share>,
) -> Result<QemuNetwork, CreateError> {
    let net = format!("n{}", NEXT_NET.fetch_add(1, Ordering::Relaxed));
    let dir = run.path.join(&net);
    // Root only: consoles, disks and sockets are nobody else's.
    std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
        .create(&dir)
        .map_err(|source| CreateError::RunFile {
            path: dir.clone(),
            source,
        })?;
    let (mut made, failed) = ns::create_all(&run.path, vec![switch::name(&run.run, &net)]);
    if let Some((name, source)) = failed {
        let _ = fs::remove_dir_all(&dir);
        return Err(CreateError::Namespace { name, source });
    }
    let switch = made.pop().expect("the switch namespace was made");
    let vms = match run.cgroups.ensure_group(&run.run, "vms") {
        Ok(dir) => dir,
        Err(source) => {
            let _ = ns::remove_named(&switch.path);
            let _ = fs::remove_dir_all(&dir);
            return Err(CreateError::Cgroup {
                path: run.cgroups.run_dir(&run.run).join("vms"),
                source,
            });
        }
    };
    let machines = spec
        .machines
        .iter()
        .zip(hardware)
        .zip(disks)
        .enumerate()
        .map(|(i, ((m, hw), disk))| {
            Machine::new(
                m,
                i,
                &dir,
                Own {
                    hw,
                    disk,
                    paths: VmPaths {
                        log: dir.join(format!("m{i}.log")),
                        agent: dir.join(format!("m{i}.agent.sock")),
                        qmp: dir.join(format!("m{i}.qmp.sock")),
                        pidfile: dir.join(format!("m{i}.qemu.pid")),
                        data: dir.join(format!("m{i}.data")),
                        image: dir.join(format!("m{i}.img")),
                        cgroup: vms.clone(),
                    },
                    vm: Mutex::new(None),
                    volatile: Mutex::new(None),
                    pid: AtomicI32::new(0),
                    boots: AtomicU64::new(0),
                },
            )
        })
        .collect();
    let shared = Arc::new(NetShared {
        net: Net::new(spec, net, Switch::new(switch), machines, dir, run),
        config: config.clone(),
        snapshots,
        share,
        boot_log: Mutex::new(Vec::new()),
    });
    crate::host::register_network(&shared);
    let network = QemuNetwork { shared };
    network.shared.net.switch.bring_up()?;
    network.shared.make_images()?;
    Ok(network)
}

impl NetShared {
    /// Runs `cmd` (`sh -c`) as root in running machine `m`'s guest through `conn`, within 10
    /// s: `Err` with its error output (or why it did not run) unless it exits 0.
    fn guest_sh(&self, m: &Machine, conn: &AgentConn, cmd: String) -> Result<(), String> {
        let req = crate::ExecRequest::shell(cmd).with_timeout(Duration::from_secs(10));
        let out = self
            .exec_on(&m.spec.id, conn, &req)
            .map_err(|e| e.to_string())?;
        if out.success() {
            Ok(())
        } else {
            Err(out.stderr_str().trim().to_string())
        }
    }

    /// A fresh file system image for every machine whose spec names one, made in parallel;
    /// attached to the VM at every boot, removed with the network directory.
    fn make_images(&self) -> Result<(), CreateError> {
        std::thread::scope(|s| {
            let jobs: Vec<_> = self
                .net
                .machines
                .iter()
                .filter_map(|m| m.spec.disk_filesystem().map(|fs| (m, fs)))
                .map(|(m, fs)| {
                    s.spawn(move || {
                        let err = |source| CreateError::Disk {
                            machine: m.spec.id.clone(),
                            source,
                        };
                        disk::make_image(&m.own.paths.image, fs).map_err(err)?;
                        if m.spec.lose_unsynced {
                            let mut slot = m.own.volatile.lock().unwrap_or_else(|e| e.into_inner());
                            if self.net.torn_down.load(Ordering::SeqCst) {
                                return Err(err(io::Error::other("network was torn down")));
                            }
                            *slot = Some(self.open_volatile(m).map_err(err)?);
                        }
                        Ok(())
                    })
                })
                .collect();
            jobs.into_iter()
                .map(|j| j.join().expect("disk threads do not panic"))
                .collect::<Result<Vec<()>, _>>()
        })?;
        Ok(())
    }

    /// Machine `m`'s image behind a volatile write cache: the FUSE file QEMU gets as its disk.
    fn open_volatile(&self, m: &Machine) -> io::Result<(OwnedFd, Served)> {
        let fuse = self.net.dir.join(format!("m{}.fuse", m.index));
        let name = disk::volatile_name(&self.net.run.run, &self.net.name, m.index);
        let run = &self.net.run;
        let procs = run
            .cgroups
            .ensure_group(&run.run, "disks")?
            .join("cgroup.procs");
        disk::open_volatile(&m.own.paths.image, &fuse, &name, &self.config.agent, &procs)
    }

    /// What the agent of `m` becomes on Init.
    fn guest_init(&self, m: &Machine) -> GuestInit {
        let services = m.services.get();
        GuestInit {
            ip: m.spec.ip,
            prefix: self.net.spec.subnet.prefix,
            mac: mac_text(mac_of(m.spec.ip)),
            share: Some(SHARE_TAG.into()),
            modules: Some(m.own.hw.modules.to_string_lossy().into_owned()),
            now_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            entropy: sys::random_hex(32),
            data_dir: Some(m.data.to_string_lossy().into_owned()),
            disk: m.own.disk.clone().map(|d| GuestDisk {
                volatile: m.spec.lose_unsynced,
                ..d
            }),
            // The guest sees the host's root at /host: resolve links here, where they point.
            services: services
                .iter()
                .map(|(name, v)| {
                    let path = fs::canonicalize(&v.path).unwrap_or_else(|_| v.path.clone());
                    (name.clone(), path.to_string_lossy().into_owned())
                })
                .collect(),
            env: crate::backend::machine_env(&m.data, &services),
        }
    }

    /// A fresh tap for machine `m` in the switch namespace, on the bridge and up.
    fn new_tap(&self, m: &Machine) -> io::Result<std::os::fd::OwnedFd> {
        let boots = m.own.boots.fetch_add(1, Ordering::SeqCst) + 1;
        let port = if boots == 1 {
            format!("p{}", m.index)
        } else {
            format!("p{}r{boots}", m.index)
        };
        self.net.switch.with(|switch, sw| {
            let tap = vm::open_tap(switch.fd.as_raw_fd(), &port)?;
            let bridge = sw.link_index(switch::BRIDGE)?;
            sw.batch(vec![Req::Enslave {
                name: port,
                master: bridge,
            }])
            .map_err(|(_, e)| e)?;
            Ok(tap)
        })
    }

    /// Starts QEMU and brings the machine to Ready; saves a snapshot on the way if `claim`.
    fn start_vm(
        &self,
        m: &Machine,
        start: &Start,
        claim: Option<Claim>,
    ) -> Result<Arc<AgentConn>, BootFailure> {
        let machine = || m.spec.id.clone();
        let deadline = Instant::now() + self.config.boot_timeout;
        let qemu_err = |source: io::Error| {
            (
                BootError::Qemu {
                    machine: machine(),
                    source,
                },
                None,
            )
        };
        if self.net.torn_down.load(Ordering::SeqCst) {
            return Err(qemu_err(io::Error::other("network was torn down")));
        }
        fs::create_dir_all(&m.data).map_err(qemu_err)?;
        for v in m.services.get().values() {
            let program = fs::canonicalize(&v.path).unwrap_or_else(|_| v.path.clone());
            if let Some(dir) = program.parent() {
                self.share.expose(dir).map_err(qemu_err)?;
            }
        }
        let tap = self.new_tap(m).map_err(|source| {
            (
                BootError::Link {
                    machine: machine(),
                    source,
                },
                None,
            )
        })?;
        let listener = {
            // Under the vm lock, which teardown takes after setting the flag: either teardown
            // sees this QEMU's pid, or this boot sees the flag.
            let mut slot = m.own.vm.lock().unwrap_or_else(|e| e.into_inner());
            if self.net.torn_down.load(Ordering::SeqCst) {
                return Err(qemu_err(io::Error::other("network was torn down")));
            }
            let volatile = m.own.volatile.lock().unwrap_or_else(|e| e.into_inner());
            if m.spec.lose_unsynced && volatile.is_none() {
                return Err(qemu_err(io::Error::other(
                    "its disk was not brought back after a power cut",
                )));
            }
            let (vm, listener) = self
                .net
                .switch
                .with(|switch, _| {
                    vm::spawn(
                        &m.own.hw,
                        mac_of(m.spec.ip),
                        &m.own.paths,
                        switch.fd.as_raw_fd(),
                        tap,
                        volatile.as_ref().map(|(file, _)| file),
                        start,
                    )
                })
                .map_err(qemu_err)?;
            drop(volatile);
            m.own.pid.store(vm.pid(), Ordering::SeqCst);
            *slot = Some(vm);
            listener
        };
        let stream = {
            // Wait for QEMU's connection without holding the vm lock for long: poll briefly
            // under it, so a QEMU that exits early is noticed.
            let mut got = None;
            while got.is_none() {
                let mut slot = m.own.vm.lock().unwrap_or_else(|e| e.into_inner());
                let Some(vm) = slot.as_mut() else {
                    return Err(qemu_err(io::Error::other("network was torn down")));
                };
                let step = (Instant::now() + Duration::from_millis(100)).min(deadline);
                match vm::accept(&listener, vm, step) {
                    Ok(s) => got = Some(s),
                    Err(e) if e.kind() == io::ErrorKind::TimedOut && Instant::now() < deadline => {}
                    Err(e) => {
                        drop(slot);
                        return Err(qemu_err(io::Error::new(
                            e.kind(),
                            format!("{e}: {}", self.log_tail(m)),
                        )));
                    }
                }
            }
            got.expect("loop ends with a stream")
        };
        drop(listener);
        let _ = fs::remove_file(&m.own.paths.agent);
        let (conn, boot_rx) = AgentConn::start(stream, &m.spec.id).map_err(qemu_err)?;
        let fail = |e: BootError| (e, Some(conn.clone()));
        if let Start::Restore(_) = start {
            // A restore that does not end with the VM running (an incompatible or truncated
            // file) fails here within seconds, not after the whole boot timeout.
            let until = (Instant::now() + RESTORE_TIMEOUT).min(deadline);
            wait_running(&m.own.paths.qmp, until).map_err(|source| {
                fail(BootError::Qemu {
                    machine: machine(),
                    source,
                })
            })?;
        }
        if let Start::Cold = start {
            match self.wait_msg(m, &boot_rx, deadline) {
                Ok(AgentMsg::Booted) => {}
                Ok(other) => {
                    return Err(fail(BootError::AgentLost {
                        machine: machine(),
                        detail: format!("unexpected message {other:?}"),
                    }))
                }
                Err(e) => return Err(fail(e)),
            }
            if let Some(claim) = claim {
                if let Err(e) = self.save_snapshot(m, &claim) {
                    // The boot goes on: only later boots lose.
                    self.note(m, &format!("no snapshot saved: {e}"));
                }
            }
        }
        conn.send(&HostMsg::Init {
            hostname: m.spec.id.clone(),
            setup: m.spec.setup.clone(),
            setup_timeout_ms: self.config.boot_timeout.as_millis() as u64,
            guest: Some(Box::new(self.guest_init(m))),
        })
        .map_err(|source| {
            fail(BootError::Spawn {
                machine: machine(),
                source,
            })
        })?;
        match self.wait_msg(m, &boot_rx, deadline) {
            Ok(AgentMsg::Ready) => Ok(conn),
            Ok(AgentMsg::SetupFailed {
                command,
                status,
                stderr,
            }) => Err(fail(BootError::SetupFailed {
                machine: machine(),
                command,
                status,
                stderr,
            })),
            Ok(other) => Err(fail(BootError::AgentLost {
                machine: machine(),
                detail: format!("unexpected message {other:?}"),
            })),
            Err(e) => Err(fail(e)),
        }
    }

    fn wait_msg(
        &self,
        m: &Machine,
        rx: &Receiver<AgentMsg>,
        deadline: Instant,
    ) -> Result<AgentMsg, BootError> {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(msg) => Ok(msg),
            Err(RecvTimeoutError::Timeout) => Err(BootError::Timeout {
                machine: m.spec.id.clone(),
                after: self.config.boot_timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(BootError::AgentLost {
                machine: m.spec.id.clone(),
                detail: self.log_tail(m),
            }),
        }
    }

    fn save_snapshot(&self, m: &Machine, claim: &Claim) -> io::Result<()> {
        let mut qmp = Qmp::connect(&m.own.paths.qmp, SNAPSHOT_TIMEOUT)?;
        qmp.snapshot(&claim.path, Instant::now() + SNAPSHOT_TIMEOUT)?;
        if let Some(s) = &self.snapshots {
            s.prune();
        }
        Ok(())
    }

    fn note(&self, m: &Machine, msg: &str) {
        use std::io::Write;
        if let Ok(mut f) = fs::OpenOptions::new().append(true).open(&m.log) {
            let _ = writeln!(f, "fleetcheck: {msg}");
        }
    }

    fn log_tail(&self, m: &Machine) -> String {
        let text = m.read_log();
        let lines: Vec<&str> = text.lines().collect();
        // The agent's last words and a kernel panic's reason say more than a stack trace.
        let mut picked: Vec<&str> = lines
            .iter()
            .filter(|l| l.contains("fleetcheck-agent: stopping") || l.contains("Kernel panic"))
            .copied()
            .collect();
        picked.extend(&lines[lines.len().saturating_sub(3)..]);
        picked.join("\n")
    }
}

impl Switched for NetShared {
    type Own = Own;

    const RUNNER: &'static str = "qemu";

    fn net(&self) -> &Net<Own> {
        &self.net
    }

    /// Restores machine `m` from its kind's snapshot if there is one, else boots it cold (and
    /// saves a snapshot if none is being made); records how it went.
    fn start(&self, m: &Machine) -> Result<Arc<AgentConn>, BootFailure> {
        let machine = || m.spec.id.clone();
        let started = Instant::now();
        let key = Snapshots::key(&m.own.hw);
        let mut restored = None;
        if let Some(file) = self.snapshots.as_ref().and_then(|s| s.existing(&key)) {
            match self.start_vm(m, &Start::Restore(file), None) {
                Ok(conn) => restored = Some(Ok(conn)),
                Err((e, conn)) => {
                    let _ = self.stop(m, conn);
                    // A setup command that failed fails the same way after a cold boot.
                    let final_error = matches!(e, BootError::SetupFailed { .. });
                    if final_error || self.net.torn_down.load(Ordering::SeqCst) {
                        restored = Some(Err((e, None)));
                    } else if let Some(s) = &self.snapshots {
                        // A snapshot that does not restore (QEMU changed underneath, a
                        // truncated file): forget it and boot cold.
                        let cause = std::error::Error::source(&e)
                            .map(|c| format!(": {c}"))
                            .unwrap_or_default();
                        self.note(m, &format!("snapshot {key} did not restore: {e}{cause}"));
                        s.discard(&key);
                    }
                }
            }
        }
        let from_snapshot = matches!(restored, Some(Ok(_)));
        let result = restored.unwrap_or_else(|| {
            let claim = self.snapshots.as_ref().and_then(|s| s.claim(&key));
            self.start_vm(m, &Start::Cold, claim)
        });
        if result.is_ok() {
            self.boot_log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(BootRecord {
                    machine: machine(),
                    restored: from_snapshot,
                    elapsed: started.elapsed(),
                });
        }
        result
    }

    /// Kills and reaps QEMU of `m`, joins its agent reader.
    fn stop(&self, m: &Machine, conn: Option<Arc<AgentConn>>) -> io::Result<()> {
        m.own.pid.store(0, Ordering::SeqCst);
        let vm = m.own.vm.lock().unwrap_or_else(|e| e.into_inner()).take();
        let result = vm.map_or(Ok(()), Vm::kill);
        if let Some(conn) = conn {
            conn.join();
        }
        result
    }

    /// The guest's own `tc` (the host's, shared) on its link; its kernel loads sch_netem.
    fn set_netem(
        &self,
        m: &Machine,
        conn: &AgentConn,
        netem: Option<crate::Netem>,
    ) -> Result<(), FaultError> {
        let cmd = match netem {
            Some(n) => format!("tc qdisc replace dev eth0 root netem {}", n.tc_args()),
            None => "tc qdisc del dev eth0 root 2>/dev/null || true".to_string(),
        };
        self.guest_sh(m, conn, cmd)
            .map_err(|why| FaultError::Netem {
                machine: m.spec.id.clone(),
                why: format!("tc: {why}"),
            })
    }

    /// The guest's own clock, set by busybox `date` as root.
    fn move_clock(
        &self,
        m: &Machine,
        conn: &AgentConn,
        from: i64,
        to: i64,
    ) -> Result<(), FaultError> {
        let step = to - from;
        let cmd = format!("date -s @$(( $(date +%s) + ({step}) )) >/dev/null");
        self.guest_sh(m, conn, cmd)
            .map_err(|why| FaultError::Clock {
                machine: m.spec.id.clone(),
                source: io::Error::other(format!("date -s: {why}")),
            })
    }

    /// A machine with a file system of its own: its disk mounted on the host (in a mount
    /// namespace of its own) while the VM is off, through the volatile layer if it has one,
    /// so the next boot reads what corruption made of it.
    fn corrupt_off(
        &self,
        m: &Machine,
        how: crate::Corruption,
        pick: u64,
    ) -> Result<Option<String>, FaultError> {
        let id = &m.spec.id;
        let Some(fs) = m.own.disk.as_ref().and(m.spec.disk_filesystem()) else {
            return switched::corrupt_on_host(self.data_dir_on_host(id), id, how, pick);
        };
        let err = |source| FaultError::Corrupt {
            machine: id.clone(),
            source,
        };
        let target = self.net.dir.join(format!("m{}.corrupt", m.index));
        let image = &m.own.paths.image;
        let slot = m.own.volatile.lock().unwrap_or_else(|e| e.into_inner());
        let opened;
        let file = match slot.as_ref() {
            Some((fuse, _)) => fuse,
            None => {
                opened = crate::host::sys::open(image, libc::O_RDWR).map_err(err)?;
                &opened
            }
        };
        disk::with_mounted(file, image, fs, &target, |dir| {
            crate::corrupt::corrupt_in(dir, how, pick)
        })
        .map_err(err)
    }

    fn set_disk_error(
        &self,
        m: &Machine,
        error: Option<crate::host::volatile::DiskError>,
    ) -> Result<(), FaultError> {
        let mut slot = m.own.volatile.lock().unwrap_or_else(|e| e.into_inner());
        let Some((_, served)) = slot.as_mut() else {
            return Err(FaultError::Disk {
                machine: m.spec.id.clone(),
                source: io::Error::other("it has no disk layer"),
            });
        };
        served.set_error(error).map_err(|source| FaultError::Disk {
            machine: m.spec.id.clone(),
            source,
        })
    }

    /// QEMU is gone: the disk forgets what the guest had not flushed, and once the FUSE
    /// server has ended, a fresh one serves the image (the durable state) to the next boot.
    fn lose_unsynced(&self, m: &Machine) -> Result<(), FaultError> {
        let err = |source| FaultError::Disk {
            machine: m.spec.id.clone(),
            source,
        };
        let mut slot = m.own.volatile.lock().unwrap_or_else(|e| e.into_inner());
        let Some((file, mut served)) = slot.take() else {
            return Err(err(io::Error::other("it has no disk")));
        };
        let cut = served.cut();
        drop(file);
        cut.map_err(err)?;
        if !served.wait_ended(SERVER_END) {
            return Err(err(io::Error::other(format!(
                "its FUSE server still ran after {SERVER_END:?}"
            ))));
        }
        if self.net.torn_down.load(Ordering::SeqCst) {
            return Err(FaultError::TornDown);
        }
        *slot = Some(self.open_volatile(m).map_err(err)?);
        Ok(())
    }

    /// Every volatile disk's FUSE file and server (QEMU is gone).
    fn remove_rest(&self, failures: &mut Vec<(String, io::Error)>) {
        let served: Vec<Served> = self
            .net
            .machines
            .iter()
            .filter_map(|m| {
                m.own
                    .volatile
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
            })
            .map(|(_file, served)| served)
            .collect();
        for s in served {
            if !s.wait_ended(SERVER_END) {
                failures.push((
                    "FUSE server of a disk".into(),
                    io::Error::other(format!("still running after {SERVER_END:?}")),
                ));
            }
        }
    }

    /// Nothing to do: the tap is QEMU's alone and vanished with it.
    fn unplug(&self, _m: &Machine) -> io::Result<()> {
        Ok(())
    }

    /// SIGSTOP (or SIGCONT) of QEMU.
    fn hold(&self, m: &Machine, frozen: bool) -> Result<(), FaultError> {
        let (sig, signal) = if frozen {
            (libc::SIGSTOP, "SIGSTOP")
        } else {
            (libc::SIGCONT, "SIGCONT")
        };
        sys::kill(m.own.pid.load(Ordering::SeqCst), sig).map_err(|source| FaultError::Signal {
            machine: m.spec.id.clone(),
            signal,
            source,
        })
    }

    /// Only the host's record changes: the agent links the programs anew at every boot.
    fn install(&self, _m: &Machine, _next: &BTreeMap<String, ServiceVersion>) -> io::Result<()> {
        Ok(())
    }

    /// SIGKILL to QEMU by pid (a boot may hold the locks).
    fn kill(&self, m: &Machine) {
        let pid = m.own.pid.load(Ordering::SeqCst);
        if pid > 0 {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
    }

    /// The shared directory, unless the machine has a file system of its own: only the guest
    /// mounts that (the host mounting it too while the guest writes would corrupt it).
    fn data_dir_on_host(&self, id: &str) -> Option<PathBuf> {
        let m = self.machine(id)?;
        if m.own.disk.is_some() {
            return None;
        }
        self.data_dir(id)
    }
}

impl Handle for QemuNetwork {
    type Shared = NetShared;

    fn shared(&self) -> &NetShared {
        &self.shared
    }
}

impl QemuNetwork {
    /// Host pid of the QEMU of machine `id`, while it runs.
    pub fn qemu_pid(&self, id: &str) -> Option<i32> {
        let pid = self.shared.machine(id)?.own.pid.load(Ordering::SeqCst);
        (pid > 0).then_some(pid)
    }

    /// The bind mount of the switch namespace (for `nsenter --net=PATH`), until teardown.
    pub fn switch_namespace(&self) -> Option<PathBuf> {
        self.shared.net.switch.path()
    }

    /// Every boot so far: which machine, whether restored from a snapshot, how long.
    pub fn boot_records(&self) -> Vec<BootRecord> {
        self.shared
            .boot_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The run id this network belongs to.
    pub fn run_id(&self) -> &str {
        &self.shared.net.run.run
    }
}

impl std::fmt::Debug for QemuNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.net.debug(f, "QemuNetwork")
    }
}

impl Drop for QemuNetwork {
    fn drop(&mut self) {
        let _ = Switched::teardown(&*self.shared);
    }
}
