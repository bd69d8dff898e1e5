//! The `kv` scenario: a replicated key-value store under faults, driven by concurrent client
//! workers whose history must be linearizable.
//!
//! The model tracks only the network (nodes up, paused, partitioned); the store's contents are
//! judged after every step by checking the whole history so far against a sequential map
//! ([`KvSpec`]) with the linearizability checker. Client operations whose outcome is not known
//! (timeouts during faults) are recorded as such and may or may not have taken effect.
//!
//! Systems: [`etcd`] (real etcd 3.4 clusters on the fabric), [`redis`] (Redis with Sentinel)
//! and [`memory`] (in-memory stores for the fake arm, one with a planted lost-write bug).
//!
//! Machine parameters: each node's data directory may get a file system of its own (`[kv]
//! filesystem`), and, when the configuration lists versions of the store's service
//! (`[services.etcd]`, `[services.redis-server]`, see [`service_of`]), each node runs one of
//! them; with `"upgrade"` among `[kv] faults` a rolling `Upgrade` gives a node another version
//! (shut down if running, version replaced, booted and its service started again, data kept).

mod anomaly;
pub mod etcd;
pub mod memory;
pub mod redis;
mod service;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use fleetcheck_engine::history::Outcome;
use fleetcheck_engine::linearizability::{check_with, Limits};
use fleetcheck_engine::{
    Abort, Check, Gen, History, KvOp, KvRet, KvSpec, Labels, Linearizability, Model, Operation,
    Recorder, System,
};
use fleetcheck_fabric::{ServiceVersion, Subnet};
use serde::{Deserialize, Serialize};

use crate::cluster::{self, Fault, Power};
use crate::config::ScenarioConfig;

/// A client operation of the scenario: keys and values are small numbers.
pub type Op = KvOp<u64>;
/// What an [`Op`] returns.
pub type Ret = KvRet<u64>;
/// One recorded operation.
pub type Recorded = Operation<Op, Ret>;

/// The scenario's knobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvConfig {
    /// How many nodes a cluster has (least, most).
    pub nodes: (u32, u32),
    /// How many distinct keys clients use.
    pub keys: u64,
    /// Most concurrent client workers in one batch of operations.
    pub workers: usize,
    /// Most operations per worker in one batch.
    pub ops_per_worker: usize,
    /// Client timeout of one operation, in milliseconds (then its outcome is unknown).
    pub op_timeout_ms: u64,
    /// Memory of each node, in MiB.
    pub memory_mb: u32,
    /// Faults to generate: any of [`FAULTS`]: "crash", "pause", "partition", "block"
    /// (one-way), "loss", and "upgrade" (rolling upgrades; only where the store's service has
    /// two or more versions, and not in the default list).
    #[serde(deserialize_with = "kv_faults")]
    pub faults: Vec<Fault>,
    /// File systems of each node's data directory (where the store keeps its state), the first
    /// preferred when shrinking; empty (the default): a directory on the host's file system.
    #[serde(deserialize_with = "crate::config::one_or_many")]
    pub filesystem: Vec<fleetcheck_fabric::FileSystem>,
}

impl Default for KvConfig {
    fn default() -> Self {
        Self {
            nodes: (3, 3),
            keys: 3,
            workers: 3,
            ops_per_worker: 3,
            op_timeout_ms: 1000,
            memory_mb: 256,
            faults: vec![
                Fault::Crash,
                Fault::Pause,
                Fault::Partition,
                Fault::Block,
                Fault::Loss,
            ],
            filesystem: Vec::new(),
        }
    }
}

/// The subnet of every kv cluster.
pub const SUBNET: Subnet = Subnet {
    addr: Ipv4Addr::new(172, 16, 3, 0),
    prefix: 24,
};

/// How many nodes [`SUBNET`] has room for (host addresses from its second up).
pub const SUBNET_ROOM: u64 = 253;

/// The fault kinds `[kv] faults` accepts: all of them.
pub const FAULTS: &[Fault] = &Fault::ALL;

fn kv_faults<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Fault>, D::Error> {
    crate::cluster::fault::parse_list(d, "kv.faults", FAULTS)
}

impl KvConfig {
    fn fault(&self, kind: Fault) -> bool {
        self.faults.contains(&kind)
    }
}

/// The service whose versions the nodes of store `system` run, under the name
/// `[services.<name>]` lists them by: `etcd` for etcd, `redis-server` for Redis (its server and
/// its sentinel, which runs as `redis-server --sentinel`); `None` for the in-memory stores,
/// which run nothing. Clients (`etcdctl`, `redis-cli`) are always the host's.
pub fn service_of(system: &str) -> Option<&'static str> {
    match system {
        "etcd" => Some("etcd"),
        "redis" => Some("redis-server"),
        _ => None,
    }
}

/// A host program a store runs in its nodes, and the Debian package that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// Its name on `PATH`.
    pub name: &'static str,
    /// The Debian package to install.
    pub package: &'static str,
    /// What the store uses it for.
    pub role: &'static str,
}

/// The host programs store `system` runs (none for the in-memory stores). The server's is
/// not needed when `[services.<name>]` lists versions of it (those are checked as paths).
pub fn programs(system: &str) -> &'static [Program] {
    match system {
        "etcd" => &[
            Program {
                name: "etcd",
                package: "etcd-server",
                role: "server",
            },
            Program {
                name: "etcdctl",
                package: "etcd-client",
                role: "client",
            },
        ],
        "redis" => &[
            Program {
                name: "redis-server",
                package: "redis-server",
                role: "server and sentinel, as redis-server --sentinel",
            },
            Program {
                name: "redis-cli",
                package: "redis-tools",
                role: "client",
            },
        ],
        _ => &[],
    }
}

/// The store's service and its installed versions (`[services.<name>]`), the first preferred.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvService {
    /// Its name: the program each node runs, found on the node's `PATH`.
    pub name: String,
    /// Its versions, the first preferred when shrinking; never empty.
    pub versions: Vec<ServiceVersion>,
}

impl KvService {
    /// The versions of store `system`'s service that `config` lists, if it lists any.
    pub fn for_system(config: &ScenarioConfig, system: &str) -> Option<Self> {
        let name = service_of(system)?;
        let versions = config.services.get(name)?.versions.clone();
        (!versions.is_empty()).then(|| KvService {
            name: name.to_string(),
            versions,
        })
    }

    /// Version `label`.
    pub fn version(&self, label: &str) -> Option<&ServiceVersion> {
        self.versions.iter().find(|v| v.version == label)
    }
}

/// Version `label` of `service` for node `node`, or why there is none.
fn installation<'a>(
    service: Option<&'a KvService>,
    node: &str,
    label: &str,
) -> Result<(&'a str, &'a ServiceVersion), Abort> {
    let found = service.and_then(|s| Some((s.name.as_str(), s.version(label)?)));
    found.ok_or_else(|| {
        Abort::new(match service {
            Some(s) => format!(
                "node {node} runs version `{label}` of {}, which [services.{}] does not list",
                s.name, s.name
            ),
            None => format!(
                "node {node} runs version `{label}`, but the configuration lists no versions of \
                 this store's service"
            ),
        })
    })
}

/// A node of the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// 8 random lowercase letters; also the hostname and the member name.
    pub id: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Whether it is up (its service started).
    pub running: bool,
    /// Whether it is frozen.
    pub paused: bool,
    /// The file system of its data directory, if one of its own (`[kv] filesystem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<fleetcheck_fabric::FileSystem>,
    /// The version of the store's service it runs, if the configuration lists versions
    /// (`[services.<name>]`, see [`service_of`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Node {
    /// `data on ext4, etcd 3.4`: its parameters for people (empty if none); `service` names
    /// the version.
    pub fn parameters(&self, service: &str) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(fs) = self.filesystem {
            parts.push(format!("data on {fs}"));
        }
        if let Some(v) = &self.version {
            parts.push(format!("{service} {v}"));
        }
        parts.join(", ")
    }
}

/// The model state: the cluster and the faults in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    /// The subnet of the nodes.
    pub subnet: Subnet,
    /// The nodes, in generation order.
    pub nodes: Vec<Node>,
    /// Whether a partition is in force.
    pub partitioned: bool,
    /// Whether one-way blocks or packet loss are in force.
    #[serde(default)]
    pub links_faulty: bool,
}

cluster::member!(Node);

impl KvState {
    /// The node named `id`.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    fn ids(&self, pick: impl Fn(&Node) -> bool) -> Vec<String> {
        cluster::ids(&self.nodes, pick)
    }

    fn awake(&self) -> Vec<String> {
        cluster::awake(&self.nodes)
    }

    /// Whether any network fault (partition, block, loss) is in force.
    pub fn network_faulty(&self) -> bool {
        self.partitioned || self.links_faulty
    }

    /// The commands that undo every fault in force: resume each paused node, heal the network.
    /// Crashed nodes stay down (a power cut is not a fault to heal).
    pub fn heal_commands(&self) -> Vec<KvCmd> {
        let mut out: Vec<KvCmd> = self
            .ids(|n| n.paused)
            .into_iter()
            .map(|node| KvCmd::Resume { node })
            .collect();
        if self.network_faulty() {
            out.push(KvCmd::Heal);
        }
        out
    }
}

/// One client operation: which worker issues it, against which node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientOp {
    /// The worker (0-based); a worker's operations run one after another.
    pub worker: usize,
    /// The node it talks to.
    pub node: String,
    /// The operation.
    pub op: Op,
}

/// A command of the kv scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", content = "args")]
pub enum KvCmd {
    /// A batch of client operations: workers run concurrently, each its own in order.
    Ops {
        /// The operations.
        ops: Vec<ClientOp>,
    },
    /// Power cut of a node.
    Crash {
        /// The node.
        node: String,
    },
    /// Boot a crashed node and start its service again (its disk kept).
    Restart {
        /// The node.
        node: String,
    },
    /// Freeze a node.
    Pause {
        /// The node.
        node: String,
    },
    /// Thaw a node.
    Resume {
        /// The node.
        node: String,
    },
    /// Cut these nodes off from the others.
    Partition {
        /// One side; the other side is every other node.
        side: Vec<String>,
    },
    /// One-way: packets from `from` to `to` are dropped, the other way still passes.
    Block {
        /// The sender whose packets are dropped.
        from: String,
        /// The receiver that no longer hears it.
        to: String,
    },
    /// Drop a share of the packets to and from a node (nftables random drop on the switch).
    Loss {
        /// The node.
        node: String,
        /// Percent of packets dropped.
        percent: u8,
    },
    /// Remove every partition, block and loss.
    Heal,
    /// A rolling upgrade: the node gets `version` of the store's service. A running node is
    /// shut down, gets it, boots and starts its service again with its data; a crashed one only
    /// gets it (its next `Restart` runs it).
    Upgrade {
        /// The node (not paused).
        node: String,
        /// The version it gets (a label of `[services.<name>]`).
        version: String,
    },
}

/// What a command returned.
#[derive(Clone, PartialEq, Eq)]
pub enum KvOutput {
    /// The recorded operations of a batch.
    Ops(Vec<Recorded>),
    /// A fault was applied.
    Done,
}

impl std::fmt::Debug for KvOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvOutput::Done => f.write_str("ok"),
            KvOutput::Ops(ops) => {
                let parts: Vec<String> = ops
                    .iter()
                    .map(|o| match &o.outcome {
                        Outcome::Ok(r) => format!("{r:?}"),
                        Outcome::Fail => "fail".into(),
                        Outcome::Unknown => "unknown".into(),
                    })
                    .collect();
                write!(f, "[{}]", parts.join(", "))
            }
        }
    }
}

/// The kv model.
#[derive(Debug, Clone, Default)]
pub struct KvModel {
    /// Its knobs.
    pub config: KvConfig,
    /// The store's service and its versions, when the configuration lists them: then each node
    /// gets one (and `Upgrade`s change it). `None`: nodes run the host's program.
    pub service: Option<KvService>,
}

impl KvModel {
    /// The model for store `system` under `config`: its `[kv]` knobs and the versions of the
    /// store's service (see [`service_of`]).
    pub fn new(config: &ScenarioConfig, system: &str) -> Self {
        Self {
            config: config.kv.clone(),
            service: KvService::for_system(config, system),
        }
    }

    fn versions(&self) -> &[ServiceVersion] {
        self.service.as_ref().map_or(&[], |s| &s.versions)
    }

    /// What the labels and the printout call the service.
    fn service_name(&self) -> &str {
        self.service.as_ref().map_or("version", |s| &s.name)
    }

    /// Every rolling upgrade possible now (with `"upgrade"` among the faults and two or more
    /// versions): a node that is not paused to another version.
    fn upgrades(&self, s: &KvState) -> Vec<KvCmd> {
        let versions = self.versions();
        if !self.config.fault(Fault::Upgrade) || versions.len() < 2 {
            return Vec::new();
        }
        let mut all = Vec::new();
        for n in s.nodes.iter().filter(|n| !n.paused) {
            let Some(current) = &n.version else { continue };
            for v in versions.iter().filter(|v| v.version != *current) {
                all.push(KvCmd::Upgrade {
                    node: n.id.clone(),
                    version: v.version.clone(),
                });
            }
        }
        all
    }
}

/// `put k1=7`, `get k0`, `del k2`, `cas k1 3->4`: an operation as counterexamples, histories
/// and timelines print it.
pub fn describe_op(op: &Op) -> String {
    match op {
        KvOp::Put(k, v) => format!("put k{k}={v}"),
        KvOp::Get(k) => format!("get k{k}"),
        KvOp::Delete(k) => format!("del k{k}"),
        KvOp::Cas { key, expected, new } => match expected {
            Some(e) => format!("cas k{key} {e}->{new}"),
            None => format!("cas k{key} absent->{new}"),
        },
    }
}

impl Model for KvModel {
    type State = KvState;
    type Command = KvCmd;
    type Output = KvOutput;

    fn initial_state(&self, g: &mut Gen) -> KvState {
        let subnet = SUBNET;
        let count = g.range(self.config.nodes.0..=self.config.nodes.1) as usize;
        let mut nodes: Vec<Node> = Vec::new();
        for ip in cluster::distinct_hosts(g, subnet, count) {
            nodes.push(Node {
                id: cluster::fresh_id(g, |id| nodes.iter().any(|n| n.id == id)),
                ip,
                running: true,
                paused: false,
                // Drawn only when configured, so other configurations give the same cases.
                filesystem: g.choose(&self.config.filesystem).copied(),
                version: g.choose(self.versions()).map(|v| v.version.clone()),
            });
        }
        KvState {
            subnet,
            nodes,
            partitioned: false,
            links_faulty: false,
        }
    }

    /// Nodes as [`crate::rules::check_members`] says (at most [`SUBNET_ROOM`]), each running
    /// and not paused, with versions the configuration lists; no fault in force.
    fn check_initial(&self, s: &KvState) -> Check {
        crate::rules::check_members(
            "node",
            s.subnet,
            s.nodes.iter().map(|n| (n.id.as_str(), n.ip)),
            SUBNET_ROOM as usize,
        )?;
        for n in &s.nodes {
            if !n.running || n.paused {
                return Err(format!(
                    "has node {} down or paused, but every case starts with its cluster up",
                    n.id
                ));
            }
            if let Some(label) = &n.version {
                if installation(self.service.as_ref(), &n.id, label).is_err() {
                    return Err(format!(
                        "gives node {} version `{label}` of {}, which the configuration does not list",
                        n.id,
                        self.service_name()
                    ));
                }
            }
        }
        if s.partitioned || s.links_faulty {
            return Err("has faults in force, but every case starts with a whole network".into());
        }
        Ok(())
    }

    fn shrink_state(&self, s: &KvState) -> Vec<KvState> {
        let mut out = Vec::new();
        if s.nodes.len() > self.config.nodes.0 as usize {
            for i in 0..s.nodes.len() {
                let mut smaller = s.clone();
                smaller.nodes.remove(i);
                out.push(smaller);
            }
        }
        // The preferred (earlier) file systems.
        let filesystems = &self.config.filesystem;
        for (i, n) in s.nodes.iter().enumerate() {
            for earlier in cluster::earlier(filesystems, |f| Some(*f) == n.filesystem) {
                let mut simpler = s.clone();
                simpler.nodes[i].filesystem = Some(*earlier);
                out.push(simpler);
            }
        }
        // The preferred (earlier) versions.
        let versions = self.versions();
        for (i, n) in s.nodes.iter().enumerate() {
            for earlier in cluster::earlier(versions, |v| Some(&v.version) == n.version.as_ref()) {
                let mut simpler = s.clone();
                simpler.nodes[i].version = Some(earlier.version.clone());
                out.push(simpler);
            }
        }
        out
    }

    fn command(&self, s: &KvState, g: &mut Gen) -> Option<KvCmd> {
        let awake = s.awake();
        let down = s.ids(|n| !n.running);
        let paused = s.ids(|n| n.paused);
        let mut kinds: Vec<(u32, u8)> = Vec::new();
        if !awake.is_empty() {
            kinds.push((6, 0));
        }
        if self.config.fault(Fault::Crash) {
            if !s.ids(|n| n.running).is_empty() {
                kinds.push((1, 1));
            }
            if !down.is_empty() {
                kinds.push((2, 2));
            }
        }
        if self.config.fault(Fault::Pause) {
            if !awake.is_empty() {
                kinds.push((1, 3));
            }
            if !paused.is_empty() {
                kinds.push((2, 4));
            }
        }
        if self.config.fault(Fault::Partition) && s.nodes.len() >= 2 && !s.partitioned {
            kinds.push((1, 5));
        }
        if self.config.fault(Fault::Block) && s.nodes.len() >= 2 {
            kinds.push((1, 7));
        }
        if self.config.fault(Fault::Loss) {
            kinds.push((1, 8));
        }
        if s.network_faulty() {
            kinds.push((2, 6));
        }
        // Only with "upgrade" and two or more versions: otherwise the draws are as before.
        let upgrades = self.upgrades(s);
        if !upgrades.is_empty() {
            kinds.push((1, 9));
        }
        let all: Vec<String> = s.nodes.iter().map(|n| n.id.clone()).collect();
        Some(match *g.frequency(&kinds)? {
            0 => {
                let workers = g.range(1..=self.config.workers.max(1));
                let mut ops = Vec::new();
                for worker in 0..workers {
                    for _ in 0..g.range(1..=self.config.ops_per_worker.max(1)) {
                        let node = g.choose(&awake)?.clone();
                        let key = g.range(0..=self.config.keys.max(1) - 1);
                        let value = g.range(0..=99u64);
                        let op = match g.frequency(&[(3, 0u8), (3, 1), (1, 2), (1, 3)])? {
                            0 => KvOp::Put(key, value),
                            1 => KvOp::Get(key),
                            2 => KvOp::Delete(key),
                            _ => KvOp::Cas {
                                key,
                                expected: g.bool(0.7).then(|| g.range(0..=99u64)),
                                new: value,
                            },
                        };
                        ops.push(ClientOp { worker, node, op });
                    }
                }
                KvCmd::Ops { ops }
            }
            1 => KvCmd::Crash {
                node: g.choose(&s.ids(|n| n.running))?.clone(),
            },
            2 => KvCmd::Restart {
                node: g.choose(&down)?.clone(),
            },
            3 => KvCmd::Pause {
                node: g.choose(&awake)?.clone(),
            },
            4 => KvCmd::Resume {
                node: g.choose(&paused)?.clone(),
            },
            5 => KvCmd::Partition {
                side: cluster::partition_side(g, &all)?,
            },
            7 => {
                let (from, to) = cluster::one_way_block(g, &all)?;
                KvCmd::Block { from, to }
            }
            8 => KvCmd::Loss {
                node: g.choose(&all)?.clone(),
                percent: *g.choose(&[20u8, 50, 80])?,
            },
            9 => g.choose(&upgrades)?.clone(),
            _ => KvCmd::Heal,
        })
    }

    /// Client operations aimed at a node move to the first node (so that shrinking the network
    /// can then drop the node they no longer need).
    fn shrink_commands(&self, initial: &KvState, commands: &[KvCmd]) -> Vec<Vec<KvCmd>> {
        let Some(first) = initial.nodes.first().map(|n| n.id.clone()) else {
            return Vec::new();
        };
        initial.nodes[1..]
            .iter()
            .filter(|n| {
                commands.iter().any(|c| match c {
                    KvCmd::Ops { ops } => ops.iter().any(|o| o.node == n.id),
                    _ => false,
                })
            })
            .map(|n| {
                commands
                    .iter()
                    .map(|c| match c {
                        KvCmd::Ops { ops } => KvCmd::Ops {
                            ops: ops
                                .iter()
                                .map(|o| ClientOp {
                                    node: if o.node == n.id {
                                        first.clone()
                                    } else {
                                        o.node.clone()
                                    },
                                    ..o.clone()
                                })
                                .collect(),
                        },
                        other => other.clone(),
                    })
                    .collect()
            })
            .collect()
    }

    /// Batches lose one operation at a time, then one worker's operations move to the worker
    /// before it (fewer workers); loss gets lighter; upgrades go to earlier (preferred)
    /// versions.
    fn shrink_command(&self, c: &KvCmd) -> Vec<KvCmd> {
        match c {
            KvCmd::Ops { ops } => {
                let mut out: Vec<KvCmd> = Vec::new();
                if ops.len() > 1 {
                    out.extend((0..ops.len()).map(|i| {
                        let mut fewer = ops.clone();
                        fewer.remove(i);
                        KvCmd::Ops { ops: fewer }
                    }));
                }
                let workers: BTreeSet<usize> = ops.iter().map(|o| o.worker).collect();
                for (rank, &w) in workers.iter().enumerate() {
                    if w == 0 {
                        continue;
                    }
                    // Worker `w` becomes the next lower id: merged into it, or renumbered.
                    let to = if rank == 0 { 0 } else { w - 1 };
                    let moved = ops
                        .iter()
                        .map(|o| ClientOp {
                            worker: if o.worker == w { to } else { o.worker },
                            ..o.clone()
                        })
                        .collect();
                    out.push(KvCmd::Ops { ops: moved });
                }
                out
            }
            KvCmd::Loss { node, percent } if *percent > 20 => vec![KvCmd::Loss {
                node: node.clone(),
                percent: 20,
            }],
            KvCmd::Upgrade { node, version } => {
                let versions = self.versions();
                let at = versions
                    .iter()
                    .position(|v| v.version == *version)
                    .unwrap_or(0);
                versions[..at]
                    .iter()
                    .map(|v| KvCmd::Upgrade {
                        node: node.clone(),
                        version: v.version.clone(),
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    fn precondition(&self, s: &KvState, c: &KvCmd) -> bool {
        let node = |id: &str| s.node(id);
        match c {
            KvCmd::Ops { ops } => {
                !ops.is_empty()
                    && ops
                        .iter()
                        .all(|o| node(&o.node).is_some_and(|n| n.running && !n.paused))
            }
            KvCmd::Crash { node: id } => node(id).is_some_and(|n| n.running),
            KvCmd::Restart { node: id } => node(id).is_some_and(|n| !n.running),
            KvCmd::Pause { node: id } => node(id).is_some_and(|n| n.running && !n.paused),
            KvCmd::Resume { node: id } => node(id).is_some_and(|n| n.paused),
            KvCmd::Partition { side } => {
                !s.partitioned
                    && !side.is_empty()
                    && side.len() < s.nodes.len()
                    && side.iter().all(|id| node(id).is_some())
            }
            KvCmd::Block { from, to } => from != to && node(from).is_some() && node(to).is_some(),
            KvCmd::Loss { node: id, percent } => *percent <= 100 && node(id).is_some(),
            KvCmd::Heal => s.network_faulty(),
            KvCmd::Upgrade { node: id, version } => {
                node(id)
                    .is_some_and(|n| !n.paused && n.version.as_ref().is_some_and(|v| v != version))
                    && self
                        .service
                        .as_ref()
                        .is_some_and(|s| s.version(version).is_some())
            }
        }
    }

    fn next_state(&self, s: &KvState, c: &KvCmd) -> KvState {
        let mut next = s.clone();
        let mut set = |id: &str, power| cluster::set_power(&mut next.nodes, id, power);
        match c {
            KvCmd::Ops { .. } => {}
            KvCmd::Crash { node } => set(node, Power::Off),
            KvCmd::Restart { node } | KvCmd::Resume { node } => set(node, Power::On),
            KvCmd::Pause { node } => set(node, Power::Paused),
            KvCmd::Partition { .. } => next.partitioned = true,
            KvCmd::Block { .. } | KvCmd::Loss { .. } => next.links_faulty = true,
            KvCmd::Heal => {
                next.partitioned = false;
                next.links_faulty = false;
            }
            // Up again afterwards if it was up; a crashed node stays down.
            KvCmd::Upgrade { node, version } => {
                if let Some(n) = next.nodes.iter_mut().find(|n| n.id == *node) {
                    n.version = Some(version.clone());
                }
            }
        }
        next
    }

    /// Operations are judged together, by the linearizability invariant.
    fn postcondition(&self, _: &KvState, _: &KvCmd, _: &KvOutput) -> Check {
        Ok(())
    }

    fn cost(&self, c: &KvCmd) -> u32 {
        match c {
            KvCmd::Ops { ops } => ops.len() as u32,
            KvCmd::Restart { .. } => 5,
            // A shutdown, a boot and a restart of the service.
            KvCmd::Upgrade { .. } => 6,
            _ => 2,
        }
    }

    fn labels(&self, initial: &KvState, commands: &[KvCmd], labels: &mut Labels) {
        labels.add("nodes", initial.nodes.len());
        let service = self.service_name();
        let mut parameters = cluster::ParameterLabels::default();
        for n in &initial.nodes {
            let version = n.version.as_deref().map(|v| (service, v));
            parameters.machine(labels, n.filesystem, version);
        }
        parameters.finish(labels, "cluster");
        for c in commands {
            if let KvCmd::Ops { ops } = c {
                let workers: BTreeSet<usize> = ops.iter().map(|o| o.worker).collect();
                labels.add("workers per batch", workers.len());
                for o in ops {
                    let kind = match o.op {
                        KvOp::Put(..) => "put",
                        KvOp::Get(..) => "get",
                        KvOp::Delete(..) => "delete",
                        KvOp::Cas { .. } => "cas",
                    };
                    labels.add("operation", kind);
                }
            }
        }
        let faults = commands
            .iter()
            .filter(|c| !matches!(c, KvCmd::Ops { .. }))
            .count();
        labels.add("faults per case", faults);
    }

    fn describe_state(&self, s: &KvState) -> String {
        let mut out = format!("{} node(s) on {}:\n", s.nodes.len(), s.subnet);
        for n in &s.nodes {
            let parameters = n.parameters(self.service_name());
            if parameters.is_empty() {
                let _ = writeln!(out, "  {:<8}  {}", n.id, n.ip);
            } else {
                let _ = writeln!(out, "  {:<8}  {:<15}  {parameters}", n.id, n.ip);
            }
        }
        out
    }

    fn state_size(&self, s: &KvState) -> Option<String> {
        Some(format!("{} nodes", s.nodes.len()))
    }

    fn summarize_state(&self, s: &KvState) -> String {
        let list = |ids: Vec<String>| {
            if ids.is_empty() {
                "-".to_string()
            } else {
                ids.join(" ")
            }
        };
        let mut out = format!(
            "up: {}; down: {}",
            list(s.ids(|n| n.running && !n.paused)),
            list(s.ids(|n| !n.running))
        );
        let paused = s.ids(|n| n.paused);
        if !paused.is_empty() {
            let _ = write!(out, "; paused: {}", paused.join(" "));
        }
        if s.partitioned {
            out.push_str("; partitioned");
        }
        if s.links_faulty {
            out.push_str("; links faulty");
        }
        out
    }

    fn describe_command(&self, c: &KvCmd) -> String {
        match c {
            KvCmd::Ops { ops } => {
                let parts: Vec<String> = ops
                    .iter()
                    .map(|o| format!("w{} {} @{}", o.worker, describe_op(&o.op), o.node))
                    .collect();
                format!("Ops[{}]", parts.join("; "))
            }
            KvCmd::Crash { node } => format!("Crash({node})"),
            KvCmd::Restart { node } => format!("Restart({node})"),
            KvCmd::Pause { node } => format!("Pause({node})"),
            KvCmd::Resume { node } => format!("Resume({node})"),
            KvCmd::Partition { side } => format!("Partition({} | rest)", side.join(" ")),
            KvCmd::Block { from, to } => format!("Block({from} -> {to})"),
            KvCmd::Loss { node, percent } => format!("Loss({node}, {percent}%)"),
            KvCmd::Heal => "Heal".into(),
            KvCmd::Upgrade { node, version } => format!("Upgrade({node} -> {version})"),
        }
    }
}

/// The nodes that partition `side | rest` cuts off from a majority: the smaller group, or
/// every node when neither group is a majority.
fn minority(state: &KvState, side: &[String]) -> BTreeSet<String> {
    let all: BTreeSet<String> = state.nodes.iter().map(|n| n.id.clone()).collect();
    let side: BTreeSet<String> = side.iter().cloned().collect();
    let rest: BTreeSet<String> = all.difference(&side).cloned().collect();
    let majority = all.len() / 2 + 1;
    if side.len() >= majority {
        rest
    } else if rest.len() >= majority {
        side
    } else {
        all
    }
}

/// The fabric's description of the network of `state`: one machine per node, `memory_mb`
/// each, with its file system and, if it has a version, that version of `service` installed
/// (first on its `PATH` under the service's name).
pub fn network_spec(
    state: &KvState,
    memory_mb: u32,
    service: Option<&KvService>,
) -> Result<fleetcheck_fabric::NetworkSpec, Abort> {
    let machines = state
        .nodes
        .iter()
        .map(|n| {
            let services = match &n.version {
                Some(label) => {
                    let (name, v) = installation(service, &n.id, label)?;
                    BTreeMap::from([(name.to_string(), v.clone())])
                }
                None => BTreeMap::new(),
            };
            Ok(fleetcheck_fabric::MachineSpec {
                id: n.id.clone(),
                ip: n.ip,
                memory_mb,
                kernel: "host".into(),
                setup: Vec::new(),
                filesystem: n.filesystem,
                services,
                lose_unsynced: false,
            })
        })
        .collect::<Result<Vec<_>, Abort>>()?;
    Ok(fleetcheck_fabric::NetworkSpec {
        subnet: state.subnet,
        machines,
    })
}

/// Builds the network of `state` on `backend` ([`network_spec`]) and boots every node, in
/// parallel: the common start of every store that runs on machines.
pub fn boot_cluster(
    backend: &dyn fleetcheck_fabric::Backend,
    state: &KvState,
    memory_mb: u32,
    service: Option<&KvService>,
) -> Result<Box<dyn fleetcheck_fabric::Network>, Abort> {
    let spec = network_spec(state, memory_mb, service)?;
    let net = backend.create(&spec)?;
    let ids: Vec<&str> = state.nodes.iter().map(|n| n.id.as_str()).collect();
    for r in net.boot(&ids) {
        r?;
    }
    Ok(net)
}

/// Applies a fault command to the machines of a store's network; `state` is the model state
/// before it. A `Restart` only boots the machine, an `Upgrade` of a running node shuts it
/// down, installs the version of `service` and boots it: starting the store's service again is
/// the store's part (see [`restarts_service`]).
pub fn apply_fault(
    net: &dyn fleetcheck_fabric::Network,
    state: &KvState,
    service: Option<&KvService>,
    command: &KvCmd,
) -> Result<(), Abort> {
    match command {
        KvCmd::Upgrade { node, version } => {
            let (name, program) = installation(service, node, version)?;
            let running = state.node(node).is_some_and(|n| n.running);
            if running {
                net.shutdown(node)?;
            }
            net.set_service(node, name, program)
                .map_err(|e| Abort::new(format!("upgrade of {node} failed: {e}")))?;
            if running {
                if let Some(r) = net.boot(&[node.as_str()]).pop() {
                    r?;
                }
            }
        }
        KvCmd::Crash { node } => net.crash(node)?,
        KvCmd::Restart { node } => {
            if let Some(r) = net.boot(&[node.as_str()]).pop() {
                r?;
            }
        }
        KvCmd::Pause { node } => net.pause(node)?,
        KvCmd::Resume { node } => net.resume(node)?,
        KvCmd::Partition { side } => net.partition(std::slice::from_ref(side))?,
        KvCmd::Block { from, to } => net.block(from, to)?,
        KvCmd::Loss { node, percent } => net.loss(node, *percent)?,
        KvCmd::Heal => net.heal()?,
        KvCmd::Ops { .. } => {}
    }
    Ok(())
}

/// The node whose service the store must start again after `command` (applied by
/// [`apply_fault`] in `state`): a restarted one, or an upgraded one that was running.
pub fn restarts_service<'a>(state: &KvState, command: &'a KvCmd) -> Option<&'a str> {
    match command {
        KvCmd::Restart { node } => Some(node),
        KvCmd::Upgrade { node, .. } if state.node(node).is_some_and(|n| n.running) => Some(node),
        _ => None,
    }
}

/// How a store runs on (or beside) a network: the part that differs between etcd, Redis and
/// the in-memory stores.
pub trait Store: Send + Sync {
    /// The live cluster of one case.
    type Cluster: Send + Sync;

    /// Builds and starts the cluster of `state` (every node up) and waits until it serves.
    fn start(&self, state: &KvState) -> Result<Self::Cluster, Abort>;
    /// Runs one client operation against `node`.
    fn op(&self, cluster: &Self::Cluster, node: &str, op: &Op) -> Outcome<Ret>;
    /// Called before each batch of operations.
    fn before_batch(&self, _cluster: &Self::Cluster) {}
    /// Applies a fault command (anything but `Ops`).
    fn fault(&self, cluster: &Self::Cluster, state: &KvState, command: &KvCmd)
        -> Result<(), Abort>;
    /// Undoes every fault in force in `state` (resumes paused nodes, heals the network) before
    /// the cluster stops. By default through [`Store::fault`].
    fn heal(&self, cluster: &Self::Cluster, state: &KvState) -> Result<(), Abort> {
        let mut state = state.clone();
        for command in state.heal_commands() {
            self.fault(cluster, &state, &command)?;
            state = KvModel::default().next_state(&state, &command);
        }
        Ok(())
    }
    /// Stops and removes the cluster.
    fn stop(&self, cluster: Self::Cluster) -> Result<(), Abort>;
}

/// One case's live cluster and the history of its client operations.
#[derive(Debug)]
pub struct KvInstance<C> {
    cluster: C,
    /// Time zero of the history's timestamps.
    origin: Instant,
    recorder: Arc<Recorder<Op, Ret>>,
    /// The node each recorded operation went through, by history index, and whether that node
    /// was cut off from the majority by a partition then.
    nodes: Mutex<BTreeMap<usize, anomaly::Via>>,
    /// The nodes a partition in force cuts off from the majority (all, if no side has one).
    cut_off: BTreeSet<String>,
    /// The model state after the last command that ran: the faults to heal at teardown.
    state: KvState,
    /// Wall time spent checking histories.
    pub checking: std::time::Duration,
}

impl<C> KvInstance<C> {
    /// The live cluster.
    pub fn cluster(&self) -> &C {
        &self.cluster
    }

    /// The history of client operations so far, and the moment that is time zero of its
    /// timestamps (taken just before the recorder was made; for reports).
    pub fn history(&self) -> (History<Op, Ret>, Instant) {
        (self.recorder.history(), self.origin)
    }
}

/// Runs the kv model on a [`Store`]; after every step the history so far must be linearizable.
#[derive(Debug, Clone)]
pub struct KvSystem<S> {
    store: S,
    /// Most search steps the checker may take per check.
    pub max_check_steps: u64,
}

impl<S> KvSystem<S> {
    /// A system on `store`.
    pub fn new(store: S) -> Self {
        Self {
            store,
            max_check_steps: 2_000_000,
        }
    }
}

impl<S: Store> System<KvModel> for KvSystem<S> {
    type Instance = KvInstance<S::Cluster>;

    fn setup(&self, initial: &KvState) -> Result<Self::Instance, Abort> {
        Ok(KvInstance {
            cluster: self.store.start(initial)?,
            origin: Instant::now(),
            recorder: Arc::new(Recorder::new()),
            nodes: Mutex::new(BTreeMap::new()),
            cut_off: BTreeSet::new(),
            state: initial.clone(),
            checking: std::time::Duration::ZERO,
        })
    }

    fn run(
        &self,
        inst: &mut Self::Instance,
        state: &KvState,
        command: &KvCmd,
    ) -> Result<KvOutput, Abort> {
        let KvCmd::Ops { ops } = command else {
            self.store.fault(&inst.cluster, state, command)?;
            inst.state = KvModel::default().next_state(state, command);
            match command {
                KvCmd::Partition { side } => inst.cut_off = minority(state, side),
                KvCmd::Heal => inst.cut_off.clear(),
                _ => {}
            }
            return Ok(KvOutput::Done);
        };
        let workers: BTreeSet<usize> = ops.iter().map(|o| o.worker).collect();
        self.store.before_batch(&inst.cluster);
        let (cluster, recorder, nodes) = (&inst.cluster, &inst.recorder, &inst.nodes);
        let cut_off = &inst.cut_off;
        let mut results: Vec<(usize, Recorded)> = std::thread::scope(|scope| {
            let handles: Vec<_> = workers
                .iter()
                .map(|&w| {
                    scope.spawn(move || {
                        let mut done = Vec::new();
                        for (i, o) in ops.iter().enumerate().filter(|(_, o)| o.worker == w) {
                            let ticket = recorder.invoke(w, o.op.clone());
                            let index = ticket.index();
                            nodes.lock().expect("no panics while locked").insert(
                                index,
                                anomaly::Via {
                                    node: o.node.clone(),
                                    cut_off: cut_off.contains(&o.node),
                                },
                            );
                            let outcome = self.store.op(cluster, &o.node, &o.op);
                            recorder.complete(ticket, outcome);
                            done.push((i, index));
                        }
                        done
                    })
                })
                .collect();
            let history = || recorder.history();
            let indices: Vec<(usize, usize)> = handles
                .into_iter()
                .flat_map(|h| h.join().expect("client workers do not panic"))
                .collect();
            let h = history();
            indices
                .into_iter()
                .map(|(i, index)| (i, h.operations[index].clone()))
                .collect()
        });
        results.sort_by_key(|(i, _)| *i);
        Ok(KvOutput::Ops(results.into_iter().map(|(_, r)| r).collect()))
    }

    fn invariant(&self, inst: &mut Self::Instance, _: &KvState) -> Result<Check, Abort> {
        let history: History<Op, Ret> = inst.recorder.history();
        if history.is_empty() {
            return Ok(Ok(()));
        }
        let started = Instant::now();
        let limits = Limits {
            max_steps: Some(self.max_check_steps),
            ..Limits::default()
        };
        let verdict = check_with(&KvSpec::<u64>::new(), &history, &limits).result;
        inst.checking += started.elapsed();
        Ok(match verdict {
            Linearizability::NotLinearizable { explanation, .. } => {
                let nodes = inst.nodes.lock().expect("no panics while locked");
                let via = |i: usize| {
                    nodes.get(&i).cloned().unwrap_or_else(|| anomaly::Via {
                        node: "?".into(),
                        cut_off: false,
                    })
                };
                Err(match anomaly::missing_write(&history, via) {
                    Some(anomaly) => {
                        format!("the history is not linearizable: {anomaly}\n{explanation}")
                    }
                    None => format!("the history is not linearizable: {explanation}"),
                })
            }
            // An exhausted budget is not evidence of a bug.
            Linearizability::Linearizable | Linearizability::Unknown { .. } => Ok(()),
        })
    }

    /// Heals every fault first; a heal that fails aborts the case (it is the infrastructure's
    /// failure, not the store's), after the cluster is stopped anyway.
    fn teardown(&self, inst: Self::Instance) -> Result<(), Abort> {
        let healed = self.store.heal(&inst.cluster, &inst.state);
        let stopped = self.store.stop(inst.cluster);
        healed
            .map_err(|e| Abort::new(format!("healing the faults before teardown failed: {e}")))?;
        stopped
    }
}

/// Any of the built-in stores, chosen by name at run time.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// etcd on the fabric.
    Etcd(etcd::EtcdStore),
    /// Redis with Sentinel on the fabric.
    Redis(redis::RedisStore),
    /// An in-memory store.
    Memory(memory::MemoryStore),
}

/// The names [`AnyStore::named`] knows.
pub const SYSTEMS: &[&str] = &["etcd", "redis", "memory", "memory-lossy"];

impl AnyStore {
    /// The store called `name` (see [`SYSTEMS`]) under `config`: its `[kv]` knobs and the
    /// versions of its service ([`KvService::for_system`]), its machines on `backend`.
    pub fn for_config(
        name: &str,
        backend: Arc<dyn fleetcheck_fabric::Backend>,
        config: &ScenarioConfig,
    ) -> Option<Self> {
        Some(
            Self::named(name, backend, &config.kv)?
                .with_service(KvService::for_system(config, name)),
        )
    }

    /// The same store, its nodes' versions those of `service` (nothing for the in-memory
    /// stores, which run no programs).
    pub fn with_service(self, service: Option<KvService>) -> Self {
        match self {
            AnyStore::Etcd(s) => AnyStore::Etcd(s.with_service(service)),
            AnyStore::Redis(s) => AnyStore::Redis(s.with_service(service)),
            AnyStore::Memory(s) => AnyStore::Memory(s),
        }
    }

    /// The store called `name` (see [`SYSTEMS`]), its machines on `backend`, with no versions
    /// of its service: its nodes run the host's program (see [`AnyStore::for_config`]).
    pub fn named(
        name: &str,
        backend: Arc<dyn fleetcheck_fabric::Backend>,
        config: &KvConfig,
    ) -> Option<Self> {
        let timeout = std::time::Duration::from_millis(config.op_timeout_ms);
        Some(match name {
            "etcd" => AnyStore::Etcd(etcd::EtcdStore::new(backend, config.memory_mb, timeout)),
            "redis" => AnyStore::Redis(redis::RedisStore::new(backend, config.memory_mb, timeout)),
            "memory" | "memory-lossy" => AnyStore::Memory(memory::MemoryStore {
                lose_unreplicated_writes: name == "memory-lossy",
                ..memory::MemoryStore::default()
            }),
            _ => return None,
        })
    }
}

/// The cluster of an [`AnyStore`].
#[derive(Debug)]
pub enum AnyCluster {
    /// etcd's.
    Etcd(etcd::EtcdCluster),
    /// Redis'.
    Redis(redis::RedisCluster),
    /// In memory.
    Memory(memory::MemoryCluster),
}

impl AnyCluster {
    /// The machines of the cluster; `None` for the in-memory stores, which have none.
    pub fn network(&self) -> Option<&dyn fleetcheck_fabric::Network> {
        match self {
            AnyCluster::Etcd(c) => Some(c.network()),
            AnyCluster::Redis(c) => Some(c.network()),
            AnyCluster::Memory(_) => None,
        }
    }
}

macro_rules! dispatch {
    ($store:expr, $cluster:expr, |$s:ident, $c:ident| $body:expr) => {
        match ($store, $cluster) {
            (AnyStore::Etcd($s), AnyCluster::Etcd($c)) => $body,
            (AnyStore::Redis($s), AnyCluster::Redis($c)) => $body,
            (AnyStore::Memory($s), AnyCluster::Memory($c)) => $body,
            _ => unreachable!("a store only ever gets its own clusters"),
        }
    };
}

impl Store for AnyStore {
    type Cluster = AnyCluster;

    fn start(&self, state: &KvState) -> Result<AnyCluster, Abort> {
        Ok(match self {
            AnyStore::Etcd(s) => AnyCluster::Etcd(s.start(state)?),
            AnyStore::Redis(s) => AnyCluster::Redis(s.start(state)?),
            AnyStore::Memory(s) => AnyCluster::Memory(s.start(state)?),
        })
    }

    fn op(&self, cluster: &AnyCluster, node: &str, op: &Op) -> Outcome<Ret> {
        dispatch!(self, cluster, |s, c| s.op(c, node, op))
    }

    fn before_batch(&self, cluster: &AnyCluster) {
        dispatch!(self, cluster, |s, c| s.before_batch(c))
    }

    fn fault(&self, cluster: &AnyCluster, state: &KvState, command: &KvCmd) -> Result<(), Abort> {
        dispatch!(self, cluster, |s, c| s.fault(c, state, command))
    }

    fn heal(&self, cluster: &AnyCluster, state: &KvState) -> Result<(), Abort> {
        dispatch!(self, cluster, |s, c| s.heal(c, state))
    }

    fn stop(&self, cluster: AnyCluster) -> Result<(), Abort> {
        match (self, cluster) {
            (AnyStore::Etcd(s), AnyCluster::Etcd(c)) => s.stop(c),
            (AnyStore::Redis(s), AnyCluster::Redis(c)) => s.stop(c),
            (AnyStore::Memory(s), AnyCluster::Memory(c)) => s.stop(c),
            _ => unreachable!("a store only ever gets its own clusters"),
        }
    }
}
