//! The built-in sql scenario: PostgreSQL 15 under faults, its transactions' history checked
//! against the claimed isolation level. Its report's history lists every transaction, why
//! those that did not commit ended so, and the checker's analysis (each anomaly as its cycle,
//! with why each edge exists); the timeline highlights the anomaly's transactions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use fleetcheck_engine::history::Outcome as OpOutcome;
use fleetcheck_engine::txn;
use fleetcheck_engine::{Case, Trace};
use fleetcheck_fabric::{Backend, Network};
use fleetcheck_scenarios::config::ScenarioConfig;
use fleetcheck_scenarios::sql::postgres::{SqlSystem, PROGRAMS};
use fleetcheck_scenarios::sql::{SqlCmd, SqlModel, SqlState};
use serde_json::Value;

use crate::exit::Fail;
use crate::report::capture::{ClientOp, Inspect, RecordedHistory};
use crate::report::timeline::*;
use crate::scenario::{ExportCode, NeededProgram, Scenario};

impl Draw for SqlModel {
    fn timeline(
        &self,
        case: &Case<Self>,
        trace: &Trace<Self>,
        history: Option<&RecordedHistory>,
    ) -> Timeline {
        // Which step each worker's transactions belong to: a worker's transactions are
        // recorded in the order of its batches, each batch in command order.
        let mut steps_of: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let machines = case.initial.cluster.machines.iter();
        let primary = case
            .initial
            .primary()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        let mut t = cluster_timeline(
            self,
            format!("sql: {} node(s)", case.initial.cluster.machines.len()),
            trace,
            machines.map(|n| (n.id.clone(), n.ip.to_string())),
            Start::BootedInSetup,
            |i, step, _| match &step.command {
                SqlCmd::Txns { txns, .. } => {
                    for p in txns {
                        steps_of.entry(p.worker).or_default().push(i);
                    }
                    (Effect::Nothing, None)
                }
                SqlCmd::Cluster(c) => cluster_drawn(
                    c,
                    &step.state_after.cluster,
                    step.output.as_deref() == Some("ok"),
                ),
            },
        );
        let Some(h) = history else { return t };
        let workers: BTreeSet<usize> = h.ops.iter().map(|o| o.worker).collect();
        for w in &workers {
            t.lanes.push(Lane {
                id: format!("w{w}"),
                label: format!("client worker {w}"),
                kind: "worker",
            });
        }
        // `placed` holds the transactions of the anomalies found (see `Inspect::history`).
        let anomalous: BTreeSet<usize> = h.placed.iter().copied().collect();
        let offset = offset_ms(h.origin, trace.started_at);
        let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
        for o in &h.ops {
            let k = seen.entry(o.worker).or_default();
            let step = steps_of
                .get(&o.worker)
                .and_then(|v| v.get(*k).copied())
                .unwrap_or(usize::MAX);
            *k += 1;
            let step_end = trace
                .steps
                .get(step)
                .map_or(t.end, |s| ms(s.started + s.elapsed));
            let from = offset + o.invoke as f64 / 1e6;
            let to = o.complete.map_or(step_end, |c| offset + c as f64 / 1e6);
            let marked = anomalous.contains(&o.index);
            let result = o.result.clone().unwrap_or_else(|| o.outcome.to_string());
            t.bars.push(Bar {
                lane: format!("w{}", o.worker),
                from,
                to,
                label: format!("T{} {result}", o.index),
                outcome: o.outcome,
                step,
                failing: marked,
                detail: format!(
                    "T{} worker {} @{primary}: {} -> {result} (step {}){}",
                    o.index,
                    o.worker,
                    o.op,
                    step.wrapping_add(1),
                    if marked {
                        ": a transaction of the anomaly"
                    } else {
                        ""
                    }
                ),
            });
            if marked {
                if let Some(f) = t.failing.as_mut() {
                    f.lanes.push(format!("w{}", o.worker));
                }
            }
        }
        if let Some(f) = t.failing.as_mut() {
            if !f.lanes.is_empty() {
                f.lanes.push(primary);
            }
        }
        t
    }
}

impl Inspect<SqlModel> for SqlSystem {
    fn network<'a>(&self, instance: &'a Self::Instance) -> Option<&'a dyn Network> {
        Some(instance.network())
    }

    /// Every transaction, then why those that did not commit ended so, then the checker's
    /// analysis against the claimed model. `placed` carries the anomalies' transactions.
    fn history(&self, instance: &Self::Instance) -> Option<RecordedHistory> {
        let (history, origin) = instance.history();
        let ops = history
            .iter()
            .enumerate()
            .map(|(index, o)| ClientOp {
                index,
                worker: o.worker,
                op: o.op.to_string(),
                invoke: o.invoke,
                complete: o.complete,
                outcome: match o.outcome {
                    OpOutcome::Ok(_) => "ok",
                    OpOutcome::Fail => "fail",
                    OpOutcome::Unknown => "unknown",
                },
                result: o.outcome.ok().map(|done| format!("ok {done}")),
            })
            .collect();
        let mut text = format!(
            "# transactions (T<n> is #<n>); list-append over table lists; checked against {}\n",
            self.claim
        );
        text.push_str(&history.to_string());
        for (index, why) in instance.why() {
            let _ = writeln!(text, "# T{index}: {why}");
        }
        let mut anomalous = Vec::new();
        if !history.is_empty() {
            match txn::analyse(&history) {
                Ok(analysis) => {
                    for a in analysis
                        .anomalies
                        .iter()
                        .filter(|a| self.claim.forbids(a.kind))
                    {
                        anomalous.extend(a.txns.iter().copied());
                    }
                    let _ = write!(text, "# analysis: {analysis}");
                }
                Err(why) => {
                    let _ = writeln!(text, "# invalid history: {why}");
                }
            }
        }
        anomalous.sort_unstable();
        anomalous.dedup();
        Some(RecordedHistory {
            origin,
            ops,
            text,
            culprit: None,
            placed: anomalous,
        })
    }
}

/// The sql scenario.
#[derive(Debug, Clone, Copy)]
pub struct Sql;

impl Scenario for Sql {
    type Model = SqlModel;
    type System = SqlSystem;

    fn name(&self) -> &'static str {
        "sql"
    }
    fn about(&self) -> &'static str {
        "PostgreSQL 15 under faults; its transactions must keep the claimed isolation level"
    }
    fn model(&self, config: &ScenarioConfig, _system: Option<&str>) -> SqlModel {
        SqlModel::new(config)
    }
    fn system(
        &self,
        config: &ScenarioConfig,
        _system: Option<&str>,
        backend: Arc<dyn Backend>,
    ) -> SqlSystem {
        SqlSystem::new(backend, &config.sql)
    }
    fn programs(&self, _system: Option<&str>, _config: &ScenarioConfig) -> Vec<NeededProgram> {
        PROGRAMS
            .iter()
            .map(|p| NeededProgram {
                program: *p,
                needed: true,
            })
            .collect()
    }
    /// Only netns: the host's psql sessions reach each server through the Unix socket on
    /// its node's disk, which the host sees only there. The nodes must meet the backend's
    /// memory floor.
    fn check_fits(
        &self,
        config: &ScenarioConfig,
        backend: &dyn Backend,
        _system: Option<&str>,
    ) -> Result<(), Fail> {
        if backend.name() != "netns" {
            return Err(Fail::usage(anyhow::anyhow!(
                "the sql scenario runs on the netns backend only (its clients reach PostgreSQL through the socket on a node's disk), not on {}",
                backend.name()
            )));
        }
        let floor = backend.min_memory_mb();
        if config.sql.memory_mb < floor {
            return Err(Fail::usage(anyhow::anyhow!(
                "sql.memory_mb is {} MiB but the {} backend needs at least {floor} MiB",
                config.sql.memory_mb,
                backend.name()
            )));
        }
        crate::run::check_vms_fit(
            backend,
            config.sql.nodes,
            config.sql.memory_mb,
            "sql.memory_mb",
        )
    }
    fn machines(&self, state: &SqlState) -> Value {
        serde_json::to_value(&state.cluster.machines).unwrap_or(Value::Null)
    }
    fn export(&self, _system: Option<&str>) -> Option<ExportCode> {
        Some(ExportCode {
            imports: "use fleetcheck_scenarios::sql::{postgres::SqlSystem, SqlModel};".into(),
            build: "    let model = SqlModel::new(&config);\n    \
                    let system = SqlSystem::new(backend(), &config.sql);\n    \
                    let file = ReplayFile::<SqlModel>::from_json(CASE, \"sql\").expect(\"the case parses\");"
                .into(),
        })
    }
}
