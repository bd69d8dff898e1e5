//! Machines with roles in a scenario file's kv workload: a count per role, operations routed
//! to a role, and a command of the file's own whose effect moves a role (a promoted replica
//! is the primary), all in the model, so generation and shrinking follow them.

use fleetcheck_engine::{generate, Model};
use fleetcheck_scenarios::cluster::ClusterCmd;
use fleetcheck_scenarios::config::ScenarioConfig;
use fleetcheck_scenarios::kv::{KvCmd, KvModel};

const FILE: &str = r#"
[scenario]
name = "roles"
[roles.primary]
count = 1
[roles.replica]
count = [1, 2]
after = ["primary"]
[kv]
faults = ["crash", "isolate"]
leader = "primary"
[services.db]
start = "exec sleep 1000"
[commands.promote]
run = "true"
on = "replica"
when_down = ["primary"]
becomes = "primary"
others = "replica"
weight = 3
[client]
route = "primary"
put = "true"
get = "true"
delete = "true"
cas = "true"
swapped = "ok"
not_swapped = "no"
"#;

fn model() -> KvModel {
    let config = ScenarioConfig::from_toml(FILE).unwrap();
    KvModel::for_service(&config, None)
}

fn role_of<'a>(s: &'a fleetcheck_scenarios::kv::KvState, id: &str) -> &'a str {
    &s.machine(id).unwrap().role
}

#[test]
fn roles_routes_and_promotions_follow_the_model() {
    let model = model();
    let mut promotions = 0;
    let mut ops_after_a_promotion = 0;
    let mut isolations = 0;
    for seed in 0..200 {
        let case = generate(&model, seed, 5, 30).case;
        let roles: Vec<&str> = case
            .initial
            .machines
            .iter()
            .map(|m| m.role.as_str())
            .collect();
        assert_eq!(roles[0], "primary", "{roles:?}");
        assert!(roles[1..].iter().all(|r| *r == "replica") && (2..=3).contains(&roles.len()));
        let mut state = case.initial.clone();
        let mut promoted = false;
        for c in &case.commands {
            assert!(model.precondition(&state, c), "{c:?} in {state:?}");
            match c {
                KvCmd::Ops { ops } => {
                    for o in ops {
                        assert_eq!(role_of(&state, &o.node), "primary", "{c:?}");
                    }
                    ops_after_a_promotion += usize::from(promoted);
                }
                KvCmd::Run { name, node } => {
                    assert_eq!(name, "promote");
                    assert_eq!(role_of(&state, node), "replica");
                    let primaries = state.machines.iter().filter(|m| m.role == "primary");
                    assert!(primaries.clone().all(|m| !m.awake()), "{state:?}");
                    let old: Vec<String> = primaries.map(|m| m.id.clone()).collect();
                    let next = model.next_state(&state, c);
                    assert_eq!(role_of(&next, node), "primary");
                    for id in &old {
                        assert_eq!(role_of(&next, id), "replica");
                    }
                    promotions += 1;
                    promoted = true;
                }
                // `isolate`: a partition with the primary alone on one side.
                KvCmd::Cluster(ClusterCmd::Partition { groups }) => {
                    assert_eq!(groups.len(), 1, "{c:?}");
                    assert_eq!(groups[0].len(), 1, "{c:?}");
                    assert_eq!(role_of(&state, &groups[0][0]), "primary", "{c:?}");
                    isolations += 1;
                }
                KvCmd::Cluster(_) => {}
            }
            state = model.next_state(&state, c);
            let primaries = state
                .machines
                .iter()
                .filter(|m| m.role == "primary")
                .count();
            assert_eq!(primaries, 1, "one primary at a time");
        }
    }
    assert!(promotions > 20, "{promotions} promotions");
    assert!(isolations > 20, "{isolations} isolations");
    assert!(ops_after_a_promotion > 20, "{ops_after_a_promotion}");
}

#[test]
fn shrinking_keeps_each_roles_count() {
    let model = model();
    for seed in 0..50 {
        let initial = generate(&model, seed, 1, 10).case.initial;
        for smaller in model.shrink_state(&initial) {
            let of = |r: &str| smaller.machines.iter().filter(|m| m.role == r).count();
            assert_eq!(of("primary"), 1);
            assert!(of("replica") >= 1);
        }
    }
}

#[test]
fn bad_roles_are_one_sentence() {
    let bad = |from: &str, to: &str| {
        let text = FILE.replace(from, to);
        match ScenarioConfig::from_toml(&text) {
            Ok(c) => fleetcheck_scenarios::file::validate(&c).unwrap_err().0,
            Err(e) => e.0,
        }
    };
    let e = bad("route = \"primary\"", "route = \"leader\"");
    assert!(
        e.contains(
            "client.route names role `leader`, which is not one of [roles] (primary, replica)"
        ),
        "{e}"
    );
    let e = bad("after = [\"primary\"]", "after = [\"nobody\"]");
    assert!(e.contains("roles.replica.after names `nobody`"), "{e}");
    let e = bad("count = 1\n", "count = 1\nafter = [\"replica\"]\n");
    assert!(e.contains("wait for each other"), "{e}");
    let e = bad("becomes = \"primary\"\n", "");
    assert!(
        e.contains("commands.promote has `others` but no `becomes`"),
        "{e}"
    );
    let e = bad(
        "[roles.primary]\ncount = 1",
        "[roles.primary]\ncount = 1\nmemory_mb = 64",
    );
    assert!(
        e.contains("roles.primary takes only `count` and `after`"),
        "{e}"
    );
}
