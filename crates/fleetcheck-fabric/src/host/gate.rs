//! The creation gate of a backend: after Ctrl-C no network creation may start, and clean-up
//! waits (briefly) for those under way so that none leaves resources behind.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::error::CreateError;

struct State {
    in_flight: usize,
    closing: bool,
}

/// Counts network creations under way; one `static` for all backends ([`super::GATE`]).
pub(crate) struct CreationGate {
    state: Mutex<State>,
    changed: Condvar,
}

/// Held for the whole of one creation.
pub(crate) struct CreateGuard(&'static CreationGate);

impl CreationGate {
    pub(crate) const fn new() -> Self {
        Self {
            state: Mutex::new(State {
                in_flight: 0,
                closing: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// Starts a creation, or refuses it once the process is closing.
    pub(crate) fn enter(&'static self) -> Result<CreateGuard, CreateError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.closing {
            return Err(CreateError::BackendGone);
        }
        state.in_flight += 1;
        Ok(CreateGuard(self))
    }

    /// Refuses every later creation and waits up to `wait` for those under way to finish.
    pub(crate) fn close(&self, wait: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.closing = true;
        let _ = self
            .changed
            .wait_timeout_while(state, wait, |s| s.in_flight > 0);
    }
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        state.in_flight -= 1;
        self.0.changed.notify_all();
    }
}
