//! The two traits every backend implements.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::error::{BootError, CreateError, ExecError, PingError, ShutdownError, TeardownError};
use crate::spec::{ExecOutput, ExecRequest, MachineStatus, NetworkSpec};

/// A way to build networks of machines (in memory, Linux namespaces, VMs, ...).
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Short name, e.g. `"fake"` or `"netns"`.
    fn name(&self) -> &'static str;
    /// Builds the network with every machine `Off`.
    fn create(&self, spec: &NetworkSpec) -> Result<Box<dyn Network>, CreateError>;
}

/// A built network. All methods take `&self` and may be called from several threads.
pub trait Network: Send + Sync {
    /// The spec it was built from.
    fn spec(&self) -> &NetworkSpec;
    /// Current status of machine `id`, `None` if there is no such machine.
    fn status(&self, id: &str) -> Option<MachineStatus>;
    /// Boots the machines in parallel; result `i` belongs to `ids[i]` and arrives when that
    /// machine's agent reported ready (setup commands done) or failed. A machine whose boot
    /// failed is `Off` again.
    fn boot(&self, ids: &[&str]) -> Vec<Result<(), BootError>>;
    /// Power cut: every process of the machine dies at once, its link goes down.
    fn shutdown(&self, id: &str) -> Result<(), ShutdownError>;
    /// A crash; on `netns` the same as [`Network::shutdown`].
    fn crash(&self, id: &str) -> Result<(), ShutdownError>;
    /// Runs a command inside a running machine and waits for it.
    fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecOutput, ExecError>;
    /// Sends ICMP echo requests from inside `from` to `to` until a reply arrives (`true`) or
    /// `timeout` passes (`false`). A machine that is `Off` gets no reply: `Ok(false)`.
    fn ping(&self, from: &str, to: Ipv4Addr, timeout: Duration) -> Result<bool, PingError>;
    /// Captured agent and setup command output of machine `id`, over all its boots.
    fn logs(&self, id: &str) -> String;
    /// Removes everything the network consists of. Dropping the network does the same on a
    /// best-effort basis.
    fn teardown(self: Box<Self>) -> Result<(), TeardownError>;
}
