//! The systems under test of this example: a scenario file's store, read from
//! `examples/scenarios/`, with the kv workload's model. See `tests/properties.rs`.

use std::path::Path;

use fleetcheck_harness::testing;
use fleetcheck_scenarios::config::ScenarioConfig;
use fleetcheck_scenarios::file::store::FileStore;
use fleetcheck_scenarios::file::versioned_service;
use fleetcheck_scenarios::kv::{KvModel, KvSystem};

/// The model and system of the scenario file `examples/scenarios/<name>`, on the backend of
/// `FLEETCHECK_BACKEND` (netns by default).
pub fn scenario_file(name: &str) -> (KvModel, KvSystem<FileStore>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name);
    let config = ScenarioConfig::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let model = KvModel::for_service(&config, versioned_service(&config).as_deref());
    let system = KvSystem::new(FileStore::new(
        testing::backend(),
        &config,
        model.service.clone(),
    ));
    (model, system)
}
