//! Starting the agent as PID 1 of new pid, mount, uts and ipc namespaces, inside the machine's
//! network namespace and cgroups, then in a cgroup namespace of its own (rooted at those
//! cgroups, so nothing in the machine can name, let alone join, a cgroup outside them), with
//! only the environment it is given.
//!
//! Everything is prepared before `clone`; between `clone` and `execve` the child only makes
//! async-signal-safe syscalls (setns, unshare, write, dup2, fcntl, sigprocmask, execve, _exit). An exec
//! failure travels back over a close-on-exec pipe, as std's `Command` does it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use crate::host::sys::check;
use crate::host::AgentCommand;

/// The fd number the agent finds its channel on.
pub const CHANNEL_FD: RawFd = 3;

const STACK_SIZE: usize = 256 * 1024;

struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    netns: RawFd,
    /// The machine's disk namespace to copy the mount namespace from, or -1.
    mount_ns: RawFd,
    cgroup_procs: RawFd,
    /// `cgroup.procs` of the machine's own freezer cgroup, or -1.
    freezer_procs: RawFd,
    /// `cgroup.procs` of the machine's own pids cgroup (cgroup v1), or -1.
    pids_procs: RawFd,
    stdin: RawFd,
    log: RawFd,
    channel: RawFd,
    error_pipe: RawFd,
    empty_mask: libc::sigset_t,
}

/// Runs in the cloned child. Only async-signal-safe calls.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the ChildArgs in the parent's (copied) memory, alive until exec.
    let a = unsafe { &*(arg as *const ChildArgs) };
    let fail = |step: i32| -> ! {
        // SAFETY: errno location is thread-local and valid; write/_exit are async-signal-safe.
        unsafe {
            let err = *libc::__errno_location();
            let msg = [step, err];
            libc::write(a.error_pipe, msg.as_ptr().cast(), 8);
            libc::_exit(127)
        }
    };
    // SAFETY: plain syscalls on descriptors prepared by the parent.
    unsafe {
        if libc::setns(a.netns, libc::CLONE_NEWNET) < 0 {
            fail(1);
        }
        // Enter the disk namespace, then leave it for a copy of our own: the machine sees its
        // file system, and what the agent mounts stays in this boot's namespace.
        if a.mount_ns >= 0
            && (libc::setns(a.mount_ns, libc::CLONE_NEWNS) < 0
                || libc::unshare(libc::CLONE_NEWNS) < 0)
        {
            fail(7);
        }
        if libc::write(a.cgroup_procs, b"0".as_ptr().cast(), 1) < 0 {
            fail(2);
        }
        if a.freezer_procs >= 0 && libc::write(a.freezer_procs, b"0".as_ptr().cast(), 1) < 0 {
            fail(6);
        }
        if a.pids_procs >= 0 && libc::write(a.pids_procs, b"0".as_ptr().cast(), 1) < 0 {
            fail(8);
        }
        // Only now, in all of its cgroups: they become the roots of its cgroup namespace.
        if libc::unshare(libc::CLONE_NEWCGROUP) < 0 {
            fail(9);
        }
        if libc::dup2(a.stdin, 0) < 0 || libc::dup2(a.log, 1) < 0 || libc::dup2(a.log, 2) < 0 {
            fail(3);
        }
        if a.channel == CHANNEL_FD {
            if libc::fcntl(CHANNEL_FD, libc::F_SETFD, 0) < 0 {
                fail(4);
            }
        } else if libc::dup2(a.channel, CHANNEL_FD) < 0 {
            fail(4);
        }
        libc::sigprocmask(libc::SIG_SETMASK, &a.empty_mask, std::ptr::null_mut());
        libc::execve(a.program, a.argv, a.envp);
        fail(5)
    }
}

fn step_name(step: i32) -> &'static str {
    match step {
        1 => "join the machine's network namespace",
        2 => "join the machine's cgroup",
        3 => "redirect standard streams",
        4 => "pass the channel",
        6 => "join the machine's freezer cgroup",
        7 => "enter the machine's disk namespace",
        8 => "join the machine's pids cgroup",
        9 => "make the machine's cgroup namespace",
        _ => "execute the agent",
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(io::Error::other)
}

/// Descriptors the agent starts with.
pub struct AgentFds<'a> {
    pub netns: &'a OwnedFd,
    pub mount_ns: Option<&'a OwnedFd>,
    pub cgroup_procs: &'a OwnedFd,
    pub freezer_procs: Option<&'a OwnedFd>,
    pub pids_procs: Option<&'a OwnedFd>,
    pub stdin: &'a OwnedFd,
    pub log: &'a OwnedFd,
    pub channel: &'a OwnedFd,
}

/// Clones the agent with arguments `extra` (after the command's own) and exactly the
/// environment `env` (nothing of the host's); returns its pid (in the host's pid namespace)
/// once it has exec'd.
pub fn spawn_agent(
    cmd: &AgentCommand,
    extra: &[String],
    fds: AgentFds<'_>,
    env: &[(String, String)],
) -> io::Result<i32> {
    let program = cstring(cmd.program.as_os_str().as_bytes())?;
    let mut args: Vec<CString> = vec![program.clone()];
    for a in cmd.args.iter().chain(extra) {
        args.push(cstring(a.as_bytes())?);
    }
    args.push(cstring(b"--channel-fd")?);
    args.push(cstring(CHANNEL_FD.to_string().as_bytes())?);
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let env: Vec<CString> = env
        .iter()
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .collect();
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());

    let mut pipe = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    check(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds are fresh and ours.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };

    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut empty_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a sigset_t.
    unsafe { libc::sigemptyset(&mut empty_mask) };
    let mut args_block = ChildArgs {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        netns: fds.netns.as_raw_fd(),
        mount_ns: fds.mount_ns.map_or(-1, |fd| fd.as_raw_fd()),
        cgroup_procs: fds.cgroup_procs.as_raw_fd(),
        freezer_procs: fds.freezer_procs.map_or(-1, |fd| fd.as_raw_fd()),
        pids_procs: fds.pids_procs.map_or(-1, |fd| fd.as_raw_fd()),
        stdin: fds.stdin.as_raw_fd(),
        log: fds.log.as_raw_fd(),
        channel: fds.channel.as_raw_fd(),
        error_pipe: write_end.as_raw_fd(),
        empty_mask,
    };
    let mut stack = vec![0u8; STACK_SIZE];
    // SAFETY: the stack grows down from its (16-byte aligned) end, inside the allocation.
    let stack_top = unsafe { stack.as_mut_ptr().add(STACK_SIZE) } as usize & !15;
    let flags = libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::SIGCHLD;
    // SAFETY: without CLONE_VM the child runs `child_main` on its own copy of our memory, where
    // `stack` and `args_block` stay valid until it execs or exits.
    let pid = check(unsafe {
        libc::clone(
            child_main,
            stack_top as *mut libc::c_void,
            flags,
            (&mut args_block as *mut ChildArgs).cast(),
        )
    })?;
    drop(write_end);
    let mut msg = [0i32; 2];
    let n = loop {
        // SAFETY: reads at most 8 bytes into a live buffer.
        let n = unsafe { libc::read(read_end.as_raw_fd(), msg.as_mut_ptr().cast(), 8) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n == 0 {
        return Ok(pid);
    }
    let _ = crate::host::sys::reap(pid);
    let err = io::Error::from_raw_os_error(msg[1]);
    Err(io::Error::new(
        err.kind(),
        format!("agent child failed to {}: {err}", step_name(msg[0])),
    ))
}
