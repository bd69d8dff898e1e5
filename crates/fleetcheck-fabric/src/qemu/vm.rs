//! One QEMU process: its command line, its tap device, its QMP socket.
//!
//! The tap is created by this process inside the network's switch namespace (a thread that
//! `setns`es there opens `/dev/net/tun`), attached to the bridge, and handed to QEMU as fd 3;
//! this process closes its copy, so the tap lives exactly as long as QEMU: when QEMU dies, even
//! by SIGKILL, the kernel removes the tap. QEMU itself also runs in the switch namespace, so
//! nothing of it can touch the host's network.
//!
//! The agent channel is a virtio-serial port whose chardev connects, as a client, to a unix
//! socket this process listens on before starting QEMU.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Accel;
use crate::agent::guest::DATA_TAG;
use crate::protocol::DISK_SERIAL;

/// The fd number QEMU finds its tap on.
const TAP_FD: RawFd = 3;

/// The fd number QEMU finds a volatile disk on (`host::volatile`).
const DISK_FD: RawFd = 4;

/// Kernel command line of every VM. `tsc_early_khz` and `tsc=reliable`: without them guests
/// hang when 4 or more boot at once under TCG (the TSC calibration races). The frequency must
/// be the host's: under TCG and KVM alike the guest reads the host's TSC, and a wrong value
/// makes the guest's clock run fast or slow (a 6.12 guest then drowns in lockup warnings, and
/// every timeout inside is wrong). `panic=-1` with QEMU's `-no-reboot`: if the agent (PID 1)
/// exits, QEMU exits. `cryptomgr.notests`: the crypto self-tests cost 0.2 s under TCG; the
/// rest (no speculation mitigations, audit, KASLR, spare UARTs) about 0.1 s more. These are
/// test machines on a private bridge, not a security boundary.
pub fn cmdline() -> String {
    format!(
        "console=ttyS0 quiet reboot=t panic=-1 tsc_early_khz={} tsc=reliable cryptomgr.notests \
         mitigations=off audit=0 nokaslr random.trust_cpu=on 8250.nr_uarts=1 rdinit=/init",
        tsc_khz()
    )
}

/// The host's TSC frequency in kHz, measured once per process against the monotonic clock
/// over 20 ms, rounded to 1 MHz (0.04% here; snapshot keys leave it out).
pub fn tsc_khz() -> u64 {
    static KHZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *KHZ.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: rdtsc has no preconditions on x86_64.
            let t0 = unsafe { core::arch::x86_64::_rdtsc() };
            let start = Instant::now();
            // A measurement window, not a wait for an event.
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: as above.
            let t1 = unsafe { core::arch::x86_64::_rdtsc() };
            let khz = (t1 - t0) as f64 / start.elapsed().as_secs_f64() / 1000.0;
            ((khz / 1000.0).round() as u64).max(1) * 1000
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            1_000_000
        }
    })
}

/// Everything that makes a VM's hardware; two VMs with equal `Hardware` can restore each
/// other's snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hardware {
    pub qemu: PathBuf,
    pub accel: Accel,
    pub kernel_image: PathBuf,
    pub initramfs: PathBuf,
    pub memory_mb: u32,
    /// The kernel command line ([`cmdline`]).
    pub cmdline: String,
    /// The kernel's `lib/modules/<release>` on the host, shared into the guest.
    pub modules: PathBuf,
    /// The root of the read-only host share (`qemu::share`; not part of a snapshot's key:
    /// the share is mounted only after a snapshot is taken).
    pub share: PathBuf,
    /// Scheduling niceness of QEMU (not part of a snapshot's key).
    pub nice: i32,
    /// A disk of its own (virtio-blk, the image [`VmPaths::image`]): a VM with one has one
    /// more device than a VM without, so the two cannot restore each other's snapshots.
    pub disk: bool,
}

impl Hardware {
    /// QEMU arguments (without the per-VM paths and the tap).
    fn args(&self) -> Vec<String> {
        let accel = match self.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        };
        let mut args: Vec<String> = [
            "-M",
            "microvm,isa-serial=on,rtc=on",
            "-accel",
            accel,
            "-cpu",
            if self.accel == Accel::Kvm {
                "host"
            } else {
                "max"
            },
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-device",
            "virtio-serial-device",
        ]
        .map(String::from)
        .to_vec();
        args.extend([
            "-fsdev".into(),
            format!(
                "local,id=hostfs,path={},security_model=none,readonly=on",
                qemu_option(&self.share)
            ),
            "-device".into(),
            "virtio-9p-device,fsdev=hostfs,mount_tag=hostfs".into(),
        ]);
        args.extend([
            "-m".into(),
            self.memory_mb.to_string(),
            "-kernel".into(),
            self.kernel_image.to_string_lossy().into_owned(),
            "-initrd".into(),
            self.initramfs.to_string_lossy().into_owned(),
            "-append".into(),
            self.cmdline.clone(),
        ]);
        args
    }
}

/// The 9p mount tag of the host's root.
pub const SHARE_TAG: &str = "hostfs";

/// Per-VM files.
#[derive(Clone, Debug)]
pub struct VmPaths {
    /// Serial console and QEMU's own messages (appended).
    pub log: PathBuf,
    /// Agent channel socket (this process listens).
    pub agent: PathBuf,
    /// QMP socket (QEMU listens).
    pub qmp: PathBuf,
    /// `<pid> <start time>` of the running QEMU, for the sweep.
    pub pidfile: PathBuf,
    /// The machine's disk, shared read-write (virtio-9p tag [`DATA_TAG`]).
    pub data: PathBuf,
    /// The image of its own file system, attached when [`Hardware::disk`].
    pub image: PathBuf,
    /// The run's cgroup QEMU joins before it execs, so the sweep (and the guardian) find every
    /// VM of a dead run even if it died before the pidfile was written.
    pub cgroup: PathBuf,
}

/// A running QEMU.
#[derive(Debug)]
pub struct Vm {
    pub child: Child,
    pub paths: VmPaths,
}

impl Vm {
    /// Power cut: SIGKILL, reap, remove the pidfile and sockets.
    pub fn kill(mut self) -> io::Result<()> {
        let killed = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.paths.pidfile);
        let _ = fs::remove_file(&self.paths.qmp);
        let _ = fs::remove_file(&self.paths.agent);
        match killed {
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
            other => other,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Creates tap `name` inside the network namespace `netns` and returns its (only) fd.
pub fn open_tap(netns: RawFd, name: &str) -> io::Result<OwnedFd> {
    if name.len() >= 16 {
        return Err(io::Error::other(format!("tap name {name} is too long")));
    }
    let name = name.to_string();
    std::thread::scope(|s| {
        s.spawn(move || -> io::Result<OwnedFd> {
            // SAFETY: setns on an fd the caller keeps open; affects this thread only.
            crate::host::sys::check(unsafe { libc::setns(netns, libc::CLONE_NEWNET) })?;
            let tun = crate::host::sys::open(Path::new("/dev/net/tun"), libc::O_RDWR)?;
            let mut req = IfReq {
                name: [0; 16],
                flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
                _pad: [0; 22],
            };
            req.name[..name.len()].copy_from_slice(name.as_bytes());
            // SAFETY: TUNSETIFF reads and writes an ifreq-sized struct we own.
            crate::host::sys::check(unsafe {
                libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq)
            })?;
            Ok(tun)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("tap thread panicked")))
    })
}

/// How QEMU gets its memory contents.
#[derive(Clone, Debug)]
pub enum Start {
    /// Boot the kernel.
    Cold,
    /// Restore this snapshot file (made by [`Qmp::snapshot`]).
    Restore(PathBuf),
}

/// Starts QEMU: listens on the agent socket, spawns QEMU in the switch namespace with the tap
/// as fd 3 (and a volatile disk's file as fd 4), and returns it with the listener (QEMU connects to it at start).
pub fn spawn(
    hw: &Hardware,
    mac: [u8; 6],
    paths: &VmPaths,
    switch: RawFd,
    tap: OwnedFd,
    volatile: Option<&OwnedFd>,
    start: &Start,
) -> io::Result<(Vm, UnixListener)> {
    let _ = fs::remove_file(&paths.agent);
    let _ = fs::remove_file(&paths.qmp);
    let listener = UnixListener::bind(&paths.agent)?;
    let log = std::os::unix::fs::OpenOptionsExt::mode(
        fs::OpenOptions::new().create(true).append(true),
        0o600,
    )
    .open(&paths.log)?;
    let mac = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let mut cmd = Command::new(&hw.qemu);
    cmd.args(hw.args())
        .arg("-chardev")
        .arg(format!(
            "file,id=console,path={},append=on",
            paths.log.display()
        ))
        .args(["-serial", "chardev:console"])
        .arg("-chardev")
        .arg(format!("socket,id=agent,path={}", paths.agent.display()))
        .args(["-device", "virtserialport,chardev=agent,name=fleetcheck"])
        .arg("-netdev")
        .arg(format!("tap,id=net0,fd={TAP_FD}"))
        .arg("-device")
        .arg(format!("virtio-net-device,netdev=net0,mac={mac}"))
        .arg("-fsdev")
        .arg(format!(
            "local,id=datafs,path={},security_model=none",
            paths.data.display()
        ))
        .arg("-device")
        .arg(format!(
            "virtio-9p-device,fsdev=datafs,mount_tag={DATA_TAG}"
        ))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", paths.qmp.display()));
    if hw.disk && volatile.is_some() {
        // The FUSE file over the image: QEMU's writes stay in its cache until the guest
        // flushes (cache=writeback: a guest flush is an fdatasync of the file), so a power cut
        // loses what the guest had not flushed.
        cmd.arg("-drive")
            .arg(format!(
                "file=/proc/self/fd/{DISK_FD},if=none,id=disk,format=raw,cache=writeback"
            ))
            .arg("-device")
            .arg(format!("virtio-blk-device,drive=disk,serial={DISK_SERIAL}"));
    } else if hw.disk {
        // cache=unsafe: the guest's flushes are no-ops, but every write reaches the image file
        // (the host's page cache) at once, so a power cut (SIGKILL of QEMU) loses only what the
        // guest had not written yet — as a crash would.
        cmd.arg("-drive")
            .arg(format!(
                "file={},if=none,id=disk,format=raw,cache=unsafe,discard=unmap",
                qemu_option(&paths.image)
            ))
            .arg("-device")
            .arg(format!("virtio-blk-device,drive=disk,serial={DISK_SERIAL}"));
    }
    if let Start::Restore(file) = start {
        cmd.arg("-incoming")
            .arg(format!("exec:zstd -dcq {}", shell_quote(file)));
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let tap_fd = tap.as_raw_fd();
    // A copy numbered 10 or more, so that the child's dup2 of the tap to 3 cannot overwrite it.
    let disk_copy = volatile
        .map(|f| {
            // SAFETY: fcntl on a descriptor the caller keeps open; the new one is owned below.
            crate::host::sys::check(unsafe {
                libc::fcntl(f.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10)
            })
            // SAFETY: a fresh descriptor nobody else owns.
            .map(|fd| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
        })
        .transpose()?;
    let disk_fd = disk_copy.as_ref().map_or(-1, |f| f.as_raw_fd());
    let procs = crate::host::sys::open(&paths.cgroup.join("cgroup.procs"), libc::O_WRONLY)?;
    let procs_fd = procs.as_raw_fd();
    let nice = hw.nice;
    // SAFETY: between fork and exec the child only makes async-signal-safe syscalls (write,
    // setns, setpriority, dup2, fcntl) on descriptors the parent keeps open until spawn returns; a
    // failure ends the child before exec, so QEMU never runs in the host's network namespace.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setns(switch, libc::CLONE_NEWNET) < 0 {
                return Err(io::Error::last_os_error());
            }
            if nice != 0 && libc::setpriority(libc::PRIO_PROCESS, 0, nice) < 0 {
                return Err(io::Error::last_os_error());
            }
            if tap_fd == TAP_FD {
                if libc::fcntl(TAP_FD, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(tap_fd, TAP_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            // Above 10 (see below): neither the tap's dup2 nor this one overwrites the other.
            if disk_fd >= 0 && libc::dup2(disk_fd, DISK_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(disk_copy);
    drop(tap);
    drop(procs);
    let pid = child.id() as i32;
    let start_time = crate::host::sys::start_time(pid).unwrap_or(0);
    let vm = Vm {
        child,
        paths: paths.clone(),
    };
    if let Err(e) = fs::write(&paths.pidfile, format!("{pid} {start_time}\n")) {
        let _ = vm.kill();
        return Err(e);
    }
    Ok((vm, listener))
}

/// Waits until QEMU connected to the agent socket, or `deadline`, or QEMU exited.
pub fn accept(listener: &UnixListener, vm: &mut Vm, deadline: Instant) -> io::Result<UnixStream> {
    listener.set_nonblocking(true)?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if let Some(status) = vm.child.try_wait()? {
            return Err(io::Error::other(format!("qemu exited with {status}")));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "qemu did not connect to the agent socket",
            ));
        }
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Bounded so an exited QEMU is noticed within 50 ms.
        let wait = left.min(Duration::from_millis(50)).as_millis() as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, wait.max(1)) };
    }
}

/// A QMP connection.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects and negotiates capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Self> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let mut greeting = String::new();
        qmp.reader.read_line(&mut greeting)?;
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs one command, returns its `return` value.
    pub fn execute(
        &mut self,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> io::Result<serde_json::Value> {
        let mut msg = serde_json::json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = serde_json::to_vec(&msg).map_err(io::Error::other)?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        loop {
            let mut answer = String::new();
            if self.reader.read_line(&mut answer)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "qmp closed"));
            }
            let value: serde_json::Value =
                serde_json::from_str(&answer).map_err(io::Error::other)?;
            if let Some(r) = value.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = value.get("error") {
                return Err(io::Error::other(format!("qmp {command}: {e}")));
            }
            // An event: skip.
        }
    }

    /// Writes the VM's whole state to `file` (through a temporary name) and lets it run on.
    /// The VM is not stopped first: a migration of a running VM ends with it paused, and the
    /// file records it as running, so a restore starts running by itself (an idle guest, the
    /// agent waiting for Init, converges at once). Waits with a deadline, polling the status.
    pub fn snapshot(&mut self, file: &Path, deadline: Instant) -> io::Result<()> {
        let tmp = file.with_extension(format!("{}.tmp", crate::host::sys::random_hex(4)));
        let result = (|| {
            let uri = format!("exec:zstd -1 -q -T1 > {}", shell_quote(&tmp));
            self.execute("migrate", Some(serde_json::json!({ "uri": uri })))?;
            let mut pause = Duration::from_millis(1);
            loop {
                let status = self.execute("query-migrate", None)?;
                match status.get("status").and_then(|s| s.as_str()) {
                    Some("completed") => break,
                    Some("failed") | Some("cancelled") => {
                        return Err(io::Error::other(format!("migration failed: {status}")))
                    }
                    _ => {}
                }
                if Instant::now() >= deadline {
                    let _ = self.execute("migrate_cancel", None);
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "snapshot timed out",
                    ));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            fs::rename(&tmp, file)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        let resumed = self.execute("cont", None).map(drop);
        result.and(resumed)
    }
}

/// `path` quoted for `sh -c` (QEMU runs `exec:` migration URIs with the shell).
/// A path as a value inside a QEMU option list (a comma is written twice).
fn qemu_option(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', "'\\''"))
}

/// Whether `pid` (from a pidfile `<pid> <start time>`) still is that QEMU.
pub fn pidfile_alive(text: &str) -> Option<i32> {
    let mut parts = text.split_whitespace();
    let pid: i32 = parts.next()?.parse().ok()?;
    let start: u64 = parts.next()?.parse().ok()?;
    crate::host::sys::is_alive(pid, start).then_some(pid)
}

/// `qemu-system-x86_64` on `PATH` or in /usr/bin.
pub fn find_qemu() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/bin".into());
    dirs.into_iter()
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
}
