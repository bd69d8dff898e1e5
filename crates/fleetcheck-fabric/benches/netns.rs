//! `cargo bench -p fleetcheck-fabric --bench netns` (needs root): create + boot + all agents
//! ready for a 4-machine network, and teardown, against a baseline building the same topology
//! with `ip` commands; plus ping latencies, the cost of each machine file system, and of the
//! volatile disk under machines that lose unsynced writes (write throughput and fsync latency
//! inside a machine, ext4 with and without it, in the same run). `-- durability` runs only the
//! last.

use std::process::Command;
use std::time::{Duration, Instant};

use fleetcheck_fabric::host::AgentCommand;
use fleetcheck_fabric::netns::{NetnsBackend, NetnsConfig};
use fleetcheck_fabric::{Backend, ExecRequest, FileSystem, MachineSpec, Network, NetworkSpec};

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
    if std::env::args().any(|a| a == "durability") {
        durability(&backend);
        return;
    }
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
    durability(&backend);
}

/// Seconds `dd` reports for its copy (`... copied, 0.301 s, 223 MB/s` on stderr).
fn dd_seconds(stderr: &str) -> f64 {
    let line = stderr
        .lines()
        .find(|l| l.contains(" copied, "))
        .expect("dd reports");
    let after = line.split(" copied, ").nth(1).unwrap();
    after.split(' ').next().unwrap().parse().unwrap()
}

/// Runs `cmd` in machine `id`'s data directory; its stderr.
fn run_in(net: &dyn Network, id: &str, cmd: &str) -> String {
    let out = net
        .exec(
            id,
            &ExecRequest::shell(format!("cd \"$FLEETCHECK_DATA\" && {cmd}")),
        )
        .expect("exec");
    assert!(out.success(), "{cmd}: {out:?}");
    out.stderr_str()
}

/// What the volatile disk costs (`lose_unsynced`): one ext4 machine with it and one without,
/// in the same network; inside each, 64 MiB written with one fsync at the end (throughput),
/// 4 KiB appends each followed by fdatasync (`oflag=dsync`: latency of a durable write), and
/// on the volatile one the power cut with its remount.
fn durability(backend: &NetnsBackend) {
    const ROUNDS: usize = 7;
    const APPENDS: u32 = 200;
    let mut spec = spec();
    spec.machines.truncate(2);
    for m in &mut spec.machines {
        m.filesystem = Some(FileSystem::Ext4);
    }
    spec.machines[1].lose_unsynced = true;
    let net = backend.create(&spec).expect("create");
    net.boot(&["m1", "m2"])
        .into_iter()
        .for_each(|r| r.expect("boot"));
    let (mut mbps, mut sync_us) = ([vec![], vec![]], [vec![], vec![]]);
    let mut cut = vec![];
    for _ in 0..ROUNDS {
        for (k, id) in ["m1", "m2"].into_iter().enumerate() {
            let err = run_in(
                net.as_ref(),
                id,
                "rm -f w a && dd if=/dev/zero of=w bs=1M count=64 conv=fsync",
            );
            mbps[k].push(64.0 * 1.048_576 / dd_seconds(&err));
            let err = run_in(
                net.as_ref(),
                id,
                &format!("dd if=/dev/zero of=a bs=4k count={APPENDS} oflag=dsync"),
            );
            sync_us[k].push(dd_seconds(&err) * 1e6 / f64::from(APPENDS));
        }
        let t = Instant::now();
        net.power_cut(&["m2"]).expect("power cut");
        net.boot(&["m2"])
            .pop()
            .unwrap()
            .expect("boot after the cut");
        cut.push(t.elapsed());
    }
    net.teardown().expect("teardown");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\n{:<50} {:>9} {:>9} {:>5}",
        "ext4 data directory, inside a machine (median)", "plain", "volatile", "n"
    );
    println!(
        "{:<50} {:>9.0} {:>9.0} {:>5}",
        "write 64 MiB + fsync (MB/s)",
        median(&mut mbps[0]),
        median(&mut mbps[1]),
        ROUNDS
    );
    println!(
        "{:<50} {:>9.0} {:>9.0} {:>5}",
        "append 4 KiB + fdatasync (us each)",
        median(&mut sync_us[0]),
        median(&mut sync_us[1]),
        ROUNDS
    );
    Stats::new(cut).row("volatile: power cut + boot again (ms)");
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
