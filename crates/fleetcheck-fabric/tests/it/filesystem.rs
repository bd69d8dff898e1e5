//! Machine parameters on netns: each machine's data directory on its own ext4, xfs or btrfs
//! (seen from inside the machine, kept across crashes, never mounted on the host, loop devices
//! detached at teardown and by the sweep), and service versions on the machine's PATH.

use std::path::{Path, PathBuf};

use fleetcheck_fabric::host::{disk, sweep, RUN_ROOT};
use fleetcheck_fabric::{
    Backend, ExecRequest, FileSystem, MachineStatus, Network, NetworkSpec, ServiceError,
    ServiceVersion,
};

use crate::support::{backend, require_root, spawn_child_run, spec};

/// Whether `mkfs.<fs>` exists for every file system; without, skips (or fails under CI).
pub fn require_mkfs(test: &str) -> bool {
    let missing: Vec<&str> = FileSystem::ALL
        .into_iter()
        .filter(|fs| disk::mkfs_path(*fs).is_none() || !disk::kernel_supports(*fs))
        .map(FileSystem::mkfs)
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs {missing:?} (scripts/install-deps), and CI=true forbids skipping");
    }
    eprintln!("skipping {test}: needs {missing:?} (scripts/install-deps)");
    false
}

/// Three machines, one per file system.
fn three_filesystems() -> NetworkSpec {
    let mut spec = spec(3, |_| Vec::new());
    for (m, fs) in spec.machines.iter_mut().zip(FileSystem::ALL) {
        m.filesystem = Some(fs);
    }
    spec
}

/// The file system type mounted at `dir`, as the machine's own /proc/self/mounts says.
fn fstype_inside(net: &dyn fleetcheck_fabric::Network, id: &str, dir: &Path) -> String {
    let cmd = format!(
        "awk -v d={} '$2 == d {{ t = $3 }} END {{ print t }}' /proc/self/mounts",
        dir.display()
    );
    let out = net.exec(id, &ExecRequest::shell(cmd)).unwrap();
    assert!(out.success(), "{out:?}");
    out.stdout_str().trim().to_string()
}

fn host_mounts() -> String {
    std::fs::read_to_string("/proc/self/mounts").unwrap()
}

fn loops_of(dir: &Path) -> Vec<PathBuf> {
    disk::loops_under(dir)
}

/// Each machine's data directory is its own file system of the type its spec names, seen from
/// inside; the host's mount table never shows it; it keeps its contents across a crash; the
/// host reads it through `data_dir_on_host`; teardown detaches the loop devices.
#[test]
fn filesystem_each_machine_gets_its_own() {
    if !require_root("filesystem_each_machine_gets_its_own") || !require_mkfs("filesystem") {
        return;
    }
    let backend = backend();
    let run_dir = Path::new(RUN_ROOT).join(backend.run_id());
    let net = backend.create(&three_filesystems()).unwrap();
    assert_eq!(loops_of(&run_dir).len(), 3, "one loop device per disk");
    assert!(net.boot(&["m1", "m2", "m3"]).iter().all(Result::is_ok));
    for (i, fs) in FileSystem::ALL.into_iter().enumerate() {
        let id = format!("m{}", i + 1);
        let dir = net.data_dir(&id).unwrap();
        assert_eq!(fstype_inside(net.as_ref(), &id, &dir), fs.name(), "{id}");
        assert!(
            !host_mounts().contains(&*dir.to_string_lossy()),
            "the host's mount table shows {}",
            dir.display()
        );
        // $FLEETCHECK_DATA names it inside the machine.
        let write = "echo kept > \"$FLEETCHECK_DATA/file\" && sync";
        assert!(net.exec(&id, &ExecRequest::shell(write)).unwrap().success());
        // The host's own view of the directory is the empty mount point ...
        assert!(!dir.join("file").exists());
        // ... and it reads the machine's file system this way.
        let on_host = net.data_dir_on_host(&id).unwrap();
        assert_eq!(
            std::fs::read_to_string(on_host.join("file")).unwrap(),
            "kept\n"
        );
        net.crash(&id).unwrap();
        assert!(net.boot(&[id.as_str()])[0].is_ok());
        let out = net
            .exec(&id, &ExecRequest::shell("cat \"$FLEETCHECK_DATA/file\""))
            .unwrap();
        assert_eq!(out.stdout_str(), "kept\n", "{id} after a crash");
        assert_eq!(fstype_inside(net.as_ref(), &id, &dir), fs.name());
    }
    net.teardown().unwrap();
    assert_eq!(loops_of(&run_dir), Vec::<PathBuf>::new());
    assert!(!host_mounts().contains(&*run_dir.to_string_lossy()));
}

/// A service's version is the program `<name>` on the machine's PATH and
/// `$FLEETCHECK_VERSION_<NAME>`; a rolling upgrade replaces it while the machine is off and
/// keeps the data directory.
#[test]
fn filesystem_versions_and_rolling_upgrade() {
    if !require_root("filesystem_versions_and_rolling_upgrade") || !require_mkfs("versions") {
        return;
    }
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("versions");
    std::fs::create_dir_all(&scratch).unwrap();
    let program = |v: &str| {
        let path = scratch.join(format!("greet-{v}"));
        std::fs::write(&path, format!("#!/bin/sh\necho greet {v}\n")).unwrap();
        let mut perm = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&path, perm).unwrap();
        ServiceVersion {
            version: v.into(),
            path,
        }
    };
    let (v1, v2) = (program("1.0"), program("2.0"));
    let mut spec = spec(2, |_| Vec::new());
    spec.machines[0].services.insert("greet".into(), v1.clone());
    spec.machines[1].services.insert("greet".into(), v2.clone());
    spec.machines[0].filesystem = Some(FileSystem::Ext4);
    let backend = backend();
    let net = backend.create(&spec).unwrap();
    assert!(net.boot(&["m1", "m2"]).iter().all(Result::is_ok));
    let run = |id: &str, cmd: &str| {
        let out = net.exec(id, &ExecRequest::shell(cmd)).unwrap();
        assert!(out.success(), "{cmd}: {out:?}");
        out.stdout_str().trim().to_string()
    };
    assert_eq!(run("m1", "greet"), "greet 1.0");
    assert_eq!(run("m2", "greet"), "greet 2.0");
    assert_eq!(run("m1", "echo $FLEETCHECK_VERSION_GREET"), "1.0");
    run("m1", "echo mine > $FLEETCHECK_DATA/state");
    assert!(matches!(
        net.set_service("m1", "greet", &v2),
        Err(ServiceError::WrongStatus {
            status: MachineStatus::Running,
            ..
        })
    ));
    net.shutdown("m1").unwrap();
    net.set_service("m1", "greet", &v2).unwrap();
    assert!(net.boot(&["m1"])[0].is_ok());
    assert_eq!(run("m1", "greet"), "greet 2.0");
    assert_eq!(run("m1", "echo $FLEETCHECK_VERSION_GREET"), "2.0");
    assert_eq!(run("m1", "cat $FLEETCHECK_DATA/state"), "mine");
    assert_eq!(net.services("m1").unwrap()["greet"], v2);
    net.teardown().unwrap();
}

#[test]
fn child_for_disk_kill_test() {
    if std::env::var("FLEETCHECK_TEST_CHILD").as_deref() != Ok("disk-kill") {
        return;
    }
    let backend = backend();
    let net = backend.create_netns(&three_filesystems()).unwrap();
    assert!(net.boot(&["m1", "m2", "m3"]).iter().all(Result::is_ok));
    let agents: Vec<String> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| net.agent_pid(m).unwrap().to_string())
        .collect();
    println!("RUN {} {}", backend.run_id(), agents.join(" "));
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(net);
}

/// A killed process leaves images and (briefly) loop devices; the sweep removes both.
#[test]
fn filesystem_sweep_detaches_loop_devices_of_a_killed_run() {
    if !require_root("filesystem_sweep_detaches_loop_devices_of_a_killed_run")
        || !require_mkfs("sweep")
    {
        return;
    }
    let child = spawn_child_run("filesystem::child_for_disk_kill_test", "disk-kill");
    let run_dir = Path::new(RUN_ROOT).join(&child.run);
    assert_eq!(loops_of(&run_dir).len(), 3);
    child.kill();
    let report = sweep().unwrap();
    assert_eq!(loops_of(&run_dir), Vec::<PathBuf>::new(), "{report:?}");
    assert!(!run_dir.exists());
    assert!(!host_mounts().contains(&*run_dir.to_string_lossy()));
}

/// Regression: teardown waited for a loop device to be detached by checking only that it had
/// no backing file; with several networks at once, a detached device is at once attached to
/// another network's image, and teardown waited 5 s and failed. A device attached to another
/// image counts as detached, and `detach` leaves it alone.
#[test]
fn filesystem_reused_loop_device_counts_as_detached() {
    if !require_root("filesystem_reused_loop_device_counts_as_detached")
        || !require_mkfs("reused loop device")
    {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reused-loop");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (image, mine) = (dir.join("other.img"), dir.join("mine.img"));
    disk::make_image(&image, FileSystem::Ext4).unwrap();
    let other = disk::Disk::mount(&image, FileSystem::Ext4, &dir.join("mnt")).unwrap();
    let device = other.device.clone();
    let pair = [(device.clone(), mine.clone())];
    let started = std::time::Instant::now();
    assert!(disk::wait_detached(&pair, std::time::Duration::from_secs(5)).is_empty());
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    disk::detach(&device, &mine).unwrap();
    assert!(
        disk::attached_to(&device, &image),
        "someone else's device was detached"
    );
    let left = disk::wait_detached(&[other.close()], std::time::Duration::from_secs(5));
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
