//! `[sql]`: the sql scenario's knobs, the isolation levels it runs transactions at, and the
//! consistency model it claims.

use fleetcheck_engine::txn::Isolation;
use serde::{Deserialize, Serialize};

use crate::cluster::Fault;

/// An isolation level PostgreSQL runs a transaction at (`BEGIN ISOLATION LEVEL …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SqlLevel {
    /// `SERIALIZABLE` (PostgreSQL's serializable snapshot isolation).
    #[serde(rename = "serializable")]
    Serializable,
    /// `REPEATABLE READ` (snapshot isolation in PostgreSQL).
    #[serde(rename = "repeatable read")]
    RepeatableRead,
    /// `READ COMMITTED` (a fresh snapshot per statement).
    #[serde(rename = "read committed")]
    ReadCommitted,
}

impl SqlLevel {
    /// All of them, strongest first.
    pub const ALL: [SqlLevel; 3] = [
        SqlLevel::Serializable,
        SqlLevel::RepeatableRead,
        SqlLevel::ReadCommitted,
    ];

    /// As SQL and configuration files spell it, in lower case: `repeatable read`.
    pub fn name(self) -> &'static str {
        match self {
            SqlLevel::Serializable => "serializable",
            SqlLevel::RepeatableRead => "repeatable read",
            SqlLevel::ReadCommitted => "read committed",
        }
    }

    /// The level of a name (spaces, dashes and underscores alike, any case).
    pub fn parse(name: &str) -> Option<Self> {
        let norm = name.trim().to_ascii_lowercase().replace(['-', '_'], " ");
        Self::ALL.into_iter().find(|l| l.name() == norm)
    }

    /// The consistency model PostgreSQL 15 promises at this level: serializable; snapshot
    /// isolation for repeatable read (which PostgreSQL implements as snapshot isolation); read
    /// committed.
    pub fn promise(self) -> Isolation {
        match self {
            SqlLevel::Serializable => Isolation::Serializable,
            SqlLevel::RepeatableRead => Isolation::SnapshotIsolation,
            SqlLevel::ReadCommitted => Isolation::ReadCommitted,
        }
    }
}

impl std::fmt::Display for SqlLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The fault kinds `[sql] faults` accepts (partition and block need `nodes = 2`, loss only
/// slows replication; upgrades are not offered).
pub const FAULTS: &[Fault] = &[
    Fault::Crash,
    Fault::Pause,
    Fault::Partition,
    Fault::Block,
    Fault::Loss,
];

/// The most concurrent client workers of a batch (each is a psql session).
pub const MAX_WORKERS: usize = 32;
/// The most transactions per worker and batch.
pub const MAX_TXNS_PER_WORKER: usize = 100;
/// The most micro-operations of one transaction.
pub const MAX_MOPS: usize = 32;
/// The longest transaction timeout accepted.
pub const MAX_TXN_TIMEOUT_MS: u64 = 600_000;

/// `[sql]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlConfig {
    /// The isolation levels a batch of transactions runs at, one drawn per batch, the first
    /// preferred when shrinking: `"serializable"`, `"repeatable read"`, `"read committed"`.
    #[serde(deserialize_with = "levels")]
    pub isolation: Vec<SqlLevel>,
    /// The consistency model the history is checked against (a name of
    /// [`Isolation::parse`]); default: the weakest promise ([`SqlLevel::promise`]) of the
    /// listed levels.
    pub claim: Option<String>,
    /// 1: one PostgreSQL server; 2: a primary and a streaming replica (clients use the
    /// primary only).
    pub nodes: u32,
    /// Most concurrent client workers per batch.
    pub workers: usize,
    /// Keys in use at a time (hot keys; a key is retired after 16 appends).
    pub keys: usize,
    /// Most transactions per worker per batch.
    pub txns_per_worker: usize,
    /// Most micro-operations per transaction.
    pub max_mops: usize,
    /// A transaction that has not completed after this long is unknown (its session is closed).
    pub txn_timeout_ms: u64,
    /// Memory of each node, in MiB.
    pub memory_mb: u32,
    /// Faults to generate: any of [`FAULTS`].
    #[serde(deserialize_with = "faults")]
    pub faults: Vec<Fault>,
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            isolation: vec![SqlLevel::Serializable],
            claim: None,
            nodes: 1,
            workers: 3,
            keys: 3,
            txns_per_worker: 3,
            max_mops: 4,
            txn_timeout_ms: 2000,
            memory_mb: 256,
            faults: vec![Fault::Crash, Fault::Pause, Fault::Partition, Fault::Block],
        }
    }
}

fn faults<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Fault>, D::Error> {
    crate::cluster::fault::parse_list(d, "sql.faults", FAULTS)
}

fn levels<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SqlLevel>, D::Error> {
    let names: Vec<String> = crate::config::one_or_many(d)?;
    names
        .iter()
        .map(|n| {
            SqlLevel::parse(n).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "sql.isolation names `{n}`, which is not one of serializable, repeatable read, read committed"
                ))
            })
        })
        .collect()
}

impl SqlConfig {
    /// The model the history is checked against: `claim`, else the weakest promise of the
    /// listed levels.
    pub fn claimed(&self) -> Isolation {
        if let Some(m) = self.claim.as_deref().and_then(Isolation::parse) {
            return m;
        }
        self.isolation
            .iter()
            .map(|l| l.promise())
            .max()
            .unwrap_or(Isolation::Serializable)
    }

    /// One sentence per bad value.
    pub fn validate(&self) -> Result<(), String> {
        if self.isolation.is_empty() {
            return Err("sql.isolation must name at least one isolation level".into());
        }
        if let Some(c) = &self.claim {
            if Isolation::parse(c).is_none() {
                let names: Vec<&str> = Isolation::ALL.iter().map(|m| m.name()).collect();
                return Err(format!(
                    "sql.claim is `{c}`, which is not one of {}",
                    names.join(", ")
                ));
            }
        }
        if !(1..=2).contains(&self.nodes) {
            return Err(format!(
                "sql.nodes is {} but must be 1 (one server) or 2 (a primary and a replica)",
                self.nodes
            ));
        }
        let counts = [
            ("workers", self.workers, MAX_WORKERS),
            ("keys", self.keys, 64),
            ("txns_per_worker", self.txns_per_worker, MAX_TXNS_PER_WORKER),
            ("max_mops", self.max_mops, MAX_MOPS),
        ];
        for (name, n, max) in counts {
            if n < 1 || n > max {
                return Err(format!("sql.{name} is {n} but must be between 1 and {max}"));
            }
        }
        if self.txn_timeout_ms < 1 || self.txn_timeout_ms > MAX_TXN_TIMEOUT_MS {
            return Err(format!(
                "sql.txn_timeout_ms is {} but must be between 1 and {MAX_TXN_TIMEOUT_MS}",
                self.txn_timeout_ms
            ));
        }
        // PostgreSQL with small shared buffers, a psql per worker on the host.
        if self.memory_mb < 128 || self.memory_mb > crate::config::MAX_MEMORY_MB {
            return Err(format!(
                "sql.memory_mb is {} MiB but must be between 128 and {} MiB",
                self.memory_mb,
                crate::config::MAX_MEMORY_MB
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_default_to_the_weakest_promise() {
        let mut c = SqlConfig::default();
        assert_eq!(c.claimed(), Isolation::Serializable);
        c.isolation = vec![SqlLevel::Serializable, SqlLevel::RepeatableRead];
        assert_eq!(c.claimed(), Isolation::SnapshotIsolation);
        c.isolation = vec![SqlLevel::ReadCommitted];
        assert_eq!(c.claimed(), Isolation::ReadCommitted);
        c.claim = Some("snapshot isolation".into());
        assert_eq!(c.claimed(), Isolation::SnapshotIsolation);
        for l in SqlLevel::ALL {
            assert_eq!(SqlLevel::parse(&l.name().replace(' ', "_")), Some(l));
        }
    }
}
