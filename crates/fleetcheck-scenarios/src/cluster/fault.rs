//! The one vocabulary of infrastructure fault kinds, as `[ping] faults` and `[kv] faults` name
//! them.

use serde::{Deserialize, Serialize};

/// A kind of infrastructure fault a scenario can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Kill a node's processes, and restart it later with its data (`"crash"`).
    Crash,
    /// Freeze a running machine, and thaw it later (`"pause"`).
    Pause,
    /// Split the machines into groups that cannot reach each other, and heal (`"partition"`).
    Partition,
    /// Drop packets from one machine to another (one way), and heal (`"block"`).
    Block,
    /// Drop a share of one machine's packets, and heal (`"loss"`).
    Loss,
    /// A rolling upgrade: another version of a machine's service (`"upgrade"`).
    Upgrade,
    /// Power loss of one or more machines at once: the writes they had not fsynced are lost
    /// (`"power-cut"`; machines need `[machine] lose_unsynced = true`).
    #[serde(rename = "power-cut")]
    PowerCut,
    /// A majorities ring: every machine sees a majority, no two the same one (`"ring"`;
    /// four machines or more), and heal.
    Ring,
    /// Two halves that meet in one machine, which sees both (`"bridge"`; three machines or
    /// more), and heal.
    Bridge,
    /// A machine of the role the scenario names as leader (`[kv] leader`, e.g. `primary`)
    /// cut off from the rest, and heal (`"isolate"`).
    Isolate,
    /// A machine's disk fails (EIO on writes, flushes or reads, or full), and recovers
    /// (`"disk"`; machines need `[machine] lose_unsynced = true`).
    Disk,
    /// A file of a stopped machine's data directory corrupted: a bit flipped, or its tail
    /// cut off (`"corrupt"`).
    Corrupt,
    /// A machine's wall clock moved off the host's by seconds to minutes, and back
    /// (`"clock"`; on netns only programs that read it through libc).
    Clock,
    /// A machine's outgoing packets delayed, duplicated, reordered or corrupted by the
    /// kernel's netem, and heal (`"netem"`; the qemu backend: this host's kernel has none).
    Netem,
    /// A running machine shuts down gracefully (a scenario file's services run their `stop`
    /// first), and boots again later with its data (`"shutdown"`).
    Shutdown,
}

impl Fault {
    /// Every kind, in the order they are listed.
    pub const ALL: [Fault; 15] = [
        Fault::Crash,
        Fault::Pause,
        Fault::Partition,
        Fault::Block,
        Fault::Loss,
        Fault::Upgrade,
        Fault::PowerCut,
        Fault::Ring,
        Fault::Bridge,
        Fault::Isolate,
        Fault::Disk,
        Fault::Corrupt,
        Fault::Clock,
        Fault::Netem,
        Fault::Shutdown,
    ];

    /// Its name in a configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Block => "block",
            Fault::Loss => "loss",
            Fault::Upgrade => "upgrade",
            Fault::PowerCut => "power-cut",
            Fault::Ring => "ring",
            Fault::Bridge => "bridge",
            Fault::Isolate => "isolate",
            Fault::Disk => "disk",
            Fault::Corrupt => "corrupt",
            Fault::Clock => "clock",
            Fault::Netem => "netem",
            Fault::Shutdown => "shutdown",
        }
    }

    /// The kind named `name`, if one is.
    pub fn from_name(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The names of `kinds`, comma separated.
pub fn names(kinds: &[Fault]) -> String {
    kinds
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the list of fault names of key `key` (`"kv.faults"`), refusing, in one sentence, a
/// name that is not one of `supported`.
pub fn parse_list<'de, D: serde::Deserializer<'de>>(
    d: D,
    key: &str,
    supported: &[Fault],
) -> Result<Vec<Fault>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|name| {
            Fault::from_name(name)
                .filter(|f| supported.contains(f))
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{key} names `{name}`, which is not one of {}",
                        names(supported)
                    ))
                })
        })
        .collect()
}
