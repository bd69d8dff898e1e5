//! Persistent named network namespaces, bind-mounted like `ip netns add` does, but in the run's
//! own directory (`/run/fleetcheck/<run>/netns/<name>`), not in `/run/netns`: `ip netns` makes
//! `/run/netns` a mount of its own the first time it runs where it is not one, which would hide
//! every mount made there before, so a sweep could no longer remove them.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::netlink::Netlink;
use super::sys;

/// Where iproute2 keeps named namespaces; fleetcheck no longer does, but the sweep still looks
/// there for namespaces left by older versions.
pub const LEGACY_NETNS_DIR: &str = "/run/netns";

/// The directory of a run's namespace mounts, inside its run directory.
pub fn dir_of(run_dir: &Path) -> PathBuf {
    run_dir.join("netns")
}

/// A named network namespace this process created, with a netlink socket inside it.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    pub path: PathBuf,
    pub fd: OwnedFd,
    pub netlink: std::sync::Mutex<Netlink>,
}

/// Removes a named namespace (unmount + unlink); the kernel frees it once nothing pins it.
pub fn remove_named(path: &std::path::Path) -> io::Result<()> {
    let unmount = sys::umount_detach(path);
    let unlink = fs::remove_file(path);
    match (unmount, unlink) {
        (_, Ok(())) => Ok(()),
        (_, Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

fn create_in_thread(dir: &Path, name: &str) -> io::Result<Netns> {
    let path = dir.join(name);
    // Create the mount point first so a failure leaves nothing behind but this file.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    let made = (|| {
        // SAFETY: unshare only changes this (short-lived, dedicated) thread's network namespace.
        sys::check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
        let own = sys::cpath(std::path::Path::new("/proc/thread-self/ns/net"))?;
        let target = sys::cpath(&path)?;
        // SAFETY: valid C strings, null fstype and data for a bind mount.
        sys::check(unsafe {
            libc::mount(
                own.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        })?;
        let fd = sys::open(&path, libc::O_RDONLY)?;
        let netlink = Netlink::open()?;
        Ok((fd, netlink))
    })();
    match made {
        Ok((fd, netlink)) => Ok(Netns {
            name: name.to_string(),
            path,
            fd,
            netlink: std::sync::Mutex::new(netlink),
        }),
        Err(e) => {
            let _ = remove_named(&path);
            Err(e)
        }
    }
}

/// Creates the namespaces named `names` (in order) in the namespace directory of `run_dir`,
/// from one dedicated thread. Returns those created, and the error that stopped it with the
/// name it failed on.
pub fn create_all(run_dir: &Path, names: Vec<String>) -> (Vec<Netns>, Option<(String, io::Error)>) {
    let dir = dir_of(run_dir);
    if let Err(e) = fs::create_dir_all(&dir) {
        return (Vec::new(), Some((dir.display().to_string(), e)));
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut made = Vec::with_capacity(names.len());
            for name in &names {
                match create_in_thread(&dir, name) {
                    Ok(ns) => made.push(ns),
                    Err(e) => return (made, Some((name.clone(), e))),
                }
            }
            (made, None)
        })
        .join()
        .unwrap_or_else(|_| {
            (
                Vec::new(),
                Some((String::new(), io::Error::other("namespace thread panicked"))),
            )
        })
    })
}
