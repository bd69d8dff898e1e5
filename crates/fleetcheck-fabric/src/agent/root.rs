//! A netns machine's own root file system, assembled by the agent (PID 1, in its fresh mount
//! namespace) before anything of the machine runs, and the capabilities it keeps.
//!
//! The machine directory `--root DIR` (made by the host, `m<i>.root` in the network's run
//! directory) holds the machine's persistent layers. The new root, mounted at `DIR/mnt` and then
//! made `/` by `pivot_root`, is:
//! - the host's `/` bound recursively and made read-only with all its submounts
//!   (`mount_setattr`), with the host's `/proc`, `/sys`, `/dev`, `/run` and `/tmp` mounts
//!   detached from the copy;
//! - `/etc` and `/var`: overlays of the host's directories (read-only lower layers) with the
//!   machine's upper layers `DIR/etc.upper`, `DIR/var.upper`: what the machine writes there
//!   stays across its reboots and goes with the network; the host's secrets (`/etc/shadow`, ...)
//!   are whiteouts in the upper layer, made by the host;
//! - `/root`: the machine's own `DIR/home` (persistent); `/home`: an empty tmpfs;
//! - `/tmp`, `/run`, `/dev/shm`: fresh tmpfs at every boot; `/dev`: a tmpfs with the harmless
//!   device nodes bound from the host and a private devpts;
//! - `/proc`: the machine's own (its pid namespace), with `/proc/sys`, `/proc/sysrq-trigger` and
//!   a few more bound read-only; `/sys`: a fresh read-only sysfs of the machine's network
//!   namespace (its own interfaces; no cgroup file system);
//! - the data directory (`--data`, read-write), the run's scratch directory (`--scratch`,
//!   read-write, shared by the run's machines) and the services directory (`--bin`, read-only,
//!   with each program's directory where the read-only view lacks it) at their host paths.
//!
//! Then the agent drops the capabilities that reach past these namespaces (mounting, modules,
//! raw devices, the clock, `open_by_handle_at`, ...) from its bounding set, so neither it nor
//! anything it starts can undo the read-only mounts.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{log, mount_with};

/// What `--root`, `--data` and `--bin` name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub root: PathBuf,
    pub data: Option<PathBuf>,
    pub bin: Option<PathBuf>,
    pub scratch: Option<PathBuf>,
}

impl Plan {
    /// From the agent's arguments; `None` without `--root` (the agent then keeps the host's
    /// view, as when it is not PID 1).
    pub fn from_args(args: &[String]) -> Option<Plan> {
        let value = |flag: &str| {
            let pos = args.iter().position(|a| a == flag)?;
            args.get(pos + 1).map(PathBuf::from)
        };
        Some(Plan {
            root: value("--root")?,
            data: value("--data"),
            bin: value("--bin"),
            scratch: value("--scratch"),
        })
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
}

fn context(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn mount(src: &str, target: &Path, fstype: Option<&str>, flags: libc::c_ulong) -> io::Result<()> {
    mount_data(src, target, fstype, flags, None)
}

fn mount_data(
    src: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let t = target.to_string_lossy();
    mount_with(src, &t, fstype, flags, data)
        .map_err(context(format!("mount {} on {t}", fstype.unwrap_or(src))))
}

/// Binds `src` onto `target` and makes that mount read-only (a bind takes the flag only on a
/// remount).
fn bind_ro(src: &Path, target: &Path, recursive: bool) -> io::Result<()> {
    let rec = if recursive { libc::MS_REC } else { 0 };
    let s = src.to_string_lossy();
    mount(&s, target, None, libc::MS_BIND | rec)?;
    mount(
        "none",
        target,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID,
    )
}

/// `struct mount_attr` of `<linux/mount.h>`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const AT_RECURSIVE: libc::c_int = 0x8000;

/// Makes the mount at `target` and every mount below it read-only and nosuid in one call.
pub(crate) fn read_only_tree(target: &Path) -> io::Result<()> {
    let c = cpath(target)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid path and a mount_attr that lives across the call, with its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("make the host's files read-only (mount_setattr, Linux 5.12 or later): {e}"),
        ));
    }
    Ok(())
}

/// Mount points of this mount namespace (field 5 of `/proc/thread-self/mountinfo`, octal escapes
/// decoded) with their file system type.
pub fn mount_points() -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let target = fields.get(4)?;
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?;
            Some((PathBuf::from(unescape(target)), fstype.to_string()))
        })
        .collect()
}

/// Decodes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detaches every `nsfs` mount (a namespace bind mount such as `ip netns`' or fleetcheck's own)
/// this mount namespace inherited: a copy would pin the namespace it names.
pub fn detach_nsfs_mounts() {
    for (target, fstype) in mount_points() {
        if fstype == "nsfs" {
            if let Ok(c) = cpath(&target) {
                // SAFETY: valid C string; failure (already gone) is fine.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// The path `p` (absolute) under `base`.
fn under(base: &Path, p: &Path) -> PathBuf {
    base.join(p.strip_prefix("/").unwrap_or(p))
}

/// Host device nodes a machine gets in its `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// Files of `/proc` bound read-only over themselves (`/proc/sys` first).
const PROC_READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// Assembles the machine's root (see the module documentation) and makes it `/`. `retrans`:
/// written to the machine's `/proc/sys` before it becomes read-only.
pub fn enter(plan: &Plan, before_read_only: impl FnOnce(&Path)) -> io::Result<()> {
    let new = plan.root.join("mnt");
    fs::create_dir_all(&new).map_err(context(format!("create {}", new.display())))?;
    mount("/", &new, None, libc::MS_BIND | libc::MS_REC)?;
    read_only_tree(&new)?;
    // The host's own kernel file systems and scratch directories go from the copy; fresh ones
    // of the machine take their place.
    let replaced = ["proc", "sys", "dev", "run", "tmp"].map(|d| new.join(d));
    let mut points: Vec<PathBuf> = mount_points()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| replaced.iter().any(|r| p == r))
        .collect();
    points.dedup();
    for p in points {
        let c = cpath(&p)?;
        // SAFETY: valid C string; a lazy unmount of the whole subtree.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } < 0 {
            return Err(context(format!("detach {}", p.display()))(
                io::Error::last_os_error(),
            ));
        }
    }
    let nodev = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let proc = new.join("proc");
    mount("proc", &proc, Some("proc"), nodev)?;
    before_read_only(&proc);
    for name in PROC_READ_ONLY {
        let p = proc.join(name);
        if p.exists() {
            bind_ro(&p, &p, true)?;
        }
    }
    mount(
        "sysfs",
        &new.join("sys"),
        Some("sysfs"),
        nodev | libc::MS_RDONLY,
    )?;
    make_dev(&new.join("dev"))?;
    let scratch = libc::MS_NOSUID | libc::MS_NODEV;
    mount_data(
        "tmpfs",
        &new.join("run"),
        Some("tmpfs"),
        scratch,
        Some("mode=755"),
    )?;
    mount_data(
        "tmpfs",
        &new.join("tmp"),
        Some("tmpfs"),
        scratch,
        Some("mode=1777"),
    )?;
    for dir in ["etc", "var"] {
        let options = format!(
            "lowerdir=/{dir},upperdir={},workdir={}",
            plan.root.join(format!("{dir}.upper")).display(),
            plan.root.join(format!("{dir}.work")).display()
        );
        mount_data(
            "overlay",
            &new.join(dir),
            Some("overlay"),
            libc::MS_NODEV,
            Some(&options),
        )?;
    }
    let home = plan.root.join("home");
    fs::create_dir_all(&home).map_err(context(format!("create {}", home.display())))?;
    if new.join("root").is_dir() {
        mount(
            &home.to_string_lossy(),
            &new.join("root"),
            None,
            libc::MS_BIND,
        )?;
    }
    if new.join("home").is_dir() {
        mount_data(
            "tmpfs",
            &new.join("home"),
            Some("tmpfs"),
            scratch,
            Some("mode=755"),
        )?;
    }
    for data in plan.data.iter().chain(&plan.scratch) {
        let target = under(&new, data);
        fs::create_dir_all(data).map_err(context(format!("create {}", data.display())))?;
        fs::create_dir_all(&target).map_err(context(format!("create {}", target.display())))?;
        mount(
            &data.to_string_lossy(),
            &target,
            None,
            libc::MS_BIND | libc::MS_REC,
        )?;
    }
    if let Some(bin) = &plan.bin {
        let target = under(&new, bin);
        fs::create_dir_all(&target).map_err(context(format!("create {}", target.display())))?;
        bind_ro(bin, &target, false)?;
        expose_programs(bin, &new)?;
    }
    pivot(&new)
}

/// `/dev`: a tmpfs with [`DEVICES`] bound from the host, a private devpts, `/dev/shm`.
fn make_dev(dev: &Path) -> io::Result<()> {
    mount_data(
        "tmpfs",
        dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=755"),
    )?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let node = dev.join(name);
        fs::File::create(&node).map_err(context(format!("create {}", node.display())))?;
        mount(&host.to_string_lossy(), &node, None, libc::MS_BIND)?;
    }
    let pts = dev.join("pts");
    fs::create_dir_all(&pts)?;
    mount_data(
        "devpts",
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )?;
    let shm = dev.join("shm");
    fs::create_dir_all(&shm)?;
    mount_data(
        "tmpfs",
        &shm,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))?;
    }
    Ok(())
}

/// Each service program's directory, bound read-only where the machine's view lacks the
/// program (one kept in the host's `/tmp`, say).
fn expose_programs(bin: &Path, new: &Path) -> io::Result<()> {
    for entry in fs::read_dir(bin)?.flatten() {
        let Ok(program) = fs::canonicalize(entry.path()) else {
            continue;
        };
        let Ok(host) = fs::metadata(&program) else {
            continue;
        };
        let inside = fs::metadata(under(new, &program));
        if inside.is_ok_and(|m| m.dev() == host.dev() && m.ino() == host.ino()) {
            continue;
        }
        let Some(dir) = program.parent() else {
            continue;
        };
        let target = under(new, dir);
        fs::create_dir_all(&target).map_err(context(format!(
            "make room for service program {}",
            program.display()
        )))?;
        bind_ro(dir, &target, true)?;
    }
    Ok(())
}

/// Makes `new` the root and lets go of the old one (`pivot_root(".", ".")`: no directory for
/// the old root is needed in the read-only new one).
fn pivot(new: &Path) -> io::Result<()> {
    std::env::set_current_dir(new)?;
    let dot = cpath(Path::new("."))?;
    // SAFETY: valid C strings; pivot_root(".", ".") stacks the old root on the new one.
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } < 0 {
        return Err(context("pivot_root".into())(io::Error::last_os_error()));
    }
    // SAFETY: valid C string; detaches the old root stacked on ".".
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } < 0 {
        return Err(context("detach the host's root".into())(
            io::Error::last_os_error(),
        ));
    }
    std::env::set_current_dir("/")
}

/// Capabilities a machine keeps (the rest leave the bounding set): files, users, signals,
/// its own network namespace (`nft`, `ip`, raw sockets), scheduling and limits.
const KEPT: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    11, // CAP_NET_BROADCAST
    12, // CAP_NET_ADMIN
    13, // CAP_NET_RAW
    14, // CAP_IPC_LOCK
    15, // CAP_IPC_OWNER
    18, // CAP_SYS_CHROOT
    23, // CAP_SYS_NICE
    24, // CAP_SYS_RESOURCE
    28, // CAP_LEASE
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// Drops every capability but [`KEPT`] from the bounding set and from this process's own
/// sets: among them `CAP_SYS_ADMIN` (mount, remount, namespaces), `CAP_DAC_READ_SEARCH`
/// (`open_by_handle_at` past the mount view), `CAP_MKNOD`, `CAP_SYS_MODULE`, `CAP_SYS_RAWIO`,
/// `CAP_SYS_TIME`, `CAP_SYS_BOOT`, `CAP_SYS_PTRACE`, `CAP_BPF`.
pub fn drop_capabilities() -> io::Result<()> {
    let last: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    for cap in (0..=last).filter(|c| !KEPT.contains(c)) {
        // SAFETY: plain prctl; needs CAP_SETPCAP, which the agent has.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(context(format!("drop capability {cap}"))(e));
            }
        }
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget fills two Data structs for version 3.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    } < 0
    {
        return Err(context("read capabilities".into())(
            io::Error::last_os_error(),
        ));
    }
    let mut keep = [0u32; 2];
    for &c in KEPT {
        keep[(c / 32) as usize] |= 1 << (c % 32);
    }
    for (d, k) in data.iter_mut().zip(keep) {
        d.effective &= k;
        d.permitted &= k;
        d.inheritable &= k;
    }
    // SAFETY: capset reads the header and two Data structs.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) } < 0 {
        return Err(context("drop capabilities".into())(
            io::Error::last_os_error(),
        ));
    }
    log("capabilities limited to the machine's own namespaces");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_reads_its_flags() {
        let args: Vec<String> = ["--root", "/r", "--channel-fd", "3", "--data", "/d"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            Plan::from_args(&args),
            Some(Plan {
                root: "/r".into(),
                data: Some("/d".into()),
                bin: None,
                scratch: None,
            })
        );
        assert_eq!(Plan::from_args(&["--data".into(), "/d".into()]), None);
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
