//! The snapshot cache: VMs saved right after their agent said `Booted` (kernel up, modules
//! loaded, no identity yet), one file per kind of machine.
//!
//! The key hashes everything QEMU needs to accept the file on restore and everything that
//! decides what the guest was doing: QEMU binary, accelerator, kernel image, initramfs (whose
//! name carries its content key), memory size, the kernel command line and this module's format
//! number. Setup commands are not in the key: they run after the restore, as part of Init.
//! Files are written under a temporary name and renamed, so a reader never sees half a file;
//! one boot per key writes, the others boot cold meanwhile.
//!
//! A snapshot holds the guest memory in use (about 80 MB for a 128 MiB guest, 20 MB once
//! compressed with zstd), and the
//! generator draws memory sizes from a range, so the cache is bounded: after each save the
//! least recently used files go until the rest fit in `$FLEETCHECK_SNAPSHOT_MB` (default
//! [`DEFAULT_CAP_MB`]). A restore counts as a use (it touches the file).

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::vm::Hardware;

/// Snapshot files: QEMU's migration stream through `zstd -1` (about a quarter of the size;
/// decompressing while QEMU reads costs under 0.1 s).
pub const EXTENSION: &str = "vmstate.zst";

/// Default size bound of the snapshot cache, MB.
pub const DEFAULT_CAP_MB: u64 = 2048;

/// Bumped when what a snapshot holds changes.
const FORMAT: u32 = 1;

/// The cache directory and the keys being written right now.
#[derive(Debug)]
pub struct Snapshots {
    dir: PathBuf,
    making: Mutex<BTreeSet<String>>,
}

/// The right to write the snapshot of one key; released on drop.
#[derive(Debug)]
pub struct Claim {
    snapshots: Arc<Snapshots>,
    pub key: String,
    pub path: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.snapshots
            .making
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

fn file_stamp(path: &Path) -> (u64, i64, i64) {
    std::fs::metadata(path)
        .map(|m| (m.len(), m.mtime(), m.mtime_nsec()))
        .unwrap_or_default()
}

impl Snapshots {
    pub fn new(dir: PathBuf) -> Self {
        Snapshots {
            dir,
            making: Mutex::new(BTreeSet::new()),
        }
    }

    /// The key of machines with hardware `hw`.
    pub fn key(hw: &Hardware) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        FORMAT.hash(&mut h);
        (
            &hw.qemu,
            hw.accel,
            &hw.kernel_image,
            &hw.initramfs,
            hw.memory_mb,
            hw.disk,
        )
            .hash(&mut h);
        // The TSC frequency is measured per process and may differ in its last digit; a
        // restored guest keeps the frequency it booted with, which is as good.
        for word in hw.cmdline.split_whitespace() {
            if !word.starts_with("tsc_early_khz=") {
                word.hash(&mut h);
            }
        }
        file_stamp(&hw.qemu).hash(&mut h);
        file_stamp(&hw.kernel_image).hash(&mut h);
        format!("{}-{:016x}", hw.memory_mb, h.finish())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.{EXTENSION}"))
    }

    /// The snapshot file of `key`, if one was saved; marks it used.
    pub fn existing(&self, key: &str) -> Option<PathBuf> {
        let p = self.path(key);
        let file = std::fs::File::options().append(true).open(&p).ok()?;
        let _ = file.set_modified(std::time::SystemTime::now());
        Some(p)
    }

    /// Removes the least recently used snapshots until the rest fit in the cap.
    pub fn prune(&self) {
        let cap = std::env::var("FLEETCHECK_SNAPSHOT_MB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(DEFAULT_CAP_MB)
            * 1_000_000;
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let stale = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| {
                // Temporary files of a process killed while saving.
                let name = e.file_name().to_string_lossy().into_owned();
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < stale);
                !(name.ends_with(".tmp") && old && std::fs::remove_file(e.path()).is_ok())
            })
            .filter(|e| e.file_name().to_string_lossy().ends_with(EXTENSION))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        for (_, len, path) in files {
            if total <= cap {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }

    /// The right to save the snapshot of `key`, unless one exists or another boot saves it.
    pub fn claim(self: &Arc<Self>, key: &str) -> Option<Claim> {
        if self.existing(key).is_some() {
            return None;
        }
        if std::fs::create_dir_all(&self.dir).is_err() {
            return None;
        }
        let mut making = self.making.lock().unwrap_or_else(|e| e.into_inner());
        if !making.insert(key.to_string()) {
            return None;
        }
        Some(Claim {
            snapshots: self.clone(),
            key: key.to_string(),
            path: self.path(key),
        })
    }

    /// Forgets a snapshot that failed to restore.
    pub fn discard(&self, key: &str) {
        let _ = std::fs::remove_file(self.path(key));
    }
}
