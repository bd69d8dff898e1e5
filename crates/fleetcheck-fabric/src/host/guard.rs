//! The guardian: a small process per run that removes what the run made once the run's process
//! is gone, however it went — an exit that skipped clean-up, a panic that aborted, `kill -9`.
//!
//! [`Guardian::start`] spawns the agent program as `<agent> --guard <run>` with the read end of a
//! pipe as its standard input; only the run's process holds the write end (close-on-exec, so no
//! child inherits it). The guardian leaves the run's session and process group (a Ctrl-C or a
//! `kill` of the group does not reach it), ignores SIGINT, SIGTERM and SIGHUP, and blocks
//! reading. The kernel closes the write end when the run's process dies, or [`super::sweep::RunDir`]
//! closes it after removing the run; either way the guardian then removes whatever of the run
//! is still there ([`super::sweep::remove_run`]: processes of its cgroups, frozen ones thawed,
//! QEMU, namespaces, cgroups, loop devices, the run directory) and exits. Nothing of a run keeps
//! running after its process dies, and what would have waited for the next sweep is gone
//! within a fraction of a second. If the guardian itself is killed too, the next sweep does
//! the same work.

use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};

use super::sweep::{owner_of, remove_run, SweepReport, RUN_ROOT};
use super::sys::check;
use super::AgentCommand;

/// The flag that makes the agent program a guardian.
pub const GUARD_FLAG: &str = "--guard";

/// The run's end of its guardian; dropping it lets the guardian finish.
#[derive(Debug)]
pub struct Guardian {
    /// The write end of the pipe the guardian reads.
    pipe: Option<OwnedFd>,
    child: Child,
}

impl Guardian {
    /// Starts the guardian of run `run`.
    pub fn start(agent: &AgentCommand, run: &str) -> io::Result<Guardian> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fresh descriptors into the array.
        check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: both descriptors are fresh and owned here.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut cmd = Command::new(&agent.program);
        cmd.args(&agent.args)
            .arg(GUARD_FLAG)
            .arg(run)
            .stdin(Stdio::from(read_end))
            .stdout(Stdio::null());
        // SAFETY: setsid is async-signal-safe and only affects the child.
        unsafe {
            cmd.pre_exec(|| check(libc::setsid()).map(drop));
        }
        let child = cmd.spawn()?;
        Ok(Guardian {
            pipe: Some(write_end),
            child,
        })
    }

    /// The guardian's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the guardian finish (it removes what is left of the run, usually nothing) and
    /// reaps it.
    pub fn finish(&mut self) {
        self.pipe.take();
        let _ = self.child.wait();
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The pid of the guardian of run `run` (a process whose arguments hold `--guard <run>`), if
/// one runs: for diagnostics and tests of what a killed run leaves.
pub fn find(run: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.windows(2)
            .any(|w| w[0] == GUARD_FLAG.as_bytes() && w[1] == run.as_bytes())
            .then_some(pid)
    })
}

/// The guardian's main (`<agent> --guard <run>`): waits for the end of standard input, then
/// removes what is left of the run.
pub fn main(run: &str) -> ExitCode {
    if run.is_empty() || run.contains(['/', '.']) {
        eprintln!("fleetcheck-guard: not a run id: {run:?}");
        return ExitCode::from(2);
    }
    // The run's process, recorded before it can die and leave us to init.
    // SAFETY: getppid cannot fail.
    let owner = unsafe { libc::getppid() };
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        // SAFETY: setting a signal's disposition to ignore is always sound.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let mut stdin = io::stdin().lock();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    // A run id another process claimed first (the owner's claim failed and it tried another
    // id) is not ours to remove.
    let root = Path::new(RUN_ROOT);
    let claimed = [root.join(run), root.join(format!(".{run}.tmp"))]
        .iter()
        .filter_map(|dir| owner_of(dir))
        .any(|(pid, _)| pid != owner);
    if claimed || !super::sweep::has_resources(run) {
        return ExitCode::SUCCESS;
    }
    let mut report = SweepReport::default();
    match remove_run(run, &mut report) {
        Ok(()) => {
            eprintln!(
                "fleetcheck: run {run} ended without removing what it made; removed {} process(es), {} namespace(s), {} cgroup(s), {} loop device(s)",
                report.processes, report.namespaces, report.cgroups, report.loops
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("fleetcheck: run {run} ended without removing what it made, and removing it failed ({msg}); `fleetcheck sweep` tries again");
            ExitCode::from(1)
        }
    }
}
