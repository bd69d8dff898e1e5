//! `fleetcheck up`: boot a network and explore it from a prompt (the NixOS test driver's
//! interactive mode, for fleetcheck's networks). The network comes from a configuration file
//! or from a replay file, whose commands run up to (not including) the failing step. Every
//! line of standard input is one command; the network is torn down on `quit`, at the end of
//! the input and on Ctrl-C.

use std::io::{BufRead, IsTerminal, Write};
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::anyhow;
use fleetcheck_engine::{Case, Model};
use fleetcheck_fabric::{ExecRequest, MachineSpec, Network, NetworkSpec};
use fleetcheck_scenarios::cluster::{ClusterCmd, ClusterState};
use fleetcheck_scenarios::config::{MachineDomain, ScenarioConfig};

use crate::cli::UpArgs;
use crate::exit::{self, Fail};
use crate::report::capture::Inspect;
use crate::run::open_replay;
use crate::scenario::Registered;

const HELP: &str = "\
commands (one per line; machines by id):
  exec MACHINE CMD...     run `sh -c CMD` in MACHINE; prints its output and exit status
  boot MACHINE            boot a machine that is off
  shutdown MACHINE        cut its power
  crash MACHINE           the same, as a crash
  restart MACHINE         boot a crashed machine again (its disk kept)
  power-cut MACHINE...    cut the power of machines at once (lose_unsynced: unsynced writes lost)
  pause MACHINE           freeze every process of it
  resume MACHINE          thaw it
  disk-fail MACHINE KIND  its disk fails: write, fsync, read (EIO) or full (ENOSPC); lose_unsynced
  disk-recover MACHINE    its disk works again
  netem MACHINE WHAT      its outgoing packets: delay MS, duplicate PCT, reorder PCT MS, corrupt PCT (qemu)
  clock MACHINE SECONDS   move its wall clock SECONDS off (+30, -120); on netns through libfaketime
  clock-reset MACHINE     its clock is the host's again
  clock-strobe M SECS N   its clock jumps SECS off and back N times, a second each
  corrupt MACHINE HOW [N] corrupt a file of an off machine's data: bit-flip or truncate (N picks)
  partition A,B | C       cut the network between groups (unnamed machines: one more group)
  block A B               drop packets from A to B, one way
  loss MACHINE PERCENT    drop PERCENT of its packets (0 removes the loss)
  heal                    remove every partition, block and loss
  ping A B [MS]           ICMP echo from A to B (timeout MS, default 1000)
  logs MACHINE            its captured agent and setup output
  state                   every machine's status and address, and the faults in force
  help                    this text
  quit                    tear everything down and leave (also at end of input, Ctrl-C)";

/// The network faults the session applied, for `state`.
type Faults = Vec<ClusterCmd>;

/// `partition a,b | c`, `packets from a to b are dropped`, `20% of a's packets are dropped`:
/// a network fault as the prompt reports and lists it.
fn applied(c: &ClusterCmd) -> String {
    match c {
        ClusterCmd::Partition { groups } => {
            let groups: Vec<String> = groups.iter().map(|g| g.join(",")).collect();
            format!("partition {}", groups.join(" | "))
        }
        ClusterCmd::Block { from, to } => format!("packets from {from} to {to} are dropped"),
        ClusterCmd::Loss { machine, percent } => {
            format!("{percent}% of {machine}'s packets are dropped")
        }
        ClusterCmd::Netem { machine, netem } => format!("{machine}'s packets: {netem}"),
        c => c.describe(),
    }
}

/// `partition a,b | c`, `block a -/-> b`, `loss a 20%`: a network fault as `state` lists it.
fn listed(c: &ClusterCmd) -> String {
    match c {
        ClusterCmd::Block { from, to } => format!("block {from} -/-> {to}"),
        ClusterCmd::Loss { machine, percent } => format!("loss {machine} {percent}%"),
        c => applied(c),
    }
}

fn aborted(e: impl std::fmt::Display) -> Fail {
    Fail {
        code: exit::ABORTED,
        error: anyhow!("{e}"),
    }
}

/// `fleetcheck up`.
pub fn up_command(args: &UpArgs, registry: &[Box<dyn Registered>]) -> Result<u8, Fail> {
    if let Some(file) = &args.replay {
        if args.config.is_some() || args.machines.is_some() {
            return Err(Fail::usage(anyhow!(
                "--replay takes the network from the replay file: drop --config and --machines"
            )));
        }
        let (r, entry) = open_replay(file, args.backend, registry)?;
        return entry.up(&r, file);
    }
    let mut config = match &args.config {
        Some(p) => ScenarioConfig::from_file(p).map_err(Fail::usage)?,
        None => Default::default(),
    };
    // Usage errors first, before a backend is made.
    let machines = plan_machines(&config, args.machines)?;
    let backend_name = args.backend.unwrap_or_default();
    crate::backends::check_these_filesystems(
        backend_name,
        machines.iter().filter_map(|(_, m)| m.filesystem),
    )?;
    let backend = crate::backends::make(backend_name)?;
    // As `run` does: the default kernels and memory become what this backend can boot.
    crate::run::fit_to_backend(&mut config, backend.as_ref())?;
    let machines = plan_machines(&config, args.machines)?;
    let spec = NetworkSpec {
        subnet: config.network.subnet,
        machines: machines.iter().map(|(_, m)| m.clone()).collect(),
    };
    let net = backend.create(&spec).map_err(aborted)?;
    let ids: Vec<&str> = spec.machines.iter().map(|m| m.id.as_str()).collect();
    println!(
        "fleetcheck: {} machine(s) on {} ({}), booting",
        ids.len(),
        spec.subnet,
        backend.name()
    );
    for (role, machine) in &machines {
        println!("{}", describe_machine(role, machine));
    }
    for (id, result) in ids.iter().zip(net.boot(&ids)) {
        if let Err(e) = result {
            println!("boot of {id} failed: {}", chain(&e));
        }
    }
    prompt(net.as_ref());
    net.teardown().map_err(aborted)?;
    println!("fleetcheck: network removed");
    Ok(exit::PASSED)
}

/// The machines of `fleetcheck up --config`, `m1`..`mN` with their roles: without `[roles]`,
/// `machines` (default `[network] machines.max`) of the one domain; with roles, each role's
/// `count.max`, roles in name order (`machines` is refused). Each machine gets its domain's
/// preferred values: the least memory, the first kernel, file system and version of each
/// service.
fn plan_machines(
    config: &ScenarioConfig,
    machines: Option<u32>,
) -> Result<Vec<(String, MachineSpec)>, Fail> {
    let domains = config.domains();
    let usable = config.usable_addresses();
    let counts: Vec<(&MachineDomain, u32)> = if config.roles.is_empty() {
        let count = machines.unwrap_or(config.network.machines.max);
        if count == 0 || u64::from(count) > usable {
            return Err(Fail::usage(anyhow!(
                "--machines must be between 1 and {usable} (the usable addresses of {})",
                config.network.subnet
            )));
        }
        vec![(&domains[0], count)]
    } else {
        if machines.is_some() {
            return Err(Fail::usage(anyhow!(
                "--machines cannot be combined with [roles] in the configuration, \
                 which gives each role its count.max machines"
            )));
        }
        let counts: Vec<_> = domains.iter().map(|d| (d, d.count.max)).collect();
        let total: u64 = counts.iter().map(|(_, n)| u64::from(*n)).sum();
        if total == 0 || total > usable {
            return Err(Fail::usage(anyhow!(
                "the roles have {total} machines but {} has {usable} usable addresses",
                config.network.subnet
            )));
        }
        counts
    };
    let domain_of_each = counts
        .into_iter()
        .flat_map(|(d, n)| std::iter::repeat_n(d, n as usize));
    Ok(domain_of_each
        .zip(1u64..)
        .map(|(domain, i)| {
            let machine = MachineSpec {
                id: format!("m{i}"),
                ip: config
                    .network
                    .subnet
                    .host(i)
                    .expect("checked against the subnet's size"),
                memory_mb: domain.memory_mb.min,
                kernel: domain.kernels[0].clone(),
                setup: domain.setup.clone(),
                filesystem: domain.filesystem.first().copied(),
                services: domain
                    .versions
                    .iter()
                    .map(|(name, versions)| (name.clone(), versions[0].clone()))
                    .collect(),
                lose_unsynced: false,
                // Clock faults at the prompt where netns machines can have them.
                clock: std::path::Path::new(fleetcheck_fabric::netns::FAKETIME).is_file(),
                observer: false,
            };
            (domain.role.clone(), machine)
        })
        .collect())
}

/// One line at startup: `m1 (server): ext4, fw 1.0`.
fn describe_machine(role: &str, m: &MachineSpec) -> String {
    let mut line = m.id.clone();
    if !role.is_empty() {
        line.push_str(&format!(" ({role})"));
    }
    match m.filesystem {
        Some(fs) => line.push_str(&format!(": {fs}")),
        None => line.push_str(": no file system of its own"),
    }
    for (name, v) in &m.services {
        line.push_str(&format!(", {name} {}", v.version));
    }
    line
}

/// Builds the case's network, runs its commands up to the failing step (the last one), then
/// hands the network to the prompt.
pub(crate) fn up_case<M: Model, S: Inspect<M>>(
    model: &M,
    system: &S,
    case: &Case<M>,
    reason: &str,
) -> Result<u8, Fail> {
    println!("fleetcheck: building the case's network");
    let mut instance = system.setup(&case.initial).map_err(aborted)?;
    let mut state = case.initial.clone();
    let before = case.commands.len().saturating_sub(1);
    let mut broke = None;
    for (i, command) in case.commands[..before].iter().enumerate() {
        if !model.precondition(&state, command) {
            continue;
        }
        match system.run(&mut instance, &state, command) {
            Ok(out) => println!(
                "{:>3}. {} -> {out:?}",
                i + 1,
                model.describe_command(command)
            ),
            Err(abort) => {
                broke = Some(format!("step {} broke the infrastructure: {abort}", i + 1));
                break;
            }
        }
        state = model.next_state(&state, command);
    }
    if broke.is_none() {
        println!("model state: {}", model.summarize_state(&state));
        if let Some(last) = case.commands.last() {
            println!(
                "stopped before step {}: {}{}",
                case.commands.len(),
                model.describe_command(last),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" (it failed: {reason})")
                }
            );
        }
        match system.network(&instance) {
            Some(net) => prompt(net),
            None => println!("this system has no machines to explore"),
        }
    }
    system.teardown(instance).map_err(aborted)?;
    println!("fleetcheck: network removed");
    match broke {
        Some(why) => Err(aborted(why)),
        None => Ok(exit::PASSED),
    }
}

/// An error with its causes.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads commands until `quit` or the end of the input.
fn prompt(net: &dyn Network) {
    let interactive = std::io::stdin().is_terminal();
    let mut faults = Faults::new();
    println!("type `help` for the commands");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            print!("fleetcheck> ");
        }
        let _ = std::io::stdout().flush();
        let Some(Ok(line)) = lines.next() else {
            break;
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !interactive {
            println!("> {line}");
        }
        match execute(net, line, &mut faults) {
            Ok(Flow::Quit) => break,
            Ok(Flow::Go(text)) => {
                if !text.is_empty() {
                    println!("{}", text.trim_end());
                }
            }
            Err(e) => println!("error: {e}"),
        }
        crate::interrupt::exit_if_interrupted();
    }
}

enum Flow {
    Go(String),
    Quit,
}

fn ip_of(net: &dyn Network, id: &str) -> Result<Ipv4Addr, String> {
    net.spec()
        .machine(id)
        .map(|m| m.ip)
        .ok_or_else(|| format!("no machine `{id}` (see `state`)"))
}

/// One command line.
fn execute(net: &dyn Network, line: &str, faults: &mut Faults) -> Result<Flow, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let arg = |i: usize, what: &str| -> Result<&str, String> {
        words
            .get(i)
            .copied()
            .ok_or_else(|| format!("`{}` needs {what} (see `help`)", words[0]))
    };
    let e = |x: &dyn std::error::Error| chain(x);
    if let Some(c) = ClusterCmd::parse(line).map_err(|why| format!("{why} (see `help`)"))? {
        if matches!(c, ClusterCmd::Upgrade { .. }) {
            return Err("`upgrade` is not available at this prompt (see `help`)".into());
        }
        // The cluster layer's command, applied as a scenario applies it, to the machines as
        // they are with the netem faults this prompt set (a heal removes those too).
        let services = fleetcheck_scenarios::config::Services::new();
        let mut state = ClusterState::of(net);
        for f in faults.iter() {
            if let ClusterCmd::Netem { machine, netem } = f {
                if let Some(m) = state.machines.iter_mut().find(|m| m.id == *machine) {
                    m.netem = Some(*netem);
                }
            }
        }
        c.apply(net, &state, &services)
            .map_err(|x| x.to_string())??;
        return Ok(Flow::Go(match &c {
            ClusterCmd::Heal => {
                faults.clear();
                "healed: no partition, block, loss or netem".into()
            }
            ClusterCmd::Partition { .. }
            | ClusterCmd::Block { .. }
            | ClusterCmd::Loss { .. }
            | ClusterCmd::Netem { .. }
            | ClusterCmd::Ring { .. }
            | ClusterCmd::Bridge { .. } => {
                let what = applied(&c);
                faults.push(c);
                what
            }
            ClusterCmd::Boot { machine } | ClusterCmd::Restart { machine } => {
                format!("{machine} is up")
            }
            ClusterCmd::Shutdown { machine } => format!("{machine} is off"),
            ClusterCmd::Crash { machine } => format!("{machine} crashed"),
            ClusterCmd::PowerCut { machines } => {
                format!(
                    "{} lost power (what was not fsynced is gone)",
                    machines.join(" ")
                )
            }
            ClusterCmd::Pause { machine } => format!("{machine} is paused"),
            ClusterCmd::DiskFail { machine, error } => {
                format!("{machine}'s disk fails ({error}) until `disk-recover {machine}`")
            }
            ClusterCmd::DiskRecover { machine } => format!("{machine}'s disk works again"),
            ClusterCmd::ClockBump { machine, offset_s } => {
                format!("{machine}'s clock is {offset_s:+} s off until `clock-reset {machine}`")
            }
            ClusterCmd::ClockReset { machine } => format!("{machine}'s clock is right again"),
            ClusterCmd::ClockStrobe { machine, flips, .. } => {
                format!("{machine}'s clock jumped {flips} times and is right again")
            }
            ClusterCmd::Corrupt { machine, how, .. } => {
                format!("{machine}'s data has a {how} (its corrupt.log says where)")
            }
            ClusterCmd::Resume { machine } => format!("{machine} runs again"),
            ClusterCmd::Upgrade { .. } => unreachable!("refused above"),
        }));
    }
    match words[0] {
        "help" | "?" => Ok(Flow::Go(HELP.to_string())),
        "quit" | "exit" | "q" => Ok(Flow::Quit),
        "state" => Ok(Flow::Go(describe_state(net, faults))),
        "exec" => {
            let machine = arg(1, "a machine")?;
            let rest = after_words(line, 2).ok_or("`exec` needs a command after the machine")?;
            let out = net
                .exec(
                    machine,
                    &ExecRequest::shell(rest).with_timeout(Duration::from_secs(30)),
                )
                .map_err(|x| e(&x))?;
            let mut text = out.stdout_str();
            text.push_str(&out.stderr_str());
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!("[{}]", out.describe_status()));
            Ok(Flow::Go(text))
        }
        "ping" => {
            let (a, b) = (arg(1, "two machines")?, arg(2, "two machines")?);
            let ms: u64 = match words.get(3) {
                Some(t) => t
                    .parse()
                    .map_err(|_| format!("bad timeout `{t}` (milliseconds)"))?,
                None => 1000,
            };
            let ip = ip_of(net, b)?;
            let started = std::time::Instant::now();
            let reply = net
                .ping(a, ip, Duration::from_millis(ms))
                .map_err(|x| e(&x))?;
            Ok(Flow::Go(if reply {
                format!(
                    "reply from {b} ({ip}) in {:.1} ms",
                    started.elapsed().as_secs_f64() * 1e3
                )
            } else {
                format!("no reply from {b} ({ip}) within {ms} ms")
            }))
        }
        "logs" => {
            let m = arg(1, "a machine")?;
            ip_of(net, m)?;
            Ok(Flow::Go(net.logs(m)))
        }
        other => Err(format!("unknown command `{other}` (see `help`)")),
    }
}

/// What follows the first `n` words of `line`, as typed (`None` if nothing does).
fn after_words(line: &str, n: usize) -> Option<&str> {
    let mut rest = line.trim_start();
    for _ in 0..n {
        let end = rest.find(char::is_whitespace)?;
        rest = rest[end..].trim_start();
    }
    (!rest.is_empty()).then_some(rest)
}

fn describe_state(net: &dyn Network, faults: &Faults) -> String {
    let mut out = String::new();
    for m in &net.spec().machines {
        let status = net
            .status(&m.id)
            .map_or("unknown".to_string(), |s| s.to_string());
        out.push_str(&format!(
            "{:<10} {:<15} {:<8} {} MiB\n",
            m.id, m.ip, status, m.memory_mb
        ));
    }
    if faults.is_empty() {
        out.push_str("faults applied at this prompt: none\n");
    } else {
        out.push_str(&format!(
            "faults applied at this prompt: {}\n",
            faults.iter().map(listed).collect::<Vec<_>>().join("; ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::after_words;

    #[test]
    fn exec_keeps_the_command_as_typed() {
        assert_eq!(after_words("exec e  echo  exec e", 2), Some("echo  exec e"));
        assert_eq!(after_words("  exec m1 ls", 2), Some("ls"));
        assert_eq!(after_words("exec m1", 2), None);
        assert_eq!(after_words("exec m1   ", 2), None);
    }
}
