use std::net::Ipv4Addr;
use std::time::Duration;

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

/// A program spawned into running machine `id` of `net`, on any backend that can: piped both
/// ways (also a line written in pieces), inside the machine (its hostname, its environment),
/// frozen with it, ended by `end` (also the processes it started), its output at its end once
/// the machine crashed; a machine that is off takes none. `wait`: how long an answer may take.
/// Returns the program's pid as the machine saw it.
pub fn check_spawned(net: &dyn fleetcheck_fabric::Network, id: &str, wait: Duration) -> i32 {
    use fleetcheck_fabric::{ExecError, ExecRequest};
    use std::io::{BufRead, BufReader, Write};
    use std::sync::mpsc;
    // Not the marker of `an_ended_spawned_program_leaves_no_orphan`, which may run beside.
    let marker = 800_000 + std::process::id() % 90_000;
    let mut program = net
        .spawn(
            id,
            &format!(
                r#"sleep {marker} & while read -r line; do echo "$line $(hostname) $$ $FLEETCHECK_DATA"; done"#
            ),
            "client.log",
        )
        .unwrap();
    let mut stdin = program.take_stdin().unwrap();
    let stdout = program.take_stdout().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // In two writes: the line is whole only with its second half.
    write!(stdin, "o").unwrap();
    stdin.flush().unwrap();
    writeln!(stdin, "ne").unwrap();
    stdin.flush().unwrap();
    let answer = rx.recv_timeout(wait).unwrap();
    let parts: Vec<&str> = answer.split_whitespace().collect();
    assert_eq!(parts[..2], ["one", id], "{answer}");
    let pid: i32 = parts[2].parse().unwrap();
    assert!(
        parts.get(3).is_some_and(|d| !d.is_empty()),
        "its environment: {answer}"
    );
    // Frozen with the machine: no answer while paused, the answer after.
    net.pause(id).unwrap();
    writeln!(stdin, "two").unwrap();
    stdin.flush().unwrap();
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "answered while paused"
    );
    net.resume(id).unwrap();
    let answer = rx.recv_timeout(wait).unwrap();
    assert!(answer.starts_with(&format!("two {id}")), "{answer}");
    // Ended with what it started.
    let sleeping = || {
        net.exec(
            id,
            &ExecRequest::shell(format!("pgrep -f '^sleep {marker}$'"))
                .with_timeout(Duration::from_secs(20)),
        )
        .unwrap()
        .success()
    };
    assert!(sleeping(), "its background sleep runs");
    drop(stdin);
    program.end();
    assert!(
        matches!(
            rx.recv_timeout(wait),
            Err(mpsc::RecvTimeoutError::Disconnected)
        ),
        "its output ends with it"
    );
    let started = std::time::Instant::now();
    while sleeping() {
        assert!(started.elapsed() < wait, "what it started outlived its end");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Ended while the machine is paused: at once, not when it thaws; gone once it does.
    let mut program = net
        .spawn(id, &format!("exec sleep {marker}"), "client.log")
        .unwrap();
    let started = std::time::Instant::now();
    while !sleeping() {
        assert!(started.elapsed() < wait, "never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    net.pause(id).unwrap();
    let ending = std::time::Instant::now();
    program.end();
    assert!(
        ending.elapsed() < Duration::from_secs(2),
        "ending a program of a paused machine took {:?}",
        ending.elapsed()
    );
    net.resume(id).unwrap();
    let started = std::time::Instant::now();
    while sleeping() {
        assert!(
            started.elapsed() < wait,
            "it outlived its end after the thaw"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Dead with the machine.
    let mut program = net.spawn(id, "cat", "client.log").unwrap();
    let stdout = program.take_stdout().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut { stdout }, &mut all);
        let _ = tx.send(());
    });
    net.crash(id).unwrap();
    rx.recv_timeout(wait)
        .expect("a program's output ends when its machine crashes");
    // A machine that is off takes none.
    let e = net.spawn(id, "cat", "client.log").unwrap_err();
    assert!(matches!(e, ExecError::WrongStatus { .. }), "{e}");
    pid
}
