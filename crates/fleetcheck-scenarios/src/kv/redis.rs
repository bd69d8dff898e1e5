//! Redis 7 primary/replicas with Sentinel failover (Debian's `redis-server`) on the fabric:
//! every node runs a server and a sentinel (`redis-server --sentinel`, the same program, so
//! that a node with a version of service `redis-server` runs that version for both); the first
//! node is the first primary. Clients are sentinel-aware: each operation, run inside the node it is
//! aimed at, asks that node's sentinel for the primary and talks to it.
//!
//! Servers persist every write (`appendonly yes`, `appendfsync always`), so a crash alone
//! loses nothing acknowledged; replication is asynchronous, as Redis ships it.
//! Timers: `down-after-milliseconds 200`, `failover-timeout 1000`. After every crash, restart,
//! pause, resume, partition and heal the store waits (deadline 8 s) until the sentinels that can
//! see a majority agree on a primary they can reach, so failovers happen where the command
//! sequence says, not at random later. One-way blocks and loss do not wait: whether sentinels
//! then agree at all is up to them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetcheck_engine::history::Outcome;
use fleetcheck_engine::{Abort, KvOp, KvRet};
use fleetcheck_fabric::{Backend, Network};

use super::service::{self, shell};
use super::{ClusterCmd, KvService, KvState, Op, Ret, Store};

const READY: Duration = Duration::from_secs(20);
/// Sentinel's failover here takes about 2.2 s (down-after 200 ms, then election and
/// promotion), and more under load (a CI machine running many tests at once): a deadline of
/// 4 s let partitions heal before the failover happened.
const SETTLE: Duration = Duration::from_secs(8);

/// Redis with Sentinel on a backend with disks (netns).
#[derive(Debug, Clone)]
pub struct RedisStore {
    backend: Arc<dyn Backend>,
    memory_mb: u32,
    op_timeout: Duration,
    service: Option<KvService>,
}

impl RedisStore {
    /// A store on `backend`; nodes run the host's `redis-server` (see
    /// [`RedisStore::with_service`]).
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

/// A live Redis deployment.
pub struct RedisCluster {
    net: Box<dyn Network>,
    state: std::sync::Mutex<KvState>,
    /// One side of the partition in force, if any.
    side: std::sync::Mutex<Option<Vec<String>>>,
}

impl RedisCluster {
    /// The machines of the cluster (for reports: their logs and disks).
    pub fn network(&self) -> &dyn Network {
        self.net.as_ref()
    }
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster").finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Writes the node's configuration on first start, then starts server and sentinel.
    fn launch(&self, c: &RedisCluster, state: &KvState, node: &str) -> Result<(), Abort> {
        let me = state
            .machine(node)
            .ok_or_else(|| Abort::new(format!("no node {node}")))?;
        let first = &state.machines[0];
        let disk = service::disk(c.net.as_ref(), self.backend.name(), node, "redis")?;
        let d = disk.display();
        let ip = me.ip;
        let replicaof = if me.id == first.id {
            String::new()
        } else {
            format!("replicaof {} 6379\n", first.ip)
        };
        let quorum = state.machines.len() / 2 + 1;
        let cmd = format!(
            "[ -f {d}/redis.conf ] || printf '%s' 'bind {ip} 127.0.0.1\nport 6379\nprotected-mode no\n\
dir {d}\nappendonly yes\nappendfsync always\nsave \"\"\nrepl-diskless-sync yes\n\
repl-diskless-sync-delay 0\ndaemonize yes\nlogfile {d}/redis.log\npidfile {d}/redis.pid\n{replicaof}' > {d}/redis.conf && \
[ -f {d}/sentinel.conf ] || printf '%s' 'port 26379\nbind {ip} 127.0.0.1\nprotected-mode no\n\
daemonize yes\nlogfile {d}/sentinel.log\npidfile {d}/sentinel.pid\ndir {d}\n\
sentinel monitor m {first} 6379 {quorum}\nsentinel down-after-milliseconds m 200\n\
sentinel failover-timeout m 1000\nsentinel parallel-syncs m 1\n' > {d}/sentinel.conf && \
redis-server {d}/redis.conf && redis-server {d}/sentinel.conf --sentinel",
            first = first.ip
        );
        service::start(c.net.as_ref(), node, "redis", cmd)
    }

    /// The primary `node`'s sentinel names, if it answers.
    fn primary_seen_by(&self, c: &RedisCluster, node: &str) -> Option<String> {
        let cmd =
            "timeout 0.5 redis-cli -p 26379 --raw SENTINEL get-master-addr-by-name m | head -1";
        let out = c
            .net
            .exec(node, &shell(cmd.into(), Duration::from_secs(2)))
            .ok()?;
        let ip = out.stdout_str().trim().to_string();
        (!ip.is_empty()).then_some(ip)
    }

    /// After a fault: waits until the sentinels on the majority side of the network agree, a
    /// majority of them, on a primary that is awake and on their side (a failover has
    /// completed, or was not needed). Gives up quietly at the deadline (e.g. no side has a
    /// majority): the history will say what happened.
    fn settle(&self, c: &RedisCluster) {
        let state = c.state.lock().expect("no panics while locked").clone();
        let side = c.side.lock().expect("no panics while locked").clone();
        let majority = state.machines.len() / 2 + 1;
        let in_side = |id: &str| side.as_ref().is_some_and(|s| s.iter().any(|x| x == id));
        let side_size = state.machines.iter().filter(|n| in_side(&n.id)).count();
        // The group that can elect: the listed side, the rest, or everyone when not cut.
        let group: Vec<&super::Machine> = state
            .machines
            .iter()
            .filter(|n| match &side {
                None => true,
                Some(_) if side_size >= majority => in_side(&n.id),
                Some(_) => !in_side(&n.id),
            })
            .collect();
        if group.len() < majority {
            return;
        }
        let awake: Vec<&super::Machine> = group
            .into_iter()
            .filter(|n| n.running && !n.paused)
            .collect();
        let deadline = Instant::now() + SETTLE;
        let mut backoff = Duration::from_millis(20);
        while Instant::now() < deadline {
            let seen: Vec<String> = awake
                .iter()
                .filter_map(|n| self.primary_seen_by(c, &n.id))
                .collect();
            let agreed = seen.iter().find(|ip| {
                seen.iter().filter(|x| x == ip).count() >= majority
                    && awake.iter().any(|n| n.ip.to_string() == **ip)
            });
            if agreed.is_some() {
                return;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }
}

impl Store for RedisStore {
    type Cluster = RedisCluster;

    fn start(&self, state: &KvState) -> Result<RedisCluster, Abort> {
        let net = super::boot_cluster(
            self.backend.as_ref(),
            state,
            self.memory_mb,
            self.service.as_ref(),
        )?;
        let ids: Vec<&str> = state.machines.iter().map(|n| n.id.as_str()).collect();
        let cluster = RedisCluster {
            net,
            state: std::sync::Mutex::new(state.clone()),
            side: std::sync::Mutex::new(None),
        };
        for id in &ids {
            self.launch(&cluster, state, id)?;
        }
        // Ready: every replica is in sync and every sentinel knows all the others.
        let n = ids.len();
        let first = ids[0];
        let synced = format!(
            "[ \"$(redis-cli --raw INFO replication | grep -c '^slave[0-9]*:.*state=online')\" -ge {} ]",
            n - 1
        );
        let sentinels = format!(
            "[ \"$(redis-cli -p 26379 --raw SENTINEL master m | grep -A1 '^num-other-sentinels$' | tail -1)\" -ge {} ]",
            n - 1
        );
        if !service::probe(cluster.net.as_ref(), first, &synced, READY)
            || !service::probe(cluster.net.as_ref(), first, &sentinels, READY)
        {
            return Err(Abort::new(format!(
                "redis replicas or sentinels of {first} not ready within {READY:?}"
            )));
        }
        Ok(cluster)
    }

    fn op(&self, c: &RedisCluster, node: &str, op: &Op) -> Outcome<Ret> {
        let secs = self.op_timeout.as_secs_f64();
        let args = match op {
            KvOp::Put(k, v) => format!("SET k{k} {v}"),
            KvOp::Get(k) => format!("GET k{k}"),
            KvOp::Delete(k) => format!("DEL k{k}"),
            KvOp::Cas { key, expected, new } => {
                let test = match expected {
                    Some(e) => format!("redis.call('GET', KEYS[1]) == '{e}'"),
                    None => "redis.call('GET', KEYS[1]) == false".to_string(),
                };
                format!(
                    "EVAL \"if {test} then redis.call('SET', KEYS[1], ARGV[1]) return 1 else return 0 end\" 1 k{key} {new}"
                )
            }
        };
        let cmd = format!(
            "M=$(timeout {secs} redis-cli -p 26379 --raw SENTINEL get-master-addr-by-name m | head -1); \
             [ -n \"$M\" ] || {{ echo 'NOPRIMARY'; exit 3; }}; timeout {secs} redis-cli -h \"$M\" --raw {args}"
        );
        let read = matches!(op, KvOp::Get(_));
        let unsure = service::unsure(read);
        let deadline = self.op_timeout * 3 + Duration::from_secs(2);
        let out = match service::client_command(c.net.as_ref(), node, cmd, deadline, read) {
            Ok(out) => out,
            Err(outcome) => return outcome,
        };
        let text = out.stdout_str();
        let all = format!("{text}{}", out.stderr_str());
        if all.contains("READONLY") || all.contains("NOPRIMARY") || all.contains("refused") {
            return Outcome::Fail;
        }
        if !out.success() || all.contains("ERR") {
            return unsure;
        }
        let value = text.trim_end_matches('\n');
        match op {
            KvOp::Put(..) if value == "OK" => Outcome::Ok(KvRet::Done),
            KvOp::Delete(..) if value.parse::<u64>().is_ok() => Outcome::Ok(KvRet::Done),
            KvOp::Get(_) if value.is_empty() => Outcome::Ok(KvRet::Value(None)),
            KvOp::Get(_) => value
                .parse()
                .map(|v| Outcome::Ok(KvRet::Value(Some(v))))
                .unwrap_or(Outcome::Fail),
            KvOp::Cas { .. } if value == "1" => Outcome::Ok(KvRet::Swapped(true)),
            KvOp::Cas { .. } if value == "0" => Outcome::Ok(KvRet::Swapped(false)),
            _ => unsure,
        }
    }

    fn fault(&self, c: &RedisCluster, state: &KvState, command: &ClusterCmd) -> Result<(), Abort> {
        super::apply_fault(c.net.as_ref(), state, self.service.as_ref(), command)?;
        if let Some(node) = super::restarts_service(state, command) {
            self.launch(c, state, node)?;
        }
        match command {
            // kv partitions are one side against the rest.
            ClusterCmd::Partition { groups } => {
                *c.side.lock().expect("no panics while locked") = groups.first().cloned();
            }
            ClusterCmd::Heal => *c.side.lock().expect("no panics while locked") = None,
            _ => {}
        }
        *c.state.lock().expect("no panics while locked") = state.next_state(command);
        if !matches!(command, ClusterCmd::Block { .. } | ClusterCmd::Loss { .. }) {
            self.settle(c);
        }
        Ok(())
    }

    /// Without waiting for the sentinels: the cluster is about to stop.
    fn heal(&self, c: &RedisCluster, state: &KvState) -> Result<(), Abort> {
        for command in state.heal_commands() {
            super::apply_fault(c.net.as_ref(), state, self.service.as_ref(), &command)?;
        }
        Ok(())
    }

    fn stop(&self, c: RedisCluster) -> Result<(), Abort> {
        Ok(c.net.teardown()?)
    }
}
