//! The cluster layer both scenarios share: the typed fault vocabulary ([`Fault`]) and the
//! parts of a network of machines that ping and kv generate, shrink, label and heal the same
//! way. Each helper makes the same random draws, in the same order, as the code it replaced.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use fleetcheck_engine::{Gen, Labels};
use fleetcheck_fabric::{FaultError, FileSystem, MachineStatus, Network, Subnet};

pub mod fault;

pub use fault::Fault;

/// A machine as a scenario's model sees it: its id and power state.
pub trait Member {
    /// Its id.
    fn id(&self) -> &str;
    /// Whether it is up.
    fn running(&self) -> bool;
    /// Whether it is frozen.
    fn paused(&self) -> bool;
    /// Sets its power state.
    fn set_power(&mut self, power: Power);
}

/// The power state an infrastructure command leaves a machine in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Up (booted, restarted, resumed).
    On,
    /// Down (shut down, crashed).
    Off,
    /// Up but frozen.
    Paused,
}

/// Implements [`Member`] for a type with fields `id: String`, `running: bool` and
/// `paused: bool`.
macro_rules! member {
    ($t:ty) => {
        impl $crate::cluster::Member for $t {
            fn id(&self) -> &str {
                &self.id
            }
            fn running(&self) -> bool {
                self.running
            }
            fn paused(&self) -> bool {
                self.paused
            }
            fn set_power(&mut self, power: $crate::cluster::Power) {
                (self.running, self.paused) = power.running_paused();
            }
        }
    };
}
pub(crate) use member;

impl Power {
    /// `(running, paused)`.
    pub fn running_paused(self) -> (bool, bool) {
        match self {
            Power::On => (true, false),
            Power::Off => (false, false),
            Power::Paused => (true, true),
        }
    }
}

/// The ids of the `members` that `pick` picks, in order.
pub fn ids<M: Member>(members: &[M], pick: impl Fn(&M) -> bool) -> Vec<String> {
    members
        .iter()
        .filter(|m| pick(m))
        .map(|m| m.id().to_string())
        .collect()
}

/// The ids of the running members that are not paused: those that can act.
pub fn awake<M: Member>(members: &[M]) -> Vec<String> {
    ids(members, |m| m.running() && !m.paused())
}

/// Sets the power state of member `id`, if there is one.
pub fn set_power<M: Member>(members: &mut [M], id: &str, power: Power) {
    if let Some(m) = members.iter_mut().find(|m| m.id() == id) {
        m.set_power(power);
    }
}

/// `count` distinct host addresses of `subnet`, from its second address up.
pub fn distinct_hosts(g: &mut Gen, subnet: Subnet, count: usize) -> Vec<Ipv4Addr> {
    g.distinct(count, 1..=subnet.host_count() - 1)
        .into_iter()
        .map(|host| subnet.host(host).expect("host index is inside the subnet"))
        .collect()
}

/// A fresh 8-letter id, drawn again while `taken` says it is in use.
pub fn fresh_id(g: &mut Gen, taken: impl Fn(&str) -> bool) -> String {
    let mut id = g.lowercase(8);
    while taken(&id) {
        id = g.lowercase(8);
    }
    id
}

/// One side of a random partition of `all`: a random non-empty proper subset (else one
/// member) against the rest; `None` if `all` is empty.
pub fn partition_side(g: &mut Gen, all: &[String]) -> Option<Vec<String>> {
    let mut side: Vec<String> = all.iter().filter(|_| g.bool(0.5)).cloned().collect();
    if side.is_empty() || side.len() == all.len() {
        side = vec![g.choose(all)?.clone()];
    }
    Some(side)
}

/// A random one-way block: `(from, to)`, two different members of `all`.
pub fn one_way_block(g: &mut Gen, all: &[String]) -> Option<(String, String)> {
    let from = g.choose(all)?.clone();
    let others: Vec<String> = all.iter().filter(|m| **m != from).cloned().collect();
    let to = g.choose(&others)?.clone();
    Some((from, to))
}

/// The entries of `preferred` before the current one (the first for which `is_current`
/// holds): the simpler choices to shrink to; none if no entry is current.
pub fn earlier<T>(preferred: &[T], is_current: impl Fn(&T) -> bool) -> &[T] {
    &preferred[..preferred.iter().position(is_current).unwrap_or(0)]
}

/// The labels of machine parameters: each machine's `filesystem` and `version of <service>`,
/// then which versions a network mixes, per service.
#[derive(Debug, Default)]
pub struct ParameterLabels<'a> {
    mix: BTreeMap<&'a str, BTreeSet<&'a str>>,
}

impl<'a> ParameterLabels<'a> {
    /// Labels one machine's file system and its `(service, version)` pairs.
    pub fn machine(
        &mut self,
        labels: &mut Labels,
        filesystem: Option<FileSystem>,
        versions: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        if let Some(fs) = filesystem {
            labels.add("filesystem", fs);
        }
        for (service, version) in versions {
            labels.add(format!("version of {service}"), version);
            self.mix.entry(service).or_default().insert(version);
        }
    }

    /// `<service> versions in a <noun>` (`"network"`, `"cluster"`): `1.0+2.0` is a
    /// mixed-version one.
    pub fn finish(self, labels: &mut Labels, noun: &str) {
        for (service, versions) in &self.mix {
            let all: Vec<&str> = versions.iter().copied().collect();
            labels.add(format!("{service} versions in a {noun}"), all.join("+"));
        }
    }
}

/// Heals every fault of `net` before teardown: resumes each paused machine, then heals the
/// network faults.
pub fn heal_all(net: &dyn Network) -> Result<(), FaultError> {
    for m in &net.spec().machines {
        if net.status(&m.id) == Some(MachineStatus::Paused) {
            net.resume(&m.id)?;
        }
    }
    net.heal()
}

/// A network fault as applied to a live [`Network`] (what `fleetcheck up` keeps to show the
/// faults in force); [`Network::heal`] removes them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkFault {
    /// Groups of machines that cannot reach each other (the machines of none: one more group).
    Partition(Vec<Vec<String>>),
    /// Packets from `from` to `to` dropped, one way.
    Block {
        /// The sender whose packets are dropped.
        from: String,
        /// The receiver they were for.
        to: String,
    },
    /// `percent` of a machine's packets dropped (0 removes the loss).
    Loss {
        /// The machine.
        machine: String,
        /// The share dropped, 0 to 100.
        percent: u8,
    },
}

impl NetworkFault {
    /// Applies it to `net`.
    pub fn apply(&self, net: &dyn Network) -> Result<(), FaultError> {
        match self {
            NetworkFault::Partition(groups) => net.partition(groups),
            NetworkFault::Block { from, to } => net.block(from, to),
            NetworkFault::Loss { machine, percent } => net.loss(machine, *percent),
        }
    }
}

/// `partition a,b | c`, `block a -/-> b`, `loss a 20%`.
impl std::fmt::Display for NetworkFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetworkFault::Partition(groups) => {
                let groups: Vec<String> = groups.iter().map(|g| g.join(",")).collect();
                write!(f, "partition {}", groups.join(" | "))
            }
            NetworkFault::Block { from, to } => write!(f, "block {from} -/-> {to}"),
            NetworkFault::Loss { machine, percent } => write!(f, "loss {machine} {percent}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip_and_network_faults_read_as_up_shows_them() {
        for f in Fault::ALL {
            assert_eq!(Fault::from_name(f.name()), Some(f));
        }
        assert_eq!(Fault::from_name("upgrades"), None);
        let groups = vec![vec!["a".to_string(), "b".into()], vec!["c".into()]];
        assert_eq!(
            NetworkFault::Partition(groups).to_string(),
            "partition a,b | c"
        );
        let block = NetworkFault::Block {
            from: "a".into(),
            to: "b".into(),
        };
        assert_eq!(block.to_string(), "block a -/-> b");
        let loss = NetworkFault::Loss {
            machine: "a".into(),
            percent: 20,
        };
        assert_eq!(loss.to_string(), "loss a 20%");
    }
}
