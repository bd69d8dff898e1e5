//! Long-lived client programs of scenario files: the protocol, one JSON object a line each
//! way, and the sessions that speak it.
//!
//! fleetcheck writes an operation: `{"id":7,"f":"put","key":0,"value":42,"node":"abcdefgh"}`
//! (`f` one of `put`, `get`, `delete`, `cas` for the kv workload, a `cas` with `"expected"`, a
//! number or `null` for "holds nothing", and `"new"`; `add` with `key` and `value` and `read`
//! with `key` for a set; `enqueue` with `value`, `dequeue` and `drain` for a queue; `incr`
//! with `key` and `value` (the amount) and `read` for a counter). The program answers with
//! the same id: `{"id":7,"type":"ok"}`; for a get or a dequeue `{"id":7,"type":"ok",
//! "value":42}` (`null`: absent, empty); for a cas `{"id":7,"type":"ok","swapped":true}`; for
//! a set's read and a drain `{"id":7,"type":"ok","values":[3,5]}`; for a counter's read
//! `{"id":7,"type":"ok","value":12}`. `{"id":7,"type":"fail"}` when the operation surely did
//! not happen, `{"id":7,"type":"unknown"}` when it may have. No answer within
//! `[kv] op_timeout_ms` is unknown (a read: a failure) and the session is replaced.

use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use fleetcheck_engine::history::Outcome;
use fleetcheck_engine::{Abort, KvOp, KvRet};
use fleetcheck_fabric::Spawned;

use crate::lines::Lines;
use serde_json::{json, Value};

use crate::kv::{Answer, Call, Workload};

/// One running client program.
#[derive(Debug)]
pub struct Session {
    program: Lines,
    next_id: u64,
}

/// How one operation went over a session.
#[derive(Debug)]
pub enum Answered {
    /// An answer: the operation's outcome.
    Outcome(Outcome<Answer>),
    /// The program had ended before the operation was sent: it surely did not happen.
    NotSent,
    /// No answer in time, or the program ended after it was sent: the outcome is not known
    /// and the session is spent.
    Lost,
}

impl Session {
    /// A session over `program`, just spawned.
    pub fn new(program: Spawned) -> Self {
        Self {
            program: Lines::new(program),
            next_id: 0,
        }
    }

    /// Runs `call` of `workload` against `node`, waiting up to `within`; `Err`: the program
    /// answered with something that is not the protocol (one sentence naming it).
    pub fn run(
        &mut self,
        node: &str,
        workload: Workload,
        call: &Call,
        within: Duration,
    ) -> Result<Answered, Abort> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "f": call.name(), "node": node});
        let fields = match call {
            Call::Kv(KvOp::Put(k, v)) | Call::Add(k, v) | Call::Incr(k, v) => {
                json!({"key": k, "value": v})
            }
            Call::Kv(KvOp::Get(k) | KvOp::Delete(k)) | Call::Read(k) => json!({"key": k}),
            Call::Kv(KvOp::Cas { key, expected, new }) => {
                json!({"key": key, "expected": expected, "new": new})
            }
            Call::Enqueue(v) => json!({"value": v}),
            Call::Dequeue | Call::Drain => json!({}),
        };
        if let (Some(m), Value::Object(f)) = (message.as_object_mut(), fields) {
            m.extend(f);
        }
        if self.program.send(&format!("{message}\n")).is_err() {
            return Ok(Answered::NotSent);
        }
        let line = match self.program.next(within) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                return Ok(Answered::Lost)
            }
        };
        read_answer(&line, id, workload, call).map(Answered::Outcome)
    }
}

/// The outcome an answer line gives `call` of `workload` (sent with `id`).
fn read_answer(
    line: &str,
    id: u64,
    workload: Workload,
    call: &Call,
) -> Result<Outcome<Answer>, Abort> {
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
    let number = |n: &Value| {
        n.as_u64()
            .ok_or_else(|| bad("reads a value that is not a number"))
    };
    let maybe = || match v.get("value") {
        None | Some(Value::Null) => Ok(None),
        Some(n @ Value::Number(_)) => number(n).map(Some),
        Some(_) => Err(bad("reads a value that is not a number or null")),
    };
    Ok(Outcome::Ok(match call {
        Call::Kv(KvOp::Put(..) | KvOp::Delete(..))
        | Call::Add(..)
        | Call::Enqueue(_)
        | Call::Incr(..) => Answer::DONE,
        Call::Kv(KvOp::Get(_)) => Answer::Kv(KvRet::Value(maybe()?)),
        Call::Dequeue => Answer::Item(maybe()?),
        Call::Kv(KvOp::Cas { .. }) => Answer::Kv(KvRet::Swapped(
            v.get("swapped")
                .and_then(Value::as_bool)
                .ok_or_else(|| bad("says nothing of `swapped`"))?,
        )),
        Call::Read(_) if workload == Workload::Counter => Answer::Count(
            v.get("value")
                .map(number)
                .transpose()?
                .ok_or_else(|| bad("reads no `value`"))?,
        ),
        Call::Read(_) | Call::Drain => Answer::Values(
            v.get("values")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("has no `values` list"))?
                .iter()
                .map(number)
                .collect::<Result<_, _>>()?,
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_as_outcomes_and_others_are_refused() {
        let get = Call::Kv(KvOp::Get(0));
        let ok = |line: &str, call: &Call| read_answer(line, 3, Workload::Kv, call).unwrap();
        assert_eq!(
            ok(r#"{"id":3,"type":"ok","value":5}"#, &get),
            Outcome::Ok(Answer::Kv(KvRet::Value(Some(5))))
        );
        assert_eq!(
            ok(r#"{"id":3,"type":"ok","value":null}"#, &get),
            Outcome::Ok(Answer::Kv(KvRet::Value(None)))
        );
        assert_eq!(ok(r#"{"id":3,"type":"fail"}"#, &get), Outcome::Fail);
        assert_eq!(
            ok(r#"{"id":3,"type":"unknown"}"#, &Call::Kv(KvOp::Put(0, 1))),
            Outcome::Unknown
        );
        let cas = Call::Kv(KvOp::Cas {
            key: 0,
            expected: None,
            new: 1,
        });
        assert_eq!(
            ok(r#"{"id":3,"type":"ok","swapped":false}"#, &cas),
            Outcome::Ok(Answer::Kv(KvRet::Swapped(false)))
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
            let e = read_answer(line, 3, Workload::Kv, &get)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn collections_answers_read_by_their_workload() {
        let read = |w: Workload, line: &str, call: &Call| read_answer(line, 1, w, call);
        assert_eq!(
            read(
                Workload::Set,
                r#"{"id":1,"type":"ok","values":[3,5]}"#,
                &Call::Read(0)
            )
            .unwrap(),
            Outcome::Ok(Answer::Values(vec![3, 5]))
        );
        assert_eq!(
            read(
                Workload::Counter,
                r#"{"id":1,"type":"ok","value":12}"#,
                &Call::Read(0)
            )
            .unwrap(),
            Outcome::Ok(Answer::Count(12))
        );
        assert_eq!(
            read(
                Workload::Queue,
                r#"{"id":1,"type":"ok","value":null}"#,
                &Call::Dequeue
            )
            .unwrap(),
            Outcome::Ok(Answer::Item(None))
        );
        assert_eq!(
            read(
                Workload::Queue,
                r#"{"id":1,"type":"ok"}"#,
                &Call::Enqueue(4)
            )
            .unwrap(),
            Outcome::Ok(Answer::DONE)
        );
        let e = read(
            Workload::Queue,
            r#"{"id":1,"type":"ok","value":[1]}"#,
            &Call::Drain,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("has no `values` list"), "{e}");
        let e = read(Workload::Counter, r#"{"id":1,"type":"ok"}"#, &Call::Read(0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("reads no `value`"), "{e}");
    }
}
