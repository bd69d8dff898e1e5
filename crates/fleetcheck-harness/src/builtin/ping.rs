//! The built-in ping scenario.

use crate::report::capture::RecordedHistory;
use crate::report::timeline::*;
use crate::scenario::{ExportCode, Scenario};
use fleetcheck_engine::{Case, Trace};
use fleetcheck_fabric::Backend;
use fleetcheck_scenarios::config::ScenarioConfig;
use fleetcheck_scenarios::ping::PingState;
use serde_json::Value;
use std::sync::Arc;

use fleetcheck_fabric::Network;
use fleetcheck_scenarios::ping::{PingCmd, PingModel, PingSystem};

use crate::report::capture::Inspect;

impl Draw for PingModel {
    fn timeline(
        &self,
        case: &Case<Self>,
        trace: &Trace<Self>,
        _history: Option<&RecordedHistory>,
    ) -> Timeline {
        let n = case.initial.machines.len();
        let machines = case.initial.machines.iter();
        let mut t = cluster_timeline(
            self,
            format!("ping: {n} machine{}", if n == 1 { "" } else { "s" }),
            trace,
            machines.map(|m| (m.id.clone(), m.ip.to_string())),
            Start::Down,
            |_, step, _| {
                let output = step.output.as_deref().unwrap_or("(no output)");
                match &step.command {
                    // The model assumes a boot succeeds; the output says whether it did.
                    PingCmd::Cluster(c) => cluster_drawn(c, &step.state_after, output == "ok"),
                    PingCmd::Ping { from, to } => (
                        Effect::Nothing,
                        Some((from.clone(), format!("ping {to}: {output}"))),
                    ),
                }
            },
        );
        // A failing ping concerns its target too.
        if let Some(f) = t.failing.as_mut() {
            if let Some(PingCmd::Ping { to, .. }) = trace.steps.get(f.step).map(|s| &s.command) {
                f.lanes.push(to.clone());
            }
        }
        t
    }
}

impl Inspect<PingModel> for PingSystem {
    fn network<'a>(&self, instance: &'a Box<dyn Network>) -> Option<&'a dyn Network> {
        Some(instance.as_ref())
    }
}

/// The ping scenario: machines that boot, pause, partition and ping each other.
#[derive(Debug, Clone, Copy)]
pub struct Ping;

impl Scenario for Ping {
    type Model = PingModel;
    type System = PingSystem;

    fn name(&self) -> &'static str {
        "ping"
    }
    fn about(&self) -> &'static str {
        "machines boot, shut down, pause, partition, upgrade and ping each other"
    }
    fn model(&self, config: &ScenarioConfig, _system: Option<&str>) -> PingModel {
        PingModel::new(config.clone())
    }
    fn system(
        &self,
        config: &ScenarioConfig,
        _system: Option<&str>,
        backend: Arc<dyn Backend>,
    ) -> PingSystem {
        PingSystem::new(backend, config)
    }
    fn default_workers(&self, _system: Option<&str>) -> usize {
        PingSystem::default_workers()
    }
    fn machines(&self, state: &PingState) -> Value {
        serde_json::to_value(&state.machines).unwrap_or(Value::Null)
    }
    fn export(&self, _system: Option<&str>) -> Option<ExportCode> {
        Some(ExportCode {
            imports: "use fleetcheck_scenarios::ping::{PingModel, PingSystem};".into(),
            build: "    let model = PingModel::new(config.clone());\n    \
                    let system = PingSystem::new(backend(), &config);\n    \
                    let file = ReplayFile::<PingModel>::from_json(CASE, \"ping\").expect(\"the case parses\");"
                .into(),
        })
    }
}
