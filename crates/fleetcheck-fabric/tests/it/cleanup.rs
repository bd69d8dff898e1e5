use std::path::Path;
use std::process::Command;

use fleetcheck_fabric::host::{sweep, RUN_ROOT};
use fleetcheck_fabric::netns::NetnsBackend;
use fleetcheck_fabric::Network;

use crate::support::{
    alive, backend, namespaces_with, require_root, spawn_child_run, spec, wait_gone,
};

fn assert_run_gone(backend_cgroups: &Path, run: &str, agents: &[i32]) {
    assert_eq!(
        namespaces_with(&format!("fleetcheck-{run}-")),
        Vec::<String>::new()
    );
    assert!(
        !backend_cgroups.join(format!("fleetcheck-{run}")).exists(),
        "cgroup of {run} remains"
    );
    assert!(
        !Path::new(RUN_ROOT).join(run).exists(),
        "run dir of {run} remains"
    );
    for pid in agents {
        assert!(!alive(*pid), "agent {pid} of {run} still runs");
    }
}

fn booted(backend: &NetnsBackend) -> (fleetcheck_fabric::netns::NetnsNetwork, Vec<i32>) {
    let net = backend
        .create_netns(&spec(3, |_| vec!["sleep 1000 &".into()]))
        .unwrap();
    net.boot(&["m1", "m2", "m3"])
        .into_iter()
        .for_each(|r| r.unwrap());
    let agents = ["m1", "m2", "m3"]
        .iter()
        .map(|id| net.agent_pid(id).unwrap())
        .collect();
    (net, agents)
}

#[test]
fn teardown_removes_everything() {
    if !require_root("teardown_removes_everything") {
        return;
    }
    let backend = backend();
    let run = backend.run_id().to_string();
    let root = backend.cgroups().root().to_path_buf();
    let (net, agents) = booted(&backend);
    assert_eq!(namespaces_with(&format!("fleetcheck-{run}-")).len(), 4);
    let cgroup = net.cgroup_of("m1").unwrap();
    Box::new(net).teardown().unwrap();
    assert!(!cgroup.exists());
    assert_eq!(
        namespaces_with(&format!("fleetcheck-{run}-")),
        Vec::<String>::new()
    );
    drop(backend);
    assert_run_gone(&root, &run, &agents);
}

#[test]
fn drop_without_teardown_removes_everything() {
    if !require_root("drop_without_teardown_removes_everything") {
        return;
    }
    let backend = backend();
    let run = backend.run_id().to_string();
    let root = backend.cgroups().root().to_path_buf();
    let (net, agents) = booted(&backend);
    drop(net);
    drop(backend);
    assert_run_gone(&root, &run, &agents);
}

#[test]
fn cleanup_process_resources_removes_live_networks() {
    if !require_root("cleanup_process_resources_removes_live_networks") {
        return;
    }
    // Runs in a child process: the cleanup affects every network of its process.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cleanup::child_for_ctrl_c_cleanup",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FLEETCHECK_TEST_CHILD", "ctrl-c")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run = stdout
        .lines()
        .find_map(|l| l.split_once("RUN ").map(|(_, r)| r))
        .expect("child reports its run");
    assert_eq!(
        namespaces_with(&format!("fleetcheck-{run}-")),
        Vec::<String>::new()
    );
    assert!(!Path::new(RUN_ROOT).join(run).exists());
}

#[test]
fn child_for_ctrl_c_cleanup() {
    if std::env::var("FLEETCHECK_TEST_CHILD").as_deref() != Ok("ctrl-c") {
        return;
    }
    let backend = backend();
    let (net, _agents) = booted(&backend);
    println!("RUN {}", backend.run_id());
    fleetcheck_fabric::host::cleanup_process_resources();
    assert_eq!(
        namespaces_with(&format!("fleetcheck-{}-", backend.run_id())),
        Vec::<String>::new()
    );
    assert!(net
        .ping(
            "m1",
            crate::support::ip(2),
            std::time::Duration::from_millis(50)
        )
        .is_ok());
    // Leak both on purpose: cleanup already removed everything.
    std::mem::forget(net);
    std::mem::forget(backend);
}

#[test]
fn child_for_kill_test() {
    if std::env::var("FLEETCHECK_TEST_CHILD").as_deref() != Ok("kill") {
        return;
    }
    let backend = backend();
    let (net, agents) = booted(&backend);
    let pids: Vec<String> = agents.iter().map(i32::to_string).collect();
    println!("RUN {} {}", backend.run_id(), pids.join(" "));
    // Wait (bounded) until the parent kills us.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(net);
}

#[test]
fn sweep_removes_what_a_killed_process_left() {
    if !require_root("sweep_removes_what_a_killed_process_left") {
        return;
    }
    let child = spawn_child_run("cleanup::child_for_kill_test", "kill");
    let (run, agents) = (child.run.clone(), child.agents.clone());
    assert_eq!(agents.len(), 3);
    assert_eq!(namespaces_with(&format!("fleetcheck-{run}-")).len(), 4);
    child.kill();
    assert!(
        Path::new(RUN_ROOT).join(&run).exists(),
        "a killed run without its guardian leaves its directory"
    );
    // iproute2 makes /run/netns a mount of its own the first time it is used where it is not
    // one; that must not hide anything of ours from the sweep.
    let was_mount = is_mount_point("/run/netns");
    let name = format!("fleetcheck-test-{}", std::process::id());
    let add = Command::new("ip").args(["netns", "add", &name]).status();
    assert!(add.unwrap().success(), "ip netns add {name}");
    let del = Command::new("ip").args(["netns", "del", &name]).status();
    assert!(del.unwrap().success(), "ip netns del {name}");

    let report = sweep();
    if !was_mount && is_mount_point("/run/netns") {
        // Leave the host's mount table as this test found it.
        let _ = Command::new("umount").arg("/run/netns").status();
    }
    let report = report.unwrap();
    let root = fleetcheck_fabric::host::Cgroups::detect()
        .unwrap()
        .root()
        .to_path_buf();
    assert!(report.runs.contains(&run), "{report:?}");
    assert_run_gone(&root, &run, &agents);
}

fn is_mount_point(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path))
}

#[test]
fn the_guardian_removes_everything_after_kill_9() {
    if !require_root("the_guardian_removes_everything_after_kill_9") {
        return;
    }
    let child = spawn_child_run("cleanup::child_for_kill_test", "kill");
    let (run, agents) = (child.run.clone(), child.agents.clone());
    assert_eq!(namespaces_with(&format!("fleetcheck-{run}-")).len(), 4);
    let started = std::time::Instant::now();
    let guardian = child.kill_run_only();
    assert!(
        wait_gone(guardian, std::time::Duration::from_secs(10)),
        "the guardian {guardian} did not finish"
    );
    eprintln!("the guardian removed run {run} in {:?}", started.elapsed());
    let root = fleetcheck_fabric::host::Cgroups::detect()
        .unwrap()
        .root()
        .to_path_buf();
    assert_run_gone(&root, &run, &agents);
}

#[test]
fn child_for_abort_test() {
    let Ok(how) = std::env::var("FLEETCHECK_TEST_CHILD") else {
        return;
    };
    if !how.starts_with("end-") {
        return;
    }
    let backend = backend();
    let (net, agents) = booted(&backend);
    net.pause("m2").unwrap();
    let pids: Vec<String> = agents.iter().map(i32::to_string).collect();
    println!("RUN {} {}", backend.run_id(), pids.join(" "));
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    match how.as_str() {
        // A panic with `panic = "abort"`, or any other abort: no destructor runs.
        "end-abort" => std::process::abort(),
        // `exit` without unwinding: no destructor runs either.
        _ => std::process::exit(0),
    }
}

/// A process that ends without running its destructors (abort, as a panic does under
/// `panic = "abort"`, or a bare `exit`) leaves nothing: its guardian removes the run, paused
/// machines included.
#[test]
fn abort_and_exit_without_destructors_leave_nothing() {
    if !require_root("abort_and_exit_without_destructors_leave_nothing") {
        return;
    }
    let root = fleetcheck_fabric::host::Cgroups::detect()
        .unwrap()
        .root()
        .to_path_buf();
    for how in ["end-abort", "end-exit"] {
        let mut child = spawn_child_run("cleanup::child_for_abort_test", how);
        let (run, agents) = (child.run.clone(), child.agents.clone());
        let guardian = fleetcheck_fabric::host::guard::find(&run).expect("a guardian");
        child.release();
        assert!(
            wait_gone(guardian, std::time::Duration::from_secs(10)),
            "{how}: the guardian {guardian} did not finish"
        );
        assert_run_gone(&root, &run, &agents);
    }
}
