//! A network of namespace machines: creation (namespaces, veths, cgroups, disks, root layers),
//! the agent's boot into them, the freezer, and removing what is netns's own. What it shares
//! with qemu (status rules, power cuts, pause bookkeeping, the `Network` operations, the
//! teardown sequence) is in [`crate::switched`].

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{mpsc::RecvTimeoutError, Arc, Mutex};
use std::time::Duration;

use super::spawn::{spawn_agent, AgentFds};
use super::NetnsConfig;
use crate::error::{BootError, CreateError, ExecError, FaultError};
use crate::host::cgroup::{self, FreezerDir};
use crate::host::conn::{self, AgentConn};
use crate::host::disk::{self, Disk};
use crate::host::netlink::Req;
use crate::host::ns::{self, Netns};
use crate::host::sweep::RunDir;
use crate::host::switch::{self, mac_of, Switch};
use crate::host::sys;
use crate::protocol::{AgentMsg, HostMsg};
use crate::spawned::Spawned;
use crate::spec::{ExecOutput, ExecRequest, FileSystem, NetworkSpec, ServiceVersion};
use crate::switched::{self, BootFailure, Handle, Net, Switched};

static NEXT_NET: AtomicU64 = AtomicU64::new(0);

/// What a netns machine has beyond what every switched machine has.
pub(crate) struct Own {
    wire: Mutex<Wire>,
    cgroup: PathBuf,
    /// Its freezer, if the host has one.
    freezer: Option<FreezerDir>,
    /// Its own file system mounted at `data` in a disk namespace, if its spec asks for one.
    disk: Mutex<Option<Disk>>,
    /// `m<i>.bin`: one symlink per service to the version installed; first on the agent's PATH.
    bin: PathBuf,
    /// `m<i>.root`: the machine's own layers of its root file system (see `agent::root`).
    root: PathBuf,
    /// Its cgroup of the v1 pids hierarchy, where its task limit is (on v2: `cgroup`).
    pids: Option<PathBuf>,
    /// Pid of the live agent (0: none), readable without the state lock for emergency cleanup.
    agent_pid: AtomicI32,
}

type Machine = switched::Machine<Own>;

/// A machine's network namespace and its bridge port. Both are replaced before every boot after
/// the first, so a power cycle starts from a fresh network stack, as a real machine does: no
/// firewall rule, route, sysctl or neighbour entry of an earlier boot survives it.
struct Wire {
    netns: Netns,
    /// Bridge port of this machine in the switch namespace.
    port: String,
    /// Boots started so far.
    boots: u32,
}

/// Everything a network owns; shared with the process registry for Ctrl-C cleanup.
pub struct NetShared {
    net: Net<Own>,
    config: NetnsConfig,
}

/// The public handle; dropping it tears the network down.
pub struct NetnsNetwork {
    shared: Arc<NetShared>,
}

fn ns_name(run: &str, net: &str, i: usize, id: &str) -> String {
    let readable = id.len() <= 24
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if readable {
        format!("fleetcheck-{run}-{net}-m{i}-{id}")
    } else {
        format!("fleetcheck-{run}-{net}-m{i}")
    }
}

/// Builds the network. On failure everything created so far is removed.
pub fn create(
    spec: &NetworkSpec,
    config: &NetnsConfig,
    run: &Arc<RunDir>,
) -> Result<NetnsNetwork, CreateError> {
    spec.validate().map_err(CreateError::InvalidSpec)?;
    let net = format!("n{}", NEXT_NET.fetch_add(1, Ordering::Relaxed));
    let dir = run.path.join(&net);
    // Root only: logs, disks and the machines' layers are nobody else's to read.
    std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
        .create(&dir)
        .map_err(|source| CreateError::Cgroup {
            path: dir.clone(),
            source,
        })?;
    let mut names = vec![switch::name(&run.run, &net)];
    names.extend(
        spec.machines
            .iter()
            .enumerate()
            .map(|(i, m)| ns_name(&run.run, &net, i, &m.id)),
    );
    let (mut made, failed) = ns::create_all(&run.path, names);
    if let Some((name, source)) = failed {
        for n in &made {
            let _ = ns::remove_named(&n.path);
        }
        let _ = fs::remove_dir_all(&dir);
        return Err(CreateError::Namespace { name, source });
    }
    let machine_ns = made.split_off(1);
    let switch = made.pop().expect("switch namespace was created first");
    let mut machines = Vec::with_capacity(spec.machines.len());
    for (i, (m, netns)) in spec.machines.iter().zip(machine_ns).enumerate() {
        let cgroup = run.cgroups.run_dir(&run.run).join(format!("{net}-m{i}"));
        let pids = run.cgroups.pids_v1(&run.run, &format!("{net}-m{i}"));
        machines.push(Machine::new(
            m,
            i,
            &dir,
            Own {
                freezer: run.freezer.machine(&run.run, &cgroup),
                wire: Mutex::new(Wire {
                    netns,
                    port: format!("p{i}"),
                    boots: 0,
                }),
                cgroup,
                disk: Mutex::new(None),
                bin: dir.join(format!("m{i}.bin")),
                root: dir.join(format!("m{i}.root")),
                pids,
                agent_pid: AtomicI32::new(0),
            },
        ));
    }
    let shared = Arc::new(NetShared {
        net: Net::new(spec, net, Switch::new(switch), machines, dir, run),
        config: config.clone(),
    });
    crate::host::register_network(&shared);
    let network = NetnsNetwork { shared };
    // If wiring fails, dropping `network` removes what exists.
    network.shared.wire()?;
    network.shared.install_all()?;
    Ok(network)
}

fn netlink_err((what, source): (String, io::Error)) -> CreateError {
    CreateError::Netlink { what, source }
}

impl NetShared {
    /// Bridge, veth pairs, addresses, cgroups.
    fn wire(&self) -> Result<(), CreateError> {
        self.net.switch.bring_up()?;
        // Ports stay down while their machine is off.
        let wires: Vec<_> = self
            .net
            .machines
            .iter()
            .map(|m| m.own.wire.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let mut veths = Ok(());
        self.net
            .switch
            .with(|_, sw| {
                let bridge = sw.link_index(switch::BRIDGE)?;
                let reqs = self
                    .net
                    .machines
                    .iter()
                    .zip(&wires)
                    .map(|(m, w)| Req::NewVeth {
                        name: w.port.clone(),
                        master: bridge,
                        peer: "eth0".into(),
                        peer_ns: w.netns.fd.as_raw_fd(),
                        peer_mac: mac_of(m.spec.ip),
                    });
                veths = sw.batch(reqs.collect());
                Ok(())
            })
            .map_err(|source| CreateError::Netlink {
                what: format!("look up bridge {}", switch::BRIDGE),
                source,
            })?;
        veths.map_err(netlink_err)?;
        for (m, w) in self.net.machines.iter().zip(&wires) {
            self.configure_machine(m, &w.netns)?;
            let name = m
                .own
                .cgroup
                .file_name()
                .and_then(|n| n.to_str())
                .expect("cgroup names are ascii");
            self.net
                .run
                .cgroups
                .create_machine(&self.net.run.run, name, m.spec.memory_mb)
                .map_err(|source| CreateError::Cgroup {
                    path: m.own.cgroup.clone(),
                    source,
                })?;
            if let Some(freezer) = &m.own.freezer {
                freezer.create().map_err(|source| CreateError::Cgroup {
                    path: freezer.path().to_path_buf(),
                    source,
                })?;
            }
            if let Some(pids) = &m.own.pids {
                cgroup::create_pids_v1(pids).map_err(|source| CreateError::Cgroup {
                    path: pids.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Every machine's bin directory and, where its spec asks for one, its file system; the
    /// file systems are made in parallel.
    fn install_all(&self) -> Result<(), CreateError> {
        for m in &self.net.machines {
            let err = |source| CreateError::Disk {
                machine: m.spec.id.clone(),
                source,
            };
            install_services(&m.own.bin, &m.services.get()).map_err(err)?;
            if m.spec.clock {
                if !Path::new(FAKETIME).is_file() {
                    return Err(CreateError::NoFaketime {
                        machine: m.spec.id.clone(),
                        path: FAKETIME,
                    });
                }
                write_clock(&m.own.bin, 0).map_err(err)?;
            }
            fs::create_dir_all(&m.data).map_err(err)?;
            make_root_layers(&m.own.root).map_err(err)?;
        }
        std::thread::scope(|s| {
            let jobs: Vec<_> = self
                .net
                .machines
                .iter()
                .filter_map(|m| m.spec.disk_filesystem().map(|fs| (m, fs)))
                .map(|(m, fs)| {
                    s.spawn(move || -> Result<(), CreateError> {
                        let err = |source| CreateError::Disk {
                            machine: m.spec.id.clone(),
                            source,
                        };
                        disk::make_image(&self.image_of(m), fs).map_err(err)?;
                        // Checked under the disk lock, which teardown takes after setting the
                        // flag: no disk is mounted after teardown released the others.
                        let mut slot = m.own.disk.lock().unwrap_or_else(|e| e.into_inner());
                        if self.net.torn_down.load(Ordering::SeqCst) {
                            return Err(err(io::Error::other("network was torn down")));
                        }
                        *slot = Some(self.mount_disk(m, fs).map_err(err)?);
                        Ok(())
                    })
                })
                .collect();
            jobs.into_iter()
                .map(|j| j.join().expect("disk threads do not panic"))
                .collect::<Result<Vec<()>, _>>()
        })?;
        Ok(())
    }

    /// `m<i>.img`: machine `m`'s disk image.
    fn image_of(&self, m: &Machine) -> PathBuf {
        self.net.dir.join(format!("m{}.img", m.index))
    }

    /// Mounts machine `m`'s image (file system `fs`) in a new disk namespace: through the
    /// volatile write cache if the machine loses unsynced writes.
    fn mount_disk(&self, m: &Machine, fs: FileSystem) -> io::Result<Disk> {
        let image = self.image_of(m);
        if m.spec.lose_unsynced {
            let fuse = self.net.dir.join(format!("m{}.fuse", m.index));
            let name = disk::volatile_name(&self.net.run.run, &self.net.name, m.index);
            let run = &self.net.run;
            let procs = run
                .cgroups
                .ensure_group(&run.run, "disks")?
                .join("cgroup.procs");
            Disk::mount_volatile(
                &image,
                fs,
                &m.data,
                &fuse,
                &name,
                &self.config.agent,
                &procs,
            )
        } else {
            Disk::mount(&image, fs, &m.data)
        }
    }

    /// The agent's whole environment (nothing of the host's): `PATH` with the machine's
    /// services first, `HOME`, `FLEETCHECK_DATA` (its data directory) and one
    /// `FLEETCHECK_VERSION_<NAME>` per service.
    fn agent_env(&self, m: &Machine) -> Vec<(String, String)> {
        [
            (
                "PATH".to_string(),
                format!("{}:{MACHINE_PATH}", m.own.bin.display()),
            ),
            ("HOME".to_string(), "/root".to_string()),
        ]
        .into_iter()
        .chain(crate::backend::machine_env(&m.data, &m.services.get()))
        .chain(
            m.spec
                .clock
                .then(|| clock_env(&m.own.bin))
                .into_iter()
                .flatten(),
        )
        .collect()
    }

    /// The agent's arguments after its command's own: the machine's root layers, data and
    /// services directories, and the run's scratch directory.
    fn agent_args(&self, m: &Machine) -> Vec<String> {
        let scratch = self.net.run.scratch().ok();
        [
            ("--root", Some(&m.own.root)),
            ("--data", Some(&m.data)),
            ("--bin", Some(&m.own.bin)),
            ("--scratch", scratch.as_ref()),
        ]
        .into_iter()
        .filter_map(|(flag, path)| Some((flag, path?)))
        .flat_map(|(flag, path)| [flag.to_string(), path.to_string_lossy().into_owned()])
        .collect()
    }

    /// Inside a machine's namespace: `lo` and `eth0` up, the machine's address on `eth0`.
    fn configure_machine(&self, m: &Machine, netns: &Netns) -> Result<(), CreateError> {
        let mut nl = netns.netlink.lock().unwrap_or_else(|e| e.into_inner());
        let eth0 = nl
            .link_index("eth0")
            .map_err(|source| CreateError::Netlink {
                what: format!("look up eth0 of machine {}", m.spec.id),
                source,
            })?;
        nl.batch(vec![
            Req::SetUp {
                name: "lo".into(),
                up: true,
            },
            Req::SetUp {
                name: "eth0".into(),
                up: true,
            },
            Req::AddAddr {
                index: eth0,
                addr: m.spec.ip,
                prefix: self.net.spec.subnet.prefix,
            },
        ])
        .map_err(netlink_err)
    }

    /// Before every boot but the first: a fresh namespace, veth pair and port for the machine.
    /// The old namespace is unmounted here and freed by the kernel (with its links) once the
    /// old handle is dropped; its port was already down.
    fn renew_wire(&self, m: &Machine, w: &mut Wire) -> io::Result<()> {
        // Checked under the wire lock, which teardown takes after setting the flag: no
        // namespace is made after teardown removed this machine's.
        if self.net.torn_down.load(Ordering::SeqCst) {
            return Err(io::Error::other("network was torn down"));
        }
        w.boots += 1;
        if w.boots == 1 {
            return Ok(());
        }
        ns::remove_named(&w.netns.path)?;
        let (mut made, failed) = ns::create_all(&self.net.run.path, vec![w.netns.name.clone()]);
        if let Some((_, e)) = failed {
            return Err(e);
        }
        let netns = made.pop().expect("one namespace was asked for and made");
        let port = format!("p{}r{}", m.index, w.boots);
        self.net.switch.with(|_, sw| {
            let bridge = sw.link_index(switch::BRIDGE)?;
            sw.batch(vec![Req::NewVeth {
                name: port.clone(),
                master: bridge,
                peer: "eth0".into(),
                peer_ns: netns.fd.as_raw_fd(),
                peer_mac: mac_of(m.spec.ip),
            }])
            .map_err(|(_, e)| e)
        })?;
        self.configure_machine(m, &netns)
            .map_err(io::Error::other)?;
        w.netns = netns;
        w.port = port;
        Ok(())
    }

    fn set_port(&self, m: &Machine, up: bool) -> io::Result<()> {
        let port = m
            .own
            .wire
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .port
            .clone();
        self.net.switch.set_port(port, up)
    }

    /// After a kill: thaws the machine's freezer so its (maybe frozen) tasks can die.
    fn thaw_after_kill(&self, m: &Machine) {
        if let Some(freezer) = &m.own.freezer {
            let _ = freezer.request(false);
        }
    }
}

/// `PATH` of a machine after its services directory.
const MACHINE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host files a machine's `/etc` does not show (whiteouts in its upper layer): password
/// hashes, the host's SSH keys and private TLS keys.
const ETC_SECRETS: &[&str] = &["shadow", "shadow-", "gshadow", "gshadow-", "ssl/private"];

/// A machine's root layers (see `agent::root`): upper and work directories of its `/etc` and
/// `/var` overlays, its `/root`, and whiteouts hiding [`ETC_SECRETS`] and the host's SSH host
/// keys.
fn make_root_layers(root: &std::path::Path) -> io::Result<()> {
    for d in [
        "etc.upper",
        "etc.work",
        "var.upper",
        "var.work",
        "home",
        "mnt",
    ] {
        fs::create_dir_all(root.join(d))?;
    }
    let etc = std::path::Path::new("/etc");
    let mut hidden: Vec<String> = ETC_SECRETS.iter().map(|s| s.to_string()).collect();
    if let Ok(ssh) = fs::read_dir(etc.join("ssh")) {
        hidden.extend(
            ssh.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ssh_host_") && n.ends_with("_key"))
                .map(|n| format!("ssh/{n}")),
        );
    }
    let upper = root.join("etc.upper");
    for name in hidden {
        if fs::symlink_metadata(etc.join(&name)).is_err() {
            continue;
        }
        let path = upper.join(&name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let c = sys::cpath(&path)?;
        // SAFETY: valid C string; a character device 0:0 is overlayfs's whiteout.
        sys::check(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) })?;
    }
    Ok(())
}

/// How long teardown waits for a machine's loop device to detach.
const DISK_RELEASE: Duration = Duration::from_secs(5);

/// libfaketime, preloaded into every program of a netns machine whose clock may be moved.
pub const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The file in a machine's bin directory (read-only inside it) that holds its clock's offset
/// as libfaketime reads it (`+30`, `-5`).
const CLOCK_FILE: &str = ".clock";

/// The variables that make a machine's programs read their wall clock `bin`'s clock file off
/// (re-read every second; monotonic clocks untouched).
fn clock_env(bin: &Path) -> Vec<(String, String)> {
    [
        ("LD_PRELOAD", FAKETIME.to_string()),
        (
            "FAKETIME_TIMESTAMP_FILE",
            bin.join(CLOCK_FILE).display().to_string(),
        ),
        ("FAKETIME_CACHE_DURATION", "1".to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Writes offset `seconds` into `bin`'s clock file, atomically (libfaketime reads it whole).
fn write_clock(bin: &Path, seconds: i64) -> io::Result<()> {
    let tmp = bin.join(".fleetcheck-clock.new");
    fs::write(&tmp, format!("{seconds:+}\n"))?;
    fs::rename(&tmp, bin.join(CLOCK_FILE))
}

/// Fills `bin` with one symlink per service, to the version's program (atomically replacing
/// what was there), and removes links of services no longer named. A link names the program
/// by its canonical path: a machine sees only the program's own directory of a path the
/// host's read-only view lacks (under `/tmp`, say), so `a/../b` would not resolve inside it.
fn install_services(
    bin: &std::path::Path,
    services: &BTreeMap<String, ServiceVersion>,
) -> io::Result<()> {
    fs::create_dir_all(bin)?;
    for entry in fs::read_dir(bin)?.flatten() {
        let name = entry.file_name();
        if name != CLOCK_FILE && !services.contains_key(&*name.to_string_lossy()) {
            fs::remove_file(entry.path())?;
        }
    }
    for (name, v) in services {
        let tmp = bin.join(format!(".{name}.new"));
        let _ = fs::remove_file(&tmp);
        let program = fs::canonicalize(&v.path).unwrap_or_else(|_| v.path.clone());
        std::os::unix::fs::symlink(&program, &tmp)?;
        fs::rename(&tmp, bin.join(name))?;
    }
    Ok(())
}

/// How long pause and resume wait for the freezer.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// The setup command the agent's log says it started last, if nothing came after it (the
/// agent logs "setup `<command>`" before each and "ready" after the last).
fn running_setup(log: &str) -> Option<String> {
    let last = log
        .lines()
        .rev()
        .find(|l| l.starts_with("fleetcheck-agent: "))?;
    let command = last
        .strip_prefix("fleetcheck-agent: setup `")?
        .strip_suffix('`')?;
    Some(command.to_string())
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Switched for NetShared {
    type Own = Own;

    const RUNNER: &'static str = "agent";

    fn net(&self) -> &Net<Own> {
        &self.net
    }

    fn start(&self, m: &Machine) -> Result<Arc<AgentConn>, BootFailure> {
        let machine = || m.spec.id.clone();
        let spawn_err = |source: io::Error| {
            (
                BootError::Spawn {
                    machine: machine(),
                    source,
                },
                None,
            )
        };
        if self.net.torn_down.load(Ordering::SeqCst) {
            return Err(spawn_err(io::Error::other("network was torn down")));
        }
        let mut wire = m.own.wire.lock().unwrap_or_else(|e| e.into_inner());
        self.renew_wire(m, &mut wire).map_err(|source| {
            (
                BootError::Link {
                    machine: machine(),
                    source,
                },
                None,
            )
        })?;
        drop(wire);
        self.set_port(m, true).map_err(|source| {
            (
                BootError::Link {
                    machine: machine(),
                    source,
                },
                None,
            )
        })?;
        let (host_end, agent_end) = UnixStream::pair().map_err(spawn_err)?;
        let log: OwnedFd = std::os::unix::fs::OpenOptionsExt::mode(
            fs::OpenOptions::new().create(true).append(true),
            0o600,
        )
        .open(&m.log)
        .map_err(spawn_err)?
        .into();
        let stdin =
            sys::open(std::path::Path::new("/dev/null"), libc::O_RDONLY).map_err(spawn_err)?;
        let procs =
            sys::open(&m.own.cgroup.join("cgroup.procs"), libc::O_WRONLY).map_err(spawn_err)?;
        let freezer_procs = match m.own.freezer.as_ref().and_then(FreezerDir::own_procs) {
            Some(path) => Some(sys::open(&path, libc::O_WRONLY).map_err(spawn_err)?),
            None => None,
        };
        let pids_procs = match &m.own.pids {
            Some(dir) => {
                Some(sys::open(&dir.join("cgroup.procs"), libc::O_WRONLY).map_err(spawn_err)?)
            }
            None => None,
        };
        let agent_end: OwnedFd = agent_end.into();
        // The agent is started and its pid published under the wire lock, which teardown
        // takes too: teardown either sees the pid or comes first and stops this boot here.
        let wire = m.own.wire.lock().unwrap_or_else(|e| e.into_inner());
        if self.net.torn_down.load(Ordering::SeqCst) {
            return Err(spawn_err(io::Error::other("network was torn down")));
        }
        let env = self.agent_env(m);
        let disk = m.own.disk.lock().unwrap_or_else(|e| e.into_inner());
        if disk.is_none() && m.spec.disk_filesystem().is_some() {
            // Lost in a power cut that could not bring it back: never boot on the host's.
            return Err(spawn_err(io::Error::other(
                "its disk was not brought back after a power cut",
            )));
        }
        let pid = spawn_agent(
            &self.config.agent,
            &self.agent_args(m),
            AgentFds {
                netns: &wire.netns.fd,
                mount_ns: disk.as_ref().map(Disk::namespace),
                cgroup_procs: &procs,
                freezer_procs: freezer_procs.as_ref(),
                pids_procs: pids_procs.as_ref(),
                stdin: &stdin,
                log: &log,
                channel: &agent_end,
            },
            &env,
        )
        .map_err(spawn_err)?;
        m.own.agent_pid.store(pid, Ordering::SeqCst);
        drop(disk);
        drop(wire);
        drop(agent_end);
        let (conn, boot_rx) = match AgentConn::start(host_end, &m.spec.id) {
            Ok(c) => c,
            Err(e) => {
                let _ = sys::kill(pid, libc::SIGKILL);
                let _ = sys::reap(pid);
                m.own.agent_pid.store(0, Ordering::SeqCst);
                return Err(spawn_err(e));
            }
        };
        let fail = |e: BootError| (e, Some(conn.clone()));
        let ooms = cgroup::oom_kills(&m.own.cgroup);
        conn.send(&HostMsg::Init {
            hostname: m.spec.id.clone(),
            setup: m.spec.setup.clone(),
            setup_timeout_ms: self.config.boot_timeout.as_millis() as u64,
            guest: None,
        })
        .map_err(|source| {
            fail(BootError::Spawn {
                machine: machine(),
                source,
            })
        })?;
        match boot_rx.recv_timeout(self.config.boot_timeout) {
            Ok(AgentMsg::Ready) => Ok(conn),
            Ok(AgentMsg::SetupFailed {
                command,
                status,
                stderr,
            }) => Err(fail(BootError::SetupFailed {
                machine: machine(),
                command,
                status: match (ooms, cgroup::oom_kills(&m.own.cgroup)) {
                    (Some(before), Some(after)) if after > before => format!(
                        "{status}, killed by the out-of-memory killer (memory limit {} MiB)",
                        m.spec.memory_mb
                    ),
                    _ => status,
                },
                stderr,
            })),
            Ok(other) => Err(fail(BootError::AgentLost {
                machine: machine(),
                detail: format!("unexpected message {other:?}"),
            })),
            Err(RecvTimeoutError::Timeout) => {
                let log = m.read_log();
                Err(fail(match running_setup(&log) {
                    Some(command) => BootError::SetupTimeout {
                        machine: machine(),
                        command,
                        after: self.config.boot_timeout,
                    },
                    None => BootError::Timeout {
                        machine: machine(),
                        after: self.config.boot_timeout,
                    },
                }))
            }
            Err(RecvTimeoutError::Disconnected) => Err(fail(BootError::AgentLost {
                machine: machine(),
                detail: last_lines(&m.read_log(), 5),
            })),
        }
    }

    /// Kills and reaps the agent of `m`, joins its reader.
    fn stop(&self, m: &Machine, conn: Option<Arc<AgentConn>>) -> io::Result<()> {
        let pid = m.own.agent_pid.swap(0, Ordering::SeqCst);
        let mut result = Ok(());
        if pid > 0 {
            result = sys::kill(pid, libc::SIGKILL);
            // A frozen task dies only once thawed (v1 freezer; verified on this kernel). The
            // kill is queued first, so no thawed process runs user code again.
            self.thaw_after_kill(m);
            let _ = sys::reap(pid);
        }
        if let Some(conn) = conn {
            conn.join();
        }
        result
    }

    /// Its port goes down: an off machine is unplugged.
    fn unplug(&self, m: &Machine) -> io::Result<()> {
        self.set_port(m, false)
    }

    /// Refused while a program of the machine reads the clock out of libfaketime's reach;
    /// otherwise the clock file says the new offset.
    /// Checks the machine's programs (see [`Network::set_clock`]), writes the offset, and
    /// waits (up to 2 s) until a new program in the machine reads the moved clock, so the
    /// commands after this one see it.
    fn move_clock(
        &self,
        m: &Machine,
        conn: &AgentConn,
        _from: i64,
        to: i64,
    ) -> Result<(), FaultError> {
        let agent = m.own.agent_pid.load(Ordering::SeqCst);
        for pid in crate::host::cgroup::pids(&m.own.cgroup) {
            if pid == agent {
                continue;
            }
            let exe = PathBuf::from(format!("/proc/{pid}/exe"));
            // A process gone meanwhile, or a kernel thread: nothing to move.
            if let Ok(Some(why)) = crate::host::elf::clock_out_of_reach(&exe) {
                let program = fs::read_link(&exe).map_or_else(
                    |_| format!("pid {pid}"),
                    |p| format!("{} (pid {pid})", p.display()),
                );
                return Err(FaultError::ClockOutOfReach {
                    machine: m.spec.id.clone(),
                    program,
                    why,
                });
            }
        }
        let failed = |source| FaultError::Clock {
            machine: m.spec.id.clone(),
            source,
        };
        write_clock(&m.own.bin, to).map_err(failed)?;
        // In milliseconds: the clock a new program reads is within half a second of the
        // host's moved by `to` (at least a second away from the host's unmoved one).
        let now_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        };
        let req = ExecRequest::shell("date +%s%3N").with_timeout(Duration::from_secs(2));
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            let seen = conn::exec(conn, &m.spec.id, &req)
                .ok()
                .and_then(|out| out.stdout_str().trim().parse::<i64>().ok());
            if seen.is_some_and(|t| (t - (now_ms() + to * 1000)).abs() < 500) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(failed(io::Error::other(format!(
            "its programs did not read the clock {to:+} s off within 2 s"
        ))))
    }

    /// The machines share the host's kernel, which has no netem here.
    fn set_netem(
        &self,
        _m: &Machine,
        _conn: &AgentConn,
        _netem: Option<crate::Netem>,
    ) -> Result<(), FaultError> {
        Err(FaultError::NoNetem {
            backend: "the netns backend",
            why: crate::netem::netns_refusal(),
        })
    }

    fn clock_lost(&self, m: &Machine) -> io::Result<()> {
        if m.spec.clock {
            write_clock(&m.own.bin, 0)?;
        }
        Ok(())
    }

    fn set_disk_error(
        &self,
        m: &Machine,
        error: Option<crate::host::volatile::DiskError>,
    ) -> Result<(), FaultError> {
        let err = |source| FaultError::Disk {
            machine: m.spec.id.clone(),
            source,
        };
        let mut slot = m.own.disk.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut().map(|d| d.set_error(error)) {
            Some(Ok(true)) => Ok(()),
            Some(Ok(false)) | None => Err(err(io::Error::other("it has no disk layer"))),
            Some(Err(e)) => Err(err(e)),
        }
    }

    /// The disk forgets its unflushed writes; once its file system, loop device and FUSE
    /// server are gone, the image (the durable state) is mounted afresh for the next boot.
    fn lose_unsynced(&self, m: &Machine) -> Result<(), FaultError> {
        let err = |source| FaultError::Disk {
            machine: m.spec.id.clone(),
            source,
        };
        let mut slot = m.own.disk.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut old) = slot.take() else {
            return Err(err(io::Error::other("it has no disk")));
        };
        // Should the server not answer, returning drops it, which kills it: then nothing
        // unflushed survives either, but the machine keeps no disk (its boots fail).
        let cut = old.cut();
        let (attached, served) = old.close_served();
        cut.map_err(err)?;
        if let Some((device, _)) = disk::wait_detached(&[attached], DISK_RELEASE).pop() {
            return Err(err(io::Error::other(format!(
                "loop device {} still attached after {DISK_RELEASE:?}",
                device.display()
            ))));
        }
        if !served.is_none_or(|s| s.wait_ended(DISK_RELEASE)) {
            return Err(err(io::Error::other(format!(
                "its FUSE server still ran after {DISK_RELEASE:?}"
            ))));
        }
        if self.net.torn_down.load(Ordering::SeqCst) {
            return Err(FaultError::TornDown);
        }
        let fs = m
            .spec
            .disk_filesystem()
            .expect("a volatile disk has a file system");
        *slot = Some(self.mount_disk(m, fs).map_err(err)?);
        Ok(())
    }

    fn check_pausable(&self, m: &Machine) -> Result<(), FaultError> {
        match m.own.freezer {
            Some(_) => Ok(()),
            None => Err(FaultError::NoFreezer {
                machine: m.spec.id.clone(),
            }),
        }
    }

    /// Freezes or thaws the machine's cgroup, waiting until the kernel reports it done; a
    /// freeze that fails thaws again.
    fn hold(&self, m: &Machine, frozen: bool) -> Result<(), FaultError> {
        let id = &m.spec.id;
        let freezer = m
            .own
            .freezer
            .as_ref()
            .ok_or_else(|| FaultError::NoFreezer { machine: id.into() })?;
        let set = |frozen: bool| -> Result<(), FaultError> {
            let reached =
                freezer
                    .set(frozen, FREEZE_TIMEOUT)
                    .map_err(|source| FaultError::Freezer {
                        machine: id.into(),
                        path: freezer.path().to_path_buf(),
                        source,
                    })?;
            if reached {
                Ok(())
            } else {
                Err(FaultError::FreezerTimeout {
                    machine: id.into(),
                    state: if frozen { "FROZEN" } else { "THAWED" },
                    after: FREEZE_TIMEOUT,
                })
            }
        };
        let result = set(frozen);
        if frozen && result.is_err() {
            // Leave it running rather than half frozen.
            let _ = set(false);
        }
        result
    }

    /// Also says whether the out-of-memory killer struck in the machine meanwhile.
    fn exec_on(
        &self,
        id: &str,
        conn: &AgentConn,
        req: &ExecRequest,
    ) -> Result<ExecOutput, ExecError> {
        let cgroup = self
            .machine(id)
            .map(|m| (m.own.cgroup.clone(), m.spec.memory_mb));
        let before = cgroup.as_ref().and_then(|(c, _)| cgroup::oom_kills(c));
        let mut out = conn::exec(conn, id, req)?;
        if let (Some((dir, mb)), Some(before)) = (cgroup, before) {
            if cgroup::oom_kills(&dir).is_some_and(|after| after > before) {
                out.oom_killed_mb = Some(mb);
            }
        }
        Ok(out)
    }

    fn install(&self, m: &Machine, next: &BTreeMap<String, ServiceVersion>) -> io::Result<()> {
        install_services(&m.own.bin, next)
    }

    /// Through the machine's namespaces from the host (not the agent's channel): the
    /// program's pipes are the caller's own.
    fn spawn_in(
        &self,
        m: &Machine,
        _conn: &Arc<AgentConn>,
        command: &str,
        stderr_log: &str,
    ) -> Result<Spawned, ExecError> {
        let id = &m.spec.id;
        let failed = |message: String| ExecError::Spawn {
            machine: id.clone(),
            program: command.to_string(),
            message,
        };
        let agent = m.own.agent_pid.load(Ordering::SeqCst);
        if agent <= 0 {
            return Err(failed("its agent is not running".into()));
        }
        let mut cgroups = vec![m.own.cgroup.clone()];
        cgroups.extend(m.own.freezer.as_ref().map(|f| f.path().to_path_buf()));
        cgroups.extend(m.own.pids.clone());
        // Its errors in the data directory where the host sees it (an image of its own is
        // mounted only inside the machine: then they are dropped).
        let log = self.data_dir_on_host(id).map(|d| d.join(stderr_log));
        let mut child = super::enter::spawn_inside(agent, &cgroups, command, log.as_deref())
            .map_err(|e| failed(e.to_string()))?;
        // Ended through `enter::end`, which never blocks on a machine that is paused.
        let stdin = child.stdin.take().expect("spawned with a piped stdin");
        let stdout = child.stdout.take().expect("spawned with a piped stdout");
        let what = format!("pid {} (on the host)", child.id());
        Ok(Spawned::new(
            Box::new(stdin),
            Box::new(stdout),
            Box::new(move || super::enter::end(child)),
            what,
        ))
    }

    /// SIGKILL to the agent, which kills its pid namespace; a frozen machine is thawed to die.
    /// Each machine's mount namespace (its own root, some 30 mounts) is torn down as its PID 1
    /// exits, and those tear-downs overlap.
    fn kill(&self, m: &Machine) {
        let pid = m.own.agent_pid.load(Ordering::SeqCst);
        if pid > 0 {
            let _ = sys::kill(pid, libc::SIGKILL);
            self.thaw_after_kill(m);
        }
    }

    /// Each machine's namespace and cgroups, after whatever a racing boot started; then every
    /// file system at once.
    fn remove_rest(&self, failures: &mut Vec<(String, io::Error)>) {
        for m in &self.net.machines {
            let wire = m.own.wire.lock().unwrap_or_else(|e| e.into_inner());
            // An agent a racing boot started before this lock was taken, and anything else
            // left in the machine's cgroup.
            let _ = self.stop(m, None);
            let left = cgroup::pids(&m.own.cgroup);
            for &pid in &left {
                let _ = sys::kill(pid, libc::SIGKILL);
            }
            self.thaw_after_kill(m);
            for pid in left {
                let _ = sys::reap(pid);
            }
            if let Err(e) = ns::remove_named(&wire.netns.path) {
                failures.push((format!("namespace {}", wire.netns.name), e));
            }
            drop(wire);
            if let Err(e) = cgroup::remove(&m.own.cgroup) {
                failures.push((format!("cgroup {}", m.own.cgroup.display()), e));
            }
            if let Some(freezer) = &m.own.freezer {
                if let Err(e) = freezer.remove() {
                    failures.push((format!("cgroup {}", freezer.path().display()), e));
                }
            }
            if let Some(pids) = &m.own.pids {
                if let Err(e) = cgroup::remove_pids_v1(pids) {
                    failures.push((format!("cgroup {}", pids.display()), e));
                }
            }
        }
        // No agent runs from a disk namespace any more: let go of every file system, then wait
        // for all their loop devices at once.
        let mut servers = Vec::new();
        let disks: Vec<(PathBuf, PathBuf)> = self
            .net
            .machines
            .iter()
            .filter_map(|m| m.own.disk.lock().unwrap_or_else(|e| e.into_inner()).take())
            .map(|d| {
                let (attached, served) = d.close_served();
                servers.extend(served);
                attached
            })
            .collect();
        for (device, image) in disk::wait_detached(&disks, DISK_RELEASE) {
            let _ = disk::detach(&device, &image);
            failures.push((
                format!("loop device {}", device.display()),
                io::Error::other(format!("still attached after {DISK_RELEASE:?}")),
            ));
        }
        // A volatile disk's server ends once its loop device let go of the FUSE file.
        for served in servers {
            if !served.wait_ended(DISK_RELEASE) {
                failures.push((
                    "FUSE server of a disk".into(),
                    io::Error::other(format!("still running after {DISK_RELEASE:?}")),
                ));
            }
        }
    }

    fn data_dir_on_host(&self, id: &str) -> Option<PathBuf> {
        let m = self.machine(id)?;
        let disk = m.own.disk.lock().unwrap_or_else(|e| e.into_inner());
        match disk.as_ref() {
            Some(d) => Some(d.host_path()),
            None => {
                drop(disk);
                self.data_dir(id)
            }
        }
    }
}

impl Handle for NetnsNetwork {
    type Shared = NetShared;

    fn shared(&self) -> &NetShared {
        &self.shared
    }
}

impl NetnsNetwork {
    /// The bind mount of the network namespace of machine `id` (for `nsenter --net=PATH`).
    pub fn namespace_of(&self, id: &str) -> Option<PathBuf> {
        let m = self.shared.machine(id)?;
        let wire = m.own.wire.lock().unwrap_or_else(|e| e.into_inner());
        Some(wire.netns.path.clone())
    }

    /// The cgroup directory of machine `id`.
    pub fn cgroup_of(&self, id: &str) -> Option<PathBuf> {
        self.shared.machine(id).map(|m| m.own.cgroup.clone())
    }

    /// The cgroup directory holding machine `id`'s task limit (`pids.max`): its own cgroup
    /// of the v1 pids hierarchy, or on cgroup v2 its one cgroup.
    pub fn pids_cgroup_of(&self, id: &str) -> Option<PathBuf> {
        let m = self.shared.machine(id)?;
        Some(m.own.pids.clone().unwrap_or_else(|| m.own.cgroup.clone()))
    }

    /// Host pid of the agent of machine `id`, while it runs.
    pub fn agent_pid(&self, id: &str) -> Option<i32> {
        let pid = self
            .shared
            .machine(id)?
            .own
            .agent_pid
            .load(Ordering::SeqCst);
        (pid > 0).then_some(pid)
    }

    /// The bind mount of the switch namespace (for `nsenter --net=PATH`), until teardown.
    pub fn switch_namespace(&self) -> Option<PathBuf> {
        self.shared.net.switch.path()
    }

    /// The machine's freezer cgroup directory (on cgroup v2 its memory cgroup).
    pub fn freezer_of(&self, id: &str) -> Option<PathBuf> {
        let m = self.shared.machine(id)?;
        m.own.freezer.as_ref().map(|f| f.path().to_path_buf())
    }

    /// The fault table as `nft list` prints it, with rule counters (empty when no fault is in
    /// force): to see which rule dropped what.
    pub fn fault_rules(&self) -> Result<String, FaultError> {
        self.shared.net.switch.fault_rules()
    }

    /// The run id this network belongs to.
    pub fn run_id(&self) -> &str {
        &self.shared.net.run.run
    }
}

impl std::fmt::Debug for NetnsNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.net.debug(f, "NetnsNetwork")
    }
}

impl Drop for NetnsNetwork {
    fn drop(&mut self) {
        let _ = Switched::teardown(&*self.shared);
    }
}
