//! PostgreSQL 15 (Debian's `postgresql-15`) on the fabric's machines, and the system that runs
//! the sql model on it ([`SqlSystem`]).
//!
//! Each node keeps its cluster in its data directory (`$FLEETCHECK_DATA/pg/data`, made by
//! `initdb` on the first start), its Unix socket in `$FLEETCHECK_DATA/pg` and its log in
//! `$FLEETCHECK_DATA/postgres.log`. PostgreSQL refuses to run as root, so `initdb`,
//! `pg_basebackup` and `postgres` run as the host's `postgres` user (which the Debian package
//! creates; machines see the host's `/etc/passwd`) through `setpriv`. With two nodes the
//! second is a streaming replica of the first (`pg_basebackup -R`); clients use the primary
//! only (reads from an asynchronous replica are stale by design, so no claim but read
//! uncommitted would hold for them). After a `Restart` the node's server starts again on its
//! data directory (crash recovery); the sessions of a crashed primary are closed. Power cuts
//! (`[machine] lose_unsynced`) are not offered yet: they put a node's disk behind a FUSE write
//! cache, where the server's Unix socket (through which the sessions, inside the primary's
//! machine, connect) has not been tried.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fleetcheck_engine::history::Outcome;
use fleetcheck_engine::txn::{self, Isolation, RecordedTxn, Txn, TxnHistory};
use fleetcheck_engine::{Abort, Check, Recorder, System};
use fleetcheck_fabric::{Backend, Network};

use super::session::{Ended, Session};
use super::{SqlCmd, SqlConfig, SqlState};
use crate::cluster::{ClusterCmd, ClusterState};
use crate::config::Services;
use crate::kv::service::{self, shell};
use crate::kv::Program;

/// PostgreSQL 15's programs.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// The host programs the scenario runs (inside the machines: `initdb`, `postgres`,
/// `pg_basebackup`, `pg_isready`; on the host: `psql`), all in `postgresql-15`.
pub const PROGRAMS: &[Program] = &[
    Program {
        name: "/usr/lib/postgresql/15/bin/postgres",
        package: "postgresql-15",
        role: "server (and initdb, pg_basebackup, pg_isready beside it)",
    },
    Program {
        name: "/usr/lib/postgresql/15/bin/psql",
        package: "postgresql-client-15",
        role: "client, one session per worker",
    },
];

/// How long a server may take to accept connections.
const READY: Duration = Duration::from_secs(30);

/// What a command returned.
#[derive(Clone, PartialEq, Eq)]
pub enum SqlOutput {
    /// The recorded transactions of a batch, in the batch's order.
    Txns(Vec<RecordedTxn>),
    /// A fault was applied.
    Done,
}

impl std::fmt::Debug for SqlOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlOutput::Done => f.write_str("ok"),
            SqlOutput::Txns(txns) => {
                let parts: Vec<String> = txns
                    .iter()
                    .map(|t| match &t.outcome {
                        Outcome::Ok(done) => format!("{done}"),
                        Outcome::Fail => "aborted".into(),
                        Outcome::Unknown => "unknown".into(),
                    })
                    .collect();
                write!(f, "[{}]", parts.join("; "))
            }
        }
    }
}

/// Runs the sql model on PostgreSQL on a backend with disks (netns); after every step the
/// history so far must satisfy the claimed model.
#[derive(Debug, Clone)]
pub struct SqlSystem {
    backend: Arc<dyn Backend>,
    config: SqlConfig,
    template: Arc<Template>,
    /// The model checked against.
    pub claim: Isolation,
}

impl SqlSystem {
    /// A system on `backend` under `[sql]` knobs `config`.
    pub fn new(backend: Arc<dyn Backend>, config: &SqlConfig) -> Self {
        Self {
            backend,
            config: config.clone(),
            template: Arc::new(Template::default()),
            claim: config.claimed(),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.txn_timeout_ms)
    }
}

/// One case's live cluster and the history of its transactions.
pub struct SqlInstance {
    net: Box<dyn Network>,
    /// The model state after the last command that ran: the faults to heal at teardown.
    state: ClusterState,
    /// The primary's id.
    primary: String,
    /// The backend's name, for messages.
    backend: &'static str,
    /// One session per worker, opened when first needed and after one was lost.
    sessions: Vec<Mutex<Option<Session>>>,
    recorder: Arc<Recorder<Txn, Txn>>,
    /// Why each transaction that did not commit ended so, by history index.
    why: Mutex<Vec<(usize, String)>>,
    origin: Instant,
    /// Wall time spent checking histories.
    pub checking: Duration,
}

impl std::fmt::Debug for SqlInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlInstance")
            .field("primary", &self.primary)
            .finish_non_exhaustive()
    }
}

impl SqlInstance {
    /// The machines of the cluster (for reports: their logs and disks).
    pub fn network(&self) -> &dyn Network {
        self.net.as_ref()
    }

    /// The history of transactions so far, and its time zero.
    pub fn history(&self) -> (TxnHistory, Instant) {
        (self.recorder.history(), self.origin)
    }

    /// Why transactions that did not commit ended so (`40001`, a timeout, …), by index.
    pub fn why(&self) -> Vec<(usize, String)> {
        self.why.lock().expect("no panics while locked").clone()
    }

    /// A psql session inside `node` against its server (its socket in the node's data
    /// directory), answering within `within`.
    fn session(&self, node: &str, within: Duration) -> Result<Session, String> {
        let d = service::disk(self.net.as_ref(), self.backend, node, "PostgreSQL")
            .map_err(|e| e.to_string())?;
        Session::open(
            self.net.as_ref(),
            node,
            &format!("{}/pg", d.display()),
            within,
        )
    }
}

/// The cluster every primary starts from: made once per run by `initdb` on the host (as
/// `postgres`, in a directory of the host's temporary directory, removed when the system is
/// dropped; one a killed run left is removed by the next run), then copied into each case's
/// primary. `initdb` costs one to two seconds here, a copy tens of milliseconds.
#[derive(Debug, Default)]
pub struct Template {
    made: OnceLock<Result<PathBuf, String>>,
}

/// The template directories' name, before the pid of the process that made them.
const TEMPLATE_PREFIX: &str = "fleetcheck-sql-template-";

impl Template {
    /// The template's directory (its cluster in `data`), made on first use.
    pub fn get(&self) -> Result<&Path, Abort> {
        self.made
            .get_or_init(make_template)
            .as_deref()
            .map_err(|e| Abort::new(e.clone()))
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        if let Some(Ok(dir)) = self.made.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn make_template() -> Result<PathBuf, String> {
    let tmp = std::env::temp_dir();
    // Those of processes that are gone.
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(TEMPLATE_PREFIX) {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let dir = tmp.join(format!("{TEMPLATE_PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let fail = |e: Abort| format!("cannot make PostgreSQL's template cluster: {e}");
    host_command(
        Command::new("install")
            .args(["-d", "-o", "postgres", "-g", "postgres", "-m", "700"])
            .arg(&dir),
    )
    .map_err(fail)?;
    host_command(
        Command::new("setpriv")
            .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(format!("{BIN}/initdb"))
            .args([
                "-N",
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-locale",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(dir.join("data")),
    )
    .map_err(fail)?;
    let hba = dir.join("data/pg_hba.conf");
    let mut text = std::fs::read_to_string(&hba).map_err(|e| e.to_string())?;
    text.push_str("host all all 0.0.0.0/0 trust\nhost replication all 0.0.0.0/0 trust\n");
    std::fs::write(&hba, text).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// Runs a command on the host; `Err` with its stderr if it fails.
fn host_command(cmd: &mut Command) -> Result<(), Abort> {
    let out = cmd
        .output()
        .map_err(|e| Abort::new(format!("cannot run {cmd:?}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Abort::new(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `setpriv` to the `postgres` user, then `cmd`.
fn as_postgres(cmd: &str) -> String {
    format!("setpriv --reuid=postgres --regid=postgres --init-groups {cmd}")
}

impl SqlSystem {
    fn disk(&self, net: &dyn Network, node: &str) -> Result<String, Abort> {
        let d = service::disk(net, self.backend.name(), node, "PostgreSQL")?;
        Ok(d.display().to_string())
    }

    /// Makes the primary's cluster: a copy of the run's [`Template`] into its disk, by the
    /// host (`cp -a`, owner and modes kept).
    fn init_primary(&self, net: &dyn Network, node: &str) -> Result<(), Abort> {
        let template = self.template.get()?;
        let disk = net.data_dir_on_host(node).ok_or_else(|| {
            Abort::new(format!(
                "the {} backend does not show the host {node}'s disk; the sql scenario needs the netns backend",
                self.backend.name()
            ))
        })?;
        let pg = disk.join("pg");
        host_command(
            Command::new("install")
                .args(["-d", "-o", "postgres", "-g", "postgres", "-m", "700"])
                .arg(&pg),
        )?;
        host_command(
            Command::new("cp")
                .arg("-a")
                .arg(template.join("data"))
                .arg(pg.join("data")),
        )
    }

    /// Makes a replica's cluster: a base backup of the primary at `primary`, inside the node.
    fn init_replica(&self, net: &dyn Network, node: &str, primary: &str) -> Result<(), Abort> {
        let d = self.disk(net, node)?;
        let make = as_postgres(&format!(
            "{BIN}/pg_basebackup -h {primary} -p 5432 -U postgres -D {d}/pg/data -R -X stream"
        ));
        let cmd = format!(
            "mkdir -p {d}/pg && chown postgres:postgres {d}/pg && chmod 700 {d}/pg && \
             {make} >>{d}/init.log 2>&1"
        );
        let out = net.exec(node, &shell(cmd, READY))?;
        if !out.success() {
            let log = service::last_lines(net, node, "init.log", 3);
            return Err(Abort::new(format!(
                "cannot make the replica on {node}: {} {}",
                out.stderr_str().trim(),
                log.join(" | ")
            )));
        }
        Ok(())
    }

    /// Starts the node's server in the background and waits until it accepts connections.
    /// Lock files a crash left are removed first (the machine's processes died with it).
    fn launch(&self, net: &dyn Network, node: &str) -> Result<(), Abort> {
        let d = self.disk(net, node)?;
        let server = as_postgres(&format!(
            "{BIN}/postgres -D {d}/pg/data -c listen_addresses='*' \
             -c unix_socket_directories={d}/pg -c shared_buffers=16MB -c max_connections=50 \
             -c deadlock_timeout=100ms -c wal_sender_timeout=5s -c wal_receiver_timeout=5s"
        ));
        let cmd = format!(
            "rm -f {d}/pg/data/postmaster.pid {d}/pg/.s.PGSQL.5432.lock; \
             {server} >>{d}/postgres.log 2>&1 &"
        );
        service::start(net, node, "PostgreSQL", cmd)?;
        let ready = format!("{BIN}/pg_isready -q -h {d}/pg -p 5432");
        if service::probe(net, node, &ready, READY) {
            return Ok(());
        }
        let log = service::last_lines(net, node, "postgres.log", 3);
        Err(Abort::new(format!(
            "PostgreSQL on {node} did not accept connections within {READY:?}: {}",
            log.join(" | ")
        )))
    }

    /// Opens the session of a slot that has none.
    fn open(&self, inst: &SqlInstance, slot: &mut Option<Session>) -> Result<(), String> {
        if slot.is_none() {
            *slot = Some(inst.session(&inst.primary, self.timeout())?);
        }
        Ok(())
    }

    /// Runs one transaction of `worker`, opening its session if it has none.
    fn run_txn(
        &self,
        inst: &SqlInstance,
        worker: usize,
        level: super::SqlLevel,
        t: &Txn,
    ) -> (Outcome<Txn>, Option<String>) {
        let mut slot = inst.sessions[worker]
            .lock()
            .expect("no panics while locked");
        if let Err(why) = self.open(inst, &mut slot) {
            // It never ran.
            return (Outcome::Fail, Some(format!("no session: {why}")));
        }
        let session = slot.as_mut().expect("opened above");
        match session.run(level, t, self.timeout()) {
            Ended::Committed(done) => (Outcome::Ok(done), None),
            Ended::Aborted(code) => (Outcome::Fail, Some(format!("aborted: {code}"))),
            Ended::Unknown(why) => {
                *slot = None;
                (Outcome::Unknown, Some(why))
            }
        }
    }
}

impl System<super::SqlModel> for SqlSystem {
    type Instance = SqlInstance;

    fn setup(&self, initial: &SqlState) -> Result<SqlInstance, Abort> {
        let cluster = &initial.cluster;
        let net =
            crate::kv::boot_cluster(self.backend.as_ref(), cluster, self.config.memory_mb, None)?;
        let primary = cluster
            .machines
            .first()
            .ok_or_else(|| Abort::new("a sql cluster has at least one node"))?;
        self.init_primary(net.as_ref(), &primary.id)?;
        self.launch(net.as_ref(), &primary.id)?;
        for replica in &cluster.machines[1..] {
            self.init_replica(net.as_ref(), &replica.id, &primary.ip.to_string())?;
            self.launch(net.as_ref(), &replica.id)?;
        }
        let inst = SqlInstance {
            net,
            state: cluster.clone(),
            primary: primary.id.clone(),
            backend: self.backend.name(),
            sessions: (0..self.config.workers).map(|_| Mutex::new(None)).collect(),
            recorder: Arc::new(Recorder::new()),
            why: Mutex::new(Vec::new()),
            origin: Instant::now(),
            checking: Duration::ZERO,
        };
        let mut s = inst.session(&inst.primary, READY).map_err(Abort::new)?;
        s.exec(
            "CREATE TABLE lists (k bigint PRIMARY KEY, v text NOT NULL);",
            READY,
        )
        .map_err(|e| Abort::new(format!("cannot create the table: {e}")))?;
        *inst.sessions[0].lock().expect("no panics while locked") = Some(s);
        Ok(SqlInstance {
            origin: Instant::now(),
            ..inst
        })
    }

    fn run(
        &self,
        inst: &mut SqlInstance,
        state: &SqlState,
        command: &SqlCmd,
    ) -> Result<SqlOutput, Abort> {
        let (isolation, txns) = match command {
            SqlCmd::Txns { isolation, txns } => (*isolation, txns),
            SqlCmd::Cluster(c) => {
                let net = inst.net.as_ref();
                c.apply(net, &state.cluster, &Services::default())?
                    .map_err(Abort::new)?;
                inst.state = state.cluster.next_state(c);
                match c {
                    ClusterCmd::Crash { machine } if *machine == inst.primary => {
                        for s in &inst.sessions {
                            *s.lock().expect("no panics while locked") = None;
                        }
                    }
                    ClusterCmd::Restart { machine } => self.launch(net, machine)?,
                    _ => {}
                }
                return Ok(SqlOutput::Done);
            }
        };
        let workers: std::collections::BTreeSet<usize> = txns.iter().map(|p| p.worker).collect();
        if let Some(w) = workers.iter().find(|&&w| w >= inst.sessions.len()) {
            return Err(Abort::new(format!(
                "worker {w} is beyond [sql] workers = {}",
                inst.sessions.len()
            )));
        }
        let inst = &*inst;
        let start = std::sync::Barrier::new(workers.len());
        let mut results: Vec<(usize, RecordedTxn)> = std::thread::scope(|scope| {
            let handles: Vec<_> = workers
                .iter()
                .map(|&w| {
                    let start = &start;
                    scope.spawn(move || {
                        // Sessions are opened first, so the workers' transactions begin
                        // together (a connection takes tens of milliseconds).
                        let _ = self.open(
                            inst,
                            &mut inst.sessions[w].lock().expect("no panics while locked"),
                        );
                        start.wait();
                        let mut done = Vec::new();
                        for (i, p) in txns.iter().enumerate().filter(|(_, p)| p.worker == w) {
                            let ticket = inst.recorder.invoke(w, p.txn.clone());
                            let index = ticket.index();
                            let (outcome, why) = self.run_txn(inst, w, isolation, &p.txn);
                            inst.recorder.complete(ticket, outcome);
                            if let Some(why) = why {
                                inst.why
                                    .lock()
                                    .expect("no panics while locked")
                                    .push((index, why));
                            }
                            done.push((i, index));
                        }
                        done
                    })
                })
                .collect();
            let indices: Vec<(usize, usize)> = handles
                .into_iter()
                .flat_map(|h| h.join().expect("client workers do not panic"))
                .collect();
            let h = inst.recorder.history();
            indices
                .into_iter()
                .map(|(i, index)| (i, h.operations[index].clone()))
                .collect()
        });
        results.sort_by_key(|(i, _)| *i);
        Ok(SqlOutput::Txns(
            results.into_iter().map(|(_, r)| r).collect(),
        ))
    }

    fn invariant(&self, inst: &mut SqlInstance, _: &SqlState) -> Result<Check, Abort> {
        let history = inst.recorder.history();
        if history.is_empty() {
            return Ok(Ok(()));
        }
        let started = Instant::now();
        let verdict = txn::check(&history, self.claim);
        inst.checking += started.elapsed();
        Ok(verdict
            .map(|_| ())
            .map_err(|v| format!("the transaction history is {}", v.to_string().trim_end())))
    }

    /// Closes the sessions, heals every fault, removes the network; a heal that fails aborts
    /// the case (after the network is removed anyway).
    fn teardown(&self, inst: SqlInstance) -> Result<(), Abort> {
        for s in &inst.sessions {
            *s.lock().expect("no panics while locked") = None;
        }
        let mut state = inst.state.clone();
        let mut healed = Ok(());
        for c in state.heal_commands() {
            if let Err(e) = c
                .apply(inst.net.as_ref(), &state, &Services::default())
                .and_then(|r| r.map_err(Abort::new))
            {
                healed = Err(e);
                break;
            }
            state = state.next_state(&c);
        }
        let removed = inst.net.teardown();
        healed
            .map_err(|e| Abort::new(format!("healing the faults before teardown failed: {e}")))?;
        Ok(removed?)
    }
}
