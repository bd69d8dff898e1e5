//! Run directories and the start-up sweep.
//!
//! Every backend instance is a *run* with a random id. Before creating anything it publishes
//! `/run/fleetcheck/<run>/owner` ("<pid> <start time>", written to a temporary directory that is
//! then renamed, so an owner file is never missing). Every resource of the run carries the id:
//! namespaces `/run/fleetcheck/<run>/netns/fleetcheck-<run>-*`, cgroups `<hierarchy>/fleetcheck-<run>/`, logs
//! and disk images in the run directory, loop devices attached to those images. [`sweep`]
//! removes every run whose owner is dead (pid gone, or reused by a process with another start
//! time), and nothing else.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cgroup::{self, Cgroups, Freezer};
use super::guard::Guardian;
use super::ns::{self, remove_named, LEGACY_NETNS_DIR};
use super::sys;
use super::AgentCommand;
use crate::error::{HostError, SweepError};

/// Where run directories live.
pub const RUN_ROOT: &str = "/run/fleetcheck";

/// What [`sweep`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Dead runs found (and removed).
    pub runs: Vec<String>,
    pub processes: usize,
    pub namespaces: usize,
    pub cgroups: usize,
    /// Loop devices detached (machine disks).
    pub loops: usize,
}

/// This process's claim on a run id; removing the directory and cgroup parent on drop. Its
/// guardian ([`super::guard`]) removes what is left once the process is gone.
#[derive(Debug)]
pub struct RunDir {
    pub run: String,
    pub path: PathBuf,
    pub cgroups: Cgroups,
    pub freezer: Freezer,
    guardian: Option<Guardian>,
}

impl RunDir {
    /// How every backend starts: finds the cgroup hierarchies, sweeps what dead runs left and
    /// claims a fresh run under [`RUN_ROOT`] (see [`RunDir::create`]).
    pub fn claim(agent: &AgentCommand) -> Result<Arc<Self>, HostError> {
        let cgroups = Cgroups::detect()?;
        sweep().map_err(HostError::Sweep)?;
        RunDir::create(Path::new(RUN_ROOT), cgroups, agent)
    }

    /// Claims a fresh run id under `root` and starts its guardian with `agent` (the program
    /// that is also the machines' agent).
    pub fn create(
        root: &Path,
        cgroups: Cgroups,
        agent: &AgentCommand,
    ) -> Result<Arc<Self>, HostError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| HostError::RunDir { path, source }
        };
        fs::create_dir_all(root).map_err(err(root))?;
        let pid = std::process::id() as i32;
        let start = sys::start_time(pid).unwrap_or(0);
        loop {
            let run = sys::random_hex(4);
            let tmp = root.join(format!(".{run}.tmp"));
            let path = root.join(&run);
            if path.exists() || tmp.exists() {
                continue;
            }
            // The guardian first: whenever this process dies from here on, what it made of
            // the run is removed.
            let guardian = Guardian::start(agent, &run).map_err(|source| HostError::Guardian {
                program: agent.program.clone(),
                source,
            })?;
            // Root only: logs, disk images and sockets of machines are nobody else's.
            std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700)
                .create(&tmp)
                .map_err(err(&tmp))?;
            fs::write(tmp.join("owner"), format!("{pid} {start}\n")).map_err(err(&tmp))?;
            match fs::rename(&tmp, &path) {
                Ok(()) => {
                    let freezer = Freezer::detect(&cgroups);
                    let dir = Arc::new(RunDir {
                        run,
                        path,
                        cgroups,
                        freezer,
                        guardian: Some(guardian),
                    });
                    super::live::register_run(&dir);
                    return Ok(dir);
                }
                Err(e) => {
                    let _ = fs::remove_dir_all(&tmp);
                    if path.exists() {
                        continue;
                    }
                    return Err(err(&path)(e));
                }
            }
        }
    }

    /// `scratch`: the run's directory for what its cases share (see
    /// [`crate::Backend::scratch_dir`]), made here (root's only) on first use.
    pub fn scratch(&self) -> io::Result<PathBuf> {
        let dir = self.path.join("scratch");
        std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
            .create(&dir)?;
        Ok(dir)
    }

    /// The pid of the run's guardian process.
    pub fn guardian_pid(&self) -> Option<u32> {
        self.guardian.as_ref().map(Guardian::pid)
    }

    /// Removes the run's cgroup parent and directory (idempotent).
    pub fn remove(&self) {
        // Groups of the run itself (QEMU's `vms`), then the run's parent.
        let run_cgroup = self.cgroups.run_dir(&self.run);
        for group in entries(&run_cgroup) {
            let dir = run_cgroup.join(group);
            if dir.is_dir() {
                let _ = cgroup::remove(&dir);
            }
        }
        let _ = cgroup::remove(&run_cgroup);
        if let Some(dir) = self.freezer.run_dir(&self.run) {
            let _ = cgroup::remove(&dir);
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The owner of run directory `dir`: pid and start time.
pub(crate) fn owner_of(dir: &Path) -> Option<(i32, u64)> {
    let owner = fs::read_to_string(dir.join("owner")).ok()?;
    let mut parts = owner.split_whitespace();
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn owner_alive(dir: &Path) -> bool {
    owner_of(dir).is_some_and(|(pid, start)| sys::is_alive(pid, start))
}

fn hierarchies() -> Vec<PathBuf> {
    [
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/freezer",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.is_dir())
    .collect()
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Run ids that have some resource on this host.
fn known_runs() -> Vec<String> {
    let mut runs = std::collections::BTreeSet::new();
    for name in entries(Path::new(RUN_ROOT)) {
        match name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) {
            // A run directory its process was still making: a run once it names its owner.
            Some(run) => {
                if owner_of(&Path::new(RUN_ROOT).join(&name)).is_some() {
                    runs.insert(run.to_string());
                }
            }
            None => {
                runs.insert(name);
            }
        }
    }
    for name in entries(Path::new(LEGACY_NETNS_DIR)) {
        if let Some(rest) = name.strip_prefix("fleetcheck-") {
            if let Some((run, _)) = rest.split_once('-') {
                runs.insert(run.to_string());
            }
        }
    }
    // A disk image's loop device can outlive the run directory (its file deleted).
    for device in super::disk::loops_under(Path::new(RUN_ROOT)) {
        if let Some(run) = super::disk::backing_file(&device)
            .as_deref()
            .and_then(super::disk::run_of_backing)
        {
            runs.insert(run);
        }
    }
    for h in hierarchies() {
        for name in entries(&h) {
            if let Some(run) = name.strip_prefix("fleetcheck-") {
                runs.insert(run.to_string());
            }
        }
    }
    runs.into_iter().collect()
}

/// Waits (event-driven, via pidfd) until `pid` has exited, at most until `deadline`.
fn wait_gone(pid: i32, deadline: Instant) {
    // SAFETY: plain syscall; the returned fd is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return;
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .as_millis() as i32;
    // SAFETY: one valid pollfd; then closing the fd we opened.
    unsafe {
        libc::poll(&mut pfd, 1, left);
        libc::close(fd);
    }
}

/// Whether anything of run `run` is still on this host.
pub(crate) fn has_resources(run: &str) -> bool {
    known_runs().iter().any(|r| r == run)
}

/// Removes everything of run `run` (which must be dead or torn down).
pub(crate) fn remove_run(run: &str, report: &mut SweepReport) -> Result<(), SweepError> {
    let fail = |what: String| {
        let run = run.to_string();
        move |source| SweepError { run, what, source }
    };
    let cg_dirs: Vec<PathBuf> = hierarchies()
        .into_iter()
        .map(|h| h.join(format!("fleetcheck-{run}")))
        .filter(|p| p.is_dir())
        .collect();
    // 0. VMs of the qemu backend: QEMU processes named by pidfiles `n<k>/m<i>.qemu.pid` (pid
    // and start time, so a reused pid is left alone). Killing QEMU also removes its tap.
    let deadline = Instant::now() + Duration::from_secs(5);
    let rdir = Path::new(RUN_ROOT).join(run);
    let mut vms = Vec::new();
    for net in entries(&rdir) {
        for file in entries(&rdir.join(&net)) {
            if !file.ends_with(".qemu.pid") {
                continue;
            }
            let text = fs::read_to_string(rdir.join(&net).join(&file)).unwrap_or_default();
            if let Some(pid) = crate::qemu::pidfile_alive(&text) {
                if sys::kill(pid, libc::SIGKILL).is_ok() {
                    report.processes += 1;
                    vms.push(pid);
                }
            }
        }
    }
    for pid in vms {
        wait_gone(pid, deadline);
    }
    // 1. Processes: every agent and its descendants sit in a machine cgroup. A paused machine's
    // tasks die only once thawed (v1 freezer), so: kill all, thaw all, then wait.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut killed = Vec::new();
    let machine_dirs: Vec<PathBuf> = cg_dirs
        .iter()
        .flat_map(|dir| entries(dir).into_iter().map(move |m| dir.join(m)))
        .filter(|p| p.is_dir())
        .collect();
    for mdir in &machine_dirs {
        for pid in cgroup::pids(mdir) {
            if sys::kill(pid, libc::SIGKILL).is_ok() && !killed.contains(&pid) {
                report.processes += 1;
                killed.push(pid);
            }
        }
    }
    for mdir in &machine_dirs {
        cgroup::thaw_any(mdir);
    }
    for pid in killed {
        wait_gone(pid, deadline);
    }
    // 2. Namespaces: the run's own, then (best effort: `ip netns` may have hidden them under a
    // mount of its own) any an older fleetcheck left in /run/netns.
    let own = ns::dir_of(&Path::new(RUN_ROOT).join(run));
    for name in entries(&own) {
        remove_named(&own.join(&name)).map_err(fail(format!("namespace {name}")))?;
        report.namespaces += 1;
    }
    let prefix = format!("fleetcheck-{run}-");
    for name in entries(Path::new(LEGACY_NETNS_DIR)) {
        if name.starts_with(&prefix)
            && remove_named(&Path::new(LEGACY_NETNS_DIR).join(&name)).is_ok()
        {
            report.namespaces += 1;
        }
    }
    // 3. Cgroups, leaves first.
    for dir in &cg_dirs {
        for m in entries(dir) {
            let mdir = dir.join(&m);
            if mdir.is_dir() {
                cgroup::remove(&mdir).map_err(fail(format!("cgroup {}", mdir.display())))?;
                report.cgroups += 1;
            }
        }
        cgroup::remove(dir).map_err(fail(format!("cgroup {}", dir.display())))?;
        report.cgroups += 1;
    }
    // 4. Loop devices of machine disks. Their mounts lived only in namespaces of the dead
    // process and of its (now killed) agents, so they are unused or about to be.
    let rdir = Path::new(RUN_ROOT).join(run);
    for device in super::disk::loops_under(&rdir) {
        let Some(image) = super::disk::backing_file(&device) else {
            continue;
        };
        let image = PathBuf::from(image.to_string_lossy().trim_end_matches(" (deleted)"));
        match super::disk::detach(&device, &image) {
            Ok(()) => report.loops += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) => return Err(fail(format!("loop device {}", device.display()))(e)),
        }
    }
    // 5. The run directory (and one still being made when its process died).
    let _ = fs::remove_dir_all(Path::new(RUN_ROOT).join(format!(".{run}.tmp")));
    match fs::remove_dir_all(&rdir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(fail(format!("directory {}", rdir.display()))(e))
        }
        _ => {}
    }
    Ok(())
}

/// Removes every resource of every run whose owner process is dead and whose guardian is gone
/// too (a live guardian is removing its run). Never touches live runs
/// or anything not named `fleetcheck-<run>`.
pub fn sweep() -> Result<SweepReport, SweepError> {
    let mut report = SweepReport::default();
    let mut first_err = None;
    for run in known_runs() {
        if run.is_empty() || run.contains(['/', '.']) {
            continue;
        }
        let root = Path::new(RUN_ROOT);
        if owner_alive(&root.join(&run)) || owner_alive(&root.join(format!(".{run}.tmp"))) {
            continue;
        }
        // A killed run whose guardian lives is being removed by it (its VMs may take a moment
        // to die): two removers would only trip over each other.
        if super::guard::find(&run).is_some() {
            continue;
        }
        report.runs.push(run.clone());
        if let Err(e) = remove_run(&run, &mut report) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}
