use std::net::Ipv4Addr;

use fleetcheck_fabric::host::AgentCommand;
use fleetcheck_fabric::netns::{NetnsBackend, NetnsConfig};
use fleetcheck_fabric::{MachineSpec, NetworkSpec};

/// Whether the test may run: true when root. Not root: prints why and returns false, or panics
/// when `CI=true` (in CI a skip is a failure).
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root, and CI=true forbids skipping");
    }
    eprintln!("skipping {test}: needs root");
    false
}

pub fn backend() -> NetnsBackend {
    let agent = AgentCommand {
        program: env!("CARGO_BIN_EXE_fleetcheck-agent").into(),
        args: Vec::new(),
    };
    NetnsBackend::new(NetnsConfig::new(agent)).expect("this host runs the netns backend")
}

pub fn ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 16, 2, i)
}

/// Machines `m1..=mn` at 172.16.2.i/24 with 64 MiB, each with `setup(i)`.
pub fn spec(n: u8, setup: impl Fn(u8) -> Vec<String>) -> NetworkSpec {
    NetworkSpec {
        subnet: "172.16.2.0/24".parse().unwrap(),
        machines: (1..=n)
            .map(|i| MachineSpec {
                id: format!("m{i}"),
                ip: ip(i),
                memory_mb: 64 + u32::from(i),
                kernel: "host".into(),
                setup: setup(i),
                ..Default::default()
            })
            .collect(),
    }
}

/// Names of the namespace mounts of every run (`/run/fleetcheck/<run>/netns/*`) and in
/// `/run/netns` that start with `prefix`.
pub fn namespaces_with(prefix: &str) -> Vec<String> {
    let names = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let runs = std::path::Path::new("/run/fleetcheck");
    names(runs)
        .into_iter()
        .flat_map(|run| names(&runs.join(run).join("netns")))
        .chain(names(std::path::Path::new("/run/netns")))
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            !after.starts_with('Z')
        }
        Err(_) => false,
    }
}

/// A child test process that built a network and reported `RUN <run id> <agent pids...>`.
pub struct ChildRun {
    pub run: String,
    pub agents: Vec<i32>,
    child: std::process::Child,
}

/// Runs test `test` of this binary in a child process with `FLEETCHECK_TEST_CHILD=role`, and
/// waits for its `RUN` line.
pub fn spawn_child_run(test: &str, role: &str) -> ChildRun {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("FLEETCHECK_TEST_CHILD", role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("RUN ").map(|(_, r)| r.to_string()))
        .expect("child reports its run");
    let mut words = line.split_whitespace();
    let run = words.next().unwrap().to_string();
    let agents = words.map(|w| w.parse().unwrap()).collect();
    ChildRun { run, agents, child }
}

impl ChildRun {
    /// SIGKILL to the child and to its run's guardian (first): no handler, destructor or
    /// guardian removes anything, so what the run made stays for the sweep.
    pub fn kill(mut self) {
        let guardian =
            fleetcheck_fabric::host::guard::find(&self.run).expect("the run has a guardian");
        // SAFETY: SIGKILL to the guardian of our child's run, then to our own child.
        unsafe { libc::kill(guardian, libc::SIGKILL) };
        wait_gone(guardian, std::time::Duration::from_secs(5));
        // SAFETY: see above.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        self.child.wait().unwrap();
    }

    /// Lets the child go on past its wait for standard input, and waits for it to end.
    pub fn release(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }

    /// SIGKILL to the child only, as `kill -9` would: its guardian is left to clean up.
    /// Returns the guardian's pid.
    pub fn kill_run_only(mut self) -> i32 {
        let guardian =
            fleetcheck_fabric::host::guard::find(&self.run).expect("the run has a guardian");
        // SAFETY: SIGKILL to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        self.child.wait().unwrap();
        guardian
    }
}

/// Waits (bounded) until `pid` is gone or a zombie.
pub fn wait_gone(pid: i32, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while alive(pid) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    true
}
