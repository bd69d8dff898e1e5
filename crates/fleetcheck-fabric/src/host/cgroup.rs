//! One cgroup per machine carrying its memory limit and its task limit ([`PIDS_MAX`]): cgroup v2
//! when the unified hierarchy at /sys/fs/cgroup has the memory controller (`memory.max` and
//! `pids.max` in the one cgroup), else the v1 memory hierarchy plus a cgroup of the v1 pids
//! hierarchy. Layout: `<root>/fleetcheck-<run>/<net>-<machine>` in each.

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
const V1_PIDS: &str = "/sys/fs/cgroup/pids";

/// The most tasks (processes and threads) a machine may have: a fork bomb inside stops there.
/// The host's whole pid space may be as small as 32768, shared by every machine of every
/// worker.
pub const PIDS_MAX: u32 = 512;

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

    /// Creates `<root>/fleetcheck-<run>` if it is missing.
    fn ensure_run_dir(&self, run: &str) -> io::Result<PathBuf> {
        let run_dir = self.run_dir(run);
        match fs::create_dir(&run_dir) {
            Ok(()) => {
                if let Cgroups::V2 { root } = self {
                    // Delegate the memory and pids controllers down to the machines.
                    let _ = fs::write(root.join("cgroup.subtree_control"), "+memory +pids");
                    fs::write(run_dir.join("cgroup.subtree_control"), "+memory +pids")?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        Ok(run_dir)
    }

    /// The run's cgroup `name` without a limit, made if missing: where processes of the run
    /// that are not machines of the netns backend (QEMU) live, so the sweep finds them all by
    /// cgroup, from before they exec.
    pub fn ensure_group(&self, run: &str, name: &str) -> io::Result<PathBuf> {
        let dir = self.ensure_run_dir(run)?.join(name);
        match fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(dir),
        }
    }

    /// Creates the machine's cgroup with its memory limit.
    pub fn create_machine(&self, run: &str, name: &str, memory_mb: u32) -> io::Result<PathBuf> {
        let dir = self.ensure_run_dir(run)?.join(name);
        fs::create_dir(&dir)?;
        let bytes = u64::from(memory_mb) * 1024 * 1024;
        let limit = match self {
            Cgroups::V1 { .. } => dir.join("memory.limit_in_bytes"),
            Cgroups::V2 { .. } => dir.join("memory.max"),
        };
        let mut limited = fs::write(&limit, bytes.to_string());
        if let (Ok(()), Cgroups::V2 { .. }) = (&limited, self) {
            limited = fs::write(dir.join("pids.max"), PIDS_MAX.to_string());
        }
        if let Err(e) = limited {
            let _ = fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(dir)
    }

    /// The machine's own cgroup of the v1 pids hierarchy, when that is where its task limit
    /// goes (on v2 its one cgroup has it).
    pub fn pids_v1(&self, run: &str, name: &str) -> Option<PathBuf> {
        match self {
            Cgroups::V1 { .. } if Path::new(V1_PIDS).join("cgroup.procs").exists() => Some(
                Path::new(V1_PIDS)
                    .join(format!("fleetcheck-{run}"))
                    .join(name),
            ),
            _ => None,
        }
    }

    /// The file holding a cgroup's memory limit (for tests and diagnostics).
    pub fn limit_file(&self, dir: &Path) -> PathBuf {
        match self {
            Cgroups::V1 { .. } => dir.join("memory.limit_in_bytes"),
            Cgroups::V2 { .. } => dir.join("memory.max"),
        }
    }
}

/// How many processes the out-of-memory killer has killed in memory cgroup `dir`: `oom_kill`
/// of `memory.events` (v2) or of `memory.oom_control` (v1, kernel 4.13 and later).
pub fn oom_kills(dir: &Path) -> Option<u64> {
    ["memory.events", "memory.oom_control"]
        .iter()
        .find_map(|f| {
            let text = fs::read_to_string(dir.join(f)).ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse().ok())
        })
}

/// Creates a machine's v1 pids cgroup `dir` (see [`Cgroups::pids_v1`]) with its limit. Its
/// parent, the run's, goes when its last machine goes ([`remove_pids_v1`]); what a killed
/// run left, its guardian or the sweep removes like its other cgroups.
pub fn create_pids_v1(dir: &Path) -> io::Result<()> {
    let parent = dir.parent().unwrap_or(dir);
    let mut made = Err(io::Error::other("not tried"));
    // A parent removed by another network's teardown in between is made again.
    for _ in 0..3 {
        fs::create_dir_all(parent)?;
        made = fs::create_dir(dir);
        if !matches!(&made, Err(e) if e.kind() == io::ErrorKind::NotFound) {
            break;
        }
    }
    made?;
    if let Err(e) = fs::write(dir.join("pids.max"), PIDS_MAX.to_string()) {
        let _ = fs::remove_dir(dir);
        return Err(e);
    }
    Ok(())
}

/// Removes a machine's v1 pids cgroup, and its run's parent if no machine is left in it.
pub fn remove_pids_v1(dir: &Path) -> io::Result<()> {
    remove(dir)?;
    if let Some(parent) = dir.parent() {
        let _ = fs::remove_dir(parent);
    }
    Ok(())
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

const V1_FREEZER: &str = "/sys/fs/cgroup/freezer";

/// Where machines get frozen ([`crate::Network::pause`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Freezer {
    /// The v1 freezer hierarchy: each machine has a cgroup of its own there,
    /// `<root>/fleetcheck-<run>/<net>-<machine>`, next to its memory cgroup.
    V1 { root: PathBuf },
    /// `cgroup.freeze` of the machine's v2 cgroup.
    V2,
    /// Neither: pausing fails, everything else works.
    Missing,
}

impl Freezer {
    /// The freezer that goes with the memory hierarchy in use.
    pub fn detect(cgroups: &Cgroups) -> Self {
        if let Cgroups::V2 { .. } = cgroups {
            return Freezer::V2;
        }
        let v1 = Path::new(V1_FREEZER);
        if v1.join("cgroup.procs").exists() {
            Freezer::V1 { root: v1.into() }
        } else {
            Freezer::Missing
        }
    }

    /// `<root>/fleetcheck-<run>` of the v1 freezer hierarchy.
    pub fn run_dir(&self, run: &str) -> Option<PathBuf> {
        match self {
            Freezer::V1 { root } => Some(root.join(format!("fleetcheck-{run}"))),
            _ => None,
        }
    }

    /// The freezer of the machine whose memory cgroup is `memory_dir` (not created yet).
    pub fn machine(&self, run: &str, memory_dir: &Path) -> Option<FreezerDir> {
        match self {
            Freezer::V1 { .. } => {
                let name = memory_dir.file_name()?;
                Some(FreezerDir::V1(self.run_dir(run)?.join(name)))
            }
            Freezer::V2 => Some(FreezerDir::V2(memory_dir.to_path_buf())),
            Freezer::Missing => None,
        }
    }
}

/// One machine's freezer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FreezerDir {
    /// A cgroup of the v1 freezer hierarchy (`freezer.state`).
    V1(PathBuf),
    /// The machine's v2 cgroup (`cgroup.freeze`, `cgroup.events`).
    V2(PathBuf),
}

impl FreezerDir {
    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        match self {
            FreezerDir::V1(p) | FreezerDir::V2(p) => p,
        }
    }

    /// The `cgroup.procs` an agent must join, if the freezer is a cgroup of its own.
    pub fn own_procs(&self) -> Option<PathBuf> {
        match self {
            FreezerDir::V1(p) => Some(p.join("cgroup.procs")),
            FreezerDir::V2(_) => None,
        }
    }

    /// Creates the v1 cgroup (and its run parent); nothing to do on v2.
    pub fn create(&self) -> io::Result<()> {
        let FreezerDir::V1(dir) = self else {
            return Ok(());
        };
        if let Some(parent) = dir.parent() {
            match fs::create_dir(parent) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        fs::create_dir(dir)
    }

    /// Removes the v1 cgroup (missing is fine); nothing to do on v2.
    pub fn remove(&self) -> io::Result<()> {
        match self {
            FreezerDir::V1(dir) => remove(dir),
            FreezerDir::V2(_) => Ok(()),
        }
    }

    /// Asks the kernel to freeze or thaw, without waiting.
    pub fn request(&self, frozen: bool) -> io::Result<()> {
        match self {
            FreezerDir::V1(dir) => fs::write(
                dir.join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            ),
            FreezerDir::V2(dir) => {
                fs::write(dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })
            }
        }
    }

    /// Whether every task has reached the asked state.
    pub fn reached(&self, frozen: bool) -> io::Result<bool> {
        match self {
            FreezerDir::V1(dir) => {
                let state = fs::read_to_string(dir.join("freezer.state"))?;
                Ok(state.trim() == if frozen { "FROZEN" } else { "THAWED" })
            }
            FreezerDir::V2(dir) => {
                let events = fs::read_to_string(dir.join("cgroup.events"))?;
                let want = if frozen { "frozen 1" } else { "frozen 0" };
                Ok(events.lines().any(|l| l.trim() == want))
            }
        }
    }

    /// Freezes or thaws and waits until the kernel reports it done, at most `limit`: polls the
    /// state file with a backoff from 50 µs to 5 ms (freezing a few tasks takes well under a
    /// millisecond). On v1 every poll asks again, which is how v1 retries a `FREEZING` cgroup.
    /// `Ok(false)`: not reached in time.
    pub fn set(&self, frozen: bool, limit: std::time::Duration) -> io::Result<bool> {
        let deadline = std::time::Instant::now() + limit;
        let mut pause = std::time::Duration::from_micros(50);
        loop {
            self.request(frozen)?;
            if self.reached(frozen)? {
                return Ok(true);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(std::time::Duration::from_millis(5));
        }
    }
}

/// Thaws whatever freezer cgroup `dir` is (v1 `freezer.state` or v2 `cgroup.freeze`), if it
/// is one: for the sweep, after killing, since a frozen task dies only once thawed on v1.
pub fn thaw_any(dir: &Path) {
    if dir.join("freezer.state").exists() {
        let _ = fs::write(dir.join("freezer.state"), "THAWED");
    }
    if dir.join("cgroup.freeze").exists() {
        let _ = fs::write(dir.join("cgroup.freeze"), "0");
    }
}
