//! The in-machine agent: PID 1 of a machine's pid namespace.
//!
//! Started by the `netns` backend as `<program> <args...> --root DIR --data DIR --bin DIR
//! --channel-fd N`, with fd `N` one end of a socketpair whose other end only the host process
//! holds, and no environment but the machine's. As PID 1 it makes `/` recursively private
//! before mounting anything, detaches every inherited `nsfs` mount (so it does not pin other
//! networks' namespaces), assembles the machine's own root file system and makes it `/`
//! ([`root`]), sets the hostname, drops the capabilities that reach past its namespaces, runs
//! the setup commands with `sh -c`, reports, then serves [`crate::protocol`] requests, one
//! thread each, and keeps the programs a spawn request starts ([`programs`]). A reaper thread reaps every child including orphans. It exits when the host end
//! closes.
//!
//! With `--guest` it is instead init of a VM ([`crate::qemu`]): see [`guest`].

mod exec;
pub mod guest;
mod link;
mod ping;
mod programs;
mod reaper;
pub(crate) mod root;

use std::ffi::CString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::protocol::{encode, AgentMsg, GuestInit, HostMsg, Request, Response};
use reaper::Reaper;

pub(crate) fn log(msg: &str) {
    eprintln!("fleetcheck-agent: {msg}");
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("static path without NUL")
}

fn mount(src: &str, target: &str, fstype: Option<&str>, flags: libc::c_ulong) -> io::Result<()> {
    mount_with(src, target, fstype, flags, None)
}

/// mount(2) with filesystem-specific `data`.
pub(crate) fn mount_with(
    src: &str,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let (src, target) = (cstr(src), cstr(target));
    let fstype = fstype.map(cstr);
    let data = data.map(cstr);
    // SAFETY: all pointers are valid NUL-terminated strings or null for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Prepares the machine's own mount namespace: with a `plan`, its own root file system
/// ([`root`]) and capabilities limited to its namespaces. Only ever called as PID 1, i.e. inside
/// namespaces created for this machine.
fn become_machine_init(plan: Option<&root::Plan>, hostname: &str) -> io::Result<()> {
    // First of all: stop mount events from propagating back to the host.
    mount("none", "/", None, libc::MS_REC | libc::MS_PRIVATE)?;
    root::detach_nsfs_mounts();
    // Re-probe unresolved neighbours every 10 ms instead of every second: a machine that
    // pinged a peer while it was off must reach it as soon as it boots, within a ping timeout
    // of tens of milliseconds. (The switch has no other latency, so this only shortens waits.)
    let retrans = |proc: &std::path::Path| {
        let file = proc.join("sys/net/ipv4/neigh/eth0/retrans_time_ms");
        if let Err(e) = std::fs::write(file, "10") {
            log(&format!(
                "cannot shorten the ARP retransmit time of eth0: {e}"
            ));
        }
    };
    match plan {
        Some(plan) => {
            root::enter(plan, retrans)?;
            // The last thing that needs CAP_SYS_ADMIN.
            set_hostname(hostname)?;
            root::drop_capabilities()?;
        }
        None => {
            mount(
                "proc",
                "/proc",
                Some("proc"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            )?;
            retrans(std::path::Path::new("/proc"));
            set_hostname(hostname)?;
        }
    }
    Ok(())
}

fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe a live byte slice.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn parse_fd(args: &[String]) -> Option<RawFd> {
    let pos = args.iter().position(|a| a == "--channel-fd")?;
    args.get(pos + 1)?.parse().ok()
}

/// Entry point of the agent (`fleetcheck-agent --channel-fd N`, or the CLI's hidden
/// `fleetcheck agent --channel-fd N`). `args` are the arguments after the program name.
pub fn main(args: Vec<String>) -> ExitCode {
    if args.iter().any(|a| a == "--guest") {
        return guest::main();
    }
    if let Some(pos) = args
        .iter()
        .position(|a| a == crate::host::volatile::SERVE_FLAG)
    {
        return crate::host::volatile::serve_main(&args[pos + 1..]);
    }
    if let Some(pos) = args
        .iter()
        .position(|a| a == crate::host::guard::GUARD_FLAG)
    {
        return crate::host::guard::main(args.get(pos + 1).map_or("", String::as_str));
    }
    let Some(fd) = parse_fd(&args) else {
        eprintln!(
            "usage: fleetcheck-agent --channel-fd N (started by the fleetcheck netns backend)"
        );
        return ExitCode::from(2);
    };
    // SAFETY: fcntl on the inherited descriptor; makes it close-on-exec so commands don't get it.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        log(&format!(
            "channel fd {fd} is unusable: {}",
            io::Error::last_os_error()
        ));
        return ExitCode::from(2);
    }
    // SAFETY: the backend passes us this descriptor to own; nothing else in this process uses it.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            log(&format!("channel fd {fd} is unusable: {e}"));
            return ExitCode::from(2);
        }
    };
    let plan = root::Plan::from_args(&args);
    match serve(Box::new(stream), Box::new(writer), false, plan.as_ref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(&format!("stopping: {e}"));
            ExitCode::FAILURE
        }
    }
}

type Writer = Arc<Mutex<Box<dyn Write + Send>>>;

fn send(writer: &Writer, msg: &AgentMsg) -> io::Result<()> {
    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
    w.write_all(&encode(msg))
}

/// How long a netns machine's agent waits for its `eth0` to carry packets ([`link`]).
const LINK_WAIT: Duration = Duration::from_secs(10);

/// Serves one channel: Init, setup, then requests until the host closes it. `guest`: inside a
/// VM, where Init carries the identity to take (see [`guest`]); else `plan` is the machine's
/// own root file system, if it has one.
fn serve(
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    guest: bool,
    plan: Option<&root::Plan>,
) -> io::Result<()> {
    let writer: Writer = Arc::new(Mutex::new(writer));
    if guest {
        send(&writer, &AgentMsg::Booted)?;
    }
    let mut lines = BufReader::new(reader).lines();
    let first = lines
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no init message"))??;
    let HostMsg::Init {
        hostname,
        setup,
        setup_timeout_ms,
        guest: guest_init,
    } = serde_json::from_str(&first).map_err(io::Error::other)?
    else {
        return Err(io::Error::other("first message is not Init"));
    };
    // SAFETY: getpid cannot fail.
    let pid1 = unsafe { libc::getpid() } == 1;
    if guest {
        let init: Box<GuestInit> =
            guest_init.ok_or_else(|| io::Error::other("a guest's Init carries no identity"))?;
        guest::take_identity(&init)?;
        set_hostname(&hostname)?;
    } else if pid1 {
        become_machine_init(plan, &hostname)?;
        // Ready means reachable: wait for the link-watch work to have made eth0 pass packets.
        let waiting = std::time::Instant::now();
        match link::wait_up("eth0", LINK_WAIT) {
            Ok(true) if waiting.elapsed() >= Duration::from_millis(5) => log(&format!(
                "eth0 came up after {} ms",
                waiting.elapsed().as_millis()
            )),
            Ok(true) => {}
            Ok(false) => log(&format!(
                "eth0 is not up after {LINK_WAIT:?}; going on (pings may go unanswered)"
            )),
            Err(e) => log(&format!("cannot watch eth0 come up: {e}")),
        }
    } else {
        log("not PID 1: leaving mounts and hostname alone");
    }
    log(&format!("machine {hostname} starting"));
    let reaper = Reaper::start();
    let programs = programs::Programs::default();
    for command in &setup {
        log(&format!("setup `{command}`"));
        let argv = ["sh".to_string(), "-c".to_string(), command.clone()];
        let result = exec::run(&reaper, &argv, Duration::from_millis(setup_timeout_ms));
        let failure = match result {
            Ok(out) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let stderr = String::from_utf8_lossy(&out.stderr);
                if !stdout.is_empty() {
                    eprint!("{stdout}");
                }
                if !stderr.is_empty() {
                    eprint!("{stderr}");
                }
                (!out.success()).then(|| (out.describe_status(), stderr.trim_end().to_string()))
            }
            Err(exec::RunError::Spawn(e)) => {
                Some(("spawn failure".into(), format!("cannot start sh: {e}")))
            }
            Err(exec::RunError::Internal(e)) => Some(("agent failure".into(), e.to_string())),
        };
        if let Some((status, stderr)) = failure {
            log(&format!("setup `{command}` failed with {status}"));
            send(
                &writer,
                &AgentMsg::SetupFailed {
                    command: command.clone(),
                    status,
                    stderr,
                },
            )?;
            return Ok(());
        }
    }
    log("ready");
    send(&writer, &AgentMsg::Ready)?;
    for line in lines {
        let line = line?;
        let msg: HostMsg = match serde_json::from_str(&line) {
            Ok(m) => m,
            Err(e) => {
                log(&format!("ignoring bad message: {e}"));
                continue;
            }
        };
        let (id, request) = match msg {
            HostMsg::Request { id, request } => (id, request),
            HostMsg::Input { id, line } => {
                programs.input(id, line);
                continue;
            }
            HostMsg::CloseInput { id } => {
                programs.close_input(id);
                continue;
            }
            HostMsg::End { id } => {
                programs.end(id);
                continue;
            }
            HostMsg::Init { .. } => {
                log("ignoring a second Init");
                continue;
            }
        };
        if let Request::Spawn {
            command,
            stderr_log,
        } = &request
        {
            let response = programs.start(&reaper, &writer, id, command, stderr_log);
            if let Err(e) = send(&writer, &AgentMsg::Response { id, response }) {
                log(&format!("cannot answer request {id}: {e}"));
            }
            continue;
        }
        let writer = writer.clone();
        let reaper = reaper.clone();
        std::thread::spawn(move || {
            let response = answer(&reaper, request);
            if let Err(e) = send(&writer, &AgentMsg::Response { id, response }) {
                log(&format!("cannot answer request {id}: {e}"));
            }
        });
    }
    log("host closed the channel, powering off");
    Ok(())
}

fn answer(reaper: &Reaper, request: Request) -> Response {
    match request {
        Request::Exec { argv, timeout_ms } => {
            if argv.is_empty() {
                return Response::Error {
                    message: "empty argv".into(),
                };
            }
            match exec::run(reaper, &argv, Duration::from_millis(timeout_ms)) {
                Ok(out) => Response::Exec(out),
                Err(exec::RunError::Spawn(e)) => Response::SpawnFailed {
                    message: e.to_string(),
                },
                Err(exec::RunError::Internal(e)) => Response::Error {
                    message: e.to_string(),
                },
            }
        }
        Request::Ping { dst, timeout_ms } => {
            match ping::ping(dst, Duration::from_millis(timeout_ms)) {
                Ok(answered) => Response::Ping(answered),
                Err(e) => Response::Error {
                    message: format!("ping socket: {e}"),
                },
            }
        }
        Request::Spawn { .. } => Response::Error {
            message: "a spawn is served by the channel's loop".into(),
        },
    }
}
