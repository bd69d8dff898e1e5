//! The timeline of one run, as data for `timeline.html`: swimlanes (machines, the network,
//! client workers), machine up/down periods, fault bands, a bar per command or operation, and
//! the failing step. Times are milliseconds since the run began (the engine's `Trace` clock).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fleetcheck_engine::{Case, Model, Trace, Verdict};
use fleetcheck_scenarios::kv::{KvCmd, KvModel};
use fleetcheck_scenarios::ping::{PingCmd, PingModel};
use serde::Serialize;

use super::capture::RecordedHistory;

/// The lane that carries network-wide commands (partition, heal, ...).
pub const NETWORK_LANE: &str = "network";

/// Everything the page draws.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Timeline {
    /// The heading.
    pub title: String,
    /// How the run ended, for people.
    pub verdict: String,
    /// When the network was up (setup ended), ms.
    pub setup_end: f64,
    /// When teardown began, ms.
    pub teardown_start: f64,
    /// The end of the run, ms.
    pub end: f64,
    /// Swimlanes, top to bottom.
    pub lanes: Vec<Lane>,
    /// Machine states over time.
    pub periods: Vec<Period>,
    /// Faults in force over time.
    pub bands: Vec<Band>,
    /// Commands and client operations.
    pub bars: Vec<Bar>,
    /// Every step of the case.
    pub steps: Vec<StepMark>,
    /// The failing step, if the run failed.
    pub failing: Option<Failing>,
}

/// A swimlane.
#[derive(Debug, Clone, Serialize)]
pub struct Lane {
    /// Its id (a machine id, `network` or `w<n>`).
    pub id: String,
    /// What the page shows.
    pub label: String,
    /// `machine`, `network` or `worker`.
    pub kind: &'static str,
}

/// A machine's state over an interval.
#[derive(Debug, Clone, Serialize)]
pub struct Period {
    pub lane: String,
    pub from: f64,
    pub to: f64,
    /// `up`, `booting` or `down`.
    pub state: &'static str,
}

/// A fault over an interval, drawn across its lanes.
#[derive(Debug, Clone, Serialize)]
pub struct Band {
    pub lanes: Vec<String>,
    pub from: f64,
    pub to: f64,
    /// `partition`, `block`, `pause` or `loss`.
    pub kind: &'static str,
    pub label: String,
}

/// A command or a client operation, from invocation to completion.
#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    pub lane: String,
    pub from: f64,
    pub to: f64,
    /// Short text inside the bar.
    pub label: String,
    /// `ok`, `fail` or `unknown`.
    pub outcome: &'static str,
    /// The step (0-based) it belongs to.
    pub step: usize,
    /// Whether it is the failing step's (or the operation that could not be linearized).
    pub failing: bool,
    /// The long description (tooltip and details).
    pub detail: String,
}

/// One step of the case.
#[derive(Debug, Clone, Serialize)]
pub struct StepMark {
    /// 0-based.
    pub index: usize,
    pub from: f64,
    pub to: f64,
    pub command: String,
    pub output: String,
    pub state: String,
    pub failing: bool,
}

/// The failing step.
#[derive(Debug, Clone, Serialize)]
pub struct Failing {
    /// 0-based.
    pub step: usize,
    pub from: f64,
    pub to: f64,
    pub reason: String,
    /// The lanes it concerns.
    pub lanes: Vec<String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The scenario-specific part of a timeline.
pub trait Scenario: Model + Sized {
    /// The lanes, periods, bands and bars of `trace`, a run of `case`.
    fn timeline(
        &self,
        case: &Case<Self>,
        trace: &Trace<Self>,
        history: Option<&RecordedHistory>,
    ) -> Timeline;
}

/// The parts every scenario shares: times, steps and the failing step.
fn common<M: Model>(model: &M, title: String, trace: &Trace<M>) -> Timeline {
    let failing_step = match &trace.verdict {
        Verdict::Failed { step, .. } => Some(*step),
        Verdict::Aborted { step, .. } => *step,
        Verdict::Passed => None,
    };
    let steps: Vec<StepMark> = trace
        .steps
        .iter()
        .enumerate()
        .map(|(index, s)| StepMark {
            index,
            from: ms(s.started),
            to: ms(s.started + s.elapsed),
            command: model.describe_command(&s.command),
            output: s.output.clone().unwrap_or_else(|| "(no output)".into()),
            state: model.summarize_state(&s.state_after),
            failing: Some(index) == failing_step,
        })
        .collect();
    let failing = failing_step.and_then(|step| {
        let mark = steps.get(step)?;
        let reason = match &trace.verdict {
            Verdict::Failed { reason, .. } => reason.clone(),
            Verdict::Aborted { message, .. } => format!("aborted: {message}"),
            Verdict::Passed => String::new(),
        };
        Some(Failing {
            step,
            from: mark.from,
            to: mark.to,
            reason,
            lanes: Vec::new(),
        })
    });
    let verdict = match &trace.verdict {
        Verdict::Passed => "passed".to_string(),
        Verdict::Failed { step, .. } => format!("failed at step {}", step + 1),
        Verdict::Aborted { step: Some(s), .. } => format!("aborted at step {}", s + 1),
        Verdict::Aborted { step: None, .. } => "aborted".to_string(),
    };
    let end = ms(trace.elapsed);
    Timeline {
        title,
        verdict,
        setup_end: ms(trace.setup),
        teardown_start: ms(trace.elapsed.saturating_sub(trace.teardown)),
        end,
        steps,
        failing,
        ..Timeline::default()
    }
}

/// Machine states as a sequence of periods: a change closes the open period.
struct States {
    open: BTreeMap<String, (&'static str, f64)>,
    periods: Vec<Period>,
}

impl States {
    fn new(initial: impl IntoIterator<Item = (String, &'static str)>) -> Self {
        Self {
            open: initial.into_iter().map(|(m, s)| (m, (s, 0.0))).collect(),
            periods: Vec::new(),
        }
    }

    fn set(&mut self, machine: &str, state: &'static str, at: f64) {
        if let Some(open) = self.open.get_mut(machine) {
            if open.0 != state {
                self.periods.push(Period {
                    lane: machine.to_string(),
                    from: open.1,
                    to: at,
                    state: open.0,
                });
                *open = (state, at);
            }
        }
    }

    fn finish(mut self, end: f64) -> Vec<Period> {
        for (machine, (state, from)) in std::mem::take(&mut self.open) {
            self.periods.push(Period {
                lane: machine,
                from,
                to: end,
                state,
            });
        }
        self.periods
    }
}

/// Open fault bands, closed by a heal, a resume or the end of the run.
#[derive(Default)]
struct Bands {
    open: Vec<(String, Band)>,
    done: Vec<Band>,
}

impl Bands {
    fn open(&mut self, key: String, band: Band) {
        self.open.push((key, band));
    }

    fn close(&mut self, keep: impl Fn(&str) -> bool, at: f64) {
        let (closing, open): (Vec<_>, Vec<_>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|(k, _)| !keep(k));
        self.open = open;
        for (_, mut band) in closing {
            band.to = at;
            self.done.push(band);
        }
    }

    fn finish(mut self, end: f64) -> Vec<Band> {
        self.close(|_| false, end);
        self.done
    }
}

fn outcome_of(failing: bool) -> &'static str {
    if failing {
        "fail"
    } else {
        "ok"
    }
}

impl Scenario for PingModel {
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

impl Scenario for KvModel {
    fn timeline(
        &self,
        case: &Case<Self>,
        trace: &Trace<Self>,
        history: Option<&RecordedHistory>,
    ) -> Timeline {
        let mut t = common(
            self,
            format!("kv: {} nodes", case.initial.nodes.len()),
            trace,
        );
        let ids: Vec<String> = case.initial.nodes.iter().map(|n| n.id.clone()).collect();
        for n in &case.initial.nodes {
            t.lanes.push(Lane {
                id: n.id.clone(),
                label: format!("{} {}", n.id, n.ip),
                kind: "machine",
            });
        }
        t.lanes.push(Lane {
            id: NETWORK_LANE.into(),
            label: "network".into(),
            kind: "network",
        });
        // Every node boots during setup and is up when the first command runs.
        let mut states = States::new(ids.iter().map(|id| (id.clone(), "booting")));
        for id in &ids {
            states.set(id, "up", t.setup_end);
        }
        let mut bands = Bands::default();
        // Which step each worker's operations belong to, and their node: a worker's
        // operations are recorded in the order of its batches, each batch in command order.
        let mut client_ops: BTreeMap<usize, Vec<(usize, String)>> = BTreeMap::new();
        for (i, step) in trace.steps.iter().enumerate() {
            let (from, to) = (ms(step.started), ms(step.started + step.elapsed));
            let failing = t.failing.as_ref().is_some_and(|f| f.step == i);
            let describe = self.describe_command(&step.command);
            let output = step.output.clone().unwrap_or_else(|| "(no output)".into());
            let node_bar = |lane: &str, label: &str| Bar {
                lane: lane.to_string(),
                from,
                to,
                label: label.to_string(),
                outcome: outcome_of(failing),
                step: i,
                failing,
                detail: format!("step {}: {describe} -> {output}", i + 1),
            };
            match &step.command {
                KvCmd::Ops { ops } => {
                    for o in ops {
                        client_ops
                            .entry(o.worker)
                            .or_default()
                            .push((i, o.node.clone()));
                    }
                }
                KvCmd::Crash { node } => {
                    t.bars.push(node_bar(node, "crash"));
                    states.set(node, "down", to);
                    bands.close(|k| k != format!("pause {node}"), to);
                }
                KvCmd::Restart { node } => {
                    t.bars.push(node_bar(node, "restart"));
                    states.set(node, "booting", from);
                    states.set(node, "up", to);
                }
                KvCmd::Pause { node } => {
                    t.bars.push(node_bar(node, "pause"));
                    bands.open(
                        format!("pause {node}"),
                        Band {
                            lanes: vec![node.clone()],
                            from,
                            to,
                            kind: "pause",
                            label: "paused".into(),
                        },
                    );
                }
                KvCmd::Resume { node } => {
                    t.bars.push(node_bar(node, "resume"));
                    bands.close(|k| k != format!("pause {node}"), from);
                }
                KvCmd::Partition { side } => {
                    t.bars
                        .push(node_bar(NETWORK_LANE, &describe.to_lowercase()));
                    bands.open(
                        "cut".into(),
                        Band {
                            lanes: ids.clone(),
                            from,
                            to,
                            kind: "partition",
                            label: format!("partition {} | rest", side.join(" ")),
                        },
                    );
                }
                KvCmd::Block { from: a, to: b } => {
                    t.bars
                        .push(node_bar(NETWORK_LANE, &describe.to_lowercase()));
                    bands.open(
                        "cut".into(),
                        Band {
                            lanes: vec![a.clone(), b.clone()],
                            from,
                            to,
                            kind: "block",
                            label: format!("block {a} -/-> {b}"),
                        },
                    );
                }
                KvCmd::Loss { node, percent } => {
                    t.bars
                        .push(node_bar(NETWORK_LANE, &describe.to_lowercase()));
                    bands.open(
                        "cut".into(),
                        Band {
                            lanes: vec![node.clone()],
                            from,
                            to,
                            kind: "loss",
                            label: format!("loss {percent}% {node}"),
                        },
                    );
                }
                KvCmd::Heal => {
                    t.bars.push(node_bar(NETWORK_LANE, "heal"));
                    bands.close(|k| k != "cut", from);
                }
                KvCmd::Upgrade { node, version } => {
                    t.bars
                        .push(node_bar(node, &format!("upgrade to {version}")));
                    // A running node goes down and boots again within the bar.
                    if step.state_after.node(node).is_some_and(|n| n.running) {
                        states.set(node, "booting", from);
                        states.set(node, "up", to);
                    }
                }
            }
        }
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
        t.periods = states.finish(t.end);
        t.bands = bands.finish(t.end);
        t
    }
}

/// Milliseconds from `origin` to `other` (negative if `other` came first).
fn offset_ms(other: Instant, origin: Instant) -> f64 {
    match other.checked_duration_since(origin) {
        Some(d) => ms(d),
        None => -ms(origin.duration_since(other)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fleetcheck_engine::{execute, Case, Model};
    use fleetcheck_fabric::fake::FakeBackend;
    use fleetcheck_scenarios::config::ScenarioConfig;
    use fleetcheck_scenarios::ping::{PingCmd, PingModel, PingSystem};

    use super::Scenario;

    #[test]
    fn ping_timeline_has_periods_bands_and_the_failing_step() {
        let config = ScenarioConfig::default();
        let model = PingModel::new(config.clone());
        let mut initial = model.initial_state(&mut fleetcheck_engine::Gen::new(1, 10));
        initial.machines.truncate(2);
        if initial.machines.len() < 2 {
            initial = model.initial_state(&mut fleetcheck_engine::Gen::new(7, 10));
        }
        let (a, b) = (
            initial.machines[0].id.clone(),
            initial.machines[1].id.clone(),
        );
        let commands = vec![
            PingCmd::Boot { machine: a.clone() },
            PingCmd::Boot { machine: b.clone() },
            PingCmd::Pause { machine: b.clone() },
            PingCmd::Resume { machine: b.clone() },
            PingCmd::Partition {
                groups: vec![vec![a.clone()]],
            },
            PingCmd::Heal,
            PingCmd::Shutdown { machine: b.clone() },
            // The model expects no reply from an off machine: this passes.
            PingCmd::Ping {
                from: a.clone(),
                to: b.clone(),
            },
        ];
        let case = Case {
            seed: 1,
            initial,
            commands,
        };
        let system = PingSystem::new(Arc::new(FakeBackend::new()), &config);
        let trace = execute(&model, &system, &case);
        let t = model.timeline(&case, &trace, None);
        assert!(t.failing.is_none(), "{:?}", trace.verdict);
        assert_eq!(t.steps.len(), 8);
        assert_eq!(t.bars.len(), 8);
        let states = |m: &str| -> Vec<&str> {
            t.periods
                .iter()
                .filter(|p| p.lane == m)
                .map(|p| p.state)
                .collect()
        };
        assert_eq!(states(&a), ["down", "booting", "up"]);
        assert_eq!(states(&b), ["down", "booting", "up", "down"]);
        let kinds: Vec<&str> = t.bands.iter().map(|b| b.kind).collect();
        assert_eq!(kinds, ["pause", "partition"]);
        for band in &t.bands {
            assert!(band.from <= band.to, "{band:?}");
        }
        let ping = t.bars.last().unwrap();
        assert_eq!(ping.lane, a);
        assert!(ping.label.contains("no reply"), "{ping:?}");
        assert!(t.setup_end <= t.steps[0].from && t.teardown_start <= t.end);
    }
}
