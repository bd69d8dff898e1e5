//! The final replay of a case for a report: the scenario's system, wrapped so that just
//! before teardown it keeps what the run leaves behind — each machine's captured output and
//! the history of client operations — which teardown would remove.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use fleetcheck_engine::{execute, Abort, Case, Check, Model, System, Trace};
use fleetcheck_fabric::Network;

/// Most bytes kept of one log file (its end: where a failure shows).
const MAX_LOG: usize = 1 << 20;

/// One machine's captured output.
#[derive(Debug, Clone)]
pub struct MachineLogs {
    /// The machine id.
    pub machine: String,
    /// `(file name, contents)`: `agent.log` (the agent and the setup commands over all boots),
    /// then every `*.log` on the machine's disk (its services), then the files the system
    /// names ([`Inspect::log_files`]: a scenario file's `[services.<name>] logs`).
    pub files: Vec<(String, String)>,
}

/// One client operation of a history, in the report's terms.
#[derive(Debug, Clone)]
pub struct ClientOp {
    /// Its index in the history (`#n` in texts).
    pub index: usize,
    /// The client worker.
    pub worker: usize,
    /// What was asked, e.g. `put k1=7`.
    pub op: String,
    /// Invocation, ns since the history's origin.
    pub invoke: u64,
    /// Completion, ns since the origin; `None` when the outcome is unknown.
    pub complete: Option<u64>,
    /// `ok`, `fail` or `unknown`.
    pub outcome: &'static str,
    /// What an `ok` operation returned.
    pub result: Option<String>,
}

/// A recorded history of client operations.
#[derive(Debug, Clone)]
pub struct RecordedHistory {
    /// Time zero of the operations' timestamps.
    pub origin: Instant,
    /// The operations, by index.
    pub ops: Vec<ClientOp>,
    /// The history as text, one operation a line.
    pub text: String,
    /// The operation the linearizability checker could not place, if it found none to be
    /// linearizable, and the prefix it had placed before it.
    pub culprit: Option<usize>,
    /// The prefix placed before the culprit (kv); the transactions of the anomalies the
    /// claimed model forbids (sql).
    pub placed: Vec<usize>,
}

/// What a system leaves for a report.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// Each machine's output, in network order.
    pub machines: Vec<MachineLogs>,
    /// The client history, for scenarios that record one.
    pub history: Option<RecordedHistory>,
}

/// A [`System`] whose live instance a report can look into.
pub trait Inspect<M: Model>: System<M> {
    /// The machines of an instance, if it has any.
    fn network<'a>(&self, instance: &'a Self::Instance) -> Option<&'a dyn Network>;
    /// The history of client operations so far, if the scenario records one.
    fn history(&self, _instance: &Self::Instance) -> Option<RecordedHistory> {
        None
    }
    /// Files inside machine `node` to keep beside its `*.log` (paths inside the machine).
    fn log_files(&self, _instance: &Self::Instance, _node: &str) -> Vec<String> {
        Vec::new()
    }
}

/// Each machine's captured output: what the network says it printed, its services' logs,
/// and the files `extra` names for it (paths inside the machine).
pub fn machine_logs(net: &dyn Network, extra: &dyn Fn(&str) -> Vec<String>) -> Vec<MachineLogs> {
    net.spec()
        .machines
        .iter()
        .map(|m| {
            let mut files = vec![("agent.log".to_string(), tail(net.logs(&m.id)))];
            match net.data_dir_on_host(&m.id) {
                Some(disk) => files.extend(service_logs(&disk)),
                // A disk only the machine mounts (a VM's own file system): read from inside.
                None => files.extend(service_logs_inside(net, &m.id)),
            }
            for path in extra(&m.id) {
                let Some(name) = Path::new(&path).file_name() else {
                    continue;
                };
                let name = name.to_string_lossy().into_owned();
                if files.iter().any(|(n, _)| *n == name) {
                    continue;
                }
                if let Some(text) = file_of(net, &m.id, &path) {
                    files.push((name, tail(text)));
                }
            }
            MachineLogs {
                machine: m.id.clone(),
                files,
            }
        })
        .collect()
}

/// File `path` (inside machine `id`): read by a command inside it while it runs, else where
/// the host sees its data directory, if the file is in it; `None` if neither can.
fn file_of(net: &dyn Network, id: &str, path: &str) -> Option<String> {
    use fleetcheck_fabric::{ExecRequest, MachineStatus};
    if net.status(id) == Some(MachineStatus::Running) {
        if path.contains('\'') {
            return None;
        }
        let cmd = format!("tail -c {MAX_LOG} '{path}'");
        let timeout = std::time::Duration::from_secs(5);
        return net
            .exec(id, &ExecRequest::shell(cmd).with_timeout(timeout))
            .ok()
            .filter(|out| out.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let inside = net.data_dir(id)?;
    let rel = Path::new(path).strip_prefix(&inside).ok()?;
    let bytes = std::fs::read(net.data_dir_on_host(id)?.join(rel)).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The `*.log` files directly in machine `id`'s data directory, read by commands inside it
/// while it runs (nothing when it is off or the backend has no data directory).
fn service_logs_inside(net: &dyn Network, id: &str) -> Vec<(String, String)> {
    use fleetcheck_fabric::{ExecRequest, MachineStatus};
    if net.status(id) != Some(MachineStatus::Running) || net.data_dir(id).is_none() {
        return Vec::new();
    }
    let timeout = std::time::Duration::from_secs(5);
    let run = |cmd: String| {
        net.exec(id, &ExecRequest::shell(cmd).with_timeout(timeout))
            .ok()
            .filter(|out| out.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let list =
        "cd \"$FLEETCHECK_DATA\" && for f in *.log; do [ -f \"$f\" ] && echo \"$f\"; done; true";
    let mut names: Vec<String> = run(list.into())
        .unwrap_or_default()
        .lines()
        .filter(|n| !n.is_empty() && !n.contains('\''))
        .map(String::from)
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| {
            let text = run(format!("tail -c {MAX_LOG} \"$FLEETCHECK_DATA\"/'{name}'"))?;
            Some((name, tail(text)))
        })
        .collect()
}

/// The `*.log` files directly on a disk, by name.
fn service_logs(disk: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(disk) else {
        return Vec::new();
    };
    let mut logs: Vec<(String, String)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".log").then(|| {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                (name, tail(String::from_utf8_lossy(&bytes).into_owned()))
            })
        })
        .collect();
    logs.sort();
    logs
}

/// The last [`MAX_LOG`] bytes of a log, cut at a line start.
fn tail(text: String) -> String {
    if text.len() <= MAX_LOG {
        return text;
    }
    let mut start = text.len() - MAX_LOG;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = text[start..].find('\n').map_or(start, |n| start + n + 1);
    format!("[... {cut} bytes cut ...]\n{}", &text[cut..])
}

/// Wraps a system for one run: keeps a [`Capture`] of the instance just before teardown.
struct Capturing<'s, S> {
    inner: &'s S,
    captured: Mutex<Option<Capture>>,
}

impl<M: Model, S: Inspect<M>> System<M> for Capturing<'_, S> {
    type Instance = S::Instance;

    fn setup(&self, initial: &M::State) -> Result<S::Instance, Abort> {
        self.inner.setup(initial)
    }

    fn run(
        &self,
        instance: &mut S::Instance,
        state: &M::State,
        command: &M::Command,
    ) -> Result<M::Output, Abort> {
        self.inner.run(instance, state, command)
    }

    fn invariant(&self, instance: &mut S::Instance, state: &M::State) -> Result<Check, Abort> {
        self.inner.invariant(instance, state)
    }

    fn finish(&self, instance: &mut S::Instance, state: &M::State) -> Result<Check, Abort> {
        self.inner.finish(instance, state)
    }

    fn finishes(&self) -> bool {
        self.inner.finishes()
    }

    fn teardown(&self, instance: S::Instance) -> Result<(), Abort> {
        let capture = Capture {
            machines: self
                .inner
                .network(&instance)
                .map(|net| machine_logs(net, &|node| self.inner.log_files(&instance, node)))
                .unwrap_or_default(),
            history: self.inner.history(&instance),
        };
        *self.captured.lock().unwrap_or_else(|e| e.into_inner()) = Some(capture);
        self.inner.teardown(instance)
    }
}

/// Runs `case` once more, keeping its machines' output and its history.
pub fn final_replay<M: Model, S: Inspect<M>>(
    model: &M,
    system: &S,
    case: &Case<M>,
) -> (Trace<M>, Capture) {
    let capturing = Capturing {
        inner: system,
        captured: Mutex::new(None),
    };
    let trace = execute(model, &capturing, case);
    let capture = capturing
        .captured
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_default();
    (trace, capture)
}
