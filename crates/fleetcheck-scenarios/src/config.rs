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
//! filesystem = ["ext4", "xfs", "btrfs"]         # the data directory's; first = preferred
//! versions = { fw = ["1.0", "2.0"] }             # which versions of each service (default all)
//!
//! [services.fw]                                  # a service: its versions, first preferred
//! versions = [
//!   { version = "1.0", path = "versions/fw-1.0" },   # relative to this file
//!   { version = "2.0", path = "versions/fw-2.0" },
//! ]
//!
//! [roles.server]                                 # optional: machines by role; each key of
//! count = { min = 1, max = 2 }                   # [machine] may be set again per role
//! filesystem = "xfs"
//!
//! [ping]
//! timeout_ms = 100                               # how long a ping waits for a reply
//! faults = ["pause", "partition", "block"]       # faults to generate too (default none)
//! upgrade = true                                 # rolling upgrades too (default false)
//! ```
//!
//! Every key is optional; the defaults are the seed's (shown above, with no setup commands, no
//! file system of their own, no services, no roles). Each machine parameter is a fixed value or
//! a domain: a number or `{ min, max }`; a string or a list whose first element shrinking
//! prefers. With `[roles.<name>]` the network has `count` machines of each role (roles in
//! name order) and `[network] machines` is not used.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use fleetcheck_fabric::{FileSystem, ServiceVersion, Subnet};
use serde::{Deserialize, Serialize};

/// The least memory a machine may get: the agent and a shell need a few MiB, `nft` more.
pub const MIN_MEMORY_MB: u32 = 32;
/// The most memory a machine may get (this is a limit, not a reservation, on netns).
pub const MAX_MEMORY_MB: u32 = 64 * 1024;
/// The longest ping timeout accepted.
pub const MAX_PING_TIMEOUT_MS: u64 = 60_000;
/// The longest setup command: it is one argument of `sh -c`, and Linux refuses to start a
/// program with an argument of more than 32 pages (`MAX_ARG_STRLEN`, 131072 bytes with its NUL).
pub const MAX_SETUP_BYTES: usize = 131_071;
/// The most concurrent client workers of a kv batch (each is a thread with its own client).
pub const MAX_KV_WORKERS: usize = 64;
/// The most operations per kv worker and batch (the history is checked after every step).
pub const MAX_KV_OPS_PER_WORKER: usize = 1000;
/// The longest kv client timeout accepted.
pub const MAX_KV_OP_TIMEOUT_MS: u64 = 600_000;

/// An inclusive range of integers; in the file `{ min = 1, max = 4 }`, or one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Range<T> {
    /// The least value.
    pub min: T,
    /// The greatest value.
    pub max: T,
}

impl<'de, T: Deserialize<'de> + Copy> Deserialize<'de> for Range<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Both<T> {
            min: T,
            max: T,
        }
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a number or { min = .., max = .. }")]
        enum Repr<T> {
            One(T),
            Both(Both<T>),
        }
        Ok(match Repr::deserialize(d)? {
            Repr::One(v) => Range { min: v, max: v },
            Repr::Both(Both { min, max }) => Range { min, max },
        })
    }
}

/// A domain of values in the file: one value (fixed), or a list whose first element is
/// preferred when shrinking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let one = T::deserialize(serde::de::value::StrDeserializer::<E>::new(v))?;
                Ok(OneOrMany(vec![one]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut all = Vec::new();
                while let Some(v) = seq.next_element()? {
                    all.push(v);
                }
                Ok(OneOrMany(all))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

fn some_file_systems<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<FileSystem>, D::Error> {
    let all = one_or_many(d)?;
    if all.is_empty() {
        return Err(serde::de::Error::custom(
            "filesystem must name at least one file system (ext4, xfs, btrfs)",
        ));
    }
    Ok(all)
}

pub(crate) fn one_or_many<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    OneOrMany::deserialize(d).map(|o| o.0)
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
    #[serde(deserialize_with = "one_or_many")]
    pub kernels: Vec<String>,
    /// Shell commands each machine runs at boot, before it counts as up.
    pub setup: Vec<String>,
    /// File systems of the data directory to choose from, the first preferred; empty: a plain
    /// directory on the host's file system.
    #[serde(
        deserialize_with = "some_file_systems",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub filesystem: Vec<FileSystem>,
    /// For each service, the versions (of `[services.<name>]`) machines may get, the first
    /// preferred; an empty list: the service is not installed. Services not named: every
    /// version, in the order `[services]` lists them.
    pub versions: BTreeMap<String, OneOrMany<String>>,
    /// Every machine's data directory loses what was not fsynced when its power is cut (the
    /// `power-cut` fault; on netns and qemu, ext4 unless `filesystem` says otherwise).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lose_unsynced: bool,
}

/// `[services.<name>]`: a service, its installations and (in a scenario file) how it runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Its versions, the first preferred when shrinking (none: the host's program).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<ServiceVersion>,
    /// In a scenario file ([`crate::file`]): the command that runs it in the foreground on
    /// each machine (fleetcheck runs it in the background, its output in `<name>.log` of the
    /// machine's data directory), at boot and after every restart and upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// A command that succeeds once the service is ready on its machine, retried until
    /// `ready_timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// A command that succeeds once the whole cluster serves, retried on the first machine
    /// after the service started everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<String>,
    /// How long `ready` and `serving` may take, in milliseconds (default 20000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout_ms: Option<u64>,
    /// Services that must be ready before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// In a scenario file: a command run once per run, inside the first machine that is about
    /// to start the service, before its start: it leaves in `{prepared}` (a directory of the
    /// run's own that every machine sees, removed with the run) what every start may copy,
    /// such as a database's initial files made once instead of once per case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<String>,
    /// In a scenario file: a command that succeeds once the service has settled after a fault
    /// (e.g. a failover has completed), tried after every fault but one-way blocks and loss on
    /// each node that is up in turn until it succeeds on one or `settle_ms` passes; then the
    /// case goes on regardless (the history says what happened), so faults take effect where
    /// the command sequence says, not at random later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle: Option<String>,
    /// How long `settle` may take, in milliseconds (default 8000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_ms: Option<u64>,
    /// In a scenario file: a command that stops the service gracefully, run on a machine
    /// about to shut down (a `Shutdown`, an `Upgrade` of a running machine; not a crash),
    /// services in the reverse of their start order, each within `ready_timeout_ms`; what it
    /// leaves running is then stopped as by a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
    /// In a scenario file: files (paths inside the machine, with the variables of
    /// [`crate::file::LOG_VARIABLES`]) whose ends the report keeps beside `<name>.log`, such
    /// as a server's own log in its data directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
}

/// Every service by name (`[services]`): what machines' versions name.
pub type Services = BTreeMap<String, ServiceConfig>;

/// `[roles.<name>]`: machines of one role; every key but `count` defaults to `[machine]`'s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// How many machines of this role a case has.
    pub count: Range<u32>,
    /// Memory of each machine, in MiB.
    #[serde(default)]
    pub memory_mb: Option<Range<u32>>,
    /// Kernel versions.
    #[serde(default)]
    pub kernels: Option<OneOrMany<String>>,
    /// Setup commands (instead of `[machine]`'s).
    #[serde(default)]
    pub setup: Option<Vec<String>>,
    /// File systems of the data directory.
    #[serde(default)]
    pub filesystem: Option<OneOrMany<FileSystem>>,
    /// Versions per service (replacing `[machine]`'s choice for the services named).
    #[serde(default)]
    pub versions: BTreeMap<String, OneOrMany<String>>,
    /// In a scenario file: roles whose machines are ready before these start their services
    /// at a case's first boot (e.g. replicas after the primary).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

/// What the machines of one role are generated from, with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineDomain {
    /// The role's name; empty without `[roles]`.
    pub role: String,
    /// How many machines of it a case has.
    pub count: Range<u32>,
    /// Memory in MiB.
    pub memory_mb: Range<u32>,
    /// Kernels, the first preferred.
    pub kernels: Vec<String>,
    /// Setup commands.
    pub setup: Vec<String>,
    /// File systems, the first preferred; empty: none of its own.
    pub filesystem: Vec<FileSystem>,
    /// For each installed service, its allowed versions, the first preferred (never empty).
    pub versions: BTreeMap<String, Vec<ServiceVersion>>,
    /// Whether its machines lose unsynced writes on a power cut.
    pub lose_unsynced: bool,
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
    #[serde(deserialize_with = "ping_faults")]
    pub faults: Vec<Fault>,
    /// Also generate rolling upgrades: a machine gets another version of a service (shut down
    /// if running, version replaced, booted again, its data kept).
    pub upgrade: bool,
}

pub use crate::cluster::Fault;

/// The fault kinds `[ping] faults` accepts.
pub const PING_FAULTS: &[Fault] = &[
    Fault::Pause,
    Fault::Partition,
    Fault::Block,
    Fault::Ring,
    Fault::Bridge,
];

fn ping_faults<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Fault>, D::Error> {
    crate::cluster::fault::parse_list(d, "ping.faults", PING_FAULTS)
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
    /// `[sql]`: the sql scenario's knobs.
    pub sql: crate::sql::SqlConfig,
    /// `[services.<name>]`: services and their versions.
    pub services: Services,
    /// `[roles.<name>]`: machines by role (optional).
    pub roles: BTreeMap<String, RoleConfig>,
    /// `[scenario]`: this file is a scenario file (see [`crate::file`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<crate::file::ScenarioSection>,
    /// `[client]`: how a scenario file's client operations run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<crate::file::ClientConfig>,
    /// `[commands.<name>]`: a scenario file's commands of its own.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub commands: BTreeMap<String, crate::file::FileCommand>,
    /// `[invariants.<name>]`: a scenario file's checks after every step.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub invariants: BTreeMap<String, crate::file::FileInvariant>,
    /// `[eventually.<name>]`: a scenario file's checks at the end, once faults are healed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub eventually: BTreeMap<String, crate::file::FileEventually>,
    /// `[vars]`: a scenario file's own template variables (`{name}` in every template), the
    /// knobs `--set vars.<name>=…` turns.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
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
            filesystem: Vec::new(),
            versions: BTreeMap::new(),
            lose_unsynced: false,
        }
    }
}

impl Default for PingConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 100,
            faults: Vec::new(),
            upgrade: false,
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
        Self::from_toml_in(text, Path::new("."))
    }

    fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let message = e.message().trim().trim_end_matches('.').to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    ConfigError(format!("line {line}: {message}"))
                }
                None => ConfigError(message),
            }
        })
    }

    /// Reads a configuration (or scenario) file with `sets` (`KEY=VALUE`, as `--set` gives
    /// them) in place of what the file says, and validates it.
    pub fn from_file_with(path: &Path, sets: &[String]) -> Result<Self, ConfigError> {
        if sets.is_empty() {
            return Self::from_file(path);
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let in_file = |e: ConfigError| ConfigError(format!("{}: {e}", path.display()));
        let mut table: toml::Table = toml::from_str(&text)
            .map_err(|e| in_file(ConfigError(e.message().trim().to_string())))?;
        Self::set_all(&mut table, sets)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config: Self =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    ConfigError(format!(
                        "{} with --set {}: {}",
                        path.display(),
                        sets.join(" --set "),
                        e.message().trim().trim_end_matches('.')
                    ))
                })?;
        config.resolve_paths(base);
        config.validate().map_err(in_file)?;
        Ok(config)
    }

    /// The default configuration with `sets` (`KEY=VALUE`) in place, validated.
    pub fn default_with(sets: &[String]) -> Result<Self, ConfigError> {
        let mut table = toml::Table::new();
        Self::set_all(&mut table, sets)?;
        let config: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                ConfigError(format!(
                    "--set {}: {}",
                    sets.join(" --set "),
                    e.message().trim().trim_end_matches('.')
                ))
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Puts each `KEY=VALUE` of `sets` into `table`: `KEY` a dotted path (`network.machines.max`),
    /// `VALUE` a TOML value (`5`, `[3, 3]`, `"xfs"`) or else a string.
    fn set_all(table: &mut toml::Table, sets: &[String]) -> Result<(), ConfigError> {
        for set in sets {
            let Some((key, value)) = set.split_once('=') else {
                return Err(ConfigError(format!(
                    "--set {set} needs KEY=VALUE, e.g. --set network.machines.max=5"
                )));
            };
            let path: Vec<&str> = key.trim().split('.').collect();
            if path.iter().any(|p| p.is_empty()) {
                return Err(ConfigError(format!(
                    "--set {set}: `{key}` is not a dotted key"
                )));
            }
            let value = value.trim();
            let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.to_string()));
            let (last, parents) = path.split_last().expect("a key has a part");
            let mut at = &mut *table;
            for p in parents {
                let entry = at
                    .entry(p.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                at = entry
                    .as_table_mut()
                    .ok_or_else(|| ConfigError(format!("--set {set}: `{p}` is not a table")))?;
            }
            at.insert(last.to_string(), value);
        }
        Ok(())
    }

    /// Reads and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml_in(&text, base).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// Parses TOML text whose relative service paths are relative to `base`, and validates it.
    pub fn from_toml_in(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let mut config = Self::parse(text)?;
        config.resolve_paths(base);
        // A key's message gets the line where the file sets it.
        config
            .validate()
            .map_err(|e| ConfigError(crate::file::with_line(text, e.0)))?;
        Ok(config)
    }

    /// Makes every service path absolute (relative ones against `base`, then the current
    /// directory).
    fn resolve_paths(&mut self, base: &Path) {
        let cwd = std::env::current_dir().unwrap_or_default();
        for service in self.services.values_mut() {
            for v in &mut service.versions {
                if v.path.is_relative() {
                    v.path = cwd.join(base).join(&v.path);
                }
            }
        }
    }

    /// The machine domain of each role, in name order; without `[roles]`, one unnamed role
    /// with `[network] machines` and `[machine]`.
    pub fn domains(&self) -> Vec<MachineDomain> {
        let versions_of = |chosen: &BTreeMap<String, OneOrMany<String>>| {
            self.services
                .iter()
                .filter_map(|(name, service)| {
                    let picked: Vec<ServiceVersion> =
                        match chosen.get(name).or_else(|| self.machine.versions.get(name)) {
                            None => service.versions.clone(),
                            Some(names) => names
                                .0
                                .iter()
                                .filter_map(|n| service.versions.iter().find(|v| v.version == *n))
                                .cloned()
                                .collect(),
                        };
                    (!picked.is_empty()).then(|| (name.clone(), picked))
                })
                .collect()
        };
        let base = MachineDomain {
            role: String::new(),
            count: self.network.machines,
            memory_mb: self.machine.memory_mb,
            kernels: self.machine.kernels.clone(),
            setup: self.machine.setup.clone(),
            filesystem: self.machine.filesystem.clone(),
            versions: versions_of(&BTreeMap::new()),
            lose_unsynced: self.machine.lose_unsynced,
        };
        if self.roles.is_empty() {
            return vec![base];
        }
        self.roles
            .iter()
            .map(|(name, r)| MachineDomain {
                role: name.clone(),
                count: r.count,
                memory_mb: r.memory_mb.unwrap_or(base.memory_mb),
                kernels: r.kernels.clone().map_or(base.kernels.clone(), |k| k.0),
                setup: r.setup.clone().unwrap_or(base.setup.clone()),
                filesystem: r
                    .filesystem
                    .clone()
                    .map_or(base.filesystem.clone(), |f| f.0),
                versions: versions_of(&r.versions),
                lose_unsynced: base.lose_unsynced,
            })
            .collect()
    }

    /// The domain of role `role` (empty: the only one without roles).
    pub fn domain(&self, role: &str) -> Option<MachineDomain> {
        self.domains().into_iter().find(|d| d.role == role)
    }

    /// The least and most machines a case has.
    pub fn machine_count(&self) -> Range<u32> {
        let domains = self.domains();
        Range {
            min: domains.iter().fold(0, |n, d| n.saturating_add(d.count.min)),
            max: domains.iter().fold(0, |n, d| n.saturating_add(d.count.max)),
        }
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
        if machines.max as usize > fleetcheck_fabric::MAX_MACHINES {
            return err(format!(
                "network.machines.max is {} but a network can have at most {} machines \
                 (the ports of one Linux bridge)",
                machines.max,
                fleetcheck_fabric::MAX_MACHINES
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
        self.validate_parameters()?;
        self.validate_setup()?;
        self.validate_kv()?;
        self.sql.validate().map_err(ConfigError)?;
        crate::file::validate(self)?;
        if self.ping.timeout_ms == 0 || self.ping.timeout_ms > MAX_PING_TIMEOUT_MS {
            return err(format!(
                "ping.timeout_ms is {} but must be between 1 and {MAX_PING_TIMEOUT_MS}",
                self.ping.timeout_ms
            ));
        }
        Ok(())
    }
}

/// Why setup command `command` could not be started in a machine, if it could not.
pub fn unspawnable(command: &str) -> Option<String> {
    if command.contains('\0') {
        return Some("contains a NUL byte, which no command line can carry".into());
    }
    if command.len() > MAX_SETUP_BYTES {
        return Some(format!(
            "is {} bytes long, more than the {MAX_SETUP_BYTES} bytes Linux allows in one argument",
            command.len()
        ));
    }
    None
}

impl ScenarioConfig {
    /// Setup commands that no machine could start.
    fn validate_setup(&self) -> Result<(), ConfigError> {
        let places = std::iter::once(("machine.setup".to_string(), &self.machine.setup)).chain(
            self.roles.iter().filter_map(|(name, r)| {
                r.setup.as_ref().map(|s| (format!("roles.{name}.setup"), s))
            }),
        );
        for (place, commands) in places {
            for (i, c) in commands.iter().enumerate() {
                if let Some(why) = unspawnable(c) {
                    return Err(ConfigError(format!("{place}[{i}] {why}")));
                }
            }
        }
        Ok(())
    }

    /// `[kv]`: ranges that are not empty, counts of at least one, and sizes that fit.
    fn validate_kv(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        let kv = &self.kv;
        if !kv.filesystem.is_empty() && !self.machine.filesystem.is_empty() {
            return err(
                "kv.filesystem and machine.filesystem both name file systems: name them in \
                 [machine] filesystem only ([kv] filesystem is its older name)"
                    .into(),
            );
        }
        if kv.faults.contains(&Fault::Isolate) && kv.leader.is_none() {
            return err(
                "kv.faults has \"isolate\", which needs kv.leader: the role it cuts off (a \
                 scenario file's [roles])"
                    .into(),
            );
        }
        let (least, most) = kv.nodes;
        // The nodes live in their own /24 (see `KvModel::initial_state`), from .2 up.
        let room = crate::kv::SUBNET_ROOM;
        if least < 1 {
            return err(format!(
                "kv.nodes = [{least}, {most}] must start at 1 or more"
            ));
        }
        if least > most {
            return err(format!(
                "kv.nodes = [{least}, {most}] is an empty range: the least is greater than the most"
            ));
        }
        if u64::from(most) > room {
            return err(format!(
                "kv.nodes allows {most} nodes but the kv subnet has only {room} usable addresses"
            ));
        }
        if kv.keys < 1 {
            return err("kv.keys must be at least 1".into());
        }
        if kv.workers < 1 || kv.workers > MAX_KV_WORKERS {
            return err(format!(
                "kv.workers is {} but must be between 1 and {MAX_KV_WORKERS}",
                kv.workers
            ));
        }
        if kv.ops_per_worker < 1 || kv.ops_per_worker > MAX_KV_OPS_PER_WORKER {
            return err(format!(
                "kv.ops_per_worker is {} but must be between 1 and {MAX_KV_OPS_PER_WORKER}",
                kv.ops_per_worker
            ));
        }
        if kv.op_timeout_ms < 1 || kv.op_timeout_ms > MAX_KV_OP_TIMEOUT_MS {
            return err(format!(
                "kv.op_timeout_ms is {} but must be between 1 and {MAX_KV_OP_TIMEOUT_MS}",
                kv.op_timeout_ms
            ));
        }
        if kv.memory_mb < MIN_MEMORY_MB || kv.memory_mb > MAX_MEMORY_MB {
            return err(format!(
                "kv.memory_mb is {} MiB but must be between {MIN_MEMORY_MB} and {MAX_MEMORY_MB} MiB",
                kv.memory_mb
            ));
        }
        Ok(())
    }

    /// File systems, services, versions and roles.
    fn validate_parameters(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        for (name, service) in &self.services {
            let plain = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !name.starts_with('.');
            if !plain {
                return err(format!(
                    "services.{name} needs a plain name (letters, digits, `-`, `_`, `.`)"
                ));
            }
            if service.versions.is_empty() && service.start.is_none() {
                return err(format!("services.{name} must list at least one version"));
            }
            for (i, v) in service.versions.iter().enumerate() {
                if service.versions[..i].iter().any(|w| w.version == v.version) {
                    return err(format!(
                        "services.{name} lists version `{}` twice",
                        v.version
                    ));
                }
                if !v.path.is_file() {
                    return err(format!(
                        "services.{name} version `{}` is {}, which is not a file",
                        v.version,
                        v.path.display()
                    ));
                }
            }
        }
        let chosen = std::iter::once(("machine".to_string(), &self.machine.versions)).chain(
            self.roles
                .iter()
                .map(|(r, role)| (format!("roles.{r}"), &role.versions)),
        );
        for (place, versions) in chosen {
            for (name, names) in versions {
                let Some(service) = self.services.get(name) else {
                    return err(format!(
                        "{place}.versions names service `{name}`, which has no [services.{name}]"
                    ));
                };
                for n in &names.0 {
                    if !service.versions.iter().any(|v| v.version == *n) {
                        return err(format!(
                            "{place}.versions names version `{n}` of {name}, which [services.{name}] does not list"
                        ));
                    }
                }
            }
        }
        for (name, role) in &self.roles {
            if role.count.min > role.count.max {
                return err(format!(
                    "roles.{name}.count.min ({}) is greater than roles.{name}.count.max ({})",
                    role.count.min, role.count.max
                ));
            }
            if let Some(m) = role.memory_mb {
                if m.min > m.max || m.min < MIN_MEMORY_MB || m.max > MAX_MEMORY_MB {
                    return err(format!(
                        "roles.{name}.memory_mb must be a range within {MIN_MEMORY_MB}..={MAX_MEMORY_MB} MiB"
                    ));
                }
            }
            if role.kernels.as_ref().is_some_and(|k| k.0.is_empty()) {
                return err(format!(
                    "roles.{name}.kernels must name at least one kernel version"
                ));
            }
            if role.filesystem.as_ref().is_some_and(|f| f.0.is_empty()) {
                return err(format!(
                    "roles.{name}.filesystem must name at least one file system"
                ));
            }
        }
        if !self.roles.is_empty() {
            let count = self.machine_count();
            if count.min < 1 {
                return err("the roles' counts must add up to at least one machine".into());
            }
            if count.max as usize > fleetcheck_fabric::MAX_MACHINES {
                return err(format!(
                    "the roles have up to {} machines but a network can have at most {} \
                     (the ports of one Linux bridge)",
                    count.max,
                    fleetcheck_fabric::MAX_MACHINES
                ));
            }
            if u64::from(count.max) > self.usable_addresses() {
                return err(format!(
                    "the roles have up to {} machines but subnet {} has only {} usable addresses",
                    count.max,
                    self.network.subnet,
                    self.usable_addresses()
                ));
            }
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
    fn machine_parameters_parse_as_values_or_domains() {
        let c = ScenarioConfig::from_toml(
            r#"
[machine]
memory_mb = 128
kernels = "6.1"
filesystem = "xfs"

[services.fw]
versions = [
  { version = "1.0", path = "/bin/true" },
  { version = "2.0", path = "/bin/sh" },
]

[roles.server]
count = { min = 1, max = 2 }
filesystem = ["btrfs", "ext4"]
versions = { fw = "2.0" }

[roles.client]
count = 3
versions = { fw = [] }
"#,
        )
        .unwrap();
        assert_eq!(c.machine.memory_mb, Range { min: 128, max: 128 });
        assert_eq!(c.machine.kernels, vec!["6.1"]);
        assert_eq!(c.machine.filesystem, vec![FileSystem::Xfs]);
        let domains = c.domains();
        assert_eq!(
            domains.iter().map(|d| d.role.as_str()).collect::<Vec<_>>(),
            ["client", "server"]
        );
        let (client, server) = (&domains[0], &domains[1]);
        assert_eq!(client.count, Range { min: 3, max: 3 });
        assert_eq!(client.filesystem, vec![FileSystem::Xfs]);
        assert!(client.versions.is_empty(), "an empty list: not installed");
        assert_eq!(server.filesystem, vec![FileSystem::Btrfs, FileSystem::Ext4]);
        assert_eq!(server.versions["fw"].len(), 1);
        assert_eq!(server.versions["fw"][0].version, "2.0");
        assert_eq!(c.machine_count(), Range { min: 4, max: 5 });
    }

    /// Replay files carry the configuration as JSON: it must read back the same.
    #[test]
    fn configurations_survive_a_json_round_trip() {
        let full = ScenarioConfig::from_toml(
            r#"
[machine]
filesystem = ["xfs", "ext4"]
versions = { fw = "1.0" }
[services.fw]
versions = [{ version = "1.0", path = "/bin/true" }]
[roles.a]
count = 2
filesystem = "btrfs"
[kv]
ops = ["get", "put"]
"#,
        )
        .unwrap();
        for c in [ScenarioConfig::default(), full] {
            let text = serde_json::to_string(&c).unwrap();
            let back: ScenarioConfig = serde_json::from_str(&text).unwrap();
            assert_eq!(back, c, "{text}");
            back.validate().unwrap();
        }
    }

    #[test]
    fn relative_service_paths_are_relative_to_the_file() {
        let dir = std::env::temp_dir().join(format!("fleetcheck-config-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("v")).unwrap();
        std::fs::write(dir.join("v/svc"), "#!/bin/sh\n").unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[services.svc]\nversions = [{ version = \"1\", path = \"v/svc\" }]\n",
        )
        .unwrap();
        let c = ScenarioConfig::from_file(&file).unwrap();
        assert_eq!(c.services["svc"].versions[0].path, dir.join("v/svc"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_machine_parameters_are_one_sentence() {
        let svc = "[services.fw]\nversions = [{ version = \"1\", path = \"/bin/true\" }]\n";
        let cases = [
            (
                "[machine]\nfilesystem = \"zfs\"".to_string(),
                "unknown variant `zfs`",
            ),
            (
                "[machine]\nfilesystem = []".into(),
                "at least one file system",
            ),
            ("[machine]\nfilesystem = 3".into(), "a string or a list"),
            ("[machine]\nmemory_mb = \"big\"".into(), "a number or { min"),
            (
                "[services.fw]\nversions = [{ version = \"1\", path = \"/no/such/fw\" }]".into(),
                "/no/such/fw, which is not a file",
            ),
            (
                "[services.fw]\nversions = []".into(),
                "at least one version",
            ),
            (
                format!("{svc}[machine]\nversions = {{ fw = \"9\" }}"),
                "version `9` of fw",
            ),
            (
                "[machine]\nversions = { db = \"1\" }".into(),
                "no [services.db]",
            ),
            (
                "[roles.a]\ncount = { min = 3, max = 1 }".into(),
                "roles.a.count.min (3) is greater",
            ),
            ("[roles.a]\ncount = 300".into(), "only 253 usable addresses"),
            (
                "[roles.a]\ncount = 4000000000\n[roles.b]\ncount = 4000000000".into(),
                "at most 1023",
            ),
            (
                "[roles.a]\ncount = 1\nfilesystem = []".into(),
                "at least one file system",
            ),
            ("[roles.a]\nmemory_mb = 64".into(), "missing field `count`"),
        ];
        for (text, needle) in cases {
            let e = ScenarioConfig::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?} gave {e:?}");
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }

    #[test]
    fn a_setup_command_longer_than_one_argument_may_be_is_refused() {
        let fits = format!("[machine]\nsetup = [\"{}\"]", "x".repeat(MAX_SETUP_BYTES));
        ScenarioConfig::from_toml(&fits).unwrap();
        let long = format!("[machine]\nsetup = [\"{}\"]", "x".repeat(1 << 20));
        let e = ScenarioConfig::from_toml(&long).unwrap_err().to_string();
        assert!(
            e.contains("is 1048576 bytes long, more than the 131071"),
            "{e}"
        );
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
            (
                "[kv]\nfaults = [\"upgrades\"]",
                "kv.faults names `upgrades`",
            ),
            (
                "[ping]\nfaults = [\"crash\"]",
                "ping.faults names `crash`, which is not one of pause, partition, block",
            ),
            ("not toml", "line 1"),
            (
                "[network]\nmachines = 1024\nsubnet = \"10.0.0.0/16\"",
                "at most 1023 machines",
            ),
            (
                "[network]\nmachines = 1000000000\nsubnet = \"0.0.0.0/2\"",
                "at most 1023 machines",
            ),
            (
                "[kv]\nnodes = [3, 1]",
                "kv.nodes = [3, 1] is an empty range",
            ),
            ("[kv]\nnodes = [0, 0]", "must start at 1"),
            ("[kv]\nnodes = [1, 254]", "only 253 usable addresses"),
            ("[kv]\nkeys = 0", "kv.keys must be at least 1"),
            ("[kv]\nworkers = 0", "kv.workers is 0"),
            ("[kv]\nops_per_worker = 0", "kv.ops_per_worker is 0"),
            ("[kv]\nworkers = 100000", "between 1 and 64"),
            ("[kv]\nop_timeout_ms = 0", "kv.op_timeout_ms is 0"),
            ("[kv]\nmemory_mb = 1", "kv.memory_mb is 1 MiB"),
            ("[sql]\nnodes = 3", "sql.nodes is 3 but must be 1"),
            ("[sql]\nisolation = []", "sql.isolation must name"),
            (
                "[sql]\nisolation = \"snapshot\"",
                "sql.isolation names `snapshot`",
            ),
            (
                "[sql]\nclaim = \"linearizable\"",
                "sql.claim is `linearizable`",
            ),
            ("[sql]\nworkers = 0", "sql.workers is 0"),
            ("[sql]\ntxn_timeout_ms = 0", "sql.txn_timeout_ms is 0"),
            (
                "[machine]\nsetup = [\"a\\u0000b\"]",
                "machine.setup[0] contains a NUL",
            ),
            (
                "[roles.a]\ncount = 1\nsetup = [\"true\", \"a\\u0000b\"]",
                "roles.a.setup[1] contains a NUL",
            ),
        ];
        for (text, needle) in cases {
            let e = ScenarioConfig::from_toml(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?} gave {e:?}");
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }
}
