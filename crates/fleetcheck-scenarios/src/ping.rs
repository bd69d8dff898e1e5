//! The seed's test: 1–4 initially stopped machines, Boot, Shutdown and Ping(from, to), with
//! the seed's generators, frequencies, preconditions and postconditions.
//!
//! [`PingModel`] is pure; [`PingSystem`] runs it on any fabric backend (the in-memory fake or
//! real namespaces), so the same scenario runs on both arms.

use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use fleetcheck_engine::{check, Abort, Check, Gen, Labels, Model, System};
use fleetcheck_fabric::{Backend, BootError, MachineSpec, Network, NetworkSpec, Subnet};
use serde::{Deserialize, Serialize};

use crate::config::ScenarioConfig;

/// One machine of the model: the seed's `Machine` case class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// 8 random lowercase letters; also the hostname.
    pub id: String,
    /// A random UUID, as in the seed.
    pub uuid: String,
    /// Its address, distinct from every other machine's.
    pub ip: Ipv4Addr,
    /// Memory in MiB.
    pub memory_mb: u32,
    /// Kernel version.
    pub kernel: String,
    /// Whether the model says it is up.
    pub running: bool,
}

/// The model state: the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingState {
    /// The subnet the machines live in.
    pub subnet: Subnet,
    /// The machines, in generation order.
    pub machines: Vec<Machine>,
}

impl PingState {
    /// The machine named `id`.
    pub fn machine(&self, id: &str) -> Option<&Machine> {
        self.machines.iter().find(|m| m.id == id)
    }

    fn ids(&self, running: bool) -> Vec<String> {
        self.machines
            .iter()
            .filter(|m| m.running == running)
            .map(|m| m.id.clone())
            .collect()
    }

    /// The fabric's description of this network, every machine running `setup` at boot.
    pub fn network_spec(&self, setup: &[String]) -> NetworkSpec {
        NetworkSpec {
            subnet: self.subnet,
            machines: self
                .machines
                .iter()
                .map(|m| MachineSpec {
                    id: m.id.clone(),
                    ip: m.ip,
                    memory_mb: m.memory_mb,
                    kernel: m.kernel.clone(),
                    setup: setup.to_vec(),
                })
                .collect(),
        }
    }
}

/// A command. Machines are named by id; the model state is looked up when it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", content = "args")]
pub enum PingCmd {
    /// Boot a stopped machine and wait until it is up.
    Boot {
        /// The machine.
        machine: String,
    },
    /// Cut the power of a running machine.
    Shutdown {
        /// The machine.
        machine: String,
    },
    /// Send an ICMP echo from a running machine to any machine.
    Ping {
        /// The sender (running).
        from: String,
        /// The target (running or not).
        to: String,
    },
}

/// What a command returned.
#[derive(Clone, PartialEq, Eq)]
pub enum PingOutput {
    /// Boot or Shutdown went through (`Err`: the machine's own failure, e.g. a setup command).
    Done(Result<(), String>),
    /// Whether a ping got its reply.
    Reply(bool),
}

impl fmt::Debug for PingOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PingOutput::Done(Ok(())) => f.write_str("ok"),
            PingOutput::Done(Err(e)) => write!(f, "failed: {e}"),
            PingOutput::Reply(true) => f.write_str("reply"),
            PingOutput::Reply(false) => f.write_str("no reply"),
        }
    }
}

/// The seed's model, with its parameter domains taken from a [`ScenarioConfig`].
#[derive(Debug, Clone, Default)]
pub struct PingModel {
    /// The domains (and, for the system, setup commands and timeout).
    pub config: ScenarioConfig,
}

impl PingModel {
    /// The model for a validated configuration.
    pub fn new(config: ScenarioConfig) -> Self {
        Self { config }
    }
}

impl Model for PingModel {
    type State = PingState;
    type Command = PingCmd;
    type Output = PingOutput;

    fn initial_state(&self, g: &mut Gen) -> PingState {
        let net = &self.config.network;
        let machine = &self.config.machine;
        let count = g.range(net.machines.min..=net.machines.max) as usize;
        // Distinct addresses by construction: host indices 1.. (the seed's .2 to .254 in a /24).
        let last = net.subnet.host_count() - 1;
        let hosts = g.distinct(count, 1..=last);
        let mut machines: Vec<Machine> = Vec::with_capacity(count);
        for host in hosts {
            let mut id = g.lowercase(8);
            while machines.iter().any(|m| m.id == id) {
                id = g.lowercase(8);
            }
            machines.push(Machine {
                id,
                uuid: g.uuid(),
                ip: net
                    .subnet
                    .host(host)
                    .expect("host index is inside the subnet"),
                memory_mb: g.range(machine.memory_mb.min..=machine.memory_mb.max),
                kernel: g
                    .choose(&machine.kernels)
                    .expect("validated: at least one kernel")
                    .clone(),
                running: false,
            });
        }
        PingState {
            subnet: net.subnet,
            machines,
        }
    }

    /// Fewer machines first (never fewer than the configured minimum), then per machine the
    /// first kernel of the list and less memory.
    fn shrink_state(&self, s: &PingState) -> Vec<PingState> {
        let mut out = Vec::new();
        if s.machines.len() > self.config.network.machines.min as usize {
            for i in 0..s.machines.len() {
                let mut smaller = s.clone();
                smaller.machines.remove(i);
                out.push(smaller);
            }
        }
        let kernels = &self.config.machine.kernels;
        let min_memory = self.config.machine.memory_mb.min;
        for (i, m) in s.machines.iter().enumerate() {
            let at = kernels.iter().position(|k| *k == m.kernel).unwrap_or(0);
            for kernel in &kernels[..at] {
                let mut simpler = s.clone();
                simpler.machines[i].kernel = kernel.clone();
                out.push(simpler);
            }
            for memory in [min_memory, min_memory + (m.memory_mb - min_memory) / 2] {
                if memory < m.memory_mb {
                    let mut simpler = s.clone();
                    simpler.machines[i].memory_mb = memory;
                    out.push(simpler);
                }
            }
        }
        out
    }

    /// The seed's `genCommand`: only Boot when all are off; Shutdown 1 : PingOnline 4 when all
    /// are on; otherwise Boot 2 : Shutdown 1 : PingOnline 4 : PingOffline 4.
    fn command(&self, s: &PingState, g: &mut Gen) -> Option<PingCmd> {
        #[derive(Clone, Copy)]
        enum Kind {
            Boot,
            Shutdown,
            PingOnline,
            PingOffline,
        }
        let (up, down) = (s.ids(true), s.ids(false));
        let kind = if up.is_empty() {
            Kind::Boot
        } else if down.is_empty() {
            *g.frequency(&[(1, Kind::Shutdown), (4, Kind::PingOnline)])?
        } else {
            *g.frequency(&[
                (2, Kind::Boot),
                (1, Kind::Shutdown),
                (4, Kind::PingOnline),
                (4, Kind::PingOffline),
            ])?
        };
        let mut pick = |ids: &[String]| g.choose(ids).cloned();
        Some(match kind {
            Kind::Boot => PingCmd::Boot {
                machine: pick(&down)?,
            },
            Kind::Shutdown => PingCmd::Shutdown {
                machine: pick(&up)?,
            },
            Kind::PingOnline => PingCmd::Ping {
                from: pick(&up)?,
                to: pick(&up)?,
            },
            Kind::PingOffline => PingCmd::Ping {
                from: pick(&up)?,
                to: pick(&down)?,
            },
        })
    }

    fn precondition(&self, s: &PingState, c: &PingCmd) -> bool {
        let running = |id: &str| s.machine(id).map(|m| m.running);
        match c {
            PingCmd::Boot { machine } => running(machine) == Some(false),
            PingCmd::Shutdown { machine } => running(machine) == Some(true),
            PingCmd::Ping { from, to } => running(from) == Some(true) && running(to).is_some(),
        }
    }

    fn next_state(&self, s: &PingState, c: &PingCmd) -> PingState {
        let mut next = s.clone();
        let (id, running) = match c {
            PingCmd::Boot { machine } => (machine, true),
            PingCmd::Shutdown { machine } => (machine, false),
            PingCmd::Ping { .. } => return next,
        };
        if let Some(m) = next.machines.iter_mut().find(|m| &m.id == id) {
            m.running = running;
        }
        next
    }

    fn postcondition(&self, s: &PingState, c: &PingCmd, out: &PingOutput) -> Check {
        match (c, out) {
            (PingCmd::Ping { from, to }, PingOutput::Reply(reply)) => {
                let expected = s.machine(to).is_some_and(|m| m.running);
                check(*reply == expected, || {
                    let ip = s.machine(to).map(|m| m.ip.to_string()).unwrap_or_default();
                    if expected {
                        format!("{to} ({ip}) is running but did not answer a ping from {from}")
                    } else {
                        format!("{to} ({ip}) is off but answered a ping from {from}")
                    }
                })
            }
            (PingCmd::Boot { machine }, PingOutput::Done(r)) => r
                .clone()
                .map_err(|e| format!("boot of {machine} failed: {e}")),
            (PingCmd::Shutdown { machine }, PingOutput::Done(r)) => r
                .clone()
                .map_err(|e| format!("shutdown of {machine} failed: {e}")),
            (c, out) => Err(format!("{c:?} returned {out:?}, which it cannot")),
        }
    }

    /// Pings to an offline machine wait for the whole timeout; boots start processes.
    fn cost(&self, c: &PingCmd) -> u32 {
        match c {
            PingCmd::Boot { .. } => 3,
            PingCmd::Shutdown { .. } => 1,
            PingCmd::Ping { .. } => 2,
        }
    }

    fn labels(&self, initial: &PingState, commands: &[PingCmd], labels: &mut Labels) {
        labels.add("machines", initial.machines.len());
        for m in &initial.machines {
            labels.add("kernel", &m.kernel);
            let bucket = m.memory_mb / 32 * 32;
            let top = (bucket + 31).min(self.config.machine.memory_mb.max);
            labels.add("memory (MiB)", format!("{bucket}-{top}"));
        }
        // Online and offline pings, as the seed's generator tells them apart.
        let mut state = initial.clone();
        for c in commands {
            if let PingCmd::Ping { to, .. } = c {
                let online = state.machine(to).is_some_and(|m| m.running);
                labels.add("ping target", if online { "online" } else { "offline" });
            }
            state = self.next_state(&state, c);
        }
    }

    fn describe_state(&self, s: &PingState) -> String {
        let mut out = format!("{} machine(s) on {}:\n", s.machines.len(), s.subnet);
        let _ = writeln!(
            out,
            "  {:<8}  {:<15}  {:>6}  {:<7}  uuid",
            "id", "ip", "memory", "kernel"
        );
        for m in &s.machines {
            let _ = writeln!(
                out,
                "  {:<8}  {:<15}  {:>3} MiB  {:<7}  {}",
                m.id, m.ip, m.memory_mb, m.kernel, m.uuid
            );
        }
        out
    }

    fn state_size(&self, s: &PingState) -> Option<String> {
        let n = s.machines.len();
        Some(format!("{n} machine{}", if n == 1 { "" } else { "s" }))
    }

    fn summarize_state(&self, s: &PingState) -> String {
        let list = |running: bool| {
            let ids = s.ids(running);
            if ids.is_empty() {
                "-".to_string()
            } else {
                ids.join(" ")
            }
        };
        format!("up: {}; off: {}", list(true), list(false))
    }

    fn describe_command(&self, c: &PingCmd) -> String {
        match c {
            PingCmd::Boot { machine } => format!("Boot({machine})"),
            PingCmd::Shutdown { machine } => format!("Shutdown({machine})"),
            PingCmd::Ping { from, to } => format!("Ping({from} -> {to})"),
        }
    }
}

/// Runs the ping model on a fabric backend: one fresh network per case.
#[derive(Debug, Clone)]
pub struct PingSystem {
    backend: Arc<dyn Backend>,
    setup: Vec<String>,
    timeout: Duration,
}

impl PingSystem {
    /// Cases to run at once by default: four per CPU. A ping case spends most of its time
    /// waiting (offline pings wait out their timeout, boots wait for agents), not computing;
    /// on 2 CPUs, 8 workers ran 100 cases in 3.7 s against 4.8 s with 4.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get() * 4)
    }

    /// A system on `backend` with the setup commands and ping timeout of `config`.
    pub fn new(backend: Arc<dyn Backend>, config: &ScenarioConfig) -> Self {
        Self {
            backend,
            setup: config.machine.setup.clone(),
            timeout: Duration::from_millis(config.ping.timeout_ms),
        }
    }
}

impl System<PingModel> for PingSystem {
    type Instance = Box<dyn Network>;

    fn setup(&self, initial: &PingState) -> Result<Box<dyn Network>, Abort> {
        Ok(self.backend.create(&initial.network_spec(&self.setup))?)
    }

    fn run(
        &self,
        net: &mut Box<dyn Network>,
        s: &PingState,
        c: &PingCmd,
    ) -> Result<PingOutput, Abort> {
        match c {
            PingCmd::Boot { machine } => {
                let result = net
                    .boot(&[machine.as_str()])
                    .pop()
                    .expect("one result per machine");
                match result {
                    Ok(()) => Ok(PingOutput::Done(Ok(()))),
                    // The machine's own setup failed: that is the system's behaviour, which
                    // the postcondition judges. Everything else is the infrastructure's.
                    Err(e @ BootError::SetupFailed { .. }) => {
                        Ok(PingOutput::Done(Err(e.to_string())))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            PingCmd::Shutdown { machine } => {
                net.shutdown(machine)?;
                Ok(PingOutput::Done(Ok(())))
            }
            PingCmd::Ping { from, to } => {
                let target = s
                    .machine(to)
                    .ok_or_else(|| Abort::new(format!("no machine {to} in the model")))?;
                Ok(PingOutput::Reply(net.ping(
                    from,
                    target.ip,
                    self.timeout,
                )?))
            }
        }
    }

    fn teardown(&self, net: Box<dyn Network>) -> Result<(), Abort> {
        Ok(net.teardown()?)
    }
}
