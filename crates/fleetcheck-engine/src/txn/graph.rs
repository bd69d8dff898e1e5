//! The dependency graph of a history and its cycles.
//!
//! Nodes `0..n` are the transactions (by history index); real time is encoded with extra
//! *barrier* nodes so it costs O(n) edges instead of O(n²) (or O(n × concurrency) for a
//! transitive reduction): walking the events in time order, every transaction that completed
//! since the last invocation points to a new barrier, each barrier points to the next, and each
//! invoked transaction is pointed to by the current barrier. So `T` reaches `U` through barriers
//! exactly when `T` completed before `U` was invoked. Paths through barriers collapse into one
//! real-time edge in explanations, and a cycle's length counts them as one edge (0-1 BFS).
//!
//! Strongly connected components come from `petgraph`'s Tarjan (a well-kept crate, filtered
//! views of one graph for each class of edges, so no copies); the shortest cycle through an
//! edge of the class each anomaly needs is a breadth-first search inside its component.

use std::collections::{HashMap, HashSet, VecDeque};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};
use petgraph::visit::{EdgeFiltered, EdgeRef};
use petgraph::Direction;

use super::types::{Key, TxnHistory, Value};
use super::verdict::{show, Anomaly, AnomalyKind, EdgeKind, Step};

/// Edge kinds, as bits for filtering.
const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
/// A transaction to the barrier after its completion (the real-time edge's cost).
const RT_OUT: u8 = 8;
/// Barrier to barrier, and barrier to a transaction invoked after it (cost 0).
const RT_CHAIN: u8 = 16;
const RT_IN: u8 = 32;
const DEPS: u8 = WW | WR | RW;
const REALTIME: u8 = RT_OUT | RT_CHAIN | RT_IN;

/// How many edges of the class an anomaly needs are tried per component: the cycle reported is
/// the shortest through those (exactly the shortest when a component has no more of them).
const TRIES_PER_COMPONENT: usize = 64;

/// Why a dependency edge exists: the key, and the values that make it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DepWhy {
    key: Key,
    /// ww: the earlier value; wr: the value read; rw: the last value read (`None`: empty/nil).
    a: Option<Value>,
    /// ww: the later value; rw: the value the later transaction wrote.
    b: Option<Value>,
    list: bool,
}

impl DepWhy {
    pub(crate) fn new(key: Key, a: Option<Value>, b: Option<Value>, list: bool) -> Self {
        Self { key, a, b, list }
    }
}

#[derive(Clone, Copy, Debug)]
struct Edge {
    kind: u8,
    /// Index into `whys` for dependency edges.
    why: u32,
}

/// The graph under construction and its searches.
pub(crate) struct DepGraph {
    n: usize,
    g: DiGraph<(), Edge, u32>,
    whys: Vec<DepWhy>,
    /// Dependency edges already added, so parallel ones on other keys are not repeated.
    seen: HashSet<(u32, u32, u8)>,
}

impl DepGraph {
    pub(crate) fn new(n: usize) -> Self {
        let mut g = DiGraph::with_capacity(n, n * 4);
        for _ in 0..n {
            g.add_node(());
        }
        Self {
            n,
            g,
            whys: Vec::new(),
            seen: HashSet::new(),
        }
    }

    fn dep(&mut self, from: u32, to: u32, kind: u8, why: DepWhy) {
        if from == to || !self.seen.insert((from, to, kind)) {
            return;
        }
        self.whys.push(why);
        let e = Edge {
            kind,
            why: self.whys.len() as u32 - 1,
        };
        self.g.add_edge(
            NodeIndex::new(from as usize),
            NodeIndex::new(to as usize),
            e,
        );
    }

    pub(crate) fn ww(&mut self, from: u32, to: u32, why: DepWhy) {
        self.dep(from, to, WW, why);
    }

    pub(crate) fn wr(&mut self, from: u32, to: u32, why: DepWhy) {
        self.dep(from, to, WR, why);
    }

    pub(crate) fn rw(&mut self, from: u32, to: u32, why: DepWhy) {
        self.dep(from, to, RW, why);
    }

    /// Real-time order among the transactions in the graph (see the module docs): only those
    /// that completed `Ok` have a completion; observed `Unknown` ones are only invoked.
    pub(crate) fn realtime(&mut self, history: &TxnHistory, in_graph: &[bool]) {
        // (time, 0 = invoke / 1 = complete, txn): at equal times an invocation does not follow
        // a completion.
        let mut events: Vec<(u64, u8, u32)> = Vec::with_capacity(self.n * 2);
        for (i, t) in history.iter().enumerate() {
            if !in_graph[i] {
                continue;
            }
            events.push((t.invoke, 0, i as u32));
            if let (Some(c), true) = (t.complete, t.outcome.ok().is_some()) {
                events.push((c, 1, i as u32));
            }
        }
        events.sort_unstable();
        let rt = |kind| Edge { kind, why: 0 };
        let mut barrier: Option<NodeIndex> = None;
        let mut pending: Vec<u32> = Vec::new();
        for (_, what, t) in events {
            let node = NodeIndex::new(t as usize);
            if what == 1 {
                pending.push(t);
                continue;
            }
            if !pending.is_empty() {
                let b = self.g.add_node(());
                for p in pending.drain(..) {
                    self.g.add_edge(NodeIndex::new(p as usize), b, rt(RT_OUT));
                }
                if let Some(prev) = barrier {
                    self.g.add_edge(prev, b, rt(RT_CHAIN));
                }
                barrier = Some(b);
            }
            if let Some(b) = barrier {
                self.g.add_edge(b, node, rt(RT_IN));
            }
        }
    }

    /// (dependency edges, real-time encoding edges).
    pub(crate) fn edge_counts(&self) -> (usize, usize) {
        let deps = self.whys.len();
        (deps, self.g.edge_count() - deps)
    }

    /// Every cycle anomaly: per strongly connected component of each class of edges, the
    /// shortest cycle through an edge of the class the anomaly needs.
    pub(crate) fn cycles(&self, history: &TxnHistory) -> Vec<Anomaly> {
        let mut out = Vec::new();
        let mut witnessed: HashSet<usize> = HashSet::new();
        // (component edges, required edge, path edges, fallback search if none found)
        let searches: [(u8, u8, u8, Option<u8>); 3] = [
            (WW, WW, WW, None),
            (WW | WR, WR, WW | WR, None),
            (DEPS, RW, WW | WR, Some(DEPS)),
        ];
        for (component, required, path, fallback) in searches {
            for scc in self.components(component) {
                let mut cycle = self.shortest_cycle(&scc, required, path);
                if cycle.is_none() {
                    if let Some(fb) = fallback {
                        cycle = self.shortest_cycle(&scc, required, fb);
                    }
                }
                if let Some(edges) = cycle {
                    let a = self.anomaly(history, &edges);
                    witnessed.extend(a.txns.iter().copied());
                    out.push(a);
                }
            }
        }
        for scc in self.components(DEPS | REALTIME) {
            if scc.iter().any(|n| witnessed.contains(&n.index())) {
                continue;
            }
            if let Some(edges) = self.shortest_cycle(&scc, RT_OUT, DEPS | REALTIME) {
                out.push(self.anomaly(history, &edges));
            }
        }
        out
    }

    /// The components of more than one node in the graph of edges whose kind is in `mask`.
    fn components(&self, mask: u8) -> Vec<Vec<NodeIndex>> {
        let filtered = EdgeFiltered::from_fn(&self.g, |e| e.weight().kind & mask != 0);
        let mut sccs: Vec<Vec<NodeIndex>> = tarjan_scc(&filtered)
            .into_iter()
            .filter(|c| c.len() > 1)
            .collect();
        for c in &mut sccs {
            c.sort_unstable();
        }
        sccs.sort_unstable();
        sccs
    }

    /// The shortest cycle inside `scc` made of one edge of a kind in `required` and a path back
    /// of kinds in `path`: its edges in order, or `None`.
    fn shortest_cycle(&self, scc: &[NodeIndex], required: u8, path: u8) -> Option<Vec<EdgeIndex>> {
        let members: HashSet<NodeIndex> = scc.iter().copied().collect();
        let mut best: Option<(u32, Vec<EdgeIndex>)> = None;
        let mut tries = 0;
        'outer: for &u in scc {
            for e in self.g.edges_directed(u, Direction::Outgoing) {
                if e.weight().kind & required == 0 || !members.contains(&e.target()) {
                    continue;
                }
                tries += 1;
                if tries > TRIES_PER_COMPONENT {
                    break 'outer;
                }
                if let Some((cost, mut back)) = self.path(&members, e.target(), u, path) {
                    let total = cost + cost_of(e.weight().kind);
                    if best.as_ref().is_none_or(|(c, _)| total < *c) {
                        back.insert(0, e.id());
                        best = Some((total, back));
                    }
                }
            }
        }
        best.map(|(_, edges)| edges)
    }

    /// The cheapest path from `from` to `to` inside `members` over edges of kinds in `mask`
    /// (0-1 BFS: edges inside the real-time encoding cost 0): its cost and edges.
    fn path(
        &self,
        members: &HashSet<NodeIndex>,
        from: NodeIndex,
        to: NodeIndex,
        mask: u8,
    ) -> Option<(u32, Vec<EdgeIndex>)> {
        let mut dist: HashMap<NodeIndex, (u32, Option<EdgeIndex>)> = HashMap::new();
        let mut queue: VecDeque<NodeIndex> = VecDeque::new();
        dist.insert(from, (0, None));
        queue.push_back(from);
        let mut done: HashSet<NodeIndex> = HashSet::new();
        while let Some(u) = queue.pop_front() {
            if !done.insert(u) {
                continue;
            }
            if u == to {
                break;
            }
            let du = dist[&u].0;
            for e in self.g.edges_directed(u, Direction::Outgoing) {
                let kind = e.weight().kind;
                let v = e.target();
                if kind & mask == 0 || !members.contains(&v) || done.contains(&v) {
                    continue;
                }
                let c = cost_of(kind);
                let dv = du + c;
                if dist.get(&v).is_none_or(|(d, _)| dv < *d) {
                    dist.insert(v, (dv, Some(e.id())));
                    if c == 0 {
                        queue.push_front(v);
                    } else {
                        queue.push_back(v);
                    }
                }
            }
        }
        let (cost, _) = *dist.get(&to)?;
        let mut edges = Vec::new();
        let mut at = to;
        while let Some((_, Some(e))) = dist.get(&at).copied() {
            edges.push(e);
            at = self.g.edge_endpoints(e).expect("edge of the graph").0;
        }
        edges.reverse();
        Some((cost, edges))
    }

    /// The anomaly of a cycle given as graph edges: collapsed into transaction-to-transaction
    /// steps, started at its lowest transaction, classified and explained.
    fn anomaly(&self, history: &TxnHistory, edges: &[EdgeIndex]) -> Anomaly {
        let mut steps: Vec<Step> = Vec::new();
        let mut rt_from: Option<usize> = None;
        for &e in edges {
            let (a, b) = self.g.edge_endpoints(e).expect("edge of the graph");
            let w = self.g[e];
            match w.kind {
                RT_OUT => rt_from = Some(a.index()),
                RT_CHAIN => {}
                RT_IN => {
                    let from = rt_from
                        .take()
                        .expect("a real-time path starts at a transaction");
                    steps.push(realtime_step(history, from, b.index()));
                }
                kind => steps.push(self.dep_step(a.index(), b.index(), kind, w.why)),
            }
        }
        debug_assert!(rt_from.is_none(), "cycles start at a transaction");
        let start = (0..steps.len()).min_by_key(|&i| steps[i].from).unwrap_or(0);
        steps.rotate_left(start);
        let rw = steps.iter().filter(|s| s.kind == EdgeKind::Rw).count();
        let wr = steps.iter().any(|s| s.kind == EdgeKind::Wr);
        let rt = steps.iter().any(|s| s.kind == EdgeKind::Realtime);
        let kind = match (rw, wr, rt) {
            (0, false, false) => AnomalyKind::G0,
            (0, true, false) => AnomalyKind::G1c,
            (1, _, false) => AnomalyKind::GSingle,
            (_, _, false) => AnomalyKind::G2Item,
            (0, false, true) => AnomalyKind::G0Realtime,
            (0, true, true) => AnomalyKind::G1cRealtime,
            (1, _, true) => AnomalyKind::GSingleRealtime,
            (_, _, true) => AnomalyKind::G2ItemRealtime,
        };
        let txns: Vec<usize> = steps.iter().map(|s| s.from).collect();
        let listing = txns
            .iter()
            .map(|&t| format!("T{t} {}", history.operations[t]))
            .collect();
        let names: Vec<String> = txns
            .iter()
            .chain(txns.first())
            .map(|t| format!("T{t}"))
            .collect();
        Anomaly {
            kind,
            txns,
            explanation: format!(
                "a cycle {} that no serial order{} allows",
                names.join(" < "),
                if rt { " agreeing with real time" } else { "" }
            ),
            cycle: steps,
            listing,
        }
    }

    fn dep_step(&self, from: usize, to: usize, kind: u8, why: u32) -> Step {
        let w = self.whys[why as usize];
        let k = w.key;
        let (verb, noun) = if w.list {
            ("appended", "append")
        } else {
            ("wrote", "write")
        };
        let (kind, why) = match kind {
            WW => (
                EdgeKind::Ww,
                format!(
                    "T{from} {verb} {} to key {k} and T{to} {verb} {} right after it in key {k}'s version order, so T{from} < T{to}",
                    show(w.a),
                    show(w.b)
                ),
            ),
            WR => (
                EdgeKind::Wr,
                if w.list {
                    format!(
                        "T{from} appended {} to key {k} and T{to}'s read of key {k} saw it, so T{from} < T{to}",
                        show(w.a)
                    )
                } else {
                    format!(
                        "T{from} wrote {} to key {k} and T{to} read it, so T{from} < T{to}",
                        show(w.a)
                    )
                },
            ),
            _ => (
                EdgeKind::Rw,
                match (w.list, w.a) {
                    (true, Some(last)) => format!(
                        "T{to} appended {} to key {k} and T{from}'s read of key {k} (up to {last}) did not see it, so T{from} < T{to}",
                        show(w.b)
                    ),
                    (true, None) => format!(
                        "T{to} appended {} to key {k} and T{from}'s read of key {k} was empty, so T{from} < T{to}",
                        show(w.b)
                    ),
                    (false, _) => format!(
                        "T{to} wrote {} to key {k} and T{from} read key {k} as nil (before any {noun}), so T{from} < T{to}",
                        show(w.b)
                    ),
                },
            ),
        };
        Step {
            from,
            to,
            kind,
            key: Some(k),
            why,
        }
    }
}

fn cost_of(kind: u8) -> u32 {
    u32::from(kind & (RT_CHAIN | RT_IN) == 0)
}

fn realtime_step(history: &TxnHistory, from: usize, to: usize) -> Step {
    let ms = |ns: u64| ns as f64 / 1e6;
    let (a, b) = (&history.operations[from], &history.operations[to]);
    let same = if a.worker == b.worker {
        format!(" (worker {}'s process order)", a.worker)
    } else {
        String::new()
    };
    Step {
        from,
        to,
        kind: EdgeKind::Realtime,
        key: None,
        why: format!(
            "T{from} completed at {:.3} ms, before T{to} was invoked at {:.3} ms{same}, so T{from} < T{to}",
            ms(a.complete.unwrap_or(0)),
            ms(b.invoke)
        ),
    }
}
