//! `cargo bench -p fleetcheck-fabric --bench qemu` (needs root, QEMU and a kernel): boot to
//! ready of one VM cold, 4 VMs in parallel cold, one VM restored from a snapshot, next to a
//! netns machine in the same run; then the same with a file system of the machine's own (its
//! disk's modules load and it mounts during the boot). Goals under TCG: < 3 s cold, < 6 s for 4
//! in parallel, < 0.5 s from a snapshot.

use std::time::{Duration, Instant};

use fleetcheck_fabric::host::AgentCommand;
use fleetcheck_fabric::netns::{NetnsBackend, NetnsConfig};
use fleetcheck_fabric::qemu::{kernels, QemuBackend, QemuConfig};
use fleetcheck_fabric::{Backend, FileSystem, MachineSpec, NetworkSpec};

const ROUNDS: usize = 3;

fn spec(n: u8, kernel: &str, filesystem: Option<FileSystem>) -> NetworkSpec {
    NetworkSpec {
        subnet: "10.89.0.0/24".parse().unwrap(),
        machines: (1..=n)
            .map(|i| MachineSpec {
                id: format!("m{i}"),
                ip: format!("10.89.0.{i}").parse().unwrap(),
                memory_mb: 128,
                kernel: kernel.into(),
                setup: vec![],
                filesystem,
                ..MachineSpec::default()
            })
            .collect(),
    }
}

fn agent() -> AgentCommand {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    AgentCommand {
        program: dir.join("fleetcheck-agent"),
        args: Vec::new(),
    }
}

/// Time from `boot` to every machine ready, on a fresh network each round.
fn boot_times(
    backend: &dyn Backend,
    n: u8,
    kernel: &str,
    filesystem: Option<FileSystem>,
) -> Vec<Duration> {
    (0..ROUNDS)
        .map(|_| {
            let net = backend.create(&spec(n, kernel, filesystem)).unwrap();
            let ids: Vec<String> = (1..=n).map(|i| format!("m{i}")).collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let start = Instant::now();
            let results = net.boot(&ids);
            let elapsed = start.elapsed();
            for (id, r) in ids.iter().zip(results) {
                if let Err(e) = r {
                    panic!("boot of {id} failed: {e}\n{}", net.logs(id));
                }
            }
            net.teardown().unwrap();
            elapsed
        })
        .collect()
}

fn row(name: &str, mut samples: Vec<Duration>, goal: Option<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = samples[samples.len() / 2];
    let verdict = match goal {
        Some(g) if median <= g => format!("goal < {} ms: met", g.as_millis()),
        Some(g) => format!("goal < {} ms: MISSED", g.as_millis()),
        None => String::new(),
    };
    println!(
        "{name:<40} {:>9.1} {:>9.1} {:>9.1}  {verdict}",
        ms(median),
        ms(samples[0]),
        ms(samples[samples.len() - 1])
    );
}

fn main() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("qemu bench: needs root, skipped");
        return;
    }
    let Some(kernel) = kernels::installed().into_iter().next() else {
        eprintln!(
            "qemu bench: no kernel installed ({}), skipped",
            kernels::HOW_TO_INSTALL
        );
        return;
    };
    let cache = std::env::temp_dir().join(format!("fleetcheck-bench-cache-{}", std::process::id()));
    let mut cold = QemuConfig::new(agent());
    cold.snapshots = false;
    cold.cache_dir = cache.clone();
    let cold = QemuBackend::new(cold).expect("the qemu backend runs here");
    let mut warm = QemuConfig::new(agent());
    warm.cache_dir = cache.clone();
    let warm = QemuBackend::new(warm).expect("the qemu backend runs here");
    let netns = NetnsBackend::new(NetnsConfig::new(agent())).expect("the netns backend runs here");
    println!(
        "kernel {}, accelerator {} ({}), {ROUNDS} rounds, ms:",
        kernel.release,
        cold.accel().accel,
        cold.accel().reason
    );
    println!(
        "{:<40} {:>9} {:>9} {:>9}",
        "boot to ready", "median", "min", "max"
    );
    let k = kernel.release.as_str();
    row("netns, 1 machine", boot_times(&netns, 1, k, None), None);
    row(
        "netns, 4 machines in parallel",
        boot_times(&netns, 4, k, None),
        None,
    );
    let tcg = cold.accel().accel == fleetcheck_fabric::qemu::Accel::Tcg;
    let goal =
        |tcg_ms: u64, kvm_ms: u64| Some(Duration::from_millis(if tcg { tcg_ms } else { kvm_ms }));
    row(
        "qemu, 1 VM cold",
        boot_times(&cold, 1, k, None),
        goal(3000, 300),
    );
    row(
        "qemu, 4 VMs in parallel cold",
        boot_times(&cold, 4, k, None),
        goal(6000, 1000),
    );
    // The first boot saves the snapshot; the rounds after restore it.
    let _ = boot_times(&warm, 1, k, None);
    row(
        "qemu, 1 VM from snapshot",
        boot_times(&warm, 1, k, None),
        goal(500, 500),
    );
    row(
        "qemu, 4 VMs in parallel from snapshot",
        boot_times(&warm, 4, k, None),
        None,
    );
    for fs in FileSystem::ALL {
        row(
            &format!("netns, 1 machine, own {fs}"),
            boot_times(&netns, 1, k, Some(fs)),
            None,
        );
        // A VM with a disk is other hardware: its first boot saves its own snapshot.
        let _ = boot_times(&warm, 1, k, Some(fs));
        row(
            &format!("qemu, 1 VM from snapshot, own {fs}"),
            boot_times(&warm, 1, k, Some(fs)),
            None,
        );
    }
    let _ = std::fs::remove_dir_all(&cache);
}
