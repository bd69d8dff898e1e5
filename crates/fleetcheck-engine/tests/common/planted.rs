//! In-memory systems with planted bugs, each with a known unique minimal counterexample.
//! Shared by the engine's tests and its benchmark against proptest-state-machine.

#![allow(dead_code)]

use std::collections::BTreeMap;

use fleetcheck_engine::{check, Abort, Case, Check, Gen, Labels, Model, System};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// 1. A bounded ring buffer whose length is computed modulo its capacity: full looks empty.
// ---------------------------------------------------------------------------------------------

/// Model of a FIFO queue of bounded capacity.
#[derive(Debug, Default)]
pub struct RingModel;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingState {
    pub capacity: usize,
    pub items: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RingCmd {
    Push(u32),
    Pop,
}

pub const RING_MAX_CAPACITY: usize = 8;

impl Model for RingModel {
    type State = RingState;
    type Command = RingCmd;
    type Output = Option<u32>;

    fn initial_state(&self, g: &mut Gen) -> RingState {
        RingState {
            capacity: g.range(1..=RING_MAX_CAPACITY),
            items: Vec::new(),
        }
    }

    fn shrink_state(&self, s: &RingState) -> Vec<RingState> {
        let mut out = Vec::new();
        for c in [1, s.capacity / 2, s.capacity.saturating_sub(1)] {
            if c >= 1 && c < s.capacity && !out.iter().any(|o: &RingState| o.capacity == c) {
                out.push(RingState {
                    capacity: c,
                    items: Vec::new(),
                });
            }
        }
        out
    }

    fn command(&self, s: &RingState, g: &mut Gen) -> Option<RingCmd> {
        let push = RingCmd::Push(g.range(0..=99));
        if s.items.len() < s.capacity {
            g.frequency(&[(3, push), (2, RingCmd::Pop)]).cloned()
        } else {
            Some(RingCmd::Pop)
        }
    }

    fn shrink_command(&self, c: &RingCmd) -> Vec<RingCmd> {
        match c {
            RingCmd::Push(v) if *v > 0 => {
                let mut out = vec![RingCmd::Push(0)];
                if v / 2 > 0 {
                    out.push(RingCmd::Push(v / 2));
                }
                out
            }
            _ => Vec::new(),
        }
    }

    fn precondition(&self, s: &RingState, c: &RingCmd) -> bool {
        match c {
            RingCmd::Push(_) => s.items.len() < s.capacity,
            RingCmd::Pop => true,
        }
    }

    fn next_state(&self, s: &RingState, c: &RingCmd) -> RingState {
        let mut n = s.clone();
        match c {
            RingCmd::Push(v) => n.items.push(*v),
            RingCmd::Pop => {
                if !n.items.is_empty() {
                    n.items.remove(0);
                }
            }
        }
        n
    }

    fn postcondition(&self, s: &RingState, c: &RingCmd, out: &Option<u32>) -> Check {
        match c {
            RingCmd::Push(_) => Ok(()),
            RingCmd::Pop => {
                let expected = s.items.first().copied();
                check(*out == expected, || {
                    format!("pop returned {out:?}, expected {expected:?}")
                })
            }
        }
    }

    fn labels(&self, initial: &RingState, _: &[RingCmd], labels: &mut Labels) {
        labels.add("capacity", initial.capacity);
    }
}

/// The buggy ring buffer.
#[derive(Debug)]
pub struct Ring {
    slots: Vec<u32>,
    head: usize,
    tail: usize,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: vec![0; capacity],
            head: 0,
            tail: 0,
        }
    }
    pub fn len(&self) -> usize {
        // The planted bug: a full buffer (tail wrapped onto head) has length 0.
        (self.tail + self.slots.len() - self.head) % self.slots.len()
    }
    pub fn push(&mut self, v: u32) {
        self.slots[self.tail] = v;
        self.tail = (self.tail + 1) % self.slots.len();
    }
    pub fn pop(&mut self) -> Option<u32> {
        if self.len() == 0 {
            return None;
        }
        let v = self.slots[self.head];
        self.head = (self.head + 1) % self.slots.len();
        Some(v)
    }
}

#[derive(Debug, Default)]
pub struct RingSystem;

impl System<RingModel> for RingSystem {
    type Instance = Ring;
    fn setup(&self, s: &RingState) -> Result<Ring, Abort> {
        Ok(Ring::new(s.capacity))
    }
    fn run(&self, r: &mut Ring, _: &RingState, c: &RingCmd) -> Result<Option<u32>, Abort> {
        Ok(match c {
            RingCmd::Push(v) => {
                r.push(*v);
                None
            }
            RingCmd::Pop => r.pop(),
        })
    }
    fn teardown(&self, _: Ring) -> Result<(), Abort> {
        Ok(())
    }
}

/// The unique minimal counterexample: capacity 1, `[Push(0), Pop]`.
pub fn ring_is_minimal(case: &Case<RingModel>) -> bool {
    case.initial.capacity == 1 && case.commands == vec![RingCmd::Push(0), RingCmd::Pop]
}

// ---------------------------------------------------------------------------------------------
// 2. A key-value store that loses a key put again after it was deleted.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
pub struct KvModel;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvState {
    /// A parameter of the store that does not matter for the bug (shrinks to 1).
    pub shards: u8,
    pub map: BTreeMap<u8, u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KvCmd {
    Put(u8, u8),
    Get(u8),
    Delete(u8),
}

pub const KV_KEYS: u8 = 3;

impl KvCmd {
    pub fn key(&self) -> u8 {
        match self {
            KvCmd::Put(k, _) | KvCmd::Get(k) | KvCmd::Delete(k) => *k,
        }
    }
    fn with_key(&self, k: u8) -> KvCmd {
        match self {
            KvCmd::Put(_, v) => KvCmd::Put(k, *v),
            KvCmd::Get(_) => KvCmd::Get(k),
            KvCmd::Delete(_) => KvCmd::Delete(k),
        }
    }
}

impl Model for KvModel {
    type State = KvState;
    type Command = KvCmd;
    type Output = Option<u8>;

    fn initial_state(&self, g: &mut Gen) -> KvState {
        KvState {
            shards: g.range(1..=3),
            map: BTreeMap::new(),
        }
    }

    fn shrink_state(&self, s: &KvState) -> Vec<KvState> {
        if s.shards > 1 {
            vec![KvState {
                shards: 1,
                map: BTreeMap::new(),
            }]
        } else {
            Vec::new()
        }
    }

    fn command(&self, _: &KvState, g: &mut Gen) -> Option<KvCmd> {
        let k = g.range(0..=KV_KEYS - 1);
        let v = g.range(0..=9);
        g.frequency(&[
            (3, KvCmd::Put(k, v)),
            (2, KvCmd::Get(k)),
            (2, KvCmd::Delete(k)),
        ])
        .cloned()
    }

    fn shrink_command(&self, c: &KvCmd) -> Vec<KvCmd> {
        match c {
            KvCmd::Put(k, v) if *v > 0 => vec![KvCmd::Put(*k, 0), KvCmd::Put(*k, v / 2)],
            _ => Vec::new(),
        }
    }

    /// Renames a key everywhere (swapping it with the smaller name if that one is used too).
    fn shrink_commands(&self, _: &KvState, commands: &[KvCmd]) -> Vec<Vec<KvCmd>> {
        let mut used: Vec<u8> = commands.iter().map(KvCmd::key).collect();
        used.sort_unstable();
        used.dedup();
        let mut out = Vec::new();
        for &k in used.iter().rev() {
            for target in 0..k {
                out.push(
                    commands
                        .iter()
                        .map(|c| match c.key() {
                            x if x == k => c.with_key(target),
                            x if x == target => c.with_key(k),
                            _ => c.clone(),
                        })
                        .collect(),
                );
            }
        }
        out
    }

    fn next_state(&self, s: &KvState, c: &KvCmd) -> KvState {
        let mut n = s.clone();
        match c {
            KvCmd::Put(k, v) => {
                n.map.insert(*k, *v);
            }
            KvCmd::Delete(k) => {
                n.map.remove(k);
            }
            KvCmd::Get(_) => {}
        }
        n
    }

    fn postcondition(&self, s: &KvState, c: &KvCmd, out: &Option<u8>) -> Check {
        match c {
            KvCmd::Get(k) => {
                let expected = s.map.get(k).copied();
                check(*out == expected, || {
                    format!("get({k}) returned {out:?}, expected {expected:?}")
                })
            }
            _ => Ok(()),
        }
    }
}

/// The buggy store: deletes leave tombstones, and a put onto a tombstone keeps it.
#[derive(Debug, Default)]
pub struct Kv {
    entries: Vec<(u8, u8, bool)>,
}

impl Kv {
    pub fn put(&mut self, k: u8, v: u8) {
        match self.entries.iter_mut().find(|e| e.0 == k) {
            Some(e) => e.1 = v, // the planted bug: the tombstone (e.2) stays
            None => self.entries.push((k, v, false)),
        }
    }
    pub fn get(&self, k: u8) -> Option<u8> {
        self.entries.iter().find(|e| e.0 == k && !e.2).map(|e| e.1)
    }
    pub fn delete(&mut self, k: u8) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.0 == k) {
            e.2 = true;
        }
    }
}

#[derive(Debug, Default)]
pub struct KvSystem;

impl System<KvModel> for KvSystem {
    type Instance = Kv;
    fn setup(&self, _: &KvState) -> Result<Kv, Abort> {
        Ok(Kv::default())
    }
    fn run(&self, kv: &mut Kv, _: &KvState, c: &KvCmd) -> Result<Option<u8>, Abort> {
        Ok(match c {
            KvCmd::Put(k, v) => {
                kv.put(*k, *v);
                None
            }
            KvCmd::Get(k) => kv.get(*k),
            KvCmd::Delete(k) => {
                kv.delete(*k);
                None
            }
        })
    }
    fn teardown(&self, _: Kv) -> Result<(), Abort> {
        Ok(())
    }
}

/// The unique minimal counterexample: one shard, `[Put(0,0), Delete(0), Put(0,0), Get(0)]`.
pub fn kv_is_minimal(case: &Case<KvModel>) -> bool {
    case.initial.shards == 1
        && case.commands
            == vec![
                KvCmd::Put(0, 0),
                KvCmd::Delete(0),
                KvCmd::Put(0, 0),
                KvCmd::Get(0),
            ]
}

// ---------------------------------------------------------------------------------------------
// 3. The seed's network: a ping between two running machines of different kernels is lost.
// ---------------------------------------------------------------------------------------------

pub const KERNELS: [&str; 4] = ["3.14", "3.13", "3.12", "3.10"];
pub const MIN_MEMORY: u32 = 96;
pub const MAX_MEMORY: u32 = 256;

#[derive(Debug, Default)]
pub struct NetModel;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetMachine {
    pub id: String,
    pub ip: u8,
    pub memory: u32,
    pub kernel: String,
    pub running: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetState {
    pub machines: Vec<NetMachine>,
}

impl NetState {
    pub fn get(&self, id: &str) -> Option<&NetMachine> {
        self.machines.iter().find(|m| m.id == id)
    }
    fn ids(&self, running: bool) -> Vec<String> {
        self.machines
            .iter()
            .filter(|m| m.running == running)
            .map(|m| m.id.clone())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NetCmd {
    Boot(String),
    Shutdown(String),
    Ping(String, String),
}

impl Model for NetModel {
    type State = NetState;
    type Command = NetCmd;
    type Output = bool;

    fn initial_state(&self, g: &mut Gen) -> NetState {
        let n = g.range(1..=4usize);
        let ips = g.distinct(n, 2..=254);
        let machines = ips
            .into_iter()
            .map(|ip| NetMachine {
                id: g.lowercase(8),
                ip: ip as u8,
                memory: g.range(MIN_MEMORY..=MAX_MEMORY),
                kernel: g.choose(&KERNELS).expect("kernels").to_string(),
                running: false,
            })
            .collect();
        NetState { machines }
    }

    fn shrink_state(&self, s: &NetState) -> Vec<NetState> {
        let mut out = Vec::new();
        for i in 0..s.machines.len() {
            if s.machines.len() > 1 {
                let mut n = s.clone();
                n.machines.remove(i);
                out.push(n);
            }
        }
        for i in 0..s.machines.len() {
            let m = &s.machines[i];
            let at = KERNELS.iter().position(|k| *k == m.kernel).unwrap_or(0);
            for k in &KERNELS[..at] {
                let mut n = s.clone();
                n.machines[i].kernel = k.to_string();
                out.push(n);
            }
            for mem in [MIN_MEMORY, (m.memory + MIN_MEMORY) / 2] {
                if mem < m.memory {
                    let mut n = s.clone();
                    n.machines[i].memory = mem;
                    out.push(n);
                }
            }
        }
        out
    }

    /// The seed's generator, with its frequencies.
    fn command(&self, s: &NetState, g: &mut Gen) -> Option<NetCmd> {
        let (up, down) = (s.ids(true), s.ids(false));
        let pick = |g: &mut Gen, ids: &[String]| g.choose(ids).cloned();
        if up.is_empty() {
            return pick(g, &down).map(NetCmd::Boot);
        }
        let kinds: &[(u32, u8)] = if down.is_empty() {
            &[(1, 1), (4, 2)]
        } else {
            &[(2, 0), (1, 1), (4, 2), (4, 3)]
        };
        match g.frequency(kinds)? {
            0 => pick(g, &down).map(NetCmd::Boot),
            1 => pick(g, &up).map(NetCmd::Shutdown),
            2 => Some(NetCmd::Ping(pick(g, &up)?, pick(g, &up)?)),
            _ => Some(NetCmd::Ping(pick(g, &up)?, pick(g, &down)?)),
        }
    }

    fn precondition(&self, s: &NetState, c: &NetCmd) -> bool {
        match c {
            NetCmd::Boot(id) => s.get(id).is_some_and(|m| !m.running),
            NetCmd::Shutdown(id) => s.get(id).is_some_and(|m| m.running),
            NetCmd::Ping(from, to) => s.get(from).is_some_and(|m| m.running) && s.get(to).is_some(),
        }
    }

    fn next_state(&self, s: &NetState, c: &NetCmd) -> NetState {
        let mut n = s.clone();
        let set = |n: &mut NetState, id: &str, running: bool| {
            if let Some(m) = n.machines.iter_mut().find(|m| m.id == id) {
                m.running = running;
            }
        };
        match c {
            NetCmd::Boot(id) => set(&mut n, id, true),
            NetCmd::Shutdown(id) => set(&mut n, id, false),
            NetCmd::Ping(..) => {}
        }
        n
    }

    fn postcondition(&self, s: &NetState, c: &NetCmd, reply: &bool) -> Check {
        match c {
            NetCmd::Ping(_, to) => {
                let expected = s.get(to).is_some_and(|m| m.running);
                check(*reply == expected, || {
                    format!("ping to {to}: reply {reply}, expected {expected}")
                })
            }
            _ => check(*reply, || "operation failed".into()),
        }
    }

    fn cost(&self, c: &NetCmd) -> u32 {
        match c {
            NetCmd::Boot(_) => 10,
            NetCmd::Shutdown(_) => 2,
            NetCmd::Ping(..) => 1,
        }
    }

    fn labels(&self, initial: &NetState, _: &[NetCmd], labels: &mut Labels) {
        labels.add("machines", initial.machines.len());
        for m in &initial.machines {
            labels.add("kernel", &m.kernel);
        }
    }
}

/// The fake network with the planted bug.
#[derive(Debug, Default)]
pub struct NetSystem;

impl System<NetModel> for NetSystem {
    type Instance = NetState;
    fn setup(&self, s: &NetState) -> Result<NetState, Abort> {
        Ok(s.clone())
    }
    fn run(&self, net: &mut NetState, _: &NetState, c: &NetCmd) -> Result<bool, Abort> {
        Ok(match c {
            NetCmd::Boot(id) | NetCmd::Shutdown(id) => {
                let on = matches!(c, NetCmd::Boot(_));
                let m = net
                    .machines
                    .iter_mut()
                    .find(|m| &m.id == id)
                    .ok_or_else(|| Abort::new(format!("no machine {id}")))?;
                m.running = on;
                true
            }
            NetCmd::Ping(from, to) => {
                let (f, t) = (net.get(from).cloned(), net.get(to).cloned());
                match (f, t) {
                    (Some(f), Some(t)) => {
                        // The planted bug: machines of different kernels cannot talk.
                        f.running && t.running && f.kernel == t.kernel
                    }
                    _ => false,
                }
            }
        })
    }
    fn teardown(&self, _: NetState) -> Result<(), Abort> {
        Ok(())
    }
}

/// The minimal counterexample: two machines with the least memory and the two simplest
/// distinct kernels (3.14 and 3.13), both booted (in either order), then one ping from one to
/// the other (either way).
pub fn net_is_minimal(case: &Case<NetModel>) -> bool {
    let ms = &case.initial.machines;
    if ms.len() != 2 || ms.iter().any(|m| m.memory != MIN_MEMORY) {
        return false;
    }
    let mut kernels: Vec<&str> = ms.iter().map(|m| m.kernel.as_str()).collect();
    kernels.sort_unstable();
    let (a, b) = (ms[0].id.clone(), ms[1].id.clone());
    let c = &case.commands;
    kernels == ["3.13", "3.14"]
        && c.len() == 3
        && c[..2].contains(&NetCmd::Boot(a.clone()))
        && c[..2].contains(&NetCmd::Boot(b.clone()))
        && (c[2] == NetCmd::Ping(a.clone(), b.clone()) || c[2] == NetCmd::Ping(b, a))
}
