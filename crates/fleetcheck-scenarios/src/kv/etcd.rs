//! etcd 3.4 clusters (Debian's `etcd-server`) on the fabric: one member per node, clients
//! through `etcdctl` run inside the node they talk to. Members start as plain `etcd`, so a
//! node with a version of service `etcd` (`[services.etcd]`) runs that version's program.
//!
//! Timers: heartbeat 10 ms, election timeout 100 ms (a leader failover takes about 0.4 s
//! here instead of 1–1.7 s with the defaults), so a case with faults costs seconds.

use std::sync::Arc;
use std::time::Duration;

use fleetcheck_engine::history::Outcome;
use fleetcheck_engine::{Abort, KvOp, KvRet};
use fleetcheck_fabric::{Backend, Network};

use super::service;
use super::{ClusterCmd, KvService, KvState, Op, Ret, Store};

/// How long a cluster may take to take its first write.
const READY: Duration = Duration::from_secs(20);

/// The cluster took a write (of a key outside those clients use). The command may take a
/// while: a write is fsynced, which on btrfs in a VM under TCG takes hundreds of ms.
const WRITE_PROBE: &str = "etcdctl --endpoints=127.0.0.1:2379 --dial-timeout=100ms \
     --command-timeout=2s put fleetcheck-ready 1";

/// Something listens on the client port (2379 = 0x094B) of this machine's network namespace.
const LISTENING_PROBE: &str =
    "awk '$2 ~ /:094B$/ && $4 == \"0A\" { found = 1 } END { exit !found }' /proc/net/tcp";

/// etcd on a backend with disks (netns).
#[derive(Debug, Clone)]
pub struct EtcdStore {
    backend: Arc<dyn Backend>,
    memory_mb: u32,
    op_timeout: Duration,
    service: Option<KvService>,
}

impl EtcdStore {
    /// A store on `backend`, nodes of `memory_mb`, client operations timing out after
    /// `op_timeout`; nodes run the host's `etcd` (see [`EtcdStore::with_service`]).
    pub fn new(backend: Arc<dyn Backend>, memory_mb: u32, op_timeout: Duration) -> Self {
        Self {
            backend,
            memory_mb,
            op_timeout,
            service: None,
        }
    }

    /// The same store, the versions of its nodes (`Node::version`) those of `service`.
    pub fn with_service(self, service: Option<KvService>) -> Self {
        Self { service, ..self }
    }
}

/// A live etcd cluster.
pub struct EtcdCluster {
    net: Box<dyn Network>,
    /// `name=http://ip:2380,...` of every member.
    initial_cluster: String,
    state: KvState,
}

impl EtcdCluster {
    /// The machines of the cluster (for reports: their logs and disks).
    pub fn network(&self) -> &dyn Network {
        self.net.as_ref()
    }
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("initial_cluster", &self.initial_cluster)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    fn ctl(&self) -> String {
        let ms = self.op_timeout.as_millis();
        format!("etcdctl --endpoints=127.0.0.1:2379 --dial-timeout={ms}ms --command-timeout={ms}ms")
    }

    /// Starts the member on `node` (in the background, its log on its disk).
    fn launch(&self, c: &EtcdCluster, node: &str) -> Result<(), Abort> {
        let ip = c
            .state
            .machine(node)
            .ok_or_else(|| Abort::new(format!("no node {node}")))?
            .ip;
        let disk = service::disk(c.net.as_ref(), self.backend.name(), node, "etcd")?;
        let d = disk.display();
        let cmd = format!(
            "etcd --name {node} --data-dir {d}/etcd \
             --listen-client-urls http://{ip}:2379,http://127.0.0.1:2379 \
             --advertise-client-urls http://{ip}:2379 \
             --listen-peer-urls http://{ip}:2380 --initial-advertise-peer-urls http://{ip}:2380 \
             --initial-cluster {cl} --initial-cluster-state new \
             --initial-cluster-token fleetcheck \
             --heartbeat-interval 10 --election-timeout 100 >>{d}/etcd.log 2>&1 &",
            cl = c.initial_cluster
        );
        service::start(c.net.as_ref(), node, "etcd", cmd)
    }

    /// Waits (with a deadline) until `probe`, a shell condition, holds on `node`.
    fn wait(&self, c: &EtcdCluster, node: &str, probe: &str) -> Result<(), Abort> {
        if service::probe(c.net.as_ref(), node, probe, READY) {
            return Ok(());
        }
        let log = service::last_lines(c.net.as_ref(), node, "etcd.log", 3);
        Err(Abort::new(format!(
            "etcd on {node} did not get ready ({probe}) within {READY:?}: {}",
            log.join(" | ")
        )))
    }
}

impl Store for EtcdStore {
    type Cluster = EtcdCluster;

    fn start(&self, state: &KvState) -> Result<EtcdCluster, Abort> {
        let net = super::boot_cluster(
            self.backend.as_ref(),
            state,
            self.memory_mb,
            self.service.as_ref(),
        )?;
        let ids: Vec<&str> = state.machines.iter().map(|n| n.id.as_str()).collect();
        let initial_cluster = state
            .machines
            .iter()
            .map(|n| format!("{}=http://{}:2380", n.id, n.ip))
            .collect::<Vec<_>>()
            .join(",");
        let cluster = EtcdCluster {
            net,
            initial_cluster,
            state: state.clone(),
        };
        for id in &ids {
            self.launch(&cluster, id)?;
        }
        // The cluster serves once it takes a write (outside the keys clients use).
        self.wait(&cluster, ids[0], WRITE_PROBE)?;
        Ok(cluster)
    }

    fn op(&self, c: &EtcdCluster, node: &str, op: &Op) -> Outcome<Ret> {
        let ctl = self.ctl();
        let (cmd, read) = match op {
            KvOp::Put(k, v) => (format!("{ctl} put k{k} {v}"), false),
            KvOp::Get(k) => (format!("{ctl} get k{k} --print-value-only"), true),
            KvOp::Delete(k) => (format!("{ctl} del k{k}"), false),
            KvOp::Cas { key, expected, new } => {
                let compare = match expected {
                    Some(e) => format!("value(\\\"k{key}\\\") = \\\"{e}\\\""),
                    None => format!("create(\\\"k{key}\\\") = \\\"0\\\""),
                };
                (
                    format!("printf '%s\\n\\n%s\\n\\n\\n' \"{compare}\" \"put k{key} {new}\" | {ctl} txn"),
                    false,
                )
            }
        };
        let unsure = service::unsure(read);
        let deadline = self.op_timeout + Duration::from_secs(2);
        let out = match service::client_command(c.net.as_ref(), node, cmd, deadline, read) {
            Ok(out) => out,
            Err(outcome) => return outcome,
        };
        let stdout = out.stdout_str();
        if !out.success() {
            return if out.stderr_str().contains("connection refused") {
                Outcome::Fail
            } else {
                unsure
            };
        }
        match op {
            KvOp::Put(..) | KvOp::Delete(..) => Outcome::Ok(KvRet::Done),
            KvOp::Get(_) => match stdout.trim() {
                "" => Outcome::Ok(KvRet::Value(None)),
                v => v
                    .parse()
                    .map(|v| Outcome::Ok(KvRet::Value(Some(v))))
                    .unwrap_or(Outcome::Fail),
            },
            KvOp::Cas { .. } => match stdout.lines().next().map(str::trim) {
                Some("SUCCESS") => Outcome::Ok(KvRet::Swapped(true)),
                Some("FAILURE") => Outcome::Ok(KvRet::Swapped(false)),
                _ => unsure,
            },
        }
    }

    fn fault(&self, c: &EtcdCluster, state: &KvState, command: &ClusterCmd) -> Result<(), Abort> {
        super::apply_fault(c.net.as_ref(), state, self.service.as_ref(), command)?;
        // A restarted or upgraded member rejoins with its data directory.
        if let Some(node) = super::restarts_service(state, command) {
            self.launch(c, node)?;
            // Listening is enough: the cluster may have no quorum right now, and etcd
            // serves requests only once it has rejoined through raft.
            self.wait(c, node, LISTENING_PROBE)?;
        }
        Ok(())
    }

    fn stop(&self, c: EtcdCluster) -> Result<(), Abort> {
        Ok(c.net.teardown()?)
    }
}
