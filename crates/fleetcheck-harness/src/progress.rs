//! Progress while a run goes on: a live line on a terminal (cases done, the shrinker's pass,
//! steps and candidates tried, elapsed time), lines with `-v`, nothing otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use fleetcheck_engine::{Event, Observer, Verdict};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows engine events to people.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    verbose: u8,
}

impl Progress {
    /// A live line on stderr when stdout and stderr are terminals (quiet when the output goes
    /// to a file or a pipe); `verbose` adds lines per case (1) and per shrink candidate (2).
    pub fn new(verbose: u8) -> Self {
        let target = if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {pos}/{len} cases {wide_msg}",
            )
            .expect("the template is valid"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Self { bar, verbose }
    }

    fn say(&self, line: String) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for Progress {
    fn event(&self, event: &Event) {
        match event {
            Event::Started { tests, .. } => self.bar.set_length(u64::from(*tests)),
            Event::CaseFinished {
                index,
                commands,
                verdict,
                ..
            } => {
                self.bar.inc(1);
                if self.verbose >= 1 {
                    let what = match verdict {
                        Verdict::Passed => "passed".to_string(),
                        Verdict::Failed { step, reason } => {
                            format!("FAILED at step {}: {reason}", step + 1)
                        }
                        Verdict::Aborted {
                            message,
                            overloaded: true,
                            ..
                        } => format!("TOO LOADED: {message}"),
                        Verdict::Aborted { message, .. } => format!("ABORTED: {message}"),
                    };
                    self.say(format!("case {index} ({commands} commands): {what}"));
                }
            }
            Event::ShrinkStarted { commands } => {
                self.bar
                    .set_message(format!("shrinking a case of {commands} commands"));
                if self.verbose >= 1 {
                    self.say(format!("shrinking a case of {commands} commands"));
                }
            }
            Event::ShrinkCandidate {
                runs,
                accepted,
                commands,
                pass,
                candidates,
                steps,
            } => {
                self.bar.set_message(format!(
                    "shrinking, {pass}: step {steps}, {candidates} candidates ({runs} runs), {commands} commands"
                ));
                if self.verbose >= 2 {
                    let verdict = if *accepted {
                        "smaller case fails"
                    } else {
                        "rejected"
                    };
                    self.say(format!(
                        "  shrink run {runs}: {verdict} ({commands} commands)"
                    ));
                }
            }
            Event::Reproduced { run, failed } => {
                self.bar
                    .set_message(format!("re-running the minimal case ({run})"));
                if self.verbose >= 1 {
                    let verdict = if *failed { "failed again" } else { "passed" };
                    self.say(format!("re-run {run} of the minimal case: {verdict}"));
                }
            }
        }
    }
}
