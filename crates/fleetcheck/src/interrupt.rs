//! Ctrl-C: remove every namespace, cgroup, process and VM this run created, then exit 130.
//!
//! While the handler cleans up, the run's workers see their machines vanish and the run may
//! end as "aborted"; [`exit_if_interrupted`] keeps that from being reported: it waits for the
//! handler, which ends the process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::exit;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CLEANING: Mutex<()> = Mutex::new(());

/// Installs the handler.
pub fn install() {
    let result = ctrlc::set_handler(|| {
        let _cleaning = CLEANING.lock().unwrap_or_else(|e| e.into_inner());
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            return;
        }
        eprintln!("\nfleetcheck: interrupted; removing what this run created");
        fleetcheck_fabric::qemu::cleanup_process_resources();
        fleetcheck_fabric::netns::cleanup_process_resources();
        std::process::exit(i32::from(exit::INTERRUPTED));
    });
    if let Err(e) = result {
        eprintln!("fleetcheck: warning: cannot handle Ctrl-C ({e}); an interrupted run leaves resources for the next run's sweep");
    }
}

/// If Ctrl-C was pressed, waits for the handler to finish its clean-up and exit.
pub fn exit_if_interrupted() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        let _wait = CLEANING.lock().unwrap_or_else(|e| e.into_inner());
        std::process::exit(i32::from(exit::INTERRUPTED));
    }
}
