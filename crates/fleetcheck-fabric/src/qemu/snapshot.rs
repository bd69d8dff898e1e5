//! The snapshot cache: VMs saved right after their agent said `Booted` (kernel up, modules
//! loaded, no identity yet), one file per kind of machine.
//!
//! The key hashes everything QEMU needs to accept the file on restore and everything that
//! decides what the guest was doing: QEMU binary, accelerator, kernel image, initramfs (whose
//! name carries its content key), memory size, the kernel command line and this module's format
//! number. Setup commands are not in the key: they run after the restore, as part of Init.
//! Files are written under a temporary name and renamed, so a reader never sees half a file;
//! one boot per key writes, the others boot cold meanwhile.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::vm::Hardware;

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
        hw.hash(&mut h);
        file_stamp(&hw.qemu).hash(&mut h);
        file_stamp(&hw.kernel_image).hash(&mut h);
        format!("{}-{:016x}", hw.memory_mb, h.finish())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.vmstate"))
    }

    /// The snapshot file of `key`, if one was saved.
    pub fn existing(&self, key: &str) -> Option<PathBuf> {
        let p = self.path(key);
        p.is_file().then_some(p)
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
