//! The scenario configuration file (TOML): parameter domains of the generated network and what
//! every machine runs at boot.
//!
//! ```toml
//! [network]
//! machines = { min = 1, max = 4 }   # how many machines a case has
//! subnet = "172.16.2.0/24"          # addresses are drawn from .2 up, distinct by construction
//!
//! [machine]
//! memory_mb = { min = 96, max = 256 }            # a real memory limit (cgroup) on netns
//! kernels = ["3.14", "3.13", "3.12", "3.10"]     # first = preferred when shrinking
//! setup = ["nft add table inet t"]               # run by `sh -c` in the machine at every boot
//!
//! [ping]
//! timeout_ms = 100                               # how long a ping waits for a reply
//! faults = ["pause", "partition", "block"]       # faults to generate too (default none)
//! ```
//!
//! Every key is optional; the defaults are the seed's (shown above, with no setup commands).

use std::fmt;
use std::path::Path;

use fleetcheck_fabric::Subnet;
use serde::{Deserialize, Serialize};

/// The least memory a machine may get: the agent and a shell need a few MiB, `nft` more.
pub const MIN_MEMORY_MB: u32 = 32;
/// The most memory a machine may get (this is a limit, not a reservation, on netns).
pub const MAX_MEMORY_MB: u32 = 64 * 1024;
/// The longest ping timeout accepted.
pub const MAX_PING_TIMEOUT_MS: u64 = 60_000;

/// An inclusive range of integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range<T> {
    /// The least value.
    pub min: T,
    /// The greatest value.
    pub max: T,
}

/// `[network]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// How many machines a case has.
    pub machines: Range<u32>,
    /// The subnet of the test network.
    #[serde(with = "subnet_text")]
    pub subnet: Subnet,
}

/// `[machine]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MachineConfig {
    /// Memory of each machine, in MiB.
    pub memory_mb: Range<u32>,
    /// Kernel versions to choose from, the first preferred when shrinking.
    pub kernels: Vec<String>,
    /// Shell commands each machine runs at boot, before it counts as up.
    pub setup: Vec<String>,
}

/// `[ping]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PingConfig {
    /// How long a ping waits for a reply, in milliseconds.
    pub timeout_ms: u64,
    /// Faults the generator may add to the seed's commands: `"pause"` (Pause/Resume),
    /// `"partition"` (Partition/Heal) and `"block"` (one-way Block/Heal). Empty: the seed's
    /// test exactly.
    pub faults: Vec<Fault>,
}

/// A kind of fault the ping scenario can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Freeze a running machine, and thaw it later.
    Pause,
    /// Split the machines into groups that cannot reach each other, and heal.
    Partition,
    /// Drop packets from one machine to another (one way), and heal.
    Block,
}

/// A whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScenarioConfig {
    /// `[network]`.
    pub network: NetworkConfig,
    /// `[machine]`.
    pub machine: MachineConfig,
    /// `[ping]`.
    pub ping: PingConfig,
    /// `[kv]`: the kv scenario's knobs.
    pub kv: crate::kv::KvConfig,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            machines: Range { min: 1, max: 4 },
            subnet: Subnet {
                addr: std::net::Ipv4Addr::new(172, 16, 2, 0),
                prefix: 24,
            },
        }
    }
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            memory_mb: Range { min: 96, max: 256 },
            kernels: ["3.14", "3.13", "3.12", "3.10"].map(String::from).to_vec(),
            setup: Vec::new(),
        }
    }
}

impl Default for PingConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 100,
            faults: Vec::new(),
        }
    }
}

mod subnet_text {
    use fleetcheck_fabric::Subnet;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(subnet: &Subnet, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(subnet)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Subnet, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a configuration cannot be used. Each message is one sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ScenarioConfig {
    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: ScenarioConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().trim_end_matches('.').to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    ConfigError(format!("line {line}: {message}"))
                }
                None => ConfigError(message),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// How many machine addresses the subnet offers (from its second host address up).
    pub fn usable_addresses(&self) -> u64 {
        self.network.subnet.host_count().saturating_sub(1)
    }

    /// Checks that every domain is possible.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        let machines = self.network.machines;
        if machines.min < 1 {
            return err("network.machines.min must be at least 1".into());
        }
        if machines.min > machines.max {
            return err(format!(
                "network.machines.min ({}) is greater than network.machines.max ({})",
                machines.min, machines.max
            ));
        }
        if self.network.subnet.prefix > 30 {
            return err(format!(
                "network.subnet {} is too small: use a prefix of 30 or less",
                self.network.subnet
            ));
        }
        if u64::from(machines.max) > self.usable_addresses() {
            return err(format!(
                "network.machines.max is {} but subnet {} has only {} usable addresses",
                machines.max,
                self.network.subnet,
                self.usable_addresses()
            ));
        }
        let memory = self.machine.memory_mb;
        if memory.min > memory.max {
            return err(format!(
                "machine.memory_mb.min ({}) is greater than machine.memory_mb.max ({})",
                memory.min, memory.max
            ));
        }
        if memory.min < MIN_MEMORY_MB {
            return err(format!(
                "machine.memory_mb.min is {} MiB but a machine needs at least {MIN_MEMORY_MB} MiB",
                memory.min
            ));
        }
        if memory.max > MAX_MEMORY_MB {
            return err(format!(
                "machine.memory_mb.max is {} MiB, more than the {MAX_MEMORY_MB} MiB allowed",
                memory.max
            ));
        }
        if self.machine.kernels.is_empty() {
            return err("machine.kernels must name at least one kernel version".into());
        }
        if self.ping.timeout_ms == 0 || self.ping.timeout_ms > MAX_PING_TIMEOUT_MS {
            return err(format!(
                "ping.timeout_ms is {} but must be between 1 and {MAX_PING_TIMEOUT_MS}",
                self.ping.timeout_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_example_parses() {
        let c = ScenarioConfig::from_toml(
            r#"
[network]
machines = { min = 1, max = 4 }
subnet = "172.16.2.0/24"

[machine]
memory_mb = { min = 96, max = 256 }
setup = ["nft add table inet t"]
"#,
        )
        .unwrap();
        assert_eq!(c.machine.setup, vec!["nft add table inet t"]);
        assert_eq!(c.network.machines, Range { min: 1, max: 4 });
        assert_eq!(c.ping.timeout_ms, 100);
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(
            ScenarioConfig::from_toml("").unwrap(),
            ScenarioConfig::default()
        );
    }

    #[test]
    fn impossible_domains_are_one_sentence() {
        let cases = [
            (
                "[network]\nmachines = { min = 1, max = 300 }",
                "only 253 usable addresses",
            ),
            (
                "[machine]\nmemory_mb = { min = 4, max = 8 }",
                "needs at least 32 MiB",
            ),
            ("[network]\nmachines = { min = 3, max = 2 }", "greater than"),
            ("[network]\nsubnet = \"10.0.0.0/33\"", "is not a subnet"),
            ("[network]\nmachine = 3", "unknown field"),
            ("[ping]\ntimeout_ms = 0", "between 1 and"),
            ("[machine]\nkernels = []", "at least one kernel"),
            ("not toml", "line 1"),
        ];
        for (text, needle) in cases {
            let e = ScenarioConfig::from_toml(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?} gave {e:?}");
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }
}
