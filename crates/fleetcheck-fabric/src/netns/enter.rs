//! A process of the host's put inside a running machine: its namespaces (network, mount, uts,
//! ipc, pid) and cgroups (memory, freezer, pids), with the agent's environment, its standard
//! input and output piped to the caller. It dies with the machine (it is in the machine's pid
//! namespace), freezes with it, counts against its memory.
//!
//! `std::process::Command` forks; in the child, before `exec`, [`enter`] joins the machine's
//! namespaces and cgroups through descriptors opened beforehand, then forks once more: the pid
//! namespace holds only the children of the process that joins it. The middle process waits
//! for the program and exits with its status; the caller's `Child` is that middle process,
//! and the pipes are the program's.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// What joining machine `agent`'s namespaces and cgroups takes, opened before the fork.
struct Doors {
    namespaces: Vec<(File, libc::c_int)>,
    pid_ns: File,
    cgroups: Vec<File>,
}

fn open_doors(agent: i32, cgroups: &[PathBuf]) -> io::Result<Doors> {
    let ns = |name: &str| File::open(format!("/proc/{agent}/ns/{name}"));
    let namespaces = vec![
        (ns("net")?, libc::CLONE_NEWNET),
        (ns("uts")?, libc::CLONE_NEWUTS),
        (ns("ipc")?, libc::CLONE_NEWIPC),
        (ns("mnt")?, libc::CLONE_NEWNS),
    ];
    let cgroups = cgroups
        .iter()
        .map(|dir| {
            OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
        })
        .collect::<io::Result<_>>()?;
    Ok(Doors {
        namespaces,
        pid_ns: ns("pid")?,
        cgroups,
    })
}

/// The agent's environment (what the machine's processes see: `PATH`, `HOME`,
/// `FLEETCHECK_*`).
fn environment(agent: i32) -> io::Result<Vec<(String, String)>> {
    let raw = std::fs::read(format!("/proc/{agent}/environ"))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let text = std::str::from_utf8(kv).ok()?;
            let (k, v) = text.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}

/// The program the middle process waits for (set in the middle process only).
static PROGRAM: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The middle process's SIGTERM handler: the program and its process group die (it is
/// reaped by the waiting loop, the rest by the machine's init).
extern "C" fn forward_term(_: libc::c_int) {
    let pid = PROGRAM.load(std::sync::atomic::Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Ends a program [`spawn_inside`] started: SIGTERM to the process in between, which kills
/// the program and reaps it, then waits for that process. (A SIGKILL to it would orphan the
/// program to the host's init, and the machine's pid namespace could not end until that
/// init reaped it: a crash of the machine then took seconds.)
///
/// Never blocks for long: the middle process is in the machine's cgroups, so while the machine
/// is paused it is frozen and takes the signal only when the machine thaws (or dies). It is
/// reaped here if it ends within [`END_WAIT`], else by a thread of its own later.
pub fn end(mut child: Child) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: a signal to our own child, not yet reaped (so its pid is not reused).
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    let deadline = std::time::Instant::now() + END_WAIT;
    while std::time::Instant::now() < deadline {
        match child.try_wait() {
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(1)),
            _ => return,
        }
    }
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

/// How long [`end`] waits for a spawned program before it leaves the reaping to a thread.
const END_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// In the forked child: join everything, fork into the pid namespace; only the grandchild
/// returns (and goes on to `exec`). Async-signal-safe: system calls only.
fn enter(doors: &Doors) -> io::Result<()> {
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    for cgroup in &doors.cgroups {
        // Writing 0 moves the writer.
        // SAFETY: a write of one byte from a static buffer to an open descriptor.
        let n = unsafe { libc::write(cgroup.as_raw_fd(), b"0".as_ptr().cast(), 1) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for (fd, kind) in &doors.namespaces {
        // SAFETY: setns on a namespace descriptor opened for this.
        check(unsafe { libc::setns(fd.as_raw_fd(), *kind) })?;
    }
    // SAFETY: as above.
    check(unsafe { libc::setns(doors.pid_ns.as_raw_fd(), libc::CLONE_NEWPID) })?;
    // SIGTERM stays blocked until the middle process forwards it (below), so none is lost.
    // SAFETY: an all-zero sigset_t is a valid value, emptied next.
    let mut term: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigset operations on a local set.
    unsafe {
        libc::sigemptyset(&mut term);
        libc::sigaddset(&mut term, libc::SIGTERM);
    }
    // SAFETY: sigprocmask in a single-threaded child, with a valid set.
    check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &term, std::ptr::null_mut()) })?;
    // SAFETY: fork in a single-threaded child; the parent side only waits and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    // The program leads a process group of its own, so its end is also the end of what it
    // started (set on both sides of the fork: whichever runs first).
    // SAFETY: setpgid of ourselves or of our own child, not yet exec'd.
    unsafe { libc::setpgid(pid.max(0), pid.max(0)) };
    if pid == 0 {
        // SAFETY: the program starts with SIGTERM deliverable again.
        check(unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &term, std::ptr::null_mut()) })?;
    }
    if pid > 0 {
        // A SIGTERM to the middle process kills the program, which the middle process then
        // reaps: ended any other way (SIGKILL), it would leave the program to the host's
        // init, which the machine's end waits for (see [`end`]).
        PROGRAM.store(pid, std::sync::atomic::Ordering::SeqCst);
        // SAFETY: installing an async-signal-safe handler, then unblocking its signal.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward_term as *const () as usize;
            libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
            libc::sigprocmask(libc::SIG_UNBLOCK, &term, std::ptr::null_mut());
        }
        // The middle process keeps no descriptor: not the pipes (their ends are the
        // program's), nor the one through which `spawn` learns that `exec` happened.
        // SAFETY: closing descriptors this process no longer uses.
        if unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) } < 0 {
            for fd in 0..4096 {
                // SAFETY: as above.
                unsafe { libc::close(fd) };
            }
        }
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid || (r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
            {
                break;
            }
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        // SAFETY: leaving the middle process without running anything of the parent's.
        unsafe { libc::_exit(code) };
    }
    Ok(())
}

/// Starts `sh -c command` inside the machine whose agent is `agent` and whose cgroups are
/// `cgroups`, stdin and stdout piped, stderr appended to `log` (none: discarded).
pub fn spawn_inside(
    agent: i32,
    cgroups: &[PathBuf],
    command: &str,
    log: Option<&Path>,
) -> io::Result<Child> {
    let doors = open_doors(agent, cgroups)?;
    let env = environment(agent)?;
    let stderr = match log {
        Some(log) => Stdio::from(OpenOptions::new().create(true).append(true).open(log)?),
        None => Stdio::null(),
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", command])
        .env_clear()
        .envs(env)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr);
    // SAFETY: `enter` makes system calls only (see its docs).
    unsafe {
        cmd.pre_exec(move || enter(&doors));
    }
    cmd.spawn()
}
