//! The built-in kv scenario.

use crate::exit::Fail;
use crate::report::capture::RecordedHistory;
use crate::report::timeline::*;
use crate::scenario::NeededProgram;
use crate::scenario::{ExportCode, Scenario};
use fleetcheck_engine::{Case, Trace};
use fleetcheck_fabric::Backend;
use fleetcheck_scenarios::config::ScenarioConfig;
use fleetcheck_scenarios::kv::{self, KvState, SYSTEMS};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

use fleetcheck_engine::history::Outcome as OpOutcome;
use fleetcheck_engine::linearizability::{check_with, Limits};
use fleetcheck_engine::{KvSpec, Linearizability};
use fleetcheck_fabric::Network;
use fleetcheck_scenarios::kv::{workload, AnyStore, Call, KvCmd, KvModel, KvSystem, Store};

use crate::report::capture::{ClientOp, Inspect};

/// Cases of etcd or Redis per CPU by default (see [`Scenario::default_workers`]).
const WORKERS_ON_MACHINES: usize = 2;

impl Draw for KvModel {
    fn timeline(
        &self,
        case: &Case<Self>,
        trace: &Trace<Self>,
        history: Option<&RecordedHistory>,
    ) -> Timeline {
        // Which step each worker's operations belong to, and their node: a worker's
        // operations are recorded in the order of its batches, each batch in command order.
        let mut client_ops: BTreeMap<usize, Vec<(usize, String)>> = BTreeMap::new();
        let nodes = case.initial.machines.iter();
        let mut t = cluster_timeline(
            self,
            format!("kv: {} nodes", case.initial.machines.len()),
            trace,
            nodes.map(|n| (n.id.clone(), n.ip.to_string())),
            // Every node boots during setup and is up when the first command runs.
            Start::BootedInSetup,
            |i, step, _| match &step.command {
                KvCmd::Ops { ops } => {
                    for o in ops {
                        client_ops
                            .entry(o.worker)
                            .or_default()
                            .push((i, o.node.clone()));
                    }
                    (Effect::Nothing, None)
                }
                KvCmd::Run { name, node } => {
                    (Effect::Nothing, Some((node.clone(), format!("run {name}"))))
                }
                KvCmd::Cluster(c) => {
                    cluster_drawn(c, &step.state_after, step.output.as_deref() == Some("ok"))
                }
            },
        );
        if let Some(h) = history {
            let workers: std::collections::BTreeSet<usize> =
                h.ops.iter().map(|o| o.worker).collect();
            for w in &workers {
                t.lanes.push(Lane {
                    id: format!("w{w}"),
                    label: format!("client worker {w}"),
                    kind: "worker",
                });
            }
            let offset = offset_ms(h.origin, trace.started_at);
            let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
            for o in &h.ops {
                let k = seen.entry(o.worker).or_default();
                let (step, node) = client_ops
                    .get(&o.worker)
                    .and_then(|v| v.get(*k).cloned())
                    .unwrap_or((usize::MAX, String::new()));
                *k += 1;
                let step_end = trace
                    .steps
                    .get(step)
                    .map_or(t.end, |s| ms(s.started + s.elapsed));
                let from = offset + o.invoke as f64 / 1e6;
                let to = o.complete.map_or(step_end, |c| offset + c as f64 / 1e6);
                let culprit = h.culprit == Some(o.index);
                let result = o
                    .result
                    .as_ref()
                    .map_or(o.outcome.to_string(), |r| format!("ok {r}"));
                t.bars.push(Bar {
                    lane: format!("w{}", o.worker),
                    from,
                    to,
                    label: format!("{} @{node} → {result}", o.op),
                    outcome: o.outcome,
                    step,
                    failing: culprit,
                    detail: format!(
                        "#{} worker {} {} @{node} -> {result} (step {}){}",
                        o.index,
                        o.worker,
                        o.op,
                        step.wrapping_add(1),
                        if culprit {
                            ": the linearizability checker cannot place this operation"
                        } else if h.placed.contains(&o.index) {
                            ": placed before the operation that cannot be"
                        } else {
                            ""
                        }
                    ),
                });
                if culprit {
                    if let Some(f) = t.failing.as_mut() {
                        f.lanes.push(format!("w{}", o.worker));
                        f.lanes.push(node.clone());
                    }
                }
            }
        }
        t
    }
}

/// Any kv store's system: the built-in stores and scenario files' alike.
impl<S: Store + std::fmt::Debug + Clone + 'static> Inspect<KvModel> for KvSystem<S>
where
    S::Cluster: std::fmt::Debug + 'static,
{
    fn network<'a>(&self, instance: &'a Self::Instance) -> Option<&'a dyn Network> {
        self.store().network(instance.cluster())
    }

    fn log_files(&self, instance: &Self::Instance, node: &str) -> Vec<String> {
        self.store().log_files(instance.cluster(), node)
    }

    fn history(&self, instance: &Self::Instance) -> Option<RecordedHistory> {
        let (history, origin) = instance.history();
        let ops = history
            .iter()
            .enumerate()
            .map(|(index, o)| ClientOp {
                index,
                worker: o.worker,
                op: format!("{:?}", o.op),
                invoke: o.invoke,
                complete: o.complete,
                outcome: match o.outcome {
                    OpOutcome::Ok(_) => "ok",
                    OpOutcome::Fail => "fail",
                    OpOutcome::Unknown => "unknown",
                },
                result: o.outcome.ok().map(workload::describe_answer),
            })
            .collect();
        // The kv workload's history is linearizable or shows where it is not.
        let kv = history.iter().all(|o| matches!(o.op, Call::Kv(_)));
        let (culprit, placed) = if history.is_empty() || !kv {
            (None, Vec::new())
        } else {
            let limits = Limits {
                max_steps: Some(self.max_check_steps),
                ..Limits::default()
            };
            let history = workload::kv_history(&history);
            match check_with(&KvSpec::<u64>::new(), &history, &limits).result {
                Linearizability::NotLinearizable { mut ops, .. } => {
                    let culprit = ops.pop();
                    (culprit, ops)
                }
                _ => (None, Vec::new()),
            }
        };
        Some(RecordedHistory {
            origin,
            ops,
            text: history.to_string(),
            culprit,
            placed,
        })
    }
}

/// The kv scenario: a replicated key-value store under faults, with concurrent clients whose
/// history must be linearizable.
#[derive(Debug, Clone, Copy)]
pub struct Kv;

impl Scenario for Kv {
    type Model = KvModel;
    type System = KvSystem<AnyStore>;

    fn name(&self) -> &'static str {
        "kv"
    }
    fn about(&self) -> &'static str {
        "a replicated key-value store under faults; its clients' history must be linearizable"
    }
    fn systems(&self) -> &'static [&'static str] {
        SYSTEMS
    }
    fn model(&self, config: &ScenarioConfig, system: Option<&str>) -> KvModel {
        KvModel::new(config, system.unwrap_or(SYSTEMS[0]))
    }
    fn system(
        &self,
        config: &ScenarioConfig,
        system: Option<&str>,
        backend: Arc<dyn Backend>,
    ) -> KvSystem<AnyStore> {
        let name = system.unwrap_or(SYSTEMS[0]);
        let store =
            AnyStore::for_config(name, backend, config).expect("the harness passes a known system");
        KvSystem::new(store)
    }
    fn on_machines(&self, system: Option<&str>) -> bool {
        !system.unwrap_or(SYSTEMS[0]).starts_with("memory")
    }
    /// The in-memory stores compute and wait for nothing: four cases per CPU. A case of etcd
    /// or Redis runs a server per node and waits on it: WORKERS_ON_MACHINES per CPU.
    fn default_workers(&self, system: Option<&str>) -> usize {
        if self.on_machines(system) {
            crate::run::per_cpu(WORKERS_ON_MACHINES)
        } else {
            crate::run::per_cpu(4)
        }
    }
    /// All of [`kv::programs`]; the server's is not needed when `[services.<name>]` lists
    /// versions of it.
    fn programs(&self, system: Option<&str>, config: &ScenarioConfig) -> Vec<NeededProgram> {
        let system = system.unwrap_or(SYSTEMS[0]);
        let versioned = kv::service_of(system).filter(|s| config.services.contains_key(*s));
        kv::programs(system)
            .iter()
            .map(|p| NeededProgram {
                program: *p,
                needed: Some(p.name) != versioned,
            })
            .collect()
    }
    fn check_fits(
        &self,
        config: &ScenarioConfig,
        backend: &dyn Backend,
        _system: Option<&str>,
    ) -> Result<(), Fail> {
        check_nodes_fit(config, backend)
    }
    fn machines(&self, state: &KvState) -> Value {
        serde_json::to_value(&state.machines).unwrap_or(Value::Null)
    }
    fn export(&self, system: Option<&str>) -> Option<ExportCode> {
        Some(ExportCode {
            imports: "use fleetcheck_scenarios::kv::{AnyStore, KvModel, KvSystem};".into(),
            build: format!(
                "    let model = KvModel::new(&config, {0:?});\n    \
                 let store = AnyStore::for_config({0:?}, backend(), &config).expect(\"a known store\");\n    \
                 let system = KvSystem::new(store);\n    \
                 let file = ReplayFile::<KvModel>::from_json(CASE, \"kv\").expect(\"the case parses\");",
                system.unwrap_or(SYSTEMS[0])
            ),
        })
    }
}

/// The nodes (`[kv] nodes` of `[kv] memory_mb`) must meet the backend's memory floor, and fit
/// the host on qemu: for kv and scenario files of its workload.
pub fn check_nodes_fit(config: &ScenarioConfig, backend: &dyn Backend) -> Result<(), Fail> {
    if backend.name() == "netns"
        && config
            .kv
            .faults
            .contains(&fleetcheck_scenarios::cluster::Fault::Netem)
    {
        return Err(Fail::usage(anyhow::anyhow!(
            "kv.faults names `netem`, which the netns backend cannot do: {} (--backend qemu)",
            fleetcheck_fabric::netem::netns_refusal()
        )));
    }
    let floor = backend.min_memory_mb();
    if config.kv.memory_mb < floor {
        return Err(Fail::usage(anyhow::anyhow!(
            "kv.memory_mb is {} MiB but the {} backend needs at least {floor} MiB",
            config.kv.memory_mb,
            backend.name()
        )));
    }
    // A scenario file's own client machine is one more.
    let client_machine = config.client.as_ref().is_some_and(|c| c.own_machine);
    crate::run::check_vms_fit(
        backend,
        config.kv.nodes.1 + u32::from(client_machine),
        config.kv.memory_mb,
        "kv.memory_mb",
    )
}
