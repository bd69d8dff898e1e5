//! The public scenario API: what the harness needs from a scenario to run, shrink, replay,
//! write the report folder (steps, history, machine logs, timeline), JUnit, export a Rust test,
//! drive `up` and label statistics.
//!
//! A scenario implements the typed [`Scenario`] (its model, its system, its choices); every
//! [`Scenario`] is a [`Registered`], the object-safe face the command line holds in a
//! [`Registry`] (`Box<dyn Registered>`), looked up by name (`run NAME`, a replay file's
//! scenario). A scenario defined in another crate is registered the same way as ping and kv:
//! `fleetcheck_harness::main(registry)`.

use std::path::Path;
use std::sync::Arc;

use fleetcheck_engine::{Config, Model, ReplayFile};
use fleetcheck_fabric::Backend;
use fleetcheck_scenarios::config::ScenarioConfig;
use serde_json::Value;

pub use fleetcheck_scenarios::kv::Program;

use crate::cli::{ExportArgs, ReplayArgs, RunArgs};
use crate::exit::Fail;
use crate::report::capture::Inspect;
use crate::report::timeline::Draw;
use crate::run::{OpenedReplay, RunSetup};

/// A host program a system runs, and whether this configuration needs it from the host's
/// `PATH` (a service whose versions the configuration lists does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeededProgram {
    /// The program.
    pub program: Program,
    /// Whether the host must have it.
    pub needed: bool,
}

/// What an exported Rust test of a scenario writes to build its model and system from
/// `config` (a `ScenarioConfig`) and `backend()` (an `Arc<dyn Backend>`), and to parse `CASE`
/// into `file` (a `ReplayFile` of the model).
#[derive(Debug, Clone)]
pub struct ExportCode {
    /// `use` lines.
    pub imports: String,
    /// Statements that bind `model`, `system` and `file`.
    pub build: String,
}

/// A scenario: a model, the system that runs it on a backend, and what the harness asks of it.
pub trait Scenario: Send + Sync + 'static {
    /// The model; its [`Draw`] draws the timeline.
    type Model: Draw;
    /// The system under test; its [`Inspect`] gives the report its machines and history.
    type System: Inspect<Self::Model>;

    /// Its name on the command line and in replay files.
    fn name(&self) -> &'static str;
    /// One line for `list`.
    fn about(&self) -> &'static str;
    /// The systems under test to choose from with `--system`, the default first; none when
    /// the scenario has no choice.
    fn systems(&self) -> &'static [&'static str] {
        &[]
    }
    /// The model under `config`, for `system` (one of [`Scenario::systems`], or `None`).
    fn model(&self, config: &ScenarioConfig, system: Option<&str>) -> Self::Model;
    /// The system under test on `backend`.
    fn system(
        &self,
        config: &ScenarioConfig,
        system: Option<&str>,
        backend: Arc<dyn Backend>,
    ) -> Self::System;
    /// Whether `system` runs on the backend's machines (false: in this process's memory; its
    /// runs are reported "on memory", its exported test uses the fake backend, `up` refuses).
    fn on_machines(&self, _system: Option<&str>) -> bool {
        true
    }
    /// The host programs `system` runs, for the preflight check and `doctor`.
    fn programs(&self, _system: Option<&str>, _config: &ScenarioConfig) -> Vec<NeededProgram> {
        Vec::new()
    }
    /// Cases of `system` to run at once when `--workers` is not given (and the backend sets
    /// no limit of its own). The default: one per CPU.
    fn default_workers(&self, _system: Option<&str>) -> usize {
        crate::run::per_cpu(1)
    }
    /// Refuses, before anything is built, a case that cannot fit `backend` (memory floors,
    /// the host's memory on qemu). The default checks the configuration's machine domains.
    fn check_fits(
        &self,
        config: &ScenarioConfig,
        backend: &dyn Backend,
        _system: Option<&str>,
    ) -> Result<(), Fail> {
        crate::run::check_machines_fit(config, backend)
    }
    /// The machines of a state (with their parameters), for the JSON of a counterexample.
    fn machines(&self, state: &<Self::Model as Model>::State) -> Value;
    /// How an exported Rust test builds this scenario; `None`: export is not offered.
    fn export(&self, _system: Option<&str>) -> Option<ExportCode> {
        None
    }
}

/// A scenario with its types erased: what the command line holds and calls.
pub trait Registered: Send + Sync {
    /// See [`Scenario::name`].
    fn name(&self) -> &'static str;
    /// See [`Scenario::about`].
    fn about(&self) -> &'static str;
    /// See [`Scenario::systems`].
    fn systems(&self) -> &'static [&'static str];
    /// See [`Scenario::on_machines`].
    fn on_machines(&self, system: Option<&str>) -> bool;
    /// See [`Scenario::programs`].
    fn programs(&self, system: Option<&str>, config: &ScenarioConfig) -> Vec<NeededProgram>;
    /// See [`Scenario::default_workers`].
    fn default_workers(&self, system: Option<&str>) -> usize;
    /// See [`Scenario::check_fits`].
    fn check_fits(
        &self,
        config: &ScenarioConfig,
        backend: &dyn Backend,
        system: Option<&str>,
    ) -> Result<(), Fail>;
    /// Runs the search of `fleetcheck run` and reports it.
    fn search(&self, args: &RunArgs, config: &Config, setup: RunSetup) -> Result<u8, Fail>;
    /// Whether the replay file's case is one the model could have generated.
    fn check_replay(&self, r: &OpenedReplay) -> Result<(), String>;
    /// `fleetcheck replay`.
    fn replay(&self, r: &OpenedReplay, args: &ReplayArgs) -> Result<u8, Fail>;
    /// `fleetcheck up --replay`.
    fn up(&self, r: &OpenedReplay, file: &Path) -> Result<u8, Fail>;
    /// `fleetcheck export --rust`: the test's source.
    fn export(&self, r: &OpenedReplay, args: &ExportArgs) -> Result<String, Fail>;
}

/// The scenarios a command line knows.
pub type Registry = Vec<Box<dyn Registered>>;

/// The entry named `name`, or a usage error listing the registry.
pub fn find<'r>(
    registry: &'r [Box<dyn Registered>],
    name: &str,
) -> Result<&'r dyn Registered, Fail> {
    registry
        .iter()
        .find(|s| s.name() == name)
        .map(|s| s.as_ref())
        .ok_or_else(|| {
            let names: Vec<&str> = registry.iter().map(|s| s.name()).collect();
            Fail::usage(anyhow::anyhow!(
                "unknown scenario `{name}`: choose one of {}",
                names.join(", ")
            ))
        })
}

fn parse<T: Scenario>(r: &OpenedReplay) -> Result<ReplayFile<T::Model>, String> {
    ReplayFile::<T::Model>::from_json(&r.text, &r.scenario).map_err(|e| e.to_string())
}

impl<T: Scenario> Registered for T {
    fn name(&self) -> &'static str {
        Scenario::name(self)
    }
    fn about(&self) -> &'static str {
        Scenario::about(self)
    }
    fn systems(&self) -> &'static [&'static str] {
        Scenario::systems(self)
    }
    fn on_machines(&self, system: Option<&str>) -> bool {
        Scenario::on_machines(self, system)
    }
    fn programs(&self, system: Option<&str>, config: &ScenarioConfig) -> Vec<NeededProgram> {
        Scenario::programs(self, system, config)
    }
    fn default_workers(&self, system: Option<&str>) -> usize {
        Scenario::default_workers(self, system)
    }
    fn check_fits(
        &self,
        config: &ScenarioConfig,
        backend: &dyn Backend,
        system: Option<&str>,
    ) -> Result<(), Fail> {
        Scenario::check_fits(self, config, backend, system)
    }
    fn search(&self, args: &RunArgs, config: &Config, setup: RunSetup) -> Result<u8, Fail> {
        let system = setup.system.as_deref();
        let model = self.model(&setup.config, system);
        let sut = self.system(&setup.config, system, setup.backend.clone());
        crate::run::search(self, &model, &sut, args, config, &setup.on, setup.context)
    }
    fn check_replay(&self, r: &OpenedReplay) -> Result<(), String> {
        let file = parse::<T>(r)?;
        file.case
            .check(&self.model(&r.config, r.system.as_deref()))
            .map_err(|e| e.to_string())
    }
    fn replay(&self, r: &OpenedReplay, args: &ReplayArgs) -> Result<u8, Fail> {
        let file = parse::<T>(r).map_err(|e| OpenedReplay::bad(&args.file, &e))?;
        let system = r.system.as_deref();
        let model = self.model(&r.config, system);
        let sut = self.system(&r.config, system, r.backend.clone());
        crate::run::replay_case(self, &model, &sut, &file, args, &r.on)
    }
    fn up(&self, r: &OpenedReplay, file: &Path) -> Result<u8, Fail> {
        let case = parse::<T>(r).map_err(|e| OpenedReplay::bad(file, &e))?;
        let system = r.system.as_deref();
        if !self.on_machines(system) {
            return Err(Fail::usage(anyhow::anyhow!(
                "{}: the {} system runs in memory and has no machines to explore",
                file.display(),
                system.unwrap_or_default()
            )));
        }
        let model = self.model(&r.config, system);
        let sut = self.system(&r.config, system, r.backend.clone());
        crate::up::up_case(&model, &sut, &case.case, &case.reason)
    }
    fn export(&self, r: &OpenedReplay, args: &ExportArgs) -> Result<String, Fail> {
        let file = parse::<T>(r).map_err(|e| OpenedReplay::bad(&args.file, &e))?;
        let code = Scenario::export(self, r.system.as_deref()).ok_or_else(|| {
            Fail::usage(anyhow::anyhow!(
                "scenario `{}` offers no Rust export",
                Scenario::name(self)
            ))
        })?;
        let model = self.model(&r.config, r.system.as_deref());
        crate::export::rust_test(
            &model,
            &file,
            r,
            args,
            &code,
            self.on_machines(r.system.as_deref()),
        )
    }
}
