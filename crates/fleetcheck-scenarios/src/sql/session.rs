//! A client worker's long-lived `psql` session: one process for the whole case (opened again
//! after it is lost), one transaction a script on its standard input, the answers read from
//! its standard output until the script's end marker.
//!
//! The session runs inside the primary's machine ([`Network::spawn`], spoken to through
//! [`crate::lines::Lines`]) and connects through PostgreSQL's Unix socket in the node's data
//! directory: like kv's clients (which run in the node they talk to) the sessions are not cut
//! off by network faults; a paused server freezes its sessions with it (a timeout), a crashed
//! one ends them (a lost connection). Its errors go to `psql.log` in the data directory.
//!
//! Each statement of a script is followed by `\echo e :SQLSTATE` (psql's code of the last
//! statement: `00000`, or the error), each read prints `r:` and the list, and the script ends
//! with `\echo @@end N`. PostgreSQL aborts a transaction at its first error, so: an error
//! before `COMMIT` (serialization failure 40001, deadlock 40P01, any other) is an abort; an
//! error of `COMMIT` in class 40 or 23 is an abort; `COMMIT` with 00000 after no error is a
//! commit; a timeout, a lost connection (psql exits: it never reconnects when its input is
//! not a terminal) or any other `COMMIT` error is unknown.

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use fleetcheck_engine::txn::{Mop, Txn};
use fleetcheck_fabric::Network;

use super::SqlLevel;
use crate::lines::Lines;

/// The psql of PostgreSQL 15.
pub const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Committed: the transaction with its reads filled in.
    Committed(Txn),
    /// Aborted, with the SQLSTATE that aborted it (`40001`, `40P01`, …) or why it never ran.
    Aborted(String),
    /// Maybe committed, maybe not: why not known.
    Unknown(String),
}

/// One psql process.
#[derive(Debug)]
pub struct Session {
    psql: Lines,
    scripts: u64,
}

/// What reading a script's answer gave.
enum Answer {
    /// Every line up to the end marker.
    Done(Vec<String>),
    /// The lines before the session ended or the deadline passed.
    Cut(Vec<String>, &'static str),
}

impl Session {
    /// Starts psql inside machine `node` of `net` against the server whose socket is in
    /// `socket_dir` (a path inside the machine) and waits (up to `within`) until it answers;
    /// `Err` says why not (it could not start, the server refused or did not answer).
    pub fn open(
        net: &dyn Network,
        node: &str,
        socket_dir: &str,
        within: Duration,
    ) -> Result<Session, String> {
        let command = format!(
            "PGCONNECT_TIMEOUT={} exec {PSQL} -X -q -A -t -h '{socket_dir}' -p 5432 -U postgres \
             -d postgres",
            within.as_secs().max(1)
        );
        let program = net
            .spawn(node, &command, "psql.log")
            .map_err(|e| format!("cannot start {PSQL}: {e}"))?;
        let mut s = Session {
            psql: Lines::new(program),
            scripts: 0,
        };
        match s.send("", within) {
            Answer::Done(_) => Ok(s),
            Answer::Cut(_, why) => Err(format!("psql {why} before it answered")),
        }
    }

    /// Sends `body` and its end marker; the lines it printed before the marker.
    fn send(&mut self, body: &str, within: Duration) -> Answer {
        self.scripts += 1;
        let marker = format!("@@end {}", self.scripts);
        let script = format!("{body}\\echo {marker}\n");
        if self.psql.send(&script).is_err() {
            return Answer::Cut(Vec::new(), "ended");
        }
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.psql.next(left) {
                Ok(line) if line == marker => return Answer::Done(out),
                Ok(line) => out.push(line),
                Err(RecvTimeoutError::Timeout) => return Answer::Cut(out, "timed out"),
                Err(RecvTimeoutError::Disconnected) => return Answer::Cut(out, "ended"),
            }
        }
    }

    /// Runs one statement outside a transaction; `Err` names its SQLSTATE or why it has none.
    pub fn exec(&mut self, sql: &str, within: Duration) -> Result<(), String> {
        match self.send(&format!("{sql}\n\\echo e :SQLSTATE\n"), within) {
            Answer::Done(lines) if lines.iter().any(|l| l == "e 00000") => Ok(()),
            Answer::Done(lines) => Err(format!("`{sql}` answered {}", lines.join(" "))),
            Answer::Cut(_, why) => Err(format!("psql {why} running `{sql}`")),
        }
    }

    /// Runs `txn` at `level`, waiting up to `within`. After an unknown outcome the session
    /// must not be used again (drop it: that ends psql).
    pub fn run(&mut self, level: SqlLevel, txn: &Txn, within: Duration) -> Ended {
        let answer = self.send(&script(level, txn), within);
        judge(txn, answer)
    }
}

/// The script of one transaction: `BEGIN`, each micro-operation, `COMMIT`, each followed by
/// its status line.
pub fn script(level: SqlLevel, txn: &Txn) -> String {
    let status = "\\echo e :SQLSTATE\n";
    let mut s = format!(
        "BEGIN ISOLATION LEVEL {};\n{status}",
        level.name().to_uppercase()
    );
    for m in &txn.0 {
        match m {
            Mop::Append { key, value } => s.push_str(&format!(
                "INSERT INTO lists AS l (k, v) VALUES ({key}, '{value}') \
                 ON CONFLICT (k) DO UPDATE SET v = l.v || ',' || '{value}';\n"
            )),
            _ => s.push_str(&format!(
                "SELECT 'r:' || coalesce((SELECT v FROM lists WHERE k = {}), '');\n",
                m.key()
            )),
        }
        s.push_str(status);
    }
    s.push_str("COMMIT;\n");
    s.push_str(status);
    s
}

fn judge(txn: &Txn, answer: Answer) -> Ended {
    let (lines, cut) = match answer {
        Answer::Done(lines) => (lines, None),
        Answer::Cut(lines, why) => (lines, Some(why)),
    };
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("e ")).collect();
    let reads: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("r:")).collect();
    // BEGIN, the micro-operations, COMMIT.
    let commit_at = txn.0.len() + 1;
    if let Some(code) = statuses[..statuses.len().min(commit_at)]
        .iter()
        .find(|c| **c != "00000")
    {
        return Ended::Aborted(code.to_string());
    }
    let Some(commit) = statuses.get(commit_at) else {
        let why = cut.unwrap_or("printed too little");
        return Ended::Unknown(format!("the session {why} before COMMIT answered"));
    };
    match *commit {
        "00000" => {}
        c if c.starts_with("40") || c.starts_with("23") => return Ended::Aborted(c.to_string()),
        c => return Ended::Unknown(format!("COMMIT failed with {c}")),
    }
    let mut reads = reads.into_iter();
    let mut done = Vec::with_capacity(txn.0.len());
    for m in &txn.0 {
        match m {
            Mop::Append { .. } => done.push(m.clone()),
            _ => {
                let Some(text) = reads.next() else {
                    return Ended::Unknown("a read printed nothing".into());
                };
                let list: Result<Vec<u64>, _> = if text.is_empty() {
                    Ok(Vec::new())
                } else {
                    text.split(',').map(str::parse).collect()
                };
                match list {
                    Ok(list) => done.push(Mop::read(m.key(), &list)),
                    Err(_) => return Ended::Unknown(format!("a read printed `{text}`")),
                }
            }
        }
    }
    Ended::Committed(Txn::new(done))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    #[test]
    fn answers_are_judged_by_their_statuses() {
        let txn = Txn::new(vec![Mop::read(1, &[]), Mop::append(1, 3)]);
        let ok = lines("e 00000\nr:1,2\ne 00000\ne 00000\ne 00000");
        assert_eq!(
            judge(&txn, Answer::Done(ok.clone())),
            Ended::Committed(Txn::new(vec![Mop::read(1, &[1, 2]), Mop::append(1, 3)]))
        );
        let skew = lines("e 00000\nr:\ne 00000\ne 40001\ne 00000");
        assert_eq!(
            judge(&txn, Answer::Done(skew)),
            Ended::Aborted("40001".into())
        );
        let at_commit = lines("e 00000\nr:\ne 00000\ne 00000\ne 40001");
        assert_eq!(
            judge(&txn, Answer::Done(at_commit)),
            Ended::Aborted("40001".into())
        );
        let cut = lines("e 00000\nr:\ne 00000\ne 00000");
        assert!(matches!(
            judge(&txn, Answer::Cut(cut, "timed out")),
            Ended::Unknown(_)
        ));
        assert!(script(SqlLevel::RepeatableRead, &txn)
            .starts_with("BEGIN ISOLATION LEVEL REPEATABLE READ;"));
    }
}
