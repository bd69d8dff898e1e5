//! How infrastructure commands are generated: which fault kinds a scenario's [`Plan`] lets
//! join its own commands, with which weights and when ([`ClusterState::fault_kinds`]), and
//! their arguments ([`ClusterState::draw`]); plus the draws a network's machines are made of.
//! Every helper makes the same random draws, in the same order, as the code it replaced in
//! ping and kv, so every seed keeps its case.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use fleetcheck_engine::Gen;
use fleetcheck_fabric::Subnet;

use super::command::ClusterCmd;
use super::fault::Fault;
use super::machine::Machine;
use super::state::ClusterState;

/// What a scenario lets the cluster layer generate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The fault kinds to generate.
    pub faults: Vec<Fault>,
    /// For each role (empty without roles), for each service, the versions a machine may
    /// get, the first preferred: what `Upgrade` chooses from and shrinks toward.
    pub versions: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// Network faults (and heals) only while some machine is up: the seed's ping, whose
    /// machines start off, tests nothing on a network where nothing runs.
    pub network_faults_need_a_machine_up: bool,
    /// Whether a partition may follow another before a heal (ping), or only one at a time
    /// (kv, which judges a store by which side of the one partition a client was on).
    pub partitions_stack: bool,
    /// The role whose machines `isolate` cuts off (the scenario's leader or primary).
    pub leader: Option<String>,
}

/// A kind of infrastructure command, before its arguments are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A machine that is off boots.
    Boot,
    /// A running machine shuts down.
    Shutdown,
    /// A running machine crashes.
    Crash,
    /// A crashed machine boots again.
    Restart,
    /// A machine that is awake freezes.
    Pause,
    /// A paused machine thaws.
    Resume,
    /// One side against the rest.
    Partition,
    /// One machine's packets to another dropped.
    Block,
    /// A share of one machine's packets dropped.
    Loss,
    /// Every network fault removed.
    Heal,
    /// A machine gets another version of a service.
    Upgrade,
    /// Power loss of one or more machines at once.
    PowerCut,
    /// A majorities ring.
    Ring,
    /// Two halves and a bridge.
    Bridge,
    /// The leader's role cut off.
    Isolate,
    /// A machine's disk fails.
    DiskFail,
    /// A failing disk recovers.
    DiskRecover,
    /// A file of a stopped machine corrupted.
    Corrupt,
    /// A machine's clock moved.
    ClockBump,
    /// A moved clock back to the host's.
    ClockReset,
    /// A machine's packets delayed, duplicated, reordered or corrupted.
    Netem,
    /// A machine's clock jumping back and forth.
    ClockStrobe,
}

/// The weight of each generated fault kind (against, e.g., kv's client batches at 6 and
/// ping's online pings at 4): faults are rarer than the work they disturb, and undoing one
/// (restart, resume, heal) twice as likely as causing it, so cases spend time both in and
/// out of faults.
/// New kinds go at the end, so every seed of a configuration without them keeps its case.
const WEIGHTS: [(Kind, u32); 21] = [
    (Kind::Crash, 1),
    (Kind::Restart, 2),
    (Kind::Pause, 1),
    (Kind::Resume, 2),
    (Kind::Partition, 1),
    (Kind::Block, 1),
    (Kind::Loss, 1),
    (Kind::Heal, 2),
    (Kind::Upgrade, 1),
    (Kind::PowerCut, 1),
    (Kind::Ring, 1),
    (Kind::Bridge, 1),
    (Kind::Isolate, 1),
    (Kind::DiskFail, 1),
    (Kind::DiskRecover, 2),
    (Kind::Corrupt, 1),
    (Kind::ClockBump, 1),
    (Kind::ClockReset, 2),
    (Kind::Netem, 1),
    (Kind::ClockStrobe, 1),
    (Kind::Shutdown, 1),
];

/// The steps of a generated size (in increasing order) below `than`: what shrinking tries.
pub fn below<T: Copy + PartialOrd>(steps: &[T], than: T) -> impl Iterator<Item = T> + '_ {
    steps.iter().copied().take_while(move |&s| s < than)
}

/// Generated netem delays, in milliseconds (shrinking tries the smaller).
pub const NETEM_DELAYS_MS: [u32; 4] = [50, 200, 500, 1000];

/// Generated netem shares (duplicated, reordered, corrupted), in percent.
pub const NETEM_SHARES: [u8; 3] = [5, 20, 50];

/// The sizes of generated clock offsets, in seconds (either way): from a second, which only
/// timestamps notice, to ten minutes, past most leases and TTLs.
pub const CLOCK_OFFSETS: [i64; 6] = [1, 5, 30, 120, 300, 600];

/// Whether machine `m`'s data may be corrupted: it is off.
fn corruptible(m: &Machine) -> bool {
    !m.running
}

impl Plan {
    /// Whether it generates faults of `kind`.
    pub fn has(&self, kind: Fault) -> bool {
        self.faults.contains(&kind)
    }

    /// The versions of `service` machine `m`'s role allows, the first preferred.
    pub fn allowed(&self, m: &Machine, service: &str) -> &[String] {
        self.versions
            .get(&m.role)
            .and_then(|v| v.get(service))
            .map_or(&[], Vec::as_slice)
    }
}

impl ClusterState {
    /// Every rolling upgrade possible now under `plan` (with `upgrade` among its faults): a
    /// machine that is not paused to another allowed version of one of its services.
    pub fn upgrades(&self, plan: &Plan) -> Vec<ClusterCmd> {
        if !plan.has(Fault::Upgrade) {
            return Vec::new();
        }
        let mut all = Vec::new();
        for m in self.machines.iter().filter(|m| !m.paused) {
            for (service, current) in &m.versions {
                for version in plan.allowed(m, service) {
                    if version != current {
                        all.push(ClusterCmd::Upgrade {
                            machine: m.id.clone(),
                            service: service.clone(),
                            version: version.clone(),
                        });
                    }
                }
            }
        }
        all
    }

    /// The fault kinds `plan` lets join a scenario's commands now, with their weights, in a
    /// fixed order: crash and restart, pause and resume, partition, block, loss, heal,
    /// upgrade, each only where it can run.
    pub fn fault_kinds(&self, plan: &Plan) -> Vec<(u32, Kind)> {
        let some_up =
            !plan.network_faults_need_a_machine_up || self.machines.iter().any(|m| m.running);
        let two = self.machines.len() >= 2;
        WEIGHTS
            .into_iter()
            .filter(|(kind, _)| match kind {
                Kind::Crash => plan.has(Fault::Crash) && self.machines.iter().any(|m| m.running),
                Kind::Shutdown => {
                    plan.has(Fault::Shutdown) && self.machines.iter().any(|m| m.running)
                }
                Kind::Restart => {
                    (plan.has(Fault::Crash)
                        || plan.has(Fault::PowerCut)
                        || plan.has(Fault::Shutdown))
                        && self
                            .machines
                            .iter()
                            .any(|m| !m.running && m.disk_error.is_none())
                }
                Kind::DiskFail => plan.has(Fault::Disk) && !self.disk_failable().is_empty(),
                Kind::DiskRecover => self.machines.iter().any(|m| m.disk_error.is_some()),
                Kind::Corrupt => plan.has(Fault::Corrupt) && !self.ids(corruptible).is_empty(),
                Kind::ClockBump => {
                    plan.has(Fault::Clock) && !self.ids(|m| m.running && m.clock).is_empty()
                }
                Kind::ClockReset => self.machines.iter().any(|m| m.clock_offset != 0),
                Kind::ClockStrobe => {
                    plan.has(Fault::Clock)
                        && !self
                            .ids(|m| m.running && m.clock && m.clock_offset == 0)
                            .is_empty()
                }
                Kind::Netem => {
                    plan.has(Fault::Netem)
                        && some_up
                        && !self.ids(|m| m.running && m.netem.is_none()).is_empty()
                }
                Kind::Pause => plan.has(Fault::Pause) && self.machines.iter().any(Machine::awake),
                Kind::Resume => plan.has(Fault::Pause) && self.machines.iter().any(|m| m.paused),
                Kind::Partition => {
                    plan.has(Fault::Partition)
                        && some_up
                        && two
                        && (plan.partitions_stack || !self.partitioned)
                }
                Kind::Block => plan.has(Fault::Block) && some_up && two,
                Kind::Loss => plan.has(Fault::Loss) && some_up,
                Kind::Heal => some_up && self.network_faulty(),
                Kind::Upgrade => !self.upgrades(plan).is_empty(),
                Kind::PowerCut => {
                    plan.has(Fault::PowerCut)
                        && self.machines.iter().any(|m| m.running && m.lose_unsynced)
                }
                Kind::Ring => {
                    plan.has(Fault::Ring)
                        && some_up
                        && self.machines.len() >= 4
                        && (plan.partitions_stack || !self.partitioned)
                }
                Kind::Bridge => {
                    plan.has(Fault::Bridge)
                        && some_up
                        && self.machines.len() >= 3
                        && (plan.partitions_stack || !self.partitioned)
                }
                Kind::Isolate => {
                    plan.has(Fault::Isolate)
                        && two
                        && !self.leaders(plan).is_empty()
                        && (plan.partitions_stack || !self.partitioned)
                }
                Kind::Boot => false,
            })
            .map(|(kind, weight)| (weight, kind))
            .collect()
    }

    /// The machines whose disk may fail now: running, with the disk layer, not failing.
    fn disk_failable(&self) -> Vec<String> {
        self.ids(|m| m.running && m.lose_unsynced && m.disk_error.is_none())
    }

    /// The machines `isolate` may cut off: those up of the plan's leader role.
    fn leaders(&self, plan: &Plan) -> Vec<String> {
        let Some(role) = &plan.leader else {
            return Vec::new();
        };
        self.ids(|m| m.running && m.role == *role)
    }

    /// A command of `kind` with its arguments drawn; `None` if none can run now.
    pub fn draw(&self, kind: Kind, plan: &Plan, g: &mut Gen) -> Option<ClusterCmd> {
        let pick = |g: &mut Gen, ids: Vec<String>| g.choose(&ids).cloned();
        Some(match kind {
            Kind::Boot => ClusterCmd::Boot {
                machine: pick(g, self.down())?,
            },
            Kind::Shutdown => ClusterCmd::Shutdown {
                machine: pick(g, self.up())?,
            },
            Kind::Crash => ClusterCmd::Crash {
                machine: pick(g, self.up())?,
            },
            Kind::Restart => ClusterCmd::Restart {
                machine: pick(g, self.ids(|m| !m.running && m.disk_error.is_none()))?,
            },
            Kind::DiskFail => ClusterCmd::DiskFail {
                machine: pick(g, self.disk_failable())?,
                error: *g.choose(&fleetcheck_fabric::DiskError::ALL)?,
            },
            Kind::DiskRecover => ClusterCmd::DiskRecover {
                machine: pick(g, self.ids(|m| m.disk_error.is_some()))?,
            },
            Kind::ClockBump => ClusterCmd::ClockBump {
                machine: pick(g, self.ids(|m| m.running && m.clock))?,
                offset_s: {
                    let size = *g.choose(&CLOCK_OFFSETS)?;
                    if g.bool(0.5) {
                        size
                    } else {
                        -size
                    }
                },
            },
            Kind::Netem => {
                use fleetcheck_fabric::Netem;
                let machine = pick(g, self.ids(|m| m.running && m.netem.is_none()))?;
                let netem = match g.range(0..=3u8) {
                    0 => {
                        let ms = *g.choose(&NETEM_DELAYS_MS)?;
                        Netem::Delay {
                            ms,
                            jitter_ms: ms / 10,
                        }
                    }
                    1 => Netem::Duplicate {
                        percent: *g.choose(&NETEM_SHARES)?,
                    },
                    2 => Netem::Reorder {
                        percent: *g.choose(&NETEM_SHARES)?,
                        ms: *g.choose(&NETEM_DELAYS_MS[..2])?,
                    },
                    _ => Netem::Corrupt {
                        percent: *g.choose(&NETEM_SHARES)?,
                    },
                };
                ClusterCmd::Netem { machine, netem }
            }
            Kind::ClockStrobe => ClusterCmd::ClockStrobe {
                machine: pick(g, self.ids(|m| m.running && m.clock && m.clock_offset == 0))?,
                offset_s: *g.choose(&CLOCK_OFFSETS)? * if g.bool(0.5) { 1 } else { -1 },
                period_ms: 1000,
                flips: *g.choose(&[2, 4, 8])?,
            },
            Kind::ClockReset => ClusterCmd::ClockReset {
                machine: pick(g, self.ids(|m| m.clock_offset != 0))?,
            },
            Kind::Corrupt => ClusterCmd::Corrupt {
                machine: pick(g, self.ids(corruptible))?,
                how: *g.choose(&fleetcheck_fabric::Corruption::ALL)?,
                pick: g.range(0..=u64::from(u32::MAX)),
            },
            Kind::Pause => ClusterCmd::Pause {
                machine: pick(g, self.awake())?,
            },
            Kind::Resume => ClusterCmd::Resume {
                machine: pick(g, self.paused())?,
            },
            Kind::Partition => ClusterCmd::Partition {
                groups: vec![partition_side(g, &self.all())?],
            },
            Kind::Block => {
                let (from, to) = one_way_block(g, &self.all())?;
                ClusterCmd::Block { from, to }
            }
            Kind::Loss => ClusterCmd::Loss {
                machine: pick(g, self.all())?,
                percent: *g.choose(&[20u8, 50, 80])?,
            },
            Kind::Heal => ClusterCmd::Heal,
            Kind::Upgrade => g.choose(&self.upgrades(plan))?.clone(),
            // One machine, or (a third of the time) every one that can be cut: a coordinated
            // power loss, the shape that loses data replication was meant to keep.
            // The leader alone on one side: a partition like any other from here on.
            Kind::Isolate => ClusterCmd::Partition {
                groups: vec![vec![pick(g, self.leaders(plan))?]],
            },
            Kind::Ring => ClusterCmd::Ring {
                order: shuffled(g, self.all()),
            },
            Kind::Bridge => {
                let mut order = shuffled(g, self.all());
                let right = order.split_off(order.len() / 2 + 1);
                let bridge = order.pop()?;
                ClusterCmd::Bridge {
                    left: order,
                    bridge,
                    right,
                }
            }
            Kind::PowerCut => {
                let can = self.ids(|m| m.running && m.lose_unsynced);
                let machines = if g.bool(1.0 / 3.0) {
                    can
                } else {
                    vec![g.choose(&can)?.clone()]
                };
                ClusterCmd::PowerCut { machines }
            }
        })
    }
}

/// `items` in a random order (Fisher–Yates).
fn shuffled(g: &mut Gen, mut items: Vec<String>) -> Vec<String> {
    for i in (1..items.len()).rev() {
        let j = g.range(0..=i);
        items.swap(i, j);
    }
    items
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
fn partition_side(g: &mut Gen, all: &[String]) -> Option<Vec<String>> {
    let mut side: Vec<String> = all.iter().filter(|_| g.bool(0.5)).cloned().collect();
    if side.is_empty() || side.len() == all.len() {
        side = vec![g.choose(all)?.clone()];
    }
    Some(side)
}

/// A random one-way block: `(from, to)`, two different members of `all`.
fn one_way_block(g: &mut Gen, all: &[String]) -> Option<(String, String)> {
    let from = g.choose(all)?.clone();
    let others: Vec<String> = all.iter().filter(|m| **m != from).cloned().collect();
    let to = g.choose(&others)?.clone();
    Some((from, to))
}
