//! What the checker concludes: anomalies ([`Anomaly`], [`AnomalyKind`]), the consistency models
//! ([`Isolation`]) they rule out, the [`Analysis`] of a history and the [`Violation`] of a claimed
//! model, all printable for people.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::types::{Key, Value};

/// The consistency models a verdict names, after Adya's generalized isolation levels (item
/// anomalies only: histories have no predicate reads) and Jepsen's strict serializability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Isolation {
    /// Serializable, and the serial order agrees with real time.
    StrictSerializable,
    /// Adya PL-3: no G0, G1, G-single, G2-item (and no lost update).
    Serializable,
    /// No G0, G1, G-single, lost update (write skew, G2-item, allowed).
    SnapshotIsolation,
    /// Adya PL-2.99: no G0, G1, G2-item, lost update. Without predicate reads this forbids what
    /// serializable forbids, so it holds exactly when serializable does.
    RepeatableRead,
    /// Adya PL-2: no G0, G1a, G1b, G1c.
    ReadCommitted,
    /// Adya PL-1: no G0.
    ReadUncommitted,
}

impl Isolation {
    /// All of them, strongest first.
    pub const ALL: [Isolation; 6] = [
        Isolation::StrictSerializable,
        Isolation::Serializable,
        Isolation::SnapshotIsolation,
        Isolation::RepeatableRead,
        Isolation::ReadCommitted,
        Isolation::ReadUncommitted,
    ];

    /// Its name as scenario files spell it: `strict-serializable`, `serializable`,
    /// `snapshot-isolation`, `repeatable-read`, `read-committed`, `read-uncommitted`.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::StrictSerializable => "strict-serializable",
            Isolation::Serializable => "serializable",
            Isolation::SnapshotIsolation => "snapshot-isolation",
            Isolation::RepeatableRead => "repeatable-read",
            Isolation::ReadCommitted => "read-committed",
            Isolation::ReadUncommitted => "read-uncommitted",
        }
    }

    /// The model of a name (dashes, spaces and underscores alike, any case), or `None`.
    pub fn parse(name: &str) -> Option<Self> {
        let norm: String = name
            .trim()
            .chars()
            .map(|c| match c {
                ' ' | '_' => '-',
                c => c.to_ascii_lowercase(),
            })
            .collect();
        Self::ALL.into_iter().find(|m| m.name() == norm)
    }

    /// Whether every history this model allows is also allowed by `other` (`self` is at least
    /// as strong).
    pub fn implies(self, other: Isolation) -> bool {
        use Isolation::*;
        match self {
            StrictSerializable => true,
            Serializable => other != StrictSerializable,
            SnapshotIsolation => {
                matches!(other, SnapshotIsolation | ReadCommitted | ReadUncommitted)
            }
            RepeatableRead => matches!(other, RepeatableRead | ReadCommitted | ReadUncommitted),
            ReadCommitted => matches!(other, ReadCommitted | ReadUncommitted),
            ReadUncommitted => other == ReadUncommitted,
        }
    }

    /// Whether this model forbids anomalies of `kind`.
    pub fn forbids(self, kind: AnomalyKind) -> bool {
        use AnomalyKind::*;
        use Isolation::*;
        let weakest = match kind {
            // The store returned data no execution could: every model forbids it.
            Internal | DuplicateElements | IncompatibleOrder | GarbageRead | G0 => ReadUncommitted,
            G1a | G1b | G1c => ReadCommitted,
            GSingle | LostUpdate => {
                return matches!(
                    self,
                    StrictSerializable | Serializable | SnapshotIsolation | RepeatableRead
                )
            }
            G2Item => return matches!(self, StrictSerializable | Serializable | RepeatableRead),
            G0Realtime | G1cRealtime | GSingleRealtime | G2ItemRealtime => StrictSerializable,
        };
        self.implies(weakest)
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kinds of anomaly the checker names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AnomalyKind {
    /// Write cycle: a cycle of ww edges only.
    G0,
    /// Aborted read: a committed transaction read a value an aborted one wrote.
    G1a,
    /// Intermediate read: a read saw a value its writer later overwrote in the same transaction.
    G1b,
    /// Circular information flow: a cycle of ww and wr edges, at least one wr.
    G1c,
    /// Read skew: a cycle with exactly one rw edge.
    GSingle,
    /// Anti-dependency cycle (e.g. write skew): a cycle with two or more rw edges.
    G2Item,
    /// G0 whose cycle needs a real-time edge.
    G0Realtime,
    /// G1c whose cycle needs a real-time edge.
    G1cRealtime,
    /// G-single whose cycle needs a real-time edge.
    GSingleRealtime,
    /// G2-item whose cycle needs a real-time edge.
    G2ItemRealtime,
    /// P4: two committed transactions read the same version of a key and both wrote it.
    LostUpdate,
    /// A read in a transaction disagrees with that transaction's own earlier reads and writes.
    Internal,
    /// A list read holds the same element twice.
    DuplicateElements,
    /// Two list reads of one key where neither is a prefix of the other.
    IncompatibleOrder,
    /// A read of a value nobody wrote to that key.
    GarbageRead,
}

impl AnomalyKind {
    /// Its name as Elle prints it (`G0`, `G-single-realtime`, `lost-update`, …).
    pub fn name(self) -> &'static str {
        use AnomalyKind::*;
        match self {
            G0 => "G0",
            G1a => "G1a",
            G1b => "G1b",
            G1c => "G1c",
            GSingle => "G-single",
            G2Item => "G2-item",
            G0Realtime => "G0-realtime",
            G1cRealtime => "G1c-realtime",
            GSingleRealtime => "G-single-realtime",
            G2ItemRealtime => "G2-item-realtime",
            LostUpdate => "lost-update",
            Internal => "internal",
            DuplicateElements => "duplicate-elements",
            IncompatibleOrder => "incompatible-order",
            GarbageRead => "garbage-read",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why one transaction must precede another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EdgeKind {
    /// Write-write: `to` installed the version right after `from`'s.
    Ww,
    /// Write-read: `to` read a version `from` installed.
    Wr,
    /// Read-write (anti-dependency): `from` read a version older than the one `to` installed.
    Rw,
    /// Real time: `from` completed before `to` was invoked (process order when one worker ran
    /// both).
    Realtime,
}

impl fmt::Display for EdgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EdgeKind::Ww => "ww",
            EdgeKind::Wr => "wr",
            EdgeKind::Rw => "rw",
            EdgeKind::Realtime => "realtime",
        })
    }
}

/// One edge of a cycle: `from < to` because of `kind`, and the sentence that says why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The earlier transaction (index into the history).
    pub from: usize,
    /// The later transaction.
    pub to: usize,
    /// The dependency.
    pub kind: EdgeKind,
    /// The key that makes it, for ww / wr / rw.
    pub key: Option<Key>,
    /// Why, in words a person can check against the history.
    pub why: String,
}

/// One anomaly: its kind, the transactions that witness it, the cycle (for cycle anomalies, in
/// order, the last step returning to the first transaction) and an explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// What it is.
    pub kind: AnomalyKind,
    /// The witnessing transactions (indices into the history), in cycle order for cycles.
    pub txns: Vec<usize>,
    /// For cycle anomalies, the edges, `txns[i] -> txns[i+1]`, the last back to `txns[0]`.
    pub cycle: Vec<Step>,
    /// Each witnessing transaction as recorded, one line each (`T3 w1 1.0..2.0 ms [..] -> ok`).
    pub listing: Vec<String>,
    /// For non-cycle anomalies the explanation; for cycles a summary line.
    pub explanation: String,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.txns.iter().map(|t| format!("T{t}")).collect();
        writeln!(
            f,
            "{} ({}): {}",
            self.kind,
            names.join(", "),
            self.explanation
        )?;
        for line in &self.listing {
            writeln!(f, "    {line}")?;
        }
        for s in &self.cycle {
            writeln!(f, "  - T{} < T{} ({}): {}", s.from, s.to, s.kind, s.why)?;
        }
        Ok(())
    }
}

/// The verdict on a history: its anomalies and the strongest models it still satisfies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Analysis {
    /// Every anomaly found, non-cycle ones first, then cycles by kind.
    pub anomalies: Vec<Anomaly>,
    /// The strongest models of [`Isolation::ALL`] the history satisfies (none of them stronger
    /// than another; usually one; empty if even read uncommitted is ruled out).
    pub strongest: Vec<Isolation>,
    /// Transactions that committed (`Ok`) or whose writes were observed (`Unknown`): the graph.
    pub committed: usize,
    /// Dependency edges (ww, wr, rw) in the graph.
    pub dependency_edges: usize,
    /// Edges that encode real time (linear in the history; see the module docs).
    pub realtime_edges: usize,
}

impl Analysis {
    /// Whether the history satisfies `model`.
    pub fn satisfies(&self, model: Isolation) -> bool {
        self.anomalies.iter().all(|a| !model.forbids(a.kind))
    }

    /// The anomaly kinds found, sorted, without repeats.
    pub fn kinds(&self) -> Vec<AnomalyKind> {
        let mut k: Vec<AnomalyKind> = self.anomalies.iter().map(|a| a.kind).collect();
        k.sort_unstable();
        k.dedup();
        k
    }

    /// The first anomaly of `kind`.
    pub fn find(&self, kind: AnomalyKind) -> Option<&Anomaly> {
        self.anomalies.iter().find(|a| a.kind == kind)
    }
}

fn strongest_line(strongest: &[Isolation]) -> String {
    if strongest.is_empty() {
        "none of the models (not even read-uncommitted)".to_string()
    } else {
        strongest
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

impl fmt::Display for Analysis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} committed transactions, {} dependency edges; strongest model satisfied: {}",
            self.committed,
            self.dependency_edges,
            strongest_line(&self.strongest)
        )?;
        for a in &self.anomalies {
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// Why a history does not satisfy the model a scenario claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Violation {
    /// The history breaks the rules every recorded history keeps (values unique per key, an
    /// `Ok` transaction's completed micro-operations match the planned ones, one data type per
    /// key, completion times); one sentence.
    Invalid(String),
    /// Anomalies the claimed model forbids.
    Anomalies {
        /// The model the scenario claims.
        claimed: Isolation,
        /// The anomalies it forbids that the history has.
        anomalies: Vec<Anomaly>,
        /// The strongest models the history does satisfy.
        strongest: Vec<Isolation>,
    },
}

impl Violation {
    /// The anomalies (empty for an invalid history).
    pub fn anomalies(&self) -> &[Anomaly] {
        match self {
            Violation::Invalid(_) => &[],
            Violation::Anomalies { anomalies, .. } => anomalies,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Invalid(why) => write!(f, "invalid transaction history: {why}"),
            Violation::Anomalies {
                claimed,
                anomalies,
                strongest,
            } => {
                let kinds: Vec<&str> = anomalies.iter().map(|a| a.kind.name()).collect();
                writeln!(
                    f,
                    "not {claimed}: {} ({}); strongest model satisfied: {}",
                    if anomalies.len() == 1 {
                        "1 anomaly".to_string()
                    } else {
                        format!("{} anomalies", anomalies.len())
                    },
                    kinds.join(", "),
                    strongest_line(strongest)
                )?;
                for a in anomalies {
                    write!(f, "{a}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Violation {}

/// A value as text: `nil` for a register's initial state.
pub(crate) fn show(v: Option<Value>) -> String {
    v.map_or_else(|| "nil".to_string(), |v| v.to_string())
}
