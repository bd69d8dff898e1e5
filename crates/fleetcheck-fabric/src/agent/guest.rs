//! The agent as init of a VM (`--guest`, started by the initramfs's `/init` that
//! [`crate::qemu`] builds).
//!
//! Boot: mount `/proc`, `/sys`, `/dev`; load the kernel modules listed in [`MODULES`] (in
//! dependency order, with their `module.param=value` options from the kernel command line, as
//! modprobe would); find the virtio-serial port named [`PORT_NAME`]; say
//! [`crate::protocol::AgentMsg::Booted`] on it and wait for Init. Nothing in this part depends on
//! which machine this is, so the host may snapshot the VM here and restore it as any machine of
//! the same kernel and memory.
//!
//! Identity ([`take_identity`], on Init): mount the host share read-only over virtio-9p at
//! `/host` (what the host chose to show, `qemu::share`: no `/root`, `/home` or secrets of
//! `/etc`) and bind its `/usr`, `/etc`, `/bin`, `/sbin`, `/lib` (with the kernel's modules),
//! `/lib64`, `/opt` over the initramfs (the VM then runs the host's programs, as the seed
//! shares the Nix store); set the
//! MAC address and IP address of `eth0`, bring `lo` and `eth0` up. The 9p mount happens after a
//! possible snapshot because QEMU refuses to migrate a VM with a mounted 9p share. The data
//! directory is the 9p share `data`, or, for a machine with a file system of its own, its
//! virtio-blk disk: the block driver and file system modules are loaded only now (from the
//! host share), so a snapshot never saw another machine's disk. Services are linked into
//! [`SERVICES_DIR`], first on `PATH`, and the machine's variables set.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{log, mount_with, serve};
use crate::protocol::{GuestDisk, GuestInit, DISK_SERIAL};

/// Modules to load, one initramfs path per line, dependencies first.
pub const MODULES: &str = "/fc/modules";
/// Name of the virtio-serial port the host talks on.
pub const PORT_NAME: &str = "fleetcheck";
/// Where the initramfs's busybox and its applet links live (last on `PATH`).
pub const BUSYBOX_DIR: &str = "/fc/bin";
/// `PATH` inside the VM: the host's directories (shared), then busybox.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/fc/bin";
/// Where the agent links the programs of the machine's services (first on `PATH`).
pub const SERVICES_DIR: &str = "/fc/services";
/// virtio-9p mount tag of the machine's disk.
pub const DATA_TAG: &str = "data";
/// How often the agent looks for its port's name between `/dev` events.
const PORT_RECHECK: Duration = Duration::from_millis(5);
/// How long the agent waits for the channel's device to appear.
const PORT_WAIT: Duration = Duration::from_secs(20);

fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong) -> io::Result<()> {
    let _ = fs::create_dir_all(target);
    mount_with(src, target, Some(fstype), flags, None)
        .map_err(|e| io::Error::new(e.kind(), format!("mount {fstype} on {target}: {e}")))
}

/// Entry point of `--guest`.
pub fn main() -> ExitCode {
    // SAFETY: getpid cannot fail.
    if unsafe { libc::getpid() } != 1 {
        log("--guest is for init of a fleetcheck VM only");
        return ExitCode::from(2);
    }
    match boot() {
        Ok(()) => log("host closed the channel, powering off"),
        Err(e) => log(&format!("stopping: {e}")),
    }
    // As PID 1, exiting panics the kernel, which ends the VM (panic=-1 and -no-reboot).
    ExitCode::FAILURE
}

fn boot() -> io::Result<()> {
    std::env::set_var("PATH", PATH);
    let nodev = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount("proc", "/proc", "proc", nodev)?;
    mount("sysfs", "/sys", "sysfs", nodev)?;
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID)?;
    let _ = fs::create_dir_all("/dev/pts");
    let _ = mount(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
    );
    let _ = mount(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
    );
    let _ = mount("tmpfs", "/run", "tmpfs", libc::MS_NOSUID | libc::MS_NODEV);
    let _ = fs::create_dir_all("/tmp");
    load_modules()?;
    let port = wait_for_port(Instant::now() + PORT_WAIT)?;
    let channel = OpenOptions::new().read(true).write(true).open(&port)?;
    let writer = channel.try_clone()?;
    serve(Box::new(channel), Box::new(writer), true, None)
}

/// `name.param=value` options for module `name` on the kernel command line.
fn cmdline_options(cmdline: &str, name: &str) -> String {
    let name = name.replace('-', "_");
    cmdline
        .split_whitespace()
        .filter_map(|word| {
            let (module, option) = word.split_once('.')?;
            (module.replace('-', "_") == name && option.contains('=')).then_some(option)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn load_modules() -> io::Result<()> {
    let list = match fs::read_to_string(MODULES) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    load_module_files(list.lines().filter(|l| !l.is_empty()).map(Path::new))
}

/// Loads uncompressed module files in the order given (dependencies first); one already
/// loaded is fine.
fn load_module_files<'a>(paths: impl IntoIterator<Item = &'a Path>) -> io::Result<()> {
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    for path in paths {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ko"))
            .unwrap_or_default();
        let options =
            std::ffi::CString::new(cmdline_options(&cmdline, name)).map_err(io::Error::other)?;
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        // SAFETY: finit_module on a descriptor we hold, with a NUL-terminated option string.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                file.as_raw_fd(),
                options.as_ptr(),
                0,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("load module {}: {e}", path.display()),
                ));
            }
        }
    }
    Ok(())
}

/// How long the agent waits for its disk's block device after loading the driver.
const DISK_WAIT: Duration = Duration::from_secs(10);

/// `/dev/vd*` whose serial is [`DISK_SERIAL`], if it exists yet.
fn find_disk() -> Option<PathBuf> {
    for entry in fs::read_dir("/sys/block").ok()?.flatten() {
        let serial = fs::read_to_string(entry.path().join("serial")).unwrap_or_default();
        let dev = Path::new("/dev").join(entry.file_name());
        if serial.trim() == DISK_SERIAL && dev.exists() {
            return Some(dev);
        }
    }
    None
}

/// Loads the disk's modules (from the host share), waits for its device and mounts its file
/// system at `dir`.
fn mount_disk(disk: &GuestDisk, dir: &str) -> io::Result<()> {
    let on_share: Vec<PathBuf> = disk
        .modules
        .iter()
        .map(|m| Path::new("/host").join(m.trim_start_matches('/')))
        .collect();
    load_module_files(on_share.iter().map(PathBuf::as_path))?;
    // The driver probes the device while it loads; devtmpfs makes the node a moment later.
    let device = wait_for_device(find_disk, Instant::now() + DISK_WAIT, || {
        format!("no disk with serial {DISK_SERIAL} after {DISK_WAIT:?}")
    })?;
    // As on netns.
    let options = Some(crate::host::disk::mount_options(
        &disk.fstype,
        disk.volatile,
    ))
    .filter(|o| !o.is_empty());
    mount_with(
        &device.to_string_lossy(),
        dir,
        Some(&disk.fstype),
        libc::MS_NOSUID | libc::MS_NODEV,
        options,
    )
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("mount {} ({}) on {dir}: {e}", device.display(), disk.fstype),
        )
    })
}

/// Links each service's program (seen through the host share) into [`SERVICES_DIR`].
fn link_services(services: &std::collections::BTreeMap<String, String>) -> io::Result<()> {
    fs::create_dir_all(SERVICES_DIR)?;
    for (name, path) in services {
        let link = Path::new(SERVICES_DIR).join(name);
        let _ = fs::remove_file(&link);
        let target = Path::new("/host").join(path.trim_start_matches('/'));
        std::os::unix::fs::symlink(&target, &link)
            .map_err(|e| io::Error::new(e.kind(), format!("link service {name}: {e}")))?;
    }
    Ok(())
}

/// The device of the virtio-serial port named [`PORT_NAME`], once the kernel has created it
/// (ports appear asynchronously, after the device announced them): looked for at once, then
/// again whenever devtmpfs creates a node in `/dev` (inotify), until `deadline`. The port's
/// name comes in a later control message that makes no `/dev` event, so it also looks again
/// every [`PORT_RECHECK`].
fn wait_for_port(deadline: Instant) -> io::Result<PathBuf> {
    wait_for_device(find_port, deadline, || {
        format!("no virtio-serial port named {PORT_NAME} after {PORT_WAIT:?}")
    })
}

/// The device `find` names, looked for at once, then whenever devtmpfs creates a node in
/// `/dev` (inotify) and at least every [`PORT_RECHECK`], until `deadline`; `missing` says what
/// was not found.
fn wait_for_device(
    find: fn() -> Option<PathBuf>,
    deadline: Instant,
    missing: impl Fn() -> String,
) -> io::Result<PathBuf> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscall; the fd is owned below.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let inotify = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let dev = std::ffi::CString::new("/dev").expect("no NUL");
    // SAFETY: valid descriptor and NUL-terminated path.
    if unsafe { libc::inotify_add_watch(fd, dev.as_ptr(), libc::IN_CREATE) } < 0 {
        return Err(io::Error::last_os_error());
    }
    loop {
        if let Some(device) = find() {
            return Ok(device);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, missing()));
        }
        let mut pfd = libc::pollfd {
            fd: inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe {
            libc::poll(
                &mut pfd,
                1,
                left.min(PORT_RECHECK).as_millis().max(1) as i32,
            )
        };
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a live buffer; the events only say "look again".
        unsafe { libc::read(inotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }
}

/// `/dev/vport*` whose sysfs name is [`PORT_NAME`], if it exists yet.
fn find_port() -> Option<PathBuf> {
    for entry in fs::read_dir("/sys/class/virtio-ports").ok()?.flatten() {
        let name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        let dev = Path::new("/dev").join(entry.file_name());
        if name.trim() == PORT_NAME && dev.exists() {
            return Some(dev);
        }
    }
    None
}

/// `struct ifreq`: a name and a 24-byte union (address, flags).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> Self {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req
    }

    /// A `sockaddr_in` of `ip` in the union.
    fn with_inet(name: &str, ip: std::net::Ipv4Addr) -> Self {
        let mut req = Self::new(name);
        req.data[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        req.data[4..8].copy_from_slice(&ip.octets());
        req
    }
}

fn ioctl(sock: &std::os::fd::OwnedFd, request: libc::c_ulong, req: &mut IfReq) -> io::Result<()> {
    // SAFETY: the interface ioctls used here read and write one ifreq-sized struct we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_up(sock: &std::os::fd::OwnedFd, name: &str) -> io::Result<()> {
    let mut req = IfReq::new(name);
    ioctl(sock, libc::SIOCGIFFLAGS, &mut req)?;
    let flags = i16::from_ne_bytes([req.data[0], req.data[1]]) | libc::IFF_UP as i16;
    req.data[..2].copy_from_slice(&flags.to_ne_bytes());
    ioctl(sock, libc::SIOCSIFFLAGS, &mut req)
}

/// `lo` up; `eth0` with the machine's MAC and address, up. Interface ioctls rather than `ip`
/// processes: under TCG every process start costs tens of milliseconds.
fn configure_net(init: &GuestInit) -> io::Result<()> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscall; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    set_up(&sock, "lo")?;
    let mac: Vec<u8> = init
        .mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| io::Error::other(format!("bad MAC address {}", init.mac)))?;
    if mac.len() != 6 {
        return Err(io::Error::other(format!("bad MAC address {}", init.mac)));
    }
    let mut req = IfReq::new("eth0");
    req.data[..2].copy_from_slice(&libc::ARPHRD_ETHER.to_ne_bytes());
    req.data[2..8].copy_from_slice(&mac);
    ioctl(&sock, libc::SIOCSIFHWADDR, &mut req)?;
    ioctl(
        &sock,
        libc::SIOCSIFADDR,
        &mut IfReq::with_inet("eth0", init.ip),
    )?;
    let mask = if init.prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(init.prefix.min(32)))
    };
    let mask = std::net::Ipv4Addr::from(mask);
    ioctl(
        &sock,
        libc::SIOCSIFNETMASK,
        &mut IfReq::with_inet("eth0", mask),
    )?;
    set_up(&sock, "eth0")
}

/// Takes the machine's identity (see the module documentation). Runs before the reaper
/// thread starts, so waiting for its own children is safe.
pub fn take_identity(init: &GuestInit) -> io::Result<()> {
    if init.now_unix_ms > 0 {
        set_clock(init.now_unix_ms)?;
    }
    if !init.entropy.is_empty() {
        if let Err(e) = add_entropy(&init.entropy) {
            log(&format!("cannot reseed the random pool: {e}"));
        }
    }
    if let Some(tag) = &init.share {
        mount_host(tag)?;
        if let Some(modules) = &init.modules {
            mount_modules(modules)?;
        }
    }
    if let Some(dir) = &init.data_dir {
        fs::create_dir_all(dir)?;
        match &init.disk {
            Some(disk) => mount_disk(disk, dir)?,
            None => mount_with(
                DATA_TAG,
                dir,
                Some("9p"),
                libc::MS_NOSUID | libc::MS_NODEV,
                // cache=mmap: services map their files (etcd's bbolt), which plain 9p refuses.
                Some("trans=virtio,version=9p2000.L,msize=262144,cache=mmap"),
            )
            .map_err(|e| io::Error::new(e.kind(), format!("mount the disk on {dir}: {e}")))?,
        }
    }
    if !init.services.is_empty() {
        link_services(&init.services)?;
        std::env::set_var("PATH", format!("{SERVICES_DIR}:{PATH}"));
    }
    // Single-threaded still (the reaper and request threads start after identity), so
    // changing the environment is safe; every child inherits it.
    for (name, value) in &init.env {
        std::env::set_var(name, value);
    }
    configure_net(init).map_err(|e| io::Error::new(e.kind(), format!("configure eth0: {e}")))?;
    // As on netns: a peer pinged while off must answer as soon as it boots.
    if let Err(e) = fs::write("/proc/sys/net/ipv4/neigh/eth0/retrans_time_ms", "10") {
        log(&format!(
            "cannot shorten the ARP retransmit time of eth0: {e}"
        ));
    }
    Ok(())
}

/// Makes the kernel's modules (host directory `modules`, seen through `/host`) appear at
/// `/lib/modules/<release>`. The share's `/lib` has them already (see `qemu::share`); else
/// they are bound there on a tmpfs over `/lib/modules`, which must then exist.
fn mount_modules(modules: &str) -> io::Result<()> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let target = Path::new("/lib/modules").join(release.trim());
    if target.join("modules.dep").exists() || target.join("kernel").is_dir() {
        return Ok(());
    }
    let src = Path::new("/host").join(modules.trim_start_matches('/'));
    mount_with(
        "tmpfs",
        "/lib/modules",
        Some("tmpfs"),
        libc::MS_NOSUID,
        None,
    )
    .map_err(|e| io::Error::new(e.kind(), format!("mount tmpfs on /lib/modules: {e}")))?;
    fs::create_dir_all(&target)?;
    let (src, target) = (src.to_string_lossy(), target.to_string_lossy());
    mount_with(&src, &target, None, libc::MS_BIND, None)
        .map_err(|e| io::Error::new(e.kind(), format!("bind {src} on {target}: {e}")))
}

fn set_clock(unix_ms: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (unix_ms / 1000) as libc::time_t,
        tv_nsec: ((unix_ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: a valid timespec for the duration of the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Credits `hex` bytes to the random pool (RNDADDENTROPY) and reseeds the generator
/// (RNDRESEEDCRNG), so this VM's random numbers part from those of its snapshot siblings.
fn add_entropy(hex: &str) -> io::Result<()> {
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    #[repr(C)]
    struct PoolInfo {
        entropy_count: libc::c_int,
        buf_size: libc::c_int,
        buf: [u8; 64],
    }
    let mut info = PoolInfo {
        entropy_count: 0,
        buf_size: 0,
        buf: [0; 64],
    };
    let n = bytes.len().min(64);
    info.buf[..n].copy_from_slice(&bytes[..n]);
    info.buf_size = n as libc::c_int;
    info.entropy_count = (n * 8) as libc::c_int;
    let random = OpenOptions::new().write(true).open("/dev/urandom")?;
    // SAFETY: RNDADDENTROPY reads a rand_pool_info of `buf_size` bytes from a live struct.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, &info as *const PoolInfo) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Host directories bound over the initramfs, read-only.
const SHARED: &[&str] = &["usr", "etc", "bin", "sbin", "lib", "lib64", "opt"];

fn mount_host(tag: &str) -> io::Result<()> {
    let ro = libc::MS_RDONLY;
    fs::create_dir_all("/host")?;
    mount_with(
        tag,
        "/host",
        Some("9p"),
        ro,
        Some("trans=virtio,version=9p2000.L,msize=262144,cache=loose"),
    )
    .map_err(|e| io::Error::new(e.kind(), format!("mount 9p share {tag} on /host: {e}")))?;
    for dir in SHARED {
        let src = Path::new("/host").join(dir);
        // On a merged-/usr host `/host/bin` is a link to `usr/bin`: bind what it points to.
        let Ok(real) = fs::canonicalize(&src).map(|p| {
            // canonicalize resolves inside the guest's view: re-root relative links under /host.
            if p.starts_with("/host") {
                p
            } else {
                Path::new("/host").join(p.strip_prefix("/").unwrap_or(&p))
            }
        }) else {
            continue;
        };
        if !real.is_dir() {
            continue;
        }
        let target = Path::new("/").join(dir);
        let _ = fs::create_dir_all(&target);
        let (src, target) = (real.to_string_lossy(), target.to_string_lossy());
        mount_with(&src, &target, None, libc::MS_BIND | libc::MS_REC, None)
            .map_err(|e| io::Error::new(e.kind(), format!("bind {src} on {target}: {e}")))?;
        // A bind mount takes the read-only flag only on a remount.
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        let _ = mount_with(&src, &target, None, flags, None);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_options_pick_the_module_s_own() {
        let cmdline = "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 virtio-mmio.device=1K@0x1:3 quiet virtio_net.napi_tx=1";
        assert_eq!(
            cmdline_options(cmdline, "virtio_mmio"),
            "device=512@0xfeb00e00:12 device=1K@0x1:3"
        );
        assert_eq!(cmdline_options(cmdline, "virtio_net"), "napi_tx=1");
        assert_eq!(cmdline_options(cmdline, "9p"), "");
    }
}
