//! What a netns machine can do to the host, tried from inside: every probe runs as the
//! machine's root, and the host is compared byte for byte before and after.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetcheck_fabric::host::PIDS_MAX;
use fleetcheck_fabric::{Backend, ExecOutput, ExecRequest, Network};

use crate::support::{backend, require_root, spec};

fn sh(net: &dyn Network, id: &str, cmd: &str) -> ExecOutput {
    net.exec(
        id,
        &ExecRequest::shell(cmd).with_timeout(Duration::from_secs(30)),
    )
    .unwrap()
}

/// What the host has at each path: the file's bytes, a directory's sorted entry names, or
/// nothing.
fn snapshot(paths: &[PathBuf]) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    paths
        .iter()
        .map(|p| {
            let content = if p.is_dir() {
                let mut names: Vec<String> = std::fs::read_dir(p)
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                Some(names.join("\n").into_bytes())
            } else {
                std::fs::read(p).ok()
            };
            (p.clone(), content)
        })
        .collect()
}

/// Every host path the probes below write to, or whose directory they write into.
fn host_paths() -> Vec<PathBuf> {
    [
        "/usr/local/bin",
        "/usr/local/bin/fc-probe",
        "/root",
        "/root/fc-probe",
        "/tmp",
        "/tmp/fc-probe",
        "/etc/fc-probe",
        "/etc/shadow",
        "/etc/hostname",
        "/var/lib/fc-probe",
        "/run/fc-probe",
        env!("CARGO_BIN_EXE_fleetcheck-agent"),
    ]
    .map(PathBuf::from)
    .to_vec()
}

#[test]
fn machine_cannot_write_the_host_proc_sys_or_sys() {
    if !require_root("machine_cannot_write_the_host_proc_sys_or_sys") {
        return;
    }
    let before = snapshot(&host_paths());
    let backend = backend();
    let net = backend.create(&spec(1, |_| vec![])).unwrap();
    net.boot(&["m1"]).remove(0).unwrap();
    let agent = env!("CARGO_BIN_EXE_fleetcheck-agent");
    // Each must fail: the host's files, kernel settings and devices are out of reach.
    for probe in [
        "echo x > /usr/local/bin/fc-probe".to_string(),
        format!("cp /bin/true {agent}"),
        format!("echo x >> {agent}"),
        "echo 1 > /proc/sys/kernel/sysrq".into(),
        "echo 1 > /proc/sys/net/ipv4/ip_forward".into(),
        "echo h > /proc/sysrq-trigger".into(),
        "echo 1 > /sys/kernel/mm/ksm/run".into(),
        "touch /sys/fc-probe".into(),
        "mount -o remount,rw /".into(),
        "mount -o remount,rw /proc/sys".into(),
        "mount -t tmpfs none /usr/local/bin".into(),
        "umount -l /proc/sys".into(),
        "mknod /tmp/disk b 8 0".into(),
        "hostname other".into(),
        "date -s 2001-01-01".into(),
    ] {
        let out = sh(net.as_ref(), "m1", &probe);
        assert!(!out.success(), "`{probe}` succeeded in a machine: {out:?}");
    }
    // These succeed, but only in the machine's own layers.
    for write in [
        "echo x > /root/fc-probe",
        "echo x > /tmp/fc-probe",
        "echo x > /etc/fc-probe",
        "echo x > /etc/shadow",
        "mkdir -p /var/lib/fc-probe /run/fc-probe",
        "echo x > /var/lib/fc-probe/f",
        "echo x > /run/fc-probe/f",
    ] {
        let out = sh(net.as_ref(), "m1", write);
        assert!(out.success(), "`{write}` failed in a machine: {out:?}");
    }
    let out = sh(
        net.as_ref(),
        "m1",
        "cat /proc/sys/kernel/hostname; ls /sys/class/net",
    );
    assert_eq!(
        out.stdout_str(),
        "m1\neth0\nlo\n",
        "its own /proc/sys and /sys"
    );
    net.teardown().unwrap();
    assert_eq!(
        snapshot(&host_paths()),
        before,
        "the host changed under a machine"
    );
}

#[test]
fn host_secrets_and_environment_stay_out_of_a_machine() {
    if !require_root("host_secrets_and_environment_stay_out_of_a_machine") {
        return;
    }
    let backend = backend();
    let net = backend.create(&spec(1, |_| vec![])).unwrap();
    net.boot(&["m1"]).remove(0).unwrap();
    let out = sh(net.as_ref(), "m1", "cat /etc/shadow /etc/gshadow");
    assert!(!out.success(), "{out:?}");
    let out = sh(net.as_ref(), "m1", "ls -A /root /home; echo end");
    assert_eq!(out.stdout_str(), "/home:\n\n/root:\nend\n", "{out:?}");
    let out = sh(net.as_ref(), "m1", "env");
    let data = net.data_dir("m1").unwrap();
    let text = out.stdout_str().to_string();
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    names.sort();
    assert_eq!(names, ["FLEETCHECK_DATA", "HOME", "PATH", "PWD"], "{out:?}");
    let out = sh(
        net.as_ref(),
        "m1",
        "test -d \"$FLEETCHECK_DATA\" && echo $FLEETCHECK_DATA",
    );
    assert_eq!(out.stdout_str().trim(), data.to_str().unwrap());
    // The run's files are root's only.
    let dir = data.parent().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    let run_dir = dir.parent().unwrap();
    assert_eq!(mode(run_dir), 0o700, "{}", run_dir.display());
    assert_eq!(mode(&dir.join("m0.log")), 0o600);
    net.teardown().unwrap();
}

#[test]
fn cgroup_escape_fails() {
    if !require_root("cgroup_escape_fails") {
        return;
    }
    let backend = backend();
    let net = backend.create_netns(&spec(1, |_| vec![])).unwrap();
    net.boot(&["m1"]).remove(0).unwrap();
    for probe in [
        "echo $$ > /sys/fs/cgroup/memory/cgroup.procs",
        "echo $$ > /sys/fs/cgroup/cgroup.procs",
        "mkdir -p /tmp/cg && mount -t cgroup -o memory none /tmp/cg",
        "mkdir -p /tmp/cg2 && mount -t cgroup2 none /tmp/cg2",
        "unshare -m sh -c 'mount -t cgroup2 none /tmp'",
        "unshare -Urm sh -c 'mount -t cgroup -o memory none /tmp'",
    ] {
        let out = sh(&net, "m1", probe);
        assert!(!out.success(), "`{probe}` succeeded in a machine: {out:?}");
    }
    let out = sh(&net, "m1", "cat /proc/self/cgroup");
    assert!(
        out.stdout_str().lines().all(|l| l.ends_with(":/")),
        "{out:?}"
    );
    // Every process of the machine is still in its memory cgroup.
    let agent = net.agent_pid("m1").unwrap();
    let ns = std::fs::read_link(format!("/proc/{agent}/ns/pid")).unwrap();
    let procs = std::fs::read_to_string(net.cgroup_of("m1").unwrap().join("cgroup.procs")).unwrap();
    let _sleeper = sh(&net, "m1", "sleep 5 >/dev/null 2>&1 & echo started");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/pid"))
            .ok()
            .as_ref()
            == Some(&ns)
        {
            let procs = std::fs::read_to_string(net.cgroup_of("m1").unwrap().join("cgroup.procs"))
                .unwrap_or(procs.clone());
            assert!(
                procs.lines().any(|l| l.trim() == pid.to_string()),
                "process {pid} of the machine left its cgroup"
            );
        }
    }
    Box::new(net).teardown().unwrap();
}

#[test]
fn a_fork_loop_stops_at_the_pids_limit() {
    if !require_root("a_fork_loop_stops_at_the_pids_limit") {
        return;
    }
    let backend = backend();
    // Memory enough for PIDS_MAX sleeping shells, so the task limit is what stops the loop.
    let mut spec = spec(1, |_| vec![]);
    spec.machines[0].memory_mb = 512;
    let net = backend.create_netns(&spec).unwrap();
    net.boot(&["m1"]).remove(0).unwrap();
    let pids = net.pids_cgroup_of("m1").unwrap();
    let max = std::fs::read_to_string(pids.join("pids.max")).unwrap();
    assert_eq!(max.trim(), PIDS_MAX.to_string());
    // Bounded: at most 10000 forks, and the shell gives up at its first failed fork.
    let out = sh(
        &net,
        "m1",
        "i=0; while [ $i -lt 10000 ]; do sleep 20 & i=$((i+1)); echo $i > \"$FLEETCHECK_DATA/forks\"; done",
    );
    assert!(!out.success(), "10000 forks succeeded: {out:?}");
    let forks: u32 = std::fs::read_to_string(net.data_dir_on_host("m1").unwrap().join("forks"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let current: u32 = std::fs::read_to_string(pids.join("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        forks < PIDS_MAX && forks > PIDS_MAX / 2,
        "{forks} forks with a limit of {PIDS_MAX}"
    );
    assert!(current <= PIDS_MAX, "{current} tasks");
    net.crash("m1").unwrap();
    Box::new(net).teardown().unwrap();
}

#[test]
fn machines_have_their_own_var_run_tmp_and_etc() {
    if !require_root("machines_have_their_own_var_run_tmp_and_etc") {
        return;
    }
    let before = snapshot(&host_paths());
    let backend = backend();
    let net = backend.create(&spec(2, |_| vec![])).unwrap();
    for r in net.boot(&["m1", "m2"]) {
        r.unwrap();
    }
    let write = |id: &str| {
        let cmd = format!(
            "mkdir -p /var/lib/fc-probe /run/fc-probe && echo {id} > /var/lib/fc-probe/{id} \
             && echo {id} > /run/fc-probe/{id} && echo {id} > /tmp/fc-probe && echo {id} > /etc/fc-probe"
        );
        assert!(sh(net.as_ref(), id, &cmd).success());
    };
    let list =
        "ls /var/lib/fc-probe /run/fc-probe 2>&1; cat /tmp/fc-probe /etc/fc-probe 2>&1; true";
    write("m1");
    write("m2");
    let m1 = sh(net.as_ref(), "m1", list);
    assert_eq!(
        m1.stdout_str(),
        "/run/fc-probe:\nm1\n\n/var/lib/fc-probe:\nm1\nm1\nm1\n"
    );
    let m2 = sh(net.as_ref(), "m2", list);
    assert_eq!(
        m2.stdout_str(),
        "/run/fc-probe:\nm2\n\n/var/lib/fc-probe:\nm2\nm2\nm2\n"
    );
    // A reboot keeps /var and /etc (a disk) and starts /run and /tmp empty (tmpfs).
    net.crash("m1").unwrap();
    net.boot(&["m1"]).remove(0).unwrap();
    let after = sh(
        net.as_ref(),
        "m1",
        "cat /var/lib/fc-probe/m1 /etc/fc-probe; ls -A /tmp; ls /run/fc-probe || echo gone",
    );
    assert_eq!(after.stdout_str(), "m1\nm1\ngone\n", "{after:?}");
    net.teardown().unwrap();
    assert_eq!(snapshot(&host_paths()), before, "the host changed");
}

/// A service program under the host's `/tmp` (which a machine does not see), named by a path
/// with `..` through a directory the machine does not see either, still runs inside: the
/// machine gets the program's own directory and a link by its canonical path. (CI's clone
/// lives under `/tmp`, and tests name examples as `crates/fleetcheck/../../examples/...`.)
#[test]
fn a_service_program_under_tmp_named_through_dot_dot_runs() {
    if !require_root("a_service_program_under_tmp_named_through_dot_dot_runs") {
        return;
    }
    let top = PathBuf::from(format!("/tmp/fleetcheck-it-{}-dotdot", std::process::id()));
    let _ = std::fs::remove_dir_all(&top);
    std::fs::create_dir_all(top.join("crates/side")).unwrap();
    std::fs::create_dir_all(top.join("versions")).unwrap();
    let program = top.join("versions/greet-1.0");
    std::fs::write(&program, "#!/bin/sh\necho greet 1.0\n").unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = spec(1, |_| Vec::new());
    spec.machines[0].services.insert(
        "greet".into(),
        fleetcheck_fabric::ServiceVersion {
            version: "1.0".into(),
            path: top.join("crates/side/../../versions/greet-1.0"),
        },
    );
    let backend = backend();
    let net = backend.create(&spec).unwrap();
    net.boot(&["m1"]).remove(0).unwrap();
    let out = sh(net.as_ref(), "m1", "greet");
    assert_eq!(out.stdout_str().trim(), "greet 1.0", "{out:?}");
    net.teardown().unwrap();
    std::fs::remove_dir_all(&top).unwrap();
}
