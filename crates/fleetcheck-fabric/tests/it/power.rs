//! Power cuts on netns: a machine with `lose_unsynced` keeps, across a power cut, exactly what
//! its file system had flushed (seen from inside the machine), a coordinated cut of several
//! machines, refusals that change nothing, and nothing left after teardown or `kill -9`.

use fleetcheck_fabric::{Backend, ExecRequest, FaultError, MachineStatus, Network, NetworkSpec};

use crate::support::{backend, require_root, spec};

/// Machines `m1..=mn`, each losing unsynced writes.
fn volatile(n: u8) -> NetworkSpec {
    let mut spec = spec(n, |_| Vec::new());
    for m in &mut spec.machines {
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

#[test]
fn power_proto() {
    if !require_root("power_proto") {
        return;
    }
    let backend = backend();
    let net = backend.create(&volatile(1)).unwrap();
    assert!(net.boot(&["m1"]).iter().all(Result::is_ok));
    sh(
        net.as_ref(),
        "m1",
        "printf durable > d && sync d && printf lost > l",
    );
    eprintln!(
        "{}",
        sh(
            net.as_ref(),
            "m1",
            "ls -la; cat /proc/self/mounts | grep -v overlay | tail -3"
        )
    );
    for l in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(b) = std::fs::read_to_string(l.path().join("loop/backing_file")) {
            eprintln!("{:?} {b}", l.file_name());
        }
    }
    let t = std::time::Instant::now();
    net.power_cut(&["m1"]).unwrap();
    eprintln!("cut in {:?}", t.elapsed());
    assert_eq!(net.status("m1"), Some(MachineStatus::Off));
    assert!(net.boot(&["m1"]).iter().all(Result::is_ok));
    eprintln!("{}", sh(net.as_ref(), "m1", "ls -la; cat d; cat l || true"));
    let _ = FaultError::TornDown;
    net.teardown().unwrap();
}
