//! Limits of a network on namespaces: how many machines one network can have, a setup command
//! that never ends, and the out-of-memory killer inside a machine.

use std::time::Duration;

use fleetcheck_fabric::host::AgentCommand;
use fleetcheck_fabric::netns::{NetnsBackend, NetnsConfig};
use fleetcheck_fabric::{Backend, BootError, ExecRequest, MachineSpec, NetworkSpec, MAX_MACHINES};

use crate::support::{backend, require_root, spec};

/// Regression: 260 machines at once overran the netlink socket's receive buffer with acks
/// (ENOBUFS). Now the most a bridge can take builds, and one more is refused before anything
/// is made.
#[test]
fn the_most_machines_a_bridge_takes_build_and_one_more_is_refused() {
    if !require_root("the_most_machines_a_bridge_takes_build_and_one_more_is_refused") {
        return;
    }
    let many = |n: usize| NetworkSpec {
        subnet: "10.77.0.0/16".parse().unwrap(),
        machines: (0..n)
            .map(|i| MachineSpec {
                id: format!("m{i}"),
                ip: std::net::Ipv4Addr::new(10, 77, (i / 250) as u8, (i % 250 + 2) as u8),
                memory_mb: 64,
                kernel: "host".into(),
                ..Default::default()
            })
            .collect(),
    };
    let backend = backend();
    let net = backend
        .create(&many(MAX_MACHINES))
        .expect("1023 machines build");
    assert_eq!(net.spec().machines.len(), 1023);
    net.teardown().unwrap();
    let e = backend
        .create(&many(MAX_MACHINES + 1))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("invalid"), "{e}");
    let chain = format!("{:?}", e);
    assert!(chain.contains("TooManyMachines"), "{chain}");
}

#[test]
fn a_setup_command_that_never_ends_is_named_at_the_boot_deadline() {
    if !require_root("a_setup_command_that_never_ends_is_named_at_the_boot_deadline") {
        return;
    }
    let agent = AgentCommand {
        program: env!("CARGO_BIN_EXE_fleetcheck-agent").into(),
        args: Vec::new(),
    };
    let mut config = NetnsConfig::new(agent);
    config.boot_timeout = Duration::from_secs(1);
    let backend = NetnsBackend::new(config).unwrap();
    let net = backend
        .create(&spec(1, |_| vec!["true".into(), "sleep 600".into()]))
        .unwrap();
    let e = net.boot(&["m1"]).pop().unwrap().unwrap_err();
    assert!(
        matches!(&e, BootError::SetupTimeout { command, .. } if command == "sleep 600"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "setup command `sleep 600` of machine m1 was still running at the boot deadline of 1s"
    );
    net.teardown().unwrap();
}

/// `tail` keeps a line in memory until its end, and /dev/zero has none.
const EAT_MEMORY: &str = "head -c 200M /dev/zero | tail";

#[test]
fn the_out_of_memory_killer_is_named_in_setup_failures_and_exec_output() {
    if !require_root("the_out_of_memory_killer_is_named_in_setup_failures_and_exec_output") {
        return;
    }
    let backend = backend();
    let net = backend
        .create(&spec(2, |i| {
            if i == 1 {
                vec![EAT_MEMORY.into()]
            } else {
                vec![]
            }
        }))
        .unwrap();
    let mut boots = net.boot(&["m1", "m2"]);
    boots.pop().unwrap().expect("m2 boots");
    let e = boots.pop().unwrap().unwrap_err();
    assert!(
        e.to_string()
            .contains("killed by the out-of-memory killer (memory limit 65 MiB)"),
        "{e}"
    );
    let out = net.exec("m2", &ExecRequest::shell(EAT_MEMORY));
    let out = out.unwrap_or_else(|e| panic!("{e}: {}", net.logs("m2")));
    assert!(!out.success());
    assert_eq!(
        out.describe_status(),
        "killed by the out-of-memory killer (memory limit 66 MiB)"
    );
    // A command killed otherwise is not called an out-of-memory kill.
    let out = net.exec("m2", &ExecRequest::shell("kill -9 $$")).unwrap();
    assert_eq!(out.describe_status(), "signal 9");
    net.teardown().unwrap();
}
