//! The signal matrix: a run ended by SIGINT, SIGTERM or SIGHUP removes everything it made and
//! exits 128 + the signal; one ended by SIGKILL (at start-up or mid-run) leaves nothing running
//! and its guardian removes the rest; with the guardian killed too, the sweep does, even after
//! `ip netns add` made `/run/netns` a mount of its own. Each on plain machines, machines with
//! their own file system, kv with paused (frozen) etcd nodes, and QEMU.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{leftovers, runs_of};
use crate::{fleetcheck, require_root, run, temp_dir, write_config};

/// What a workload runs, and what must be true of its run before it is signalled.
struct Workload {
    name: &'static str,
    args: Vec<String>,
    /// The run is far enough along to be worth stopping: e.g. a machine is frozen.
    ready: fn(&str) -> bool,
}

fn ping_plain() -> Workload {
    Workload {
        name: "ping",
        args: words("run ping --tests 3000 --seed 9"),
        ready: has_machine_processes,
    }
}

fn ping_filesystems() -> Workload {
    let dir = temp_dir("signals-fs");
    let config = write_config(&dir, "[machine]\nfilesystem = [\"ext4\", \"xfs\"]\n");
    let mut args = words("run ping --tests 3000 --seed 9 --config");
    args.push(config.display().to_string());
    Workload {
        name: "ping with file systems",
        args,
        ready: |run| has_machine_processes(run) && has_loop_device(run),
    }
}

fn kv_paused() -> Workload {
    let dir = temp_dir("signals-kv");
    let config = write_config(&dir, "[kv]\nfaults = [\"pause\"]\n");
    let mut args =
        words("run kv --system etcd --tests 1000 --min-size 20 --max-size 20 --seed 5 --config");
    args.push(config.display().to_string());
    Workload {
        name: "kv with paused nodes",
        args,
        ready: has_frozen_machine,
    }
}

fn qemu_ping() -> Workload {
    Workload {
        name: "qemu",
        args: words("run ping --backend qemu --tests 1000 --seed 2 --workers 1"),
        ready: has_qemu,
    }
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// The cgroup directories of run `run` (every hierarchy).
fn cgroups_of(run: &str) -> Vec<PathBuf> {
    let name = format!("fleetcheck-{run}");
    [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/freezer",
    ]
    .iter()
    .map(|h| Path::new(h).join(&name))
    .filter(|p| p.is_dir())
    .collect()
}

/// Every process in the cgroups of run `run`: agents, services, QEMU.
fn processes_of(run: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for dir in cgroups_of(run) {
        for group in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let procs = std::fs::read_to_string(group.path().join("cgroup.procs"));
            pids.extend(
                procs
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok()),
            );
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn has_machine_processes(run: &str) -> bool {
    !processes_of(run).is_empty()
}

fn has_loop_device(run: &str) -> bool {
    let out = Command::new("losetup").arg("-a").output().expect("losetup");
    String::from_utf8_lossy(&out.stdout).contains(&format!("/run/fleetcheck/{run}/"))
}

fn has_frozen_machine(run: &str) -> bool {
    cgroups_of(run).iter().any(|dir| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|g| {
                let state = std::fs::read_to_string(g.path().join("freezer.state"));
                let events = std::fs::read_to_string(g.path().join("cgroup.events"));
                state.is_ok_and(|s| s.trim() == "FROZEN")
                    || events.is_ok_and(|e| e.lines().any(|l| l == "frozen 1"))
            })
    })
}

fn has_qemu(run: &str) -> bool {
    processes_of(run).iter().any(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim().starts_with("qemu"))
    })
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').map_or(0, |i| i + 2)..].starts_with('Z'))
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn start(w: &Workload) -> Child {
    fleetcheck()
        .args(&w.args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fleetcheck starts")
}

/// Waits until `child` has a run for which `ready` holds; returns the run id.
fn wait_ready(child: &mut Child, w: &Workload) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(run) = runs_of(child.id()).pop() {
            if (w.ready)(&run) {
                return run;
            }
        }
        assert!(
            child.try_wait().expect("child status").is_none(),
            "{}: the run ended before it was ready",
            w.name
        );
        assert!(
            Instant::now() < deadline,
            "{}: not ready after 120 s",
            w.name
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stderr_of(child: Child) -> String {
    let out = child.wait_with_output().expect("child output");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: a valid signal to our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Runs workload `w` once per handled signal and once per kill -9 moment, checking the host
/// after each.
fn matrix(w: Workload) {
    for (sig, code) in [
        (libc::SIGINT, 130),
        (libc::SIGTERM, 143),
        (libc::SIGHUP, 129),
    ] {
        let mut child = start(&w);
        let run = wait_ready(&mut child, &w);
        let pids = processes_of(&run);
        signal(&child, sig);
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(code), "{} signal {sig}", w.name);
        assert_eq!(
            leftovers(&run),
            Vec::<PathBuf>::new(),
            "{} signal {sig}: left behind",
            w.name
        );
        for pid in pids {
            assert!(
                !alive(pid),
                "{} signal {sig}: process {pid} runs on",
                w.name
            );
        }
    }
    // kill -9 mid-run: nothing keeps running, the guardian removes the rest.
    let mut child = start(&w);
    let run = wait_ready(&mut child, &w);
    let pids = processes_of(&run);
    let guardian = fleetcheck_fabric::host::guard::find(&run).expect("the run has a guardian");
    let killed = Instant::now();
    signal(&child, libc::SIGKILL);
    let err = stderr_of(child);
    wait_until(Duration::from_secs(20), "the guardian finishes", || {
        !alive(guardian)
    });
    eprintln!(
        "{}: kill -9 mid-run: {} process(es) and the run removed in {:?}",
        w.name,
        pids.len(),
        killed.elapsed()
    );
    for pid in pids {
        assert!(!alive(pid), "{} kill -9: process {pid} runs on", w.name);
    }
    assert_eq!(
        leftovers(&run),
        Vec::<PathBuf>::new(),
        "{} kill -9: {err}",
        w.name
    );
    assert!(err.contains("ended without removing"), "{}: {err}", w.name);
}

/// kill -9 right after start, whatever the run had got to: nothing of it survives.
#[test]
fn kill_9_at_start_up_leaves_nothing() {
    if !require_root() {
        return;
    }
    for delay_ms in [0, 20, 60, 150] {
        let mut child = start(&ping_plain());
        std::thread::sleep(Duration::from_millis(delay_ms));
        signal(&child, libc::SIGKILL);
        let pid = child.id();
        child.wait().expect("wait");
        // Its runs' guardians remove them (also one still being made): none may be left.
        wait_until(
            Duration::from_secs(20),
            "the run's guardians finish",
            || runs_of(pid).is_empty(),
        );
    }
}

#[test]
fn signals_on_plain_machines() {
    if require_root() {
        matrix(ping_plain());
    }
}

#[test]
fn signals_on_machines_with_file_systems() {
    if require_root() {
        matrix(ping_filesystems());
    }
}

#[test]
fn signals_on_kv_with_paused_nodes() {
    if require_root() {
        matrix(kv_paused());
    }
}

#[test]
fn signals_on_qemu() {
    if crate::qemu::require_qemu() {
        let _vms = crate::qemu::one_at_a_time();
        matrix(qemu_ping());
    }
}

/// With the guardian killed as well, the sweep removes what is left, even after `ip netns add`
/// has made `/run/netns` a mount of its own.
#[test]
fn killed_run_and_guardian_are_swept_after_ip_netns_add() {
    if !require_root() {
        return;
    }
    let w = kv_paused();
    let mut child = start(&w);
    let run_id = wait_ready(&mut child, &w);
    let pids = processes_of(&run_id);
    let guardian = fleetcheck_fabric::host::guard::find(&run_id).expect("the run has a guardian");
    // SAFETY: SIGKILL to the guardian of our child's run.
    unsafe { libc::kill(guardian, libc::SIGKILL) };
    wait_until(Duration::from_secs(5), "the guardian dies", || {
        !alive(guardian)
    });
    signal(&child, libc::SIGKILL);
    child.wait().expect("wait");
    assert!(
        !leftovers(&run_id).is_empty(),
        "nothing removed what was left"
    );

    let name = format!("fleetcheck-test-{}", std::process::id());
    let was_mount = is_mount_point("/run/netns");
    for args in [["netns", "add", &name], ["netns", "del", &name]] {
        let ok = Command::new("ip").args(args).status().expect("ip runs");
        assert!(ok.success(), "ip {args:?}");
    }
    let (code, out, err) = run(fleetcheck().arg("sweep"));
    if !was_mount && is_mount_point("/run/netns") {
        // Leave the host's mount table as this test found it.
        let _ = Command::new("umount").arg("/run/netns").status();
    }
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("removed"), "{out}");
    assert_eq!(leftovers(&run_id), Vec::<PathBuf>::new());
    for pid in pids {
        assert!(!alive(pid), "process {pid} of the swept run runs on");
    }
}

fn is_mount_point(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path))
}

/// A dead run's directory and cgroup, as a run killed together with its guardian leaves them.
fn plant_dead_run() -> String {
    let run = format!("dead{:04x}", std::process::id() & 0xffff);
    let dir = Path::new("/run/fleetcheck").join(&run);
    std::fs::create_dir_all(dir.join("netns")).unwrap();
    // Pid 0 is never a process's: the owner is dead.
    std::fs::write(dir.join("owner"), "0 0\n").unwrap();
    let memory = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
        .iter()
        .map(Path::new)
        .find(|h| h.join("cgroup.procs").exists())
        .expect("a cgroup hierarchy");
    std::fs::create_dir_all(memory.join(format!("fleetcheck-{run}")).join("n0-m0")).unwrap();
    run
}

/// Every command that may build machines sweeps first, before it checks its input: a refused
/// run, a run on the fake backend, `replay`, `up` and `doctor`.
#[test]
fn every_command_sweeps_at_start() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("sweep-at-start");
    let missing = dir.join("missing.json");
    let missing = missing.display().to_string();
    for args in [
        vec!["run", "ping", "--tests", "0x"],
        vec!["run", "ping", "--backend", "fake", "--tests", "1"],
        vec!["replay", &missing],
        vec!["up", "--machines", "0"],
        vec!["doctor"],
    ] {
        let run_id = plant_dead_run();
        let _ = run(fleetcheck().args(&args).stdin(Stdio::null()));
        assert_eq!(
            leftovers(&run_id),
            Vec::<PathBuf>::new(),
            "`fleetcheck {}` did not sweep",
            args.join(" ")
        );
    }
}
