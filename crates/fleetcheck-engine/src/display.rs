//! Counterexamples and traces printed for people.

use std::fmt::Write as _;

use crate::case::{Case, Trace, Verdict};
use crate::model::Model;
use crate::runner::Failure;

/// The network, then each command with its output and the model state after it, the failing
/// step marked.
pub fn describe_trace<M: Model>(model: &M, case: &Case<M>, trace: &Trace<M>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Initial state:");
    for line in model.describe_state(&case.initial).lines() {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out, "Commands:");
    let failing = match &trace.verdict {
        Verdict::Failed { step, .. } => Some(*step),
        Verdict::Aborted { step, .. } => *step,
        Verdict::Passed => None,
    };
    let width = case.commands.len().to_string().len();
    for (i, step) in trace.steps.iter().enumerate() {
        let mark = if Some(i) == failing { "✗" } else { " " };
        let output = step.output.as_deref().unwrap_or("(no output)");
        let _ = writeln!(
            out,
            "{mark} {n:>width$}. {cmd} -> {output}",
            n = i + 1,
            cmd = model.describe_command(&step.command),
        );
        let _ = writeln!(
            out,
            "  {blank:>width$}  state: {state}",
            blank = "",
            state = model.summarize_state(&step.state_after)
        );
    }
    match &trace.verdict {
        Verdict::Passed => {
            let _ = writeln!(out, "All postconditions held.");
        }
        Verdict::Failed { step, reason } => {
            let _ = writeln!(out, "Step {} failed: {reason}", step + 1);
        }
        Verdict::Aborted {
            step,
            message,
            overloaded,
            refused,
        } => {
            let at = step.map_or("outside a command".to_string(), |s| {
                format!("at step {}", s + 1)
            });
            if *overloaded {
                let _ = writeln!(out, "Too loaded to judge {at}: {message}");
            } else if *refused {
                let _ = writeln!(out, "Refused {at}: {message}");
            } else {
                let _ = writeln!(out, "Aborted {at}: {message}");
            }
        }
    }
    out
}

/// The whole counterexample: how it was shrunk, then [`describe_trace`] of the minimal case.
pub fn describe_failure<M: Model>(model: &M, failure: &Failure<M>) -> String {
    let mut out = String::new();
    let s = &failure.shrink;
    let network = match (
        model.state_size(&failure.original.initial),
        model.state_size(&failure.minimal.initial),
    ) {
        (Some(from), Some(to)) if from != to => format!(" and from {from} to {to}"),
        (Some(_), Some(to)) => format!(", {to}"),
        _ => String::new(),
    };
    let what = if failure.is_flaky() {
        "Failure that did not reproduce, not a counterexample"
    } else {
        "Counterexample"
    };
    let loaded = match failure.too_loaded {
        0 => String::new(),
        n => format!(", {n} too loaded to judge"),
    };
    let _ = writeln!(
        out,
        "{what} (case {index}, shrunk from {from} to {to} commands{network} in {runs} runs, {ms} ms{budget}; reproduced {rep}/{of}{loaded}):",
        index = failure.index,
        from = failure.original.commands.len(),
        to = failure.minimal.commands.len(),
        runs = s.runs,
        ms = s.elapsed.as_millis(),
        budget = if s.budget_exhausted { ", budget exhausted" } else { "" },
        rep = failure.reproduced,
        of = failure.reproduce_runs,
    );
    out.push_str(&describe_trace(model, &failure.minimal, &failure.trace));
    out
}
