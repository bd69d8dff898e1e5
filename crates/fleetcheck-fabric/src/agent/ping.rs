//! ICMP echo from inside the machine, over a raw socket (ping sockets are disabled by default
//! in fresh network namespaces: `net.ipv4.ping_group_range` is `1 0`).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Time between echo requests.
const INTERVAL: Duration = Duration::from_millis(10);
/// At most this many echo requests per ping.
const MAX_REQUESTS: u16 = 1000;

static NEXT_IDENT: AtomicU16 = AtomicU16::new(0x4643);

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(ident: u16, seq: u16) -> [u8; 24] {
    let mut pkt = [0u8; 24];
    pkt[0] = 8; // echo request
    pkt[4..6].copy_from_slice(&ident.to_be_bytes());
    pkt[6..8].copy_from_slice(&seq.to_be_bytes());
    pkt[8..24].copy_from_slice(b"fleetcheck-ping!");
    let sum = checksum(&pkt);
    pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    pkt
}

/// Pings `dst` until a reply arrives (`true`) or `timeout` passes (`false`).
pub fn ping(dst: Ipv4Addr, timeout: Duration) -> io::Result<bool> {
    // SAFETY: plain syscall; the fd returned is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and ours.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let ident = NEXT_IDENT.fetch_add(1, Ordering::Relaxed);
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    let deadline = Instant::now() + timeout;
    let mut next_send = Instant::now();
    let mut seq: u16 = 0;
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            // A reply that arrived in time counts even if this thread woke late to read it
            // (a loaded host): look once more before saying there was none.
            return Ok(replied(&sock, ident, dst, &mut buf));
        }
        if now >= next_send && seq < MAX_REQUESTS {
            let pkt = echo_request(ident, seq);
            // SAFETY: sends from a live buffer to a live sockaddr_in of the given size.
            unsafe {
                libc::sendto(
                    sock.as_raw_fd(),
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            // Send errors (no route, no neighbour yet) just mean no reply: retry until the deadline.
            seq += 1;
            next_send += INTERVAL;
        }
        let until = if seq < MAX_REQUESTS {
            next_send.min(deadline)
        } else {
            deadline
        };
        let wait_ms = until
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, wait_ms.max(1)) };
        if rc > 0 && replied(&sock, ident, dst, &mut buf) {
            return Ok(true);
        }
    }
}

/// Reads every packet waiting on `sock` (without blocking): whether one is the echo reply
/// from `dst` to `ident`.
fn replied(sock: &OwnedFd, ident: u16, dst: Ipv4Addr, buf: &mut [u8]) -> bool {
    loop {
        // SAFETY: receives into a live buffer of the given length.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            return false;
        }
        let pkt = &buf[..n as usize];
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        if pkt.len() < ihl + 8 {
            continue;
        }
        let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
        let icmp = &pkt[ihl..];
        if icmp[0] == 0 && icmp[4..6] == ident.to_be_bytes() && src == dst {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_packet_with_checksum_is_zero() {
        let pkt = echo_request(7, 3);
        assert_eq!(checksum(&pkt), 0);
    }
}
