//! Faults on real namespaces: pause/resume, partition, block, loss, heal, across reboots, and
//! their cleanup.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fleetcheck_fabric::host::sweep;
use fleetcheck_fabric::netns::NetnsNetwork;
use fleetcheck_fabric::{ExecRequest, FaultError, MachineStatus, Network};

use crate::support::{alive, backend, ip, require_root, spawn_child_run, spec, wait_gone};

const PING: Duration = Duration::from_secs(2);
const SILENT: Duration = Duration::from_millis(300);

fn three(backend: &fleetcheck_fabric::netns::NetnsBackend) -> NetnsNetwork {
    let net = backend.create_netns(&spec(3, |_| vec![])).unwrap();
    for r in net.boot(&["m1", "m2", "m3"]) {
        r.unwrap();
    }
    net
}

fn groups(gs: &[&[&str]]) -> Vec<Vec<String>> {
    gs.iter()
        .map(|g| g.iter().map(|s| s.to_string()).collect())
        .collect()
}

/// Packets counted by the fault rule whose comment is `comment` (None: no such rule).
fn rule_packets(net: &NetnsNetwork, comment: &str) -> Option<u64> {
    let rules = net.fault_rules().unwrap();
    let line = rules
        .lines()
        .find(|l| l.contains(&format!("comment \"{comment}\"")))?;
    let after = line.split("counter packets ").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

/// `Icmp: InEchos` of machine `id`'s network stack: echo requests that reached it.
fn in_echos(net: &NetnsNetwork, id: &str) -> u64 {
    let out = net
        .exec(id, &ExecRequest::shell("cat /proc/net/snmp"))
        .unwrap();
    let text = out.stdout_str();
    let mut icmp = text.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next().unwrap(), icmp.next().unwrap());
    let col = names
        .split_whitespace()
        .position(|n| n == "InEchos")
        .unwrap();
    values.split_whitespace().nth(col).unwrap().parse().unwrap()
}

fn freezer_state(net: &NetnsNetwork, id: &str) -> String {
    let dir = net.freezer_of(id).unwrap();
    std::fs::read_to_string(dir.join("freezer.state"))
        .or_else(|_| std::fs::read_to_string(dir.join("cgroup.events")))
        .unwrap()
}

#[test]
fn pause_silences_a_machine_until_resume() {
    if !require_root("pause_silences_a_machine_until_resume") {
        return;
    }
    let backend = backend();
    let net = three(&backend);
    net.pause("m2").unwrap();
    assert_eq!(net.status("m2"), Some(MachineStatus::Paused));
    assert!(
        freezer_state(&net, "m2").contains("FROZEN")
            || freezer_state(&net, "m2").contains("frozen 1")
    );
    assert!(matches!(
        net.pause("m2"),
        Err(FaultError::WrongStatus { .. })
    ));
    assert!(matches!(
        net.resume("m1"),
        Err(FaultError::WrongStatus { .. })
    ));
    assert!(
        !net.ping("m1", ip(2), SILENT).unwrap(),
        "a paused machine answers nothing"
    );
    assert!(
        !net.ping("m2", ip(1), SILENT).unwrap(),
        "a paused machine sends nothing"
    );
    assert!(net.ping("m1", ip(3), PING).unwrap(), "the others are fine");
    std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            let started = Instant::now();
            let out = net.exec("m2", &ExecRequest::shell("echo thawed")).unwrap();
            (out, started.elapsed())
        });
        // The exec cannot finish while m2 is frozen; give it time to show that.
        std::thread::sleep(Duration::from_millis(300));
        assert!(!waiting.is_finished(), "exec on a paused machine waits");
        net.resume("m2").unwrap();
        let (out, took) = waiting.join().unwrap();
        assert_eq!(out.stdout_str(), "thawed\n");
        assert!(took >= Duration::from_millis(300));
    });
    assert_eq!(net.status("m2"), Some(MachineStatus::Running));
    assert!(
        net.ping("m1", ip(2), PING).unwrap(),
        "resumed: answers again"
    );
    assert!(net.ping("m2", ip(3), PING).unwrap());
    assert_eq!(net.fault_rules().unwrap(), "", "no rule left after resume");
    Box::new(net).teardown().unwrap();
}

#[test]
fn a_paused_machine_can_be_shut_down_and_rebooted() {
    if !require_root("a_paused_machine_can_be_shut_down_and_rebooted") {
        return;
    }
    let backend = backend();
    let net = backend
        .create_netns(&spec(2, |_| vec!["sleep 1000 &".into()]))
        .unwrap();
    net.boot(&["m1", "m2"]).into_iter().for_each(|r| r.unwrap());
    let agent = net.agent_pid("m2").unwrap();
    net.pause("m2").unwrap();
    let started = Instant::now();
    net.shutdown("m2").unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!alive(agent), "the frozen agent died");
    assert_eq!(net.status("m2"), Some(MachineStatus::Off));
    assert!(
        std::fs::read_to_string(net.cgroup_of("m2").unwrap().join("cgroup.procs"))
            .unwrap()
            .trim()
            .is_empty()
    );
    net.boot(&["m2"]).remove(0).unwrap();
    assert!(
        net.ping("m1", ip(2), PING).unwrap(),
        "the rebooted machine answers"
    );
    net.pause("m1").unwrap();
    net.crash("m1").unwrap();
    net.boot(&["m1"]).remove(0).unwrap();
    assert!(net.ping("m2", ip(1), PING).unwrap());
    net.pause("m2").unwrap();
    let cgroup = net.cgroup_of("m2").unwrap();
    let freezer = net.freezer_of("m2").unwrap();
    // Teardown of a network with a paused machine leaves nothing either.
    Box::new(net).teardown().unwrap();
    assert!(!cgroup.exists() && !freezer.exists());
}

#[test]
fn partition_separates_groups_until_heal() {
    if !require_root("partition_separates_groups_until_heal") {
        return;
    }
    let backend = backend();
    let net = three(&backend);
    assert!(matches!(
        net.partition(&groups(&[&["m1"], &["m1", "m2"]])),
        Err(FaultError::RepeatedInPartition { .. })
    ));
    assert!(matches!(
        net.partition(&groups(&[&["nope"]])),
        Err(FaultError::UnknownMachine { .. })
    ));
    net.partition(&groups(&[&["m1", "m2"], &["m3"]])).unwrap();
    assert!(net.ping("m1", ip(2), PING).unwrap());
    assert!(net.ping("m2", ip(1), PING).unwrap());
    for (from, to) in [("m1", 3), ("m3", 1), ("m2", 3), ("m3", 2)] {
        assert!(!net.ping(from, ip(to), SILENT).unwrap(), "{from} -> m{to}");
    }
    net.heal().unwrap();
    assert_eq!(net.fault_rules().unwrap(), "");
    for (from, to) in [("m1", 3), ("m3", 1), ("m2", 3), ("m3", 2)] {
        assert!(
            net.ping(from, ip(to), PING).unwrap(),
            "healed {from} -> m{to}"
        );
    }
}

/// An observer (a scenario's own client machine) is in no partition: it still reaches both
/// sides, while a one-way block still applies to it.
#[test]
fn an_observer_is_cut_by_no_partition() {
    if !require_root("an_observer_is_cut_by_no_partition") {
        return;
    }
    let backend = backend();
    let mut three_machines = spec(3, |_| vec![]);
    three_machines.machines[2].observer = true;
    let net = backend.create_netns(&three_machines).unwrap();
    for r in net.boot(&["m1", "m2", "m3"]) {
        r.unwrap();
    }
    net.partition(&groups(&[&["m1"]])).unwrap();
    assert!(!net.ping("m1", ip(2), SILENT).unwrap(), "m1 | m2");
    for (from, to) in [("m3", 1), ("m3", 2), ("m1", 3), ("m2", 3)] {
        assert!(net.ping(from, ip(to), PING).unwrap(), "{from} -> m{to}");
    }
    net.block("m3", "m1").unwrap();
    assert!(!net.ping("m3", ip(1), SILENT).unwrap(), "blocked m3 -> m1");
    net.heal().unwrap();
    assert!(net.ping("m1", ip(2), PING).unwrap(), "healed");
}

/// A ping needs both directions, so a one-way block fails pings both ways; what shows the
/// block is one-way: m3's echo requests still reach m1 (m1's kernel counts them), and only
/// the m1 -> m3 rule drops anything.
#[test]
fn block_drops_one_direction_only() {
    if !require_root("block_drops_one_direction_only") {
        return;
    }
    let backend = backend();
    let net = three(&backend);
    net.block("m1", "m3").unwrap();
    assert!(!net.ping("m1", ip(3), SILENT).unwrap());
    let before = in_echos(&net, "m1");
    assert!(
        !net.ping("m3", ip(1), SILENT).unwrap(),
        "replies m1 -> m3 are dropped"
    );
    let after = in_echos(&net, "m1");
    assert!(
        after > before,
        "requests m3 -> m1 pass: {before} -> {after}"
    );
    assert!(rule_packets(&net, "cut m1 m3").unwrap() > 0);
    assert_eq!(
        rule_packets(&net, "cut m3 m1"),
        None,
        "no rule for m3 -> m1"
    );
    assert!(net.ping("m2", ip(3), PING).unwrap() && net.ping("m1", ip(2), PING).unwrap());
    assert!(matches!(
        net.block("m1", "m1"),
        Err(FaultError::SameMachine { .. })
    ));
    net.heal().unwrap();
    assert!(net.ping("m1", ip(3), PING).unwrap());
}

#[test]
fn loss_drops_its_share_of_packets() {
    if !require_root("loss_drops_its_share_of_packets") {
        return;
    }
    let backend = backend();
    let net = three(&backend);
    // Resolve neighbours first, so ARP does not count.
    assert!(net.ping("m1", ip(3), PING).unwrap());
    net.loss("m3", 100).unwrap();
    assert!(!net.ping("m1", ip(3), SILENT).unwrap());
    assert!(!net.ping("m3", ip(2), SILENT).unwrap());
    assert!(net.ping("m1", ip(2), PING).unwrap(), "others are not lossy");
    net.loss("m3", 0).unwrap();
    assert!(net.ping("m1", ip(3), PING).unwrap());
    net.loss("m3", 50).unwrap();
    // 200 single-exchange pings (8 ms timeout: the agent resends only after 10 ms), bounded
    // by a deadline. Each exchange crosses m3's port twice, so it survives with (1 - p)^2.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answered = 0;
    let mut sent = 0;
    while sent < 200 && Instant::now() < deadline {
        sent += 1;
        if net.ping("m1", ip(3), Duration::from_millis(8)).unwrap() {
            answered += 1;
        }
    }
    assert_eq!(sent, 200, "pings took too long");
    let per_crossing = 1.0 - (f64::from(answered) / 200.0).sqrt();
    assert!(
        (0.2..=0.8).contains(&per_crossing),
        "{answered} of 200 answered: drop per crossing {per_crossing}"
    );
    assert!(rule_packets(&net, "loss to m3").unwrap() > 0);
    // Faults add up: a partition on top of loss (rebuilding the table resets its counters).
    net.partition(&groups(&[&["m2"]])).unwrap();
    assert!(!net.ping("m1", ip(2), SILENT).unwrap());
    net.heal().unwrap();
    for _ in 0..20 {
        assert!(net.ping("m1", ip(3), PING).unwrap());
    }
    assert!(matches!(
        net.loss("m3", 101),
        Err(FaultError::BadPercent { .. })
    ));
}

#[test]
fn faults_survive_a_reboot() {
    if !require_root("faults_survive_a_reboot") {
        return;
    }
    let backend = backend();
    let net = three(&backend);
    net.partition(&groups(&[&["m3"]])).unwrap();
    net.loss("m2", 100).unwrap();
    for round in 0..2 {
        net.shutdown("m3").unwrap();
        net.crash("m2").unwrap();
        for r in net.boot(&["m3", "m2"]) {
            r.unwrap();
        }
        assert!(!net.ping("m1", ip(3), SILENT).unwrap(), "round {round}");
        assert!(!net.ping("m3", ip(1), SILENT).unwrap(), "round {round}");
        assert!(!net.ping("m1", ip(2), SILENT).unwrap(), "round {round}");
    }
    net.heal().unwrap();
    assert!(net.ping("m1", ip(3), PING).unwrap());
    assert!(net.ping("m1", ip(2), PING).unwrap());
}

#[test]
fn child_for_paused_kill_test() {
    if std::env::var("FLEETCHECK_TEST_CHILD").as_deref() != Ok("kill-paused") {
        return;
    }
    let backend = backend();
    let net = three(&backend);
    net.pause("m1").unwrap();
    net.pause("m3").unwrap();
    let pids: Vec<String> = ["m1", "m2", "m3"]
        .iter()
        .map(|id| net.agent_pid(id).unwrap().to_string())
        .collect();
    println!("RUN {} {}", backend.run_id(), pids.join(" "));
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(net);
}

#[test]
fn sweep_thaws_and_removes_what_a_killed_run_paused() {
    if !require_root("sweep_thaws_and_removes_what_a_killed_run_paused") {
        return;
    }
    let child = spawn_child_run("faults::child_for_paused_kill_test", "kill-paused");
    let (run, agents) = (child.run.clone(), child.agents.clone());
    let freezer_run = Path::new("/sys/fs/cgroup/freezer").join(format!("fleetcheck-{run}"));
    let v1 = Path::new("/sys/fs/cgroup/freezer/cgroup.procs").exists();
    if v1 {
        assert!(freezer_run.is_dir());
    }
    child.kill();
    let started = Instant::now();
    let report = sweep().unwrap();
    assert!(report.runs.contains(&run), "{report:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the sweep did not wait on frozen agents"
    );
    assert!(!freezer_run.exists(), "freezer cgroups of {run} remain");
    for pid in agents {
        assert!(!alive(pid), "agent {pid} of {run} still runs");
    }
}

#[test]
fn paused_machines_die_with_a_killed_run() {
    if !require_root("paused_machines_die_with_a_killed_run") {
        return;
    }
    let child = spawn_child_run("faults::child_for_paused_kill_test", "kill-paused");
    let (run, agents) = (child.run.clone(), child.agents.clone());
    let started = Instant::now();
    let guardian = child.kill_run_only();
    assert!(
        wait_gone(guardian, Duration::from_secs(10)),
        "the guardian {guardian} did not finish"
    );
    eprintln!("frozen machines gone {:?} after kill -9", started.elapsed());
    for pid in agents {
        assert!(!alive(pid), "agent {pid} of {run} still runs (frozen?)");
    }
    let freezer_run = Path::new("/sys/fs/cgroup/freezer").join(format!("fleetcheck-{run}"));
    assert!(!freezer_run.exists(), "freezer cgroups of {run} remain");
    assert!(!Path::new(fleetcheck_fabric::host::RUN_ROOT)
        .join(&run)
        .exists());
}

#[test]
fn fault_rules_stay_in_the_switch_namespace() {
    if !require_root("fault_rules_stay_in_the_switch_namespace") {
        return;
    }
    let backend = backend();
    let net = three(&backend);
    net.block("m1", "m2").unwrap();
    let host = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains("fleetcheck"));
    let sw = net.switch_namespace().unwrap();
    let inside = Command::new("nsenter")
        .arg(format!("--net={}", sw.display()))
        .args(["nft", "list", "tables"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&inside.stdout).contains("table bridge fleetcheck"));
    // Measure the cost of one fault operation (one nft process).
    let started = Instant::now();
    for _ in 0..10 {
        net.loss("m3", 10).unwrap();
    }
    eprintln!("fault operation: {:?} each", started.elapsed() / 10);
    let started = Instant::now();
    for _ in 0..10 {
        net.pause("m3").unwrap();
        net.resume("m3").unwrap();
    }
    eprintln!("pause + resume: {:?} each", started.elapsed() / 10);
}

/// netem needs a kernel with sch_netem inside the machine: on netns the fault is refused in
/// one sentence that names the module, and nothing changes.
#[test]
fn netem_is_refused_on_netns_naming_the_module() {
    if !crate::support::require_root("netem_is_refused_on_netns_naming_the_module") {
        return;
    }
    use fleetcheck_fabric::{Backend, FaultError, Netem};
    let backend = crate::support::backend();
    let owned = backend
        .create(&crate::support::spec(1, |_| Vec::new()))
        .unwrap();
    let net = owned.as_ref();
    for r in net.boot(&["m1"]) {
        r.unwrap();
    }
    let e = net
        .netem("m1", Some(Netem::Duplicate { percent: 10 }))
        .unwrap_err();
    assert!(matches!(e, FaultError::NoNetem { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("netem"), "{text}");
    if !fleetcheck_fabric::netem::host_has_netem() {
        assert!(text.contains("sch_netem"), "{text}");
    }
    assert!(matches!(
        net.netem("m1", Some(Netem::Duplicate { percent: 0 })),
        Err(FaultError::BadNetem { .. })
    ));
    owned.teardown().unwrap();
}
