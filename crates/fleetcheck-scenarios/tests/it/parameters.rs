//! Machine parameters beyond memory and kernel on the in-memory arm: file systems, service
//! versions, roles, rolling upgrades; generated from the configuration's domains and shrunk to
//! their first (preferred) values.

use std::sync::Arc;

use fleetcheck_engine::{generate, run, Config, Gen, Model, Outcome};
use fleetcheck_fabric::fake::FakeBackend;
use fleetcheck_fabric::FileSystem;
use fleetcheck_scenarios::cluster::ClusterCmd;
use fleetcheck_scenarios::config::ScenarioConfig;
use fleetcheck_scenarios::ping::{PingCmd, PingModel, PingSystem};

/// Versions need programs that exist; the fake never runs them.
const VERSIONS: &str = r#"
[machine]
filesystem = ["ext4", "xfs", "btrfs"]

[services.fw]
versions = [
  { version = "1.0", path = "/bin/true" },
  { version = "2.0", path = "/bin/sh" },
]

[ping]
upgrade = true
"#;

const ROLES: &str = r#"
[machine]
filesystem = ["ext4", "btrfs"]

[services.fw]
versions = [
  { version = "1.0", path = "/bin/true" },
  { version = "2.0", path = "/bin/sh" },
]

[roles.client]
count = { min = 1, max = 3 }
memory_mb = 64

[roles.server]
count = 2
filesystem = "xfs"
versions = { fw = "2.0" }
"#;

#[test]
fn parameters_are_drawn_only_when_configured() {
    let model = PingModel::default();
    for seed in 0..100 {
        for m in model.initial_state(&mut Gen::new(seed, 10)).machines {
            assert_eq!(m.filesystem, None);
            assert!(m.versions.is_empty() && m.role.is_empty());
        }
    }
}

#[test]
fn parameters_follow_each_roles_domain() {
    let model = PingModel::new(ScenarioConfig::from_toml(ROLES).unwrap());
    let mut client_fs = std::collections::BTreeSet::new();
    let mut client_versions = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let s = model.initial_state(&mut Gen::new(seed, 10));
        let servers: Vec<_> = s.machines.iter().filter(|m| m.role == "server").collect();
        let clients: Vec<_> = s.machines.iter().filter(|m| m.role == "client").collect();
        assert_eq!(servers.len(), 2);
        assert!((1..=3).contains(&clients.len()));
        assert_eq!(servers.len() + clients.len(), s.machines.len());
        for m in servers {
            assert_eq!(m.filesystem, Some(FileSystem::Xfs));
            assert_eq!(m.versions["fw"], "2.0");
            assert!((96..=256).contains(&m.memory_mb));
        }
        for m in clients {
            assert_eq!(m.memory_mb, 64);
            client_fs.insert(m.filesystem.unwrap());
            client_versions.insert(m.versions["fw"].clone());
        }
    }
    assert_eq!(client_fs.len(), 2, "{client_fs:?}");
    assert_eq!(client_versions.len(), 2, "{client_versions:?}");
}

#[test]
fn parameters_shrink_toward_the_first_choices_and_keep_role_counts() {
    let model = PingModel::new(ScenarioConfig::from_toml(ROLES).unwrap());
    let mut s = model.initial_state(&mut Gen::new(7, 10));
    for m in &mut s.machines {
        if m.role == "client" {
            m.filesystem = Some(FileSystem::Btrfs);
            m.versions.insert("fw".into(), "2.0".into());
        }
    }
    let candidates = model.shrink_state(&s);
    for c in &candidates {
        assert_eq!(c.machines.iter().filter(|m| m.role == "server").count(), 2);
        for m in c.machines.iter().filter(|m| m.role == "server") {
            assert_eq!(
                m.filesystem,
                Some(FileSystem::Xfs),
                "no other file system allowed"
            );
        }
    }
    assert!(candidates.iter().any(|c| c
        .machines
        .iter()
        .any(|m| m.filesystem == Some(FileSystem::Ext4))));
    assert!(candidates.iter().any(|c| c
        .machines
        .iter()
        .any(|m| m.role == "client" && m.versions["fw"] == "1.0")));
}

#[test]
fn parameters_upgrades_run_on_the_fake_and_are_labelled() {
    let cfg = ScenarioConfig::from_toml(VERSIONS).unwrap();
    let system = PingSystem::new(Arc::new(FakeBackend::new()), &cfg);
    let config = Config {
        seed: Some(5),
        ..Config::default()
    };
    let report = run(&PingModel::new(cfg.clone()), &system, &config, &());
    assert!(
        matches!(report.outcome, Outcome::Passed),
        "{:?}",
        report.outcome
    );
    let labels = format!("{:?}", report.stats);
    for needle in [
        "machine parameters",
        "ext4 fw=1.0",
        "btrfs fw=2.0",
        "1.0+2.0",
    ] {
        assert!(labels.contains(needle), "{needle} not in {labels}");
    }
    let upgrades = (0..100)
        .flat_map(|seed| {
            generate(&PingModel::new(cfg.clone()), seed, 1, 20)
                .case
                .commands
        })
        .filter(|c| matches!(c, PingCmd::Cluster(ClusterCmd::Upgrade { .. })))
        .count();
    assert!(upgrades > 20, "{upgrades} upgrades generated");
}

/// The planted incompatibility of `examples/versions/fw-2.0`, on the fake: a 1.0 machine's
/// echo requests go unanswered by a 2.0 machine. Shrinks to two machines, one per version (or
/// an upgrade to 2.0), on the preferred file system.
#[test]
fn parameters_version_incompatibility_shrinks_to_a_minimal_pair() {
    let cfg = ScenarioConfig::from_toml(VERSIONS).unwrap();
    let mut found = 0;
    for seed in 0..20 {
        let backend = FakeBackend::with_fault(Arc::new(|view, from, to| {
            let target = view.machine_by_ip(to)?;
            let old = view.version(from, "fw") == Some("1.0");
            (old && view.version(&target.id, "fw") == Some("2.0")).then_some(false)
        }));
        let system = PingSystem::new(Arc::new(backend), &cfg);
        let config = Config {
            seed: Some(seed),
            ..Config::default()
        };
        let report = run(&PingModel::new(cfg.clone()), &system, &config, &());
        let Outcome::Failed(f) = report.outcome else {
            continue;
        };
        found += 1;
        let m = &f.minimal;
        assert_eq!(m.initial.machines.len(), 2, "seed {seed}: {m:#?}");
        for x in &m.initial.machines {
            assert_eq!(x.filesystem, Some(FileSystem::Ext4), "seed {seed}");
            assert_eq!(
                (x.memory_mb, x.kernel.as_str()),
                (96, "3.14"),
                "seed {seed}"
            );
        }
        let upgraded = m
            .commands
            .iter()
            .any(|c| matches!(c, PingCmd::Cluster(ClusterCmd::Upgrade { version, .. }) if version == "2.0"));
        let initial: Vec<&str> = m
            .initial
            .machines
            .iter()
            .map(|x| x.versions["fw"].as_str())
            .collect();
        assert!(
            initial.contains(&"2.0") || upgraded,
            "seed {seed}: no 2.0 machine: {m:#?}"
        );
        assert!(m.commands.len() <= 4, "seed {seed}: {:#?}", m.commands);
        assert!(matches!(m.commands.last(), Some(PingCmd::Ping { .. })));
    }
    assert!(found >= 15, "found in only {found} of 20 seeds");
}
