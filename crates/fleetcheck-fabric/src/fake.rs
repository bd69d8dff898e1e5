//! An in-memory backend without any OS call, for engine and scenario tests.
//!
//! Machines only change between `Off` and `Running`. Rules, documented so tests can rely on them:
//!
//! - a setup command (or an exec'd command, judged by its `sh -c` argument or its joined argv)
//!   whose trimmed text is `false` or starts with `fail` fails with exit code 1 and stderr
//!   `planted failure`; every other command succeeds with empty output;
//! - `ping(from, to)` is `true` iff `from` is running and `to` is the address of a running
//!   machine, unless a planted fault ([`FakeBackend::with_fault`]) answers otherwise;
//! - every operation is counted ([`FakeBackend::stats`]) over all networks of the backend.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{Backend, Network};
use crate::error::{BootError, CreateError, ExecError, PingError, ShutdownError, TeardownError};
use crate::spec::{ExecOutput, ExecRequest, MachineSpec, MachineStatus, NetworkSpec};

/// A planted fault: `Some(answer)` overrides the answer of a ping from `from` to `to`.
pub type PingFault = Arc<dyn Fn(&FakeView<'_>, &str, Ipv4Addr) -> Option<bool> + Send + Sync>;

/// The in-memory backend.
#[derive(Clone, Default)]
pub struct FakeBackend {
    fault: Option<PingFault>,
    counters: Arc<Counters>,
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
        }
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
            }),
        }))
    }
}

/// What a planted fault may look at: the network and which machines run.
#[derive(Debug)]
pub struct FakeView<'a> {
    spec: &'a NetworkSpec,
    status: &'a BTreeMap<String, MachineStatus>,
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

    /// The machine with address `ip`.
    pub fn machine_by_ip(&self, ip: Ipv4Addr) -> Option<&MachineSpec> {
        self.spec.machines.iter().find(|m| m.ip == ip)
    }
}

struct State {
    status: BTreeMap<String, MachineStatus>,
    logs: BTreeMap<String, String>,
}

struct FakeNetwork {
    spec: NetworkSpec,
    fault: Option<PingFault>,
    counters: Arc<Counters>,
    state: Mutex<State>,
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

    fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecOutput, ExecError> {
        self.counters.execs.fetch_add(1, Ordering::Relaxed);
        let status = self
            .status(id)
            .ok_or_else(|| ExecError::UnknownMachine { machine: id.into() })?;
        if status != MachineStatus::Running {
            return Err(ExecError::WrongStatus {
                machine: id.into(),
                status,
            });
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

    fn ping(&self, from: &str, to: Ipv4Addr, _timeout: Duration) -> Result<bool, PingError> {
        self.counters.pings.fetch_add(1, Ordering::Relaxed);
        let state = self.lock();
        let from_status = *state
            .status
            .get(from)
            .ok_or_else(|| PingError::UnknownMachine {
                machine: from.into(),
            })?;
        let view = FakeView {
            spec: &self.spec,
            status: &state.status,
        };
        if let Some(answer) = self.fault.as_ref().and_then(|f| f(&view, from, to)) {
            return Ok(answer);
        }
        Ok(from_status == MachineStatus::Running
            && view
                .machine_by_ip(to)
                .is_some_and(|m| view.is_running(&m.id)))
    }

    fn logs(&self, id: &str) -> String {
        self.lock().logs.get(id).cloned().unwrap_or_default()
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
            id: id.into(),
            ip: ip.parse().unwrap(),
            memory_mb: 64,
            kernel: "6.1".into(),
            setup: setup.iter().map(|s| s.to_string()).collect(),
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
}
