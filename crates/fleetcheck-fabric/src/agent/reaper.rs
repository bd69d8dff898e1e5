//! The agent is PID 1: it must reap every child, including orphans re-parented to it. One thread
//! waits for any exited child; statuses of children someone registered are handed to them.
//!
//! Race with a child that exits before it is registered: spawning happens under the reaper's
//! lock ([`Reaper::spawn`]), and the reaper only peeks at an exited child (`WNOWAIT`) before
//! taking that lock, so by the time it reaps, the pid is registered (or the spawn failed and the
//! spawning code reaped the child itself).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

#[derive(Default)]
struct State {
    /// Pids someone will wait for, with an optional eventfd to poke when they exit.
    watched: HashMap<i32, Option<Arc<OwnedFd>>>,
    exited: HashMap<i32, Exit>,
    /// Bumped on every spawn, so the reaper notices new children after `ECHILD`.
    generation: u64,
    orphans_reaped: u64,
}

/// Shared reaper handle.
#[derive(Clone, Default)]
pub struct Reaper {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl Reaper {
    /// Starts the reaper thread.
    pub fn start() -> Self {
        let reaper = Reaper::default();
        let r = reaper.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || r.run())
            .expect("spawning the reaper thread");
        reaper
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns a child with `spawn` under the lock and registers its pid; `notify` (an eventfd)
    /// gets written when it exits.
    pub fn spawn<T>(
        &self,
        notify: Option<Arc<OwnedFd>>,
        spawn: impl FnOnce() -> io::Result<(i32, T)>,
    ) -> io::Result<(i32, T)> {
        let mut state = self.lock();
        let (pid, value) = spawn()?;
        state.watched.insert(pid, notify);
        state.generation += 1;
        self.inner.1.notify_all();
        Ok((pid, value))
    }

    /// The exit of registered child `pid`, if it has exited.
    pub fn try_take(&self, pid: i32) -> Option<Exit> {
        self.lock().exited.remove(&pid)
    }

    fn run(&self) {
        loop {
            let generation = self.lock().generation;
            // SAFETY: siginfo_t is plain data; zeroed is a valid value.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid writes into `info`, which lives for the call.
            let rc =
                unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                // ECHILD: no children; wait until someone spawns one.
                let mut state = self.lock();
                while state.generation == generation {
                    state = self.inner.1.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                continue;
            }
            // SAFETY: waitid succeeded with WEXITED, so si_pid is set.
            let pid = unsafe { info.si_pid() };
            let mut state = self.lock();
            let mut status = 0;
            // SAFETY: plain syscall writing into `status`.
            let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if reaped != pid {
                // Reaped by a failed spawn's own cleanup meanwhile.
                continue;
            }
            let exit = if libc::WIFSIGNALED(status) {
                Exit::Signal(libc::WTERMSIG(status))
            } else {
                Exit::Code(libc::WEXITSTATUS(status))
            };
            match state.watched.remove(&pid) {
                Some(notify) => {
                    state.exited.insert(pid, exit);
                    if let Some(fd) = notify {
                        let one: u64 = 1;
                        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
                        unsafe {
                            libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8);
                        }
                    }
                    self.inner.1.notify_all();
                }
                None => state.orphans_reaped += 1,
            }
        }
    }
}
