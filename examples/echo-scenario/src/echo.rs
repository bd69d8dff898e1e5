//! The echo scenario: its model, its system, the service and its client.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use fleetcheck_engine::{check, Abort, Check, Gen, Model, System};
use fleetcheck_fabric::{
    Backend, ExecRequest, MachineSpec, MachineStatus, Network, NetworkSpec, ServiceVersion,
};
use fleetcheck_harness::report::capture::Inspect;
use fleetcheck_harness::report::timeline::Draw;
use fleetcheck_harness::Scenario;
use fleetcheck_scenarios::config::ScenarioConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The service's port.
const PORT: u16 = 7007;
/// The service's name on a machine's PATH: this binary, installed as a service version.
const SERVICE: &str = "echo-scenario";

/// One machine and its service's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub id: String,
    pub ip: Ipv4Addr,
    pub version: u32,
}

/// The machines and which are up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoState {
    pub machines: Vec<Machine>,
    pub up: Vec<String>,
}

/// What a case does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EchoCmd {
    /// Boots a machine; its setup command starts the service.
    Boot { machine: String },
    /// Machine `from` sends `message` to `to`'s service and reads the answer.
    Send {
        from: String,
        to: String,
        message: u32,
    },
}

/// What came back: the answer's text, `None` for no answer.
pub type EchoOutput = Result<Option<String>, String>;

/// The model: every message sent to a running machine comes back as it was.
#[derive(Debug)]
pub struct EchoModel {
    subnet: fleetcheck_fabric::Subnet,
}

impl Model for EchoModel {
    type State = EchoState;
    type Command = EchoCmd;
    type Output = EchoOutput;

    fn initial_state(&self, g: &mut Gen) -> EchoState {
        let n = g.range(1u64..=3);
        let machines = (1..=n)
            .map(|i| Machine {
                id: format!("m{i}"),
                ip: self.subnet.host(i).expect("a /24 has room for three"),
                version: g.range(1u32..=2),
            })
            .collect();
        EchoState {
            machines,
            up: Vec::new(),
        }
    }

    fn shrink_state(&self, s: &EchoState) -> Vec<EchoState> {
        // Fewer machines, then older versions.
        let mut out = Vec::new();
        if s.machines.len() > 1 {
            let mut fewer = s.clone();
            fewer.machines.pop();
            out.push(fewer);
        }
        for (i, m) in s.machines.iter().enumerate() {
            if m.version > 1 {
                let mut older = s.clone();
                older.machines[i].version = 1;
                out.push(older);
            }
        }
        out
    }

    fn command(&self, s: &EchoState, g: &mut Gen) -> Option<EchoCmd> {
        let ids: Vec<&String> = s.machines.iter().map(|m| &m.id).collect();
        let down: Vec<&String> = ids
            .iter()
            .copied()
            .filter(|id| !s.up.contains(id))
            .collect();
        if s.up.is_empty() || (!down.is_empty() && g.bool(0.2)) {
            return Some(EchoCmd::Boot {
                machine: (*g.choose(&down)?).clone(),
            });
        }
        Some(EchoCmd::Send {
            from: g.choose(&s.up)?.clone(),
            to: g.choose(&s.up)?.clone(),
            message: g.range(0u32..=999),
        })
    }

    fn precondition(&self, s: &EchoState, c: &EchoCmd) -> bool {
        let known = |id: &String| s.machines.iter().any(|m| &m.id == id);
        match c {
            EchoCmd::Boot { machine } => known(machine) && !s.up.contains(machine),
            EchoCmd::Send { from, to, .. } => s.up.contains(from) && s.up.contains(to),
        }
    }

    fn next_state(&self, s: &EchoState, c: &EchoCmd) -> EchoState {
        let mut next = s.clone();
        if let EchoCmd::Boot { machine } = c {
            next.up.push(machine.clone());
        }
        next
    }

    fn postcondition(&self, _s: &EchoState, c: &EchoCmd, out: &EchoOutput) -> Check {
        match (c, out) {
            (_, Err(e)) => Err(e.clone()),
            (EchoCmd::Boot { .. }, Ok(_)) => Ok(()),
            (EchoCmd::Send { to, message, .. }, Ok(answer)) => check(
                answer.as_deref() == Some(message.to_string().as_str()),
                || format!("{to} answered {answer:?} to {message}"),
            ),
        }
    }

    fn describe_command(&self, c: &EchoCmd) -> String {
        match c {
            EchoCmd::Boot { machine } => format!("boot {machine}"),
            EchoCmd::Send { from, to, message } => format!("send {message} from {from} to {to}"),
        }
    }
}

impl Draw for EchoModel {}

/// The in-process service of a fake machine: how many connections it has had since boot.
type FakeServices = BTreeMap<String, u32>;

/// The system: a network of the case's machines, each running the service.
#[derive(Debug)]
pub struct EchoSystem {
    backend: Arc<dyn Backend>,
    subnet: fleetcheck_fabric::Subnet,
    /// Whether the backend's machines run programs (the fake's run none).
    real: bool,
}

/// A network, and the services of a fake one.
pub struct Instance {
    net: Box<dyn Network>,
    fake: FakeServices,
}

/// Whether version `version` answers its `n`th connection since boot (1-based): version 2
/// drops every third. The planted fault, in one place for the real and the fake service.
fn answers(version: u32, n: u32) -> bool {
    !(version == 2 && n.is_multiple_of(3))
}

impl System<EchoModel> for EchoSystem {
    type Instance = Instance;

    fn setup(&self, s: &EchoState) -> Result<Instance, Abort> {
        let exe = std::env::current_exe().map_err(|e| Abort::new(e.to_string()))?;
        let spec = NetworkSpec {
            subnet: self.subnet,
            machines: s
                .machines
                .iter()
                .map(|m| MachineSpec {
                    id: m.id.clone(),
                    ip: m.ip,
                    memory_mb: 128,
                    kernel: String::new(),
                    // Start the service, then wait (at most 5 s) until it listens.
                    setup: vec![format!(
                        "rm -f \"$FLEETCHECK_DATA/echo.ready\"; \
                         setsid {SERVICE} serve {PORT} {} \"$FLEETCHECK_DATA/echo.ready\" \
                         </dev/null >>\"$FLEETCHECK_DATA/echo.log\" 2>&1 & \
                         for i in $(seq 100); do [ -e \"$FLEETCHECK_DATA/echo.ready\" ] && exit 0; \
                         sleep 0.05; done; echo 'the echo service did not start' >&2; exit 1",
                        m.version
                    )],
                    filesystem: None,
                    // This binary is the service: installed as one, it is on the machine's
                    // PATH wherever it lives on the host (a machine does not see the host's
                    // /tmp or /home, where a checkout may be).
                    services: BTreeMap::from([(
                        SERVICE.to_string(),
                        ServiceVersion {
                            version: m.version.to_string(),
                            path: exe.clone(),
                        },
                    )]),
                    ..Default::default()
                })
                .collect(),
        };
        Ok(Instance {
            net: self.backend.create(&spec)?,
            fake: FakeServices::new(),
        })
    }

    fn run(&self, i: &mut Instance, s: &EchoState, c: &EchoCmd) -> Result<EchoOutput, Abort> {
        match c {
            EchoCmd::Boot { machine } => {
                let result = i.net.boot(&[machine.as_str()]).pop().expect("one result");
                i.fake.insert(machine.clone(), 0);
                Ok(result.map(|()| None).map_err(|e| e.to_string()))
            }
            EchoCmd::Send { from, to, message } => {
                let target = s
                    .machines
                    .iter()
                    .find(|m| &m.id == to)
                    .ok_or_else(|| Abort::new(format!("no machine {to}")))?;
                if !self.real {
                    if i.net.status(to) != Some(MachineStatus::Running) {
                        return Ok(Ok(None));
                    }
                    let n = i.fake.entry(to.clone()).or_default();
                    *n += 1;
                    return Ok(Ok(answers(target.version, *n).then(|| message.to_string())));
                }
                let out = i.net.exec(
                    from,
                    &ExecRequest {
                        argv: vec![
                            SERVICE.to_string(),
                            "send".into(),
                            target.ip.to_string(),
                            PORT.to_string(),
                            message.to_string(),
                        ],
                        timeout: Duration::from_secs(10),
                    },
                )?;
                if !out.success() {
                    return Err(Abort::new(format!(
                        "the client failed: {}",
                        out.stderr_str().trim()
                    )));
                }
                let answer = out.stdout_str().trim().to_string();
                Ok(Ok((answer != "no answer").then_some(answer)))
            }
        }
    }

    fn teardown(&self, i: Instance) -> Result<(), Abort> {
        Ok(i.net.teardown()?)
    }
}

impl Inspect<EchoModel> for EchoSystem {
    fn network<'a>(&self, i: &'a Instance) -> Option<&'a dyn Network> {
        Some(i.net.as_ref())
    }
}

/// The scenario, for the harness's registry.
#[derive(Debug, Clone, Copy)]
pub struct Echo;

impl Scenario for Echo {
    type Model = EchoModel;
    type System = EchoSystem;

    fn name(&self) -> &'static str {
        "echo"
    }
    fn about(&self) -> &'static str {
        "a TCP echo service on each machine (example: version 2 drops every third message)"
    }
    fn model(&self, config: &ScenarioConfig, _system: Option<&str>) -> EchoModel {
        EchoModel {
            subnet: config.network.subnet,
        }
    }
    fn system(
        &self,
        config: &ScenarioConfig,
        _system: Option<&str>,
        backend: Arc<dyn Backend>,
    ) -> EchoSystem {
        EchoSystem {
            real: backend.name() != "fake",
            backend,
            subnet: config.network.subnet,
        }
    }
    fn machines(&self, s: &EchoState) -> Value {
        serde_json::to_value(&s.machines).unwrap_or(Value::Null)
    }
}

/// `serve PORT VERSION [READY]`: answers each connection's first line with itself, but
/// version 2 closes every third connection unanswered. Creates the file READY once it listens.
pub fn serve(args: &[String]) -> ExitCode {
    let (Some(port), Some(version)) = (
        args.first().and_then(|p| p.parse::<u16>().ok()),
        args.get(1).and_then(|v| v.parse::<u32>().ok()),
    ) else {
        eprintln!("echo-scenario: usage: serve PORT VERSION [READY]");
        return ExitCode::from(2);
    };
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("echo-scenario: cannot listen on port {port}: {e}");
            return ExitCode::from(3);
        }
    };
    println!("echo service version {version} on port {port}");
    if let Some(ready) = args.get(2) {
        if let Err(e) = std::fs::write(ready, "") {
            eprintln!("echo-scenario: cannot write {ready}: {e}");
            return ExitCode::from(3);
        }
    }
    for (n, conn) in (1u32..).zip(listener.incoming()) {
        let Ok(mut conn) = conn else { continue };
        if !answers(version, n) {
            println!("connection {n}: dropped");
            continue;
        }
        let mut line = String::new();
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        if BufReader::new(&conn).read_line(&mut line).is_ok() {
            let _ = conn.write_all(line.as_bytes());
            println!("connection {n}: echoed {}", line.trim());
        }
    }
    ExitCode::SUCCESS
}

/// `send IP PORT MESSAGE`: prints the answer, or `no answer`; exit code 0 either way.
pub fn send(args: &[String]) -> ExitCode {
    let [ip, port, message] = args else {
        eprintln!("echo-scenario: usage: send IP PORT MESSAGE");
        return ExitCode::from(2);
    };
    let answer = (|| {
        let addr = format!("{ip}:{port}").parse().ok()?;
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        conn.write_all(format!("{message}\n").as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line).ok()?;
        (!line.is_empty()).then(|| line.trim().to_string())
    })();
    println!("{}", answer.as_deref().unwrap_or("no answer"));
    ExitCode::SUCCESS
}
