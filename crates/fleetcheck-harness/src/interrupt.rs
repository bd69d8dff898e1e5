//! Ctrl-C (SIGINT), SIGTERM and SIGHUP: remove every namespace, cgroup, process and VM this run
//! created, then exit with 128 + the signal's number (130, 143, 129), as a shell reports a
//! process ended by that signal.
//!
//! A thread waits for the signals (`signal-hook`'s iterator: the handler itself only writes to
//! a pipe), so the clean-up runs in ordinary code. While it cleans up, the run's workers see
//! their machines vanish and the run may end as "aborted"; [`exit_if_interrupted`] keeps that
//! from being reported: it waits for the clean-up, which ends the process. What a signal that
//! cannot be handled (SIGKILL) leaves is removed by the run's guardian
//! (`fleetcheck_fabric::host::guard`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CLEANING: Mutex<()> = Mutex::new(());

/// The exit code of a run ended by signal `sig`.
pub fn exit_code(sig: i32) -> u8 {
    u8::try_from(128 + sig).unwrap_or(u8::MAX)
}

fn name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "interrupted",
        SIGTERM => "terminated (SIGTERM)",
        SIGHUP => "hung up (SIGHUP)",
        _ => "stopped by a signal",
    }
}

/// Installs the handler thread.
pub fn install() {
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fleetcheck: warning: cannot handle SIGINT, SIGTERM and SIGHUP ({e}); a signal leaves what the run made to its guardian");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            // The first signal starts the clean-up; later ones find the lock taken and wait.
            if let Some(sig) = signals.forever().next() {
                let _cleaning = CLEANING.lock().unwrap_or_else(|e| e.into_inner());
                INTERRUPTED.store(true, Ordering::SeqCst);
                eprintln!(
                    "\nfleetcheck: {}; removing what this run created",
                    name(sig)
                );
                fleetcheck_fabric::host::cleanup_process_resources();
                std::process::exit(i32::from(exit_code(sig)));
            }
        });
    if let Err(e) = spawned {
        eprintln!("fleetcheck: warning: cannot start the signal thread ({e}); a signal leaves what the run made to its guardian");
    }
}

/// If a signal came, waits for its clean-up to finish and exit.
pub fn exit_if_interrupted() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        let _wait = CLEANING.lock().unwrap_or_else(|e| e.into_inner());
        // The handler exits while holding the lock; reaching here means it could not.
        std::process::exit(i32::from(crate::exit::INTERRUPTED));
    }
}
