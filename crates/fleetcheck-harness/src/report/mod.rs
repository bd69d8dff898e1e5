//! The report folder of a run: the replay file, the counterexample as text, each machine's
//! captured output, the steps and the history of operations with their times, a summary (JSON
//! and text) and `timeline.html`; and JUnit XML.
//!
//! Everything in the folder comes from one *final replay* of the minimal case
//! ([`capture::final_replay`]): the search's own runs keep nothing (they run by the hundred),
//! so the report runs the case once more and keeps what that run leaves behind.

pub mod capture;
pub mod junit;
pub mod timeline;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fleetcheck_engine::{Case, Trace, Verdict};
use serde::Serialize;
use serde_json::{json, Value};

use crate::exit::Fail;
use capture::Capture;
use timeline::Draw;

/// Where a run's report goes when `--report` is not given and the run failed.
pub fn default_dir(scenario: &str, seed: u64) -> PathBuf {
    PathBuf::from("fleetcheck-reports").join(format!("{scenario}-{seed}"))
}

/// What the summary says about a run; `extra` adds the search's accounts.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `passed`, `failed`, `aborted` or `gave_up` (of the search, or of a replay).
    pub status: String,
    pub scenario: String,
    pub system: Option<String>,
    pub backend: String,
    pub seed: u64,
    /// Why it failed.
    pub reason: Option<String>,
    /// The command that replays the case.
    pub replay_command: Option<String>,
    /// The command that runs the search again.
    pub rerun: Option<String>,
    /// Search accounts (cases, shrinking, reproduction), when the report is of a search.
    pub search: Value,
}

fn io<T>(r: std::io::Result<T>, what: impl FnOnce() -> String) -> Result<T, Fail> {
    r.with_context(what).map_err(Fail::usage)
}

fn write_file(path: &Path, text: &str) -> Result<(), Fail> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        io(std::fs::create_dir_all(dir), || {
            format!("cannot create {}", dir.display())
        })?;
    }
    io(std::fs::write(path, text), || {
        format!("cannot write {}", path.display())
    })
}

/// Creates the report folder (it may exist; files in it are replaced).
pub fn create_dir(dir: &Path) -> Result<(), Fail> {
    io(std::fs::create_dir_all(dir), || {
        format!("cannot create the report folder {}", dir.display())
    })
}

/// A sibling of `dir` named `.<name>.<what>-<pid>-<n>`, unique to this process.
fn sibling(dir: &Path, what: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = dir
        .file_name()
        .map_or_else(|| "report".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!(".{name}.{what}-{}-{n}", std::process::id()))
}

/// Writes a report folder as a whole: `write` fills a fresh staging folder next to `dir`,
/// which then replaces `dir` by renames. A folder is always one run's: a run with the same
/// seed never keeps an earlier run's machine logs, and of two runs that write the same folder
/// at once, one wins whole.
fn publish<T>(dir: &Path, write: impl FnOnce(&Path) -> Result<T, Fail>) -> Result<T, Fail> {
    if let Some(parent) = dir.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir(parent)?;
    }
    let staging = sibling(dir, "writing");
    let _ = std::fs::remove_dir_all(&staging);
    create_dir(&staging)?;
    let written = write(&staging);
    let out = match written {
        Ok(out) => out,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // Move the old folder aside, put the new one in its place; another run may do the same
    // in between, so try a few times.
    let mut last = None;
    for _ in 0..10 {
        let old = sibling(dir, "old");
        let moved = std::fs::rename(dir, &old).is_ok();
        let placed = std::fs::rename(&staging, dir);
        if moved {
            let _ = std::fs::remove_dir_all(&old);
        }
        match placed {
            Ok(()) => return Ok(out),
            Err(e) => last = Some(e),
        }
    }
    let _ = std::fs::remove_dir_all(&staging);
    Err(Fail::usage(
        anyhow::Error::new(last.expect("ten tries failed")).context(format!(
            "cannot put the report folder in place at {}",
            dir.display()
        )),
    ))
}

/// Writes the summary alone (a run without a counterexample) as the whole folder.
pub fn write_summary(dir: &Path, summary: &Summary, run: Option<Value>) -> Result<(), Fail> {
    publish(dir, |staging| write_summary_into(staging, summary, run))
}

fn write_summary_into(dir: &Path, summary: &Summary, run: Option<Value>) -> Result<(), Fail> {
    let mut value = serde_json::to_value(summary).expect("a summary serialises");
    if let (Value::Object(o), Some(run)) = (&mut value, run) {
        o.insert("final_replay".into(), run);
    }
    write_file(
        &dir.join("summary.json"),
        &serde_json::to_string_pretty(&value).expect("JSON serialises"),
    )?;
    write_file(&dir.join("summary.txt"), &summary_text(&value))
}

/// The summary for people: one `key: value` line per fact.
fn summary_text(v: &Value) -> String {
    let mut out = String::new();
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let _ = writeln!(
        out,
        "fleetcheck: {}{} on {}, seed {}: {}",
        s("scenario").unwrap_or_default(),
        s("system").map(|x| format!(" ({x})")).unwrap_or_default(),
        s("backend").unwrap_or_default(),
        v["seed"],
        s("status").unwrap_or_default().to_uppercase()
    );
    if let Some(r) = s("reason") {
        let _ = writeln!(out, "reason: {r}");
    }
    let search = &v["search"];
    if let Value::Object(o) = search {
        for (k, x) in o {
            let _ = writeln!(out, "{}: {}", k.replace('_', " "), compact(x));
        }
    }
    if let Value::Object(o) = &v["final_replay"] {
        let _ = writeln!(
            out,
            "final replay (this folder's logs, steps and timeline):"
        );
        for (k, x) in o {
            let _ = writeln!(out, "  {}: {}", k.replace('_', " "), compact(x));
        }
    }
    if let Some(r) = s("replay_command") {
        let _ = writeln!(out, "replay: {r}");
    }
    if let Some(r) = s("rerun") {
        let _ = writeln!(out, "re-run the search: {r}");
    }
    out
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Everything a counterexample's report needs.
#[derive(Debug)]
pub struct CaseReport<'a, M: Draw> {
    pub dir: &'a Path,
    pub model: &'a M,
    pub case: &'a Case<M>,
    /// The final replay of the case.
    pub trace: &'a Trace<M>,
    pub capture: &'a Capture,
    /// The replay file's text.
    pub replay_json: &'a str,
    /// The counterexample (or the replayed case) as text.
    pub text: &'a str,
    pub summary: Summary,
}

/// Writes the whole folder (replacing whatever was there); returns the path of `timeline.html`.
pub fn write_case<M: Draw>(r: CaseReport<'_, M>) -> Result<PathBuf, Fail> {
    let dir = r.dir;
    publish(dir, |staging| {
        write_case_into(staging, CaseReport { dir: staging, ..r })
    })?;
    Ok(dir.join(TIMELINE))
}

const TIMELINE: &str = "timeline.html";

fn write_case_into<M: Draw>(dir: &Path, r: CaseReport<'_, M>) -> Result<(), Fail> {
    write_file(&dir.join("replay.json"), r.replay_json)?;
    write_file(&dir.join("counterexample.txt"), r.text)?;

    // Steps with their times.
    let mut steps_txt = String::new();
    let steps: Vec<Value> = r
        .trace
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let command = r.model.describe_command(&s.command);
            let output = s.output.clone().unwrap_or_else(|| "(no output)".into());
            let _ = writeln!(
                steps_txt,
                "{:>3}. {:>10.3}..{:>10.3} ms  {command} -> {output}",
                i + 1,
                ms(s.started),
                ms(s.started + s.elapsed)
            );
            json!({
                "step": i + 1,
                "command": command,
                "args": s.command,
                "output": output,
                "start_ms": ms(s.started),
                "end_ms": ms(s.started + s.elapsed),
                "state_after": r.model.summarize_state(&s.state_after),
            })
        })
        .collect();
    write_file(&dir.join("steps.txt"), &steps_txt)?;
    write_file(
        &dir.join("steps.json"),
        &serde_json::to_string_pretty(&steps).expect("JSON serialises"),
    )?;

    // The history of client operations, times on the same clock as the steps.
    let mut history_counts = Value::Null;
    if let Some(h) = &r.capture.history {
        let offset = h
            .origin
            .checked_duration_since(r.trace.started_at)
            .map_or(0.0, ms);
        let ops: Vec<Value> = h
            .ops
            .iter()
            .map(|o| {
                json!({
                    "index": o.index,
                    "worker": o.worker,
                    "op": o.op,
                    "invoke_ms": offset + o.invoke as f64 / 1e6,
                    "complete_ms": o.complete.map(|c| offset + c as f64 / 1e6),
                    "outcome": o.outcome,
                    "result": o.result,
                    "not_linearizable_here": h.culprit == Some(o.index),
                })
            })
            .collect();
        let count = |k: &str| h.ops.iter().filter(|o| o.outcome == k).count();
        history_counts = json!({
            "operations": h.ops.len(),
            "ok": count("ok"),
            "fail": count("fail"),
            "unknown": count("unknown"),
        });
        let mut text = format!(
            "# client operations; times in ms since the history began, {offset:.3} ms after the run began\n"
        );
        text.push_str(&h.text);
        if let Some(c) = h.culprit {
            let _ = writeln!(
                text,
                "# the linearizability checker placed {:?} and then could not place #{c}",
                h.placed
            );
        }
        write_file(&dir.join("history.txt"), &text)?;
        write_file(
            &dir.join("history.json"),
            &serde_json::to_string_pretty(&ops).expect("JSON serialises"),
        )?;
    }

    // Each machine's captured output.
    let mut logs = Vec::new();
    for m in &r.capture.machines {
        for (name, text) in &m.files {
            let rel = format!("machines/{}/{name}", m.machine);
            write_file(&dir.join(&rel), text)?;
            logs.push(rel);
        }
    }

    // The timeline.
    let mut t = r
        .model
        .timeline(r.case, r.trace, r.capture.history.as_ref());
    if t.title.is_empty() {
        t.title = r.summary.scenario.clone();
    }
    let meta = json!({
        "scenario": r.summary.scenario,
        "system": r.summary.system,
        "backend": r.summary.backend,
        "seed": r.summary.seed,
        "replay": r.summary.replay_command,
        "logs": logs,
    });
    write_file(&dir.join(TIMELINE), &timeline_html(&t, meta))?;

    let verdict = match &r.trace.verdict {
        Verdict::Passed => "passed".to_string(),
        Verdict::Failed { step, .. } => format!("failed at step {}", step + 1),
        Verdict::Aborted { message, .. } => format!("aborted: {message}"),
    };
    let run = json!({
        "verdict": verdict,
        "setup_ms": ms(r.trace.setup),
        "commands_ms": ms(r.trace.elapsed.saturating_sub(r.trace.setup + r.trace.teardown)),
        "teardown_ms": ms(r.trace.teardown),
        "total_ms": ms(r.trace.elapsed),
        "steps": r.trace.steps.len(),
        "machines": r.capture.machines.len(),
        "history": history_counts,
    });
    write_summary_into(dir, &r.summary, Some(run))
}

/// The page: the template with the timeline's JSON inlined (no `<` in it, so no `</script>`).
pub fn timeline_html(t: &timeline::Timeline, meta: Value) -> String {
    let mut data = serde_json::to_value(t).expect("a timeline serialises");
    if let Value::Object(o) = &mut data {
        o.insert("meta".into(), meta);
    }
    let json = data.to_string().replace('<', "\\u003c");
    include_str!("timeline.html").replace("/*DATA*/", &json)
}
