use std::time::{Duration, Instant};

use fleetcheck_fabric::{Backend, BootError, ExecError, ExecRequest, MachineStatus, ShutdownError};

use crate::support::{backend, ip, require_root, spec};

const PING: Duration = Duration::from_secs(2);
const OFFLINE: Duration = Duration::from_millis(200);

#[test]
fn boot_shutdown_ping_three_machines() {
    if !require_root("boot_shutdown_ping_three_machines") {
        return;
    }
    let backend = backend();
    let net = backend.create(&spec(3, |_| vec![])).unwrap();
    assert_eq!(net.status("m1"), Some(MachineStatus::Off));
    for r in net.boot(&["m1", "m2", "m3"]) {
        r.unwrap();
    }
    assert_eq!(net.status("m2"), Some(MachineStatus::Running));
    assert!(net.ping("m1", ip(2), PING).unwrap());
    assert!(net.ping("m3", ip(1), PING).unwrap());
    assert!(
        net.ping("m2", ip(2), PING).unwrap(),
        "a machine reaches itself"
    );
    assert!(matches!(
        net.boot(&["m1"])[0],
        Err(BootError::WrongStatus { .. })
    ));

    net.shutdown("m2").unwrap();
    assert_eq!(net.status("m2"), Some(MachineStatus::Off));
    assert!(!net.ping("m1", ip(2), OFFLINE).unwrap());
    assert!(
        !net.ping("m2", ip(1), OFFLINE).unwrap(),
        "an off machine gets no reply"
    );
    assert!(matches!(
        net.shutdown("m2"),
        Err(ShutdownError::WrongStatus { .. })
    ));
    assert!(matches!(
        net.exec("m2", &ExecRequest::shell("true")),
        Err(ExecError::WrongStatus { .. })
    ));

    net.boot(&["m2"]).remove(0).unwrap();
    assert!(net.ping("m1", ip(2), PING).unwrap(), "reboot works");
    net.crash("m3").unwrap();
    assert!(!net.ping("m2", ip(3), OFFLINE).unwrap());
    assert!(
        net.logs("m2").matches("ready").count() >= 2,
        "logs span boots"
    );
    net.teardown().unwrap();
}

#[test]
fn hostname_memory_limit_and_pid_namespace_apply() {
    if !require_root("hostname_memory_limit_and_pid_namespace_apply") {
        return;
    }
    let backend = backend();
    let net = backend.create_netns(&spec(2, |_| vec![])).unwrap();
    use fleetcheck_fabric::Network;
    net.boot(&["m1", "m2"]).into_iter().for_each(|r| r.unwrap());
    let out = net
        .exec(
            "m2",
            &ExecRequest::shell("hostname; echo $$; cat /proc/self/cgroup"),
        )
        .unwrap();
    assert!(out.success(), "{out:?}");
    let text = out.stdout_str();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("m2"));
    let pid: i32 = lines.next().unwrap().parse().unwrap();
    assert!(
        pid < 100,
        "commands run in the machine's own pid namespace, got pid {pid}"
    );
    let cgroup = net.cgroup_of("m2").unwrap();
    let limit_file = backend.cgroups().limit_file(&cgroup);
    let limit: u64 = std::fs::read_to_string(limit_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(limit, 66 * 1024 * 1024);
    // Its cgroup namespace is rooted at its own cgroups: every hierarchy shows `/`.
    let cgroups: Vec<&str> = lines.collect();
    assert!(!cgroups.is_empty());
    for line in &cgroups {
        assert!(
            line.ends_with(":/"),
            "a machine sees only its own cgroups: {text}"
        );
    }
    let agent = net.agent_pid("m2").unwrap();
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l.trim() == agent.to_string()));
}

#[test]
fn failing_setup_command_is_a_boot_error_with_stderr() {
    if !require_root("failing_setup_command_is_a_boot_error_with_stderr") {
        return;
    }
    let backend = backend();
    let net = backend
        .create(&spec(2, |i| {
            if i == 2 {
                vec![
                    "true".into(),
                    "echo broken >&2; exit 3".into(),
                    "true".into(),
                ]
            } else {
                vec!["echo fine".into()]
            }
        }))
        .unwrap();
    let res = net.boot(&["m1", "m2"]);
    assert!(res[0].is_ok());
    match &res[1] {
        Err(BootError::SetupFailed {
            machine,
            command,
            status,
            stderr,
        }) => {
            assert_eq!(machine, "m2");
            assert_eq!(command, "echo broken >&2; exit 3");
            assert_eq!(status, "exit code 3");
            assert_eq!(stderr, "broken");
        }
        other => panic!("expected SetupFailed, got {other:?}"),
    }
    assert_eq!(net.status("m2"), Some(MachineStatus::Off));
    assert!(!net.ping("m1", ip(2), OFFLINE).unwrap());
    assert!(net.logs("m2").contains("broken"));
    assert!(net.logs("m1").contains("fine"));
}

#[test]
fn nft_rule_dropping_echo_requests_makes_pings_fail() {
    if !require_root("nft_rule_dropping_echo_requests_makes_pings_fail") {
        return;
    }
    let backend = backend();
    let net = backend
        .create(&spec(2, |i| {
            if i == 2 {
                vec!["nft add table inet t && nft add chain inet t input '{ type filter hook input priority 0; }' && nft add rule inet t input icmp type echo-request drop".into()]
            } else {
                vec![]
            }
        }))
        .unwrap();
    net.boot(&["m1", "m2"]).into_iter().for_each(|r| r.unwrap());
    assert!(!net.ping("m1", ip(2), Duration::from_millis(300)).unwrap());
    assert!(
        net.ping("m2", ip(1), PING).unwrap(),
        "only m2's input is filtered"
    );
    let host_rules = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&host_rules.stdout).contains("inet t\n"),
        "the rule stayed inside the machine"
    );
}

#[test]
fn exec_is_concurrent_and_times_out() {
    if !require_root("exec_is_concurrent_and_times_out") {
        return;
    }
    let backend = backend();
    let net = backend.create(&spec(2, |_| vec![])).unwrap();
    net.boot(&["m1", "m2"]).into_iter().for_each(|r| r.unwrap());
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..8 {
            let net = &net;
            s.spawn(move || {
                let id = if t % 2 == 0 { "m1" } else { "m2" };
                let out = net
                    .exec(
                        id,
                        &ExecRequest::shell(format!(
                            "sleep 0.3; echo {t}; echo e{t} >&2; exit {}",
                            t % 3
                        )),
                    )
                    .unwrap();
                assert_eq!(out.stdout_str(), format!("{t}\n"));
                assert_eq!(out.stderr_str(), format!("e{t}\n"));
                assert_eq!(out.status, Some(t % 3));
            });
        }
    });
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "execs ran concurrently"
    );

    let started = Instant::now();
    let out = net
        .exec(
            "m1",
            &ExecRequest::shell("sleep 30 & sleep 30; echo never")
                .with_timeout(Duration::from_millis(200)),
        )
        .unwrap();
    assert!(out.timed_out);
    assert_eq!(out.signal, Some(libc::SIGKILL));
    assert!(started.elapsed() < Duration::from_secs(5));
    let orphans = net
        .exec(
            "m1",
            &ExecRequest::shell("ps -e -o stat= | grep -c Z || true"),
        )
        .unwrap();
    assert_eq!(orphans.stdout_str().trim(), "0", "PID 1 reaps orphans");
    assert!(matches!(
        net.exec(
            "m1",
            &ExecRequest {
                argv: vec!["/no/such/program".into()],
                timeout: PING
            }
        ),
        Err(ExecError::Spawn { .. })
    ));
    assert!(matches!(
        net.exec("nope", &ExecRequest::shell("true")),
        Err(ExecError::UnknownMachine { .. })
    ));
}

#[test]
fn two_networks_with_the_same_addresses_do_not_collide() {
    if !require_root("two_networks_with_the_same_addresses_do_not_collide") {
        return;
    }
    let backend = backend();
    let a = backend.create(&spec(2, |_| vec![])).unwrap();
    let b = backend.create(&spec(2, |_| vec![])).unwrap();
    a.boot(&["m1", "m2"]).into_iter().for_each(|r| r.unwrap());
    b.boot(&["m1"]).into_iter().for_each(|r| r.unwrap());
    assert!(a.ping("m1", ip(2), PING).unwrap());
    assert!(
        !b.ping("m1", ip(2), OFFLINE).unwrap(),
        "b's m2 is off even though a's is on"
    );
    b.teardown().unwrap();
    assert!(a.ping("m2", ip(1), PING).unwrap());
}

/// Regression (found by `fleetcheck run ping --seed 1`): a ping to a machine that is off left
/// an unresolved neighbour entry, whose next ARP probe came a second later, so the first pings
/// after that machine booted went unanswered for longer than the ping timeout.
#[test]
fn ping_right_after_the_target_boots_is_answered() {
    if !require_root("ping_right_after_the_target_boots_is_answered") {
        return;
    }
    let backend = backend();
    let net = backend.create(&spec(2, |_| Vec::new())).unwrap();
    assert!(net.boot(&["m1"])[0].is_ok());
    let timeout = Duration::from_millis(100);
    assert!(!net.ping("m1", ip(2), timeout).unwrap(), "m2 is off");
    assert!(net.boot(&["m2"])[0].is_ok());
    assert!(net.ping("m1", ip(2), timeout).unwrap(), "m2 is up now");
    net.teardown().unwrap();
}

/// A power cycle starts from a fresh network stack, as on a real machine: a setup command that
/// may only run once per boot (`nft create` fails if the table exists) boots again, and the
/// rules of the earlier boot are gone.
#[test]
fn reboot_starts_from_a_fresh_network_stack() {
    if !require_root("reboot_starts_from_a_fresh_network_stack") {
        return;
    }
    let backend = backend();
    let net = backend
        .create(&spec(2, |_| vec!["nft create table inet once".into()]))
        .unwrap();
    for round in 0..3 {
        for r in net.boot(&["m1", "m2"]) {
            r.unwrap_or_else(|e| panic!("boot {round}: {e}"));
        }
        let rules = net
            .exec("m1", &ExecRequest::shell("nft list tables"))
            .unwrap();
        assert_eq!(rules.stdout_str().matches("table inet once").count(), 1);
        assert!(net.ping("m1", ip(2), Duration::from_secs(1)).unwrap());
        assert!(net.ping("m2", ip(1), Duration::from_secs(1)).unwrap());
        net.shutdown("m1").unwrap();
        net.crash("m2").unwrap();
    }
    net.teardown().unwrap();
}

/// A machine's disk keeps what it wrote across a power cut and goes away with the network.
#[test]
fn data_dir_survives_reboot_and_teardown_removes_it() {
    if !require_root("data_dir_survives_reboot_and_teardown_removes_it") {
        return;
    }
    let backend = backend();
    let net = backend.create(&spec(1, |_| Vec::new())).unwrap();
    let dir = net.data_dir("m1").expect("netns machines have a disk");
    assert!(net.boot(&["m1"])[0].is_ok());
    let write = format!("echo kept > {}/file", dir.display());
    assert!(net
        .exec("m1", &ExecRequest::shell(write))
        .unwrap()
        .success());
    net.crash("m1").unwrap();
    assert!(net.boot(&["m1"])[0].is_ok());
    let read = format!("cat {}/file", dir.display());
    let out = net.exec("m1", &ExecRequest::shell(read)).unwrap();
    assert_eq!(out.stdout_str().trim(), "kept");
    net.teardown().unwrap();
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// A process spawned into a machine: piped both ways, in the machine's namespaces (its
/// hostname, its pid namespace, its file system view) and cgroups (frozen with it), and dead
/// with it when it crashes ([`crate::support::check_spawned`], shared with qemu).
#[test]
fn spawned_processes_live_inside_their_machine() {
    if !require_root("spawned_processes_live_inside_their_machine") {
        return;
    }
    let backend = backend();
    let net = backend.create_netns(&spec(1, |_| vec![])).unwrap();
    use fleetcheck_fabric::Network;
    net.boot(&["m1"]).into_iter().for_each(|r| r.unwrap());
    let pid = crate::support::check_spawned(&net, "m1", Duration::from_secs(5));
    assert!(pid < 100, "in the machine's pid namespace: pid {pid}");
    Box::new(net).teardown().unwrap();
}

/// A spawned program ended early (`Spawned::end`) is killed and reaped at once, not left
/// running as an orphan of the host's init, which the machine's end would wait for.
#[test]
fn an_ended_spawned_program_leaves_no_orphan() {
    if !require_root("an_ended_spawned_program_leaves_no_orphan") {
        return;
    }
    use fleetcheck_fabric::Network;
    let backend = backend();
    let net = backend.create_netns(&spec(1, |_| vec![])).unwrap();
    net.boot(&["m1"]).into_iter().for_each(|r| r.unwrap());
    let marker = format!("{}", 900_000 + std::process::id() % 90_000);
    let mut program = net
        .spawn("m1", &format!("exec sleep {marker}"), "client.log")
        .unwrap();
    let running = || {
        std::process::Command::new("pgrep")
            .args(["-f", &format!("^sleep {marker}$")])
            .output()
            .unwrap()
            .status
            .success()
    };
    let started = Instant::now();
    while !running() {
        assert!(started.elapsed() < Duration::from_secs(5), "never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    program.end();
    assert!(!running(), "the program outlived its end");
    Box::new(net).teardown().unwrap();
}
