//! Boots two machines and pings once with a 100 ms timeout, `N` times (first argument, 20),
//! each on a fresh network, and prints what [`LoadProbe`] measured for every ping: how late
//! the host was next to whether the reply came. Run it beside a load (e.g.
//! `scripts/load-test`) to see which lateness a missing reply goes with. Needs root.
use std::time::{Duration, Instant};

use fleetcheck_fabric::load::LoadProbe;
use fleetcheck_fabric::netns::{NetnsBackend, NetnsConfig};
use fleetcheck_fabric::{Backend, MachineSpec, NetworkSpec};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let backend = NetnsBackend::new(NetnsConfig::located().expect("agent")).expect("backend");
    let spec = NetworkSpec {
        subnet: "10.77.0.0/24".parse().unwrap(),
        machines: (1..=2)
            .map(|i| MachineSpec {
                id: format!("m{i}"),
                ip: format!("10.77.0.{i}").parse().unwrap(),
                memory_mb: 96,
                ..Default::default()
            })
            .collect(),
    };
    let timeout = Duration::from_millis(100);
    let (mut replies, mut missing) = (0, 0);
    for _ in 0..n {
        let net = backend.create(&spec).expect("create");
        let booted = net.boot(&["m1", "m2"]);
        assert!(booted.iter().all(Result::is_ok), "{booted:?}");
        let probe = LoadProbe::start();
        let began = Instant::now();
        let reply = net.ping("m1", "10.77.0.2".parse().unwrap(), timeout);
        let took = began.elapsed();
        let late = probe.stop();
        let reply = reply.expect("ping");
        if reply {
            replies += 1;
        } else {
            missing += 1;
        }
        // Whether each end's link carries packets yet (the kernel's link watch sets the
        // operational state and attaches the queueing discipline together).
        let operstate = |m: &str| {
            net.exec(
                m,
                &fleetcheck_fabric::ExecRequest::shell("cat /sys/class/net/eth0/operstate"),
            )
            .map(|o| o.stdout_str().trim().to_string())
            .unwrap_or_else(|e| e.to_string())
        };
        let links = if reply {
            String::new()
        } else {
            format!(
                "; eth0 after: m1 {}, m2 {}",
                operstate("m1"),
                operstate("m2")
            )
        };
        println!(
            "{} in {:>4} ms; {}{links}",
            if reply { "reply   " } else { "NO REPLY" },
            took.as_millis(),
            late.describe()
        );
        net.teardown().expect("teardown");
    }
    println!("{replies} replies, {missing} missing");
}
