//! An in-memory backend without any OS call, for engine and scenario tests.
//!
//! Machines are `Off`, `Running` or `Paused`. Rules, documented so tests can rely on them:
//!
//! - a setup command (or an exec'd command, judged by its `sh -c` argument or its joined argv)
//!   whose trimmed text is `false` or starts with `fail` fails with exit code 1 and stderr
//!   `planted failure`; every other command succeeds with empty output;
//! - `ping(from, to)` is `true` iff `from` is running and `to` is the address of a running
//!   machine, unless a planted fault ([`FakeBackend::with_fault`]) answers otherwise;
//! - faults follow the netns backend: a paused machine answers no ping and sends none
//!   (`Ok(false)` at once), and an exec on it waits until it is resumed, shut down (then
//!   `AgentLost`) or the request's timeout plus 5 s pass (then `NoAnswer`); a ping needs the
//!   request path `from → to` and the reply path `to → from` both uncut by partitions and blocks;
//!   a ping to oneself never crosses the switch, so no network fault touches it;
//! - loss is drawn from a generator seeded by [`FakeBackend::with_seed`] (0 by default), so a
//!   run is reproducible: like the agent, a ping makes one echo exchange per 10 ms of its
//!   timeout (at least one), each crossing the switch twice; every crossing drops with the
//!   loss percentage of the sending machine and then of the receiving one. 100% always drops,
//!   0% never does;
//! - `power_cut` follows the netns backend's checks (every machine known, then each with
//!   `lose_unsynced`, then each running or paused; else nothing changes) and turns them all off at once; the fake has
//!   no files, so there is nothing to lose;
//! - every operation is counted ([`FakeBackend::stats`]) over all networks of the backend.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{Backend, Network, ANSWER_MARGIN};
use crate::error::{
    BootError, CreateError, ExecError, FaultError, PingError, ServiceError, ShutdownError,
    TeardownError,
};
use crate::faults::Faults;
use crate::spec::{
    ExecOutput, ExecRequest, MachineSpec, MachineStatus, NetworkSpec, ServiceVersion,
};

/// A planted fault: `Some(answer)` overrides the answer of a ping from `from` to `to`.
pub type PingFault = Arc<dyn Fn(&FakeView<'_>, &str, Ipv4Addr) -> Option<bool> + Send + Sync>;

/// The in-memory backend.
#[derive(Clone, Default)]
pub struct FakeBackend {
    fault: Option<PingFault>,
    counters: Arc<Counters>,
    seed: u64,
}

impl fmt::Debug for FakeBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeBackend")
            .field("fault", &self.fault.is_some())
            .field("stats", &self.stats())
            .finish()
    }
}

#[derive(Debug, Default)]
struct Counters {
    creates: AtomicU64,
    boots: AtomicU64,
    shutdowns: AtomicU64,
    crashes: AtomicU64,
    power_cuts: AtomicU64,
    execs: AtomicU64,
    pings: AtomicU64,
    teardowns: AtomicU64,
}

/// How often each operation was called (successful or not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FakeStats {
    pub creates: u64,
    /// Machines asked to boot (a `boot(&["a", "b"])` counts 2).
    pub boots: u64,
    pub shutdowns: u64,
    pub crashes: u64,
    /// Calls of `power_cut` (one for a coordinated cut of several machines).
    pub power_cuts: u64,
    pub execs: u64,
    pub pings: u64,
    pub teardowns: u64,
}

impl FakeBackend {
    /// A fake without faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake whose ping answers `fault` may override.
    pub fn with_fault(fault: PingFault) -> Self {
        FakeBackend {
            fault: Some(fault),
            counters: Arc::default(),
            seed: 0,
        }
    }

    /// The same fake, whose networks draw packet loss from `seed`.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Operation counts so far.
    pub fn stats(&self) -> FakeStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FakeStats {
            creates: l(&c.creates),
            boots: l(&c.boots),
            shutdowns: l(&c.shutdowns),
            crashes: l(&c.crashes),
            power_cuts: l(&c.power_cuts),
            execs: l(&c.execs),
            pings: l(&c.pings),
            teardowns: l(&c.teardowns),
        }
    }
}

impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn create(&self, spec: &NetworkSpec) -> Result<Box<dyn Network>, CreateError> {
        self.counters.creates.fetch_add(1, Ordering::Relaxed);
        spec.validate().map_err(CreateError::InvalidSpec)?;
        let status = spec
            .machines
            .iter()
            .map(|m| (m.id.clone(), MachineStatus::Off))
            .collect();
        Ok(Box::new(FakeNetwork {
            spec: spec.clone(),
            fault: self.fault.clone(),
            counters: self.counters.clone(),
            state: Mutex::new(State {
                status,
                logs: BTreeMap::new(),
                faults: Faults::default(),
                rng: self.seed,
                services: spec
                    .machines
                    .iter()
                    .map(|m| (m.id.clone(), m.services.clone()))
                    .collect(),
            }),
            changed: Condvar::new(),
        }))
    }
}

/// What a planted fault may look at: the network and which machines run.
#[derive(Debug)]
pub struct FakeView<'a> {
    spec: &'a NetworkSpec,
    status: &'a BTreeMap<String, MachineStatus>,
    services: &'a BTreeMap<String, BTreeMap<String, ServiceVersion>>,
}

impl FakeView<'_> {
    /// The network's spec.
    pub fn spec(&self) -> &NetworkSpec {
        self.spec
    }

    /// Whether machine `id` is running.
    pub fn is_running(&self, id: &str) -> bool {
        self.status.get(id) == Some(&MachineStatus::Running)
    }

    /// Ids of the running machines, in spec order.
    pub fn running(&self) -> Vec<&str> {
        self.spec
            .machines
            .iter()
            .filter(|m| self.is_running(&m.id))
            .map(|m| m.id.as_str())
            .collect()
    }

    /// The version of `service` machine `id` runs now (after any `set_service`).
    pub fn version(&self, id: &str, service: &str) -> Option<&str> {
        self.services
            .get(id)?
            .get(service)
            .map(|v| v.version.as_str())
    }

    /// The machine with address `ip`.
    pub fn machine_by_ip(&self, ip: Ipv4Addr) -> Option<&MachineSpec> {
        self.spec.machines.iter().find(|m| m.ip == ip)
    }
}

struct State {
    status: BTreeMap<String, MachineStatus>,
    logs: BTreeMap<String, String>,
    faults: Faults,
    /// splitmix64 state for packet loss.
    rng: u64,
    /// Service versions replaced by `set_service`, by machine.
    services: BTreeMap<String, BTreeMap<String, ServiceVersion>>,
}

impl State {
    /// Next number of the loss generator (splitmix64).
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Whether one frame from machine `a` to machine `b` crosses the switch.
    fn crosses(&mut self, a: usize, b: usize) -> bool {
        if self.faults.is_cut(a, b) {
            return false;
        }
        for i in [a, b] {
            let loss = self.faults.loss_of(i);
            if loss > 0 && self.next() % 100 < u64::from(loss) {
                return false;
            }
        }
        true
    }
}

struct FakeNetwork {
    spec: NetworkSpec,
    fault: Option<PingFault>,
    counters: Arc<Counters>,
    state: Mutex<State>,
    /// Signalled whenever a machine's status changes (a waiting exec on a paused machine).
    changed: Condvar,
}

/// Whether the fake treats `cmd` as a failing command.
pub fn is_planted_failure(cmd: &str) -> bool {
    let cmd = cmd.trim();
    cmd == "false" || cmd.starts_with("fail")
}

impl FakeNetwork {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn boot_one(&self, state: &mut State, id: &str) -> Result<(), BootError> {
        let spec = self
            .spec
            .machine(id)
            .ok_or_else(|| BootError::UnknownMachine { machine: id.into() })?;
        let status = state.status[id];
        if !status.can_boot() {
            return Err(BootError::WrongStatus {
                machine: id.into(),
                status,
            });
        }
        let log = state.logs.entry(id.into()).or_default();
        log.push_str(&format!("agent: boot {id}\n"));
        for cmd in &spec.setup {
            log.push_str(&format!("agent: setup `{cmd}`\n"));
            if is_planted_failure(cmd) {
                log.push_str("planted failure\n");
                return Err(BootError::SetupFailed {
                    machine: id.into(),
                    command: cmd.clone(),
                    status: "exit code 1".into(),
                    stderr: "planted failure".into(),
                });
            }
        }
        log.push_str("agent: ready\n");
        state.status.insert(id.into(), MachineStatus::Running);
        Ok(())
    }

    fn power_off(&self, id: &str) -> Result<(), ShutdownError> {
        let mut state = self.lock();
        let status = *state
            .status
            .get(id)
            .ok_or_else(|| ShutdownError::UnknownMachine { machine: id.into() })?;
        if !status.can_shutdown() {
            return Err(ShutdownError::WrongStatus {
                machine: id.into(),
                status,
            });
        }
        state.status.insert(id.into(), MachineStatus::Off);
        self.changed.notify_all();
        Ok(())
    }

    /// Moves machine `id` from status `from` to `to`, for pause and resume.
    fn switch_status(
        &self,
        id: &str,
        allowed: fn(MachineStatus) -> bool,
        operation: &'static str,
        to: MachineStatus,
    ) -> Result<(), FaultError> {
        let mut state = self.lock();
        let status = *state
            .status
            .get(id)
            .ok_or_else(|| FaultError::UnknownMachine { machine: id.into() })?;
        if !allowed(status) {
            return Err(FaultError::WrongStatus {
                machine: id.into(),
                status,
                operation,
            });
        }
        state.status.insert(id.into(), to);
        self.changed.notify_all();
        Ok(())
    }

    /// Changes the faults in force by `change`, if it accepts the call.
    fn change_faults(
        &self,
        change: impl FnOnce(&mut Faults) -> Result<(), FaultError>,
    ) -> Result<(), FaultError> {
        let mut state = self.lock();
        let mut next = state.faults.clone();
        change(&mut next)?;
        state.faults = next;
        Ok(())
    }
}

impl Network for FakeNetwork {
    fn spec(&self) -> &NetworkSpec {
        &self.spec
    }

    fn status(&self, id: &str) -> Option<MachineStatus> {
        self.lock().status.get(id).copied()
    }

    fn boot(&self, ids: &[&str]) -> Vec<Result<(), BootError>> {
        self.counters
            .boots
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
        let mut state = self.lock();
        ids.iter()
            .enumerate()
            .map(|(i, id)| {
                if ids[..i].contains(id) {
                    return Err(BootError::Duplicate {
                        machine: (*id).into(),
                    });
                }
                self.boot_one(&mut state, id)
            })
            .collect()
    }

    fn shutdown(&self, id: &str) -> Result<(), ShutdownError> {
        self.counters.shutdowns.fetch_add(1, Ordering::Relaxed);
        self.power_off(id)
    }

    fn crash(&self, id: &str) -> Result<(), ShutdownError> {
        self.counters.crashes.fetch_add(1, Ordering::Relaxed);
        self.power_off(id)
    }

    fn power_cut(&self, ids: &[&str]) -> Result<(), FaultError> {
        self.counters.power_cuts.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        for id in ids {
            if !state.status.contains_key(*id) {
                return Err(FaultError::UnknownMachine {
                    machine: (*id).into(),
                });
            }
        }
        for id in ids {
            if !self.spec.machine(id).is_some_and(|m| m.lose_unsynced) {
                return Err(FaultError::NotVolatile {
                    machine: (*id).into(),
                });
            }
        }
        for id in ids {
            let status = state.status[*id];
            if !status.can_shutdown() {
                return Err(FaultError::WrongStatus {
                    machine: (*id).into(),
                    status,
                    operation: "lose power",
                });
            }
        }
        for id in ids {
            state.status.insert((*id).into(), MachineStatus::Off);
        }
        self.changed.notify_all();
        Ok(())
    }

    /// As on netns: the machine known and with the disk layer (nothing fails in memory).
    fn disk_error(&self, id: &str, _error: Option<crate::DiskError>) -> Result<(), FaultError> {
        if !self.lock().status.contains_key(id) {
            return Err(FaultError::UnknownMachine { machine: id.into() });
        }
        if !self.spec.machine(id).is_some_and(|m| m.lose_unsynced) {
            return Err(FaultError::NotVolatile { machine: id.into() });
        }
        Ok(())
    }

    /// As on qemu: the machine known and running, the numbers valid (nothing is delayed in
    /// memory).
    fn netem(&self, id: &str, netem: Option<crate::Netem>) -> Result<(), FaultError> {
        let status = self
            .status(id)
            .ok_or_else(|| FaultError::UnknownMachine { machine: id.into() })?;
        if let Some(n) = netem.filter(|n| !n.valid()) {
            return Err(FaultError::BadNetem { netem: n });
        }
        if status != MachineStatus::Running {
            return Err(FaultError::WrongStatus {
                machine: id.into(),
                status,
                operation: "have its link changed",
            });
        }
        Ok(())
    }

    /// As on netns: the machine known, with a clock to move, running (no program in memory
    /// reads a clock).
    fn set_clock(&self, id: &str, _offset_s: i64) -> Result<(), FaultError> {
        let status = self
            .status(id)
            .ok_or_else(|| FaultError::UnknownMachine { machine: id.into() })?;
        if !self.spec.machine(id).is_some_and(|m| m.clock) {
            return Err(FaultError::NoClock { machine: id.into() });
        }
        if status != MachineStatus::Running {
            return Err(FaultError::WrongStatus {
                machine: id.into(),
                status,
                operation: "have its clock moved",
            });
        }
        Ok(())
    }

    fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecOutput, ExecError> {
        self.counters.execs.fetch_add(1, Ordering::Relaxed);
        let status = self
            .status(id)
            .ok_or_else(|| ExecError::UnknownMachine { machine: id.into() })?;
        if !status.can_exec() {
            return Err(ExecError::WrongStatus {
                machine: id.into(),
                status,
            });
        }
        if status == MachineStatus::Paused {
            // As on netns: the request waits in the frozen agent.
            let wait = req.timeout + ANSWER_MARGIN;
            let deadline = Instant::now() + wait;
            let mut state = self.lock();
            loop {
                match state.status.get(id).copied() {
                    Some(MachineStatus::Running) => break,
                    Some(MachineStatus::Paused) => {}
                    _ => return Err(ExecError::AgentLost { machine: id.into() }),
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ExecError::NoAnswer {
                        machine: id.into(),
                        after: wait,
                    });
                }
                state = self
                    .changed
                    .wait_timeout(state, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        let text = match req.argv.as_slice() {
            [] => return Err(ExecError::EmptyCommand { machine: id.into() }),
            [sh, c, cmd] if sh == "sh" && c == "-c" => cmd.clone(),
            argv => argv.join(" "),
        };
        if is_planted_failure(&text) {
            Ok(ExecOutput {
                status: Some(1),
                stderr: b"planted failure".to_vec(),
                ..ExecOutput::default()
            })
        } else {
            Ok(ExecOutput {
                status: Some(0),
                ..ExecOutput::default()
            })
        }
    }

    fn ping(&self, from: &str, to: Ipv4Addr, timeout: Duration) -> Result<bool, PingError> {
        self.counters.pings.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        let from_status = *state
            .status
            .get(from)
            .ok_or_else(|| PingError::UnknownMachine {
                machine: from.into(),
            })?;
        let view = FakeView {
            spec: &self.spec,
            status: &state.status,
            services: &state.services,
        };
        if let Some(answer) = self.fault.as_ref().and_then(|f| f(&view, from, to)) {
            return Ok(answer);
        }
        let target = view.machine_by_ip(to).map(|m| m.id.clone());
        if from_status != MachineStatus::Running
            || !target.as_ref().is_some_and(|t| view.is_running(t))
        {
            return Ok(false);
        }
        let position = |id: &str| {
            self.spec
                .machines
                .iter()
                .position(|m| m.id == id)
                .expect("ids in the status map are machines of the spec")
        };
        let (a, b) = (position(from), position(&target.expect("checked above")));
        if a == b {
            return Ok(true);
        }
        let exchanges = (timeout.as_millis() / 10).clamp(1, 10_000);
        for _ in 0..exchanges {
            if state.crosses(a, b) && state.crosses(b, a) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn pause(&self, id: &str) -> Result<(), FaultError> {
        self.switch_status(id, MachineStatus::can_pause, "pause", MachineStatus::Paused)
    }

    fn resume(&self, id: &str) -> Result<(), FaultError> {
        self.switch_status(
            id,
            MachineStatus::can_resume,
            "resume",
            MachineStatus::Running,
        )
    }

    fn partition(&self, groups: &[Vec<String>]) -> Result<(), FaultError> {
        self.change_faults(|f| f.partition(&self.spec, groups))
    }

    fn block(&self, from: &str, to: &str) -> Result<(), FaultError> {
        self.change_faults(|f| f.block(&self.spec, from, to))
    }

    fn loss(&self, id: &str, percent: u8) -> Result<(), FaultError> {
        self.change_faults(|f| f.set_loss(&self.spec, id, percent))
    }

    fn heal(&self) -> Result<(), FaultError> {
        self.change_faults(|f| {
            f.heal();
            Ok(())
        })
    }

    fn logs(&self, id: &str) -> String {
        self.lock().logs.get(id).cloned().unwrap_or_default()
    }

    fn services(&self, id: &str) -> Option<BTreeMap<String, ServiceVersion>> {
        self.lock().services.get(id).cloned()
    }

    fn set_service(
        &self,
        id: &str,
        service: &str,
        version: &ServiceVersion,
    ) -> Result<(), ServiceError> {
        let mut st = self.lock();
        let status = *st
            .status
            .get(id)
            .ok_or_else(|| ServiceError::UnknownMachine { machine: id.into() })?;
        crate::backend::check_set_service(id, status, false, service, version)?;
        st.services
            .entry(id.to_string())
            .or_default()
            .insert(service.to_string(), version.clone());
        Ok(())
    }

    fn teardown(self: Box<Self>) -> Result<(), TeardownError> {
        self.counters.teardowns.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NetworkSpec {
        let m = |id: &str, ip: &str, setup: &[&str]| MachineSpec {
            setup: setup.iter().map(|s| s.to_string()).collect(),
            ..MachineSpec::new(id, ip.parse().unwrap(), 64, "6.1")
        };
        NetworkSpec {
            subnet: "10.1.0.0/24".parse().unwrap(),
            machines: vec![
                m("a", "10.1.0.1", &["echo hi"]),
                m("b", "10.1.0.2", &[]),
                m("c", "10.1.0.3", &["true", "fail now"]),
            ],
        }
    }

    const T: Duration = Duration::from_millis(10);

    #[test]
    fn boot_ping_shutdown() {
        let backend = FakeBackend::new();
        let net = backend.create(&spec()).unwrap();
        assert_eq!(net.status("a"), Some(MachineStatus::Off));
        assert_eq!(net.status("zz"), None);
        let b = "10.1.0.2".parse().unwrap();
        assert!(!net.ping("a", b, T).unwrap());
        let res = net.boot(&["a", "b"]);
        assert!(res.iter().all(Result::is_ok));
        assert!(net.ping("a", b, T).unwrap());
        assert!(matches!(
            net.boot(&["a"])[0],
            Err(BootError::WrongStatus { .. })
        ));
        net.shutdown("b").unwrap();
        assert!(!net.ping("a", b, T).unwrap());
        assert!(matches!(
            net.crash("b"),
            Err(ShutdownError::WrongStatus { .. })
        ));
        assert!(matches!(
            net.ping("nope", b, T),
            Err(PingError::UnknownMachine { .. })
        ));
        let stats = backend.stats();
        assert_eq!(stats.boots, 3);
        assert_eq!(stats.pings, 4);
        assert_eq!(stats.shutdowns, 1);
        assert_eq!(stats.crashes, 1);
        net.teardown().unwrap();
        assert_eq!(backend.stats().teardowns, 1);
    }

    #[test]
    fn failing_setup_is_a_boot_error() {
        let net = FakeBackend::new().create(&spec()).unwrap();
        let res = net.boot(&["c", "a"]);
        match &res[0] {
            Err(BootError::SetupFailed {
                machine, command, ..
            }) => {
                assert_eq!(machine, "c");
                assert_eq!(command, "fail now");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(res[1].is_ok());
        assert_eq!(net.status("c"), Some(MachineStatus::Off));
        assert!(net.logs("a").contains("ready"));
        assert!(net.logs("c").contains("planted failure"));
    }

    #[test]
    fn planted_fault_overrides_ping() {
        let fault: PingFault = Arc::new(|view: &FakeView<'_>, _from: &str, _to: Ipv4Addr| {
            (view.is_running("a") && view.is_running("b")).then_some(false)
        });
        let net = FakeBackend::with_fault(fault).create(&spec()).unwrap();
        let b = "10.1.0.2".parse().unwrap();
        net.boot(&["a"]);
        assert!(net.ping("a", "10.1.0.1".parse().unwrap(), T).unwrap());
        net.boot(&["b"]);
        assert!(!net.ping("a", b, T).unwrap());
        net.shutdown("a").unwrap();
        assert!(net.ping("b", b, T).unwrap());
    }

    #[test]
    fn power_cut_checks_every_machine_first_then_turns_them_off() {
        let mut spec = spec();
        spec.machines[0].lose_unsynced = true;
        spec.machines[1].lose_unsynced = true;
        let backend = FakeBackend::new();
        let net = backend.create(&spec).unwrap();
        net.boot(&["a", "b"]);
        assert!(matches!(
            net.power_cut(&["a", "c"]),
            Err(FaultError::NotVolatile { machine }) if machine == "c"
        ));
        assert!(matches!(
            net.power_cut(&["a", "x"]),
            Err(FaultError::UnknownMachine { .. })
        ));
        assert_eq!(net.status("a"), Some(MachineStatus::Running));
        net.pause("b").unwrap();
        net.power_cut(&["a", "b"]).unwrap();
        assert_eq!(net.status("a"), Some(MachineStatus::Off));
        assert_eq!(net.status("b"), Some(MachineStatus::Off));
        assert!(matches!(
            net.power_cut(&["a"]),
            Err(FaultError::WrongStatus {
                operation: "lose power",
                ..
            })
        ));
        assert_eq!(backend.stats().power_cuts, 4);
    }

    #[test]
    fn exec_follows_the_failure_rule() {
        let net = FakeBackend::new().create(&spec()).unwrap();
        assert!(matches!(
            net.exec("a", &ExecRequest::shell("true")),
            Err(ExecError::WrongStatus { .. })
        ));
        net.boot(&["a"]);
        assert!(net
            .exec("a", &ExecRequest::shell("true"))
            .unwrap()
            .success());
        assert!(!net
            .exec("a", &ExecRequest::shell("false"))
            .unwrap()
            .success());
    }

    #[test]
    fn invalid_spec_is_rejected() {
        let mut s = spec();
        s.machines[1].ip = s.machines[0].ip;
        assert!(matches!(
            FakeBackend::new().create(&s),
            Err(CreateError::InvalidSpec(_))
        ));
    }

    fn ips() -> (Ipv4Addr, Ipv4Addr, Ipv4Addr) {
        (
            "10.1.0.1".parse().unwrap(),
            "10.1.0.2".parse().unwrap(),
            "10.1.0.3".parse().unwrap(),
        )
    }

    fn three_running() -> Box<dyn Network> {
        let mut s = spec();
        s.machines[2].setup.clear();
        let net = FakeBackend::new().create(&s).unwrap();
        assert!(net.boot(&["a", "b", "c"]).iter().all(Result::is_ok));
        net
    }

    #[test]
    fn paused_machine_answers_nothing_and_exec_waits_for_resume() {
        let net = three_running();
        let (a, b, _) = ips();
        assert!(matches!(
            net.resume("a"),
            Err(FaultError::WrongStatus { .. })
        ));
        net.pause("b").unwrap();
        assert_eq!(net.status("b"), Some(MachineStatus::Paused));
        assert!(matches!(
            net.pause("b"),
            Err(FaultError::WrongStatus { .. })
        ));
        assert!(!net.ping("a", b, T).unwrap());
        assert!(
            !net.ping("b", a, T).unwrap(),
            "a paused machine sends nothing"
        );
        assert!(matches!(
            net.boot(&["b"])[0],
            Err(BootError::WrongStatus { .. })
        ));
        std::thread::scope(|s| {
            let waiting = s.spawn(|| {
                let started = Instant::now();
                let out = net.exec("b", &ExecRequest::shell("true")).unwrap();
                (out, started.elapsed())
            });
            std::thread::sleep(Duration::from_millis(50));
            net.resume("b").unwrap();
            let (out, took) = waiting.join().unwrap();
            assert!(out.success());
            assert!(took >= Duration::from_millis(40), "exec waited for resume");
        });
        assert!(net.ping("a", b, T).unwrap());
    }

    #[test]
    fn paused_machine_can_be_shut_down_and_its_waiting_exec_is_lost() {
        let net = three_running();
        net.pause("c").unwrap();
        std::thread::scope(|s| {
            let waiting = s.spawn(|| net.exec("c", &ExecRequest::shell("true")));
            std::thread::sleep(Duration::from_millis(20));
            net.crash("c").unwrap();
            assert!(matches!(
                waiting.join().unwrap(),
                Err(ExecError::AgentLost { .. })
            ));
        });
        assert_eq!(net.status("c"), Some(MachineStatus::Off));
        net.boot(&["c"]).remove(0).unwrap();
        let out = net.exec(
            "c",
            &ExecRequest::shell("true").with_timeout(Duration::ZERO),
        );
        assert!(out.unwrap().success(), "a rebooted machine is not paused");
    }

    #[test]
    fn partition_block_and_heal() {
        let net = three_running();
        let (a, b, c) = ips();
        net.partition(&[vec!["a".into(), "b".into()], vec!["c".into()]])
            .unwrap();
        assert!(net.ping("a", b, T).unwrap() && net.ping("b", a, T).unwrap());
        assert!(!net.ping("a", c, T).unwrap() && !net.ping("c", a, T).unwrap());
        assert!(!net.ping("b", c, T).unwrap() && !net.ping("c", b, T).unwrap());
        assert!(
            net.ping("c", c, T).unwrap(),
            "a machine still reaches itself"
        );
        net.heal().unwrap();
        assert!(net.ping("a", c, T).unwrap() && net.ping("c", b, T).unwrap());
        // One-way: a ping needs both ways, so it fails both ways; the rest pass.
        net.block("a", "c").unwrap();
        assert!(!net.ping("a", c, T).unwrap() && !net.ping("c", a, T).unwrap());
        assert!(net.ping("b", c, T).unwrap() && net.ping("a", b, T).unwrap());
        assert!(matches!(
            net.block("a", "zz"),
            Err(FaultError::UnknownMachine { .. })
        ));
        // Faults survive a reboot.
        net.shutdown("c").unwrap();
        net.boot(&["c"]).remove(0).unwrap();
        assert!(!net.ping("a", c, T).unwrap());
        net.heal().unwrap();
        assert!(net.ping("a", c, T).unwrap());
    }

    #[test]
    fn loss_is_seeded_and_bounded_by_its_extremes() {
        let net = three_running();
        let (_, _, c) = ips();
        net.loss("c", 100).unwrap();
        assert!((0..50).all(|_| !net.ping("a", c, Duration::from_secs(1)).unwrap()));
        net.loss("c", 0).unwrap();
        assert!((0..50).all(|_| net.ping("a", c, T).unwrap()));
        net.loss("c", 50).unwrap();
        net.partition(&[vec!["b".into()]]).unwrap();
        assert!(
            !net.ping("a", "10.1.0.2".parse().unwrap(), T).unwrap(),
            "faults add up"
        );
        let answered = |seed: u64| {
            let mut s = spec();
            s.machines[2].setup.clear();
            let net = FakeBackend::new().with_seed(seed).create(&s).unwrap();
            net.boot(&["a", "c"]);
            net.loss("c", 50).unwrap();
            (0..200).filter(|_| net.ping("a", c, T).unwrap()).count()
        };
        let first = answered(7);
        // One exchange crosses c's lossy port twice: 25% get through.
        assert!((20..=80).contains(&first), "{first} of 200 answered");
        assert_eq!(answered(7), first, "the same seed, the same drops");
        assert!(matches!(
            net.loss("c", 101),
            Err(FaultError::BadPercent { .. })
        ));
    }
}
