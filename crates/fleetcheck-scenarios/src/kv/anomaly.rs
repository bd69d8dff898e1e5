//! Names the anomaly behind a non-linearizable kv history in the words of the field.
//!
//! The checker proves that no order explains a history; people debugging a store want to know
//! *what* went wrong. The pattern looked for here is the one asynchronous replication with
//! failover produces: an acknowledged write, then a read that began after the acknowledgement
//! and returned a value that no write ordered after it could have put there — the write is
//! missing (lost, or not yet visible where the read went).

use fleetcheck_engine::history::Outcome;
use fleetcheck_engine::{History, KvOp, KvRet};

use super::{describe_op, Op, Ret};

/// The value key-value operation `op` leaves behind when it ends with `ret`, for writes that
/// took effect (`None` inside: the key is deleted); `None` for reads and failed swaps.
fn written(op: &Op, ret: Option<&Ret>) -> Option<Option<u64>> {
    match (op, ret) {
        (KvOp::Put(_, v), _) => Some(Some(*v)),
        (KvOp::Delete(_), _) => Some(None),
        (KvOp::Cas { new, .. }, Some(KvRet::Swapped(true)) | None) => Some(Some(*new)),
        _ => None,
    }
}

fn key(op: &Op) -> u64 {
    match op {
        KvOp::Put(k, _) | KvOp::Get(k) | KvOp::Delete(k) => *k,
        KvOp::Cas { key, .. } => *key,
    }
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "nothing".to_string(), |v| v.to_string())
}

/// What an operation learnt of its key's value.
#[derive(Clone, Copy)]
enum Observed {
    /// It was exactly this (a read, a successful swap).
    Is(Option<u64>),
    /// It was anything but this (a failed swap).
    Not(Option<u64>),
}

impl Observed {
    fn of(op: &Op, outcome: &Outcome<Ret>) -> Option<Self> {
        match (op, outcome.ok()?) {
            (KvOp::Get(_), KvRet::Value(v)) => Some(Observed::Is(*v)),
            (KvOp::Cas { expected, .. }, KvRet::Swapped(true)) => Some(Observed::Is(*expected)),
            (KvOp::Cas { expected, .. }, KvRet::Swapped(false)) => Some(Observed::Not(*expected)),
            _ => None,
        }
    }

    fn allows(self, value: Option<u64>) -> bool {
        match self {
            Observed::Is(v) => v == value,
            Observed::Not(v) => v != value,
        }
    }

    fn describe(self) -> String {
        match self {
            Observed::Is(v) => format!("found {}", show(v)),
            Observed::Not(v) => format!("found something other than {}", show(v)),
        }
    }
}

/// Where an operation went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The node it went through.
    pub node: String,
    /// Whether a partition cut that node off from the majority when the operation began.
    pub cut_off: bool,
}

/// Looks for an acknowledged write missing from a later read; `via(i)` says where operation
/// `i` went. Returns one sentence, or `None` if the pattern is not there. The kind is named
/// from where the two went: a write acknowledged on the cut-off side and missing on the
/// majority side is a lost write; a read on the cut-off side missing a write made on the
/// majority side is a stale read; otherwise (crashes, pauses) the write was lost, or at least
/// not visible, after it was acknowledged.
pub fn missing_write(history: &History<Op, Ret>, via: impl Fn(usize) -> Via) -> Option<String> {
    let ops = &history.operations;
    let ms = |ns: u64| ns as f64 / 1e6;
    for (r, read) in ops.iter().enumerate() {
        let Some(seen) = Observed::of(&read.op, &read.outcome) else {
            continue;
        };
        let k = &key(&read.op);
        let Some(read_done) = read.complete else {
            continue;
        };
        for (w, write) in ops.iter().enumerate() {
            let Outcome::Ok(ret) = &write.outcome else {
                continue;
            };
            let Some(value) = written(&write.op, Some(ret)) else {
                continue;
            };
            let Some(acked) = write.complete else {
                continue;
            };
            if w == r || key(&write.op) != *k || acked >= read.invoke || seen.allows(value) {
                continue;
            }
            // Could another write of what the read saw have taken effect after this one?
            let explained = ops.iter().enumerate().any(|(x, other)| {
                x != w
                    && x != r
                    && key(&other.op) == *k
                    && !other.outcome.is_fail()
                    && written(&other.op, other.outcome.ok()).is_some_and(|v| seen.allows(v))
                    && other.complete.is_none_or(|c| c > write.invoke)
                    && other.invoke < read_done
            });
            if explained {
                continue;
            }
            let (wv, rv) = (via(w), via(r));
            let (kind, wside, rside) = match (wv.cut_off, rv.cut_off) {
                (true, false) => (
                    "lost write",
                    " (cut off from the majority)",
                    " (majority side)",
                ),
                (false, true) => (
                    "stale read",
                    " (majority side)",
                    " (cut off from the majority)",
                ),
                _ => ("acknowledged write lost", "", ""),
            };
            return Some(format!(
                "{kind}: `{}` through {}{wside} was acknowledged at {:.3} ms, yet `{}` through \
                 {}{rside}, begun after that at {:.3} ms, {} — no write that could have come \
                 after it explains that",
                describe_op(&write.op),
                wv.node,
                ms(acked),
                describe_op(&read.op),
                rv.node,
                ms(read.invoke),
                seen.describe(),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcheck_engine::Operation;

    fn op(
        worker: usize,
        op: Op,
        invoke: u64,
        complete: u64,
        outcome: Outcome<Ret>,
    ) -> Operation<Op, Ret> {
        Operation {
            worker,
            op,
            invoke,
            complete: Some(complete),
            outcome,
        }
    }

    #[test]
    fn a_delete_lost_after_failover_is_named() {
        let mut h = History::new();
        h.push(op(0, KvOp::Put(2, 26), 0, 10, Outcome::Ok(KvRet::Done)));
        h.push(op(0, KvOp::Delete(2), 20, 30, Outcome::Ok(KvRet::Done)));
        h.push(op(
            0,
            KvOp::Get(2),
            31,
            40,
            Outcome::Ok(KvRet::Value(Some(26))),
        ));
        let nodes = ["a", "a", "b"];
        let via = |i: usize| Via {
            node: nodes[i].to_string(),
            cut_off: false,
        };
        let s = missing_write(&h, via).expect("found");
        assert!(s.starts_with("acknowledged write lost"), "{s}");
        assert!(s.contains("`del k2` through a"), "{s}");
        assert!(s.contains("`get k2` through b"), "{s}");
        assert!(s.contains("found 26"), "{s}");
    }

    #[test]
    fn the_side_of_a_partition_names_lost_write_and_stale_read() {
        let mut h = History::new();
        h.push(op(0, KvOp::Put(0, 4), 0, 10, Outcome::Ok(KvRet::Done)));
        h.push(op(0, KvOp::Get(0), 20, 30, Outcome::Ok(KvRet::Value(None))));
        let write_cut = |i: usize| Via {
            node: ["a", "b"][i].into(),
            cut_off: i == 0,
        };
        let s = missing_write(&h, write_cut).expect("found");
        assert!(
            s.starts_with("lost write: `put k0=4` through a (cut off"),
            "{s}"
        );
        let read_cut = |i: usize| Via {
            node: ["a", "b"][i].into(),
            cut_off: i == 1,
        };
        let s = missing_write(&h, read_cut).expect("found");
        assert!(
            s.starts_with("stale read: `put k0=4` through a (majority side)"),
            "{s}"
        );
    }

    #[test]
    fn a_later_concurrent_write_explains_the_read() {
        let mut h = History::new();
        h.push(op(0, KvOp::Put(1, 1), 0, 10, Outcome::Ok(KvRet::Done)));
        h.push(op(1, KvOp::Put(1, 2), 5, 50, Outcome::Ok(KvRet::Done)));
        h.push(op(
            0,
            KvOp::Get(1),
            20,
            40,
            Outcome::Ok(KvRet::Value(Some(2))),
        ));
        assert_eq!(
            missing_write(&h, |_| Via {
                node: "a".into(),
                cut_off: false,
            }),
            None
        );
    }

    #[test]
    fn an_unknown_write_may_explain_the_read() {
        let mut h = History::new();
        h.push(op(0, KvOp::Put(1, 1), 0, 10, Outcome::Ok(KvRet::Done)));
        h.push(Operation {
            worker: 1,
            op: KvOp::Put(1, 2),
            invoke: 5,
            complete: None,
            outcome: Outcome::Unknown,
        });
        h.push(op(
            0,
            KvOp::Get(1),
            20,
            40,
            Outcome::Ok(KvRet::Value(Some(2))),
        ));
        assert_eq!(
            missing_write(&h, |_| Via {
                node: "a".into(),
                cut_off: false,
            }),
            None
        );
    }
}
