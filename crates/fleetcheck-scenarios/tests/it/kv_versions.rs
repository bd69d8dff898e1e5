//! Service versions and rolling upgrades in the kv scenario, on the in-memory store: versions
//! are drawn only when the configuration lists the store's service (so other configurations
//! keep their cases), shrink toward the first, and `Upgrade` is generated only when asked for.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use fleetcheck_engine::{generate, run, Config, Gen, Model, Outcome};
use fleetcheck_scenarios::cluster::{ClusterCmd, Machine};
use fleetcheck_scenarios::config::ScenarioConfig;
use fleetcheck_scenarios::kv::memory::MemoryStore;
use fleetcheck_scenarios::kv::{self, KvCmd, KvModel, KvSystem};

/// Versions need programs that exist; the memory store never runs them.
const VERSIONS: &str = r#"
[kv]
nodes = [1, 3]
faults = ["crash", "pause", "partition", "block", "loss", "upgrade"]

[services.etcd]
versions = [
  { version = "3.4-a", path = "/bin/true" },
  { version = "3.4-b", path = "/bin/sh" },
  { version = "3.4-c", path = "/bin/cat" },
]
"#;

fn config(text: &str) -> ScenarioConfig {
    ScenarioConfig::from_toml(text).unwrap()
}

/// FNV-1a of the JSON of the cases of seeds 0..60 (sizes 1..=20): a fingerprint of what the
/// generator makes.
fn fingerprint(model: &KvModel) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for seed in 0..60 {
        let case = generate(model, seed, 1, 20).case;
        for b in serde_json::to_string(&case).unwrap().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Taken from the generator before nodes had versions: configurations that list no versions
/// of the store's service must keep generating exactly these cases. (Taken again when nodes
/// became the cluster layer's machines, whose JSON names `machines`; the cases stayed, see
/// `fingerprint.rs`.)
const DEFAULT_CASES: u64 = 0x6486_f97d_f5c0_1945;
/// The same for `[kv] nodes = [1, 5]` and `filesystem = ["ext4", "xfs"]`.
const FILESYSTEM_CASES: u64 = 0x1312_db4d_37f3_3cc0;

#[test]
fn kv_versions_leave_cases_without_them_unchanged() {
    assert_eq!(
        fingerprint(&KvModel::new(&ScenarioConfig::default(), "etcd")),
        DEFAULT_CASES
    );
    let fs = "[kv]\nnodes = [1, 5]\nfilesystem = [\"ext4\", \"xfs\"]\n";
    assert_eq!(
        fingerprint(&KvModel::new(&config(fs), "etcd")),
        FILESYSTEM_CASES
    );
    // Another service's versions, "upgrade" among the faults, or versions of etcd for a store
    // that runs no etcd: nothing to draw, the same cases.
    let unrelated = [
        ("[services.fw]\nversions = [{ version = \"1\", path = \"/bin/true\" }, { version = \"2\", path = \"/bin/sh\" }]\n", "etcd"),
        ("[kv]\nfaults = [\"crash\", \"pause\", \"partition\", \"block\", \"loss\", \"upgrade\"]\n", "etcd"),
        ("[services.etcd]\nversions = [{ version = \"1\", path = \"/bin/true\" }, { version = \"2\", path = \"/bin/sh\" }]\n", "redis"),
        ("[kv]\nfaults = [\"crash\", \"pause\", \"partition\", \"block\", \"loss\", \"upgrade\"]\n[services.etcd]\nversions = [{ version = \"1\", path = \"/bin/true\" }, { version = \"2\", path = \"/bin/sh\" }]\n", "memory"),
    ];
    for (text, system) in unrelated {
        let model = KvModel::new(&config(text), system);
        assert_eq!(model.service, None, "{system}: {text}");
        assert_eq!(fingerprint(&model), DEFAULT_CASES, "{system}: {text}");
    }
}

#[test]
fn kv_versions_are_drawn_from_the_store_service_only() {
    let cfg = config(VERSIONS);
    let etcd = KvModel::new(&cfg, "etcd");
    assert_eq!(etcd.service.as_ref().unwrap().name, "etcd");
    let mut seen = BTreeSet::new();
    for seed in 0..200 {
        for n in etcd.initial_state(&mut Gen::new(seed, 10)).machines {
            seen.insert(
                n.versions
                    .get("etcd")
                    .cloned()
                    .expect("every node gets a version"),
            );
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["3.4-a", "3.4-b", "3.4-c"]
    );
    // Redis' service is `redis-server`: these versions are etcd's, not its.
    assert_eq!(kv::service_of("redis"), Some("redis-server"));
    assert_eq!(kv::service_of("memory"), None);
    let redis = KvModel::new(&cfg, "redis");
    for seed in 0..50 {
        let s = redis.initial_state(&mut Gen::new(seed, 10));
        assert!(s.machines.iter().all(|n| n.versions.is_empty()));
    }
}

#[test]
fn kv_versions_shrink_toward_the_first() {
    let model = KvModel::new(&config(VERSIONS), "etcd");
    let mut s = model.initial_state(&mut Gen::new(3, 10));
    for n in &mut s.machines {
        n.versions.insert("etcd".into(), "3.4-c".into());
    }
    s.machines[0].versions.insert("etcd".into(), "3.4-a".into());
    let candidates = model.shrink_state(&s);
    for (i, n) in s.machines.iter().enumerate().skip(1) {
        for earlier in ["3.4-a", "3.4-b"] {
            assert!(
                candidates
                    .iter()
                    .any(|c| c.machines.len() == s.machines.len()
                        && c.machines[i].versions.get("etcd").map(String::as_str) == Some(earlier)),
                "{} to {earlier}",
                n.id
            );
        }
    }
    // The first node is on the preferred version already: no candidate changes it.
    assert!(candidates
        .iter()
        .filter(|c| c.machines.len() == s.machines.len())
        .all(|c| c.machines[0].versions.get("etcd").map(String::as_str) == Some("3.4-a")));
    // An upgrade shrinks to upgrades to earlier versions.
    let node = s.machines[0].id.clone();
    let upgrade = |version: &str| {
        KvCmd::Cluster(ClusterCmd::Upgrade {
            machine: node.clone(),
            service: "etcd".into(),
            version: version.into(),
        })
    };
    assert_eq!(
        model.shrink_command(&upgrade("3.4-c")),
        vec![upgrade("3.4-a"), upgrade("3.4-b")]
    );
    assert!(model.shrink_command(&upgrade("3.4-a")).is_empty());
}

#[test]
fn kv_upgrades_are_generated_only_when_asked_for() {
    let upgrades = |text: &str| {
        let model = KvModel::new(&config(text), "etcd");
        (0..100)
            .flat_map(|seed| generate(&model, seed, 1, 20).case.commands)
            .filter(|c| matches!(c, KvCmd::Cluster(ClusterCmd::Upgrade { .. })))
            .count()
    };
    assert!(upgrades(VERSIONS) > 50, "{} upgrades", upgrades(VERSIONS));
    let without = VERSIONS.replace(", \"upgrade\"]", "]");
    assert_eq!(upgrades(&without), 0, "not among the faults");
    let one = r#"
[kv]
faults = ["upgrade"]
[services.etcd]
versions = [{ version = "3.4-a", path = "/bin/true" }]
"#;
    assert_eq!(upgrades(one), 0, "a single version");
}

#[test]
fn kv_upgrades_keep_to_the_model() {
    let model = KvModel::new(&config(VERSIONS), "etcd");
    for seed in 0..100 {
        let case = generate(&model, seed, 1, 20).case;
        let mut state = case.initial.clone();
        for c in &case.commands {
            if let KvCmd::Cluster(ClusterCmd::Upgrade {
                machine: node,
                version,
                ..
            }) = c
            {
                let before = state.machine(node).unwrap().clone();
                assert!(!before.paused, "never a paused node");
                assert_ne!(before.versions.get("etcd"), Some(version));
                let after = model.next_state(&state, c);
                let n = after.machine(node).unwrap();
                assert_eq!(n.versions.get("etcd"), Some(version));
                assert_eq!(n.running, before.running, "up again, or still down");
            }
            state = model.next_state(&state, c);
        }
    }
}

#[test]
fn kv_upgrades_run_on_the_memory_store_and_are_labelled() {
    let model = KvModel::new(&config(VERSIONS), "etcd");
    let system = KvSystem::new(MemoryStore::default());
    let report = run(
        &model,
        &system,
        &Config {
            seed: Some(4),
            ..Config::default()
        },
        &(),
    );
    assert!(
        matches!(report.outcome, Outcome::Passed),
        "{}",
        report.outcome.status()
    );
    let stats = &report.stats;
    assert!(stats.group("command").unwrap()["Upgrade"] > 10, "{stats:?}");
    let versions = stats.group("version of etcd").unwrap();
    assert_eq!(versions.len(), 3, "{versions:?}");
    let mix = stats.group("etcd versions in a cluster").unwrap();
    assert!(mix.contains_key("3.4-a"), "{mix:?}");
    assert!(
        mix.keys().any(|k| k.contains('+')),
        "mixed clusters: {mix:?}"
    );
}

/// The planted lost write of `memory-lossy` through upgrades alone: upgrading the primary is
/// a restart, which hands the primary role to a replica that missed the write. The minimal
/// case needs an `Upgrade`, and its nodes' versions are as preferred as that allows.
#[test]
fn kv_upgrade_of_the_primary_loses_a_write_on_the_lossy_store() {
    let text = VERSIONS.replace(
        "faults = [\"crash\", \"pause\", \"partition\", \"block\", \"loss\", \"upgrade\"]",
        "faults = [\"upgrade\"]",
    );
    let model = KvModel::new(&config(&text), "etcd");
    let system = KvSystem::new(MemoryStore {
        lose_unreplicated_writes: true,
        ..MemoryStore::default()
    });
    let mut found = 0;
    for seed in 0..10 {
        let report = run(
            &model,
            &system,
            &Config {
                seed: Some(seed),
                ..Config::default()
            },
            &(),
        );
        let Outcome::Failed(f) = report.outcome else {
            continue;
        };
        found += 1;
        let m = &f.minimal;
        assert!(f.reason.contains("not linearizable"), "{}", f.reason);
        let upgrades: Vec<&KvCmd> = m
            .commands
            .iter()
            .filter(|c| matches!(c, KvCmd::Cluster(ClusterCmd::Upgrade { .. })))
            .collect();
        assert_eq!(upgrades.len(), 1, "seed {seed}: {m:#?}");
        assert_eq!(m.initial.machines.len(), 2, "seed {seed}: {m:#?}");
        // Either node may keep 3.4-a; the upgraded one runs something else (3.4-b, preferred
        // over 3.4-c, unless it started on 3.4-b and the upgrade goes back to 3.4-a).
        let KvCmd::Cluster(ClusterCmd::Upgrade {
            machine: node,
            version,
            ..
        }) = upgrades[0]
        else {
            unreachable!()
        };
        let from = m
            .initial
            .machine(node)
            .unwrap()
            .versions
            .get("etcd")
            .cloned()
            .unwrap();
        assert!(
            [("3.4-a", "3.4-b"), ("3.4-b", "3.4-a")].contains(&(from.as_str(), version.as_str())),
            "seed {seed}: {from} -> {version}: {m:#?}"
        );
        for other in m.initial.machines.iter().filter(|n| n.id != *node) {
            assert_eq!(
                other.versions.get("etcd").map(String::as_str),
                Some("3.4-a"),
                "seed {seed}: {m:#?}"
            );
        }
        let described = model.describe_state(&m.initial);
        assert!(described.contains("etcd 3.4-"), "{described}");
        assert!(
            model
                .describe_command(upgrades[0])
                .ends_with(&format!(" -> {version})")),
            "{}",
            model.describe_command(upgrades[0])
        );
    }
    assert!(found >= 5, "only {found} of 10 seeds found the lost write");
}

#[test]
fn kv_versions_reach_the_machines() {
    let cfg = config(VERSIONS);
    let model = KvModel::new(&cfg, "etcd");
    let mut s = (0..)
        .map(|seed| model.initial_state(&mut Gen::new(seed, 10)))
        .find(|s| s.machines.len() >= 2)
        .unwrap();
    s.machines[0].versions.insert("etcd".into(), "3.4-b".into());
    s.machines[0].filesystem = Some(fleetcheck_fabric::FileSystem::Xfs);
    s.machines[1].versions.clear();
    let spec = kv::network_spec(&s, 256, model.service.as_ref()).unwrap();
    let installed = &spec.machines[0].services["etcd"];
    assert_eq!(installed.version, "3.4-b");
    assert_eq!(installed.path, std::path::Path::new("/bin/sh"));
    assert_eq!(
        spec.machines[0].filesystem,
        Some(fleetcheck_fabric::FileSystem::Xfs)
    );
    assert!(
        spec.machines[1].services.is_empty(),
        "no version: the host's"
    );
    assert!(model.describe_state(&s).contains("data on xfs, etcd 3.4-b"));
    // A version the configuration does not list is the infrastructure's error, said plainly.
    s.machines[0].versions.insert("etcd".into(), "9.9".into());
    let e = kv::network_spec(&s, 256, model.service.as_ref()).unwrap_err();
    assert!(e.to_string().contains("version `9.9` of etcd"), "{e}");
    let e = kv::network_spec(&s, 256, None).unwrap_err();
    assert!(
        e.to_string().contains("[services.etcd] does not list"),
        "{e}"
    );
}

/// Replay files from before versions read, nodes without a version write no field, and a
/// node's `version` of files before the cluster layer (which named no service) is refused in
/// one sentence rather than read as no version.
#[test]
fn kv_versions_nodes_without_one_read_and_write_as_before() {
    let old = r#"{"id":"aaaaaaaa","ip":"172.16.3.2","running":true,"paused":false}"#;
    let node: Machine = serde_json::from_str(old).unwrap();
    assert!(node.versions.is_empty());
    assert_eq!(serde_json::to_string(&node).unwrap(), old);
    let mut versioned = Machine::new(node.id.clone(), Ipv4Addr::new(172, 16, 3, 2));
    versioned.running = true;
    versioned.versions.insert("etcd".into(), "3.4-b".into());
    let text = serde_json::to_string(&versioned).unwrap();
    assert!(text.contains(r#""versions":{"etcd":"3.4-b"}"#), "{text}");
    assert_eq!(serde_json::from_str::<Machine>(&text).unwrap(), versioned);
    let unnamed = old.replace('}', r#","version":"3.4-b"}"#);
    let e = serde_json::from_str::<Machine>(&unnamed).unwrap_err();
    assert!(e.to_string().contains("run the case's seed again"), "{e}");
}

/// `run kv --system etcd` is `examples/scenarios/etcd.toml` under the run's configuration:
/// the file's services and client, the run's `[kv]` and versions, no `[scenario]` (it stays
/// the kv scenario, so its cases are the kv model's: the fingerprints above).
#[test]
fn run_kv_etcd_is_the_etcd_file_under_the_run_s_configuration() {
    let run = config(&format!("{VERSIONS}\n[machine]\nlose_unsynced = true\n"));
    let text = kv::built_in_file("etcd").unwrap();
    let file = config(text);
    let merged = kv::with_built_in_file(&run, text);
    assert_eq!(merged.kv, run.kv, "the run's [kv]");
    assert!(merged.machine.lose_unsynced, "the run's [machine]");
    assert!(merged.scenario.is_none());
    let etcd = &merged.services["etcd"];
    assert_eq!(etcd.versions, run.services["etcd"].versions);
    assert_eq!(etcd.start, file.services["etcd"].start);
    assert_eq!(etcd.serving, file.services["etcd"].serving);
    assert_eq!(merged.client, file.client);
    assert!(kv::built_in_file("redis").is_none());
}
