//! What the stores that run as services on machines share: their disk, starting them, and
//! readiness probes.

use std::path::PathBuf;
use std::time::Duration;

use fleetcheck_engine::history::Outcome;
use fleetcheck_engine::Abort;
use fleetcheck_fabric::{ExecError, ExecOutput, ExecRequest, Network};

/// `sh -c cmd` with a deadline.
pub fn shell(cmd: String, timeout: Duration) -> ExecRequest {
    ExecRequest::shell(cmd).with_timeout(timeout)
}

/// The disk of `node`, where `service` keeps its data, configuration and log.
pub fn disk(net: &dyn Network, backend: &str, node: &str, service: &str) -> Result<PathBuf, Abort> {
    net.data_dir(node).ok_or_else(|| {
        Abort::new(format!(
            "the {backend} backend gives machines no disk; {service} needs the netns backend"
        ))
    })
}

/// Runs the shell command that starts `service` in the background on `node`.
pub fn start(net: &dyn Network, node: &str, service: &str, cmd: String) -> Result<(), Abort> {
    let out = net.exec(node, &shell(cmd, Duration::from_secs(5)))?;
    if out.success() {
        Ok(())
    } else {
        Err(Abort::new(format!(
            "cannot start {service} on {node}: {}",
            out.stderr_str().trim()
        )))
    }
}

/// A readiness probe: the shell `condition` is retried on `node` every 10 ms until it holds
/// (`true`) or `within` passes (`false`). The condition is the signal; the pause only spaces
/// the attempts.
pub fn probe(net: &dyn Network, node: &str, condition: &str, within: Duration) -> bool {
    let tries = within.as_millis() / 10;
    let cmd = format!(
        "i=0; while [ $i -lt {tries} ]; do {{ {condition}; }} >/dev/null 2>&1 && exit 0; \
         i=$((i+1)); sleep 0.01; done; exit 1"
    );
    net.exec(node, &shell(cmd, within + Duration::from_secs(5)))
        .is_ok_and(|o| o.success())
}

/// The last `n` lines of `file` in `node`'s data directory, newest first: read on the host
/// where it sees the directory, else by a command inside the machine (a VM's own file system);
/// empty if neither works.
pub fn last_lines(net: &dyn Network, node: &str, file: &str, n: usize) -> Vec<String> {
    let text = match net.data_dir_on_host(node) {
        Some(d) => std::fs::read_to_string(d.join(file)).unwrap_or_default(),
        None => net
            .exec(
                node,
                &shell(
                    format!("tail -n {n} \"$FLEETCHECK_DATA/{file}\""),
                    Duration::from_secs(5),
                ),
            )
            .map(|out| out.stdout_str().to_string())
            .unwrap_or_default(),
    };
    text.lines().rev().take(n).map(String::from).collect()
}

/// The outcome of a client operation that got no answer: a read that failed changed nothing
/// (a failure); a write may have taken effect (unknown).
pub fn unsure<R>(read: bool) -> Outcome<R> {
    if read {
        Outcome::Fail
    } else {
        Outcome::Unknown
    }
}

/// Runs a client operation's shell command `cmd` on `node` within `deadline`: its output when
/// it ran to the end, else the operation's outcome — a failure when it could not start (the
/// machine is off), [`unsure`] when it did not finish.
pub fn client_command<R>(
    net: &dyn Network,
    node: &str,
    cmd: String,
    deadline: Duration,
    read: bool,
) -> Result<ExecOutput, Outcome<R>> {
    match net.exec(node, &shell(cmd, deadline)) {
        Ok(out) if out.timed_out => Err(unsure(read)),
        Ok(out) => Ok(out),
        Err(ExecError::WrongStatus { .. } | ExecError::UnknownMachine { .. }) => Err(Outcome::Fail),
        Err(_) => Err(unsure(read)),
    }
}
