//! Long-lived client programs of scenario files: the protocol, one JSON object a line each
//! way, and the sessions that speak it.
//!
//! fleetcheck writes an operation: `{"id":7,"f":"put","key":0,"value":42,"node":"abcdefgh"}`
//! (`f` one of `put`, `get`, `delete`, `cas`; a `cas` has `"expected"`, a number or `null`
//! for "holds nothing", and `"new"`). The program answers with the same id:
//! `{"id":7,"type":"ok"}`, for a get `{"id":7,"type":"ok","value":42}` (`null`: absent), for a
//! cas `{"id":7,"type":"ok","swapped":true}`; `{"id":7,"type":"fail"}` when the operation
//! surely did not happen, `{"id":7,"type":"unknown"}` when it may have. No answer within
//! `[kv] op_timeout_ms` is unknown (a read: a failure) and the session is replaced.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use fleetcheck_engine::history::Outcome;
use fleetcheck_engine::{Abort, KvOp, KvRet};
use serde_json::{json, Value};

use crate::kv::{Op, Ret};

/// One running client program.
pub struct Session {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    next_id: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

/// How one operation went over a session.
#[derive(Debug)]
pub enum Answered {
    /// An answer: the operation's outcome.
    Outcome(Outcome<Ret>),
    /// The program had ended before the operation was sent: it surely did not happen.
    NotSent,
    /// No answer in time, or the program ended after it was sent: the outcome is not known
    /// and the session is spent.
    Lost,
}

impl Session {
    /// A session over `child` (its stdin and stdout piped).
    pub fn new(mut child: Child) -> Self {
        let stdin = child.stdin.take().expect("spawned with a piped stdin");
        let stdout = child.stdout.take().expect("spawned with a piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
            next_id: 0,
        }
    }

    /// Runs `op` against `node`, waiting up to `within`; `Err`: the program answered with
    /// something that is not the protocol (one sentence naming it).
    pub fn run(&mut self, node: &str, op: &Op, within: Duration) -> Result<Answered, Abort> {
        self.next_id += 1;
        let id = self.next_id;
        let message = match op {
            KvOp::Put(k, v) => json!({"id": id, "f": "put", "key": k, "value": v, "node": node}),
            KvOp::Get(k) => json!({"id": id, "f": "get", "key": k, "node": node}),
            KvOp::Delete(k) => json!({"id": id, "f": "delete", "key": k, "node": node}),
            KvOp::Cas { key, expected, new } => json!({
                "id": id, "f": "cas", "key": key, "expected": expected, "new": new, "node": node
            }),
        };
        if writeln!(self.stdin, "{message}")
            .and_then(|()| self.stdin.flush())
            .is_err()
        {
            return Ok(Answered::NotSent);
        }
        let line = match self.lines.recv_timeout(within) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                return Ok(Answered::Lost)
            }
        };
        read_answer(&line, id, op).map(Answered::Outcome)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Its stdin closes with it (the program's end of input); the process that holds it
        // in the machine is reaped here, the program by the machine's teardown at the latest.
        let _ = fleetcheck_fabric::netns::end_spawned(&mut self.child);
    }
}

/// The outcome an answer line gives `op` (sent with `id`).
fn read_answer(line: &str, id: u64, op: &Op) -> Result<Outcome<Ret>, Abort> {
    let bad = |why: &str| {
        Abort::new(format!(
            "the client program answered `{line}` to operation {id}, which {why} (see the \
             README's client protocol)"
        ))
    };
    let v: Value = serde_json::from_str(line).map_err(|_| bad("is not a JSON object"))?;
    if v.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(bad("does not carry its id"));
    }
    match v.get("type").and_then(Value::as_str) {
        Some("fail") => return Ok(Outcome::Fail),
        Some("unknown") => return Ok(Outcome::Unknown),
        Some("ok") => {}
        _ => return Err(bad("has no type ok, fail or unknown")),
    }
    Ok(Outcome::Ok(match op {
        KvOp::Put(..) | KvOp::Delete(..) => KvRet::Done,
        KvOp::Get(_) => match v.get("value") {
            None | Some(Value::Null) => KvRet::Value(None),
            Some(Value::Number(n)) => KvRet::Value(Some(
                n.as_u64()
                    .ok_or_else(|| bad("reads a value that is not a number"))?,
            )),
            Some(_) => return Err(bad("reads a value that is not a number or null")),
        },
        KvOp::Cas { .. } => KvRet::Swapped(
            v.get("swapped")
                .and_then(Value::as_bool)
                .ok_or_else(|| bad("says nothing of `swapped`"))?,
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_as_outcomes_and_others_are_refused() {
        let get = KvOp::Get(0);
        let ok = |line: &str, op: &Op| read_answer(line, 3, op).unwrap();
        assert_eq!(
            ok(r#"{"id":3,"type":"ok","value":5}"#, &get),
            Outcome::Ok(KvRet::Value(Some(5)))
        );
        assert_eq!(
            ok(r#"{"id":3,"type":"ok","value":null}"#, &get),
            Outcome::Ok(KvRet::Value(None))
        );
        assert_eq!(ok(r#"{"id":3,"type":"fail"}"#, &get), Outcome::Fail);
        assert_eq!(
            ok(r#"{"id":3,"type":"unknown"}"#, &KvOp::Put(0, 1)),
            Outcome::Unknown
        );
        let cas = KvOp::Cas {
            key: 0,
            expected: None,
            new: 1,
        };
        assert_eq!(
            ok(r#"{"id":3,"type":"ok","swapped":false}"#, &cas),
            Outcome::Ok(KvRet::Swapped(false))
        );
        for (line, why) in [
            ("OK", "is not a JSON object"),
            (r#"{"id":4,"type":"ok"}"#, "does not carry its id"),
            (
                r#"{"id":3,"type":"yes"}"#,
                "has no type ok, fail or unknown",
            ),
            (
                r#"{"id":3,"type":"ok","value":"x"}"#,
                "not a number or null",
            ),
        ] {
            let e = read_answer(line, 3, &get).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
