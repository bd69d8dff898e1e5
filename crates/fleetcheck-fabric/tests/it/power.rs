//! Power cuts on netns: a machine with `lose_unsynced` keeps, across a power cut, what its file
//! system had flushed and loses the rest (seen from inside the machine), while a crash keeps
//! everything; a coordinated cut of several machines; refusals that change nothing; and
//! nothing left after teardown, `kill -9` of the owning process, or the sweep.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetcheck_fabric::host::{disk, sweep, RUN_ROOT};
use fleetcheck_fabric::{
    Backend, ExecRequest, FaultError, FileSystem, MachineStatus, Network, NetworkSpec,
};

use crate::filesystem::require_mkfs;
use crate::support::{backend, require_root, spawn_child_run, spec, wait_gone};

/// Machines `m1..=mn`, the first `volatile` of them losing unsynced writes.
fn machines(n: u8, volatile: u8) -> NetworkSpec {
    let mut spec = spec(n, |_| Vec::new());
    for m in spec.machines.iter_mut().take(usize::from(volatile)) {
        m.lose_unsynced = true;
    }
    spec
}

/// Runs `cmd` in the data directory of machine `id`; its stdout.
fn sh(net: &dyn Network, id: &str, cmd: &str) -> String {
    let out = net
        .exec(
            id,
            &ExecRequest::shell(format!("cd \"$FLEETCHECK_DATA\" && {cmd}")),
        )
        .unwrap();
    assert!(out.success(), "{cmd}: {out:?}");
    out.stdout_str()
}

/// `name: content` of every file in machine `id`'s data directory but `lost+found`, sorted.
fn files(net: &dyn Network, id: &str) -> String {
    sh(
        net,
        id,
        "for f in $(ls | grep -v lost+found); do printf '%s: %s\\n' \"$f\" \"$(cat $f)\"; done",
    )
}

fn boot(net: &dyn Network, ids: &[&str]) {
    for r in net.boot(ids) {
        r.unwrap();
    }
}

/// `sync FILE` is `fsync(FILE)` (coreutils), also for a directory; `>` and `>>` only write.
#[test]
fn power_cut_keeps_what_was_fsynced_and_loses_the_rest() {
    if !require_root("power_cut_keeps_what_was_fsynced_and_loses_the_rest") {
        return;
    }
    let backend = backend();
    let owned = backend.create(&machines(1, 1)).unwrap();
    let net = owned.as_ref();
    boot(net, &["m1"]);
    sh(
        net,
        "m1",
        "printf durable > d && sync d && printf ' and more' >> d && printf lost > l",
    );
    assert_eq!(files(net, "m1"), "d: durable and more\nl: lost\n");
    net.power_cut(&["m1"]).unwrap();
    assert_eq!(net.status("m1"), Some(MachineStatus::Off));
    boot(net, &["m1"]);
    assert_eq!(
        files(net, "m1"),
        "d: durable\n",
        "only the fsynced write is kept"
    );
    // Written past the page cache (O_DIRECT) into the disk's cache, never flushed: lost too.
    let block = |c: char| format!("head -c 4096 /dev/zero | tr '\\0' {c}");
    sh(
        net,
        "m1",
        &format!(
            "rm -f d && {} > o && sync o . && {} | dd of=o bs=4096 count=1 conv=notrunc \
             oflag=direct iflag=fullblock 2>/dev/null",
            block('a'),
            block('b')
        ),
    );
    assert_eq!(sh(net, "m1", "head -c 3 o"), "bbb");
    net.power_cut(&["m1"]).unwrap();
    boot(net, &["m1"]);
    assert_eq!(sh(net, "m1", "head -c 3 o; ls"), "aaalost+found\no\n");
    sh(net, "m1", "printf durable > d && rm o && sync d .");
    // A crash is not a power cut: the machine's processes die, its disk keeps every write.
    sh(net, "m1", "printf kept > k");
    net.crash("m1").unwrap();
    boot(net, &["m1"]);
    assert_eq!(files(net, "m1"), "d: durable\nk: kept\n");
    // The host reads the durable state after the cut too.
    sh(net, "m1", "printf gone >> d");
    net.power_cut(&["m1"]).unwrap();
    let on_host = net.data_dir_on_host("m1").unwrap();
    assert_eq!(
        std::fs::read_to_string(on_host.join("d")).unwrap(),
        "durable"
    );
    assert!(!on_host.join("k").exists(), "k was never fsynced");
    owned.teardown().unwrap();
}

/// The layer is under the file system, so xfs and btrfs get it as ext4 does.
#[test]
fn power_cut_on_xfs_and_btrfs() {
    if !require_root("power_cut_on_xfs_and_btrfs") || !require_mkfs("power_cut_on_xfs_and_btrfs") {
        return;
    }
    let backend = backend();
    let mut spec = machines(2, 2);
    spec.machines[0].filesystem = Some(FileSystem::Xfs);
    spec.machines[1].filesystem = Some(FileSystem::Btrfs);
    let owned = backend.create(&spec).unwrap();
    let net = owned.as_ref();
    boot(net, &["m1", "m2"]);
    for id in ["m1", "m2"] {
        sh(
            net,
            id,
            "printf durable > d && sync d && printf ' and more' >> d && printf lost > l",
        );
    }
    net.power_cut(&["m1", "m2"]).unwrap();
    boot(net, &["m1", "m2"]);
    for (id, fs) in [("m1", "xfs"), ("m2", "btrfs")] {
        let mounted = sh(net, id, "stat -f -c %T .");
        assert_eq!(mounted.trim(), fs);
        assert_eq!(files(net, id), "d: durable\n", "{fs}");
    }
    owned.teardown().unwrap();
}

/// A rename is durable once its directory is fsynced, not before.
#[test]
fn power_cut_loses_a_rename_until_its_directory_is_fsynced() {
    if !require_root("power_cut_loses_a_rename_until_its_directory_is_fsynced") {
        return;
    }
    let backend = backend();
    let owned = backend.create(&machines(1, 1)).unwrap();
    let net = owned.as_ref();
    boot(net, &["m1"]);
    sh(
        net,
        "m1",
        "printf v1 > f && sync f . && printf v2 > t && sync t && mv t f",
    );
    assert_eq!(files(net, "m1"), "f: v2\n");
    net.power_cut(&["m1"]).unwrap();
    boot(net, &["m1"]);
    assert_eq!(files(net, "m1"), "f: v1\nt: v2\n", "the rename was lost");
    sh(net, "m1", "mv t f && sync .");
    net.power_cut(&["m1"]).unwrap();
    boot(net, &["m1"]);
    assert_eq!(files(net, "m1"), "f: v2\n", "the rename was kept");
    owned.teardown().unwrap();
}

/// Two machines (one of them paused) lose power at once; a cut that names a machine without
/// the layer, one that is off, or an unknown one is refused and changes nothing.
#[test]
fn power_cut_of_two_machines_at_once_and_refusals() {
    if !require_root("power_cut_of_two_machines_at_once_and_refusals") {
        return;
    }
    let backend = backend();
    let owned = backend.create(&machines(3, 2)).unwrap();
    let net = owned.as_ref();
    boot(net, &["m1", "m2", "m3"]);
    for id in ["m1", "m2"] {
        sh(
            net,
            id,
            &format!("printf {id} > s && sync s && printf x > u"),
        );
    }
    let refused = net.power_cut(&["m1", "m3"]).unwrap_err();
    assert!(
        matches!(&refused, FaultError::NotVolatile { machine } if machine == "m3"),
        "{refused}"
    );
    assert!(refused.to_string().contains("lose_unsynced"), "{refused}");
    assert!(matches!(
        net.power_cut(&["m1", "nope"]),
        Err(FaultError::UnknownMachine { .. })
    ));
    assert_eq!(net.status("m1"), Some(MachineStatus::Running));
    assert_eq!(
        files(net, "m1"),
        "s: m1\nu: x\n",
        "the refused cut changed nothing"
    );
    net.pause("m2").unwrap();
    net.power_cut(&["m1", "m2", "m1"]).unwrap();
    assert_eq!(net.status("m1"), Some(MachineStatus::Off));
    assert_eq!(net.status("m2"), Some(MachineStatus::Off));
    assert_eq!(net.status("m3"), Some(MachineStatus::Running));
    assert!(matches!(
        net.power_cut(&["m1"]),
        Err(FaultError::WrongStatus {
            status: MachineStatus::Off,
            ..
        })
    ));
    boot(net, &["m1", "m2"]);
    assert_eq!(files(net, "m1"), "s: m1\n");
    assert_eq!(files(net, "m2"), "s: m2\n");
    owned.teardown().unwrap();
}

fn volatile_loops(run: &str) -> Vec<PathBuf> {
    disk::loops_under(&Path::new(RUN_ROOT).join(run))
}

/// Teardown after power cuts leaves no loop device, FUSE server thread or file.
#[test]
fn power_cut_disks_leave_nothing_after_teardown() {
    if !require_root("power_cut_disks_leave_nothing_after_teardown") {
        return;
    }
    let backend = backend();
    let net = backend.create(&machines(2, 2)).unwrap();
    assert_eq!(volatile_loops(backend.run_id()).len(), 2);
    boot(net.as_ref(), &["m1", "m2"]);
    sh(net.as_ref(), "m1", "printf x > u");
    net.power_cut(&["m1", "m2"]).unwrap();
    assert_eq!(
        volatile_loops(backend.run_id()).len(),
        2,
        "a disk each again"
    );
    boot(net.as_ref(), &["m1"]);
    let servers = disk_servers(backend.run_id());
    assert_eq!(servers.len(), 2, "one server per disk");
    net.teardown().unwrap();
    assert_eq!(volatile_loops(backend.run_id()), Vec::<PathBuf>::new());
    assert_eq!(disk_servers(backend.run_id()), Vec::<i32>::new());
    let dir = Path::new(RUN_ROOT).join(backend.run_id());
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none() || !dir.join("n0").exists(),
        "the network's directory remains"
    );
}

/// The child of the kill tests: three volatile machines, one running with unsynced writes,
/// one off after a power cut, one never booted.
#[test]
fn child_for_power_kill_test() {
    if std::env::var("FLEETCHECK_TEST_CHILD").as_deref() != Ok("power-kill") {
        return;
    }
    let backend = backend();
    let net = backend.create_netns(&machines(3, 3)).unwrap();
    boot(&net, &["m1", "m2"]);
    sh(&net, "m1", "printf x > u");
    // m2 and m3 are off: only this process holds their file systems.
    net.power_cut(&["m2"]).unwrap();
    let pids = [net.agent_pid("m1").unwrap().to_string()];
    println!("RUN {} {}", backend.run_id(), pids.join(" "));
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// `kill -9` of the process that serves the disks: its guardian and the kernel remove the
/// rest (the FUSE connection dies with the process), no loop device stays.
#[test]
fn power_cut_disks_leave_nothing_after_kill_9() {
    if !require_root("power_cut_disks_leave_nothing_after_kill_9") {
        return;
    }
    let child = spawn_child_run("power::child_for_power_kill_test", "power-kill");
    let run = child.run.clone();
    assert_eq!(volatile_loops(&run).len(), 3);
    assert_eq!(disk_servers(&run).len(), 3);
    let guardian = child.kill_run_only();
    assert!(wait_gone(guardian, Duration::from_secs(10)));
    let left = disk::wait_detached(
        &volatile_loops(&run)
            .into_iter()
            .map(|d| {
                let f = disk::backing_file(&d).unwrap_or_default();
                (d, f)
            })
            .collect::<Vec<_>>(),
        Duration::from_secs(5),
    );
    assert_eq!(left, Vec::new(), "loop devices of run {run} remain");
    assert_eq!(disk_servers(&run), Vec::<i32>::new());
    assert!(!Path::new(RUN_ROOT).join(&run).exists());
}

/// A run killed with its guardian: the sweep finds its volatile disks by name.
#[test]
fn power_cut_disks_sweep_after_the_run_and_its_guardian_die() {
    if !require_root("power_cut_disks_sweep_after_the_run_and_its_guardian_die") {
        return;
    }
    let child = spawn_child_run("power::child_for_power_kill_test", "power-kill");
    let run = child.run.clone();
    assert_eq!(volatile_loops(&run).len(), 3);
    assert_eq!(disk_servers(&run).len(), 3);
    child.kill();
    let report = sweep().unwrap();
    let left = disk::wait_detached(
        &volatile_loops(&run)
            .into_iter()
            .map(|d| {
                let f = disk::backing_file(&d).unwrap_or_default();
                (d, f)
            })
            .collect::<Vec<_>>(),
        Duration::from_secs(5),
    );
    assert_eq!(left, Vec::new(), "{report:?}");
    assert_eq!(disk_servers(&run), Vec::<i32>::new());
    assert!(!Path::new(RUN_ROOT).join(&run).exists());
}

/// Whether `program` is on `PATH`; without, skips (or fails under CI).
fn require_program(test: &str, program: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
    if found {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs {program} (scripts/install-deps), and CI=true forbids skipping");
    }
    eprintln!("skipping {test}: needs {program} (scripts/install-deps)");
    false
}

/// Starts Redis in machine `id` with its append-only file, fsynced as `appendfsync` says.
fn start_redis(net: &dyn Network, id: &str, appendfsync: &str) {
    sh(
        net,
        id,
        &format!(
            "redis-server --port 6379 --bind 127.0.0.1 --dir \"$FLEETCHECK_DATA\" --save '' \
             --appendonly yes --appendfsync {appendfsync} --daemonize yes \
             --logfile \"$FLEETCHECK_DATA/redis.log\" && \
             for i in $(seq 100); do redis-cli ping >/dev/null 2>&1 && exit 0; sleep 0.05; done; \
             echo 'redis did not start' >&2; exit 1"
        ),
    );
}

/// Redis acknowledges a write before it reaches the disk with `appendfsync no`: a power cut
/// loses it. With `appendfsync always` (fsync before the reply) it survives.
#[test]
fn power_cut_loses_what_redis_acknowledged_before_fsync() {
    let test = "power_cut_loses_what_redis_acknowledged_before_fsync";
    if !require_root(test) || !require_program(test, "redis-server") {
        return;
    }
    let backend = backend();
    let owned = backend.create(&machines(2, 2)).unwrap();
    let net = owned.as_ref();
    boot(net, &["m1", "m2"]);
    let policies = [("m1", "no"), ("m2", "always")];
    for (id, policy) in policies {
        start_redis(net, id, policy);
        // Its files exist and are durable before the write under test.
        sh(net, id, "redis-cli set before 1 >/dev/null && sync -f .");
        assert_eq!(sh(net, id, "redis-cli set k acknowledged"), "OK\n");
    }
    net.power_cut(&["m1", "m2"]).unwrap();
    boot(net, &["m1", "m2"]);
    for (id, policy) in policies {
        start_redis(net, id, policy);
        assert_eq!(sh(net, id, "redis-cli get before"), "1\n", "{id}");
    }
    assert_eq!(
        sh(net, "m1", "redis-cli get k"),
        "\n",
        "appendfsync no lost it"
    );
    assert_eq!(sh(net, "m2", "redis-cli get k"), "acknowledged\n");
    owned.teardown().unwrap();
}

/// etcd (mmap reads, pwrite + fdatasync before it acknowledges) keeps an acknowledged put
/// across a power cut, and starts again from what the disk kept.
#[test]
fn power_cut_keeps_what_etcd_acknowledged() {
    let test = "power_cut_keeps_what_etcd_acknowledged";
    if !require_root(test) || !require_program(test, "etcd") {
        return;
    }
    let backend = backend();
    let owned = backend.create(&machines(1, 1)).unwrap();
    let net = owned.as_ref();
    let start = "setsid etcd --name m1 --data-dir \"$FLEETCHECK_DATA/etcd\" \
                 --listen-client-urls http://127.0.0.1:2379 \
                 --advertise-client-urls http://127.0.0.1:2379 \
                 --listen-peer-urls http://127.0.0.1:2380 \
                 </dev/null >>\"$FLEETCHECK_DATA/etcd.log\" 2>&1 & \
                 for i in $(seq 200); do \
                 ETCDCTL_API=3 etcdctl endpoint health >/dev/null 2>&1 && exit 0; sleep 0.05; done; \
                 echo 'etcd did not start' >&2; exit 1";
    let etcdctl = |cmd: &str| format!("ETCDCTL_API=3 etcdctl {cmd}");
    boot(net, &["m1"]);
    sh(net, "m1", start);
    assert_eq!(sh(net, "m1", &etcdctl("put k acknowledged")), "OK\n");
    net.power_cut(&["m1"]).unwrap();
    boot(net, &["m1"]);
    sh(net, "m1", start);
    assert_eq!(
        sh(net, "m1", &etcdctl("get k --print-value-only")),
        "acknowledged\n"
    );
    owned.teardown().unwrap();
}

/// Live disk servers (`--serve-disk`) of run `run`: their command lines name its images.
fn disk_servers(run: &str) -> Vec<i32> {
    let image_dir = format!("{RUN_ROOT}/{run}/");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.iter().any(|a| *a == b"--serve-disk")
                && args.iter().any(|a| a.starts_with(image_dir.as_bytes()))
                && crate::support::alive(pid)
        })
        .collect()
}

/// The child of the signal test: what a SIGINT handler runs, with volatile disks live.
#[test]
fn child_for_power_signal_test() {
    if std::env::var("FLEETCHECK_TEST_CHILD").as_deref() != Ok("power-signal") {
        return;
    }
    let backend = backend();
    let net = backend.create(&machines(2, 2)).unwrap();
    boot(net.as_ref(), &["m1", "m2"]);
    net.power_cut(&["m2"]).unwrap();
    assert_eq!(
        disk_servers(backend.run_id()).len(),
        2,
        "one server per disk"
    );
    println!("RUN {}", backend.run_id());
    fleetcheck_fabric::host::cleanup_process_resources();
    assert_eq!(volatile_loops(backend.run_id()), Vec::<PathBuf>::new());
    assert_eq!(disk_servers(backend.run_id()), Vec::<i32>::new());
    std::mem::forget(net);
    std::mem::forget(backend);
}

/// The clean-up on SIGINT, SIGTERM and SIGHUP (`cleanup_process_resources`) removes volatile
/// disks with their loop devices and server threads.
#[test]
fn power_cut_disks_leave_nothing_after_a_signal_cleanup() {
    if !require_root("power_cut_disks_leave_nothing_after_a_signal_cleanup") {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "power::child_for_power_signal_test",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FLEETCHECK_TEST_CHILD", "power-signal")
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
        .find_map(|l| l.split_once("RUN ").map(|(_, r)| r.trim().to_string()))
        .expect("child reports its run");
    assert_eq!(volatile_loops(&run), Vec::<PathBuf>::new());
    assert_eq!(disk_servers(&run), Vec::<i32>::new());
    assert!(!Path::new(RUN_ROOT).join(&run).exists());
}

/// Disk errors, seen from inside the machine: with failing flushes an `fsync` gets EIO, ext4
/// aborts its journal and goes read-only (the write it wanted durable is lost on a power cut);
/// a full disk answers ENOSPC to a write that reaches it; after the disk recovers and the
/// machine boots again, its file system works and holds what was made durable before. A
/// machine without the layer is refused.
#[test]
fn disk_errors_reach_the_programs_of_the_machine() {
    if !require_root("disk_errors_reach_the_programs_of_the_machine") {
        return;
    }
    use fleetcheck_fabric::DiskError;
    let backend = backend();
    let owned = backend.create(&machines(2, 1)).unwrap();
    let net = owned.as_ref();
    boot(net, &["m1", "m2"]);
    sh(net, "m1", "printf durable > d && sync d");
    net.disk_error("m1", Some(DiskError::Fsync)).unwrap();
    let try_sh = |cmd: &str| {
        net.exec(
            "m1",
            &ExecRequest::shell(format!("cd \"$FLEETCHECK_DATA\" && {cmd}"))
                .with_timeout(Duration::from_secs(20)),
        )
        .unwrap()
    };
    let out = try_sh("printf new > n && sync n");
    assert!(!out.success(), "fsync on a failing disk succeeded: {out:?}");
    assert!(
        out.stderr_str().contains("Input/output error"),
        "{}",
        out.stderr_str()
    );
    // ext4 aborted its journal on the failed flush: read-only until mounted again.
    let out = try_sh("printf x > x");
    assert!(
        out.stderr_str().contains("Read-only file system"),
        "{out:?}"
    );
    net.disk_error("m1", None).unwrap();
    net.power_cut(&["m1"]).unwrap();
    boot(net, &["m1"]);
    assert_eq!(files(net, "m1"), "d: durable\n");
    net.disk_error("m1", Some(DiskError::Full)).unwrap();
    let out = try_sh("head -c 8192 /dev/zero | dd of=f bs=4096 oflag=direct 2>&1");
    assert!(!out.success(), "a write to a full disk succeeded: {out:?}");
    assert!(
        out.stdout_str().contains("No space left on device"),
        "{}",
        out.stdout_str()
    );
    net.disk_error("m1", None).unwrap();
    net.power_cut(&["m1"]).unwrap();
    boot(net, &["m1"]);
    sh(net, "m1", "printf again > a && sync a");
    assert!(matches!(
        net.disk_error("m2", Some(DiskError::Write)),
        Err(FaultError::NotVolatile { .. })
    ));
    assert!(matches!(
        net.disk_error("nope", None),
        Err(FaultError::UnknownMachine { .. })
    ));
    owned.teardown().unwrap();
}

/// A file of an off machine's data directory corrupted: a bit flip keeps its length and
/// changes one bit, a truncation cuts it short, both seen by the machine's next boot, through
/// the disk layer (m1) and on a plain directory (m2); what was done is in `corrupt.log`, the
/// logs at the top are never hit, a running machine is refused.
#[test]
fn corruption_of_an_off_machine_is_what_its_next_boot_reads() {
    if !require_root("corruption_of_an_off_machine_is_what_its_next_boot_reads") {
        return;
    }
    let backend = backend();
    let owned = backend.create(&machines(2, 1)).unwrap();
    corruption_checks(owned.as_ref(), &["m1", "m2"]);
    owned.teardown().unwrap();
}

/// [`corruption_of_an_off_machine_is_what_its_next_boot_reads`] on machines `ids` of `net`
/// (also qemu's): a bit flip and a truncation of an off machine's file are what its next
/// boot reads, its top-level logs untouched, `corrupt.log` saying what was done.
pub(crate) fn corruption_checks(net: &dyn Network, ids: &[&str]) {
    use fleetcheck_fabric::Corruption;
    boot(net, ids);
    let original = "0123456789abcdef".repeat(8);
    for &id in ids {
        sh(
            net,
            id,
            &format!("printf {original} > d && sync d . && echo x > keep.log && sync keep.log"),
        );
        assert!(matches!(
            net.corrupt(id, Corruption::BitFlip, 1),
            Err(FaultError::WrongStatus { .. })
        ));
        net.crash(id).unwrap();
        let done = net.corrupt(id, Corruption::BitFlip, 7).unwrap().unwrap();
        assert!(
            done.starts_with("flipped bit ") && done.contains(" of d (128 bytes)"),
            "{done}"
        );
        boot(net, &[id]);
        let now = sh(net, id, "cat d");
        assert_eq!(now.len(), original.len(), "{id}: {now}");
        let differing: u32 = now
            .bytes()
            .zip(original.bytes())
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert_eq!(differing, 1, "{id}: {now}");
        net.shutdown(id).unwrap();
        let done = net.corrupt(id, Corruption::Truncate, 7).unwrap().unwrap();
        assert!(done.starts_with("cut d from 128 to "), "{done}");
        boot(net, &[id]);
        let now = sh(net, id, "cat d");
        assert!(
            now.len() < original.len() && original.starts_with(&now),
            "{id}: {now}"
        );
        assert_eq!(sh(net, id, "cat keep.log"), "x\n");
        let log = sh(net, id, "cat corrupt.log");
        assert_eq!(log.lines().count(), 2, "{id}: {log}");
    }
    assert!(matches!(
        net.corrupt("nope", Corruption::Truncate, 0),
        Err(FaultError::UnknownMachine { .. })
    ));
}
