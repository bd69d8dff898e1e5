//! The timeline of one run, as data for `timeline.html`: swimlanes (machines, the network,
//! client workers), machine up/down periods, fault bands, a bar per command or operation, and
//! the failing step. Times are milliseconds since the run began (the engine's `Trace` clock).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fleetcheck_engine::{Case, Model, Step, Trace, Verdict};
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

/// Milliseconds of a duration.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The scenario-specific part of a timeline: a model that draws its runs. The default draws
/// the steps alone (no lanes); a scenario adds its machines' lanes, periods, bands and bars.
pub trait Draw: Model + Sized {
    /// The lanes, periods, bands and bars of `trace`, a run of `case`.
    fn timeline(
        &self,
        _case: &Case<Self>,
        trace: &Trace<Self>,
        _history: Option<&RecordedHistory>,
    ) -> Timeline {
        common(self, String::new(), trace)
    }
}

/// The parts every scenario shares: times, steps and the failing step.
pub fn common<M: Model>(model: &M, title: String, trace: &Trace<M>) -> Timeline {
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

pub use fleetcheck_scenarios::cluster::Effect;
use fleetcheck_scenarios::cluster::{ClusterCmd, ClusterState};

/// How the machines begin a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Down until a command boots them.
    Down,
    /// Booting during setup, up when it ends.
    BootedInSetup,
}

/// One step as a scenario draws it on a [`cluster_timeline`]: what it did to the cluster
/// and its bar, if it has one: `(lane, label)`.
pub type Drawn = (Effect, Option<(String, String)>);

/// How a timeline draws infrastructure command `c` (`after`: the state after it; `ok`:
/// whether it went through): its effect, and its bar on its machine's lane or the network's.
pub fn cluster_drawn(c: &ClusterCmd, after: &ClusterState, ok: bool) -> Drawn {
    let lane = c.lane().map_or(NETWORK_LANE.to_string(), str::to_string);
    (c.effect(after, ok), Some((lane, c.bar_label())))
}

/// The bar of a network-wide command: on the network lane, its description in lower case.
pub fn on_network(describe: &str) -> Option<(String, String)> {
    Some((NETWORK_LANE.to_string(), describe.to_lowercase()))
}

/// The timeline of a run on a cluster: [`common`], a lane per machine (`(id, ip)`, in
/// order) and the network lane, the machines' periods and the fault bands, and a bar per
/// step that `draw` gives one (`draw(index, step, description)`). The failing step's bar
/// names its lane as a failing lane. A scenario then adds its own lanes and bars.
pub fn cluster_timeline<M: Model>(
    model: &M,
    title: String,
    trace: &Trace<M>,
    machines: impl IntoIterator<Item = (String, String)>,
    start: Start,
    mut draw: impl FnMut(usize, &Step<M>, &str) -> Drawn,
) -> Timeline {
    let mut t = common(model, title, trace);
    let mut ids = Vec::new();
    for (id, ip) in machines {
        t.lanes.push(Lane {
            id: id.clone(),
            label: format!("{id} {ip}"),
            kind: "machine",
        });
        ids.push(id);
    }
    t.lanes.push(Lane {
        id: NETWORK_LANE.into(),
        label: "network".into(),
        kind: "network",
    });
    let mut states = match start {
        Start::Down => States::new(ids.iter().map(|id| (id.clone(), "down"))),
        Start::BootedInSetup => {
            let mut states = States::new(ids.iter().map(|id| (id.clone(), "booting")));
            for id in &ids {
                states.set(id, "up", t.setup_end);
            }
            states
        }
    };
    let mut bands = Bands::default();
    for (i, step) in trace.steps.iter().enumerate() {
        let (from, to) = (ms(step.started), ms(step.started + step.elapsed));
        let failing = t.failing.as_ref().is_some_and(|f| f.step == i);
        let describe = model.describe_command(&step.command);
        let (infra, bar) = draw(i, step, &describe);
        if let Some((lane, label)) = bar {
            let output = step.output.as_deref().unwrap_or("(no output)");
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
                }
            }
        }
        let band = |lanes: Vec<String>, kind, label| Band {
            lanes,
            from,
            to,
            kind,
            label,
        };
        match infra {
            Effect::Nothing => {}
            Effect::Boot { machine, up } => {
                states.set(&machine, "booting", from);
                states.set(&machine, if up { "up" } else { "down" }, to);
            }
            Effect::Down { machine } => {
                states.set(&machine, "down", to);
                bands.close(|k| k != format!("pause {machine}"), to);
                bands.close(|k| k != format!("clock {machine}"), to);
            }
            Effect::Cuts {
                shape,
                machines,
                label,
            } => bands.open("cut".into(), band(machines, shape, label)),
            Effect::PowerCut { machines } => {
                for machine in machines {
                    states.set(&machine, "down", to);
                    bands.close(|k| k != format!("pause {machine}"), to);
                    bands.close(|k| k != format!("disk {machine}"), to);
                    bands.close(|k| k != format!("clock {machine}"), to);
                }
            }
            Effect::DiskFail { machine, error } => bands.open(
                format!("disk {machine}"),
                band(vec![machine], "disk", format!("disk fails: {error}")),
            ),
            Effect::Netem { machine, netem } => {
                let label = format!("{netem} {machine}");
                bands.open("cut".into(), band(vec![machine], "netem", label));
            }
            Effect::Clock { machine, offset_s } => bands.open(
                format!("clock {machine}"),
                band(vec![machine], "clock", format!("clock {offset_s:+} s")),
            ),
            Effect::ClockStrobe { machine, offset_s } => {
                let key = format!("strobe {machine}");
                let label = format!("clock strobes {offset_s:+} s");
                bands.open(key.clone(), band(vec![machine], "clock", label));
                bands.close(|k| k != key, to);
            }
            Effect::ClockReset { machine } => {
                bands.close(|k| k != format!("clock {machine}"), from)
            }
            Effect::Corrupt { machine, how } => bands.open(
                format!("corrupt {machine}"),
                band(vec![machine], "corrupt", format!("data corrupted: {how}")),
            ),
            Effect::DiskRecover { machine } => {
                bands.close(|k| k != format!("disk {machine}"), from)
            }
            Effect::Pause { machine } => bands.open(
                format!("pause {machine}"),
                band(vec![machine], "pause", "paused".into()),
            ),
            Effect::Resume { machine } => bands.close(|k| k != format!("pause {machine}"), from),
            Effect::Partition { groups } => {
                let groups: Vec<String> = groups.iter().map(|g| g.join(" ")).collect();
                let label = format!("partition {} | rest", groups.join(" | "));
                bands.open("cut".into(), band(ids.clone(), "partition", label));
            }
            Effect::Block { from: a, to: b } => {
                let label = format!("block {a} -/-> {b}");
                bands.open("cut".into(), band(vec![a, b], "block", label));
            }
            Effect::Loss { machine, percent } => {
                let label = format!("loss {percent}% {machine}");
                bands.open("cut".into(), band(vec![machine], "loss", label));
            }
            Effect::Heal => bands.close(|k| k != "cut", from),
        }
    }
    t.periods = states.finish(t.end);
    t.bands = bands.finish(t.end);
    t
}

/// Machine states as a sequence of periods: a change closes the open period.
#[derive(Debug)]
pub struct States {
    open: BTreeMap<String, (&'static str, f64)>,
    periods: Vec<Period>,
}

impl States {
    /// Every machine in its initial state from time 0.
    pub fn new(initial: impl IntoIterator<Item = (String, &'static str)>) -> Self {
        Self {
            open: initial.into_iter().map(|(m, s)| (m, (s, 0.0))).collect(),
            periods: Vec::new(),
        }
    }

    /// Machine `machine` is in `state` from `at`.
    pub fn set(&mut self, machine: &str, state: &'static str, at: f64) {
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

    /// The periods, the open ones closed at `end`.
    pub fn finish(mut self, end: f64) -> Vec<Period> {
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
#[derive(Debug, Default)]
pub struct Bands {
    open: Vec<(String, Band)>,
    done: Vec<Band>,
}

impl Bands {
    /// Opens `band` under `key`.
    pub fn open(&mut self, key: String, band: Band) {
        self.open.push((key, band));
    }

    /// Closes, at `at`, the open bands whose key `keep` refuses.
    pub fn close(&mut self, keep: impl Fn(&str) -> bool, at: f64) {
        let (closing, open): (Vec<_>, Vec<_>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|(k, _)| !keep(k));
        self.open = open;
        for (_, mut band) in closing {
            band.to = at;
            self.done.push(band);
        }
    }

    /// The bands, the open ones closed at `end`.
    pub fn finish(mut self, end: f64) -> Vec<Band> {
        self.close(|_| false, end);
        self.done
    }
}

/// `fail` or `ok`.
pub fn outcome_of(failing: bool) -> &'static str {
    if failing {
        "fail"
    } else {
        "ok"
    }
}

/// Milliseconds from `origin` to `other` (negative if `other` came first).
pub fn offset_ms(other: Instant, origin: Instant) -> f64 {
    match other.checked_duration_since(origin) {
        Some(d) => ms(d),
        None => -ms(origin.duration_since(other)),
    }
}

#[cfg(test)]
mod tests {
    use fleetcheck_scenarios::cluster::ClusterCmd;
    use std::sync::Arc;

    use fleetcheck_engine::{execute, Case, Model};
    use fleetcheck_fabric::fake::FakeBackend;
    use fleetcheck_scenarios::config::ScenarioConfig;
    use fleetcheck_scenarios::ping::{PingCmd, PingModel, PingSystem};

    use super::Draw;

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
            PingCmd::Cluster(ClusterCmd::Boot { machine: a.clone() }),
            PingCmd::Cluster(ClusterCmd::Boot { machine: b.clone() }),
            PingCmd::Cluster(ClusterCmd::Pause { machine: b.clone() }),
            PingCmd::Cluster(ClusterCmd::Resume { machine: b.clone() }),
            PingCmd::Cluster(ClusterCmd::Partition {
                groups: vec![vec![a.clone()]],
            }),
            PingCmd::Cluster(ClusterCmd::Heal),
            PingCmd::Cluster(ClusterCmd::Shutdown { machine: b.clone() }),
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

#[cfg(test)]
mod kv_tests {
    use std::sync::Arc;

    use fleetcheck_engine::{execute, Case, Gen, Model};
    use fleetcheck_fabric::fake::FakeBackend;
    use fleetcheck_scenarios::cluster::ClusterCmd;
    use fleetcheck_scenarios::config::ScenarioConfig;
    use fleetcheck_scenarios::kv::{AnyStore, KvCmd, KvModel, KvSystem};

    use super::{Draw, NETWORK_LANE};

    #[test]
    fn kv_timeline_draws_crash_pause_and_network_faults_on_the_cluster_lanes() {
        let config = ScenarioConfig::default();
        let model = KvModel::new(&config, "memory");
        let initial = model.initial_state(&mut Gen::new(1, 10));
        let ids: Vec<String> = initial.machines.iter().map(|n| n.id.clone()).collect();
        assert!(ids.len() >= 3, "{ids:?}");
        let (a, b, c) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
        let commands = vec![
            KvCmd::Cluster(ClusterCmd::Crash { machine: a.clone() }),
            KvCmd::Cluster(ClusterCmd::Restart { machine: a.clone() }),
            KvCmd::Cluster(ClusterCmd::Pause { machine: c.clone() }),
            KvCmd::Cluster(ClusterCmd::Resume { machine: c.clone() }),
            KvCmd::Cluster(ClusterCmd::Block {
                from: a.clone(),
                to: b.clone(),
            }),
            KvCmd::Cluster(ClusterCmd::Loss {
                machine: c.clone(),
                percent: 50,
            }),
            KvCmd::Cluster(ClusterCmd::Heal),
            KvCmd::Cluster(ClusterCmd::Partition {
                groups: vec![vec![a.clone()]],
            }),
        ];
        let case = Case {
            seed: 1,
            initial,
            commands,
        };
        let store = AnyStore::for_config("memory", Arc::new(FakeBackend::new()), &config)
            .expect("memory is a known store");
        let system = KvSystem::new(store);
        let trace = execute(&model, &system, &case);
        let t = model.timeline(&case, &trace, None);
        assert!(t.failing.is_none(), "{:?}", trace.verdict);
        let lanes: Vec<&str> = t.lanes.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(
            lanes[..ids.len()],
            ids.iter().map(|s| s.as_str()).collect::<Vec<_>>()
        );
        assert_eq!(lanes[ids.len()], NETWORK_LANE);
        let states = |m: &str| -> Vec<&str> {
            t.periods
                .iter()
                .filter(|p| p.lane == m)
                .map(|p| p.state)
                .collect()
        };
        assert_eq!(states(&a), ["booting", "up", "down", "booting", "up"]);
        assert_eq!(states(&b), ["booting", "up"]);
        let bands: Vec<(&str, &str)> = t.bands.iter().map(|b| (b.kind, b.label.as_str())).collect();
        let block = format!("block {a} -/-> {b}");
        let loss = format!("loss 50% {c}");
        let partition = format!("partition {a} | rest");
        assert_eq!(
            bands,
            [
                ("pause", "paused"),
                ("block", block.as_str()),
                ("loss", loss.as_str()),
                ("partition", partition.as_str()),
            ]
        );
        // The heal closes block and loss when it begins; the partition lasts to the end.
        let heal = &t.steps[6];
        assert!(t.bands[1].to == heal.from && t.bands[2].to == heal.from);
        assert_eq!(t.bands[3].to, t.end);
        let bar_lanes: Vec<&str> = t.bars.iter().map(|b| b.lane.as_str()).collect();
        assert_eq!(
            bar_lanes,
            [
                &a,
                &a,
                &c,
                &c,
                NETWORK_LANE,
                NETWORK_LANE,
                NETWORK_LANE,
                NETWORK_LANE
            ]
            .map(|s| s as &str)
        );
    }
}
