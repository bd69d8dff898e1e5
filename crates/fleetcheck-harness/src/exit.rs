//! Exit codes, documented in one place (also in README and `fleetcheck --help`).

use std::fmt;

/// The property held (or a replayed case passed, or `doctor` found nothing missing).
pub const PASSED: u8 = 0;
/// A counterexample was found (or a replayed case failed again).
pub const FAILED: u8 = 1;
/// Bad usage or input: unknown option, scenario or backend, malformed or impossible config.
pub const USAGE: u8 = 2;
/// This host cannot run it: not root, a missing kernel feature or tool.
pub const HOST: u8 = 3;
/// The infrastructure broke during the run (not a counterexample).
pub const ABORTED: u8 = 4;
/// Too many generated commands were discarded by preconditions.
pub const GAVE_UP: u8 = 5;
/// Flaky: a case failed, but its minimal case failed again in none of its `--reproduce`
/// runs, so it is not a counterexample (the replay file is still written).
pub const FLAKY: u8 = 6;
/// The host was too loaded to judge: a timed result (a ping's reply) could not be told from
/// a late one even with a longer grace (not a counterexample).
pub const TOO_LOADED: u8 = 7;
/// Interrupted by Ctrl-C (everything created was removed). SIGTERM and SIGHUP end a run the
/// same way with 143 and 129: 128 + the signal's number ([`crate::interrupt::exit_code`]).
pub const INTERRUPTED: u8 = 130;

/// The text of `--help`'s exit code section.
pub const HELP: &str = "\
Exit codes:
  0  property held (replay: the case passed; doctor: host is ready)
  1  counterexample found (replay: the case failed again)
  2  usage or input error (bad option, scenario, backend or configuration)
  3  this host cannot run it (not root, missing kernel feature or tool)
  4  aborted: the infrastructure broke (not a counterexample)
  5  gave up: too many commands discarded by preconditions
  6  flaky: a failure whose minimal case did not fail again in any
     --reproduce run (not a counterexample; the replay file is written)
  7  too loaded: the host was too loaded to judge a timeout (not a counterexample)
  130 interrupted by Ctrl-C (SIGINT); everything created was removed
  143 stopped by SIGTERM, 129 by SIGHUP; everything created was removed";

/// An error that ends the program with a given exit code.
#[derive(Debug)]
pub struct Fail {
    /// The exit code.
    pub code: u8,
    /// What went wrong, with its causes.
    pub error: anyhow::Error,
}

impl Fail {
    /// A usage or input error.
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: USAGE,
            error: error.into(),
        }
    }

    /// The host cannot run this.
    pub fn host(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: HOST,
            error: error.into(),
        }
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}
