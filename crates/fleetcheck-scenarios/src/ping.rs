//! The seed's test: 1–4 initially stopped machines, Boot, Shutdown and Ping(from, to), with
//! the seed's generators, frequencies, preconditions and postconditions. Optionally
//! (`[ping] faults`) also Pause/Resume, Partition, one-way Block and Heal, whose effect on
//! pings the model predicts.
//!
//! Machines carry parameters beyond memory and kernel when the configuration asks for them: a
//! role, the file system of their data directory and a version per service, each drawn from
//! its domain and shrunk toward the first choice; with `[ping] upgrade` a rolling `Upgrade`
//! gives one machine another version (shut down, replaced, booted again, data kept).
//!
//! [`PingModel`] is pure; [`PingSystem`] runs it on any fabric backend (the in-memory fake or
//! real namespaces), so the same scenario runs on both arms.

use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetcheck_engine::{check, Abort, Check, Gen, Labels, Model, System};
use fleetcheck_fabric::load::{Lateness, LoadProbe};
use fleetcheck_fabric::{Backend, Network};
use serde::{Deserialize, Serialize};

pub use crate::cluster::Machine;
use crate::cluster::{self, ClusterCmd, ClusterState, Fault, Kind, Plan};
use crate::config::{MachineDomain, ScenarioConfig};

/// The model state: the network ([`ClusterState`]; its cuts are what the model predicts
/// pings by).
pub type PingState = ClusterState;

/// Whether an echo from `from` to `to` and its reply can both get through, and the target
/// must answer: it is running, not paused, and not cut off from the sender either way.
pub fn expects_reply(s: &PingState, from: &str, to: &str) -> bool {
    s.machine(to).is_some_and(Machine::awake) && s.reachable(from, to)
}

/// A command: an infrastructure command of the cluster layer, or a ping. Machines are named
/// by id; the model state is looked up when it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", content = "args")]
pub enum PingCmd {
    /// Send an ICMP echo from a running machine to any machine.
    Ping {
        /// The sender (running).
        from: String,
        /// The target (running or not).
        to: String,
    },
    /// Boot, Shutdown, Pause, Resume, Partition, Block, Heal or Upgrade.
    #[serde(untagged)]
    Cluster(ClusterCmd),
}

impl From<ClusterCmd> for PingCmd {
    fn from(c: ClusterCmd) -> Self {
        PingCmd::Cluster(c)
    }
}

/// What a command returned.
#[derive(Clone, PartialEq, Eq)]
pub enum PingOutput {
    /// Boot or Shutdown went through (`Err`: the machine's own failure, e.g. a setup command).
    Done(Result<(), String>),
    /// Whether a ping got its reply.
    Reply(bool),
    /// A ping the model requires an answer to got none within `timeout_ms` while the host
    /// was loaded (`load`, see [`PingSystem`]), and was sent again with `grace_ms`: whether
    /// that one got its reply. The postcondition judges `reply`.
    Rechecked {
        /// Whether the re-check got its reply.
        reply: bool,
        /// The ping's own timeout.
        timeout_ms: u64,
        /// How loaded the host was during the first ping ([`Lateness::brief`]).
        load: String,
        /// The re-check's timeout.
        grace_ms: u64,
    },
}

impl PingOutput {
    /// Whether a ping (first try or re-check) got its reply; `None` for other commands.
    pub fn replied(&self) -> Option<bool> {
        match self {
            PingOutput::Reply(r) | PingOutput::Rechecked { reply: r, .. } => Some(*r),
            PingOutput::Done(_) => None,
        }
    }
}

impl fmt::Debug for PingOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PingOutput::Done(Ok(())) => f.write_str("ok"),
            PingOutput::Done(Err(e)) => write!(f, "failed: {e}"),
            PingOutput::Reply(true) => f.write_str("reply"),
            PingOutput::Reply(false) => f.write_str("no reply"),
            PingOutput::Rechecked {
                reply,
                timeout_ms,
                load,
                grace_ms,
            } => write!(
                f,
                "{} (none within {timeout_ms} ms while {load}; {} within {grace_ms} ms on a re-check)",
                if *reply { "reply" } else { "no reply" },
                if *reply { "one" } else { "nor" },
            ),
        }
    }
}

/// The seed's model, with its parameter domains taken from a [`ScenarioConfig`].
#[derive(Debug, Clone, Default)]
pub struct PingModel {
    /// The domains (and, for the system, setup commands and timeout).
    pub config: ScenarioConfig,
}

impl PingModel {
    /// The model for a validated configuration.
    pub fn new(config: ScenarioConfig) -> Self {
        Self { config }
    }

    /// What the cluster layer generates for it: the faults of `[ping] faults` (and upgrades
    /// with `[ping] upgrade`), each role's versions; network faults only while a machine is
    /// up, partitions on top of partitions.
    pub fn plan(&self) -> Plan {
        let mut faults = self.config.ping.faults.clone();
        if self.config.ping.upgrade {
            faults.push(Fault::Upgrade);
        }
        let versions = self
            .config
            .domains()
            .into_iter()
            .map(|d| {
                let versions = d.versions.into_iter().map(|(service, versions)| {
                    (service, versions.into_iter().map(|v| v.version).collect())
                });
                (d.role, versions.collect())
            })
            .collect();
        Plan {
            faults,
            versions,
            network_faults_need_a_machine_up: true,
            partitions_stack: true,
            leader: None,
        }
    }
}

impl Model for PingModel {
    type State = PingState;
    type Command = PingCmd;
    type Output = PingOutput;

    fn initial_state(&self, g: &mut Gen) -> PingState {
        let net = &self.config.network;
        let domains = self.config.domains();
        // One role per machine, roles in name order.
        let mut roles: Vec<&MachineDomain> = Vec::new();
        for d in &domains {
            let count = g.range(d.count.min..=d.count.max) as usize;
            roles.extend(std::iter::repeat_n(d, count));
        }
        let count = roles.len();
        // Distinct addresses by construction: host indices 1.. (the seed's .2 to .254 in a /24).
        let hosts = cluster::distinct_hosts(g, net.subnet, count);
        let mut machines: Vec<Machine> = Vec::with_capacity(count);
        for (ip, domain) in hosts.into_iter().zip(roles) {
            let mut m = Machine::new(
                cluster::fresh_id(g, |id| machines.iter().any(|m| m.id == id)),
                ip,
            );
            m.uuid = g.uuid();
            m.memory_mb = g.range(domain.memory_mb.min..=domain.memory_mb.max);
            m.kernel = g
                .choose(&domain.kernels)
                .expect("validated: at least one kernel")
                .clone();
            m.role = domain.role.clone();
            m.lose_unsynced = domain.lose_unsynced;
            // Drawn only when configured, so older configurations give the same cases.
            m.filesystem = g.choose(&domain.filesystem).copied();
            for (service, versions) in &domain.versions {
                let v = g.choose(versions).expect("validated: at least one version");
                m.versions.insert(service.clone(), v.version.clone());
            }
            machines.push(m);
        }
        PingState::new(net.subnet, machines)
    }

    /// Machines as [`crate::rules::check_members`] says, each off, with memory within the
    /// limits, a kernel, a role and versions the configuration has; no cuts.
    fn check_initial(&self, s: &PingState) -> Check {
        use crate::rules;
        rules::check_members(
            "machine",
            s.subnet,
            s.machines.iter().map(|m| (m.id.as_str(), m.ip)),
            rules::MOST_MACHINES,
        )?;
        let roles = self.config.domains();
        for m in &s.machines {
            rules::check_memory(&m.id, m.memory_mb)?;
            if m.running || m.paused {
                return Err(format!(
                    "has machine {} running, but every case starts with its machines off",
                    m.id
                ));
            }
            if m.kernel.is_empty() || m.kernel.contains(['/', '\0']) {
                return Err(format!("gives machine {} no usable kernel name", m.id));
            }
            if !roles.iter().any(|d| d.role == m.role) {
                return Err(format!(
                    "gives machine {} role `{}`, which the configuration does not have",
                    m.id, m.role
                ));
            }
            for (service, version) in &m.versions {
                if cluster::service_version(&self.config.services, service, version).is_none() {
                    return Err(format!(
                        "gives machine {} version `{version}` of {service}, which [services.{service}] does not list",
                        m.id
                    ));
                }
            }
        }
        if s.network_faulty() {
            return Err("has cuts, but every case starts with a whole network".into());
        }
        Ok(())
    }

    /// Fewer machines first (never fewer than the configured minimum), then per machine the
    /// preferred versions and file system, the first kernel of the list and less memory.
    fn shrink_state(&self, s: &PingState) -> Vec<PingState> {
        s.shrink(&self.config.domains())
    }

    /// The seed's `genCommand`: only Boot when all are off; Shutdown 1 : PingOnline 4 when all
    /// are on; otherwise Boot 2 : Shutdown 1 : PingOnline 4 : PingOffline 4. With faults
    /// enabled, Pause 1 / Resume 2, Partition 1, Block 1 and Heal 2 join in where they apply.
    fn command(&self, s: &PingState, g: &mut Gen) -> Option<PingCmd> {
        #[derive(Clone, Copy)]
        enum Pick {
            Cluster(Kind),
            PingOnline,
            PingOffline,
        }
        let (up, down) = (s.up(), s.down());
        let mut kinds: Vec<(u32, Pick)> = if up.is_empty() {
            vec![(1, Pick::Cluster(Kind::Boot))]
        } else if down.is_empty() {
            vec![(1, Pick::Cluster(Kind::Shutdown)), (4, Pick::PingOnline)]
        } else {
            vec![
                (2, Pick::Cluster(Kind::Boot)),
                (1, Pick::Cluster(Kind::Shutdown)),
                (4, Pick::PingOnline),
                (4, Pick::PingOffline),
            ]
        };
        let plan = self.plan();
        kinds.extend(
            s.fault_kinds(&plan)
                .into_iter()
                .map(|(w, k)| (w, Pick::Cluster(k))),
        );
        let awake = s.awake();
        Some(match *g.frequency(&kinds)? {
            Pick::Cluster(kind) => PingCmd::Cluster(s.draw(kind, &plan, g)?),
            Pick::PingOnline => PingCmd::Ping {
                from: g.choose(&awake)?.clone(),
                to: g.choose(&up)?.clone(),
            },
            Pick::PingOffline => PingCmd::Ping {
                from: g.choose(&awake)?.clone(),
                to: g.choose(&down)?.clone(),
            },
        })
    }

    fn precondition(&self, s: &PingState, c: &PingCmd) -> bool {
        match c {
            PingCmd::Ping { from, to } => {
                s.machine(from).is_some_and(Machine::awake) && s.machine(to).is_some()
            }
            PingCmd::Cluster(c) => c.precondition(s, &self.plan()),
        }
    }

    fn next_state(&self, s: &PingState, c: &PingCmd) -> PingState {
        match c {
            PingCmd::Ping { .. } => s.clone(),
            PingCmd::Cluster(c) => s.next_state(c),
        }
    }

    /// Upgrades go to earlier (preferred) versions.
    fn shrink_command(&self, c: &PingCmd) -> Vec<PingCmd> {
        match c {
            PingCmd::Ping { .. } => Vec::new(),
            PingCmd::Cluster(c) => c
                .shrink(&self.plan())
                .into_iter()
                .map(PingCmd::from)
                .collect(),
        }
    }

    fn postcondition(&self, s: &PingState, c: &PingCmd, out: &PingOutput) -> Check {
        match (c, out) {
            (PingCmd::Ping { from, to }, PingOutput::Reply(_) | PingOutput::Rechecked { .. }) => {
                let reply = out.replied().unwrap_or_default();
                let target = s.machine(to);
                let up = target.is_some_and(|m| m.running);
                let awake = target.is_some_and(Machine::awake);
                let reachable = s.reachable(from, to);
                let expected = expects_reply(s, from, to);
                check(reply == expected, || {
                    let ip = target.map(|m| m.ip.to_string()).unwrap_or_default();
                    let why = if !up {
                        "is off"
                    } else if !awake {
                        "is paused"
                    } else if !reachable {
                        "is cut off from it"
                    } else {
                        "is running"
                    };
                    if expected {
                        format!("{to} ({ip}) {why} but did not answer a ping from {from}")
                    } else {
                        format!("{to} ({ip}) {why} but answered a ping from {from}")
                    }
                })
            }
            (PingCmd::Cluster(c), PingOutput::Done(r)) => r.clone().map_err(|e| match c {
                ClusterCmd::Boot { machine } => format!("boot of {machine} failed: {e}"),
                ClusterCmd::Shutdown { machine } => format!("shutdown of {machine} failed: {e}"),
                c => format!("{} failed: {e}", c.describe()),
            }),
            (c, out) => Err(format!(
                "{} returned {out:?}, which it cannot",
                self.describe_command(c)
            )),
        }
    }

    /// Pings to an offline machine wait for the whole timeout; boots start processes.
    fn cost(&self, c: &PingCmd) -> u32 {
        match c {
            PingCmd::Ping { .. } => 2,
            PingCmd::Cluster(c) => c.cost(),
        }
    }

    fn labels(&self, initial: &PingState, commands: &[PingCmd], labels: &mut Labels) {
        labels.add("machines", initial.machines.len());
        let mut parameters = cluster::ParameterLabels::default();
        for m in &initial.machines {
            if !m.role.is_empty() {
                labels.add("role", &m.role);
            }
            let versions = m.versions.iter().map(|(s, v)| (s.as_str(), v.as_str()));
            parameters.machine(labels, m.filesystem, versions);
            if m.filesystem.is_some() || !m.versions.is_empty() {
                let role = if m.role.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", m.role)
                };
                labels.add("machine parameters", format!("{role}{}", m.parameters()));
            }
            labels.add("kernel", &m.kernel);
            let bucket = m.memory_mb / 32 * 32;
            let top = (bucket + 31).min(self.config.machine.memory_mb.max);
            labels.add("memory (MiB)", format!("{bucket}-{top}"));
        }
        parameters.finish(labels, "network");
        // Online and offline pings, as the seed's generator tells them apart.
        let mut state = initial.clone();
        for c in commands {
            if let PingCmd::Ping { from, to } = c {
                let target = state.machine(to);
                let what = if !target.is_some_and(|m| m.running) {
                    "offline"
                } else if target.is_some_and(|m| m.paused) {
                    "paused"
                } else if !state.reachable(from, to) {
                    "cut off"
                } else {
                    "online"
                };
                labels.add("ping target", what);
            }
            state = self.next_state(&state, c);
        }
    }

    fn describe_state(&self, s: &PingState) -> String {
        let mut out = format!("{} machine(s) on {}:\n", s.machines.len(), s.subnet);
        let roles = s.machines.iter().any(|m| !m.role.is_empty());
        let params = s
            .machines
            .iter()
            .any(|m| m.filesystem.is_some() || !m.versions.is_empty());
        let width = s
            .machines
            .iter()
            .map(|m| m.role.len())
            .max()
            .unwrap_or(0)
            .max(4);
        let role = |r: &str| {
            if roles {
                format!("{r:<width$}  ")
            } else {
                String::new()
            }
        };
        let _ = write!(
            out,
            "  {:<8}  {}{:<15}  {:>6}  {:<7}  uuid",
            "id",
            role("role"),
            "ip",
            "memory",
            "kernel"
        );
        if params {
            out.push_str("                                  parameters");
        }
        out.push('\n');
        for m in &s.machines {
            let _ = write!(
                out,
                "  {:<8}  {}{:<15}  {:>3} MiB  {:<7}  {}",
                m.id,
                role(&m.role),
                m.ip,
                m.memory_mb,
                m.kernel,
                m.uuid
            );
            if params {
                let _ = write!(out, "  {}", m.parameters());
            }
            out.push('\n');
        }
        out
    }

    fn state_size(&self, s: &PingState) -> Option<String> {
        let n = s.machines.len();
        Some(format!("{n} machine{}", if n == 1 { "" } else { "s" }))
    }

    fn summarize_state(&self, s: &PingState) -> String {
        s.summary()
    }

    fn command_name(&self, c: &PingCmd) -> String {
        match c {
            PingCmd::Ping { .. } => "Ping".into(),
            PingCmd::Cluster(c) => c.name().into(),
        }
    }

    fn describe_command(&self, c: &PingCmd) -> String {
        match c {
            PingCmd::Ping { from, to } => format!("Ping({from} -> {to})"),
            PingCmd::Cluster(c) => c.describe(),
        }
    }
}

/// Runs the ping model on a fabric backend: one fresh network per case.
#[derive(Debug, Clone)]
pub struct PingSystem {
    backend: Arc<dyn Backend>,
    config: ScenarioConfig,
    timeout: Duration,
}

impl PingSystem {
    /// Cases to run at once by default: four per CPU. A ping case spends most of its time
    /// waiting (offline pings wait out their timeout, boots wait for agents), not computing;
    /// on 2 CPUs, 8 workers ran 100 cases in 3.7 s against 4.8 s with 4.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get() * 4)
    }

    /// A system on `backend` with the setup commands and ping timeout of `config`.
    pub fn new(backend: Arc<dyn Backend>, config: &ScenarioConfig) -> Self {
        Self {
            backend,
            config: config.clone(),
            timeout: Duration::from_millis(config.ping.timeout_ms),
        }
    }
}

/// How late the host may be during a ping before its missing reply is checked again: a
/// tenth of the timeout (10 ms of the default 100 ms).
pub fn late_limit(timeout: Duration) -> Duration {
    timeout / 10
}

/// The CPU pressure (share of the time some task waited for a CPU) above which a host counts
/// as loaded during a ping, however on time the probe's own timers were: tasks that wait are
/// late, and the probe is only one of them.
pub const LOADED_PRESSURE: f64 = 0.2;

/// Whether the host was loaded while a ping that got no reply ran: late by [`late_limit`]
/// or more, or under [`LOADED_PRESSURE`] or more.
pub fn was_loaded(late: &Lateness, timeout: Duration) -> bool {
    late.max >= late_limit(timeout) || late.cpu_pressure.is_some_and(|p| p >= LOADED_PRESSURE)
}

/// The re-check's timeout: four times the ping's, at least 1 s.
pub fn recheck_grace(timeout: Duration) -> Duration {
    (timeout * 4).max(Duration::from_secs(1))
}

/// How much longer the second re-check waits than the first (after the host stalled through
/// the first).
pub const RECHECK_GROWTH: u32 = 3;

/// How late the host may be during the re-check before the ping cannot be judged: a quarter
/// of the grace (250 ms of 1 s: some thread ready to run waited that long for a CPU).
pub fn too_loaded_limit(grace: Duration) -> Duration {
    grace / 4
}

impl PingSystem {
    /// A ping the model requires an answer to, judged fairly on a loaded host. The host's
    /// load is measured while it runs ([`LoadProbe`]: the longest a 1 ms timer wait overran,
    /// how long `ksoftirqd` waited, the ping's own overrun of its timeout, CPU pressure). A
    /// reply, or no reply on a host that was not loaded ([`was_loaded`]), is the answer.
    /// No reply on a loaded host is
    /// checked again with [`recheck_grace`]; a re-check without reply while the host was late
    /// by [`too_loaded_limit`] or more is tried once more, [`RECHECK_GROWTH`] times as long;
    /// if that one is stalled through too, the host was too loaded to judge
    /// ([`Abort::overloaded`]), else the first re-check not stalled through is the answer
    /// ([`PingOutput::Rechecked`]).
    fn ping_judged_under_load(
        &self,
        net: &dyn Network,
        from: &str,
        to: &str,
        ip: Ipv4Addr,
    ) -> Result<PingOutput, Abort> {
        // Whether it got a reply, whether it waited out its timeout, how loaded the host was.
        let measured = |timeout: Duration| -> Result<(bool, bool, Lateness), Abort> {
            let probe = LoadProbe::start();
            let began = Instant::now();
            let reply = net.ping(from, ip, timeout)?;
            let took = began.elapsed();
            let mut late = probe.stop();
            late.max = late.max.max(took.saturating_sub(timeout));
            Ok((reply, took >= timeout, late))
        };
        let (reply, waited, late) = measured(self.timeout)?;
        // A missing reply that did not wait out the timeout (the fake backend, a sender that
        // cannot send) owes nothing to time.
        if reply || !waited || !was_loaded(&late, self.timeout) {
            return Ok(PingOutput::Reply(reply));
        }
        // A re-check the host stalled through is tried once more, three times as long: a
        // stall of a quarter of a second is common on a host busy with VMs, one of most of a
        // second rare, and a real fault gets no reply either way.
        let first = recheck_grace(self.timeout);
        let mut stalled = Vec::new();
        for grace in [first, first * RECHECK_GROWTH] {
            let (again, _, late_again) = measured(grace)?;
            if again || late_again.max < too_loaded_limit(grace) {
                return Ok(PingOutput::Rechecked {
                    reply: again,
                    timeout_ms: self.timeout.as_millis() as u64,
                    load: late.brief(),
                    grace_ms: grace.as_millis() as u64,
                });
            }
            stalled.push(format!(
                "{} ms on a re-check while {}",
                grace.as_millis(),
                late_again.describe()
            ));
        }
        Err(Abort::overloaded(format!(
            "the host was too loaded to judge Ping({from} -> {to}): no reply within {} ms \
             while {}, nor within {}",
            self.timeout.as_millis(),
            late.describe(),
            stalled.join(", nor within ")
        )))
    }
}

impl System<PingModel> for PingSystem {
    type Instance = Box<dyn Network>;

    fn setup(&self, initial: &PingState) -> Result<Box<dyn Network>, Abort> {
        let spec = initial.network_spec(&self.config.domains(), &self.config.services)?;
        Ok(self.backend.create(&spec)?)
    }

    fn run(
        &self,
        net: &mut Box<dyn Network>,
        s: &PingState,
        c: &PingCmd,
    ) -> Result<PingOutput, Abort> {
        match c {
            PingCmd::Ping { from, to } => {
                let target = s
                    .machine(to)
                    .ok_or_else(|| Abort::new(format!("no machine {to} in the model")))?;
                if !expects_reply(s, from, to) {
                    // No load makes a reply that must not come: judged as it is.
                    return Ok(PingOutput::Reply(net.ping(
                        from,
                        target.ip,
                        self.timeout,
                    )?));
                }
                self.ping_judged_under_load(net.as_ref(), from, to, target.ip)
            }
            PingCmd::Cluster(c) => Ok(PingOutput::Done(c.apply(
                net.as_ref(),
                s,
                &self.config.services,
            )?)),
        }
    }

    /// Heals every fault first (resumes paused machines, removes cuts); a heal that fails
    /// aborts the case, after the network is torn down anyway.
    fn teardown(&self, net: Box<dyn Network>) -> Result<(), Abort> {
        let healed = cluster::heal_all(net.as_ref());
        net.teardown()?;
        healed.map_err(|e| Abort::new(format!("healing the faults before teardown failed: {e}")))
    }
}
