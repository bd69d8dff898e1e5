//! Behaviour pinned before the code moves: a fingerprint of the cases the generators make for
//! seeds 0..100 (sizes 1..=20), for ping (default, faults, mixed versions, roles) and kv (every
//! system, with every fault and versions). A refactor that keeps these keeps every seed's run.
//! When a change means to alter generation, it updates the constant and says so.

use std::path::Path;

use fleetcheck_engine::{generate, Model};
use fleetcheck_scenarios::config::ScenarioConfig;
use fleetcheck_scenarios::kv::KvModel;
use fleetcheck_scenarios::ping::PingModel;

/// FNV-1a of the generated cases of seeds 0..100: their JSON (what replay files hold) and,
/// apart, what people read of them (the initial state and each command as the counterexample
/// prints them, and the labels). A change of representation changes the first only.
fn fingerprint<M: Model>(model: &M) -> (u64, u64)
where
    fleetcheck_engine::Case<M>: serde::Serialize,
{
    let fnv = |h: &mut u64, text: &str| {
        for b in text.bytes() {
            *h ^= u64::from(b);
            *h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    let (mut json, mut read) = (0xcbf2_9ce4_8422_2325, 0xcbf2_9ce4_8422_2325);
    for seed in 0..100 {
        let case = generate(model, seed, 1, 20).case;
        fnv(&mut json, &serde_json::to_string(&case).unwrap());
        fnv(&mut read, &model.describe_state(&case.initial));
        for c in &case.commands {
            fnv(&mut read, &model.describe_command(c));
        }
        let mut labels = fleetcheck_engine::Labels::default();
        model.labels(&case.initial, &case.commands, &mut labels);
        fnv(&mut read, &format!("{labels:?}"));
    }
    (json, read)
}

fn example(name: &str) -> ScenarioConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    ScenarioConfig::from_file(&path).unwrap()
}

const KV_EVERYTHING: &str = r#"
[kv]
nodes = [1, 5]
faults = ["crash", "pause", "partition", "block", "loss", "upgrade"]
filesystem = ["ext4", "xfs", "btrfs"]

[services.etcd]
versions = [
  { version = "3.4-a", path = "/bin/true" },
  { version = "3.4-b", path = "/bin/sh" },
]

[services.redis-server]
versions = [
  { version = "7.0-a", path = "/bin/true" },
  { version = "7.0-b", path = "/bin/sh" },
]
"#;

const ROLES: &str = r#"
[roles.server]
count = { min = 1, max = 3 }
filesystem = ["xfs", "ext4"]
memory_mb = { min = 128, max = 512 }
[roles.client]
count = 2
kernels = ["6.1", "6.12"]
[ping]
faults = ["pause", "partition", "block"]
upgrade = true
"#;

/// (what, fingerprint) of every pinned generator.
fn fingerprints() -> Vec<(String, (u64, u64))> {
    let mut all = vec![
        (
            "ping default".to_string(),
            fingerprint(&PingModel::default()),
        ),
        (
            "ping faults.toml".into(),
            fingerprint(&PingModel::new(example("faults.toml"))),
        ),
        (
            "ping mixed-versions.toml".into(),
            fingerprint(&PingModel::new(example("mixed-versions.toml"))),
        ),
        (
            "ping roles".into(),
            fingerprint(&PingModel::new(ScenarioConfig::from_toml(ROLES).unwrap())),
        ),
    ];
    let everything = ScenarioConfig::from_toml(KV_EVERYTHING).unwrap();
    for system in ["etcd", "redis", "memory", "memory-lossy"] {
        all.push((
            format!("kv {system} default"),
            fingerprint(&KvModel::new(&ScenarioConfig::default(), system)),
        ));
        all.push((
            format!("kv {system} everything"),
            fingerprint(&KvModel::new(&everything, system)),
        ));
    }
    all.push((
        "kv etcd etcd-versions.toml".into(),
        fingerprint(&KvModel::new(&example("etcd-versions.toml"), "etcd")),
    ));
    all
}

/// (JSON, what people read) taken from the generators at commit 7f0ae0b, before the scenario
/// framework moved them. A change of representation (a field renamed, with old replay files
/// still read) may change the first, never the second without saying why.
///
/// Ping's have not moved. kv's moved once, when kv's nodes and fault commands became the
/// cluster layer's machines and commands: the JSON names `machines`, `machine` and a
/// partition's `groups` (files naming `nodes`, `node` and `side` still read), a node's versions
/// name their service, and people read `Block(a -/-> b)` and `Upgrade(a: etcd -> 3.4-b)`
/// where they read `Block(a -> b)` and `Upgrade(a -> 3.4-b)`. The cases are the same: every
/// case of seeds 0..100 of the nine kv generators, as the code before wrote it, read into
/// the new types equals the case the new code generates (`old_kv_cases_read_as_the_new`
/// keeps ten of them).
const PINNED: &[(&str, (u64, u64))] = &[
    (
        "ping default",
        (0x3346_567a_ce40_e8cc, 0x894d_52bd_b677_bde0),
    ),
    (
        "ping faults.toml",
        (0x2735_f48e_d51a_61c4, 0xe702_bc06_1916_83ae),
    ),
    (
        "ping mixed-versions.toml",
        (0x5062_7407_481f_a433, 0x735a_c2d2_06b6_b527),
    ),
    ("ping roles", (0x6b7b_a44f_3bce_95e7, 0x45a7_3de6_97f8_fb34)),
    (
        "kv etcd default",
        (0xbfbe_800e_e012_b458, 0x6e76_5b18_7452_20be),
    ),
    (
        "kv etcd everything",
        (0xd773_177b_5ea2_2223, 0xe76c_01af_d9c7_9ea5),
    ),
    (
        "kv redis default",
        (0xbfbe_800e_e012_b458, 0x6e76_5b18_7452_20be),
    ),
    (
        "kv redis everything",
        (0x8b2a_089a_eeff_2e15, 0xe9c3_becf_cb1b_d568),
    ),
    (
        "kv memory default",
        (0xbfbe_800e_e012_b458, 0x6e76_5b18_7452_20be),
    ),
    (
        "kv memory everything",
        (0xa512_79ba_b12a_3745, 0x9f4d_79a9_e980_3de2),
    ),
    (
        "kv memory-lossy default",
        (0xbfbe_800e_e012_b458, 0x6e76_5b18_7452_20be),
    ),
    (
        "kv memory-lossy everything",
        (0xa512_79ba_b12a_3745, 0x9f4d_79a9_e980_3de2),
    ),
    (
        "kv etcd etcd-versions.toml",
        (0xd66c_e542_2a4c_0185, 0x3c12_6e60_45ae_7ae2),
    ),
];

#[test]
fn generated_cases_are_pinned() {
    let now = fingerprints();
    let text: String = now
        .iter()
        .map(|(what, (j, r))| format!("    (\"{what}\", (0x{j:016x}, 0x{r:016x})),\n"))
        .collect();
    assert_eq!(now.len(), PINNED.len(), "the pinned table is\n{text}");
    for ((what, h), (pinned_what, pinned)) in now.iter().zip(PINNED) {
        assert_eq!(what, pinned_what, "the pinned table is\n{text}");
        assert_eq!(h.1, pinned.1, "{what}: its generated cases changed");
        assert_eq!(h.0, pinned.0, "{what}: the JSON of its cases changed");
    }
}

/// Ten cases of `kv memory everything` as the code before the cluster layer wrote them (seeds
/// 0..10): they read into today's types and are the cases today's generator makes.
#[test]
fn old_kv_cases_read_as_the_new() {
    let model = KvModel::new(&ScenarioConfig::from_toml(KV_EVERYTHING).unwrap(), "memory");
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kv-memory-everything-0-10.jsonl");
    let old = std::fs::read_to_string(path).unwrap();
    assert_eq!(old.lines().count(), 10);
    for (seed, line) in old.lines().enumerate() {
        assert!(
            line.contains(r#""nodes":"#),
            "written before the cluster layer"
        );
        let read: fleetcheck_engine::Case<KvModel> = serde_json::from_str(line).unwrap();
        assert_eq!(
            read,
            generate(&model, seed as u64, 1, 20).case,
            "seed {seed}"
        );
    }
}
