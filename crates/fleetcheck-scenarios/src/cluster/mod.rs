//! The cluster layer every scenario stands on: one model of a network of machines
//! ([`ClusterState`] of [`Machine`]s with roles and parameters) and one set of infrastructure
//! commands ([`ClusterCmd`]: Boot, Shutdown, Crash, Restart, Pause, Resume, Partition, Block,
//! Loss, Heal, Upgrade) with their generation ([`Plan`], [`ClusterState::fault_kinds`],
//! [`ClusterState::draw`]), preconditions, next state, shrinking, application to a
//! [`Network`], heal before teardown, labels and timeline effects. A scenario composes it with
//! its own commands (ping's `Ping`, kv's batches of client operations) and its own checks.
//! Adding a fault kind touches the fabric and this layer only (CONTRIBUTING.md says how).

use std::collections::{BTreeMap, BTreeSet};

use fleetcheck_engine::Labels;
use fleetcheck_fabric::{FaultError, FileSystem, MachineStatus, Network};

mod command;
pub mod fault;
mod generate;
mod machine;
mod state;

pub use command::{ring_reach, ClusterCmd, Effect};
pub use fault::Fault;
pub use generate::{distinct_hosts, fresh_id, Kind, Plan};
pub use machine::{service_version, Machine, Power};
pub use state::ClusterState;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(Fault::from_name(f.name()), Some(f));
        }
        assert_eq!(Fault::from_name("upgrades"), None);
    }

    #[test]
    fn commands_read_as_people_type_them() {
        let parse = |line: &str| ClusterCmd::parse(line).unwrap().unwrap();
        let groups = vec![vec!["a".to_string(), "b".into()], vec!["c".into()]];
        assert_eq!(parse("partition a,b | c"), ClusterCmd::Partition { groups });
        assert_eq!(
            parse("block a b"),
            ClusterCmd::Block {
                from: "a".into(),
                to: "b".into()
            }
        );
        assert_eq!(
            parse("loss a 20%"),
            ClusterCmd::Loss {
                machine: "a".into(),
                percent: 20
            }
        );
        assert_eq!(parse("heal"), ClusterCmd::Heal);
        assert_eq!(ClusterCmd::parse("ping a b").unwrap(), None);
        assert!(ClusterCmd::parse("loss a 101")
            .unwrap_err()
            .contains("0 to 100"));
        assert!(ClusterCmd::parse("crash")
            .unwrap_err()
            .contains("needs a machine"));
        assert!(ClusterCmd::parse("partition |")
            .unwrap_err()
            .contains("needs groups"));
    }

    #[test]
    fn a_majorities_ring_gives_every_machine_a_majority_of_its_own() {
        for n in 4..=9 {
            let order: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
            let ring = ClusterCmd::Ring {
                order: order.clone(),
            };
            let cuts = ring.shape_cuts();
            let mut seen = std::collections::BTreeSet::new();
            for a in &order {
                let sees: Vec<&String> = order
                    .iter()
                    .filter(|b| !cuts.contains(&((*a).clone(), (*b).clone())))
                    .collect();
                assert!(sees.len() > n / 2, "{a} of {n} sees {sees:?}");
                assert!(sees.len() < n, "{a} of {n} sees everyone");
                assert!(
                    seen.insert(sees),
                    "two machines of {n} see the same majority"
                );
            }
        }
        let bridge = ClusterCmd::parse("bridge a b | c | d e").unwrap().unwrap();
        let cuts = bridge.shape_cuts();
        assert_eq!(cuts.len(), 8, "a,b against d,e, both ways: {cuts:?}");
        assert!(
            cuts.iter().all(|(x, y)| x != "c" && y != "c"),
            "the bridge sees all"
        );
        assert!(ClusterCmd::parse("bridge a | b c | d")
            .unwrap_err()
            .contains("two halves"));
        assert!(ClusterCmd::parse("ring a b c")
            .unwrap_err()
            .contains("four machines"));
    }

    /// The faults of this layer's last additions: what people type, what the model makes of
    /// them, how they shrink, what heals them.
    #[test]
    fn corruption_clocks_and_netem_as_the_model_sees_them() {
        use fleetcheck_fabric::{Corruption, Netem};
        let parse = |line: &str| ClusterCmd::parse(line).unwrap().unwrap();
        assert_eq!(
            parse("corrupt a truncate 7"),
            ClusterCmd::Corrupt {
                machine: "a".into(),
                how: Corruption::Truncate,
                pick: 7
            }
        );
        assert_eq!(
            parse("clock a -120"),
            ClusterCmd::ClockBump {
                machine: "a".into(),
                offset_s: -120
            }
        );
        assert_eq!(
            parse("netem a reorder 20 50"),
            ClusterCmd::Netem {
                machine: "a".into(),
                netem: Netem::Reorder {
                    percent: 20,
                    ms: 50
                }
            }
        );
        assert!(ClusterCmd::parse("netem a jitter 5")
            .unwrap_err()
            .contains("not `jitter`"));
        let mut a = Machine::new("a".into(), "10.0.0.2".parse().unwrap());
        a.running = true;
        a.clock = true;
        let s = ClusterState::new("10.0.0.0/24".parse().unwrap(), vec![a]);
        let plan = Plan {
            faults: vec![Fault::Clock, Fault::Netem, Fault::Corrupt],
            ..Plan::default()
        };
        // A corruption waits for the machine to be off; a clock moves only while it runs.
        let corrupt = parse("corrupt a bit-flip");
        assert!(!corrupt.precondition(&s, &plan));
        let bump = parse("clock a +300");
        assert!(bump.precondition(&s, &plan));
        let bumped = s.next_state(&bump);
        assert_eq!(bumped.machines[0].clock_offset, 300);
        assert_eq!(
            bumped.heal_commands(),
            vec![ClusterCmd::ClockReset {
                machine: "a".into()
            }]
        );
        let shrunk: Vec<i64> = bump
            .shrink(&plan)
            .into_iter()
            .map(|c| match c {
                ClusterCmd::ClockBump { offset_s, .. } => offset_s,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(shrunk, [1, 5, 30, 120]);
        // Power takes the offset and netem with it; a heal takes netem.
        let delayed = bumped.next_state(&parse("netem a delay 500"));
        assert!(delayed.network_faulty());
        let off = delayed.next_state(&parse("crash a"));
        assert_eq!(off.machines[0].clock_offset, 0);
        assert_eq!(off.machines[0].netem, None);
        assert!(corrupt.precondition(&off, &plan));
        assert!(!delayed.next_state(&ClusterCmd::Heal).network_faulty());
        // A strobe starts and ends with the clock right, and shrinks to fewer flips.
        let strobe = ClusterCmd::ClockStrobe {
            machine: "a".into(),
            offset_s: 30,
            period_ms: 1000,
            flips: 8,
        };
        assert!(strobe.precondition(&s, &plan));
        assert!(!strobe.precondition(&bumped, &plan));
        assert_eq!(s.next_state(&strobe), s);
        assert!(strobe
            .shrink(&plan)
            .iter()
            .any(|c| matches!(c, ClusterCmd::ClockStrobe { flips: 2, .. })));
    }
}
