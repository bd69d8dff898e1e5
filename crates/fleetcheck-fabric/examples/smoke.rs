//! Creates a 3-machine network, boots it, pings, prints timings. Needs root.
use std::time::{Duration, Instant};

use fleetcheck_fabric::netns::{NetnsBackend, NetnsConfig};
use fleetcheck_fabric::{Backend, ExecRequest, MachineSpec, NetworkSpec};

fn main() {
    let backend = NetnsBackend::new(NetnsConfig::located().expect("agent")).expect("backend");
    let spec = NetworkSpec {
        subnet: "10.77.0.0/24".parse().unwrap(),
        machines: (1..=3)
            .map(|i| MachineSpec {
                id: format!("m{i}"),
                ip: format!("10.77.0.{i}").parse().unwrap(),
                memory_mb: 64,
                kernel: String::new(),
                setup: vec!["echo hello from setup".into()],
                ..Default::default()
            })
            .collect(),
    };
    let t = Instant::now();
    let net = backend.create(&spec).expect("create");
    println!("create {:?}", t.elapsed());
    let t = Instant::now();
    let res = net.boot(&["m1", "m2", "m3"]);
    println!("boot {:?} {res:?}", t.elapsed());
    let out = net
        .exec("m1", &ExecRequest::shell("hostname; ps ax; ip -br a"))
        .expect("exec");
    println!("{}{}", out.stdout_str(), out.stderr_str());
    let t = Instant::now();
    println!(
        "ping m1->m2 {:?} {:?}",
        net.ping("m1", "10.77.0.2".parse().unwrap(), Duration::from_secs(2)),
        t.elapsed()
    );
    net.shutdown("m2").unwrap();
    let t = Instant::now();
    println!(
        "ping m1->m2 off {:?} {:?}",
        net.ping(
            "m1",
            "10.77.0.2".parse().unwrap(),
            Duration::from_millis(300)
        ),
        t.elapsed()
    );
    println!("logs m1:\n{}", net.logs("m1"));
    let t = Instant::now();
    net.teardown().expect("teardown");
    println!("teardown {:?}", t.elapsed());
}
