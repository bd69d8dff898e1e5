//! The store of a scenario file: its services started on the kv workload's nodes in their
//! order, waited for, started again after a restart or upgrade, and client operations run
//! from the `[client]` templates — the kv scenario's [`Store`] built from a file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetcheck_engine::history::Outcome;
use fleetcheck_engine::{Abort, KvOp, KvRet};
use fleetcheck_fabric::{Backend, ExecError, Network};

use super::client::{Answered, Session};
use super::template::{Peer, Template, Vars};
use super::{ClientConfig, CLIENT_VARIABLES, PROGRAM_VARIABLES, SERVICE_VARIABLES};
use crate::cluster::ClusterCmd;
use crate::config::ScenarioConfig;
use crate::kv::service;
use crate::kv::{Answer, Call, KvService, KvState, Op, Ret, Store, Workload};

/// How long `settle` may take unless a service says.
pub const SETTLE: Duration = Duration::from_secs(8);

/// How long `ready` and `serving` may take unless a service says.
pub const READY: Duration = Duration::from_secs(20);

/// The services that start, in the order they start: each after those its `after` names,
/// otherwise in name order; or why there is no such order.
pub fn start_order(config: &ScenarioConfig) -> Result<Vec<String>, String> {
    let starting: Vec<&String> = config
        .services
        .iter()
        .filter(|(_, s)| s.start.is_some())
        .map(|(n, _)| n)
        .collect();
    let mut order: Vec<String> = Vec::new();
    while order.len() < starting.len() {
        let next = starting.iter().find(|n| {
            !order.contains(n)
                && config.services[n.as_str()]
                    .after
                    .iter()
                    .all(|a| order.contains(a))
        });
        match next {
            Some(n) => order.push(n.to_string()),
            None => {
                let waiting: Vec<String> = starting
                    .iter()
                    .filter(|n| !order.contains(n))
                    .map(|n| format!("services.{n}.after"))
                    .collect();
                return Err(format!("{} wait for each other", waiting.join(" and ")));
            }
        }
    }
    Ok(order)
}

/// The rank of each role at a case's first boot: 0 for a role after none, else one more than
/// the highest of the roles its `after` names; or why there is no such order.
pub fn role_ranks(config: &ScenarioConfig) -> Result<BTreeMap<String, usize>, String> {
    let mut ranks: BTreeMap<String, usize> = BTreeMap::new();
    while ranks.len() < config.roles.len() {
        let next = config.roles.iter().find_map(|(name, r)| {
            let rank = r
                .after
                .iter()
                .map(|a| ranks.get(a).map(|k| k + 1))
                .try_fold(0, |most, k| k.map(|k| most.max(k)))?;
            (!ranks.contains_key(name)).then(|| (name.clone(), rank))
        });
        match next {
            Some((name, rank)) => {
                ranks.insert(name, rank);
            }
            None => {
                let waiting: Vec<String> = config
                    .roles
                    .keys()
                    .filter(|n| !ranks.contains_key(*n))
                    .map(|n| format!("roles.{n}.after"))
                    .collect();
                return Err(format!("{} wait for each other", waiting.join(" and ")));
            }
        }
    }
    Ok(ranks)
}

/// One service as the store runs it.
#[derive(Debug, Clone)]
struct Running {
    name: String,
    prepare: Option<Template>,
    start: Template,
    ready: Option<Template>,
    serving: Option<Template>,
    within: Duration,
    /// `settle` and how long it may take.
    settle: Option<(Template, Duration)>,
    /// Its graceful `stop`, if it has one.
    stop: Option<Template>,
    /// The files of its `logs` (variables: [`crate::file::LOG_VARIABLES`]).
    logs: Vec<Template>,
}

/// One client operation's command and how to read its answer.
#[derive(Debug, Clone)]
struct Client {
    program: Option<Template>,
    /// The command of each operation the file gives, by its name (`put`, `cas_absent`, …).
    commands: BTreeMap<&'static str, Template>,
    config: ClientConfig,
}

/// A scenario file's store on a backend with disks.
#[derive(Debug, Clone)]
pub struct FileStore {
    backend: Arc<dyn Backend>,
    memory_mb: u32,
    op_timeout: Duration,
    service: Option<KvService>,
    services: Vec<Running>,
    /// Each role's wave at a case's first boot (see [`role_ranks`]).
    role_ranks: BTreeMap<String, usize>,
    /// The services whose `prepare` has run in this run.
    prepared: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    client: Arc<Client>,
    /// Its own commands (with what they do to the model) and invariants, by name.
    commands: BTreeMap<String, (Template, crate::file::FileCommand)>,
    invariants: BTreeMap<String, Template>,
    /// Its eventually-checks, by name, with how long each may take.
    eventually: BTreeMap<String, (Template, Duration)>,
    workload: Workload,
    /// `[kv] ordered`: the order the queue promises.
    ordered: fleetcheck_engine::collections::QueueOrder,
}

/// A live cluster of a scenario file.
pub struct FileCluster {
    net: Box<dyn Network>,
    /// The machines as client templates list them (roles as the model has them).
    peers: std::sync::Mutex<Vec<Peer>>,
    token: String,
    /// Idle client program sessions, by node.
    sessions: std::sync::Mutex<BTreeMap<String, Vec<Session>>>,
    /// The first protocol violation of a client program: aborts the case after its batch.
    broken: std::sync::Mutex<Option<Abort>>,
}

impl std::fmt::Debug for FileCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCluster")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl FileCluster {
    /// The machines as client templates list them now.
    fn peers(&self) -> Vec<Peer> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The machines of the cluster (for reports: their logs and disks).
    pub fn network(&self) -> &dyn Network {
        self.net.as_ref()
    }
}

/// A template of `config` already checked when the file was read.
fn checked(config: &ScenarioConfig, text: &str, known: &[&str]) -> Template {
    Template::parse_with(text, known, true, &config.vars).expect("validated when the file was read")
}

/// A template of `config` without `{peers…}`, already checked when the file was read.
fn checked_plain(config: &ScenarioConfig, text: &str, known: &[&str]) -> Template {
    Template::parse_with(text, known, false, &config.vars)
        .expect("validated when the file was read")
}

/// Every machine of `state` as `{peers|…}` lists it, with its role in `state`.
fn peers_of(state: &KvState) -> Vec<Peer> {
    state
        .machines
        .iter()
        .map(|m| Peer {
            id: m.id.clone(),
            ip: m.ip.to_string(),
            role: m.role.clone(),
        })
        .collect()
}

impl FileStore {
    /// The store of the scenario file `config` (validated) on `backend`; `service` is the
    /// service whose versions the nodes run, if the file lists any.
    pub fn new(
        backend: Arc<dyn Backend>,
        config: &ScenarioConfig,
        service: Option<KvService>,
    ) -> Self {
        let services = start_order(config)
            .expect("validated when the file was read")
            .into_iter()
            .map(|name| {
                let s = &config.services[&name];
                let template = |t: &Option<String>| {
                    t.as_deref().map(|t| checked(config, t, SERVICE_VARIABLES))
                };
                Running {
                    prepare: template(&s.prepare),
                    start: template(&s.start).expect("a starting service has a start"),
                    ready: template(&s.ready),
                    serving: template(&s.serving),
                    settle: template(&s.settle)
                        .map(|t| (t, s.settle_ms.map_or(SETTLE, Duration::from_millis))),
                    stop: template(&s.stop),
                    logs: s
                        .logs
                        .iter()
                        .map(|t| checked_plain(config, t, crate::file::LOG_VARIABLES))
                        .collect(),
                    within: s.ready_timeout_ms.map_or(READY, Duration::from_millis),
                    name,
                }
            })
            .collect();
        let c = config.client.clone().unwrap_or_default();
        let client = Client {
            program: c
                .program
                .as_deref()
                .map(|t| checked(config, t, PROGRAM_VARIABLES)),
            commands: c
                .operations()
                .into_iter()
                .filter_map(|(name, t)| Some((name, checked(config, t?, CLIENT_VARIABLES))))
                .collect(),
            config: c,
        };
        Self {
            backend,
            memory_mb: config.kv.memory_mb,
            op_timeout: Duration::from_millis(config.kv.op_timeout_ms),
            service,
            services,
            role_ranks: role_ranks(config).expect("validated when the file was read"),
            prepared: Default::default(),
            client: Arc::new(client),
            workload: config
                .scenario
                .as_ref()
                .map_or(Workload::Kv, |s| s.workload),
            ordered: config.kv.ordered,
            commands: config
                .commands
                .iter()
                .map(|(n, c)| {
                    let template = checked(config, &c.run, SERVICE_VARIABLES);
                    (n.clone(), (template, c.clone()))
                })
                .collect(),
            invariants: config
                .invariants
                .iter()
                .map(|(n, i)| (n.clone(), checked(config, &i.run, SERVICE_VARIABLES)))
                .collect(),
            eventually: config
                .eventually
                .iter()
                .map(|(n, e)| {
                    let within = Duration::from_millis(e.within_ms);
                    (
                        n.clone(),
                        (checked(config, &e.run, SERVICE_VARIABLES), within),
                    )
                })
                .collect(),
        }
    }

    /// The values of a service's templates on `node`.
    fn service_vars<'a>(
        &self,
        c: &'a FileCluster,
        state: &KvState,
        node: &str,
        service: &str,
    ) -> Result<Vars<'a>, Abort> {
        let m = state
            .machine(node)
            .ok_or_else(|| Abort::new(format!("no node {node}")))?;
        let disk = service::disk(c.net.as_ref(), self.backend.name(), node, service)?;
        let version = m
            .versions
            .get(service)
            .cloned()
            .unwrap_or_else(|| "host".into());
        Ok(Vars {
            values: BTreeMap::from([
                ("id", m.id.clone()),
                ("ip", m.ip.to_string()),
                ("role", m.role.clone()),
                ("data", disk.display().to_string()),
                ("version", version),
                ("token", c.token.clone()),
                ("prepared", self.prepared_dir(service).unwrap_or_default()),
            ]),
            peers: peers_of(state).into(),
        })
    }

    /// The network of `state` with the client machine of `[client] own_machine` added (the
    /// highest free address, an observer: in no partition), every machine booted.
    fn boot_with_client_machine(&self, state: &KvState) -> Result<Box<dyn Network>, Abort> {
        let mut spec = crate::kv::network_spec(state, self.memory_mb, self.service.as_ref())?;
        let subnet = spec.subnet;
        let ip = (0..subnet.host_count())
            .rev()
            .filter_map(|n| subnet.host(n))
            .find(|ip| spec.machines.iter().all(|m| m.ip != *ip))
            .ok_or_else(|| Abort::new(format!("{subnet} has no address left for the client")))?;
        spec.machines.push(fleetcheck_fabric::MachineSpec {
            id: crate::file::CLIENT_MACHINE.into(),
            ip,
            memory_mb: self.memory_mb,
            kernel: spec
                .machines
                .first()
                .map_or_else(|| "host".into(), |m| m.kernel.clone()),
            observer: true,
            ..Default::default()
        });
        let net = self.backend.create(&spec)?;
        let ids: Vec<&str> = spec.machines.iter().map(|m| m.id.as_str()).collect();
        for r in net.boot(&ids) {
            r?;
        }
        Ok(net)
    }

    /// Stops every service of `node` that has a `stop`, in the reverse of their start order,
    /// each within its deadline; a stop that fails or hangs is left to the shutdown that
    /// follows (which stops what is left as a crash would).
    fn stop_services(&self, c: &FileCluster, state: &KvState, node: &str) -> Result<(), Abort> {
        for s in self.services.iter().rev() {
            let Some(stop) = &s.stop else { continue };
            let vars = self.service_vars(c, state, node, &s.name)?;
            let cmd = format!(
                "( {} ) >>\"{}/{}.log\" 2>&1",
                stop.render(&vars),
                vars.values["data"],
                s.name
            );
            let _ = c.net.exec(node, &service::shell(cmd, s.within));
        }
        Ok(())
    }

    /// Starts every service on `node` in order, each ready before the next starts.
    fn launch(&self, c: &FileCluster, state: &KvState, node: &str) -> Result<(), Abort> {
        for s in &self.services {
            self.start_one(c, state, node, s)?;
            self.ready(c, state, node, s)?;
        }
        Ok(())
    }

    fn start_one(
        &self,
        c: &FileCluster,
        state: &KvState,
        node: &str,
        s: &Running,
    ) -> Result<(), Abort> {
        let vars = self.service_vars(c, state, node, &s.name)?;
        if let Some(prepare) = &s.prepare {
            self.prepare(c, node, s, &prepare.render(&vars))?;
        }
        let cmd = format!(
            "( {} ) >>\"{}/{}.log\" 2>&1 &",
            s.start.render(&vars),
            vars.values["data"],
            s.name
        );
        service::start(c.net.as_ref(), node, &s.name, cmd)
    }

    /// Each service's `settle`, tried on every node that is up in turn (backing off from 20 to
    /// 200 ms between rounds) until it holds on one or its time is up; gives up quietly.
    fn settle(&self, c: &FileCluster, state: &KvState) {
        for s in &self.services {
            let Some((probe, within)) = &s.settle else {
                continue;
            };
            let deadline = Instant::now() + *within;
            let mut backoff = Duration::from_millis(20);
            'rounds: while Instant::now() < deadline {
                for node in state.awake() {
                    let Ok(vars) = self.service_vars(c, state, &node, &s.name) else {
                        continue;
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    let req =
                        service::shell(probe.render(&vars), left.max(Duration::from_millis(1)));
                    if c.net.exec(&node, &req).is_ok_and(|o| o.success()) {
                        break 'rounds;
                    }
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
        }
    }

    /// Where `service`'s `prepare` leaves its work: in the backend's scratch directory.
    fn prepared_dir(&self, service: &str) -> Option<String> {
        let dir = self.backend.scratch_dir()?.join(service);
        Some(dir.display().to_string())
    }

    /// Runs `cmd`, service `s`'s `prepare`, on `node` unless it ran in this run already (other
    /// cases wait for the one that runs it).
    fn prepare(&self, c: &FileCluster, node: &str, s: &Running, cmd: &str) -> Result<(), Abort> {
        let mut done = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if done.contains(&s.name) {
            return Ok(());
        }
        let dir = self.prepared_dir(&s.name).ok_or_else(|| {
            Abort::new(format!(
                "services.{}.prepare needs machines that see the host's files, which the {} \
                 backend's do not (use netns)",
                s.name,
                self.backend.name()
            ))
        })?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| Abort::new(format!("cannot make {dir}: {e}")))?;
        let out = c
            .net
            .exec(node, &service::shell(cmd.to_string(), s.within))?;
        if !out.success() {
            let said = format!("{}{}", out.stdout_str(), out.stderr_str());
            let last: Vec<&str> = said.lines().rev().take(3).collect();
            return Err(Abort::new(format!(
                "services.{}.prepare failed on {node}{}: {}",
                s.name,
                if out.timed_out { " (out of time)" } else { "" },
                last.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        done.insert(s.name.clone());
        Ok(())
    }

    /// Waits until `probe` (the service's `ready` or `serving`) holds on `node`.
    fn wait(
        &self,
        c: &FileCluster,
        state: &KvState,
        node: &str,
        s: &Running,
        probe: &Template,
        what: &str,
    ) -> Result<(), Abort> {
        let vars = self.service_vars(c, state, node, &s.name)?;
        let condition = probe.render(&vars);
        if service::probe(c.net.as_ref(), node, &condition, s.within) {
            return Ok(());
        }
        let file = format!("{}.log", s.name);
        let mut log = service::last_lines(c.net.as_ref(), node, &file, 3);
        log.reverse();
        let log = if log.is_empty() {
            format!("its {file} is empty")
        } else {
            format!("its {file} ends: {}", log.join(" | "))
        };
        Err(Abort::new(format!(
            "{} on {node} did not get {what} ({condition}) within {:?}; {log}",
            s.name, s.within
        )))
    }

    fn ready(
        &self,
        c: &FileCluster,
        state: &KvState,
        node: &str,
        s: &Running,
    ) -> Result<(), Abort> {
        match &s.ready {
            Some(probe) => self.wait(c, state, node, s, probe, "ready"),
            None => Ok(()),
        }
    }

    /// The machine a client operation for `node` runs in: `node`, or the client machine of
    /// `[client] own_machine`.
    fn client_host<'a>(&self, node: &'a str) -> &'a str {
        if self.client.config.own_machine {
            crate::file::CLIENT_MACHINE
        } else {
            node
        }
    }

    /// Runs `op` through an idle session of the client `program` on `node`, or a new one; a
    /// session that had ended before the operation was sent is replaced once.
    fn op_through(
        &self,
        c: &FileCluster,
        program: &Template,
        node: &str,
        call: &Call,
    ) -> Outcome<Answer> {
        let unsure = service::unsure(call.reads());
        for _ in 0..2 {
            let idle = c
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(node)
                .and_then(Vec::pop);
            let mut session = match idle {
                Some(s) => s,
                None => match self.open_session(c, program, node) {
                    Ok(s) => s,
                    // The machine is off or its program cannot start: nothing was sent.
                    Err(_) => return Outcome::Fail,
                },
            };
            match session.run(node, self.workload, call, self.op_timeout) {
                Ok(Answered::Outcome(outcome)) => {
                    c.sessions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(node.to_string())
                        .or_default()
                        .push(session);
                    return outcome;
                }
                Ok(Answered::NotSent) => continue,
                Ok(Answered::Lost) => return unsure,
                Err(abort) => {
                    c.broken
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(abort);
                    return unsure;
                }
            }
        }
        Outcome::Fail
    }

    /// Runs a command of the file's own (`[commands]`, `[invariants]`) inside `node`, with
    /// the service variables of that node: `Ok(Err(why))` if it exits non-zero or does not
    /// finish within a minute.
    fn run_own(
        &self,
        c: &FileCluster,
        state: &KvState,
        node: &str,
        template: &Template,
    ) -> Result<Result<(), String>, Abort> {
        let vars = self.service_vars(c, state, node, "")?;
        let req = service::shell(template.render(&vars), Duration::from_secs(60));
        let out = c.net.exec(node, &req)?;
        if out.success() {
            return Ok(Ok(()));
        }
        let said = format!("{}{}", out.stdout_str(), out.stderr_str());
        Ok(Err(format!("{}: {}", out.describe_status(), said.trim())))
    }

    /// The variables every client command and program has: the node's, the timeout, the token.
    fn client_values(&self, c: &FileCluster, node: &str) -> BTreeMap<&'static str, String> {
        let ip = c
            .peers()
            .into_iter()
            .find(|p| p.id == node)
            .map(|p| p.ip.clone())
            .unwrap_or_default();
        BTreeMap::from([
            ("node", node.to_string()),
            ("node_ip", ip),
            ("timeout_ms", self.op_timeout.as_millis().to_string()),
            ("timeout_s", format!("{:.3}", self.op_timeout.as_secs_f64())),
            ("token", c.token.clone()),
        ])
    }

    fn open_session(
        &self,
        c: &FileCluster,
        program: &Template,
        node: &str,
    ) -> Result<Session, ExecError> {
        let vars = Vars {
            values: self.client_values(c, node),
            peers: c.peers().into(),
        };
        let child = c
            .net
            .spawn(self.client_host(node), &program.render(&vars), "client.log")?;
        Ok(Session::new(child))
    }

    /// The command of `call` on `node`.
    fn command(&self, c: &FileCluster, node: &str, call: &Call) -> Option<String> {
        let commands = &self.client.commands;
        let mut values = self.client_values(c, node);
        let mut name = call.name();
        match call {
            Call::Kv(KvOp::Put(k, v)) | Call::Add(k, v) | Call::Incr(k, v) => {
                values.insert("key", k.to_string());
                values.insert("value", v.to_string());
            }
            Call::Kv(KvOp::Get(k) | KvOp::Delete(k)) | Call::Read(k) => {
                values.insert("key", k.to_string());
            }
            Call::Kv(KvOp::Cas { key, expected, new }) => {
                values.insert("key", key.to_string());
                values.insert("new", new.to_string());
                let expected = expected.map(|e| e.to_string()).unwrap_or_default();
                if expected.is_empty() && commands.contains_key("cas_absent") {
                    name = "cas_absent";
                }
                values.insert("expected", expected);
            }
            Call::Enqueue(v) => {
                values.insert("value", v.to_string());
            }
            Call::Dequeue | Call::Drain => {}
        }
        let vars = Vars {
            values,
            peers: c.peers().into(),
        };
        Some(commands.get(name)?.render(&vars))
    }

    /// What the output of `call`'s command that exited 0 answers; `None`: not an answer.
    fn answer(&self, call: &Call, stdout: &str) -> Option<Answer> {
        let cl = &self.client.config;
        let maybe = |text: &str| match text.trim() {
            v if v == cl.absent.trim() => Some(None),
            v => v.parse().ok().map(Some),
        };
        // Numbers separated by white space or commas.
        let values = |text: &str| {
            text.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|w| !w.is_empty())
                .map(|w| w.parse().ok())
                .collect::<Option<Vec<u64>>>()
        };
        Some(match call {
            Call::Kv(KvOp::Put(..) | KvOp::Delete(..))
            | Call::Add(..)
            | Call::Enqueue(_)
            | Call::Incr(..) => Answer::DONE,
            Call::Kv(KvOp::Get(_)) => Answer::Kv(KvRet::Value(maybe(stdout)?)),
            Call::Dequeue => Answer::Item(maybe(stdout)?),
            Call::Kv(KvOp::Cas { .. }) => {
                let first = stdout.lines().next().map(str::trim);
                if first.is_some() && first == cl.swapped.as_deref() {
                    Answer::Kv(KvRet::Swapped(true))
                } else if first.is_some() && first == cl.not_swapped.as_deref() {
                    Answer::Kv(KvRet::Swapped(false))
                } else {
                    return None;
                }
            }
            Call::Read(_) if self.workload == Workload::Counter => {
                Answer::Count(stdout.trim().parse().ok()?)
            }
            Call::Read(_) | Call::Drain => Answer::Values(values(stdout)?),
        })
    }
}

impl Store for FileStore {
    type Cluster = FileCluster;

    fn start(&self, state: &KvState) -> Result<FileCluster, Abort> {
        let net = if self.client.config.own_machine {
            self.boot_with_client_machine(state)?
        } else {
            crate::kv::boot_cluster(
                self.backend.as_ref(),
                state,
                self.memory_mb,
                self.service.as_ref(),
            )?
        };
        let peers = peers_of(state);
        // Unique to the case: its machines' ids (fresh per case) in a short hash.
        let mut h: u32 = 0x811c_9dc5;
        for b in state.machines.iter().flat_map(|m| m.id.bytes()) {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        let c = FileCluster {
            net,
            peers: std::sync::Mutex::new(peers),
            token: format!("fc-{h:08x}"),
            sessions: std::sync::Mutex::new(BTreeMap::new()),
            broken: std::sync::Mutex::new(None),
        };
        let ids: Vec<&str> = state.machines.iter().map(|m| m.id.as_str()).collect();
        // Machines in waves by role (`[roles.<name>] after`), each wave ready before the next.
        let rank = |m: &crate::cluster::Machine| self.role_ranks.get(&m.role).copied();
        let mut waves: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        for m in &state.machines {
            waves.entry(rank(m).unwrap_or(0)).or_default().push(&m.id);
        }
        for s in &self.services {
            for wave in waves.values() {
                for id in wave {
                    self.start_one(&c, state, id, s)?;
                }
                for id in wave {
                    self.ready(&c, state, id, s)?;
                }
            }
            if let (Some(probe), Some(first)) = (&s.serving, ids.first()) {
                self.wait(&c, state, first, s, probe, "serving")?;
            }
        }
        Ok(c)
    }

    fn op(&self, c: &FileCluster, node: &str, op: &Op) -> Outcome<Ret> {
        match self.call(c, node, &Call::Kv(op.clone())) {
            Outcome::Ok(Answer::Kv(ret)) => Outcome::Ok(ret),
            Outcome::Ok(_) | Outcome::Unknown => Outcome::Unknown,
            Outcome::Fail => Outcome::Fail,
        }
    }

    fn workload(&self) -> Workload {
        self.workload
    }

    fn ordered(&self) -> fleetcheck_engine::collections::QueueOrder {
        self.ordered
    }

    /// The first node that is up of the role client operations go to.
    fn reader(&self, state: &KvState) -> Option<String> {
        crate::kv::routed(state, self.client.config.route.as_deref())
            .into_iter()
            .next()
    }

    fn call(&self, c: &FileCluster, node: &str, call: &Call) -> Outcome<Answer> {
        if let Some(program) = &self.client.program {
            return self.op_through(c, program, node, call);
        }
        let Some(cmd) = self.command(c, node, call) else {
            // Validated: the file gives every operation its workload runs.
            return Outcome::Fail;
        };
        let read = call.reads();
        let unsure = service::unsure(read);
        let deadline = self.op_timeout + Duration::from_secs(2);
        let host = self.client_host(node);
        let out = match service::client_command(c.net.as_ref(), host, cmd, deadline, read) {
            Ok(out) => out,
            Err(outcome) => return outcome,
        };
        let cl = &self.client.config;
        if !out.success() {
            let stderr = out.stderr_str();
            return if cl.refused.iter().any(|r| stderr.contains(r.as_str())) {
                Outcome::Fail
            } else {
                unsure
            };
        }
        match self.answer(call, &out.stdout_str()) {
            Some(answer) => Outcome::Ok(answer),
            // Output that is no answer: a read learnt nothing, a write may have happened.
            None => unsure,
        }
    }

    fn run(
        &self,
        c: &FileCluster,
        state: &KvState,
        name: &str,
        node: &str,
    ) -> Result<Result<(), String>, Abort> {
        let (template, own) = self
            .commands
            .get(name)
            .ok_or_else(|| Abort::new(format!("the scenario file has no command {name}")))?;
        let ran = self.run_own(c, state, node, template)?;
        // Client programs started from now on see the machines' roles after it.
        *c.peers.lock().unwrap_or_else(|e| e.into_inner()) = peers_of(&own.effect(state, node));
        Ok(ran)
    }

    fn invariants(
        &self,
        c: &FileCluster,
        state: &KvState,
    ) -> Result<fleetcheck_engine::Check, Abort> {
        for (name, template) in &self.invariants {
            for node in state.awake() {
                if let Err(why) = self.run_own(c, state, &node, template)? {
                    return Ok(Err(format!("invariant {name} on {node} failed: {why}")));
                }
            }
        }
        Ok(Ok(()))
    }

    fn finishes(&self) -> bool {
        !self.eventually.is_empty() || self.workload.reads_at_the_end()
    }

    /// Heals every fault, boots every node that is down (its services started again), then
    /// waits for each eventually-check to hold on the first node (a collection workload's
    /// final reads come after, from the kv system).
    fn finish(
        &self,
        c: &FileCluster,
        state: &KvState,
    ) -> Result<(fleetcheck_engine::Check, KvState), Abort> {
        if !self.finishes() {
            return Ok((Ok(()), state.clone()));
        }
        let mut now = state.clone();
        let heal = now.heal_commands();
        let restart = now
            .down()
            .into_iter()
            .map(|machine| ClusterCmd::Restart { machine });
        for command in heal.into_iter().chain(restart).collect::<Vec<_>>() {
            self.fault(c, &now, &command)?;
            now = now.next_state(&command);
        }
        let first = now
            .machines
            .first()
            .map(|m| m.id.clone())
            .ok_or_else(|| Abort::new("a cluster of no nodes"))?;
        for (name, (template, within)) in &self.eventually {
            let vars = self.service_vars(c, &now, &first, "")?;
            let condition = template.render(&vars);
            if !service::probe(c.net.as_ref(), &first, &condition, *within) {
                let why = format!(
                    "eventually {name} did not hold on {first} within {within:?} once every \
                     fault was healed ({condition})"
                );
                return Ok((Err(why), now));
            }
        }
        Ok((Ok(()), now))
    }

    fn after_batch(&self, c: &FileCluster) -> Result<(), Abort> {
        match c.broken.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(abort) => Err(abort),
            None => Ok(()),
        }
    }

    fn fault(&self, c: &FileCluster, state: &KvState, command: &ClusterCmd) -> Result<(), Abort> {
        // The client programs of a machine that goes down go with it.
        let next = state.next_state(command);
        c.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|node, _| next.machine(node).is_some_and(|m| m.running));
        // A node about to shut down stops its services first, if they say how.
        if let Some(node) = crate::kv::shuts_down(state, command) {
            self.stop_services(c, state, node)?;
        }
        crate::kv::apply_fault(c.net.as_ref(), state, self.service.as_ref(), command)?;
        // A restarted or upgraded node starts its services again on its kept data.
        if let Some(node) = crate::kv::restarts_service(state, command) {
            self.launch(c, &state.next_state(command), node)?;
        }
        if !matches!(command, ClusterCmd::Block { .. } | ClusterCmd::Loss { .. }) {
            self.settle(c, &next);
        }
        Ok(())
    }

    fn network<'a>(&self, c: &'a FileCluster) -> Option<&'a dyn Network> {
        Some(c.net.as_ref())
    }

    /// The files of every service's `logs` on `node`, paths inside the machine.
    fn log_files(&self, c: &FileCluster, node: &str) -> Vec<String> {
        let peers = c.peers();
        let Some(peer) = peers.iter().find(|p| p.id == node) else {
            return Vec::new();
        };
        let Some(data) = c.net.data_dir(node) else {
            return Vec::new();
        };
        let vars = Vars {
            values: BTreeMap::from([
                ("id", peer.id.clone()),
                ("ip", peer.ip.clone()),
                ("role", peer.role.clone()),
                ("data", data.display().to_string()),
            ]),
            peers: Vec::new().into(),
        };
        self.services
            .iter()
            .flat_map(|s| s.logs.iter().map(|t| t.render(&vars)))
            .collect()
    }

    fn stop(&self, c: FileCluster) -> Result<(), Abort> {
        Ok(c.net.teardown()?)
    }
}
