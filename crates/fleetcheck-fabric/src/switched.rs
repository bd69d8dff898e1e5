//! What the `netns` and `qemu` networks have in common: machines run by the agent (reached over
//! its channel, [`AgentConn`]) and plugged into one [`Switch`], with the same status rules,
//! boot and power-cut bookkeeping, pause and resume around the fault table, and the same
//! [`Network`] operations.
//!
//! A backend's network implements [`Switched`]: it holds a [`Net`] (the spec, the switch, the
//! machines — [`Machine`], with what only that backend keeps in [`Machine::own`] — and the
//! teardown flags) and says how its machines start ([`Switched::start`]), stop, are unplugged,
//! frozen and killed, and what else its teardown removes. Its public handle implements
//! [`Handle`]; [`Network`] is implemented once, here, for every handle.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{Installed, Network};
use crate::error::{
    BootError, ExecError, FaultError, PingError, ServiceError, ShutdownError, TeardownError,
};
use crate::faults::Faults;
use crate::host::conn::{self, AgentConn};
use crate::host::sweep::RunDir;
use crate::host::switch::Switch;
use crate::host::volatile::DiskError;
use crate::host::Live;
use crate::spawned::Spawned;
use crate::spec::{
    ExecOutput, ExecRequest, MachineSpec, MachineStatus, NetworkSpec, ServiceVersion,
};

/// A machine's status and, while it runs, its agent channel.
pub(crate) struct MachineState {
    pub status: MachineStatus,
    /// A boot is under way (the status is still the one before it).
    pub booting: bool,
    pub agent: Option<Arc<AgentConn>>,
}

/// One machine of a switched network; `X` is what only its backend keeps.
pub(crate) struct Machine<X> {
    pub spec: MachineSpec,
    /// Position in the spec: names its ports (`p<i>`) and files (`m<i>.*`), keys its faults.
    pub index: usize,
    /// The service versions installed now (its spec's, as replaced by `set_service`).
    pub services: Installed,
    pub state: Mutex<MachineState>,
    /// `m<i>.log` in the network's directory: the agent's and setup output (on qemu also the
    /// serial console).
    pub log: PathBuf,
    /// `m<i>.data`: the machine's disk (see [`Network::data_dir`]), kept across reboots.
    pub data: PathBuf,
    /// Its wall clock's offset from the host's, in seconds ([`Network::set_clock`]).
    pub clock: std::sync::atomic::AtomicI64,
    pub own: X,
}

impl<X> Machine<X> {
    /// Machine `index` of `spec`, off, its files in the network directory `dir`.
    pub(crate) fn new(spec: &MachineSpec, index: usize, dir: &Path, own: X) -> Self {
        Machine {
            spec: spec.clone(),
            index,
            services: Installed::new(spec.services.clone()),
            state: Mutex::new(MachineState {
                status: MachineStatus::Off,
                booting: false,
                agent: None,
            }),
            log: dir.join(format!("m{index}.log")),
            data: dir.join(format!("m{index}.data")),
            clock: std::sync::atomic::AtomicI64::new(0),
            own,
        }
    }

    /// The output of its agent so far (empty if there is none).
    pub(crate) fn read_log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// What every switched network owns; `X` is what its backend keeps per machine.
pub(crate) struct Net<X> {
    pub spec: NetworkSpec,
    /// `n<k>`: unique within the run.
    pub name: String,
    pub switch: Switch,
    pub machines: Vec<Machine<X>>,
    /// `<run directory>/n<k>`: the machines' files; removed with the network.
    pub dir: PathBuf,
    pub run: Arc<RunDir>,
    /// Set first thing by teardown; boots check it under the locks teardown takes next.
    pub torn_down: AtomicBool,
    /// Held for the whole of a teardown, so a second caller (a Ctrl-C handler racing a worker
    /// that is tearing down at the end of its case) returns only once everything is gone.
    teardown_done: Mutex<bool>,
}

impl<X> Net<X> {
    pub(crate) fn new(
        spec: &NetworkSpec,
        name: String,
        switch: Switch,
        machines: Vec<Machine<X>>,
        dir: PathBuf,
        run: &Arc<RunDir>,
    ) -> Self {
        Net {
            spec: spec.clone(),
            name,
            switch,
            machines,
            dir,
            run: run.clone(),
            torn_down: AtomicBool::new(false),
            teardown_done: Mutex::new(false),
        }
    }

    /// The handle's `Debug`: its type name, run, network name and size.
    pub(crate) fn debug(&self, f: &mut std::fmt::Formatter<'_>, handle: &str) -> std::fmt::Result {
        f.debug_struct(handle)
            .field("run", &self.run.run)
            .field("name", &self.name)
            .field("machines", &self.machines.len())
            .finish()
    }
}

/// How a boot failed, with the connection to close if one was made.
pub(crate) type BootFailure = (BootError, Option<Arc<AgentConn>>);

/// A network of agent machines on a switch: what a backend provides, and what it gets.
pub(crate) trait Switched: Send + Sync + Sized {
    /// What only this backend keeps per machine.
    type Own: Send + Sync;

    /// What runs a machine, for teardown's messages (`agent`, `qemu`).
    const RUNNER: &'static str;

    fn net(&self) -> &Net<Self::Own>;

    /// Starts machine `m` and brings it to `Ready`.
    fn start(&self, m: &Machine<Self::Own>) -> Result<Arc<AgentConn>, BootFailure>;

    /// Kills what runs machine `m` (a power cut) and reaps it; closes `conn`.
    fn stop(&self, m: &Machine<Self::Own>, conn: Option<Arc<AgentConn>>) -> io::Result<()>;

    /// After a stop: takes machine `m`'s port off the switch, where the stop does not.
    fn unplug(&self, m: &Machine<Self::Own>) -> io::Result<()>;

    /// Whether machine `m` can be paused at all (before anything changes).
    fn check_pausable(&self, _m: &Machine<Self::Own>) -> Result<(), FaultError> {
        Ok(())
    }

    /// Whether machine `m` can lose power with its unsynced writes (before anything changes).
    fn check_power_cut(&self, m: &Machine<Self::Own>) -> Result<(), FaultError> {
        if m.spec.lose_unsynced {
            Ok(())
        } else {
            Err(FaultError::NotVolatile {
                machine: m.spec.id.clone(),
            })
        }
    }

    /// After a power cut stopped machine `m`: its disk forgets what was not flushed, and the
    /// durable rest is what its next boot finds.
    fn lose_unsynced(&self, m: &Machine<Self::Own>) -> Result<(), FaultError>;

    /// Moves running machine `m`'s wall clock (`conn`: its agent) from `from` to `to` seconds
    /// off the host's.
    fn move_clock(
        &self,
        m: &Machine<Self::Own>,
        conn: &AgentConn,
        from: i64,
        to: i64,
    ) -> Result<(), FaultError>;

    /// After machine `m` lost power: its clock is the host's again at its next boot.
    fn clock_lost(&self, _m: &Machine<Self::Own>) -> io::Result<()> {
        Ok(())
    }

    /// Machine `id`'s agent, the machine running (not booting); else why not, for
    /// `operation`.
    fn agent_of_running(
        &self,
        m: &Machine<Self::Own>,
        operation: &'static str,
    ) -> Result<Arc<AgentConn>, FaultError> {
        let st = m.state.lock().unwrap_or_else(|e| e.into_inner());
        match (&st.agent, st.status, st.booting) {
            (Some(conn), MachineStatus::Running, false) => Ok(conn.clone()),
            _ => Err(FaultError::WrongStatus {
                machine: m.spec.id.clone(),
                status: st.status,
                operation,
            }),
        }
    }

    /// Sets or removes netem on running machine `m`'s link (`conn`: its agent).
    fn set_netem(
        &self,
        m: &Machine<Self::Own>,
        conn: &AgentConn,
        netem: Option<crate::Netem>,
    ) -> Result<(), FaultError>;

    /// [`Network::netem`]: the machine known and running, the numbers valid.
    fn netem(&self, id: &str, netem: Option<crate::Netem>) -> Result<(), FaultError> {
        let m = self
            .machine(id)
            .ok_or_else(|| FaultError::UnknownMachine { machine: id.into() })?;
        if let Some(n) = netem.filter(|n| !n.valid()) {
            return Err(FaultError::BadNetem { netem: n });
        }
        let conn = self.agent_of_running(m, "have its link changed")?;
        self.set_netem(m, &conn, netem)
    }

    /// [`Network::set_clock`]: the machine known, with a clock to move, running.
    fn set_clock(&self, id: &str, offset_s: i64) -> Result<(), FaultError> {
        use std::sync::atomic::Ordering;
        let m = self
            .machine(id)
            .ok_or_else(|| FaultError::UnknownMachine { machine: id.into() })?;
        if !m.spec.clock {
            return Err(FaultError::NoClock { machine: id.into() });
        }
        let conn = self.agent_of_running(m, "have its clock moved")?;
        self.move_clock(m, &conn, m.clock.load(Ordering::SeqCst), offset_s)?;
        m.clock.store(offset_s, Ordering::SeqCst);
        Ok(())
    }

    /// Corrupts a file of off machine `m`'s data directory ([`Network::corrupt`]). The
    /// default: in the directory where the host sees it.
    fn corrupt_off(
        &self,
        m: &Machine<Self::Own>,
        how: crate::Corruption,
        pick: u64,
    ) -> Result<Option<String>, FaultError> {
        corrupt_on_host(self.data_dir_on_host(&m.spec.id), &m.spec.id, how, pick)
    }

    /// Machine `m`'s disk fails with `error` from now on (`None`: works again).
    fn set_disk_error(
        &self,
        m: &Machine<Self::Own>,
        error: Option<DiskError>,
    ) -> Result<(), FaultError>;

    /// [`Network::disk_error`]: the machine known and with the layer, then its disk told.
    fn disk_error(&self, id: &str, error: Option<DiskError>) -> Result<(), FaultError> {
        let m = self
            .machine(id)
            .ok_or_else(|| FaultError::UnknownMachine { machine: id.into() })?;
        self.check_power_cut(m)?;
        self.set_disk_error(m, error)
    }

    /// Stops (`frozen`) or continues everything machine `m` runs; a failed stop leaves it
    /// running.
    fn hold(&self, m: &Machine<Self::Own>, frozen: bool) -> Result<(), FaultError>;

    /// Runs `req` through `conn`, machine `id`'s agent channel.
    fn exec_on(
        &self,
        id: &str,
        conn: &AgentConn,
        req: &ExecRequest,
    ) -> Result<ExecOutput, ExecError> {
        conn::exec(conn, id, req)
    }

    /// See [`Network::spawn`]: `m` is running, `conn` its agent's channel. The default: the
    /// agent starts it and relays its input and output ([`conn::spawn`]).
    fn spawn_in(
        &self,
        m: &Machine<Self::Own>,
        conn: &Arc<AgentConn>,
        command: &str,
        stderr_log: &str,
    ) -> Result<Spawned, ExecError> {
        let id = &m.spec.id;
        let dir = self.data_dir(id).ok_or_else(|| ExecError::UnknownMachine {
            machine: id.clone(),
        })?;
        let log = dir.join(stderr_log);
        conn::spawn(conn, id, command, &log.to_string_lossy())
    }

    /// Puts service set `next` in place for machine `m` (which is off).
    fn install(
        &self,
        m: &Machine<Self::Own>,
        next: &BTreeMap<String, ServiceVersion>,
    ) -> io::Result<()>;

    /// See [`Network::data_dir_on_host`].
    fn data_dir_on_host(&self, id: &str) -> Option<PathBuf>;

    /// Sends machine `m` a kill at once, without waiting (teardown kills all, then reaps).
    fn kill(&self, m: &Machine<Self::Own>);

    /// What else teardown removes once every machine is stopped and the switch is gone.
    fn remove_rest(&self, _failures: &mut Vec<(String, io::Error)>) {}

    fn machine(&self, id: &str) -> Option<&Machine<Self::Own>> {
        self.net().machines.iter().find(|m| m.spec.id == id)
    }

    /// The agent channel of a machine whose status passes `allowed`; else `Err(Err(()))` for
    /// an unknown machine, `Err(Ok(status))` for one in another status.
    fn agent(
        &self,
        id: &str,
        allowed: fn(MachineStatus) -> bool,
    ) -> Result<Arc<AgentConn>, Result<MachineStatus, ()>> {
        let m = self.machine(id).ok_or(Err(()))?;
        let st = m.state.lock().unwrap_or_else(|e| e.into_inner());
        match (&st.agent, st.status) {
            (Some(conn), status) if allowed(status) => Ok(conn.clone()),
            (_, status) => Err(Ok(status)),
        }
    }

    /// Applies `change` to the faults in force, through the switch's fault table.
    fn change_faults(
        &self,
        change: impl FnOnce(&mut Faults) -> Result<(), FaultError>,
    ) -> Result<(), FaultError> {
        let net = self.net();
        let ids: Vec<&str> = net.machines.iter().map(|m| m.spec.id.as_str()).collect();
        net.switch.change_faults(&ids, change)
    }

    /// Marks machine `index` paused on the switch (its port drops every frame) or not.
    fn mark_paused(&self, index: usize, paused: bool) -> Result<(), FaultError> {
        self.change_faults(|f| {
            if paused {
                f.paused.insert(index);
            } else {
                f.paused.remove(&index);
            }
            Ok(())
        })
    }

    /// Boots machine `m` if it may boot: [`Switched::start`], then running, or stopped and
    /// unplugged again on failure.
    fn boot_one(&self, m: &Machine<Self::Own>) -> Result<(), BootError> {
        {
            let mut st = m.state.lock().unwrap_or_else(|e| e.into_inner());
            if !st.status.can_boot() || st.booting {
                return Err(BootError::WrongStatus {
                    machine: m.spec.id.clone(),
                    status: if st.booting {
                        MachineStatus::Running
                    } else {
                        st.status
                    },
                });
            }
            st.booting = true;
        }
        let result = self.start(m);
        let mut st = m.state.lock().unwrap_or_else(|e| e.into_inner());
        st.booting = false;
        match result {
            Ok(conn) => {
                st.status = MachineStatus::Running;
                st.agent = Some(conn);
                Ok(())
            }
            Err((err, conn)) => {
                let _ = self.stop(m, conn);
                let _ = self.unplug(m);
                Err(err)
            }
        }
    }

    /// A power cut (shutdown and crash alike): stop, unplug, and a paused machine's next boot
    /// must answer again.
    fn power_off(&self, id: &str) -> Result<(), ShutdownError> {
        let m = self
            .machine(id)
            .ok_or_else(|| ShutdownError::UnknownMachine { machine: id.into() })?;
        let mut st = m.state.lock().unwrap_or_else(|e| e.into_inner());
        if !st.status.can_shutdown() {
            return Err(ShutdownError::WrongStatus {
                machine: id.into(),
                status: st.status,
            });
        }
        let conn = st.agent.take();
        let was_paused = st.status == MachineStatus::Paused;
        st.status = MachineStatus::Off;
        let killed = self.stop(m, conn);
        let mut link = self.unplug(m);
        m.clock.store(0, std::sync::atomic::Ordering::SeqCst);
        link = link.and(self.clock_lost(m));
        if was_paused {
            if let Err(e) = self.mark_paused(m.index, false) {
                link = link.and(Err(io::Error::other(e)));
            }
        }
        killed.map_err(|source| ShutdownError::Kill {
            machine: id.into(),
            source,
        })?;
        link.map_err(|source| ShutdownError::Link {
            machine: id.into(),
            source,
        })
    }

    /// [`Network::power_cut`]: checks every machine first (known, then with the layer, then
    /// running or paused), kills them all, then powers each off and lets each disk lose what
    /// it had not flushed.
    fn power_cut(&self, ids: &[&str]) -> Result<(), FaultError> {
        let mut cut: Vec<&Machine<Self::Own>> = Vec::new();
        for id in ids {
            let m = self.machine(id).ok_or_else(|| FaultError::UnknownMachine {
                machine: (*id).into(),
            })?;
            if !cut.iter().any(|c| c.index == m.index) {
                cut.push(m);
            }
        }
        for m in &cut {
            self.check_power_cut(m)?;
        }
        for m in &cut {
            let st = m.state.lock().unwrap_or_else(|e| e.into_inner());
            if !st.status.can_shutdown() || st.booting {
                return Err(FaultError::WrongStatus {
                    machine: m.spec.id.clone(),
                    status: st.status,
                    operation: "lose power",
                });
            }
        }
        // All lose power at once: none runs on while another is stopped.
        for m in &cut {
            self.kill(m);
        }
        let mut result = Ok(());
        for m in &cut {
            if let Err(source) = self.power_off(&m.spec.id) {
                result = result.and(Err(FaultError::PowerOff {
                    machine: m.spec.id.clone(),
                    source,
                }));
            }
        }
        for m in &cut {
            result = result.and(self.lose_unsynced(m));
        }
        result
    }

    /// Pause (`frozen`) or resume machine `id`. A paused machine's port also drops every frame
    /// (see `host::nft`): its stopped processes cannot answer, but a network stack could.
    fn freeze(&self, id: &str, frozen: bool) -> Result<(), FaultError> {
        let m = self
            .machine(id)
            .ok_or_else(|| FaultError::UnknownMachine { machine: id.into() })?;
        let (allowed, operation, to): (fn(MachineStatus) -> bool, _, _) = if frozen {
            (MachineStatus::can_pause, "pause", MachineStatus::Paused)
        } else {
            (MachineStatus::can_resume, "resume", MachineStatus::Running)
        };
        // Held throughout, so a shutdown cannot interleave.
        let mut st = m.state.lock().unwrap_or_else(|e| e.into_inner());
        if !allowed(st.status) || st.booting {
            return Err(FaultError::WrongStatus {
                machine: id.into(),
                status: st.status,
                operation,
            });
        }
        self.check_pausable(m)?;
        if frozen {
            // Silence the port first, so nothing more leaves a half-stopped machine.
            self.mark_paused(m.index, true)?;
            if let Err(e) = self.hold(m, true) {
                let _ = self.mark_paused(m.index, false);
                return Err(e);
            }
        } else {
            self.hold(m, false)?;
            self.mark_paused(m.index, false)?;
        }
        st.status = to;
        Ok(())
    }

    /// Removes everything; idempotent and callable from any thread (signal clean-up). Kills
    /// every machine before stopping any, so they go down together; does not wait for a
    /// machine's state lock (a boot may hold it; the kill makes that boot fail promptly).
    fn teardown(&self) -> Result<(), TeardownError> {
        let net = self.net();
        let mut done = net.teardown_done.lock().unwrap_or_else(|e| e.into_inner());
        if *done {
            return Ok(());
        }
        *done = true;
        net.torn_down.store(true, Ordering::SeqCst);
        let mut failures: Vec<(String, io::Error)> = Vec::new();
        for m in &net.machines {
            self.kill(m);
        }
        for m in &net.machines {
            let conn = m.state.try_lock().ok().and_then(|mut st| {
                st.status = MachineStatus::Off;
                st.agent.take()
            });
            if let Err(e) = self.stop(m, conn) {
                if e.raw_os_error() != Some(libc::ESRCH) {
                    failures.push((format!("{} of machine {}", Self::RUNNER, m.spec.id), e));
                }
            }
        }
        // Deleting namespaces deletes their links: far faster than deleting ports one by one.
        if let Err(failure) = net.switch.remove() {
            failures.push(failure);
        }
        self.remove_rest(&mut failures);
        let _ = fs::remove_dir_all(&net.dir);
        crate::host::unregister_network(self);
        let more = failures.len().saturating_sub(1);
        match failures.into_iter().next() {
            None => Ok(()),
            Some((what, source)) => Err(TeardownError { what, more, source }),
        }
    }

    /// Machine `id`'s data directory, made if missing.
    fn data_dir(&self, id: &str) -> Option<PathBuf> {
        let m = self.machine(id)?;
        fs::create_dir_all(&m.data).ok()?;
        Some(m.data.clone())
    }
}

impl<S: Switched> Live for S {
    fn teardown(&self) -> Result<(), TeardownError> {
        Switched::teardown(self)
    }
}

/// The public handle of a switched network.
pub(crate) trait Handle: Send + Sync {
    type Shared: Switched;
    fn shared(&self) -> &Self::Shared;
}

impl<H: Handle> Network for H {
    fn spec(&self) -> &NetworkSpec {
        &self.shared().net().spec
    }

    fn status(&self, id: &str) -> Option<MachineStatus> {
        let m = self.shared().machine(id)?;
        let st = m.state.lock().unwrap_or_else(|e| e.into_inner());
        Some(st.status)
    }

    fn boot(&self, ids: &[&str]) -> Vec<Result<(), BootError>> {
        let net = self.shared();
        crate::backend::boot_in_parallel(ids, |id| {
            let m = net
                .machine(id)
                .ok_or_else(|| BootError::UnknownMachine { machine: id.into() })?;
            net.boot_one(m)
        })
    }

    fn shutdown(&self, id: &str) -> Result<(), ShutdownError> {
        self.shared().power_off(id)
    }

    fn crash(&self, id: &str) -> Result<(), ShutdownError> {
        self.shared().power_off(id)
    }

    fn power_cut(&self, ids: &[&str]) -> Result<(), FaultError> {
        self.shared().power_cut(ids)
    }

    fn disk_error(&self, id: &str, error: Option<DiskError>) -> Result<(), FaultError> {
        self.shared().disk_error(id, error)
    }

    fn set_clock(&self, id: &str, offset_s: i64) -> Result<(), FaultError> {
        self.shared().set_clock(id, offset_s)
    }

    fn netem(&self, id: &str, netem: Option<crate::Netem>) -> Result<(), FaultError> {
        self.shared().netem(id, netem)
    }

    fn corrupt(
        &self,
        id: &str,
        how: crate::Corruption,
        pick: u64,
    ) -> Result<Option<String>, FaultError> {
        crate::backend::check_off(self, id, "have its data corrupted")?;
        let m = self
            .shared()
            .machine(id)
            .ok_or_else(|| FaultError::UnknownMachine { machine: id.into() })?;
        self.shared().corrupt_off(m, how, pick)
    }

    fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecOutput, ExecError> {
        let machine = || id.to_string();
        if req.argv.is_empty() {
            return Err(ExecError::EmptyCommand { machine: machine() });
        }
        let conn = self
            .shared()
            .agent(id, MachineStatus::can_exec)
            .map_err(|e| match e {
                Err(()) => ExecError::UnknownMachine { machine: machine() },
                Ok(status) => ExecError::WrongStatus {
                    machine: machine(),
                    status,
                },
            })?;
        self.shared().exec_on(id, &conn, req)
    }

    fn spawn(&self, id: &str, command: &str, stderr_log: &str) -> Result<Spawned, ExecError> {
        let machine = || id.to_string();
        let conn = self
            .shared()
            .agent(id, MachineStatus::can_exec)
            .map_err(|e| match e {
                Err(()) => ExecError::UnknownMachine { machine: machine() },
                Ok(status) => ExecError::WrongStatus {
                    machine: machine(),
                    status,
                },
            })?;
        let m = self
            .shared()
            .machine(id)
            .ok_or_else(|| ExecError::UnknownMachine { machine: machine() })?;
        self.shared().spawn_in(m, &conn, command, stderr_log)
    }

    fn ping(&self, from: &str, to: Ipv4Addr, timeout: Duration) -> Result<bool, PingError> {
        let running = |s| s == MachineStatus::Running;
        let conn = match self.shared().agent(from, running) {
            Ok(conn) => conn,
            Err(Err(())) => {
                return Err(PingError::UnknownMachine {
                    machine: from.into(),
                })
            }
            // A machine that is off gets no reply; a paused one sends nothing.
            Err(Ok(_)) => return Ok(false),
        };
        conn::ping(&conn, from, to, timeout)
    }

    fn pause(&self, id: &str) -> Result<(), FaultError> {
        self.shared().freeze(id, true)
    }

    fn resume(&self, id: &str) -> Result<(), FaultError> {
        self.shared().freeze(id, false)
    }

    fn partition(&self, groups: &[Vec<String>]) -> Result<(), FaultError> {
        let spec = &self.shared().net().spec;
        self.shared().change_faults(|f| f.partition(spec, groups))
    }

    fn block(&self, from: &str, to: &str) -> Result<(), FaultError> {
        let spec = &self.shared().net().spec;
        self.shared().change_faults(|f| f.block(spec, from, to))
    }

    fn loss(&self, id: &str, percent: u8) -> Result<(), FaultError> {
        let spec = &self.shared().net().spec;
        self.shared()
            .change_faults(|f| f.set_loss(spec, id, percent))
    }

    fn heal(&self) -> Result<(), FaultError> {
        self.shared().change_faults(|f| {
            f.heal();
            Ok(())
        })
    }

    fn logs(&self, id: &str) -> String {
        self.shared()
            .machine(id)
            .map(Machine::read_log)
            .unwrap_or_default()
    }

    fn data_dir(&self, id: &str) -> Option<PathBuf> {
        self.shared().data_dir(id)
    }

    fn data_dir_on_host(&self, id: &str) -> Option<PathBuf> {
        self.shared().data_dir_on_host(id)
    }

    fn services(&self, id: &str) -> Option<BTreeMap<String, ServiceVersion>> {
        Some(self.shared().machine(id)?.services.get())
    }

    fn set_service(
        &self,
        id: &str,
        service: &str,
        version: &ServiceVersion,
    ) -> Result<(), ServiceError> {
        let net = self.shared();
        let m = net
            .machine(id)
            .ok_or_else(|| ServiceError::UnknownMachine { machine: id.into() })?;
        // The state lock keeps the machine off while its programs change.
        let st = m.state.lock().unwrap_or_else(|e| e.into_inner());
        m.services
            .set(id, (st.status, st.booting), service, version, |next| {
                net.install(m, next)
            })
    }

    fn teardown(self: Box<Self>) -> Result<(), TeardownError> {
        Switched::teardown(self.shared())
    }
}

/// Corrupts a file of machine `id`'s data directory `dir` as the host sees it (`None`: it
/// does not, refused).
pub(crate) fn corrupt_on_host(
    dir: Option<PathBuf>,
    id: &str,
    how: crate::Corruption,
    pick: u64,
) -> Result<Option<String>, FaultError> {
    let dir = dir.ok_or_else(|| FaultError::NoCorruption { machine: id.into() })?;
    crate::corrupt::corrupt_in(&dir, how, pick).map_err(|source| FaultError::Corrupt {
        machine: id.into(),
        source,
    })
}
