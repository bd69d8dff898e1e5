//! A network's switch, the same on every backend: a private network namespace
//! (`fleetcheck-<run>-<net>-sw`) with bridge `br0` and no uplink, one port per machine boot
//! (a veth on `netns`, a tap on `qemu`), and the network faults in force as the fault table
//! on that bridge ([`super::nft`]).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Mutex;

use super::netlink::{Netlink, Req};
use super::nft;
use super::ns::{self, Netns};
use crate::error::{CreateError, FaultError};
use crate::faults::Faults;

/// The bridge every port is on.
pub(crate) const BRIDGE: &str = "br0";

/// The switch namespace's name for network `net` of run `run`.
pub(crate) fn name(run: &str, net: &str) -> String {
    format!("fleetcheck-{run}-{net}-sw")
}

/// A machine's hardware address, the same at every boot as a real NIC's: locally
/// administered, derived from its (unique) address on the network.
pub(crate) fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0xfc, a, b, c, d]
}

/// The switch of one network: its namespace until teardown, and the faults in force.
pub(crate) struct Switch {
    netns: Mutex<Option<Netns>>,
    /// The network faults in force; held while nft applies a change, which serialises them.
    faults: Mutex<Faults>,
}

fn torn_down() -> io::Error {
    io::Error::other("network was torn down")
}

impl Switch {
    /// A switch in `netns`, a namespace just made; [`Switch::bring_up`] adds the bridge.
    pub(crate) fn new(netns: Netns) -> Self {
        Switch {
            netns: Mutex::new(Some(netns)),
            faults: Mutex::new(Faults::default()),
        }
    }

    /// Creates the bridge and brings it and `lo` up.
    pub(crate) fn bring_up(&self) -> Result<(), CreateError> {
        let guard = self.netns.lock().unwrap_or_else(|e| e.into_inner());
        let switch = guard.as_ref().expect("switch exists until teardown");
        let mut nl = switch.netlink.lock().unwrap_or_else(|e| e.into_inner());
        nl.batch(vec![
            Req::NewBridge {
                name: BRIDGE.into(),
            },
            Req::SetUp {
                name: BRIDGE.into(),
                up: true,
            },
            Req::SetUp {
                name: "lo".into(),
                up: true,
            },
        ])
        .map_err(|(what, source)| CreateError::Netlink { what, source })
    }

    /// Runs `f` with the switch namespace and its netlink socket, which stay until `f`
    /// returns; fails once the network is torn down.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&Netns, &mut Netlink) -> io::Result<T>,
    ) -> io::Result<T> {
        let guard = self.netns.lock().unwrap_or_else(|e| e.into_inner());
        let switch = guard.as_ref().ok_or_else(torn_down)?;
        let mut nl = switch.netlink.lock().unwrap_or_else(|e| e.into_inner());
        f(switch, &mut nl)
    }

    /// Brings port `port` up or down.
    pub(crate) fn set_port(&self, port: String, up: bool) -> io::Result<()> {
        self.with(|_, nl| {
            nl.batch(vec![Req::SetUp { name: port, up }])
                .map_err(|(_, e)| e)
        })
    }

    /// Changes the faults in force of a network whose machines are `ids`: `change` edits a copy,
    /// the whole table is applied in one `nft -f` transaction, then the copy is kept. A change
    /// that changes nothing makes no nft call (e.g. a heal with no fault in force). The faults
    /// lock serialises changes; the namespace lock keeps the namespace (and its fd) alive while
    /// nft enters it.
    pub(crate) fn change_faults(
        &self,
        ids: &[&str],
        change: impl FnOnce(&mut Faults) -> Result<(), FaultError>,
    ) -> Result<(), FaultError> {
        let mut current = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = current.clone();
        change(&mut next)?;
        if next == *current {
            return Ok(());
        }
        let script = nft::render(&next, ids);
        let guard = self.netns.lock().unwrap_or_else(|e| e.into_inner());
        let switch = guard.as_ref().ok_or(FaultError::TornDown)?;
        nft::run_in(switch.fd.as_raw_fd(), &["-f", "-"], &script)?;
        drop(guard);
        *current = next;
        Ok(())
    }

    /// The fault table as `nft list` prints it, with rule counters (empty when no fault is in
    /// force).
    pub(crate) fn fault_rules(&self) -> Result<String, FaultError> {
        let _faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let guard = self.netns.lock().unwrap_or_else(|e| e.into_inner());
        let switch = guard.as_ref().ok_or(FaultError::TornDown)?;
        let fd = switch.fd.as_raw_fd();
        let tables = nft::run_in(fd, &["list", "tables"], "")?;
        if !tables
            .lines()
            .any(|l| l.trim() == format!("table {}", nft::TABLE))
        {
            return Ok(String::new());
        }
        let (family, name) = nft::TABLE.split_once(' ').expect("family and name");
        nft::run_in(fd, &["list", "table", family, name], "")
    }

    /// The bind mount of the switch namespace, until teardown.
    pub(crate) fn path(&self) -> Option<PathBuf> {
        let guard = self.netns.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map(|s| s.path.clone())
    }

    /// Removes the switch namespace, and with it the bridge, every port and the fault table;
    /// idempotent. Says what could not be removed.
    pub(crate) fn remove(&self) -> Result<(), (String, io::Error)> {
        match self.netns.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(switch) => ns::remove_named(&switch.path)
                .map_err(|e| (format!("namespace {}", switch.name), e)),
            None => Ok(()),
        }
    }
}
