//! Running one command inside the machine: pipes, deadline, process-group kill.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::reaper::{Exit, Reaper};
use crate::spec::ExecOutput;

/// Output beyond this many bytes per stream is dropped.
const MAX_OUTPUT: usize = 16 << 20;

/// Why a command did not run.
#[derive(Debug)]
pub enum RunError {
    /// The program could not be started.
    Spawn(io::Error),
    /// The agent itself failed (pipes, eventfd).
    Internal(io::Error),
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd returned is owned by us.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we hold.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: same descriptor.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads what is available; returns false at EOF.
fn drain(src: &mut impl Read, dst: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match src.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(dst.len());
                dst.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Runs `argv` (its own process group, stdin from /dev/null) and collects its output. After
/// `timeout` the whole process group is killed. Output still buffered when the command exits is
/// collected; background processes that keep the pipes open are not waited for.
pub fn run(reaper: &Reaper, argv: &[String], timeout: Duration) -> Result<ExecOutput, RunError> {
    let deadline = Instant::now() + timeout;
    let notify = Arc::new(eventfd().map_err(RunError::Internal)?);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let (pid, mut child) = reaper
        .spawn(Some(notify.clone()), || {
            let child = cmd.spawn()?;
            Ok((child.id() as i32, child))
        })
        .map_err(RunError::Spawn)?;
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    set_nonblocking(out.as_raw_fd()).map_err(RunError::Internal)?;
    set_nonblocking(err.as_raw_fd()).map_err(RunError::Internal)?;

    let mut output = ExecOutput::default();
    let (mut out_open, mut err_open) = (true, true);
    let mut killed = false;
    let exit = loop {
        if let Some(exit) = reaper.try_take(pid) {
            break exit;
        }
        let now = Instant::now();
        if now >= deadline && !killed {
            // SAFETY: kill(2) on the child's process group, which we created.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            killed = true;
            output.timed_out = true;
        }
        let wait_ms = if killed {
            -1
        } else {
            (deadline - now).as_millis().min(i32::MAX as u128) as i32 + 1
        };
        let mut fds = [
            libc::pollfd {
                fd: notify.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if out_open { out.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if err_open { err.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of 3 pollfds for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 3, wait_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(RunError::Internal(e));
            }
            continue;
        }
        if fds[1].revents != 0 {
            out_open = drain(&mut out, &mut output.stdout);
        }
        if fds[2].revents != 0 {
            err_open = drain(&mut err, &mut output.stderr);
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 8];
            // SAFETY: reads 8 bytes into a live buffer from our eventfd.
            unsafe { libc::read(notify.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
        }
    };
    if out_open {
        drain(&mut out, &mut output.stdout);
    }
    if err_open {
        drain(&mut err, &mut output.stderr);
    }
    match exit {
        Exit::Code(c) => output.status = Some(c),
        Exit::Signal(s) => output.signal = Some(s),
    }
    Ok(output)
}
