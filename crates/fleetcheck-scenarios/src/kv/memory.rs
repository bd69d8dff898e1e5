//! In-memory stores for the fake arm of the kv scenario: a correct one, and one that loses
//! acknowledged writes the way asynchronous replication with failover does.

use std::collections::BTreeMap;
use std::sync::Mutex;

use fleetcheck_engine::history::Outcome;
use fleetcheck_engine::{Abort, KvOp, KvRet};

use super::{ClusterCmd, KvState, Op, Ret, Store};

/// An in-memory store.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryStore {
    /// The planted bug: writes reach the replicas only at the start of the next batch of
    /// operations, and a crashed primary's successor starts from its own (stale) copy.
    pub lose_unreplicated_writes: bool,
    /// For tests of the infrastructure: healing the faults before teardown fails, as it would
    /// if the switch's firewall could not be changed.
    pub heal_fails: bool,
}

/// The live in-memory cluster.
#[derive(Debug)]
pub struct MemoryCluster {
    inner: Mutex<Nodes>,
}

#[derive(Debug)]
struct Nodes {
    /// Node ids in order, with whether they run and their copy of the data (kept on their
    /// disk across crashes).
    nodes: Vec<(String, bool, BTreeMap<u64, u64>)>,
    /// The correct store's single durable copy.
    shared: BTreeMap<u64, u64>,
}

impl Nodes {
    /// The primary: the first running node.
    fn primary(&mut self) -> Option<&mut (String, bool, BTreeMap<u64, u64>)> {
        self.nodes.iter_mut().find(|n| n.1)
    }

    fn replicate(&mut self) {
        let Some(data) = self.primary().map(|p| p.2.clone()) else {
            return;
        };
        for n in self.nodes.iter_mut().filter(|n| n.1) {
            n.2 = data.clone();
        }
    }
}

fn apply(data: &mut BTreeMap<u64, u64>, op: &Op) -> Ret {
    match op {
        KvOp::Put(k, v) => {
            data.insert(*k, *v);
            KvRet::Done
        }
        KvOp::Get(k) => KvRet::Value(data.get(k).copied()),
        KvOp::Delete(k) => {
            data.remove(k);
            KvRet::Done
        }
        KvOp::Cas { key, expected, new } => {
            let swap = data.get(key) == expected.as_ref();
            if swap {
                data.insert(*key, *new);
            }
            KvRet::Swapped(swap)
        }
    }
}

impl Store for MemoryStore {
    type Cluster = MemoryCluster;

    fn start(&self, state: &KvState) -> Result<MemoryCluster, Abort> {
        let nodes = state
            .machines
            .iter()
            .map(|n| (n.id.clone(), true, BTreeMap::new()))
            .collect();
        Ok(MemoryCluster {
            inner: Mutex::new(Nodes {
                nodes,
                shared: BTreeMap::new(),
            }),
        })
    }

    fn op(&self, cluster: &MemoryCluster, _node: &str, op: &Op) -> Outcome<Ret> {
        let mut nodes = cluster.inner.lock().expect("no panics while locked");
        if !self.lose_unreplicated_writes {
            // One durable copy for all: linearizable by construction.
            return Outcome::Ok(apply(&mut nodes.shared, op));
        }
        // Clients follow the primary (as a sentinel-aware client does).
        let Some(primary) = nodes.primary() else {
            return Outcome::Fail;
        };
        Outcome::Ok(apply(&mut primary.2, op))
    }

    fn before_batch(&self, cluster: &MemoryCluster) {
        if self.lose_unreplicated_writes {
            cluster.sync();
        }
    }

    /// Crash and Restart change which nodes run; an Upgrade of a running node is a crash and a
    /// restart (no program runs here, so the version itself changes nothing), of a crashed one
    /// nothing.
    fn fault(
        &self,
        cluster: &MemoryCluster,
        state: &KvState,
        command: &ClusterCmd,
    ) -> Result<(), Abort> {
        if let ClusterCmd::Upgrade { machine, .. } = command {
            if state.machine(machine).is_some_and(|n| n.running) {
                let machine = machine.clone();
                let crash = ClusterCmd::Crash {
                    machine: machine.clone(),
                };
                self.fault(cluster, state, &crash)?;
                return self.fault(cluster, state, &ClusterCmd::Restart { machine });
            }
            return Ok(());
        }
        let mut nodes = cluster.inner.lock().expect("no panics while locked");
        match command {
            ClusterCmd::Crash { machine } => {
                if let Some(n) = nodes.nodes.iter_mut().find(|n| &n.0 == machine) {
                    n.1 = false;
                }
            }
            ClusterCmd::Restart { machine } => {
                // A replica again if a primary runs; otherwise it serves from its own disk.
                let primary = nodes.primary().map(|p| p.2.clone());
                if let Some(n) = nodes.nodes.iter_mut().find(|n| &n.0 == machine) {
                    n.1 = true;
                    if let Some(data) = primary {
                        n.2 = data;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn heal(&self, _: &MemoryCluster, state: &KvState) -> Result<(), Abort> {
        if self.heal_fails && !state.heal_commands().is_empty() {
            return Err(Abort::new("the planted heal failure"));
        }
        Ok(())
    }

    fn stop(&self, _: MemoryCluster) -> Result<(), Abort> {
        Ok(())
    }
}

impl MemoryCluster {
    /// Replicates pending writes (the lossy store does this at the start of every batch).
    pub fn sync(&self) {
        self.inner
            .lock()
            .expect("no panics while locked")
            .replicate();
    }
}
