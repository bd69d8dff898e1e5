//! `fleetcheck doctor`: what this host has and lacks for a backend, one line each.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use fleetcheck_fabric::{MachineSpec, NetworkSpec, Subnet};

use crate::backends;
use crate::cli::DoctorArgs;
use crate::exit::{self, Fail};

struct Check {
    required: bool,
    ok: bool,
    what: String,
}

fn line(c: &Check) -> String {
    let tag = match (c.ok, c.required) {
        (true, _) => "ok     ",
        (false, true) => "MISSING",
        (false, false) => "note   ",
    };
    format!("{tag} {}", c.what)
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

fn host_checks() -> Vec<Check> {
    let mut checks = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    checks.push(Check {
        required: true,
        ok: root,
        what: if root {
            "running as root".into()
        } else {
            "root privileges: the netns backend creates namespaces and cgroups; run as root".into()
        },
    });
    let missing_ns: Vec<&str> = ["net", "mnt", "pid", "uts", "ipc"]
        .into_iter()
        .filter(|ns| !Path::new("/proc/self/ns").join(ns).exists())
        .collect();
    checks.push(Check {
        required: true,
        ok: missing_ns.is_empty(),
        what: if missing_ns.is_empty() {
            "namespaces: net, mnt, pid, uts, ipc".into()
        } else {
            format!("namespaces: this kernel lacks {}", missing_ns.join(", "))
        },
    });
    let v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"));
    checks.push(Check {
        required: true,
        ok: v1 || v2,
        what: match (v1, v2) {
            (true, _) => "cgroup memory controller (v1, /sys/fs/cgroup/memory)".into(),
            (_, true) => "cgroup memory controller (v2)".into(),
            _ => {
                "cgroup memory controller: mount cgroup v2 with memory enabled, or v1 memory".into()
            }
        },
    });
    let sh = Path::new("/bin/sh").exists();
    checks.push(Check {
        required: true,
        ok: sh,
        what: if sh {
            "/bin/sh for setup commands".into()
        } else {
            "/bin/sh: setup commands run with sh -c".into()
        },
    });
    let nft = which("nft");
    checks.push(Check {
        required: false,
        ok: nft.is_some(),
        what: match nft {
            Some(p) => format!("nft at {} (for firewall setup commands)", p.display()),
            None => {
                "nft not found: setup commands using nftables will fail (apt-get install nftables)"
                    .into()
            }
        },
    });
    checks
}

/// What the qemu backend needs besides what netns needs: QEMU, busybox, tap devices, kernels,
/// and which accelerator it will use and why.
fn qemu_checks() -> Vec<Check> {
    use fleetcheck_fabric::qemu::{self, kernels};
    let mut checks = Vec::new();
    let qemu = qemu::find_qemu();
    checks.push(Check {
        required: true,
        ok: qemu.is_some(),
        what: match &qemu {
            Some(p) => format!("qemu at {}", p.display()),
            None => "qemu-system-x86_64 not found: apt-get install qemu-system-x86".into(),
        },
    });
    let busybox = qemu::find_busybox();
    checks.push(Check {
        required: true,
        ok: busybox.is_some(),
        what: match &busybox {
            Some(p) => format!("busybox at {} (for the VMs' initramfs)", p.display()),
            None => "busybox not found: apt-get install busybox-static".into(),
        },
    });
    let tun = Path::new("/dev/net/tun").exists();
    checks.push(Check {
        required: true,
        ok: tun,
        what: if tun {
            "/dev/net/tun for the VMs' tap devices".into()
        } else {
            "/dev/net/tun missing: the kernel needs tun/tap (modprobe tun)".into()
        },
    });
    let installed = kernels::installed();
    checks.push(Check {
        required: true,
        ok: !installed.is_empty(),
        what: if installed.is_empty() {
            format!("no kernel for VMs: {}", kernels::HOW_TO_INSTALL)
        } else {
            format!(
                "kernels for VMs: {} (more: {})",
                installed
                    .iter()
                    .map(|k| k.release.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                kernels::HOW_TO_INSTALL
            )
        },
    });
    checks.push(Check {
        required: false,
        ok: installed.len() >= 2,
        what: if installed.len() >= 2 {
            "two or more kernels: the kernel is a real parameter".into()
        } else {
            "only one kernel: every VM runs the same one".into()
        },
    });
    checks
}

/// The qemu backend, with a line saying which accelerator it uses and why.
fn qemu_backend(
    checks: &mut Vec<Check>,
) -> Result<std::sync::Arc<dyn fleetcheck_fabric::Backend>, anyhow::Error> {
    use fleetcheck_fabric::qemu::{Accel, QemuBackend, QemuConfig};
    let config = QemuConfig::new(backends::agent_command().map_err(|f| f.error)?);
    let backend = QemuBackend::new(config)?;
    let accel = backend.accel();
    checks.push(Check {
        required: false,
        ok: accel.accel == Accel::Kvm,
        what: format!(
            "accelerator: {} ({}){}",
            accel.accel,
            accel.reason,
            if accel.accel == Accel::Tcg {
                "; VMs boot in seconds instead of a fraction of one"
            } else {
                ""
            }
        ),
    });
    Ok(std::sync::Arc::new(backend))
}

/// Builds a 2-machine network, boots both, pings across, tears down.
fn smoke_test(backend: &dyn fleetcheck_fabric::Backend) -> Result<Duration, anyhow::Error> {
    let start = Instant::now();
    let subnet = Subnet {
        addr: Ipv4Addr::new(172, 16, 2, 0),
        prefix: 24,
    };
    let machine = |id: &str, last: u8| MachineSpec {
        id: id.into(),
        ip: Ipv4Addr::new(172, 16, 2, last),
        memory_mb: backend.min_memory_mb().max(64),
        kernel: "host".into(),
        setup: vec!["true".into()],
    };
    let spec = NetworkSpec {
        subnet,
        machines: vec![machine("doctora", 2), machine("doctorb", 3)],
    };
    let net = backend.create(&spec)?;
    let result = (|| {
        for r in net.boot(&["doctora", "doctorb"]) {
            r?;
        }
        if !net.ping(
            "doctora",
            Ipv4Addr::new(172, 16, 2, 3),
            Duration::from_secs(2),
        )? {
            return Err(anyhow!("a ping between two booted machines got no reply"));
        }
        Ok(())
    })();
    net.teardown()?;
    result.map(|()| start.elapsed())
}

/// `fleetcheck doctor`.
pub fn doctor_command(args: &DoctorArgs) -> Result<u8, Fail> {
    match args.backend.as_str() {
        "fake" => {
            println!("ok      the fake backend runs in memory and needs nothing");
            return Ok(exit::PASSED);
        }
        "netns" | "qemu" => {}
        other => {
            backends::make(other)?;
        }
    }
    let mut checks = host_checks();
    if args.backend == "qemu" {
        checks.extend(qemu_checks());
    }
    let host_ok = checks.iter().all(|c| c.ok || !c.required);
    if host_ok {
        let backend = if args.backend == "qemu" {
            qemu_backend(&mut checks)
        } else {
            backends::make(&args.backend).map_err(|f| f.error)
        };
        let outcome = backend.and_then(|b| smoke_test(b.as_ref()));
        checks.push(Check {
            required: true,
            ok: outcome.is_ok(),
            what: match outcome {
                Ok(t) => format!(
                    "{} smoke test: 2 machines built, booted, pinged and removed in {} ms",
                    args.backend,
                    t.as_millis()
                ),
                Err(e) => format!("{} smoke test failed: {e:#}", args.backend),
            },
        });
    }
    for c in &checks {
        println!("{}", line(c));
    }
    Ok(if checks.iter().all(|c| c.ok || !c.required) {
        exit::PASSED
    } else {
        exit::HOST
    })
}
