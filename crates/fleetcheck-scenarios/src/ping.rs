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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetcheck_engine::{check, Abort, Check, Gen, Labels, Model, System};
use fleetcheck_fabric::load::{Lateness, LoadProbe};
use fleetcheck_fabric::{
    Backend, BootError, FileSystem, MachineSpec, Network, NetworkSpec, ServiceVersion, Subnet,
};
use serde::{Deserialize, Serialize};

use crate::cluster::{self, Fault, Power};
use crate::config::{MachineDomain, ScenarioConfig};

/// One machine of the model: the seed's `Machine` case class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// 8 random lowercase letters; also the hostname.
    pub id: String,
    /// A random UUID, as in the seed.
    pub uuid: String,
    /// Its address, distinct from every other machine's.
    pub ip: Ipv4Addr,
    /// Memory in MiB.
    pub memory_mb: u32,
    /// Kernel version.
    pub kernel: String,
    /// Whether the model says it is up.
    pub running: bool,
    /// Whether it is frozen (running, but answering nothing).
    #[serde(default)]
    pub paused: bool,
    /// Its role (`[roles.<name>]`); empty without roles.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    /// The file system of its data directory, if it has one of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FileSystem>,
    /// The version of each service it runs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, String>,
}

impl Machine {
    /// `ext4 fw=1.0`: its file system and versions, for labels and reports (`-` if none).
    pub fn parameters(&self) -> String {
        let mut parts: Vec<String> = self.filesystem.iter().map(|f| f.to_string()).collect();
        parts.extend(self.versions.iter().map(|(s, v)| format!("{s}={v}")));
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(" ")
        }
    }
}

/// The model state: the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingState {
    /// The subnet the machines live in.
    pub subnet: Subnet,
    /// The machines, in generation order.
    pub machines: Vec<Machine>,
    /// Directed cuts `(from, to)`: packets from `from` to `to` are dropped (until Heal).
    #[serde(default)]
    pub cuts: BTreeSet<(String, String)>,
}

cluster::member!(Machine);

impl PingState {
    /// The machine named `id`.
    pub fn machine(&self, id: &str) -> Option<&Machine> {
        self.machines.iter().find(|m| m.id == id)
    }

    fn ids(&self, running: bool) -> Vec<String> {
        cluster::ids(&self.machines, |m| m.running == running)
    }

    /// Running machines that are not paused: those that can act.
    fn awake(&self) -> Vec<String> {
        cluster::awake(&self.machines)
    }

    fn paused(&self) -> Vec<String> {
        cluster::ids(&self.machines, |m| m.paused)
    }

    /// Whether an echo from `from` to `to` and its reply can both get through.
    pub fn reachable(&self, from: &str, to: &str) -> bool {
        let cut = |a: &str, b: &str| self.cuts.contains(&(a.to_string(), b.to_string()));
        from == to || !(cut(from, to) || cut(to, from))
    }

    /// Whether the model requires a ping from `from` to `to` to be answered: the target is
    /// running, not paused, and not cut off from the sender either way.
    pub fn expects_reply(&self, from: &str, to: &str) -> bool {
        self.machine(to).is_some_and(|m| m.running && !m.paused) && self.reachable(from, to)
    }

    /// The fabric's description of this network, every machine running `setup` at boot.
    pub fn network_spec(&self, setup: &[String]) -> NetworkSpec {
        NetworkSpec {
            subnet: self.subnet,
            machines: self
                .machines
                .iter()
                .map(|m| MachineSpec {
                    id: m.id.clone(),
                    ip: m.ip,
                    memory_mb: m.memory_mb,
                    kernel: m.kernel.clone(),
                    setup: setup.to_vec(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// The fabric's description of this network under `config`: each machine with its role's
    /// setup commands, its file system and the programs of its service versions.
    pub fn network_spec_for(&self, config: &ScenarioConfig) -> NetworkSpec {
        let domains = config.domains();
        NetworkSpec {
            subnet: self.subnet,
            machines: self
                .machines
                .iter()
                .map(|m| {
                    let domain = domains.iter().find(|d| d.role == m.role);
                    let setup = domain.map_or(config.machine.setup.clone(), |d| d.setup.clone());
                    MachineSpec {
                        id: m.id.clone(),
                        ip: m.ip,
                        memory_mb: m.memory_mb,
                        kernel: m.kernel.clone(),
                        setup,
                        filesystem: m.filesystem,
                        services: m
                            .versions
                            .iter()
                            .filter_map(|(s, v)| Some((s.clone(), service_version(config, s, v)?)))
                            .collect(),
                        lose_unsynced: false,
                    }
                })
                .collect(),
        }
    }
}

/// Version `version` of `service` as `[services]` describes it.
pub fn service_version(
    config: &ScenarioConfig,
    service: &str,
    version: &str,
) -> Option<ServiceVersion> {
    config
        .services
        .get(service)?
        .versions
        .iter()
        .find(|v| v.version == version)
        .cloned()
}

/// A command. Machines are named by id; the model state is looked up when it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", content = "args")]
pub enum PingCmd {
    /// Boot a stopped machine and wait until it is up.
    Boot {
        /// The machine.
        machine: String,
    },
    /// Cut the power of a running machine.
    Shutdown {
        /// The machine.
        machine: String,
    },
    /// Send an ICMP echo from a running machine to any machine.
    Ping {
        /// The sender (running).
        from: String,
        /// The target (running or not).
        to: String,
    },
    /// Freeze every process of a running machine.
    Pause {
        /// The machine.
        machine: String,
    },
    /// Thaw a paused machine.
    Resume {
        /// The machine.
        machine: String,
    },
    /// Cut the network between groups (machines in no group form one more group).
    Partition {
        /// The groups.
        groups: Vec<Vec<String>>,
    },
    /// Drop packets from one machine to another, one way.
    Block {
        /// The sender whose packets are dropped.
        from: String,
        /// Their destination.
        to: String,
    },
    /// Remove every partition and block.
    Heal,
    /// A rolling upgrade: the machine gets `version` of `service` (shut down first if running,
    /// booted again afterwards, its data kept).
    Upgrade {
        /// The machine (running or off, not paused).
        machine: String,
        /// The service.
        service: String,
        /// The version it gets.
        version: String,
    },
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

    /// The versions of `service` machine `m`'s role allows, the first preferred.
    fn allowed_versions(&self, m: &Machine, service: &str) -> Vec<String> {
        self.config
            .domain(&m.role)
            .and_then(|d| d.versions.get(service).cloned())
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.version)
            .collect()
    }

    /// Every rolling upgrade possible now (with `[ping] upgrade`): a machine that is not
    /// paused to another allowed version of one of its services.
    fn upgrades(&self, s: &PingState) -> Vec<PingCmd> {
        if !self.config.ping.upgrade {
            return Vec::new();
        }
        let mut all = Vec::new();
        for m in s.machines.iter().filter(|m| !m.paused) {
            for (service, current) in &m.versions {
                for version in self.allowed_versions(m, service) {
                    if version != *current {
                        all.push(PingCmd::Upgrade {
                            machine: m.id.clone(),
                            service: service.clone(),
                            version,
                        });
                    }
                }
            }
        }
        all
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
            let mut m = Machine {
                id: cluster::fresh_id(g, |id| machines.iter().any(|m| m.id == id)),
                uuid: g.uuid(),
                ip,
                memory_mb: g.range(domain.memory_mb.min..=domain.memory_mb.max),
                kernel: g
                    .choose(&domain.kernels)
                    .expect("validated: at least one kernel")
                    .clone(),
                running: false,
                paused: false,
                role: domain.role.clone(),
                filesystem: None,
                versions: BTreeMap::new(),
            };
            // Drawn only when configured, so older configurations give the same cases.
            m.filesystem = g.choose(&domain.filesystem).copied();
            for (service, versions) in &domain.versions {
                let v = g.choose(versions).expect("validated: at least one version");
                m.versions.insert(service.clone(), v.version.clone());
            }
            machines.push(m);
        }
        PingState {
            subnet: net.subnet,
            machines,
            cuts: BTreeSet::new(),
        }
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
                if service_version(&self.config, service, version).is_none() {
                    return Err(format!(
                        "gives machine {} version `{version}` of {service}, which [services.{service}] does not list",
                        m.id
                    ));
                }
            }
        }
        if !s.cuts.is_empty() {
            return Err("has cuts, but every case starts with a whole network".into());
        }
        Ok(())
    }

    /// Fewer machines first (never fewer than the configured minimum), then per machine the
    /// first kernel of the list and less memory.
    fn shrink_state(&self, s: &PingState) -> Vec<PingState> {
        let mut out = Vec::new();
        let domains = self.config.domains();
        let domain_of = |m: &Machine| {
            domains
                .iter()
                .find(|d| d.role == m.role)
                .unwrap_or(&domains[0])
        };
        for i in 0..s.machines.len() {
            let role = &s.machines[i].role;
            let of_role = s.machines.iter().filter(|m| m.role == *role).count();
            if of_role > domain_of(&s.machines[i]).count.min as usize {
                let mut smaller = s.clone();
                smaller.machines.remove(i);
                out.push(smaller);
            }
        }
        // Then per machine, preferred parameters: the first versions and file system of its
        // domain, the first kernel, less memory.
        for (i, m) in s.machines.iter().enumerate() {
            let domain = domain_of(m);
            for (service, version) in &m.versions {
                let Some(versions) = domain.versions.get(service) else {
                    continue;
                };
                for earlier in cluster::earlier(versions, |v| v.version == *version) {
                    let mut simpler = s.clone();
                    simpler.machines[i]
                        .versions
                        .insert(service.clone(), earlier.version.clone());
                    out.push(simpler);
                }
            }
            for earlier in cluster::earlier(&domain.filesystem, |f| Some(*f) == m.filesystem) {
                let mut simpler = s.clone();
                simpler.machines[i].filesystem = Some(*earlier);
                out.push(simpler);
            }
        }
        for (i, m) in s.machines.iter().enumerate() {
            let domain = domain_of(m);
            let kernels = &domain.kernels;
            let min_memory = domain.memory_mb.min;
            let at = kernels.iter().position(|k| *k == m.kernel).unwrap_or(0);
            for kernel in &kernels[..at] {
                let mut simpler = s.clone();
                simpler.machines[i].kernel = kernel.clone();
                out.push(simpler);
            }
            let halfway = min_memory + m.memory_mb.saturating_sub(min_memory) / 2;
            for memory in [min_memory, halfway] {
                if memory < m.memory_mb {
                    let mut simpler = s.clone();
                    simpler.machines[i].memory_mb = memory;
                    out.push(simpler);
                }
            }
        }
        out
    }

    /// The seed's `genCommand`: only Boot when all are off; Shutdown 1 : PingOnline 4 when all
    /// are on; otherwise Boot 2 : Shutdown 1 : PingOnline 4 : PingOffline 4. With faults
    /// enabled, Pause 1 / Resume 2, Partition 1, Block 1 and Heal 2 join in where they apply.
    fn command(&self, s: &PingState, g: &mut Gen) -> Option<PingCmd> {
        #[derive(Clone, Copy)]
        enum Kind {
            Boot,
            Shutdown,
            PingOnline,
            PingOffline,
            Pause,
            Resume,
            Partition,
            Block,
            Heal,
            Upgrade,
        }
        let (up, down) = (s.ids(true), s.ids(false));
        let mut kinds: Vec<(u32, Kind)> = if up.is_empty() {
            vec![(1, Kind::Boot)]
        } else if down.is_empty() {
            vec![(1, Kind::Shutdown), (4, Kind::PingOnline)]
        } else {
            vec![
                (2, Kind::Boot),
                (1, Kind::Shutdown),
                (4, Kind::PingOnline),
                (4, Kind::PingOffline),
            ]
        };
        let faults = &self.config.ping.faults;
        let awake = s.awake();
        if !up.is_empty() {
            if faults.contains(&Fault::Pause) {
                if !awake.is_empty() {
                    kinds.push((1, Kind::Pause));
                }
                if !s.paused().is_empty() {
                    kinds.push((2, Kind::Resume));
                }
            }
            if s.machines.len() >= 2 {
                if faults.contains(&Fault::Partition) {
                    kinds.push((1, Kind::Partition));
                }
                if faults.contains(&Fault::Block) {
                    kinds.push((1, Kind::Block));
                }
            }
            if !s.cuts.is_empty() {
                kinds.push((2, Kind::Heal));
            }
        }
        let upgrades = self.upgrades(s);
        if !upgrades.is_empty() {
            kinds.push((1, Kind::Upgrade));
        }
        let kind = *g.frequency(&kinds)?;
        let all: Vec<String> = s.machines.iter().map(|m| m.id.clone()).collect();
        Some(match kind {
            Kind::Boot => PingCmd::Boot {
                machine: g.choose(&down)?.clone(),
            },
            Kind::Shutdown => PingCmd::Shutdown {
                machine: g.choose(&up)?.clone(),
            },
            Kind::PingOnline => PingCmd::Ping {
                from: g.choose(&awake)?.clone(),
                to: g.choose(&up)?.clone(),
            },
            Kind::PingOffline => PingCmd::Ping {
                from: g.choose(&awake)?.clone(),
                to: g.choose(&down)?.clone(),
            },
            Kind::Pause => PingCmd::Pause {
                machine: g.choose(&awake)?.clone(),
            },
            Kind::Resume => PingCmd::Resume {
                machine: g.choose(&s.paused())?.clone(),
            },
            Kind::Partition => PingCmd::Partition {
                groups: vec![cluster::partition_side(g, &all)?],
            },
            Kind::Block => {
                let (from, to) = cluster::one_way_block(g, &all)?;
                PingCmd::Block { from, to }
            }
            Kind::Heal => PingCmd::Heal,
            Kind::Upgrade => g.choose(&upgrades)?.clone(),
        })
    }

    fn precondition(&self, s: &PingState, c: &PingCmd) -> bool {
        let running = |id: &str| s.machine(id).map(|m| m.running);
        let awake = |id: &str| s.machine(id).is_some_and(|m| m.running && !m.paused);
        let exists = |id: &str| s.machine(id).is_some();
        match c {
            PingCmd::Boot { machine } => running(machine) == Some(false),
            PingCmd::Shutdown { machine } => running(machine) == Some(true),
            PingCmd::Ping { from, to } => awake(from) && exists(to),
            PingCmd::Pause { machine } => awake(machine),
            PingCmd::Resume { machine } => s.machine(machine).is_some_and(|m| m.paused),
            PingCmd::Partition { groups } => {
                let named: Vec<&String> = groups.iter().flatten().collect();
                let distinct: BTreeSet<&String> = named.iter().copied().collect();
                !groups.is_empty()
                    && groups.iter().all(|g| !g.is_empty())
                    && distinct.len() == named.len()
                    && named.iter().all(|id| exists(id))
                    // There must be a second group: another listed one, or the unlisted rest.
                    && (groups.len() >= 2 || named.len() < s.machines.len())
            }
            PingCmd::Block { from, to } => from != to && exists(from) && exists(to),
            PingCmd::Heal => !s.cuts.is_empty(),
            PingCmd::Upgrade {
                machine,
                service,
                version,
            } => s.machine(machine).is_some_and(|m| {
                !m.paused
                    && m.versions.get(service).is_some_and(|v| v != version)
                    && self.allowed_versions(m, service).contains(version)
            }),
        }
    }

    fn next_state(&self, s: &PingState, c: &PingCmd) -> PingState {
        let mut next = s.clone();
        let mut set = |id: &str, power| cluster::set_power(&mut next.machines, id, power);
        match c {
            PingCmd::Boot { machine } | PingCmd::Resume { machine } => set(machine, Power::On),
            PingCmd::Shutdown { machine } => set(machine, Power::Off),
            PingCmd::Pause { machine } => set(machine, Power::Paused),
            PingCmd::Ping { .. } => {}
            PingCmd::Partition { groups } => {
                let group_of = |id: &str| groups.iter().position(|g| g.iter().any(|x| x == id));
                for a in &s.machines {
                    for b in &s.machines {
                        if a.id != b.id && group_of(&a.id) != group_of(&b.id) {
                            next.cuts.insert((a.id.clone(), b.id.clone()));
                        }
                    }
                }
            }
            PingCmd::Block { from, to } => {
                next.cuts.insert((from.clone(), to.clone()));
            }
            PingCmd::Heal => next.cuts.clear(),
            PingCmd::Upgrade {
                machine,
                service,
                version,
            } => {
                if let Some(m) = next.machines.iter_mut().find(|m| m.id == *machine) {
                    m.versions.insert(service.clone(), version.clone());
                }
            }
        }
        next
    }

    fn postcondition(&self, s: &PingState, c: &PingCmd, out: &PingOutput) -> Check {
        match (c, out) {
            (PingCmd::Ping { from, to }, PingOutput::Reply(_) | PingOutput::Rechecked { .. }) => {
                let reply = out.replied().unwrap_or_default();
                let target = s.machine(to);
                let up = target.is_some_and(|m| m.running);
                let awake = target.is_some_and(|m| m.running && !m.paused);
                let reachable = s.reachable(from, to);
                let expected = s.expects_reply(from, to);
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
            (PingCmd::Boot { machine }, PingOutput::Done(r)) => r
                .clone()
                .map_err(|e| format!("boot of {machine} failed: {e}")),
            (PingCmd::Shutdown { machine }, PingOutput::Done(r)) => r
                .clone()
                .map_err(|e| format!("shutdown of {machine} failed: {e}")),
            (_, PingOutput::Done(r)) => r.clone().map_err(|e| format!("{c:?} failed: {e}")),
            (c, out) => Err(format!("{c:?} returned {out:?}, which it cannot")),
        }
    }

    /// Pings to an offline machine wait for the whole timeout; boots start processes.
    fn cost(&self, c: &PingCmd) -> u32 {
        match c {
            PingCmd::Boot { .. } => 3,
            // A shutdown and a boot.
            PingCmd::Upgrade { .. } => 4,
            PingCmd::Shutdown { .. } | PingCmd::Heal => 1,
            PingCmd::Ping { .. } => 2,
            // One nft transaction or freezer round trip each (about 18 ms on netns).
            PingCmd::Pause { .. }
            | PingCmd::Resume { .. }
            | PingCmd::Partition { .. }
            | PingCmd::Block { .. } => 2,
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
        let list = |running: bool| {
            let ids = s.ids(running);
            if ids.is_empty() {
                "-".to_string()
            } else {
                ids.join(" ")
            }
        };
        let mut out = format!("up: {}; off: {}", list(true), list(false));
        let paused = s.paused();
        if !paused.is_empty() {
            let _ = write!(out, "; paused: {}", paused.join(" "));
        }
        if !s.cuts.is_empty() {
            let cuts: Vec<String> = s.cuts.iter().map(|(a, b)| format!("{a}-/->{b}")).collect();
            let _ = write!(out, "; cut: {}", cuts.join(" "));
        }
        out
    }

    fn describe_command(&self, c: &PingCmd) -> String {
        match c {
            PingCmd::Boot { machine } => format!("Boot({machine})"),
            PingCmd::Shutdown { machine } => format!("Shutdown({machine})"),
            PingCmd::Ping { from, to } => format!("Ping({from} -> {to})"),
            PingCmd::Pause { machine } => format!("Pause({machine})"),
            PingCmd::Resume { machine } => format!("Resume({machine})"),
            PingCmd::Partition { groups } => {
                let groups: Vec<String> = groups.iter().map(|g| g.join(" ")).collect();
                format!("Partition({} | rest)", groups.join(" | "))
            }
            PingCmd::Block { from, to } => format!("Block({from} -/-> {to})"),
            PingCmd::Heal => "Heal".to_string(),
            PingCmd::Upgrade {
                machine,
                service,
                version,
            } => format!("Upgrade({machine}: {service} -> {version})"),
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
        Ok(self
            .backend
            .create(&initial.network_spec_for(&self.config))?)
    }

    fn run(
        &self,
        net: &mut Box<dyn Network>,
        s: &PingState,
        c: &PingCmd,
    ) -> Result<PingOutput, Abort> {
        match c {
            PingCmd::Boot { machine } => {
                let result = net
                    .boot(&[machine.as_str()])
                    .pop()
                    .expect("one result per machine");
                match result {
                    Ok(()) => Ok(PingOutput::Done(Ok(()))),
                    // The machine's own setup failed: that is the system's behaviour, which
                    // the postcondition judges. Everything else is the infrastructure's.
                    Err(e @ BootError::SetupFailed { .. }) => {
                        Ok(PingOutput::Done(Err(e.to_string())))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            PingCmd::Shutdown { machine } => {
                net.shutdown(machine)?;
                Ok(PingOutput::Done(Ok(())))
            }
            PingCmd::Ping { from, to } => {
                let target = s
                    .machine(to)
                    .ok_or_else(|| Abort::new(format!("no machine {to} in the model")))?;
                if !s.expects_reply(from, to) {
                    // No load makes a reply that must not come: judged as it is.
                    return Ok(PingOutput::Reply(net.ping(
                        from,
                        target.ip,
                        self.timeout,
                    )?));
                }
                self.ping_judged_under_load(net.as_ref(), from, to, target.ip)
            }
            PingCmd::Pause { machine } => {
                net.pause(machine)?;
                Ok(PingOutput::Done(Ok(())))
            }
            PingCmd::Resume { machine } => {
                net.resume(machine)?;
                Ok(PingOutput::Done(Ok(())))
            }
            PingCmd::Partition { groups } => {
                net.partition(groups)?;
                Ok(PingOutput::Done(Ok(())))
            }
            PingCmd::Block { from, to } => {
                net.block(from, to)?;
                Ok(PingOutput::Done(Ok(())))
            }
            PingCmd::Heal => {
                net.heal()?;
                Ok(PingOutput::Done(Ok(())))
            }
            PingCmd::Upgrade {
                machine,
                service,
                version,
            } => {
                let installation = service_version(&self.config, service, version)
                    .ok_or_else(|| Abort::new(format!("no version {version} of {service}")))?;
                let running = s.machine(machine).is_some_and(|m| m.running);
                if running {
                    net.shutdown(machine)?;
                }
                net.set_service(machine, service, &installation)
                    .map_err(|e| Abort::new(format!("upgrade failed: {e}")))?;
                if !running {
                    return Ok(PingOutput::Done(Ok(())));
                }
                match net.boot(&[machine.as_str()]).pop().expect("one result") {
                    Ok(()) => Ok(PingOutput::Done(Ok(()))),
                    Err(e @ BootError::SetupFailed { .. }) => {
                        Ok(PingOutput::Done(Err(e.to_string())))
                    }
                    Err(e) => Err(e.into()),
                }
            }
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
