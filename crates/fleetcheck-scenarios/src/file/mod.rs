//! Scenario files: a system of your own under test from one TOML file, without Rust.
//!
//! A scenario file is a configuration file (`[network]`, `[machine]`, `[services]`, `[kv]`, …)
//! with a `[scenario]` section that names it and its workload, services that say how they
//! run (`start`, `ready`, `serving`, `after` in `[services.<name>]`), and a `[client]` section
//! that says how one client operation runs. `fleetcheck run FILE.toml` runs it with the
//! workload's model and checker; everything else (faults, shrinking, replay, reports) is the
//! framework's. The workload today is `kv`: the kv scenario's model (batches of concurrent
//! put / get / delete / compare-and-set over a few keys, under the cluster layer's faults) and
//! its linearizability checker, with the store given by the file ([`store::FileStore`]).
//!
//! Templates ([`template`]) are filled in per machine (services) and per operation (client):
//! see [`SERVICE_VARIABLES`] and [`CLIENT_VARIABLES`]; `{peers|[id]=http://[ip]:2380|,}` lists
//! every machine of the case. Each is read, and refused in one sentence naming the key and its
//! line, when the file is read.

pub mod client;
pub mod store;
pub mod template;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ScenarioConfig};
use template::Template;

/// `[scenario]` of a scenario file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSection {
    /// Its name in reports, replay files and `fleetcheck list`: letters, digits and `-`.
    pub name: String,
    /// One line on what it tests.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub about: String,
    /// Its workload and checker.
    #[serde(default)]
    pub workload: Workload,
}

pub use crate::kv::Workload;

/// `[client]`: how one client operation runs, as a command in the machine it goes to. The
/// command's exit status 0 is an answer; any other, or no answer within `[kv] op_timeout_ms`,
/// is a failure for a read (it changed nothing) and unknown for a write (it may have taken
/// effect), unless its error output contains one of `refused` (then it surely did not).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// A long-lived client program instead of a command per operation: started inside the
    /// node an operation goes to (one per concurrent worker, started again after it stops
    /// answering), it reads one JSON operation a line and answers one JSON line (see
    /// [`client`]). Variables: [`PROGRAM_VARIABLES`].
    pub program: Option<String>,
    /// Writes `{value}` at `{key}`.
    pub put: Option<String>,
    /// Prints the value at `{key}` (`absent` when there is none).
    pub get: Option<String>,
    /// Removes `{key}`.
    pub delete: Option<String>,
    /// Writes `{new}` at `{key}` if it holds `{expected}`; prints `swapped` or `not_swapped`.
    pub cas: Option<String>,
    /// Writes `{new}` at `{key}` if it holds nothing (default: `cas` with an empty
    /// `{expected}`).
    pub cas_absent: Option<String>,
    /// set: adds `{value}` to the set at `{key}`.
    pub add: Option<String>,
    /// set: prints every value of the set at `{key}` (separated by white space or commas);
    /// counter: prints the counter at `{key}`.
    pub read: Option<String>,
    /// queue: puts `{value}` in.
    pub enqueue: Option<String>,
    /// queue: takes one value out and prints it (`absent` when the queue is empty).
    pub dequeue: Option<String>,
    /// queue: takes every value out and prints them (the final read).
    pub drain: Option<String>,
    /// counter: adds `{value}` to the counter at `{key}`.
    pub incr: Option<String>,
    /// The first line of a `cas` that swapped.
    pub swapped: Option<String>,
    /// The first line of a `cas` that did not (anything else: unknown).
    pub not_swapped: Option<String>,
    /// What `get` prints for a key that holds nothing (default: nothing).
    #[serde(default)]
    pub absent: String,
    /// Error output that means the operation surely did not happen (e.g. `connection
    /// refused`).
    #[serde(default)]
    pub refused: Vec<String>,
    /// The role operations go to (e.g. `primary`): only machines of this role that are up
    /// (in the model, so after a `becomes`, the new one). Default: any node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Client programs and commands run in a client machine of their own ([`CLIENT_MACHINE`]:
    /// no services, no faults of its own, in no partition, so it reaches both sides) rather
    /// than inside the node an operation goes to, which they reach at `{node_ip}`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_machine: bool,
}

/// The id of the client machine of `[client] own_machine` (node ids are 8 letters).
pub const CLIENT_MACHINE: &str = "client";

impl ClientConfig {
    /// Each operation's command, by its name in `[client]`.
    pub fn operations(&self) -> [(&'static str, Option<&String>); 11] {
        [
            ("put", self.put.as_ref()),
            ("get", self.get.as_ref()),
            ("delete", self.delete.as_ref()),
            ("cas", self.cas.as_ref()),
            ("cas_absent", self.cas_absent.as_ref()),
            ("add", self.add.as_ref()),
            ("read", self.read.as_ref()),
            ("enqueue", self.enqueue.as_ref()),
            ("dequeue", self.dequeue.as_ref()),
            ("drain", self.drain.as_ref()),
            ("incr", self.incr.as_ref()),
        ]
    }
}

/// `[commands.<name>]` of a scenario file: a command of its own, composer-style, generated
/// among the workload's and the faults: run inside a node that is up, its exit status the
/// postcondition (0 passes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCommand {
    /// The command (variables: [`SERVICE_VARIABLES`], of the node it runs in).
    pub run: String,
    /// How often it is generated, against the kv workload's batches at 6 and faults at 1–2.
    #[serde(default = "one")]
    pub weight: u32,
    /// Its cost for the shrinker (which drops costly commands first).
    #[serde(default = "two")]
    pub cost: u32,
    /// The role of the machines it runs on (default: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
    /// Roles every machine of which must be down or paused for it to run (e.g. a replica is
    /// promoted only while the primary is down).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when_down: Vec<String>,
    /// Its effect on the model: the machine it ran on takes this role...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub becomes: Option<String>,
    /// ...and the machines that had that role take this one (e.g. `replica`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub others: Option<String>,
}

impl FileCommand {
    /// The model after this command ran on `node` in `state`: with `becomes`, the node has
    /// that role and the machines that had it `others` (if given); otherwise `state`.
    pub fn effect(&self, state: &crate::kv::KvState, node: &str) -> crate::kv::KvState {
        let mut next = state.clone();
        if let Some(role) = &self.becomes {
            for m in &mut next.machines {
                if m.id == node {
                    m.role = role.clone();
                } else if let Some(other) = self.others.as_ref().filter(|_| m.role == *role) {
                    m.role = other.clone();
                }
            }
        }
        next
    }
}

/// `[invariants.<name>]` of a scenario file: a command run on every node that is up after
/// every step; a non-zero exit fails the case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileInvariant {
    /// The command (variables: [`SERVICE_VARIABLES`]).
    pub run: String,
}

/// `[eventually.<name>]` of a scenario file: a check at the end of a case whose every step
/// passed, once every fault is healed and every node that was down is up again, retried until
/// it holds or `within_ms` passes (then the case fails): the cluster recovers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEventually {
    /// The command, run on the first node (variables: [`SERVICE_VARIABLES`]).
    pub run: String,
    /// How long it may take to hold, in milliseconds (default 20000).
    #[serde(default = "twenty_seconds")]
    pub within_ms: u64,
}

fn twenty_seconds() -> u64 {
    20_000
}

fn one() -> u32 {
    1
}

fn two() -> u32 {
    2
}

/// The variables of a service's `start`, `ready`, `serving` and `prepare`: the machine's
/// `{id}`, `{ip}`, `{role}`, its data directory `{data}`, the `{version}` of this service it
/// runs (`host` for the host's program), a `{token}` unique to the case, the directory
/// `{prepared}` of the service's `prepare`; plus `{peers|FORMAT|SEP}`.
pub const SERVICE_VARIABLES: &[&str] =
    &["id", "ip", "role", "data", "version", "token", "prepared"];

/// The variables of a service's `logs`: the machine's `{id}`, `{ip}`, `{role}` and its data
/// directory `{data}`.
pub const LOG_VARIABLES: &[&str] = &["id", "ip", "role", "data"];

/// The variables of a client operation: `{key}`, `{value}` (put), `{expected}` and `{new}`
/// (cas), the machine it goes to (`{node}`, `{node_ip}`), `{timeout_ms}` (`[kv]
/// op_timeout_ms`) and `{timeout_s}` (the same in seconds, as `timeout` takes it), `{token}`;
/// plus `{peers|FORMAT|SEP}`.
pub const CLIENT_VARIABLES: &[&str] = &[
    "key",
    "value",
    "expected",
    "new",
    "node",
    "node_ip",
    "timeout_ms",
    "timeout_s",
    "token",
];

/// The service whose versions a scenario file's nodes run: the first that starts and lists
/// versions (in start order).
pub fn versioned_service(config: &ScenarioConfig) -> Option<String> {
    store::start_order(config)
        .ok()?
        .into_iter()
        .find(|name| !config.services[name].versions.is_empty())
}

/// The variables of a client `program`: the machine it runs in (`{node}`, `{node_ip}`),
/// `{timeout_ms}`, `{timeout_s}`, `{token}`; plus `{peers|FORMAT|SEP}`.
pub const PROGRAM_VARIABLES: &[&str] = &["node", "node_ip", "timeout_ms", "timeout_s", "token"];

/// `[roles]` of a scenario file: only `count` and `after` (its machines take `[kv]`'s and
/// `[machine]`'s settings), `after` naming other roles in an order that ends; the roles that
/// `[client] route` and `[commands.*]` name exist.
fn validate_roles(config: &ScenarioConfig) -> Result<(), ConfigError> {
    let err = |m: String| Err(ConfigError(m));
    for (name, r) in &config.roles {
        if r.memory_mb.is_some()
            || r.kernels.is_some()
            || r.setup.is_some()
            || r.filesystem.is_some()
            || !r.versions.is_empty()
        {
            return err(format!(
                "roles.{name} takes only `count` and `after` in a scenario file (its machines \
                 take [kv] memory_mb and [machine]'s file system and versions)"
            ));
        }
        for after in &r.after {
            if !config.roles.contains_key(after) || after == name {
                return err(format!(
                    "roles.{name}.after names `{after}`, which is not another role"
                ));
            }
        }
    }
    store::role_ranks(config).map_err(ConfigError)?;
    let role = |key: String, role: &str| {
        if config.roles.contains_key(role) {
            Ok(())
        } else if config.roles.is_empty() {
            err(format!(
                "{key} names role `{role}`, but the file has no [roles]"
            ))
        } else {
            let known: Vec<&str> = config.roles.keys().map(String::as_str).collect();
            err(format!(
                "{key} names role `{role}`, which is not one of [roles] ({})",
                known.join(", ")
            ))
        }
    };
    if let Some(leader) = &config.kv.leader {
        role("kv.leader".into(), leader)?;
    }
    if let Some(route) = config.client.as_ref().and_then(|c| c.route.as_ref()) {
        role("client.route".into(), route)?;
    }
    for (name, c) in &config.commands {
        let named =
            c.on.iter()
                .chain(&c.when_down)
                .chain(&c.becomes)
                .chain(&c.others);
        for r in named {
            role(format!("commands.{name}"), r)?;
        }
        if c.others.is_some() && c.becomes.is_none() {
            return err(format!("commands.{name} has `others` but no `becomes`"));
        }
    }
    for name in config.vars.keys() {
        let known = SERVICE_VARIABLES.iter().chain(CLIENT_VARIABLES);
        if !plain_var(name) || known.clone().any(|k| k == name) || name.starts_with("peers") {
            return err(format!(
                "vars.{name} needs a name of letters, digits and `_` that is not a variable of \
                 fleetcheck's own"
            ));
        }
    }
    Ok(())
}

fn plain_var(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The line of `text` (1-based) where `needle` first appears, for messages; `None` if it
/// does not.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.find(needle)
        .map(|at| text[..at].lines().count().max(1))
}

/// Checks the scenario-file parts of `config`: they only appear with `[scenario]`; a name;
/// services that start; every template; the client's operations for the workload's.
pub fn validate(config: &ScenarioConfig) -> Result<(), ConfigError> {
    let err = |m: String| Err(ConfigError(m));
    let running: Vec<&String> = config
        .services
        .iter()
        .filter(|(_, s)| {
            s.start.is_some()
                || s.ready.is_some()
                || s.serving.is_some()
                || s.prepare.is_some()
                || s.stop.is_some()
                || !s.logs.is_empty()
        })
        .map(|(name, _)| name)
        .collect();
    let Some(scenario) = &config.scenario else {
        if let Some(name) = config.commands.keys().next() {
            return err(format!(
                "commands.{name} belongs to scenario files: add a [scenario] section with its name"
            ));
        }
        if let Some(name) = config.eventually.keys().next() {
            return err(format!(
                "eventually.{name} belongs to scenario files: add a [scenario] section with its name"
            ));
        }
        if let Some(name) = config.invariants.keys().next() {
            return err(format!(
                "invariants.{name} belongs to scenario files: add a [scenario] section with its name"
            ));
        }
        if let Some(name) = running.first() {
            return err(format!(
                "services.{name} says how it runs, which only a scenario file does: add a \
                 [scenario] section with its name"
            ));
        }
        if config.client.is_some() {
            return err(
                "[client] belongs to scenario files: add a [scenario] section with its name".into(),
            );
        }
        if let Some(name) = config.vars.keys().next() {
            return err(format!(
                "vars.{name} belongs to scenario files: add a [scenario] section with its name"
            ));
        }
        if config.kv.ordered.promised() {
            return err(
                "kv.ordered is the promise of a scenario file's queue workload: add a \
                 [scenario] section with its name and workload = \"queue\""
                    .into(),
            );
        }
        if config.kv.leader.is_some() {
            return err(
                "kv.leader names a role, which only a scenario file's machines have: add a \
                 [scenario] section with its name"
                    .into(),
            );
        }
        if let Some((name, _)) = config.roles.iter().find(|(_, r)| !r.after.is_empty()) {
            return err(format!(
                "roles.{name}.after belongs to scenario files: add a [scenario] section with its name"
            ));
        }
        return Ok(());
    };
    let plain = |s: &str| {
        !s.is_empty() && s.len() <= 40 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !plain(&scenario.name) {
        return err(format!(
            "scenario.name `{}` must be 1 to 40 letters, digits and `-`",
            scenario.name
        ));
    }
    if running.is_empty() {
        return err(
            "a scenario file needs a service that runs: give one a `start` in [services.<name>]"
                .into(),
        );
    }
    validate_roles(config)?;
    for (name, s) in &config.services {
        let extra = s.ready.is_some()
            || s.serving.is_some()
            || s.prepare.is_some()
            || s.stop.is_some()
            || !s.logs.is_empty();
        if s.start.is_none() && extra {
            return err(format!(
                "services.{name} has `ready`, `serving`, `prepare`, `stop` or `logs` but no \
                 `start`"
            ));
        }
        for (key, text) in [
            ("start", &s.start),
            ("ready", &s.ready),
            ("serving", &s.serving),
            ("prepare", &s.prepare),
            ("settle", &s.settle),
            ("stop", &s.stop),
        ] {
            if let Some(text) = text {
                Template::parse_with(text, SERVICE_VARIABLES, true, &config.vars)
                    .map_err(|e| ConfigError(format!("services.{name}.{key} {e}")))?;
            }
        }
        for (i, text) in s.logs.iter().enumerate() {
            Template::parse_with(text, LOG_VARIABLES, false, &config.vars)
                .map_err(|e| ConfigError(format!("services.{name}.logs[{i}] {e}")))?;
        }
        if s.settle_ms == Some(0) || s.settle_ms > Some(600_000) {
            return err(format!(
                "services.{name}.settle_ms must be between 1 and 600000"
            ));
        }
        if s.ready_timeout_ms == Some(0) || s.ready_timeout_ms > Some(600_000) {
            return err(format!(
                "services.{name}.ready_timeout_ms must be between 1 and 600000"
            ));
        }
        for after in &s.after {
            match config.services.get(after) {
                Some(other) if other.start.is_some() && after != name => {}
                _ => {
                    return err(format!(
                        "services.{name}.after names `{after}`, which is not another service \
                         that starts"
                    ))
                }
            }
        }
    }
    store::start_order(config).map_err(ConfigError)?;
    for (name, c) in &config.commands {
        if !plain(name) {
            return err(format!(
                "commands.{name} needs a plain name (letters, digits, `-`)"
            ));
        }
        if c.weight == 0 || c.weight > 100 || c.cost > 1000 {
            return err(format!(
                "commands.{name}: weight must be between 1 and 100 and cost at most 1000"
            ));
        }
        Template::parse_with(&c.run, SERVICE_VARIABLES, true, &config.vars)
            .map_err(|e| ConfigError(format!("commands.{name}.run {e}")))?;
    }
    for (name, e) in &config.eventually {
        if e.within_ms == 0 || e.within_ms > 600_000 {
            return err(format!(
                "eventually.{name}.within_ms must be between 1 and 600000"
            ));
        }
        Template::parse_with(&e.run, SERVICE_VARIABLES, true, &config.vars)
            .map_err(|e| ConfigError(format!("eventually.{name}.run {e}")))?;
    }
    for (name, i) in &config.invariants {
        Template::parse_with(&i.run, SERVICE_VARIABLES, true, &config.vars)
            .map_err(|e| ConfigError(format!("invariants.{name}.run {e}")))?;
    }
    let client = config.client.clone().unwrap_or_default();
    let ops = client.operations();
    for (key, text) in ops {
        if let Some(text) = text {
            Template::parse_with(text, CLIENT_VARIABLES, true, &config.vars)
                .map_err(|e| ConfigError(format!("client.{key} {e}")))?;
        }
    }
    if let Some(program) = &client.program {
        Template::parse_with(program, PROGRAM_VARIABLES, true, &config.vars)
            .map_err(|e| ConfigError(format!("client.program {e}")))?;
        if let Some((key, _)) = ops.iter().find(|(_, t)| t.is_some()) {
            return err(format!(
                "client.program and client.{key} both say how operations run: keep one"
            ));
        }
        return Ok(());
    }
    let workload = scenario.workload;
    if config.kv.ordered.promised() && workload != Workload::Queue {
        return err(format!(
            "kv.ordered is a queue's promise, and this file's workload is {}",
            workload.name()
        ));
    }
    let kinds: Vec<&'static str> = if config.kv.ops.is_empty() {
        workload.kinds().iter().map(|k| k.name()).collect()
    } else {
        config.kv.ops.iter().map(|k| k.name()).collect()
    };
    if let Some(other) = kinds
        .iter()
        .find(|k| !workload.kinds().iter().any(|w| w.name() == **k))
    {
        let own: Vec<&str> = workload.kinds().iter().map(|k| k.name()).collect();
        return err(format!(
            "kv.ops names `{other}`, which is not an operation of the {} workload ({})",
            workload.name(),
            own.join(", ")
        ));
    }
    for name in kinds {
        if !ops.iter().any(|(n, t)| *n == name && t.is_some()) {
            return err(format!(
                "client.{name} is missing: give the command of a {name}, or leave `{name}` out \
                 of kv.ops"
            ));
        }
    }
    // The final read of a collection, whatever `[kv] ops` generates.
    let last = match workload {
        Workload::Kv => None,
        Workload::Set | Workload::Counter => Some("read"),
        Workload::Queue => Some("drain"),
    };
    if let Some(name) = last.filter(|n| !ops.iter().any(|(o, t)| o == n && t.is_some())) {
        return err(format!(
            "client.{name} is missing: the {} workload ends every case with a {name}",
            workload.name()
        ));
    }
    if client.cas.is_some() && client.swapped.is_none() {
        return err("client.cas needs `swapped`: the first line a cas that swapped prints".into());
    }
    Ok(())
}

/// Adds the line of the key a message names (`services.etcd.start …`) when `text`, the file
/// it came from, shows where: `line 12: services.etcd.start uses …`.
pub fn with_line(text: &str, message: String) -> String {
    let Some(key) = message.split_whitespace().next() else {
        return message;
    };
    // `services.etcd.start` is on the line `start = …` after `[services.etcd]`.
    let (table, leaf) = key.rsplit_once('.').unwrap_or(("", key));
    let header = format!("[{table}]");
    let line = match line_of(text, &header) {
        Some(from) => text
            .lines()
            .enumerate()
            .skip(from)
            .find(|(_, l)| l.trim_start().starts_with(leaf))
            .map(|(i, _)| i + 1),
        None => None,
    };
    match line {
        Some(n) => format!("line {n}: {message}"),
        None => message,
    }
}
