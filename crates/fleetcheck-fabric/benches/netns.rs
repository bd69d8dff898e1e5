//! `cargo bench -p fleetcheck-fabric --bench netns` (needs root): create + boot + all agents
//! ready for a 4-machine network, and teardown, against a baseline building the same topology
//! with `ip` commands; plus ping latencies.

use std::process::Command;
use std::time::{Duration, Instant};

use fleetcheck_fabric::host::AgentCommand;
use fleetcheck_fabric::netns::{NetnsBackend, NetnsConfig};
use fleetcheck_fabric::{Backend, FileSystem, MachineSpec, NetworkSpec};

const ITERATIONS: usize = 30;
const MACHINES: u8 = 4;

fn spec() -> NetworkSpec {
    NetworkSpec {
        subnet: "10.88.0.0/24".parse().unwrap(),
        machines: (1..=MACHINES)
            .map(|i| MachineSpec {
                id: format!("m{i}"),
                ip: format!("10.88.0.{i}").parse().unwrap(),
                memory_mb: 128,
                kernel: String::new(),
                setup: vec![],
                ..Default::default()
            })
            .collect(),
    }
}

struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Stats { samples }
    }
    fn pick(&self, q: f64) -> Duration {
        let i = ((self.samples.len() - 1) as f64 * q).round() as usize;
        self.samples[i]
    }
    fn row(&self, name: &str) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{name:<50} {:>9.2} {:>9.2} {:>9.2} {:>5}",
            ms(self.pick(0.5)),
            ms(self.pick(0.9)),
            ms(self.samples[0]),
            self.samples.len()
        );
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The same topology with `ip` commands, all inside fresh namespaces named with our run id.
fn baseline(prefix: &str) -> (Duration, Duration) {
    let sw = format!("{prefix}-sw");
    let ms: Vec<String> = (1..=MACHINES).map(|i| format!("{prefix}-m{i}")).collect();
    let start = Instant::now();
    ip(&["netns", "add", &sw]);
    for m in &ms {
        ip(&["netns", "add", m]);
    }
    ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &sw, "link", "set", "br0", "up"]);
    for (i, m) in ms.iter().enumerate() {
        let port = format!("p{i}");
        ip(&[
            "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", m,
        ]);
        ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"]);
        ip(&["-n", m, "link", "set", "lo", "up"]);
        ip(&["-n", m, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            m,
            "addr",
            "add",
            &format!("10.88.0.{}/24", i + 1),
            "dev",
            "eth0",
        ]);
    }
    let built = start.elapsed();
    let start = Instant::now();
    ip(&["netns", "del", &sw]);
    for m in &ms {
        ip(&["netns", "del", m]);
    }
    (built, start.elapsed())
}

fn main() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the netns benchmark needs root; skipping");
        return;
    }
    let agent = AgentCommand {
        program: env!("CARGO_BIN_EXE_fleetcheck-agent").into(),
        args: Vec::new(),
    };
    let backend = NetnsBackend::new(NetnsConfig::new(agent)).expect("netns backend");
    let spec = spec();
    let ids: Vec<String> = spec.machines.iter().map(|m| m.id.clone()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();

    let (mut create, mut boot, mut up, mut down) = (vec![], vec![], vec![], vec![]);
    let (mut ping_on, mut ping_off) = (vec![], vec![]);
    for it in 0..ITERATIONS {
        let t = Instant::now();
        let net = backend.create(&spec).expect("create");
        let created = t.elapsed();
        let res = net.boot(&ids);
        let ready = t.elapsed();
        for r in res {
            r.expect("boot");
        }
        create.push(created);
        boot.push(ready - created);
        up.push(ready);
        let target = spec.machines[1].ip;
        let t = Instant::now();
        assert!(net.ping("m1", target, Duration::from_secs(2)).unwrap());
        ping_on.push(t.elapsed());
        if it < 5 {
            net.shutdown("m2").unwrap();
            let t = Instant::now();
            assert!(!net.ping("m1", target, Duration::from_millis(100)).unwrap());
            ping_off.push(t.elapsed());
        }
        let t = Instant::now();
        net.teardown().expect("teardown");
        down.push(t.elapsed());
    }
    let (mut base_up, mut base_down) = (vec![], vec![]);
    let prefix = format!("fleetcheck-{}-bench", backend.run_id());
    for _ in 0..ITERATIONS {
        let (u, d) = baseline(&prefix);
        base_up.push(u);
        base_down.push(d);
    }

    println!(
        "\n{:<50} {:>9} {:>9} {:>9} {:>5}",
        "4 machines (ms)", "median", "p90", "min", "n"
    );
    Stats::new(create).row("netns: create (namespaces, links, cgroups)");
    Stats::new(boot).row("netns: boot 4 in parallel until ready");
    Stats::new(up).row("netns: create + boot + all agents ready");
    Stats::new(down).row("netns: teardown");
    Stats::new(base_up).row("baseline `ip`: build topology (no agents)");
    Stats::new(base_down).row("baseline `ip`: delete topology");
    Stats::new(ping_on).row("ping, target online (first of network)");
    Stats::new(ping_off).row("ping, target offline, timeout 100 ms");
    file_systems(&backend, &ids);
}

/// What a file system of its own costs per machine: the same 4-machine network with every data
/// directory on ext4, xfs or btrfs (mkfs of a sparse image, loop device, mount in the disk
/// namespace), against none.
fn file_systems(backend: &NetnsBackend, ids: &[&str]) {
    const RUNS: usize = 10;
    println!(
        "\n{:<50} {:>9} {:>9} {:>9} {:>5}",
        "4 machines, data directory on (ms)", "median", "p90", "min", "n"
    );
    let kinds: [Option<FileSystem>; 4] = [
        None,
        Some(FileSystem::Ext4),
        Some(FileSystem::Xfs),
        Some(FileSystem::Btrfs),
    ];
    for fs in kinds {
        let mut spec = spec();
        for m in &mut spec.machines {
            m.filesystem = fs;
        }
        let (mut create, mut reboot, mut down) = (vec![], vec![], vec![]);
        for _ in 0..RUNS {
            let t = Instant::now();
            let net = backend.create(&spec).expect("create");
            create.push(t.elapsed());
            net.boot(ids).into_iter().for_each(|r| r.expect("boot"));
            net.crash("m1").unwrap();
            let t = Instant::now();
            net.boot(&["m1"]).pop().unwrap().expect("reboot");
            reboot.push(t.elapsed());
            let t = Instant::now();
            net.teardown().expect("teardown");
            down.push(t.elapsed());
        }
        let name = fs.map_or("host directory".to_string(), |f| f.to_string());
        Stats::new(create).row(&format!("{name}: create"));
        Stats::new(reboot).row(&format!("{name}: reboot one machine"));
        Stats::new(down).row(&format!("{name}: teardown (loop devices detached)"));
    }
}
