//! Clock faults on netns: a machine with `clock` has its programs' wall clock moved by
//! `set_clock` (seen by `date` inside within a second, back with 0, gone with power), while programs libfaketime cannot reach make the fault refused in
//! one sentence naming them: a statically linked one (busybox), a Go one (etcd).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetcheck_fabric::{Backend, ExecRequest, FaultError, Network};

use crate::support::{backend, require_root, spec};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Seconds the machine's `date` is ahead of the host's.
fn ahead(net: &dyn Network, id: &str) -> i64 {
    let out = net.exec(id, &ExecRequest::shell("date +%s")).unwrap();
    assert!(out.success(), "{out:?}");
    out.stdout_str().trim().parse::<i64>().unwrap() - now()
}

/// Waits past libfaketime's one-second cache, then reads how far ahead the machine is.
fn ahead_now(net: &dyn Network, id: &str) -> i64 {
    std::thread::sleep(Duration::from_millis(1300));
    ahead(net, id)
}

fn have_faketime() -> bool {
    let have = std::path::Path::new(fleetcheck_fabric::netns::FAKETIME).is_file();
    if !have && std::env::var("CI").as_deref() == Ok("true") {
        panic!("clock tests need faketime (scripts/install-deps installs it), and CI=true forbids skipping");
    }
    have
}

#[test]
fn a_machine_clock_moves_for_its_programs_and_refuses_programs_out_of_reach() {
    if !require_root("a_machine_clock_moves_for_its_programs_and_refuses_programs_out_of_reach")
        || !have_faketime()
    {
        return;
    }
    let mut s = spec(2, |_| Vec::new());
    s.machines[0].clock = true;
    let backend = backend();
    let owned = backend.create(&s).unwrap();
    let net = owned.as_ref();
    for r in net.boot(&["m1", "m2"]) {
        r.unwrap();
    }
    assert!(ahead(net, "m1").abs() <= 1);
    net.set_clock("m1", 3600).unwrap();
    let seen = ahead_now(net, "m1");
    assert!((3599..=3601).contains(&seen), "m1 is {seen} s ahead");
    net.set_clock("m1", -120).unwrap();
    let seen = ahead_now(net, "m1");
    assert!((-121..=-119).contains(&seen), "m1 is {seen} s ahead");
    net.set_clock("m1", 0).unwrap();
    assert!(ahead_now(net, "m1").abs() <= 1);
    // Without `clock` in its spec: refused.
    assert!(matches!(
        net.set_clock("m2", 5),
        Err(FaultError::NoClock { .. })
    ));
    // Power takes the offset with it.
    net.set_clock("m1", 600).unwrap();
    net.crash("m1").unwrap();
    for r in net.boot(&["m1"]) {
        r.unwrap();
    }
    assert!(ahead_now(net, "m1").abs() <= 1);
    // A statically linked program running in the machine: refused, naming it.
    // (busybox-static and etcd-server: scripts/install-deps installs both.)
    let busybox = "/bin/busybox";
    {
        let _ = net.exec(
            "m1",
            &ExecRequest::shell(format!("{busybox} sleep 30 >/dev/null 2>&1 &")),
        );
        std::thread::sleep(Duration::from_millis(300));
        match net.set_clock("m1", 30) {
            Err(e @ FaultError::ClockOutOfReach { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("busybox") && text.contains("statically linked"),
                    "{text}"
                );
            }
            other => panic!("a static program's clock was moved: {other:?}"),
        }
        net.crash("m1").unwrap();
        for r in net.boot(&["m1"]) {
            r.unwrap();
        }
    }
    // A Go program (etcd): refused too.
    {
        let _ = net.exec(
            "m1",
            &ExecRequest::shell(
                "cd \"$FLEETCHECK_DATA\" && etcd --data-dir e --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 >/dev/null 2>&1 &",
            ),
        );
        std::thread::sleep(Duration::from_millis(500));
        match net.set_clock("m1", 30) {
            Err(e @ FaultError::ClockOutOfReach { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("etcd") && text.contains("a Go program"),
                    "{text}"
                );
            }
            other => panic!("a Go program's clock was moved: {other:?}"),
        }
    }
    owned.teardown().unwrap();
}
