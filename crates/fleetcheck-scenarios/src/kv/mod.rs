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
pub mod memory;
pub mod redis;
pub mod service;
pub mod workload;

pub use workload::{Answer, Call, OpKind, Workload};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use fleetcheck_engine::collections::QueueOrder;
use fleetcheck_engine::history::Outcome;
use fleetcheck_engine::linearizability::{check_with, Limits};
use fleetcheck_engine::{
    Abort, Check, Gen, History, KvOp, KvRet, KvSpec, Labels, Linearizability, Model, Operation,
    Recorder, System,
};
use fleetcheck_fabric::{ServiceVersion, Subnet};
use serde::{Deserialize, Serialize};

pub use crate::cluster::Machine;
use crate::cluster::{self, ClusterCmd, ClusterState, Fault, Kind, Plan};
use crate::config::{MachineDomain, Range, ScenarioConfig, ServiceConfig, Services};

/// A client operation of the kv workload: keys and values are small numbers.
pub type Op = KvOp<u64>;
/// What an [`Op`] returns.
pub type Ret = KvRet<u64>;
/// One recorded operation (of any workload).
pub type Recorded = Operation<Call, Answer>;

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
    /// The operations clients issue, each with its fixed weight (see [`OpKind`]); empty (the
    /// default): every operation of the workload (kv: put, get, delete, cas).
    #[serde(
        deserialize_with = "workload::op_kinds",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ops: Vec<OpKind>,
    /// The older name of `[machine] filesystem` for kv's nodes (still read; not with it).
    #[serde(deserialize_with = "crate::config::one_or_many")]
    pub filesystem: Vec<fleetcheck_fabric::FileSystem>,
    /// The role the `isolate` fault cuts off (a scenario file's `[roles]`, e.g. `primary`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The queue workload's: the order the queue promises (`true`: a value whose enqueue was
    /// acknowledged before another's began comes out of a drain first; `"per-producer"`: so
    /// for the values of one client worker), which is then checked too.
    #[serde(skip_serializing_if = "QueueOrder::is_any")]
    pub ordered: QueueOrder,
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
            ops: Vec::new(),
            filesystem: Vec::new(),
            leader: None,
            ordered: QueueOrder::Any,
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
        Self::named(config, service_of(system)?)
    }

    /// The versions of service `name` that `config` lists, if it lists any.
    pub fn named(config: &ScenarioConfig, name: &str) -> Option<Self> {
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

    /// `[services]` with this one service in it: what its nodes' versions name.
    pub fn services(service: Option<&KvService>) -> Services {
        service
            .map(|s| {
                let versions = s.versions.clone();
                let config = ServiceConfig {
                    versions,
                    ..ServiceConfig::default()
                };
                (s.name.clone(), config)
            })
            .into_iter()
            .collect()
    }
}

/// The model state: the cluster and the faults in force ([`ClusterState`]; a node is a
/// [`Machine`]).
pub type KvState = ClusterState;

/// `replica, data on ext4, etcd 3.4`: a node's role and parameters for people (empty if none).
pub fn parameters(m: &Machine) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !m.role.is_empty() {
        parts.push(m.role.clone());
    }
    if let Some(fs) = m.filesystem {
        parts.push(format!("data on {fs}"));
    }
    for (service, v) in &m.versions {
        parts.push(format!("{service} {v}"));
    }
    parts.join(", ")
}

/// One client operation: which worker issues it, against which node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientOp {
    /// The worker (0-based); a worker's operations run one after another.
    pub worker: usize,
    /// The node it talks to.
    pub node: String,
    /// The operation.
    pub op: Call,
}

/// A command of the kv scenario: a batch of client operations, or an infrastructure command
/// of the cluster layer (Crash, Restart, Pause, Resume, Partition, Block, Loss, Heal,
/// Upgrade).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", content = "args")]
pub enum KvCmd {
    /// A batch of client operations: workers run concurrently, each its own in order.
    Ops {
        /// The operations.
        ops: Vec<ClientOp>,
    },
    /// A command of a scenario file's own (`[commands.<name>]`), run inside `node`.
    Run {
        /// Its name.
        name: String,
        /// The node it runs in (up, not paused).
        node: String,
    },
    /// An infrastructure command. A `Restart` (and an `Upgrade` of a running node) starts the
    /// store's service again.
    #[serde(untagged)]
    Cluster(ClusterCmd),
}

impl From<ClusterCmd> for KvCmd {
    fn from(c: ClusterCmd) -> Self {
        KvCmd::Cluster(c)
    }
}

/// What a command returned.
#[derive(Clone, PartialEq, Eq)]
pub enum KvOutput {
    /// The recorded operations of a batch.
    Ops(Vec<Recorded>),
    /// A fault was applied.
    Done,
    /// A command of the scenario's own ran: `Err` its failure (exit status and output).
    Ran(Result<(), String>),
}

impl std::fmt::Debug for KvOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvOutput::Done | KvOutput::Ran(Ok(())) => f.write_str("ok"),
            KvOutput::Ran(Err(e)) => write!(f, "failed: {e}"),
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
    /// The file systems of the nodes' data directories, the first preferred (`[machine]
    /// filesystem`, or the older `[kv] filesystem`); empty: a directory of the host's.
    pub filesystems: Vec<fleetcheck_fabric::FileSystem>,
    /// Whether nodes lose unsynced writes on a power cut (`[machine] lose_unsynced`).
    pub lose_unsynced: bool,
    /// A scenario file's own commands (`[commands.<name>]`), in name order.
    pub commands: Vec<(String, crate::file::FileCommand)>,
    /// The machines' roles and how many of each (`[roles.<name>] count`), in name order;
    /// empty: `[kv] nodes` machines without a role.
    pub roles: Vec<(String, Range<u32>)>,
    /// The role client operations go to (`[client] route`); `None`: any node.
    pub route: Option<String>,
    /// What clients do and how it is judged (a scenario file's `[scenario] workload`).
    pub workload: Workload,
}

impl KvModel {
    /// The model for store `system` under `config`: its `[kv]` knobs, the file systems of
    /// `[machine]` and the versions of the store's service (see [`service_of`]).
    pub fn new(config: &ScenarioConfig, system: &str) -> Self {
        Self::for_service(config, service_of(system))
    }

    /// The model under `config` whose nodes run versions of `service` (`[services.<name>]`),
    /// if it lists any: the one constructor of [`KvModel::new`] and scenario files.
    pub fn for_service(config: &ScenarioConfig, service: Option<&str>) -> Self {
        let filesystems = if config.kv.filesystem.is_empty() {
            config.machine.filesystem.clone()
        } else {
            config.kv.filesystem.clone()
        };
        Self {
            config: config.kv.clone(),
            service: service.and_then(|name| KvService::named(config, name)),
            filesystems,
            lose_unsynced: config.machine.lose_unsynced,
            commands: config
                .commands
                .iter()
                .map(|(name, c)| (name.clone(), c.clone()))
                .collect(),
            // Roles are a scenario file's (a configuration's `[roles]` are ping's).
            roles: config
                .roles
                .iter()
                .filter(|_| config.scenario.is_some())
                .map(|(name, r)| (name.clone(), r.count))
                .collect(),
            route: config.client.as_ref().and_then(|c| c.route.clone()),
            workload: config
                .scenario
                .as_ref()
                .map_or(Workload::Kv, |s| s.workload),
        }
    }

    /// The operations clients issue: `[kv] ops`, or every one of the workload's.
    pub fn op_kinds(&self) -> Vec<OpKind> {
        if self.config.ops.is_empty() {
            self.workload.kinds().to_vec()
        } else {
            self.config.ops.clone()
        }
    }

    /// The machines client operations may go to in `s`: those awake, of the route's role.
    fn targets(&self, s: &KvState) -> Vec<String> {
        routed(s, self.route.as_deref())
    }

    /// Whether command `name` of the file's own may run on `node` in `s`: the node awake, of
    /// the command's role, and every machine of its `when_down` roles down or paused.
    fn may_run(&self, s: &KvState, name: &str, node: &str) -> bool {
        let Some((_, c)) = self.commands.iter().find(|(n, _)| n == name) else {
            return false;
        };
        s.machine(node)
            .is_some_and(|m| m.awake() && c.on.as_ref().is_none_or(|r| *r == m.role))
            && s.machines
                .iter()
                .filter(|m| c.when_down.contains(&m.role))
                .all(|m| !m.awake())
    }

    fn versions(&self) -> &[ServiceVersion] {
        self.service.as_ref().map_or(&[], |s| &s.versions)
    }

    /// What the labels and the printout call the service.
    fn service_name(&self) -> &str {
        self.service.as_ref().map_or("version", |s| &s.name)
    }

    /// The domain every node is drawn from: `[kv] nodes` of them, `[kv] memory_mb` each, on
    /// the host's kernel, with the file systems and the versions of the store's service.
    pub fn domain(&self) -> MachineDomain {
        let (least, most) = self.config.nodes;
        self.domain_of(
            String::new(),
            Range {
                min: least,
                max: most,
            },
        )
    }

    /// The domain of each role (`[roles]`), or the one of [`KvModel::domain`] without roles.
    pub fn domains(&self) -> Vec<MachineDomain> {
        if self.roles.is_empty() {
            return vec![self.domain()];
        }
        self.roles
            .iter()
            .map(|(role, count)| self.domain_of(role.clone(), *count))
            .collect()
    }

    fn domain_of(&self, role: String, count: Range<u32>) -> MachineDomain {
        let memory = self.config.memory_mb;
        MachineDomain {
            role,
            count,
            memory_mb: Range {
                min: memory,
                max: memory,
            },
            kernels: Vec::new(),
            setup: Vec::new(),
            filesystem: self.filesystems.clone(),
            lose_unsynced: self.lose_unsynced,
            versions: self
                .service
                .iter()
                .map(|s| (s.name.clone(), s.versions.clone()))
                .collect(),
        }
    }

    /// What the cluster layer generates for it: the faults of `[kv] faults`, the store's
    /// versions; network faults also while every node is down, one partition at a time.
    pub fn plan(&self) -> Plan {
        let versions: BTreeMap<String, Vec<String>> = self
            .service
            .iter()
            .map(|s| {
                let labels = s.versions.iter().map(|v| v.version.clone()).collect();
                (s.name.clone(), labels)
            })
            .collect();
        // Every role's machines run the same service.
        let roles = self
            .domains()
            .into_iter()
            .map(|d| (d.role, versions.clone()));
        Plan {
            faults: self.config.faults.clone(),
            versions: roles.collect(),
            network_faults_need_a_machine_up: false,
            partitions_stack: false,
            leader: self.config.leader.clone(),
        }
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
        // Without roles one draw of `[kv] nodes` (as before roles existed); with them, a count
        // per role, machines in role order.
        let roles: Vec<String> = if self.roles.is_empty() {
            let count = g.range(self.config.nodes.0..=self.config.nodes.1) as usize;
            vec![String::new(); count]
        } else {
            let mut roles = Vec::new();
            for (role, count) in &self.roles {
                let n = g.range(count.min..=count.max) as usize;
                roles.extend(std::iter::repeat_n(role.clone(), n));
            }
            roles
        };
        let mut nodes: Vec<Machine> = Vec::new();
        for (ip, role) in cluster::distinct_hosts(g, subnet, roles.len())
            .into_iter()
            .zip(roles)
        {
            let mut node = Machine::new(
                cluster::fresh_id(g, |id| nodes.iter().any(|n| n.id == id)),
                ip,
            );
            node.role = role;
            node.running = true;
            node.lose_unsynced = self.lose_unsynced;
            node.clock = self.config.faults.contains(&Fault::Clock);
            // Drawn only when configured, so other configurations give the same cases.
            node.filesystem = g.choose(&self.filesystems).copied();
            if let Some(v) = g.choose(self.versions()) {
                node.versions
                    .insert(self.service_name().to_string(), v.version.clone());
            }
            nodes.push(node);
        }
        KvState::new(subnet, nodes)
    }

    /// Nodes as [`crate::rules::check_members`] says (at most [`SUBNET_ROOM`]), each running
    /// and not paused, with versions the configuration lists; no fault in force.
    fn check_initial(&self, s: &KvState) -> Check {
        crate::rules::check_members(
            "node",
            s.subnet,
            s.machines.iter().map(|n| (n.id.as_str(), n.ip)),
            SUBNET_ROOM as usize,
        )?;
        let services = KvService::services(self.service.as_ref());
        for n in &s.machines {
            if !n.awake() {
                return Err(format!(
                    "has node {} down or paused, but every case starts with its cluster up",
                    n.id
                ));
            }
            for (service, label) in &n.versions {
                if cluster::service_version(&services, service, label).is_none() {
                    return Err(format!(
                        "gives node {} version `{label}` of {service}, which the configuration does not list",
                        n.id,
                    ));
                }
            }
        }
        if s.network_faulty() {
            return Err("has faults in force, but every case starts with a whole network".into());
        }
        Ok(())
    }

    /// Fewer nodes (never fewer than `[kv] nodes` allows), then per node the preferred file
    /// system and version.
    fn shrink_state(&self, s: &KvState) -> Vec<KvState> {
        s.shrink(&self.domains())
    }

    fn command(&self, s: &KvState, g: &mut Gen) -> Option<KvCmd> {
        enum Pick {
            Ops,
            Cluster(Kind),
            Run(usize),
        }
        let awake = s.awake();
        let targets = self.targets(s);
        let mut kinds: Vec<(u32, Pick)> = Vec::new();
        if !targets.is_empty() {
            kinds.push((6, Pick::Ops));
        }
        let plan = self.plan();
        kinds.extend(
            s.fault_kinds(&plan)
                .into_iter()
                .map(|(w, k)| (w, Pick::Cluster(k))),
        );
        // Only with commands of its own: otherwise the draws are as before.
        let runnable: Vec<(usize, Vec<String>)> = self
            .commands
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let nodes = awake.iter().filter(|n| self.may_run(s, name, n));
                (i, nodes.cloned().collect::<Vec<_>>())
            })
            .filter(|(_, nodes)| !nodes.is_empty())
            .collect();
        kinds.extend(
            runnable
                .iter()
                .enumerate()
                .map(|(at, (i, _))| (self.commands[*i].1.weight, Pick::Run(at))),
        );
        Some(match g.frequency(&kinds)? {
            Pick::Cluster(kind) => KvCmd::Cluster(s.draw(*kind, &plan, g)?),
            Pick::Run(at) => {
                let (i, nodes) = &runnable[*at];
                KvCmd::Run {
                    name: self.commands[*i].0.clone(),
                    node: g.choose(nodes)?.clone(),
                }
            }
            Pick::Ops => {
                let kinds: Vec<(u32, OpKind)> =
                    self.op_kinds().iter().map(|k| (k.weight(), *k)).collect();
                let workers = g.range(1..=self.config.workers.max(1));
                let mut ops = Vec::new();
                for worker in 0..workers {
                    for _ in 0..g.range(1..=self.config.ops_per_worker.max(1)) {
                        let node = g.choose(&targets)?.clone();
                        let key = g.range(0..=self.config.keys.max(1) - 1);
                        let value = g.range(0..=99u64);
                        let op = match g.frequency(&kinds)? {
                            OpKind::Put => Call::Kv(KvOp::Put(key, value)),
                            OpKind::Get => Call::Kv(KvOp::Get(key)),
                            OpKind::Delete => Call::Kv(KvOp::Delete(key)),
                            OpKind::Cas => Call::Kv(KvOp::Cas {
                                key,
                                expected: g.bool(0.7).then(|| g.range(0..=99u64)),
                                new: value,
                            }),
                            // Collections' values are (almost surely) unique to the case, so
                            // that a value read names the one write it came from.
                            OpKind::Add => Call::Add(key, value * 10_000 + g.range(0..=9_999u64)),
                            OpKind::Enqueue => {
                                Call::Enqueue(value * 10_000 + g.range(0..=9_999u64))
                            }
                            OpKind::Incr => Call::Incr(key, 1 + value % 5),
                            OpKind::Read => Call::Read(key),
                            OpKind::Dequeue => Call::Dequeue,
                        };
                        ops.push(ClientOp { worker, node, op });
                    }
                }
                KvCmd::Ops { ops }
            }
        })
    }

    /// Client operations aimed at a node move to the first node (so that shrinking the network
    /// can then drop the node they no longer need).
    fn shrink_commands(&self, initial: &KvState, commands: &[KvCmd]) -> Vec<Vec<KvCmd>> {
        let Some(first) = initial.machines.first().map(|n| n.id.clone()) else {
            return Vec::new();
        };
        initial.machines[1..]
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
            KvCmd::Run { .. } => Vec::new(),
            KvCmd::Cluster(c) => c
                .shrink(&self.plan())
                .into_iter()
                .map(KvCmd::from)
                .collect(),
        }
    }

    fn precondition(&self, s: &KvState, c: &KvCmd) -> bool {
        match c {
            KvCmd::Run { name, node } => self.may_run(s, name, node),
            KvCmd::Ops { ops } => {
                let targets = self.targets(s);
                !ops.is_empty() && ops.iter().all(|o| targets.contains(&o.node))
            }
            KvCmd::Cluster(c) => c.precondition(s, &self.plan()),
        }
    }

    /// A command of the file's own with `becomes` gives its node that role (and the machines
    /// that had it the role `others`, if given): e.g. a promoted replica is the primary.
    fn next_state(&self, s: &KvState, c: &KvCmd) -> KvState {
        match c {
            KvCmd::Ops { .. } => s.clone(),
            KvCmd::Run { name, node } => match self.commands.iter().find(|(n, _)| n == name) {
                Some((_, own)) => own.effect(s, node),
                None => s.clone(),
            },
            KvCmd::Cluster(c) => s.next_state(c),
        }
    }

    /// Operations are judged together, by the linearizability invariant; a command of the
    /// scenario's own by its exit status.
    fn postcondition(&self, _: &KvState, c: &KvCmd, out: &KvOutput) -> Check {
        match (c, out) {
            (KvCmd::Run { name, node }, KvOutput::Ran(Err(e))) => {
                Err(format!("command {name} on {node} failed: {e}"))
            }
            _ => Ok(()),
        }
    }

    fn cost(&self, c: &KvCmd) -> u32 {
        match c {
            KvCmd::Ops { ops } => ops.len() as u32,
            KvCmd::Run { name, .. } => self
                .commands
                .iter()
                .find(|(n, _)| n == name)
                .map_or(2, |(_, c)| c.cost),
            // A shutdown, a boot and a restart of the service.
            KvCmd::Cluster(ClusterCmd::Upgrade { .. }) => 6,
            KvCmd::Cluster(c) => c.cost(),
        }
    }

    fn labels(&self, initial: &KvState, commands: &[KvCmd], labels: &mut Labels) {
        labels.add("nodes", initial.machines.len());
        let mut parameters = cluster::ParameterLabels::default();
        for n in &initial.machines {
            let versions = n.versions.iter().map(|(s, v)| (s.as_str(), v.as_str()));
            parameters.machine(labels, n.filesystem, versions);
        }
        parameters.finish(labels, "cluster");
        for c in commands {
            if let KvCmd::Cluster(ClusterCmd::PowerCut { machines }) = c {
                labels.add("nodes per power cut", machines.len());
            }
            if let KvCmd::Ops { ops } = c {
                let workers: BTreeSet<usize> = ops.iter().map(|o| o.worker).collect();
                labels.add("workers per batch", workers.len());
                for o in ops {
                    labels.add("operation", o.op.name());
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
        let mut out = format!("{} node(s) on {}:\n", s.machines.len(), s.subnet);
        for n in &s.machines {
            let parameters = parameters(n);
            if parameters.is_empty() {
                let _ = writeln!(out, "  {:<8}  {}", n.id, n.ip);
            } else {
                let _ = writeln!(out, "  {:<8}  {:<15}  {parameters}", n.id, n.ip);
            }
        }
        out
    }

    fn state_size(&self, s: &KvState) -> Option<String> {
        Some(format!("{} nodes", s.machines.len()))
    }

    /// The cluster layer's summary, and with roles each role's machines (a command of the
    /// file's own may move them).
    fn summarize_state(&self, s: &KvState) -> String {
        let mut out = s.summary();
        for (role, _) in &self.roles {
            let of: Vec<&str> = s
                .machines
                .iter()
                .filter(|m| m.role == *role)
                .map(|m| m.id.as_str())
                .collect();
            let _ = write!(out, "; {role}: {}", of.join(" "));
        }
        out
    }

    fn command_name(&self, c: &KvCmd) -> String {
        match c {
            KvCmd::Ops { .. } => "Ops".into(),
            KvCmd::Run { name, .. } => name.clone(),
            KvCmd::Cluster(c) => c.name().into(),
        }
    }

    fn describe_command(&self, c: &KvCmd) -> String {
        match c {
            KvCmd::Run { name, node } => format!("Run({name} @{node})"),
            KvCmd::Ops { ops } => {
                let parts: Vec<String> = ops
                    .iter()
                    .map(|o| format!("w{} {:?} @{}", o.worker, o.op, o.node))
                    .collect();
                format!("Ops[{}]", parts.join("; "))
            }
            KvCmd::Cluster(c) => c.describe(),
        }
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
    let memory = Range {
        min: memory_mb,
        max: memory_mb,
    };
    let domain = MachineDomain {
        role: String::new(),
        count: memory,
        memory_mb: memory,
        kernels: Vec::new(),
        setup: Vec::new(),
        filesystem: Vec::new(),
        versions: BTreeMap::new(),
        lose_unsynced: false,
    };
    state.network_spec(&[domain], &KvService::services(service))
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
    let ids: Vec<&str> = state.machines.iter().map(|n| n.id.as_str()).collect();
    for r in net.boot(&ids) {
        r?;
    }
    Ok(net)
}

/// Applies an infrastructure command to the machines of a store's network; `state` is the
/// model state before it. A `Restart` only boots the machine, an `Upgrade` of a running node
/// shuts it down, installs the version of `service` and boots it: starting the store's service
/// again is the store's part (see [`restarts_service`]).
pub fn apply_fault(
    net: &dyn fleetcheck_fabric::Network,
    state: &KvState,
    service: Option<&KvService>,
    command: &ClusterCmd,
) -> Result<(), Abort> {
    // Nodes run no setup commands: a boot that fails is the infrastructure's.
    command
        .apply(net, state, &KvService::services(service))?
        .map_err(Abort::new)
}

/// The node whose service the store must start again after `command` (applied by
/// [`apply_fault`] in `state`): a restarted one, or an upgraded one that was running.
pub fn restarts_service<'a>(state: &KvState, command: &'a ClusterCmd) -> Option<&'a str> {
    match command {
        ClusterCmd::Restart { machine } => Some(machine),
        ClusterCmd::Upgrade { machine, .. }
            if state.machine(machine).is_some_and(|n| n.running) =>
        {
            Some(machine)
        }
        _ => None,
    }
}

/// The node that shuts down gracefully in `command` (applied in `state`) while it runs: a
/// `Shutdown`, or the shutdown an `Upgrade` of a running node begins with; not a crash.
pub fn shuts_down<'a>(state: &KvState, command: &'a ClusterCmd) -> Option<&'a str> {
    match command {
        ClusterCmd::Shutdown { machine } | ClusterCmd::Upgrade { machine, .. }
            if state.machine(machine).is_some_and(|n| n.awake()) =>
        {
            Some(machine)
        }
        _ => None,
    }
}

/// The machines of `state` client operations may go to: those awake, of role `route` if
/// one is given (`[client] route`).
pub fn routed(state: &KvState, route: Option<&str>) -> Vec<String> {
    state
        .machines
        .iter()
        .filter(|m| m.awake() && route.is_none_or(|r| r == m.role))
        .map(|m| m.id.clone())
        .collect()
}

/// How long a final read of a collection workload is retried (after every fault is healed)
/// before the case fails: the system did not recover.
pub const FINAL_READ_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

/// How a store runs on (or beside) a network: the part that differs between etcd, Redis and
/// the in-memory stores.
pub trait Store: Send + Sync {
    /// The live cluster of one case.
    type Cluster: Send + Sync;

    /// Builds and starts the cluster of `state` (every node up) and waits until it serves.
    fn start(&self, state: &KvState) -> Result<Self::Cluster, Abort>;
    /// Runs one client operation of the kv workload against `node`.
    fn op(&self, cluster: &Self::Cluster, node: &str, op: &Op) -> Outcome<Ret>;
    /// Runs one client operation of its workload against `node`: the kv workload's through
    /// [`Store::op`]; a store of another workload says how it runs the others.
    fn call(&self, cluster: &Self::Cluster, node: &str, call: &Call) -> Outcome<Answer> {
        match call {
            Call::Kv(op) => match self.op(cluster, node, op) {
                Outcome::Ok(ret) => Outcome::Ok(Answer::Kv(ret)),
                Outcome::Fail => Outcome::Fail,
                Outcome::Unknown => Outcome::Unknown,
            },
            _ => Outcome::Fail,
        }
    }
    /// Its workload (the kv workload, unless a scenario file chose another).
    fn workload(&self) -> Workload {
        Workload::Kv
    }
    /// The order its queue promises (`[kv] ordered`).
    fn ordered(&self) -> QueueOrder {
        QueueOrder::Any
    }
    /// The node a final read goes to in `state` (every fault healed): the first that is up.
    fn reader(&self, state: &KvState) -> Option<String> {
        state.awake().into_iter().next()
    }
    /// Called before each batch of operations.
    fn before_batch(&self, _cluster: &Self::Cluster) {}
    /// Runs the scenario's own command `name` inside `node`: `Ok(Err(why))` when it failed
    /// (the system's behaviour, for the postcondition). The default: stores have none.
    fn run(
        &self,
        _cluster: &Self::Cluster,
        _state: &KvState,
        name: &str,
        _node: &str,
    ) -> Result<Result<(), String>, Abort> {
        Err(Abort::new(format!("this store has no command {name}")))
    }
    /// Whether the store checks the end of a case ([`Store::finish`] does something).
    fn finishes(&self) -> bool {
        false
    }
    /// The store's checks at the end of a case that passed every step (a scenario file's
    /// eventually-checks, once every fault is healed), and the state it leaves (for the heal
    /// before teardown). The default checks nothing.
    fn finish(&self, _cluster: &Self::Cluster, state: &KvState) -> Result<(Check, KvState), Abort> {
        Ok((Ok(()), state.clone()))
    }
    /// The store's own checks after every step (a scenario file's invariants); the default
    /// has none.
    fn invariants(&self, _cluster: &Self::Cluster, _state: &KvState) -> Result<Check, Abort> {
        Ok(Ok(()))
    }
    /// Called after each batch: whether the store's own machinery still works (e.g. a client
    /// program that answered outside its protocol); `Err` aborts the case.
    fn after_batch(&self, _cluster: &Self::Cluster) -> Result<(), Abort> {
        Ok(())
    }
    /// Applies an infrastructure command.
    fn fault(
        &self,
        cluster: &Self::Cluster,
        state: &KvState,
        command: &ClusterCmd,
    ) -> Result<(), Abort>;
    /// Undoes every fault in force in `state` (resumes paused nodes, heals the network) before
    /// the cluster stops. By default through [`Store::fault`].
    fn heal(&self, cluster: &Self::Cluster, state: &KvState) -> Result<(), Abort> {
        let mut state = state.clone();
        for command in state.heal_commands() {
            self.fault(cluster, &state, &command)?;
            state = state.next_state(&command);
        }
        Ok(())
    }
    /// Stops and removes the cluster.
    fn stop(&self, cluster: Self::Cluster) -> Result<(), Abort>;
    /// The machines of `cluster`, for reports (their logs and disks); `None` for a store that
    /// runs on none.
    fn network<'a>(
        &self,
        _cluster: &'a Self::Cluster,
    ) -> Option<&'a dyn fleetcheck_fabric::Network> {
        None
    }
    /// Files inside machine `node` whose ends a report keeps beside its `*.log` (a scenario
    /// file's `[services.<name>] logs`); the default: none.
    fn log_files(&self, _cluster: &Self::Cluster, _node: &str) -> Vec<String> {
        Vec::new()
    }
}

/// One case's live cluster and the history of its client operations.
#[derive(Debug)]
pub struct KvInstance<C> {
    cluster: C,
    /// Time zero of the history's timestamps.
    origin: Instant,
    recorder: Arc<Recorder<Call, Answer>>,
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
    pub fn history(&self) -> (History<Call, Answer>, Instant) {
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
    /// Its store.
    pub fn store(&self) -> &S {
        &self.store
    }

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
        let ops = match command {
            KvCmd::Ops { ops } => ops,
            KvCmd::Run { name, node } => {
                return Ok(KvOutput::Ran(self.store.run(
                    &inst.cluster,
                    state,
                    name,
                    node,
                )?));
            }
            KvCmd::Cluster(c) => {
                self.store.fault(&inst.cluster, state, c)?;
                inst.state = state.next_state(c);
                match c {
                    ClusterCmd::Partition { groups } => inst.cut_off = state.minority(groups),
                    ClusterCmd::Heal => inst.cut_off.clear(),
                    _ => {}
                }
                return Ok(KvOutput::Done);
            }
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
                            let outcome = self.store.call(cluster, &o.node, &o.op);
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
        self.store.after_batch(&inst.cluster)?;
        Ok(KvOutput::Ops(results.into_iter().map(|(_, r)| r).collect()))
    }

    /// The store's own checks (a scenario file's invariants), then the history so far must
    /// be linearizable.
    fn invariant(&self, inst: &mut Self::Instance, state: &KvState) -> Result<Check, Abort> {
        if let Err(failed) = self.store.invariants(&inst.cluster, state)? {
            return Ok(Err(failed));
        }
        let recorded = inst.recorder.history();
        if recorded.is_empty() {
            return Ok(Ok(()));
        }
        let workload = self.store.workload();
        if workload != Workload::Kv {
            return Ok(workload.check(&recorded, false, self.store.ordered()));
        }
        // Every operation is the kv workload's: indices are the recorded ones.
        let history: History<Op, Ret> = workload::kv_history(&recorded);
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

    /// The store's end of a case (healing, eventually-checks); then, for a collection
    /// workload, its final reads on a node clients may use, each retried until it is answered
    /// (at most [`FINAL_READ_WITHIN`]), and the whole history judged, losses included.
    fn finish(&self, inst: &mut Self::Instance, _: &KvState) -> Result<Check, Abort> {
        let (check, after) = self.store.finish(&inst.cluster, &inst.state)?;
        inst.state = after;
        let workload = self.store.workload();
        if check.is_err() || !workload.reads_at_the_end() {
            return Ok(check);
        }
        let calls = workload.final_calls(&inst.recorder.history());
        let Some(node) = self.store.reader(&inst.state) else {
            return Err(Abort::new(
                "no node clients may use is up for the final read",
            ));
        };
        for call in calls {
            let deadline = Instant::now() + FINAL_READ_WITHIN;
            loop {
                let ticket = inst.recorder.invoke(0, call.clone());
                inst.nodes.lock().expect("no panics while locked").insert(
                    ticket.index(),
                    anomaly::Via {
                        node: node.clone(),
                        cut_off: false,
                    },
                );
                let outcome = self.store.call(&inst.cluster, &node, &call);
                let answered = matches!(outcome, Outcome::Ok(_));
                inst.recorder.complete(ticket, outcome);
                if answered {
                    break;
                }
                if Instant::now() >= deadline {
                    return Ok(Err(format!(
                        "the final {call:?} on {node} was not answered within {}s once every \
                         fault was healed",
                        FINAL_READ_WITHIN.as_secs()
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
        Ok(workload.check(&inst.recorder.history(), true, self.store.ordered()))
    }

    fn finishes(&self) -> bool {
        self.store.finishes() || self.store.workload().reads_at_the_end()
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

/// The scenario files behind built-in systems: `run kv --system etcd` runs
/// `examples/scenarios/etcd.toml`'s services and client under the run's own configuration.
const BUILT_IN_FILES: &[(&str, &str)] = &[(
    "etcd",
    include_str!("../../../../examples/scenarios/etcd.toml"),
)];

/// The scenario file behind built-in system `system`, if one is.
pub fn built_in_file(system: &str) -> Option<&'static str> {
    BUILT_IN_FILES
        .iter()
        .find(|(name, _)| *name == system)
        .map(|(_, text)| *text)
}

/// `config` (a `run kv` configuration) with the services, client and variables of the
/// scenario file `text`: its `[kv]`, `[machine]` and `[network]` are the run's, the versions
/// of a service the run's `[services.<name>] versions`.
pub fn with_built_in_file(config: &ScenarioConfig, text: &str) -> ScenarioConfig {
    let file = ScenarioConfig::from_toml(text).expect("a built-in scenario file is valid");
    let mut c = config.clone();
    for (name, service) in file.services {
        let versions = c
            .services
            .get(&name)
            .map(|s| s.versions.clone())
            .unwrap_or_default();
        c.services.insert(
            name,
            ServiceConfig {
                versions,
                ..service
            },
        );
    }
    c.client = file.client;
    let mut vars = file.vars;
    vars.append(&mut c.vars);
    c.vars = vars;
    c
}

/// Any of the built-in stores, chosen by name at run time.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// A built-in scenario file's (etcd's, see [`with_built_in_file`]).
    File(Box<crate::file::store::FileStore>),
    /// Redis with Sentinel on the fabric.
    Redis(redis::RedisStore),
    /// An in-memory store.
    Memory(memory::MemoryStore),
}

/// The names [`AnyStore::for_config`] knows.
pub const SYSTEMS: &[&str] = &["etcd", "redis", "memory", "memory-lossy"];

impl AnyStore {
    /// The store called `name` (see [`SYSTEMS`]) under `config`: its `[kv]` knobs and the
    /// versions of its service ([`KvService::for_system`]), its machines on `backend`.
    pub fn for_config(
        name: &str,
        backend: Arc<dyn fleetcheck_fabric::Backend>,
        config: &ScenarioConfig,
    ) -> Option<Self> {
        let service = KvService::for_system(config, name);
        if let Some(text) = built_in_file(name) {
            let config = with_built_in_file(config, text);
            return Some(AnyStore::File(Box::new(
                crate::file::store::FileStore::new(backend, &config, service),
            )));
        }
        let timeout = std::time::Duration::from_millis(config.kv.op_timeout_ms);
        Some(match name {
            "redis" => AnyStore::Redis(
                redis::RedisStore::new(backend, config.kv.memory_mb, timeout).with_service(service),
            ),
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
    /// A built-in scenario file's.
    File(crate::file::store::FileCluster),
    /// Redis'.
    Redis(redis::RedisCluster),
    /// In memory.
    Memory(memory::MemoryCluster),
}

impl AnyCluster {
    /// The machines of the cluster; `None` for the in-memory stores, which have none.
    pub fn network(&self) -> Option<&dyn fleetcheck_fabric::Network> {
        match self {
            AnyCluster::File(c) => Some(c.network()),
            AnyCluster::Redis(c) => Some(c.network()),
            AnyCluster::Memory(_) => None,
        }
    }
}

/// Runs `$body` with `$s` the store and `$c` its cluster, whichever kind they are.
macro_rules! dispatch {
    ($store:expr, $cluster:expr, |$s:ident, $c:ident| $body:expr) => {
        match ($store, $cluster) {
            (AnyStore::File($s), AnyCluster::File($c)) => $body,
            (AnyStore::Redis($s), AnyCluster::Redis($c)) => $body,
            (AnyStore::Memory($s), AnyCluster::Memory($c)) => $body,
            _ => unreachable!("a store only ever gets its own clusters"),
        }
    };
}

/// Runs `$body` with `$s` the store, whichever kind it is.
macro_rules! each {
    ($store:expr, |$s:ident| $body:expr) => {
        match $store {
            AnyStore::File($s) => $body,
            AnyStore::Redis($s) => $body,
            AnyStore::Memory($s) => $body,
        }
    };
}

impl Store for AnyStore {
    type Cluster = AnyCluster;

    fn start(&self, state: &KvState) -> Result<AnyCluster, Abort> {
        Ok(match self {
            AnyStore::File(s) => AnyCluster::File(s.start(state)?),
            AnyStore::Redis(s) => AnyCluster::Redis(s.start(state)?),
            AnyStore::Memory(s) => AnyCluster::Memory(s.start(state)?),
        })
    }

    fn op(&self, cluster: &AnyCluster, node: &str, op: &Op) -> Outcome<Ret> {
        dispatch!(self, cluster, |s, c| s.op(c, node, op))
    }

    fn call(&self, cluster: &AnyCluster, node: &str, call: &Call) -> Outcome<Answer> {
        dispatch!(self, cluster, |s, c| s.call(c, node, call))
    }

    fn workload(&self) -> Workload {
        each!(self, |s| s.workload())
    }

    fn ordered(&self) -> QueueOrder {
        each!(self, |s| s.ordered())
    }

    fn reader(&self, state: &KvState) -> Option<String> {
        each!(self, |s| s.reader(state))
    }

    fn before_batch(&self, cluster: &AnyCluster) {
        dispatch!(self, cluster, |s, c| s.before_batch(c))
    }

    fn run(
        &self,
        cluster: &AnyCluster,
        state: &KvState,
        name: &str,
        node: &str,
    ) -> Result<Result<(), String>, Abort> {
        dispatch!(self, cluster, |s, c| s.run(c, state, name, node))
    }

    fn finishes(&self) -> bool {
        each!(self, |s| s.finishes())
    }

    fn finish(&self, cluster: &AnyCluster, state: &KvState) -> Result<(Check, KvState), Abort> {
        dispatch!(self, cluster, |s, c| s.finish(c, state))
    }

    fn invariants(&self, cluster: &AnyCluster, state: &KvState) -> Result<Check, Abort> {
        dispatch!(self, cluster, |s, c| s.invariants(c, state))
    }

    fn after_batch(&self, cluster: &AnyCluster) -> Result<(), Abort> {
        dispatch!(self, cluster, |s, c| s.after_batch(c))
    }

    fn fault(
        &self,
        cluster: &AnyCluster,
        state: &KvState,
        command: &ClusterCmd,
    ) -> Result<(), Abort> {
        dispatch!(self, cluster, |s, c| s.fault(c, state, command))
    }

    fn heal(&self, cluster: &AnyCluster, state: &KvState) -> Result<(), Abort> {
        dispatch!(self, cluster, |s, c| s.heal(c, state))
    }

    fn network<'a>(&self, cluster: &'a AnyCluster) -> Option<&'a dyn fleetcheck_fabric::Network> {
        cluster.network()
    }

    fn log_files(&self, cluster: &AnyCluster, node: &str) -> Vec<String> {
        dispatch!(self, cluster, |s, c| s.log_files(c, node))
    }

    fn stop(&self, cluster: AnyCluster) -> Result<(), Abort> {
        match (self, cluster) {
            (AnyStore::File(s), AnyCluster::File(c)) => s.stop(c),
            (AnyStore::Redis(s), AnyCluster::Redis(c)) => s.stop(c),
            (AnyStore::Memory(s), AnyCluster::Memory(c)) => s.stop(c),
            _ => unreachable!("a store only ever gets its own clusters"),
        }
    }
}
