//! What a transactional history is made of: micro-operations ([`Mop`]), transactions ([`Txn`]),
//! and recorded transactions ([`TxnHistory`], a [`History`] whose operations are transactions).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{History, Operation, Outcome};

/// A key of the store.
pub type Key = u64;
/// A value: unique per key among all writes (appends) of a history.
pub type Value = u64;

/// One micro-operation of a transaction.
///
/// Reads carry what they returned: in a transaction as planned (before it ran) they are empty
/// (`[]` / `None`) and only the completed transaction of an `Ok` outcome fills them in.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mop {
    /// List-append: append `value` to the list at `key`.
    Append {
        /// The list.
        key: Key,
        /// The appended element (unique per key).
        value: Value,
    },
    /// List-append: read the whole list at `key` (empty if it was never appended to).
    ReadList {
        /// The list.
        key: Key,
        /// What the read returned, oldest element first.
        list: Vec<Value>,
    },
    /// rw-register: overwrite the register at `key` with `value`.
    Write {
        /// The register.
        key: Key,
        /// The written value (unique per key).
        value: Value,
    },
    /// rw-register: read the register at `key`; `None` is its initial (never written) state.
    ReadRegister {
        /// The register.
        key: Key,
        /// What the read returned.
        value: Option<Value>,
    },
}

impl Mop {
    /// `append(key, value)`.
    pub fn append(key: Key, value: Value) -> Self {
        Mop::Append { key, value }
    }

    /// A list read that returned `list`.
    pub fn read(key: Key, list: &[Value]) -> Self {
        Mop::ReadList {
            key,
            list: list.to_vec(),
        }
    }

    /// `write(key, value)`.
    pub fn write(key: Key, value: Value) -> Self {
        Mop::Write { key, value }
    }

    /// A register read that returned `value`.
    pub fn get(key: Key, value: Option<Value>) -> Self {
        Mop::ReadRegister { key, value }
    }

    /// The key it touches.
    pub fn key(&self) -> Key {
        match self {
            Mop::Append { key, .. }
            | Mop::ReadList { key, .. }
            | Mop::Write { key, .. }
            | Mop::ReadRegister { key, .. } => *key,
        }
    }

    /// The value it writes, if it writes.
    pub fn written(&self) -> Option<Value> {
        match self {
            Mop::Append { value, .. } | Mop::Write { value, .. } => Some(*value),
            Mop::ReadList { .. } | Mop::ReadRegister { .. } => None,
        }
    }

    /// Whether it is a read.
    pub fn is_read(&self) -> bool {
        self.written().is_none()
    }

    /// Whether it belongs to the list-append workload (else rw-register).
    pub fn is_list(&self) -> bool {
        matches!(self, Mop::Append { .. } | Mop::ReadList { .. })
    }

    /// The same micro-operation with its read result cleared (as planned).
    pub fn planned(&self) -> Self {
        match self {
            Mop::ReadList { key, .. } => Mop::ReadList {
                key: *key,
                list: Vec::new(),
            },
            Mop::ReadRegister { key, .. } => Mop::ReadRegister {
                key: *key,
                value: None,
            },
            m => m.clone(),
        }
    }
}

/// Elle's notation: `a 3 5` (append 5 to key 3), `r 3 [1 2 5]`, `w 3 5`, `r 3 5`, `r 3 nil`.
impl fmt::Display for Mop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mop::Append { key, value } => write!(f, "a {key} {value}"),
            Mop::Write { key, value } => write!(f, "w {key} {value}"),
            Mop::ReadList { key, list } => {
                write!(f, "r {key} [")?;
                for (i, v) in list.iter().enumerate() {
                    if i > 0 {
                        write!(f, " ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
            Mop::ReadRegister {
                key,
                value: Some(v),
            } => write!(f, "r {key} {v}"),
            Mop::ReadRegister { key, value: None } => write!(f, "r {key} nil"),
        }
    }
}

/// The same compact notation as `Display` (histories print their operations with `Debug`).
impl fmt::Debug for Mop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A transaction: micro-operations run in order, atomically if the store keeps its promise.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Txn(pub Vec<Mop>);

impl Txn {
    /// A transaction of these micro-operations.
    pub fn new(mops: Vec<Mop>) -> Self {
        Txn(mops)
    }

    /// Its micro-operations.
    pub fn mops(&self) -> &[Mop] {
        &self.0
    }

    /// The same transaction with every read result cleared (what was asked, not what came back).
    pub fn planned(&self) -> Self {
        Txn(self.0.iter().map(Mop::planned).collect())
    }

    /// The keys it touches, sorted, without repeats.
    pub fn keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.0.iter().map(Mop::key).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// `[a 3 5, r 3 [1 2 5]]`.
impl fmt::Display for Txn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{m}")?;
        }
        write!(f, "]")
    }
}

impl fmt::Debug for Txn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A recorded transaction: the worker (process) that ran it, invoke and complete times, and its
/// outcome — `Ok(completed)` committed with the reads filled in, `Fail` aborted (none of its
/// writes took effect), `Unknown` (Jepsen's *info*: it may or may not have committed).
///
/// `op` is the transaction as planned; for `Ok` the completed transaction must have the same
/// micro-operations (same keys, same writes, in the same order), only with read results.
pub type RecordedTxn = Operation<Txn, Txn>;

/// A history of transactions, recorded by workers through a
/// [`Recorder<Txn, Txn>`](crate::Recorder) like any other history. Indices into `operations` name
/// transactions everywhere (`T3` in text).
pub type TxnHistory = History<Txn, Txn>;

/// The micro-operations whose effects a recorded transaction claims: the completed ones for
/// `Ok`, the planned ones otherwise (reads of a non-`Ok` transaction are unknown).
pub fn effective(t: &RecordedTxn) -> &Txn {
    match &t.outcome {
        Outcome::Ok(done) => done,
        Outcome::Fail | Outcome::Unknown => &t.op,
    }
}
