//! Network faults as nftables rules on the switch: table `bridge fleetcheck` in the network's
//! switch namespace, one `forward` chain, rebuilt whole and atomically at every change.
//!
//! Why rules on the switch: a machine gets a fresh namespace and port at every boot but the
//! first, so rules inside a machine would vanish at a reboot; the switch namespace lives as
//! long as the network. Rules match bridge ports by name pattern: machine `i`'s port is `p<i>`
//! at the first boot and `p<i>r<n>` after a reboot, so `{ "p<i>", "p<i>r*" }` names all of them
//! and a rule written once keeps matching after reboots. Matching ports rather than MAC or IP
//! addresses also catches broadcasts and a machine that changes its own addresses.
//!
//! A cut (partition or block) drops every frame but ARP: after a one-way block `a -> b`, `b`
//! must still resolve `a`'s address, or it could not send on the direction that stays open.
//! No IP packet crosses a cut. Loss and pause drop ARP too.
//!
//! Why `nft -f -` rather than netlink: the nf_tables netlink encoding is large, and the crates
//! that speak it (`rustables`; bindings to libnftnl) would be a new dependency whose support
//! for bridge tables, interface-name sets and `numgen` is not verified here; the measured cost
//! below is mostly the kernel's commit, which netlink would pay too. So every fault operation runs ONE `nft -f -` process,
//! which enters the switch namespace (`setns` in `pre_exec`) and gets the whole new table on
//! stdin as one transaction: `table` (create if missing), `delete table`, then the new table.
//! Cost, measured on this project's 2-core host (kernel 6.18, nft 1.0.6): one fault operation
//! takes about 18 ms from a test process, of which `nft -f` itself is about 13 ms even with a
//! one-rule table, and mostly waiting in the kernel's nf_tables commit (user time is about
//! 3 ms; flushing the chain instead of deleting the table is no faster). Netlink from this
//! process would save the fork and exec, a few ms, not the commit. A pause or resume costs two
//! freezer waits plus one nft run: about 37 ms per pause + resume pair. Fault operations are
//! rare next to pings, so this is acceptable.
//!
//! A paused machine gets two rules too (`paused from <id>`, `paused to <id>`) dropping every
//! frame from and to it: its processes are frozen, but its network stack belongs to the host
//! kernel and would still answer pings and ARP.
//!
//! Loss is `numgen random mod 100 < N`, per frame. Delay and jitter need netem, which this
//! kernel lacks; where it exists, add on each machine's port in the switch namespace a qdisc
//! `tc qdisc add dev <port> root netem delay 50ms 10ms` (or over rtnetlink, `RTM_NEWQDISC` with
//! kind `netem` and a `tc_netem_qopt`): the port's egress is the traffic *to* the machine, so a
//! round trip between two delayed machines gets both delays. As ports are renewed at reboot,
//! the qdisc would have to be re-added in `renew_wire`, unlike these rules.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::error::FaultError;
use crate::faults::Faults;

/// The table every rule lives in.
pub const TABLE: &str = "bridge fleetcheck";

/// `nft` on `path_var` (a `PATH` value), else in the usual sbin directories.
pub fn find_nft(path_var: Option<&OsStr>) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("nft"))
        .find(|p| p.is_file())
}

fn nft() -> Result<&'static Path, FaultError> {
    static NFT: OnceLock<Option<PathBuf>> = OnceLock::new();
    NFT.get_or_init(|| find_nft(std::env::var_os("PATH").as_deref()))
        .as_deref()
        .ok_or(FaultError::NftMissing)
}

/// The name pattern set of machine `i`'s bridge ports over all its boots.
fn ports(i: usize) -> String {
    format!("{{ \"p{i}\", \"p{i}r*\" }}")
}

/// A machine id made safe for an nft comment.
fn label(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The nft script replacing the table with `faults` (or removing it when there are none).
/// `ids[i]` names machine `i` in the rule comments (`cut <from> <to>`, `paused from <id>`,
/// `paused to <id>`, `loss from <id>`, `loss to <id>`), which tests and people use to find a rule's counter.
pub fn render(faults: &Faults, ids: &[&str]) -> String {
    let mut s = format!("table {TABLE}\ndelete table {TABLE}\n");
    if faults.is_empty() {
        return s;
    }
    s.push_str(&format!(
        "table {TABLE} {{\n\tchain forward {{\n\t\ttype filter hook forward priority 0; policy accept;\n"
    ));
    for &(a, b) in &faults.cuts {
        s.push_str(&format!(
            "\t\tiifname {} oifname {} ether type != arp counter drop comment \"cut {} {}\"\n",
            ports(a),
            ports(b),
            label(ids[a]),
            label(ids[b]),
        ));
    }
    for &i in &faults.paused {
        for (dir, side) in [("iifname", "from"), ("oifname", "to")] {
            s.push_str(&format!(
                "\t\t{dir} {} counter drop comment \"paused {side} {}\"\n",
                ports(i),
                label(ids[i]),
            ));
        }
    }
    for (&i, &percent) in &faults.loss {
        // `numgen random mod 100` is 0..=99: 100% is a plain drop.
        let chance = if percent >= 100 {
            String::new()
        } else {
            format!("numgen random mod 100 < {percent} ")
        };
        for (dir, side) in [("iifname", "from"), ("oifname", "to")] {
            s.push_str(&format!(
                "\t\t{dir} {} {chance}counter drop comment \"loss {side} {}\"\n",
                ports(i),
                label(ids[i]),
            ));
        }
    }
    s.push_str("\t}\n}\n");
    s
}

/// Runs `nft <args>` inside the network namespace `netns` (the switch's; the caller keeps the
/// fd open and its namespace alive until this returns), with `stdin` as its input. Returns stdout.
pub fn run_in(netns: RawFd, args: &[&str], stdin: &str) -> Result<String, FaultError> {
    let mut cmd = Command::new(nft()?);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the child only calls setns, which is async-signal-safe, on
    // an fd the parent keeps open; if it fails, the child exits before exec, so nft never runs
    // in the host's network namespace.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(netns, libc::CLONE_NEWNET) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(FaultError::NftSpawn)?;
    let mut input = child.stdin.take().expect("stdin was piped");
    let written = input.write_all(stdin.as_bytes());
    drop(input);
    let out = child.wait_with_output().map_err(FaultError::NftSpawn)?;
    if !out.status.success() {
        return Err(FaultError::NftRejected {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    written.map_err(FaultError::NftSpawn)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_port_of_a_machine_and_removes_an_empty_table() {
        let mut f = Faults::default();
        assert_eq!(
            render(&f, &["a", "b"]),
            "table bridge fleetcheck\ndelete table bridge fleetcheck\n"
        );
        f.cuts.insert((0, 1));
        f.loss.insert(1, 30);
        let s = render(&f, &["a", "b c"]);
        assert!(s.contains(
            "iifname { \"p0\", \"p0r*\" } oifname { \"p1\", \"p1r*\" } ether type != arp counter drop comment \"cut a b_c\""
        ));
        assert!(s.contains("iifname { \"p1\", \"p1r*\" } numgen random mod 100 < 30 counter drop comment \"loss from b_c\""));
        assert!(s.contains("oifname { \"p1\", \"p1r*\" } numgen random mod 100 < 30"));
        f.loss.insert(1, 100);
        let s = render(&f, &["a", "b"]);
        assert!(s.contains("oifname { \"p1\", \"p1r*\" } counter drop comment \"loss to b\""));
    }

    #[test]
    fn find_nft_looks_on_path_then_in_sbin() {
        let dir = std::env::temp_dir().join(format!("fc-nft-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("nft"), "").unwrap();
        assert_eq!(find_nft(Some(dir.as_os_str())), Some(dir.join("nft")));
        std::fs::remove_dir_all(&dir).unwrap();
        let nowhere = find_nft(Some(OsStr::new("/nonexistent")));
        assert!(nowhere.is_none() || nowhere.unwrap().starts_with("/"));
    }
}
