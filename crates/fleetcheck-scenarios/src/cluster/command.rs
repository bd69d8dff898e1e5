//! The infrastructure commands every scenario shares ([`ClusterCmd`]): what they are called in
//! replay files and counterexamples, when they may run, how they shrink, what they do to a
//! live [`Network`], and how a timeline draws them ([`Effect`]).

use fleetcheck_engine::Abort;
use fleetcheck_fabric::{BootError, Network};
use serde::{Deserialize, Deserializer, Serialize};

use super::generate::Plan;
use super::machine::service_version;
use super::state::ClusterState;
use crate::config::Services;

/// A command to the machines or the network. Machines are named by id. In replay files it
/// is `{"name": "Crash", "args": {"machine": "…"}}`; files of earlier versions that name a
/// `node` or a partition's `side` read the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", content = "args")]
pub enum ClusterCmd {
    /// Boot a machine that is off and wait until it is up (its setup commands run).
    Boot {
        /// The machine.
        #[serde(alias = "node")]
        machine: String,
    },
    /// Shut a running machine down.
    Shutdown {
        /// The machine.
        #[serde(alias = "node")]
        machine: String,
    },
    /// Cut the power of a running machine (its processes killed, its disk kept).
    Crash {
        /// The machine.
        #[serde(alias = "node")]
        machine: String,
    },
    /// Boot a crashed machine again, its disk kept (a store starts its service again).
    Restart {
        /// The machine.
        #[serde(alias = "node")]
        machine: String,
    },
    /// Freeze every process of a running machine.
    Pause {
        /// The machine.
        #[serde(alias = "node")]
        machine: String,
    },
    /// Thaw a paused machine.
    Resume {
        /// The machine.
        #[serde(alias = "node")]
        machine: String,
    },
    /// Cut the network between groups (machines in no group form one more group).
    Partition {
        /// The groups (`side` in earlier kv files: one group against the rest).
        #[serde(alias = "side", deserialize_with = "groups_or_side")]
        groups: Vec<Vec<String>>,
    },
    /// Drop packets from one machine to another, one way.
    Block {
        /// The sender whose packets are dropped.
        from: String,
        /// Their destination, which no longer hears it.
        to: String,
    },
    /// Drop a share of the packets to and from a machine.
    Loss {
        /// The machine.
        #[serde(alias = "node")]
        machine: String,
        /// Percent of packets dropped.
        percent: u8,
    },
    /// Remove every partition, block and loss.
    Heal,
    /// A majorities ring over `order`: each machine reaches the machines within
    /// [`ring_reach`] places of it around the ring (a majority, itself included), no other.
    Ring {
        /// The machines around the ring.
        order: Vec<String>,
    },
    /// `left` and `right` cannot reach each other; `bridge` reaches both.
    Bridge {
        /// One half.
        left: Vec<String>,
        /// The machine in both.
        bridge: String,
        /// The other half.
        right: Vec<String>,
    },
    /// Power loss of these machines at once (running or paused): they are off afterwards, and
    /// their disks keep only what was fsynced.
    PowerCut {
        /// The machines.
        machines: Vec<String>,
    },
    /// The machine's disk fails as `error` says from now on (it must be running and have the
    /// disk layer of `lose_unsynced`); what its file system makes of it lasts until its next
    /// boot.
    DiskFail {
        /// The machine.
        machine: String,
        /// How its disk fails.
        error: fleetcheck_fabric::DiskError,
    },
    /// The machine's failing disk works again.
    DiskRecover {
        /// The machine.
        machine: String,
    },
    /// The machine's outgoing packets go through netem as `netem` says (it must be running;
    /// until a `Heal` or until it loses power).
    Netem {
        /// The machine.
        machine: String,
        /// Delay, duplication, reordering or corruption.
        netem: fleetcheck_fabric::Netem,
    },
    /// The machine's wall clock set `offset_s` seconds off the host's (it must be running,
    /// with a clock that can move); it stays so until a `ClockReset` or until the machine
    /// loses power.
    ClockBump {
        /// The machine.
        machine: String,
        /// The offset, in seconds (negative: behind).
        offset_s: i64,
    },
    /// The machine's clock is the host's again.
    ClockReset {
        /// The machine.
        machine: String,
    },
    /// The machine's clock strobes: `flips` times, every `period_ms`, it jumps `offset_s` off
    /// the host's and back, ending right (the command takes `flips × period_ms`).
    ClockStrobe {
        /// The machine (running, its clock right).
        machine: String,
        /// How far it jumps, in seconds.
        offset_s: i64,
        /// How long each position holds, in milliseconds (at least a second: netns machines
        /// read their clock's offset once a second).
        period_ms: u32,
        /// How many jumps (an even number ends right).
        flips: u32,
    },
    /// One file of the machine's data directory corrupted while it is off (see
    /// [`fleetcheck_fabric::corrupt`]): `how`, the file and the place chosen by `pick`.
    Corrupt {
        /// The machine (off).
        machine: String,
        /// A bit flipped, or the file cut short.
        how: fleetcheck_fabric::Corruption,
        /// Which file, and where in it.
        pick: u64,
    },
    /// A rolling upgrade: the machine gets `version` of `service` (shut down first if
    /// running, booted again afterwards, its data kept; a machine that is off only gets it).
    Upgrade {
        /// The machine (running or off, not paused).
        #[serde(alias = "node")]
        machine: String,
        /// The service.
        service: String,
        /// The version it gets (a label of `[services.<service>]`).
        version: String,
    },
}

/// A partition's groups, or (kv files of earlier versions) its one side.
fn groups_or_side<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Groups(Vec<Vec<String>>),
        Side(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::Groups(groups) => groups,
        Either::Side(side) => vec![side],
    })
}

/// What an infrastructure command did to the machines or the network, as a timeline draws
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing the timeline shows as a state.
    Nothing,
    /// The machine boots over the bar, and is up after it if `up`, else down.
    Boot {
        /// The machine.
        machine: String,
        /// Whether it came up.
        up: bool,
    },
    /// The machine is down after the bar (shut down, crashed); it is no longer paused.
    Down {
        /// The machine.
        machine: String,
    },
    /// The machine is frozen from the bar on.
    Pause {
        /// The machine.
        machine: String,
    },
    /// The machine thaws when the bar begins.
    Resume {
        /// The machine.
        machine: String,
    },
    /// The `groups` cannot reach each other, nor the rest.
    Partition {
        /// The groups.
        groups: Vec<Vec<String>>,
    },
    /// Packets from `from` to `to` are dropped.
    Block {
        /// The sender.
        from: String,
        /// The receiver.
        to: String,
    },
    /// A share of the machine's packets is dropped.
    Loss {
        /// The machine.
        machine: String,
        /// The share, in percent.
        percent: u8,
    },
    /// The network faults end when the bar begins.
    Heal,
    /// The machines are down after the bar, their unsynced writes lost.
    PowerCut {
        /// The machines.
        machines: Vec<String>,
    },
    /// The machine's disk fails from the bar on.
    DiskFail {
        /// The machine.
        machine: String,
        /// How.
        error: fleetcheck_fabric::DiskError,
    },
    /// The machine's disk works again when the bar begins.
    DiskRecover {
        /// The machine.
        machine: String,
    },
    /// The machine's packets go through netem from the bar on (until a heal).
    Netem {
        /// The machine.
        machine: String,
        /// What netem does.
        netem: fleetcheck_fabric::Netem,
    },
    /// The machine's clock jumps back and forth over the bar.
    ClockStrobe {
        /// The machine.
        machine: String,
        /// By how many seconds.
        offset_s: i64,
    },
    /// The machine's clock is off from the bar on (until a reset or a power-off).
    Clock {
        /// The machine.
        machine: String,
        /// By how many seconds.
        offset_s: i64,
    },
    /// The machine's clock is right again when the bar begins.
    ClockReset {
        /// The machine.
        machine: String,
    },
    /// A file of the machine's data is corrupt from the bar on.
    Corrupt {
        /// The machine.
        machine: String,
        /// How.
        how: fleetcheck_fabric::Corruption,
    },
    /// Directed cuts between machines that no partition into groups describes (a ring, a
    /// bridge), from the bar until a heal.
    Cuts {
        /// `ring`, `bridge`.
        shape: &'static str,
        /// The machines the cuts concern.
        machines: Vec<String>,
        /// Its label.
        label: String,
    },
}

/// How far around a majorities ring of `n` machines each one reaches (each side): the least
/// that makes what it reaches, itself included, a majority.
pub fn ring_reach(n: usize) -> usize {
    let majority = n / 2 + 1;
    (majority - 1).div_ceil(2)
}

impl ClusterCmd {
    /// The directed cuts `(from, to)` it makes, for the commands that cut the network into a
    /// shape of their own (ring, bridge); none for the others.
    pub fn shape_cuts(&self) -> Vec<(String, String)> {
        let mut cuts = Vec::new();
        let mut both = |a: &String, b: &String| {
            cuts.push((a.clone(), b.clone()));
            cuts.push((b.clone(), a.clone()));
        };
        match self {
            ClusterCmd::Ring { order } => {
                let n = order.len();
                let reach = ring_reach(n);
                for i in 0..n {
                    for j in i + 1..n {
                        let distance = (j - i).min(n - (j - i));
                        if distance > reach {
                            both(&order[i], &order[j]);
                        }
                    }
                }
            }
            ClusterCmd::Bridge { left, right, .. } => {
                for a in left {
                    for b in right {
                        both(a, b);
                    }
                }
            }
            _ => {}
        }
        cuts
    }
}

impl ClusterCmd {
    /// Reads a command as people type it (`fleetcheck up`): `boot M`, `shutdown M`, `crash
    /// M`, `restart M`, `pause M`, `resume M`, `partition A,B | C` (unnamed machines: one
    /// more group), `block A B`, `loss M PERCENT` (0 removes it), `heal`, `upgrade M SERVICE
    /// VERSION`. `Ok(None)`: the first word names none of them; `Err`: one that lacks what it
    /// needs, in one sentence.
    pub fn parse(line: &str) -> Result<Option<ClusterCmd>, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(&first) = words.first() else {
            return Ok(None);
        };
        let arg = |i: usize, what: &str| -> Result<String, String> {
            words
                .get(i)
                .map(|w| w.to_string())
                .ok_or_else(|| format!("`{first}` needs {what}"))
        };
        let machine = || arg(1, "a machine");
        Ok(Some(match first {
            "boot" => ClusterCmd::Boot {
                machine: machine()?,
            },
            "shutdown" => ClusterCmd::Shutdown {
                machine: machine()?,
            },
            "crash" => ClusterCmd::Crash {
                machine: machine()?,
            },
            "restart" => ClusterCmd::Restart {
                machine: machine()?,
            },
            "pause" => ClusterCmd::Pause {
                machine: machine()?,
            },
            "resume" => ClusterCmd::Resume {
                machine: machine()?,
            },
            "partition" => {
                let rest = line.trim_start()["partition".len()..].trim();
                let groups: Vec<Vec<String>> = rest
                    .split('|')
                    .map(|g| {
                        g.split(|c: char| c == ',' || c.is_whitespace())
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect::<Vec<_>>()
                    })
                    .filter(|g| !g.is_empty())
                    .collect();
                if groups.is_empty() {
                    return Err("`partition` needs groups, e.g. `partition a,b | c`".into());
                }
                ClusterCmd::Partition { groups }
            }
            "block" => ClusterCmd::Block {
                from: arg(1, "two machines")?,
                to: arg(2, "two machines")?,
            },
            "loss" => {
                let what = "a machine and a percentage";
                let machine = arg(1, what)?;
                let percent = arg(2, what)?
                    .trim_end_matches('%')
                    .parse()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or("the loss is a percentage from 0 to 100")?;
                ClusterCmd::Loss { machine, percent }
            }
            "heal" => ClusterCmd::Heal,
            "ring" => {
                let order: Vec<String> = words[1..].iter().map(|w| w.to_string()).collect();
                if order.len() < 4 {
                    return Err("`ring` needs four machines or more, in ring order".into());
                }
                ClusterCmd::Ring { order }
            }
            "bridge" => {
                let rest = line.trim_start()["bridge".len()..].trim();
                let parts: Vec<Vec<String>> = rest
                    .split('|')
                    .map(|g| g.split_whitespace().map(String::from).collect())
                    .collect();
                match <[Vec<String>; 3]>::try_from(parts) {
                    Ok([left, mut bridge, right])
                        if bridge.len() == 1 && !left.is_empty() && !right.is_empty() =>
                    {
                        ClusterCmd::Bridge {
                            left,
                            bridge: bridge.remove(0),
                            right,
                        }
                    }
                    _ => return Err(
                        "`bridge` needs `bridge A B | C | D E`: two halves and the machine in both"
                            .into(),
                    ),
                }
            }
            "power-cut" => {
                let machines: Vec<String> = words[1..].iter().map(|w| w.to_string()).collect();
                if machines.is_empty() {
                    return Err("`power-cut` needs one or more machines".into());
                }
                ClusterCmd::PowerCut { machines }
            }
            "disk-fail" => {
                let what = "a machine and how its disk fails (write, fsync, read, full)";
                let machine = arg(1, what)?;
                let error = fleetcheck_fabric::DiskError::from_name(&arg(2, what)?)
                    .ok_or("a disk fails on `write`, `fsync`, `read` or is `full`")?;
                ClusterCmd::DiskFail { machine, error }
            }
            "disk-recover" => ClusterCmd::DiskRecover {
                machine: machine()?,
            },
            "clock" => {
                let what = "a machine and an offset in seconds (`+30`, `-120`)";
                ClusterCmd::ClockBump {
                    machine: arg(1, what)?,
                    offset_s: seconds(&arg(2, what)?)?,
                }
            }
            "netem" => {
                let what = "a machine and `delay MS`, `duplicate PERCENT`, `reorder PERCENT MS` or `corrupt PERCENT`";
                let machine = arg(1, what)?;
                let number = |i: usize| -> Result<u32, String> {
                    let w = arg(i, what)?;
                    w.trim_end_matches(['%', 's', 'm'])
                        .parse()
                        .map_err(|_| format!("`{w}` is not a whole number"))
                };
                let share = |i: usize| -> Result<u8, String> {
                    u8::try_from(number(i)?).map_err(|_| "a share is at most 100%".to_string())
                };
                let netem = match arg(2, what)?.as_str() {
                    "delay" => fleetcheck_fabric::Netem::Delay {
                        ms: number(3)?,
                        jitter_ms: 0,
                    },
                    "duplicate" => fleetcheck_fabric::Netem::Duplicate { percent: share(3)? },
                    "reorder" => fleetcheck_fabric::Netem::Reorder {
                        percent: share(3)?,
                        ms: number(4)?,
                    },
                    "corrupt" => fleetcheck_fabric::Netem::Corrupt { percent: share(3)? },
                    other => {
                        return Err(format!(
                        "netem does `delay`, `duplicate`, `reorder` or `corrupt`, not `{other}`"
                    ))
                    }
                };
                ClusterCmd::Netem { machine, netem }
            }
            "clock-strobe" => {
                let what = "a machine, an offset in seconds and how many flips";
                let machine = arg(1, what)?;
                let offset_s = seconds(&arg(2, what)?)?;
                let flips = arg(3, what)?
                    .parse()
                    .map_err(|_| "the flips are a whole number".to_string())?;
                ClusterCmd::ClockStrobe {
                    machine,
                    offset_s,
                    period_ms: 1000,
                    flips,
                }
            }
            "clock-reset" => ClusterCmd::ClockReset {
                machine: machine()?,
            },
            "corrupt" => {
                let what =
                    "a machine that is off and how (bit-flip, truncate), then optionally a number";
                let machine = arg(1, what)?;
                let how = fleetcheck_fabric::Corruption::from_name(&arg(2, what)?)
                    .ok_or("a file is corrupted by a `bit-flip` or a `truncate`")?;
                let pick = match words.get(3) {
                    Some(w) => w
                        .parse()
                        .map_err(|_| "the corruption's number is a whole number")?,
                    None => 0,
                };
                ClusterCmd::Corrupt { machine, how, pick }
            }
            "upgrade" => {
                let what = "a machine, a service and a version";
                ClusterCmd::Upgrade {
                    machine: arg(1, what)?,
                    service: arg(2, what)?,
                    version: arg(3, what)?,
                }
            }
            _ => return Ok(None),
        }))
    }

    /// The machine it acts on, if it acts on one.
    pub fn machine(&self) -> Option<&str> {
        match self {
            ClusterCmd::Boot { machine }
            | ClusterCmd::Shutdown { machine }
            | ClusterCmd::Crash { machine }
            | ClusterCmd::Restart { machine }
            | ClusterCmd::Pause { machine }
            | ClusterCmd::Resume { machine }
            | ClusterCmd::Loss { machine, .. }
            | ClusterCmd::DiskFail { machine, .. }
            | ClusterCmd::DiskRecover { machine }
            | ClusterCmd::Corrupt { machine, .. }
            | ClusterCmd::ClockBump { machine, .. }
            | ClusterCmd::Netem { machine, .. }
            | ClusterCmd::ClockStrobe { machine, .. }
            | ClusterCmd::ClockReset { machine }
            | ClusterCmd::Upgrade { machine, .. } => Some(machine),
            ClusterCmd::Partition { .. }
            | ClusterCmd::Block { .. }
            | ClusterCmd::Heal
            | ClusterCmd::PowerCut { .. }
            | ClusterCmd::Ring { .. }
            | ClusterCmd::Bridge { .. } => None,
        }
    }

    /// Its name: `Crash`, `Partition` (statistics count commands by it).
    pub fn name(&self) -> &'static str {
        match self {
            ClusterCmd::Boot { .. } => "Boot",
            ClusterCmd::Shutdown { .. } => "Shutdown",
            ClusterCmd::Crash { .. } => "Crash",
            ClusterCmd::Restart { .. } => "Restart",
            ClusterCmd::Pause { .. } => "Pause",
            ClusterCmd::Resume { .. } => "Resume",
            ClusterCmd::Partition { .. } => "Partition",
            ClusterCmd::Block { .. } => "Block",
            ClusterCmd::Loss { .. } => "Loss",
            ClusterCmd::Heal => "Heal",
            ClusterCmd::PowerCut { .. } => "PowerCut",
            ClusterCmd::Ring { .. } => "Ring",
            ClusterCmd::Bridge { .. } => "Bridge",
            ClusterCmd::Upgrade { .. } => "Upgrade",
            ClusterCmd::DiskFail { .. } => "DiskFail",
            ClusterCmd::DiskRecover { .. } => "DiskRecover",
            ClusterCmd::Corrupt { .. } => "Corrupt",
            ClusterCmd::ClockBump { .. } => "ClockBump",
            ClusterCmd::Netem { .. } => "Netem",
            ClusterCmd::ClockStrobe { .. } => "ClockStrobe",
            ClusterCmd::ClockReset { .. } => "ClockReset",
        }
    }

    /// `Crash(abc)`, `Partition(a b | rest)`, `Block(a -/-> b)`, `Loss(a, 20%)`,
    /// `Upgrade(a: etcd -> 3.5)`: as counterexamples print it.
    pub fn describe(&self) -> String {
        match self {
            ClusterCmd::Boot { machine } => format!("Boot({machine})"),
            ClusterCmd::Shutdown { machine } => format!("Shutdown({machine})"),
            ClusterCmd::Crash { machine } => format!("Crash({machine})"),
            ClusterCmd::Restart { machine } => format!("Restart({machine})"),
            ClusterCmd::Pause { machine } => format!("Pause({machine})"),
            ClusterCmd::Resume { machine } => format!("Resume({machine})"),
            ClusterCmd::Partition { groups } => {
                let groups: Vec<String> = groups.iter().map(|g| g.join(" ")).collect();
                format!("Partition({} | rest)", groups.join(" | "))
            }
            ClusterCmd::Block { from, to } => format!("Block({from} -/-> {to})"),
            ClusterCmd::Loss { machine, percent } => format!("Loss({machine}, {percent}%)"),
            ClusterCmd::Heal => "Heal".to_string(),
            ClusterCmd::PowerCut { machines } => format!("PowerCut({})", machines.join(" ")),
            ClusterCmd::Ring { order } => format!("Ring({})", order.join(" ")),
            ClusterCmd::Bridge {
                left,
                bridge,
                right,
            } => format!(
                "Bridge({} | {bridge} | {})",
                left.join(" "),
                right.join(" ")
            ),
            ClusterCmd::Upgrade {
                machine,
                service,
                version,
            } => format!("Upgrade({machine}: {service} -> {version})"),
            ClusterCmd::DiskFail { machine, error } => format!("DiskFail({machine}, {error})"),
            ClusterCmd::DiskRecover { machine } => format!("DiskRecover({machine})"),
            ClusterCmd::Corrupt { machine, how, pick } => {
                format!("Corrupt({machine}, {how} #{pick})")
            }
            ClusterCmd::ClockBump { machine, offset_s } => {
                format!("ClockBump({machine}, {offset_s:+}s)")
            }
            ClusterCmd::ClockReset { machine } => format!("ClockReset({machine})"),
            ClusterCmd::Netem { machine, netem } => format!("Netem({machine}, {netem})"),
            ClusterCmd::ClockStrobe {
                machine,
                offset_s,
                period_ms,
                flips,
            } => format!("ClockStrobe({machine}, {offset_s:+}s, {flips} x {period_ms}ms)"),
        }
    }

    /// Whether it may run in `s` under `plan`.
    pub fn precondition(&self, s: &ClusterState, plan: &Plan) -> bool {
        let machine = |id: &str| s.machine(id);
        let exists = |id: &str| s.machine(id).is_some();
        match self {
            // A failing disk recovers before its machine boots (its file system must mount).
            ClusterCmd::Boot { machine: id } | ClusterCmd::Restart { machine: id } => {
                machine(id).is_some_and(|m| !m.running && m.disk_error.is_none())
            }
            ClusterCmd::DiskFail { machine: id, .. } => {
                machine(id).is_some_and(|m| m.running && m.lose_unsynced && m.disk_error.is_none())
            }
            ClusterCmd::DiskRecover { machine: id } => {
                machine(id).is_some_and(|m| m.disk_error.is_some())
            }
            ClusterCmd::Corrupt { machine: id, .. } => machine(id).is_some_and(|m| !m.running),
            ClusterCmd::ClockBump {
                machine: id,
                offset_s,
            } => machine(id).is_some_and(|m| {
                m.running && m.clock && *offset_s != 0 && m.clock_offset != *offset_s
            }),
            ClusterCmd::ClockReset { machine: id } => {
                machine(id).is_some_and(|m| m.running && m.clock_offset != 0)
            }
            ClusterCmd::ClockStrobe {
                machine: id,
                offset_s,
                period_ms,
                flips,
            } => {
                *offset_s != 0
                    && (1000..=5000).contains(period_ms)
                    && (1..=16).contains(flips)
                    && machine(id).is_some_and(|m| m.running && m.clock && m.clock_offset == 0)
            }
            ClusterCmd::Netem { machine: id, netem } => {
                netem.valid() && machine(id).is_some_and(|m| m.running && m.netem.is_none())
            }
            ClusterCmd::Shutdown { machine: id } | ClusterCmd::Crash { machine: id } => {
                machine(id).is_some_and(|m| m.running)
            }
            ClusterCmd::Pause { machine: id } => machine(id).is_some_and(|m| m.awake()),
            ClusterCmd::Resume { machine: id } => machine(id).is_some_and(|m| m.paused),
            ClusterCmd::Partition { groups } => {
                let named: Vec<&String> = groups.iter().flatten().collect();
                let distinct: std::collections::BTreeSet<&String> = named.iter().copied().collect();
                (plan.partitions_stack || !s.partitioned)
                    && !groups.is_empty()
                    && groups.iter().all(|g| !g.is_empty())
                    && distinct.len() == named.len()
                    && named.iter().all(|id| exists(id))
                    // There must be a second group: another listed one, or the unlisted rest.
                    && (groups.len() >= 2 || named.len() < s.machines.len())
            }
            ClusterCmd::Block { from, to } => from != to && exists(from) && exists(to),
            ClusterCmd::Loss { machine, percent } => *percent <= 100 && exists(machine),
            ClusterCmd::Heal => s.network_faulty(),
            ClusterCmd::Ring { order } => {
                let distinct: std::collections::BTreeSet<&String> = order.iter().collect();
                (plan.partitions_stack || !s.partitioned)
                    && order.len() >= 4
                    && order.len() == s.machines.len()
                    && distinct.len() == order.len()
                    && order.iter().all(|id| exists(id))
            }
            ClusterCmd::Bridge {
                left,
                bridge,
                right,
            } => {
                let all: Vec<&String> = left.iter().chain(right).chain([bridge]).collect();
                let distinct: std::collections::BTreeSet<&String> = all.iter().copied().collect();
                (plan.partitions_stack || !s.partitioned)
                    && !left.is_empty()
                    && !right.is_empty()
                    && distinct.len() == all.len()
                    && all.len() == s.machines.len()
                    && all.iter().all(|id| exists(id))
            }
            ClusterCmd::PowerCut { machines } => {
                let distinct: std::collections::BTreeSet<&String> = machines.iter().collect();
                !machines.is_empty()
                    && distinct.len() == machines.len()
                    && machines
                        .iter()
                        .all(|id| machine(id).is_some_and(|m| m.running && m.lose_unsynced))
            }
            ClusterCmd::Upgrade {
                machine: id,
                service,
                version,
            } => machine(id).is_some_and(|m| {
                !m.paused
                    && m.versions.get(service).is_some_and(|v| v != version)
                    && plan.allowed(m, service).contains(version)
            }),
        }
    }

    /// Simpler commands to try in its place while shrinking: lighter loss, a power cut of
    /// fewer machines, earlier (preferred) versions (of any role's list; the precondition keeps
    /// those the machine's allows).
    pub fn shrink(&self, plan: &Plan) -> Vec<ClusterCmd> {
        match self {
            ClusterCmd::PowerCut { machines } if machines.len() > 1 => (0..machines.len())
                .map(|i| {
                    let mut fewer = machines.clone();
                    fewer.remove(i);
                    ClusterCmd::PowerCut { machines: fewer }
                })
                .collect(),
            // Smaller numbers, the same kind.
            ClusterCmd::Netem { machine, netem } => {
                use super::generate::{below, NETEM_DELAYS_MS, NETEM_SHARES};
                use fleetcheck_fabric::Netem;
                let shares = |p| below(&NETEM_SHARES, p);
                let smaller: Vec<Netem> = match *netem {
                    Netem::Delay { ms, .. } => below(&NETEM_DELAYS_MS, ms)
                        .map(|d| Netem::Delay {
                            ms: d,
                            jitter_ms: d / 10,
                        })
                        .collect(),
                    Netem::Duplicate { percent } => shares(percent)
                        .map(|p| Netem::Duplicate { percent: p })
                        .collect(),
                    Netem::Reorder { percent, ms } => shares(percent)
                        .map(|p| Netem::Reorder { percent: p, ms })
                        .collect(),
                    Netem::Corrupt { percent } => shares(percent)
                        .map(|p| Netem::Corrupt { percent: p })
                        .collect(),
                };
                smaller
                    .into_iter()
                    .map(|netem| ClusterCmd::Netem {
                        machine: machine.clone(),
                        netem,
                    })
                    .collect()
            }
            // Fewer flips (an even number), then a smaller jump.
            ClusterCmd::ClockStrobe {
                machine,
                offset_s,
                period_ms,
                flips,
            } => {
                let mut out: Vec<ClusterCmd> = [2, 4]
                    .into_iter()
                    .filter(|f| f < flips)
                    .map(|f| ClusterCmd::ClockStrobe {
                        machine: machine.clone(),
                        offset_s: *offset_s,
                        period_ms: *period_ms,
                        flips: f,
                    })
                    .collect();
                out.extend(
                    super::generate::below(&super::generate::CLOCK_OFFSETS, offset_s.abs()).map(
                        |size| ClusterCmd::ClockStrobe {
                            machine: machine.clone(),
                            offset_s: size * offset_s.signum(),
                            period_ms: *period_ms,
                            flips: *flips,
                        },
                    ),
                );
                out
            }
            // Smaller offsets, the same way.
            ClusterCmd::ClockBump { machine, offset_s } => {
                super::generate::below(&super::generate::CLOCK_OFFSETS, offset_s.abs())
                    .map(|size| ClusterCmd::ClockBump {
                        machine: machine.clone(),
                        offset_s: size * offset_s.signum(),
                    })
                    .collect()
            }
            ClusterCmd::Loss { machine, percent } if *percent > 20 => vec![ClusterCmd::Loss {
                machine: machine.clone(),
                percent: 20,
            }],
            ClusterCmd::Upgrade {
                machine,
                service,
                version,
            } => {
                let mut earlier: Vec<&String> = Vec::new();
                for versions in plan.versions.values().filter_map(|v| v.get(service)) {
                    for v in super::earlier(versions, |v| v == version) {
                        if !earlier.contains(&v) {
                            earlier.push(v);
                        }
                    }
                }
                earlier
                    .into_iter()
                    .map(|v| ClusterCmd::Upgrade {
                        machine: machine.clone(),
                        service: service.clone(),
                        version: v.clone(),
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// A cost estimate for the engine's budget (milliseconds of work, roughly in tens).
    pub fn cost(&self) -> u32 {
        match self {
            ClusterCmd::Boot { .. } => 3,
            ClusterCmd::Restart { .. } | ClusterCmd::PowerCut { .. } => 5,
            // Its whole length.
            ClusterCmd::ClockStrobe {
                period_ms, flips, ..
            } => flips * period_ms / 100,
            // A shutdown and a boot.
            ClusterCmd::Upgrade { .. } => 4,
            ClusterCmd::Shutdown { .. } | ClusterCmd::Heal | ClusterCmd::DiskRecover { .. } => 1,
            _ => 2,
        }
    }

    /// Runs it on `net`, in state `s` (the model's state before it); services' programs come
    /// from `services` (`[services]`). `Ok(Err(why))`: the machine's own setup failed on boot
    /// (the system's behaviour, which a postcondition judges); `Err`: the infrastructure's.
    pub fn apply(
        &self,
        net: &dyn Network,
        s: &ClusterState,
        services: &Services,
    ) -> Result<Result<(), String>, Abort> {
        let boot = |machine: &str| -> Result<Result<(), String>, Abort> {
            match net.boot(&[machine]).pop().expect("one result per machine") {
                Ok(()) => Ok(Ok(())),
                Err(e @ BootError::SetupFailed { .. }) => Ok(Err(e.to_string())),
                Err(e) => Err(e.into()),
            }
        };
        match self {
            ClusterCmd::Boot { machine } | ClusterCmd::Restart { machine } => return boot(machine),
            ClusterCmd::Shutdown { machine } => net.shutdown(machine)?,
            ClusterCmd::Crash { machine } => net.crash(machine)?,
            ClusterCmd::Pause { machine } => fault(net.pause(machine))?,
            ClusterCmd::Resume { machine } => fault(net.resume(machine))?,
            ClusterCmd::Partition { groups } => fault(net.partition(groups))?,
            ClusterCmd::Block { from, to } => fault(net.block(from, to))?,
            ClusterCmd::Loss { machine, percent } => fault(net.loss(machine, *percent))?,
            // netem is the machines' own (in their kernels): each running one is told.
            ClusterCmd::Heal => {
                for m in s.machines.iter().filter(|m| m.netem.is_some() && m.running) {
                    fault(net.netem(&m.id, None))?;
                }
                fault(net.heal())?
            }
            ClusterCmd::Netem { machine, netem } => fault(net.netem(machine, Some(*netem)))?,
            ClusterCmd::DiskFail { machine, error } => {
                fault(net.disk_error(machine, Some(*error)))?
            }
            ClusterCmd::DiskRecover { machine } => fault(net.disk_error(machine, None))?,
            // What it hit is in the machine's `corrupt.log`; none to hit corrupts nothing.
            ClusterCmd::Corrupt { machine, how, pick } => {
                fault(net.corrupt(machine, *how, *pick))?;
            }
            ClusterCmd::ClockBump { machine, offset_s } => {
                fault(net.set_clock(machine, *offset_s))?
            }
            ClusterCmd::ClockReset { machine } => fault(net.set_clock(machine, 0))?,
            // Bounded: at most 16 flips of at most 5 s; the clock is right at the end.
            ClusterCmd::ClockStrobe {
                machine,
                offset_s,
                period_ms,
                flips,
            } => {
                let hold = std::time::Duration::from_millis(u64::from(*period_ms));
                for flip in 0..*flips {
                    let to = if flip % 2 == 0 { *offset_s } else { 0 };
                    fault(net.set_clock(machine, to))?;
                    std::thread::sleep(hold);
                }
                fault(net.set_clock(machine, 0))?;
            }
            ClusterCmd::PowerCut { machines } => {
                let ids: Vec<&str> = machines.iter().map(String::as_str).collect();
                fault(net.power_cut(&ids))?
            }
            ClusterCmd::Ring { .. } | ClusterCmd::Bridge { .. } => {
                for (from, to) in self.shape_cuts() {
                    fault(net.block(&from, &to))?;
                }
            }
            ClusterCmd::Upgrade {
                machine,
                service,
                version,
            } => {
                let program = service_version(services, service, version).ok_or_else(|| {
                    Abort::new(format!(
                        "no version `{version}` of {service} in [services.{service}]"
                    ))
                })?;
                let running = s.machine(machine).is_some_and(|m| m.running);
                if running {
                    net.shutdown(machine)?;
                }
                net.set_service(machine, service, &program)
                    .map_err(|e| Abort::new(format!("upgrade of {machine} failed: {e}")))?;
                if running {
                    return boot(machine);
                }
            }
        }
        Ok(Ok(()))
    }

    /// What it did, for a timeline: `ok` whether it went through (a boot whose setup failed
    /// leaves the machine down), `s` the state before or after it (an upgrade leaves a
    /// machine's power as it found it).
    pub fn effect(&self, s: &ClusterState, ok: bool) -> Effect {
        let m = |id: &String| id.clone();
        match self {
            ClusterCmd::Boot { machine } | ClusterCmd::Restart { machine } => Effect::Boot {
                machine: m(machine),
                up: ok,
            },
            ClusterCmd::Shutdown { machine } | ClusterCmd::Crash { machine } => Effect::Down {
                machine: m(machine),
            },
            ClusterCmd::Pause { machine } => Effect::Pause {
                machine: m(machine),
            },
            ClusterCmd::Resume { machine } => Effect::Resume {
                machine: m(machine),
            },
            ClusterCmd::Partition { groups } => Effect::Partition {
                groups: groups.clone(),
            },
            ClusterCmd::Block { from, to } => Effect::Block {
                from: m(from),
                to: m(to),
            },
            ClusterCmd::Loss { machine, percent } => Effect::Loss {
                machine: m(machine),
                percent: *percent,
            },
            ClusterCmd::Heal => Effect::Heal,
            ClusterCmd::DiskFail { machine, error } => Effect::DiskFail {
                machine: m(machine),
                error: *error,
            },
            ClusterCmd::DiskRecover { machine } => Effect::DiskRecover {
                machine: m(machine),
            },
            ClusterCmd::Netem { machine, netem } => Effect::Netem {
                machine: m(machine),
                netem: *netem,
            },
            ClusterCmd::ClockBump { machine, offset_s } => Effect::Clock {
                machine: m(machine),
                offset_s: *offset_s,
            },
            ClusterCmd::ClockReset { machine } => Effect::ClockReset {
                machine: m(machine),
            },
            ClusterCmd::ClockStrobe {
                machine, offset_s, ..
            } => Effect::ClockStrobe {
                machine: m(machine),
                offset_s: *offset_s,
            },
            ClusterCmd::Corrupt { machine, how, .. } => Effect::Corrupt {
                machine: m(machine),
                how: *how,
            },
            ClusterCmd::PowerCut { machines } => Effect::PowerCut {
                machines: machines.clone(),
            },
            ClusterCmd::Ring { order } => Effect::Cuts {
                shape: "ring",
                machines: order.clone(),
                label: self.describe().to_lowercase(),
            },
            ClusterCmd::Bridge {
                left,
                bridge,
                right,
            } => Effect::Cuts {
                shape: "bridge",
                machines: left.iter().chain(right).chain([bridge]).cloned().collect(),
                label: self.describe().to_lowercase(),
            },
            // A running machine goes down and boots again within the bar.
            ClusterCmd::Upgrade { machine, .. } => {
                if s.machine(machine).is_some_and(|x| x.running) {
                    Effect::Boot {
                        machine: m(machine),
                        up: ok,
                    }
                } else {
                    Effect::Nothing
                }
            }
        }
    }

    /// The machine whose lane a timeline draws its bar on; `None`: the network's lane.
    pub fn lane(&self) -> Option<&str> {
        match self {
            ClusterCmd::Loss { .. } => None,
            c => c.machine(),
        }
    }

    /// The label of its bar on a timeline: `crash`, `upgrade etcd to 3.5`, `block(a -/-> b)`.
    pub fn bar_label(&self) -> String {
        let described = self.describe();
        match self {
            ClusterCmd::Upgrade {
                service, version, ..
            } => format!("upgrade {service} to {version}"),
            c if c.lane().is_some() => described[..described.find('(').unwrap_or(0)].to_lowercase(),
            _ => described.to_lowercase(),
        }
    }
}

/// A clock offset as people type it: `+30`, `-120`, `5` (seconds).
fn seconds(word: &str) -> Result<i64, String> {
    word.trim_start_matches('+')
        .parse()
        .map_err(|_| format!("`{word}` is not a whole number of seconds"))
}

/// A fault's error as an abort: one the backend refuses (it cannot do this, here, to this
/// program) is [`Abort::refused`], like bad input; any other, the infrastructure's.
fn fault<T>(result: Result<T, fleetcheck_fabric::FaultError>) -> Result<T, Abort> {
    result.map_err(|e| {
        if e.is_refusal() {
            Abort::refused(Abort::from(e).message)
        } else {
            Abort::from(e)
        }
    })
}
