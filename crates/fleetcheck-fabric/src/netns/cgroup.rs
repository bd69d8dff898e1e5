//! One cgroup per machine carrying its memory limit: cgroup v2 when the unified hierarchy at
//! /sys/fs/cgroup has the memory controller, else the v1 memory hierarchy.
//! Layout: `<root>/fleetcheck-<run>/<net>-<machine>`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::HostError;

/// Which memory cgroup hierarchy is used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cgroups {
    V1 { memory: PathBuf },
    V2 { root: PathBuf },
}

const V2_ROOT: &str = "/sys/fs/cgroup";
const V1_MEMORY: &str = "/sys/fs/cgroup/memory";

impl Cgroups {
    /// Finds a hierarchy with the memory controller.
    pub fn detect() -> Result<Self, HostError> {
        let v2 = Path::new(V2_ROOT);
        if let Ok(c) = fs::read_to_string(v2.join("cgroup.controllers")) {
            if c.split_whitespace().any(|c| c == "memory") {
                return Ok(Cgroups::V2 { root: v2.into() });
            }
        }
        let v1 = Path::new(V1_MEMORY);
        if v1.join("memory.limit_in_bytes").exists() {
            return Ok(Cgroups::V1 { memory: v1.into() });
        }
        Err(HostError::NoMemoryCgroup {
            v1: v1.into(),
            v2: v2.join("cgroup.controllers"),
        })
    }

    /// The hierarchy root holding `fleetcheck-<run>` directories.
    pub fn root(&self) -> &Path {
        match self {
            Cgroups::V1 { memory } => memory,
            Cgroups::V2 { root } => root,
        }
    }

    /// `<root>/fleetcheck-<run>`.
    pub fn run_dir(&self, run: &str) -> PathBuf {
        self.root().join(format!("fleetcheck-{run}"))
    }

    /// Creates the machine's cgroup with its memory limit.
    pub fn create_machine(&self, run: &str, name: &str, memory_mb: u32) -> io::Result<PathBuf> {
        let run_dir = self.run_dir(run);
        match fs::create_dir(&run_dir) {
            Ok(()) => {
                if let Cgroups::V2 { root } = self {
                    // Delegate the memory controller down to the machines.
                    let _ = fs::write(root.join("cgroup.subtree_control"), "+memory");
                    fs::write(run_dir.join("cgroup.subtree_control"), "+memory")?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let dir = run_dir.join(name);
        fs::create_dir(&dir)?;
        let bytes = u64::from(memory_mb) * 1024 * 1024;
        let limit = match self {
            Cgroups::V1 { .. } => dir.join("memory.limit_in_bytes"),
            Cgroups::V2 { .. } => dir.join("memory.max"),
        };
        if let Err(e) = fs::write(&limit, bytes.to_string()) {
            let _ = fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(dir)
    }

    /// The file holding a cgroup's memory limit (for tests and diagnostics).
    pub fn limit_file(&self, dir: &Path) -> PathBuf {
        match self {
            Cgroups::V1 { .. } => dir.join("memory.limit_in_bytes"),
            Cgroups::V2 { .. } => dir.join("memory.max"),
        }
    }
}

/// Pids currently in cgroup `dir`.
pub fn pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Removes an (empty) cgroup directory; missing is fine.
pub fn remove(dir: &Path) -> io::Result<()> {
    super::sys::retry_busy(|| match fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    })
}
