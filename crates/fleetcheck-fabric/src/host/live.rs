//! What this process has alive, for clean-up on a signal: the creation gate every backend's
//! network creation passes, the live networks of every backend and the run directories.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::gate::CreationGate;
use super::sweep::RunDir;
use crate::error::TeardownError;

/// A network that [`cleanup_process_resources`] can tear down from any thread.
pub(crate) trait Live: Send + Sync {
    /// Removes everything of the network; idempotent.
    fn teardown(&self) -> Result<(), TeardownError>;
}

/// Network creations under way, of every backend; closed by [`cleanup_process_resources`].
pub(crate) static GATE: CreationGate = CreationGate::new();

/// How long cleanup waits for creations under way (each takes milliseconds).
const GATE_WAIT: Duration = Duration::from_secs(5);

static NETWORKS: Mutex<Vec<Weak<dyn Live>>> = Mutex::new(Vec::new());

static RUNS: Mutex<Vec<Weak<RunDir>>> = Mutex::new(Vec::new());

fn live<T: ?Sized>(list: &Mutex<Vec<Weak<T>>>) -> Vec<Arc<T>> {
    let list = list.lock().unwrap_or_else(|e| e.into_inner());
    list.iter().filter_map(Weak::upgrade).collect()
}

fn add<T: ?Sized>(list: &Mutex<Vec<Weak<T>>>, item: Weak<T>) {
    let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
    list.retain(|w| w.strong_count() > 0);
    list.push(item);
}

/// Registers a network just made, until [`unregister_network`] (its teardown).
pub(crate) fn register_network<N: Live + 'static>(net: &Arc<N>) {
    let weak: Weak<dyn Live> = Arc::downgrade(net) as Weak<dyn Live>;
    add(&NETWORKS, weak);
}

/// Forgets a network torn down.
pub(crate) fn unregister_network<N: Live>(net: &N) {
    let mut nets = NETWORKS.lock().unwrap_or_else(|e| e.into_inner());
    nets.retain(|w| w.strong_count() > 0 && !std::ptr::addr_eq(w.as_ptr(), net));
}

/// Registers a run directory just claimed.
pub(super) fn register_run(run: &Arc<RunDir>) {
    add(&RUNS, Arc::downgrade(run));
}

/// Tears down every live network of this process, of every backend (QEMU VMs are killed,
/// namespace machines too), and removes its run directories: for a signal handler, which
/// should exit afterwards. No network creation starts after it began; it waits (briefly) for
/// those under way. Does not wait for locks held by running operations; those fail promptly
/// once their agents are killed.
pub fn cleanup_process_resources() {
    GATE.close(GATE_WAIT);
    for net in live(&NETWORKS) {
        let _ = net.teardown();
    }
    for run in live(&RUNS) {
        run.remove();
    }
}
