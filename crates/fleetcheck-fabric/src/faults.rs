//! The network faults in force, as plain data both backends share: which directed machine
//! pairs are cut (partitions and blocks) and which machines lose packets. Validation lives
//! here too, so the fake and the netns backend reject the same calls the same way.
//!
//! Faults accumulate until [`Faults::heal`]: a second partition adds its cuts to the first,
//! a block adds one direction, a loss sets (or with 0 removes) one machine's percentage.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::FaultError;
use crate::spec::NetworkSpec;

/// Faults by machine index (position in the spec).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Faults {
    /// `(from, to)`: packets from machine `from` to machine `to` are dropped.
    pub cuts: BTreeSet<(usize, usize)>,
    /// Percentage (1..=100) of packets to and from a machine that are dropped.
    pub loss: BTreeMap<usize, u8>,
    /// Paused machines: on netns every frame to or from them is dropped too, since a frozen
    /// machine's kernel (shared with the host) would still answer pings and ARP. Only pause,
    /// resume and power-off change it; heal leaves it.
    pub paused: BTreeSet<usize>,
}

fn index_of(spec: &NetworkSpec, id: &str) -> Result<usize, FaultError> {
    spec.machines
        .iter()
        .position(|m| m.id == id)
        .ok_or_else(|| FaultError::UnknownMachine { machine: id.into() })
}

impl Faults {
    /// Cuts every pair of machines in different groups, both ways; machines named in no group
    /// form one more group. An observer ([`crate::MachineSpec::observer`]) is cut from none.
    pub fn partition(
        &mut self,
        spec: &NetworkSpec,
        groups: &[Vec<String>],
    ) -> Result<(), FaultError> {
        let n = spec.machines.len();
        // Group number per machine; the unnamed ones share group `groups.len()`.
        let mut group = vec![groups.len(); n];
        let mut named = vec![false; n];
        for (g, ids) in groups.iter().enumerate() {
            for id in ids {
                let i = index_of(spec, id)?;
                if named[i] {
                    return Err(FaultError::RepeatedInPartition {
                        machine: id.clone(),
                    });
                }
                named[i] = true;
                group[i] = g;
            }
        }
        let observer = |i: usize| spec.machines[i].observer;
        for a in 0..n {
            for b in 0..n {
                if group[a] != group[b] && !observer(a) && !observer(b) {
                    self.cuts.insert((a, b));
                }
            }
        }
        Ok(())
    }

    /// Drops packets from `from` to `to` (not the other way).
    pub fn block(&mut self, spec: &NetworkSpec, from: &str, to: &str) -> Result<(), FaultError> {
        let (a, b) = (index_of(spec, from)?, index_of(spec, to)?);
        if a == b {
            return Err(FaultError::SameMachine {
                machine: from.into(),
            });
        }
        self.cuts.insert((a, b));
        Ok(())
    }

    /// Sets the loss of machine `id`; 0 removes it.
    pub fn set_loss(
        &mut self,
        spec: &NetworkSpec,
        id: &str,
        percent: u8,
    ) -> Result<(), FaultError> {
        let i = index_of(spec, id)?;
        if percent > 100 {
            return Err(FaultError::BadPercent { percent });
        }
        if percent == 0 {
            self.loss.remove(&i);
        } else {
            self.loss.insert(i, percent);
        }
        Ok(())
    }

    /// Removes every partition, block and loss (not pauses).
    pub fn heal(&mut self) {
        self.cuts.clear();
        self.loss.clear();
    }

    /// Whether packets from machine `from` to machine `to` are cut.
    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cuts.contains(&(from, to))
    }

    /// Loss percentage of machine `i` (0 when none).
    pub fn loss_of(&self, i: usize) -> u8 {
        self.loss.get(&i).copied().unwrap_or(0)
    }

    /// Whether no fault is in force.
    pub fn is_empty(&self) -> bool {
        self.cuts.is_empty() && self.loss.is_empty() && self.paused.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::MachineSpec;

    fn spec(n: usize) -> NetworkSpec {
        NetworkSpec {
            subnet: "10.0.0.0/24".parse().unwrap(),
            machines: (0..n)
                .map(|i| MachineSpec {
                    id: format!("m{i}"),
                    ip: format!("10.0.0.{}", i + 1).parse().unwrap(),
                    memory_mb: 64,
                    kernel: String::new(),
                    setup: vec![],
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn partition_cuts_between_groups_and_leaves_the_rest_together() {
        let s = spec(4);
        let mut f = Faults::default();
        f.partition(&s, &[vec!["m0".into(), "m1".into()]]).unwrap();
        assert!(!f.is_cut(0, 1) && !f.is_cut(1, 0));
        assert!(!f.is_cut(2, 3), "unnamed machines form one group");
        assert!(f.is_cut(0, 2) && f.is_cut(2, 0) && f.is_cut(1, 3) && f.is_cut(3, 1));
        assert_eq!(f.cuts.len(), 8);
    }

    #[test]
    fn invalid_calls_are_rejected() {
        let s = spec(3);
        let mut f = Faults::default();
        assert!(matches!(
            f.partition(&s, &[vec!["m0".into()], vec!["m0".into()]]),
            Err(FaultError::RepeatedInPartition { .. })
        ));
        assert!(matches!(
            f.partition(&s, &[vec!["zz".into()]]),
            Err(FaultError::UnknownMachine { .. })
        ));
        assert!(matches!(
            f.block(&s, "m1", "m1"),
            Err(FaultError::SameMachine { .. })
        ));
        assert!(matches!(
            f.set_loss(&s, "m1", 101),
            Err(FaultError::BadPercent { .. })
        ));
    }

    #[test]
    fn faults_accumulate_until_heal() {
        let s = spec(3);
        let mut f = Faults::default();
        f.block(&s, "m0", "m2").unwrap();
        assert!(f.is_cut(0, 2) && !f.is_cut(2, 0), "a block is one-way");
        f.set_loss(&s, "m1", 30).unwrap();
        f.partition(&s, &[vec!["m1".into()]]).unwrap();
        assert!(f.is_cut(0, 2) && !f.is_cut(2, 0), "the block stays");
        assert!(f.is_cut(0, 1) && f.is_cut(1, 2));
        assert_eq!(f.loss_of(1), 30);
        f.set_loss(&s, "m1", 0).unwrap();
        assert_eq!(f.loss_of(1), 0);
        f.paused.insert(2);
        f.heal();
        assert!(f.cuts.is_empty() && f.loss.is_empty());
        assert!(f.paused.contains(&2), "heal does not resume");
    }
}
