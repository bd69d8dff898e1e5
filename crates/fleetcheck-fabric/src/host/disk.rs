//! A machine's own file system ([`crate::MachineSpec::filesystem`]): the image both backends
//! make ([`make_image`]; QEMU attaches it as a virtio-blk disk), and on `netns` its loop device
//! and disk namespace ([`Disk`]), which the sweep also cleans up. For a machine that loses
//! unsynced writes, the image is served through a volatile write cache ([`open_volatile`],
//! [`super::volatile`]) and the loop device (or QEMU) uses that FUSE file instead.
//!
//! When the network is created, each such machine gets a sparse image file
//! `<network dir>/m<i>.img`, formatted by `mkfs.<fs>` on the host. On `netns` it is attached to a loop device with
//! autoclear set, and mounted at the machine's data directory inside a *disk namespace*: a
//! private mount namespace the network holds only by file descriptor. Nothing is mounted in the
//! host's mount namespace. Every boot of the machine starts its agent from a fresh copy of that
//! namespace (see `spawn`), so the machine sees its file system at the data directory, and
//! the mount (with everything written to it) outlives crashes and reboots.
//!
//! The host reads the file system through `/proc/<pid>/fd/<n>`, a descriptor of the mount's
//! root ([`Disk::host_path`]). Closing the descriptors (teardown, or the process dying) ends the
//! namespace, which unmounts the file system, which lets autoclear detach the loop device; the
//! sweep detaches any loop device still backed by a file of a dead run.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::mpsc;

use super::sys::{check, cpath, open};
use super::volatile;
use crate::spec::FileSystem;

/// Size of every image. Sparse: only what the file system writes takes space (about 4 MiB
/// for ext4 and btrfs, 64 MiB for xfs's log). xfs refuses less than 300 MiB.
pub const IMAGE_MB: u64 = 512;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Makes a fresh, empty file system of type `fs` in a new sparse image file at `image`.
pub fn make_image(image: &Path, fs: FileSystem) -> io::Result<()> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(image)?;
    file.set_len(IMAGE_MB << 20)?;
    drop(file);
    // Also found in /usr/sbin and /sbin when those are not on PATH.
    let program = mkfs_path(fs).unwrap_or_else(|| PathBuf::from(fs.mkfs()));
    let mut cmd = Command::new(program);
    match fs {
        // Inode tables and journal are zeroed lazily (the mount says `noinit_itable`), so
        // mkfs writes about 4 MiB instead of tens.
        FileSystem::Ext4 => cmd.args([
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
        ]),
        FileSystem::Xfs => cmd.args(["-q", "-f", "-K"]),
        FileSystem::Btrfs => cmd.args(["-q", "-f", "-K"]),
    };
    let out = cmd.arg(image).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run {} (package {}): {e}", fs.mkfs(), fs.package()),
        )
    })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} failed with {}: {}",
            fs.mkfs(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A formatted image attached and mounted in its own mount namespace.
#[derive(Debug)]
pub struct Disk {
    /// The loop device, e.g. `/dev/loop3`.
    pub device: PathBuf,
    /// The file attached to it: the image, or for a volatile disk the FUSE file over it (as
    /// the loop device names it).
    pub image: PathBuf,
    /// The disk namespace.
    ns: OwnedFd,
    /// The root of the mounted file system (`O_PATH`).
    root: OwnedFd,
    /// For a disk that loses unsynced writes: the process serving its write cache.
    volatile: Option<Served>,
}

/// The server process of a volatile disk ([`super::volatile`]): its control socket and child.
/// Dropped while it runs, it is killed (its file system's users then get errors).
#[derive(Debug)]
pub struct Served {
    control: BufReader<UnixStream>,
    child: Child,
}

impl Served {
    /// Power loss: the server forgets the writes not flushed and ignores later ones; returns
    /// once it has.
    pub fn cut(&mut self) -> io::Result<()> {
        self.control.get_mut().write_all(b"cut\n")?;
        let mut line = String::new();
        self.control.read_line(&mut line)?;
        if line.trim_end() == "cut" {
            Ok(())
        } else {
            Err(io::Error::other("the disk server did not confirm the cut"))
        }
    }

    /// From now on the disk fails with `error` (`None`: works again); returns once the server
    /// has taken it.
    pub fn set_error(&mut self, error: Option<super::volatile::DiskError>) -> io::Result<()> {
        let name = error.map_or("none", super::volatile::DiskError::name);
        self.control
            .get_mut()
            .write_all(format!("error {name}\n").as_bytes())?;
        let mut line = String::new();
        self.control.read_line(&mut line)?;
        if line.trim_end() == "error" {
            Ok(())
        } else {
            Err(io::Error::other(
                "the disk server did not confirm the error",
            ))
        }
    }

    /// Waits (up to `within`) until the server has exited (its file system is gone) and reaps
    /// it; whether it had. One still running then is killed.
    pub fn wait_ended(mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut pause = Duration::from_micros(200);
        loop {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Disk {
    /// Attaches `image` to a free loop device and mounts it (type `fs`) at `target` inside a
    /// new private mount namespace.
    pub fn mount(image: &Path, fs: FileSystem, target: &Path) -> io::Result<Disk> {
        let (device, dev_fd) = attach(image)?;
        let fstype = fs.name();
        let target = target.to_path_buf();
        let dev = device.clone();
        let mounted = std::thread::scope(|s| {
            s.spawn(move || mount_in_new_ns(&dev, fstype, &target))
                .join()
                .expect("the mount thread does not panic")
        });
        // The mount holds the device now; with autoclear it goes when the mount goes.
        match mounted {
            Ok((ns, root)) => {
                drop(dev_fd);
                Ok(Disk {
                    device,
                    image: image.to_path_buf(),
                    ns,
                    root,
                    volatile: None,
                })
            }
            Err(e) => {
                // SAFETY: ioctl without argument on our own loop descriptor.
                unsafe { libc::ioctl(dev_fd.as_raw_fd(), LOOP_CLR_FD) };
                Err(e)
            }
        }
    }

    /// Makes a disk that loses unsynced writes ([`super::volatile`]): the FUSE file over
    /// `image` ([`open_volatile`]) on a loop device, and the file system (type `fs`) on that
    /// device mounted at `target` inside a new private mount namespace.
    pub fn mount_volatile(
        image: &Path,
        fs: FileSystem,
        target: &Path,
        fuse_dir: &Path,
        name: &str,
        agent: &super::AgentCommand,
        procs: &Path,
    ) -> io::Result<Disk> {
        let (file, served) = open_volatile(image, fuse_dir, name, agent, procs)?;
        let fstype = fs.name();
        let target = target.to_path_buf();
        let mounted = std::thread::scope(|s| {
            s.spawn(|| -> io::Result<_> {
                let (device, dev_fd) = attach_fd(&file, &fuse_dir.join(name))?;
                let backing = backing_file(&device).unwrap_or_default();
                enter_private_ns()
                    .and_then(|()| mount_fs(&device, fstype, &target, true))
                    .and_then(|()| own_ns_and_root(&target))
                    .map(|(ns, root)| (device, backing, ns, root))
                    .inspect_err(|_| {
                        // SAFETY: ioctl without argument on our own loop descriptor.
                        unsafe { libc::ioctl(dev_fd.as_raw_fd(), LOOP_CLR_FD) };
                    })
            })
            .join()
            .expect("the mount thread does not panic")
        });
        // The loop device holds the FUSE file now.
        drop(file);
        let (device, image, ns, root) = mounted?;
        Ok(Disk {
            device,
            image,
            ns,
            root,
            volatile: Some(served),
        })
    }

    /// Power loss on a volatile disk: the writes not flushed are forgotten and later ones
    /// ignored (the file system is to be let go of next: [`Disk::close`]). Whether the disk
    /// is volatile.
    pub fn cut(&mut self) -> io::Result<bool> {
        match &mut self.volatile {
            Some(v) => v.cut().map(|()| true),
            None => Ok(false),
        }
    }

    /// A volatile disk fails with `error` from now on (`None`: works again); `Ok(false)` for a
    /// disk without the layer.
    pub fn set_error(&mut self, error: Option<super::volatile::DiskError>) -> io::Result<bool> {
        match &mut self.volatile {
            Some(v) => v.set_error(error).map(|()| true),
            None => Ok(false),
        }
    }

    /// The mount namespace a boot copies its own from.
    pub fn namespace(&self) -> &OwnedFd {
        &self.ns
    }

    /// A path through which the host process (or, as root, any process) sees the file system.
    pub fn host_path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.root.as_raw_fd()
        ))
    }

    /// Lets go of the file system: closes the namespace and the root descriptor, so the file
    /// system is unmounted once no machine runs from the namespace any more, and the loop
    /// device detaches itself. Returns `(device, image)`, for [`wait_detached`].
    pub fn close(self) -> (PathBuf, PathBuf) {
        self.close_served().0
    }

    /// [`Disk::close`], also handing over a volatile disk's server (to wait until it ended).
    pub fn close_served(self) -> ((PathBuf, PathBuf), Option<Served>) {
        let Disk {
            device,
            image,
            ns,
            root,
            volatile,
        } = self;
        drop(root);
        drop(ns);
        ((device, image), volatile)
    }
}

/// Runs `work` on the file system (type `fs`) of `file`, an image or a volatile disk's FUSE
/// file (named `name` in messages), mounted at `target` in a mount namespace of this thread's
/// own that nobody else sees; then unmounts it and waits until its loop device let go (so a
/// VM may use the image again). For the host's changes to a stopped VM's disk.
pub fn with_mounted<T: Send>(
    file: &OwnedFd,
    name: &Path,
    fs: FileSystem,
    target: &Path,
    work: impl FnOnce(&Path) -> io::Result<T> + Send,
) -> io::Result<T> {
    let (device, dev_fd) = attach_fd(file, name)?;
    let fstype = fs.name();
    let done = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<T> {
            enter_private_ns()?;
            mount_fs(&device, fstype, target, false)?;
            let result = work(target);
            let c = cpath(target)?;
            // SAFETY: a valid C string; unmounts (and so writes back) what `work` changed.
            check(unsafe { libc::umount2(c.as_ptr(), 0) })?;
            result
        })
        .join()
        .expect("the mount thread does not panic")
    });
    let attached = backing_file(&device).unwrap_or_else(|| name.to_path_buf());
    drop(dev_fd);
    let _ = fs::remove_dir(target);
    let left = wait_detached(&[(device.clone(), attached)], Duration::from_secs(5));
    if !left.is_empty() {
        return Err(io::Error::other(format!(
            "{} still holds {} after 5 s",
            device.display(),
            name.display()
        )));
    }
    done
}

/// Serves `image` as the one file (`name`) of a FUSE file system with a volatile write cache
/// ([`super::volatile`]) from a server process (`agent` with [`volatile::SERVE_FLAG`], in the
/// cgroup whose `cgroup.procs` is `procs`); returns that file, open read-write, and the server.
/// The file system is mounted only for the open, at `fuse_dir` in a mount namespace of its
/// own that ends at once: the file holds it, and nothing else sees it. It and its server end
/// when the last user of the file (a loop device, QEMU) lets go.
pub fn open_volatile(
    image: &Path,
    fuse_dir: &Path,
    name: &str,
    agent: &super::AgentCommand,
    procs: &Path,
) -> io::Result<(OwnedFd, Served)> {
    let (to_main, from_ns) = mpsc::channel::<io::Result<OwnedFd>>();
    let (to_ns, from_main) = mpsc::channel::<bool>();
    let fuse_dir = fuse_dir.to_path_buf();
    std::thread::scope(|s| {
        let ns_thread = s.spawn(move || -> io::Result<OwnedFd> {
            enter_private_ns()?;
            fs::create_dir_all(&fuse_dir)?;
            let _ = to_main.send(mount_fuse(&fuse_dir));
            if !from_main.recv().unwrap_or(false) {
                return Err(io::Error::other("the disk server did not start"));
            }
            let file = open(&fuse_dir.join(name), libc::O_RDWR)?;
            super::sys::umount_detach(&fuse_dir)?;
            Ok(file)
        });
        // This process keeps no descriptor of the FUSE device: the connection ends with the
        // server.
        let served = from_ns
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the mount thread ended")))
            .and_then(|fuse| spawn_server(image, name, agent, procs, fuse));
        let _ = to_ns.send(served.is_ok());
        let file = ns_thread.join().expect("the mount thread does not panic");
        let served = served?;
        Ok((file?, served))
    })
}

/// Starts the server of `image` on FUSE device `fuse` and waits until it serves.
fn spawn_server(
    image: &Path,
    name: &str,
    agent: &super::AgentCommand,
    procs: &Path,
    fuse: OwnedFd,
) -> io::Result<Served> {
    let (ours, theirs) = UnixStream::pair()?;
    let procs = open(procs, libc::O_WRONLY)?;
    // Copies numbered 10 or more, so that the child's dup2 to 3 and 4 overwrite neither.
    let high = |fd: &OwnedFd| -> io::Result<OwnedFd> {
        // SAFETY: fcntl on a descriptor we keep open; the new one is owned below.
        let n = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) })?;
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) })
    };
    let (fuse, theirs) = (high(&fuse)?, high(&OwnedFd::from(theirs))?);
    let (fuse_fd, control_fd, procs_fd) = (fuse.as_raw_fd(), theirs.as_raw_fd(), procs.as_raw_fd());
    let mut cmd = Command::new(&agent.program);
    cmd.args(&agent.args)
        .arg(volatile::SERVE_FLAG)
        .arg(image)
        .arg(name)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: between fork and exec the child only makes async-signal-safe syscalls (write,
    // setpgid, dup2) on descriptors this function keeps open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // Found with the run's other processes by the guardian and the sweep; in a
            // process group of its own, so a Ctrl-C at the terminal leaves it to the clean-up.
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) < 0
                || libc::setpgid(0, 0) < 0
                || libc::dup2(fuse_fd, volatile::FUSE_FD) < 0
                || libc::dup2(control_fd, volatile::CONTROL_FD) < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop((fuse, theirs, procs));
    ours.set_read_timeout(Some(SERVER_START))?;
    let mut served = Served {
        control: BufReader::new(ours),
        child,
    };
    let mut line = String::new();
    served.control.read_line(&mut line)?;
    if line.trim_end() != "ready" {
        return Err(io::Error::other(format!(
            "the disk server did not start within {SERVER_START:?}"
        )));
    }
    served
        .control
        .get_ref()
        .set_read_timeout(Some(SERVER_ANSWER))?;
    Ok(served)
}

/// How long a disk server may take to serve, and to answer a cut.
const SERVER_START: Duration = Duration::from_secs(10);
const SERVER_ANSWER: Duration = Duration::from_secs(5);

/// Whether loop device `device` is (still) attached to `image`. A detached device may at once
/// be taken by another network's disk, so the backing file is what tells.
pub fn attached_to(device: &Path, image: &Path) -> bool {
    backing_file(device).is_some_and(|f| {
        let f = f.to_string_lossy();
        Path::new(f.trim_end_matches(" (deleted)")) == image
    })
}

/// Waits (up to `within`) until no loop device of `disks` (`(device, image)`) is attached to
/// its image any more; returns those still attached then.
pub fn wait_detached(disks: &[(PathBuf, PathBuf)], within: Duration) -> Vec<(PathBuf, PathBuf)> {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_micros(200);
    loop {
        let left: Vec<(PathBuf, PathBuf)> = disks
            .iter()
            .filter(|(d, image)| attached_to(d, image))
            .cloned()
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Attaches `image` to a free loop device with autoclear; returns its path and descriptor.
fn attach(image: &Path) -> io::Result<(PathBuf, OwnedFd)> {
    let file = open(image, libc::O_RDWR)?;
    attach_fd(&file, image)
}

/// Attaches open file `file` (named `image` in messages and the loop device's record) to a
/// free loop device with autoclear.
fn attach_fd(file: &OwnedFd, image: &Path) -> io::Result<(PathBuf, OwnedFd)> {
    let control = open(Path::new("/dev/loop-control"), libc::O_RDWR)?;
    for _ in 0..32 {
        // SAFETY: ioctl without argument on /dev/loop-control.
        let n = check(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) })?;
        let device = PathBuf::from(format!("/dev/loop{n}"));
        let dev = open(&device, libc::O_RDWR)?;
        // SAFETY: LoopConfig is plain data; all zero is a valid value.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = file.as_raw_fd() as u32;
        config.info.flags = LO_FLAGS_AUTOCLEAR;
        let name = image.as_os_str().as_bytes();
        let len = name.len().min(63);
        config.info.file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: LOOP_CONFIGURE reads a struct loop_config that lives across the call.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if rc == 0 {
            return Ok((device, dev));
        }
        let err = io::Error::last_os_error();
        // Another process took the device between the two calls: ask for another.
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(io::Error::new(
                err.kind(),
                format!(
                    "cannot attach {} to {}: {err}",
                    image.display(),
                    device.display()
                ),
            ));
        }
    }
    Err(io::Error::other("no free loop device after 32 attempts"))
}

fn mount_in_new_ns(device: &Path, fstype: &str, target: &Path) -> io::Result<(OwnedFd, OwnedFd)> {
    enter_private_ns()?;
    fs::create_dir_all(target)?;
    mount_fs(device, fstype, target, false)?;
    own_ns_and_root(target)
}

/// Moves this thread into a new mount namespace whose mounts are all private and which has no
/// namespace bind mounts.
fn enter_private_ns() -> io::Result<()> {
    // SAFETY: unshare on this thread only (it implies CLONE_FS: the thread gets its own root
    // and working directory, and ends right after).
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) })?;
    let c = |s: &str| CString::new(s).expect("no NUL");
    let root = c("/");
    let none = c("none");
    // SAFETY: valid C strings; makes this namespace's mounts private so nothing propagates back.
    check(unsafe {
        libc::mount(
            none.as_ptr(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })?;
    // Copies of namespace bind mounts would pin every namespace that exists now.
    crate::agent::root::detach_nsfs_mounts();
    Ok(())
}

/// The options a machine's file system `fstype` is mounted with, on netns and in a VM alike:
/// ext4's inode tables stay lazily initialised, without a zeroing thread; on a `volatile` disk
/// ext4 commits its journal only when asked (or when it fills) instead of every 5 s, btrfs
/// every 5 minutes instead of 30 s (xfs writes its log every 30 s whatever the mount says),
/// so that what a power cut keeps is what programs made durable.
pub fn mount_options(fstype: &str, volatile: bool) -> &'static str {
    match (fstype, volatile) {
        ("ext4", false) => "noinit_itable",
        ("ext4", true) => "noinit_itable,commit=86400",
        // More than 300 s draws a kernel warning.
        ("btrfs", true) => "commit=300",
        _ => "",
    }
}

/// Mounts file system `fstype` of `device` at `target` (in this thread's namespace).
fn mount_fs(device: &Path, fstype: &str, target: &Path, volatile: bool) -> io::Result<()> {
    let c = |s: &str| CString::new(s).expect("no NUL");
    fs::create_dir_all(target)?;
    let (src, dst, ty) = (cpath(device)?, cpath(target)?, c(fstype));
    let options = c(mount_options(fstype, volatile));
    // SAFETY: valid C strings that live across the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            ty.as_ptr(),
            libc::MS_NOATIME,
            options.as_ptr().cast(),
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!(
                "cannot mount {} ({fstype}) at {}: {err}",
                device.display(),
                target.display()
            ),
        ));
    }
    Ok(())
}

/// Mounts a FUSE file system at `dir` (in this thread's namespace); returns its `/dev/fuse`.
fn mount_fuse(dir: &Path) -> io::Result<OwnedFd> {
    let fuse = open(Path::new("/dev/fuse"), libc::O_RDWR).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open /dev/fuse (a machine that loses unsynced writes needs FUSE): {e}"),
        )
    })?;
    let c = |s: &str| CString::new(s).expect("no NUL");
    let (src, dst, ty) = (c("fleetcheck-disk"), cpath(dir)?, c("fuse"));
    let options = c(&format!(
        "fd={},rootmode=40000,user_id=0,group_id=0",
        fuse.as_raw_fd()
    ));
    // SAFETY: valid C strings that live across the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            ty.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOATIME,
            options.as_ptr().cast(),
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!(
                "cannot mount a FUSE file system at {}: {err}",
                dir.display()
            ),
        ));
    }
    Ok(fuse)
}

/// This thread's mount namespace and the root of the file system mounted at `target`.
fn own_ns_and_root(target: &Path) -> io::Result<(OwnedFd, OwnedFd)> {
    let root = open(target, libc::O_PATH | libc::O_DIRECTORY)?;
    let ns = open(Path::new("/proc/thread-self/ns/mnt"), libc::O_RDONLY)?;
    Ok((ns, root))
}

/// The file a loop device is attached to, if it is attached.
pub fn backing_file(device: &Path) -> Option<PathBuf> {
    let name = device.file_name()?.to_str()?;
    let text = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim_end_matches('\n')))
}

/// The name of the FUSE file of a volatile disk of machine `index` of network `net` of run
/// `run`. Its FUSE file system is mounted nowhere once its loop device holds it, so the loop
/// device shows it as `/<name>`, and [`run_of_backing`] tells whose it is.
pub fn volatile_name(run: &str, net: &str, index: usize) -> String {
    format!("{VOLATILE_PREFIX}{run}-{net}-m{index}.img")
}

const VOLATILE_PREFIX: &str = "fleetcheck-volatile-";

/// The run a loop device's backing file belongs to: an image under `<RUN_ROOT>/<run>/`, or a
/// volatile disk's FUSE file ([`volatile_name`]).
pub fn run_of_backing(file: &Path) -> Option<String> {
    let text = file.to_string_lossy();
    let file = Path::new(text.trim_end_matches(" (deleted)"));
    if let Ok(rest) = file.strip_prefix(super::RUN_ROOT) {
        return rest.iter().next()?.to_str().map(str::to_string);
    }
    let name = file
        .to_str()?
        .strip_prefix('/')?
        .strip_prefix(VOLATILE_PREFIX)?;
    (!name.contains('/')).then(|| name.split_once('-').map(|(run, _)| run.to_string()))?
}

/// Loop devices attached to a file under `dir` (`/dev/loopN`, sorted); for `dir` the run root
/// or a run's directory, also those of its volatile disks ([`run_of_backing`]).
pub fn loops_under(dir: &Path) -> Vec<PathBuf> {
    let root = Path::new(super::RUN_ROOT);
    let run = dir
        .strip_prefix(root)
        .ok()
        .filter(|r| r.iter().count() <= 1)
        .map(|r| r.to_string_lossy().into_owned());
    let mut found: Vec<PathBuf> = fs::read_dir("/sys/block")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("loop"))
                .map(|n| PathBuf::from(format!("/dev/{n}")))
                .filter(|d| {
                    backing_file(d).is_some_and(|f| {
                        let of_run = run_of_backing(&f);
                        let f = f.to_string_lossy();
                        let f = f.trim_end_matches(" (deleted)");
                        Path::new(f).starts_with(dir)
                            || match (&run, of_run) {
                                (Some(run), Some(of)) => run.is_empty() || *run == of,
                                _ => false,
                            }
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Detaches loop device `device` (at once if unused, else when its last user lets go), if it
/// is still attached to `image`.
pub fn detach(device: &Path, image: &Path) -> io::Result<()> {
    let fd = open(device, libc::O_RDWR)?;
    if !attached_to(device, image) {
        return Ok(());
    }
    // SAFETY: ioctl without argument on a loop device we opened.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), LOOP_CLR_FD) }).map(drop)
}

/// Whether the kernel can mount `fs` (`/proc/filesystems`, which lists modules once loaded).
pub fn kernel_supports(fs: FileSystem) -> bool {
    fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some(fs.name()))
    })
}

/// Where `mkfs.<fs>` is, if on `PATH` (or in /sbin, /usr/sbin).
pub fn mkfs_path(fs: FileSystem) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(fs.mkfs()))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backing_files_name_their_run() {
        let name = volatile_name("ab12cd34", "n3", 2);
        assert_eq!(
            run_of_backing(Path::new(&format!("/{name}"))).as_deref(),
            Some("ab12cd34")
        );
        assert_eq!(
            run_of_backing(Path::new("/run/fleetcheck/ab12cd34/n0/m0.img (deleted)")).as_deref(),
            Some("ab12cd34")
        );
        assert_eq!(run_of_backing(Path::new("/home/x/disk.img")), None);
        assert_eq!(run_of_backing(Path::new(&format!("/tmp/{name}"))), None);
    }
}
