//! Waiting until the machine's link really carries packets.
//!
//! When both ends of a veth pair are up the kernel turns the carrier on at once, but it only
//! attaches the interface's queueing discipline, sets its operational state and lets the
//! bridge forward on the switch port later, in the link-watch work (a kernel worker thread).
//! Until then every packet is dropped. On an idle host that takes microseconds; on a loaded
//! one the worker may wait tens or hundreds of milliseconds for a CPU, and a machine that
//! said it was ready would not answer its first pings — a false counterexample. So the agent
//! reports ready only once `eth0`'s operational state is `up`, woken by the kernel's link
//! notifications (rtnetlink group `RTMGRP_LINK`), not by polling.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

fn operstate(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/operstate"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// A netlink socket subscribed to link notifications of this network namespace.
fn link_events() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_groups = libc::RTMGRP_LINK as u32;
    // SAFETY: a valid sockaddr_nl and its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Waits until interface `name` is operationally up, at most `limit`. `Ok(false)`: it was not
/// by then (or has no such state to read, e.g. no sysfs), which the caller reports.
pub fn wait_up(name: &str, limit: Duration) -> io::Result<bool> {
    // Subscribe first, then look: a change between the two still wakes the wait.
    let events = link_events()?;
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 8192];
    loop {
        match operstate(name).as_deref() {
            Some("up") => return Ok(true),
            None => return Ok(false),
            Some(_) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut pfd = libc::pollfd {
            fd: events.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        // Drain what came; its content does not matter, the state file says it all.
        loop {
            // SAFETY: reads at most buf.len() bytes into buf.
            let n = unsafe {
                libc::recv(
                    events.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                break;
            }
        }
    }
}
