//! The model of a network of machines: the machines and the network faults in force, what
//! every infrastructure command does to it ([`ClusterState::next_state`]), and what undoes
//! them before teardown.

use std::collections::{BTreeMap, BTreeSet};

use fleetcheck_engine::Abort;
use fleetcheck_fabric::{NetworkSpec, Subnet};
use serde::{Deserialize, Serialize};

use super::command::ClusterCmd;
use super::machine::{Machine, Power};
use crate::config::{MachineDomain, Services};

/// A network of machines as a model sees it. Every scenario's state is one (ping's whole
/// state; kv judges its store by the history instead of the model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The subnet the machines live in.
    pub subnet: Subnet,
    /// The machines, in generation order (`nodes` in kv replay files of earlier versions).
    #[serde(alias = "nodes")]
    pub machines: Vec<Machine>,
    /// Directed cuts `(from, to)`: packets from `from` to `to` are dropped (until Heal).
    #[serde(default)]
    pub cuts: BTreeSet<(String, String)>,
    /// Whether a `Partition` is in force (until Heal).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partitioned: bool,
    /// The share of packets dropped, per machine (until Heal).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub loss: BTreeMap<String, u8>,
}

impl ClusterState {
    /// A network of `machines` on `subnet` with no fault in force.
    pub fn new(subnet: Subnet, machines: Vec<Machine>) -> Self {
        Self {
            subnet,
            machines,
            cuts: BTreeSet::new(),
            partitioned: false,
            loss: BTreeMap::new(),
        }
    }

    /// A live network as far as its machines' status tells (no fault in force), for what
    /// applies commands to a network without a model (`fleetcheck up`).
    pub fn of(net: &dyn fleetcheck_fabric::Network) -> Self {
        let spec = net.spec();
        let machines = spec
            .machines
            .iter()
            .map(|m| {
                let mut machine = Machine::new(m.id.clone(), m.ip);
                machine.memory_mb = m.memory_mb;
                machine.filesystem = m.filesystem;
                machine.versions = m
                    .services
                    .iter()
                    .map(|(s, v)| (s.clone(), v.version.clone()))
                    .collect();
                match net.status(&m.id) {
                    Some(fleetcheck_fabric::MachineStatus::Running) => machine.set_power(Power::On),
                    Some(fleetcheck_fabric::MachineStatus::Paused) => {
                        machine.set_power(Power::Paused)
                    }
                    _ => {}
                }
                machine
            })
            .collect();
        Self::new(spec.subnet, machines)
    }

    /// The machine named `id`.
    pub fn machine(&self, id: &str) -> Option<&Machine> {
        self.machines.iter().find(|m| m.id == id)
    }

    /// The ids of the machines that `pick` picks, in order.
    pub fn ids(&self, pick: impl Fn(&Machine) -> bool) -> Vec<String> {
        self.machines
            .iter()
            .filter(|m| pick(m))
            .map(|m| m.id.clone())
            .collect()
    }

    /// Every machine's id, in order.
    pub fn all(&self) -> Vec<String> {
        self.ids(|_| true)
    }

    /// The machines that are up (paused or not).
    pub fn up(&self) -> Vec<String> {
        self.ids(|m| m.running)
    }

    /// The machines that are off.
    pub fn down(&self) -> Vec<String> {
        self.ids(|m| !m.running)
    }

    /// The machines that are up and not paused: those that can act.
    pub fn awake(&self) -> Vec<String> {
        self.ids(Machine::awake)
    }

    /// The paused machines.
    pub fn paused(&self) -> Vec<String> {
        self.ids(|m| m.paused)
    }

    /// Whether `from` and `to` can exchange a packet and its answer (no cut either way).
    pub fn reachable(&self, from: &str, to: &str) -> bool {
        let cut = |a: &str, b: &str| self.cuts.contains(&(a.to_string(), b.to_string()));
        from == to || !(cut(from, to) || cut(to, from))
    }

    /// Whether any network fault (partition, block, loss) is in force.
    pub fn network_faulty(&self) -> bool {
        self.partitioned
            || !self.cuts.is_empty()
            || !self.loss.is_empty()
            || self.machines.iter().any(|m| m.netem.is_some())
    }

    /// `up: a b; off: c; paused: b; partitioned; cut: a-/->c; loss: a 20%; disk failing: a
    /// fsync`: the machines'
    /// power and the faults in force, one line, as steps and timelines show it.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let list = |ids: Vec<String>| {
            if ids.is_empty() {
                "-".to_string()
            } else {
                ids.join(" ")
            }
        };
        let mut out = format!("up: {}; off: {}", list(self.up()), list(self.down()));
        let paused = self.paused();
        if !paused.is_empty() {
            let _ = write!(out, "; paused: {}", paused.join(" "));
        }
        if self.partitioned {
            out.push_str("; partitioned");
        }
        if !self.cuts.is_empty() {
            let cuts: Vec<String> = self
                .cuts
                .iter()
                .map(|(a, b)| format!("{a}-/->{b}"))
                .collect();
            let _ = write!(out, "; cut: {}", cuts.join(" "));
        }
        if !self.loss.is_empty() {
            let loss: Vec<String> = self.loss.iter().map(|(m, p)| format!("{m} {p}%")).collect();
            let _ = write!(out, "; loss: {}", loss.join(" "));
        }
        let failing: Vec<String> = self
            .machines
            .iter()
            .filter_map(|m| m.disk_error.map(|e| format!("{} {e}", m.id)))
            .collect();
        if !failing.is_empty() {
            let _ = write!(out, "; disk failing: {}", failing.join(" "));
        }
        let netem: Vec<String> = self
            .machines
            .iter()
            .filter_map(|m| m.netem.map(|n| format!("{} {n}", m.id)))
            .collect();
        if !netem.is_empty() {
            let _ = write!(out, "; netem: {}", netem.join(", "));
        }
        let clocks: Vec<String> = self
            .machines
            .iter()
            .filter(|m| m.clock_offset != 0)
            .map(|m| format!("{} {:+}s", m.id, m.clock_offset))
            .collect();
        if !clocks.is_empty() {
            let _ = write!(out, "; clock off: {}", clocks.join(" "));
        }
        out
    }

    /// The state after infrastructure command `c`.
    pub fn next_state(&self, c: &ClusterCmd) -> ClusterState {
        let mut next = self.clone();
        let mut set = |id: &str, power| {
            if let Some(m) = next.machines.iter_mut().find(|m| m.id == id) {
                m.set_power(power);
            }
        };
        match c {
            ClusterCmd::Boot { machine }
            | ClusterCmd::Restart { machine }
            | ClusterCmd::Resume { machine } => set(machine, Power::On),
            ClusterCmd::Shutdown { machine } | ClusterCmd::Crash { machine } => {
                set(machine, Power::Off)
            }
            ClusterCmd::Pause { machine } => set(machine, Power::Paused),
            ClusterCmd::Partition { groups } => {
                let group_of = |id: &str| groups.iter().position(|g| g.iter().any(|x| x == id));
                for a in &self.machines {
                    for b in &self.machines {
                        if a.id != b.id && group_of(&a.id) != group_of(&b.id) {
                            next.cuts.insert((a.id.clone(), b.id.clone()));
                        }
                    }
                }
                next.partitioned = true;
            }
            ClusterCmd::Block { from, to } => {
                next.cuts.insert((from.clone(), to.clone()));
            }
            ClusterCmd::Loss { machine, percent } => {
                next.loss.insert(machine.clone(), *percent);
            }
            // The disk is served afresh after a cut: a failure ends with it.
            ClusterCmd::PowerCut { machines } => {
                for id in machines {
                    set(id, Power::Off);
                }
                for m in next
                    .machines
                    .iter_mut()
                    .filter(|m| machines.contains(&m.id))
                {
                    m.disk_error = None;
                }
            }
            ClusterCmd::DiskFail { machine, error } => {
                if let Some(m) = next.machines.iter_mut().find(|m| m.id == *machine) {
                    m.disk_error = Some(*error);
                }
            }
            ClusterCmd::DiskRecover { machine } => {
                if let Some(m) = next.machines.iter_mut().find(|m| m.id == *machine) {
                    m.disk_error = None;
                }
            }
            // The model knows no file's contents: the system's next boot judges it.
            ClusterCmd::Corrupt { .. } => {}
            ClusterCmd::ClockBump { machine, offset_s } => {
                if let Some(m) = next.machines.iter_mut().find(|m| m.id == *machine) {
                    m.clock_offset = *offset_s;
                }
            }
            ClusterCmd::ClockReset { machine } => {
                if let Some(m) = next.machines.iter_mut().find(|m| m.id == *machine) {
                    m.clock_offset = 0;
                }
            }
            // It ends with the clock right, as it began.
            ClusterCmd::ClockStrobe { .. } => {}
            ClusterCmd::Ring { .. } | ClusterCmd::Bridge { .. } => {
                next.cuts.extend(c.shape_cuts());
                next.partitioned = true;
            }
            ClusterCmd::Heal => {
                next.cuts.clear();
                next.partitioned = false;
                next.loss.clear();
                for m in &mut next.machines {
                    m.netem = None;
                }
            }
            ClusterCmd::Netem { machine, netem } => {
                if let Some(m) = next.machines.iter_mut().find(|m| m.id == *machine) {
                    m.netem = Some(*netem);
                }
            }
            // Up again afterwards if it was up; a machine that is off stays off.
            ClusterCmd::Upgrade {
                machine,
                service,
                version,
            } => {
                if let Some(m) = next.machines.iter_mut().find(|m| m.id == *machine) {
                    m.versions.insert(service.clone(), version.clone());
                    // A running machine is shut down and booted: its clock is the host's.
                    m.clock_offset = 0;
                }
            }
        }
        next
    }

    /// The commands that undo every fault in force: resume each paused machine, heal the
    /// network. Machines that are off stay off (a power cut is not a fault to heal).
    pub fn heal_commands(&self) -> Vec<ClusterCmd> {
        let mut out: Vec<ClusterCmd> = self
            .paused()
            .into_iter()
            .map(|machine| ClusterCmd::Resume { machine })
            .collect();
        out.extend(
            self.ids(|m| m.disk_error.is_some())
                .into_iter()
                .map(|machine| ClusterCmd::DiskRecover { machine }),
        );
        out.extend(
            self.ids(|m| m.clock_offset != 0 && m.running)
                .into_iter()
                .map(|machine| ClusterCmd::ClockReset { machine }),
        );
        if self.network_faulty() {
            out.push(ClusterCmd::Heal);
        }
        out
    }

    /// The machines a partition in force cuts off from a majority, if `groups` (the rest one
    /// more group) were it: the machines outside the largest group when that is a majority,
    /// else every machine.
    pub fn minority(&self, groups: &[Vec<String>]) -> BTreeSet<String> {
        let all: BTreeSet<String> = self.all().into_iter().collect();
        let listed: BTreeSet<String> = groups.iter().flatten().cloned().collect();
        let rest: Vec<String> = all.difference(&listed).cloned().collect();
        let mut every: Vec<Vec<String>> = groups.to_vec();
        every.push(rest);
        let majority = all.len() / 2 + 1;
        match every.iter().find(|g| g.len() >= majority) {
            Some(big) => all.iter().filter(|m| !big.contains(m)).cloned().collect(),
            None => all,
        }
    }

    /// Simpler networks to try while shrinking, under the machine domains they were drawn
    /// from (one per role): one machine fewer (never fewer of a role than its domain's
    /// least), then per machine the earlier (preferred) versions and file system of its
    /// domain, then the earlier kernels and less memory (the least, half way there).
    pub fn shrink(&self, domains: &[MachineDomain]) -> Vec<ClusterState> {
        let Some(first) = domains.first() else {
            return Vec::new();
        };
        let domain_of = |m: &Machine| domains.iter().find(|d| d.role == m.role).unwrap_or(first);
        let mut out = Vec::new();
        for (i, m) in self.machines.iter().enumerate() {
            let of_role = self.machines.iter().filter(|x| x.role == m.role).count();
            if of_role > domain_of(m).count.min as usize {
                let mut smaller = self.clone();
                smaller.machines.remove(i);
                out.push(smaller);
            }
        }
        let mut simpler = |i: usize, change: &dyn Fn(&mut Machine)| {
            let mut s = self.clone();
            change(&mut s.machines[i]);
            out.push(s);
        };
        for (i, m) in self.machines.iter().enumerate() {
            let domain = domain_of(m);
            for (service, version) in &m.versions {
                let Some(versions) = domain.versions.get(service) else {
                    continue;
                };
                for earlier in super::earlier(versions, |v| v.version == *version) {
                    simpler(i, &|m| {
                        m.versions.insert(service.clone(), earlier.version.clone());
                    });
                }
            }
            for earlier in super::earlier(&domain.filesystem, |f| Some(*f) == m.filesystem) {
                simpler(i, &|m| m.filesystem = Some(*earlier));
            }
        }
        for (i, m) in self.machines.iter().enumerate() {
            let domain = domain_of(m);
            for kernel in super::earlier(&domain.kernels, |k| *k == m.kernel) {
                simpler(i, &|m| m.kernel = kernel.clone());
            }
            let least = domain.memory_mb.min;
            let halfway = least + m.memory_mb.saturating_sub(least) / 2;
            for memory in [least, halfway] {
                if memory < m.memory_mb {
                    simpler(i, &|m| m.memory_mb = memory);
                }
            }
        }
        out
    }

    /// The fabric's description of this network: each machine with its domain's setup
    /// commands (and memory, where it has none of its own), its file system and the programs
    /// of its service versions from `services` (`[services]`).
    pub fn network_spec(
        &self,
        domains: &[MachineDomain],
        services: &Services,
    ) -> Result<NetworkSpec, Abort> {
        let machines = self
            .machines
            .iter()
            .map(|m| {
                let domain = domains
                    .iter()
                    .find(|d| d.role == m.role)
                    .or(domains.first());
                let (memory, setup) =
                    domain.map_or((0, Vec::new()), |d| (d.memory_mb.min, d.setup.clone()));
                m.spec(services, memory, setup)
            })
            .collect::<Result<_, Abort>>()?;
        Ok(NetworkSpec {
            subnet: self.subnet,
            machines,
        })
    }
}
