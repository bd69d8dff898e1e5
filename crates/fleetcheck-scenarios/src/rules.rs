//! The rules every generated initial state keeps, checked on states read from replay files
//! (`Model::check_initial`): a file that breaks one is an input error, not a broken run.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use fleetcheck_engine::Check;
use fleetcheck_fabric::{Subnet, MAX_MACHINES};

use crate::config::{MAX_MEMORY_MB, MIN_MEMORY_MB};

/// The longest machine id: it is a hostname, and part of namespace, cgroup and file names.
pub const MAX_ID_LEN: usize = 32;

/// Ids and addresses: at least one and at most `most` machines, each id 1 to [`MAX_ID_LEN`]
/// lowercase letters, digits or `-` and used once, each address a host address of `subnet`
/// and used once. `what` is `machine` or `node`.
pub(crate) fn check_members<'a>(
    what: &str,
    subnet: Subnet,
    members: impl ExactSizeIterator<Item = (&'a str, Ipv4Addr)>,
    most: usize,
) -> Check {
    let count = members.len();
    if count == 0 {
        return Err(format!("has no {what}"));
    }
    if count > most {
        return Err(format!("has {count} {what}s, more than the {most} allowed"));
    }
    if subnet.prefix > 30 {
        return Err(format!(
            "has subnet {subnet}, which has no room for {what}s"
        ));
    }
    let (mut ids, mut ips) = (BTreeSet::new(), BTreeSet::new());
    for (id, ip) in members {
        let plain = !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && !id.starts_with('-')
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !plain {
            return Err(format!(
                "has {what} id {id:?}, which is not 1 to {MAX_ID_LEN} lowercase letters, digits or `-`"
            ));
        }
        if !ids.insert(id) {
            return Err(format!("has {what} id `{id}` twice"));
        }
        if !subnet.contains(ip) || ip == subnet.network() || ip == subnet.broadcast() {
            return Err(format!(
                "gives {what} {id} address {ip}, which is not a host address of {subnet}"
            ));
        }
        if !ips.insert(ip) {
            return Err(format!("gives address {ip} to two {what}s"));
        }
    }
    Ok(())
}

/// The most machines a ping state may have.
pub(crate) const MOST_MACHINES: usize = MAX_MACHINES;

/// A machine's memory.
pub(crate) fn check_memory(id: &str, memory_mb: u32) -> Check {
    if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&memory_mb) {
        return Err(format!(
            "gives machine {id} {memory_mb} MiB of memory, outside {MIN_MEMORY_MB}..={MAX_MEMORY_MB} MiB"
        ));
    }
    Ok(())
}
