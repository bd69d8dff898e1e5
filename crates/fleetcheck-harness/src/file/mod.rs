//! Scenario files as scenarios: `fleetcheck run FILE.toml` (and a replay file whose context
//! holds one) gets a [`FileScenario`], registered like any other, over the workload's model
//! and the file's store ([`fleetcheck_scenarios::file`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::anyhow;
use fleetcheck_fabric::Backend;
use fleetcheck_scenarios::config::ScenarioConfig;
use fleetcheck_scenarios::file::store::FileStore;
use fleetcheck_scenarios::file::versioned_service;
use fleetcheck_scenarios::kv::{KvModel, KvState, KvSystem};
use serde_json::Value;

use crate::exit::Fail;
use crate::scenario::{ExportCode, Registered, Scenario};

mod new;
pub use new::write_skeleton;

/// A scenario file, read and validated.
#[derive(Debug, Clone)]
pub struct FileScenario {
    name: &'static str,
    about: &'static str,
}

/// Whether `run`'s scenario argument names a scenario file (`….toml`, or a path) rather than
/// a registered scenario.
pub fn is_file(scenario: &str) -> bool {
    scenario.ends_with(".toml") || scenario.contains('/')
}

/// The scenario of a scenario file's configuration (`[scenario]` present), for as long as the
/// process runs: its name and about line are the file's.
pub fn scenario_of(config: &ScenarioConfig) -> Option<&'static dyn Registered> {
    let section = config.scenario.as_ref()?;
    let scenario = FileScenario {
        name: Box::leak(section.name.clone().into_boxed_str()),
        about: Box::leak(
            if section.about.is_empty() {
                format!("the scenario file {}", section.name)
            } else {
                section.about.clone()
            }
            .into_boxed_str(),
        ),
    };
    Some(Box::leak(Box::new(scenario)))
}

/// Reads the scenario file `path` with `sets` in place: its scenario and configuration.
pub fn load(
    path: &Path,
    sets: &[String],
) -> Result<(&'static dyn Registered, ScenarioConfig), Fail> {
    let config = ScenarioConfig::from_file_with(path, sets).map_err(Fail::usage)?;
    let scenario = scenario_of(&config).ok_or_else(|| {
        Fail::usage(anyhow!(
            "{} is not a scenario file: it has no [scenario] section (a configuration file goes \
             with --config)",
            path.display()
        ))
    })?;
    Ok((scenario, config))
}

impl Scenario for FileScenario {
    type Model = KvModel;
    type System = KvSystem<FileStore>;

    fn name(&self) -> &'static str {
        self.name
    }
    fn about(&self) -> &'static str {
        self.about
    }
    fn model(&self, config: &ScenarioConfig, _system: Option<&str>) -> KvModel {
        KvModel::for_service(config, versioned_service(config).as_deref())
    }
    fn system(
        &self,
        config: &ScenarioConfig,
        _system: Option<&str>,
        backend: Arc<dyn Backend>,
    ) -> KvSystem<FileStore> {
        let model = self.model(config, None);
        KvSystem::new(FileStore::new(backend, config, model.service))
    }
    fn default_workers(&self, _system: Option<&str>) -> usize {
        crate::run::per_cpu(2)
    }
    fn check_fits(
        &self,
        config: &ScenarioConfig,
        backend: &dyn Backend,
        _system: Option<&str>,
    ) -> Result<(), Fail> {
        if backend.scratch_dir().is_none() {
            if let Some((name, _)) = config.services.iter().find(|(_, s)| s.prepare.is_some()) {
                return Err(Fail::usage(anyhow!(
                    "services.{name}.prepare needs machines that see the host's files, which \
                     the {} backend's do not (use netns)",
                    backend.name()
                )));
            }
        }
        crate::builtin::kv::check_nodes_fit(config, backend)
    }
    fn machines(&self, state: &KvState) -> Value {
        serde_json::to_value(&state.machines).unwrap_or(Value::Null)
    }
    fn export(&self, _system: Option<&str>) -> Option<ExportCode> {
        Some(ExportCode {
            imports: "use fleetcheck_scenarios::file::{store::FileStore, versioned_service};\n\
                      use fleetcheck_scenarios::kv::{KvModel, KvSystem};"
                .into(),
            build: format!(
                "    let model = KvModel::for_service(&config, versioned_service(&config).as_deref());\n    \
                 let system = KvSystem::new(FileStore::new(backend(), &config, model.service.clone()));\n    \
                 let file = ReplayFile::<KvModel>::from_json(CASE, {:?}).expect(\"the case parses\");",
                self.name
            ),
        })
    }
}
