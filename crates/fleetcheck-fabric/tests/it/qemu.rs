//! The qemu backend on real VMs: kernels and memory are what the spec says, machines ping each
//! other, faults cut them, and nothing outlives a killed run. Needs root, QEMU, busybox and two
//! kernels (`scripts/install-deps`); skips outside CI without them, fails with `CI=true`.

use std::path::Path;
use std::time::Duration;

use fleetcheck_fabric::host::{sweep, AgentCommand, RUN_ROOT};
use fleetcheck_fabric::qemu::{kernels, QemuBackend, QemuConfig, QemuNetwork};
use fleetcheck_fabric::{ExecRequest, MachineSpec, Network, NetworkSpec};

use crate::support::{alive, ip, namespaces_with, require_root, spawn_child_run};

/// Whether the qemu tests may run: root, QEMU and at least two kernels. Otherwise prints why
/// and returns false, or panics under `CI=true`.
fn require_qemu(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    let missing = if fleetcheck_fabric::qemu::find_qemu().is_none() {
        Some("qemu-system-x86_64".to_string())
    } else if fleetcheck_fabric::qemu::find_busybox().is_none() {
        Some("busybox".to_string())
    } else if kernels::installed().len() < 2 {
        Some(format!(
            "two kernels (found {:?}; {})",
            kernels::installed()
                .iter()
                .map(|k| k.release.clone())
                .collect::<Vec<_>>(),
            kernels::HOW_TO_INSTALL
        ))
    } else {
        None
    };
    match missing {
        None => true,
        Some(what) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test} needs {what}, and CI=true forbids skipping")
        }
        Some(what) => {
            eprintln!("skipping {test}: needs {what}");
            false
        }
    }
}

fn backend(snapshots: bool) -> QemuBackend {
    let agent = AgentCommand {
        program: env!("CARGO_BIN_EXE_fleetcheck-agent").into(),
        args: Vec::new(),
    };
    let mut config = QemuConfig::new(agent);
    config.snapshots = snapshots;
    // The netns tests beside these ones time pings in tens of milliseconds.
    config.nice = 19;
    QemuBackend::new(config).expect("this host runs the qemu backend")
}

fn machine(i: u8, kernel: &str, memory_mb: u32) -> MachineSpec {
    MachineSpec {
        id: format!("m{i}"),
        ip: ip(i),
        memory_mb,
        kernel: kernel.into(),
        setup: vec![],
        ..MachineSpec::default()
    }
}

fn net_of(machines: Vec<MachineSpec>) -> NetworkSpec {
    NetworkSpec {
        subnet: "172.16.2.0/24".parse().unwrap(),
        machines,
    }
}

fn sh(net: &QemuNetwork, id: &str, cmd: &str) -> String {
    let out = net
        .exec(
            id,
            &ExecRequest::shell(cmd).with_timeout(Duration::from_secs(20)),
        )
        .unwrap();
    assert!(out.success(), "{cmd} on {id}: {out:?}\n{}", net.logs(id));
    out.stdout_str().trim().to_string()
}

fn mem_total_mb(net: &QemuNetwork, id: &str) -> u32 {
    let kb: u32 = sh(net, id, "awk '/MemTotal/ {print $2}' /proc/meminfo")
        .parse()
        .unwrap();
    kb / 1024
}

#[test]
fn qemu_kernels_and_memory_are_what_the_spec_says() {
    if !require_qemu("qemu_kernels_and_memory_are_what_the_spec_says") {
        return;
    }
    let backend = backend(true);
    let installed = backend.installed_kernels().to_vec();
    let (k1, k2) = (
        &installed[0].release,
        &installed[installed.len() - 1].release,
    );
    let mut spec = net_of(vec![
        machine(1, k1, 128),
        machine(2, k2, 256),
        machine(3, k2, 128),
    ]);
    spec.machines[0].clock = true;
    // A setup command that needs a module of the guest's own kernel (nf_tables).
    spec.machines[1].setup = vec!["nft add table inet t".into()];
    let net = backend.create_qemu(&spec).unwrap();
    for r in net.boot(&["m1", "m2", "m3"]) {
        r.unwrap();
    }
    for m in &spec.machines {
        assert_eq!(sh(&net, &m.id, "uname -r"), m.kernel, "kernel of {}", m.id);
        assert_eq!(sh(&net, &m.id, "hostname"), m.id);
        let total = mem_total_mb(&net, &m.id);
        // MemTotal is guest memory less what the kernel keeps for itself (about 50 MiB).
        assert!(
            total <= m.memory_mb && total + 64 >= m.memory_mb,
            "{} has {total} MiB of {} MiB",
            m.id,
            m.memory_mb
        );
        assert!(
            sh(&net, &m.id, "ip -4 addr show dev eth0").contains(&format!("{}/24", m.ip)),
            "address of {}",
            m.id
        );
    }
    // Same kernel, twice the memory: 128 MiB more.
    let more = mem_total_mb(&net, "m2") - mem_total_mb(&net, "m3");
    assert!(
        (120..=136).contains(&more),
        "m2 has {more} MiB more than m3"
    );
    assert!(sh(&net, "m2", "nft list tables").contains("table inet t"));
    // Host files are shared: the host's own programs run inside.
    assert!(sh(&net, "m1", "ls /usr/bin").contains("awk"));
    // The guest's own clock moves (m1 may, m2 may not), and back.
    let ahead = |id: &str| {
        let guest: i64 = sh(&net, id, "date +%s").trim().parse().unwrap();
        let host = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        guest - host
    };
    net.set_clock("m1", 3600).unwrap();
    let seen = ahead("m1");
    assert!((3598..=3602).contains(&seen), "m1 is {seen} s ahead");
    net.set_clock("m1", 0).unwrap();
    assert!(ahead("m1").abs() <= 2, "m1 is {} s ahead", ahead("m1"));
    assert!(matches!(
        net.set_clock("m2", 5),
        Err(fleetcheck_fabric::FaultError::NoClock { .. })
    ));
    Box::new(net).teardown().unwrap();
}

#[test]
fn qemu_machines_ping_each_other_and_faults_cut_them() {
    if !require_qemu("qemu_machines_ping_each_other_and_faults_cut_them") {
        return;
    }
    let backend = backend(true);
    let k = backend.installed_kernels()[0].release.clone();
    let spec = net_of(vec![machine(1, &k, 128), machine(2, &k, 128)]);
    let net = backend.create_qemu(&spec).unwrap();
    let t = Duration::from_secs(2);
    assert!(!net.ping("m1", ip(2), t).unwrap(), "both off");
    for r in net.boot(&["m1", "m2"]) {
        r.unwrap();
    }
    assert!(net.ping("m1", ip(2), t).unwrap(), "{}", net.logs("m1"));
    assert!(net.ping("m2", ip(1), t).unwrap());
    net.block("m1", "m2").unwrap();
    assert!(!net.ping("m1", ip(2), Duration::from_millis(300)).unwrap());
    net.heal().unwrap();
    net.partition(&[vec!["m1".into()]]).unwrap();
    assert!(!net.ping("m2", ip(1), Duration::from_millis(300)).unwrap());
    net.heal().unwrap();
    assert!(net.ping("m2", ip(1), t).unwrap(), "healed");
    assert!(net.ping("m1", ip(2), t).unwrap());
    net.pause("m2").unwrap();
    assert!(!net.ping("m1", ip(2), Duration::from_millis(300)).unwrap());
    net.resume("m2").unwrap();
    assert!(net.ping("m1", ip(2), t).unwrap());
    // netem in the guest: m1's packets wait 400 ms, so an echo from m2 takes that long.
    net.netem(
        "m1",
        Some(fleetcheck_fabric::Netem::Delay {
            ms: 400,
            jitter_ms: 0,
        }),
    )
    .unwrap();
    assert!(
        !net.ping("m2", ip(1), Duration::from_millis(250)).unwrap(),
        "delayed"
    );
    let started = std::time::Instant::now();
    assert!(net.ping("m2", ip(1), t).unwrap());
    assert!(
        started.elapsed() >= Duration::from_millis(390),
        "{:?}",
        started.elapsed()
    );
    net.netem("m1", None).unwrap();
    assert!(
        net.ping("m2", ip(1), Duration::from_millis(250)).unwrap(),
        "not delayed"
    );
    // The disk: written inside, seen on the host, kept across a power cut.
    let disk = net.data_dir("m2").unwrap();
    sh(
        &net,
        "m2",
        &format!("echo kept > {}/f && sync", disk.display()),
    );
    assert_eq!(std::fs::read_to_string(disk.join("f")).unwrap(), "kept\n");
    net.shutdown("m2").unwrap();
    assert!(!net.ping("m1", ip(2), Duration::from_millis(300)).unwrap());
    net.boot(&["m2"]).pop().unwrap().unwrap();
    assert!(net.ping("m1", ip(2), t).unwrap(), "after a reboot");
    assert_eq!(sh(&net, "m2", &format!("cat {}/f", disk.display())), "kept");
    // A restored machine has its own identity.
    assert_eq!(sh(&net, "m2", "hostname"), "m2");
    assert!(sh(&net, "m2", "ip link show dev eth0").contains("02:fc:ac:10:02:02"));
    // Two machines restored from the same snapshot still differ where it matters: their
    // random numbers, and their clocks are the host's, not the snapshot's.
    net.shutdown("m1").unwrap();
    net.shutdown("m2").unwrap();
    for r in net.boot(&["m1", "m2"]) {
        r.unwrap();
    }
    let records = net.boot_records();
    assert!(
        records.iter().rev().take(2).all(|r| r.restored),
        "both boots restored the snapshot: {records:?}\n{}\n{}",
        net.logs("m1"),
        net.logs("m2")
    );
    let uuid = "cat /proc/sys/kernel/random/uuid";
    assert_ne!(sh(&net, "m1", uuid), sh(&net, "m2", uuid));
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let guest_now: i64 = sh(&net, "m2", "date +%s").parse().unwrap();
    assert!(
        (guest_now - host_now).abs() < 30,
        "guest clock {guest_now}, host {host_now}"
    );
    assert!(
        net.ping("m1", ip(2), t).unwrap(),
        "restored machines reach each other"
    );
    let pids = [net.qemu_pid("m1").unwrap(), net.qemu_pid("m2").unwrap()];
    let switch = net.switch_namespace().unwrap();
    Box::new(net).teardown().unwrap();
    for pid in pids {
        assert!(!alive(pid), "qemu {pid} outlives teardown");
    }
    assert!(!switch.exists(), "switch namespace remains");
}

#[test]
fn qemu_cleanup_process_resources_kills_every_vm() {
    if !require_qemu("qemu_cleanup_process_resources_kills_every_vm") {
        return;
    }
    // In a child process: the clean-up (what Ctrl-C runs) affects every network of its process.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "qemu::qemu_child_for_ctrl_c",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FLEETCHECK_TEST_CHILD", "qemu-ctrl-c")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("RUN ").map(|(_, r)| r.to_string()))
        .expect("child reports its run");
    let mut words = line.split_whitespace();
    let run = words.next().unwrap();
    for pid in words.map(|w| w.parse::<i32>().unwrap()) {
        assert!(!alive(pid), "qemu {pid} outlives the clean-up");
    }
    assert!(namespaces_with(&format!("fleetcheck-{run}-")).is_empty());
    assert!(!Path::new(RUN_ROOT).join(run).exists());
}

#[test]
fn qemu_child_for_ctrl_c() {
    if std::env::var("FLEETCHECK_TEST_CHILD").as_deref() != Ok("qemu-ctrl-c") {
        return;
    }
    let backend = backend(true);
    let k = backend.installed_kernels()[0].release.clone();
    // m1's disk is served by this process (a volatile disk): it must not outlive it either.
    let mut m1 = machine(1, &k, 128);
    m1.lose_unsynced = true;
    let net = backend
        .create_qemu(&net_of(vec![m1, machine(2, &k, 128)]))
        .unwrap();
    for r in net.boot(&["m1", "m2"]) {
        r.unwrap();
    }
    let pids = [net.qemu_pid("m1").unwrap(), net.qemu_pid("m2").unwrap()];
    println!("RUN {} {} {}", backend.run_id(), pids[0], pids[1]);
    fleetcheck_fabric::host::cleanup_process_resources();
    // Leak both on purpose: the clean-up already removed everything.
    std::mem::forget(net);
    std::mem::forget(backend);
}

#[test]
fn qemu_child_for_kill_test() {
    if std::env::var("FLEETCHECK_TEST_CHILD").as_deref() != Ok("qemu-kill") {
        return;
    }
    let backend = backend(true);
    let k = backend.installed_kernels()[0].release.clone();
    // m1's disk is served by this process (a volatile disk): it must not outlive it either.
    let mut m1 = machine(1, &k, 128);
    m1.lose_unsynced = true;
    let net = backend
        .create_qemu(&net_of(vec![m1, machine(2, &k, 128)]))
        .unwrap();
    for r in net.boot(&["m1", "m2"]) {
        r.unwrap();
    }
    let pids = [net.qemu_pid("m1").unwrap(), net.qemu_pid("m2").unwrap()];
    println!("RUN {} {} {}", backend.run_id(), pids[0], pids[1]);
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(net);
}

#[test]
fn qemu_sweep_removes_what_a_killed_run_left() {
    if !require_qemu("qemu_sweep_removes_what_a_killed_run_left") {
        return;
    }
    let child = spawn_child_run("qemu::qemu_child_for_kill_test", "qemu-kill");
    let (run, vms) = (child.run.clone(), child.agents.clone());
    assert_eq!(vms.len(), 2);
    assert_eq!(namespaces_with(&format!("fleetcheck-{run}-")).len(), 1);
    child.kill();
    assert!(
        vms.iter().all(|&pid| alive(pid)),
        "without its guardian, QEMU outlives its killed parent"
    );
    // A run killed between spawning QEMU and writing its pidfile: the sweep finds the VMs by
    // the run's cgroup, which QEMU joined before it exec'd.
    let dir = Path::new(RUN_ROOT).join(&run);
    for net in std::fs::read_dir(&dir).unwrap().flatten() {
        for f in std::fs::read_dir(net.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.file_name().to_string_lossy().ends_with(".qemu.pid") {
                std::fs::remove_file(f.path()).unwrap();
            }
        }
    }
    let report = sweep().unwrap();
    assert!(report.runs.contains(&run), "{report:?}");
    for pid in vms {
        assert!(!alive(pid), "qemu {pid} of {run} still runs");
    }
    assert_eq!(
        namespaces_with(&format!("fleetcheck-{run}-")),
        Vec::<String>::new()
    );
    assert!(!Path::new(RUN_ROOT).join(&run).exists());
}

#[test]
fn qemu_failing_setup_fails_the_boot_cold_and_restored() {
    if !require_qemu("qemu_failing_setup_fails_the_boot_cold_and_restored") {
        return;
    }
    let backend = backend(true);
    let k = backend.installed_kernels()[0].release.clone();
    let mut m = machine(1, &k, 128);
    m.setup = vec!["echo broken >&2; exit 3".into()];
    let net = backend.create_qemu(&net_of(vec![m])).unwrap();
    for _ in 0..2 {
        match net.boot(&["m1"]).pop().unwrap() {
            Err(fleetcheck_fabric::BootError::SetupFailed { stderr, status, .. }) => {
                assert_eq!(stderr, "broken");
                assert_eq!(status, "exit code 3");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            net.status("m1"),
            Some(fleetcheck_fabric::MachineStatus::Off)
        );
        assert_eq!(net.qemu_pid("m1"), None, "no qemu after a failed boot");
    }
    Box::new(net).teardown().unwrap();
}

/// A script `greet-<v>` in a scratch directory that prints `greet <v>`, as version `v`.
fn greet(v: &str) -> fleetcheck_fabric::ServiceVersion {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu-versions");
    std::fs::create_dir_all(&scratch).unwrap();
    let path = scratch.join(format!("greet-{v}"));
    std::fs::write(&path, format!("#!/bin/sh\necho greet {v}\n")).unwrap();
    let mut perm = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&path, perm).unwrap();
    fleetcheck_fabric::ServiceVersion {
        version: v.into(),
        path,
    }
}

/// Each VM's data directory is the file system its spec names, on a disk of its own, seen
/// from inside; the disk keeps what was written (and synced) across a power cut, also when
/// the VM comes back restored from a snapshot another machine (of another file system) made;
/// each VM runs the service version its spec names, and a rolling upgrade replaces it while
/// the VM is off. The host never mounts the disks; teardown removes their images.
#[test]
fn qemu_file_systems_and_versions_per_machine() {
    use fleetcheck_fabric::{FileSystem, MachineStatus, ServiceError};
    if !require_qemu("qemu_file_systems_and_versions_per_machine") {
        return;
    }
    let backend = backend(true);
    let installed = backend.installed_kernels().to_vec();
    let (k1, k2) = (
        &installed[0].release,
        &installed[installed.len() - 1].release,
    );
    let (v1, v2) = (greet("1.0"), greet("2.0"));
    // m1 and m3 have the same hardware (kernel, memory, a disk): one restores the other's
    // snapshot. m2 runs the other kernel, so both kernels mount their file systems.
    let mut spec = net_of(vec![
        machine(1, k1, 160),
        machine(2, k2, 160),
        machine(3, k1, 160),
        machine(4, k1, 160),
    ]);
    for (m, fs) in spec.machines.iter_mut().zip(FileSystem::ALL) {
        m.filesystem = Some(fs);
    }
    for (i, m) in spec.machines.iter_mut().enumerate() {
        let v = if i == 1 { &v2 } else { &v1 };
        m.services.insert("greet".into(), v.clone());
    }
    let net = backend.create_qemu(&spec).unwrap();
    let run_dir = Path::new(RUN_ROOT).join(net.run_id());
    // m4 has no file system of its own: its data directory is the shared one.
    for r in net.boot(&["m1", "m2", "m3", "m4"]) {
        r.unwrap();
    }
    let fstype = |id: &str| {
        sh(
            &net,
            id,
            "awk -v d=\"$FLEETCHECK_DATA\" '$2 == d { t = $3 } END { print t }' /proc/self/mounts",
        )
    };
    for (m, fs) in spec.machines.iter().zip(FileSystem::ALL) {
        assert_eq!(fstype(&m.id), fs.name(), "file system of {}", m.id);
        assert_eq!(net.data_dir_on_host(&m.id), None, "{}", m.id);
        let v = &m.services["greet"].version;
        assert_eq!(sh(&net, &m.id, "greet"), format!("greet {v}"), "{}", m.id);
        assert_eq!(sh(&net, &m.id, "echo $FLEETCHECK_VERSION_GREET"), *v);
        sh(
            &net,
            &m.id,
            "echo kept-$(hostname) > $FLEETCHECK_DATA/file && sync",
        );
    }
    assert_eq!(fstype("m4"), "9p");
    assert_eq!(
        net.data_dir_on_host("m4"),
        Some(net.data_dir("m4").unwrap())
    );
    // Only the namespace bind mounts (nsfs) of the run are in the host's mount table.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let run_prefix = run_dir.to_string_lossy().into_owned();
    assert!(
        !mounts.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 2 && f[1].starts_with(&run_prefix) && f[2] != "nsfs"
        }),
        "the host mounted a machine's disk"
    );
    // A rolling upgrade: only while off; the data stays.
    assert!(matches!(
        net.set_service("m1", "greet", &v2),
        Err(ServiceError::WrongStatus {
            status: MachineStatus::Running,
            ..
        })
    ));
    for id in ["m1", "m3"] {
        net.crash(id).unwrap();
    }
    net.set_service("m1", "greet", &v2).unwrap();
    assert_eq!(net.services("m1").unwrap()["greet"], v2);
    // One at a time: each comes back from the snapshot of their shared hardware.
    for (id, fs, v) in [("m3", "btrfs", "1.0"), ("m1", "ext4", "2.0")] {
        net.boot(&[id])[0].as_ref().unwrap();
        let record = net.boot_records().last().unwrap().clone();
        assert!(record.restored, "{id} booted cold: {record:?}");
        assert_eq!(fstype(id), fs, "{id} after a restore");
        assert_eq!(
            sh(&net, id, "cat $FLEETCHECK_DATA/file"),
            format!("kept-{id}")
        );
        assert_eq!(sh(&net, id, "greet"), format!("greet {v}"));
    }
    let images = || -> Vec<std::path::PathBuf> {
        let nets = std::fs::read_dir(&run_dir).into_iter().flatten().flatten();
        nets.flat_map(|n| std::fs::read_dir(n.path()).into_iter().flatten().flatten())
            .map(|f| f.path())
            .filter(|p| p.extension().is_some_and(|x| x == "img"))
            .collect()
    };
    assert_eq!(images().len(), 3, "one image per file system");
    Box::new(net).teardown().unwrap();
    assert_eq!(images(), Vec::<std::path::PathBuf>::new());
}

#[test]
fn qemu_vms_die_with_a_killed_run() {
    if !require_qemu("qemu_vms_die_with_a_killed_run") {
        return;
    }
    let child = spawn_child_run("qemu::qemu_child_for_kill_test", "qemu-kill");
    let (run, vms) = (child.run.clone(), child.agents.clone());
    let started = std::time::Instant::now();
    let guardian = child.kill_run_only();
    assert!(
        crate::support::wait_gone(guardian, std::time::Duration::from_secs(10)),
        "the guardian {guardian} did not finish"
    );
    eprintln!("VMs gone {:?} after kill -9", started.elapsed());
    for pid in vms {
        assert!(!alive(pid), "qemu {pid} of {run} still runs after kill -9");
    }
    assert_eq!(
        namespaces_with(&format!("fleetcheck-{run}-")),
        Vec::<String>::new()
    );
    assert!(!Path::new(RUN_ROOT).join(&run).exists());
}

/// The share shows the guest the host's programs and its kernel's modules, not the host's
/// secrets, home directories or scratch files; and it needs no `/lib/modules` on the host.
#[test]
fn qemu_guest_cannot_read_host_secrets() {
    if !require_qemu("qemu_guest_cannot_read_host_secrets") {
        return;
    }
    let backend = backend(true);
    let net = backend
        .create_qemu(&net_of(vec![machine(1, "host", 128)]))
        .unwrap();
    net.boot(&["m1"]).remove(0).unwrap();
    let probe = "for f in /etc/shadow /etc/gshadow /host/etc/shadow; do \
                 if [ -s $f ]; then echo readable $f; fi; done; \
                 for d in /host/root /host/home /host/tmp /host/run /host/var/log; do \
                 if [ -e $d ]; then echo shown $d; fi; done; \
                 test -f /etc/passwd && test -d /lib/modules/$(uname -r)/kernel && echo ok";
    assert_eq!(sh(&net, "m1", probe), "ok");
    Box::new(net).teardown().unwrap();
}

/// A power cut of a VM whose disk loses unsynced writes: the guest's fsynced file survives,
/// its unsynced one and a rename without fsync of the directory do not; a machine without
/// the layer is refused.
#[test]
fn qemu_power_cut_keeps_only_what_the_guest_flushed() {
    if !require_qemu("qemu_power_cut_keeps_only_what_the_guest_flushed") {
        return;
    }
    let backend = backend(false);
    let kernel = backend.installed_kernels()[0].release.clone();
    let mut m1 = machine(1, &kernel, 128);
    m1.lose_unsynced = true;
    let net = backend
        .create_qemu(&net_of(vec![m1, machine(2, &kernel, 128)]))
        .unwrap();
    let err = net.power_cut(&["m1", "m2"]).unwrap_err();
    assert!(
        matches!(&err, fleetcheck_fabric::FaultError::NotVolatile { machine } if machine == "m2"),
        "{err}"
    );
    net.boot(&["m1"]).pop().unwrap().unwrap();
    let files = "cd \"$FLEETCHECK_DATA\" && for f in $(ls | grep -v lost+found); do \
                 printf '%s: %s\\n' \"$f\" \"$(cat $f)\"; done";
    sh(
        &net,
        "m1",
        "cd \"$FLEETCHECK_DATA\" && printf durable > d && printf v1 > f && sync d f . && \
         printf v2 > t && sync t && mv t f && printf lost > l",
    );
    assert_eq!(sh(&net, "m1", files), "d: durable\nf: v2\nl: lost");
    net.power_cut(&["m1"]).unwrap();
    assert_eq!(
        net.status("m1"),
        Some(fleetcheck_fabric::MachineStatus::Off)
    );
    net.boot(&["m1"]).pop().unwrap().unwrap();
    assert_eq!(sh(&net, "m1", files), "d: durable\nf: v1\nt: v2");
    Box::new(net).teardown().unwrap();
}

/// A program spawned into a VM: its input and output over the agent's channel, inside the
/// guest, frozen with it, ended with what it started, gone with a crash
/// ([`crate::support::check_spawned`], shared with netns).
#[test]
fn qemu_spawned_programs_live_inside_their_machine() {
    if !require_qemu("qemu_spawned_programs_live_inside_their_machine") {
        return;
    }
    let backend = backend(true);
    let kernel = backend.installed_kernels()[0].release.clone();
    let net = backend
        .create_qemu(&net_of(vec![machine(1, &kernel, 128)]))
        .unwrap();
    net.boot(&["m1"]).pop().unwrap().unwrap();
    let pid = crate::support::check_spawned(&net, "m1", Duration::from_secs(20));
    assert!(pid > 1, "a process of the guest: pid {pid}");
    Box::new(net).teardown().unwrap();
}

/// Corruption of a VM's own file system while it is off, through the host (a mount of its
/// disk in a namespace of its own), with and without the power-loss layer: what its next
/// boot reads ([`crate::power::corruption_checks`], shared with netns).
#[test]
fn qemu_corruption_of_an_own_file_system_is_what_its_next_boot_reads() {
    if !require_qemu("qemu_corruption_of_an_own_file_system_is_what_its_next_boot_reads") {
        return;
    }
    let backend = backend(false);
    let kernel = backend.installed_kernels()[0].release.clone();
    let mut m1 = machine(1, &kernel, 128);
    m1.filesystem = Some(fleetcheck_fabric::FileSystem::Ext4);
    let mut m2 = machine(2, &kernel, 128);
    m2.filesystem = Some(fleetcheck_fabric::FileSystem::Xfs);
    m2.lose_unsynced = true;
    let net = backend.create_qemu(&net_of(vec![m1, m2])).unwrap();
    crate::power::corruption_checks(&net, &["m1", "m2"]);
    Box::new(net).teardown().unwrap();
}
