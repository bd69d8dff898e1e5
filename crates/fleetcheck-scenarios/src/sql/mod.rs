//! The `sql` scenario: PostgreSQL 15 under faults, driven by concurrent workers running
//! list-append transactions, whose history must satisfy the consistency model the scenario
//! claims (checked by the engine's [`txn::check`](fleetcheck_engine::txn::check)).
//!
//! - [`config`]: `[sql]` ([`SqlConfig`]): the isolation levels to run at ([`SqlLevel`]), the
//!   claimed model, nodes, workers, keys, sizes, timeouts, faults.
//! - this module: the model ([`SqlModel`]): the state is the cluster layer's
//!   [`ClusterState`] plus where the generator's keys and values stand ([`KeySpace`]);
//!   commands are batches of planned transactions ([`SqlCmd::Txns`], drawn with the engine's
//!   [`TxnGen`]) and the cluster layer's faults; shrinking uses the engine's transaction
//!   shrink helpers and the cluster layer's.
//! - [`session`]: one long-lived `psql` per client worker, a transaction a script.
//! - [`postgres`]: the servers on the fabric's machines and the [`postgres::SqlSystem`].
//!
//! A list is a row of `lists (k bigint primary key, v text)`: `append(k, x)` is `INSERT …
//! ON CONFLICT (k) DO UPDATE SET v = l.v || ',' || x`, a read is a `SELECT` of `v`.

pub mod config;
pub mod postgres;
pub mod session;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use fleetcheck_engine::txn::{
    drop_micro_ops, drop_transactions, merge_workers, rename_keys, renumber_workers, Key, Mop,
    PlannedTxn, Txn, TxnGen, TxnGenConfig, Value, Workload,
};
use fleetcheck_engine::{Check, Gen, Labels, Model};
use fleetcheck_fabric::Subnet;
use serde::{Deserialize, Serialize};

pub use self::config::{SqlConfig, SqlLevel};
use crate::cluster::{self, ClusterCmd, ClusterState, Machine, Plan};
use crate::config::{MachineDomain, Range, ScenarioConfig};

/// The subnet of every sql cluster.
pub const SUBNET: Subnet = Subnet {
    addr: Ipv4Addr::new(172, 16, 4, 0),
    prefix: 24,
};

/// Appends a key takes before the generator moves on to fresh keys (lists stay short).
pub const WRITES_PER_KEY: Value = 16;

/// Where the generator stands: the first key of the hot window, and the highest value
/// appended to each key so far (new values go above it, so values stay unique per key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySpace {
    /// The first hot key.
    pub base: Key,
    /// The highest value appended per key.
    pub written: BTreeMap<Key, Value>,
}

/// The model state: the cluster (the first machine is the primary, the second, if any, its
/// streaming replica) and the generator's key space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlState {
    /// The machines and the faults in force.
    pub cluster: ClusterState,
    /// Keys and values used so far.
    #[serde(default)]
    pub keys: KeySpace,
}

impl SqlState {
    /// The primary's id.
    pub fn primary(&self) -> Option<&Machine> {
        self.cluster.machines.first()
    }
}

/// A command of the sql scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", content = "args")]
pub enum SqlCmd {
    /// A batch of transactions at one isolation level, run on the primary: workers run
    /// concurrently, each its own transactions in order.
    Txns {
        /// `BEGIN ISOLATION LEVEL …`.
        isolation: SqlLevel,
        /// The transactions, each with its worker.
        txns: Vec<PlannedTxn>,
    },
    /// An infrastructure command of the cluster layer. A `Restart` starts PostgreSQL again
    /// (crash recovery from its data directory).
    #[serde(untagged)]
    Cluster(ClusterCmd),
}

impl From<ClusterCmd> for SqlCmd {
    fn from(c: ClusterCmd) -> Self {
        SqlCmd::Cluster(c)
    }
}

/// Under read committed each statement sees a fresh snapshot, so a second read of a key in one
/// transaction may see other transactions' commits; the checker's internal-consistency check
/// assumes it does not. At that level a transaction therefore reads each key at most once.
pub fn fit_level(level: SqlLevel, txn: Txn) -> Txn {
    if level != SqlLevel::ReadCommitted {
        return txn;
    }
    let mut read: BTreeSet<Key> = BTreeSet::new();
    Txn::new(
        txn.0
            .into_iter()
            .filter(|m| !m.is_read() || read.insert(m.key()))
            .collect(),
    )
}

/// `w0 [r 0 [], a 1 3]`: a planned transaction for people.
pub fn describe_txn(p: &PlannedTxn) -> String {
    format!("w{} {}", p.worker, p.txn)
}

/// The sql model.
#[derive(Debug, Clone, Default)]
pub struct SqlModel {
    /// Its knobs.
    pub config: SqlConfig,
    /// The file systems of the nodes' data directories, the first preferred (`[machine]
    /// filesystem`).
    pub filesystems: Vec<fleetcheck_fabric::FileSystem>,
}

impl SqlModel {
    /// The model under `config`: its `[sql]` knobs and the file systems of `[machine]`.
    pub fn new(config: &ScenarioConfig) -> Self {
        Self {
            config: config.sql.clone(),
            filesystems: config.machine.filesystem.clone(),
        }
    }

    /// The domain every node is drawn from.
    pub fn domain(&self) -> MachineDomain {
        let n = self.config.nodes;
        let memory = self.config.memory_mb;
        MachineDomain {
            role: String::new(),
            count: Range { min: n, max: n },
            memory_mb: Range {
                min: memory,
                max: memory,
            },
            kernels: Vec::new(),
            setup: Vec::new(),
            filesystem: self.filesystems.clone(),
            versions: BTreeMap::new(),
            // No power cuts yet: see the module docs of `postgres`.
            lose_unsynced: false,
        }
    }

    /// What the cluster layer generates: the faults of `[sql] faults`, one partition at a
    /// time.
    pub fn plan(&self) -> Plan {
        Plan {
            faults: self.config.faults.clone(),
            versions: BTreeMap::new(),
            network_faults_need_a_machine_up: false,
            partitions_stack: false,
            leader: None,
        }
    }

    fn txn_gen(&self) -> TxnGen {
        TxnGen::new(TxnGenConfig {
            workload: Workload::ListAppend,
            active_keys: self.config.keys,
            max_writes_per_key: WRITES_PER_KEY,
            min_len: 1,
            max_len: self.config.max_mops,
            read_ratio: 0.5,
        })
    }

    /// A batch: a fresh [`TxnGen`] draws the transactions over keys `0..`, which move to the
    /// state's hot window and values above those already appended.
    fn batch(&self, s: &SqlState, g: &mut Gen) -> Option<SqlCmd> {
        let isolation = *g.choose(&self.config.isolation)?;
        let workers = g.range(1..=self.config.workers.max(1));
        let mut tg = self.txn_gen();
        let mut txns = Vec::new();
        for worker in 0..workers {
            for _ in 0..g.range(1..=self.config.txns_per_worker.max(1)) {
                let drawn = tg.next_txn(g);
                let moved = drawn
                    .0
                    .iter()
                    .map(|m| {
                        let key = s.keys.base + m.key();
                        let above = s.keys.written.get(&key).copied().unwrap_or(0);
                        match m {
                            Mop::Append { value, .. } => Mop::append(key, value + above),
                            _ => Mop::read(key, &[]),
                        }
                    })
                    .collect();
                txns.push(PlannedTxn {
                    worker,
                    txn: fit_level(isolation, Txn::new(moved)),
                });
            }
        }
        Some(SqlCmd::Txns { isolation, txns })
    }
}

/// Each variant of `txns` with a transaction joined to its worker's next one (one transaction
/// instead of two, the same micro-operations in the same order): a cycle through both of them
/// and another worker's transaction may then close with two transactions.
pub fn join_transactions(level: SqlLevel, txns: &[PlannedTxn]) -> Vec<Vec<PlannedTxn>> {
    let mut out = Vec::new();
    for (i, p) in txns.iter().enumerate() {
        let Some(j) = (i + 1..txns.len()).find(|&j| txns[j].worker == p.worker) else {
            continue;
        };
        let mut v = txns.to_vec();
        let mut mops = p.txn.0.clone();
        mops.extend(txns[j].txn.0.iter().cloned());
        v[i].txn = fit_level(level, Txn::new(mops));
        v.remove(j);
        out.push(v);
    }
    out
}

/// Each variant of the transactions of a batch that the engine's helpers offer, but for key
/// renames (which must see the whole case to keep values unique: see
/// [`Model::shrink_commands`]).
fn shrink_batch(level: SqlLevel, txns: &[PlannedTxn]) -> Vec<Vec<PlannedTxn>> {
    let mut out = drop_transactions(txns);
    out.extend(join_transactions(level, txns));
    out.extend(merge_workers(txns));
    out.extend(drop_micro_ops(txns));
    out.extend(renumber_workers(txns));
    out.retain(|v| !v.is_empty());
    out
}

impl Model for SqlModel {
    type State = SqlState;
    type Command = SqlCmd;
    type Output = postgres::SqlOutput;

    fn initial_state(&self, g: &mut Gen) -> SqlState {
        let count = self.config.nodes as usize;
        let mut nodes: Vec<Machine> = Vec::new();
        for ip in cluster::distinct_hosts(g, SUBNET, count) {
            let mut node = Machine::new(
                cluster::fresh_id(g, |id| nodes.iter().any(|n| n.id == id)),
                ip,
            );
            node.running = true;
            node.filesystem = g.choose(&self.filesystems).copied();
            nodes.push(node);
        }
        SqlState {
            cluster: ClusterState::new(SUBNET, nodes),
            keys: KeySpace::default(),
        }
    }

    /// `[sql] nodes` nodes as [`crate::rules::check_members`] says, each running and not
    /// paused; no fault in force.
    fn check_initial(&self, s: &SqlState) -> Check {
        let c = &s.cluster;
        crate::rules::check_members(
            "node",
            c.subnet,
            c.machines.iter().map(|n| (n.id.as_str(), n.ip)),
            253,
        )?;
        if c.machines.len() != self.config.nodes as usize {
            return Err(format!(
                "has {} node(s), but [sql] nodes is {}",
                c.machines.len(),
                self.config.nodes
            ));
        }
        if let Some(n) = c.machines.iter().find(|n| !n.awake()) {
            return Err(format!(
                "has node {} down or paused, but every case starts with its cluster up",
                n.id
            ));
        }
        if c.network_faulty() {
            return Err("has faults in force, but every case starts with a whole network".into());
        }
        Ok(())
    }

    /// The preferred file system per node (the node count is fixed).
    fn shrink_state(&self, s: &SqlState) -> Vec<SqlState> {
        s.cluster
            .shrink(&[self.domain()])
            .into_iter()
            .map(|cluster| SqlState {
                cluster,
                keys: s.keys.clone(),
            })
            .collect()
    }

    fn command(&self, s: &SqlState, g: &mut Gen) -> Option<SqlCmd> {
        enum Pick {
            Txns,
            Cluster(cluster::Kind),
        }
        let mut kinds: Vec<(u32, Pick)> = Vec::new();
        if s.primary().is_some_and(Machine::awake) {
            kinds.push((6, Pick::Txns));
        }
        let plan = self.plan();
        kinds.extend(
            s.cluster
                .fault_kinds(&plan)
                .into_iter()
                .map(|(w, k)| (w, Pick::Cluster(k))),
        );
        match g.frequency(&kinds)? {
            Pick::Txns => self.batch(s, g),
            Pick::Cluster(kind) => s.cluster.draw(*kind, &plan, g).map(SqlCmd::Cluster),
        }
    }

    /// Keys renamed to fewer keys across the whole case ([`rename_keys`] on all transactions
    /// at once, so values stay unique per key).
    fn shrink_commands(&self, _initial: &SqlState, commands: &[SqlCmd]) -> Vec<Vec<SqlCmd>> {
        let all: Vec<PlannedTxn> = commands
            .iter()
            .flat_map(|c| match c {
                SqlCmd::Txns { txns, .. } => txns.clone(),
                SqlCmd::Cluster(_) => Vec::new(),
            })
            .collect();
        rename_keys(&all)
            .into_iter()
            .map(|renamed| {
                let mut rest = renamed.into_iter();
                commands
                    .iter()
                    .map(|c| match c {
                        // A rename may give a transaction two reads of one key.
                        SqlCmd::Txns { isolation, txns } => SqlCmd::Txns {
                            isolation: *isolation,
                            txns: rest
                                .by_ref()
                                .take(txns.len())
                                .map(|p| PlannedTxn {
                                    worker: p.worker,
                                    txn: fit_level(*isolation, p.txn),
                                })
                                .collect(),
                        },
                        other => other.clone(),
                    })
                    .collect()
            })
            .collect()
    }

    /// A batch: an earlier (preferred) isolation level, then the engine's helpers: one
    /// transaction fewer, two workers merged, one micro-operation fewer, workers renumbered.
    /// Faults: the cluster layer's.
    fn shrink_command(&self, c: &SqlCmd) -> Vec<SqlCmd> {
        match c {
            SqlCmd::Txns { isolation, txns } => {
                let mut out: Vec<SqlCmd> =
                    cluster::earlier(&self.config.isolation, |l| l == isolation)
                        .iter()
                        .map(|&level| SqlCmd::Txns {
                            isolation: level,
                            txns: txns
                                .iter()
                                .map(|p| PlannedTxn {
                                    worker: p.worker,
                                    txn: fit_level(level, p.txn.clone()),
                                })
                                .collect(),
                        })
                        .collect();
                out.extend(
                    shrink_batch(*isolation, txns)
                        .into_iter()
                        .map(|txns| SqlCmd::Txns {
                            isolation: *isolation,
                            txns,
                        }),
                );
                out
            }
            SqlCmd::Cluster(c) => c
                .shrink(&self.plan())
                .into_iter()
                .map(SqlCmd::from)
                .collect(),
        }
    }

    fn precondition(&self, s: &SqlState, c: &SqlCmd) -> bool {
        match c {
            SqlCmd::Txns { txns, .. } => {
                !txns.is_empty()
                    && txns
                        .iter()
                        .all(|p| !p.txn.0.is_empty() && p.worker < self.config.workers)
                    && s.primary().is_some_and(Machine::awake)
            }
            SqlCmd::Cluster(c) => c.precondition(&s.cluster, &self.plan()),
        }
    }

    fn next_state(&self, s: &SqlState, c: &SqlCmd) -> SqlState {
        match c {
            SqlCmd::Txns { txns, .. } => {
                let mut next = s.clone();
                for m in txns.iter().flat_map(|p| p.txn.0.iter()) {
                    if let Some(v) = m.written() {
                        let w = next.keys.written.entry(m.key()).or_insert(0);
                        *w = (*w).max(v);
                    }
                }
                let hot = s.keys.base..s.keys.base + self.config.keys as Key;
                let full = next
                    .keys
                    .written
                    .range(hot)
                    .any(|(_, &v)| v >= WRITES_PER_KEY);
                if full {
                    next.keys.base = next.keys.written.keys().next_back().map_or(0, |k| k + 1);
                }
                next
            }
            SqlCmd::Cluster(c) => SqlState {
                cluster: s.cluster.next_state(c),
                keys: s.keys.clone(),
            },
        }
    }

    /// Transactions are judged together, by the isolation invariant.
    fn postcondition(&self, _: &SqlState, _: &SqlCmd, _: &postgres::SqlOutput) -> Check {
        Ok(())
    }

    fn cost(&self, c: &SqlCmd) -> u32 {
        match c {
            SqlCmd::Txns { txns, .. } => txns.len() as u32,
            // A boot and PostgreSQL's crash recovery.
            SqlCmd::Cluster(ClusterCmd::Restart { .. }) => 4,
            SqlCmd::Cluster(c) => c.cost(),
        }
    }

    fn labels(&self, initial: &SqlState, commands: &[SqlCmd], labels: &mut Labels) {
        labels.add("nodes", initial.cluster.machines.len());
        for n in &initial.cluster.machines {
            if let Some(fs) = n.filesystem {
                labels.add("filesystem", fs);
            }
        }
        for c in commands {
            if let SqlCmd::Txns { isolation, txns } = c {
                let workers: BTreeSet<usize> = txns.iter().map(|p| p.worker).collect();
                labels.add("workers per batch", workers.len());
                labels.add("isolation", isolation);
                labels.add("transactions per batch", txns.len());
            }
        }
        let faults = commands
            .iter()
            .filter(|c| matches!(c, SqlCmd::Cluster(_)))
            .count();
        labels.add("faults per case", faults);
    }

    fn describe_state(&self, s: &SqlState) -> String {
        let c = &s.cluster;
        let mut out = format!("{} node(s) on {}:\n", c.machines.len(), c.subnet);
        for (i, n) in c.machines.iter().enumerate() {
            let role = if i == 0 { "primary" } else { "replica" };
            let fs = n
                .filesystem
                .map(|f| format!(", data on {f}"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {:<8}  {:<15}  {role}{fs}", n.id, n.ip);
        }
        out
    }

    fn state_size(&self, s: &SqlState) -> Option<String> {
        let n = s.cluster.machines.len();
        Some(format!("{n} node{}", if n == 1 { "" } else { "s" }))
    }

    fn summarize_state(&self, s: &SqlState) -> String {
        let c = &s.cluster;
        let list = |ids: Vec<String>| {
            if ids.is_empty() {
                "-".to_string()
            } else {
                ids.join(" ")
            }
        };
        let mut out = format!("up: {}; down: {}", list(c.awake()), list(c.down()));
        let paused = c.paused();
        if !paused.is_empty() {
            let _ = write!(out, "; paused: {}", paused.join(" "));
        }
        if c.network_faulty() {
            out.push_str("; network faults in force");
        }
        out
    }

    fn command_name(&self, c: &SqlCmd) -> String {
        match c {
            SqlCmd::Txns { .. } => "Txns".into(),
            SqlCmd::Cluster(c) => c.name().into(),
        }
    }

    fn describe_command(&self, c: &SqlCmd) -> String {
        match c {
            SqlCmd::Txns { isolation, txns } => {
                let parts: Vec<String> = txns.iter().map(describe_txn).collect();
                format!("Txns[{isolation}: {}]", parts.join("; "))
            }
            SqlCmd::Cluster(c) => c.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_values_unique_across_a_case() {
        let model = SqlModel::default();
        let mut g = Gen::new(5, 20);
        let mut s = model.initial_state(&mut g);
        let mut seen = BTreeSet::new();
        let mut batches = 0;
        for _ in 0..200 {
            let Some(c) = model.command(&s, &mut g) else {
                continue;
            };
            if !model.precondition(&s, &c) {
                continue;
            }
            if let SqlCmd::Txns { txns, .. } = &c {
                batches += 1;
                for m in txns.iter().flat_map(|p| p.txn.0.iter()) {
                    if let Some(v) = m.written() {
                        assert!(seen.insert((m.key(), v)), "{m} twice");
                    }
                }
            }
            s = model.next_state(&s, &c);
        }
        assert!(batches > 20);
        assert!(s.keys.base > 0, "fresh keys replace full ones");
    }

    #[test]
    fn read_committed_reads_a_key_once() {
        let t = Txn::new(vec![
            Mop::read(1, &[]),
            Mop::append(1, 2),
            Mop::read(1, &[]),
        ]);
        assert_eq!(fit_level(SqlLevel::ReadCommitted, t.clone()).0.len(), 2);
        assert_eq!(fit_level(SqlLevel::Serializable, t).0.len(), 3);
    }

    #[test]
    fn batches_shrink_to_preferred_levels_and_fewer_transactions() {
        let config = ScenarioConfig::from_toml(
            "[sql]\nisolation = [\"read committed\", \"serializable\"]\n",
        )
        .unwrap();
        let model = SqlModel::new(&config);
        let txn = |worker, mops| PlannedTxn {
            worker,
            txn: Txn::new(mops),
        };
        let batch = SqlCmd::Txns {
            isolation: SqlLevel::Serializable,
            txns: vec![
                txn(
                    0,
                    vec![Mop::read(0, &[]), Mop::read(0, &[]), Mop::append(1, 1)],
                ),
                txn(1, vec![Mop::append(0, 1)]),
            ],
        };
        let out = model.shrink_command(&batch);
        // First the preferred level, its transactions fitted to it (one read of key 0).
        let SqlCmd::Txns { isolation, txns } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(*isolation, SqlLevel::ReadCommitted);
        assert_eq!(txns[0].txn.0.len(), 2);
        // Then one transaction fewer, workers merged, micro-operations dropped.
        let sizes: Vec<usize> = out[1..]
            .iter()
            .map(|c| match c {
                SqlCmd::Txns { txns, .. } => txns.len(),
                SqlCmd::Cluster(_) => 0,
            })
            .collect();
        assert_eq!(&sizes[..2], [1, 1]);
        let joined = join_transactions(
            SqlLevel::ReadCommitted,
            &[
                txn(0, vec![Mop::read(0, &[])]),
                txn(1, vec![Mop::append(0, 1)]),
                txn(0, vec![Mop::read(0, &[]), Mop::append(1, 1)]),
            ],
        );
        assert_eq!(joined.len(), 1);
        assert_eq!(
            joined[0][0].txn,
            Txn::new(vec![Mop::read(0, &[]), Mop::append(1, 1)])
        );
        assert_eq!(joined[0].len(), 2);
        assert!(out
            .iter()
            .all(|c| model.precondition(&model.initial_state(&mut Gen::new(1, 10)), c)));
        assert_eq!(
            model.config.claimed(),
            fleetcheck_engine::txn::Isolation::ReadCommitted
        );
    }

    #[test]
    fn key_renames_span_the_case() {
        let model = SqlModel::default();
        let batch = |key, value| SqlCmd::Txns {
            isolation: SqlLevel::Serializable,
            txns: vec![PlannedTxn {
                worker: 0,
                txn: Txn::new(vec![Mop::append(key, value)]),
            }],
        };
        let s = model.initial_state(&mut Gen::new(1, 10));
        let out = model.shrink_commands(&s, &[batch(0, 1), batch(1, 1)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0][1], batch(0, 2));
        // Under read committed a rename leaves one read of the key.
        let reads = SqlCmd::Txns {
            isolation: SqlLevel::ReadCommitted,
            txns: vec![PlannedTxn {
                worker: 0,
                txn: Txn::new(vec![Mop::read(0, &[]), Mop::read(1, &[])]),
            }],
        };
        let out = model.shrink_commands(&s, &[reads]);
        let SqlCmd::Txns { txns, .. } = &out[0][0] else {
            panic!("{out:?}")
        };
        assert_eq!(txns[0].txn, Txn::new(vec![Mop::read(0, &[])]));
    }
}
