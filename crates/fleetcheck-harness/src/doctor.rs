//! `fleetcheck doctor`: what this host has and lacks for a backend, one line each.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use fleetcheck_fabric::host::disk;
use fleetcheck_fabric::{Backend, ExecRequest, FileSystem, MachineSpec, NetworkSpec, Subnet};
use fleetcheck_scenarios::config::ScenarioConfig;

use crate::backends::{self, BackendName};
use crate::cli::DoctorArgs;
use crate::exit::{self, Fail};
use crate::scenario::Registered;

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

/// Which file systems this host can give machines of `backend`: mkfs on the host, and the
/// kernel's support (netns: the host's kernel and loop devices; qemu: a module in every guest
/// kernel). Required only when the configuration asks for them.
fn filesystem_checks(
    backend: BackendName,
    config: Option<&ScenarioConfig>,
) -> (Vec<Check>, Vec<FileSystem>) {
    let wanted: Vec<FileSystem> = config
        .map(|c| c.domains().into_iter().flat_map(|d| d.filesystem).collect())
        .unwrap_or_default();
    let qemu = backend == BackendName::Qemu;
    let loops = Path::new("/dev/loop-control").exists();
    let mut checks = Vec::new();
    if !qemu {
        checks.push(Check {
            required: !wanted.is_empty(),
            ok: loops,
            what: if loops {
                "loop devices (/dev/loop-control) for machine file systems".into()
            } else {
                "loop devices: no /dev/loop-control (modprobe loop); machines get no file system of their own".into()
            },
        });
    }
    let guest_kernels = if qemu {
        fleetcheck_fabric::qemu::kernels::installed()
    } else {
        Vec::new()
    };
    let mut usable = Vec::new();
    for fs in FileSystem::ALL {
        let mkfs = disk::mkfs_path(fs);
        // Where the kernel support comes from, or why it is missing.
        let kernel: Result<String, String> = if qemu {
            match guest_kernels.iter().find(|k| !k.has_module(fs.name())) {
                Some(k) => Err(format!("guest kernel {} has no {fs} module", k.release)),
                None => Ok("a module in every guest kernel".into()),
            }
        } else if disk::kernel_supports(fs) {
            Ok("kernel support (/proc/filesystems)".into())
        } else {
            Err(format!("not in /proc/filesystems (modprobe {fs})"))
        };
        let ok = mkfs.is_some() && kernel.is_ok() && (qemu || loops);
        if ok {
            usable.push(fs);
        }
        checks.push(Check {
            required: wanted.contains(&fs),
            ok,
            what: match (&mkfs, kernel) {
                (Some(p), Ok(support)) => {
                    format!("file system {fs}: {} and {support}", p.display())
                }
                (None, _) => format!(
                    "file system {fs}: {} not found (apt-get install {})",
                    fs.mkfs(),
                    fs.package()
                ),
                (Some(_), Err(why)) => format!("file system {fs}: {why}"),
            },
        });
    }
    (checks, usable)
}

/// Every service version of the configuration: its program exists and is executable.
fn version_checks(config: &ScenarioConfig) -> Vec<Check> {
    use std::os::unix::fs::PermissionsExt;
    let mut checks = Vec::new();
    for (name, service) in &config.services {
        for v in &service.versions {
            let executable = std::fs::metadata(&v.path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            checks.push(Check {
                required: true,
                ok: executable,
                what: if executable {
                    format!("service {name} version {}: {}", v.version, v.path.display())
                } else {
                    format!(
                        "service {name} version {}: {} is not an executable file",
                        v.version,
                        v.path.display()
                    )
                },
            });
        }
    }
    checks
}

/// The host programs of each scenario and system, one line each: found at PATH, or missing
/// with the package to install (a note: only runs of that system need them).
fn program_checks(config: Option<&ScenarioConfig>, registry: &[Box<dyn Registered>]) -> Vec<Check> {
    let default = ScenarioConfig::default();
    let config = config.unwrap_or(&default);
    let mut checks = Vec::new();
    for entry in registry {
        let systems: Vec<Option<&str>> = match entry.systems() {
            [] => vec![None],
            some => some.iter().copied().map(Some).collect(),
        };
        for system in systems {
            let label = match system {
                Some(s) => format!("{} --system {s}", entry.name()),
                None => entry.name().to_string(),
            };
            let programs = entry.programs(system, config);
            if programs.is_empty() {
                let why = if entry.on_machines(system) {
                    "none of its own"
                } else {
                    "none (it runs in memory)"
                };
                checks.push(Check {
                    required: false,
                    ok: true,
                    what: format!("program of {label}: {why}"),
                });
            }
            for n in programs {
                let p = n.program;
                let found = crate::programs::find(p.name);
                let what = if !n.needed {
                    format!(
                        "program of {label}: {} ({}) from [services.{}]",
                        p.name, p.role, p.name
                    )
                } else if let Some(path) = &found {
                    format!(
                        "program of {label}: {} ({}) found at {}",
                        p.name,
                        p.role,
                        path.display()
                    )
                } else {
                    format!(
                        "program of {label}: {} ({}) missing: apt-get install {}",
                        p.name, p.role, p.package
                    )
                };
                checks.push(Check {
                    required: false,
                    ok: found.is_some() || !n.needed,
                    what,
                });
            }
        }
    }
    checks
}

/// One machine per file system in `filesystems`, booted; each must see its own file system at
/// its data directory. Returns the time from create to teardown.
fn filesystem_test(
    backend: &dyn fleetcheck_fabric::Backend,
    filesystems: &[FileSystem],
) -> Result<Duration, anyhow::Error> {
    let start = Instant::now();
    let spec = NetworkSpec {
        subnet: Subnet {
            addr: Ipv4Addr::new(172, 16, 2, 0),
            prefix: 24,
        },
        machines: filesystems
            .iter()
            .enumerate()
            .map(|(i, fs)| MachineSpec {
                filesystem: Some(*fs),
                ..MachineSpec::new(
                    format!("doctor{fs}"),
                    Ipv4Addr::new(172, 16, 2, 2 + i as u8),
                    backend.min_memory_mb().max(64),
                    "host",
                )
            })
            .collect(),
    };
    let net = backend.create(&spec)?;
    let result = (|| {
        for r in net.boot(
            &spec
                .machines
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>(),
        ) {
            r?;
        }
        for (m, fs) in spec.machines.iter().zip(filesystems) {
            let cmd = "awk -v d=\"$FLEETCHECK_DATA\" '$2 == d { t = $3 } END { print t }' /proc/self/mounts";
            let out = net.exec(&m.id, &ExecRequest::shell(cmd))?;
            let seen = out.stdout_str().trim().to_string();
            if seen != fs.name() {
                return Err(anyhow!(
                    "machine {} sees `{seen}` at its data directory, not {fs}",
                    m.id
                ));
            }
        }
        Ok(())
    })();
    net.teardown()?;
    result.map(|()| start.elapsed())
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
    let agent = backends::vm_agent(backends::agent_command).map_err(|f| f.error)?;
    let config = QemuConfig::new(agent);
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
        ..Default::default()
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
pub fn doctor_command(args: &DoctorArgs, registry: &[Box<dyn Registered>]) -> Result<u8, Fail> {
    let config = match &args.config {
        Some(p) => Some(ScenarioConfig::from_file(p).map_err(Fail::usage)?),
        None => None,
    };
    if args.backend == BackendName::Fake {
        println!("ok      the fake backend runs in memory and needs nothing");
        for c in program_checks(config.as_ref(), registry) {
            println!("{}", line(&c));
        }
        return Ok(exit::PASSED);
    }
    let mut checks = host_checks();
    checks.extend(program_checks(config.as_ref(), registry));
    let (fs_checks, usable) = filesystem_checks(args.backend, config.as_ref());
    checks.extend(fs_checks);
    if let Some(c) = &config {
        checks.extend(version_checks(c));
    }
    if args.backend == BackendName::Qemu {
        checks.extend(qemu_checks());
    }
    let host_ok = checks.iter().all(|c| c.ok || !c.required);
    if host_ok {
        let backend = if args.backend == BackendName::Qemu {
            qemu_backend(&mut checks)
        } else {
            backends::make(args.backend).map_err(|f| f.error)
        };
        let run = |test: &dyn Fn(&dyn Backend) -> anyhow::Result<Duration>| match &backend {
            Ok(b) => test(b.as_ref()),
            Err(e) => Err(anyhow!("{e:#}")),
        };
        checks.push(timed(
            run(&smoke_test),
            |ms| {
                format!(
                    "{} smoke test: 2 machines built, booted, pinged and removed in {ms} ms",
                    args.backend
                )
            },
            &format!("{} smoke test", args.backend),
        ));
        if !usable.is_empty() {
            let names: Vec<&str> = usable.iter().map(|f| f.name()).collect();
            checks.push(timed(
                run(&|b| filesystem_test(b, &usable)),
                |ms| {
                    format!(
                        "machine file systems: {} made, mounted inside machines and removed in {ms} ms",
                        names.join(", ")
                    )
                },
                "machine file systems test",
            ));
        }
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

/// A required check of a test that took some time: `done` says what passed, given the
/// milliseconds; `what` names the test that failed.
fn timed(
    outcome: anyhow::Result<Duration>,
    done: impl FnOnce(u128) -> String,
    what: &str,
) -> Check {
    Check {
        required: true,
        ok: outcome.is_ok(),
        what: match outcome {
            Ok(t) => done(t.as_millis()),
            Err(e) => format!("{what} failed: {e:#}"),
        },
    }
}
