//! The cluster layer both scenarios share: the typed fault vocabulary ([`Fault`]) and the
//! parts of a network of machines that ping and kv generate, shrink, label and heal the same
//! way. Each helper makes the same random draws, in the same order, as the code it replaced.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use fleetcheck_engine::{Gen, Labels};
use fleetcheck_fabric::{FaultError, FileSystem, MachineStatus, Network, Subnet};

pub mod fault;

pub use fault::Fault;

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
