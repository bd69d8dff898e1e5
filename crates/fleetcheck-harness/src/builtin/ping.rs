//! The built-in ping scenario.

use crate::report::capture::RecordedHistory;
use crate::report::timeline::*;
use crate::scenario::{ExportCode, Scenario};
use fleetcheck_engine::{Case, Model, Trace};
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
        let mut t = common(
            self,
            format!("ping: {n} machine{}", if n == 1 { "" } else { "s" }),
            trace,
        );
        let ids: Vec<String> = case.initial.machines.iter().map(|m| m.id.clone()).collect();
        for m in &case.initial.machines {
            t.lanes.push(Lane {
                id: m.id.clone(),
                label: format!("{} {}", m.id, m.ip),
                kind: "machine",
            });
        }
        t.lanes.push(Lane {
            id: NETWORK_LANE.into(),
            label: "network".into(),
            kind: "network",
        });
        let mut states = States::new(ids.iter().map(|id| (id.clone(), "down")));
        let mut bands = Bands::default();
        for (i, step) in trace.steps.iter().enumerate() {
            let (from, to) = (ms(step.started), ms(step.started + step.elapsed));
            let failing = t.failing.as_ref().is_some_and(|f| f.step == i);
            let output = step.output.clone().unwrap_or_else(|| "(no output)".into());
            let describe = self.describe_command(&step.command);
            let (lane, label) = match &step.command {
                PingCmd::Boot { machine } => (machine.clone(), "boot".to_string()),
                PingCmd::Shutdown { machine } => (machine.clone(), "shutdown".into()),
                PingCmd::Ping { from: a, to: b } => (a.clone(), format!("ping {b}: {output}")),
                PingCmd::Pause { machine } => (machine.clone(), "pause".into()),
                PingCmd::Resume { machine } => (machine.clone(), "resume".into()),
                PingCmd::Upgrade {
                    machine,
                    service,
                    version,
                } => (machine.clone(), format!("upgrade {service} to {version}")),
                PingCmd::Partition { .. } | PingCmd::Block { .. } | PingCmd::Heal => {
                    (NETWORK_LANE.to_string(), describe.to_lowercase())
                }
            };
            t.bars.push(Bar {
                lane: lane.clone(),
                from,
                to,
                label,
                outcome: outcome_of(failing),
                step: i,
                failing,
                detail: format!("step {}: {describe} -> {output}", i + 1),
            });
            if failing {
                if let Some(f) = t.failing.as_mut() {
                    f.lanes.push(lane);
                    if let PingCmd::Ping { to: b, .. } = &step.command {
                        f.lanes.push(b.clone());
                    }
                }
            }
            match &step.command {
                PingCmd::Boot { machine } => {
                    states.set(machine, "booting", from);
                    // The model assumes a boot succeeds; the output says whether it did.
                    let up = step.output.as_deref() == Some("ok");
                    states.set(machine, if up { "up" } else { "down" }, to);
                }
                PingCmd::Shutdown { machine } => {
                    states.set(machine, "down", to);
                    bands.close(|k| k != format!("pause {machine}"), to);
                }
                PingCmd::Pause { machine } => bands.open(
                    format!("pause {machine}"),
                    Band {
                        lanes: vec![machine.clone()],
                        from,
                        to,
                        kind: "pause",
                        label: "paused".into(),
                    },
                ),
                PingCmd::Resume { machine } => {
                    bands.close(|k| k != format!("pause {machine}"), from)
                }
                PingCmd::Partition { groups } => bands.open(
                    "cut".into(),
                    Band {
                        lanes: ids.clone(),
                        from,
                        to,
                        kind: "partition",
                        label: format!(
                            "partition {} | rest",
                            groups
                                .iter()
                                .map(|g| g.join(" "))
                                .collect::<Vec<_>>()
                                .join(" | ")
                        ),
                    },
                ),
                PingCmd::Block { from: a, to: b } => bands.open(
                    "cut".into(),
                    Band {
                        lanes: vec![a.clone(), b.clone()],
                        from,
                        to,
                        kind: "block",
                        label: format!("block {a} -/-> {b}"),
                    },
                ),
                PingCmd::Heal => bands.close(|k| k != "cut", from),
                // A running machine is down and up again within the bar; its state after is
                // the one before.
                PingCmd::Ping { .. } | PingCmd::Upgrade { .. } => {}
            }
        }
        t.periods = states.finish(t.end);
        t.bands = bands.finish(t.end);
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
