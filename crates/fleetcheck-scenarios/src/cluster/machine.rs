//! The one machine model every scenario's network is made of, and how it becomes the fabric's
//! [`MachineSpec`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use fleetcheck_engine::Abort;
use fleetcheck_fabric::{FileSystem, MachineSpec, ServiceVersion};
use serde::{Deserialize, Serialize};

use crate::config::Services;

/// One machine of a scenario's network, as its model sees it: who it is, what it runs and
/// whether it is up. Replay files of kv cases written before the cluster layer (`"nodes"` of
/// `{id, ip, running, paused, filesystem}`) read as machines with the scenario's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// The private field refuses an old file's `version`; that it also keeps struct literals out of
// other crates (use `Machine::new`) is a side effect, not a marker.
#[allow(clippy::manual_non_exhaustive)]
pub struct Machine {
    /// 8 random lowercase letters; also the hostname.
    pub id: String,
    /// A random UUID (the seed's machines have one; empty where a scenario draws none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uuid: String,
    /// Its address, distinct from every other machine's.
    pub ip: Ipv4Addr,
    /// Memory in MiB; 0: the scenario's fixed memory (kv's `[kv] memory_mb`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory_mb: u32,
    /// Kernel version; empty: the host's (on netns) or the backend's default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kernel: String,
    /// Whether the model says it is up.
    pub running: bool,
    /// Whether it is frozen (running, but answering nothing).
    #[serde(default)]
    pub paused: bool,
    /// Its role (`[roles.<name>]`); empty without roles.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    /// The file system of its data directory, if it has one of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FileSystem>,
    /// The version of each service it runs (labels of `[services.<name>]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, String>,
    /// Whether its data directory loses what was not fsynced on a power cut (`[machine]
    /// lose_unsynced`): then `PowerCut` may cut it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lose_unsynced: bool,
    /// How its disk fails now (the `disk` fault), if it does; a power cut ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_error: Option<fleetcheck_fabric::DiskError>,
    /// What netem does to its outgoing packets now (the `netem` fault), if anything; it goes
    /// with power and with a heal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netem: Option<fleetcheck_fabric::Netem>,
    /// Whether its wall clock can be moved (the `clock` fault).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clock: bool,
    /// Its wall clock's offset from the host's now, in seconds (`ClockBump`); it goes with
    /// power (its next boot reads the host's clock).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub clock_offset: i64,
    /// A kv node's `version` of replay files before the cluster layer, which named no
    /// service: refused on reading, in one sentence.
    #[serde(
        default,
        rename = "version",
        skip_serializing,
        deserialize_with = "refuse_unnamed_version"
    )]
    unnamed_version: (),
}

fn refuse_unnamed_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    let version = String::deserialize(d)?;
    Err(serde::de::Error::custom(format!(
        "a node runs version `{version}` of an unnamed service, as replay files of fleetcheck \
         before its cluster layer say; run the case's seed again to write it anew"
    )))
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// Whether a machine is up, down or frozen: what the power commands leave it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Up (booted, restarted, resumed).
    On,
    /// Down (shut down, crashed).
    Off,
    /// Up but frozen.
    Paused,
}

impl Machine {
    /// A machine that is off, with no parameters beyond its address.
    pub fn new(id: String, ip: Ipv4Addr) -> Self {
        Self {
            id,
            uuid: String::new(),
            ip,
            memory_mb: 0,
            kernel: String::new(),
            running: false,
            paused: false,
            role: String::new(),
            filesystem: None,
            versions: BTreeMap::new(),
            lose_unsynced: false,
            disk_error: None,
            netem: None,
            clock: false,
            clock_offset: 0,
            unnamed_version: (),
        }
    }

    /// Whether it is up and not frozen: it can act.
    pub fn awake(&self) -> bool {
        self.running && !self.paused
    }

    /// Sets its power state.
    pub fn set_power(&mut self, power: Power) {
        if power == Power::Off {
            self.clock_offset = 0;
            self.netem = None;
        }
        (self.running, self.paused) = match power {
            Power::On => (true, false),
            Power::Off => (false, false),
            Power::Paused => (true, true),
        };
    }

    /// `ext4 fw=1.0`: its file system and versions, for labels and reports (`-` if none).
    pub fn parameters(&self) -> String {
        let mut parts: Vec<String> = self.filesystem.iter().map(|f| f.to_string()).collect();
        parts.extend(self.versions.iter().map(|(s, v)| format!("{s}={v}")));
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(" ")
        }
    }

    /// The fabric's description of it: `memory_mb` where it has none of its own, its role's
    /// `setup` commands, its file system and, first on its `PATH`, the programs of its service
    /// versions as `services` (`[services]`) lists them.
    pub fn spec(
        &self,
        services: &Services,
        memory_mb: u32,
        setup: Vec<String>,
    ) -> Result<MachineSpec, Abort> {
        let services = self
            .versions
            .iter()
            .map(|(service, version)| {
                let program = service_version(services, service, version).ok_or_else(|| {
                    Abort::new(format!(
                        "machine {} runs version `{version}` of {service}, which \
                         [services.{service}] does not list",
                        self.id
                    ))
                })?;
                Ok((service.clone(), program))
            })
            .collect::<Result<_, Abort>>()?;
        Ok(MachineSpec {
            id: self.id.clone(),
            ip: self.ip,
            memory_mb: if self.memory_mb == 0 {
                memory_mb
            } else {
                self.memory_mb
            },
            kernel: if self.kernel.is_empty() {
                "host".into()
            } else {
                self.kernel.clone()
            },
            setup,
            filesystem: self.filesystem,
            services,
            lose_unsynced: self.lose_unsynced,
            clock: self.clock,
            observer: false,
        })
    }
}

/// Version `version` of `service` as `services` (`[services]`) describes it.
pub fn service_version(
    services: &Services,
    service: &str,
    version: &str,
) -> Option<ServiceVersion> {
    services
        .get(service)?
        .versions
        .iter()
        .find(|v| v.version == version)
        .cloned()
}
