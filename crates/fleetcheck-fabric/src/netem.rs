//! Link faults of the kernel's `sch_netem` (netem): a machine's outgoing packets delayed,
//! duplicated, reordered or corrupted. The qemu backend's guest kernels have the module, so a
//! guest's `tc` sets it on its own link; this host's kernel does not, so netns refuses.

use serde::{Deserialize, Serialize};

/// What netem does to a machine's outgoing packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Netem {
    /// Each packet waits `ms` (± `jitter_ms`).
    Delay {
        /// The delay, in milliseconds.
        ms: u32,
        /// Its variation, in milliseconds.
        jitter_ms: u32,
    },
    /// A share of packets is sent twice.
    Duplicate {
        /// The share, in percent.
        percent: u8,
    },
    /// A share of packets goes at once while the rest wait `ms`: they arrive out of order.
    Reorder {
        /// The share sent at once, in percent.
        percent: u8,
        /// How long the others wait, in milliseconds.
        ms: u32,
    },
    /// A share of packets gets a bit flipped.
    Corrupt {
        /// The share, in percent.
        percent: u8,
    },
}

impl Netem {
    /// Its arguments to `tc qdisc … netem`.
    pub fn tc_args(&self) -> String {
        match self {
            Netem::Delay { ms, jitter_ms } => format!("delay {ms}ms {jitter_ms}ms"),
            Netem::Duplicate { percent } => format!("duplicate {percent}%"),
            Netem::Reorder { percent, ms } => format!("delay {ms}ms reorder {percent}%"),
            Netem::Corrupt { percent } => format!("corrupt {percent}%"),
        }
    }

    /// Whether its numbers are ones netem takes (a share of 1 to 100 percent, a delay of at
    /// most a minute).
    pub fn valid(&self) -> bool {
        let share = |p: &u8| (1..=100).contains(p);
        match self {
            Netem::Delay { ms, jitter_ms } => *ms <= 60_000 && jitter_ms <= ms,
            Netem::Duplicate { percent } | Netem::Corrupt { percent } => share(percent),
            Netem::Reorder { percent, ms } => share(percent) && *ms <= 60_000,
        }
    }
}

impl std::fmt::Display for Netem {
    /// `delay 200ms ±20ms`, `duplicate 10%`, `reorder 25% (others 50ms late)`, `corrupt 5%`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Netem::Delay { ms, jitter_ms } => write!(f, "delay {ms}ms ±{jitter_ms}ms"),
            Netem::Duplicate { percent } => write!(f, "duplicate {percent}%"),
            Netem::Reorder { percent, ms } => write!(f, "reorder {percent}% (others {ms}ms late)"),
            Netem::Corrupt { percent } => write!(f, "corrupt {percent}%"),
        }
    }
}

/// Why the netns backend refuses netem, in a sentence's second half.
pub fn netns_refusal() -> &'static str {
    if host_has_netem() {
        "its machines share the host's kernel, and fleetcheck sets netem only inside qemu \
         guests; use the qemu backend"
    } else {
        "that needs the kernel module sch_netem, which this host's kernel lacks (its machines \
         share it); the qemu backend's guest kernels have it"
    }
}

/// Whether this host's kernel has netem (loaded, or as a module to load).
pub fn host_has_netem() -> bool {
    if std::path::Path::new("/sys/module/sch_netem").exists() {
        return true;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let dir = format!("/lib/modules/{}/kernel/net/sched", release.trim());
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("sch_netem."))
    })
}
