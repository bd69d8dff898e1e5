//! What a VM sees of the host: the root of the read-only virtio-9p share, built once per backend
//! in a private mount namespace that only QEMU's share reaches (through `/proc/<pid>/fd/<n>`,
//! a descriptor of its root, as a disk's root is reached on netns). The host's own mount table
//! never has it, and nothing on the host is created for it but an empty directory in the run
//! directory.
//!
//! The share's root is a tmpfs holding, each bound read-only: `/usr`, `/opt`, `/etc` with its
//! secrets ([`SECRETS`], the SSH host keys) covered by empty files, the links or directories
//! `/bin`, `/sbin`, `/lib64`, a `/lib` of its own (every entry of the host's `/lib` bound, plus
//! `lib/modules/<release>` of each installed kernel, so the guest needs no `/lib/modules` on the
//! host), the private kernels and the cache of unpacked modules, and, as machines name them,
//! the directories of service programs ([`Share::expose`]). Not there: `/root`, `/home`, `/tmp`,
//! `/run`, the rest of `/var`, `/srv`, `/mnt`, `/media`, and everything else.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::host::sys::{check, cpath, open};

/// Files of `/etc` a VM does not see (covered by an empty file or directory): password hashes
/// and private keys.
pub const SECRETS: &[&str] = &["shadow", "shadow-", "gshadow", "gshadow-", "ssl/private"];

/// The share's root in its mount namespace.
#[derive(Debug)]
pub struct Share {
    /// Where the root is mounted inside the share's namespace.
    mount_point: PathBuf,
    ns: OwnedFd,
    root: OwnedFd,
    /// Host directories bound so far by [`Share::expose`].
    exposed: Mutex<BTreeSet<PathBuf>>,
}

fn mount(src: &Path, target: &Path, fstype: Option<&str>, flags: libc::c_ulong) -> io::Result<()> {
    let (s, t) = (cpath(src)?, cpath(target)?);
    let fstype = fstype.map(|f| std::ffi::CString::new(f).expect("no NUL"));
    // SAFETY: valid C strings (or null) that live across the call.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("mount {} on {}: {e}", src.display(), t.to_string_lossy()),
        ));
    }
    Ok(())
}

/// Binds `src` (with its submounts) onto `target` read-only.
fn bind_ro(src: &Path, target: &Path) -> io::Result<()> {
    mount(src, target, None, libc::MS_BIND | libc::MS_REC)?;
    crate::agent::root::read_only_tree(target)
}

/// `p` (absolute) under `base`.
fn under(base: &Path, p: &Path) -> PathBuf {
    base.join(p.strip_prefix("/").unwrap_or(p))
}

/// Makes `target` like `src` (a directory, an empty file, or the same symbolic link) so that
/// `src` can be bound on it; returns whether a bind is needed.
fn mount_point_like(src: &Path, target: &Path) -> io::Result<bool> {
    let meta = fs::symlink_metadata(src)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, target)?;
        Ok(false)
    } else if meta.is_dir() {
        fs::create_dir_all(target)?;
        Ok(true)
    } else {
        fs::File::create(target)?;
        Ok(true)
    }
}

/// Runs `f` on a fresh thread whose file-system context is its own (so it may change mount
/// namespace), and returns what it returns.
fn on_own_thread<T: Send>(f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: affects this thread only, which ends after `f`.
            check(unsafe { libc::unshare(libc::CLONE_FS) })?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("share thread panicked")))
    })
}

impl Share {
    /// Builds the share at `mount_point` (an empty directory of the run) in a new mount
    /// namespace: see the module documentation. `modules`: each kernel's release and host
    /// module directory; `dirs`: more host directories to show (the private kernels, the
    /// cache).
    pub fn build(
        mount_point: &Path,
        modules: &[(String, PathBuf)],
        dirs: &[PathBuf],
    ) -> io::Result<Share> {
        fs::create_dir_all(mount_point)?;
        on_own_thread(|| {
            // SAFETY: this thread only.
            check(unsafe { libc::unshare(libc::CLONE_NEWNS) })?;
            mount(
                Path::new("none"),
                Path::new("/"),
                None,
                libc::MS_REC | libc::MS_PRIVATE,
            )?;
            crate::agent::root::detach_nsfs_mounts();
            let root = mount_point;
            mount(
                Path::new("tmpfs"),
                root,
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
            )?;
            for top in ["usr", "opt", "etc", "bin", "sbin", "lib64"] {
                let src = Path::new("/").join(top);
                if fs::symlink_metadata(&src).is_err() {
                    continue;
                }
                if mount_point_like(&src, &root.join(top))? {
                    bind_ro(&src, &root.join(top))?;
                }
            }
            // Secrets of /etc: covered by an empty file or directory.
            let empty_file = root.join(".empty");
            let empty_dir = root.join(".emptydir");
            fs::File::create(&empty_file)?;
            fs::create_dir_all(&empty_dir)?;
            let mut secrets: Vec<String> = SECRETS.iter().map(|s| s.to_string()).collect();
            if let Ok(ssh) = fs::read_dir("/etc/ssh") {
                secrets.extend(
                    ssh.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.starts_with("ssh_host_") && n.ends_with("_key"))
                        .map(|n| format!("ssh/{n}")),
                );
            }
            for secret in secrets {
                let target = root.join("etc").join(&secret);
                let Ok(meta) = fs::symlink_metadata(&target) else {
                    continue;
                };
                let cover = if meta.is_dir() {
                    &empty_dir
                } else {
                    &empty_file
                };
                mount(cover, &target, None, libc::MS_BIND)?;
            }
            // /lib of its own: the host's entries (its `modules`, if any, left out) and each
            // kernel's modules.
            let lib = root.join("lib");
            fs::create_dir_all(&lib)?;
            let host_lib = fs::canonicalize("/lib")?;
            for entry in fs::read_dir(&host_lib)?.flatten() {
                if entry.file_name() == "modules" {
                    continue;
                }
                let target = lib.join(entry.file_name());
                if mount_point_like(&entry.path(), &target)? {
                    bind_ro(&entry.path(), &target)?;
                }
            }
            for (release, dir) in modules {
                let target = lib.join("modules").join(release);
                fs::create_dir_all(&target)?;
                bind_ro(dir, &target)?;
            }
            for dir in dirs {
                fs::create_dir_all(dir)?;
                let target = under(root, dir);
                fs::create_dir_all(&target)?;
                bind_ro(dir, &target)?;
            }
            let root_fd = open(root, libc::O_PATH | libc::O_DIRECTORY)?;
            let ns = open(Path::new("/proc/thread-self/ns/mnt"), libc::O_RDONLY)?;
            Ok(Share {
                mount_point: root.to_path_buf(),
                ns,
                root: root_fd,
                exposed: Mutex::new(BTreeSet::new()),
            })
        })
    }

    /// The path QEMU exports: the share's root, reached through this process's descriptor.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.root.as_raw_fd()
        ))
    }

    /// Shows host directory `dir` (a service program's) in the share at its own path, read-only,
    /// unless the share shows it already.
    pub fn expose(&self, dir: &Path) -> io::Result<()> {
        let mut exposed = self.exposed.lock().unwrap_or_else(|e| e.into_inner());
        if exposed.contains(dir) {
            return Ok(());
        }
        let inside = under(&self.path(), dir);
        use std::os::unix::fs::MetadataExt;
        let host = fs::metadata(dir)?;
        if fs::metadata(&inside).is_ok_and(|m| m.dev() == host.dev() && m.ino() == host.ino()) {
            exposed.insert(dir.to_path_buf());
            return Ok(());
        }
        let ns = self.ns.as_raw_fd();
        on_own_thread(|| {
            // SAFETY: this thread only; the namespace descriptor stays open meanwhile.
            check(unsafe { libc::setns(ns, libc::CLONE_NEWNS) })?;
            let target = under(&self.mount_point, dir);
            fs::create_dir_all(&target).map_err(|e| {
                io::Error::new(e.kind(), format!("show {} to the VMs: {e}", dir.display()))
            })?;
            bind_ro(dir, &target)
        })?;
        exposed.insert(dir.to_path_buf());
        Ok(())
    }
}
